//! Harness for mailid's end-to-end tests: finds the real binaries, runs
//! operator commands, and starts services on free loopback ports.
//!
//! Services are started as real processes with `serve --listen ADDR`; the
//! harness waits for the `listening on URL` line on stdout. Their stderr
//! goes to `<data dir>.log` so a failing test can show it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod pg;
pub mod pkilint;
pub mod softhsm;

/// Binary name of the MTA auth service.
pub const MTA_BIN: &str = "mailid-mta-auth";
/// Binary name of the CA.
pub const CA_BIN: &str = "mailid-ca";
/// Binary name of the client.
pub const CLIENT_BIN: &str = "mailid";

/// The directory holding the workspace binaries of the running test's
/// profile (`target/<profile>`), or `MAILID_BIN_DIR` when set.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("MAILID_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// Path of a workspace binary, building the workspace binaries once if it
/// is missing (as with `cargo test -p mailid-tests` alone).
pub fn bin(name: &str) -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let path = bin_dir().join(name);
    if !path.exists() {
        BUILD.call_once(|| {
            let dir = bin_dir();
            let profile_release = dir.file_name().map(|n| n == "release").unwrap_or(false);
            let target = dir.parent().expect("target dir").to_path_buf();
            let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cmd.args(["build", "--bins", "--workspace"])
                .env("CARGO_TARGET_DIR", &target)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if profile_release {
                cmd.arg("--release");
            }
            let st = cmd.status().expect("run cargo build");
            assert!(st.success(), "cargo build --bins failed");
        });
    }
    assert!(path.exists(), "binary {} not found", path.display());
    path
}

/// Resident set size of a process in KiB (`VmRSS` from
/// `/proc/<pid>/status`), or `None` when it cannot be read.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Runs a command to completion, feeding `stdin` when given.
pub fn run(bin_path: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    run_env(bin_path, args, stdin, &[])
}

