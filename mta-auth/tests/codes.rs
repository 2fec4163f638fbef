//! Single use, key binding, account binding and concurrency of codes, over
//! real HTTP against the real binary and a real SQLite file.

mod common;

use common::*;
use mailid_shared::protocol::ValidateReason;

const PW: &str = "hunter2 is a fine password";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn code_validates_once_and_is_bound_to_key_and_account() {
    let dir = data_dir();
    add_account(dir.path(), "alice@example.org", PW);
    add_account(dir.path(), "bob@example.org", PW);
    let cred = add_ca(dir.path(), "ca1");
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    let (ka, kb) = (key_id(), key_id());

    let t = totp(&c, &srv.url, "alice@example.org", PW, &ka).await;
    assert_eq!(t.account.as_str(), "alice@example.org");
    assert_eq!((t.digits, t.period, t.totp.len()), (8, 30, 8));
    assert_eq!(t.key_id, ka);
    let exp = mailid_shared::timefmt::parse_rfc3339(&t.expires_at).unwrap();
    let now = mailid_shared::timefmt::now_unix();
    assert!(exp > now && exp <= now + 60, "expires_at {}", t.expires_at);

    // Key A's code presented for key B.
    let r = validate(
        &c,
        &srv.url,
        "ca1",
        &cred,
        "alice@example.org",
        &t.totp,
        &kb,
    )
    .await;
    assert!(!r.valid);
    assert_eq!(r.reason, Some(ValidateReason::KeyMismatch));
    // Alice's code presented for Bob.
    let r = validate(&c, &srv.url, "ca1", &cred, "bob@example.org", &t.totp, &ka).await;
    assert!(!r.valid);
    assert_eq!(r.reason, Some(ValidateReason::Invalid));
    // Unknown account.
    let r = validate(
        &c,
        &srv.url,
        "ca1",
        &cred,
        "carol@example.org",
        &t.totp,
        &ka,
    )
    .await;
    assert_eq!(r.reason, Some(ValidateReason::UnknownAccount));

    // Valid once.
    let r = validate(
        &c,
        &srv.url,
        "ca1",
        &cred,
        "alice@example.org",
        &t.totp,
        &ka,
    )
    .await;
    assert!(r.valid, "{r:?}");
    assert_eq!(
        r.account.as_ref().map(|a| a.as_str()),
        Some("alice@example.org")
    );
    assert_eq!(r.key_id.as_ref(), Some(&ka));
    // Replay.
    let r = validate(
        &c,
        &srv.url,
        "ca1",
        &cred,
        "alice@example.org",
        &t.totp,
        &ka,
    )
    .await;
    assert!(!r.valid);
    assert_eq!(r.reason, Some(ValidateReason::Replayed));

    // A fresh code works at once and differs from the used one.
    let t2 = totp(&c, &srv.url, "alice@example.org", PW, &ka).await;
    assert_ne!(t2.totp, t.totp);
    let r = validate(
        &c,
        &srv.url,
        "ca1",
        &cred,
        "alice@example.org",
        &t2.totp,
        &ka,
    )
    .await;
    assert!(r.valid);

    // Bob's own code works for Bob only.
    let tb = totp(&c, &srv.url, "bob@example.org", PW, &ka).await;
    let r = validate(
        &c,
        &srv.url,
        "ca1",
        &cred,
        "alice@example.org",
        &tb.totp,
        &ka,
    )
    .await;
    assert!(!r.valid);
    let r = validate(&c, &srv.url, "ca1", &cred, "bob@example.org", &tb.totp, &ka).await;
    assert!(r.valid);

    let metrics = c
        .get(format!("{}/metrics", srv.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("mailid_mta_validations_total{result=\"valid\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("mailid_mta_validations_total{result=\"replayed\"} 1"));
    assert!(metrics.contains("mailid_mta_validations_total{result=\"key-mismatch\"} 1"));
    assert!(metrics.contains("mailid_mta_codes_issued_total 3"));
    assert!(metrics.contains("mailid_mta_request_duration_seconds_count{route=\"/v1/validate\"}"));
    let health = c.get(format!("{}/healthz", srv.url)).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_validations_of_one_code_give_one_valid() {
    let dir = data_dir();
    add_account(dir.path(), "alice@example.org", PW);
    let cred = add_ca(dir.path(), "ca1");
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    let k = key_id();
    let t = totp(&c, &srv.url, "alice@example.org", PW, &k).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (c, url, cred, code, k) = (
            c.clone(),
            srv.url.clone(),
            cred.clone(),
            t.totp.clone(),
            k.clone(),
        );
        tasks.push(tokio::spawn(async move {
            validate(&c, &url, "ca1", &cred, "alice@example.org", &code, &k).await
        }));
    }
    let mut valid = 0;
    for task in tasks {
        let r = task.await.unwrap();
        if r.valid {
            valid += 1;
        } else {
            assert_eq!(r.reason, Some(ValidateReason::Replayed));
        }
    }
    assert_eq!(valid, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn codes_for_sixteen_keys_each_validate_exactly_once() {
    let dir = data_dir();
    add_account(dir.path(), "alice@example.org", PW);
    let cred = add_ca(dir.path(), "ca1");
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    let keys: Vec<_> = (0..16).map(|_| key_id()).collect();
    let mut codes = Vec::new();
    for k in &keys {
        codes.push(totp(&c, &srv.url, "alice@example.org", PW, k).await.totp);
    }
    // Validate in reverse order of issue, all at once, each twice.
    let mut tasks = Vec::new();
    for (k, code) in keys.iter().zip(&codes).rev() {
        for _ in 0..2 {
            let (c, url, cred, code, k) = (
                c.clone(),
                srv.url.clone(),
                cred.clone(),
                code.clone(),
                k.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let r = validate(&c, &url, "ca1", &cred, "alice@example.org", &code, &k).await;
                (k, r)
            }));
        }
    }
    let mut valid = std::collections::HashMap::new();
    for task in tasks {
        let (k, r) = task.await.unwrap();
        if r.valid {
            *valid.entry(k.to_string()).or_insert(0) += 1;
        } else {
            assert_eq!(r.reason, Some(ValidateReason::Replayed), "{r:?}");
        }
    }
    assert_eq!(valid.len(), 16);
    assert!(valid.values().all(|n| *n == 1), "{valid:?}");
}
