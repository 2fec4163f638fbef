//! Operator commands other than `init`, `csr` ([`crate::init`]) and
//! `serve`, and what they share: opening the database and the CA key.
//! They open the same database as a running server, so they take effect at
//! once; `revoke` goes through the registration authority like a holder's
//! revocation. Each takes what it needs as arguments ([`crate::cli`]
//! dispatches).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use mailid_shared::authsig::Credential;
use mailid_shared::db::OpenMode;
use mailid_shared::protocol::{CertStatus, CertificateInfo, RevocationReason};
use mailid_shared::timefmt::{now_unix, rfc3339};
use mailid_shared::{Address, Serial};

use crate::authority::{self, Unrevoked};
use crate::config::{Config, Paths};
use crate::issuer::CaIssuer;
use crate::keys;
use crate::signer::file::FileKey;
use crate::signer::pkcs11::Pkcs11Key;
use crate::signer::uri::KeyUri;
use crate::signer::CaKey;
use crate::store::{MtaRoute, Store};
use mailid_shared::pg::PgUrl;

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

/// `revoke`: through [`authority::revoke_as_operator`], the transaction of
/// a holder's revocation.
pub fn revoke(
    dir: &Path,
    database: Option<&str>,
    serial: &str,
    reason: RevocationReason,
    json: bool,
) -> anyhow::Result<()> {
    let serial: Serial = serial.parse().context("bad serial")?;
    let store = open_store(dir, database)?;
    match authority::revoke_as_operator(&store, &serial, reason) {
        Ok(at) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"serial": serial, "revoked_at": rfc3339(at), "reason": reason})
                );
            } else {
                println!("revoked {serial} ({reason})");
            }
            Ok(())
        }
        Err(Unrevoked::NotFound) => anyhow::bail!("no certificate with serial {serial}"),
        Err(Unrevoked::AlreadyRevoked) => anyhow::bail!("{serial} is already revoked"),
        Err(Unrevoked::Expired) => anyhow::bail!("{serial} has expired"),
        Err(Unrevoked::Store(e)) => Err(e.into()),
    }
}

/// Where a data directory's data lives.
pub enum Location {
    /// `DIR/ca.sqlite`, the embedded default.
    Sqlite(PathBuf),
    /// A PostgreSQL database shared by replicas.
    Postgres(Box<PgUrl>),
}

impl std::fmt::Display for Location {
    /// The path, or the URL with its password redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(u) => write!(f, "{u}"),
        }
    }
}

/// Parses a `--database` URL: PostgreSQL only (SQLite is the data
/// directory's own file, named by no URL).
pub fn parse_database(text: &str) -> anyhow::Result<PgUrl> {
    Ok(PgUrl::parse(text)?)
}

/// The database of the data directory `dir`: `flag` (`--database` or
/// `MAILID_DATABASE`) when given, else the URL its configuration records,
/// else its SQLite file.
pub fn location(dir: &Path, flag: Option<&str>) -> anyhow::Result<Location> {
    let paths = Paths::new(dir);
    if !paths.config.exists() {
        anyhow::bail!(
            "{} is not a CA data directory (run 'mailid-ca init')",
            dir.display()
        );
    }
    let recorded = Config::load(dir)?.database;
    match flag.or(recorded.as_deref()) {
        Some(text) => Ok(Location::Postgres(Box::new(parse_database(text)?))),
        None => Ok(Location::Sqlite(paths.db)),
    }
}

/// Opens `loc`; `mode` as for [`Store::open`].
pub fn open_location(loc: &Location, mode: OpenMode) -> anyhow::Result<Store> {
    match loc {
        Location::Sqlite(path) => {
            Store::open(path, mode).with_context(|| format!("opening {}", path.display()))
        }
        Location::Postgres(url) => {
            Store::open_postgres(url, mode).with_context(|| format!("opening the database {url}"))
        }
    }
}

