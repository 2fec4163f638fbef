//! `mailid-bench validate`: validations per second through HTTP with
//! durable single use, against the real `mailid-mta-auth` binary.
//!
//! Set-up (not timed): a temp data dir with many accounts and one CA; per
//! round the service runs with TLS client-certificate login so codes can be
//! issued for every (account, key) without an Argon2 run per request; then
//! it is restarted on plain HTTP (loopback) and every code is validated
//! once, `concurrency` requests in flight over keep-alive connections. That
//! phase is timed. A sample of the codes is then validated again and must
//! come back `replayed`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mailid_shared::authsig::Credential;
use mailid_shared::protocol::{TotpResponse, ValidateBatchResponse, ValidateResponse};
use mailid_shared::timefmt::now_unix;
use mailid_shared::KeyId;

use crate::pki::BenchCa;
use crate::server::{cpu_seconds, operator, Service};

/// Options of `mailid-bench validate`.
#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// Accounts to create.
    #[arg(long, default_value_t = 100)]
    pub accounts: usize,
    /// Keys (codes) per account and round.
    #[arg(long, default_value_t = 100)]
    pub keys: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Codes per request: 1 sends `POST /v1/validate`, more send them in
    /// groups through `POST /v1/validate/batch` (at most 64), the form
    /// the CA uses when enrollments overlap.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Timed rounds (each validates accounts × keys codes).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Codes validated again after each round (must be `replayed`).
    #[arg(long, default_value_t = 1000)]
    pub replay_sample: usize,
    /// The service binary (default: `mailid-mta-auth` beside this one).
    #[arg(long)]
    pub bin: Option<PathBuf>,
}

struct Code {
    body: Vec<u8>,
}

/// One timed round's figures.
struct Round {
    total: usize,
    elapsed: Duration,
    results: BTreeMap<String, usize>,
    latencies_us: Vec<u64>,
}

/// The `p` quantile (0..=1) of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn issue_all(
    url: &str,
    clients: &[reqwest::Client],
    accounts: &[String],
    keys: &[Vec<KeyId>],
    concurrency: usize,
) -> anyhow::Result<Vec<Code>> {
    let jobs: Arc<Vec<(usize, KeyId)>> = Arc::new(
        keys.iter()
            .enumerate()
            .flat_map(|(a, ks)| ks.iter().map(move |k| (a, k.clone())))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (jobs, next, clients, url) = (
            jobs.clone(),
            next.clone(),
            clients.to_vec(),
            url.to_string(),
        );
        let accounts = accounts.to_vec();
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((a, key)) = jobs.get(i) else { break };
                let resp = clients[*a]
                    .post(format!("{url}/v1/totp"))
                    .json(&serde_json::json!({ "key_id": key }))
                    .send()
                    .await?;
                anyhow::ensure!(
                    resp.status().is_success(),
                    "POST /v1/totp: {}",
                    resp.status()
                );
                let t: TotpResponse = resp.json().await?;
                anyhow::ensure!(t.account.as_str() == accounts[*a], "wrong account");
                let body = serde_json::json!({"account": t.account, "totp": t.totp, "key_id": key});
                out.push(Code {
                    body: serde_json::to_vec(&body)?,
                });
            }
            Ok::<_, anyhow::Error>(out)
        }));
    }
    let mut codes = Vec::with_capacity(jobs.len());
    for w in workers {
        codes.extend(w.await??);
    }
    Ok(codes)
}

