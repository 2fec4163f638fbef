#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests, in a directory of its own.
#
#   pg-cluster.sh start DIR [PORT]   initdb into DIR/data (once), start, print the admin URL
#   pg-cluster.sh stop DIR           fast shutdown (kill -9 if it does not stop in time)
#   pg-cluster.sh kill DIR           kill -9 of the postmaster and its children
#   pg-cluster.sh restart DIR        (stop if running and) start again on the same data and port
#   pg-cluster.sh url DIR            print the admin URL
#
# The admin URL is postgresql:///postgres?host=DIR/sock&port=PORT&user=postgres
# (superuser, trust over the Unix socket DIR/sock and 127.0.0.1:PORT). Two more
# roles exist for the tests: mailid_pw (LOGIN CREATEDB, password
# "right-password", scram-sha-256 on every line, so a wrong password is refused)
# and mailid_nocreate (LOGIN, nothing else). PostgreSQL refuses to run as root:
# as root the cluster belongs to the "postgres" system user (created as
# "mailid-pg" if there is none). Installs postgresql with apt-get when initdb is
# missing. Quiet; an error is one line on stderr and exit status 1.
set -euo pipefail

SUPERUSER=postgres
PW_ROLE=mailid_pw
PW_PASSWORD=right-password
NOCREATE_ROLE=mailid_nocreate

die() { printf 'pg-cluster.sh: %s\n' "$*" >&2; exit 1; }

# Finds the server binaries (initdb, pg_ctl, postgres), installing them if needed.
find_bindir() {
  local d
  if d=$(command -v initdb 2>/dev/null) && [ -x "$(dirname "$(readlink -f "$d")")/pg_ctl" ]; then
    dirname "$(readlink -f "$d")"; return
  fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return; fi
  done
  return 1
}

install_postgres() {
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  # No default "main" cluster on port 5432: this script makes its own.
  if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    "${sudo[@]}" mkdir -p /etc/postgresql-common
    echo 'create_main_cluster = false' | "${sudo[@]}" tee /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  { "${sudo[@]}" apt-get update -qq &&
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      -o Dpkg::Options::=--force-confold postgresql; } >/dev/null 2>&1 ||
    die "initdb not found and 'apt-get install postgresql' failed"
}

# The system user that owns the cluster when we run as root.
owner_user() {
  if id -u postgres >/dev/null 2>&1; then echo postgres; return; fi
  if ! id -u mailid-pg >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mailid-pg 2>/dev/null ||
      die "could not create the system user mailid-pg to own the cluster"
  fi
  echo mailid-pg
}

# Runs a command as the cluster's owner (directly when we are not root).
as_owner() {
  if [ "$(id -u)" = 0 ] && command -v runuser >/dev/null 2>&1; then
    (cd / && runuser -u "$OWNER" -- "$@")
  elif [ "$(id -u)" = 0 ]; then
    (cd / && su -s /bin/sh "$OWNER" -c "$(printf '%q ' "$@")")
  else
    (cd / && "$@")
  fi
}

# True if the process exists and is not a zombie (a killed postmaster is
# reparented to init and may stay a zombie until init reaps it).
alive() {
  local state
  state=$(sed -E 's/.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

pg_running() {
  local pid
  [ -f "$DATA/postmaster.pid" ] || return 1
  pid=$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && alive "$pid"
}

print_url() {
  printf 'postgresql:///postgres?host=%s&port=%s&user=%s\n' "$SOCK" "$(cat "$DIR/port")" "$SUPERUSER"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pick_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 40000))
    port_in_use "$p" || { echo "$p"; return; }
  done
  die "no free TCP port found on 127.0.0.1"
}

# Starts the server on $DIR/port; returns 1 (with the log kept) if it fails.
pg_start() {
  local port pid
  port=$(cat "$DIR/port")
  # After a kill -9 the dead postmaster may linger as a zombie until init
  # reaps it, and postgres would take its lock files for a live server.
  if [ -f "$DATA/postmaster.pid" ]; then
    pid=$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null || true)
    if [ -z "$pid" ] || ! alive "$pid"; then
      rm -f "$DATA/postmaster.pid" "$SOCK/.s.PGSQL.$port.lock"
    fi
  fi
  as_owner "$BINDIR/pg_ctl" start -D "$DATA" -w -t 60 -s -l "$DIR/postgres.log" \
    -o "-p $port -k $SOCK" >/dev/null 2>&1
}

create_roles() {
  local psql=("$BINDIR/psql")
  [ -x "${psql[0]}" ] || psql=(psql)
  "${psql[@]}" -X -q -v ON_ERROR_STOP=1 -d "$(print_url)" >/dev/null 2>&1 <<SQL || die "could not create the test roles (see $DIR/postgres.log)"
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PW_ROLE') THEN
    CREATE ROLE $PW_ROLE LOGIN CREATEDB PASSWORD '$PW_PASSWORD';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$NOCREATE_ROLE') THEN
    CREATE ROLE $NOCREATE_ROLE LOGIN;
  END IF;
END
\$\$;
-- Before PostgreSQL 15 everyone may create in "public"; make older servers
-- behave like 15 for databases created from now on.
\c template1
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SQL
}

