//! Helpers of the CA end-to-end tests (included by the `ca_*` tests with
//! `#[path]`): a real MTA and a real CA wired together, CSRs made by the
//! `openssl` command line and by rcgen, codes from the MTA, `openssl`
//! verification.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mailid_shared::KeyId;
use mailid_tests::{CaFixture, MtaFixture};
use serde_json::{json, Value};

/// Password of every test account.
pub const PASSWORD: &str = "correct horse battery staple";

/// A running MTA and CA wired together for one or more domains.
pub struct Env {
    pub root: tempfile::TempDir,
    pub mta: MtaFixture,
    pub ca: CaFixture,
    pub http: reqwest::Client,
    /// The credential the MTA gave the CA.
    pub credential: String,
}

impl Env {
    /// An MTA serving `domain` with `accounts`, and a CA (`init` with
    /// `ca_extra`) routing `domain` to it; both started.
    pub fn start(ca_extra: &[&str], domain: &str, accounts: &[&str]) -> Env {
        Self::start_with(ca_extra, &[], domain, accounts)
    }

    /// [`Env::start`] with extra `serve` arguments for the MTA.
    pub fn start_with(
        ca_extra: &[&str],
        mta_args: &[&str],
        domain: &str,
        accounts: &[&str],
    ) -> Env {
        Self::start_in(mta_args, domain, accounts, |root| {
            CaFixture::init(root, "ca", ca_extra)
        })
    }

    /// [`Env::start`] with the CA on SQLite in any run (e.g. to move it to
    /// PostgreSQL with `db migrate`).
    pub fn start_sqlite(domain: &str, accounts: &[&str]) -> Env {
        Self::start_in(&[], domain, accounts, |root| {
            CaFixture::init_sqlite(root, "ca", &[])
        })
    }

    fn start_in(
        mta_args: &[&str],
        domain: &str,
        accounts: &[&str],
        make_ca: impl FnOnce(&Path) -> CaFixture,
    ) -> Env {
        let root = mailid_tests::temp_dir();
        let mut mta = MtaFixture::init(root.path(), "mta");
        for a in accounts {
            mta.add_account(a, PASSWORD);
        }
        let mut ca = make_ca(root.path());
        let cred = mta.add_ca("test-ca", Some(&ca.ca_pem()));
        mta.start(mta_args);
        ca.add_mta(domain, &mta.url(), "test-ca", &cred);
        ca.start(&[]);
        Env {
            root,
            mta,
            ca,
            http: reqwest::Client::new(),
            credential: cred,
        }
    }

    /// A scratch file path in the test's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// Asks the MTA for a code bound to `key_id`.
    pub async fn totp(&self, account: &str, key_id: &KeyId) -> String {
        let resp = self
            .http
            .post(format!("{}/v1/totp", self.mta.url()))
            .basic_auth(account, Some(PASSWORD))
            .json(&json!({ "key_id": key_id.to_string() }))
            .send()
            .await
            .expect("MTA reachable");
        assert_eq!(resp.status(), 200, "POST /v1/totp for {account}");
        let v: Value = resp.json().await.expect("TOTP JSON");
        v["totp"].as_str().expect("totp field").to_string()
    }

    /// Fetches a code for `csr`'s key in a task of its own.
    pub fn spawn_totp(
        &self,
        account: String,
        csr: Csr,
    ) -> tokio::task::JoinHandle<(String, Csr, String)> {
        let http = self.http.clone();
        let url = format!("{}/v1/totp", self.mta.url());
        tokio::spawn(async move {
            let resp = http
                .post(url)
                .basic_auth(&account, Some(PASSWORD))
                .json(&json!({ "key_id": csr.key_id.to_string() }))
                .send()
                .await
                .expect("MTA reachable");
            assert_eq!(resp.status(), 200, "POST /v1/totp for {account}");
            let v: Value = resp.json().await.expect("TOTP JSON");
            let code = v["totp"].as_str().expect("totp field").to_string();
            (account, csr, code)
        })
    }

    /// `POST /v1/certificates`; the status and the JSON answer.
    pub async fn enroll(&self, csr: &str, totp: &str) -> (u16, Value) {
        self.post("/v1/certificates", json!({ "csr": csr, "totp": totp }))
            .await
    }

    /// POSTs JSON to the CA.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.ca.url()))
            .json(&body)
            .send()
            .await
            .expect("CA reachable");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// GETs JSON from the CA.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.ca.url()))
            .send()
            .await
            .expect("CA reachable");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// GETs text from the CA.
    pub async fn get_text(&self, path: &str) -> String {
        let resp = self
            .http
            .get(format!("{}{path}", self.ca.url()))
            .send()
            .await
            .expect("CA reachable");
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.text().await.expect("text")
    }

