//! Lockout after consecutive failures for one (account, key) with a live
//! code: persisted across restarts, lifted after the back-off, doubled on
//! repeat up to the cap, reset by a success; failures for keys without a
//! live code are refused but never counted.

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
async fn backoff_doubles_and_counts_mismatch_but_not_replays() {
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
    let o = totp(&c, &srv.url, ME, PW, &other).await;
    // A key mismatch and two invalid codes for `other` (which has a live
    // code) do: threshold 3 reached for (ME, other).
    let r = validate(&c, &srv.url, "ca1", &cred, ME, &t.totp, &other).await;
    assert_eq!(r.reason, Some(ValidateReason::KeyMismatch));
    for _ in 0..2 {
        validate(&c, &srv.url, "ca1", &cred, ME, &wrong(&o.totp), &other).await;
    }
    let r = validate(&c, &srv.url, "ca1", &cred, ME, &o.totp, &other).await;
    assert_eq!(r.reason, Some(ValidateReason::Locked));
    assert!(matches!(r.retry_after, Some(1..=2)), "{r:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Second lockout without a success in between: twice as long.
    for _ in 0..3 {
        validate(&c, &srv.url, "ca1", &cred, ME, &wrong(&o.totp), &other).await;
    }
    let r = validate(&c, &srv.url, "ca1", &cred, ME, &o.totp, &other).await;
    assert_eq!(r.reason, Some(ValidateReason::Locked));
    assert!(matches!(r.retry_after, Some(3..=4)), "{r:?}");
    // The lock is on (ME, other) only: k's live code still validates.
    assert!(
        validate(&c, &srv.url, "ca1", &cred, ME, &t.totp, &k)
            .await
            .valid
    );
}

/// Issue 11 item 1: guesses for keys that have no live code (never
/// issued, or already used) cannot succeed, so they never lock anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_for_keys_without_a_live_code_never_lock() {
    let dir = data_dir();
    add_account(dir.path(), ME, PW);
    let cred = add_ca(dir.path(), "ca1");
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    let (mine, used, never) = (key_id(), key_id(), key_id());
    let t = totp(&c, &srv.url, ME, PW, &used).await;
    assert!(
        validate(&c, &srv.url, "ca1", &cred, ME, &t.totp, &used)
            .await
            .valid
    );
    for key in [&never, &used, &mine] {
        for i in 0..12 {
            let r = validate(&c, &srv.url, "ca1", &cred, ME, "00000000", key).await;
            assert_eq!(r.reason, Some(ValidateReason::Invalid), "guess {i}: {r:?}");
        }
    }
    let list = mta_ok(dir.path(), &["account", "list"], None);
    assert_eq!(list, format!("{ME}\tenabled\n"));
    // The holder's own key validates at once.
    let t = totp(&c, &srv.url, ME, PW, &mine).await;
    let r = validate(&c, &srv.url, "ca1", &cred, ME, &t.totp, &mine).await;
    assert!(r.valid, "{r:?}");
    let metrics = c
        .get(format!("{}/metrics", srv.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("mailid_mta_lockouts_total 0"), "{metrics}");
}

/// Failures for a key with a live code lock that (account, key) only, and
/// the back-off stops doubling at `--lockout-max-secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_holds_one_key_and_its_backoff_is_capped() {
    let dir = data_dir();
    add_account(dir.path(), ME, PW);
    let cred = add_ca(dir.path(), "ca1");
    let flags = [
        "--lockout-base-secs",
        "2",
        "--lockout-threshold",
        "2",
        "--lockout-max-secs",
        "3",
    ];
    let srv = Server::start(dir.path(), &flags);
    let c = client();
    let (k1, k2) = (key_id(), key_id());
    let t1 = totp(&c, &srv.url, ME, PW, &k1).await;
    let t2 = totp(&c, &srv.url, ME, PW, &k2).await;
    for _ in 0..2 {
        let r = validate(&c, &srv.url, "ca1", &cred, ME, &wrong(&t1.totp), &k1).await;
        assert_eq!(r.reason, Some(ValidateReason::Invalid));
    }
    let r = validate(&c, &srv.url, "ca1", &cred, ME, &t1.totp, &k1).await;
    assert_eq!(r.reason, Some(ValidateReason::Locked));
    assert!(matches!(r.retry_after, Some(1..=2)), "{r:?}");
    // The other key of the account is not locked.
    let r = validate(&c, &srv.url, "ca1", &cred, ME, &t2.totp, &k2).await;
    assert!(r.valid, "{r:?}");
    let list = mta_ok(dir.path(), &["account", "list"], None);
    assert!(list.starts_with(&format!("{ME}\tlocked until ")), "{list}");

    // Uncapped, the second and third lockouts would last 4 and 8 s.
    for round in 0..2 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        for _ in 0..2 {
            validate(&c, &srv.url, "ca1", &cred, ME, &wrong(&t1.totp), &k1).await;
        }
        let r = validate(&c, &srv.url, "ca1", &cred, ME, &t1.totp, &k1).await;
        assert_eq!(r.reason, Some(ValidateReason::Locked), "round {round}");
        assert!(matches!(r.retry_after, Some(1..=3)), "round {round}: {r:?}");
    }
    // A cap below the base is refused at start.
    let out = mta(
        dir.path(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--lockout-base-secs",
            "10",
            "--lockout-max-secs",
            "5",
        ],
        None,
    );
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lockout cap"), "{err}");
}
