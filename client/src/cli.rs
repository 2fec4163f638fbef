//! The command line of `mailid` (SPEC §6).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use mailid_client::KeyType;
use mailid_shared::protocol::RevocationReason;

/// mailid: get, revoke and look up mail identities (X.509 certificates for
/// mail addresses) through your MTA and a CA.
#[derive(Debug, Parser)]
#[command(name = "mailid", version, max_term_width = 100)]
pub struct Cli {
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Key store directory (default: $XDG_DATA_HOME/mailid or
    /// ~/.local/share/mailid).
    #[arg(long, global = true, env = "MAILID_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,

    /// Trust only the CA certificates in this PEM bundle for HTTPS.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,

    /// File whose first line is the passphrase of the stored key
    /// (or set MAILID_PASSPHRASE).
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Get a new identity: key, CSR, TOTP, enrollment, store, publication
    /// (steps 2-10).
    Enroll(EnrollArgs),
    /// Revoke one of your certificates at the CA.
    Revoke(RevokeArgs),
    /// Publish the current stored identity at the MTA again.
    Upload(UploadArgs),
    /// Show the stored current identity and the earlier ones.
    Show(ShowArgs),
    /// Fetch the identity an MTA publishes for an address.
    Lookup(LookupArgs),
    /// Print the strong key ID of a certificate, CSR, public or private key
    /// (PEM or DER).
    KeyId(KeyIdArgs),
    /// Write an identity (key, certificate, chain) to a PKCS#12 file for
    /// mail programs.
    Export(ExportArgs),
    /// Back up every stored key of an account at its MTA, encrypted under a
    /// fresh recovery key (shown once, or split into shares).
    Backup(BackupArgs),
    /// Rebuild the store on a new device from the account's backups at its
    /// MTA, with the recovery key or two of its shares.
    Recover(RecoverArgs),
}

/// How the holder signs in to the MTA.
#[derive(Debug, Args)]
pub struct Login {
    /// Read the account password from one line of stdin (or set
    /// MAILID_PASSWORD).
    #[arg(long)]
    pub password_stdin: bool,

    /// TLS client certificate (PEM) naming the account, instead of a
    /// password.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// Key of the TLS client certificate (PEM).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The account's mail address.
    #[arg(long, value_name = "ADDRESS")]
    pub email: String,
    /// Base URL of the MTA auth service.
    #[arg(long, value_name = "URL")]
    pub mta: String,
    /// Base URL of the CA.
    #[arg(long, value_name = "URL")]
    pub ca: String,
    /// Key type to generate: p256, p384 or rsa3072.
    #[arg(long, default_value = "p256", value_name = "TYPE")]
    pub key_type: KeyType,
    #[command(flatten)]
    pub login: Login,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The account's mail address.
    #[arg(long, value_name = "ADDRESS")]
    pub email: String,
    /// Base URL of the MTA auth service.
    #[arg(long, value_name = "URL")]
    pub mta: String,
    /// Base URL of the CA that issued the certificate.
    #[arg(long, value_name = "URL")]
    pub ca: String,
    /// Serial number of the certificate (hex).
    #[arg(long, value_name = "SERIAL", value_parser = mailid_shared::cli::serial_arg)]
    pub serial: String,
    /// keyCompromise, superseded, affiliationChanged, cessationOfOperation,
    /// privilegeWithdrawn or unspecified.
    #[arg(long, value_name = "R")]
    pub reason: Option<RevocationReason>,
    #[command(flatten)]
    pub login: Login,
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The account's mail address.
    #[arg(long, value_name = "ADDRESS")]
    pub email: String,
    /// Base URL of the MTA auth service.
    #[arg(long, value_name = "URL")]
    pub mta: String,
    #[command(flatten)]
    pub login: Login,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The account's mail address.
    #[arg(long, value_name = "ADDRESS")]
    pub email: String,
}

#[derive(Debug, Args)]
pub struct LookupArgs {
    /// Address to look up: local@domain or a strong address
    /// KEYID?local@domain.
    pub address: String,
    /// Base URL of the MTA auth service.
    #[arg(long, value_name = "URL")]
    pub mta: String,
    /// Write the certificate (PEM) to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Check the answer against the MTA's signed identity log: its pinned
    /// key, the account's hash chain, the inclusion proof and consistency
    /// with the checkpoint seen before (SPEC §11).
    #[arg(long)]
    pub verify: bool,
}

#[derive(Debug, Args)]
pub struct KeyIdArgs {
    /// Certificate, CSR, public key or private key file.
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The account's mail address.
    #[arg(long, value_name = "ADDRESS")]
    pub email: String,
    /// The PKCS#12 file to create (an existing file is never replaced).
    #[arg(long, value_name = "FILE")]
    pub p12: PathBuf,
    /// Serial (hex) of an earlier identity in the store (default: the
    /// current one).
    #[arg(long, value_name = "SERIAL", value_parser = mailid_shared::cli::serial_arg)]
    pub serial: Option<String>,
    /// 3DES and a SHA-1 MAC, for importers that cannot read AES-256 and
    /// SHA-256.
    #[arg(long)]
    pub legacy: bool,
    /// Read the PKCS#12 password from one line of stdin (or set
    /// MAILID_P12_PASSWORD).
    #[arg(long)]
    pub p12_password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The account's mail address.
    #[arg(long, value_name = "ADDRESS")]
    pub email: String,
    /// Base URL of the MTA auth service.
    #[arg(long, value_name = "URL")]
    pub mta: String,
    /// Split the recovery key into N shares, any K of which recover it,
    /// instead of showing it (e.g. 2-of-3).
    #[arg(long, value_name = "K-of-N", value_parser = split_arg)]
    pub split: Option<(u8, u8)>,
    /// Directory for the share files (share-1.txt…, mode 0600; default:
    /// the current directory); without --split, recovery-key.txt is
    /// written there as well as shown.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Also drop the MTA's backups of keys this store does not hold (made
    /// on another device); without it such backups make `backup` refuse.
    #[arg(long)]
    pub replace: bool,
    #[command(flatten)]
    pub login: Login,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("secret").required(true).args(["recovery_key_file", "share_file"])))]
pub struct RecoverArgs {
    /// The account's mail address.
    #[arg(long, value_name = "ADDRESS")]
    pub email: String,
    /// Base URL of the MTA auth service.
    #[arg(long, value_name = "URL")]
    pub mta: String,
    /// File holding the recovery key `mailid backup` showed.
    #[arg(long, value_name = "F")]
    pub recovery_key_file: Option<PathBuf>,
    /// A share file of the recovery key; give as many as the split needs.
    #[arg(long, value_name = "F")]
    pub share_file: Vec<PathBuf>,
    #[command(flatten)]
    pub login: Login,
}

/// `K-of-N` with 2 <= K <= N <= 16.
fn split_arg(text: &str) -> Result<(u8, u8), String> {
    let bad = || format!("'{text}' is not K-of-N with 2 <= K <= N <= 16 (e.g. 2-of-3)");
    let (k, n) = text.split_once("-of-").ok_or_else(bad)?;
    let (k, n): (u8, u8) = (k.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
    if k < 2 || n < k || n > 16 {
        return Err(bad());
    }
    Ok((k, n))
}
