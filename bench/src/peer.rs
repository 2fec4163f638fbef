//! cfssl as a peer in our own benchmark (issue 16): its bare sign API
//! (`cfssl serve`, Debian's `golang-cfssl`: no authorisation, no database)
//! driven by the same load generator, on the same CSRs and at the same
//! concurrency as `POST /v1/certificates`, in the same run, so that
//! docs/BENCHMARKS.md gives both rates, both CPU costs and their ratio
//! instead of a figure measured elsewhere.

use std::process::Stdio;
use std::sync::Arc;

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::enroll::{Env, Job, Sample};

/// The cfssl binary (Debian's package puts it on the PATH).
const CFSSL: &str = "cfssl";

/// A running `cfssl serve` with a P-256 CA of its own.
pub struct Cfssl {
    child: Child,
    url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// cfssl's signing policy: what our profile issues (one year here; the
/// validity does not change the work).
const CONFIG: &str = r#"{"signing":{"default":{"expiry":"8760h","usages":["digital signature","key agreement","email protection"]}}}"#;

async fn output(cmd: &mut Command) -> anyhow::Result<Vec<u8>> {
    let out = cmd.stderr(Stdio::piped()).output().await?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(out.stdout)
}

impl Cfssl {
    /// Makes a P-256 CA with `cfssl gencert -initca` and serves it on a
    /// free loopback port; fails with a hint when cfssl is not installed.
    pub async fn start() -> anyhow::Result<Cfssl> {
        let dir = tempfile::tempdir()?;
        let csr = dir.path().join("ca-csr.json");
        std::fs::write(
            &csr,
            r#"{"CN":"cfssl bench CA","key":{"algo":"ecdsa","size":256}}"#,
        )?;
        let made = output(Command::new(CFSSL).args(["gencert", "-initca"]).arg(&csr))
            .await
            .context("cfssl gencert (is golang-cfssl installed? scripts/bench.sh installs it)")?;
        let made: serde_json::Value = serde_json::from_slice(&made)?;
        let field = |k: &str| -> anyhow::Result<String> {
            made[k]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("cfssl gencert gave no {k}"))
        };
        let (ca, key, cfg) = (
            dir.path().join("ca.pem"),
            dir.path().join("ca-key.pem"),
            dir.path().join("config.json"),
        );
        std::fs::write(&ca, field("cert")?)?;
        std::fs::write(&key, field("key")?)?;
        std::fs::write(&cfg, CONFIG)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(CFSSL)
            .args(["serve", "-address", "127.0.0.1", "-port", &port.to_string()])
            .arg("-ca")
            .arg(&ca)
            .arg("-ca-key")
            .arg(&key)
            .arg("-config")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting cfssl serve")?;
        let cfssl = Cfssl {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: crate::server::client().build()?,
            _dir: dir,
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(cfssl);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        anyhow::bail!("cfssl serve did not listen on port {port}")
    }

    fn cpu(&self) -> f64 {
        self.child
            .id()
            .and_then(|pid| crate::server::cpu_seconds(&format!("/proc/{pid}/stat")))
            .unwrap_or(0.0)
    }

    /// Signs every job's CSR once through `POST /api/v1/cfssl/sign` with
    /// `concurrency` requests in flight; the figures as [`Env::measure`]
    /// gives them (`cpu_us[1]`, the MTA's column, is 0: cfssl has none).
    pub async fn measure(
        &self,
        jobs: &Arc<Vec<Job>>,
        concurrency: usize,
    ) -> anyhow::Result<Sample> {
        let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
            jobs.iter()
                .map(|j| serde_json::to_vec(&serde_json::json!({ "certificate_request": j.csr() })))
                .collect::<Result<_, _>>()?,
        );
        let self_cpu = || crate::server::cpu_seconds("/proc/self/stat").unwrap_or(0.0);
        let (c0, g0) = (self.cpu(), self_cpu());
        let (http, url) = (self.http.clone(), format!("{}/api/v1/cfssl/sign", self.url));
        let (mut lat, elapsed) = Env::run_concurrently(jobs.len(), concurrency, move |i| {
            let (http, url, bodies) = (http.clone(), url.clone(), bodies.clone());
            async move {
                let r = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(bodies[i].clone())
                    .send()
                    .await?;
                let status = r.status();
                let text = r.text().await?;
                anyhow::ensure!(
                    status.is_success() && text.contains(r#""success":true"#),
                    "cfssl sign: {status} {text}"
                );
                Ok(())
            }
        })
        .await?;
        let (c1, g1) = (self.cpu(), self_cpu());
        let n = lat.len().max(1) as f64;
        let cpu_us = [(c1 - c0) * 1e6 / n, 0.0, (g1 - g0) * 1e6 / n];
        Ok(Sample::of_run(&mut lat, elapsed, cpu_us))
    }

