#!/usr/bin/env bash
# Interoperability suite: issues identities from running mailid services and
# checks them with real relying-party tools: pkilint, OpenSSL, NSS (the
# library Thunderbird uses), GnuTLS and Python `cryptography`.
#
#   scripts/interop.sh            # uses target/debug binaries (builds them if missing)
#   MAILID_BIN_DIR=target/release scripts/interop.sh
#   MAILID_INTEROP_HSM=1 scripts/interop.sh   # both CA keys in a SoftHSM2 token
#
# Installs what it needs: Debian openssl, libnss3-tools, gnutls-bin;
# pkilint and cryptography in a virtualenv under target/interop-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

BIN_DIR=${MAILID_BIN_DIR:-$root/target/debug}
[ -x "$BIN_DIR/mailid-ca" ] && [ -x "$BIN_DIR/mailid-mta-auth" ] && [ -x "$BIN_DIR/mailid" ] || cargo build --workspace --bins
MTA="$BIN_DIR/mailid-mta-auth"; CA="$BIN_DIR/mailid-ca"; CLIENT="$BIN_DIR/mailid"

# --- tools -------------------------------------------------------------------
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v certutil >/dev/null && command -v vfychain >/dev/null && command -v cmsutil >/dev/null || need+=(libnss3-tools)
command -v certtool >/dev/null || need+=(gnutls-bin)
command -v curl >/dev/null || need+=(curl)
command -v jq >/dev/null || need+=(jq)
if [ -n "${MAILID_INTEROP_HSM:-}" ]; then command -v softhsm2-util >/dev/null || need+=(softhsm2); fi
if [ ${#need[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Pinned so that a new pkilint release (new lints) cannot change the verdict
# on an unchanged tree; bump them on purpose.
PKILINT_VERSION=0.13.3
CRYPTOGRAPHY_VERSION=50.0.2
VENV=$root/target/interop-venv
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('pkilint') != '$PKILINT_VERSION' or m.version('cryptography') != '$CRYPTOGRAPHY_VERSION')" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "pkilint==$PKILINT_VERSION" "cryptography==$CRYPTOGRAPHY_VERSION"
fi
PY="$VENV/bin/python"

# --- bookkeeping ---------------------------------------------------------------
pass=0; fail=0
declare -A tool_count=()
ok()   { pass=$((pass+1)); tool_count[$1]=$(( ${tool_count[$1]:-0} + 1 )); }
bad()  { fail=$((fail+1)); echo "FAIL [$1] $2" >&2; }
check() { # check TOOL DESCRIPTION COMMAND...
  local tool=$1 desc=$2; shift 2
  local out
  if out=$("$@" 2>&1); then ok "$tool"; echo "ok   [$tool] $desc"; else bad "$tool" "$desc"; echo "$out" | tail -20 >&2; fi
}

work=$(mktemp -d /tmp/mailid-interop.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; if [ -n "${MAILID_INTEROP_KEEP:-}" ]; then echo "interop: kept $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT

start() { # start NAME BIN DATA_DIR [ARGS...] -> sets URL
  local name=$1 bin=$2 dir=$3; shift 3
  "$bin" --data-dir "$dir" serve --listen 127.0.0.1:0 "$@" >"$work/$name.out" 2>"$work/$name.log" &
  pids+=($!)
  for _ in $(seq 1 300); do
    if grep -q '^listening on ' "$work/$name.out" 2>/dev/null; then
      URL=$(sed -n 's/^listening on //p' "$work/$name.out" | head -1); return 0
    fi
    sleep 0.1
  done
  echo "interop: $name did not start" >&2; cat "$work/$name.log" >&2; exit 1
}

PW=interop-password-1
DOMAIN=example.com
KEYTYPES=(p256 p384 rsa2048 rsa3072)

# --- MTA ---------------------------------------------------------------------
"$MTA" --data-dir "$work/mta" init >/dev/null
for ca in root inter; do for kt in "${KEYTYPES[@]}" crl; do
  printf '%s\n' "$PW" | "$MTA" --data-dir "$work/mta" account add "$kt-$ca@$DOMAIN" --password-stdin >/dev/null
done; done

# --- the CA keys: files, or (MAILID_INTEROP_HSM) a SoftHSM2 token ---------------
ROOT_KEY=(); INTER_KEY=(--import-key "$work/offline/inter.key")
if [ -n "${MAILID_INTEROP_HSM:-}" ]; then
  mkdir -p "$work/hsm/tokens"
  printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$work/hsm/tokens" >"$work/hsm/softhsm2.conf"
  export SOFTHSM2_CONF=$work/hsm/softhsm2.conf
  softhsm2-util --init-token --free --label interop --pin interop-pin-1 --so-pin interop-so-1 >/dev/null
  printf 'interop-pin-1\n' >"$work/hsm/pin"
  HSM_MODULE=
  for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so; do
    [ -e "$m" ] && HSM_MODULE=$m && break
  done
  hsm_uri() { echo "pkcs11:token=interop;object=$1?module-path=$HSM_MODULE&pin-source=file:$work/hsm/pin"; }
  ROOT_KEY=(--key-uri "$(hsm_uri root-ca)" --key-type p384)
  INTER_KEY=(--key-uri "$(hsm_uri inter-ca)")
  echo "interop: CA keys in a SoftHSM2 token"
fi

# --- CA 1: a root made by mailid-ca init ----------------------------------------
# pkilint reports loopback and reserved names (.example, .test, localhost) in
# CRL/AIA URLs as internal (cabf.internal_domain_name), so the CAs under test
# get a public-looking base URL; the CRLs are fetched from loopback directly.
"$CA" --data-dir "$work/root" init --name "mailid Interop Root CA" --base-url http://pki.example.com "${ROOT_KEY[@]}" >/dev/null
"$MTA" --data-dir "$work/mta" ca add root-ca --trust-cert "$work/root/ca.pem" >"$work/root.cred"

# --- CA 2: an intermediate under an offline root made with openssl -------------
mkdir -p "$work/offline"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$work/offline/root.key" 2>/dev/null
openssl req -x509 -new -key "$work/offline/root.key" -subj "/CN=mailid Interop Offline Root/O=mailid interop" -days 3650 -sha384 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -addext "subjectKeyIdentifier=hash" -out "$work/offline/root.pem" 2>/dev/null
if [ -n "${MAILID_INTEROP_HSM:-}" ]; then
  # The intermediate's key pair is made in the token, which signs its CSR.
  "$CA" csr --key-uri "$(hsm_uri inter-ca)" --key-type rsa2048 --name "mailid Interop Issuing CA" --out "$work/offline/inter.csr" >/dev/null
else
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/offline/inter.key" 2>/dev/null
  openssl req -new -key "$work/offline/inter.key" -subj "/CN=mailid Interop Issuing CA/O=mailid interop" -out "$work/offline/inter.csr" 2>/dev/null
fi
cat >"$work/offline/inter.ext" <<EXT
basicConstraints=critical,CA:TRUE,pathlen:0
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
openssl x509 -req -in "$work/offline/inter.csr" -CA "$work/offline/root.pem" -CAkey "$work/offline/root.key" \
  -set_serial "0x$(openssl rand -hex 16)" -days 1825 -sha384 -extfile "$work/offline/inter.ext" -out "$work/offline/inter.pem" 2>/dev/null
"$CA" --data-dir "$work/inter" init --name "mailid Interop Issuing CA" --base-url http://pki2.example.com \
  --import-cert "$work/offline/inter.pem" "${INTER_KEY[@]}" >/dev/null
cat "$work/offline/inter.pem" "$work/offline/root.pem" >"$work/inter-chain.pem"
"$MTA" --data-dir "$work/mta" ca add inter-ca --trust-cert "$work/offline/root.pem" >"$work/inter.cred"

start mta "$MTA" "$work/mta"; MTA_URL=$URL
"$CA" --data-dir "$work/root" mta add --domain "$DOMAIN" --url "$MTA_URL" --ca-name root-ca --credential-file "$work/root.cred" >/dev/null
"$CA" --data-dir "$work/inter" mta add --domain "$DOMAIN" --url "$MTA_URL" --ca-name inter-ca --credential-file "$work/inter.cred" >/dev/null
start root "$CA" "$work/root"; ROOT_URL=$URL
start inter "$CA" "$work/inter"; INTER_URL=$URL

# --- issuance -------------------------------------------------------------------
keygen() { # keygen TYPE FILE
  case $1 in
    p256) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$2" ;;
    p384) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$2" ;;
    rsa2048) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$2" ;;
    rsa3072) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$2" ;;
  esac 2>/dev/null
}

