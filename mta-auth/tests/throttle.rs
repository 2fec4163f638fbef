//! Throttling of password guessing (`login_limits` in config.json): failed
//! Basic logins per client address and per account, the exemption of an
//! address that logged in before, and the bounded Argon2 queue. Clients
//! bind to other loopback addresses (127.0.0.0/8) to be other addresses.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;

const PW: &str = "throttle-test-password";
const ME: &str = "alice@example.org";

/// A client whose connections come from 127.0.0.`n`.
fn from(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, n]))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// `POST /v1/totp` with Basic auth: the answer.
async fn login(c: &reqwest::Client, url: &str, user: &str, pw: &str) -> reqwest::Response {
    c.post(format!("{url}/v1/totp"))
        .basic_auth(user, Some(pw))
        .json(&serde_json::json!({ "key_id": key_id() }))
        .send()
        .await
        .unwrap()
}

/// Asserts a 429 `rate-limited` problem document with a `Retry-After` of
/// 1 to `max` seconds; returns it and the problem's detail.
async fn assert_rate_limited(resp: reqwest::Response, max: u64) -> (u64, String) {
    let retry: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without Retry-After: {:?}", resp.headers()));
    assert!((1..=max).contains(&retry), "Retry-After {retry}");
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/problem+json"), "{ct}");
    assert_eq!(resp.status().as_u16(), 429);
    let doc: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(doc["type"], "urn:mailid:error:rate-limited", "{doc}");
    assert_eq!(doc["status"], 429);
    (
        retry,
        doc["detail"].as_str().unwrap_or_default().to_string(),
    )
}

/// Sets `login_limits` in the data directory's config.json.
fn set_limits(dir: &std::path::Path, limits: serde_json::Value) {
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["login_limits"] = limits;
    std::fs::write(&path, cfg.to_string()).unwrap();
}

/// Regression (issue 11, item 8): every wrong password used to get 401
/// and an Argon2 run, however many came from one address. Now the address
/// gets 429 `rate-limited` with Retry-After once its failures pass the
/// burst (10 by default), before Argon2 runs; the holder on another
/// address still logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_guessing_flood_from_one_address_gets_429() {
    let dir = data_dir();
    add_account(dir.path(), ME, PW);
    let srv = Server::start(dir.path(), &[]);
    let attacker = from(9);
    let mut statuses = Vec::new();
    let mut limited = None;
    // Different accounts each time, so only the per-address bucket counts.
    for i in 0..40 {
        let r = login(
            &attacker,
            &srv.url,
            &format!("user{i}@example.org"),
            "guess",
        )
        .await;
        statuses.push(r.status().as_u16());
        if r.status().as_u16() == 429 {
            limited = Some(r);
            break;
        }
        assert_problem(r, 401, "unauthorized").await;
    }
    eprintln!("statuses of the flood: {statuses:?}");
    let resp = limited.expect("40 wrong passwords from one address were all answered 401");
    // 10 failures pass (more if the bucket refilled meanwhile).
    assert!(
        statuses.len() > 10,
        "refused after {} failures",
        statuses.len() - 1
    );
    let (_, detail) = assert_rate_limited(resp, 6).await;
    assert!(detail.contains("from this address"), "{detail}");
    // The holder elsewhere is not slowed down.
    let (s, body) = totp_raw(&from(1), &srv.url, ME, PW, &key_id()).await;
    assert_eq!(s, 200, "{body}");
}

/// Failures against one account from many addresses fill the account's
/// bucket: further guesses get 429 before Argon2. The holder on an address
/// that logged in before is exempt; on a new address she waits at most one
/// refill interval (6 s by default), never longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_distributed_flood_on_one_account_does_not_lock_the_holder_out() {
    let dir = data_dir();
    add_account(dir.path(), ME, PW);
    let srv = Server::start(dir.path(), &[]);
    let holder = from(1);
    assert_eq!(login(&holder, &srv.url, ME, PW).await.status(), 200);
    let mut limited = None;
    for i in 0..30u8 {
        let r = login(&from(10 + i), &srv.url, ME, "guess").await;
        if r.status().as_u16() == 429 {
            limited = Some((i, r));
            break;
        }
        assert_problem(r, 401, "unauthorized").await;
    }
    let (i, resp) = limited.expect("30 wrong passwords for one account were all answered 401");
    // 20 failures pass (more if the bucket refilled meanwhile).
    assert!(i >= 20, "refused after {i} failures");
    let (_, detail) = assert_rate_limited(resp, 6).await;
    assert!(detail.contains("for this account"), "{detail}");
    // The holder's known address is exempt.
    assert_eq!(login(&holder, &srv.url, ME, PW).await.status(), 200);
    // A new address waits for the bucket, then gets in.
    let newcomer = from(200);
    let resp = login(&newcomer, &srv.url, ME, PW).await;
    let (retry, _) = assert_rate_limited(resp, 6).await;
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(login(&newcomer, &srv.url, ME, PW).await.status(), 200);
}

/// With the buckets disabled (0) and an Argon2 queue of 1, a burst of
/// concurrent wrong passwords gets 401 for the checks that ran and 429
/// with Retry-After: 1 for those that found the queue full, never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_argon2_queue_answers_429() {
    let dir = data_dir();
    add_account(dir.path(), ME, PW);
    set_limits(
        dir.path(),
        serde_json::json!({
            "ip_failures_per_minute": 0,
            "account_failures_per_minute": 0,
            "argon2_queue": 1
        }),
    );
    let srv = Server::start(dir.path(), &[]);
    let mut tasks = Vec::new();
    for i in 0..48u8 {
        let url = srv.url.clone();
        tasks.push(tokio::spawn(async move {
            login(&from(2 + i % 8), &url, ME, &format!("guess {i}")).await
        }));
    }
    let (mut refused, mut limited) = (0, 0);
    for t in tasks {
        let r = t.await.unwrap();
        match r.status().as_u16() {
            401 => {
                assert_problem(r, 401, "unauthorized").await;
                refused += 1;
            }
            429 => {
                let (retry, detail) = assert_rate_limited(r, 1).await;
                assert_eq!(retry, 1);
                assert!(detail.contains("password checks are waiting"), "{detail}");
                limited += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    eprintln!("{refused} answered 401, {limited} answered 429 (queue full)");
    assert!(refused > 0 && limited > 0, "{refused} / {limited}");
    // With the buckets disabled no address or account is refused.
    for _ in 0..3 {
        assert_eq!(login(&from(2), &srv.url, ME, PW).await.status(), 200);
    }
}
