//! The CA's base URL goes into every certificate (CRL distribution point,
//! AIA caIssuers) as an IA5String URI. A bad one (spaces, non-ASCII, not
//! http(s)) is refused by `init` in one line, creating nothing, and stops
//! `serve` in one line when config.json was edited by hand, instead of
//! failing every enrollment with a 500 after the holder's code was used.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mailid_tests::{bin, run, CaFixture, CA_BIN};

const BAD: [&str; 5] = [
    "http://exa mple/",
    "http://exämple.org",
    "http://example.org/ca\u{e9}",
    "http://example.org/a b",
    "ftp://example.org",
];

/// Exit status 1 and one line on stderr starting `mailid-ca: `; the line.
fn one_line_failure(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr: {err}\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("mailid-ca: "), "{err}");
    err
}

#[test]
fn init_refuses_a_bad_base_url_in_one_line_and_creates_nothing() {
    let root = mailid_tests::temp_dir();
    let dir = root.path().join("ca");
    let d = dir.display().to_string();
    for url in BAD {
        let out = run(
            &bin(CA_BIN),
            &["--data-dir", &d, "init", "--name", "X", "--base-url", url],
            None,
        );
        let line = one_line_failure(&out);
        assert!(line.contains("base URL"), "{url}: {line}");
        assert!(!dir.exists(), "{url} left {} behind", dir.display());
    }
    // A good one still works, with or without a path and trailing slash.
    let out = run(
        &bin(CA_BIN),
        &[
            "--data-dir",
            &d,
            "init",
            "--name",
            "X",
            "--base-url",
            "https://ca.example.org:8443/mailid/",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `serve` on an ephemeral port; it must exit by itself within 60 s.
fn serve_must_exit(dir: &Path) -> Output {
    let d = dir.display().to_string();
    let mut child = Command::new(bin(CA_BIN))
        .args(["--data-dir", &d, "serve", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mailid-ca serve");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "serve started with a bad base URL: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn serve_refuses_a_hand_edited_bad_base_url_in_one_line() {
    let root = mailid_tests::temp_dir();
    let ca = CaFixture::init(root.path(), "ca", &[]);
    let cfg_path = ca.dir.join("config.json");
    let good = std::fs::read_to_string(&cfg_path).expect("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&good).expect("JSON");
    for url in BAD {
        cfg["base_url"] = url.into();
        std::fs::write(&cfg_path, cfg.to_string()).expect("write config");
        let line = one_line_failure(&serve_must_exit(&ca.dir));
        assert!(line.contains("base URL"), "{url}: {line}");
    }
    // The CA itself is untouched: with its config back, it serves.
    std::fs::write(&cfg_path, good).expect("write config");
    let mut ca = ca;
    ca.start(&[]);
    let ok = reqwest::blocking::get(format!("{}/healthz", ca.url())).expect("healthz");
    assert_eq!(ok.status(), 200);
}