enroll() { # enroll CA_URL ADDRESS KEYTYPE OUT_PREFIX [SUBJECT]  (openssl req + curl: a client we did not write)
  local ca_url=$1 addr=$2 kt=$3 out=$4 subj=${5:-/CN=$2}
  keygen "$kt" "$out.key"
  openssl req -new -key "$out.key" -subj "$subj" -addext "subjectAltName=email:$addr" -out "$out.csr" 2>/dev/null
  local kid totp
  kid=$("$CLIENT" key-id "$out.csr")
  totp=$(curl -sS -f -u "$addr:$PW" -H 'content-type: application/json' -d "{\"key_id\":\"$kid\"}" "$MTA_URL/v1/totp" | jq -r .totp)
  jq -n --rawfile csr "$out.csr" --arg totp "$totp" '{csr:$csr,totp:$totp}' >"$out.req.json"
  curl -sS -f -H 'content-type: application/json' --data-binary @"$out.req.json" "$ca_url/v1/certificates" >"$out.json"
  jq -r .certificate "$out.json" >"$out.pem"
  jq -r .chain "$out.json" >"$out.chain.pem"
  jq -r .serial "$out.json" >"$out.serial"
}

certs=()
for ca in root inter; do
  url=$ROOT_URL; [ $ca = inter ] && url=$INTER_URL
  for kt in "${KEYTYPES[@]}"; do
    enroll "$url" "$kt-$ca@$DOMAIN" "$kt" "$work/$ca-$kt"
    certs+=("$ca-$kt")
  done
