//! The operator command line of SPEC §5: parses it and dispatches to
//! [`crate::init`], [`crate::ops`] and [`crate::serve`], which take what they need as
//! arguments (this module is the top; nothing imports it).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use mailid_shared::protocol::{CertStatus, RevocationReason};

use crate::init::{self, CsrArgs, InitArgs};
use crate::migrate::DbCommand;
use crate::ops::{self, MtaCommand};
use crate::serve::ServeArgs;

/// mailid certificate authority.
#[derive(Debug, Parser)]
#[command(name = "mailid-ca", version, about)]
pub struct Cli {
    /// Data directory (SQLite, CA key and certificate, config).
    #[arg(
        long,
        global = true,
        env = "MAILID_CA_DATA_DIR",
        default_value = "mailid-ca-data"
    )]
    pub data_dir: PathBuf,
    /// PostgreSQL URL of the database (postgres:// or postgresql://; else
    /// the one `init --database` recorded, else SQLite in the data dir).
    #[arg(long, global = true, env = "MAILID_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    /// File whose first line is the CA key passphrase (else MAILID_CA_PASSPHRASE).
    #[arg(long, global = true)]
    pub passphrase_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the CA: key, self-signed root (or imported certificate), database.
    Init(InitArgs),
    /// Make the CSR of an intermediate whose key is in a PKCS#11 token (the
    /// key pair is generated there when absent), for an offline root to sign.
    Csr(CsrArgs),
    /// Manage the MTA auth services that check TOTP codes per domain.
    Mta {
        #[command(subcommand)]
        command: MtaCommand,
    },
    /// Run the HTTP service.
    Serve(ServeArgs),
    /// Revoke a certificate.
    Revoke {
        #[arg(value_parser = mailid_shared::cli::serial_arg)]
        serial: String,
        #[arg(long, default_value = "unspecified")]
        reason: RevocationReason,
    },
    /// List certificates, newest first.
    List {
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        status: Option<CertStatus>,
    },
    /// Show one certificate.
    Show {
        #[arg(value_parser = mailid_shared::cli::serial_arg)]
        serial: String,
    },
    /// Move the data to another database.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Sign a fresh CRL and print it (PEM) or write it to a file.
    Crl {
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write DER instead of PEM to --out.
        #[arg(long)]
        der: bool,
    },
}

/// Runs one parsed command.
fn run(cli: &Cli) -> anyhow::Result<()> {
    let dir = cli.data_dir.as_path();
    let pass_file = cli.passphrase_file.as_deref();
    let json = cli.json;
    let db = cli.database.as_deref().filter(|d| !d.is_empty());
    match &cli.command {
        Command::Init(args) => init::init(dir, db, pass_file, args, json),
        Command::Csr(args) => init::csr(args, json),
        Command::Mta { command } => ops::mta(dir, db, command, json),
        Command::Serve(args) => crate::serve::run(dir, db, pass_file, args),
        Command::Revoke { serial, reason } => ops::revoke(dir, db, serial, *reason, json),
        Command::List { account, status } => ops::list(dir, db, account.as_deref(), *status, json),
        Command::Show { serial } => ops::show(dir, db, serial, json),
        Command::Crl { out, der } => ops::crl(dir, db, pass_file, out.as_deref(), *der, json),
        Command::Db { command } => crate::migrate::run(dir, db, command, json),
    }
}

/// Parses the command line, runs it, and returns the exit status:
/// 0 success, 1 failure (one line on stderr), 2 usage error.
pub fn main() -> i32 {
    let cli: Cli = mailid_shared::cli::parse_or_exit("mailid-ca");
    let res = run(&cli);
    match res {
        Ok(()) => 0,
        Err(e) => {
            mailid_shared::cli::error_line("mailid-ca", format!("{e:#}"));
            1
        }
    }
}
