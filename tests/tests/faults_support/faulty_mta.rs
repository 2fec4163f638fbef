//! A misbehaving MTA: sits on the port the CA routes the domain to and, by
//! mode, forwards to the real MTA or misbehaves.
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

// ---------------------------------------------------------------------------
// A misbehaving MTA.

/// What the fake MTA does with the next connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
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
    pub fn from_u8(v: u8) -> Mode {
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

pub struct FaultyMta {
    pub port: u16,
    pub mode: Arc<AtomicU8>,
    pub applied: Arc<AtomicU8>,
    pub stop: Arc<AtomicBool>,
    /// Connections accepted by the redirect target.
    pub redirect_hits: Arc<AtomicUsize>,
    /// Bytes sent by the endless body so far.
    pub endless_sent: Arc<AtomicUsize>,
    pub threads: Vec<JoinHandle<()>>,
}

impl FaultyMta {
    /// Listens on a free loopback port and relays to `upstream` (a base URL).
    pub fn start(upstream: &str) -> FaultyMta {
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

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Switches the behaviour and waits until it is in force.
    pub fn set(&self, m: Mode) {
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
pub fn read_request(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
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

pub fn respond(s: &mut TcpStream, status: &str, ctype: &str, body: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.flush();
}

pub fn handle(mut s: TcpStream, mode: Mode, upstream: &str, trap_port: u16, sent: &AtomicUsize) {
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