/// Opens the database of an initialised data directory (see
/// [`location`]); a missing one is an error (only `init` creates it),
/// never silently an empty one.
pub fn open_store(dir: &Path, database: Option<&str>) -> anyhow::Result<Store> {
    Ok(open_store_named(dir, database)?.0)
}

/// [`open_store`], also giving the database's name for logs (a path, or
/// the URL without its password).
pub fn open_store_named(dir: &Path, database: Option<&str>) -> anyhow::Result<(Store, String)> {
    let loc = location(dir, database)?;
    let store = open_location(&loc, OpenMode::Existing)?;
    Ok((store, loc.to_string()))
}

/// Opens the CA key: the PKCS#11 token the configuration names, else the
/// key file (asking for the passphrase when it is encrypted).
pub fn load_key(dir: &Path, cfg: &Config, pass_file: Option<&Path>) -> anyhow::Result<CaKey> {
    let key = match &cfg.key_uri {
        Some(text) => {
            let uri = KeyUri::parse(text).context("the configuration's key URI")?;
            CaKey::Pkcs11(Pkcs11Key::open(&uri)?)
        }
        None => {
            let pass = keys::passphrase(pass_file)?;
            let pass = pass.as_deref().map(String::as_str);
            CaKey::File(FileKey::load(&Paths::new(dir).key, cfg.key_type, pass)?)
        }
    };
    if key.key_type() != cfg.key_type {
        anyhow::bail!(
            "the CA key is {}, the configuration says {}",
            key.key_type(),
            cfg.key_type
        );
    }
    Ok(key)
}

/// Loads the issuer: the CA key ([`load_key`]) and the chain.
pub fn load_issuer(dir: &Path, cfg: &Config, pass_file: Option<&Path>) -> anyhow::Result<CaIssuer> {
    let paths = Paths::new(dir);
    let key = load_key(dir, cfg, pass_file)?;
    let text = std::fs::read_to_string(&paths.ca_pem)
        .with_context(|| format!("reading {}", paths.ca_pem.display()))?;
    let chain = mailid_shared::pem::decode_chain(&text, "CERTIFICATE")
        .with_context(|| format!("reading {}", paths.ca_pem.display()))?;
    CaIssuer::new(chain, key, cfg)
}

