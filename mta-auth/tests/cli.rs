//! The operator CLI: outputs, JSON, exit codes, global options.

mod common;

use common::*;

#[test]
fn accounts_and_cas_from_the_command_line() {
    // SQLite only: checks the SQLite file's mode (tests/database.rs covers
    // the same commands on PostgreSQL).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    // Global options after the subcommand work too.
    let out = mta_ok(&d, &["init"], None);
    assert!(out.contains("initialised"), "{out}");
    let again = mta_ok(&d, &["init", "--json"], None);
    assert!(again.contains("\"created\":false"), "{again}");
    use std::os::unix::fs::PermissionsExt;
    for f in ["config.json", "mta-auth.sqlite"] {
        let mode = std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }

    add_account(&d, "Alice@Example.org", "pw1");
    // Duplicate (case-insensitive).
    let out = mta(
        &d,
        &["account", "add", "alice@example.org", "--password-stdin"],
        Some("x\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    // Without --password-stdin and without MAILID_PASSWORD.
    let out = mta(&d, &["account", "add", "bob@example.org"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MAILID_PASSWORD"));
    // From MAILID_PASSWORD.
    let out = std::process::Command::new(BIN)
        .args(["account", "add", "bob@example.org", "--data-dir"])
        .arg(&d)
        .env("MAILID_PASSWORD", "pw2")
        .output()
        .unwrap();
    assert!(out.status.success());
    // Bad address.
    let out = mta(
        &d,
        &["account", "add", "not-an-address", "--password-stdin"],
        Some("x\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    // '?' separates the key ID of a strong address: not in an account's.
    for a in ["a?b@example.com", "?q@example.com"] {
        let out = mta(&d, &["account", "add", a, "--password-stdin"], Some("x\n"));
        assert_eq!(out.status.code(), Some(1), "{a}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("'?'"), "{err}");
    }

    mta_ok(&d, &["account", "disable", "bob@example.org"], None);
    let list = mta_ok(&d, &["account", "list"], None);
    assert_eq!(
        list,
        "alice@example.org\tenabled\nbob@example.org\tdisabled\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&mta_ok(&d, &["--json", "account", "list"], None)).unwrap();
    assert_eq!(json[0]["address"], "alice@example.org");
    assert_eq!(json[1]["enabled"], false);
    assert!(json[0]["locked_until"].is_null(), "{json}");
    assert_eq!(
        mta(&d, &["account", "enable", "carol@example.org"], None)
            .status
            .code(),
        Some(1)
    );

    // CA credentials: one line on stdout, or JSON.
    let cred = mta_ok(&d, &["ca", "add", "ca1"], None);
    assert_eq!(cred.lines().count(), 1);
    assert!(mailid_shared::authsig::Credential::parse(cred.trim()).is_ok());
    let json: serde_json::Value =
        serde_json::from_str(&mta_ok(&d, &["ca", "add", "ca2", "--json"], None)).unwrap();
    assert_eq!(json["name"], "ca2");
    assert!(
        mailid_shared::authsig::Credential::parse(json["credential"].as_str().unwrap()).is_ok()
    );
    assert_eq!(mta(&d, &["ca", "add", "ca1"], None).status.code(), Some(1));
    assert_eq!(
        mta(&d, &["ca", "add", "bad name"], None).status.code(),
        Some(1)
    );
    // A certificate that is not a CA's is not trusted.
    let leaf = common::pki::TestCa::new("X").client("a@example.org");
    let f = dir.path().join("leaf.pem");
    std::fs::write(&f, &leaf.cert_pem).unwrap();
    let out = mta(
        &d,
        &["ca", "add", "ca3", "--trust-cert", f.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let list = mta_ok(&d, &["ca", "list"], None);
    assert!(
        list.starts_with("ca1\t-\t") && list.contains("\nca2\t"),
        "{list}"
    );
    mta_ok(&d, &["ca", "remove", "ca1"], None);
    assert_eq!(
        mta(&d, &["ca", "remove", "ca1"], None).status.code(),
        Some(1)
    );
    let json: serde_json::Value =
        serde_json::from_str(&mta_ok(&d, &["ca", "list", "--json"], None)).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);

    // Usage errors exit 2; an uninitialised directory exits 1.
    assert_eq!(
        mta(&d, &["account", "frobnicate"], None).status.code(),
        Some(2)
    );
    assert_eq!(
        mta(&d, &["serve", "--tls-cert", "x"], None).status.code(),
        Some(2)
    );
    // --listen must be a socket address: a usage error, one line.
    for bad in ["notanaddr", "127.0.0.1", "localhost:7701", "1.2.3.4:99999"] {
        let out = mta(&d, &["serve", "--listen", bad], None);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("--listen"), "{err}");
    }
    let out = mta(&dir.path().join("nothing"), &["account", "list"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not initialised"));
}
