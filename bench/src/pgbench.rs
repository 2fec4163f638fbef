//! The PostgreSQL rows of the suite (SPEC §8): the CA endpoint and the full
//! flow with one and with two replicas of each service, and TOTP
//! validations, each on a fresh database of the given cluster. The services
//! find the database through `MAILID_DATABASE`, which every command and
//! `serve` of both binaries read, so the set-up is the SQLite one.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use mailid_shared::pg::testing;

use crate::enroll::{Env, Job, Mode};
use crate::suite::{median_of, row};

/// What the PostgreSQL rows run.
pub struct Plan {
    pub runs: usize,
    pub accounts: usize,
    pub levels: Vec<usize>,
    pub validate: crate::validate::Opts,
}

/// Points the services started from now on at a fresh database.
fn use_fresh_database(hint: &str) {
    let url = testing::fresh_database(hint);
    std::env::set_var("MAILID_DATABASE", url.secret_text());
}

/// Measures and renders the PostgreSQL section; `sqlite_ca` holds the
/// SQLite CA-endpoint rates (concurrency, enrollments/s) for comparison.
pub async fn section(
    bins: &Path,
    admin_url: &str,
    plan: &Plan,
    jobs: &Arc<Vec<Job>>,
    sqlite_ca: &[(usize, f64)],
) -> anyhow::Result<String> {
    std::env::set_var(testing::ADMIN_URL_VAR, admin_url);
    let mut rows = String::new();
    for replicas in [1, 2] {
        eprintln!("suite: PostgreSQL, {replicas} replica(s) of each service");
        use_fresh_database("bench");
        let env = Arc::new(Env::start(bins, plan.accounts, "p256", 0, replicas).await?);
        for &c in &plan.levels {
            let full = median_of(&env, Mode::Full, jobs, c, plan.runs).await?;
            let ca = median_of(&env, Mode::Ca, jobs, c, plan.runs).await?;
            for (mode, s) in [("full flow", full), ("CA endpoint", ca)] {
                let vs = sqlite_ca
                    .iter()
                    .find(|(sc, _)| *sc == c && mode == "CA endpoint")
                    .map(|(_, r)| format!("{:.0}%", 100.0 * s.rate / r))
                    .unwrap_or_default();
                row(
                    &mut rows,
                    &[
                        replicas.to_string(),
                        mode.to_string(),
                        c.to_string(),
                        format!("{:.0}", s.rate),
                        format!("{:.1}", s.p50_ms),
                        format!("{:.1}", s.p99_ms),
                        format!(
                            "{:.0} / {:.0} / {:.0}",
                            s.cpu_us[0], s.cpu_us[1], s.cpu_us[2]
                        ),
                        vs,
                    ],
                );
            }
        }
        Env::shutdown(env).await?;
    }
    eprintln!("suite: PostgreSQL, TOTP validations");
    use_fresh_database("benchval");
    let mut rates = crate::validate::measure(plan.validate.clone()).await?;
    std::env::remove_var("MAILID_DATABASE");
    rates.sort_by(f64::total_cmp);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### 7. PostgreSQL (SPEC §8)\n\nThe same services on a PostgreSQL 15 cluster on this machine (`fsync=on`, `synchronous_commit=on`), a fresh database per row group; P-256 CSRs and CA key, {} runs each (median). Two replicas: a copy of each data dir served by a second process, the load generator alternating between the CAs and splitting the accounts between the MTAs, the CAs' MTA route through a round-robin TCP proxy. CPU is summed over replicas. \"vs. SQLite\": the CA endpoint rate against section 2's P-256 row at the same concurrency.\n\n| replicas of each | mode | concurrency | enrollments/s | p50 ms | p99 ms | CPU µs per enrollment: CA / MTA / load generator | vs. SQLite |\n|---:|---|---:|---:|---:|---:|---:|---:|\n{rows}\nTOTP validations on PostgreSQL (one MTA, {} codes per round, concurrency 64): **{:.0} validations/s** (median of {}; all: {}).\n",
        plan.runs,
        plan.validate.accounts * plan.validate.keys,
        rates[rates.len() / 2],
        rates.len(),
        rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(md)
}
