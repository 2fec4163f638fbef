//! Faults (issue 7 item 2), over the real binaries and real HTTP:
//!
//! * the account's MTA slower than the CA's 5 s timeout, answering 500,
//!   answering garbage (not JSON, not HTTP, an endless body, a redirect, a
//!   "valid" for someone else), refusing connections. A fake *misbehaving
//!   MTA* sits on the port the CA routes the domain to; between faults it
//!   forwards to the real MTA. Each fault gives the documented problem
//!   document (503 `mta-unavailable`, or 403 `totp-rejected` for a verdict
//!   about another account), changes nothing in the CA's database, and once
//!   the fault clears the same CA process (no restart) issues again;
//! * the disk full under the CA's and under the MTA's database (a small
//!   tmpfs): 500 `internal` / 503 `mta-unavailable`, nothing changed, the
//!   service stays up and recovers by itself when space is freed;
//! * the database read-only: at start (a tmpfs remounted read-only: `serve`
//!   refuses with one line on stderr and starts once it is writable again)
//!   and while serving (an ext4 loop image put into its error state, which
//!   the kernel turns read-only for good: 500 `internal`, nothing changed,
//!   the service stays up; it serves again after the operator repairs the
//!   file system and restarts it);
//! * the CA key missing, unreadable, of another CA, or its passphrase
//!   missing or wrong, and either service's database corrupt: `serve` exits
//!   1 with one clear line on stderr and leaves the data directory as it was.
//!
//! Mounting needs root; without it the mount cases print why they are
//! skipped and pass.

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

const PASSWORD: &str = "correct horse battery staple";
const ALICE: &str = "alice@example.com";

// ---------------------------------------------------------------------------
// A misbehaving MTA.

/// What the fake MTA does with the next connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// Relays the request to the real MTA (with `Connection: close`).
    Forward = 0,
    /// Waits 6 s (past the CA's 5 s timeout), then answers "valid".
    Slow,
    /// Answers 500 with a problem document.
    Error500,
    /// Answers 200 `application/json` with a body that is not JSON.
    NotJson,
    /// Answers bytes that are not HTTP at all.
    NotHttp,
    /// Answers 200 and then streams a body without end (up to 512 MiB).
    EndlessBody,
    /// Answers 307 to another listener (which must never be contacted).
    Redirect,
    /// Answers `{"valid":true}` for another account.
    ValidForOther,
    /// Answers a bare `{"valid":true}` that names no account and no key.
    BareValid,
    /// Refuses connections (nothing listens on the port).
    Refuse,
}

impl Mode {
    fn from_u8(v: u8) -> Mode {
        [
            Mode::Forward,
            Mode::Slow,
            Mode::Error500,
            Mode::NotJson,
            Mode::NotHttp,
            Mode::EndlessBody,
            Mode::Redirect,
            Mode::ValidForOther,
            Mode::BareValid,
            Mode::Refuse,
        ][v as usize]
    }
}

/// Most bytes [`Mode::EndlessBody`] sends before giving up.
const ENDLESS_MAX: usize = 512 << 20;