    /// A fresh key and CSR for `account` plus a code for it; enrolls and
    /// asserts 201. Returns the answer.
    pub async fn enroll_new(&self, account: &str, kind: &str) -> Value {
        let csr = Csr::openssl(self.root.path(), kind, account, &[]);
        let code = self.totp(account, &csr.key_id).await;
        let (status, v) = self.enroll(&csr.pem, &code).await;
        assert_eq!(status, 201, "enroll {account}: {v}");
        v
    }

    /// Polls `GET /v1/crl.pem` until `pred` holds for it (or panics after
    /// `limit`); returns the CRL text.
    pub async fn wait_crl(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let crl = self.get_text("/v1/crl.pem").await;
            if pred(&crl) {
                return crl;
            }
            assert!(
                start.elapsed() < limit,
                "CRL condition not met within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Writes the served CRL and the CA chain to files for `openssl`.
    pub async fn trust_files(&self) -> (PathBuf, PathBuf) {
        let crl = self.path("served-crl.pem");
        std::fs::write(&crl, self.get_text("/v1/crl.pem").await).unwrap();
        let ca = self.path("served-ca.pem");
        std::fs::write(&ca, self.get_text("/v1/ca.pem").await).unwrap();
        (ca, crl)
    }
}

/// A key and CSR.
pub struct Csr {
    pub pem: String,
    pub key_id: KeyId,
    pub key_path: Option<PathBuf>,
}

fn tmp_name(dir: &Path, stem: &str) -> PathBuf {
    dir.join(format!("{stem}-{}", rand_suffix()))
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs openssl; panics with its stderr when it fails.
pub fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The strong key ID of a PEM CSR's public key (through `openssl req -pubkey`).
pub fn csr_key_id(dir: &Path, csr_pem: &str) -> KeyId {
    let p = tmp_name(dir, "csr");
    std::fs::write(&p, csr_pem).unwrap();
    let pubkey = openssl(&["req", "-in", p.to_str().unwrap(), "-pubkey", "-noout"]);
    let der = mailid_shared::pem::decode_one(&pubkey, &["PUBLIC KEY"]).unwrap();
    KeyId::of_spki(&der)
}

impl Csr {
    /// A key made by `openssl genpkey` (`p256`, `p384`, `p521`,
    /// `p256-explicit` (explicit curve parameters), `ed25519`, or `rsaBITS`) and a CSR by `openssl req` with `extra`
    /// arguments (defaults: CN and rfc822Name SAN = `account`).
    pub fn openssl(dir: &Path, kind: &str, account: &str, extra: &[&str]) -> Csr {
        let key = tmp_name(dir, "key");
        let k = key.to_str().unwrap();
        match kind {
            "p256" | "p384" | "p521" => {
                let opt = format!("ec_paramgen_curve:P-{}", &kind[1..]);
                openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", &opt, "-out", k]);
            }
            "p256-explicit" => {
                openssl(&[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-pkeyopt",
                    "ec_param_enc:explicit",
                    "-out",
                    k,
                ]);
            }
            "ed25519" => {
                openssl(&["genpkey", "-algorithm", "ED25519", "-out", k]);
            }
            rsa => {
                let bits = rsa.strip_prefix("rsa").expect("key kind");
                let opt = format!("rsa_keygen_bits:{bits}");
                openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", &opt, "-out", k]);
            }
        }
        let subj = format!("/CN={account}");
        let san = format!("subjectAltName=email:{account}");
        let mut args = vec!["req", "-new", "-key", k];
        if extra.is_empty() {
            args.extend_from_slice(&["-subj", &subj, "-addext", &san]);
        } else {
            args.extend_from_slice(extra);
        }
        let pem = openssl(&args);
        let key_id = csr_key_id(dir, &pem);
        Csr {
            pem,
            key_id,
            key_path: Some(key),
        }
    }

    /// A key and CSR made by our own code (rcgen).
    pub fn rcgen(kind: &str, account: &str) -> Csr {
        use rcgen::{KeyPair, PublicKeyData};
        let key = match kind {
            "p256" => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            "p384" => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            "rsa2048" => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
            "rsa3072" => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072)
            }
            other => panic!("no rcgen key kind {other}"),
        }
        .unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, account);
        p.subject_alt_names = vec![rcgen::SanType::Rfc822Name(account.try_into().unwrap())];
        let pem = p.serialize_request(&key).unwrap().pem().unwrap();
        Csr {
            pem,
            key_id: KeyId::of_spki(&key.subject_public_key_info()),
            key_path: None,
        }
    }
}

