//! `mailid recover` (SPEC §10): the store rebuilt on a new device from the
//! account's backups at the MTA, with the recovery key or enough shares.
//! Every backup is opened and checked — its key is the key of its key ID
//! and of its certificate, the certificate names the account and its chain
//! links — before anything is written; the current identity is the one the
//! MTA publishes, never guessed from dates.

use std::path::{Path, PathBuf};

use mailid_shared::pbes2::{self, Pbes2Error};
use mailid_shared::protocol::StoredBackup;
use mailid_shared::{pem, Address, KeyId, StrongAddress};
use zeroize::Zeroizing;

use crate::api;
use crate::cert;
use crate::enroll::parse_address;
use crate::error::{Error, Result, Service};
use crate::keyfile::key_id_of_pkcs8;
use crate::recovery::RecoveryKey;
use crate::store::{IdentityStatus, NewIdentity, Store, StoredIdentity};
use crate::transport::{Credentials, Endpoint, Http, TlsOptions};

/// Most PBKDF2 iterations a fetched backup may ask for (mailid writes
/// 10,000): the MTA, or whoever holds the account password, cannot make
/// recovery burn CPU.
pub const MAX_BACKUP_ITERATIONS: u32 = 1_000_000;

/// Where `recover` gets the recovery key.
pub enum RecoverWith {
    KeyFile(PathBuf),
    Shares(Vec<PathBuf>),
}

/// What `recover` needs.
pub struct RecoverOptions {
    pub address: String,
    pub mta_url: String,
    pub credentials: Credentials,
    pub store_dir: PathBuf,
    /// The new store's passphrase: recovered keys are encrypted with it.
    pub passphrase: Option<Zeroizing<Vec<u8>>>,
    pub tls: TlsOptions,
    pub with: RecoverWith,
}

/// What `recover` rebuilt.
pub struct Recovered {
    pub account: Address,
    pub store_dir: PathBuf,
    /// Oldest first.
    pub identities: Vec<StoredIdentity>,
}

/// A backup opened and checked, ready for the store.
struct Opened {
    key: Zeroizing<Vec<u8>>,
    key_id: KeyId,
    summary: cert::CertSummary,
    certificate: String,
    chain: String,
    ca_url: String,
}