struct FaultyMta {
    port: u16,
    mode: Arc<AtomicU8>,
    applied: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    /// Connections accepted by the redirect target.
    redirect_hits: Arc<AtomicUsize>,
    /// Bytes sent by the endless body so far.
    endless_sent: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl FaultyMta {
    /// Listens on a free loopback port and relays to `upstream` (a base URL).
    fn start(upstream: &str) -> FaultyMta {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake MTA");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let trap = TcpListener::bind("127.0.0.1:0").expect("bind redirect target");
        trap.set_nonblocking(true).unwrap();
        let trap_port = trap.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(Mode::Forward as u8));
        let applied = Arc::new(AtomicU8::new(Mode::Forward as u8));
        let stop = Arc::new(AtomicBool::new(false));
        let redirect_hits = Arc::new(AtomicUsize::new(0));
        let endless_sent = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        {
            let (stop, hits) = (stop.clone(), redirect_hits.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match trap.accept() {
                        Ok(_) => {
                            hits.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }));
        }
        {
            let (mode, applied, stop, sent) = (
                mode.clone(),
                applied.clone(),
                stop.clone(),
                endless_sent.clone(),
            );
            threads.push(std::thread::spawn(move || {
                let mut listener = Some(listener);
                while !stop.load(Ordering::SeqCst) {
                    let m = Mode::from_u8(mode.load(Ordering::SeqCst));
                    if m == Mode::Refuse {
                        listener = None;
                        applied.store(m as u8, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    if listener.is_none() {
                        match TcpListener::bind(("127.0.0.1", port)) {
                            Ok(l) => {
                                l.set_nonblocking(true).unwrap();
                                listener = Some(l);
                            }
                            Err(_) => {
                                std::thread::sleep(Duration::from_millis(10));
                                continue;
                            }
                        }
                    }
                    applied.store(m as u8, Ordering::SeqCst);
                    match listener.as_ref().map(|l| l.accept()) {
                        Some(Ok((s, _))) => {
                            let up = upstream.clone();
                            let sent = sent.clone();
                            std::thread::spawn(move || handle(s, m, &up, trap_port, &sent));
                        }
                        _ => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            }));
        }
        FaultyMta {
            port,
            mode,
            applied,
            stop,
            redirect_hits,
            endless_sent,
            threads,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Switches the behaviour and waits until it is in force.
    fn set(&self, m: Mode) {
        self.mode.store(m as u8, Ordering::SeqCst);
        let t = Instant::now();
        while self.applied.load(Ordering::SeqCst) != m as u8 {
            assert!(t.elapsed() < Duration::from_secs(10), "fake MTA stuck");
            std::thread::sleep(Duration::from_millis(5));
        }
        if m == Mode::Refuse {
            assert!(
                TcpStream::connect(("127.0.0.1", self.port)).is_err(),
                "the port still accepts connections"
            );
        }
    }
}

impl Drop for FaultyMta {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Reads one request: the head (without the blank line) and the body.
fn read_request(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Some((head, body))
}

fn respond(s: &mut TcpStream, status: &str, ctype: &str, body: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.flush();
}

fn handle(mut s: TcpStream, mode: Mode, upstream: &str, trap_port: u16, sent: &AtomicUsize) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let Some((head, body)) = read_request(&mut s) else {
        return;
    };
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match mode {
        Mode::Forward => {
            let Ok(mut up) = TcpStream::connect(upstream) else {
                return;
            };
            let mut out = String::new();
            for line in head.split("\r\n") {
                if !line.to_ascii_lowercase().starts_with("connection:") {
                    out.push_str(line);
                    out.push_str("\r\n");
                }
            }
            out.push_str("Connection: close\r\n\r\n");
            let _ = up.write_all(out.as_bytes());
            let _ = up.write_all(&body);
            let mut answer = Vec::new();
            let _ = up.read_to_end(&mut answer);
            let _ = s.write_all(&answer);
        }
        Mode::Slow => {
            std::thread::sleep(Duration::from_secs(6));
            let v = json!({"valid": true, "account": req["account"], "key_id": req["key_id"]});
            respond(&mut s, "200 OK", "application/json", &v.to_string());
        }
        Mode::Error500 => respond(
            &mut s,
            "500 Internal Server Error",
            "application/problem+json",
            r#"{"type":"urn:mailid:error:internal","title":"Internal error","status":500}"#,
        ),
        Mode::NotJson => respond(
            &mut s,
            "200 OK",
            "application/json",
            "<html>proxy error</html>",
        ),
        Mode::NotHttp => {
            let _ = s.write_all(b"\x00\xff\x13garbage that is not HTTP\r\n\r\n\xde\xad");
        }
        Mode::EndlessBody => {
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"valid\":true,\"pad\":\"",
            );
            let chunk = vec![b'a'; 1 << 20];
            let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
            while sent.load(Ordering::SeqCst) < ENDLESS_MAX {
                if s.write_all(&chunk).is_err() {
                    break;
                }
                sent.fetch_add(chunk.len(), Ordering::SeqCst);
            }
        }
        Mode::Redirect => {
            let _ = write!(
                s,
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{trap_port}/v1/validate\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
        Mode::ValidForOther => {
            let v =
                json!({"valid": true, "account": "mallory@example.com", "key_id": req["key_id"]});
            respond(&mut s, "200 OK", "application/json", &v.to_string());
        }
        Mode::BareValid => {
            respond(&mut s, "200 OK", "application/json", r#"{"valid":true}"#);
        }
        Mode::Refuse => {}
    }
}

// ---------------------------------------------------------------------------
// Helpers.

/// An enrollment's answer: status, content type, problem (if any), body.
struct Answer {
    status: u16,
    content_type: String,
    problem: Option<ProblemDocument>,
    body: Value,
    took: Duration,
}

fn post_enroll(ca: &str, csr_pem: &str, code: &str) -> Answer {
    post_enroll_or(ca, csr_pem, code).unwrap_or_else(|e| panic!("the CA did not answer: {e}"))
}

fn post_enroll_or(ca: &str, csr_pem: &str, code: &str) -> Result<Answer, reqwest::Error> {
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
fn try_enroll(mta: &str, ca: &str, address: &str) -> Answer {
    let c = flow::csr(address, KeyType::P256);
    let code = flow::totp(mta, address, PASSWORD, &c.key_id);
    post_enroll(ca, &c.pem, &code.totp)
}

/// Asserts a documented problem answer: status, `type`, problem media type,
/// `status` member equal to the HTTP status, and no internal detail.
fn assert_problem(a: &Answer, status: u16, code: &str, what: &str) {
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
fn account_state(ca: &str, address: &str) -> (Option<String>, usize) {
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

fn serial_of(a: &Answer) -> String {
    assert_eq!(a.status, 201, "expected an issuance: {:?}", a.body);
    a.body["serial"].as_str().expect("serial").to_string()
}

fn healthy(url: &str) -> bool {
    flow::http()
        .get(format!("{url}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .map(|r| r.status().is_success())
        .unwrap_or(false)
}

/// Runs `bin --data-dir DIR serve --listen 127.0.0.1:0` that must fail:
/// waits up to 30 s (kills it and panics if it is still running).
fn serve_must_fail(bin_path: &Path, dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin_path);
    cmd.args([
        "--data-dir",
        &dir.display().to_string(),
        "serve",
        "--listen",
        "127.0.0.1:0",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .env_remove("MAILID_CA_PASSPHRASE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn serve");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("output");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    panic!(
        "{} serve kept running; stdout: {}",
        bin_path.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Asserts exit status 1, no `listening on`, and exactly one stderr line
/// starting with `prefix` and containing every one of `words`.
fn assert_one_line_failure(out: &Output, prefix: &str, words: &[&str]) -> String {
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
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
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
struct Env {
    mta: MtaFixture,
    ca: CaFixture,
}

fn env_in(mta_parent: &Path, ca_parent: &Path, route: Option<&dyn Fn(&str) -> String>) -> Env {
    let mut mta = MtaFixture::init(mta_parent, "mta");
    mta.add_account(ALICE, PASSWORD);
    mta.start(&[]);
    let mut ca = CaFixture::init(ca_parent, "ca", &[]);
    let cred = mta.add_ca("test-ca", Some(&ca.ca_pem()));
    let url = match route {
        Some(f) => f(&mta.url()),
        None => mta.url(),
    };
    ca.add_mta("example.com", &url, "test-ca", &cred);
    ca.start(&[]);
    Env { mta, ca }
}

fn ca_pid(env: &Env) -> u32 {
    env.ca
        .server
        .as_ref()
        .and_then(|s| s.pid())
        .expect("CA running")
}

fn assert_no_panic(log: &str, what: &str) {
    assert!(!log.contains("panicked"), "{what} panicked:\n{log}");
}

// ---------------------------------------------------------------------------
// Mounts (root only).

/// A mount that is undone when dropped.
struct Mount {
    path: PathBuf,
}

impl Mount {
    /// Mounts a tmpfs of `size` (e.g. "16m") on a new directory `path`.
    fn tmpfs(path: &Path, size: &str) -> Result<Mount, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(path)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Mount {
            path: path.to_path_buf(),
        })
    }

    /// Makes an ext4 image of `mib` MiB at `image` and loop-mounts it on a
    /// new directory `path` with `errors=remount-ro`.
    fn ext4_loop(image: &Path, path: &Path, mib: u64) -> Result<Mount, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let f = std::fs::File::create(image).map_err(|e| e.to_string())?;
        f.set_len(mib << 20).map_err(|e| e.to_string())?;
        drop(f);
        let mk = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(image)
            .output()
            .map_err(|e| format!("running mkfs.ext4: {e}"))?;
        if !mk.status.success() {
            return Err(format!(
                "mkfs.ext4 failed: {}",
                String::from_utf8_lossy(&mk.stderr).trim()
            ));
        }
        let out = Command::new("mount")
            .args(["-o", "loop,errors=remount-ro"])
            .arg(image)
            .arg(path)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -o loop failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Mount {
            path: path.to_path_buf(),
        })
    }

    fn remount(&self, opts: &str) -> Result<(), String> {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.path)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// The block device (e.g. `loop3`) behind the mount.
    fn device(&self) -> Option<String> {
        let out = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&self.path)
            .output()
            .ok()?;
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        s.rsplit('/').next().map(str::to_string)
    }

    fn unmount(&self) -> bool {
        Command::new("umount")
            .arg(&self.path)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        for _ in 0..50 {
            if self.unmount() {
                return;
            }
            // Not mounted any more, or still busy.
            let mounted = Command::new("mountpoint")
                .arg("-q")
                .arg(&self.path)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !mounted {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why} (needs root and mount; run as root to exercise this fault)");
}

/// Fills the file system holding `dir` with a file; returns its path.
fn fill_disk(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("create filler");
    for size in [1 << 20, 4096, 1] {
        let chunk = vec![0u8; size];
        while f.write_all(&chunk).is_ok() {}
    }
    let _ = f.sync_all();
    path
}

// ---------------------------------------------------------------------------
// MTA faults.

/// Both services under `root`, with the CA's route for the domain going
/// through a [`FaultyMta`] that forwards to the real MTA until told otherwise.
fn env_behind_faulty_mta(root: &Path) -> (Env, FaultyMta) {
    let fake: std::cell::OnceCell<FaultyMta> = std::cell::OnceCell::new();
    let env = env_in(
        root,
        root,
        Some(&|real: &str| fake.get_or_init(|| FaultyMta::start(real)).url()),
    );
    (env, fake.into_inner().expect("fake MTA"))
}

#[test]
fn mta_faults_give_503_change_nothing_and_clear_without_restart() {
    let root = temp_dir();
    let (env, fake) = env_behind_faulty_mta(root.path());
    let (mta, ca) = (env.mta.url(), env.ca.url());
    let pid = ca_pid(&env);

    // Through the relay, enrollment works.
    let mut current = serial_of(&try_enroll(&mta, &ca, ALICE));

    let faults = [
        (Mode::Slow, 503, "mta-unavailable"),
        (Mode::Error500, 503, "mta-unavailable"),
        (Mode::NotJson, 503, "mta-unavailable"),
        (Mode::NotHttp, 503, "mta-unavailable"),
        (Mode::Redirect, 503, "mta-unavailable"),
        (Mode::Refuse, 503, "mta-unavailable"),
        (Mode::ValidForOther, 403, "totp-rejected"),
        (Mode::BareValid, 503, "mta-unavailable"),
    ];
    for (mode, status, code) in faults {
        let what = format!("MTA fault {mode:?}");
        let before = account_state(&ca, ALICE);
        fake.set(mode);
        let a = try_enroll(&mta, &ca, ALICE);
        assert_problem(&a, status, code, &what);
        // The 5 s timeout holds (plus margin), nothing hangs.
        assert!(a.took < Duration::from_secs(15), "{what} took {:?}", a.took);
        assert_eq!(account_state(&ca, ALICE), before, "{what} changed the CA");
        assert_eq!(before.0.as_deref(), Some(current.as_str()));
        assert!(healthy(&ca), "{what}: CA not healthy");
        // The fault clears: the same CA process issues again.
        fake.set(Mode::Forward);
        let next = serial_of(&try_enroll(&mta, &ca, ALICE));
        let (cur, n) = account_state(&ca, ALICE);
        assert_eq!(cur.as_deref(), Some(next.as_str()), "after {what}");
        assert_eq!(n, before.1 + 1, "after {what}");
        current = next;
    }
    assert_eq!(
        fake.redirect_hits.load(Ordering::SeqCst),
        0,
        "the CA followed the MTA's redirect (and sent its signed request elsewhere)"
    );
    assert_eq!(ca_pid(&env), pid, "the CA was restarted");
    assert_no_panic(&env.ca.server.as_ref().unwrap().log_text(), "the CA");
}

#[test]
fn an_endless_mta_answer_is_cut_off_and_memory_stays_bounded() {
    let root = temp_dir();
    let (env, fake) = env_behind_faulty_mta(root.path());
    let (mta, ca) = (env.mta.url(), env.ca.url());
    let pid = ca_pid(&env);
    let first = serial_of(&try_enroll(&mta, &ca, ALICE));
    let rss_before = rss_kib(pid).expect("CA RSS");

    fake.set(Mode::EndlessBody);
    let a = try_enroll(&mta, &ca, ALICE);
    assert_problem(&a, 503, "mta-unavailable", "endless MTA answer");
    let rss_after = rss_kib(pid).expect("CA RSS");
    let sent = fake.endless_sent.load(Ordering::SeqCst);
    eprintln!(
        "CA RSS {rss_before} KiB -> {rss_after} KiB; the fake MTA got {} MiB out",
        sent >> 20
    );
    assert!(
        rss_after < 256 * 1024,
        "CA RSS grew to {rss_after} KiB reading an endless MTA answer"
    );
    assert!(
        sent < 64 << 20,
        "the CA read {} MiB of an MTA answer before giving up",
        sent >> 20
    );
    assert_eq!(account_state(&ca, ALICE), (Some(first), 1));

    fake.set(Mode::Forward);
    serial_of(&try_enroll(&mta, &ca, ALICE));
    assert_eq!(ca_pid(&env), pid);
}

// ---------------------------------------------------------------------------
// Disk full.

#[test]
fn disk_full_under_the_ca_gives_500_changes_nothing_and_recovers() {
    let root = temp_dir();
    let disk = match Mount::tmpfs(&root.path().join("disk"), "16m") {
        Ok(m) => m,
        Err(why) => return skip("disk_full_under_the_ca", &why),
    };
    let env = env_in(root.path(), &disk.path, None);
    let (mta, ca) = (env.mta.url(), env.ca.url());
    let pid = ca_pid(&env);
    let first = serial_of(&try_enroll(&mta, &ca, ALICE));

    let filler = fill_disk(&disk.path);
    for i in 0..3 {
        let a = try_enroll(&mta, &ca, ALICE);
        assert_problem(
            &a,
            500,
            "internal",
            &format!("enrollment {i} on a full disk"),
        );
        assert!(a.took < Duration::from_secs(15), "took {:?}", a.took);
    }
    // Nothing changed; reads and the CRL still work.
    assert_eq!(account_state(&ca, ALICE), (Some(first.clone()), 1));
    assert!(healthy(&ca));
    let crl = flow::http()
        .get(format!("{ca}/v1/crl.der"))
        .send()
        .expect("GET crl");
    assert_eq!(crl.status(), 200);

    // Space comes back: the same process issues again, superseding `first`.
    std::fs::remove_file(&filler).unwrap();
    let second = serial_of(&try_enroll(&mta, &ca, ALICE));
    assert_eq!(account_state(&ca, ALICE), (Some(second), 2));
    let old: Value = flow::http()
        .get(format!("{ca}/v1/certificates/{first}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(old["status"], "revoked");
    assert_eq!(ca_pid(&env), pid, "the CA was restarted");
    let log = env.ca.server.as_ref().unwrap().log_text();
    assert_no_panic(&log, "the CA");
    drop(env);
    drop(disk);
}

#[test]
fn disk_full_under_the_mta_gives_documented_errors_and_recovers() {
    let root = temp_dir();
    let disk = match Mount::tmpfs(&root.path().join("disk"), "16m") {
        Ok(m) => m,
        Err(why) => return skip("disk_full_under_the_mta", &why),
    };
    let env = env_in(&disk.path, root.path(), None);
    let (mta, ca) = (env.mta.url(), env.ca.url());
    let mta_pid = env.mta.server.as_ref().and_then(|s| s.pid()).unwrap();
    let first = serial_of(&try_enroll(&mta, &ca, ALICE));
    // A code issued before the disk fills up.
    let c = flow::csr(ALICE, KeyType::P256);
    let code = flow::totp(&mta, ALICE, PASSWORD, &c.key_id);

    let filler = fill_disk(&disk.path);
    // Issuing a code needs a write: 500 internal, as a problem document.
    let other = flow::csr(ALICE, KeyType::P256);
    let resp = flow::http()
        .post(format!("{mta}/v1/totp"))
        .basic_auth(ALICE, Some(PASSWORD))
        .json(&json!({ "key_id": other.key_id }))
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = resp.text().unwrap();
    assert_problem(
        &Answer {
            status,
            content_type: ctype,
            problem: serde_json::from_str(&text).ok(),
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            took: Duration::ZERO,
        },
        500,
        "internal",
        "POST /v1/totp on a full disk",
    );
    // The MTA cannot record the code's use: the CA answers 503.
    let a = post_enroll(&ca, &c.pem, &code.totp);
    assert_problem(&a, 503, "mta-unavailable", "enrollment, MTA disk full");
    assert_eq!(account_state(&ca, ALICE), (Some(first), 1));
    // Lookups (reads) still work.
    let look = flow::http()
        .get(format!("{mta}/v1/identity/{ALICE}"))
        .send()
        .unwrap();
    assert_eq!(look.status(), 404);
    assert!(healthy(&mta));

    // Space comes back: the code was not used up by the failed validation.
    std::fs::remove_file(&filler).unwrap();
    let a = post_enroll(&ca, &c.pem, &code.totp);
    let second = serial_of(&a);
    assert_eq!(account_state(&ca, ALICE), (Some(second), 2));
    // Used now, so it is refused the second time.
    let again = post_enroll(&ca, &c.pem, &code.totp);
    assert_problem(&again, 403, "totp-rejected", "replay after recovery");
    assert_eq!(
        env.mta.server.as_ref().and_then(|s| s.pid()),
        Some(mta_pid),
        "the MTA was restarted"
    );
    assert_no_panic(&env.mta.server.as_ref().unwrap().log_text(), "the MTA");
    drop(env);
    drop(disk);
}

// ---------------------------------------------------------------------------
// Read-only database.

#[test]
fn a_read_only_database_at_start_is_refused_in_one_line() {
    let root = temp_dir();
    let disk = match Mount::tmpfs(&root.path().join("disk"), "16m") {
        Ok(m) => m,
        Err(why) => return skip("a_read_only_database_at_start", &why),
    };
    let mut env = env_in(&disk.path, &disk.path, None);
    let (mta, ca) = (env.mta.url(), env.ca.url());
    let first = serial_of(&try_enroll(&mta, &ca, ALICE));
    env.ca.server.as_mut().unwrap().stop();
    env.mta.server.as_mut().unwrap().stop();
    let ca_files = snapshot(&env.ca.dir);
    let mta_files = snapshot(&env.mta.dir);

    disk.remount("ro").expect("remount read-only");
    let out = serve_must_fail(&bin(CA_BIN), &env.ca.dir, &[]);
    let line = assert_one_line_failure(&out, "mailid-ca: ", &["read-only"]);
    eprintln!("CA: {line}");
    let out = serve_must_fail(&bin(MTA_BIN), &env.mta.dir, &[]);
    let line = assert_one_line_failure(&out, "mailid-mta-auth: ", &["read-only"]);
    eprintln!("MTA: {line}");

    disk.remount("rw").expect("remount read-write");
    assert_eq!(snapshot(&env.ca.dir), ca_files, "the CA's files changed");
    assert_eq!(snapshot(&env.mta.dir), mta_files, "the MTA's files changed");
    env.mta.server.as_mut().unwrap().restart();
    env.ca.server.as_mut().unwrap().restart();
    let mta = env.mta.url();
    let second = serial_of(&try_enroll(&mta, &ca, ALICE));
    assert_eq!(account_state(&ca, ALICE), (Some(second), 2));
    let old: Value = flow::http()
        .get(format!("{ca}/v1/certificates/{first}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(old["status"], "revoked");
    drop(env);
    drop(disk);
}

#[test]
fn a_database_turning_read_only_while_serving_changes_nothing() {
    let root = temp_dir();
    let image = root.path().join("ca.img");
    let disk = match Mount::ext4_loop(&image, &root.path().join("disk"), 32) {
        Ok(m) => m,
        Err(why) => return skip("a_database_turning_read_only_while_serving", &why),
    };
    let trigger = match disk.device() {
        Some(d) => PathBuf::from(format!("/sys/fs/ext4/{d}/trigger_fs_error")),
        None => return skip("a_database_turning_read_only_while_serving", "no device"),
    };
    if !trigger.exists() {
        return skip(
            "a_database_turning_read_only_while_serving",
            &format!("{} is missing", trigger.display()),
        );
    }
    let mut env = env_in(root.path(), &disk.path, None);
    let (mta, ca) = (env.mta.url(), env.ca.url());
    let pid = ca_pid(&env);
    let first = serial_of(&try_enroll(&mta, &ca, ALICE));

    // The fault strikes a while after set-up (the files written by `init`
    // have reached the disk). The kernel's answer to a file-system error:
    // read-only from now on. The CA's log is on the same file system.
    let _ = Command::new("sync").status();
    std::fs::write(&trigger, "mailid fault test\n").expect("trigger an ext4 error");
    for i in 0..3 {
        let c = flow::csr(ALICE, KeyType::P256);
        let code = flow::totp(&mta, ALICE, PASSWORD, &c.key_id);
        let a = post_enroll_or(&ca, &c.pem, &code.totp).unwrap_or_else(|e| {
            let server = env.ca.server.as_ref().unwrap();
            panic!(
                "no answer ({e:?}); CA process: {:?}; log:\n{}",
                std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .map(|s| s.lines().take(3).collect::<Vec<_>>().join(" "))
                    .unwrap_or_else(|_| "gone".into()),
                server.log_text()
            )
        });
        assert_problem(
            &a,
            500,
            "internal",
            &format!("enrollment {i}, read-only db"),
        );
        assert!(a.took < Duration::from_secs(15), "took {:?}", a.took);
    }
    assert!(healthy(&ca), "the CA went down");
    assert_eq!(ca_pid(&env), pid);
    assert_no_panic(&env.ca.server.as_ref().unwrap().log_text(), "the CA");

    // The operator repairs the file system and restarts the CA.
    env.ca.server.as_mut().unwrap().stop();
    assert!(disk.unmount(), "umount");
    let fsck = Command::new("e2fsck")
        .args(["-f", "-y"])
        .arg(&image)
        .output()
        .expect("e2fsck");
    assert!(
        fsck.status.code().unwrap_or(8) < 4,
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let out = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(&disk.path)
        .output()
        .expect("mount");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.ca.server.as_mut().unwrap().restart();
    assert_eq!(account_state(&ca, ALICE), (Some(first), 1));
    let second = serial_of(&try_enroll(&mta, &ca, ALICE));
    assert_eq!(account_state(&ca, ALICE), (Some(second), 2));
    drop(env);
    drop(disk);
}

// ---------------------------------------------------------------------------
// Start-up faults: key, passphrase, corrupt database.

#[test]
fn key_and_passphrase_faults_stop_the_start_in_one_line_and_change_nothing() {
    let root = temp_dir();
    // An encrypted CA and a plain one (whose key is of another CA).
    let pass = "open sesame";
    let enc = root.path().join("enc");
    let d = enc.display().to_string();
    let out = mailid_tests::run_env(
        &bin(CA_BIN),
        &["--data-dir", &d, "init", "--name", "Locked CA"],
        None,
        &[("MAILID_CA_PASSPHRASE", pass)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other = CaFixture::init(root.path(), "other", &[]);
    let plain = CaFixture::init(root.path(), "plain", &[]);

    let before_enc = snapshot(&enc);
    let before_plain = snapshot(&plain.dir);
    let ca = bin(CA_BIN);

    // Passphrase missing, wrong.
    let out = serve_must_fail(&ca, &enc, &[]);
    assert_one_line_failure(&out, "mailid-ca: ", &["encrypted", "passphrase"]);
    let out = serve_must_fail(&ca, &enc, &[("MAILID_CA_PASSPHRASE", "wrong")]);
    assert_one_line_failure(&out, "mailid-ca: ", &["wrong passphrase"]);
    assert_eq!(snapshot(&enc), before_enc);

    // Key missing.
    let key = plain.dir.join("ca-key.pem");
    let saved = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let out = serve_must_fail(&ca, &plain.dir, &[]);
    assert_one_line_failure(&out, "mailid-ca: ", &["ca-key.pem"]);
    // Key unreadable as a key.
    std::fs::write(&key, "not a key\n").unwrap();
    let out = serve_must_fail(&ca, &plain.dir, &[]);
    assert_one_line_failure(&out, "mailid-ca: ", &["key"]);
    // Another CA's key.
    std::fs::copy(other.dir.join("ca-key.pem"), &key).unwrap();
    let out = serve_must_fail(&ca, &plain.dir, &[]);
    assert_one_line_failure(&out, "mailid-ca: ", &["key"]);
    // Restored: nothing else changed, and it starts.
    std::fs::write(&key, &saved).unwrap();
    assert_eq!(snapshot(&plain.dir), before_plain);
    let s = mailid_tests::Server::start(&ca, &plain.dir, &["--listen", "127.0.0.1:0"]);
    assert!(healthy(&s.url));
}

#[test]
fn a_corrupt_database_stops_either_service_in_one_line() {
    let root = temp_dir();
    let mta = MtaFixture::init(root.path(), "mta");
    let ca = CaFixture::init(root.path(), "ca", &[]);
    for (bin_name, program, dir, db) in [
        (CA_BIN, "mailid-ca: ", &ca.dir, "ca.sqlite"),
        (MTA_BIN, "mailid-mta-auth: ", &mta.dir, "mta-auth.sqlite"),
    ] {
        let path = dir.join(db);
        assert!(path.exists(), "{}", path.display());
        let good = std::fs::read(&path).unwrap();
        let junk: Vec<u8> = (0..good.len().max(8192))
            .map(|i| (i * 7 + 13) as u8)
            .collect();
        // No WAL to fall back on (init may leave the pages there).
        let mut side = Vec::new();
        for suffix in ["-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", path.display()));
            side.push((p.clone(), std::fs::read(&p).ok()));
            let _ = std::fs::remove_file(&p);
        }
        std::fs::write(&path, &junk).unwrap();
        let before = snapshot(dir);
        let out = serve_must_fail(&bin(bin_name), dir, &[]);
        assert_one_line_failure(&out, program, &[db]);
        assert_eq!(snapshot(dir), before, "{program} changed its data dir");
        std::fs::write(&path, &good).unwrap();
        for (p, data) in side {
            if let Some(d) = data {
                std::fs::write(p, d).unwrap();
            }
        }
        let s = mailid_tests::Server::start(&bin(bin_name), dir, &["--listen", "127.0.0.1:0"]);
        assert!(healthy(&s.url), "{program} after the database came back");
    }
}

// ---------------------------------------------------------------------------
// The log itself failing.

/// A service started with its stderr on `/dev/full` (every write fails
/// with ENOSPC); killed when dropped.
struct FullLogService {
    child: std::process::Child,
    url: String,
}

impl FullLogService {
    fn start(bin_path: &Path, dir: &Path, listen: &str) -> FullLogService {
        use std::io::BufRead;
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("open /dev/full");
        let mut child = Command::new(bin_path)
            .args([
                "--data-dir",
                &dir.display().to_string(),
                "serve",
                "--listen",
                listen,
            ])
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(full))
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(u) = l.strip_prefix("listening on ") {
                        break u.trim().to_string();
                    }
                }
                _ => {
                    let _ = child.kill();
                    panic!("{} did not start", bin_path.display());
                }
            }
        };
        // Keep draining stdout so the service never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        FullLogService { child, url }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for FullLogService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Regression: a log write that fails (here every one: stderr is
/// `/dev/full`; in production a full or read-only log disk) used to panic
/// the thread that logged (the tracing subscriber reports its own write
/// errors with `eprintln!`, which panics when stderr fails): enrollments got
/// their connection closed without an answer. Both services must go on
/// serving, and failed requests must still get their problem documents.
#[test]
fn services_keep_serving_when_their_log_cannot_be_written() {
    if !Path::new("/dev/full").exists() {
        return skip(
            "services_keep_serving_when_their_log_cannot_be_written",
            "no /dev/full",
        );
    }
    let root = temp_dir();
    let mta_fx = MtaFixture::init(root.path(), "mta");
    mta_fx.add_account(ALICE, PASSWORD);
    let mut mta = FullLogService::start(&bin(MTA_BIN), &mta_fx.dir, "127.0.0.1:0");
    let ca_fx = CaFixture::init(root.path(), "ca", &[]);
    let cred = mta_fx.add_ca("test-ca", Some(&ca_fx.ca_pem()));
    ca_fx.add_mta("example.com", &mta.url, "test-ca", &cred);
    let listen = format!("127.0.0.1:{}", ca_fx.port);
    let mut ca = FullLogService::start(&bin(CA_BIN), &ca_fx.dir, &listen);

    for i in 0..3 {
        let a = try_enroll(&mta.url, &ca.url, ALICE);
        serial_of(&a);
        // A refused code (logged at both services) is still a 403.
        let c = flow::csr(ALICE, KeyType::P256);
        let b = post_enroll(&ca.url, &c.pem, "12345678");
        assert_problem(&b, 403, "totp-rejected", &format!("wrong code {i}"));
        // An unknown domain and an internal lookup miss are answered too.
        let c = flow::csr("bob@elsewhere.example", KeyType::P256);
        let d = post_enroll(&ca.url, &c.pem, "12345678");
        assert_problem(&d, 400, "unknown-domain", "unknown domain");
    }
    assert_eq!(account_state(&ca.url, ALICE).1, 3);
    assert!(mta.alive() && ca.alive(), "a service died");
    assert!(healthy(&mta.url) && healthy(&ca.url));
}
