#!/usr/bin/env bash
# mailid quickstart: builds the release binaries, sets up a demo MTA auth
# service and CA (SQLite) in ./mailid-demo/, starts both in the background,
# enrolls a demo account twice and checks the current identity with openssl
# against the CRL the CA serves.
#
#   scripts/quickstart.sh          set up (again) and run the demo
#   scripts/quickstart.sh --stop   stop the demo services
#
# Environment: MAILID_DEMO_DIR (default ./mailid-demo), MAILID_CA_PORT
# (default 7700), MAILID_MTA_PORT (default 7701). A second run stops the old
# services and recreates the demo from scratch.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEMO="${MAILID_DEMO_DIR:-$PWD/mailid-demo}"
ACCOUNT="demo@example.com"
DOMAIN="example.com"

say() { printf '==> %s\n' "$*"; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

# Stops a demo service by the PID in its pid file, if that PID is still a
# mailid service.
stop_pidfile() {
  local file="$1" pid
  [ -f "$file" ] || return 0
  pid="$(cat "$file")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
     tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'mailid-'; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    say "stopped $(basename "$file" .pid) (pid $pid)"
  fi
  rm -f "$file"
}

stop_demo() {
  stop_pidfile "$DEMO/ca.pid"
  stop_pidfile "$DEMO/mta.pid"
}

if [ "${1:-}" = "--stop" ]; then
  stop_demo
  exit 0
elif [ $# -gt 0 ]; then
  die "usage: $0 [--stop]"
fi

for tool in cargo openssl curl; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is needed but not installed"
done

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Picks the wanted port, or the next free one above it (saying so).
pick_port() {
  local want="$1" what="$2" p="$1" avoid="${3:-}" why
  while port_busy "$p" || [ "$p" = "$avoid" ]; do
    p=$((p + 1))
    [ "$p" -gt $((want + 100)) ] && die "no free port for the $what near $want"
  done
  if [ "$p" != "$want" ]; then
    if [ "$want" = "$avoid" ]; then why="taken by the CA"; else why="busy"; fi
    echo "==> port $want is $why; the $what uses port $p instead" >&2
  fi
  echo "$p"
}

say "building mailid (release)"
(cd "$ROOT" && cargo build --release --bins --quiet)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
BIN="$BIN/release"
for b in mailid mailid-ca mailid-mta-auth; do
  [ -x "$BIN/$b" ] || die "build did not produce $BIN/$b"
done

stop_demo
rm -rf "$DEMO"
mkdir -p "$DEMO"
chmod 700 "$DEMO"
cd "$DEMO"

CA_PORT="$(pick_port "${MAILID_CA_PORT:-7700}" CA)"
MTA_PORT="$(pick_port "${MAILID_MTA_PORT:-7701}" "MTA auth service" "$CA_PORT")"
CA_URL="http://127.0.0.1:$CA_PORT"
MTA_URL="http://127.0.0.1:$MTA_PORT"

say "setting up the MTA auth service in $DEMO/mta"
"$BIN/mailid-mta-auth" --data-dir mta init >/dev/null
(umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >password)
"$BIN/mailid-mta-auth" --data-dir mta account add "$ACCOUNT" --password-stdin <password >/dev/null

say "setting up the CA in $DEMO/ca"
"$BIN/mailid-ca" --data-dir ca init --name "mailid demo CA" --base-url "$CA_URL" >/dev/null

say "registering the CA at the MTA and the MTA at the CA"
(umask 077; "$BIN/mailid-mta-auth" --data-dir mta ca add demo-ca --trust-cert ca/ca.pem >ca-credential)
"$BIN/mailid-ca" --data-dir ca mta add --domain "$DOMAIN" --url "$MTA_URL" \
  --ca-name demo-ca --credential-file ca-credential >/dev/null

# Starts a service in the background; waits for its "listening on" line.
start() {
  local name="$1"; shift
  nohup "$@" >"$name.out" 2>"$name.log" </dev/null &
  echo $! >"$name.pid"
  for _ in $(seq 1 300); do
    grep -q '^listening on ' "$name.out" 2>/dev/null && return 0
    kill -0 "$(cat "$name.pid")" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$name.log" >&2 || true
  die "$name did not start (log: $DEMO/$name.log)"
}

say "starting the MTA auth service on $MTA_URL and the CA on $CA_URL"
start mta "$BIN/mailid-mta-auth" --data-dir mta serve --listen "127.0.0.1:$MTA_PORT"
start ca "$BIN/mailid-ca" --data-dir ca serve --listen "127.0.0.1:$CA_PORT"

enroll() {
  "$BIN/mailid" --store store enroll --email "$ACCOUNT" --mta "$MTA_URL" --ca "$CA_URL" \
    --password-stdin <password | tee "$1"
}
issued_serial() { sed -n 's/^step 9: CA issued serial \([0-9a-f]*\) .*/\1/p' "$1"; }

say "enrolling $ACCOUNT (first identity)"
enroll enroll-1.txt
FIRST="$(issued_serial enroll-1.txt)"
say "enrolling $ACCOUNT again (the CA revokes the first identity)"
enroll enroll-2.txt
SECOND="$(issued_serial enroll-2.txt)"
[ -n "$FIRST" ] && [ -n "$SECOND" ] || die "could not read the issued serials"

say "the key store now holds"
"$BIN/mailid" --store store show --email "$ACCOUNT"

say "the CA's record of the first identity"
curl -fsS "$CA_URL/v1/certificates/$FIRST" | sed 's/"certificate":"[^"]*"/"certificate":"…"/'
echo

CERT="store/$ACCOUNT/$SECOND/cert.pem"
OLD="store/$ACCOUNT/$FIRST/cert.pem"
say "checking the identities with openssl against the served CRL"
listed=""
for _ in $(seq 1 50); do
  curl -fsS "$CA_URL/v1/crl.pem" -o crl.pem
  if openssl crl -in crl.pem -noout -text | grep -qi "Serial Number: *$FIRST\$"; then
    listed=yes; break
  fi
  sleep 0.2
done
[ -n "$listed" ] || die "the CRL does not list the first identity $FIRST"
openssl verify -purpose smimesign -crl_check -CAfile ca/ca.pem -CRLfile crl.pem "$CERT" ||
  die "openssl did not verify the current identity"
if openssl verify -crl_check -CAfile ca/ca.pem -CRLfile crl.pem "$OLD" >old-verify.txt 2>&1; then
  die "openssl accepted the revoked first identity"
fi
echo "first identity: $(grep -o 'certificate revoked' old-verify.txt | head -n 1) (as it should be)"

cat <<EOF

mailid demo is running:
  CA                 $CA_URL   data $DEMO/ca   log $DEMO/ca.log   pid $(cat ca.pid)
  MTA auth service   $MTA_URL   data $DEMO/mta  log $DEMO/mta.log  pid $(cat mta.pid)
  account            $ACCOUNT (password in $DEMO/password)
  key store          $DEMO/store
  current identity   serial $SECOND ($DEMO/$CERT)

Try:
  $BIN/mailid lookup $ACCOUNT --mta $MTA_URL
  $BIN/mailid --store $DEMO/store show --email $ACCOUNT
  $BIN/mailid --store $DEMO/store enroll --email $ACCOUNT --mta $MTA_URL --ca $CA_URL --password-stdin <$DEMO/password

Stop it with:
  MAILID_DEMO_DIR=$DEMO $ROOT/scripts/quickstart.sh --stop
  (or: kill \$(cat $DEMO/ca.pid) \$(cat $DEMO/mta.pid))
EOF
