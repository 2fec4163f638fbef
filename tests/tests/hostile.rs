//! Hostile clients against both real services: slowloris, idle connection
//! floods, random bodies, huge headers, deeply nested JSON, conflicting
//! framing. Normal clients must keep being served, and no client error may
//! become a 5xx.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mailid_tests::{temp_dir, CaFixture, MtaFixture};
use rand::{Rng, RngCore};

struct Services {
    _root: tempfile::TempDir,
    mta: MtaFixture,
    ca: CaFixture,
}

fn services() -> Services {
    let root = temp_dir();
    let mut mta = MtaFixture::init(root.path(), "mta");
    mta.add_account("alice@example.com", "correct horse battery");
    mta.start(&[]);
    let mut ca = CaFixture::init(root.path(), "ca", &[]);
    let cred = mta.add_ca("test-ca", Some(&ca.ca_pem()));
    ca.add_mta("example.com", &mta.url(), "test-ca", &cred);
    ca.start(&[]);
    Services {
        _root: root,
        mta,
        ca,
    }
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// Sends raw bytes and returns the status code of the answer (0 if the
/// server closed the connection without one).
fn raw(url: &str, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(host_port(url)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn healthy(url: &str) -> bool {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    client
        .get(format!("{url}/healthz"))
        .send()
        .map(|r| r.status().is_success())
        .unwrap_or(false)
}

const POSTS: &[(&str, &str)] = &[
    ("mta", "/v1/totp"),
    ("mta", "/v1/validate"),
    ("mta", "/v1/identity"),
    ("ca", "/v1/certificates"),
    ("ca", "/v1/revocations"),
];

#[test]
fn random_bodies_never_give_5xx() {
    let s = services();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut rng = rand::thread_rng();
    let mut counts = std::collections::BTreeMap::<u16, usize>::new();
    for i in 0..2000 {
        let (svc, path) = POSTS[i % POSTS.len()];
        let base = if svc == "mta" {
            s.mta.url()
        } else {
            s.ca.url()
        };
        let len = rng.gen_range(0..2048);
        let mut body = vec![0u8; len];
        match i % 4 {
            0 => rng.fill_bytes(&mut body),
            1 => {
                body = format!(
                    "{{\"csr\":{},\"totp\":\"{}\",\"key_id\":\"{}\"}}",
                    rng.gen::<u32>(),
                    rng.gen::<u64>(),
                    "A".repeat(len % 80)
                )
                .into_bytes()
            }
            2 => body = "[".repeat(len).into_bytes(),
            _ => {
                body = format!(
                    "{{\"serial\":\"{:x}\",\"totp\":\"12345678\",\"account\":\"a@example.com\"}}",
                    rng.gen::<u128>()
                )
                .into_bytes()
            }
        }
        let method = if path == "/v1/identity" {
            "PUT"
        } else {
            "POST"
        };
        let resp = client
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .header("content-type", "application/json")
            .basic_auth("alice@example.com", Some("wrong"))
            .body(body)
            .send()
            .expect("request");
        let status = resp.status().as_u16();
        *counts.entry(status).or_default() += 1;
        assert!(
            status < 500 || status == 503 && path == "/v1/identity",
            "{method} {path} gave {status}: {}",
            resp.text().unwrap_or_default()
        );
    }
    eprintln!("status counts: {counts:?}");
}

#[test]
fn framing_attacks_get_4xx_or_close() {
    let s = services();
    for (url, post) in [(s.mta.url(), "/v1/totp"), (s.ca.url(), "/v1/certificates")] {
        // Huge header.
        let big = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(200_000)
        );
        let (status, _) = raw(&url, big.as_bytes());
        assert!(
            status == 0 || (400..500).contains(&status),
            "huge header gave {status}"
        );
        // Conflicting Content-Length and Transfer-Encoding.
        let smuggle = format!("POST {post} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        let (status, _) = raw(&url, smuggle.as_bytes());
        assert!(
            status == 0 || (400..500).contains(&status),
            "CL+TE gave {status}"
        );
        // Deeply nested JSON.
        let nested = format!("{}{}", "[".repeat(100_000 / 2), "]".repeat(100_000 / 2));
        let req = format!(
            "POST {post} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            nested.len(),
            nested
        );
        let (status, text) = raw(&url, req.as_bytes());
        assert!(
            (400..500).contains(&status),
            "nested JSON gave {status}: {text}"
        );
        // Oversized body is a problem document.
        let body = "x".repeat(1 << 20);
        let req = format!(
            "POST {post} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            body.len(),
            body
        );
        let (status, text) = raw(&url, req.as_bytes());
        assert!(status == 413 || status == 401, "1 MiB body gave {status}");
        if status == 413 {
            assert!(text.contains("application/problem+json"), "{text}");
        }
        assert!(healthy(&url));
    }
}

#[test]
fn slowloris_and_idle_floods_do_not_starve_normal_clients() {
    let s = services();
    for url in [s.mta.url(), s.ca.url()] {
        let addr = host_port(&url);
        // 1000 idle connections and 200 trickling headers.
        let mut idle = Vec::new();
        for _ in 0..1000 {
            if let Ok(c) = TcpStream::connect(&addr) {
                idle.push(c);
            }
        }
        let mut slow = Vec::new();
        for _ in 0..200 {
            if let Ok(mut c) = TcpStream::connect(&addr) {
                let _ = c.write_all(b"POST /v1/totp HTTP/1.1\r\nHost: x\r\n");
                slow.push(c);
            }
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            for c in slow.iter_mut() {
                let _ = c.write_all(b"X-A: b\r\n");
            }
            assert!(healthy(&url), "normal client starved during the attack");
            std::thread::sleep(Duration::from_millis(500));
        }
        // The header timeout closes trickling connections eventually.
        std::thread::sleep(Duration::from_secs(11));
        let mut closed = 0;
        for c in slow.iter_mut() {
            c.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut b = [0u8; 512];
            match c.read(&mut b) {
                Ok(_) => closed += 1,
                Err(e)
                    if e.kind() != std::io::ErrorKind::WouldBlock
                        && e.kind() != std::io::ErrorKind::TimedOut =>
                {
                    closed += 1
                }
                Err(_) => {}
            }
        }
        assert!(
            closed >= 190,
            "only {closed} of 200 slow connections were closed"
        );
        assert!(healthy(&url));
        drop(idle);
    }
}
