//! Operator commands other than `serve`. They open the same SQLite
//! database as a running server, so they take effect at once; `revoke`
//! goes through the registration authority like a holder's revocation.
//! Each takes what it needs as arguments ([`crate::cli`] dispatches).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use der::Decode;

use mailid_shared::authsig::Credential;
use mailid_shared::db::OpenMode;
use mailid_shared::protocol::{CertStatus, CertificateInfo, RevocationReason};
use mailid_shared::timefmt::{now_unix, rfc3339};
use mailid_shared::{Address, Serial};

use crate::authority::{self, Unrevoked};
use crate::config::{Config, Paths};
use crate::issuer::{self, CaIssuer};
use crate::keys::{self, KeyType};
use crate::signer::file::FileKey;
use crate::signer::pkcs11::Pkcs11Key;
use crate::signer::uri::KeyUri;
use crate::signer::CaKey;
use crate::store::{MtaRoute, Store};
use mailid_shared::pg::PgUrl;

/// `init` options.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The CA's name (common name of the root; with --import-cert the
    /// imported certificate's subject names the CA instead).
    #[arg(long)]
    pub name: String,
    /// Type of a key generated here or in the token.
    #[arg(long, default_value = "p256")]
    pub key_type: KeyType,
    /// Keep the CA key in a PKCS#11 token: an RFC 7512 URI
    /// (pkcs11:token=…;object=…?module-path=…&pin-source=file:…). The key
    /// pair labelled `object` is used, or generated there when absent. The
    /// URI is recorded without any pin-value: `serve` takes the PIN from
    /// pin-source or MAILID_PKCS11_PIN.
    #[arg(long, conflicts_with = "import_key")]
    pub key_uri: Option<String>,
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
    /// Run as an intermediate: the CA certificate (chain: CA first, root
    /// last); its key comes from --import-key or --key-uri.
    #[arg(long)]
    pub import_cert: Option<PathBuf>,
    /// The imported CA certificate's key (PKCS#8 PEM, encrypted with the passphrase if so).
    #[arg(long, requires = "import_cert")]
    pub import_key: Option<PathBuf>,
}

