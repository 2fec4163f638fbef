//! SPEC §3 and §6: a usage error of any of the three binaries is one line
//! on stderr, prefixed with the binary's name, with exit status 2 and
//! nothing on stdout; `--help` goes to stdout with status 0.

use std::process::Command;

use mailid_tests::{bin, CA_BIN, CLIENT_BIN, MTA_BIN};

fn assert_usage_error(name: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(bin(name))
        .args(args)
        .env("MAILID_MTA_DATA_DIR", dir.path())
        .env("MAILID_CA_DATA_DIR", dir.path())
        .env_remove("MAILID_PASSWORD")
        .output()
        .expect("run the binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let what = format!("{name} {args:?}");
    assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
    assert!(out.stdout.is_empty(), "{what}: stdout not empty");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: not one line: {stderr:?}");
    assert!(
        lines[0].starts_with(&format!("{name}: ")),
        "{what}: {stderr}"
    );
    lines[0].to_string()
}

#[test]
fn no_command_at_all_is_one_line_too() {
    for name in [CA_BIN, MTA_BIN, CLIENT_BIN] {
        let line = assert_usage_error(name, &[]);
        assert!(line.contains("command"), "{line}");
        assert!(line.ends_with("(see --help)"), "{line}");
    }
}

#[test]
fn usage_errors_are_one_line_with_status_2() {
    for args in [
        &["bogus"][..],
        &["init", "--validity-days", "-1"],
        &["init"],
        &["list", "--status", "bogus"],
        &["revoke", "00", "--reason", "nope"],
        &["serve", "--listen", "notanaddr"],
        &["revoke", "0xZZ"],
        &["show", "not-hex"],
    ] {
        let _ = assert_usage_error(CA_BIN, args);
    }
    for args in [
        &["bogus"][..],
        &["account", "add", "x@example.com", "--bogus"],
        &["account"],
    ] {
        let _ = assert_usage_error(MTA_BIN, args);
    }
    for args in [
        &["enroll", "--email", "a@example.com"][..],
        &["bogus"],
        &[
            "revoke",
            "--email",
            "a@example.com",
            "--mta",
            "http://127.0.0.1:1",
            "--ca",
            "http://127.0.0.1:1",
            "--serial",
            "0xZZ",
        ],
        &[
            "enroll",
            "--email",
            "a@example.com",
            "--mta",
            "http://127.0.0.1:1",
            "--ca",
            "http://127.0.0.1:1",
        ],
    ] {
        let _ = assert_usage_error(CLIENT_BIN, args);
    }
}

#[test]
fn help_goes_to_stdout_with_status_0() {
    for name in [CA_BIN, MTA_BIN, CLIENT_BIN] {
        let out = Command::new(bin(name)).arg("--help").output().expect("run");
        assert_eq!(out.status.code(), Some(0), "{name}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage:"),
            "{name}"
        );
        assert!(out.stderr.is_empty(), "{name}");
    }
}
