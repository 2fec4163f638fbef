//! The operator command line of SPEC §5.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use mailid_shared::protocol::{CertStatus, RevocationReason};

use crate::keys::KeyType;

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
    /// Sign a fresh CRL and print it (PEM) or write it to a file.
    Crl {
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write DER instead of PEM to --out.
        #[arg(long)]
        der: bool,
    },
}

/// `init` options.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The CA's name (common name of the root; with --import-cert the
    /// imported certificate's subject names the CA instead).
    #[arg(long)]
    pub name: String,
    #[arg(long, default_value = "p256")]
    pub key_type: KeyType,
    /// Base of the CRL and CA certificate URLs put into certificates.
    #[arg(long, default_value = crate::config::DEFAULT_BASE_URL)]
    pub base_url: String,
    #[arg(long, default_value_t = 365)]
    pub validity_days: u32,
    /// certificatePolicies OID of identity certificates.
    #[arg(long, default_value = crate::config::DEFAULT_POLICY_OID)]
    pub policy_oid: String,
    /// CRL lifetime (nextUpdate − thisUpdate) in hours, at most 168.
    #[arg(long, default_value_t = 24)]
    pub crl_next_update_hours: u32,
    /// Run as an intermediate: the CA certificate (chain: CA first, root last).
    #[arg(long, requires = "import_key")]
    pub import_cert: Option<PathBuf>,
    /// The imported CA certificate's key (PKCS#8 PEM, encrypted with the passphrase if so).
    #[arg(long, requires = "import_cert")]
    pub import_key: Option<PathBuf>,
}

/// `serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on (a socket address: a bad one is a
    /// usage error).
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub listen: std::net::SocketAddr,
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// `mta` subcommands.
#[derive(Debug, Subcommand)]
pub enum MtaCommand {
    /// Route a domain's TOTP checks to an MTA auth service.
    Add {
        #[arg(long)]
        domain: String,
        #[arg(long)]
        url: String,
        /// The name this CA is registered under at the MTA.
        #[arg(long)]
        ca_name: String,
        /// File holding the credential the MTA printed for this CA.
        #[arg(long)]
        credential_file: PathBuf,
    },
    /// List the routes (without credentials).
    List,
    /// Remove a domain's route.
    Remove { domain: String },
}

/// Parses the command line, runs it, and returns the exit status:
/// 0 success, 1 failure (one line on stderr), 2 usage error.
pub fn main() -> i32 {
    let cli: Cli = mailid_shared::cli::parse_or_exit("mailid-ca");
    let res = match &cli.command {
        Command::Serve(args) => crate::serve::run(&cli, args),
        _ => crate::ops::run(&cli),
    };
    match res {
        Ok(()) => 0,
        Err(e) => {
            mailid_shared::cli::error_line("mailid-ca", format!("{e:#}"));
            1
        }
    }
}
