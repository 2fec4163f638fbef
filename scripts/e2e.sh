#!/usr/bin/env bash
# mailid end-to-end issuance test, for operators to rerun on any machine:
# starts a real MTA auth service and CA on free loopback ports in a temp
# dir, runs the whole flow with `mailid`, then again with a client we did not
# write (`openssl req` + curl), and checks the results with openssl: chain
# and CRL verification, an S/MIME (CMS) signature over a small RFC 5322
# message, and revocation of the old identity after re-enrollment.
#
# Uses the debug binaries (built if needed) or those in MAILID_BIN_DIR.
# Needs: cargo (unless MAILID_BIN_DIR), openssl, curl, base32, sed.
# Prints "e2e: N passed, M failed" and exits non-zero on any failure.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# services_setup, fatal, port_busy, free_port, start
. "$ROOT/scripts/lib/services.sh"
services_setup e2e MAILID_E2E_KEEP

pass() { PASSED=$((PASSED + 1)); echo "ok   - $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $*"; }
# check DESCRIPTION COMMAND...: runs the command, records the result.
check() {
  local what="$1"; shift
  if "$@" >"$WORK/last.out" 2>&1; then pass "$what"; else fail "$what"; sed 's/^/       /' "$WORK/last.out" | tail -n 15; fi
}

for tool in openssl curl base32 sed; do
  command -v "$tool" >/dev/null 2>&1 || fatal "'$tool' is not installed"
done

if [ -n "${MAILID_BIN_DIR:-}" ]; then
  BIN="$MAILID_BIN_DIR"
else
  (cd "$ROOT" && cargo build --bins --quiet) || fatal "cargo build"
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}"
  case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
  BIN="$BIN/debug"
fi
for b in mailid mailid-ca mailid-mta-auth; do
  [ -x "$BIN/$b" ] || fatal "no binary $BIN/$b"
done
MAILID="$BIN/mailid"
cd "$WORK" || fatal "cd $WORK"


PASSWORD="e2e $(head -c 12 /dev/urandom | base32 | tr -d =)"
ALICE=alice@example.com
BOB=bob@example.com

echo "e2e: working in $WORK"
"$BIN/mailid-mta-auth" --data-dir mta init >/dev/null || fatal "mta init"
for a in "$ALICE" "$BOB"; do
  printf '%s\n' "$PASSWORD" | "$BIN/mailid-mta-auth" --data-dir mta account add "$a" --password-stdin >/dev/null ||
    fatal "account add $a"
done
start mta "$BIN/mailid-mta-auth" --data-dir mta serve --listen 127.0.0.1:0 || fatal "start the MTA"
MTA_URL="$URL"
CA_PORT="$(free_port)" || fatal "no free port"
CA_URL="http://127.0.0.1:$CA_PORT"
"$BIN/mailid-ca" --data-dir ca init --name "mailid e2e CA" --base-url "$CA_URL" >/dev/null || fatal "ca init"
"$BIN/mailid-mta-auth" --data-dir mta ca add e2e-ca --trust-cert ca/ca.pem >credential || fatal "ca add"
"$BIN/mailid-ca" --data-dir ca mta add --domain example.com --url "$MTA_URL" --ca-name e2e-ca \
  --credential-file credential >/dev/null || fatal "mta add"
start ca "$BIN/mailid-ca" --data-dir ca serve --listen "127.0.0.1:$CA_PORT" || fatal "start the CA"
echo "e2e: MTA at $MTA_URL, CA at $CA_URL"

