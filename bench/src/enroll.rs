//! Enrollments through HTTP against the real `mailid-ca` and
//! `mailid-mta-auth` release binaries, with durable commits as shipped.
//!
//! [`Env`] is the set-up (not timed): an MTA over HTTPS with accounts that
//! log in with TLS client certificates or passwords, a CA with the chosen
//! key type routed to it, and optionally certificates seeded straight into
//! the CA's database. [`Env::measure`] times one batch of jobs (one
//! distinct key per job, so no two jobs in flight share a single-use code)
//! in one of three modes:
//! * `ca`: codes are fetched beforehand; only `POST /v1/certificates` is
//!   timed (it still includes the CA → MTA check, the revocation of the
//!   previous identity and the durable commit);
//! * `full`: each job logs in at the MTA with its TLS client certificate,
//!   gets a code, then enrolls — the whole client flow;
//! * `full-password`: the same with HTTP Basic (Argon2id) login.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mailid_shared::protocol::TotpResponse;
use mailid_shared::KeyId;
use rcgen::PublicKeyData;

use crate::server::{operator, Service};
use crate::validate::percentile;

/// Options of `mailid-bench enroll`.
#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// `ca` (codes fetched beforehand), `full` (TLS client-certificate login
    /// and enrollment per job) or `full-password` (HTTP Basic login).
    #[arg(long, default_value = "ca")]
    pub mode: String,
    /// CSR key type: p256 or rsa2048.
    #[arg(long, default_value = "p256")]
    pub key_type: String,
    /// CA key type (as `mailid-ca init --key-type`); `softhsm-TYPE` (e.g.
    /// `softhsm-p256`) keeps a key of that type in a throwaway SoftHSM2
    /// token (`init --key-uri`).
    #[arg(long, default_value = "p256")]
    pub ca_key_type: String,
    /// Concurrency levels to measure, comma separated.
    #[arg(long, default_value = "1,8,32")]
    pub concurrency: String,
    /// Enrollments per measurement.
    #[arg(long, default_value_t = 1000)]
    pub requests: usize,
    /// Measurements per level (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Accounts at the MTA.
    #[arg(long, default_value_t = 100)]
    pub accounts: usize,
    /// Certificates seeded into the CA's database before it starts.
    #[arg(long, default_value_t = 0)]
    pub seed: usize,
    /// Processes of each service (2: a second replica of each on the same
    /// PostgreSQL database, given by `MAILID_DATABASE`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub replicas: u8,
    /// Directory holding the release binaries (default: beside this one).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

/// How a measurement gets its codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ca,
    Full,
    FullPassword,
}

impl std::str::FromStr for Mode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Mode> {
        Ok(match s {
            "ca" => Mode::Ca,
            "full" => Mode::Full,
            "full-password" => Mode::FullPassword,
            m => anyhow::bail!("unknown mode {m} (ca, full, full-password)"),
        })
    }
}

/// One enrollment to make: an account and a CSR for a key of its own.
#[derive(Clone)]
pub struct Job {
    account: usize,
    key_id: KeyId,
    csr: String,
}

impl Job {
    /// The CSR, PEM.
    pub fn csr(&self) -> &str {
        &self.csr
    }
}

/// One timed batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU time per enrollment (user + system), microseconds: CA, MTA and
    /// this load generator.
    pub cpu_us: [f64; 3],
}

impl Sample {
    /// The figures of one timed run: `lat` (each call's microseconds,
    /// sorted here), its wall time and the CPU µs per call of CA, MTA and
    /// load generator.
    pub fn of_run(lat: &mut [u64], elapsed: Duration, cpu_us: [f64; 3]) -> Sample {
        lat.sort_unstable();
        Sample {
            rate: lat.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            p50_ms: percentile(lat, 0.5) as f64 / 1000.0,
            p99_ms: percentile(lat, 0.99) as f64 / 1000.0,
            cpu_us,
        }
    }

