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
async fn holder_revocation_needs_a_code_for_the_certificates_key() {
    let account = format!("frank@{DOMAIN}");
    let env = Env::start(&[], DOMAIN, &[&account]);
    let csr = Csr::openssl(env.root.path(), "p256", &account, &[]);
    let first_code = env.totp(&account, &csr.key_id).await;
    let (status, v) = env.enroll(&csr.pem, &first_code).await;
    assert_eq!(status, 201);
    let serial = v["serial"].as_str().unwrap().to_string();
    // A code bound to another key does not revoke.
    let other = Csr::rcgen("p256", &account);
    let wrong = env.totp(&account, &other.key_id).await;
    let (s, p) = env
        .post(
            "/v1/revocations",
            serde_json::json!({"serial": serial, "totp": wrong}),
        )
        .await;
    assert_eq!((s, code(&p)), (403, "totp-rejected".to_string()), "{p}");
    let (_, info) = env.get_json(&format!("/v1/certificates/{serial}")).await;
    assert_eq!(info["status"], "valid");
    // The right one does.
    let right = env.totp(&account, &csr.key_id).await;
    let (s, r) = env
        .post(
            "/v1/revocations",
            serde_json::json!({"serial": serial, "totp": right, "reason": "keyCompromise"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["serial"], serial.as_str());
    assert_eq!(r["reason"], "keyCompromise");
    let crl = env
        .wait_crl(Duration::from_secs(10), |pem| {
            crl_lists(&crl_text(env.root.path(), pem), &serial)
        })
        .await;
    assert!(crl_text(env.root.path(), &crl).contains("Key Compromise"));
    // Again: conflict; unknown serial: not found.
    let again = env.totp(&account, &csr.key_id).await;
    let (s, _) = env
        .post(
            "/v1/revocations",
            serde_json::json!({"serial": serial, "totp": again}),
        )
        .await;
    assert_eq!(s, 409);
    let (s, _) = env.get_json("/v1/certificates/00ff").await;
    assert_eq!(s, 404);
    let (_, acct) = env.get_json(&format!("/v1/accounts/{account}")).await;
    assert!(acct["current"].is_null());
}

/// S/MIME BR 4.9.1.1 and 6.1.1.3: a key reported compromised is revoked in
/// every certificate that holds it and is never certified again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compromised_key_is_revoked_everywhere_and_never_certified_again() {
    let (erin, hank) = (format!("erin@{DOMAIN}"), format!("hank@{DOMAIN}"));
    let env = Env::start(&[], DOMAIN, &[&erin, &hank]);
    let dir = env.root.path();
    let csr = Csr::openssl(dir, "p256", &erin, &[]);
    let key = csr.key_path.clone().unwrap();
    // The same key in a CSR for another account.
    let (subj, san) = (
        format!("/CN={hank}"),
        format!("subjectAltName=email:{hank}"),
    );
    let k = key.to_str().unwrap();
    let hank_csr = openssl(&["req", "-new", "-key", k, "-subj", &subj, "-addext", &san]);
    let totp = env.totp(&erin, &csr.key_id).await;
    let (s, v) = env.enroll(&csr.pem, &totp).await;
    assert_eq!(s, 201, "{v}");
    let erin_serial = v["serial"].as_str().unwrap().to_string();
    let totp = env.totp(&hank, &csr.key_id).await;
    let (s, v) = env.enroll(&hank_csr, &totp).await;
    assert_eq!(s, 201, "{v}");
    let hank_serial = v["serial"].as_str().unwrap().to_string();

    let totp = env.totp(&erin, &csr.key_id).await;
    let (s, r) = env
        .post(
            "/v1/revocations",
            serde_json::json!({"serial": erin_serial, "totp": totp, "reason": "keyCompromise"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    // Hank's certificate holds the same key: revoked with it.
    let (_, info) = env
        .get_json(&format!("/v1/certificates/{hank_serial}"))
        .await;
    assert_eq!(info["status"], "revoked", "{info}");
    assert_eq!(info["reason"], "keyCompromise");
    env.wait_crl(Duration::from_secs(10), |pem| {
        let text = crl_text(dir, pem);
        crl_lists(&text, &erin_serial) && crl_lists(&text, &hank_serial)
    })
    .await;
    // Neither account gets the key certified again; nothing changes.
    for (account, pem) in [(&erin, &csr.pem), (&hank, &hank_csr)] {
        let totp = env.totp(account, &csr.key_id).await;
        let (s, p) = env.enroll(pem, &totp).await;
        assert_eq!((s, code(&p)), (400, "unsupported-key".to_string()), "{p}");
        assert!(
            p["detail"].as_str().unwrap().contains("key compromise"),
            "{p}"
        );
        let (_, acct) = env.get_json(&format!("/v1/accounts/{account}")).await;
        assert!(acct["current"].is_null(), "{acct}");
    }
    // A new key is fine; the answer says where the certificate lives.
    let fresh = Csr::rcgen("p256", &erin);
    let totp = env.totp(&erin, &fresh.key_id).await;
    let resp = env
        .http
        .post(format!("{}/v1/certificates", env.ca.url()))
        .json(&serde_json::json!({"csr": fresh.pem, "totp": totp}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let v: serde_json::Value = resp.json().await.unwrap();
    let serial = v["serial"].as_str().unwrap();
    assert_eq!(location, format!("/v1/certificates/{serial}"));
    let (s, info) = env.get_json(&location).await;
    assert_eq!((s, info["status"].as_str()), (200, Some("valid")));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lockout_at_the_mta_is_locked_with_retry_after() {
    let account = format!("kim@{DOMAIN}");
    let env = Env::start(&[], DOMAIN, &[&account]);
    let csr = Csr::rcgen("p256", &account);
    let mut last = (0, serde_json::Value::Null, None);
    for _ in 0..8 {
        let resp = env
            .http
            .post(format!("{}/v1/certificates", env.ca.url()))
            .json(&serde_json::json!({"csr": csr.pem, "totp": "00000000"}))
            .send()
            .await
            .unwrap();
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        last = (resp.status().as_u16(), resp.json().await.unwrap(), retry);
        if code(&last.1) == "locked" {
            break;
        }
        assert_eq!(
            (last.0, code(&last.1).as_str()),
            (403, "totp-rejected"),
            "{}",
            last.1
        );
    }
    assert_eq!(
        (last.0, code(&last.1).as_str()),
        (403, "locked"),
        "{}",
        last.1
    );
    let secs: u64 = last.2.expect("Retry-After").parse().unwrap();
    assert!(secs > 0);
    let (_, acct) = env.get_json(&format!("/v1/accounts/{account}")).await;
    assert_eq!(acct["certificates"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_answer_429_with_retry_after() {
    let account = format!("lou@{DOMAIN}");
    let mut env = Env::start(&[], DOMAIN, &[&account]);
    // Tighten the account limit in the config and restart.
    let cfg_path = env.ca.dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["rate_limits"]["account_per_second"] = serde_json::json!(0.01);
    cfg["rate_limits"]["account_burst"] = serde_json::json!(2);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    env.ca.server.as_mut().unwrap().restart();
    env.enroll_new(&account, "p256").await;
    env.enroll_new(&account, "p256").await;
    let csr = Csr::rcgen("p256", &account);
    let totp = env.totp(&account, &csr.key_id).await;
    let resp = env
        .http
        .post(format!("{}/v1/certificates", env.ca.url()))
        .json(&serde_json::json!({"csr": csr.pem, "totp": totp}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(code(&v), "rate-limited");
    // The refused request changed nothing; another account is not limited.
    let (_, acct) = env.get_json(&format!("/v1/accounts/{account}")).await;
    assert_eq!(acct["certificates"].as_array().unwrap().len(), 2);
}
