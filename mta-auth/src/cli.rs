//! The operator command line of SPEC §4.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use mailid_shared::authsig::Credential;
use mailid_shared::cli;
use mailid_shared::db::OpenMode;
use mailid_shared::pg::PgUrl;
use mailid_shared::Address;
use zeroize::Zeroizing;

use crate::authz::hash_password;
use crate::client_crl::CrlSource;
use crate::config::{Config, DatabaseUrl};
use crate::identity::x509;
use crate::server::{self, ServeOptions, TlsFiles};
use crate::store::{Location, Store, StoreError};

/// mailid MTA auth service: accounts, TOTP codes bound to keys, validation
/// for CAs, identity publication.
#[derive(Parser, Debug)]
#[command(name = "mailid-mta-auth", version)]
pub struct Cli {
    /// Data directory (config.json, and the SQLite database unless a
    /// PostgreSQL --database is used).
    #[arg(long, global = true, env = "MAILID_MTA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL database URL (postgres://… or postgresql://…; libpq
    /// form, ?host=/dir for a socket); overrides the one `init --database`
    /// recorded in config.json. Without one: SQLite in the data dir.
    #[arg(
        long,
        global = true,
        env = "MAILID_DATABASE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database: Option<String>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Creates the data directory, database and config.json (with
    /// --database: the schema in that PostgreSQL database, whose URL
    /// config.json records), and the identity log's key log-key.pem
    /// (0600) unless the database already has one (a replica: copy the
    /// first data dir's log-key.pem to let it sign checkpoints too).
    Init,
    /// Manages accounts.
    #[command(subcommand)]
    Account(AccountCmd),
    /// Manages the CAs allowed to validate codes.
    #[command(subcommand)]
    Ca(CaCmd),
    /// Runs the HTTP API.
    Serve(ServeArgs),
    /// Moves the data dir's rows.
    #[command(subcommand)]
    Db(DbCmd),
    /// The identity log (SPEC §11).
    #[command(subcommand)]
    Log(LogCmd),
}