/// `openssl verify -purpose smimesign -CAfile CA -crl_check -CRLfile CRL`
/// on a PEM certificate; `(ok, output)`.
pub fn verify(
    dir: &Path,
    cert_pem: &str,
    ca: &Path,
    crl: &Path,
    untrusted: Option<&Path>,
) -> (bool, String) {
    let cert = tmp_name(dir, "cert");
    std::fs::write(&cert, cert_pem).unwrap();
    let mut args = vec![
        "verify".to_string(),
        "-purpose".into(),
        "smimesign".into(),
        "-CAfile".into(),
        ca.display().to_string(),
        "-crl_check".into(),
        "-CRLfile".into(),
        crl.display().to_string(),
    ];
    if let Some(u) = untrusted {
        args.push("-untrusted".into());
        args.push(u.display().to_string());
    }
    args.push(cert.display().to_string());
    let out = Command::new("openssl")
        .args(&args)
        .output()
        .expect("openssl verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.contains(": OK"), text)
}

/// `openssl x509 -text` of a PEM certificate.
pub fn x509_text(dir: &Path, cert_pem: &str) -> String {
    let p = tmp_name(dir, "x509");
    std::fs::write(&p, cert_pem).unwrap();
    openssl(&["x509", "-in", p.to_str().unwrap(), "-noout", "-text"])
}

/// `openssl crl -text` of a PEM CRL.
pub fn crl_text(dir: &Path, crl_pem: &str) -> String {
    let p = tmp_name(dir, "crl");
    std::fs::write(&p, crl_pem).unwrap();
    openssl(&["crl", "-in", p.to_str().unwrap(), "-noout", "-text"])
}

/// The lines under an `openssl -text` heading (more indented than it).
pub fn section(text: &str, heading: &str) -> String {
    let mut lines = text.lines();
    let Some(head) = lines.by_ref().find(|l| l.trim_start().starts_with(heading)) else {
        return String::new();
    };
    let indent = head.len() - head.trim_start().len();
    lines
        .take_while(|l| l.len() - l.trim_start().len() > indent)
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Colon-separated upper-case hex, as openssl prints key identifiers.
pub fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Whether `crl_text` lists `serial` (lower-case hex as the CA gives it).
pub fn crl_lists(crl_text: &str, serial: &str) -> bool {
    crl_text
        .to_ascii_lowercase()
        .contains(&format!("serial number: {serial}"))
}

/// The CRL number of an `openssl crl -text` output.
pub fn crl_number(crl_text: &str) -> u64 {
    section(crl_text, "X509v3 CRL Number:")
        .trim()
        .parse()
        .expect("CRL number")
}

/// The problem code of an error answer.
pub fn code(v: &Value) -> String {
    v["type"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("urn:mailid:error:")
        .to_string()
}

/// An offline root as an operator makes it with `openssl` (P-384,
/// CA:TRUE, keyCertSign + cRLSign), in a directory of its own.
pub struct OfflineRoot {
    pub dir: tempfile::TempDir,
}

impl OfflineRoot {
    /// Makes `root.key` and `root.pem`.
    pub fn create() -> OfflineRoot {
        let root = OfflineRoot {
            dir: mailid_tests::temp_dir(),
        };
        let (key, cert) = (root.path("root.key"), root.path("root.pem"));
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            &key,
        ]);
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &key,
            "-subj",
            "/O=Offline/CN=Offline Root",
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            &cert,
        ]);
        root
    }

    /// A file in the root's directory.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Signs the intermediate's CSR in `csr` (CA:TRUE pathlen 0,
    /// keyCertSign + cRLSign, SKI and AKI) and writes `chain.pem`, the
    /// intermediate first and the root last; gives the chain's path.
    pub fn sign_intermediate(&self, csr: &str) -> String {
        let ext = self.path("ext.cnf");
        std::fs::write(
            &ext,
            "[v3]\nbasicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
        )
        .unwrap();
        let (int, root) = (self.path("int.pem"), self.path("root.pem"));
        openssl(&[
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            &root,
            "-CAkey",
            &self.path("root.key"),
            "-CAcreateserial",
            "-days",
            "1825",
            "-extfile",
            &ext,
            "-extensions",
            "v3",
            "-out",
            &int,
        ]);
        let chain = self.path("chain.pem");
        std::fs::write(
            &chain,
            std::fs::read_to_string(&int).unwrap() + &std::fs::read_to_string(&root).unwrap(),
        )
        .unwrap();
        chain
    }
}
