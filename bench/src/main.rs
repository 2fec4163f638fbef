//! `mailid-bench`: benchmarks of the mailid services over real HTTP
//! against their release binaries. See docs/BENCHMARKS.md.

mod crl;
mod enroll;
mod hsm;
mod idlog;
mod peer;
mod pgbench;
mod pki;
mod replicas;
mod seed;
mod server;
mod stages;
mod suite;
mod validate;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mailid-bench",
    version,
    about = "Benchmarks of the mailid services"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validations per second at the MTA auth service (durable single use).
    Validate(validate::Opts),
    /// Enrollments per second at the CA (with the real MTA).
    Enroll(enroll::Opts),
    /// Time and peak memory of signing a CRL of N entries (`mailid-ca crl`).
    Crl(crl::Opts),
    /// Ours and cfssl's sign API side by side on the same CSRs.
    Versus(peer::Opts),
    /// The identity log at 1M entries: uploads, lookups with proofs, `log
    /// verify`, checkpoints under a burst.
    Idlog(idlog::Opts),
    /// Every benchmark, as the Markdown tables of docs/BENCHMARKS.md.
    Suite(suite::Opts),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let res = rt.block_on(async {
        match cli.command {
            Cmd::Validate(opts) => validate::run(opts).await,
            Cmd::Enroll(opts) => enroll::run(opts).await,
            Cmd::Crl(opts) => crl::run(opts).await,
            Cmd::Versus(opts) => peer::run(opts).await,
            Cmd::Idlog(opts) => idlog::run(opts).await,
            Cmd::Suite(opts) => suite::run(opts).await,
        }
    });
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
