//! Helpers for the integration tests: the real binary, a real database
//! (a SQLite file in a temp dir, or with `MAILID_TEST_BACKEND=postgres` a
//! fresh PostgreSQL database per data dir on the cluster of
//! `MAILID_TEST_PG_URL`), real HTTP on loopback.
#![allow(dead_code)]

pub mod backup;
pub mod idlog;
pub mod pki;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use mailid_shared::authsig::Credential;
use mailid_shared::protocol::{TotpResponse, ValidateResponse};
use mailid_shared::timefmt::now_unix;
use mailid_shared::KeyId;

pub const BIN: &str = env!("CARGO_BIN_EXE_mailid-mta-auth");

/// Runs the CLI with `--data-dir dir` and optional stdin.
pub fn mta(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir").arg(dir).args(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.env_remove("MAILID_PASSWORD")
        .env_remove("MAILID_MTA_DATA_DIR")
        .env_remove("MAILID_DATABASE");
    let mut child = cmd.spawn().expect("spawn mailid-mta-auth");
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

/// Runs the CLI and insists on success; returns stdout.
pub fn mta_ok(dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = mta(dir, args, stdin);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Whether the tests run on PostgreSQL (`MAILID_TEST_BACKEND=postgres`).
pub fn on_postgres() -> bool {
    std::env::var("MAILID_TEST_BACKEND").is_ok_and(|v| v == "postgres")
}

/// The URL of a new, empty PostgreSQL database (password included); on a
/// thread of its own, as the tests call it from async code too.
pub fn fresh_database_url() -> String {
    std::thread::spawn(|| {
        mailid_shared::pg::testing::fresh_database("mtapg")
            .secret_text()
            .to_string()
    })
    .join()
    .expect("creating a test database")
}

/// A fresh initialised data directory on the backend under test.
pub fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    if on_postgres() {
        let url = fresh_database_url();
        mta_ok(dir.path(), &["init", "--database", &url], None);
    } else {
        mta_ok(dir.path(), &["init"], None);
    }
    dir
}

/// A fresh data directory on SQLite whatever the backend under test, for
/// the tests that read or edit the SQLite file itself.
pub fn sqlite_data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    mta_ok(dir.path(), &["init"], None);
    dir
}

pub fn add_account(dir: &Path, address: &str, password: &str) {
    mta_ok(
        dir,
        &["account", "add", address, "--password-stdin"],
        Some(&format!("{password}\n")),
    );
}

/// Registers a CA and returns its credential text.
pub fn add_ca(dir: &Path, name: &str) -> String {
    mta_ok(dir, &["ca", "add", name], None).trim().to_string()
}

/// A running `serve` process, killed on drop.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub stderr: Arc<Mutex<Vec<u8>>>,
}

impl Server {
    /// Starts `serve --listen 127.0.0.1:0 extra…` and waits for the
    /// `listening on` line.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        Self::start_env(dir, extra, &[])
    }

    pub fn start_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.arg("--data-dir")
            .arg(dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn serve");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "no listening line: {line:?}; stderr: {}",
                    String::from_utf8_lossy(&stderr.lock().unwrap())
                )
            })
            .to_string();
        Server { child, url, stderr }
    }

    /// Stops with SIGTERM and waits; returns the captured stderr.
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        std::thread::sleep(std::time::Duration::from_millis(100));
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

/// A random V=2 key ID.
pub fn key_id() -> KeyId {
    KeyId::of_spki(&rand::random::<[u8; 32]>())
}

/// `POST /v1/totp` with Basic auth; returns status and raw body.
pub async fn totp_raw(
    c: &reqwest::Client,
    url: &str,
    user: &str,
    password: &str,
    key: &KeyId,
) -> (u16, serde_json::Value) {
    let resp = c
        .post(format!("{url}/v1/totp"))
        .basic_auth(user, Some(password))
        .json(&serde_json::json!({ "key_id": key }))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// `POST /v1/totp` that must succeed.
pub async fn totp(
    c: &reqwest::Client,
    url: &str,
    user: &str,
    pw: &str,
    key: &KeyId,
) -> TotpResponse {
    let (status, body) = totp_raw(c, url, user, pw, key).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).unwrap()
}

/// Sends a signed `POST /v1/validate` with an explicit timestamp.
pub async fn validate_signed_at(
    c: &reqwest::Client,
    url: &str,
    ca: &str,
    cred: &str,
    body: &[u8],
    ts: i64,
) -> reqwest::Response {
    let cred = Credential::parse(cred).unwrap();
    let sig = cred.sign("POST", "/v1/validate", ts, body);
    c.post(format!("{url}/v1/validate"))
        .header("content-type", "application/json")
        .header("x-mailid-ca", ca)
        .header("x-mailid-timestamp", ts.to_string())
        .header("x-mailid-signature", sig)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

/// Validates a code as CA `ca`; the answer must be 200.
pub async fn validate(
    c: &reqwest::Client,
    url: &str,
    ca: &str,
    cred: &str,
    account: &str,
    code: &str,
    key: &KeyId,
) -> ValidateResponse {
    let body = serde_json::json!({"account": account, "totp": code, "key_id": key}).to_string();
    let resp = validate_signed_at(c, url, ca, cred, body.as_bytes(), now_unix()).await;
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.unwrap()
}

/// A wrong code of the right shape, different from `code`.
pub fn wrong(code: &str) -> String {
    let n: u64 = code.parse().unwrap();
    format!("{:08}", (n + 1) % 100_000_000)
}

/// Asserts a problem document with the given status and code.
pub async fn assert_problem(resp: reqwest::Response, status: u16, code: &str) {
    assert_eq!(resp.status().as_u16(), status);
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        ct.starts_with("application/problem+json"),
        "content type {ct}"
    );
    let doc: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(doc["type"], format!("urn:mailid:error:{code}"), "{doc}");
    assert_eq!(doc["status"], status);
}

pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("mta-auth.sqlite")
}

/// Serves `GET /ca.crl` with an empty CRL of `ca` on loopback; returns its
/// URL.
pub async fn empty_crl_server(ca: &pki::TestCa) -> String {
    let body = ca.crl(&[], 1);
    let app = axum::Router::new().route(
        "/ca.crl",
        axum::routing::get(move || async move { (axum::http::StatusCode::OK, body) }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ca.crl", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}
