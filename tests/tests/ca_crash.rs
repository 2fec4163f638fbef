//! SPEC §7 under a crash: the CA is killed (SIGKILL) in the middle of a
//! burst of enrollments. After a restart every certificate a client
//! received is in the database, each account has at most one valid
//! identity, and every revoked certificate is in the served CRL.

#[path = "ca_support.rs"]
mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

const DOMAIN: &str = "example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_mid_burst_keeps_the_invariants() {
    let accounts: Vec<String> = (0..4).map(|i| format!("crash{i}@{DOMAIN}")).collect();
    let refs: Vec<&str> = accounts.iter().map(String::as_str).collect();
    let mut env = Env::start_with(&[], &["--totp-period", "600"], DOMAIN, &refs);
    let mut prepared = Vec::new();
    for a in &accounts {
        for _ in 0..8 {
            let csr = Csr::rcgen("p256", a);
            let totp = env.totp(a, &csr.key_id).await;
            prepared.push((a.clone(), csr.pem, totp));
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (a, pem, totp) in prepared {
        let http = env.http.clone();
        let url = format!("{}/v1/certificates", env.ca.url());
        let tx = tx.clone();
        tokio::spawn(async move {
            let res = http
                .post(url)
                .json(&serde_json::json!({"csr": pem, "totp": totp}))
                .send()
                .await;
            let out = match res {
                Ok(r) if r.status() == 201 => r.json::<Value>().await.ok(),
                _ => None,
            };
            let _ = tx.send((a, out));
        });
    }
    drop(tx);
    // Kill the CA as soon as the first identity has been handed out.
    let mut received: Vec<(String, Value)> = Vec::new();
    let mut killed = false;
    while let Some((a, out)) = rx.recv().await {
        if let Some(v) = out {
            received.push((a, v));
            if !killed {
                env.ca.server.as_mut().unwrap().kill();
                killed = true;
            }
        }
    }
    assert!(
        !received.is_empty(),
        "no enrollment succeeded before the crash"
    );
    env.ca.server.as_mut().unwrap().restart();

    // Every certificate a client received is in the database.
    for (a, v) in &received {
        let serial = v["serial"].as_str().unwrap();
        let (status, info) = env.get_json(&format!("/v1/certificates/{serial}")).await;
        assert_eq!(status, 200, "{serial} of {a} lost in the crash");
        assert_eq!(info["certificate"], v["certificate"]);
    }
    // At most one valid identity per account; exactly one where one was issued.
    let mut revoked = Vec::new();
    for a in &accounts {
        let (_, acct) = env.get_json(&format!("/v1/accounts/{a}")).await;
        let certs = acct["certificates"].as_array().unwrap();
        let valid = certs.iter().filter(|c| c["status"] == "valid").count();
        let expected = usize::from(!certs.is_empty());
        assert_eq!(valid, expected, "{a}: {acct}");
        for c in certs.iter().filter(|c| c["status"] == "revoked") {
            revoked.push(c["serial"].as_str().unwrap().to_string());
        }
    }
    // Every revoked certificate is in the served CRL.
    env.wait_crl(Duration::from_secs(15), |pem| {
        let text = crl_text(env.root.path(), pem);
        revoked.iter().all(|s| crl_lists(&text, s))
    })
    .await;
    // And the CA works on.
    let v = env.enroll_new(&accounts[0], "p256").await;
    let (_, acct) = env.get_json(&format!("/v1/accounts/{}", accounts[0])).await;
    assert_eq!(acct["current"], v["serial"]);
}
