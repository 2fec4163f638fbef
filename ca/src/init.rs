//! `init` and `csr`: making a CA. `init` writes the data directory (the
//! configuration, the CA certificate or chain, the key file unless the key
//! is in a PKCS#11 token, the database and a first CRL) after checking the
//! whole set-up; `csr` makes an intermediate's request with its key in a
//! token, for an offline root to sign.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use der::Decode;

use mailid_shared::db::OpenMode;
use mailid_shared::pg::PgUrl;
use mailid_shared::timefmt::now_unix;

use crate::config::{Config, Paths};
use crate::issuer::{self, CaIssuer};
use crate::keys::{self, KeyType};
use crate::ops::{open_location, parse_database, Location};
use crate::signer::file::FileKey;
use crate::signer::pkcs11::Pkcs11Key;
use crate::signer::uri::KeyUri;
use crate::signer::CaKey;
use crate::store::Store;

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
