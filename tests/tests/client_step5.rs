//! Step 5: with two CAs and one MTA, enrolling at CA2 while holding a valid
//! CA1 identity revokes it at CA1 first (with a TOTP bound to its key) —
//! but only once CA2's preflight said it would accept the CSR, so a CA2
//! that refuses (unknown domain, key policy, a wrong URL) leaves the CA1
//! identity valid and published. A failure after step 5 says the old
//! identity is gone and how to recover.

#[path = "client_support.rs"]
mod support;

use mailid_shared::Serial;
use mailid_tests::{CA_BIN, MTA_BIN};
use serde_json::Value;
use support::*;

#[test]
fn moving_to_another_ca_revokes_the_old_identity_there_first() {
    let env = Env::start(2);
    let (ca1, ca2) = (env.cas[0].url(), env.cas[1].url());

    let out1 = env.enroll(0, &[], &[]);
    let s1 = serial_after(&out1, "CA issued serial");
    assert!(
        out1.contains("step 5: no valid identity from another CA"),
        "{out1}"
    );

    // Re-enrolling at the same CA needs no step-5 revocation.
    let out2 = env.enroll(0, &[], &[]);
    let s2 = serial_after(&out2, "CA issued serial");
    assert!(
        out2.contains("step 5: no valid identity from another CA"),
        "{out2}"
    );
    assert!(
        out2.contains(&format!("step 8: CA revoked serial {s1}")),
        "{out2}"
    );

    // Moving to CA2: step 5 revokes s2 at CA1, then CA2 issues.
    let out3 = env.enroll(1, &["--json"], &[]);
    let v: Value = serde_json::from_str(&out3).unwrap_or_else(|e| panic!("{e}: {out3}"));
    assert_eq!(v["revoked_at_previous_ca"], s2.as_str(), "{v}");
    assert_eq!(v["ca"], ca2.as_str());
    assert_eq!(
        v["revoked"],
        serde_json::json!([]),
        "CA2 had nothing to supersede"
    );
    let steps: Vec<String> = serde_json::from_value(v["steps"].clone()).expect("steps");
    let step5 = steps
        .iter()
        .find(|s| s.starts_with("step 5:"))
        .expect("step 5 line");
    assert!(
        step5.contains(&format!("revoked serial {s2}")) && step5.contains(&ca1),
        "{step5}"
    );
    let s3: Serial = v["serial"].as_str().expect("serial").parse().expect("hex");

    // CA1's CRL lists s2 (and s1); its record says superseded.
    let crl = env.path("ca1-crl.pem");
    assert!(crl_lists(&ca1, &s2, &crl), "CA1's CRL does not list {s2}");
    assert!(crl_serials(&crl).contains(&s1));
    let info: Value = reqwest::blocking::get(format!("{ca1}/v1/certificates/{s2}"))
        .and_then(|r| r.json())
        .expect("GET certificate");
    assert_eq!(info["status"], "revoked", "{info}");
    assert_eq!(info["reason"], "superseded", "{info}");

    // CA2's identity is valid and published; the store knows all three.
    let info: Value = reqwest::blocking::get(format!("{ca2}/v1/certificates/{s3}"))
        .and_then(|r| r.json())
        .expect("GET certificate");
    assert_eq!(info["status"], "valid", "{info}");
    let mta = env.mta.url();
    let looked = ok(&env.mailid(&["--json", "lookup", ALICE, "--mta", &mta], None, &[]));
    let looked: Value = serde_json::from_str(&looked).expect("lookup --json");
    assert_eq!(looked["serial"], s3.as_str());
    let show = env.show();
    let ids = show["identities"].as_array().expect("identities");
    let status = |s: &Serial| {
        ids.iter()
            .find(|i| i["serial"] == s.as_str())
            .map(|i| (i["status"].clone(), i["ca_url"].clone()))
            .expect("stored")
    };
    assert_eq!(status(&s1), ("superseded".into(), ca1.clone().into()));
    assert_eq!(status(&s2), ("superseded".into(), ca1.clone().into()));
    assert_eq!(status(&s3), ("current".into(), ca2.clone().into()));

    // And back to CA1: step 5 now revokes s3 at CA2.
    let out4 = env.enroll(0, &[], &[]);
    assert!(
        out4.contains(&format!("step 5: revoked serial {s3}")),
        "{out4}"
    );
    assert!(crl_lists(&ca2, &s3, &env.path("ca2-crl.pem")));
}

