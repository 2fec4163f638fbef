//! `mailid-bench enroll`: enrollments per second through HTTP against the
//! real `mailid-ca` and `mailid-mta-auth` release binaries, with durable
//! commits as shipped.
//!
//! Set-up (not timed): an MTA with many accounts, a CA with the chosen key
//! type, CSRs made beforehand (one key per job; the same jobs are enrolled
//! again at each concurrency level, superseding the previous round). Two
//! modes:
//! * `full`: each request fetches a code from the MTA (TLS client
//!   certificate login) and then enrolls — the whole client flow, including
//!   the CA → MTA check, revocation of the previous identity and the commit;
//! * `ca`: codes are fetched beforehand; only `POST /v1/certificates` is
//!   timed (it still includes the CA → MTA check).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mailid_shared::protocol::TotpResponse;
use mailid_shared::KeyId;
use rcgen::PublicKeyData;

use crate::pki::BenchCa;
use crate::server::{operator, Service};
use crate::validate::percentile;

/// Options of `mailid-bench enroll`.
#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// `full` (code + enrollment per request) or `ca` (codes fetched beforehand).
    #[arg(long, default_value = "ca")]
    pub mode: String,
    /// CSR key type: p256 or rsa2048.
    #[arg(long, default_value = "p256")]
    pub key_type: String,
    /// CA key type (as `mailid-ca init --key-type`).
    #[arg(long, default_value = "p256")]
    pub ca_key_type: String,
    /// Concurrency levels to measure, comma separated.
    #[arg(long, default_value = "1,8,32")]
    pub concurrency: String,
    /// Enrollments per measurement.
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Accounts (each gets `requests / accounts` enrollments per measurement).
    #[arg(long, default_value_t = 200)]
    pub accounts: usize,
    /// Directory holding the release binaries (default: beside this one).
    #[arg(long)]
    pub bin_dir: Option<std::path::PathBuf>,
}

struct Job {
    account: usize,
    key_id: KeyId,
    csr: String,
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
        other => anyhow::bail!("unsupported --key-type {other} (p256, rsa2048)"),
    })
}

async fn totp(client: &reqwest::Client, mta: &str, key_id: &KeyId) -> anyhow::Result<String> {
    let r = client
        .post(format!("{mta}/v1/totp"))
        .json(&serde_json::json!({ "key_id": key_id }))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "POST /v1/totp: {}", r.status());
    Ok(r.json::<TotpResponse>().await?.totp)
}

async fn enroll(client: &reqwest::Client, ca: &str, body: Vec<u8>) -> anyhow::Result<()> {
    let r = client
        .post(format!("{ca}/v1/certificates"))
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

fn body(csr: &str, code: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "csr": csr, "totp": code })).unwrap_or_default()
}

