//! Helpers of the client end-to-end tests (included by the `client_*`
//! tests with `#[path]`): one real MTA, one or more real CAs, and the real
//! `mailid` binary with its own store.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mailid_shared::Serial;
use mailid_tests::{bin, run_env, CaFixture, MtaFixture, CLIENT_BIN};
use serde_json::Value;

/// The test account and its password.
pub const ALICE: &str = "alice@example.com";
pub const PASSWORD: &str = "correct horse battery staple";

/// A running MTA for example.com and `n` CAs, each registered at the MTA
/// (with its certificate trusted) and routing example.com to it.
pub struct Env {
    pub root: tempfile::TempDir,
    pub mta: MtaFixture,
    pub cas: Vec<CaFixture>,
}

impl Env {
    pub fn start(n: usize) -> Env {
        let root = mailid_tests::temp_dir();
        let mut mta = MtaFixture::init(root.path(), "mta");
        mta.add_account(ALICE, PASSWORD);
        let mut cas = Vec::new();
        let mut creds = Vec::new();
        for i in 1..=n {
            let name = format!("ca{i}");
            let ca = CaFixture::init(root.path(), &name, &[]);
            creds.push(mta.add_ca(&name, Some(&ca.ca_pem())));
            cas.push(ca);
        }
        mta.start(&[]);
        for (i, ca) in cas.iter_mut().enumerate() {
            ca.add_mta(
                "example.com",
                &mta.url(),
                &format!("ca{}", i + 1),
                &creds[i],
            );
            ca.start(&[]);
        }
        Env { root, mta, cas }
    }

    /// The client's store directory for this test.
    pub fn store(&self) -> PathBuf {
        self.root.path().join("store")
    }

    /// A scratch path in the test's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// `mailid --store STORE ARGS…` with the password on stdin when given.
    pub fn mailid(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
        let store = self.store().display().to_string();
        let mut all = vec!["--store", store.as_str()];
        all.extend_from_slice(args);
        run_env(&bin(CLIENT_BIN), &all, stdin, env)
    }

    /// `mailid enroll` for `email` at `mta` and `ca`, `password` on stdin,
    /// `extra` arguments and `env`; its output, whatever the outcome.
    pub fn try_enroll(
        &self,
        (email, mta, ca): (&str, &str, &str),
        password: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Output {
        let mut args = vec![
            "enroll",
            "--email",
            email,
            "--mta",
            mta,
            "--ca",
            ca,
            "--password-stdin",
        ];
        args.extend_from_slice(extra);
        self.mailid(&args, Some(&format!("{password}\n")), env)
    }

    /// `mailid enroll` for alice at CA number `ca` (0-based), password on
    /// stdin; must succeed; returns stdout.
    pub fn enroll(&self, ca: usize, extra: &[&str], env: &[(&str, &str)]) -> String {
        let (mta, ca_url) = (self.mta.url(), self.cas[ca].url());
        ok(&self.try_enroll((ALICE, &mta, &ca_url), PASSWORD, extra, env))
    }

    /// `mailid show --json` for alice.
    pub fn show(&self) -> Value {
        let out = self.mailid(&["--json", "show", "--email", ALICE], None, &[]);
        serde_json::from_str(&ok(&out)).expect("show --json prints JSON")
    }
}

/// Asserts success and returns stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "mailid failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts exit status 1 with exactly one `mailid: …` line on stderr and
/// no panic; returns that line.
pub fn one_line_failure(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1; stderr: {stderr}; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got: {stderr}");
    assert!(lines[0].starts_with("mailid: "), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    lines[0].to_string()
}

/// The serial in a step line such as `step 9: CA issued serial S for …`.
pub fn serial_after(stdout: &str, marker: &str) -> Serial {
    let line = stdout
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no line with '{marker}' in:\n{stdout}"));
    let rest = &line[line.find("serial ").expect("serial in line") + 7..];
    let hex: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    hex.parse().expect("hex serial")
}

/// Serials listed in a CRL (PEM file), read with `openssl crl -text`.
pub fn crl_serials(crl_pem: &Path) -> Vec<Serial> {
    let out = Command::new("openssl")
        .args(["crl", "-noout", "-text", "-in"])
        .arg(crl_pem)
        .output()
        .expect("run openssl crl");
    assert!(
        out.status.success(),
        "openssl crl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Serial Number: "))
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// Fetches a CA's served CRL into `dest`.
pub fn fetch_crl(ca_url: &str, dest: &Path) {
    let text = reqwest::blocking::get(format!("{ca_url}/v1/crl.pem"))
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .expect("GET /v1/crl.pem");
    std::fs::write(dest, text).expect("write CRL");
}

/// Waits (up to 20 s; the contract says 2) until the CA's CRL lists
/// `serial`; returns whether it did.
pub fn crl_lists(ca_url: &str, serial: &Serial, scratch: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        fetch_crl(ca_url, scratch);
        if crl_serials(scratch).contains(serial) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `openssl ARGS…`; returns (success, stdout + stderr).
pub fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