async fn validate_all(
    url: &str,
    client: &reqwest::Client,
    cred: Arc<Credential>,
    codes: Arc<Vec<Code>>,
    concurrency: usize,
    batch: usize,
) -> anyhow::Result<Round> {
    let batch = batch.max(1);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (codes, next, client, cred) =
            (codes.clone(), next.clone(), client.clone(), cred.clone());
        let path = if batch > 1 {
            "/v1/validate/batch"
        } else {
            "/v1/validate"
        };
        let url = format!("{url}{path}");
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut results: BTreeMap<String, usize> = BTreeMap::new();
            loop {
                let i = next.fetch_add(batch, Ordering::Relaxed);
                let Some(group) = codes.get(i..(i + batch).min(codes.len())) else {
                    break;
                };
                if group.is_empty() {
                    break;
                }
                let body = request_body(group, batch);
                let t0 = Instant::now();
                let ts = now_unix();
                let sig = cred.sign("POST", path, ts, &body);
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-mailid-ca", "bench")
                    .header("x-mailid-timestamp", ts.to_string())
                    .header("x-mailid-signature", sig)
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(resp.status().is_success(), "POST {path}: {}", resp.status());
                let verdicts = if batch > 1 {
                    resp.json::<ValidateBatchResponse>().await?.results
                } else {
                    vec![resp.json::<ValidateResponse>().await?]
                };
                anyhow::ensure!(verdicts.len() == group.len(), "POST {path}: wrong count");
                lat.push(t0.elapsed().as_micros() as u64);
                for v in verdicts {
                    let key = match v.reason {
                        None if v.valid => "valid".to_string(),
                        Some(r) => r.as_str().to_string(),
                        None => "unknown".to_string(),
                    };
                    *results.entry(key).or_default() += 1;
                }
            }
            Ok::<_, anyhow::Error>((lat, results))
        }));
    }
    let mut latencies_us = Vec::with_capacity(codes.len());
    let mut results = BTreeMap::new();
    for w in workers {
        let (lat, res) = w.await??;
        latencies_us.extend(lat);
        for (k, v) in res {
            *results.entry(k).or_default() += v;
        }
    }
    let elapsed = start.elapsed();
    latencies_us.sort_unstable();
    Ok(Round {
        total: codes.len(),
        elapsed,
        results,
        latencies_us,
    })
}

/// The body of one request: a code's own body, or `{"items": [...]}`
/// around a group of them for the batch form.
fn request_body(group: &[Code], batch: usize) -> Vec<u8> {
    if batch == 1 {
        return group[0].body.clone();
    }
    let mut body = b"{\"items\":[".to_vec();
    for (i, c) in group.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&c.body);
    }
    body.extend_from_slice(b"]}");
    body
}

fn default_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("mailid-mta-auth");
    if !bin.exists() {
        anyhow::bail!(
            "{} not found: build it with `cargo build --release -p mailid-mta-auth` or give --bin",
            bin.display()
        );
    }
    Ok(bin)
}

/// Runs the benchmark and prints its figures.
pub async fn run(opts: Opts) -> anyhow::Result<()> {
    measure(opts).await.map(|_| ())
}

