//! Two CA replicas on one PostgreSQL database (SPEC §8, CRLs with
//! replicas): exactly one takes the CRL lease; a revocation made through
//! either reaches the CRL both serve; after kill -9 of the lease holder the
//! survivor takes the lease over and its CRL lists a new revocation under a
//! higher number. (The full 2 CA + 2 MTA acceptance test is replicas.rs.)

#[path = "ca_support.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use mailid_tests::flow::{self, KeyType};
use mailid_tests::{bin, pg, run_ok, CaFixture, MtaFixture, Server, CA_BIN};
use support::{crl_lists, crl_number, crl_text};

const DOMAIN: &str = "example.org";
const PASSWORD: &str = "correct horse battery staple";

fn cli(dir: &Path, args: &[&str]) -> String {
    let d = dir.display().to_string();
    let mut all = vec!["--data-dir", d.as_str()];
    all.extend_from_slice(args);
    run_ok(&bin(CA_BIN), &all, None)
}

fn served_crl(root: &Path, ca: &str) -> String {
    let pem = flow::http()
        .get(format!("{ca}/v1/crl.pem"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    crl_text(root, &pem)
}

/// Polls a CA's CRL until it lists `serial` (panics after `limit`); the
/// CRL text and how long it took.
fn wait_listed(root: &Path, ca: &str, serial: &str, limit: Duration) -> (String, Duration) {
    let start = Instant::now();
    loop {
        let text = served_crl(root, ca);
        if crl_lists(&text, serial) {
            return (text, start.elapsed());
        }
        assert!(
            start.elapsed() < limit,
            "{serial} not in {ca}'s CRL after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_replicas_share_the_crl_and_the_survivor_takes_the_lease_over() {
    let root = mailid_tests::temp_dir();
    let db = pg::fresh_database("capg_replicas");
    let account = format!("rita@{DOMAIN}");
    let mut mta = MtaFixture::init(root.path(), "mta");
    mta.add_account(&account, PASSWORD);
    let ca1 = CaFixture::init_sqlite(root.path(), "ca1", &["--database", db.url()]);
    let cred = mta.add_ca("test-ca", Some(&ca1.ca_pem()));
    mta.start(&[]);
    ca1.add_mta(DOMAIN, &mta.url(), "test-ca", &cred);
    // The second replica: a copy of the data dir.
    let dir2 = root.path().join("ca2");
    let st = std::process::Command::new("cp")
        .args(["-a"])
        .arg(&ca1.dir)
        .arg(&dir2)
        .status()
        .unwrap();
    assert!(st.success());
    let (p1, p2) = (mailid_tests::free_port(), mailid_tests::free_port());
    let mut s1 = Server::start(
        &bin(CA_BIN),
        &ca1.dir,
        &["--listen", &format!("127.0.0.1:{p1}")],
    );
    let mut s2 = Server::start(
        &bin(CA_BIN),
        &dir2,
        &["--listen", &format!("127.0.0.1:{p2}")],
    );
    let (u1, u2) = (s1.url.clone(), s2.url.clone());

    // Enrollments through both; revocations through each, seen by both.
    let (_, a) = flow::enroll_new_key(&mta.url(), &u1, &account, PASSWORD, KeyType::P256);
    let (_, b) = flow::enroll_new_key(&mta.url(), &u2, &account, PASSWORD, KeyType::P256);
    assert_eq!(b.revoked, vec![a.serial.clone()]);
    for ca in [&u1, &u2] {
        let (_, took) = wait_listed(root.path(), ca, a.serial.as_str(), Duration::from_secs(15));
        println!("superseded through CA 2: in {ca}'s CRL after {took:?}");
    }
    let (_, c) = flow::enroll_new_key(&mta.url(), &u1, &account, PASSWORD, KeyType::P256);
    assert_eq!(c.revoked, vec![b.serial.clone()]);
    let (text, took) = wait_listed(root.path(), &u2, b.serial.as_str(), Duration::from_secs(15));
    println!("superseded through CA 1: in CA 2's CRL after {took:?}");
    let before = crl_number(&text);

    let signer1 = s1.log_text().contains("took the CRL lease");
    let signer2 = s2.log_text().contains("took the CRL lease");
    assert!(signer1 ^ signer2, "exactly one replica took the lease");
    let (survivor_dir, survivor_url) = if signer1 {
        s1.kill();
        (&dir2, &u2)
    } else {
        s2.kill();
        (&ca1.dir, &u1)
    };
    // A revocation by the operator on the survivor's data dir.
    cli(survivor_dir, &["revoke", c.serial.as_str()]);
    let (text, took) = wait_listed(
        root.path(),
        survivor_url,
        c.serial.as_str(),
        Duration::from_secs(30),
    );
    let after = crl_number(&text);
    println!("signer killed: the survivor's CRL lists the revocation after {took:?}, number {before} -> {after}");
    assert!(after > before, "{after} after {before}");
    let survivor = if signer1 { &s2 } else { &s1 };
    assert!(
        survivor.log_text().contains("took the CRL lease epoch 2"),
        "{}",
        survivor.log_text()
    );
    s1.stop();
    s2.stop();
}
