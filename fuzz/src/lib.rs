//! The bodies of mailid's fuzz targets (one function per target in
//! `fuzz_targets/`). Each feeds the input to the library functions the
//! services run on untrusted bytes and checks a few properties that must
//! hold for every input; a panic anywhere is a finding.
//!
//! Run them with `scripts/fuzz.sh`.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use der::{Decode, Encode};
use mailid_shared::protocol::{
    EnrollRequest, IdentityUpload, RevokeRequest, TotpRequest, ValidateRequest, ValidateResponse,
};
use mailid_shared::{pem, Address, ApiJson, KeyId, Serial, StrongAddress};
use x509_cert::crl::CertificateList;
use x509_cert::Certificate;

use mailid_ca::policy;
use mailid_mta_auth::identity::{self, crl, x509};

/// A fixed "now" inside the fixtures' validity (2027-01-15).
pub const NOW: i64 = 1_800_000_000;

/// Fixture: a self-signed P-256 CA that the upload target trusts.
pub const CA_DER: &[u8] = include_bytes!("../fixtures/ca.der");
/// Fixture: an intermediate CA issued by [`CA_DER`].
pub const INT_DER: &[u8] = include_bytes!("../fixtures/int.der");
/// Fixture: alice@example.org's identity issued by [`CA_DER`] (revoked in
/// the CRL seed).
pub const LEAF_DER: &[u8] = include_bytes!("../fixtures/leaf.der");

fn cert(der: &[u8]) -> Certificate {
    Certificate::from_der(der).expect("fixture certificate parses")
}

/// Polls a future that never waits (the request body is in memory).
fn ready<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

// ---------------------------------------------------------------- csr

/// CSR checks as `POST /v1/certificates` runs them: PEM decoding, PKCS#10
/// parsing, key classification and policy, proof of possession, the single
/// address, then the conversion to the key the issuer signs.
fn check_csr_text(text: &str) {
    match policy::check_csr(text) {
        Ok(c) => {
            assert!(policy::check_key(&c.key).is_ok(), "accepted a refused key");
            assert_eq!(c.key_id, KeyId::of_spki(&c.spki_der));
            assert_eq!(Address::parse(c.account.as_str()).as_ref(), Ok(&c.account));
            let _ = mailid_ca::issuer::CsrPublicKey::from_csr(&c);
        }
        Err(p) => {
            let _ = p.document();
        }
    }
}

/// Target `csr`: the input as PEM text, and as DER wrapped in PEM.
pub fn csr(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        check_csr_text(text);
    }
    if data.len() <= policy::MAX_CSR_LEN / 2 {
        check_csr_text(&pem::encode("CERTIFICATE REQUEST", data));
    }
}

// ---------------------------------------------------------------- pem

/// Target `pem`: the three decoders on the text (lossy UTF-8, as the MTA
/// reads a fetched CRL); what decodes re-encodes to the same bytes.
pub fn pem(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let all = pem::decode_all(&text);
    let one = pem::decode_one(&text, &["CERTIFICATE", "X509 CRL", "CERTIFICATE REQUEST"]);
    let chain = pem::decode_chain(&text, "CERTIFICATE");
    match &all {
        Ok(blocks) => {
            assert!(!blocks.is_empty());
            for b in blocks {
                let again = pem::encode("CERTIFICATE", &b.der);
                assert_eq!(
                    pem::decode_one(&again, &["CERTIFICATE"]).as_deref(),
                    Ok(&b.der[..])
                );
            }
            if let Ok(der) = &one {
                assert_eq!(blocks.len(), 1);
                assert_eq!(&blocks[0].der, der);
            }
            if let Ok(ders) = &chain {
                assert_eq!(ders.len(), blocks.len());
                let bundle = pem::encode_chain(ders);
                assert_eq!(pem::decode_chain(&bundle, "CERTIFICATE").as_ref(), Ok(ders));
            }
        }
        Err(_) => {
            assert!(one.is_err() && chain.is_err());
        }
    }
}

// ---------------------------------------------------------------- keyid

