#!/usr/bin/env bash
# Runs every check of the project: formatting, lints, the Rust test suites
# (unit, integration and end-to-end over the real binaries) and the scripted
# end-to-end run. Installs the system tools it needs when they are missing.
# The PostgreSQL tests run on a throwaway cluster started here (in a temp dir,
# as an unprivileged user when run as root) and stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each phase's wall time, printed at the end (CI has a time budget).
phase_start=$SECONDS
phase_name=""
phase_times=()
log() {
  if [ -n "$phase_name" ]; then phase_times+=("$((SECONDS - phase_start)) s  $phase_name"); fi
  phase_name=$*
  phase_start=$SECONDS
  printf '\n==> %s\n' "$*"
}

need_pkgs=()
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
# SoftHSM2 and OpenSC's pkcs11-tool: the PKCS#11 token of the HSM tests.
command -v softhsm2-util >/dev/null 2>&1 || need_pkgs+=(softhsm2)
command -v pkcs11-tool >/dev/null 2>&1 || need_pkgs+=(opensc)
# NSS's pk12util and certutil: PKCS#12 import checks (tests/client_p12.rs).
command -v pk12util >/dev/null 2>&1 || need_pkgs+=(libnss3-tools)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}"
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}"
  fi
fi

if ! cargo fmt --version >/dev/null 2>&1; then rustup component add rustfmt; fi
if ! cargo clippy --version >/dev/null 2>&1; then rustup component add clippy; fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

log "a pkilint REST server for the lint tests, started in the background"
# One server for tests/ca_lint.rs and the CA's pkilint_rest test, started
# after clippy: making its virtualenv and importing pkilint take about a
# minute, most of it CPU, which the build below absorbs instead of each
# lint test paying it.
mkdir -p target
pkilint_venv=${MAILID_PKILINT_VENV:-target/pkilint-rest-venv}
pkilint_port=target/pkilint-port
: >"$pkilint_port"
setsid nice -n 10 bash -c '
  venv=$1
  "$venv/bin/python" -c "import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in (\"pkilint\", \"fastapi\", \"uvicorn\")))" 2>/dev/null ||
    { python3 -m venv "$venv" && "$venv/bin/pip" install -q --disable-pip-version-check -r tests/pkilint-requirements.txt; } || exit 1
  exec "$venv/bin/python" tests/pkilint_serve.py' _ "$pkilint_venv" >"$pkilint_port" 2>target/pkilint-serve.log &
pkilint_pid=$!
trap 'kill -- "-$pkilint_pid" 2>/dev/null || true' EXIT # replaced below by pg_cleanup, which stops it too

log "the client compiles no server plumbing (mailid-shared without its server feature)"
# tower-http itself stays: reqwest uses its client-side follow-redirect layer.
client_tree=$(cargo tree -p mailid-client -e normal,features --prefix none)
if grep -E '^(rusqlite|libsqlite3-sys|axum) |^(hyper|hyper-util) feature "server|^tower-http feature "(limit|timeout|trace|catch-panic)"' <<<"$client_tree"; then echo "error: the client's dependency tree holds server plumbing (listed above): rusqlite, axum, tower-http's server layers or hyper's server must come only with mailid-shared's \"server\" feature" >&2; exit 1; fi

log "cargo build (binaries for the end-to-end tests)"
cargo build --workspace --bins

log "scripts/fuzz.sh --short 10, started in the background (every fuzz target for 10 s; its output is shown at the end)"
# fuzz.sh builds and runs at nice 19, so it takes only the CPU the tests
# leave idle (much of their wall time is spent waiting on child processes);
# this hides most of the instrumented build's minutes.
mkdir -p target
fuzz_log=target/fuzz-short.log
setsid scripts/fuzz.sh --short 10 >"$fuzz_log" 2>&1 & # its own process group: stopped whole on exit
fuzz_pid=$!

log "a throwaway PostgreSQL cluster for the tests (scripts/pg-cluster.sh)"
# Stopped and removed on every exit: success, failure, Ctrl-C or kill.
# Under /tmp: the unprivileged owner must reach it, and socket paths are short.
pg_dir=$(mktemp -d /tmp/mailid-pg.XXXXXX)
pg_cleanup() {
  if kill -0 "$fuzz_pid" 2>/dev/null; then kill -- "-$fuzz_pid" 2>/dev/null || true; fi
  if kill -0 "$pkilint_pid" 2>/dev/null; then kill -- "-$pkilint_pid" 2>/dev/null || true; fi
  scripts/pg-cluster.sh stop "$pg_dir" || true
  rm -rf "$pg_dir"
}
trap pg_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
MAILID_TEST_PG_URL=$(scripts/pg-cluster.sh start "$pg_dir")
export MAILID_TEST_PG_URL
echo "PostgreSQL for the tests: $MAILID_TEST_PG_URL"

