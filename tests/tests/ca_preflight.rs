//! The enrollment preflight (`POST /v1/certificates/check`) over the real
//! CA and MTA: it accepts what an enrollment would, refuses with the very
//! problem document an enrollment would give, changes nothing, uses no
//! code and takes no rate-limit token. And the CA does not tell a wrong
//! code from a code for an account its MTA does not know (no account
//! enumeration), while its log and metrics keep the MTA's reason.

#[path = "ca_support.rs"]
mod support;

use serde_json::{json, Value};
use support::*;

const DOMAIN: &str = "example.org";
const ALICE: &str = "alice@example.org";

/// `POST /v1/certificates/check`; the status and the JSON answer.
async fn check(env: &Env, csr: &str) -> (u16, Value) {
    env.post("/v1/certificates/check", json!({ "csr": csr }))
        .await
}

/// The CA's certificates for `account`.
async fn certificates(env: &Env, account: &str) -> Vec<Value> {
    let (status, v) = env.get_json(&format!("/v1/accounts/{account}")).await;
    assert_eq!(status, 200, "{v}");
    v["certificates"].as_array().cloned().unwrap_or_default()
}

async fn metrics(env: &Env) -> String {
    env.get_text("/metrics").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_preflight_accepts_refuses_like_enrollment_and_changes_nothing() {
    let env = Env::start(&[], DOMAIN, &[ALICE]);

    // Accepted: the account, the key ID and the domain, and nothing else
    // happens. The code fetched before the checks still enrolls afterwards,
    // so the preflight used no code.
    let csr = Csr::rcgen("p256", ALICE);
    let totp = env.totp(ALICE, &csr.key_id).await;
    for _ in 0..3 {
        let (status, v) = check(&env, &csr.pem).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            v,
            json!({"account": ALICE, "key_id": csr.key_id.to_string(), "domain": DOMAIN})
        );
    }
    assert!(certificates(&env, ALICE).await.is_empty());
    let (status, issued) = env.enroll(&csr.pem, &totp).await;
    assert_eq!(status, 201, "the preflight used the code up: {issued}");

    // Each refusal is the problem document the enrollment gives (here with
    // a code that is never sent on: every one of these stops before the MTA).
    let garbage = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
    let ed25519 = Csr::openssl(env.root.path(), "ed25519", ALICE, &[]);
    let elsewhere = Csr::rcgen("p256", "bob@unknown.example");
    let two = Csr::openssl(
        env.root.path(),
        "p256",
        ALICE,
        &[
            "-subj",
            "/CN=alice@example.org",
            "-addext",
            "subjectAltName=email:alice@example.org,email:bob@example.org",
        ],
    );
    // A key reported compromised is never certified again.
    let (status, v) = env
        .post(
            "/v1/revocations",
            json!({
                "serial": issued["serial"],
                "totp": env.totp(ALICE, &csr.key_id).await,
                "reason": "keyCompromise",
            }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let before = certificates(&env, ALICE).await;
    for (pem, want) in [
        (garbage, "bad-csr"),
        (ed25519.pem.as_str(), "unsupported-key"),
        (elsewhere.pem.as_str(), "unknown-domain"),
        (two.pem.as_str(), "bad-csr"),
        (csr.pem.as_str(), "unsupported-key"),
    ] {
        let (status, checked) = check(&env, pem).await;
        assert_eq!(status, 400, "{checked}");
        assert_eq!(code(&checked), want, "{checked}");
        let (e_status, enrolled) = env.enroll(pem, "12345678").await;
        assert_eq!((status, &checked), (e_status, &enrolled), "check vs enroll");
    }
    // A body that is not a check request is a bad request, as ever.
    let (status, v) = env
        .post("/v1/certificates/check", json!({ "totp": "1" }))
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(code(&v), "bad-request", "{v}");

    // Nothing changed, and no refusal reached the MTA.
    assert_eq!(certificates(&env, ALICE).await, before);
    let m = metrics(&env).await;
    assert!(
        m.contains("mailid_ca_enrollment_checks_total{outcome=\"accepted\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("mailid_ca_enrollment_checks_total{outcome=\"unknown-domain\"} 1"),
        "{m}"
    );
    assert!(!m.contains("mailid_ca_mta_rejections_total{"), "{m}");
    // A fresh key still enrolls: the refusals cost the account nothing.
    env.enroll_new(ALICE, "p384").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_preflight_reports_a_spent_account_budget_without_spending_it() {
    // One enrollment per account per ~1000 s.
    let root = mailid_tests::temp_dir();
    let mut mta = mailid_tests::MtaFixture::init(root.path(), "mta");
    mta.add_account(ALICE, PASSWORD);
    let mut ca = mailid_tests::CaFixture::init(root.path(), "ca", &[]);
    let cfg_path = ca.dir.join("config.json");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["rate_limits"]["account_per_second"] = json!(0.001);
    cfg["rate_limits"]["account_burst"] = json!(1);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let cred = mta.add_ca("test-ca", Some(&ca.ca_pem()));
    mta.start(&[]);
    ca.add_mta(DOMAIN, &mta.url(), "test-ca", &cred);
    ca.start(&[]);
    let env = Env {
        root,
        mta,
        ca,
        http: reqwest::Client::new(),
        credential: cred,
    };

    // Many checks take no token: the one enrollment still goes through.
    let csr = Csr::rcgen("p256", ALICE);
    for _ in 0..5 {
        let (status, v) = check(&env, &csr.pem).await;
        assert_eq!(status, 200, "{v}");
    }
    let totp = env.totp(ALICE, &csr.key_id).await;
    let (status, v) = env.enroll(&csr.pem, &totp).await;
    assert_eq!(status, 201, "{v}");

    // Now the budget is spent: the check says so, like the enrollment.
    let next = Csr::rcgen("p256", ALICE);
    let (status, checked) = check(&env, &next.pem).await;
    assert_eq!(status, 429, "{checked}");
    assert_eq!(code(&checked), "rate-limited");
    let (e_status, enrolled) = env.enroll(&next.pem, "12345678").await;
    assert_eq!((status, &checked), (e_status, &enrolled));
    assert_eq!(certificates(&env, ALICE).await.len(), 1);
}

/// The raw answer to an enrollment: status and body bytes.
async fn enroll_raw(env: &Env, csr: &str, totp: &str) -> (u16, Vec<u8>) {
    let resp = env
        .http
        .post(format!("{}/v1/certificates", env.ca.url()))
        .json(&json!({ "csr": csr, "totp": totp }))
        .send()
        .await
        .expect("CA reachable");
    let status = resp.status().as_u16();
    (status, resp.bytes().await.expect("body").to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_account_reads_exactly_like_a_wrong_code() {
    let env = Env::start(&[], DOMAIN, &[ALICE]);
    const WRONG: &str = "31415926";
    // A wrong code for alice, who exists; any code for bob, who does not.
    let alice = Csr::rcgen("p256", ALICE);
    let bob = Csr::rcgen("p256", "bob@example.org");
    let (s1, b1) = enroll_raw(&env, &alice.pem, WRONG).await;
    let (s2, b2) = enroll_raw(&env, &bob.pem, WRONG).await;
    assert_eq!(s1, 403, "{}", String::from_utf8_lossy(&b1));
    assert_eq!(
        (s1, String::from_utf8_lossy(&b1)),
        (s2, String::from_utf8_lossy(&b2)),
        "the answers tell an existing account from a missing one"
    );
    let v: Value = serde_json::from_slice(&b1).unwrap();
    assert_eq!(code(&v), "totp-rejected", "{v}");

    // The operator still sees which was which: metrics and log keep the
    // MTA's reason, and the log never holds the code.
    let m = metrics(&env).await;
    assert!(
        m.contains("mailid_ca_mta_rejections_total{reason=\"invalid\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("mailid_ca_mta_rejections_total{reason=\"unknown-account\"} 1"),
        "{m}"
    );
    let log = env.ca.server.as_ref().expect("running").log_text();
    assert!(log.contains("unknown-account"), "{log}");
    assert!(!log.contains(WRONG), "the log holds a code: {log}");
}