/// Target `keyid`: strong key identifiers from text (as in JSON bodies and
/// strong addresses) and from bytes (as stored); what parses prints back
/// to itself; canonicalising an SPKI twice changes nothing.
pub fn keyid(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(id) = text.parse::<KeyId>() {
            check_keyid(&id);
        }
    }
    if let Ok(id) = KeyId::from_bytes(data) {
        assert_eq!(id.as_bytes(), data);
        check_keyid(&id);
    }
    if let Some((&v, rest)) = data.split_first() {
        if let Ok(id) = KeyId::compute(v, rest) {
            check_keyid(&id);
        }
        // The canonical SPKI is a fixed point: one key, one key ID.
        let canonical = mailid_shared::sigverify::canonical_spki(rest);
        assert_eq!(
            mailid_shared::sigverify::canonical_spki(&canonical).as_ref(),
            canonical.as_ref()
        );
    }
}

fn check_keyid(id: &KeyId) {
    let n = mailid_shared::keyid::digest_len(id.version()).expect("known version");
    assert_eq!(id.as_bytes().len(), n + 1);
    let display = id.to_string();
    assert_eq!(display.parse::<KeyId>().as_ref(), Ok(id));
    assert_eq!(
        id.to_base32().to_lowercase().parse::<KeyId>().as_ref(),
        Ok(id)
    );
    let json = serde_json::to_string(id).expect("serialises");
    assert_eq!(serde_json::from_str::<KeyId>(&json).ok().as_ref(), Some(id));
}

// ---------------------------------------------------------------- address

/// Target `address`: plain addresses (CSR names, `GET /v1/accounts/{a}`),
/// strong addresses (`GET /v1/identity/{a}`) and serial numbers
/// (`GET /v1/certificates/{serial}`), with round trips.
pub fn address(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(a) = Address::parse(text) {
        check_address(&a);
        assert!(a.as_str().eq_ignore_ascii_case(text));
    }
    if let Ok(s) = StrongAddress::parse(text) {
        check_address(&s.address);
        let again = StrongAddress::parse(&s.to_string());
        assert_eq!(again.as_ref(), Ok(&s), "strong address round trip");
        if let Some(k) = &s.key_id {
            check_keyid(k);
        }
    }
    if let Ok(serial) = text.parse::<Serial>() {
        let s = serial.as_str();
        assert!(s.len() <= 40 && s.len() % 2 == 0);
        assert!(s
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_eq!(Serial::from_bytes(&serial.to_bytes()), serial);
        assert_eq!(s.parse::<Serial>().as_ref(), Ok(&serial));
    }
}

fn check_address(a: &Address) {
    let s = a.as_str();
    assert!(s.len() <= mailid_shared::address::MAX_ADDRESS_LEN);
    assert_eq!(s, s.to_ascii_lowercase());
    assert_eq!(format!("{}@{}", a.local(), a.domain()), s);
    assert_eq!(Address::parse(s).as_ref(), Ok(a));
}

// ---------------------------------------------------------------- json

/// Decodes `data` the way the services' `ApiJson` extractor does: an axum
/// request with `Content-Type: application/json`, rejections turned into
/// problem documents.
fn api_json<T>(data: &[u8]) -> Option<T>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let req = axum::http::Request::builder()
        .method("POST")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(data.to_vec()))
        .expect("request builds");
    let res = ready(<ApiJson<T> as axum::extract::FromRequest<()>>::from_request(req, &()));
    match res {
        Ok(ApiJson(v)) => {
            round_trip(&v);
            Some(v)
        }
        Err(p) => {
            assert_eq!(p.document().status, 400, "JSON rejection is not a 400");
            None
        }
    }
}

/// What decodes must encode, and the encoding must decode again.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(v: &T) {
    let bytes = serde_json::to_vec(v).expect("decoded value encodes");
    serde_json::from_slice::<T>(&bytes).expect("encoded value decodes");
}

/// Target `json`: the input as every request body of both services, decoded
/// as each handler decodes it, followed by the cheap checks the handler
/// makes next: MTA `POST /v1/totp`, `POST /v1/validate` (plain
/// `serde_json`), `PUT /v1/identity`; CA `POST /v1/certificates`,
/// `POST /v1/revocations`; and the MTA's answer to the CA's validation call.
pub fn json(data: &[u8]) {
    let _ = api_json::<TotpRequest>(data);
    if let Ok(v) = serde_json::from_slice::<ValidateRequest>(data) {
        round_trip(&v);
    }
    if let Some(up) = api_json::<IdentityUpload>(data) {
        let _ = identity::parse_certs(&up.certificate, "certificate");
        if let Some(chain) = &up.chain {
            let _ = identity::parse_certs(chain, "chain");
        }
    }
    if let Some(req) = api_json::<EnrollRequest>(data) {
        let _ = mailid_ca::authority::check_totp_text(&req.totp);
        check_csr_text(&req.csr);
    }
    if let Some(req) = api_json::<RevokeRequest>(data) {
        let _ = mailid_ca::authority::check_totp_text(&req.totp);
        let reason = req
            .reason
            .unwrap_or(mailid_shared::protocol::RevocationReason::Unspecified);
        let _ = mailid_ca::authority::holder_may_use(reason);
    }
    if let Ok(answer) = serde_json::from_slice::<ValidateResponse>(data) {
        round_trip(&answer);
        let account = Address::parse("alice@example.org").expect("address");
        let key = KeyId::of_spki(b"fuzz");
        let _ = mailid_ca::mta_client::interpret(answer, &account, &key);
    }
}