#[test]
fn an_unreachable_previous_ca_stops_the_move_and_changes_nothing() {
    let mut env = Env::start(2);
    let out1 = env.enroll(0, &[], &[]);
    let s1 = serial_after(&out1, "CA issued serial");
    let ca1 = env.cas[0].url();
    if let Some(s) = env.cas[0].server.as_mut() {
        s.stop();
    }
    let mta = env.mta.url();
    let ca2 = env.cas[1].url();
    let out = env.try_enroll((ALICE, &mta, &ca2), PASSWORD, &[], &[]);
    let line = one_line_failure(&out);
    assert_eq!(
        line,
        format!("mailid: cannot reach the CA at {ca1}: connection refused")
    );
    // Nothing was issued at CA2 and the store still has s1 as current.
    let show = env.show();
    assert_eq!(show["current"]["serial"], s1.as_str(), "{show}");
    assert_eq!(show["identities"].as_array().map(Vec::len), Some(1));
    let acct: Value = reqwest::blocking::get(format!("{ca2}/v1/accounts/{ALICE}"))
        .and_then(|r| r.json())
        .expect("GET account");
    assert!(acct["current"].is_null(), "{acct}");
}

/// `mailid-ca --data-dir DIR ARGS…` or `mailid-mta-auth …`, which must succeed.
fn operator(binary: &str, dir: &std::path::Path, args: &[&str]) {
    let d = dir.display().to_string();
    let mut all = vec!["--data-dir", d.as_str()];
    all.extend_from_slice(args);
    mailid_tests::run_ok(&mailid_tests::bin(binary), &all, None);
}

/// The CA's record of `serial`: its `status`.
fn status_at(ca_url: &str, serial: &Serial) -> Value {
    let info: Value = reqwest::blocking::get(format!("{ca_url}/v1/certificates/{serial}"))
        .and_then(|r| r.json())
        .expect("GET certificate");
    info["status"].clone()
}

/// The serial the MTA publishes for alice.
fn published(env: &Env) -> Value {
    let mta = env.mta.url();
    let looked = ok(&env.mailid(&["--json", "lookup", ALICE, "--mta", &mta], None, &[]));
    let looked: Value = serde_json::from_str(&looked).expect("lookup --json");
    looked["serial"].clone()
}

/// Asserts that alice's CA1 identity `s1` is as it was: valid at CA1,
/// published at the MTA and current in the store.
fn untouched(env: &Env, s1: &Serial) {
    assert_eq!(
        status_at(&env.cas[0].url(), s1),
        "valid",
        "CA1 revoked {s1}"
    );
    assert_eq!(published(env), s1.as_str());
    let show = env.show();
    assert_eq!(show["current"]["serial"], s1.as_str(), "{show}");
}