/// Runs the benchmark, prints its figures and returns each round's
/// validations per second.
pub async fn measure(opts: Opts) -> anyhow::Result<Vec<f64>> {
    anyhow::ensure!(
        opts.accounts > 0 && opts.keys > 0 && opts.concurrency > 0,
        "sizes must be positive"
    );
    anyhow::ensure!(
        (1..=64).contains(&opts.batch),
        "--batch must be 1 to 64 (the MTA takes at most 64 items)"
    );
    let bin = match &opts.bin {
        Some(b) => b.clone(),
        None => default_bin()?,
    };
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("mta");
    println!("binary: {}", bin.display());
    println!(
        "set-up: {} accounts x {} keys, concurrency {}, {} codes per request, {} rounds",
        opts.accounts, opts.keys, opts.concurrency, opts.batch, opts.rounds
    );
    operator(&bin, &data, &["init"], None).await?;
    let accounts: Vec<String> = (0..opts.accounts)
        .map(|i| format!("user{i}@bench.example"))
        .collect();
    // Account creation runs Argon2 once per account: two at a time.
    for pair in accounts.chunks(2) {
        let mut tasks = Vec::new();
        for a in pair {
            let (bin, data, a) = (bin.clone(), data.clone(), a.clone());
            let pw = format!("pw-{}\n", rand::random::<u64>());
            tasks.push(tokio::spawn(async move {
                operator(
                    &bin,
                    &data,
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
    let cred_text = operator(&bin, &data, &["ca", "add", "bench"], None).await?;
    let cred = Arc::new(Credential::parse(cred_text.trim()).context("credential")?);

    let server_ca = BenchCa::new("bench server CA")?;
    let client_ca = BenchCa::new("bench client CA")?;
    let server = server_ca.server()?;
    let files = tmp.path();
    std::fs::write(files.join("server.pem"), &server.cert_pem)?;
    std::fs::write(files.join("server.key"), &server.key_pem)?;
    std::fs::write(files.join("client-ca.pem"), &client_ca.pem)?;
    let tls_args: Vec<String> = [
        "--tls-cert",
        "server.pem",
        "--tls-key",
        "server.key",
        "--client-ca",
        "client-ca.pem",
    ]
    .iter()
    .map(|s| match *s {
        f if f.ends_with(".pem") || f.ends_with(".key") => files.join(f).display().to_string(),
        other => other.to_string(),
    })
    .collect();
    let root = reqwest::Certificate::from_pem(server_ca.pem.as_bytes())?;
    let tls_clients = client_ca.login_clients(&root, &accounts)?;
    let keys: Vec<Vec<KeyId>> = (0..opts.accounts)
        .map(|_| {
            (0..opts.keys)
                .map(|_| KeyId::of_spki(&rand::random::<[u8; 32]>()))
                .collect()
        })
        .collect();
    let http = crate::server::client().build()?;

    let mut rounds = Vec::new();
    for r in 0..opts.rounds {
        let svc = Service::start(&bin, &data, &tls_args).await?;
        let t0 = Instant::now();
        let codes = issue_all(&svc.url, &tls_clients, &accounts, &keys, opts.concurrency).await?;
        let issue_time = t0.elapsed();
        svc.stop().await?;
        let svc = Service::start(&bin, &data, &[]).await?;
        let codes = Arc::new(codes);
        let (srv0, me0) = (svc.cpu_seconds(), cpu_seconds("/proc/self/stat"));
        let round = validate_all(
            &svc.url,
            &http,
            cred.clone(),
            codes.clone(),
            opts.concurrency,
            opts.batch,
        )
        .await?;
        let srv_cpu = svc.cpu_seconds().zip(srv0).map(|(a, b)| a - b);
        let me_cpu = cpu_seconds("/proc/self/stat").zip(me0).map(|(a, b)| a - b);
        let sample: Vec<Code> = codes
            .iter()
            .take(opts.replay_sample)
            .map(|c| Code {
                body: c.body.clone(),
            })
            .collect();
        let replay = validate_all(
            &svc.url,
            &http,
            cred.clone(),
            Arc::new(sample),
            opts.concurrency,
            opts.batch,
        )
        .await?;
        svc.stop().await?;
        let l = &round.latencies_us;
        let per = |cpu: Option<f64>| {
            cpu.map(|c| format!("{:.0} us", c * 1e6 / round.total as f64))
                .unwrap_or_else(|| "unknown".into())
        };
        println!(
            "round {}: issued {} codes in {:.2} s (HTTPS, client certificates); validated {} in {:.3} s = {:.0} validations/s; request latency p50 {} us, p90 {} us, p99 {} us, max {} us; CPU per validation: server {}, bench client {}; results {:?}; replay sample {:?}",
            r + 1,
            codes.len(),
            issue_time.as_secs_f64(),
            round.total,
            round.elapsed.as_secs_f64(),
            round.total as f64 / round.elapsed.as_secs_f64(),
            percentile(l, 0.5),
            percentile(l, 0.9),
            percentile(l, 0.99),
            l.last().copied().unwrap_or(0),
            per(srv_cpu),
            per(me_cpu),
            round.results,
            replay.results,
        );
        let valid = round.results.get("valid").copied().unwrap_or(0);
        anyhow::ensure!(
            valid == round.total,
            "round {}: only {valid} of {} codes were valid",
            r + 1,
            round.total
        );
        let replayed = replay.results.get("replayed").copied().unwrap_or(0);
        anyhow::ensure!(
            replayed == replay.total,
            "round {}: a used code was accepted again",
            r + 1
        );
        rounds.push(round);
    }
    let total: usize = rounds.iter().map(|r| r.total).sum();
    let secs: f64 = rounds.iter().map(|r| r.elapsed.as_secs_f64()).sum();
    println!(
        "overall: {total} validations in {secs:.3} s = {:.0} validations/s (each durable before its answer; every code valid once, replays refused)",
        total as f64 / secs
    );
    Ok(rounds
        .iter()
        .map(|r| r.total as f64 / r.elapsed.as_secs_f64().max(1e-9))
        .collect())
}