// ---------------------------------------------------------------- upload

/// What the MTA's `PUT /v1/identity` checks do with an uploaded certificate
/// and chain before the CRL lookup, with [`CA_DER`] as the one trusted CA.
/// Mirrors `identity::check_upload` (which needs the store and network).
fn upload_checks(certificate: &str, chain: Option<&str>) {
    let Ok(mut leaf) = identity::parse_certs(certificate, "certificate") else {
        return;
    };
    if leaf.len() != 1 {
        return;
    }
    let (_leaf_der, leaf) = leaf.remove(0);
    let supplied = match chain {
        Some(text) if !text.trim().is_empty() => match identity::parse_certs(text, "chain") {
            Ok(s) => s,
            Err(_) => return,
        },
        _ => Vec::new(),
    };
    cert_helpers(&leaf);
    for (_, s) in &supplied {
        cert_helpers(s);
    }
    let trusted = [(CA_DER.to_vec(), cert(CA_DER))];
    let within = |c: &Certificate| {
        let (nb, na) = x509::validity(c);
        nb <= NOW && NOW <= na
    };
    let mut path: Vec<&(Vec<u8>, Certificate)> = Vec::new();
    let mut current = &leaf;
    loop {
        if trusted.iter().any(|(_, t)| x509::issued_by(current, t)) {
            break;
        }
        let next = supplied.iter().find(|(_, s)| {
            x509::issued_by(current, s)
                && x509::is_ca(s)
                && within(s)
                && !path.iter().any(|p| p.1 == *s)
        });
        match next {
            Some(n) if path.len() < 4 => {
                path.push(n);
                current = &n.1;
            }
            _ => return,
        }
    }
    let chain: Vec<Vec<u8>> = path.iter().map(|p| p.0.clone()).collect();
    let bundle = pem::encode_chain(&chain);
    assert_eq!(
        pem::decode_chain(&bundle, "CERTIFICATE").unwrap_or_default(),
        chain
    );
}

/// Every helper the upload path and the CRL check apply to a certificate.
fn cert_helpers(c: &Certificate) {
    let _ = x509::validity(c);
    let _ = x509::is_ca(c);
    let _ = x509::allows_email(c);
    let _ = x509::rfc822_names(c);
    let _ = x509::single_rfc822_name(c);
    let _ = x509::crl_urls(c);
    if let Ok(spki) = x509::spki_der(c) {
        let _ = KeyId::of_spki(&spki);
    }
    let serial = Serial::from_bytes(c.tbs_certificate.serial_number.as_bytes());
    assert_eq!(
        serial.as_str().parse::<Serial>().ok().as_ref(),
        Some(&serial)
    );
}

/// A CRL as the MTA handles a fetched one: PEM when it starts with
/// `-----BEGIN`, DER otherwise; verified against the fixture CAs.
fn upload_crl(body: &[u8]) {
    let der = if body.starts_with(b"-----BEGIN") {
        let text = String::from_utf8_lossy(body);
        match pem::decode_one(&text, &["X509 CRL"]) {
            Ok(d) => d,
            Err(_) => return,
        }
    } else {
        body.to_vec()
    };
    let leaf = cert(LEAF_DER);
    for issuer in [cert(CA_DER), cert(INT_DER)] {
        if let Ok(v) = crl::verify_crl(&der, &issuer) {
            assert_eq!(v.row.der, der);
            let _ = crl::lists_serial(&v.list, &leaf);
        }
    }
    if let Ok(list) = CertificateList::from_der(&der) {
        let _ = crl::lists_serial(&list, &leaf);
        let _ = list.to_der();
    }
}

