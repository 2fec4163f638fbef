//! Lint before sign (SPEC §9) over the real CA and MTA. An issuer that
//! drafts what the profile forbids (the debug-build hook
//! `MAILID_CA_TEST_MISISSUE_DAYS`: identities valid for 900 days) is
//! stopped by the in-process linter before the code goes to the MTA: 500
//! `internal`, the finding in the log and in `/metrics`, no certificate,
//! and the same code enrolls once the CA is fixed. With `serve --lint-url`,
//! a linter that does not answer refuses (fail-closed), and a real pkilint
//! REST server lets the CA's identities through and refuses them when it
//! finds something (a CRL URL on a loopback address).

#[path = "ca_support.rs"]
mod support;

use serde_json::{json, Value};
use support::*;

const DOMAIN: &str = "example.org";
const ALICE: &str = "alice@example.org";

/// The CA's certificates for `account`.
async fn certificates(env: &Env, account: &str) -> Vec<Value> {
    let (status, v) = env.get_json(&format!("/v1/accounts/{account}")).await;
    assert_eq!(status, 200, "{v}");
    v["certificates"].as_array().cloned().unwrap_or_default()
}

/// The value of `mailid_ca_lint_findings_total{rule="RULE"}` (0 when absent).
async fn findings(env: &Env, rule: &str) -> u64 {
    let metrics = env.get_text("/metrics").await;
    let key = format!("mailid_ca_lint_findings_total{{rule=\"{rule}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .map_or(0, |n| n.trim().parse().expect("a counter value"))
}

/// Enrolls `csr` with `totp` and expects the linter's refusal: 500
/// `internal`, no certificate for ALICE.
async fn expect_refused(env: &Env, csr: &Csr, totp: &str) {
    let (status, v) = env.enroll(&csr.pem, totp).await;
    assert_eq!(status, 500, "{v}");
    assert_eq!(code(&v), "internal", "{v}");
    assert!(certificates(env, ALICE).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_the_profile_forbids_is_refused_before_the_mta_and_changes_nothing() {
    let mut env = Env::start(&[], DOMAIN, &[ALICE]);
    env.ca
        .start_env(&[], &[("MAILID_CA_TEST_MISISSUE_DAYS", "900")]);
    let csr = Csr::rcgen("p256", ALICE);
    let totp = env.totp(ALICE, &csr.key_id).await;
    expect_refused(&env, &csr, &totp).await;
    // The preflight drafts and lints too.
    let (status, v) = env
        .post("/v1/certificates/check", json!({ "csr": csr.pem }))
        .await;
    assert_eq!((status, code(&v)), (500, "internal".into()), "{v}");
    assert_eq!(findings(&env, "cert.validity").await, 2);
    let log = env.ca.server.as_ref().unwrap().log_text();
    assert!(
        log.contains("the linter refused") && log.contains("cert.validity"),
        "{log}"
    );
    // CRLs are still signed: the gate passes them.
    assert!(env.get_text("/v1/crl.pem").await.contains("BEGIN X509 CRL"));

    // The CA fixed: the very same code enrolls, so the refused request
    // never reached the MTA.
    env.ca.start(&[]);
    let (status, v) = env.enroll(&csr.pem, &totp).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(certificates(&env, ALICE).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_linter_that_does_not_answer_refuses() {
    let mut env = Env::start(&[], DOMAIN, &[ALICE]);
    // Accepts connections (the kernel queues them) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    env.ca
        .start(&["--lint-url", &url, "--lint-timeout-secs", "1"]);
    let csr = Csr::rcgen("p256", ALICE);
    let totp = env.totp(ALICE, &csr.key_id).await;
    expect_refused(&env, &csr, &totp).await;
    assert_eq!(findings(&env, "external.unavailable").await, 1);
    // Nothing listening at all: refused as well.
    drop(silent);
    expect_refused(&env, &csr, &totp).await;
    assert_eq!(findings(&env, "external.unavailable").await, 2);

    env.ca.start(&[]);
    let (status, v) = env.enroll(&csr.pem, &totp).await;
    assert_eq!(status, 201, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkilint_passes_the_profile_and_refuses_what_it_finds() {
    let pkilint = tokio::task::spawn_blocking(mailid_tests::pkilint::start)
        .await
        .unwrap();
    let mut env = Env::start(&[], DOMAIN, &[ALICE]);
    let lint = [
        "--lint-url",
        pkilint.url.as_str(),
        "--lint-timeout-secs",
        "30",
    ];

    // The test CA's base URL is a loopback address, which pkilint reports
    // (cabf.internal_domain_name) in the CRL and AIA URLs: refused.
    env.ca.start(&lint);
    let csr = Csr::rcgen("p256", ALICE);
    let totp = env.totp(ALICE, &csr.key_id).await;
    expect_refused(&env, &csr, &totp).await;
    let found = findings(&env, "external.pkilint").await;
    assert!(found >= 1, "one per pkilint finding: {found}");

    // A public base URL (the CA still listens on loopback; the URL is only
    // written into the certificates): pkilint passes P-256 and RSA keys.
    let config = env.ca.dir.join("config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    cfg["base_url"] = json!("http://pki.example.com");
    std::fs::write(&config, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    env.ca.start(&lint);
    let (status, v) = env.enroll(&csr.pem, &totp).await;
    assert_eq!(status, 201, "{v}");
    let rsa = Csr::rcgen("rsa2048", ALICE);
    let totp = env.totp(ALICE, &rsa.key_id).await;
    let (status, v) = env.enroll(&rsa.pem, &totp).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        findings(&env, "external.pkilint").await,
        0,
        "a new process counts from 0"
    );
}