done
# The longest address SPEC allows (254 octets): too long for a commonName
# (ub-common-name is 64), so its certificate carries it in the SAN alone.
rep() { head -c "$1" /dev/zero | tr '\0' "$2"; }
LONG_DOMAIN="$(rep 59 a).$(rep 58 b).$(rep 58 c).$DOMAIN"
LONG="$(rep 64 l)@$LONG_DOMAIN"
printf '%s\n' "$PW" | "$MTA" --data-dir "$work/mta" account add "$LONG" --password-stdin >/dev/null
"$CA" --data-dir "$work/root" mta add --domain "$LONG_DOMAIN" --url "$MTA_URL" --ca-name root-ca --credential-file "$work/root.cred" >/dev/null
enroll "$ROOT_URL" "$LONG" p256 "$work/root-long254" "/"
certs+=("root-long254")
echo "interop: issued ${#certs[@]} identities (4 key types x root and intermediate, and a ${#LONG}-octet address)"

fetch_crl() { # fetch_crl CA_URL OUT_PREFIX
  curl -sS -f "$1/v1/crl.der" -o "$2.crl.der"
  openssl crl -inform DER -in "$2.crl.der" -out "$2.crl.pem"
}
# Empty CRLs (nothing revoked yet).
fetch_crl "$ROOT_URL" "$work/root-empty"; fetch_crl "$INTER_URL" "$work/inter-empty"

# Trust anchors and bundles.
cp "$work/root/ca.pem" "$work/root-anchor.pem"
cp "$work/offline/root.pem" "$work/inter-anchor.pem"

pkilint_cert() { "$VENV/bin/lint_cabf_smime_cert" lint -d -s WARNING "$1" && "$VENV/bin/lint_pkix_cert" lint -s WARNING "$1"; }
pkilint_crl()  { "$VENV/bin/lint_crl" lint -t CRL -p BR -s WARNING "$1" && "$VENV/bin/lint_crl" lint -t CRL -p PKIX -s WARNING "$1"; }