/// `mta add|list|remove`.
pub fn mta(dir: &Path, database: Option<&str>, cmd: &MtaCommand, json: bool) -> anyhow::Result<()> {
    let store = open_store(dir, database)?;
    match cmd {
        MtaCommand::Add {
            domain,
            url,
            ca_name,
            credential_file,
        } => {
            let domain = Address::parse(&format!("x@{domain}"))
                .map_err(|_| anyhow::anyhow!("'{domain}' is not a domain name"))?
                .domain()
                .to_string();
            let u = reqwest::Url::parse(url).context("bad --url")?;
            if !matches!(u.scheme(), "http" | "https") {
                anyhow::bail!("--url must be http:// or https://");
            }
            let text = zeroize::Zeroizing::new(
                mailid_shared::input::read_text(credential_file)
                    .with_context(|| format!("reading {}", credential_file.display()))?,
            );
            let cred = Credential::parse(&text)
                .map_err(|_| anyhow::anyhow!("the credential file holds no valid credential"))?;
            store.put_route_blocking(MtaRoute {
                domain: domain.clone(),
                url: url.trim_end_matches('/').to_string(),
                ca_name: ca_name.clone(),
                credential: cred.to_text(),
            })?;
            let url = url.trim_end_matches('/');
            if json {
                println!(
                    "{}",
                    serde_json::json!({"domain": domain, "url": url, "ca_name": ca_name})
                );
            } else {
                println!("MTA for {domain}: {url} (as CA '{ca_name}')");
            }
        }
        MtaCommand::List => {
            let routes = store.routes_blocking()?;
            if json {
                let v: Vec<_> = routes
                    .iter()
                    .map(|r| serde_json::json!({"domain": r.domain, "url": r.url, "ca_name": r.ca_name}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for r in routes {
                    println!("{}\t{}\t{}", r.domain, r.url, r.ca_name);
                }
            }
        }
        MtaCommand::Remove { domain } => {
            if !store.remove_route_blocking(domain)? {
                anyhow::bail!("no MTA for {domain}");
            }
            if json {
                println!("{}", serde_json::json!({"removed": domain}));
            } else {
                println!("removed the MTA for {domain}");
            }
        }
    }
    Ok(())
}

/// `list`.
pub fn list(
    dir: &Path,
    database: Option<&str>,
    account: Option<&str>,
    status: Option<CertStatus>,
    json: bool,
) -> anyhow::Result<()> {
    let store = open_store(dir, database)?;
    let account = account
        .map(Address::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("bad --account: {e}"))?;
    let now = now_unix();
    let rows = store.list_blocking(account.as_ref(), status, now)?;
    let infos: Vec<CertificateInfo> = rows.iter().map(|r| r.info(now)).collect();
    if json {
        println!("{}", serde_json::to_string(&infos)?);
        return Ok(());
    }
    for i in infos {
        println!(
            "{}\t{}\t{}\t{}",
            i.serial,
            i.account,
            i.status.as_str(),
            i.not_after
        );
    }
    Ok(())
}

/// `show`.
pub fn show(dir: &Path, database: Option<&str>, serial: &str, json: bool) -> anyhow::Result<()> {
    let serial: Serial = serial.parse().context("bad serial")?;
    let store = open_store(dir, database)?;
    let row = store
        .get_blocking(&serial)?
        .ok_or_else(|| anyhow::anyhow!("no certificate with serial {serial}"))?;
    let i = row.info(now_unix());
    if json {
        println!("{}", serde_json::to_string_pretty(&i)?);
        return Ok(());
    }
    println!("serial:     {}", i.serial);
    println!("account:    {}", i.account);
    println!("key ID:     {}", i.key_id);
    println!("status:     {}", i.status.as_str());
    println!("not before: {}", i.not_before);
    println!("not after:  {}", i.not_after);
    if let (Some(at), Some(r)) = (&i.revoked_at, i.reason) {
        println!("revoked:    {at} ({r})");
    }
    print!("{}", i.certificate);
    Ok(())
}

/// `crl`: signs a fresh CRL, prints it or writes it to `out`.
pub fn crl(
    dir: &Path,
    database: Option<&str>,
    pass_file: Option<&Path>,
    out: Option<&Path>,
    der: bool,
    json: bool,
) -> anyhow::Result<()> {
    let cfg = Config::load(dir)?;
    let store = open_store(dir, database)?;
    let issuer = load_issuer(dir, &cfg, pass_file)?;
    // Open the output before signing, so a bad --out uses up no CRL number.
    let cannot = |p: &Path| format!("cannot write {}", p.display());
    let file = out
        .map(|p| {
            std::fs::File::create(p)
                .with_context(|| cannot(p))
                .map(|f| (p, f))
        })
        .transpose()?;
    let path = Paths::new(dir).crl;
    let floor = crate::crl::file_number(&path);
    let (snap, _) = crate::crl::sign_now(
        &store,
        &issuer,
        cfg.crl_next_update_hours,
        crate::crl::now_nanos(),
        floor,
    )?;
    crate::crl::write_file(&path, &snap.der)?;
    if let Some((p, mut f)) = file {
        use std::io::Write;
        let bytes = if der { snap.der.clone() } else { snap.pem() };
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .with_context(|| cannot(p))?;
    }
    if json {
        let mut v = serde_json::json!({
            "crl_number": snap.number,
            "this_update": rfc3339(snap.this_update),
            "next_update": rfc3339(snap.next_update),
            "entries": snap.entries,
        });
        match out {
            Some(p) => v["out"] = p.display().to_string().into(),
            None => v["crl"] = String::from_utf8_lossy(&snap.pem()).into_owned().into(),
        }
        println!("{v}");
    } else if out.is_none() {
        print!("{}", String::from_utf8_lossy(&snap.pem()));
    }
    Ok(())
}
