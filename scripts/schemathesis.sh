#!/usr/bin/env bash
# Property-based API tests of both services against their OpenAPI 3.1
# documents (docs/openapi/*.yaml) with schemathesis: starts a real MTA auth
# service and a real CA on loopback ports in a temp dir, enrolls twice (one
# superseded identity, one valid, published at the MTA) and runs
# schemathesis against each service with the checks
#   not_a_server_error, status_code_conformance, content_type_conformance,
#   response_schema_conformance
# (no 5xx; every status, media type and body as documented). Real values
# (serials, addresses, key IDs, a CSR, the certificate and chain, a key
# encrypted by `openssl pkcs8 -topk8 -v2 aes-256-cbc`) are mixed into the
# generated data so requests get past validation. /v1/totp,
# PUT /v1/identity and /v1/backups get HTTP Basic credentials;
# /v1/validate and /v1/validate/batch are HMAC-signed, which schemathesis
# cannot do, so their 401 problem answers are what is checked there.
#
# schemathesis (PyPI, pinned below) is installed into a virtualenv under
# target/ on first use. Uses the debug binaries (built if needed) or those
# in MAILID_BIN_DIR. Needs python3 (venv), openssl, curl. Environment:
# SCHEMATHESIS_MAX_EXAMPLES (default 100), SCHEMATHESIS_SEED (default
# random; schemathesis prints the seed it used), MAILID_SCHEMATHESIS_KEEP
# (keep the work dir). Prints "schemathesis: N passed, M failed" and exits
# non-zero on failure.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SCHEMATHESIS_VERSION=4.32.5
VENV="$ROOT/target/schemathesis-venv"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-100}"
# services_setup, fatal, port_busy, free_port, start
. "$ROOT/scripts/lib/services.sh"
services_setup schemathesis MAILID_SCHEMATHESIS_KEEP

# --- schemathesis in a virtualenv --------------------------------------------
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "version $SCHEMATHESIS_VERSION\$"; then
  echo "schemathesis: installing schemathesis==$SCHEMATHESIS_VERSION into $VENV"
  PY="$(command -v python3 || true)"
  [ -n "$PY" ] || fatal "python3 is not installed"
  if ! "$PY" -m venv --help >/dev/null 2>&1 || ! "$PY" -c 'import ensurepip' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null ||
        fatal "apt-get install python3-venv"
    fi
  fi
  rm -rf "$VENV"
  "$PY" -m venv "$VENV" || fatal "python3 -m venv $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" ||
    fatal "pip install schemathesis==$SCHEMATHESIS_VERSION"
fi
ST="$VENV/bin/schemathesis"

# --- binaries ----------------------------------------------------------------
if [ -n "${MAILID_BIN_DIR:-}" ]; then
  BIN="$MAILID_BIN_DIR"
else
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}"
  case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
  BIN="$BIN/debug"
  missing=0
  for b in mailid mailid-ca mailid-mta-auth; do [ -x "$BIN/$b" ] || missing=1; done
  if [ "$missing" = 1 ]; then
    (cd "$ROOT" && cargo build --workspace --bins --quiet) || fatal "cargo build --workspace --bins"
  fi
fi
for b in mailid mailid-ca mailid-mta-auth; do
  [ -x "$BIN/$b" ] || fatal "no binary $BIN/$b"
done
cd "$WORK" || fatal "cd $WORK"


# --- services ----------------------------------------------------------------
ALICE=alice@example.com
PASSWORD="schemathesis $(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
"$BIN/mailid-mta-auth" --data-dir mta init >/dev/null || fatal "mta init"
printf '%s\n' "$PASSWORD" | "$BIN/mailid-mta-auth" --data-dir mta account add "$ALICE" --password-stdin >/dev/null ||
  fatal "account add"
start mta "$BIN/mailid-mta-auth" --data-dir mta serve --listen 127.0.0.1:0 || fatal "start the MTA"
MTA_URL="$URL"
CA_PORT="$(free_port)" || fatal "no free port"
CA_URL="http://127.0.0.1:$CA_PORT"
"$BIN/mailid-ca" --data-dir ca init --name "mailid schemathesis CA" --base-url "$CA_URL" >/dev/null || fatal "ca init"
"$BIN/mailid-mta-auth" --data-dir mta ca add st-ca --trust-cert ca/ca.pem >credential || fatal "ca add"
"$BIN/mailid-ca" --data-dir ca mta add --domain example.com --url "$MTA_URL" --ca-name st-ca \
  --credential-file credential >/dev/null || fatal "mta add"
start ca "$BIN/mailid-ca" --data-dir ca serve --listen "127.0.0.1:$CA_PORT" || fatal "start the CA"
# Two identities (the first superseded, so revoked) and their published
# copy, so that lookups and uploads have real data to answer with.
for n in 1 2; do
  printf '%s\n' "$PASSWORD" | "$BIN/mailid" --store store enroll --email "$ALICE" \
    --mta "$MTA_URL" --ca "$CA_URL" --password-stdin >"enroll-$n.txt" 2>&1 || fatal "mailid enroll ($n)"
