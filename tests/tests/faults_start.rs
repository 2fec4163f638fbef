//! Start-up and logging faults, over the real binaries: the CA key missing,
//! unreadable, of another CA, or its passphrase missing or wrong, and
//! either service's database corrupt: `serve` exits 1 with one clear line
//! on stderr and leaves the data directory as it was. Either service's
//! database missing: every command but `init` exits 1 with one line and
//! creates nothing (it never starts over with an empty database). A log that cannot be
//! written (a full or closed stderr) does not take either service down.

#[path = "faults_support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mailid_tests::flow::{self, KeyType};
use mailid_tests::{bin, temp_dir, CaFixture, MtaFixture, CA_BIN, MTA_BIN};
use support::*;

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
    // SQLite in any run: the fault is a corrupt ca.sqlite.
    let ca = CaFixture::init_sqlite(root.path(), "ca", &[]);
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

/// Runs `bin --data-dir DIR ARGS…` to completion.
fn cli(bin_name: &str, dir: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let d = dir.display().to_string();
    let mut all = vec!["--data-dir", d.as_str()];
    all.extend_from_slice(args);
    mailid_tests::run(&bin(bin_name), &all, stdin)
}

#[test]
fn a_missing_database_stops_every_command_in_one_line_and_creates_nothing() {
    let root = temp_dir();
    let mta = MtaFixture::init(root.path(), "mta");
    mta.add_account(ALICE, PASSWORD);
    // SQLite in any run: the fault is a missing ca.sqlite.
    let ca = CaFixture::init_sqlite(root.path(), "ca", &[]);
    // Deleted (a lost volume, a botched restore): database, WAL and all.
    for (dir, db) in [(&ca.dir, "ca.sqlite"), (&mta.dir, "mta-auth.sqlite")] {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.join(format!("{db}{suffix}")));
        }
        assert!(!dir.join(db).exists());
    }
    let cred = root.path().join("mta.credential");
    std::fs::write(
        &cred,
        format!(
            "{}\n",
            mailid_shared::authsig::Credential::generate().to_text()
        ),
    )
    .unwrap();
    let cred = cred.display().to_string();
    let serial = mailid_shared::Serial::random().as_str().to_string();
    let words = ["ca.sqlite", "only 'init' creates it"];
    let before = snapshot(&ca.dir);
    for args in [
        vec!["list"],
        vec!["revoke", serial.as_str()],
        vec!["crl"],
        vec![
            "mta",
            "add",
            "--domain",
            "example.com",
            "--url",
            "http://127.0.0.1:9",
            "--ca-name",
            "ca",
            "--credential-file",
            cred.as_str(),
        ],
    ] {
        let out = cli(CA_BIN, &ca.dir, &args, None);
        assert_one_line_failure(&out, "mailid-ca: ", &words);
        assert_eq!(
            snapshot(&ca.dir),
            before,
            "mailid-ca {args:?} changed its data dir"
        );
    }
    let out = serve_must_fail(&bin(CA_BIN), &ca.dir, &[]);
    assert_one_line_failure(&out, "mailid-ca: ", &words);
    assert_eq!(
        snapshot(&ca.dir),
        before,
        "mailid-ca serve changed its data dir"
    );

    let words = ["mta-auth.sqlite", "only 'init' creates it"];
    let before = snapshot(&mta.dir);
    for (args, stdin) in [
        (vec!["account", "list"], None),
        (
            vec!["account", "add", "bob@example.com", "--password-stdin"],
            Some("pw\n"),
        ),
    ] {
        let out = cli(MTA_BIN, &mta.dir, &args, stdin);
        assert_one_line_failure(&out, "mailid-mta-auth: ", &words);
        assert_eq!(
            snapshot(&mta.dir),
            before,
            "mailid-mta-auth {args:?} changed its data dir"
        );
    }
    let out = serve_must_fail(&bin(MTA_BIN), &mta.dir, &[]);
    assert_one_line_failure(&out, "mailid-mta-auth: ", &words);
    assert_eq!(
        snapshot(&mta.dir),
        before,
        "mailid-mta-auth serve changed its data dir"
    );

    // An empty file (truncated) is no database either, and stays empty.
    let db = ca.dir.join("ca.sqlite");
    std::fs::write(&db, b"").unwrap();
    let out = cli(CA_BIN, &ca.dir, &["list"], None);
    assert_one_line_failure(&out, "mailid-ca: ", &["ca.sqlite", "missing or empty"]);
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);
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