cmd_start() {
  local want_port=${1:-}
  if [ -d "$DATA" ]; then
    if ! pg_running; then pg_start || die "postgres did not start (see $DIR/postgres.log)"; fi
    print_url
    return
  fi
  mkdir -p "$DIR" "$SOCK"
  chmod 0755 "$DIR"
  [ "$(id -u)" = 0 ] && chown "$OWNER" "$DIR" "$SOCK"
  as_owner test -w "$DIR" || die "$DIR is not writable by the cluster owner $OWNER (put it under /tmp)"
  as_owner "$BINDIR/initdb" -D "$DATA" -U "$SUPERUSER" -A trust -E UTF8 --no-locale --no-sync >"$DIR/initdb.log" 2>&1 ||
    die "initdb failed (see $DIR/initdb.log)"
  as_owner tee "$DATA/pg_hba.conf" >/dev/null <<HBA
# written by scripts/pg-cluster.sh; the first matching line wins
local all $PW_ROLE scram-sha-256
host  all $PW_ROLE 127.0.0.1/32 scram-sha-256
host  all $PW_ROLE ::1/128 scram-sha-256
local all all trust
host  all all 127.0.0.1/32 trust
host  all all ::1/128 trust
HBA
  as_owner tee -a "$DATA/postgresql.conf" >/dev/null <<CONF
# written by scripts/pg-cluster.sh
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCK'
max_connections = 300
fsync = on
password_encryption = 'scram-sha-256'
CONF
  # Crash recovery (after kill) syncs the data directory first: one syncfs
  # call instead of an fsync per file where the server knows it (14+).
  if [ "$("$BINDIR/postgres" --version | sed -E 's/.* ([0-9]+)[.].*/\1/')" -ge 14 ] 2>/dev/null; then
    echo "recovery_init_sync_method = syncfs" | as_owner tee -a "$DATA/postgresql.conf" >/dev/null
  fi
  local tries=1
  while :; do
    if [ -n "$want_port" ]; then echo "$want_port" >"$DIR/port"; else pick_port >"$DIR/port"; fi
    pg_start && break
    # A port picked here may be taken in the meantime: try another one.
    if [ -n "$want_port" ] || [ "$tries" -ge 5 ]; then
      die "postgres did not start on port $(cat "$DIR/port") (see $DIR/postgres.log)"
    fi
    tries=$((tries + 1))
  done
  create_roles
  print_url
}

# Waits until none of the given pids is alive (up to ~10 s).
wait_gone() {
  local i p alive
  for i in $(seq 1 100); do
    alive=
    for p in "$@"; do alive "$p" && alive=1; done
    [ -z "$alive" ] && return 0
    sleep 0.1
  done
  return 1
}

cmd_kill() {
  pg_running || return 0
  local pid children
  pid=$(head -n 1 "$DATA/postmaster.pid")
  children=$(pgrep -P "$pid" || true)
  # shellcheck disable=SC2086
  kill -9 "$pid" $children 2>/dev/null || true
  # shellcheck disable=SC2086
  wait_gone "$pid" $children || die "postgres (pid $pid) did not die"
}

cmd_stop() {
  pg_running || return 0
  as_owner "$BINDIR/pg_ctl" stop -D "$DATA" -m fast -w -t 30 -s >/dev/null 2>&1 || cmd_kill
}

[ $# -ge 2 ] || die "usage: pg-cluster.sh start DIR [PORT] | stop DIR | kill DIR | restart DIR | url DIR"
CMD=$1
DIR=$2
case "$DIR" in /*) ;; *) DIR="$(pwd)/$DIR" ;; esac
DATA="$DIR/data"
SOCK="$DIR/sock"
OWNER=$(id -un)

case "$CMD" in
  url)
    [ -f "$DIR/port" ] || die "no cluster in $DIR"
    print_url; exit 0 ;;
  start | stop | kill | restart) ;;
  *) die "unknown command '$CMD' (start, stop, kill, restart or url)" ;;
esac

if [ "$CMD" = start ]; then
  BINDIR=$(find_bindir) || { install_postgres; BINDIR=$(find_bindir) || die "initdb not found after installing postgresql"; }
  if [ $# -ge 3 ]; then
    [[ "$3" =~ ^[0-9]+$ ]] && [ "$3" -ge 1 ] && [ "$3" -le 65535 ] || die "PORT must be a number from 1 to 65535, not '$3'"
  fi
else
  [ -d "$DATA" ] || { [ "$CMD" = restart ] && die "no cluster in $DIR"; exit 0; }
  BINDIR=$(find_bindir) || die "initdb/pg_ctl not found"
fi
[ "$(id -u)" = 0 ] && OWNER=$(owner_user)
if [ "$(id -u)" = 0 ] && [ -d "$DATA" ]; then OWNER=$(stat -c %U "$DATA"); fi

case "$CMD" in
  start) cmd_start "${3:-}" ;;
  stop) cmd_stop ;;
  kill) cmd_kill ;;
  restart)
    cmd_stop
    pg_start || die "postgres did not start (see $DIR/postgres.log)"
    print_url ;;
esac
