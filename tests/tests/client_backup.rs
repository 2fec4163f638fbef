//! `mailid backup` and `mailid recover` (SPEC §10) with the real services
//! and the real `mailid` binary on separate devices (separate stores), and
//! OpenSSL as the independent judge: a CMS message encrypted to the first
//! certificate before a second enrollment is decrypted with the key
//! recovered on another device, from 2 of 3 shares and from a recovery key.
//! Also: what the MTA's database holds, and every refusal leaving the new
//! device's store untouched.

#[path = "client_support.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use mailid_tests::{bin, run_env, CLIENT_BIN};
use serde_json::Value;
use support::*;

const DEV1_PASS: &str = "device one store pass";

/// `mailid --store STORE ARGS…` with the account password on stdin and
/// the store passphrase `pass` in the environment.
fn on(store: &Path, args: &[&str], password: &str, pass: &str) -> Output {
    let s = store.display().to_string();
    let mut all = vec!["--store", s.as_str()];
    all.extend_from_slice(args);
    let stdin = format!("{password}\n");
    run_env(
        &bin(CLIENT_BIN),
        &all,
        (!password.is_empty()).then_some(stdin.as_str()),
        &[("MAILID_PASSPHRASE", pass)],
    )
}

fn backup(env: &Env, extra: &[&str]) -> Output {
    let mta = env.mta.url();
    let mut args = vec![
        "backup",
        "--email",
        ALICE,
        "--mta",
        &mta,
        "--password-stdin",
    ];
    args.extend_from_slice(extra);
    on(&env.store(), &args, PASSWORD, DEV1_PASS)
}

fn recover(env: &Env, store: &Path, secret: &[&str], password: &str) -> Output {
    let mta = env.mta.url();
    let mut args = vec![
        "recover",
        "--email",
        ALICE,
        "--mta",
        &mta,
        "--password-stdin",
    ];
    args.extend_from_slice(secret);
    on(store, &args, password, "new device pass")
}

/// `show --json` of a store.
fn show(store: &Path, pass: &str) -> Value {
    let out = on(store, &["--json", "show", "--email", ALICE], "", pass);
    serde_json::from_str(&ok(&out)).expect("show --json")
}

/// The files of identity `serial` in a store (from `show --json`).
fn files_of(store: &Path, pass: &str, serial: &str) -> PathBuf {
    let v = show(store, pass);
    let ids = v["identities"].as_array().expect("identities");
    let id = ids
        .iter()
        .find(|i| i["serial"] == serial)
        .unwrap_or_else(|| panic!("serial {serial} not in {v}"));
    store.join(id["dir"].as_str().expect("dir"))
}

fn openssl_ok(args: &[&str]) -> String {
    let (ok, text) = openssl(args);
    assert!(ok, "openssl {args:?} failed: {text}");
    text
}