/// [`run`] with extra environment variables.
pub fn run_env(
    bin_path: &Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Output {
    let mut cmd = Command::new(bin_path);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin_path.display()));
    if let Some(input) = stdin {
        let mut s = child.stdin.take().expect("stdin");
        s.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait for command")
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(bin_path: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = run(bin_path, args, stdin);
    assert!(
        out.status.success(),
        "{} {:?} failed ({}):\nstdout: {}\nstderr: {}",
        bin_path.display(),
        args,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A service process started with `serve`.
pub struct Server {
    child: Option<Child>,
    /// Base URL from the `listening on` line, e.g. `http://127.0.0.1:7700`.
    pub url: String,
    /// Where its stderr goes.
    pub log: PathBuf,
    bin: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl Server {
    /// Starts `bin --data-dir DIR serve ARGS…` and waits (up to 60 s) for it
    /// to say where it listens.
    pub fn start(bin_path: &Path, data_dir: &Path, args: &[&str]) -> Server {
        Self::start_env(bin_path, data_dir, args, &[])
    }

    /// [`Server::start`] with extra environment variables.
    pub fn start_env(
        bin_path: &Path,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut all = vec![
            "--data-dir".to_string(),
            data_dir.display().to_string(),
            "serve".to_string(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let mut s = Server {
            child: None,
            url: String::new(),
            log: PathBuf::from(format!("{}.log", data_dir.display())),
            bin: bin_path.to_path_buf(),
            args: all,
            envs: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open service log");
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => self.url = url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not start; log:\n{}",
                    self.bin.display(),
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
        }
        self.child = Some(child);
    }

    /// Process ID of the running service.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stops the service with SIGTERM (SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the service with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the service again with the same arguments (after stop/kill).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The service's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `bin --data-dir DIR serve --listen 127.0.0.1:0` that must fail:
/// waits up to 30 s (kills it and panics if it is still running). `env`
/// is added to the environment.
pub fn serve_must_fail(bin_path: &Path, dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin_path);
    cmd.args([
        "--data-dir",
        &dir.display().to_string(),
        "serve",
        "--listen",
        "127.0.0.1:0",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    // No ambient secret may rescue a start that must fail.
    .env_remove("MAILID_CA_PASSPHRASE")
    .env_remove("MAILID_PKCS11_PIN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn serve");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("output");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    panic!(
        "{} serve kept running; stdout: {}",
        bin_path.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A fresh temporary directory that is removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mailid-test-")
        .tempdir()
        .expect("temp dir")
}

/// An MTA auth service set up with the operator CLI in `<root>/mta`.
pub struct MtaFixture {
    /// The data directory.
    pub dir: PathBuf,
    /// The running service, once started.
    pub server: Option<Server>,
}

impl MtaFixture {
    /// Runs `mailid-mta-auth init` in a new data directory under `root`.
    pub fn init(root: &Path, name: &str) -> MtaFixture {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("create MTA dir");
        let d = dir.display().to_string();
        run_ok(&bin(MTA_BIN), &["--data-dir", &d, "init"], None);
        MtaFixture { dir, server: None }
    }

    /// Adds an account with a password (through `--password-stdin`).
    pub fn add_account(&self, address: &str, password: &str) {
        let d = self.dir.display().to_string();
        run_ok(
            &bin(MTA_BIN),
            &[
                "--data-dir",
                &d,
                "account",
                "add",
                address,
                "--password-stdin",
            ],
            Some(&format!("{password}\n")),
        );
    }

    /// Registers a CA and returns its credential.
    pub fn add_ca(&self, name: &str, trust_cert: Option<&Path>) -> String {
        let d = self.dir.display().to_string();
        let mut args = vec![
            "--data-dir".to_string(),
            d,
            "ca".into(),
            "add".into(),
            name.into(),
        ];
        if let Some(p) = trust_cert {
            args.push("--trust-cert".into());
            args.push(p.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_ok(&bin(MTA_BIN), &args, None).trim().to_string()
    }

    /// Starts `serve` on a free loopback port with extra arguments; a
    /// restart of the returned server keeps the port.
    pub fn start(&mut self, args: &[&str]) -> &Server {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut all = vec!["--listen", listen.as_str()];
        all.extend_from_slice(args);
        self.server = Some(Server::start(&bin(MTA_BIN), &self.dir, &all));
        self.server.as_ref().expect("started")
    }

    /// Base URL of the running service.
    pub fn url(&self) -> String {
        self.server
            .as_ref()
            .map(|s| s.url.clone())
            .unwrap_or_default()
    }
}

/// Environment variable choosing the CA's database in [`CaFixture`]:
/// `postgres` puts each CA data directory on a fresh PostgreSQL database
/// (from `MAILID_TEST_PG_URL`); anything else (or unset) is SQLite.
pub const BACKEND_VAR: &str = "MAILID_TEST_BACKEND";

/// Whether this run puts CAs on PostgreSQL (see [`BACKEND_VAR`]).
pub fn on_postgres() -> bool {
    std::env::var(BACKEND_VAR).is_ok_and(|v| v == "postgres")
}

/// A fresh PostgreSQL database for a CA in this run (see [`BACKEND_VAR`]);
/// `None` on SQLite.
pub fn ca_database() -> Option<pg::TestDatabase> {
    on_postgres().then(|| pg::fresh_database("ca"))
}

/// A CA set up with the operator CLI in `<root>/<name>`, on a port chosen
/// at init so its base URL (CRL and issuer URLs) is known beforehand.
pub struct CaFixture {
    /// The data directory.
    pub dir: PathBuf,
    /// The loopback port the CA serves on.
    pub port: u16,
    /// The running service, once started.
    pub server: Option<Server>,
    /// Its PostgreSQL database in a PostgreSQL run (dropped after the
    /// server stops).
    pub database: Option<pg::TestDatabase>,
}

impl CaFixture {
    /// Runs `mailid-ca init --name NAME --base-url http://127.0.0.1:PORT`
    /// plus `extra` arguments (e.g. `--key-type rsa3072`), on a fresh
    /// PostgreSQL database when [`on_postgres`].
    pub fn init(root: &Path, name: &str, extra: &[&str]) -> CaFixture {
        Self::init_in(root, name, extra, ca_database())
    }

    /// [`CaFixture::init`] on SQLite whatever the run, for tests about the
    /// data directory's SQLite file itself.
    pub fn init_sqlite(root: &Path, name: &str, extra: &[&str]) -> CaFixture {
        Self::init_in(root, name, extra, None)
    }

    fn init_in(
        root: &Path,
        name: &str,
        extra: &[&str],
        database: Option<pg::TestDatabase>,
    ) -> CaFixture {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("create CA dir");
        let port = free_port();
        let d = dir.display().to_string();
        let base = format!("http://127.0.0.1:{port}");
        let mut args = vec![
            "--data-dir",
            &d,
            "init",
            "--name",
            name,
            "--base-url",
            &base,
        ];
        args.extend_from_slice(extra);
        if let Some(db) = &database {
            args.extend(["--database", db.url()]);
        }
        run_ok(&bin(CA_BIN), &args, None);
        CaFixture {
            dir,
            port,
            server: None,
            database,
        }
    }

    /// `mta add` for a domain, writing the credential to a file first.
    pub fn add_mta(&self, domain: &str, mta_url: &str, ca_name: &str, credential: &str) {
        let cred = self.dir.join(format!("{domain}.credential"));
        std::fs::write(&cred, format!("{credential}\n")).expect("write credential");
        let d = self.dir.display().to_string();
        let c = cred.display().to_string();
        run_ok(
            &bin(CA_BIN),
            &[
                "--data-dir",
                &d,
                "mta",
                "add",
                "--domain",
                domain,
                "--url",
                mta_url,
                "--ca-name",
                ca_name,
                "--credential-file",
                &c,
            ],
            None,
        );
    }

    /// Starts `serve` on the port chosen at init.
    pub fn start(&mut self, args: &[&str]) -> &Server {
        self.start_env(args, &[])
    }

    /// [`CaFixture::start`] with extra environment variables (a running
    /// server is stopped first).
    pub fn start_env(&mut self, args: &[&str], env: &[(&str, &str)]) -> &Server {
        if let Some(mut old) = self.server.take() {
            old.stop();
        }
        let listen = format!("127.0.0.1:{}", self.port);
        let mut all = vec!["--listen", listen.as_str()];
        all.extend_from_slice(args);
        self.server = Some(Server::start_env(&bin(CA_BIN), &self.dir, &all, env));
        self.server.as_ref().expect("started")
    }

    /// Base URL of the CA.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The CA certificate file written by init.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

/// Client-side steps of the flow, done the way a third-party client would:
/// a fresh key and CSR, a code from the MTA, an enrollment at the CA.
pub mod flow {
    use std::time::Duration;

    use mailid_shared::protocol::{EnrollResponse, TotpResponse};
    use mailid_shared::{KeyId, ProblemDocument};

    /// A blocking HTTP client with a generous timeout.
    pub fn http() -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client")
    }

    /// Key types the CA accepts.
    #[derive(Clone, Copy, Debug)]
    pub enum KeyType {
        P256,
        P384,
        Rsa2048,
        Rsa3072,
    }

    /// A key pair with a CSR for one address.
    pub struct Csr {
        pub key: rcgen::KeyPair,
        pub pem: String,
        pub key_id: KeyId,
    }

    /// Generates a key and a CSR with CN and rfc822Name SAN = `address`.
    pub fn csr(address: &str, kt: KeyType) -> Csr {
        let key = match kt {
            KeyType::P256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyType::P384 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyType::Rsa2048 => {
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
            KeyType::Rsa3072 => {
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072)
            }
        }
        .expect("generate key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, address);
        params.subject_alt_names = vec![rcgen::SanType::Rfc822Name(
            address.try_into().expect("ia5 address"),
        )];
        let pem = params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("csr pem");
        let key_id = KeyId::of_spki(&rcgen::PublicKeyData::subject_public_key_info(&key));
        Csr { key, pem, key_id }
    }

    /// Asks the MTA for a code bound to `key_id` with HTTP Basic.
    pub fn totp(mta_url: &str, address: &str, password: &str, key_id: &KeyId) -> TotpResponse {
        let resp = http()
            .post(format!("{mta_url}/v1/totp"))
            .basic_auth(address, Some(password))
            .json(&serde_json::json!({ "key_id": key_id }))
            .send()
            .expect("POST /v1/totp");
        assert_eq!(resp.status(), 200, "POST /v1/totp: {:?}", resp.text());
        resp.json().expect("TOTP answer")
    }

    /// Posts `{csr, totp}` to the CA: the answer, or the status and problem.
    pub fn enroll(
        ca_url: &str,
        csr_pem: &str,
        code: &str,
    ) -> Result<EnrollResponse, (u16, ProblemDocument)> {
        let resp = http()
            .post(format!("{ca_url}/v1/certificates"))
            .json(&serde_json::json!({ "csr": csr_pem, "totp": code }))
            .send()
            .expect("POST /v1/certificates");
        let status = resp.status().as_u16();
        if status == 201 {
            Ok(resp.json().expect("enrollment answer"))
        } else {
            Err((status, resp.json().expect("problem document")))
        }
    }

    /// The whole flow for one new key; panics unless the CA answers 201.
    pub fn enroll_new_key(
        mta_url: &str,
        ca_url: &str,
        address: &str,
        password: &str,
        kt: KeyType,
    ) -> (Csr, EnrollResponse) {
        let c = csr(address, kt);
        let code = totp(mta_url, address, password, &c.key_id);
        match enroll(ca_url, &c.pem, &code.totp) {
            Ok(r) => (c, r),
            Err((s, p)) => panic!("enrollment failed: {s} {p:?}"),
        }
    }
}
