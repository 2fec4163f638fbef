# Shell helpers shared by the scripts that start the real services
# (scripts/e2e.sh, scripts/schemathesis.sh). Source it, then call
# `services_setup NAME KEEP_VAR` before starting anything.

# services_setup NAME KEEP_VAR: sets PASSED=0, FAILED=0, PIDS=() and WORK (a
# new temp dir mailid-NAME.XXXXXX) and installs an EXIT trap that stops every
# PID in PIDS and removes WORK, unless something failed or the environment
# variable named KEEP_VAR is set.
services_setup() {
  SERVICES_NAME="$1"
  SERVICES_KEEP_VAR="$2"
  PASSED=0
  FAILED=0
  PIDS=()
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/mailid-$1.XXXXXX")"
  trap services_cleanup EXIT
}

services_cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "$FAILED" -eq 0 ] && [ -z "${!SERVICES_KEEP_VAR:-}" ]; then
    rm -rf "$WORK"
  else
    echo "$SERVICES_NAME: files and logs kept in $WORK"
  fi
}

# fatal MESSAGE: a set-up step the rest depends on failed; prints the totals
# and exits 1.
fatal() {
  echo "FAIL - $*"
  FAILED=$((FAILED + 1))
  echo "$SERVICES_NAME: $PASSED passed, $FAILED failed"
  exit 1
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port: prints a free loopback port below the kernel's ephemeral range
# (32768+), so no outgoing connection can be holding it when a service binds.
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 12000))
    port_busy "$p" || { echo "$p"; return 0; }
  done
  return 1
}

# start NAME CMD...: starts a service, records its PID, waits for the
# "listening on URL" line and sets URL. It must run in the caller's shell
# (not in a command substitution), or the PID would not reach the cleanup
# trap.
start() {
  local name="$1"; shift
  "$@" >"$name.out" 2>"$name.log" </dev/null &
  PIDS+=("$!")
  for _ in $(seq 1 600); do
    if grep -q '^listening on ' "$name.out" 2>/dev/null; then
      URL="$(sed -n 's/^listening on //p' "$name.out" | head -n 1)"
      return 0
    fi
    kill -0 "${PIDS[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$name.log" >&2
  return 1
}
