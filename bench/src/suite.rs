//! `mailid-bench suite`: every benchmark of docs/BENCHMARKS.md in one run,
//! printed as the Markdown tables that go into that file. `--smoke` runs a
//! tiny version of each (seconds, not minutes) to prove the harness works;
//! its numbers mean nothing.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::enroll::{bin_dir, make_jobs, memory_kib, Env, Mode, Sample};

/// Options of `mailid-bench suite`.
#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// A tiny run that proves the harness works (numbers mean nothing).
    #[arg(long)]
    pub smoke: bool,
    /// Write the Markdown here as well as to standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Directory holding the release binaries (default: beside this one).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Admin URL of a PostgreSQL cluster: adds the PostgreSQL rows (one
    /// and two replicas of each service, each run on a fresh database).
    #[arg(long, value_name = "URL")]
    pub pg: Option<String>,
}

struct Plan {
    runs: usize,
    accounts: usize,
    jobs: usize,
    password_jobs: usize,
    levels: Vec<usize>,
    ca_keys: Vec<&'static str>,
    csr_keys: Vec<&'static str>,
    validate: crate::validate::Opts,
    crl_sizes: Vec<usize>,
    growth: Vec<usize>,
    /// The side-by-side with cfssl: CSRs, accounts, levels.
    versus: (usize, usize, Vec<usize>),
    idlog: crate::idlog::Opts,
}

impl Plan {
    /// What the PostgreSQL rows run.
    fn pg(&self) -> crate::pgbench::Plan {
        crate::pgbench::Plan {
            runs: self.runs,
            accounts: self.accounts,
            levels: self.levels.clone(),
            validate: self.validate.clone(),
        }
    }

    fn new(smoke: bool, bin_dir: &std::path::Path) -> Plan {
        let idlog = |entries, uploads, accounts, lookup_accounts, lookups| crate::idlog::Opts {
            entries,
            uploads,
            accounts,
            lookup_accounts,
            lookups,
            concurrency: 32,
            uploads_only: false,
            mta_bin: Some(bin_dir.join("mailid-mta-auth")),
            bin_dir: None,
        };
        let validate = |accounts, keys, rounds| crate::validate::Opts {
            accounts,
            keys,
            concurrency: 64,
            batch: 1,
            rounds,
            replay_sample: 200,
            bin: Some(bin_dir.join("mailid-mta-auth")),
        };
        if smoke {
            Plan {
                runs: 1,
                accounts: 8,
                jobs: 40,
                password_jobs: 8,
                levels: vec![1, 8],
                ca_keys: vec!["p256"],
                csr_keys: vec!["p256"],
                validate: validate(4, 50, 1),
                crl_sizes: vec![1_000],
                growth: vec![],
                versus: (40, 8, vec![8]),
                idlog: idlog(1_000, 100, 4, 4, 100),
            }
        } else {
            Plan {
                runs: 3,
                accounts: 100,
                jobs: 600,
                password_jobs: 120,
                levels: vec![1, 8, 32],
                ca_keys: vec!["p256", "rsa3072"],
                csr_keys: vec!["p256", "rsa2048"],
                validate: validate(50, 200, 3),
                crl_sizes: vec![10_000, 100_000, 1_000_000],
                growth: vec![1_000, 1_000_000],
                versus: (2_000, 400, vec![8, 32]),
                idlog: idlog(1_000_000, 3_000, 32, 64, 5_000),
            }
        }
    }
}

/// The largest resident memory of each of two processes while a
/// measurement runs (KiB), sampled every 20 ms.
struct RssSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, u64)>,
}

impl RssSampler {
    fn start(a: Option<u32>, b: Option<u32>) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let (mut ma, mut mb) = (0, 0);
            while !s.load(Ordering::Relaxed) {
                let rss = |p: Option<u32>| p.and_then(memory_kib).map_or(0, |m| m.0);
                ma = ma.max(rss(a));
                mb = mb.max(rss(b));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ma, mb)
        });
        RssSampler { stop, task }
    }

    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or((0, 0))
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub(crate) async fn median_of(
    env: &Arc<Env>,
    mode: Mode,
    jobs: &Arc<Vec<crate::enroll::Job>>,
    c: usize,
    runs: usize,
) -> anyhow::Result<Sample> {
    let mut samples = Vec::new();
    for _ in 0..runs {
        samples.push(env.measure(mode, jobs, c).await?);
    }
    Ok(Sample::median(&samples))
}

pub(crate) fn row(md: &mut String, cells: &[String]) {
    let _ = writeln!(md, "| {} |", cells.join(" | "));
}