/// Checks the recovered store: the current identity is `current` and its
/// key is its certificate's key; the earlier key decrypts `message`.
fn check_device(store: &Path, current: &str, earlier: &str, message: &Path, clear: &str) {
    let pass = "new device pass";
    let v = show(store, pass);
    assert_eq!(v["current"]["serial"], current, "{v}");
    let statuses: Vec<(String, String)> = v["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["serial"].as_str().unwrap().to_string(),
                i["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        statuses.contains(&(earlier.to_string(), "superseded".into())),
        "{v}"
    );
    let dir = files_of(store, pass, current);
    let mode = std::fs::metadata(dir.join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let key = dir.join("key.pem").display().to_string();
    let cert = dir.join("cert.pem").display().to_string();
    let passin = format!("pass:{pass}");
    let from_key = openssl_ok(&["pkey", "-in", &key, "-passin", &passin, "-pubout"]);
    let from_cert = openssl_ok(&["x509", "-in", &cert, "-pubkey", "-noout"]);
    assert_eq!(
        from_key, from_cert,
        "the current key is not its certificate's"
    );
    let old = files_of(store, pass, earlier);
    let out = PathBuf::from(format!("{}.out", message.display()));
    openssl_ok(&[
        "cms",
        "-decrypt",
        "-in",
        &message.display().to_string(),
        "-inform",
        "PEM",
        "-inkey",
        &old.join("key.pem").display().to_string(),
        "-passin",
        &passin,
        "-recip",
        &old.join("cert.pem").display().to_string(),
        "-out",
        &out.display().to_string(),
    ]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), clear);
}

/// Two enrollments with a CMS message encrypted to the first; returns
/// (first serial, second serial, message file, clear text).
fn two_identities(env: &Env) -> (String, String, PathBuf, String) {
    let vars = [("MAILID_PASSPHRASE", DEV1_PASS)];
    env.enroll(0, &[], &vars);
    let first = show(&env.store(), DEV1_PASS)["current"]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    let cert1 = files_of(&env.store(), DEV1_PASS, &first).join("cert.pem");
    let clear = "Old mail, encrypted to the first key.\n".to_string();
    let msg = env.path("msg.txt");
    std::fs::write(&msg, &clear).unwrap();
    let enc = env.path("msg.p7m");
    openssl_ok(&[
        "cms",
        "-encrypt",
        "-binary",
        "-aes-256-cbc",
        "-in",
        &msg.display().to_string(),
        "-out",
        &enc.display().to_string(),
        "-outform",
        "PEM",
        &cert1.display().to_string(),
    ]);
    env.enroll(0, &[], &vars);
    let second = show(&env.store(), DEV1_PASS)["current"]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(first, second);
    (first, second, enc, clear)
}

#[test]
fn a_second_device_recovers_from_two_shares_or_the_recovery_key() {
    let env = Env::start(1);
    let (first, second, msg, clear) = two_identities(&env);

    // Shares: 3 files, 0600; shares 1 and 3 rebuild device 2.
    let shares = env.path("shares");
    let sh = shares.display().to_string();
    let text = ok(&backup(&env, &["--split", "2-of-3", "--out-dir", &sh]));
    assert!(text.contains("any 2 of these 3 shares"), "{text}");
    for i in 1..=3 {
        let f = shares.join(format!("share-{i}.txt"));
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", f.display());
    }
    let share = |i: u8| shares.join(format!("share-{i}.txt")).display().to_string();
    let dev2 = env.path("device2");
    let (s1, s3) = (share(1), share(3));
    let out = ok(&recover(
        &env,
        &dev2,
        &["--share-file", &s1, "--share-file", &s3],
        PASSWORD,
    ));
    assert!(out.contains(&format!("recovered serial {second}")), "{out}");
    check_device(&dev2, &second, &first, &msg, &clear);

    // A plain recovery key (shown once, in JSON here) rebuilds device 3.
    let out = ok(&backup(&env, &["--json"]));
    let v: Value = serde_json::from_str(&out).unwrap();
    let key = v["recovery_key"]
        .as_str()
        .expect("recovery_key")
        .to_string();
    assert_eq!(key.len(), 62, "{key}");
    assert_eq!(v["keys"].as_array().unwrap().len(), 2);
    let key_file = env.path("recovery-key.txt");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let dev3 = env.path("device3");
    let kf = key_file.display().to_string();
    ok(&recover(
        &env,
        &dev3,
        &["--recovery-key-file", &kf],
        PASSWORD,
    ));
    check_device(&dev3, &second, &first, &msg, &clear);

    // The new backup replaced the old: its shares no longer open anything.
    let dev4 = env.path("device4");
    let line = one_line_failure(&recover(
        &env,
        &dev4,
        &["--share-file", &s1, "--share-file", &share(2)],
        PASSWORD,
    ));
    assert!(
        line.contains("does not open with this recovery key"),
        "{line}"
    );
    assert!(!dev4.join("index.json").exists());
}

/// Every file of the MTA's data directory, as bytes.
fn mta_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_mta_holds_only_aes256_ciphertexts() {
    let env = Env::start(1);
    let (first, second, _, _) = two_identities(&env);
    let shares = env.path("shares");
    let sh = shares.display().to_string();
    ok(&backup(&env, &["--split", "2-of-3", "--out-dir", &sh]));
    let v: Value = serde_json::from_str(&ok(&backup(&env, &["--json"]))).unwrap();
    let key = v["recovery_key"].as_str().unwrap().to_string();

    // What must never be at the MTA: the recovery key (either form), the
    // shares, and each plaintext key (DER, and PEM's base64 body).
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("recovery key".into(), key.clone().into_bytes()),
        ("recovery key".into(), key.replace('-', "").into_bytes()),
    ];
    for i in 1..=3 {
        let text = std::fs::read_to_string(shares.join(format!("share-{i}.txt"))).unwrap();
        let body = text.lines().last().unwrap().to_string();
        secrets.push((format!("share {i}"), body.clone().into_bytes()));
        secrets.push((format!("share {i}"), body.replace('-', "").into_bytes()));
    }
    for serial in [&first, &second] {
        let k = files_of(&env.store(), DEV1_PASS, serial).join("key.pem");
        let der = env.path("plain.der");
        let passin = format!("pass:{DEV1_PASS}");
        openssl_ok(&[
            "pkey",
            "-in",
            &k.display().to_string(),
            "-passin",
            &passin,
            "-outform",
            "DER",
            "-out",
            &der.display().to_string(),
        ]);
        let plain = std::fs::read(&der).unwrap();
        // The private scalar of the P-256 key: after `02 01 01 04 20` in the
        // ECPrivateKey inside the PKCS#8 (the public half is public).
        let at = plain
            .windows(5)
            .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])
            .expect("an ECPrivateKey")
            + 5;
        secrets.push((format!("key of {serial}"), plain[at..at + 32].to_vec()));
        // The second base64 line of its unencrypted PEM, which covers it.
        let pem = openssl_ok(&["pkey", "-in", &k.display().to_string(), "-passin", &passin]);
        let line2 = pem
            .lines()
            .nth(2)
            .expect("a second base64 line")
            .to_string();
        secrets.push((format!("PEM key of {serial}"), line2.into_bytes()));
    }
    let files = mta_bytes(&env.mta.dir);
    let names: Vec<&PathBuf> = files.iter().map(|(p, _)| p).collect();
    assert!(
        names.iter().any(|p| p.ends_with("mta-auth.sqlite")),
        "{names:?}"
    );
    for (path, bytes) in &files {
        for (what, s) in &secrets {
            assert!(!contains(bytes, s), "{what} found in {}", path.display());
        }
    }

    // Each stored ciphertext is PBES2 with AES-256 (as OpenSSL parses it)
    // and opens with the recovery key only.
    let list: Value = reqwest::blocking::Client::new()
        .get(format!("{}/v1/backups", env.mta.url()))
        .basic_auth(ALICE, Some(PASSWORD))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let backups = list["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 2);
    for (i, b) in backups.iter().enumerate() {
        let f = env.path(&format!("backup-{i}.pem"));
        std::fs::write(&f, b["encrypted_key"].as_str().unwrap()).unwrap();
        let fs = f.display().to_string();
        let parsed = openssl_ok(&["asn1parse", "-in", &fs]);
        assert!(parsed.contains("PBES2"), "{parsed}");
        assert!(parsed.contains("aes-256-cbc"), "{parsed}");
        let good = format!("pass:{}", key.replace('-', ""));
        openssl_ok(&["pkcs8", "-in", &fs, "-passin", &good]);
        let (opened, _) = openssl(&["pkcs8", "-in", &fs, "-passin", "pass:WRONG"]);
        assert!(!opened);
    }
}