/// `csr` options.
#[derive(Debug, Args)]
pub struct CsrArgs {
    /// The intermediate's name (the CSR's common name).
    #[arg(long)]
    pub name: String,
    /// The PKCS#11 URI of the key pair (as for `init --key-uri`).
    #[arg(long)]
    pub key_uri: String,
    /// Type of the key pair when it is generated.
    #[arg(long, default_value = "p256")]
    pub key_type: KeyType,
    /// Where to write the CSR (PEM); standard output without it.
    #[arg(long)]
    pub out: Option<PathBuf>,
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

/// `init`; a failed `init` removes the data directory again if it made it.
pub fn init(
    dir: &Path,
    database: Option<&str>,
    pass_file: Option<&Path>,
    a: &InitArgs,
    json: bool,
) -> anyhow::Result<()> {
    let paths = Paths::new(dir);
    // A bad URL is refused before anything is made.
    let url = database.map(parse_database).transpose()?;
    if paths.config.exists() || paths.key.exists() || paths.ca_pem.exists() {
        anyhow::bail!("{} already holds a CA", dir.display());
    }
    let created = !dir.exists();
    // 0700 like the MTA's: it holds the CA key and the database. An
    // existing directory keeps the mode its owner gave it.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let result = init_in(dir, (database, url.as_ref()), pass_file, a, &paths, json);
    if result.is_err() && created {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

fn init_in(
    dir: &Path,
    (database, url): (Option<&str>, Option<&PgUrl>),
    pass_file: Option<&Path>,
    a: &InitArgs,
    paths: &Paths,
    json: bool,
) -> anyhow::Result<()> {
    let uri = a.key_uri.as_deref().map(KeyUri::parse).transpose()?;
    let pass = match uri {
        Some(_) if pass_file.is_some() => {
            anyhow::bail!("--passphrase-file is for a key file; a key in a token has a PIN")
        }
        Some(_) => None,
        None => keys::passphrase(pass_file)?,
    };
    let pass = pass.as_deref().map(String::as_str);
    let now = now_unix();
    if a.import_cert.is_none() && (a.name.trim().is_empty() || a.name.chars().count() > 64) {
        // The root's common name (ub-common-name is 64).
        anyhow::bail!("--name must be 1 to 64 characters");
    }
    // The configuration's ranges are checked before a key is made (a key
    // generated in a token outlives a failed init).
    Config {
        name: a.name.clone(),
        base_url: a.base_url.trim_end_matches('/').to_string(),
        validity_days: a.validity_days,
        key_type: a.key_type,
        policy_oid: a.policy_oid.clone(),
        crl_next_update_hours: a.crl_next_update_hours,
        imported: false,
        rate_limits: Default::default(),
        database: None,
        key_uri: None,
    }
    .validate()?;
    let read_chain = |cert_path: &Path| -> anyhow::Result<Vec<Vec<u8>>> {
        let text = mailid_shared::input::read_text(cert_path)
            .with_context(|| format!("reading {}", cert_path.display()))?;
        mailid_shared::pem::decode_chain(&text, "CERTIFICATE")
            .with_context(|| format!("reading {}", cert_path.display()))
    };
    let (key, chain) = match (&a.import_cert, &a.import_key, &uri) {
        (Some(cert_path), Some(key_path), _) => {
            let key_text = zeroize::Zeroizing::new(
                mailid_shared::input::read_text(key_path)
                    .with_context(|| format!("reading {}", key_path.display()))?,
            );
            let der = keys::decode_key(&key_text, pass)?;
            (
                CaKey::File(FileKey::from_pkcs8(&der)?),
                read_chain(cert_path)?,
            )
        }
        (Some(cert_path), None, Some(uri)) => {
            // The intermediate's key pair is in the token already (its CSR
            // was made with `mailid-ca csr`).
            (CaKey::Pkcs11(Pkcs11Key::open(uri)?), read_chain(cert_path)?)
        }
        (Some(_), None, None) => anyhow::bail!("--import-cert needs --import-key or --key-uri"),
        (None, _, Some(uri)) => {
            let (key, made) = Pkcs11Key::open_or_generate(uri, a.key_type)?;
            let what = if made { "generated" } else { "found" };
            tracing::info!(key = %uri, key_type = %key.key_type(), "CA key {what} in the token");
            let key = CaKey::Pkcs11(key);
            let root = issuer::self_signed_root(&a.name, &key, now)?;
            (key, vec![root])
        }
        (None, _, None) => {
            let key = CaKey::File(FileKey::generate(a.key_type)?);
            let root = issuer::self_signed_root(&a.name, &key, now)?;
            (key, vec![root])
        }
    };
    let key_type = key.key_type();
    let first = chain
        .first()
        .ok_or_else(|| anyhow::anyhow!("no CA certificate"))?;
    let ca_cert =
        x509_cert::Certificate::from_der(first).context("CA certificate does not parse")?;
    // An imported CA is named by its certificate, not by --name.
    let name = if a.import_cert.is_some() {
        ca_cert.tbs_certificate.subject.to_string()
    } else {
        a.name.clone()
    };
    let cfg = Config {
        name,
        base_url: a.base_url.trim_end_matches('/').to_string(),
        validity_days: a.validity_days,
        key_type,
        policy_oid: a.policy_oid.clone(),
        crl_next_update_hours: a.crl_next_update_hours,
        imported: a.import_cert.is_some(),
        rate_limits: Default::default(),
        database: database.map(str::to_string),
        key_uri: uri.as_ref().map(KeyUri::recorded),
    };
    cfg.validate()?;
    // Check the whole set-up before writing anything.
    issuer::check_ca_cert(&ca_cert, &key)?;
    let pkcs8 = match &key {
        CaKey::File(k) => Some(k.pkcs8_der()),
        CaKey::Pkcs11(_) => None,
    };
    let ca_issuer = CaIssuer::new(chain.clone(), key, &cfg)?;
    // PostgreSQL first: an unreachable or unusable database (or one that
    // already holds a CA's data) leaves nothing written.
    let pg = match url {
        Some(url) => {
            let store =
                open_location(&Location::Postgres(Box::new(url.clone())), OpenMode::Create)?;
            if !store.is_empty_blocking()? {
                anyhow::bail!("the database {url} already holds a CA's data");
            }
            Some(store)
        }
        None => None,
    };

    // A key in a token leaves no file behind.
    if let Some(pkcs8) = &pkcs8 {
        keys::save_key(&paths.key, pkcs8, pass)?;
    }
    mailid_shared::files::write_atomic(
        &paths.ca_pem,
        mailid_shared::pem::encode_chain(&chain).as_bytes(),
    )?;
    let store = match pg {
        Some(store) => store,
        None => Store::open(&paths.db, OpenMode::Create)?,
    };
    cfg.save(dir)?;
    let floor = crate::crl::file_number(&paths.crl);
    let (snap, _) = crate::crl::sign_now(
        &store,
        &ca_issuer,
        cfg.crl_next_update_hours,
        crate::crl::now_nanos(),
        floor,
    )?;
    crate::crl::write_file(&paths.crl, &snap.der)?;
    if json {
        println!(
            "{}",
            serde_json::json!({"name": cfg.name, "key_type": key_type, "ca_pem": paths.ca_pem, "encrypted": pass.is_some(), "key_uri": cfg.key_uri})
        );
    } else {
        println!(
            "CA '{}' ({key_type}) initialised; certificate in {}",
            cfg.name,
            paths.ca_pem.display()
        );
    }
    Ok(())
}

/// `csr`: the PKCS#10 request of an intermediate, signed by its key in the
/// token; the offline root signs it, and `init --key-uri URI --import-cert
/// CHAIN` then makes the CA.
pub fn csr(a: &CsrArgs, json: bool) -> anyhow::Result<()> {
    if a.name.trim().is_empty() || a.name.chars().count() > 64 {
        anyhow::bail!("--name must be 1 to 64 characters");
    }
    let uri = KeyUri::parse(&a.key_uri)?;
    let (key, made) = Pkcs11Key::open_or_generate(&uri, a.key_type)?;
    let key = CaKey::Pkcs11(key);
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, a.name.as_str());
    let pem = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| anyhow::anyhow!("making the CSR: {e}"))?;
    match &a.out {
        Some(p) => mailid_shared::files::write_atomic(p, pem.as_bytes())
            .with_context(|| format!("writing {}", p.display()))?,
        None => print!("{pem}"),
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"key_uri": uri.recorded(), "key_type": key.key_type(), "generated": made, "out": a.out})
        );
    } else if a.out.is_some() {
        let what = if made { "generated" } else { "found" };
        println!(
            "CSR for '{}' written; the {} key was {what} in token '{}'",
            a.name,
            key.key_type(),
            uri.token
        );
    }
    Ok(())
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