    /// Stops cfssl.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// cfssl's version line (`cfssl version`), for the record.
pub async fn version() -> String {
    match output(Command::new(CFSSL).arg("version")).await {
        Ok(out) => String::from_utf8_lossy(&out)
            .lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .unwrap_or("(version unknown)")
            .trim()
            .to_string(),
        Err(_) => "(version unknown)".into(),
    }
}

/// Options of `mailid-bench versus`.
#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// Concurrency levels, comma separated.
    #[arg(long, default_value = "8,32")]
    pub concurrency: String,
    /// Distinct P-256 CSRs, each sent once per run to each server.
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Runs per level, alternating the two servers (the median is kept).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Accounts at the MTA the CSRs are spread over.
    #[arg(long, default_value_t = 400)]
    pub accounts: usize,
    /// Directory holding the release binaries (default: beside this one).
    #[arg(long)]
    pub bin_dir: Option<std::path::PathBuf>,
}

/// Ours (`POST /v1/certificates`, codes fetched beforehand) and cfssl's
/// sign API at one concurrency level: the medians of `runs` alternating
/// runs on the same jobs.
pub struct Versus {
    pub concurrency: usize,
    pub ours: Sample,
    pub cfssl: Sample,
    /// The requests that stop after part of an enrollment
    /// ([`crate::stages`]), at the same level.
    pub stages: Vec<(crate::stages::Stage, Sample)>,
}

/// Runs both servers over `jobs` at each level, and the stages of ours.
pub async fn compare(
    env: &Arc<Env>,
    jobs: &Arc<Vec<Job>>,
    levels: &[usize],
    runs: usize,
) -> anyhow::Result<Vec<Versus>> {
    let cfssl = Cfssl::start().await?;
    let mut out = Vec::new();
    for &c in levels {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..runs.max(1) {
            ours.push(env.measure(crate::enroll::Mode::Ca, jobs, c).await?);
            theirs.push(cfssl.measure(jobs, c).await?);
        }
        let stages = crate::stages::each(env, jobs, c, runs).await?;
        out.push(Versus {
            concurrency: c,
            ours: Sample::median(&ours),
            cfssl: Sample::median(&theirs),
            stages,
        });
    }
    cfssl.stop().await?;
    Ok(out)
}

/// The Markdown table of [`compare`]'s figures.
pub fn table(rows: &[Versus]) -> String {
    let mut md = String::from(
        "| concurrency | mailid /s | cfssl /s | ratio | p50 ms mailid / cfssl | p99 ms mailid / cfssl | CPU µs per request mailid: CA + MTA = total | CPU µs cfssl | load generator µs mailid / cfssl |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let (o, t) = (&r.ours, &r.cfssl);
        crate::suite::row(
            &mut md,
            &[
                r.concurrency.to_string(),
                format!("{:.0}", o.rate),
                format!("{:.0}", t.rate),
                format!("{:.2}×", o.rate / t.rate.max(1e-9)),
                format!("{:.1} / {:.1}", o.p50_ms, t.p50_ms),
                format!("{:.1} / {:.1}", o.p99_ms, t.p99_ms),
                format!(
                    "{:.0} + {:.0} = {:.0}",
                    o.cpu_us[0],
                    o.cpu_us[1],
                    o.cpu_us[0] + o.cpu_us[1]
                ),
                format!("{:.0}", t.cpu_us[0]),
                format!("{:.0} / {:.0}", o.cpu_us[2], t.cpu_us[2]),
            ],
        );
    }
    md
}

/// The stages table of one level ([`crate::stages::table`]).
pub fn stages_table(r: &Versus) -> String {
    crate::stages::table(&r.stages, &r.ours, &r.cfssl)
}

/// Runs `mailid-bench versus` and prints the tables.
pub async fn run(opts: Opts) -> anyhow::Result<()> {
    let levels: Vec<usize> = opts
        .concurrency
        .split(',')
        .map(|s| s.trim().parse().context("--concurrency"))
        .collect::<anyhow::Result<_>>()?;
    let bins = crate::enroll::bin_dir(opts.bin_dir.as_deref())?;
    let env = Arc::new(Env::start(&bins, opts.accounts, "p256", 0, 1).await?);
    let jobs = Arc::new(crate::enroll::make_jobs(&env.accounts, "p256", opts.requests).await?);
    let rows = compare(&env, &jobs, &levels, opts.runs).await?;
    print!("{}", table(&rows));
    for r in &rows {
        println!("\nc{}:\n{}", r.concurrency, stages_table(r));
    }
    Env::shutdown(env).await
}
