//! Helpers of the fault tests (`faults_*`, included with `#[path]`): a
//! misbehaving MTA that sits between the CA and the real MTA, enrollment
//! and problem-document helpers, and tmpfs / loop-image mounts (root only).
#![allow(dead_code, unused_imports)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mailid_shared::ProblemDocument;
use mailid_tests::flow::{self, KeyType};
use mailid_tests::{bin, rss_kib, temp_dir, CaFixture, MtaFixture, CA_BIN, MTA_BIN};
use serde_json::{json, Value};

mod faulty_mta;
mod mounts;
pub use faulty_mta::*;
pub use mounts::*;

pub const PASSWORD: &str = "correct horse battery staple";
pub const ALICE: &str = "alice@example.com";

// ---------------------------------------------------------------------------
// Helpers.

/// An enrollment's answer: status, content type, problem (if any), body.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub problem: Option<ProblemDocument>,
    pub body: Value,
    pub took: Duration,
}

pub fn post_enroll(ca: &str, csr_pem: &str, code: &str) -> Answer {
    post_enroll_or(ca, csr_pem, code).unwrap_or_else(|e| panic!("the CA did not answer: {e}"))
}

pub fn post_enroll_or(ca: &str, csr_pem: &str, code: &str) -> Result<Answer, reqwest::Error> {
    let start = Instant::now();
    let resp = flow::http()
        .post(format!("{ca}/v1/certificates"))
        .json(&json!({ "csr": csr_pem, "totp": code }))
        .send()?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = resp.text().unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let problem = serde_json::from_str::<ProblemDocument>(&text).ok();
    Ok(Answer {
        status,
        content_type,
        problem,
        body,
        took: start.elapsed(),
    })
}

/// A new key for `address`, a code for it from the MTA, and the CA's answer.
pub fn try_enroll(mta: &str, ca: &str, address: &str) -> Answer {
    let c = flow::csr(address, KeyType::P256);
    let code = flow::totp(mta, address, PASSWORD, &c.key_id);
    post_enroll(ca, &c.pem, &code.totp)
}

/// Asserts a documented problem answer: status, `type`, problem media type,
/// `status` member equal to the HTTP status, and no internal detail.
pub fn assert_problem(a: &Answer, status: u16, code: &str, what: &str) {
    assert_eq!(a.status, status, "{what}: {:?}", a.body);
    assert!(
        a.content_type.starts_with("application/problem+json"),
        "{what}: content type {}",
        a.content_type
    );
    let p = a.problem.as_ref().expect("a problem document");
    assert_eq!(p.type_uri, format!("urn:mailid:error:{code}"), "{what}");
    assert_eq!(p.status, status, "{what}");
    let detail = p.detail.to_lowercase();
    for leak in [
        "sqlite",
        "disk",
        "full",
        "read-only",
        "/tmp",
        "panick",
        "os error",
    ] {
        assert!(
            !detail.contains(leak),
            "{what}: detail leaks {leak:?}: {detail}"
        );
    }
}

/// The CA's view of an account: `(current, number of certificates)`.
pub fn account_state(ca: &str, address: &str) -> (Option<String>, usize) {
    let v: Value = flow::http()
        .get(format!("{ca}/v1/accounts/{address}"))
        .send()
        .expect("GET account")
        .json()
        .expect("account JSON");
    (
        v["current"].as_str().map(str::to_string),
        v["certificates"].as_array().map_or(0, Vec::len),
    )
}

pub fn serial_of(a: &Answer) -> String {
    assert_eq!(a.status, 201, "expected an issuance: {:?}", a.body);
    a.body["serial"].as_str().expect("serial").to_string()
}

pub fn healthy(url: &str) -> bool {
    flow::http()
        .get(format!("{url}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .map(|r| r.status().is_success())
        .unwrap_or(false)
}

pub use mailid_tests::serve_must_fail;

/// Asserts exit status 1, no `listening on`, and exactly one stderr line
/// starting with `prefix` and containing every one of `words`.
pub fn assert_one_line_failure(out: &Output, prefix: &str, words: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening on"),
        "it started"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "not one line on stderr: {stderr}");
    assert!(lines[0].starts_with(prefix), "{}", lines[0]);
    for w in words {
        assert!(
            lines[0].to_lowercase().contains(&w.to_lowercase()),
            "{:?} not in {:?}",
            w,
            lines[0]
        );
    }
    lines[0].to_string()
}

/// Contents of every regular file in `dir`, to show a failed start changed
/// nothing.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_default();
            (p, data)
        })
        .collect();
    v.sort();
    v
}

/// An MTA with Alice's account and a CA routing example.com to `route`
/// (the real MTA when `None`); both data dirs under the given parents.
pub struct Env {
    pub mta: MtaFixture,
    pub ca: CaFixture,
}

pub fn env_in(mta_parent: &Path, ca_parent: &Path, route: Option<&dyn Fn(&str) -> String>) -> Env {
    env_with(mta_parent, CaFixture::init(ca_parent, "ca", &[]), route)
}

/// [`env_in`] with the CA on SQLite in any run: for faults of the disk
/// under the CA's SQLite file.
#[allow(dead_code)]
pub fn sqlite_env_in(mta_parent: &Path, ca_parent: &Path) -> Env {
    env_with(
        mta_parent,
        CaFixture::init_sqlite(ca_parent, "ca", &[]),
        None,
    )
}

fn env_with(mta_parent: &Path, mut ca: CaFixture, route: Option<&dyn Fn(&str) -> String>) -> Env {
    let mut mta = MtaFixture::init(mta_parent, "mta");
    mta.add_account(ALICE, PASSWORD);
    mta.start(&[]);
    let cred = mta.add_ca("test-ca", Some(&ca.ca_pem()));
    let url = match route {
        Some(f) => f(&mta.url()),
        None => mta.url(),
    };
    ca.add_mta("example.com", &url, "test-ca", &cred);
    ca.start(&[]);
    Env { mta, ca }
}

pub fn ca_pid(env: &Env) -> u32 {
    env.ca
        .server
        .as_ref()
        .and_then(|s| s.pid())
        .expect("CA running")
}

pub fn assert_no_panic(log: &str, what: &str) {
    assert!(!log.contains("panicked"), "{what} panicked:\n{log}");
}
