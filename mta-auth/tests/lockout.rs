//! Lockout after consecutive failures: persisted across restarts, lifted
//! after the back-off, doubled on repeat, reset by a success.

mod common;

use std::time::Duration;

use common::*;
use mailid_shared::protocol::ValidateReason;

const PW: &str = "correct horse battery";
const ME: &str = "alice@example.org";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lockout_survives_restart_ends_after_backoff_and_resets_on_success() {
    let dir = data_dir();
    add_account(dir.path(), ME, PW);
    let cred = add_ca(dir.path(), "ca1");
    let flags = ["--lockout-base-secs", "12"];
    let srv = Server::start(dir.path(), &flags);
    let c = client();
    let k = key_id();
    let t = totp(&c, &srv.url, ME, PW, &k).await;
    for _ in 0..5 {
        let r = validate(&c, &srv.url, "ca1", &cred, ME, &wrong(&t.totp), &k).await;
        assert_eq!(r.reason, Some(ValidateReason::Invalid));
    }
    let r = validate(&c, &srv.url, "ca1", &cred, ME, &t.totp, &k).await;
    assert!(!r.valid);
    assert_eq!(r.reason, Some(ValidateReason::Locked));
    assert!(matches!(r.retry_after, Some(1..=12)), "{r:?}");
    let metrics = c
        .get(format!("{}/metrics", srv.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("mailid_mta_lockouts_total 1"), "{metrics}");

    // Kill the server outright and start it again: still locked.
    drop(srv);
    let srv = Server::start(dir.path(), &flags);
    let r = validate(&c, &srv.url, "ca1", &cred, ME, &t.totp, &k).await;
    assert_eq!(r.reason, Some(ValidateReason::Locked), "{r:?}");
    let list = mta_ok(dir.path(), &["account", "list"], None);
    assert!(list.contains("locked until"), "{list}");
    // --json: locked_until is an RFC 3339 UTC time (SPEC §3).
    let json: serde_json::Value =
        serde_json::from_str(&mta_ok(dir.path(), &["--json", "account", "list"], None)).unwrap();
    let until = json[0]["locked_until"].as_str().expect("a string");
    assert!(until.ends_with('Z'), "{until}");
    let until = mailid_shared::timefmt::parse_rfc3339(until).expect("RFC 3339");
    let now = mailid_shared::timefmt::now_unix();
    assert!(now < until && until <= now + 12, "{until}");

    // After the back-off the account is open again.
    tokio::time::sleep(Duration::from_secs(r.retry_after.unwrap() + 1)).await;
    let t = totp(&c, &srv.url, ME, PW, &k).await;
    let r = validate(&c, &srv.url, "ca1", &cred, ME, &t.totp, &k).await;
    assert!(r.valid, "{r:?}");

    // The success reset the counter: 4 + 4 failures around another success
    // do not lock.
    let t = totp(&c, &srv.url, ME, PW, &k).await;
    for _ in 0..4 {
        let r = validate(&c, &srv.url, "ca1", &cred, ME, &wrong(&t.totp), &k).await;
        assert_eq!(r.reason, Some(ValidateReason::Invalid));
    }
    assert!(
        validate(&c, &srv.url, "ca1", &cred, ME, &t.totp, &k)
            .await
            .valid
    );
    let t = totp(&c, &srv.url, ME, PW, &k).await;
    for _ in 0..4 {
        let r = validate(&c, &srv.url, "ca1", &cred, ME, &wrong(&t.totp), &k).await;
        assert_eq!(r.reason, Some(ValidateReason::Invalid));
    }
    assert!(
        validate(&c, &srv.url, "ca1", &cred, ME, &t.totp, &k)
            .await
            .valid
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backoff_doubles_and_counts_expired_and_mismatch_but_not_replays() {
    let dir = data_dir();
    add_account(dir.path(), ME, PW);
    let cred = add_ca(dir.path(), "ca1");
    let srv = Server::start(
        dir.path(),
        &["--lockout-base-secs", "2", "--lockout-threshold", "3"],
    );
    let c = client();
    let (k, other) = (key_id(), key_id());
    let t = totp(&c, &srv.url, ME, PW, &k).await;
    assert!(
        validate(&c, &srv.url, "ca1", &cred, ME, &t.totp, &k)
            .await
            .valid
    );
    // Replays do not count.
    for _ in 0..5 {
        let r = validate(&c, &srv.url, "ca1", &cred, ME, &t.totp, &k).await;
        assert_eq!(r.reason, Some(ValidateReason::Replayed));
    }
    let t = totp(&c, &srv.url, ME, PW, &k).await;
    // A key mismatch and two invalid codes do: threshold 3 reached.
    let r = validate(&c, &srv.url, "ca1", &cred, ME, &t.totp, &other).await;
    assert_eq!(r.reason, Some(ValidateReason::KeyMismatch));
    for _ in 0..2 {
        validate(&c, &srv.url, "ca1", &cred, ME, &wrong(&t.totp), &k).await;
    }
    let r = validate(&c, &srv.url, "ca1", &cred, ME, &t.totp, &k).await;
    assert_eq!(r.reason, Some(ValidateReason::Locked));
    assert!(matches!(r.retry_after, Some(1..=2)), "{r:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Second lockout without a success in between: twice as long.
    for _ in 0..3 {
        validate(&c, &srv.url, "ca1", &cred, ME, &wrong(&t.totp), &k).await;
    }
    let r = validate(&c, &srv.url, "ca1", &cred, ME, &t.totp, &k).await;
    assert_eq!(r.reason, Some(ValidateReason::Locked));
    assert!(matches!(r.retry_after, Some(3..=4)), "{r:?}");
}
