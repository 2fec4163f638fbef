//! Helpers of the HSM tests (`ca_hsm.rs`): a private SoftHSM2
//! configuration and token per test, `pkcs11-tool`, a CA with its key in
//! the token wired to a real MTA, and the checks the tests share.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mailid_tests::softhsm::SoftHsm;
use mailid_tests::{bin, free_port, run_env, CaFixture, MtaFixture, Server, CA_BIN};

use super::support::{openssl, Env, PASSWORD};

pub const DOMAIN: &str = "hsm.example";
/// A PIN no log line could hold by chance.
pub const PIN: &str = "pin-5316-b7e2";
pub const SO_PIN: &str = "so-9917";
pub const TOKEN: &str = "mailid";

/// The SoftHSM2 module.
pub fn module() -> String {
    mailid_tests::softhsm::module().display().to_string()
}

/// A private SoftHSM2 configuration with one initialised token.
pub struct Hsm {
    pub token: SoftHsm,
    pub conf: String,
    pub pin_file: PathBuf,
}

impl Hsm {
    pub fn new() -> Hsm {
        let token = SoftHsm::new(TOKEN, PIN, SO_PIN);
        Hsm {
            conf: token.conf.display().to_string(),
            pin_file: token.pin_file.clone(),
            token,
        }
    }

    pub fn env(&self) -> Vec<(&str, &str)> {
        vec![("SOFTHSM2_CONF", self.conf.as_str())]
    }

    /// The key URI of the key pair labelled `object`, PIN from a file.
    pub fn uri(&self, object: &str) -> String {
        format!(
            "pkcs11:token={TOKEN};object={object}?module-path={}&pin-source=file:{}",
            module(),
            self.pin_file.display()
        )
    }

