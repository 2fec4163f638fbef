//! The CA's operator CLI without a running server: `init` refuses bad input
//! in one line and leaves nothing behind, state files get their modes
//! whatever the umask (the data directory 0700 when `init` makes it),
//! `crl` and `mta` speak `--json`, and a `crl --out` that cannot be written
//! signs nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use mailid_tests::{bin, run_env, CA_BIN, MTA_BIN};
use serde_json::Value;

fn ca(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let d = dir.display().to_string();
    let mut all = vec!["--data-dir", d.as_str()];
    all.extend_from_slice(args);
    run_env(&bin(CA_BIN), &all, None, env)
}

/// Exit status 1 and one line on stderr starting `mailid-ca: `; the line.
fn one_line_failure(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("mailid-ca: "), "{err}");
    err
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn init_refuses_bad_input_in_one_line_and_leaves_nothing_behind() {
    let root = mailid_tests::temp_dir();
    let dir = root.path().join("ca");
    for (args, env, why) in [
        (&["init", "--name", ""][..], &[][..], "name"),
        (&["init", "--name", "  "], &[], "name"),
        (
            &["init", "--name", "X", "--base-url", "notaurl"],
            &[],
            "base URL",
        ),
        (
            &["init", "--name", "X", "--validity-days", "826"],
            &[],
            "validity",
        ),
        (
            &["init", "--name", "X"],
            &[("MAILID_CA_PASSPHRASE", "")],
            "MAILID_CA_PASSPHRASE",
        ),
    ] {
        let line = one_line_failure(&ca(&dir, args, env));
        assert!(line.contains(why), "{args:?}: {line}");
        assert!(!dir.exists(), "{args:?} left {} behind", dir.display());
    }
}

#[test]
fn state_files_get_their_modes_whatever_the_umask() {
    let root = mailid_tests::temp_dir();
    let dir = root.path().join("ca");
    let cmd = format!(
        "umask 000; exec '{}' --data-dir '{}' init --name 'Mode CA'",
        bin(CA_BIN).display(),
        dir.display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &cmd])
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = |f: &str| {
        std::fs::metadata(dir.join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    // The directory holds the key and the database: 0700 like the MTA's.
    assert_eq!(mode(""), 0o700);
    assert_eq!(mode("ca-key.pem"), 0o600);
    assert_eq!(mode("config.json"), 0o600);
    assert_eq!(mode("ca.pem"), 0o644);
    assert_eq!(mode("crl.der"), 0o644);
}

#[test]
fn an_existing_data_dir_keeps_its_mode() {
    // A directory the operator made (e.g. group-readable for backups)
    // keeps its mode; the secrets in it are 0600 whatever it is.
    let root = mailid_tests::temp_dir();
    let dir = root.path().join("made");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    assert!(ca(&dir, &["init", "--name", "Made CA"], &[])
        .status
        .success());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o750);
    for f in ["ca-key.pem", "ca.sqlite"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
}

#[test]
fn crl_and_mta_speak_json_and_a_bad_out_signs_nothing() {
    let root = mailid_tests::temp_dir();
    let dir = root.path().join("ca");
    assert!(ca(&dir, &["init", "--name", "Json CA"], &[])
        .status
        .success());

    let first = json(&ca(&dir, &["crl", "--json"], &[]));
    let n = first["crl_number"].as_i64().expect("crl_number");
    assert!(first["crl"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN X509 CRL-----"));
    assert_eq!(first["entries"], 0);
    let bad = root.path().join("missing-dir").join("crl.pem");
    let stored = std::fs::read(dir.join("crl.der")).unwrap();
    let line = one_line_failure(&ca(&dir, &["crl", "--out", bad.to_str().unwrap()], &[]));
    assert!(line.contains(bad.to_str().unwrap()), "{line}");
    assert_eq!(std::fs::read(dir.join("crl.der")).unwrap(), stored);
    // Numbers are the signing time in nanoseconds, strictly increasing.
    let next = json(&ca(&dir, &["crl", "--json"], &[]));
    let m = next["crl_number"].as_i64().expect("crl_number");
    assert!(m > n, "{next}");
    let out = root.path().join("crl.der");
    let written = json(&ca(
        &dir,
        &["crl", "--der", "--out", out.to_str().unwrap(), "--json"],
        &[],
    ));
    assert!(written["crl_number"].as_i64().expect("crl_number") > m);
    assert_eq!(std::fs::read(&out).unwrap()[0], 0x30, "DER written");

    // A credential from a real MTA CLI, then mta add / remove with --json.
    let mta = root.path().join("mta");
    let m = mta.display().to_string();
    assert!(
        run_env(&bin(MTA_BIN), &["--data-dir", &m, "init"], None, &[])
            .status
            .success()
    );
    let cred = run_env(
        &bin(MTA_BIN),
        &["--data-dir", &m, "ca", "add", "json-ca"],
        None,
        &[],
    );
    let cred_file = root.path().join("cred");
    std::fs::write(&cred_file, &cred.stdout).unwrap();
    let added = json(&ca(
        &dir,
        &[
            "mta",
            "add",
            "--domain",
            "Example.ORG",
            "--url",
            "http://127.0.0.1:7701/",
            "--ca-name",
            "json-ca",
            "--credential-file",
            cred_file.to_str().unwrap(),
            "--json",
        ],
        &[],
    ));
    assert_eq!(
        added,
        serde_json::json!({"domain": "example.org", "url": "http://127.0.0.1:7701", "ca_name": "json-ca"})
    );
    let removed = json(&ca(&dir, &["--json", "mta", "remove", "example.org"], &[]));
    assert_eq!(removed, serde_json::json!({"removed": "example.org"}));
}