    /// The median of each figure over `samples`.
    pub fn median(samples: &[Sample]) -> Sample {
        let med = |f: fn(&Sample) -> f64| {
            let mut v: Vec<f64> = samples.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        Sample {
            rate: med(|s| s.rate),
            p50_ms: med(|s| s.p50_ms),
            p99_ms: med(|s| s.p99_ms),
            cpu_us: [
                med(|s| s.cpu_us[0]),
                med(|s| s.cpu_us[1]),
                med(|s| s.cpu_us[2]),
            ],
        }
    }
}

fn make_csr(address: &str, key: &rcgen::KeyPair) -> anyhow::Result<String> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name
        .push(rcgen::DnType::CommonName, address);
    p.subject_alt_names = vec![rcgen::SanType::Rfc822Name(address.try_into()?)];
    Ok(p.serialize_request(key)?.pem()?)
}

fn new_key(kind: &str) -> anyhow::Result<rcgen::KeyPair> {
    Ok(match kind {
        "p256" => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        "rsa2048" => {
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)?
        }
        other => anyhow::bail!("unsupported CSR key type {other} (p256, rsa2048)"),
    })
}

/// `n` jobs spread round-robin over `accounts`, each with its own key of
/// type `key_type` (keys are made on the blocking pool, two at a time).
pub async fn make_jobs(accounts: &[String], key_type: &str, n: usize) -> anyhow::Result<Vec<Job>> {
    let mut tasks = Vec::new();
    for part in 0..2 {
        let (accounts, key_type) = (accounts.to_vec(), key_type.to_string());
        tasks.push(tokio::task::spawn_blocking(move || {
            (part..n)
                .step_by(2)
                .map(|i| {
                    let account = i % accounts.len();
                    let key = new_key(&key_type)?;
                    Ok(Job {
                        account,
                        key_id: KeyId::of_spki(&key.subject_public_key_info()),
                        csr: make_csr(&accounts[account], &key)?,
                    })
                })
                .collect::<anyhow::Result<Vec<Job>>>()
        }));
    }
    let mut jobs = Vec::with_capacity(n);
    for t in tasks {
        jobs.extend(t.await??);
    }
    Ok(jobs)
}

fn body(csr: &str, code: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "csr": csr, "totp": code })).unwrap_or_default()
}

/// Resident and peak resident memory of a process, in KiB.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Sets `section.key = value` for each pair in a service's config.json.
fn set_config(
    dir: &Path,
    section: &str,
    pairs: &[(&str, serde_json::Value)],
) -> anyhow::Result<()> {
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let limits = cfg
        .get_mut(section)
        .and_then(|v| v.as_object_mut())
        .with_context(|| format!("{} has no {section}", path.display()))?;
    for (k, v) in pairs {
        limits.insert(k.to_string(), v.clone());
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg)?)?;
    Ok(())
}

/// The per-client-address limits, as a deployment behind a proxy or a
/// webmail front end would set them: the whole load comes from one
/// loopback address, where real services see many clients. The CA's
/// per-IP bucket (1,000/s, burst 5,000 as shipped) goes to 1,000,000/s
/// (the limiter still runs on every request); the MTA's per-address
/// bucket of failed logins (burst 10 as shipped, and a token is held
/// while a password is checked, so 32 correct password logins at once
/// from one address get 429) is off. Per-account limits stay as shipped.
fn one_address_limits(ca_dir: &Path, mta_dir: &Path) -> anyhow::Result<()> {
    set_config(
        ca_dir,
        "rate_limits",
        &[
            ("ip_per_second", 1_000_000.0.into()),
            ("ip_burst", 1_000_000.into()),
        ],
    )?;
    set_config(
        mta_dir,
        "login_limits",
        &[("ip_failures_per_minute", 0.into())],
    )
}

/// The running pair of services and the clients that talk to them.
pub struct Env {
    _tmp: tempfile::TempDir,
    /// The token of a `softhsm-…` CA key.
    _hsm: Option<crate::hsm::SoftHsm>,
    pub mta: Service,
    pub ca: Service,
    /// Second replicas (PostgreSQL only): a copy of each data dir served
    /// by its own process on the same database.
    pub mta2: Option<Service>,
    pub ca2: Option<Service>,
    pub accounts: Vec<String>,
    passwords: Vec<String>,
    tls_clients: Vec<reqwest::Client>,
    password_client: reqwest::Client,
    pub(crate) http: reqwest::Client,
}

