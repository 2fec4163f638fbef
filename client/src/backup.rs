//! `mailid backup` and `mailid recover` (SPEC §10): the account's keys,
//! current and earlier, encrypted under a fresh recovery key and kept at
//! the MTA, and the store rebuilt from them on another device. The MTA
//! only ever sees ciphertexts (PBES2, AES-256) and public certificates.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use mailid_shared::pbes2::{self, Pbes2Error};
use mailid_shared::protocol::{BackupUpload, StoredBackup};
use mailid_shared::{pem, Address, KeyId, Serial};
use zeroize::Zeroizing;

use crate::api;
use crate::cert;
use crate::enroll::parse_address;
use crate::error::{Error, Result, Service};
use crate::keyfile::key_id_of_pkcs8;
use crate::recovery::RecoveryKey;
use crate::store::{IdentityStatus, NewIdentity, Store, StoredIdentity};
use crate::transport::{Credentials, Endpoint, Http, TlsOptions};

/// What `backup` needs.
pub struct BackupOptions {
    pub address: String,
    pub mta_url: String,
    pub credentials: Credentials,
    pub store_dir: PathBuf,
    /// The store's passphrase, for encrypted keys.
    pub passphrase: Option<Zeroizing<Vec<u8>>>,
    pub tls: TlsOptions,
    /// Split the recovery key into `n` shares, any `k` of which recover it.
    pub split: Option<(u8, u8)>,
    /// Where share files (or, without a split, `recovery-key.txt`) go.
    pub out_dir: Option<PathBuf>,
}

/// How the holder gets the recovery key back.
pub enum Secret {
    /// Shown once; also written to a file when an output directory was given.
    Key {
        text: Zeroizing<String>,
        file: Option<PathBuf>,
    },
    /// The share files written.
    Shares { k: u8, n: u8, files: Vec<PathBuf> },
}

/// What `backup` did.
pub struct BackedUp {
    pub account: Address,
    /// The keys stored at the MTA, newest first.
    pub keys: Vec<(KeyId, Serial)>,
    /// Backups of an earlier run removed (the new key cannot open them).
    pub removed: Vec<KeyId>,
    pub secret: Secret,
}

/// One key of the store with its certificate, ready to back up.
struct Held {
    id: StoredIdentity,
    key: Zeroizing<Vec<u8>>,
    certificate: String,
    chain: String,
}

/// Backs up every key the store holds for the account.
pub async fn backup(opts: &BackupOptions) -> Result<BackedUp> {
    let account = parse_address(&opts.address)?;
    let mta = Endpoint::parse(Service::Mta, &opts.mta_url)?;
    let store = Store::open(&opts.store_dir)?;
    let held = held_keys(&store, &account, opts.passphrase.as_deref().map(|p| &p[..]))?;
    let http = Http::new(&opts.tls)?;

    // The secret is written before anything reaches the MTA, so that a
    // failure to write it cannot leave backups nobody can open.
    let key = RecoveryKey::generate();
    let secret = match (opts.split, &opts.out_dir) {
        (Some((k, n)), dir) => {
            let dir = dir.clone().unwrap_or_else(|| PathBuf::from("."));
            let texts = key.split(k, n, &account)?;
            let names: Vec<String> = (1..=texts.len())
                .map(|i| format!("share-{i}.txt"))
                .collect();
            let files = write_secrets(&dir, &names, &texts)?;
            Secret::Shares { k, n, files }
        }
        (None, Some(dir)) => {
            let text = key.display();
            let body = Zeroizing::new(format!(
                "# mailid recovery key for {account}; keep it safe and apart from your devices\n{}\n",
                *text
            ));
            let files = write_secrets(dir, &["recovery-key.txt".into()], &[body])?;
            Secret::Key {
                text,
                file: files.into_iter().next(),
            }
        }
        (None, None) => Secret::Key {
            text: key.display(),
            file: None,
        },
    };
    let uploaded = upload_all(&http, &mta, &account, &opts.credentials, &key, &held).await;
    match uploaded {
        Ok(removed) => Ok(BackedUp {
            account,
            keys: held
                .iter()
                .map(|h| (h.id.key_id.clone(), h.id.serial.clone()))
                .collect(),
            removed,
            secret,
        }),
        Err(e) => {
            let written = match &secret {
                Secret::Shares { files, .. } => files.clone(),
                Secret::Key { file, .. } => file.iter().cloned().collect(),
            };
            for f in written {
                let _ = fs::remove_file(f);
            }
            Err(e)
        }
    }
}

/// Every key of the account in the store, newest first, one per key ID,
/// each checked against its certificate.
fn held_keys(store: &Store, account: &Address, pass: Option<&[u8]>) -> Result<Vec<Held>> {
    let entry = store.account(account)?;
    let mut held: Vec<Held> = Vec::new();
    for id in entry.identities.iter().rev() {
        if held.iter().any(|h| h.id.key_id == id.key_id) {
            continue;
        }
        let key = store.checked_key(id, pass)?;
        held.push(Held {
            certificate: store.certificate_pem(id)?,
            chain: store.chain_pem(id)?,
            id: id.clone(),
            key,
        });
    }
    if held.is_empty() {
        return Err(Error::Invalid(format!(
            "the store at {} holds no keys of {account}",
            store.dir().display()
        )));
    }
    Ok(held)
}