done
issued() { sed -n 's/^step 9: CA issued serial \([0-9a-f]*\) .*/\1/p' "$1"; }
S1="$(issued enroll-1.txt)"
S2="$(issued enroll-2.txt)"
[ -n "$S1" ] && [ -n "$S2" ] || fatal "no serials in the enrollment output"
CERT="store/$ALICE/$S2/cert.pem"
KID="$("$BIN/mailid" key-id "$CERT")" || fatal "mailid key-id"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout csr.key \
  -subj "/CN=$ALICE" -addext "subjectAltName=email:$ALICE" -out csr.pem 2>/dev/null || fatal "openssl req"
CSR_KID="$("$BIN/mailid" key-id csr.pem)" || fatal "mailid key-id csr.pem"
# A key backup as the client makes one (PKCS#8, PBES2 with AES-256-CBC).
openssl pkcs8 -topk8 -v2 aes-256-cbc -in csr.key -passout pass:schemathesis-recovery \
  -out backup.pem 2>/dev/null || fatal "openssl pkcs8 -topk8"
echo "schemathesis: MTA at $MTA_URL, CA at $CA_URL (serials $S1, $S2)"

# Real values schemathesis mixes into what it generates (half the time for
# each bound field): serials, addresses (plain and strong), key IDs, a CSR,
# the identity certificate and its chain, an encrypted key.
{
  echo '[dictionaries.serials]'
  echo "values = [\"$S1\", \"$S2\"]"
  echo '[dictionaries.addresses]'
  echo "values = [\"$ALICE\", \"ALICE@Example.COM\", \"$KID?$ALICE\", \"?$ALICE\", \"nobody@example.com\"]"
  echo '[dictionaries.key_ids]'
  echo "values = [\"$KID\", \"$CSR_KID\"]"
  echo '[dictionaries.accounts]'
  echo "values = [\"$ALICE\"]"
  for d in csrs:csr.pem certificates:"$CERT" chains:"store/$ALICE/$S2/chain.pem" backups:backup.pem; do
    echo "[dictionaries.${d%%:*}]"
    printf "values = ['''\n%s\n''']\n" "$(cat "${d#*:}")"
  done
  echo '[parameters]'
  for b in path.serial:serials path.address:addresses body.key_id:key_ids body.serial:serials \
    body.account:accounts body.csr:csrs body.certificate:certificates body.chain:chains \
    path.key_id:key_ids body.encrypted_key:backups; do
    echo "\"${b%%:*}\" = { dictionary = \"${b#*:}\", probability = 0.5 }"
  done
} >schemathesis.toml

# --- schemathesis ------------------------------------------------------------
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
SEED_ARGS=()
[ -n "${SCHEMATHESIS_SEED:-}" ] && SEED_ARGS=(--seed "$SCHEMATHESIS_SEED")

# run NAME SCHEMA URL [EXTRA...]
run() {
  local name="$1" schema="$2" url="$3"; shift 3
  echo
  echo "==> schemathesis: $name ($schema against $url)"
  if "$ST" --config-file "$WORK/schemathesis.toml" run "$ROOT/$schema" --url "$url" \
    --checks "$CHECKS" \
    --phases examples,coverage,fuzzing \
    --max-examples "$MAX_EXAMPLES" \
    --workers 2 \
    --request-timeout 40 \
    --suppress-health-check all \
    --report junit --report-dir "$WORK/report-$name" \
    "${SEED_ARGS[@]}" "$@" 2>&1 | tee "$WORK/$name.txt"; then
    PASSED=$((PASSED + 1))
    echo "ok   - $name conforms to $schema"
  else
    FAILED=$((FAILED + 1))
    echo "FAIL - $name: schemathesis found failures (see above)"
  fi
}

run mta-auth docs/openapi/mta-auth.yaml "$MTA_URL" --auth "$ALICE:$PASSWORD"
run ca docs/openapi/ca.yaml "$CA_URL"

# The services logged no panic and are still up.
for s in mta ca; do
  if grep -q 'panicked' "$s.log"; then
    FAILED=$((FAILED + 1)); echo "FAIL - the $s logged a panic"; grep -m 3 panicked "$s.log"
  else
    PASSED=$((PASSED + 1)); echo "ok   - the $s logged no panic"
  fi
done
echo "schemathesis: what the requests reached (from /metrics):"
curl -fsS "$MTA_URL/metrics" | grep -E '^mailid_mta_(validations|codes_issued|identity_uploads|backup_writes)' | sed 's/^/  /'
curl -fsS "$CA_URL/metrics" | grep -E '^mailid_ca_(enrollments|revocation_requests)_total' | sed 's/^/  /'
for u in "$MTA_URL" "$CA_URL"; do
  if curl -fsS "$u/healthz" >/dev/null; then
    PASSED=$((PASSED + 1)); echo "ok   - $u still healthy"
  else
    FAILED=$((FAILED + 1)); echo "FAIL - $u not healthy after the run"
  fi
done

echo "schemathesis: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
