//! CRL benchmarks: time and peak memory of `mailid-ca crl` (a fresh CRL
//! signed from the database) with N revoked certificates seeded, and how
//! long a new revocation takes to show in the CRL the running CA serves.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use mailid_shared::Serial;

use crate::server::{operator, Service};

/// Figures of one CRL size.
#[derive(Debug, Clone, Copy)]
pub struct SignFigures {
    pub entries: usize,
    /// Median wall time of the signing command, seconds.
    pub secs: f64,
    /// Largest peak resident memory of the command, MiB.
    pub peak_mib: f64,
    /// Size of the DER CRL, bytes.
    pub bytes: u64,
}

/// Runs `program args…` to completion under GNU time; returns its wall
/// time and peak RSS (KiB). (The rusage of a child spawned straight from
/// this process would count this process's own memory, which the child
/// shares until its exec.)
pub(crate) fn timed(
    program: &Path,
    args: &[std::ffi::OsString],
) -> anyhow::Result<(Duration, u64)> {
    let report = tempfile::NamedTempFile::new()?;
    let t0 = Instant::now();
    let out = std::process::Command::new("/usr/bin/time")
        .envs(crate::server::child_env_vars())
        .args(["-f", "%M", "-o"])
        .arg(report.path())
        .arg(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .output()
        .context("running /usr/bin/time (Debian package `time`)")?;
    let elapsed = t0.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "{} failed: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let kib = std::fs::read_to_string(report.path())?
        .trim()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .context("no peak memory from /usr/bin/time")?;
    Ok((elapsed, kib))
}

/// A CA data directory with `revoked` revoked and `valid` valid
/// certificates; returns the serials of some valid ones.
async fn seeded_ca(
    bins: &Path,
    dir: &Path,
    revoked: usize,
    valid: usize,
) -> anyhow::Result<Vec<String>> {
    seeded_ca_with(bins, dir, revoked, valid, &[]).await
}

/// [`seeded_ca`] with more `init` arguments (the CA key's type or URI).
async fn seeded_ca_with(
    bins: &Path,
    dir: &Path,
    revoked: usize,
    valid: usize,
    init_extra: &[&str],
) -> anyhow::Result<Vec<String>> {
    let mut init = vec![
        "init",
        "--name",
        "mailid CRL bench CA",
        "--base-url",
        "http://pki.example.com",
    ];
    init.extend_from_slice(init_extra);
    operator(&bins.join("mailid-ca"), dir, &init, None).await?;
    let db = dir.join("ca.sqlite");
    tokio::task::spawn_blocking(move || crate::seed::certificates(&db, revoked + valid, revoked))
        .await?
}

/// Signs a CRL of `entries` revoked certificates `runs` times with
/// `mailid-ca crl --der --out`.
pub async fn sign(bins: &Path, entries: usize, runs: usize) -> anyhow::Result<SignFigures> {
    sign_with(bins, entries, runs, &[]).await
}

/// [`sign`] for a CA made with more `init` arguments.
async fn sign_with(
    bins: &Path,
    entries: usize,
    runs: usize,
    init_extra: &[&str],
) -> anyhow::Result<SignFigures> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("ca");
    seeded_ca_with(bins, &dir, entries, 0, init_extra).await?;
    let out = tmp.path().join("crl.der");
    let mut times = Vec::new();
    let mut peak = 0;
    for _ in 0..runs.max(1) {
        let program = bins.join("mailid-ca");
        let args: Vec<std::ffi::OsString> = vec![
            "--data-dir".into(),
            dir.clone().into(),
            "crl".into(),
            "--der".into(),
            "--out".into(),
            out.clone().into(),
        ];
        let (t, rss) = tokio::task::spawn_blocking(move || timed(&program, &args)).await??;
        times.push(t.as_secs_f64());
        peak = peak.max(rss);
    }
    times.sort_by(f64::total_cmp);
    Ok(SignFigures {
        entries,
        secs: times[times.len() / 2],
        peak_mib: peak as f64 / 1024.0,
        bytes: std::fs::metadata(&out)?.len(),
    })
}