/// The release binaries' directory: `bin_dir` or the bench binary's own.
pub fn bin_dir(bin_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match bin_dir {
        Some(d) => d.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("bench binary has no directory")?
            .to_path_buf(),
    };
    anyhow::ensure!(
        dir.join("mailid-mta-auth").exists() && dir.join("mailid-ca").exists(),
        "build the services first: cargo build --release --workspace"
    );
    Ok(dir)
}

impl Env {
    /// Sets up and starts an MTA with `accounts` accounts and a CA with a
    /// `ca_key_type` key and `seed` certificates already in its database;
    /// with `replicas` 2 (on PostgreSQL: `MAILID_DATABASE` set), a second
    /// process of each, the load spread over both and the CA's MTA route
    /// through a round-robin proxy.
    pub async fn start(
        bins: &Path,
        accounts: usize,
        ca_key_type: &str,
        seed: usize,
        replicas: usize,
    ) -> anyhow::Result<Env> {
        let (mta_bin, ca_bin) = (bins.join("mailid-mta-auth"), bins.join("mailid-ca"));
        let tmp = tempfile::tempdir()?;
        let (mta_dir, ca_dir) = (tmp.path().join("mta"), tmp.path().join("ca"));
        operator(&mta_bin, &mta_dir, &["init"], None).await?;
        let names: Vec<String> = (0..accounts)
            .map(|i| format!("user{i}@bench.example.com"))
            .collect();
        let passwords: Vec<String> = (0..accounts)
            .map(|_| format!("pw-{:016x}", rand::random::<u64>()))
            .collect();
        // Account creation runs Argon2 once per account: two at a time.
        for pair in names.iter().zip(&passwords).collect::<Vec<_>>().chunks(2) {
            let mut tasks = Vec::new();
            for (a, pw) in pair {
                let (bin, dir, a, pw) = (
                    mta_bin.clone(),
                    mta_dir.clone(),
                    a.to_string(),
                    format!("{pw}\n"),
                );
                tasks.push(tokio::spawn(async move {
                    operator(
                        &bin,
                        &dir,
                        &["account", "add", &a, "--password-stdin"],
                        Some(&pw),
                    )
                    .await
                }));
            }
            for t in tasks {
                t.await??;
            }
        }
        let hsm = match ca_key_type.strip_prefix("softhsm-") {
            Some(_) => Some(crate::hsm::SoftHsm::new().await?),
            None => None,
        };
        let mut init = vec![
            "init",
            "--name",
            "mailid bench CA",
            "--key-type",
            ca_key_type.strip_prefix("softhsm-").unwrap_or(ca_key_type),
            "--base-url",
            "http://pki.example.com",
        ];
        if let Some(h) = &hsm {
            init.extend(["--key-uri", h.uri.as_str()]);
        }
        operator(&ca_bin, &ca_dir, &init, None).await?;
        one_address_limits(&ca_dir, &mta_dir)?;
        if seed > 0 {
            let db = ca_dir.join("ca.sqlite");
            tokio::task::spawn_blocking(move || crate::seed::certificates(&db, seed, 0)).await??;
        }
        let cred = operator(&mta_bin, &mta_dir, &["ca", "add", "bench-ca"], None).await?;
        let cred_file = tmp.path().join("cred");
        std::fs::write(&cred_file, cred.trim())?;
        let crate::pki::MtaTls {
            server_ca,
            client_ca,
            args: mta_args,
        } = crate::pki::MtaTls::new(tmp.path())?;
        let sca = tmp.path().join("server-ca.pem");
        std::fs::write(&sca, &server_ca.pem)?;
        let mta = Service::start(&mta_bin, &mta_dir, &mta_args).await?;
        let (mta2, route) = if replicas > 1 {
            let dir2 = tmp.path().join("mta2");
            crate::replicas::copy_dir(&mta_dir, &dir2).await?;
            let mta2 = Service::start(&mta_bin, &dir2, &mta_args).await?;
            let lb = crate::replicas::round_robin(vec![
                crate::replicas::addr_of(&mta.url)?,
                crate::replicas::addr_of(&mta2.url)?,
            ])
            .await?;
            (Some(mta2), format!("https://{lb}"))
        } else {
            (None, mta.url.clone())
        };
        operator(
            &ca_bin,
            &ca_dir,
            &[
                "mta",
                "add",
                "--domain",
                "bench.example.com",
                "--url",
                &route,
                "--ca-name",
                "bench-ca",
                "--credential-file",
                &cred_file.display().to_string(),
            ],
            None,
        )
        .await?;
        // The CA calls the MTA over HTTPS and takes the bench server CA
        // from SSL_CERT_FILE (its verifier uses the system roots).
        let ca2 = if replicas > 1 {
            let dir2 = tmp.path().join("ca2");
            crate::replicas::copy_dir(&ca_dir, &dir2).await?;
            Some(Service::start_trusting(&ca_bin, &dir2, &[], Some(&sca)).await?)
        } else {
            None
        };
        let ca = Service::start_trusting(&ca_bin, &ca_dir, &[], Some(&sca))
            .await
            .context("starting the CA")?;
        let root = reqwest::Certificate::from_pem(server_ca.pem.as_bytes())?;
        let tls_clients = client_ca.login_clients(&root, &names)?;
        let password_client = crate::server::client().tls_certs_only([root]).build()?;
        let http = crate::server::client().build()?;
        Ok(Env {
            _tmp: tmp,
            _hsm: hsm,
            mta,
            ca,
            mta2,
            ca2,
            accounts: names,
            passwords,
            tls_clients,
            password_client,
            http,
        })
    }

