//! Where an enrollment's CPU goes, measured rather than profiled: the same
//! load generator and CSRs as the cfssl comparison, sent to requests that
//! stop after ever more of an enrollment's steps, so the difference
//! between two rows is what the steps between them cost the CA.
//!
//! 1. HTTP alone: `POST /v1/certificates` whose body does not decode (rate
//!    limit, routing, body read, JSON error, a problem document);
//! 2. and the CSR: a real CSR with a malformed code (parse, key policy, proof
//!    of possession, then the 400 for the code's form);
//! 3. and route, draft and lint: `POST /v1/certificates/check` (the route and
//!    compromised-key read, rcgen's draft, the pre-sign lint; no code used);
//! 4. the enrollment itself (the MTA check, the signature, the durable
//!    commit), from [`crate::peer::compare`].

use std::sync::Arc;

use crate::enroll::{Env, Job, Sample};

/// The requests that stop early, in the order of SPEC §5's steps.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    Http,
    Csr,
    Check,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Http, Stage::Csr, Stage::Check];

    fn label(self) -> &'static str {
        match self {
            Stage::Http => "HTTP alone: a body that does not decode → 400",
            Stage::Csr => "+ the CSR checks: a malformed code → 400",
            Stage::Check => "+ route read, draft, pre-sign lint: `/v1/certificates/check` → 200",
        }
    }

    fn request(self, csr: &str) -> (&'static str, Vec<u8>, u16) {
        match self {
            Stage::Http => ("/v1/certificates", br#"{"csr":1}"#.to_vec(), 400),
            Stage::Csr => (
                "/v1/certificates",
                serde_json::json!({ "csr": csr, "totp": "x" })
                    .to_string()
                    .into_bytes(),
                400,
            ),
            Stage::Check => (
                "/v1/certificates/check",
                serde_json::json!({ "csr": csr }).to_string().into_bytes(),
                200,
            ),
        }
    }
}

/// Sends every job's request of `stage` once, `concurrency` in flight.
pub async fn measure(
    env: &Arc<Env>,
    jobs: &Arc<Vec<Job>>,
    stage: Stage,
    concurrency: usize,
) -> anyhow::Result<Sample> {
    let requests: Arc<Vec<(&'static str, Vec<u8>, u16)>> =
        Arc::new(jobs.iter().map(|j| stage.request(j.csr())).collect());
    let cpu0 = env.cpu();
    let e = env.clone();
    let (mut lat, elapsed) = Env::run_concurrently(jobs.len(), concurrency, move |i| {
        let (e, requests) = (e.clone(), requests.clone());
        async move {
            let (path, body, want) = &requests[i];
            let r = e
                .http
                .post(format!("{}{path}", e.ca_url(0)))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await?;
            let status = r.status().as_u16();
            let text = r.text().await?;
            anyhow::ensure!(status == *want, "POST {path}: {status} {text}");
            Ok(())
        }
    })
    .await?;
    let cpu1 = env.cpu();
    let n = lat.len().max(1) as f64;
    let cpu_us = [0, 1, 2].map(|i| (cpu1[i] - cpu0[i]) * 1e6 / n);
    Ok(Sample::of_run(&mut lat, elapsed, cpu_us))
}

/// Each stage at `concurrency`: the median of `runs` runs.
pub async fn each(
    env: &Arc<Env>,
    jobs: &Arc<Vec<Job>>,
    concurrency: usize,
    runs: usize,
) -> anyhow::Result<Vec<(Stage, Sample)>> {
    let mut out = Vec::new();
    for stage in Stage::ALL {
        let mut samples = Vec::new();
        for _ in 0..runs.max(1) {
            samples.push(measure(env, jobs, stage, concurrency).await?);
        }
        out.push((stage, Sample::median(&samples)));
    }
    Ok(out)
}

/// The Markdown table: each stage's rate and CA CPU per request, then the
/// whole enrollment (`enrollment`, MTA included) and cfssl's sign.
pub fn table(stages: &[(Stage, Sample)], enrollment: &Sample, cfssl: &Sample) -> String {
    let mut md = String::from(
        "| request | /s | CA CPU µs per request | MTA CPU µs | load generator µs |\n|---|---:|---:|---:|---:|\n",
    );
    let mut line = |label: &str, s: &Sample| {
        crate::suite::row(
            &mut md,
            &[
                label.to_string(),
                format!("{:.0}", s.rate),
                format!("{:.0}", s.cpu_us[0]),
                format!("{:.0}", s.cpu_us[1]),
                format!("{:.0}", s.cpu_us[2]),
            ],
        );
    };
    for (stage, s) in stages {
        line(stage.label(), s);
    }
    line(
        "+ the MTA check, the signature, the durable commit: the enrollment → 201",
        enrollment,
    );
    line("cfssl's whole sign request, for comparison", cfssl);
    md
}
