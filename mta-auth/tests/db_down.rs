//! The database going away under load (SPEC §8): on a private PostgreSQL
//! cluster, stopped and then killed (-9) while clients issue and validate
//! codes and store and list key backups, every answer is 200 or 503
//! `unavailable` with `Retry-After` (no 500, no hang: each request has 10 s
//! and must finish), `/healthz` says 503, and once the cluster is back the
//! same process serves again; every code validated before is still used
//! afterwards and every backup acknowledged is still listed.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use mailid_shared::timefmt::now_unix;
use mailid_shared::KeyId;
use mailid_tests::pg::PgCluster;

const ME: &str = "holder@example.org";
const PW: &str = "db-down-test-pw";

/// What the load saw.
#[derive(Default)]
struct Seen {
    ok: usize,
    unavailable: usize,
    /// Anything else: (what, status, body).
    wrong: Vec<String>,
    /// Codes validated (valid: true): must stay used.
    validated: Vec<(KeyId, String)>,
    /// Key IDs with an acknowledged backup: must stay listed.
    backed_up: Vec<KeyId>,
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Records one answer: 200 (returns its body) or a proper 503.
async fn record(
    seen: &Mutex<Seen>,
    what: &str,
    resp: reqwest::Result<reqwest::Response>,
) -> Option<serde_json::Value> {
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            seen.lock()
                .unwrap()
                .wrong
                .push(format!("{what}: no answer: {e}"));
            return None;
        }
    };
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").is_some();
    let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    let mut s = seen.lock().unwrap();
    match status {
        200 => {
            s.ok += 1;
            return Some(body);
        }
        503 if retry && body["type"] == "urn:mailid:error:unavailable" => s.unavailable += 1,
        _ => s.wrong.push(format!("{what}: {status} {body}")),
    }
    None
}

/// Issues and validates codes, and stores (one key ID per worker, so the
/// per-account limit is never reached) and lists backups, until `stop`.
async fn load(url: String, cred: String, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
    let c = http();
    let (bk, backup) = common::backup::encrypted_key();
    while !stop.load(Ordering::Relaxed) {
        let resp = c
            .put(format!("{url}/v1/backups/{bk}"))
            .basic_auth(ME, Some(PW))
            .json(&serde_json::json!({ "encrypted_key": backup }))
            .send()
            .await;
        if record(&seen, "backup", resp).await.is_some() {
            seen.lock().unwrap().backed_up.push(bk.clone());
        }
        let resp = c
            .get(format!("{url}/v1/backups"))
            .basic_auth(ME, Some(PW))
            .send()
            .await;
        record(&seen, "backups", resp).await;
        let k = key_id();
        let resp = c
            .post(format!("{url}/v1/totp"))
            .basic_auth(ME, Some(PW))
            .json(&serde_json::json!({ "key_id": k }))
            .send()
            .await;
        if let Some(body) = record(&seen, "totp", resp).await {
            let code = body["totp"].as_str().unwrap().to_string();
            let req = serde_json::json!({"account": ME, "totp": code, "key_id": k}).to_string();
            let cred = mailid_shared::authsig::Credential::parse(&cred).unwrap();
            let ts = now_unix();
            let resp = c
                .post(format!("{url}/v1/validate"))
                .header("content-type", "application/json")
                .header("x-mailid-ca", "ca1")
                .header("x-mailid-timestamp", ts.to_string())
                .header(
                    "x-mailid-signature",
                    cred.sign("POST", "/v1/validate", ts, req.as_bytes()),
                )
                .body(req)
                .send()
                .await;
            if let Some(v) = record(&seen, "validate", resp).await {
                if v["valid"] == true {
                    seen.lock().unwrap().validated.push((k, code));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn healthz(url: &str) -> u16 {
    let r = http().get(format!("{url}/healthz")).send().await.unwrap();
    r.status().as_u16()
}

/// Waits (up to 60 s) until the load gets answers again.
async fn until_served(seen: &Mutex<Seen>) {
    let start = seen.lock().unwrap().ok;
    for _ in 0..600 {
        if seen.lock().unwrap().ok >= start + 4 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the service did not recover after the database came back");
}

/// Runs a cluster command off the async threads.
async fn cluster(c: &Arc<PgCluster>, f: fn(&PgCluster)) {
    let c = c.clone();
    tokio::task::spawn_blocking(move || f(&c)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_stopped_and_killed_under_load_answers_503_then_recovers() {
    let pgc = Arc::new(PgCluster::start());
    let db = pgc.fresh_database("mtapg_down");
    let dir = tempfile::tempdir().unwrap();
    mta_ok(dir.path(), &["init", "--database", db.url()], None);
    add_account(dir.path(), ME, PW);
    let cred = add_ca(dir.path(), "ca1");
    let srv = Server::start(dir.path(), &[]);
    let url = srv.url.clone();
    assert_eq!(healthz(&url).await, 200);

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|_| tokio::spawn(load(url.clone(), cred.clone(), seen.clone(), stop.clone())))
        .collect();
    until_served(&seen).await;

    let mut unavailable = Vec::new();
    for (how, down) in [
        ("stopped", PgCluster::stop as fn(&PgCluster)),
        ("killed -9", PgCluster::kill9),
    ] {
        let before = seen.lock().unwrap().unavailable;
        cluster(&pgc, down).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(healthz(&url).await, 503, "healthz with the database {how}");
        unavailable.push((how, seen.lock().unwrap().unavailable - before));
        cluster(&pgc, PgCluster::restart).await;
        until_served(&seen).await;
        // /healthz caches its ping for at most a second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            healthz(&url).await,
            200,
            "healthz once restarted after {how}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let seen = Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap();
    assert!(
        seen.wrong.is_empty(),
        "answers other than 200 and 503 unavailable: {:?}",
        seen.wrong
    );
    for (how, n) in &unavailable {
        assert!(*n > 0, "no 503 while the database was {how}");
    }
    println!(
        "{} answered, {} unavailable ({unavailable:?}), {} codes validated",
        seen.ok,
        seen.unavailable,
        seen.validated.len()
    );

    // Nothing acknowledged was lost: every code validated is still used.
    assert!(!seen.validated.is_empty());
    let c = client();
    for (k, code) in &seen.validated {
        let r = validate(&c, &url, "ca1", &cred, ME, code, k).await;
        assert!(!r.valid, "a validated code validated again: {r:?}");
    }
    let listed = common::backup::list_backups(&c, &url, ME, PW).await;
    let listed: Vec<KeyId> = listed.backups.into_iter().map(|b| b.key_id).collect();
    assert!(!seen.backed_up.is_empty());
    for k in &seen.backed_up {
        assert!(listed.contains(k), "an acknowledged backup is gone: {k}");
    }
    srv.stop();
}
