//! `mailid export --p12` (SPEC §10) on identities enrolled from the real
//! services, read back by the real importers: OpenSSL (`openssl pkcs12`)
//! and NSS, the library of Thunderbird (`pk12util`, `certutil -V`).
//! A missing tool fails the test with what to install; nothing is skipped.

#[path = "client_support.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mailid_tests::{bin, CLIENT_BIN};
use serde_json::Value;
use support::*;

const P12_PW: &str = "export pass 1";
const STORE_PASS: (&str, &str) = ("MAILID_PASSPHRASE", "store pass");

/// Fails unless `name` is on PATH.
fn need(name: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not on PATH: install the Debian package {package} (scripts/test.sh does)"
    );
}

/// `mailid --store STORE ARGS…` with `stdin` and `env`, and without any
/// MAILID_P12_PASSWORD of the test's own environment.
fn mailid(env: &Env, args: &[&str], stdin: Option<&str>, vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin(CLIENT_BIN));
    cmd.arg("--store")
        .arg(env.store())
        .args(args)
        .env_remove("MAILID_P12_PASSWORD")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn mailid");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait for mailid")
}

/// `mailid export --email alice --p12 FILE EXTRA…`, password on stdin.
fn export(env: &Env, file: &Path, extra: &[&str]) -> Output {
    let f = file.display().to_string();
    let mut args = vec![
        "export",
        "--email",
        ALICE,
        "--p12",
        &f,
        "--p12-password-stdin",
    ];
    args.extend_from_slice(extra);
    mailid(env, &args, Some(&format!("{P12_PW}\n")), &[STORE_PASS])
}

/// Runs a tool; returns (success, stdout + stderr).
fn tool(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The base64 bodies of every PEM block labelled `label` in `text`, in order.
fn pem_bodies(text: &str, label: &str) -> Vec<String> {
    let (begin, end) = (
        format!("-----BEGIN {label}-----"),
        format!("-----END {label}-----"),
    );
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line == begin {
            cur = Some(String::new());
        } else if line == end {
            out.extend(cur.take());
        } else if let Some(c) = cur.as_mut() {
            c.push_str(line);
        }
    }
    out
}

/// The current identity's store directory and its key ID, from `show`.
fn stored(env: &Env, serial: Option<&str>) -> (PathBuf, String, String) {
    let show = env.show();
    let id = match serial {
        None => show["current"].clone(),
        Some(s) => show["identities"]
            .as_array()
            .expect("identities")
            .iter()
            .find(|i| i["serial"] == s)
            .expect("serial in store")
            .clone(),
    };
    let dir = env.store().join(id["dir"].as_str().expect("dir"));
    let s = |k: &str| id[k].as_str().expect(k).to_string();
    (dir, s("serial"), s("key_id"))
}

/// Checks with `openssl pkcs12` that `p12` holds the stored key of `dir`
/// (same public key as cert.pem), cert.pem and chain.pem, and that the
/// `-info` listing names every string of `algorithms`; a wrong password fails.
fn check_openssl(p12: &Path, dir: &Path, algorithms: &[&str]) {
    let f = p12.display().to_string();
    let pass = format!("pass:{P12_PW}");
    let (good, info) = tool(
        "openssl",
        &["pkcs12", "-in", &f, "-info", "-noout", "-passin", &pass],
    );
    assert!(good, "openssl pkcs12 -info: {info}");
    for a in algorithms {
        assert!(
            info.contains(a),
            "'{a}' not in openssl pkcs12 -info:\n{info}"
        );
    }
    let (good, dump) = tool(
        "openssl",
        &["pkcs12", "-in", &f, "-nodes", "-passin", &pass],
    );
    assert!(good, "openssl pkcs12 -nodes: {dump}");
    // The whole chain: the account's certificate, then chain.pem in order.
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).expect(n);
    let mut want = pem_bodies(&read("cert.pem"), "CERTIFICATE");
    want.extend(pem_bodies(&read("chain.pem"), "CERTIFICATE"));
    // openssl lists the bags in file order: the account's certificate,
    // then the chain, issuer first, root last.
    let got = pem_bodies(&dump, "CERTIFICATE");
    assert_eq!(
        got, want,
        "the file's certificates are the stored ones, in order"
    );
    // The key's public key is the certificate's.
    let keys = pem_bodies(&dump, "PRIVATE KEY");
    assert_eq!(keys.len(), 1, "one unencrypted key in:\n{}", dump.len());
    let key_file = p12.with_extension("key.pem");
    let mut key_pem = format!("-----BEGIN PRIVATE KEY-----\n{}\n", keys[0]);
    key_pem.push_str("-----END PRIVATE KEY-----\n");
    std::fs::write(&key_file, key_pem).expect("write key");
    let (good, key_pub) = tool(
        "openssl",
        &["pkey", "-in", &key_file.display().to_string(), "-pubout"],
    );
    assert!(good, "{key_pub}");
    let cert = dir.join("cert.pem").display().to_string();
    let (good, cert_pub) = tool("openssl", &["x509", "-in", &cert, "-noout", "-pubkey"]);
    assert!(good, "{cert_pub}");
    assert_eq!(
        pem_bodies(&key_pub, "PUBLIC KEY"),
        pem_bodies(&cert_pub, "PUBLIC KEY")
    );
    let _ = std::fs::remove_file(&key_file);
    // A wrong password opens nothing.
    let (good, text) = tool(
        "openssl",
        &["pkcs12", "-in", &f, "-nodes", "-passin", "pass:not it"],
    );
    assert!(!good, "openssl accepted a wrong password: {text}");
}

