//! The CA's PostgreSQL faults over the real binary (SPEC §8), each test on
//! a private cluster (`scripts/pg-cluster.sh`) it may break:
//!
//! * bad database URLs (unknown scheme, unreachable host, wrong password,
//!   a database the user may not create tables in): one line on stderr
//!   naming the problem, exit 1, nothing made or changed, the password
//!   never printed;
//! * the database stopped, then killed with -9, under enrollment load:
//!   only 201 or 503 `unavailable` with Retry-After (no 500, no hang),
//!   `/healthz` 503 while it is away, the CRL still served, recovery
//!   without a restart, and every serial that got a 201 in the database.

use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailid_tests::flow::{self, KeyType};
use mailid_tests::pg::{nocreate_url, PgCluster, PW_ROLE};
use mailid_tests::{bin, free_port, run_env, CaFixture, MtaFixture, CA_BIN};

const DOMAIN: &str = "example.org";
const PASSWORD: &str = "correct horse battery staple";
const SECRET: &str = "s3cret-Never-Shown";

fn ca(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let d = dir.display().to_string();
    let mut all = vec!["--data-dir", d.as_str()];
    all.extend_from_slice(args);
    run_env(&bin(CA_BIN), &all, None, env)
}

/// Exit 1 and one line on stderr holding `words`, never the secret.
fn one_line_failure(out: &Output, words: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let all = format!("{}{err}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("mailid-ca: "), "{err}");
    assert!(err.contains(words), "expected '{words}' in: {err}");
    assert!(!all.contains(SECRET), "the password was printed: {all}");
    err
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| (e.path(), std::fs::read(e.path()).unwrap_or_default()))
        .collect();
    v.sort();
    v
}

#[test]
fn bad_database_urls_fail_in_one_line_and_change_nothing() {
    let cluster = PgCluster::start();
    let pw_db = cluster.fresh_database_owned("capg_pw", PW_ROLE);
    let plain = cluster.fresh_database("capg_nocreate");
    let root = mailid_tests::temp_dir();
    let existing = root.path().join("existing");
    assert!(ca(&existing, &["init", "--name", "Existing"], &[])
        .status
        .success());
    let before = snapshot(&existing);
    let cases = [
        (
            format!("mysql://admin:{SECRET}@127.0.0.1/ca"),
            "unsupported database URL scheme 'mysql'",
        ),
        (
            format!(
                "postgresql://postgres:{SECRET}@127.0.0.1:{}/postgres",
                free_port()
            ),
            "the database is unavailable",
        ),
        (
            pw_db.tcp_url_as(PW_ROLE, Some(SECRET)),
            "password authentication failed",
        ),
        (nocreate_url(&plain), "permission denied"),
    ];
    for (i, (url, words)) in cases.iter().enumerate() {
        // init: nothing made, the line names the problem.
        let dir = root.path().join(format!("new-{i}"));
        let line = one_line_failure(
            &ca(&dir, &["init", "--name", "X", "--database", url], &[]),
            words,
        );
        assert!(!dir.exists(), "{line}");
        // Any command on an initialised data dir, by flag or environment:
        // refused, nothing changed.
        let out = ca(&existing, &["list", "--database", url], &[]);
        assert_eq!(out.status.code(), Some(1));
        one_line_failure(&out, "");
        let out = ca(&existing, &["mta", "list"], &[("MAILID_DATABASE", url)]);
        one_line_failure(&out, "");
        assert_eq!(snapshot(&existing), before);
    }
    // The user without rights created nothing.
    assert_eq!(
        plain
            .psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            .unwrap(),
        "0"
    );
    // With the right password it works, and `init` says nothing secret.
    let dir = root.path().join("right");
    let url = pw_db.tcp_url_as(PW_ROLE, Some(SECRET));
    let right = url.replace(SECRET, mailid_tests::pg::PW_RIGHT);
    let out = ca(
        &dir,
        &["init", "--name", "Right", "--database", &right],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(mailid_tests::pg::PW_RIGHT));
}

/// What one enrollment attempt got.
enum Outcome {
    Issued(String),
    Unavailable,
    Other(String),
}

