//! Encodings at their edges (issue 11, items 2 and 10): an EC key sent with
//! a compressed or hybrid point has one key ID everywhere and is refused by
//! the CA (so a key revoked for keyCompromise cannot come back in another
//! encoding), and an address too long for a commonName (over 64 octets,
//! up to SPEC's 254) is certified with the SAN alone.

#[path = "ca_support.rs"]
mod support;

use std::path::Path;

use mailid_tests::{bin, run_ok, CLIENT_BIN};
use support::*;

const DOMAIN: &str = "example.org";

/// A CSR for `account` whose key is `key`'s, with the point in `form`
/// (`compressed` or `hybrid`), made by `openssl ec -conv_form`.
fn reencoded_csr(dir: &Path, key: &Path, form: &str, account: &str) -> (String, String) {
    let out = dir.join(format!("key-{form}.pem"));
    let (k, o) = (key.to_str().unwrap(), out.to_str().unwrap());
    openssl(&["ec", "-in", k, "-conv_form", form, "-out", o]);
    let subj = format!("/CN={account}");
    let san = format!("subjectAltName=email:{account}");
    let pem = openssl(&["req", "-new", "-key", o, "-subj", &subj, "-addext", &san]);
    let csr_path = dir.join(format!("{form}.csr"));
    std::fs::write(&csr_path, &pem).unwrap();
    // The CSR really carries the point in that form (02/03 or 06/07).
    let text = openssl(&["req", "-in", csr_path.to_str().unwrap(), "-noout", "-text"]);
    let first = text
        .split("pub:")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap()
        .to_string();
    let want: &[&str] = if form == "compressed" {
        &["02:", "03:"]
    } else {
        &["06:", "07:"]
    };
    assert!(want.iter().any(|w| first.starts_with(w)), "{form}: {first}");
    (pem, o.to_string())
}

/// `mailid key-id FILE`.
fn key_id_of(path: &str) -> String {
    run_ok(&bin(CLIENT_BIN), &["key-id", path], None)
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compressed_and_hybrid_points_have_one_key_id_and_are_refused() {
    let erin = format!("erin@{DOMAIN}");
    let env = Env::start(&[], DOMAIN, &[&erin]);
    let dir = env.root.path();
    let csr = Csr::openssl(dir, "p256", &erin, &[]);
    let key = csr.key_path.clone().unwrap();
    let plain_path = env.path("plain.csr");
    std::fs::write(&plain_path, &csr.pem).unwrap();
    let want = csr.key_id.to_string();
    assert_eq!(key_id_of(plain_path.to_str().unwrap()), want);

    let mut reencoded = Vec::new();
    for form in ["compressed", "hybrid"] {
        let (pem, key_file) = reencoded_csr(dir, &key, form, &erin);
        // One key, one key ID: the client says so for the CSR and the key.
        let path = env.path(&format!("{form}.csr"));
        assert_eq!(key_id_of(path.to_str().unwrap()), want, "{form} CSR");
        assert_eq!(key_id_of(&key_file), want, "{form} key");
        reencoded.push((form, pem));
    }

    // Refused before the MTA is asked: the code stays usable.
    for (form, pem) in &reencoded {
        let totp = env.totp(&erin, &csr.key_id).await;
        let (s, p) = env.enroll(pem, &totp).await;
        assert_eq!(
            (s, code(&p)),
            (400, "unsupported-key".into()),
            "{form}: {p}"
        );
        assert!(
            p["detail"].as_str().unwrap().contains("uncompressed"),
            "{p}"
        );
        let (s, v) = env.enroll(&csr.pem, &totp).await;
        assert_eq!(s, 201, "{form}: the code was not used up: {v}");
        assert_eq!(v["key_id"], want.as_str());
    }

    // Reported compromised, the key stays refused in every encoding.
    let (_, acct) = env.get_json(&format!("/v1/accounts/{erin}")).await;
    let serial = acct["current"].as_str().unwrap().to_string();
    let totp = env.totp(&erin, &csr.key_id).await;
    let (s, r) = env
        .post(
            "/v1/revocations",
            serde_json::json!({"serial": serial, "totp": totp, "reason": "keyCompromise"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    for (form, pem) in reencoded
        .iter()
        .map(|(f, p)| (*f, p))
        .chain([("plain", &csr.pem)])
    {
        let totp = env.totp(&erin, &csr.key_id).await;
        let (s, p) = env.enroll(pem, &totp).await;
        assert_eq!(
            (s, code(&p)),
            (400, "unsupported-key".into()),
            "{form}: {p}"
        );
    }
    let (_, acct) = env.get_json(&format!("/v1/accounts/{erin}")).await;
    assert!(acct["current"].is_null(), "{acct}");
}

/// A 254-octet address (SPEC §3's limit): 64-octet local part, a domain of
/// four labels.
fn longest_address() -> (String, String) {
    let domain = format!(
        "{}.{}.{}.example.com",
        "a".repeat(59),
        "b".repeat(58),
        "c".repeat(58)
    );
    let address = format!("{}@{domain}", "l".repeat(64));
    assert_eq!(address.len(), 254);
    (address, domain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_address_longer_than_a_common_name_is_in_the_san_alone() {
    let (long, domain) = longest_address();
    let env = Env::start(&[], &domain, &[&long]);
    let dir = env.root.path();
    // openssl refuses a CN over 64 characters, so the CSR names the
    // address in its SAN only.
    let san = format!("subjectAltName=email:{long}");
    let csr = Csr::openssl(dir, "p256", &long, &["-subj", "/", "-addext", &san]);
    let code = env.totp(&long, &csr.key_id).await;
    let (s, v) = env.enroll(&csr.pem, &code).await;
    assert_eq!(s, 201, "{v}");
    let cert = v["certificate"].as_str().unwrap();
    let text = x509_text(dir, cert);
    println!("{text}");
    assert!(
        text.lines().any(|l| l.trim() == "Subject:"),
        "empty subject: {text}"
    );
    assert!(
        text.contains("X509v3 Subject Alternative Name: critical"),
        "an empty subject makes the SAN critical (RFC 5280 4.2.1.6): {text}"
    );
    assert!(text.contains(&format!("email:{long}")), "{text}");
    // Relying parties take it: openssl verifies it for S/MIME signing.
    let (ca, crl) = env.trust_files().await;
    let (ok, out) = verify(dir, cert, &ca, &crl, None);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_address_of_64_octets_keeps_its_common_name() {
    let domain = "example.org";
    let account = format!("{}@{domain}", "m".repeat(64 - domain.len() - 1));
    assert_eq!(account.len(), 64);
    let env = Env::start(&[], domain, &[&account]);
    let v = env.enroll_new(&account, "p256").await;
    let text = x509_text(env.root.path(), v["certificate"].as_str().unwrap());
    assert!(text.contains(&format!("Subject: CN = {account}")), "{text}");
}