# --- per-identity checks ---------------------------------------------------------
msg="$work/message.eml"
printf 'From: sender@example.com\r\nTo: someone@example.org\r\nSubject: mailid interop\r\nDate: Sun, 22 Nov 2026 12:00:00 +0000\r\nMessage-ID: <interop@example.com>\r\n\r\nHello from the mailid interop suite.\r\n' >"$msg"

for c in "${certs[@]}"; do
  ca=${c%%-*}; kt=${c#*-}; f="$work/$c"
  anchor="$work/$ca-anchor.pem"
  untrusted=()
  [ "$ca" = inter ] && untrusted=(-untrusted "$work/offline/inter.pem")
  check pkilint "$c lint" pkilint_cert "$f.pem"
  check openssl "$c verify smimesign+crl" openssl verify -purpose smimesign -crl_check -CAfile "$anchor" "${untrusted[@]}" -CRLfile "$work/$ca-empty.crl.pem" "$f.pem"
  # CMS sign and verify, CRL in the CAfile bundle (OpenSSL 3.0 cms has no -CRLfile).
  cat "$anchor" "$work/$ca-empty.crl.pem" >"$f.bundle.pem"
  if [ "$ca" = inter ]; then cat "$work/offline/inter.pem" >>"$f.bundle.pem"; fi
  check openssl "$c cms sign/verify" bash -c "openssl cms -sign -in '$msg' -signer '$f.pem' -inkey '$f.key' -certfile '$f.chain.pem' -out '$f.p7m' && openssl cms -verify -in '$f.p7m' -CAfile '$f.bundle.pem' -crl_check -purpose smimesign -out /dev/null"
  if [[ $kt == rsa* ]]; then
    check openssl "$c cms encrypt/decrypt" bash -c "openssl cms -encrypt -aes-256-cbc -in '$msg' -out '$f.enc' '$f.pem' && openssl cms -decrypt -in '$f.enc' -recip '$f.pem' -inkey '$f.key' | cmp -s - '$msg'"
  fi
  check gnutls "$c certtool verify" bash -c "cat '$f.pem' '$f.chain.pem' | certtool --verify --load-ca-certificate '$anchor'"
done

# --- NSS ---------------------------------------------------------------------------
for ca in root inter; do
  db="$work/nss-$ca"; mkdir -p "$db"
  certutil -N -d "sql:$db" --empty-password
  certutil -A -d "sql:$db" -n "anchor" -t "C,C,C" -i "$work/$ca-anchor.pem"
  [ "$ca" = inter ] && certutil -A -d "sql:$db" -n "issuing" -t ",," -i "$work/offline/inter.pem"
  for kt in "${KEYTYPES[@]}"; do
    f="$work/$ca-$kt"
    check nss "$ca-$kt vfychain email signer" vfychain -d "sql:$db" -p -u 4 -a "$f.pem"
    check nss "$ca-$kt vfychain email recipient" vfychain -d "sql:$db" -p -u 5 -a "$f.pem"
  done
  # Sign with cmsutil using an identity imported with its key.
  kt=p256; f="$work/$ca-$kt"
  openssl pkcs12 -export -in "$f.pem" -inkey "$f.key" -certfile "$f.chain.pem" -name signer -passout pass:interop -out "$f.p12"
  pk12util -d "sql:$db" -i "$f.p12" -W interop >/dev/null
  check nss "$ca cmsutil sign/verify" bash -c "cmsutil -S -N signer -d 'sql:$db' -i '$msg' -o '$f.nss.p7m' && cmsutil -D -d 'sql:$db' -i '$f.nss.p7m' -u 4 >/dev/null"
done

# --- revocation, CRLs with one and many entries ---------------------------------------
for ca in root inter; do
  url=$ROOT_URL; [ $ca = inter ] && url=$INTER_URL
  # One entry: revoke the P-256 identity through the CLI.
  "$CA" --data-dir "$work/$ca" revoke "$(cat "$work/$ca-p256.serial")" --reason keyCompromise >/dev/null
  sleep 3
  fetch_crl "$url" "$work/$ca-one"
  # The revoked identity no longer verifies.
  if openssl verify -purpose smimesign -crl_check -CAfile "$work/$ca-anchor.pem" \
       $([ $ca = inter ] && echo "-untrusted $work/offline/inter.pem") \
       -CRLfile "$work/$ca-one.crl.pem" $([ $ca = inter ] && echo "-CRLfile $work/inter-one.crl.pem") \
       "$work/$ca-p256.pem" >/dev/null 2>&1; then
    bad openssl "$ca revoked identity still verifies"
  else ok openssl; echo "ok   [openssl] $ca revoked identity fails verify -crl_check"; fi
  # Many entries, every reason: enroll and revoke more identities.
  i=0
  for reason in superseded affiliationChanged cessationOfOperation privilegeWithdrawn keyCompromise; do
    for n in 1 2; do
      i=$((i+1)); enroll "$url" "crl-$ca@$DOMAIN" p256 "$work/$ca-many-$i"
      "$CA" --data-dir "$work/$ca" revoke "$(cat "$work/$ca-many-$i.serial")" --reason "$reason" >/dev/null 2>&1 || true
    done
  done
  # And one holder revocation without a reason (unspecified: no reasonCode).
  i=$((i+1)); enroll "$url" "crl-$ca@$DOMAIN" p256 "$work/$ca-many-$i"
  kid=$("$CLIENT" key-id "$work/$ca-many-$i.pem")
  totp=$(curl -sS -f -u "crl-$ca@$DOMAIN:$PW" -H 'content-type: application/json' -d "{\"key_id\":\"$kid\"}" "$MTA_URL/v1/totp" | jq -r .totp)
  curl -sS -f -H 'content-type: application/json' -d "{\"serial\":\"$(cat "$work/$ca-many-$i.serial")\",\"totp\":\"$totp\"}" "$url/v1/revocations" >/dev/null
  sleep 3
  fetch_crl "$url" "$work/$ca-many"
  for kind in empty one many; do
    crl="$work/$ca-$kind.crl.der"
    check pkilint "$ca $kind CRL lint" pkilint_crl "$crl"
    issuer_cert="$work/$ca/ca.pem"; [ $ca = inter ] && issuer_cert="$work/offline/inter.pem"
    check openssl "$ca $kind crl -verify" bash -c "openssl crl -inform DER -in '$crl' -CAfile '$issuer_cert' -noout 2>&1 | grep -q 'verify OK'"
  done
done

# --- strict parsing with Python cryptography ------------------------------------------------
check cryptography "root CA: certificates and CRLs" "$PY" interop/check.py "$work/root/ca.pem" \
  "$work"/root-{p256,p384,rsa2048,rsa3072}.pem "$work"/root-{empty,one,many}.crl.der
check cryptography "intermediate: certificates and CRLs" "$PY" interop/check.py "$work/offline/inter.pem" \
  "$work"/inter-{p256,p384,rsa2048,rsa3072}.pem "$work"/inter-{empty,one,many}.crl.der
check pkilint "root CA certificate lint" "$VENV/bin/lint_pkix_cert" lint -s WARNING "$work/root/ca.pem"

echo
echo "interop: tool versions:"
echo "  $(openssl version)"
echo "  NSS $(dpkg-query -W -f='${Version}' libnss3 2>/dev/null) (certutil, vfychain, cmsutil)"
echo "  $(certtool --version | head -1)"
echo "  pkilint $("$VENV/bin/pip" show pkilint 2>/dev/null | sed -n 's/^Version: //p'), cryptography $("$VENV/bin/pip" show cryptography 2>/dev/null | sed -n 's/^Version: //p')"
echo "interop: checks by tool:"
for t in "${!tool_count[@]}"; do echo "  $t: ${tool_count[$t]}"; done
echo "interop: $pass passed, $fail failed"
[ "$fail" = 0 ]