/// Encrypts and stores each key, then removes the account's other backups.
async fn upload_all(
    http: &Http,
    mta: &Endpoint,
    account: &Address,
    creds: &Credentials,
    key: &RecoveryKey,
    held: &[Held],
) -> Result<Vec<KeyId>> {
    let pass = key.passphrase();
    for h in held {
        let der = pbes2::encrypt_with(&h.key, &pass, pbes2::RANDOM_KEY_ITERATIONS)
            .map_err(|e| Error::Crypto(e.to_string()))?;
        let body = BackupUpload {
            encrypted_key: pem::encode("ENCRYPTED PRIVATE KEY", &der),
            certificate: Some(h.certificate.clone()),
            chain: (!h.chain.trim().is_empty()).then(|| h.chain.clone()),
            ca_url: (!h.id.ca_url.is_empty()).then(|| h.id.ca_url.clone()),
        };
        api::put_backup(http, mta, account, creds, &h.id.key_id, &body)
            .await
            .map_err(|e| incomplete(e, held.len()))?;
    }
    let list = api::list_backups(http, mta, account, creds)
        .await
        .map_err(|e| incomplete(e, held.len()))?;
    let mut removed = Vec::new();
    for b in list.backups {
        if !held.iter().any(|h| h.id.key_id == b.key_id) {
            api::delete_backup(http, mta, account, creds, &b.key_id)
                .await
                .map_err(|e| incomplete(e, held.len()))?;
            removed.push(b.key_id);
        }
    }
    Ok(removed)
}

fn incomplete(e: Error, n: usize) -> Error {
    match e {
        Error::Unreachable { .. } | Error::Refused { .. } | Error::BadAnswer { .. } if n > 0 => {
            Error::Invalid(format!(
                "{e}; the backup is incomplete and its recovery key was not kept: run \
                 `mailid backup` again"
            ))
        }
        other => other,
    }
}

/// Writes secret files in `dir` (made 0700 if missing), each created
/// exclusively with mode 0600; none is left behind on failure.
fn write_secrets(
    dir: &Path,
    names: &[String],
    texts: &[Zeroizing<String>],
) -> Result<Vec<PathBuf>> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(dir, &e))?;
    if let Some(taken) = names.iter().map(|n| dir.join(n)).find(|p| p.exists()) {
        return Err(Error::file(
            &taken,
            "already exists; move it away or give another --out-dir",
        ));
    }
    let mut written = Vec::new();
    for (name, text) in names.iter().zip(texts) {
        let path = dir.join(name);
        let res = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| {
                f.write_all(text.as_bytes())?;
                f.sync_all()
            });
        if let Err(e) = res {
            for p in &written {
                let _ = fs::remove_file(p);
            }
            let _ = fs::remove_file(&path);
            return Err(Error::io(&path, &e));
        }
        written.push(path);
    }
    Ok(written)
}

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
    /// Oldest first; the last is current.
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
/// Nothing is written unless every backup opens and checks.
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
    let store = Store::open(&opts.store_dir)?;
    if !store.account(&account)?.identities.is_empty() {
        return Err(Error::Invalid(format!(
            "the store at {} already holds identities of {account}: recover into an empty \
             store (--store DIR)",
            store.dir().display()
        )));
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
    opened.sort_by_key(|o| (o.summary.not_before.clone(), o.summary.serial.to_string()));
    let last = opened.len() - 1;
    let news: Vec<(NewIdentity<'_>, IdentityStatus)> = opened
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let status = if i == last {
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
    let identities = store.restore(&account, &news, opts.passphrase.as_deref().map(|p| &p[..]))?;
    Ok(Recovered {
        account,
        store_dir: store.dir().to_path_buf(),
        identities,
    })
}

/// Decrypts one backup and checks that its key is the key of its key ID
/// and of its certificate, which must name the account.
fn open(b: &StoredBackup, account: &Address, pass: &[u8]) -> Result<Opened> {
    let kid = &b.key_id;
    let damaged = |why: String| Error::Invalid(format!("the backup of key ID {kid} {why}"));
    let der = pem::decode_one(&b.encrypted_key, &["ENCRYPTED PRIVATE KEY"])
        .map_err(|e| damaged(format!("is not an encrypted key: {e}")))?;
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
    let summary = cert::summarize(&cert::pem_to_der(&certificate)?)
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
    Ok(Opened {
        key,
        key_id: kid.clone(),
        summary,
        certificate,
        chain: b.chain.clone().unwrap_or_default(),
        ca_url: b.ca_url.clone().unwrap_or_default(),
    })
}

/// A recovery key or share file (bounded, as all CLI input).
fn read_secret(path: &Path) -> Result<Zeroizing<String>> {
    mailid_shared::input::read_text(path)
        .map(Zeroizing::new)
        .map_err(|e| Error::io(path, &e))
}
