//! Two MTA auth processes on one PostgreSQL database (SPEC §8 replicas):
//! one code sent to both at the same moment validates once, failures
//! count towards one lockout across both, and an operator command on one
//! replica's data dir holds at the other at once. Needs the cluster of
//! `MAILID_TEST_PG_URL`.

mod common;

use common::*;
use mailid_shared::protocol::ValidateReason;

const ME: &str = "holder@example.org";
const PW: &str = "replicas-test-pw";

/// A data dir on a fresh database and a copy of it (a replica).
fn two_data_dirs() -> (tempfile::TempDir, tempfile::TempDir) {
    let one = tempfile::tempdir().unwrap();
    let url = fresh_database_url();
    mta_ok(one.path(), &["init", "--database", &url], None);
    let two = tempfile::tempdir().unwrap();
    std::fs::copy(
        one.path().join("config.json"),
        two.path().join("config.json"),
    )
    .unwrap();
    (one, two)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_single_use_lockouts_and_accounts() {
    let (one, two) = two_data_dirs();
    add_account(one.path(), ME, PW);
    add_account(two.path(), "other@example.org", PW);
    let cred = add_ca(two.path(), "ca1");
    let (s1, s2) = (
        Server::start(one.path(), &[]),
        Server::start(two.path(), &[]),
    );
    let urls = [s1.url.clone(), s2.url.clone()];
    let c = client();

    // One code, sent to both replicas at once, round after round: valid
    // exactly once.
    for round in 0..10 {
        let k = key_id();
        let t = totp(&c, &urls[round % 2], ME, PW, &k).await;
        let body = serde_json::json!({"account": ME, "totp": t.totp, "key_id": k}).to_string();
        let now = mailid_shared::timefmt::now_unix();
        let (a, b) = tokio::join!(
            validate_signed_at(&c, &urls[0], "ca1", &cred, body.as_bytes(), now),
            validate_signed_at(&c, &urls[1], "ca1", &cred, body.as_bytes(), now),
        );
        let mut valid = 0;
        for resp in [a, b] {
            assert_eq!(resp.status().as_u16(), 200);
            let v: mailid_shared::protocol::ValidateResponse = resp.json().await.unwrap();
            if v.valid {
                valid += 1;
            } else {
                assert_eq!(v.reason, Some(ValidateReason::Replayed), "{v:?}");
            }
        }
        assert_eq!(valid, 1, "round {round}");
    }

    // Failures alternate between the replicas and lock the key at both.
    let k = key_id();
    let t = totp(&c, &urls[0], ME, PW, &k).await;
    for i in 0..5 {
        let r = validate(&c, &urls[i % 2], "ca1", &cred, ME, &wrong(&t.totp), &k).await;
        assert_eq!(r.reason, Some(ValidateReason::Invalid), "failure {i}");
    }
    for url in &urls {
        let r = validate(&c, url, "ca1", &cred, ME, &t.totp, &k).await;
        assert_eq!(r.reason, Some(ValidateReason::Locked), "{r:?}");
    }

    // Disabled through replica two's data dir: refused by replica one at
    // once; enabled again, served again.
    mta_ok(two.path(), &["account", "disable", ME], None);
    let (status, _) = totp_raw(&c, &urls[0], ME, PW, &key_id()).await;
    assert_eq!(status, 401);
    mta_ok(two.path(), &["account", "enable", ME], None);
    totp(&c, &urls[0], ME, PW, &key_id()).await;
    // The account added through replica two's data dir logs in at one.
    totp(&c, &urls[0], "other@example.org", PW, &key_id()).await;
}
