//! The identity log at scale (SPEC §11, issue 15): identity uploads
//! against the real `mailid-mta-auth` release binary over HTTPS with an
//! empty log and with N entries in it, lookups with history and proof,
//! `log verify` on the big data dir, and the checkpoints signed during an
//! upload burst; so that the log's cost is measured where it grows.
//!
//! Uploads log in with TLS client certificates (no Argon2 in the timed
//! part); every upload is a fresh S/MIME certificate made before timing,
//! issued by a CA registered with `ca add --trust-cert`, with a CRL served
//! on loopback, so each passes the MTA's real checks and appends an entry.
//!
//! The N entries are seeded with the service stopped through the
//! production code (`mailid_mta_auth::store::Store`): N synthetic accounts
//! (`Store::add_account` with a placeholder password hash nobody can log
//! in with), one `Store::put_identity` each (many in flight, so the SQLite
//! writer group-commits), then `Store::log_sequence` with the data dir's
//! log key (`idlog::setup`) until nothing is pending. The sequencer is
//! called with no spacing, so seeding signs one checkpoint per 8192
//! entries within a few seconds (the running service keeps ≤ 1/s). The
//! synthetic identities carry placeholder certificate bytes (16 bytes, no
//! certificate: only a lookup of a seeded address would show them, and
//! none is made); their entries, hashes, heads and checkpoints are what
//! the service would have written, so `log verify` must pass (it is run).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mailid_mta_auth::store::{IdentityRow, Store};
use mailid_shared::db::OpenMode;
use mailid_shared::{KeyId, Serial};

use crate::enroll::{Env, Sample};
use crate::pki::BenchCa;
use crate::server::{operator, Service};

/// Options of `mailid-bench idlog`.
#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// Log entries seeded before the second upload burst.
    #[arg(long, default_value_t = 1_000_000)]
    pub entries: usize,
    /// Uploads per burst.
    #[arg(long, default_value_t = 3000)]
    pub uploads: usize,
    /// Accounts the uploads are spread over.
    #[arg(long, default_value_t = 32)]
    pub accounts: usize,
    /// Accounts looked up (3 entries each).
    #[arg(long, default_value_t = 64)]
    pub lookup_accounts: usize,
    /// Lookups timed.
    #[arg(long, default_value_t = 5000)]
    pub lookups: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Only the upload burst on an empty log (works against an MTA
    /// binary from before the log, for comparison).
    #[arg(long)]
    pub uploads_only: bool,
    /// The `mailid-mta-auth` binary (default: in --bin-dir).
    #[arg(long)]
    pub mta_bin: Option<PathBuf>,
    /// Directory holding the release binaries (default: beside this one).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

/// Checkpoints signed during a burst.
#[derive(Debug, Clone, Copy, Default)]
pub struct Burst {
    pub checkpoints: usize,
    pub secs: f64,
    /// Most checkpoints signed within any 1000 ms.
    pub max_per_second: usize,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub uploads: usize,
    pub empty: Sample,
    pub full: Option<Sample>,
    pub entries: usize,
    pub seed_secs: f64,
    pub lookup: Option<Sample>,
    pub lookup_proof_len: usize,
    /// The same lookups one at a time.
    pub lookup_c1: Option<Sample>,
    /// `log verify`: seconds, peak MiB, tree size.
    pub verify: Option<(f64, f64, u64)>,
    pub burst: Burst,
}

/// Serves `der` at `http://127.0.0.1:PORT/id.crl` (HTTP/1.1, one
/// response per connection) until the runtime ends; returns the URL.
async fn crl_server(der: Vec<u8>) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/id.crl", l.local_addr()?);
    let der = Arc::new(der);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let der = der.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    der.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&der).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Ok(url)
}

/// A data dir with accounts, the identity CA trusted, TLS files.
struct Setup {
    tmp: tempfile::TempDir,
    mta_bin: PathBuf,
    dir: PathBuf,
    args: Vec<String>,
    id_ca: Arc<BenchCa>,
    crl_url: String,
    uploaders: Vec<String>,
    lookers: Vec<String>,
    clients: Vec<reqwest::Client>,
    https: reqwest::Client,
}