/// Runs the benchmark and prints one line per concurrency level.
pub async fn run(opts: Opts) -> anyhow::Result<()> {
    let bin_dir = match &opts.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("bench binary has no directory")?
            .to_path_buf(),
    };
    let (mta_bin, ca_bin) = (bin_dir.join("mailid-mta-auth"), bin_dir.join("mailid-ca"));
    anyhow::ensure!(
        mta_bin.exists() && ca_bin.exists(),
        "build the services first: cargo build --release --workspace"
    );
    let full = match opts.mode.as_str() {
        "full" => true,
        "ca" => false,
        m => anyhow::bail!("unknown --mode {m} (full, ca)"),
    };
    let levels: Vec<usize> = opts
        .concurrency
        .split(',')
        .map(|s| s.trim().parse().context("--concurrency"))
        .collect::<anyhow::Result<_>>()?;
    let tmp = tempfile::tempdir()?;
    let (mta_dir, ca_dir) = (tmp.path().join("mta"), tmp.path().join("ca"));

    // MTA with accounts and TLS client-certificate login.
    operator(&mta_bin, &mta_dir, &["init"], None).await?;
    let accounts: Vec<String> = (0..opts.accounts)
        .map(|i| format!("user{i}@bench.example.com"))
        .collect();
    for a in &accounts {
        let pw = format!("pw-{}\n", rand::random::<u64>());
        operator(
            &mta_bin,
            &mta_dir,
            &["account", "add", a, "--password-stdin"],
            Some(&pw),
        )
        .await?;
    }
    operator(
        &ca_bin,
        &ca_dir,
        &[
            "init",
            "--name",
            "mailid bench CA",
            "--key-type",
            &opts.ca_key_type,
            "--base-url",
            "http://pki.example.com",
        ],
        None,
    )
    .await?;
    let cred = operator(&mta_bin, &mta_dir, &["ca", "add", "bench-ca"], None).await?;
    let cred_file = tmp.path().join("cred");
    std::fs::write(&cred_file, cred.trim())?;
    let server_ca = BenchCa::new("bench server CA")?;
    let client_ca = BenchCa::new("bench client CA")?;
    let server = server_ca.server()?;
    let (cert, key, cca) = (
        tmp.path().join("server.pem"),
        tmp.path().join("server.key"),
        tmp.path().join("client-ca.pem"),
    );
    std::fs::write(&cert, &server.cert_pem)?;
    std::fs::write(&key, &server.key_pem)?;
    std::fs::write(&cca, &client_ca.pem)?;
    let sca = tmp.path().join("server-ca.pem");
    std::fs::write(&sca, &server_ca.pem)?;
    let path = |p: &std::path::Path| p.display().to_string();
    let mta = Service::start(
        &mta_bin,
        &mta_dir,
        &[
            "--tls-cert".into(),
            path(&cert),
            "--tls-key".into(),
            path(&key),
            "--client-ca".into(),
            path(&cca),
        ],
    )
    .await?;
    operator(
        &ca_bin,
        &ca_dir,
        &[
            "mta",
            "add",
            "--domain",
            "bench.example.com",
            "--url",
            &mta.url,
            "--ca-name",
            "bench-ca",
            "--credential-file",
            &path(&cred_file),
        ],
        None,
    )
    .await?;
    // The CA calls the MTA over HTTPS: its TLS client (rustls platform
    // verifier, native roots on Linux) takes the bench server CA from
    // SSL_CERT_FILE.
    std::env::set_var("SSL_CERT_FILE", &sca);
    let ca = Service::start(&ca_bin, &ca_dir, &[])
        .await
        .context("starting the CA")?;
    let root = reqwest::Certificate::from_pem(server_ca.pem.as_bytes())?;
    let mut mta_clients = Vec::new();
    for a in &accounts {
        let pair = client_ca.client(a)?;
        let id =
            reqwest::Identity::from_pem(format!("{}{}", pair.cert_pem, pair.key_pem).as_bytes())?;
        mta_clients.push(
            reqwest::Client::builder()
                .tls_certs_only([root.clone()])
                .identity(id)
                .build()?,
        );
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;

    // CSRs: a few keys per account, reused round-robin.
    let per_account = opts.requests.div_ceil(opts.accounts).max(1);
    // Every job has its own (account, key) pair: a key's code is single
    // use, so two jobs in flight with one key would refuse each other.
    let keys_per_account = per_account;
    let mut jobs = Vec::new();
    for (i, a) in accounts.iter().enumerate() {
        let mut csrs = Vec::new();
        for _ in 0..keys_per_account {
            let k = new_key(&opts.key_type)?;
            csrs.push((
                KeyId::of_spki(&k.subject_public_key_info()),
                make_csr(a, &k)?,
            ));
        }
        for n in 0..per_account {
            let (key_id, csr) = csrs[n % keys_per_account].clone();
            jobs.push(Job {
                account: i,
                key_id,
                csr,
            });
        }
    }
    jobs.truncate(opts.requests);
    println!(
        "enroll: mode {}, CSR key {}, CA key {}, {} requests over {} accounts",
        opts.mode,
        opts.key_type,
        opts.ca_key_type,
        jobs.len(),
        opts.accounts
    );
    let jobs = Arc::new(jobs);
    let mta_clients = Arc::new(mta_clients);
    for c in levels {
        // A key's code can only be fetched after its previous one was used,
        // so in `ca` mode codes are fetched per wave of distinct keys.
        let bodies: Option<Vec<Vec<u8>>> = if full {
            None
        } else {
            let mut out = Vec::with_capacity(jobs.len());
            for j in jobs.iter() {
                out.push(body(
                    &j.csr,
                    &totp(&mta_clients[j.account], &mta.url, &j.key_id).await?,
                ));
            }
            Some(out)
        };
        let bodies = Arc::new(bodies);
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..c {
            let (jobs, bodies, next, http, mta_clients) = (
                jobs.clone(),
                bodies.clone(),
                next.clone(),
                http.clone(),
                mta_clients.clone(),
            );
            let (ca_url, mta_url) = (ca.url.clone(), mta.url.clone());
            workers.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(j) = jobs.get(i) else { break };
                    let t0 = Instant::now();
                    let b = match bodies.as_ref() {
                        Some(b) => b[i].clone(),
                        None => body(
                            &j.csr,
                            &totp(&mta_clients[j.account], &mta_url, &j.key_id).await?,
                        ),
                    };
                    enroll(&http, &ca_url, b).await?;
                    lat.push(t0.elapsed().as_micros() as u64);
                }
                Ok::<_, anyhow::Error>(lat)
            }));
        }
        let mut lat = Vec::new();
        for w in workers {
            lat.extend(w.await??);
        }
        let elapsed = start.elapsed();
        lat.sort_unstable();
        println!(
            "enroll: mode {} csr {} ca-key {} concurrency {:>3}: {:>6.0} enrollments/s, p50 {:.1} ms, p99 {:.1} ms ({} in {:.2} s)",
            opts.mode,
            opts.key_type,
            opts.ca_key_type,
            c,
            lat.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            percentile(&lat, 0.5) as f64 / 1000.0,
            percentile(&lat, 0.99) as f64 / 1000.0,
            lat.len(),
            elapsed.as_secs_f64(),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ca.stop().await?;
    mta.stop().await?;
    Ok(())
}