/// Runs the suite and prints (and optionally writes) the Markdown.
pub async fn run(opts: Opts) -> anyhow::Result<()> {
    let bins = bin_dir(opts.bin_dir.as_deref())?;
    let plan = Plan::new(opts.smoke, &bins);
    let started = Instant::now();
    let mut md = String::new();
    let runs_note = format!("median of {} runs", plan.runs);

    // 1, 2 and 6: enrollments and memory, per CA key type.
    let mut flow = String::new();
    let mut endpoint = String::new();
    let mut password = String::new();
    let mut memory = String::new();
    let mut jobs_by_csr = Vec::new();
    let mut sqlite_ca: Vec<(usize, f64)> = Vec::new();
    for csr in &plan.csr_keys {
        let names: Vec<String> = (0..plan.accounts)
            .map(|i| format!("user{i}@bench.example.com"))
            .collect();
        eprintln!("suite: making {} {csr} CSRs", plan.jobs);
        jobs_by_csr.push((*csr, Arc::new(make_jobs(&names, csr, plan.jobs).await?)));
    }
    for ca_key in &plan.ca_keys {
        eprintln!("suite: enrollments with a {ca_key} CA key");
        let env = Arc::new(Env::start(&bins, plan.accounts, ca_key, 0, 1).await?);
        let idle = (
            env.mta.pid().and_then(memory_kib).map_or(0, |m| m.0),
            env.ca.pid().and_then(memory_kib).map_or(0, |m| m.0),
        );
        let mut busy = (0, 0);
        for (csr, jobs) in &jobs_by_csr {
            for &c in &plan.levels {
                let sampler = RssSampler::start(env.mta.pid(), env.ca.pid());
                let full = median_of(&env, Mode::Full, jobs, c, plan.runs).await?;
                let (m, a) = sampler.finish().await;
                busy = (busy.0.max(m), busy.1.max(a));
                let ca = median_of(&env, Mode::Ca, jobs, c, plan.runs).await?;
                if *ca_key == "p256" && *csr == "p256" {
                    sqlite_ca.push((c, ca.rate));
                }
                for (out, s) in [(&mut flow, full), (&mut endpoint, ca)] {
                    row(
                        out,
                        &[
                            ca_key.to_string(),
                            csr.to_string(),
                            c.to_string(),
                            format!("{:.0}", s.rate),
                            format!("{:.1}", s.p50_ms),
                            format!("{:.1}", s.p99_ms),
                            format!(
                                "{:.0} / {:.0} / {:.0}",
                                s.cpu_us[0], s.cpu_us[1], s.cpu_us[2]
                            ),
                        ],
                    );
                }
            }
        }
        if *ca_key == "p256" {
            let jobs = Arc::new(jobs_by_csr[0].1[..plan.password_jobs].to_vec());
            for &c in plan.levels.iter().filter(|&&c| c > 1) {
                let s = median_of(&env, Mode::FullPassword, &jobs, c, plan.runs).await?;
                row(
                    &mut password,
                    &[
                        c.to_string(),
                        format!("{:.0}", s.rate),
                        format!("{:.1}", s.p50_ms),
                        format!("{:.1}", s.p99_ms),
                    ],
                );
            }
        }
        row(
            &mut memory,
            &[
                ca_key.to_string(),
                format!("{:.1}", mib(idle.0)),
                format!("{:.1}", mib(busy.0)),
                format!("{:.1}", mib(idle.1)),
                format!("{:.1}", mib(busy.1)),
            ],
        );
        Env::shutdown(env).await?;
    }
    let head = "| CA key | CSR key | concurrency | enrollments/s | p50 ms | p99 ms | CPU µs per enrollment: CA / MTA / load generator |\n|---|---|---:|---:|---:|---:|---:|\n";
    let _ = writeln!(
        md,
        "### 1. Full client flow (TLS client-certificate login at the MTA)\n\nCode from the MTA, then `POST /v1/certificates` (CA → MTA check, revocation of the previous identity, durable commit); {} of {} enrollments over {} accounts.\n\n{head}{flow}",
        runs_note, plan.jobs, plan.accounts
    );
    let _ = writeln!(
        md,
        "### 2. CA endpoint alone (codes fetched beforehand)\n\n{head}{endpoint}"
    );
    let _ = writeln!(
        md,
        "### Full flow with password login (HTTP Basic, Argon2id at the MTA)\n\nP-256 CSRs, P-256 CA key, {} enrollments per run, {runs_note}.\n\n| concurrency | enrollments/s | p50 ms | p99 ms |\n|---:|---:|---:|---:|\n{password}",
        plan.password_jobs
    );

    // 3. Validations: one code per request, then the batch form the CA
    // uses when enrollments overlap.
    eprintln!("suite: TOTP validations");
    let mut v = String::new();
    for (batch, concurrency) in [(1, 64), (32, 8)] {
        let opts = crate::validate::Opts {
            batch,
            concurrency,
            ..plan.validate.clone()
        };
        let mut rates = crate::validate::measure(opts).await?;
        rates.sort_by(f64::total_cmp);
        let form = if batch == 1 {
            "`POST /v1/validate`".to_string()
        } else {
            format!("`POST /v1/validate/batch`, {batch} codes per request")
        };
        row(
            &mut v,
            &[
                form,
                concurrency.to_string(),
                format!("**{:.0}**", rates[rates.len() / 2]),
                rates
                    .iter()
                    .map(|r| format!("{r:.0}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ],
        );
    }
    let _ = writeln!(
        md,
        "### 3. TOTP validations at the MTA (durable single use)\n\n{} codes per round, HMAC-signed requests on plain HTTP (loopback), every code valid once and a sample replayed (refused); median of {} rounds.\n\n| form | requests in flight | validations/s | all rounds |\n|---|---:|---:|---|\n{v}",
        plan.validate.accounts * plan.validate.keys,
        plan.validate.rounds,
    );

    // 4. CRL.
    let mut crl = String::new();
    for &n in &plan.crl_sizes {
        eprintln!("suite: CRL of {n} entries");
        let f = crate::crl::sign(&bins, n, plan.runs).await?;
        row(
            &mut crl,
            &[
                f.entries.to_string(),
                format!("{:.2}", f.secs),
                format!("{:.0}", f.peak_mib),
                format!("{:.1}", f.bytes as f64 / 1e6),
            ],
        );
    }
    let largest = plan.crl_sizes.iter().copied().max().unwrap_or(0);
    eprintln!("suite: revocation visibility with {largest} entries");
    let vis = crate::crl::visibility(&bins, largest, plan.runs).await?;
    let _ = writeln!(
        md,
        "### 4. CRL signing\n\n`mailid-ca crl --der --out F` on a database seeded with N revoked, unexpired certificates: the whole command (open, read, build, sign, write), {runs_note}; peak = the command's maximum resident set.\n\n| entries | seconds | peak MiB | CRL MB |\n|---:|---:|---:|---:|\n{crl}\nA revocation (`mailid-ca revoke` against the running CA's database) was listed in the served `/v1/crl.der` after {} ms with {largest} entries present (each run; the publisher polls the revocation counter every 250 ms and re-signs at most once a second).\n",
        vis.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(", ")
    );

    // 5. Growth.
    if !plan.growth.is_empty() {
        let mut growth = String::new();
        let mut base: Option<f64> = None;
        for &seed in &plan.growth {
            eprintln!("suite: growth with {seed} certificates");
            let env = Arc::new(Env::start(&bins, plan.accounts, "p256", seed, 1).await?);
            let jobs = jobs_by_csr[0].1.clone();
            for &c in plan.levels.iter().filter(|&&c| c > 1) {
                let s = median_of(&env, Mode::Ca, &jobs, c, plan.runs).await?;
                if c == 32 {
                    base.get_or_insert(s.rate);
                }
                let ratio = base
                    .filter(|_| c == 32)
                    .map(|b| format!("{:.0}%", 100.0 * s.rate / b))
                    .unwrap_or_default();
                row(
                    &mut growth,
                    &[
                        seed.to_string(),
                        c.to_string(),
                        format!("{:.0}", s.rate),
                        format!("{:.1}", s.p99_ms),
                        ratio,
                    ],
                );
            }
            Env::shutdown(env).await?;
        }
        let _ = writeln!(
            md,
            "### 5. Growth\n\nCA endpoint, P-256 CSRs and CA key, with N valid certificates (one per account) seeded into the database before the start; {runs_note}.\n\n| certificates | concurrency | enrollments/s | p99 ms | vs. first at c32 |\n|---:|---:|---:|---:|---:|\n{growth}"
        );
    }

    // 7. Identity log.
    eprintln!(
        "suite: identity log with {} seeded entries",
        plan.idlog.entries
    );
    md.push_str(&idlog_section(&plan.idlog).await?);

    if let Some(admin) = &opts.pg {
        let jobs = jobs_by_csr[0].1.clone();
        md.push_str(&crate::pgbench::section(&bins, admin, &plan.pg(), &jobs, &sqlite_ca).await?);
    }

    let _ = writeln!(
        md,
        "### 6. Resident memory\n\nVmRSS right after start (idle) and the largest VmRSS sampled every 20 ms during the full-flow runs (all concurrency levels, up to 32).\n\n| CA key | MTA idle MiB | MTA busy MiB | CA idle MiB | CA busy MiB |\n|---|---:|---:|---:|---:|\n{memory}"
    );
    // 0. Side by side with cfssl, on a fresh CA (run last, printed first).
    let (n, accounts, levels) = &plan.versus;
    eprintln!("suite: side by side with cfssl");
    let env = Arc::new(Env::start(&bins, *accounts, "p256", 0, 1).await?);
    let jobs = Arc::new(make_jobs(&env.accounts, "p256", *n).await?);
    let versus = crate::peer::compare(&env, &jobs, levels, plan.runs).await?;
    Env::shutdown(env).await?;
    let mut head = String::new();
    let _ = writeln!(
        head,
        "### 0. Side by side with cfssl\n\nThe same {n} P-256 CSRs (over {accounts} accounts), each sent once per run, with the same load generator and concurrency: mailid's `POST /v1/certificates` (codes fetched beforehand; CA → MTA check, superseding revocation, durable commit; P-256 CA key) and cfssl's bare `POST /api/v1/cfssl/sign` (`cfssl serve` from Debian's golang-cfssl {}: no authorisation, no database, P-256 CA key); runs alternate between the two, {runs_note}.\n\n{}",
        crate::peer::version().await,
        crate::peer::table(&versus)
    );
    if let Some(top) = versus.last() {
        let _ = writeln!(
            head,
            "Where the CA's CPU goes at c{}: the same CSRs sent to requests that stop after part of an enrollment's steps (each row does everything the row above does, and more); {runs_note}.\n\n{}",
            top.concurrency,
            crate::peer::stages_table(top)
        );
    }
    md.insert_str(0, &head);

    let _ = writeln!(
        md,
        "_Suite time: {:.0} s._",
        started.elapsed().as_secs_f64()
    );
    print!("{md}");
    if let Some(path) = &opts.out {
        std::fs::write(path, &md)?;
    }
    Ok(())
}

/// Section 7: the identity log (`mailid-bench idlog`).
async fn idlog_section(opts: &crate::idlog::Opts) -> anyhow::Result<String> {
    let f = crate::idlog::measure(opts).await?;
    let mut t = String::new();
    let mut up = |entries: String, s: &Sample| {
        row(
            &mut t,
            &[
                entries,
                format!("{:.0}", s.rate),
                format!("{:.1}", s.p50_ms),
                format!("{:.1}", s.p99_ms),
                format!("{:.0}", s.cpu_us[1]),
            ],
        )
    };
    up("0 (empty)".into(), &f.empty);
    if let Some(s) = &f.full {
        up(format!("{} seeded", f.entries), s);
    }
    let lookup = f.lookup.unwrap_or_default();
    let alone = f.lookup_c1.unwrap_or_default();
    let (vsecs, vmib, vsize) = f.verify.unwrap_or_default();
    Ok(format!(
        "### 8. Identity log (SPEC §11)\n\n`PUT /v1/identity` bursts of {} fresh certificates (TLS client-certificate login, real upload checks, one log entry each) at c{}, first on an empty log, then after {} entries were seeded through the MTA's store ({:.1} s, service stopped); SQLite on disk, durability as shipped.\n\n| log entries before | uploads/s | p50 ms | p99 ms | MTA CPU µs per upload |\n|---:|---:|---:|---:|---:|\n{t}\nLookups `GET /v1/identity/{{address}}` of accounts with 3 entries each, every answer checked for its history and an inclusion proof ({} hashes) in the newest checkpoint, c{}: **{:.0}/s, p50 {:.1} ms, p99 {:.1} ms** (target p99 < 5 ms; MTA CPU {:.0} µs per lookup); one at a time: p50 {:.1} ms, p99 {:.1} ms.\n\n`mailid-mta-auth log verify` of {} entries (service stopped): **{:.2} s, peak {:.0} MiB**.\n\nCheckpoints signed during the second burst: {} in {:.1} s, at most **{}** in any 1-second window (the service signs at most one a second).\n\n",
        f.uploads,
        opts.concurrency,
        f.entries,
        f.seed_secs,
        f.lookup_proof_len,
        opts.concurrency,
        lookup.rate,
        lookup.p50_ms,
        lookup.p99_ms,
        lookup.cpu_us[1],
        alone.p50_ms,
        alone.p99_ms,
        vsize,
        vsecs,
        vmib,
        f.burst.checkpoints,
        f.burst.secs,
        f.burst.max_per_second,
    ))
}