# --- helpers over the CA's CRL and openssl -----------------------------------
fetch_crl() { curl -fsS "$CA_URL/v1/crl.pem" -o crl.pem && cat ca/ca.pem crl.pem >ca+crl.pem; }
# crl_lists SERIAL: waits (up to 10 s) until the served CRL lists SERIAL.
crl_lists() {
  for _ in $(seq 1 50); do
    fetch_crl && openssl crl -in crl.pem -noout -text | grep -qi "Serial Number: *$1\$" && return 0
    sleep 0.2
  done
  return 1
}
verify_ok() { openssl verify -purpose smimesign -crl_check -CAfile ca/ca.pem -CRLfile crl.pem "$1"; }
verify_revoked() {
  ! openssl verify -crl_check -CAfile ca/ca.pem -CRLfile crl.pem "$1" >verify.txt 2>&1 &&
    grep -q 'certificate revoked' verify.txt
}
message() {
  printf 'From: %s\r\nTo: %s\r\nSubject: mailid e2e\r\nDate: %s\r\nMessage-ID: <%s@example.com>\r\n\r\nHello from the mailid end-to-end test.\r\n' \
    "$1" "$BOB" "$(date -R)" "$RANDOM$RANDOM"
}
# cms_sign CERT KEY CHAIN OUT: signs a fresh message from the cert's owner.
cms_sign() {
  message "$ALICE" >"$4.eml" &&
    openssl cms -sign -in "$4.eml" -signer "$1" -inkey "$2" -certfile "$3" -out "$4"
}
cms_verify() {
  openssl cms -verify -in "$1" -CAfile ca+crl.pem -crl_check -purpose smimesign -out "$1.content" &&
    grep -q 'Hello from the mailid end-to-end test' "$1.content"
}
issued() { sed -n 's/^step 9: CA issued serial \([0-9a-f]*\) .*/\1/p' "$1"; }

# --- 1. the mailid client ----------------------------------------------------
enroll_alice() {
  printf '%s\n' "$PASSWORD" | "$MAILID" --store store enroll --email "$ALICE" \
    --mta "$MTA_URL" --ca "$CA_URL" --password-stdin >"$1"
}
check "mailid enroll (first identity)" enroll_alice enroll-1.txt
S1="$(issued enroll-1.txt)"
[ -n "$S1" ] || fatal "no serial in the first enrollment"
C1="store/$ALICE/$S1"
check "every step is reported" test "$(grep -c '^step ' enroll-1.txt)" -ge 10
check "mailid lookup finds serial $S1" sh -c "'$MAILID' lookup '$ALICE' --mta '$MTA_URL' --out looked-up.pem | grep -q 'serial:   $S1'"
check "looked-up certificate is the stored one" cmp looked-up.pem "$C1/cert.pem"
check "mailid key-id of the certificate equals that of the key" \
  test "$("$MAILID" key-id "$C1/cert.pem")" = "$("$MAILID" key-id "$C1/key.pem")"
check "stored key is mode 0600" test "$(stat -c %a "$C1/key.pem")" = 600
fetch_crl || fatal "GET /v1/crl.pem"
check "openssl verify (smimesign, with CRL) accepts the identity" verify_ok "$C1/cert.pem"
check "openssl cms -sign with the identity" cms_sign "$C1/cert.pem" "$C1/key.pem" "$C1/chain.pem" signed-1.eml
check "openssl cms -verify against the CA with the CRL" cms_verify signed-1.eml

check "mailid enroll again (second identity)" enroll_alice enroll-2.txt
S2="$(issued enroll-2.txt)"
[ -n "$S2" ] || fatal "no serial in the second enrollment"
C2="store/$ALICE/$S2"
check "the CA revoked the first identity as superseded" grep -q "step 8: CA revoked serial $S1 (superseded)" enroll-2.txt
check "the CRL lists the first identity" crl_lists "$S1"
check "openssl verify -crl_check reports the old identity revoked" verify_revoked "$C1/cert.pem"
check "openssl verify accepts the new identity" verify_ok "$C2/cert.pem"
check "openssl cms -verify rejects a message signed by the old identity" sh -c "! openssl cms -verify -in signed-1.eml -CAfile ca+crl.pem -crl_check -purpose smimesign -out /dev/null"
cms_round_trip() { cms_sign "$1/cert.pem" "$1/key.pem" "$1/chain.pem" "$2" && cms_verify "$2"; }
check "openssl cms sign and verify with the new identity" cms_round_trip "$C2" signed-2.eml
check "mailid show lists the old identity as superseded" sh -c "'$MAILID' --store store show --email '$ALICE' | grep -q '^superseded: serial $S1'"
check "the MTA publishes the new identity" sh -c "curl -fsS '$MTA_URL/v1/identity/alice%40example.com' | grep -q '\"serial\":\"$S2\"'"