/// Imports `p12` into a fresh NSS database with the CA root trusted and
/// checks that NSS finds the certificate valid for signing and receiving
/// mail; a wrong password must fail the import.
fn check_nss(env: &Env, p12: &Path, name: &str) {
    need("certutil", "libnss3-tools");
    need("pk12util", "libnss3-tools");
    let db_dir = env.path(&format!("nss-{name}"));
    std::fs::create_dir_all(&db_dir).expect("mkdir nss db");
    let db = format!("sql:{}", db_dir.display());
    let (good, text) = tool("certutil", &["-N", "-d", &db, "--empty-password"]);
    assert!(good, "certutil -N: {text}");
    let f = p12.display().to_string();
    let (good, text) = tool("pk12util", &["-i", &f, "-d", &db, "-W", "not it"]);
    assert!(!good, "pk12util accepted a wrong password: {text}");
    let (good, text) = tool("pk12util", &["-i", &f, "-d", &db, "-W", P12_PW]);
    assert!(good, "pk12util -i: {text}");
    let root = env.cas[0].ca_pem().display().to_string();
    let (good, text) = tool(
        "certutil",
        &[
            "-A",
            "-d",
            &db,
            "-n",
            "mailid-test-ca",
            "-t",
            "C,C,C",
            "-i",
            &root,
        ],
    );
    assert!(good, "certutil -A: {text}");
    // The imported user certificate: trust flags u,u,u (it has its key).
    let (good, list) = tool("certutil", &["-L", "-d", &db]);
    assert!(good, "certutil -L: {list}");
    let user: Vec<String> = list
        .lines()
        .filter(|l| l.trim_end().ends_with("u,u,u"))
        .map(|l| {
            l.trim_end()
                .trim_end_matches("u,u,u")
                .trim_end()
                .to_string()
        })
        .collect();
    assert_eq!(user.len(), 1, "one user certificate in:\n{list}");
    for (usage, what) in [("S", "email signer"), ("R", "email recipient")] {
        let (good, text) = tool("certutil", &["-V", "-n", &user[0], "-u", usage, "-d", &db]);
        assert!(
            good && text.contains("certificate is valid"),
            "certutil -V -u {usage} ({what}): {text}"
        );
    }
    // The key came along: NSS lists it.
    let (good, keys) = tool("certutil", &["-K", "-d", &db]);
    assert!(
        good && keys.lines().any(|l| l.starts_with('<')),
        "certutil -K: {keys}"
    );
}

#[test]
fn default_export_is_pbes2_aes256_sha256_and_imports_into_openssl_and_nss() {
    need("openssl", "openssl");
    let env = Env::start(1);
    env.enroll(0, &[], &[STORE_PASS]);
    let (dir, serial, key_id) = stored(&env, None);
    let p12 = env.path("alice.p12");
    let out = ok(&export(&env, &p12, &["--json"]));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["file"], p12.display().to_string());
    assert_eq!(v["address"], ALICE);
    assert_eq!(v["serial"], serial);
    assert_eq!(v["key_id"], key_id);
    assert_eq!(v["legacy"], false);
    let mode = std::fs::metadata(&p12).expect("p12").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    check_openssl(
        &p12,
        &dir,
        &[
            "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC",
            "PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC",
            "PRF hmacWithSHA256",
            "MAC: sha256",
        ],
    );
    check_nss(&env, &p12, "default");

    // The password may come from the environment; the text names the file.
    let p12_env = env.path("alice-env.p12");
    let f = p12_env.display().to_string();
    let text = ok(&mailid(
        &env,
        &["export", "--email", ALICE, "--p12", &f],
        None,
        &[STORE_PASS, ("MAILID_P12_PASSWORD", P12_PW)],
    ));
    assert!(text.starts_with(&format!("wrote {f}: ")), "{text}");
    assert!(text.contains(&format!("serial {serial}")), "{text}");
    check_openssl(&p12_env, &dir, &["MAC: sha256"]);
}