#[test]
fn a_new_ca_that_refuses_leaves_the_old_identity_valid_and_published() {
    let env = Env::start(2);
    let out1 = env.enroll(0, &[], &[]);
    let s1 = serial_after(&out1, "CA issued serial");
    let mta = env.mta.url();

    // CA2 no longer serves example.com: its preflight refuses before step 5.
    operator(CA_BIN, &env.cas[1].dir, &["mta", "remove", "example.com"]);
    let ca2 = env.cas[1].url();
    let out = env.try_enroll((ALICE, &mta, &ca2), PASSWORD, &[], &[]);
    let line = one_line_failure(&out);
    assert_eq!(
        line,
        format!("mailid: CA refused the enrollment of {ALICE}: this CA serves no MTA for domain example.com (400 unknown-domain)")
    );
    untouched(&env, &s1);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("step 5:"));

    // A wrong --ca: the MTA's URL (a service, but not a CA), or nothing at all.
    let closed = format!("http://127.0.0.1:{}", mailid_tests::free_port());
    for (wrong, want) in [
        (
            mta.as_str(),
            format!("mailid: {mta} is not a mailid CA: POST /v1/certificates/check answered 404 (check --ca)"),
        ),
        (
            closed.as_str(),
            format!("mailid: cannot reach the CA at {closed}: connection refused"),
        ),
    ] {
        let line = one_line_failure(&env.try_enroll((ALICE, &mta, wrong), PASSWORD, &[], &[]));
        assert_eq!(line, want);
        untouched(&env, &s1);
    }

    // A CA whose key policy refuses the key (a stand-in: the real CA takes
    // every key type mailid makes) is refused before step 5 as well.
    let strict = StrictCa::start(&env.cas[1].ca_pem());
    let line = one_line_failure(&env.try_enroll(
        (ALICE, &mta, &strict.url),
        PASSWORD,
        &["--key-type", "rsa3072"],
        &[],
    ));
    assert_eq!(
        line,
        format!("mailid: CA refused the enrollment of {ALICE}: RSA keys are not accepted here (400 unsupported-key)")
    );
    assert_eq!(strict.posts(), vec!["/v1/certificates/check".to_string()]);
    untouched(&env, &s1);
    assert_eq!(env.show()["identities"].as_array().map(Vec::len), Some(1));
}

#[test]
fn a_failure_after_step_5_says_the_old_identity_is_revoked_and_how_to_recover() {
    let env = Env::start(2);
    let out1 = env.enroll(0, &[], &[]);
    let s1 = serial_after(&out1, "CA issued serial");
    let (mta, ca1, ca2) = (env.mta.url(), env.cas[0].url(), env.cas[1].url());

    // The MTA no longer knows CA2: only the code check, after step 5, finds out.
    operator(MTA_BIN, &env.mta.dir, &["ca", "remove", "ca2"]);
    let out = env.try_enroll((ALICE, &mta, &ca2), PASSWORD, &[], &[]);
    let line = one_line_failure(&out);
    assert_eq!(
        line,
        format!(
            "mailid: CA refused the enrollment of {ALICE}: the account's MTA auth service is unavailable (503 mta-unavailable); \
             serial {s1} was already revoked at the previous CA {ca1} (step 5), so {ALICE} has no valid identity now: \
             enroll again (mailid enroll --email {ALICE} --mta {mta} --ca {ca2})"
        )
    );
    assert_eq!(status_at(&ca1, &s1), "revoked");

    // Enrolling again (here back at CA1) recovers.
    let out = env.enroll(0, &[], &[]);
    let s2 = serial_after(&out, "CA issued serial");
    assert_eq!(status_at(&ca1, &s2), "valid");
    assert_eq!(published(&env), s2.as_str());
}

/// A stand-in CA with a stricter key policy: it serves its CA certificate
/// and answers every POST with the problem a CA refusing RSA keys gives,
/// recording the paths posted to.
struct StrictCa {
    url: String,
    posts: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl StrictCa {
    fn start(ca_pem: &std::path::Path) -> StrictCa {
        use std::io::{BufRead, BufReader, Read, Write};
        let pem = std::fs::read_to_string(ca_pem).expect("CA certificate");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let posts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = posts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut head = String::new();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if head.is_empty() {
                        head = line;
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let mut parts = head.split_whitespace();
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let (status, ctype, text) = if method == "POST" {
                    seen.lock().expect("lock").push(path.to_string());
                    (
                        "400 Bad Request",
                        "application/problem+json",
                        serde_json::json!({
                            "type": "urn:mailid:error:unsupported-key",
                            "title": "Unsupported key",
                            "status": 400,
                            "detail": "RSA keys are not accepted here",
                        })
                        .to_string(),
                    )
                } else if path == "/v1/ca.pem" {
                    ("200 OK", "application/x-pem-file", pem.clone())
                } else {
                    ("404 Not Found", "text/plain", String::new())
                };
                let mut s = stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        StrictCa { url, posts }
    }

    fn posts(&self) -> Vec<String> {
        self.posts.lock().expect("lock").clone()
    }
}
