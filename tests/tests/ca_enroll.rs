//! CA enrollment end to end: the real MTA auth service is the authority,
//! the real CA issues, `openssl` checks the profile and verifies.

#[path = "ca_support.rs"]
mod support;

use std::time::Duration;

use mailid_shared::timefmt::{now_unix, parse_rfc3339};
use support::*;

const DOMAIN: &str = "example.org";

/// Checks every field of the SPEC §5 profile in an issued certificate.
async fn check_profile(
    env: &Env,
    answer: &serde_json::Value,
    account: &str,
    ec: bool,
    requested_at: i64,
) {
    let dir = env.root.path();
    let cert = answer["certificate"].as_str().unwrap();
    let text = x509_text(dir, cert);
    assert!(text.contains("Version: 3 (0x2)"), "{text}");
    // 128-bit serial, as in the answer.
    let serial = answer["serial"].as_str().unwrap();
    assert_eq!(serial.len(), 32, "serial {serial}");
    let printed = openssl_field(dir, cert, "-serial");
    assert_eq!(
        printed.trim_start_matches("serial=").to_ascii_lowercase(),
        serial
    );
    let subject = openssl_field(dir, cert, "-subject");
    assert_eq!(subject, format!("subject=CN = {account}"));
    assert_eq!(
        section(&text, "X509v3 Subject Alternative Name:"),
        format!("email:{account}")
    );
    assert!(text.contains("X509v3 Key Usage: critical"), "{text}");
    let ku = section(&text, "X509v3 Key Usage:");
    if ec {
        assert_eq!(ku, "Digital Signature, Key Agreement");
    } else {
        assert_eq!(ku, "Digital Signature, Key Encipherment");
    }
    assert_eq!(
        section(&text, "X509v3 Extended Key Usage:"),
        "E-mail Protection"
    );
    assert_eq!(section(&text, "X509v3 Basic Constraints:"), "CA:FALSE");
    // SKI is the strong key ID (V=2, 33 bytes) of the CSR's key.
    let key_id: mailid_shared::KeyId = answer["key_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(key_id.version(), 2);
    assert_eq!(
        section(&text, "X509v3 Subject Key Identifier:"),
        colon_hex(key_id.as_bytes())
    );
    // AKI is the CA's SKI.
    let ca_text = x509_text(dir, &env.get_text("/v1/ca.pem").await);
    let ca_ski = section(&ca_text, "X509v3 Subject Key Identifier:");
    assert!(!ca_ski.is_empty());
    assert_eq!(
        section(&text, "X509v3 Authority Key Identifier:").trim_start_matches("keyid:"),
        ca_ski
    );
    let base = env.ca.url();
    assert!(section(&text, "X509v3 CRL Distribution Points:")
        .contains(&format!("URI:{base}/v1/crl.der")));
    assert_eq!(
        section(&text, "Authority Information Access:"),
        format!("CA Issuers - URI:{base}/v1/ca.der")
    );
    assert_eq!(
        section(&text, "X509v3 Certificate Policies:"),
        "Policy: 2.23.140.1.5.1.3"
    );
    // Exactly the nine extensions of the profile.
    let exts = section(&text, "X509v3 extensions:");
    let names = exts
        .lines()
        .filter(|l| l.starts_with("X509v3") || l.starts_with("Authority Information"))
        .count();
    assert_eq!(names, 9, "{exts}");
    // Validity: backdated at most a minute, 365 days.
    let nb = parse_rfc3339(answer["not_before"].as_str().unwrap()).unwrap();
    let na = parse_rfc3339(answer["not_after"].as_str().unwrap()).unwrap();
    assert!(
        nb <= requested_at + 5 && nb >= requested_at - 60 - 5,
        "notBefore {nb} vs {requested_at}"
    );
    assert_eq!(na - nb, 365 * 86_400);
    let dates = openssl_field(dir, cert, "-startdate");
    assert!(dates.starts_with("notBefore="));
    // The chain: the issuer (here the root) as one PEM bundle.
    assert_eq!(
        answer["chain"].as_str().unwrap(),
        env.get_text("/v1/ca.pem").await
    );
}

fn openssl_field(dir: &std::path::Path, cert: &str, opt: &str) -> String {
    let p = dir.join(format!("field-{}.pem", rand_name()));
    std::fs::write(&p, cert).unwrap();
    openssl(&[
        "x509",
        "-in",
        p.to_str().unwrap(),
        "-noout",
        opt,
        "-nameopt",
        "oneline",
    ])
    .trim()
    .to_string()
}

fn rand_name() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enrollment_profile_and_openssl_verify_for_every_key_type() {
    let accounts: Vec<String> = ["p256", "p384", "rsa2048", "rsa3072"]
        .iter()
        .flat_map(|k| [format!("ossl-{k}@{DOMAIN}"), format!("own-{k}@{DOMAIN}")])
        .collect();
    let refs: Vec<&str> = accounts.iter().map(String::as_str).collect();
    let env = Env::start(&[], DOMAIN, &refs);
    for kind in ["p256", "p384", "rsa2048", "rsa3072"] {
        for (maker, account) in [
            ("openssl", format!("ossl-{kind}@{DOMAIN}")),
            ("rcgen", format!("own-{kind}@{DOMAIN}")),
        ] {
            let csr = if maker == "openssl" {
                Csr::openssl(env.root.path(), kind, &account, &[])
            } else {
                Csr::rcgen(kind, &account)
            };
            let code = env.totp(&account, &csr.key_id).await;
            let requested_at = now_unix();
            let (status, v) = env.enroll(&csr.pem, &code).await;
            assert_eq!(status, 201, "{maker} {kind}: {v}");
            assert_eq!(v["account"], account.as_str());
            assert_eq!(v["key_id"], csr.key_id.to_string());
            assert_eq!(v["revoked"], serde_json::json!([]));
            check_profile(&env, &v, &account, kind.starts_with('p'), requested_at).await;
            let (ca, crl) = env.trust_files().await;
            let (ok, out) = verify(
                env.root.path(),
                v["certificate"].as_str().unwrap(),
                &ca,
                &crl,
                None,
            );
            assert!(ok, "{maker} {kind}: openssl verify: {out}");
            // The lookups agree.
            let serial = v["serial"].as_str().unwrap();
            let (s, info) = env.get_json(&format!("/v1/certificates/{serial}")).await;
            assert_eq!(s, 200);
            assert_eq!(info["status"], "valid");
            assert_eq!(info["certificate"], v["certificate"]);
            let (s, acct) = env.get_json(&format!("/v1/accounts/{account}")).await;
            assert_eq!(s, 200);
            assert_eq!(acct["current"], serial);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn re_enrollment_supersedes_and_the_crl_says_so() {
    let account = format!("carol@{DOMAIN}");
    let env = Env::start(&[], DOMAIN, &[&account]);
    let first = env.enroll_new(&account, "p256").await;
    let first_serial = first["serial"].as_str().unwrap().to_string();
    let crl_before = crl_number(&crl_text(
        env.root.path(),
        &env.get_text("/v1/crl.pem").await,
    ));
    let second = env.enroll_new(&account, "p384").await;
    assert_eq!(second["revoked"], serde_json::json!([first_serial]));
    // In the served CRL within 2 s (polled with a generous limit), reason superseded.
    let crl = env
        .wait_crl(Duration::from_secs(10), |pem| {
            crl_lists(&crl_text(env.root.path(), pem), &first_serial)
        })
        .await;
    let text = crl_text(env.root.path(), &crl);
    assert!(crl_number(&text) > crl_before);
    assert!(text.contains("Superseded"), "{text}");
    assert!(text.contains("X509v3 Authority Key Identifier"), "{text}");
    let (ca, crl_path) = env.trust_files().await;
    let (ok, out) = verify(
        env.root.path(),
        first["certificate"].as_str().unwrap(),
        &ca,
        &crl_path,
        None,
    );
    assert!(!ok && out.contains("revoked"), "{out}");
    let (ok, out) = verify(
        env.root.path(),
        second["certificate"].as_str().unwrap(),
        &ca,
        &crl_path,
        None,
    );
    assert!(ok, "{out}");
    let (_, info) = env
        .get_json(&format!("/v1/certificates/{first_serial}"))
        .await;
    assert_eq!(info["status"], "revoked");
    assert_eq!(info["reason"], "superseded");
    let (_, acct) = env.get_json(&format!("/v1/accounts/{account}")).await;
    assert_eq!(acct["current"], second["serial"]);
    assert_eq!(acct["certificates"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_inputs_get_their_codes_and_change_nothing() {
    let account = format!("dave@{DOMAIN}");
    let env = Env::start(&[], DOMAIN, &[&account]);
    let dir = env.root.path();
    let current = env.enroll_new(&account, "p256").await;
    let serial = current["serial"].as_str().unwrap().to_string();
    let crl_before = env.get_text("/v1/crl.der").await;

    let garbage = (
        "garbage",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
            .to_string(),
        "bad-csr",
    );
    let good = Csr::openssl(dir, "p256", &account, &[]);
    let mut der = mailid_shared::pem::decode_one(&good.pem, &["CERTIFICATE REQUEST"]).unwrap();
    let n = der.len();
    der[n - 3] ^= 0x40;
    let tampered = (
        "tampered signature",
        mailid_shared::pem::encode("CERTIFICATE REQUEST", &der),
        "bad-csr",
    );
    let no_address = (
        "no address",
        Csr::openssl(dir, "p256", &account, &["-subj", "/CN=Dave"]).pem,
        "bad-csr",
    );
    let two = format!("subjectAltName=email:{account},email:other@{DOMAIN}");
    let subj = format!("/CN={account}");
    let two_addresses = (
        "two addresses",
        Csr::openssl(dir, "p256", &account, &["-subj", &subj, "-addext", &two]).pem,
        "bad-csr",
    );
    let rsa1024 = (
        "RSA-1024",
        Csr::openssl(dir, "rsa1024", &account, &[]).pem,
        "unsupported-key",
    );
    let ed25519 = (
        "Ed25519",
        Csr::openssl(dir, "ed25519", &account, &[]).pem,
        "unsupported-key",
    );
    // Keys outside the policy, including ones the rsa crate would not even
    // load (over 4096 bits) and a P-256 key with explicit curve parameters.
    let too_big = (
        "RSA-4104",
        Csr::openssl(dir, "rsa4104", &account, &[]).pem,
        "unsupported-key",
    );
    let p521 = (
        "P-521",
        Csr::openssl(dir, "p521", &account, &[]).pem,
        "unsupported-key",
    );
    let explicit = (
        "P-256 with explicit parameters",
        Csr::openssl(dir, "p256-explicit", &account, &[]).pem,
        "unsupported-key",
    );
    let unknown = (
        "unknown domain",
        Csr::openssl(dir, "p256", "eve@unknown.test", &[]).pem,
        "unknown-domain",
    );
    for (what, pem, want) in [
        garbage,
        tampered,
        no_address,
        two_addresses,
        rsa1024,
        ed25519,
        too_big,
        p521,
        explicit,
        unknown,
    ] {
        let (status, v) = env.enroll(&pem, "12345678").await;
        assert_eq!(code(&v), want, "{what}: {v}");
        assert_eq!(status, 400, "{what}");
        assert_eq!(v["status"], 400);
    }
    // A wrong code: rejected by the MTA.
    let csr = Csr::openssl(dir, "p256", &account, &[]);
    let code_for_other_key = env.totp(&account, &good.key_id).await;
    let (status, v) = env.enroll(&csr.pem, &code_for_other_key).await;
    assert_eq!((status, code(&v).as_str()), (403, "totp-rejected"), "{v}");
    // Too large a body.
    let big = "A".repeat(70 * 1024);
    let (status, v) = env.enroll(&big, "12345678").await;
    assert_eq!(
        (status, code(&v).as_str()),
        (413, "payload-too-large"),
        "{v}"
    );
    // Not JSON.
    let resp = env
        .http
        .post(format!("{}/v1/certificates", env.ca.url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // Nothing changed: the identity is still the only valid one, the CRL is the same.
    let (_, acct) = env.get_json(&format!("/v1/accounts/{account}")).await;
    assert_eq!(acct["current"], serial.as_str());
    assert_eq!(acct["certificates"].as_array().unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(env.get_text("/v1/crl.der").await, crl_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requested_ca_true_and_extra_ekus_are_ignored() {
    let account = format!("mallory@{DOMAIN}");
    let env = Env::start(&[], DOMAIN, &[&account]);
    let subj = format!("/CN={account}");
    let san = format!("subjectAltName=email:{account}");
    let csr = Csr::openssl(
        env.root.path(),
        "p256",
        &account,
        &[
            "-subj",
            &subj,
            "-addext",
            &san,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            "-addext",
            "extendedKeyUsage=serverAuth,clientAuth,codeSigning,emailProtection",
        ],
    );
    let code = env.totp(&account, &csr.key_id).await;
    let requested_at = now_unix();
    let (status, v) = env.enroll(&csr.pem, &code).await;
    assert_eq!(status, 201, "{v}");
    check_profile(&env, &v, &account, true, requested_at).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crl_and_ca_are_served_with_cache_headers() {
    let env = Env::start(&[], DOMAIN, &[]);
    let resp = env
        .http
        .get(format!("{}/v1/crl.der", env.ca.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    assert!(resp.headers().contains_key("last-modified"));
    assert!(resp.headers().contains_key("cache-control"));
    let last_modified = resp.headers()["last-modified"]
        .to_str()
        .unwrap()
        .to_string();
    // Conditional GETs (RFC 9110 §13.1): If-None-Match with the tag, its weak
    // form, a list or `*`, and If-Modified-Since, give 304; the PEM form is
    // another representation with another tag.
    let get = |path: &'static str, h: &'static str, v: String| {
        let req = env.http.get(format!("{}{path}", env.ca.url())).header(h, v);
        async move { req.send().await.unwrap() }
    };
    for (h, v) in [
        ("if-none-match", etag.clone()),
        ("if-none-match", format!("W/{etag}")),
        ("if-none-match", format!("\"other\", {etag}")),
        ("if-none-match", "*".to_string()),
        ("if-modified-since", last_modified.clone()),
    ] {
        let resp = get("/v1/crl.der", h, v.clone()).await;
        assert_eq!(resp.status(), 304, "{h}: {v}");
        assert_eq!(resp.headers()["etag"].to_str().unwrap(), etag);
    }
    // The tag on a second If-None-Match line counts too.
    let resp = env
        .http
        .get(format!("{}/v1/crl.der", env.ca.url()))
        .header("if-none-match", "\"other\"")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304, "two If-None-Match lines");
    let pem_resp = get("/v1/crl.pem", "if-none-match", etag.clone()).await;
    assert_eq!(pem_resp.status(), 200, "the DER tag must not match the PEM");
    let pem_etag = pem_resp.headers()["etag"].to_str().unwrap().to_string();
    assert_ne!(pem_etag, etag);
    assert_eq!(
        get("/v1/crl.pem", "if-none-match", pem_etag).await.status(),
        304
    );
    let older = "Sun, 06 Nov 1994 08:49:37 GMT".to_string();
    assert_eq!(
        get("/v1/crl.der", "if-modified-since", older)
            .await
            .status(),
        200
    );
    let der = env
        .http
        .get(format!("{}/v1/ca.der", env.ca.url()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let pem = std::fs::read_to_string(env.ca.ca_pem()).unwrap();
    assert_eq!(
        mailid_shared::pem::decode_one(&pem, &["CERTIFICATE"]).unwrap(),
        der.to_vec()
    );
    let crl = crl_text(env.root.path(), &env.get_text("/v1/crl.pem").await);
    assert!(crl.contains("Next Update:"), "{crl}");
    assert_eq!(env.get_text("/healthz").await, "ok");
    let metrics = env.get_text("/metrics").await;
    assert!(metrics.contains("mailid_ca_crl_number"));
    let (s, v) = env.get_json("/v1/nothing").await;
    assert_eq!((s, code(&v).as_str()), (404, "not-found"));
}