# The shared pkilint server's URL, once it has printed its port (the tests
# wait for it to answer); without one, each lint test starts its own.
for _ in $(seq 1 120); do
  if [ -s "$pkilint_port" ] || ! kill -0 "$pkilint_pid" 2>/dev/null; then break; fi
  sleep 1
done
if [ -s "$pkilint_port" ]; then
  export MAILID_PKILINT_URL="http://127.0.0.1:$(head -n 1 "$pkilint_port")"
  echo "pkilint REST server for the tests: $MAILID_PKILINT_URL"
else
  echo "note: the shared pkilint server did not start (target/pkilint-serve.log); each lint test starts its own"
fi

log "cargo test"
mkdir -p target
cargo test --workspace 2>&1 | tee target/cargo-test.log
cargo_passed=$(grep -E '^test result: ' target/cargo-test.log | sed -E 's/.* ([0-9]+) passed.*/\1/' | awk '{s+=$1} END {print s+0}')

log "cargo test on PostgreSQL (the integration tests of enrollment, single use, lockout, concurrency, crash and restart again, every data dir on a fresh database)"
# The PostgreSQL-only tests (conformance suites, replicas, database down,
# db migrate, bad URLs) already ran above; the SQLite-file tests stay
# SQLite (each says why).
# --workspace, as above: `cargo test -p X` resolves features for X alone
# and rebuilt half the dependencies (four minutes in CI).
export MAILID_TEST_BACKEND=postgres
cargo test --workspace --test auth --test codes --test lockout --test throttle \
  --test identity --test withdraw --test logs --test backups --test idlog --test idlog_faults --test validate_batch \
  --test ca_enroll --test ca_revoke --test ca_ops --test ca_preflight \
  --test ca_crash --test crash --test client_enroll --test client_step5 --test faults_mta --test ca_batch \
  2>&1 | tee target/cargo-test-pg.log
unset MAILID_TEST_BACKEND
pg_passed=$(grep -E '^test result: ' target/cargo-test-pg.log | sed -E 's/.* ([0-9]+) passed.*/\1/' | awk '{s+=$1} END {print s+0}')

log "cargo test: the external linter against a real pkilint REST server (certificates and CRLs; the e2e test tests/ca_lint.rs already ran)"
cargo test --workspace --lib pkilint_rest -- --ignored 2>&1 | tee target/cargo-test-pkilint.log
pkilint_passed=$(grep -E '^test result: ' target/cargo-test-pkilint.log | sed -E 's/.* ([0-9]+) passed.*/\1/' | awk '{s+=$1} END {print s+0}')
[ "$pkilint_passed" -ge 1 ] || { echo "error: the pkilint_rest test did not run" >&2; exit 1; }

if [ -x scripts/e2e.sh ]; then
  log "scripts/e2e.sh"
  scripts/e2e.sh
fi

log "scripts/schemathesis.sh (both services against docs/openapi/*.yaml)"
scripts/schemathesis.sh

log "scripts/interop.sh (pkilint, OpenSSL, NSS, GnuTLS, Python cryptography)"
scripts/interop.sh

log "scripts/fuzz.sh --short 10 (waiting for the background run; skipped with a reason if the toolchain cannot build the targets)"
fuzz_status=0
wait "$fuzz_pid" || fuzz_status=$?
cat "$fuzz_log"
if [ "$fuzz_status" != 0 ]; then echo "error: scripts/fuzz.sh --short 10 failed (exit $fuzz_status)" >&2; exit 1; fi

log "scripts/bench.sh --smoke (the benchmark harness works; no speed is asserted)"
scripts/bench.sh --smoke

log "all checks passed"
echo "wall time per phase:"
printf '  %s\n' "${phase_times[@]}"
echo "  total: $SECONDS s"
echo "(cargo test total below; the scripts above printed their own counts)"
echo "tests: $cargo_passed passed, 0 failed (and again on PostgreSQL: $pg_passed passed)"
