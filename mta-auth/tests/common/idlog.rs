//! The identity log's test helpers (SPEC §11): a small RFC 9162 verifier
//! written from the RFC, independent of the production code, and the
//! HTTP steps the log tests share.

use data_encoding::{BASE64, HEXLOWER};
use sha2::{Digest, Sha256};

use super::pki::{Leaf, TestCa};
use super::*;

pub const PW: &str = "idlog-test-pw";
pub const ME: &str = "alice@example.org";

// ---- A test-only RFC 9162 §2.1.3.2 / §2.1.4.2 verifier ----

pub type H = [u8; 32];

pub fn node(l: &H, r: &H) -> H {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

pub fn leaf(entry: &[u8]) -> H {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// RFC 9162 §2.1.3.2.
pub fn verify_inclusion(index: u64, size: u64, leaf: H, proof: &[H], root: H) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s, mut r) = (index, size - 1, leaf);
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == root
}

/// RFC 9162 §2.1.4.2.
pub fn verify_consistency(first: u64, second: u64, h1: H, h2: H, proof: &[H]) -> bool {
    if first == second {
        return proof.is_empty() && h1 == h2;
    }
    if first == 0 || first > second {
        return false;
    }
    let mut path = proof.to_vec();
    if first.is_power_of_two() {
        path.insert(0, h1);
    }
    let Some(start) = path.first().copied() else {
        return false;
    };
    let (mut f, mut s) = (first - 1, second - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (start, start);
    for c in &path[1..] {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node(c, &fr);
            sr = node(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == h1 && sr == h2 && s == 0
}

pub fn hx(s: &str) -> H {
    HEXLOWER.decode(s.as_bytes()).unwrap().try_into().unwrap()
}

pub fn b64(s: &str) -> H {
    BASE64.decode(s.as_bytes()).unwrap().try_into().unwrap()
}

// ---- Helpers ----

/// An initialised data dir with account ME (and `others`) and a CA
/// trusted as "testca".
pub fn setup(dir: tempfile::TempDir, ca: &TestCa, others: &[String]) -> tempfile::TempDir {
    // Many first logins from one address at once: no throttling here.
    let path = dir.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["login_limits"] = serde_json::json!({
        "ip_failures_per_minute": 100000,
        "ip_failure_burst": 100000,
        "account_failures_per_minute": 100000,
        "account_failure_burst": 100000,
    });
    std::fs::write(&path, cfg.to_string()).unwrap();
    add_account(dir.path(), ME, PW);
    for o in others {
        add_account(dir.path(), o, PW);
    }
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    mta_ok(
        dir.path(),
        &[
            "ca",
            "add",
            "testca",
            "--trust-cert",
            ca_file.to_str().unwrap(),
        ],
        None,
    );
    dir
}

pub async fn upload(c: &reqwest::Client, url: &str, who: &str, leaf: &Leaf) {
    let r = c
        .put(format!("{url}/v1/identity"))
        .basic_auth(who, Some(PW))
        .json(&serde_json::json!({ "certificate": leaf.cert_pem }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

pub async fn lookup(c: &reqwest::Client, url: &str, who: &str) -> serde_json::Value {
    let r = c
        .get(format!("{url}/v1/identity/{who}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// (size, root) of a checkpoint note, read by hand.
pub fn parse_checkpoint(note: &str) -> (u64, H) {
    let lines: Vec<&str> = note.lines().collect();
    (lines[1].parse().unwrap(), b64(lines[2]))
}

pub fn hashes(v: &serde_json::Value) -> Vec<H> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| b64(h.as_str().unwrap()))
        .collect()
}

/// The latest checkpoint; a service that has not signed its first one yet
/// answers 503 with Retry-After (SPEC §3), so that is waited out (10 s).
pub async fn checkpoint(c: &reqwest::Client, url: &str) -> String {
    let mut r = c
        .get(format!("{url}/v1/log/checkpoint"))
        .send()
        .await
        .unwrap();
    for _ in 0..40 {
        if r.status() != 503 {
            break;
        }
        assert!(r.headers().contains_key("retry-after"));
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        r = c
            .get(format!("{url}/v1/log/checkpoint"))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    r.text().await.unwrap()
}