    /// `pkcs11-tool` on the token, logged in.
    pub fn tool(&self, args: &[&str]) -> String {
        let m = module();
        let out = Command::new("pkcs11-tool")
            .args([
                "--module",
                &m,
                "--token-label",
                TOKEN,
                "--login",
                "--pin",
                PIN,
            ])
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .expect("pkcs11-tool (apt-get install opensc)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "pkcs11-tool {args:?}: {text}");
        text
    }

    /// The public key labelled `object` as a SubjectPublicKeyInfo holds
    /// it: the EC point (from `--list-objects`: OpenSC cannot export a
    /// P-384 key) or the RSAPublicKey (from `--read-object`).
    pub fn public_key(&self, object: &str) -> Vec<u8> {
        let objects = self.tool(&["--list-objects", "--type", "pubkey"]);
        if let Some(hex) = objects
            .lines()
            .find_map(|l| l.trim().strip_prefix("EC_POINT:"))
        {
            let hex = hex.trim();
            let der: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            // A DER OCTET STRING of the point (short form length).
            assert_eq!((der[0], usize::from(der[1])), (4, der.len() - 2));
            return der[2..].to_vec();
        }
        let f = self.token.dir.path().join(format!("{object}.pub.der"));
        let out = f.display().to_string();
        self.tool(&[
            "--read-object",
            "--type",
            "pubkey",
            "--label",
            object,
            "-o",
            &out,
        ]);
        spki_bits(&std::fs::read(f).unwrap())
    }
}

/// The subjectPublicKey bits of a DER SubjectPublicKeyInfo.
pub fn spki_bits(der: &[u8]) -> Vec<u8> {
    let spki = mailid_shared::sigverify::parse_spki(der).unwrap();
    spki.subject_public_key.raw_bytes().to_vec()
}

/// The subjectPublicKey bits of the first certificate of a PEM file.
pub fn cert_key(pem_file: &Path) -> Vec<u8> {
    let pem = openssl(&[
        "x509",
        "-in",
        pem_file.to_str().unwrap(),
        "-pubkey",
        "-noout",
    ]);
    spki_bits(&mailid_shared::pem::decode_one(&pem, &["PUBLIC KEY"]).unwrap())
}

/// `mailid-ca --data-dir DIR ARGS` with the token's environment.
pub fn ca_cli(hsm: &Hsm, dir: &Path, args: &[&str]) -> Output {
    let d = dir.display().to_string();
    let mut all = vec!["--data-dir", d.as_str()];
    all.extend_from_slice(args);
    run_env(&bin(CA_BIN), &all, None, &hsm.env())
}

pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `init` of a CA in `root/ca` with `extra` arguments, on the run's
/// database (PostgreSQL in a PostgreSQL run).
pub fn init_ca(hsm: &Hsm, root: &Path, extra: &[&str]) -> CaFixture {
    let dir = root.join("ca");
    let port = free_port();
    let database = mailid_tests::ca_database();
    let base = format!("http://127.0.0.1:{port}");
    let mut args = vec!["init", "--name", "HSM CA", "--base-url", &base];
    args.extend_from_slice(extra);
    if let Some(db) = &database {
        args.extend(["--database", db.url()]);
    }
    ok(ca_cli(hsm, &dir, &args));
    CaFixture {
        dir,
        port,
        server: None,
        database,
    }
}

/// An MTA with `accounts` and a started CA (initialised with `extra`,
/// served with the token's environment plus `serve_env`).
pub fn start(hsm: &Hsm, extra: &[&str], serve_env: &[(&str, &str)], accounts: &[&str]) -> Env {
    let root = mailid_tests::temp_dir();
    let mut mta = MtaFixture::init(root.path(), "mta");
    for a in accounts {
        mta.add_account(a, PASSWORD);
    }
    let mut ca = init_ca(hsm, root.path(), extra);
    let cred = mta.add_ca("test-ca", Some(&ca.ca_pem()));
    mta.start(&[]);
    ca.add_mta(DOMAIN, &mta.url(), "test-ca", &cred);
    let listen = format!("127.0.0.1:{}", ca.port);
    let mut env = hsm.env();
    env.extend_from_slice(serve_env);
    ca.server = Some(Server::start_env(
        &bin(CA_BIN),
        &ca.dir,
        &["--listen", &listen],
        &env,
    ));
    Env {
        root,
        mta,
        ca,
        http: reqwest::Client::new(),
        credential: cred,
    }
}

/// No file anywhere under `dir` holds a private key.
pub fn assert_no_private_key(dir: &Path) {
    assert!(!dir.join("ca-key.pem").exists());
    let mut stack = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files += 1;
                let data = std::fs::read(&p).unwrap_or_default();
                let text = String::from_utf8_lossy(&data);
                assert!(!text.contains("PRIVATE KEY"), "{} holds a key", p.display());
            }
        }
    }
    assert!(files >= 3, "the data dir holds its files");
}

/// `openssl crl -verify` of a PEM CRL against the CA file.
pub fn crl_verifies(dir: &Path, crl_pem: &str, ca: &Path) -> bool {
    let f = dir.join("verify-crl.pem");
    std::fs::write(&f, crl_pem).unwrap();
    let out = Command::new("openssl")
        .args(["crl", "-noout", "-verify", "-in", f.to_str().unwrap()])
        .args(["-CAfile", ca.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    out.status.success() && text.contains("verify OK")
}

/// Runs `serve`, which must exit (within 30 s); its output.
pub fn serve_must_fail(hsm: &Hsm, dir: &Path) -> Output {
    mailid_tests::serve_must_fail(&bin(CA_BIN), dir, &[("SOFTHSM2_CONF", &hsm.conf)])
}

/// Exit 1 with one line on stderr holding `words`, no panic.
pub fn assert_one_line(out: &Output, words: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "not one line: {stderr}");
    assert!(lines[0].starts_with("mailid-ca: "), "{}", lines[0]);
    assert!(
        !stderr.contains("panicked") && !stderr.contains(PIN),
        "{stderr}"
    );
    for w in words {
        assert!(lines[0].contains(w), "{w:?} not in {:?}", lines[0]);
    }
    lines[0].to_string()
}