/// A DER certificate: the helpers, as a child of the trusted CA and as the
/// parent of the fixture identity (an uploaded chain's certificates are
/// parents whose keys come from the uploader).
fn upload_der_cert(der: &[u8]) {
    let _ = x509::single_rfc822_name_der(der);
    let Ok(c) = Certificate::from_der(der) else {
        return;
    };
    cert_helpers(&c);
    let _ = x509::issued_by(&c, &cert(CA_DER));
    let _ = x509::issued_by(&cert(LEAF_DER), &c);
    let _ = x509::issued_by(&c, &c);
    let pem_text = pem::encode("CERTIFICATE", der);
    upload_checks(&pem_text, None);
}

/// Target `upload`: the first byte picks the input kind —
/// 0: `certificate` and `chain` text of an upload, split at the first NUL;
/// 1: a CRL body (DER or PEM) as fetched; 2: one DER certificate.
pub fn upload(data: &[u8]) {
    static FIXTURES: std::sync::Once = std::sync::Once::new();
    FIXTURES.call_once(check_fixtures);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            match text.split_once('\0') {
                Some((c, chain)) => upload_checks(c, Some(chain)),
                None => upload_checks(text, None),
            }
        }
        1 => upload_crl(rest),
        _ => upload_der_cert(rest),
    }
}

/// The fixtures fit together as the upload target assumes (checked once per
/// fuzzing process, so a broken fixture fails the first run).
fn check_fixtures() {
    let ca = cert(CA_DER);
    let int = cert(INT_DER);
    let leaf = cert(LEAF_DER);
    assert!(
        x509::issued_by(&leaf, &ca),
        "fixture leaf not issued by the CA"
    );
    assert!(
        x509::issued_by(&int, &ca),
        "fixture intermediate not issued by the CA"
    );
    assert!(x509::is_ca(&ca) && x509::is_ca(&int) && !x509::is_ca(&leaf));
    let (nb, na) = x509::validity(&leaf);
    assert!(
        nb <= NOW && NOW <= na,
        "NOW is outside the fixture's validity"
    );
    assert_eq!(
        x509::single_rfc822_name(&leaf)
            .map(|a| a.to_string())
            .as_deref(),
        Some("alice@example.org")
    );
}

// ---------------------------------------------------------------- lint

/// The lint profile of the fixture CA (its subject, SKI and algorithm; the
/// URLs and policy of a CA at the default base URL).
fn lint_profile() -> &'static mailid_ca::lint::LintProfile {
    static PROFILE: std::sync::OnceLock<mailid_ca::lint::LintProfile> = std::sync::OnceLock::new();
    PROFILE.get_or_init(|| {
        let ca = cert(CA_DER);
        let ski = ca
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id.to_string() == "2.5.29.14")
            .map(|e| e.extn_value.as_bytes()[2..].to_vec())
            .expect("fixture CA has an SKI");
        mailid_ca::lint::LintProfile {
            issuer: ca
                .tbs_certificate
                .subject
                .to_der()
                .expect("CA subject encodes"),
            ca_ski: ski,
            crl_url: "http://127.0.0.1:7700/v1/crl.der".into(),
            ca_issuers_url: "http://127.0.0.1:7700/v1/ca.der".into(),
            policy_oid: der::asn1::ObjectIdentifier::new_unwrap("2.23.140.1.5.1.3"),
            signature_algorithm: mailid_ca::lint::signature_algorithm(
                &rcgen::PKCS_ECDSA_P256_SHA256,
            )
            .expect("P-256 is a CA algorithm"),
            crl_lifetime_secs: 86_400,
        }
    })
}

/// Target `lint`: the bytes as a to-be-signed certificate and as a
/// to-be-signed CRL. The linter must never panic, and report each rule at
/// most `MAX_FINDINGS_PER_RULE` times plus one summary.
pub fn lint(data: &[u8]) {
    use mailid_ca::lint::{self, CertContext, CrlContext};
    let profile = lint_profile();
    let bound = lint::rule_names().len() * (lint::MAX_FINDINGS_PER_RULE + 1);
    for (address, spki) in [("alice@example.org", None), ("bob@example.org", Some(data))] {
        let ctx = CertContext {
            profile,
            address,
            subject_spki: spki,
            now: NOW,
        };
        let found = lint::check_certificate(data, &ctx);
        assert!(found.len() <= bound, "{} certificate findings", found.len());
    }
    for previous_number in [None, Some(0), Some(i64::MAX)] {
        let ctx = CrlContext {
            profile,
            now: NOW,
            previous_number,
        };
        let found = lint::check_crl(data, &ctx);
        assert!(found.len() <= bound, "{} CRL findings", found.len());
    }
}