impl Setup {
    async fn new(mta_bin: &Path, uploaders: usize, lookers: usize) -> anyhow::Result<Setup> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("mta");
        operator(mta_bin, &dir, &["init"], None).await?;
        let up: Vec<String> = (0..uploaders)
            .map(|i| format!("up{i}@bench.example.com"))
            .collect();
        let look: Vec<String> = (0..lookers)
            .map(|i| format!("look{i}@bench.example.com"))
            .collect();
        // Account creation runs Argon2 once per account: two at a time.
        let all: Vec<String> = up.iter().chain(&look).cloned().collect();
        for pair in all.chunks(2) {
            let mut tasks = Vec::new();
            for a in pair {
                let (bin, dir, a) = (mta_bin.to_path_buf(), dir.clone(), a.clone());
                tasks.push(tokio::spawn(async move {
                    operator(
                        &bin,
                        &dir,
                        &["account", "add", &a, "--password-stdin"],
                        Some("bench-pw-not-used\n"),
                    )
                    .await
                }));
            }
            for t in tasks {
                t.await??;
            }
        }
        let id_ca = Arc::new(BenchCa::new("bench identity CA")?);
        let crl_url = crl_server(id_ca.empty_crl()?).await?;
        let file = |name: &str, text: &str| -> anyhow::Result<String> {
            let p = tmp.path().join(name);
            std::fs::write(&p, text)?;
            Ok(p.display().to_string())
        };
        let id_ca_file = file("id-ca.pem", &id_ca.pem)?;
        operator(
            mta_bin,
            &dir,
            &["ca", "add", "bench-id", "--trust-cert", &id_ca_file],
            None,
        )
        .await?;
        let crate::pki::MtaTls {
            server_ca,
            client_ca,
            args,
        } = crate::pki::MtaTls::new(tmp.path())?;
        let root = reqwest::Certificate::from_pem(server_ca.pem.as_bytes())?;
        let clients = client_ca.login_clients(&root, &all)?;
        let https = crate::server::client().tls_certs_only([root]).build()?;
        Ok(Setup {
            tmp,
            mta_bin: mta_bin.to_path_buf(),
            dir,
            args,
            id_ca,
            crl_url,
            uploaders: up,
            lookers: look,
            clients,
            https,
        })
    }

    async fn start(&self) -> anyhow::Result<Service> {
        Service::start(&self.mta_bin, &self.dir, &self.args).await
    }

    /// `n` uploads (account index into `uploaders ++ lookers`, body), made
    /// on two blocking threads.
    async fn uploads(&self, accounts: Vec<usize>) -> anyhow::Result<Vec<(usize, Vec<u8>)>> {
        let names: Vec<String> = self
            .uploaders
            .iter()
            .chain(&self.lookers)
            .cloned()
            .collect();
        let ca = self.id_ca.clone();
        let accounts = Arc::new(accounts);
        let mut tasks = Vec::new();
        for part in 0..2 {
            let (ca, accounts, names, url) = (
                ca.clone(),
                accounts.clone(),
                names.clone(),
                self.crl_url.clone(),
            );
            tasks.push(tokio::task::spawn_blocking(move || {
                (part..accounts.len())
                    .step_by(2)
                    .map(|i| {
                        let a = accounts[i];
                        let pair = ca.identity(&names[a], &url)?;
                        let body = serde_json::to_vec(
                            &serde_json::json!({ "certificate": pair.cert_pem }),
                        )?;
                        Ok((i, (a, body)))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.extend(t.await??);
        }
        out.sort_by_key(|x| x.0);
        Ok(out.into_iter().map(|x| x.1).collect())
    }

    async fn upload(&self, url: &str, account: usize, body: Vec<u8>) -> anyhow::Result<()> {
        let r = self.clients[account]
            .put(format!("{url}/v1/identity"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = r.status();
        anyhow::ensure!(
            status.as_u16() == 200,
            "PUT /v1/identity: {status} {}",
            r.text().await.unwrap_or_default()
        );
        Ok(())
    }
}

/// Times `jobs` uploads at `concurrency`; (figures, start and end in Unix
/// ms).
async fn burst(
    setup: &Arc<Setup>,
    mta: &Service,
    jobs: Vec<(usize, Vec<u8>)>,
    concurrency: usize,
) -> anyhow::Result<(Sample, i64, i64)> {
    let jobs = Arc::new(jobs);
    let cpu0 = mta.cpu_seconds().unwrap_or(0.0);
    let t0 = now_ms();
    let (s, j, url) = (setup.clone(), jobs.clone(), mta.url.clone());
    let (mut lat, elapsed) = Env::run_concurrently(jobs.len(), concurrency, move |i| {
        let (s, j, url) = (s.clone(), j.clone(), url.clone());
        async move { s.upload(&url, j[i].0, j[i].1.clone()).await }
    })
    .await?;
    let t1 = now_ms();
    let cpu = mta.cpu_seconds().unwrap_or(0.0) - cpu0;
    Ok((sample(&mut lat, elapsed, cpu), t0, t1))
}

/// The MTA's CPU seconds `cpu` over the run, per call, in the MTA column.
fn sample(lat: &mut [u64], elapsed: Duration, cpu: f64) -> Sample {
    let n = lat.len().max(1) as f64;
    Sample::of_run(lat, elapsed, [0.0, cpu * 1e6 / n, 0.0])
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Seeds `n` synthetic accounts with one published identity each into
/// the stopped service's SQLite data dir, through `Store`, and sequences
/// them into the tree; returns the seconds it took.
pub async fn seed(dir: &Path, n: usize) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let db = dir.join("mta-auth.sqlite");
    let store = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || Store::open(&db, OpenMode::Existing)).await??
    };
    let keys = mailid_mta_auth::idlog::setup(dir, &store, None).await?;
    let signer = keys.signer.context("no log key in the data dir")?;
    let not_after = mailid_shared::timefmt::now_unix() + 365 * 86_400;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1024.min(n.max(1)) {
        let (store, next) = (store.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                let address: mailid_shared::Address =
                    format!("seed{i}@seed.bench.example").parse()?;
                let totp = zeroize::Zeroizing::new(vec![0u8; 20]);
                store
                    .add_account(&address, "seeded: no login".into(), totp)
                    .await?;
                let mut cert = b"seeded-cert-".to_vec();
                cert.extend_from_slice(&(i as u32).to_be_bytes());
                store
                    .put_identity(IdentityRow {
                        address,
                        key_id: KeyId::of_spki(&cert).as_bytes().to_vec(),
                        certificate: cert,
                        chain: String::new(),
                        serial: Serial::random().to_string(),
                        not_after,
                        ca_name: "bench-id".into(),
                    })
                    .await?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    eprintln!(
        "idlog: {n} accounts and identities stored in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // Sequence everything (8192 entries per run, one checkpoint each).
    while store.log_has_work().await? {
        store.log_sequence(signer.clone(), 0, now_ms()).await?;
    }
    drop(store);
    Ok(t0.elapsed().as_secs_f64())
}

/// Waits until every entry is in a signed checkpoint (30 s at most).
async fn settled(db: &Path) -> anyhow::Result<()> {
    let db = db.to_path_buf();
    for _ in 0..300 {
        let db = db.clone();
        let done = tokio::task::spawn_blocking(move || -> anyhow::Result<bool> {
            let c = rusqlite::Connection::open_with_flags(
                &db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            Ok(c.query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM log_entries WHERE leaf_index IS NULL)
                   AND (SELECT max(size) FROM log_checkpoints) = (SELECT size FROM log_state)",
                [],
                |r| r.get(0),
            )?)
        })
        .await??;
        if done {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the log did not settle within 30 s")
}

/// The checkpoints signed from `t0` to a second after `t1` (Unix ms).
fn burst_checkpoints(db: &Path, t0: i64, t1: i64) -> anyhow::Result<Burst> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut st = c.prepare(
        "SELECT signed_at FROM log_checkpoints WHERE signed_at >= ?1 AND signed_at <= ?2
         ORDER BY signed_at",
    )?;
    let at: Vec<i64> = st
        .query_map([t0, t1 + 1000], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut max = 0;
    for (i, a) in at.iter().enumerate() {
        max = max.max(at[i..].iter().take_while(|b| **b - a < 1000).count());
    }
    Ok(Burst {
        checkpoints: at.len(),
        secs: (t1 - t0) as f64 / 1000.0,
        max_per_second: max,
    })
}

/// `n` lookups of the looked-up accounts at `c`, each answer checked for
/// a history of 3 entries with an inclusion proof and a checkpoint; the
/// figures and the longest proof seen.
async fn lookups(
    setup: &Arc<Setup>,
    mta: &Service,
    n: usize,
    c: usize,
) -> anyhow::Result<(Sample, usize)> {
    let proof_len = Arc::new(AtomicUsize::new(0));
    let (s, url, pl) = (setup.clone(), mta.url.clone(), proof_len.clone());
    let cpu0 = mta.cpu_seconds().unwrap_or(0.0);
    let (mut lat, elapsed) = Env::run_concurrently(n, c, move |i| {
        let (s, url, pl) = (s.clone(), url.clone(), pl.clone());
        async move {
            let who = &s.lookers[i % s.lookers.len()];
            let r = s
                .https
                .get(format!("{url}/v1/identity/{who}"))
                .send()
                .await?;
            anyhow::ensure!(r.status().as_u16() == 200, "lookup: {}", r.status());
            let v: serde_json::Value = r.json().await?;
            let h = &v["history"];
            let entries = h["entries"].as_array().map_or(0, |e| e.len());
            let proof = h["inclusion"]["proof"].as_array().map_or(0, |p| p.len());
            anyhow::ensure!(
                entries == 3
                    && proof > 0
                    && h["checkpoint"].as_str().is_some_and(|c| !c.is_empty()),
                "lookup of {who}: no history of 3 entries with a proof: {h}"
            );
            pl.fetch_max(proof, Ordering::Relaxed);
            Ok(())
        }
    })
    .await?;
    let cpu = mta.cpu_seconds().unwrap_or(0.0) - cpu0;
    Ok((
        sample(&mut lat, elapsed, cpu),
        proof_len.load(Ordering::Relaxed),
    ))
}

/// Round-robin accounts `from..from+count` for `n` jobs.
fn spread(from: usize, count: usize, n: usize) -> Vec<usize> {
    (0..n).map(|i| from + i % count.max(1)).collect()
}

/// The whole measurement (see the module doc).
pub async fn measure(opts: &Opts) -> anyhow::Result<Figures> {
    let mta_bin = match &opts.mta_bin {
        Some(b) => b.clone(),
        None => crate::enroll::bin_dir(opts.bin_dir.as_deref())?.join("mailid-mta-auth"),
    };
    let lookers = if opts.uploads_only {
        0
    } else {
        opts.lookup_accounts
    };
    let setup = Arc::new(Setup::new(&mta_bin, opts.accounts, lookers).await?);
    let c = opts.concurrency;
    let mut f = Figures {
        uploads: opts.uploads,
        ..Figures::default()
    };
    eprintln!("idlog: making {} identity certificates", opts.uploads);
    let jobs = setup
        .uploads(spread(0, opts.accounts, opts.uploads))
        .await?;
    let mta = setup.start().await?;
    let (empty, _, _) = burst(&setup, &mta, jobs, c).await?;
    f.empty = empty;
    mta.stop().await?;
    if opts.uploads_only {
        return Ok(f);
    }

    eprintln!("idlog: seeding {} log entries", opts.entries);
    f.entries = opts.entries;
    f.seed_secs = seed(&setup.dir, opts.entries).await?;
    eprintln!("idlog: seeded in {:.1} s", f.seed_secs);
    let jobs = setup
        .uploads(spread(0, opts.accounts, opts.uploads))
        .await?;
    let looks = setup
        .uploads(spread(opts.accounts, lookers, 3 * lookers))
        .await?;
    let mta = setup.start().await?;
    // Three entries per looked-up account (untimed, in order per account).
    let looks = Arc::new(looks);
    let (s, l, url) = (setup.clone(), looks.clone(), mta.url.clone());
    Env::run_concurrently(lookers, c, move |a| {
        let (s, l, url) = (s.clone(), l.clone(), url.clone());
        async move {
            for k in 0..3 {
                let (acct, body) = &l[a + k * lookers];
                s.upload(&url, *acct, body.clone()).await?;
            }
            Ok(())
        }
    })
    .await?;
    let db = setup.dir.join("mta-auth.sqlite");
    settled(&db).await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (full, t0, t1) = burst(&setup, &mta, jobs, c).await?;
    f.full = Some(full);
    settled(&db).await?;
    f.burst = burst_checkpoints(&db, t0, t1)?;

    // Lookups with history and proof, at c and (for the latency of one
    // request alone) at c1.
    let (lookup, proof) = lookups(&setup, &mta, opts.lookups, c).await?;
    f.lookup = Some(lookup);
    f.lookup_proof_len = proof;
    f.lookup_c1 = Some(
        lookups(&setup, &mta, (opts.lookups / 5).max(10), 1)
            .await?
            .0,
    );
    mta.stop().await?;

    // `log verify` on the stopped data dir.
    eprintln!("idlog: log verify");
    let args: Vec<std::ffi::OsString> = vec![
        "--data-dir".into(),
        setup.dir.clone().into(),
        "log".into(),
        "verify".into(),
    ];
    let (secs, kib) = {
        let bin = mta_bin.clone();
        tokio::task::spawn_blocking(move || crate::crl::timed(&bin, &args)).await??
    };
    let out = operator(&mta_bin, &setup.dir, &["log", "verify", "--json"], None).await?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    f.verify = Some((
        secs.as_secs_f64(),
        kib as f64 / 1024.0,
        v["tree_size"].as_u64().unwrap_or(0),
    ));
    let _ = &setup.tmp;
    Ok(f)
}

/// Runs `mailid-bench idlog` and prints its figures.
pub async fn run(opts: Opts) -> anyhow::Result<()> {
    let f = measure(&opts).await?;
    let line = |what: &str, s: &Sample| {
        println!(
            "idlog: {what}: {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, MTA CPU {:.0} us per request",
            s.rate, s.p50_ms, s.p99_ms, s.cpu_us[1]
        )
    };
    line(
        &format!("uploads, empty log, c{}, {}", opts.concurrency, f.uploads),
        &f.empty,
    );
    if let Some(s) = &f.full {
        println!(
            "idlog: seeded {} entries in {:.1} s",
            f.entries, f.seed_secs
        );
        line(
            &format!("uploads, {} entries, c{}", f.entries, opts.concurrency),
            s,
        );
        println!(
            "idlog: checkpoints during that burst: {} in {:.1} s, at most {} in any second",
            f.burst.checkpoints, f.burst.secs, f.burst.max_per_second
        );
    }
    if let Some(s) = &f.lookup {
        line(
            &format!(
                "lookups with history (3 entries, proof of {} hashes), c{}",
                f.lookup_proof_len, opts.concurrency
            ),
            s,
        );
    }
    if let Some(s) = &f.lookup_c1 {
        line("the same lookups, c1", s);
    }
    if let Some((secs, mib, size)) = f.verify {
        println!("idlog: log verify of {size} entries: {secs:.1} s, peak {mib:.0} MiB");
    }
    Ok(())
}