/// One enrollment with a client that gives up after 15 s (a hang).
fn attempt(http: &reqwest::blocking::Client, ca: &str, mta: &str, account: &str) -> Outcome {
    let csr = flow::csr(account, KeyType::P256);
    let code = flow::totp(mta, account, PASSWORD, &csr.key_id);
    let resp = match http
        .post(format!("{ca}/v1/certificates"))
        .json(&serde_json::json!({ "csr": csr.pem, "totp": code.totp }))
        .send()
    {
        Ok(r) => r,
        Err(e) => return Outcome::Other(format!("no answer: {e}")),
    };
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").is_some();
    let body: serde_json::Value = resp.json().unwrap_or_default();
    match status {
        201 => Outcome::Issued(body["serial"].as_str().unwrap_or_default().to_string()),
        503 if retry && body["type"] == "urn:mailid:error:unavailable" => Outcome::Unavailable,
        _ => Outcome::Other(format!("{status} {body}")),
    }
}

fn get_status(http: &reqwest::blocking::Client, url: &str) -> u16 {
    http.get(url)
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Polls `url` until it answers `want` (panics after 60 s).
fn wait_status(http: &reqwest::blocking::Client, url: &str, want: u16) {
    let start = Instant::now();
    while get_status(http, url) != want {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{url} never answered {want}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn database_stopped_or_killed_under_load_gives_503_and_recovers() {
    let cluster = PgCluster::start();
    let db = cluster.fresh_database("capg_outage");
    let root = mailid_tests::temp_dir();
    let accounts: Vec<String> = (0..4).map(|i| format!("u{i}@{DOMAIN}")).collect();
    let mut mta = MtaFixture::init(root.path(), "mta");
    for a in &accounts {
        mta.add_account(a, PASSWORD);
    }
    // The CA on this test's own cluster (not the harness's database).
    let mut ca_fx = CaFixture::init_sqlite(root.path(), "ca", &["--database", db.url()]);
    let cred = mta.add_ca("test-ca", Some(&ca_fx.ca_pem()));
    mta.start(&[]);
    ca_fx.add_mta(DOMAIN, &mta.url(), "test-ca", &cred);
    ca_fx.start(&[]);
    let (ca_url, mta_url) = (ca_fx.url(), mta.url());
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let load: Vec<_> = accounts
        .iter()
        .cloned()
        .map(|account| {
            let (stop, outcomes, http) = (stop.clone(), outcomes.clone(), http.clone());
            let (ca_url, mta_url) = (ca_url.clone(), mta_url.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let o = attempt(&http, &ca_url, &mta_url, &account);
                    outcomes.lock().unwrap().push(o);
                }
            })
        })
        .collect();
    let crl = format!("{ca_url}/v1/crl.der");
    let health = format!("{ca_url}/healthz");
    let issued_count = |outcomes: &Mutex<Vec<Outcome>>| {
        outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|o| matches!(o, Outcome::Issued(_)))
            .count()
    };
    let wait_issued_more = |than: usize| {
        let start = Instant::now();
        while issued_count(&outcomes) <= than + 3 {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no enrollments succeed"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_issued_more(0);
    for kill in [false, true] {
        if kill {
            cluster.kill9();
        } else {
            cluster.stop();
        }
        wait_status(&http, &health, 503);
        // The CRL is still served from memory.
        assert_eq!(get_status(&http, &crl), 200);
        let unavailable_before = outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|o| matches!(o, Outcome::Unavailable))
            .count();
        let start = Instant::now();
        while outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|o| matches!(o, Outcome::Unavailable))
            .count()
            < unavailable_before + 8
        {
            assert!(start.elapsed() < Duration::from_secs(60), "no 503 answers");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(get_status(&http, &crl), 200);
        cluster.restart();
        // Recovery without a restart of the CA.
        wait_status(&http, &health, 200);
        wait_issued_more(issued_count(&outcomes));
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let outcomes = outcomes.lock().unwrap();
    let others: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Other(what) => Some(what.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        others.is_empty(),
        "answers other than 201 and 503 unavailable: {others:?}"
    );
    // Every serial that got a 201 is in the database, and every account
    // has exactly one valid identity.
    let stored = db.psql("SELECT serial FROM certificates").unwrap();
    let stored: std::collections::HashSet<&str> = stored.lines().collect();
    for o in outcomes.iter() {
        if let Outcome::Issued(serial) = o {
            assert!(
                stored.contains(serial.as_str()),
                "{serial} got a 201 but is not stored"
            );
        }
    }
    assert_eq!(
        db.psql("SELECT count(*) FROM certificates WHERE active")
            .unwrap(),
        accounts.len().to_string()
    );
    let log = ca_fx.server.as_ref().unwrap().log_text();
    assert!(!log.contains("panicked"), "{log}");
}