/// A directory's entries, recursively, with sizes: "unchanged" means this.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(snapshot(&p));
            } else {
                out.push((p.clone(), std::fs::metadata(&p).unwrap().len()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn refusals_change_nothing() {
    let mut env = Env::start(1);
    two_identities(&env);
    let a = env.path("a");
    let b = env.path("b");
    let (sa, sb) = (a.display().to_string(), b.display().to_string());
    ok(&backup(&env, &["--split", "2-of-3", "--out-dir", &sa]));
    ok(&backup(&env, &["--split", "2-of-3", "--out-dir", &sb]));
    let share = |d: &Path, i: u8| d.join(format!("share-{i}.txt")).display().to_string();
    let wrong_key = env.path("wrong-key.txt");
    std::fs::write(&wrong_key, "AAAAA-".repeat(10) + "AA\n").unwrap();
    let wk = wrong_key.display().to_string();

    let dev = env.path("device2");
    let before = snapshot(&dev);
    let cases: Vec<(&str, Vec<String>, &str, &str)> = vec![
        (
            "one share",
            vec!["--share-file".into(), share(&b, 1)],
            PASSWORD,
            "1 share given",
        ),
        (
            "the same share twice",
            vec![
                "--share-file".into(),
                share(&b, 2),
                "--share-file".into(),
                share(&b, 2),
            ],
            PASSWORD,
            "same share",
        ),
        (
            "a share of another backup",
            vec![
                "--share-file".into(),
                share(&a, 1),
                "--share-file".into(),
                share(&b, 2),
            ],
            PASSWORD,
            "another backup",
        ),
        (
            "a wrong recovery key",
            vec!["--recovery-key-file".into(), wk.clone()],
            PASSWORD,
            "does not open with this recovery key",
        ),
        (
            "a wrong password",
            vec![
                "--share-file".into(),
                share(&b, 1),
                "--share-file".into(),
                share(&b, 3),
            ],
            "not the password",
            "password",
        ),
    ];
    for (what, args, pw, expect) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let line = one_line_failure(&recover(&env, &dev, &args, pw));
        assert!(line.contains(expect), "{what}: {line}");
        assert_eq!(snapshot(&dev), before, "{what} changed the store");
        assert!(!dev.exists(), "{what} created the store directory");
    }

    // A tampered ciphertext at the MTA (one byte of the encrypted data).
    let http = reqwest::blocking::Client::new();
    let list: Value = http
        .get(format!("{}/v1/backups", env.mta.url()))
        .basic_auth(ALICE, Some(PASSWORD))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let victim = &list["backups"][0];
    let pem_text = victim["encrypted_key"].as_str().unwrap();
    let mut lines: Vec<String> = pem_text.lines().map(String::from).collect();
    let mid = lines.len() / 2;
    let flipped: String = lines[mid]
        .chars()
        .enumerate()
        .map(|(i, c)| match (i, c) {
            (10, 'A') => 'B',
            (10, _) => 'A',
            (_, c) => c,
        })
        .collect();
    lines[mid] = flipped;
    let tampered = lines.join("\n") + "\n";
    let mut body = victim.clone();
    body["encrypted_key"] = Value::String(tampered);
    let resp = http
        .put(format!(
            "{}/v1/backups/{}",
            env.mta.url(),
            victim["key_id"].as_str().unwrap()
        ))
        .basic_auth(ALICE, Some(PASSWORD))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (b1, b3) = (share(&b, 1), share(&b, 3));
    let line = one_line_failure(&recover(
        &env,
        &dev,
        &["--share-file", &b1, "--share-file", &b3],
        PASSWORD,
    ));
    assert!(line.contains(victim["key_id"].as_str().unwrap()), "{line}");
    assert_eq!(
        snapshot(&dev),
        before,
        "a tampered backup changed the store"
    );

    // The MTA down: recover and backup fail; backup leaves no share file.
    env.mta.server.as_mut().unwrap().stop();
    let line = one_line_failure(&recover(
        &env,
        &dev,
        &["--share-file", &b1, "--share-file", &b3],
        PASSWORD,
    ));
    assert!(line.contains("cannot reach the MTA"), "{line}");
    assert_eq!(snapshot(&dev), before);
    let c = env.path("c");
    let sc = c.display().to_string();
    let line = one_line_failure(&backup(&env, &["--split", "2-of-3", "--out-dir", &sc]));
    assert!(line.contains("cannot reach the MTA"), "{line}");
    assert!(!c.exists(), "a failed backup left its --out-dir behind");

    // Neither a key file nor shares is a usage error.
    let out = recover(&env, &dev, &[], "");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn recover_refuses_a_store_that_holds_the_account() {
    let env = Env::start(1);
    two_identities(&env);
    let v: Value = serde_json::from_str(&ok(&backup(&env, &["--json"]))).unwrap();
    let key_file = env.path("k.txt");
    std::fs::write(&key_file, v["recovery_key"].as_str().unwrap()).unwrap();
    let before = snapshot(&env.store());
    let kf = key_file.display().to_string();
    let line = one_line_failure(&recover(
        &env,
        &env.store(),
        &["--recovery-key-file", &kf],
        PASSWORD,
    ));
    assert!(line.contains("already holds identities"), "{line}");
    assert_eq!(snapshot(&env.store()), before);
}

/// The MTA's backups as (key ID, ciphertext), sorted: what "unchanged"
/// means at the MTA.
fn mta_set(env: &Env) -> Vec<(String, String)> {
    let list: Value = reqwest::blocking::Client::new()
        .get(format!("{}/v1/backups", env.mta.url()))
        .basic_auth(ALICE, Some(PASSWORD))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut v: Vec<(String, String)> = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["key_id"].as_str().unwrap().to_string(),
                b["encrypted_key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// A device that lacks a key the MTA holds a backup of refuses to replace
/// the set (it would make the other device's recovery key useless); with
/// `--replace` it may.
#[test]
fn backup_keeps_the_keys_of_another_device() {
    let env = Env::start(1);
    two_identities(&env);
    let v: Value = serde_json::from_str(&ok(&backup(&env, &["--json"]))).unwrap();
    let key_file = env.path("k.txt");
    std::fs::write(&key_file, v["recovery_key"].as_str().unwrap()).unwrap();
    let kf = key_file.display().to_string();
    let dev2 = env.path("device2");
    ok(&recover(
        &env,
        &dev2,
        &["--recovery-key-file", &kf],
        PASSWORD,
    ));
    // Device 1 gets a third key and backs it up.
    env.enroll(0, &[], &[("MAILID_PASSPHRASE", DEV1_PASS)]);
    let v: Value = serde_json::from_str(&ok(&backup(&env, &["--json"]))).unwrap();
    std::fs::write(&key_file, v["recovery_key"].as_str().unwrap()).unwrap();
    let before = mta_set(&env);
    assert_eq!(before.len(), 3);
    // Device 2 knows only two of them.
    let mta = env.mta.url();
    let args = [
        "backup",
        "--email",
        ALICE,
        "--mta",
        &mta,
        "--password-stdin",
    ];
    let line = one_line_failure(&on(&dev2, &args, PASSWORD, "new device pass"));
    assert!(line.contains("this store does not hold"), "{line}");
    assert!(line.contains("--replace"), "{line}");
    assert_eq!(mta_set(&env), before);
    // Device 1's recovery key still opens everything.
    ok(&recover(
        &env,
        &env.path("device3"),
        &["--recovery-key-file", &kf],
        PASSWORD,
    ));
    // With --replace, device 2's set replaces it, and says what it dropped.
    let mut args = args.to_vec();
    args.push("--replace");
    let out = ok(&on(&dev2, &args, PASSWORD, "new device pass"));
    assert!(out.contains("removed the backup of key ID"), "{out}");
    assert_eq!(mta_set(&env).len(), 2);
}

/// A backup that fails part-way (here the MTA's 64-backup limit refuses
/// the second key) puts the earlier ciphertexts back: the MTA's set is
/// unchanged, the earlier recovery key still opens it, and the new share
/// files are gone. A recovery key that cannot be delivered (stdout on a
/// full device) changes nothing either.
#[test]
fn a_failed_backup_leaves_the_earlier_one_working() {
    let env = Env::start(1);
    let vars = [("MAILID_PASSPHRASE", DEV1_PASS)];
    env.enroll(0, &[], &vars);
    let v: Value = serde_json::from_str(&ok(&backup(&env, &["--json"]))).unwrap();
    let key_file = env.path("k.txt");
    std::fs::write(&key_file, v["recovery_key"].as_str().unwrap()).unwrap();
    // 63 backups of other keys (another device's, say): 64 in all.
    let (k1, text) = mta_set(&env).remove(0);
    let http = reqwest::blocking::Client::new();
    for i in 0..63u32 {
        let other = mailid_shared::KeyId::of_spki(&i.to_be_bytes());
        let resp = http
            .put(format!("{}/v1/backups/{other}", env.mta.url()))
            .basic_auth(ALICE, Some(PASSWORD))
            .json(&serde_json::json!({ "encrypted_key": text }))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    env.enroll(0, &[], &vars);
    let before = mta_set(&env);
    assert_eq!(before.len(), 64);
    let shares = env.path("shares");
    let sh = shares.display().to_string();
    let line = one_line_failure(&backup(
        &env,
        &["--replace", "--split", "2-of-3", "--out-dir", &sh],
    ));
    assert!(line.contains("409"), "{line}");
    assert!(line.contains("earlier backups were put back"), "{line}");
    assert_eq!(mta_set(&env), before, "the MTA's set changed");
    assert!(!shares.exists(), "the void shares were left behind");
    // The earlier key still opens k1 (the others are not alice's keys, so a
    // full recovery would fail on them; decrypt k1 with OpenSSL instead).
    let f = env.path("k1.pem");
    std::fs::write(&f, &before.iter().find(|(k, _)| k == &k1).unwrap().1).unwrap();
    let key = std::fs::read_to_string(&key_file).unwrap();
    let pass = format!("pass:{}", key.trim().replace('-', ""));
    openssl_ok(&["pkcs8", "-in", &f.display().to_string(), "-passin", &pass]);

    // Standard output that cannot be written: exit 1, nothing changed.
    let store = env.store().display().to_string();
    let mta = env.mta.url();
    let mut child = std::process::Command::new(bin(CLIENT_BIN))
        .args([
            "--store",
            &store,
            "backup",
            "--email",
            ALICE,
            "--mta",
            &mta,
            "--password-stdin",
            "--replace",
        ])
        .env("MAILID_PASSPHRASE", DEV1_PASS)
        .stdin(std::process::Stdio::piped())
        .stdout(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let line = one_line_failure(&out);
    assert!(line.contains("cannot write to standard output"), "{line}");
    assert_eq!(mta_set(&env), before, "an undelivered key changed the MTA");
}

/// P-384 and RSA-3072 keys go through backup and recovery alike; a wrong
/// account password or a missing store passphrase stops `backup` before
/// any secret exists or anything reaches the MTA.
#[test]
fn other_key_types_and_backup_refusals() {
    let env = Env::start(1);
    let vars = [("MAILID_PASSPHRASE", DEV1_PASS)];
    env.enroll(0, &["--key-type", "p384"], &vars);
    env.enroll(0, &["--key-type", "rsa3072"], &vars);
    let shares = env.path("shares");
    let sh = shares.display().to_string();
    let mta = env.mta.url();
    let args = [
        "backup",
        "--email",
        ALICE,
        "--mta",
        &mta,
        "--password-stdin",
        "--split",
        "2-of-3",
        "--out-dir",
        &sh,
    ];
    let line = one_line_failure(&on(&env.store(), &args, "not the password", DEV1_PASS));
    assert!(line.contains("password"), "{line}");
    assert!(!shares.exists());
    let no_pass = run_env(
        &bin(CLIENT_BIN),
        &[&["--store", &env.store().display().to_string()], &args[..]].concat(),
        Some(&format!("{PASSWORD}\n")),
        &[],
    );
    let line = one_line_failure(&no_pass);
    assert!(line.contains("passphrase"), "{line}");
    assert!(!shares.exists());
    assert!(mta_set(&env).is_empty(), "a refused backup reached the MTA");

    ok(&backup(&env, &["--split", "2-of-3", "--out-dir", &sh]));
    let dev = env.path("device2");
    let (s2, s3) = (
        shares.join("share-2.txt").display().to_string(),
        shares.join("share-3.txt").display().to_string(),
    );
    ok(&recover(
        &env,
        &dev,
        &["--share-file", &s2, "--share-file", &s3],
        PASSWORD,
    ));
    let v = show(&dev, "new device pass");
    let ids = v["identities"].as_array().unwrap();
    let mut types: Vec<&str> = ids
        .iter()
        .map(|i| i["key_type"].as_str().unwrap())
        .collect();
    types.sort();
    assert_eq!(types.len(), 2, "{v}");
    assert!(
        types[0].starts_with("P-384") && types[1].starts_with("RSA"),
        "{types:?}"
    );
    for id in ids {
        let dir = dev.join(id["dir"].as_str().unwrap());
        let key = dir.join("key.pem").display().to_string();
        let cert = dir.join("cert.pem").display().to_string();
        let from_key = openssl_ok(&[
            "pkey",
            "-in",
            &key,
            "-passin",
            "pass:new device pass",
            "-pubout",
        ]);
        let from_cert = openssl_ok(&["x509", "-in", &cert, "-pubkey", "-noout"]);
        assert_eq!(from_key, from_cert, "{}", id["serial"]);
    }
    assert_eq!(
        v["current"]["key_type"]
            .as_str()
            .map(|t| t.starts_with("RSA")),
        Some(true)
    );
}
