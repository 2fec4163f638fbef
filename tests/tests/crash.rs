//! Crash consistency (SPEC §7): enrollments at concurrency 8 while the CA is
//! killed with SIGKILL at random moments, 20 times. Afterwards every serial
//! a client got a 201 for is in the CA's database, each account has at most
//! one valid identity, the CRL served after the restart lists every revoked
//! unexpired certificate, and CRL numbers never go back. For the MTA: a
//! code validated once never validates again after a crash.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailid_tests::flow::{self, KeyType};
use mailid_tests::{temp_dir, CaFixture, MtaFixture};
use rand::Rng;
use serde_json::Value;

const PASSWORD: &str = "crash test password";
const ACCOUNTS: usize = 8;

fn address(i: usize) -> String {
    format!("crash{i}@example.com")
}

/// One enrollment attempt that tolerates the CA being down.
fn try_enroll(mta: &str, ca: &str, addr: &str) -> Option<String> {
    let c = flow::csr(addr, KeyType::P256);
    let client = flow::http();
    let code: Value = client
        .post(format!("{mta}/v1/totp"))
        .basic_auth(addr, Some(PASSWORD))
        .json(&serde_json::json!({ "key_id": c.key_id }))
        .send()
        .ok()?
        .json()
        .ok()?;
    let resp = client
        .post(format!("{ca}/v1/certificates"))
        .json(&serde_json::json!({ "csr": c.pem, "totp": code["totp"] }))
        .send()
        .ok()?;
    if resp.status().as_u16() != 201 {
        return None;
    }
    let v: Value = resp.json().ok()?;
    v["serial"].as_str().map(str::to_string)
}

fn crl_text(ca: &str) -> String {
    let der = flow::http()
        .get(format!("{ca}/v1/crl.der"))
        .send()
        .expect("GET crl")
        .bytes()
        .expect("crl body");
    let dir = temp_dir();
    let path = dir.path().join("crl.der");
    std::fs::write(&path, &der).unwrap();
    let out = Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(&path)
        .output()
        .expect("openssl crl");
    assert!(out.status.success(), "CRL does not parse");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn crl_number(text: &str) -> u64 {
    let line = text
        .lines()
        .skip_while(|l| !l.contains("X509v3 CRL Number"))
        .nth(1)
        .expect("CRL number");
    let t = line.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    t.parse::<u64>()
        .or_else(|_| u64::from_str_radix(t, 16))
        .expect("number")
}

fn crl_serials(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Serial Number: "))
        .map(|s| s.trim().to_ascii_lowercase())
        .map(|s| s.trim_start_matches('0').to_string())
        .collect()
}

#[test]
fn ca_survives_sigkill_during_enrollments() {
    let root = temp_dir();
    let mut mta = MtaFixture::init(root.path(), "mta");
    for i in 0..ACCOUNTS {
        mta.add_account(&address(i), PASSWORD);
    }
    mta.start(&[]);
    let mut ca = CaFixture::init(root.path(), "ca", &[]);
    let cred = mta.add_ca("crash-ca", Some(&ca.ca_pem()));
    ca.add_mta("example.com", &mta.url(), "crash-ca", &cred);
    ca.start(&[]);
    let (mta_url, ca_url) = (mta.url(), ca.url());

    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut crl_numbers = vec![crl_number(&crl_text(&ca_url))];
    let mut rng = rand::thread_rng();
    for _round in 0..20 {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..ACCOUNTS)
            .map(|i| {
                let (stop, acked) = (stop.clone(), acknowledged.clone());
                let (m, c) = (mta_url.clone(), ca_url.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(serial) = try_enroll(&m, &c, &address(i)) {
                            acked.lock().unwrap().push((address(i), serial));
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.gen_range(200..1200)));
        ca.server.as_mut().unwrap().kill();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        ca.start(&[]);
        crl_numbers.push(crl_number(&crl_text(&ca_url)));
    }

    let acked = acknowledged.lock().unwrap().clone();
    assert!(
        acked.len() >= 20,
        "only {} enrollments succeeded",
        acked.len()
    );
    // Every acknowledged serial is known to the CA.
    let client = flow::http();
    for (_, serial) in &acked {
        let r = client
            .get(format!("{ca_url}/v1/certificates/{serial}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "serial {serial} acknowledged but unknown");
    }
    // At most one valid identity per account; collect the revoked ones.
    let mut revoked = BTreeSet::new();
    for i in 0..ACCOUNTS {
        let v: Value = client
            .get(format!("{ca_url}/v1/accounts/{}", address(i)))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let mut by_status = BTreeMap::<String, usize>::new();
        for c in v["certificates"].as_array().unwrap() {
            let status = c["status"].as_str().unwrap().to_string();
            if status == "revoked" {
                revoked.insert(
                    c["serial"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches('0')
                        .to_string(),
                );
            }
            *by_status.entry(status).or_default() += 1;
        }
        assert!(
            by_status.get("valid").copied().unwrap_or(0) <= 1,
            "{by_status:?}"
        );
    }
    // The CRL served after the last restart lists every revoked certificate
    // (within the SPEC's 2 s of the revocation).
    let mut listed = BTreeSet::new();
    for _ in 0..50 {
        let text = crl_text(&ca_url);
        crl_numbers.push(crl_number(&text));
        listed = crl_serials(&text);
        if revoked.is_subset(&listed) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let missing: Vec<_> = revoked.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "revoked but not in the CRL: {missing:?}"
    );
    assert!(
        crl_numbers.windows(2).all(|w| w[0] <= w[1]),
        "CRL numbers went back: {crl_numbers:?}"
    );
}

#[test]
fn used_code_stays_used_after_mta_crash() {
    let root = temp_dir();
    let mut mta = MtaFixture::init(root.path(), "mta");
    mta.add_account("once@example.com", PASSWORD);
    mta.start(&[]);
    let mut ca = CaFixture::init(root.path(), "ca", &[]);
    let cred = mta.add_ca("crash-ca", Some(&ca.ca_pem()));
    ca.add_mta("example.com", &mta.url(), "crash-ca", &cred);
    ca.start(&[]);

    let c = flow::csr("once@example.com", KeyType::P256);
    let code = flow::totp(&mta.url(), "once@example.com", PASSWORD, &c.key_id);
    flow::enroll(&ca.url(), &c.pem, &code.totp).expect("first use succeeds");
    mta.server.as_mut().unwrap().kill();
    mta.server.as_mut().unwrap().restart();
    let again = flow::enroll(&ca.url(), &c.pem, &code.totp);
    let (status, problem) = again.expect_err("a used code must not validate again");
    assert_eq!(status, 403, "{problem:?}");
    assert_eq!(problem.type_uri, "urn:mailid:error:totp-rejected");
}