/// Rebuilds the account in an empty store from its backups at the MTA.
/// Nothing is written (not even the store directory) unless every backup
/// opens and checks.
pub async fn recover(opts: &RecoverOptions) -> Result<Recovered> {
    let account = parse_address(&opts.address)?;
    let mta = Endpoint::parse(Service::Mta, &opts.mta_url)?;
    let key = match &opts.with {
        RecoverWith::KeyFile(p) => {
            RecoveryKey::parse(&read_secret(p)?).map_err(|e| Error::file(p, e.to_string()))?
        }
        RecoverWith::Shares(paths) => {
            let mut files = Vec::with_capacity(paths.len());
            for p in paths {
                files.push((p.display().to_string(), read_secret(p)?.to_string()));
            }
            RecoveryKey::combine(&account, &files)?
        }
    };
    if let Some(store) = Store::existing(&opts.store_dir)? {
        if !store.account(&account)?.identities.is_empty() {
            return Err(Error::Invalid(format!(
                "the store at {} already holds identities of {account}: recover into an \
                 empty store (--store DIR)",
                store.dir().display()
            )));
        }
    }
    let http = Http::new(&opts.tls)?;
    let list = api::list_backups(&http, &mta, &account, &opts.credentials).await?;
    if list.backups.is_empty() {
        return Err(Error::Invalid(format!(
            "the MTA at {} holds no backups of {account}",
            mta.base()
        )));
    }
    let pass = key.passphrase();
    let mut opened = Vec::with_capacity(list.backups.len());
    for b in &list.backups {
        opened.push(open(b, &account, &pass)?);
    }
    opened.sort_by(|a, b| {
        (&a.summary.not_before, a.summary.serial.as_str())
            .cmp(&(&b.summary.not_before, b.summary.serial.as_str()))
    });
    let current = published_key(&http, &mta, &account).await?;
    let news: Vec<(NewIdentity<'_>, IdentityStatus)> = opened
        .iter()
        .map(|o| {
            let status = if current.as_ref() == Some(&o.key_id) {
                IdentityStatus::Current
            } else {
                IdentityStatus::Superseded
            };
            let new = NewIdentity {
                serial: &o.summary.serial,
                key_id: &o.key_id,
                key_type: &o.summary.key_type,
                ca_url: &o.ca_url,
                issuer: &o.summary.issuer,
                not_before: &o.summary.not_before,
                not_after: &o.summary.not_after,
                certificate_pem: &o.certificate,
                chain_pem: &o.chain,
                key_pkcs8: &o.key,
                revoked: &[],
            };
            (new, status)
        })
        .collect();
    let store = Store::open(&opts.store_dir)?;
    let identities = store.restore(&account, &news, opts.passphrase.as_deref().map(|p| &p[..]))?;
    Ok(Recovered {
        account,
        store_dir: store.dir().to_path_buf(),
        identities,
    })
}

/// The key ID of the identity the MTA publishes for the account; `None`
/// when it publishes none (withdrawn: revoked or expired).
async fn published_key(http: &Http, mta: &Endpoint, account: &Address) -> Result<Option<KeyId>> {
    let address = StrongAddress {
        address: account.clone(),
        key_id: None,
        form: mailid_shared::address::StrongForm::Plain,
    };
    match api::published_identity(http, mta, &address).await {
        Ok(p) => Ok(Some(p.key_id)),
        Err(e) if e.problem_code() == Some("not-found") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Decrypts one backup and checks that its key is the key of its key ID
/// and of its certificate, which must name the account and be issued by
/// the first certificate of its chain (each of which by the next).
fn open(b: &StoredBackup, account: &Address, pass: &[u8]) -> Result<Opened> {
    let kid = &b.key_id;
    let damaged = |why: String| Error::Invalid(format!("the backup of key ID {kid} {why}"));
    let der = pem::decode_one(&b.encrypted_key, &["ENCRYPTED PRIVATE KEY"])
        .map_err(|e| damaged(format!("is not an encrypted key: {e}")))?;
    match pbes2::pbkdf2_iterations(&der) {
        Ok(n) if n <= MAX_BACKUP_ITERATIONS => {}
        Ok(n) => {
            return Err(damaged(format!(
                "asks for {n} PBKDF2 iterations (at most {MAX_BACKUP_ITERATIONS} are run)"
            )))
        }
        Err(e) => return Err(damaged(format!("is not usable: {e}"))),
    }
    let key = pbes2::decrypt(&der, pass).map_err(|e| match e {
        Pbes2Error::WrongPassphrase => damaged(
            "does not open with this recovery key (a wrong key, a newer backup made with \
             another one, or an altered ciphertext)"
                .into(),
        ),
        other => damaged(format!("is damaged: {other}")),
    })?;
    let found = key_id_of_pkcs8(&key)
        .map_err(|e| damaged(format!("holds no usable key (altered?): {e}")))?;
    if &found.key_id != kid {
        return Err(damaged(format!(
            "holds the key {} (altered?)",
            found.key_id
        )));
    }
    let certificate = b
        .certificate
        .clone()
        .ok_or_else(|| damaged("has no certificate, so the store cannot be rebuilt".into()))?;
    let cert_der = cert::pem_to_der(&certificate)
        .map_err(|e| damaged(format!("has an unusable certificate: {e}")))?;
    let summary = cert::summarize(&cert_der)
        .map_err(|e| damaged(format!("has an unusable certificate: {e}")))?;
    if &summary.key_id != kid {
        return Err(damaged(format!(
            "has the certificate of another key ({})",
            summary.key_id
        )));
    }
    if !summary
        .emails
        .iter()
        .any(|e| e.eq_ignore_ascii_case(account.as_str()))
    {
        return Err(damaged(format!(
            "has a certificate that does not name {account}"
        )));
    }
    let chain = b.chain.clone().unwrap_or_default();
    let chain_ders = if chain.trim().is_empty() {
        Vec::new()
    } else {
        pem::decode_chain(&chain, "CERTIFICATE")
            .map_err(|e| damaged(format!("has an unusable chain: {e}")))?
    };
    let mut child = cert_der.as_slice();
    for issuer in &chain_ders {
        if !cert::issued_by(child, issuer) {
            return Err(damaged(
                "has a chain that does not issue its certificate (altered?)".into(),
            ));
        }
        child = issuer;
    }
    Ok(Opened {
        key,
        key_id: kid.clone(),
        summary,
        certificate,
        chain,
        ca_url: b.ca_url.clone().unwrap_or_default(),
    })
}

/// A recovery key or share file (bounded, as all CLI input).
fn read_secret(path: &Path) -> Result<Zeroizing<String>> {
    mailid_shared::input::read_text(path)
        .map(Zeroizing::new)
        .map_err(|e| Error::io(path, &e))
}