#[derive(Subcommand, Debug)]
pub enum LogCmd {
    /// Recomputes the whole tree from the entries and checks every stored
    /// hash, every account's chain and head, and every checkpoint's
    /// signature and root; exit 1 naming the first failure.
    Verify {
        /// A signed checkpoint kept outside the database (as served by
        /// `GET /v1/log/checkpoint`; repeatable): the log must hold its
        /// tree, or it was cut back (an old backup restored) or forked.
        #[arg(long = "checkpoint", value_name = "FILE")]
        checkpoints: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum DbCmd {
    /// Copies every row of the data dir's SQLite database into an empty
    /// PostgreSQL database (its schema created first), checks the row
    /// counts, then points config.json at it. Stop the service first.
    Migrate {
        /// The target database URL (postgres://… or postgresql://…).
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum AccountCmd {
    /// Adds an account (password from stdin or MAILID_PASSWORD).
    Add(PasswordArgs),
    /// Lists accounts and their state.
    List,
    /// Disables an account: no codes, no validations, no uploads.
    Disable { address: String },
    /// Enables an account again.
    Enable { address: String },
    /// Sets a new password.
    Passwd(PasswordArgs),
}

#[derive(Args, Debug)]
pub struct PasswordArgs {
    pub address: String,
    /// Reads the password as one line from stdin.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Subcommand, Debug)]
pub enum CaCmd {
    /// Registers a CA; prints its credential (one line).
    Add {
        name: String,
        /// The CA certificate (PEM) that identities uploaded here must chain to.
        #[arg(long)]
        trust_cert: Option<PathBuf>,
    },
    /// Lists registered CAs.
    List,
    /// Removes a CA; its credential stops working at once and the identities
    /// chaining to its trusted certificate are withdrawn.
    Remove { name: String },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Socket address to listen on, IP:PORT (default from config.json,
    /// 127.0.0.1:7701); anything else is a usage error.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// TLS certificate chain (PEM); serves HTTPS with --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) for TLS client-certificate login.
    #[arg(long, requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// CRL (DER or PEM) of a --client-ca CA, as a file or an http(s) URL;
    /// repeatable. Re-read every --client-crl-refresh-secs; a revoked
    /// client certificate is refused. Without one, a revoked client
    /// certificate logs in until it expires.
    #[arg(long, requires = "client_ca", value_name = "FILE|URL")]
    pub client_crl: Vec<String>,
    /// Seconds between re-reads of the --client-crl sources (default 60).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub client_crl_refresh_secs: Option<u64>,
    /// Allows plain HTTP on a non-loopback address.
    #[arg(long)]
    pub insecure_http: bool,
    #[arg(long)]
    pub totp_digits: Option<u32>,
    #[arg(long)]
    pub totp_period: Option<u64>,
    #[arg(long)]
    pub totp_skew: Option<u64>,
    #[arg(long)]
    pub lockout_threshold: Option<u32>,
    #[arg(long)]
    pub lockout_base_secs: Option<u64>,
    /// Longest lockout back-off in seconds (default from config.json,
    /// 3600): the doubling stops there.
    #[arg(long)]
    pub lockout_max_secs: Option<u64>,
    /// Seconds after which a lookup revalidates the cached CRL of the
    /// published certificate's CA (default 2; 0: on every lookup).
    #[arg(long)]
    pub crl_recheck_secs: Option<u64>,
}

/// The binary's name, the prefix of its error lines.
const BIN: &str = "mailid-mta-auth";

/// Entry point of the binary: parses, runs, maps errors to exit codes.
pub fn main() -> ExitCode {
    let cli: Cli = cli::parse_or_exit(BIN);
    mailid_shared::logging::init();
    let Some(data_dir) = cli.data_dir.clone() else {
        cli::error_line(BIN, "--data-dir is required (or set MAILID_MTA_DATA_DIR)");
        return ExitCode::from(2);
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            cli::error_line(BIN, format!("starting runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli, data_dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            cli::error_line(BIN, format!("{e:#}"));
            ExitCode::from(1)
        }
    }
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

fn read_password(from_stdin: bool) -> anyhow::Result<Zeroizing<String>> {
    let mut pw = Zeroizing::new(String::new());
    if from_stdin {
        pw = mailid_shared::input::read_line(std::io::stdin().lock(), "the password on stdin")
            .map_err(anyhow::Error::msg)?;
    } else {
        match std::env::var("MAILID_PASSWORD") {
            Ok(v) => pw.push_str(&v),
            Err(_) => anyhow::bail!("no password: give --password-stdin or set MAILID_PASSWORD"),
        }
    }
    if pw.is_empty() {
        anyhow::bail!("the password is empty");
    }
    Ok(pw)
}

fn parse_address(s: &str) -> anyhow::Result<Address> {
    Address::parse(s).map_err(|e| anyhow::anyhow!("bad address '{s}': {e}"))
}

async fn open(data_dir: &Path, database: Option<&str>) -> anyhow::Result<(Config, Store)> {
    let cfg = Config::load(data_dir)?;
    let location = cfg.location(data_dir, database)?;
    let store = server::open_store(&location, OpenMode::Existing).await?;
    Ok((cfg, store))
}

fn valid_ca_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
}

async fn run(cli: Cli, data_dir: PathBuf) -> anyhow::Result<()> {
    let json = cli.json;
    let database = cli.database.as_deref().filter(|t| !t.trim().is_empty());
    match cli.command {
        Command::Init => init(&data_dir, database, json).await,
        Command::Account(cmd) => account(cmd, &data_dir, database, json).await,
        Command::Ca(cmd) => ca(cmd, &data_dir, database, json).await,
        Command::Serve(args) => serve(args, data_dir, database).await,
        Command::Db(DbCmd::Migrate { to }) => migrate(&data_dir, &to, json).await,
        Command::Log(LogCmd::Verify { checkpoints }) => {
            log_verify(&data_dir, database, &checkpoints, json).await
        }
    }
}

/// `db migrate --to URL`: the data dir's SQLite rows into an empty
/// PostgreSQL database, then config.json (replaced atomically) names it.
/// Refused with nothing changed when the data dir already uses
/// PostgreSQL or the target holds rows.
async fn migrate(data_dir: &Path, to: &str, json: bool) -> anyhow::Result<()> {
    let mut config = Config::load(data_dir)?;
    if let Some(db) = &config.database {
        anyhow::bail!(
            "{} already uses database {}; db migrate moves a SQLite data dir",
            data_dir.display(),
            mailid_shared::pg::redact(&db.0)
        );
    }
    let url = PgUrl::parse(to)?;
    let source = data_dir.join(crate::config::DB_FILE);
    let target = url.clone();
    let copied = tokio::task::spawn_blocking(move || crate::store::sqlite_to_pg(&source, &target))
        .await?
        .with_context(|| format!("migrating to {url}"))?;
    config.database = Some(DatabaseUrl(url.secret_text().to_string()));
    config.replace(data_dir)?;
    if json {
        let rows: serde_json::Map<String, serde_json::Value> = copied
            .iter()
            .map(|(t, n)| (t.to_string(), (*n).into()))
            .collect();
        return print_json(&serde_json::json!({"database": url.to_string(), "rows": rows}));
    }
    let counts: Vec<String> = copied.iter().map(|(t, n)| format!("{n} {t}")).collect();
    println!("copied {} to {url}", counts.join(", "));
    println!(
        "{} now uses {url}; the SQLite file is no longer read",
        Config::path(data_dir).display()
    );
    Ok(())
}

/// `log verify`: one line (or JSON) when every row checks out, else the
/// first failure as the error.
async fn log_verify(
    data_dir: &Path,
    database: Option<&str>,
    checkpoints: &[PathBuf],
    json: bool,
) -> anyhow::Result<()> {
    let outside = checkpoints
        .iter()
        .map(|p| {
            let bytes = mailid_shared::input::read_file(p)
                .with_context(|| format!("reading {}", p.display()))?;
            String::from_utf8(bytes)
                .map_err(|_| anyhow::anyhow!("{} is not a checkpoint (not text)", p.display()))
        })
        .collect::<anyhow::Result<Vec<String>>>()?;
    let (_, store) = open(data_dir, database).await?;
    let dump = store.log_dump().await?;
    let v = crate::logverify::verify(&dump, &outside)
        .map_err(|e| anyhow::anyhow!("log verify: {e}"))?;
    if json {
        return print_json(&v);
    }
    println!(
        "ok: {} entries in the tree ({} pending), {} accounts, {} checkpoints (newest {})",
        v.tree_size, v.pending, v.accounts, v.checkpoints, v.latest_checkpoint
    );
    Ok(())
}

/// Creates the data dir (0700) and config.json, and the schema: in the
/// SQLite file, or with `database` in that PostgreSQL database, which is
/// reached and migrated before anything is written (a bad URL changes
/// nothing) and then recorded in config.json.
async fn init(data_dir: &Path, database: Option<&str>, json: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let fresh = !Config::path(data_dir).exists();
    let mut config = match fresh {
        true => Config::default(),
        false => Config::load(data_dir)?,
    };
    let recorded = config.location(data_dir, None)?;
    let location = config.location(data_dir, database)?;
    if !fresh && recorded.to_string() != location.to_string() {
        anyhow::bail!(
            "{} is already initialised with database {recorded}; `mailid-mta-auth db migrate --to URL` moves it",
            data_dir.display()
        );
    }
    if let Location::Postgres(_) = location {
        drop(server::open_store(&location, OpenMode::Create).await?);
        config.database = database.map(|t| DatabaseUrl(t.trim().to_string()));
    }
    if !data_dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
    }
    if fresh {
        config.create(data_dir)?;
    }
    let store = server::open_store(&location, OpenMode::Create).await?;
    crate::idlog::setup(data_dir, &store, config.log_origin.as_deref()).await?;
    drop(store);
    if json {
        print_json(&serde_json::json!({"data_dir": data_dir, "created": fresh}))
    } else {
        match fresh {
            true => println!("initialised {}", data_dir.display()),
            false => println!("{} was already initialised", data_dir.display()),
        }
        Ok(())
    }
}

fn not_found(e: StoreError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

async fn account(
    cmd: AccountCmd,
    data_dir: &Path,
    database: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let (_, store) = open(data_dir, database).await?;
    let (verb, address) = match cmd {
        AccountCmd::Add(a) => {
            let address = parse_address(&a.address)?;
            let pw = read_password(a.password_stdin)?;
            let hash = tokio::task::spawn_blocking(move || hash_password(&pw)).await??;
            let mut secret = Zeroizing::new(vec![0u8; 32]);
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
            store
                .add_account(&address, hash, secret)
                .await
                .map_err(not_found)?;
            ("added", address)
        }
        AccountCmd::List => {
            let rows = store.list_accounts().await?;
            if json {
                return print_json(&rows);
            }
            let mut out = std::io::stdout().lock();
            for r in rows {
                let state = match (r.enabled, r.locked_until) {
                    (false, _) => "disabled".to_string(),
                    (true, Some(t)) => {
                        format!("locked until {}", mailid_shared::timefmt::rfc3339(t))
                    }
                    (true, None) => "enabled".to_string(),
                };
                writeln!(out, "{}\t{state}", r.address)?;
            }
            return Ok(());
        }
        AccountCmd::Disable { address } => {
            let address = parse_address(&address)?;
            store
                .set_enabled(&address, false)
                .await
                .map_err(not_found)?;
            ("disabled", address)
        }
        AccountCmd::Enable { address } => {
            let address = parse_address(&address)?;
            store.set_enabled(&address, true).await.map_err(not_found)?;
            ("enabled", address)
        }
        AccountCmd::Passwd(a) => {
            let address = parse_address(&a.address)?;
            let pw = read_password(a.password_stdin)?;
            let hash = tokio::task::spawn_blocking(move || hash_password(&pw)).await??;
            store
                .set_password(&address, hash)
                .await
                .map_err(not_found)?;
            ("password changed", address)
        }
    };
    if json {
        print_json(&serde_json::json!({"account": address, "result": verb}))
    } else {
        println!("{verb} {address}");
        Ok(())
    }
}

async fn ca(cmd: CaCmd, data_dir: &Path, database: Option<&str>, json: bool) -> anyhow::Result<()> {
    let (_, store) = open(data_dir, database).await?;
    match cmd {
        CaCmd::Add { name, trust_cert } => {
            if !valid_ca_name(&name) {
                anyhow::bail!("bad CA name '{name}': use 1-64 of A-Z a-z 0-9 . _ -");
            }
            let trust = match trust_cert {
                Some(path) => Some(read_trust_cert(&path)?),
                None => None,
            };
            let cred = Credential::generate();
            store
                .add_ca(&name, Zeroizing::new(cred.as_bytes().to_vec()), trust)
                .await
                .map_err(not_found)?;
            if json {
                print_json(&serde_json::json!({"name": name, "credential": cred.to_text()}))
            } else {
                println!("{}", cred.to_text());
                Ok(())
            }
        }
        CaCmd::List => {
            let rows = store.list_cas().await?;
            if json {
                return print_json(&rows);
            }
            for r in rows {
                let trust = if r.trusts_certificate {
                    "trusted-cert"
                } else {
                    "-"
                };
                println!("{}\t{trust}\t{}", r.name, r.created_at);
            }
            Ok(())
        }
        CaCmd::Remove { name } => {
            let withdrawn = store.remove_ca(&name).await.map_err(not_found)?;
            if json {
                print_json(&serde_json::json!({
                    "name": name,
                    "result": "removed",
                    "identities_withdrawn": withdrawn,
                }))
            } else {
                println!("removed {name}; withdrew {withdrawn} published identities");
                Ok(())
            }
        }
    }
}

fn read_trust_cert(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use der::Decode;
    let text = mailid_shared::input::read_text(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let ders = mailid_shared::pem::decode_chain(&text, "CERTIFICATE")
        .with_context(|| format!("reading {}", path.display()))?;
    // A bundle (as served by a CA) ends with the root; trust its first
    // certificate, the issuing CA.
    let der = ders.into_iter().next().context("no certificate")?;
    let cert = x509_cert::Certificate::from_der(&der)
        .with_context(|| format!("{} is not a certificate", path.display()))?;
    if !x509::is_ca(&cert) {
        anyhow::bail!(
            "{} is not a CA certificate (basicConstraints cA is not set)",
            path.display()
        );
    }
    Ok(der)
}

async fn serve(args: ServeArgs, data_dir: PathBuf, database: Option<&str>) -> anyhow::Result<()> {
    let mut config = Config::load(&data_dir)?;
    let location = config.location(&data_dir, database)?;
    if let Some(v) = args.totp_digits {
        config.totp.digits = v;
    }
    if let Some(v) = args.totp_period {
        config.totp.period = v;
    }
    if let Some(v) = args.totp_skew {
        config.totp.skew = v;
    }
    if let Some(v) = args.lockout_threshold {
        config.lockout.threshold = v;
    }
    if let Some(v) = args.lockout_base_secs {
        config.lockout.base_secs = v;
    }
    if let Some(v) = args.lockout_max_secs {
        config.lockout.max_secs = v;
    }
    if let Some(v) = args.crl_recheck_secs {
        config.crl_recheck_secs = v;
    }
    if let Some(v) = args.client_crl_refresh_secs {
        config.client_crl_refresh_secs = v;
    }
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert,
            key,
            client_ca: args.client_ca,
            client_crls: args
                .client_crl
                .iter()
                .map(|s| CrlSource::parse(s))
                .collect(),
        }),
        _ => None,
    };
    let running = server::start(ServeOptions {
        data_dir,
        location: location.clone(),
        config,
        listen: args.listen.map(|a| a.to_string()),
        tls,
        insecure_http: args.insecure_http,
    })
    .await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", running.url())?;
        out.flush()?;
    }
    tracing::info!(url = %running.url(), database = %location, "serving");
    running.wait().await?;
    tracing::info!("stopped");
    Ok(())
}