    /// The MTA a job's account talks to (replicas split the accounts).
    fn mta_url(&self, job: &Job) -> &str {
        match &self.mta2 {
            Some(m) if job.account % 2 == 1 => &m.url,
            _ => &self.mta.url,
        }
    }

    /// The CA job `i` enrolls at (replicas take turns).
    pub(crate) fn ca_url(&self, i: usize) -> &str {
        match &self.ca2 {
            Some(c) if i % 2 == 1 => &c.url,
            _ => &self.ca.url,
        }
    }

    /// CPU seconds used so far by the CA and MTA processes (replicas
    /// summed) and the load generator.
    pub(crate) fn cpu(&self) -> [f64; 3] {
        let sum = |a: &Service, b: &Option<Service>| {
            a.cpu_seconds().unwrap_or(0.0)
                + b.as_ref().and_then(Service::cpu_seconds).unwrap_or(0.0)
        };
        [
            sum(&self.ca, &self.ca2),
            sum(&self.mta, &self.mta2),
            crate::server::cpu_seconds("/proc/self/stat").unwrap_or(0.0),
        ]
    }

    async fn code(&self, mode: Mode, job: &Job) -> anyhow::Result<String> {
        let mta = self.mta_url(job);
        let req = match mode {
            Mode::FullPassword => self
                .password_client
                .post(format!("{mta}/v1/totp"))
                .basic_auth(
                    &self.accounts[job.account],
                    Some(&self.passwords[job.account]),
                ),
            _ => self.tls_clients[job.account].post(format!("{mta}/v1/totp")),
        };
        let r = req
            .json(&serde_json::json!({ "key_id": job.key_id }))
            .send()
            .await?;
        let status = r.status();
        if !status.is_success() {
            anyhow::bail!("POST /v1/totp: {status} {}", r.text().await?);
        }
        Ok(r.json::<TotpResponse>().await?.totp)
    }

    async fn enroll(&self, i: usize, body: Vec<u8>) -> anyhow::Result<()> {
        let r = self
            .http
            .post(format!("{}/v1/certificates", self.ca_url(i)))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        anyhow::ensure!(
            status.as_u16() == 201,
            "POST /v1/certificates: {status} {text}"
        );
        Ok(())
    }

