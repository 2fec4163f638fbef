//! Replicas on one PostgreSQL database (SPEC §8): two CA processes and two
//! MTA auth processes, each a copy of one data dir, share every invariant
//! of §7 and the CRL. One test function, so nothing else in this binary
//! competes with the timing the SPEC gives (2 s, 15 s).

#[path = "ca_support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use mailid_shared::authsig::Credential;
use mailid_shared::pg::testing::fresh_database;
use mailid_shared::timefmt::now_unix;
use mailid_tests::flow::{self, KeyType};
use mailid_tests::{bin, run_ok, Server, CA_BIN, MTA_BIN};
use serde_json::{json, Value};
use support::{crl_lists, crl_number, crl_text};

const DOMAIN: &str = "example.org";
const PASSWORD: &str = "correct horse battery staple";
const CA_NAME: &str = "replica-ca";

fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .args(["-a", &from.display().to_string(), &to.display().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

fn cli(bin_name: &str, dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let d = dir.display().to_string();
    let mut all = vec!["--data-dir", d.as_str()];
    all.extend_from_slice(args);
    run_ok(&bin(bin_name), &all, stdin)
}

/// `serve` on a port the kernel picks (two ports picked ahead could be
/// the same one); the URL comes from the `listening on` line.
fn serve(bin_name: &str, dir: &Path) -> Server {
    Server::start(&bin(bin_name), dir, &["--listen", "127.0.0.1:0"])
}

/// A code for (account, key) from one MTA.
fn totp(mta: &str, account: &str, key: &mailid_shared::KeyId) -> String {
    flow::totp(mta, account, PASSWORD, key).totp
}

/// A signed `POST /v1/validate`, as the CA would send it.
fn validate(mta: &str, cred: &str, account: &str, code: &str, key: &str) -> Value {
    let body = json!({"account": account, "totp": code, "key_id": key}).to_string();
    let ts = now_unix();
    let sig = Credential::parse(cred)
        .unwrap()
        .sign("POST", "/v1/validate", ts, body.as_bytes());
    let resp = flow::http()
        .post(format!("{mta}/v1/validate"))
        .header("content-type", "application/json")
        .header("x-mailid-ca", CA_NAME)
        .header("x-mailid-timestamp", ts.to_string())
        .header("x-mailid-signature", sig)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().unwrap()
}

/// The CRL a CA serves, as `openssl crl -text`.
fn served_crl(dir: &Path, ca: &str) -> String {
    let pem = flow::http()
        .get(format!("{ca}/v1/crl.pem"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    crl_text(dir, &pem)
}

/// Polls a CA's CRL until it lists `serial`; how long that took.
fn wait_listed(dir: &Path, ca: &str, serial: &str, limit: Duration) -> (Duration, String) {
    let start = Instant::now();
    loop {
        let text = served_crl(dir, ca);
        if crl_lists(&text, serial) {
            return (start.elapsed(), text);
        }
        assert!(
            start.elapsed() < limit,
            "{serial} not in the CRL of {ca} after {limit:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn revoke(ca: &str, mta: &str, account: &str, csr: &flow::Csr, serial: &str) -> (u16, Value) {
    let code = totp(mta, account, &csr.key_id);
    let resp = flow::http()
        .post(format!("{ca}/v1/revocations"))
        .json(&json!({"serial": serial, "totp": code}))
        .send()
        .unwrap();
    (resp.status().as_u16(), resp.json().unwrap())
}

fn valid_serials(ca_dir: &Path, account: &str) -> Vec<String> {
    let out = cli(
        CA_BIN,
        ca_dir,
        &["list", "--account", account, "--status", "valid", "--json"],
        None,
    );
    serde_json::from_str::<Vec<Value>>(&out)
        .unwrap()
        .iter()
        .map(|v| v["serial"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn two_cas_and_two_mtas_on_one_database_hold_every_invariant() {
    let root = mailid_tests::temp_dir();
    let db = fresh_database("replicas");
    let url = db.secret_text().to_string();
    let alice = format!("alice@{DOMAIN}");
    let bob = format!("bob@{DOMAIN}");

    // One MTA data dir on the database, copied for the second replica.
    let m1: PathBuf = root.path().join("mta1");
    std::fs::create_dir_all(&m1).unwrap();
    cli(MTA_BIN, &m1, &["--database", &url, "init"], None);
    for a in [&alice, &bob] {
        cli(
            MTA_BIN,
            &m1,
            &["account", "add", a, "--password-stdin"],
            Some(&format!("{PASSWORD}\n")),
        );
    }
    let cred = cli(MTA_BIN, &m1, &["ca", "add", CA_NAME], None)
        .trim()
        .to_string();
    let m2 = root.path().join("mta2");
    copy_dir(&m1, &m2);
    let mta1 = serve(MTA_BIN, &m1);
    let mta2 = serve(MTA_BIN, &m2);
    let mtas = [mta1.url.clone(), mta2.url.clone()];

    // One CA data dir on the same database, copied for the second replica;
    // both name the same base URL (the load balancer's).
    let c1 = root.path().join("ca1");
    std::fs::create_dir_all(&c1).unwrap();
    let base = "https://pki.example.org";
    cli(
        CA_BIN,
        &c1,
        &[
            "init",
            "--database",
            &url,
            "--name",
            CA_NAME,
            "--base-url",
            base,
        ],
        None,
    );
    let cred_file = root.path().join("credential");
    std::fs::write(&cred_file, format!("{cred}\n")).unwrap();
    cli(
        CA_BIN,
        &c1,
        &[
            "mta",
            "add",
            "--domain",
            DOMAIN,
            "--url",
            &mtas[0],
            "--ca-name",
            CA_NAME,
            "--credential-file",
            &cred_file.display().to_string(),
        ],
        None,
    );
    let c2 = root.path().join("ca2");
    copy_dir(&c1, &c2);
    let mut ca1 = serve(CA_BIN, &c1);
    let mut ca2 = serve(CA_BIN, &c2);
    let cas = [ca1.url.clone(), ca2.url.clone()];

    // 32 parallel enrollments for one account over both CAs (codes from
    // both MTAs, fetched first: the MTA answers a burst of password logins
    // beyond its Argon2 queue with 429): 32 × 201, one valid identity.
    let prepared: Vec<(String, String)> = (0..32)
        .map(|i| {
            let csr = flow::csr(&alice, KeyType::P256);
            let code = totp(&mtas[(i / 2) % 2], &alice, &csr.key_id);
            (csr.pem, code)
        })
        .collect();
    let gate = Arc::new(Barrier::new(32));
    let handles: Vec<_> = prepared
        .into_iter()
        .enumerate()
        .map(|(i, (pem, code))| {
            let (ca, gate) = (cas[i % 2].clone(), gate.clone());
            std::thread::spawn(move || {
                gate.wait();
                flow::enroll(&ca, &pem, &code)
            })
        })
        .collect();
    let mut issued = Vec::new();
    for h in handles {
        match h.join().unwrap() {
            Ok(e) => issued.push(e.serial.to_string()),
            Err((s, p)) => panic!("parallel enrollment answered {s}: {p:?}"),
        }
    }
    assert_eq!(issued.len(), 32);
    let valid = valid_serials(&c2, &alice);
    assert_eq!(valid.len(), 1, "valid identities: {valid:?}");
    println!("32 parallel enrollments over 2 CAs: 32 × 201, valid identities: 1");

    // One code sent to both CAs at the same moment: exactly one 201.
    let csr = flow::csr(&alice, KeyType::P256);
    let code1 = totp(&mtas[1], &alice, &csr.key_id);
    let gate = Arc::new(Barrier::new(2));
    let both: Vec<_> = cas
        .iter()
        .map(|ca| {
            let (ca, pem, code, gate) = (ca.clone(), csr.pem.clone(), code1.clone(), gate.clone());
            std::thread::spawn(move || {
                gate.wait();
                flow::enroll(&ca, &pem, &code)
            })
        })
        .collect();
    let results: Vec<_> = both.into_iter().map(|h| h.join().unwrap()).collect();
    let wins: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(wins.len(), 1, "one code at both CAs: {results:?}");
    let loser = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert_eq!(loser.0, 403, "{loser:?}");
    let current = (csr, wins[0].serial.to_string());
    issued.push(current.1.clone());
    println!("one code at both CAs at once: one 201, one {}", loser.0);

    // Failures count towards a lockout across both MTA replicas.
    let guessed = flow::csr(&alice, KeyType::P256);
    let live = totp(&mtas[0], &alice, &guessed.key_id);
    let key = guessed.key_id.to_string();
    let wrong = format!("{:08}", (live.parse::<u64>().unwrap() + 1) % 100_000_000);
    for i in 0..5 {
        let v = validate(&mtas[i % 2], &cred, &alice, &wrong, &key);
        assert_eq!(v["valid"], false, "guess {i}: {v}");
        assert_eq!(v["reason"], "invalid", "guess {i}: {v}");
    }
    for mta in &mtas {
        let v = validate(mta, &cred, &alice, &live, &key);
        assert_eq!(
            v["reason"], "locked",
            "after 5 failures over both MTAs: {v}"
        );
    }
    println!("5 failures alternating over 2 MTAs: locked at both");

    // `account disable` on one replica's data dir holds at the other at once.
    let bob_key = flow::csr(&bob, KeyType::P256).key_id;
    totp(&mtas[0], &bob, &bob_key);
    cli(MTA_BIN, &m2, &["account", "disable", &bob], None);
    let resp = flow::http()
        .post(format!("{}/v1/totp", mtas[0]))
        .basic_auth(&bob, Some(PASSWORD))
        .json(&json!({ "key_id": bob_key }))
        .send()
        .unwrap();
    assert_eq!(
        resp.status(),
        401,
        "disabled on mta2's data dir, asked mta1"
    );

    // A revocation through CA 1 is in CA 2's served CRL within 2 s.
    let dir = root.path();
    let (csr, serial) = current;
    let (s, v) = revoke(&cas[0], &mtas[0], &alice, &csr, &serial);
    assert_eq!(s, 200, "{v}");
    let (took, text) = wait_listed(dir, &cas[1], &serial, Duration::from_secs(2));
    let number = crl_number(&text);
    println!("revoked through CA 1: in CA 2's CRL after {took:?} (number {number})");

    // kill -9 of the signing CA; a revocation through the survivor is in
    // its CRL within 15 s with a higher number.
    let signer_is_1 = ca1.log_text().contains("took the CRL lease");
    let signer_is_2 = ca2.log_text().contains("took the CRL lease");
    assert!(
        signer_is_1 ^ signer_is_2,
        "exactly one CA took the lease:\n{}\n{}",
        ca1.log_text(),
        ca2.log_text()
    );
    let (survivor, survivor_mta) = if signer_is_1 {
        ca1.kill();
        (&cas[1], &mtas[1])
    } else {
        ca2.kill();
        (&cas[0], &mtas[0])
    };
    let (csr, r) = flow::enroll_new_key(survivor_mta, survivor, &alice, PASSWORD, KeyType::P256);
    let serial = r.serial.to_string();
    let (s, v) = revoke(survivor, survivor_mta, &alice, &csr, &serial);
    assert_eq!(s, 200, "{v}");
    issued.push(serial.clone());
    let (took, text) = wait_listed(dir, survivor, &serial, Duration::from_secs(15));
    let after = crl_number(&text);
    assert!(
        after > number,
        "CRL number {after} after the take-over, {number} before"
    );
    println!("signer killed: survivor's CRL lists the new revocation after {took:?}, number {number} -> {after}");

    // Every serial that got a 201 is in the database.
    let survivor_dir = if signer_is_1 { &c2 } else { &c1 };
    let listed = cli(CA_BIN, survivor_dir, &["list", "--json"], None);
    let listed: Vec<Value> = serde_json::from_str(&listed).unwrap();
    for serial in &issued {
        assert!(
            listed.iter().any(|v| v["serial"] == serial.as_str()),
            "{serial} got a 201 but is not stored"
        );
    }
    println!("{} serials that got a 201: all stored", issued.len());
}