#[test]
fn legacy_export_is_3des_sha1_and_imports_into_openssl_and_nss() {
    need("openssl", "openssl");
    let env = Env::start(1);
    env.enroll(0, &["--key-type", "rsa3072"], &[STORE_PASS]);
    let (dir, _, _) = stored(&env, None);
    let p12 = env.path("alice-legacy.p12");
    let out = ok(&export(&env, &p12, &["--legacy", "--json"]));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["legacy"], true);
    check_openssl(
        &p12,
        &dir,
        &[
            "Shrouded Keybag: pbeWithSHA1And3-KeyTripleDES-CBC",
            "PKCS7 Encrypted data: pbeWithSHA1And3-KeyTripleDES-CBC",
            "MAC: sha1",
        ],
    );
    check_nss(&env, &p12, "legacy");
}

#[test]
fn failures_leave_no_file_and_an_earlier_serial_exports() {
    let env = Env::start(1);
    let first_out = env.enroll(0, &[], &[STORE_PASS]);
    let first = serial_after(&first_out, "CA issued serial");
    env.enroll(0, &["--key-type", "p384"], &[STORE_PASS]);
    let (_, current, _) = stored(&env, None);
    assert_ne!(current, first.as_str());
    let p12 = env.path("x.p12");
    let f = p12.display().to_string();
    let gone = |what: &str| assert!(!p12.exists(), "{what} left {f}");

    let line = one_line_failure(&mailid(
        &env,
        &[
            "export",
            "--email",
            "bob@example.com",
            "--p12",
            &f,
            "--p12-password-stdin",
        ],
        Some("pw\n"),
        &[STORE_PASS],
    ));
    assert!(
        line.contains("holds no identity for bob@example.com"),
        "{line}"
    );
    gone("unknown account");

    let line = one_line_failure(&export(&env, &p12, &["--serial", "77"]));
    assert!(line.contains("holds no serial 77"), "{line}");
    gone("unknown serial");

    let line = one_line_failure(&mailid(
        &env,
        &["export", "--email", ALICE, "--p12", &f],
        None,
        &[STORE_PASS],
    ));
    assert!(line.contains("no PKCS#12 password"), "{line}");
    gone("missing password");
    let line = one_line_failure(&mailid(
        &env,
        &["export", "--email", ALICE, "--p12", &f],
        None,
        &[STORE_PASS, ("MAILID_P12_PASSWORD", "")],
    ));
    assert!(line.contains("empty"), "{line}");
    gone("empty password");
    let line = one_line_failure(&mailid(
        &env,
        &[
            "export",
            "--email",
            ALICE,
            "--p12",
            &f,
            "--p12-password-stdin",
        ],
        Some("\n"),
        &[STORE_PASS],
    ));
    assert!(line.contains("empty"), "{line}");
    gone("empty password on stdin");

    let line = one_line_failure(&mailid(
        &env,
        &[
            "export",
            "--email",
            ALICE,
            "--p12",
            &f,
            "--p12-password-stdin",
        ],
        Some("pw\n"),
        &[("MAILID_PASSPHRASE", "wrong")],
    ));
    assert!(line.contains("wrong passphrase"), "{line}");
    gone("wrong store passphrase");

    let nowhere = env.path("no-such-dir").join("x.p12");
    let line = one_line_failure(&export(&env, &nowhere, &[]));
    assert!(line.contains("no such file or directory"), "{line}");
    assert!(!nowhere.exists());

    // An existing file is refused and left as it was.
    std::fs::write(&p12, "keep me").expect("write");
    let line = one_line_failure(&export(&env, &p12, &[]));
    assert!(line.contains("already exists"), "{line}");
    assert_eq!(std::fs::read_to_string(&p12).expect("read"), "keep me");
    std::fs::remove_file(&p12).expect("rm");
    // No temporary file anywhere in the test directory.
    let stray: Vec<_> = std::fs::read_dir(env.root.path())
        .expect("ls")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");

    // The earlier identity, by serial, after the second enrollment.
    let out = ok(&export(&env, &p12, &["--serial", first.as_str(), "--json"]));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["serial"], first.as_str());
    let (dir, _, key_id) = stored(&env, Some(first.as_str()));
    assert_eq!(v["key_id"], key_id);
    check_openssl(&p12, &dir, &["MAC: sha256"]);
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["export", "--email", ALICE][..],
        &[
            "export", "--email", ALICE, "--p12", "x.p12", "--serial", "not-hex",
        ],
        &["export", "--p12", "x.p12"],
    ] {
        let out = Command::new(bin(CLIENT_BIN))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run mailid");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(!Path::new("x.p12").exists());
    }
}