    /// Runs `f` over `0..n` with `concurrency` tasks; returns each call's
    /// latency in microseconds and the elapsed time.
    pub(crate) async fn run_concurrently<F, Fut>(
        n: usize,
        concurrency: usize,
        f: F,
    ) -> anyhow::Result<(Vec<u64>, Duration)>
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
    {
        let f = Arc::new(f);
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..concurrency.max(1) {
            let (f, next) = (f.clone(), next.clone());
            workers.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let t0 = Instant::now();
                    f(i).await?;
                    lat.push(t0.elapsed().as_micros() as u64);
                }
                Ok::<_, anyhow::Error>(lat)
            }));
        }
        let mut lat = Vec::with_capacity(n);
        for w in workers {
            lat.extend(w.await??);
        }
        Ok((lat, start.elapsed()))
    }

    /// Enrolls every job once with `concurrency` requests in flight and
    /// returns the timed figures.
    pub async fn measure(
        self: &Arc<Self>,
        mode: Mode,
        jobs: &Arc<Vec<Job>>,
        concurrency: usize,
    ) -> anyhow::Result<Sample> {
        // In `ca` mode the codes are fetched first (untimed, concurrently,
        // right before the run so none expires).
        let bodies: Arc<Option<Vec<Vec<u8>>>> = Arc::new(if mode == Mode::Ca {
            let out = Arc::new(std::sync::Mutex::new(vec![Vec::new(); jobs.len()]));
            let (env, js, o) = (self.clone(), jobs.clone(), out.clone());
            Self::run_concurrently(jobs.len(), 32, move |i| {
                let (env, js, o) = (env.clone(), js.clone(), o.clone());
                async move {
                    let code = env.code(Mode::Ca, &js[i]).await?;
                    if let Ok(mut v) = o.lock() {
                        v[i] = body(&js[i].csr, &code);
                    }
                    Ok(())
                }
            })
            .await?;
            let v = out.lock().map(|v| v.clone()).unwrap_or_default();
            Some(v)
        } else {
            None
        });
        let cpu0 = self.cpu();
        let (env, js) = (self.clone(), jobs.clone());
        let (mut lat, elapsed) = Self::run_concurrently(jobs.len(), concurrency, move |i| {
            let (env, js, bodies) = (env.clone(), js.clone(), bodies.clone());
            async move {
                let b = match bodies.as_ref() {
                    Some(b) => b[i].clone(),
                    None => body(&js[i].csr, &env.code(mode, &js[i]).await?),
                };
                env.enroll(i, b).await
            }
        })
        .await?;
        let cpu1 = self.cpu();
        let n = lat.len().max(1) as f64;
        let cpu_us = [0, 1, 2].map(|i| (cpu1[i] - cpu0[i]) * 1e6 / n);
        Ok(Sample::of_run(&mut lat, elapsed, cpu_us))
    }

    /// Stops every service process of a shared `Env` whose measurements
    /// have all finished.
    pub async fn shutdown(env: Arc<Env>) -> anyhow::Result<()> {
        Arc::try_unwrap(env)
            .map_err(|_| anyhow::anyhow!("services still in use"))?
            .stop()
            .await
    }

    /// Stops every service process.
    pub async fn stop(self) -> anyhow::Result<()> {
        for s in [Some(self.ca), self.ca2, Some(self.mta), self.mta2]
            .into_iter()
            .flatten()
        {
            s.stop().await?;
        }
        Ok(())
    }
}

/// Runs `mailid-bench enroll` and prints one line per concurrency level.
pub async fn run(opts: Opts) -> anyhow::Result<()> {
    let mode: Mode = opts.mode.parse()?;
    let levels: Vec<usize> = opts
        .concurrency
        .split(',')
        .map(|s| s.trim().parse().context("--concurrency"))
        .collect::<anyhow::Result<_>>()?;
    let bins = bin_dir(opts.bin_dir.as_deref())?;
    let env = Arc::new(
        Env::start(
            &bins,
            opts.accounts,
            &opts.ca_key_type,
            opts.seed,
            opts.replicas.into(),
        )
        .await?,
    );
    let jobs = Arc::new(make_jobs(&env.accounts, &opts.key_type, opts.requests).await?);
    println!(
        "enroll: mode {}, CSR key {}, CA key {}, {} enrollments per run over {} accounts, {} seeded certificates",
        opts.mode, opts.key_type, opts.ca_key_type, jobs.len(), opts.accounts, opts.seed
    );
    for c in levels {
        let mut samples = Vec::new();
        for _ in 0..opts.runs.max(1) {
            samples.push(env.measure(mode, &jobs, c).await?);
        }
        let m = Sample::median(&samples);
        println!(
            "enroll: concurrency {c:>3}: {:>6.0} enrollments/s, p50 {:.1} ms, p99 {:.1} ms, CPU per enrollment: CA {:.0} us, MTA {:.0} us, load generator {:.0} us (median of {})",
            m.rate,
            m.p50_ms,
            m.p99_ms,
            m.cpu_us[0],
            m.cpu_us[1],
            m.cpu_us[2],
            samples.len()
        );
    }
    Env::shutdown(env).await
}