# --- 2. openssl req + curl (a client we did not write) -----------------------
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out bob.key 2>/dev/null || fatal "openssl genpkey"
openssl req -new -key bob.key -subj "/CN=$BOB" -addext "subjectAltName=email:$BOB" -out bob.csr ||
  fatal "openssl req"
# Strong key ID V=2: 0x02 || SHA-512(0x02 || SPKI DER)[..32], Base32.
openssl pkey -in bob.key -pubout -outform DER -out bob.spki.der || fatal "openssl pkey -pubout"
{ printf '\002'; { printf '\002'; cat bob.spki.der; } | openssl dgst -sha512 -binary | head -c 32; } >bob.kid.bin
BOB_KID="$(base32 -w0 <bob.kid.bin | tr -d =)"
check "mailid key-id of the openssl CSR matches the shell-computed key ID" \
  test "$("$MAILID" key-id bob.csr | tr -d -)" = "$BOB_KID"
json_field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p"; }
pem_json() { awk '{printf "%s\\n", $0}' "$1"; }

curl -fsS -u "$BOB:$PASSWORD" -H 'Content-Type: application/json' \
  -d "{\"key_id\":\"$BOB_KID\"}" "$MTA_URL/v1/totp" >totp.json || fatal "curl POST /v1/totp"
TOTP="$(json_field totp <totp.json)"
check "the MTA gave a code bound to the key" sh -c "test -n '$TOTP' && grep -q '\"key_id\":\"[A-Z2-7-]*\"' totp.json"
printf '{"csr":"%s","totp":"%s"}' "$(pem_json bob.csr)" "$TOTP" >enroll.json
code="$(curl -sS -o issued.json -w '%{http_code}' -H 'Content-Type: application/json' \
  --data-binary @enroll.json "$CA_URL/v1/certificates")"
check "curl POST /v1/certificates gives 201" test "$code" = 201
BOB_SERIAL="$(json_field serial <issued.json)"
json_field certificate <issued.json | sed 's/\\n/\n/g' >bob.pem
json_field chain <issued.json | sed 's/\\n/\n/g' >bob-chain.pem
fetch_crl || fatal "GET /v1/crl.pem"
check "openssl verify accepts the curl-enrolled identity" verify_ok bob.pem
check "the certificate names $BOB" sh -c "openssl x509 -in bob.pem -noout -ext subjectAltName | grep -q 'email:$BOB'"
code="$(curl -sS -o replay.json -w '%{http_code}' -H 'Content-Type: application/json' \
  --data-binary @enroll.json "$CA_URL/v1/certificates")"
check "replaying the same code is refused with 403 totp-rejected" sh -c "test '$code' = 403 && grep -q totp-rejected replay.json"
printf '{"certificate":"%s","chain":"%s"}' "$(pem_json bob.pem)" "$(pem_json bob-chain.pem)" >upload.json
check "curl PUT /v1/identity publishes it" curl -fsS -u "$BOB:$PASSWORD" -X PUT \
  -H 'Content-Type: application/json' --data-binary @upload.json "$MTA_URL/v1/identity"
check "mailid lookup with the strong address finds it" sh -c \
  "'$MAILID' lookup '$BOB_KID?$BOB' --mta '$MTA_URL' | grep -q 'serial:   $BOB_SERIAL'"
check "a wrong password is refused with 401" sh -c \
  "test \"\$(curl -sS -o /dev/null -w '%{http_code}' -u '$BOB:wrong' -H 'Content-Type: application/json' -d '{\"key_id\":\"$BOB_KID\"}' '$MTA_URL/v1/totp')\" = 401"

echo "e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