async fn fetch_crl(
    http: &reqwest::Client,
    url: &str,
    etag: Option<&str>,
) -> anyhow::Result<Option<(String, Vec<u8>)>> {
    let mut req = http.get(format!("{url}/v1/crl.der"));
    if let Some(e) = etag {
        req = req.header("if-none-match", e);
    }
    let r = req.send().await?;
    if r.status() == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(None);
    }
    anyhow::ensure!(r.status().is_success(), "GET /v1/crl.der: {}", r.status());
    let etag = r
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .context("CRL answer without ETag")?
        .to_string();
    Ok(Some((etag, r.bytes().await?.to_vec())))
}

/// With `entries` revocations in the served CRL, revokes certificates one
/// at a time (`mailid-ca revoke`, while the CA runs) and returns, for each
/// of `runs`, the milliseconds from the committed revocation to a served
/// CRL that lists it.
pub async fn visibility(bins: &Path, entries: usize, runs: usize) -> anyhow::Result<Vec<f64>> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("ca");
    let valid = seeded_ca(bins, &dir, entries, runs.max(1)).await?;
    let ca_bin = bins.join("mailid-ca");
    let ca = Service::start(&ca_bin, &dir, &[]).await?;
    let http = reqwest::Client::new();
    // Wait for the CRL covering the seeded revocations.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut etag = loop {
        if let Some((etag, der)) = fetch_crl(&http, &ca.url, None).await? {
            if der.len() > entries * 20 {
                break etag;
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "the CRL never covered the seed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut out = Vec::new();
    for serial in valid.iter().take(runs.max(1)) {
        operator(
            &ca_bin,
            &dir,
            &["revoke", serial, "--reason", "keyCompromise"],
            None,
        )
        .await?;
        let t0 = Instant::now();
        let needle = serial
            .parse::<Serial>()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .to_bytes();
        loop {
            if let Some((e, der)) = fetch_crl(&http, &ca.url, Some(&etag)).await? {
                etag = e;
                if der.windows(needle.len()).any(|w| w == needle.as_slice()) {
                    break;
                }
            }
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(60),
                "revocation of {serial} never showed in the CRL"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        out.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    ca.stop().await?;
    Ok(out)
}

/// `mailid-bench crl` options.
#[derive(clap::Args)]
pub struct Opts {
    /// CRL sizes (revoked certificates), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    pub entries: Vec<usize>,
    /// CA key type (as `mailid-ca init --key-type`); `softhsm-TYPE` keeps a
    /// key of that type in a throwaway SoftHSM2 token (`init --key-uri`).
    #[arg(long, default_value = "p256")]
    pub ca_key_type: String,
    /// Signings per size (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Directory holding the release binaries (default: beside this one).
    #[arg(long)]
    pub bin_dir: Option<std::path::PathBuf>,
}

/// `mailid-bench crl`: `mailid-ca crl` time and peak memory per size.
pub async fn run(opts: Opts) -> anyhow::Result<()> {
    let bins = crate::enroll::bin_dir(opts.bin_dir.as_deref())?;
    let key_type = opts.ca_key_type.as_str();
    let hsm = match key_type.strip_prefix("softhsm-") {
        Some(_) => Some(crate::hsm::SoftHsm::new().await?),
        None => None,
    };
    let mut init = vec![
        "--key-type",
        key_type.strip_prefix("softhsm-").unwrap_or(key_type),
    ];
    if let Some(h) = &hsm {
        init.extend(["--key-uri", h.uri.as_str()]);
    }
    for &n in &opts.entries {
        let f = sign_with(&bins, n, opts.runs, &init).await?;
        println!(
            "crl: CA key {key_type}, {} entries: {:.3} s, peak {:.0} MiB, {} bytes (median of {})",
            f.entries, f.secs, f.peak_mib, f.bytes, opts.runs
        );
    }
    Ok(())
}
