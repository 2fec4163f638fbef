//! `mailid backup` (SPEC §10): the account's keys, current and earlier,
//! encrypted under a fresh recovery key and kept at the MTA, which only
//! ever sees ciphertexts (PBES2, AES-256) and public certificates.
//!
//! The MTA's backups are replaced as one set or not at all: the set is
//! read first (which also checks the login), the new secret is delivered
//! (shown, or written as share files) before anything is uploaded, and a
//! failure part-way puts the earlier ciphertexts back, so the earlier
//! recovery key keeps working and the new one is void.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use mailid_shared::pbes2;
use mailid_shared::protocol::{BackupUpload, StoredBackup};
use mailid_shared::{pem, Address, KeyId, Serial};
use zeroize::Zeroizing;

use crate::api;
use crate::enroll::parse_address;
use crate::error::{Error, Result, Service};
use crate::recovery::RecoveryKey;
use crate::store::{Store, StoredIdentity};
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
    /// Also drop the MTA's backups of keys this store does not hold
    /// (made on another device); refused without it.
    pub replace: bool,
}

/// How the holder gets the recovery key back.
pub enum Secret {
    /// To be shown once; also written to a file when an output directory
    /// was given.
    Key {
        text: Zeroizing<String>,
        file: Option<PathBuf>,
    },
    /// The share files written.
    Shares { k: u8, n: u8, files: Vec<PathBuf> },
}

/// What `backup` does (before it is done) or did.
pub struct BackedUp {
    pub account: Address,
    /// The keys stored at the MTA, newest first.
    pub keys: Vec<(KeyId, Serial)>,
    /// Backups the new key cannot open, removed (only with `replace`).
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

/// Backs up every key the store holds for the account. `deliver` gets the
/// plan with the secret before anything changes at the MTA and must hand
/// the secret to the holder (print it); if it fails, nothing changes.
pub async fn backup(
    opts: &BackupOptions,
    deliver: &mut dyn FnMut(&BackedUp) -> Result<()>,
) -> Result<BackedUp> {
    let account = parse_address(&opts.address)?;
    let mta = Endpoint::parse(Service::Mta, &opts.mta_url)?;
    let store = Store::existing(&opts.store_dir)?
        .ok_or_else(|| Error::file(&opts.store_dir, "no key store here: nothing to back up"))?;
    let held = held_keys(&store, &account, opts.passphrase.as_deref().map(|p| &p[..]))?;
    let http = Http::new(&opts.tls)?;
    let creds = &opts.credentials;

    // 1. The set at the MTA now (this also checks the login and that the
    //    MTA answers, before any secret exists).
    let before = api::list_backups(&http, &mta, &account, creds)
        .await?
        .backups;
    let others: Vec<KeyId> = before
        .iter()
        .filter(|b| !held.iter().any(|h| h.id.key_id == b.key_id))
        .map(|b| b.key_id.clone())
        .collect();
    if !others.is_empty() && !opts.replace {
        return Err(Error::Invalid(format!(
            "the MTA holds {} backup{} of keys this store does not hold (key ID {}; made on \
             another device?): recover them here first, or give --replace to drop them",
            others.len(),
            if others.len() == 1 { "" } else { "s" },
            others[0]
        )));
    }

    // 2. The new secret, delivered before anything changes at the MTA.
    let key = RecoveryKey::generate();
    let (secret, created_dir) = make_secret(&key, &account, opts)?;
    let plan = BackedUp {
        account: account.clone(),
        keys: held
            .iter()
            .map(|h| (h.id.key_id.clone(), h.id.serial.clone()))
            .collect(),
        removed: others,
        secret,
    };
    let discard = |plan: &BackedUp| {
        let files = match &plan.secret {
            Secret::Shares { files, .. } => files.clone(),
            Secret::Key { file, .. } => file.iter().cloned().collect(),
        };
        for f in files {
            let _ = fs::remove_file(f);
        }
        if let Some(d) = &created_dir {
            let _ = fs::remove_dir(d);
        }
    };
    if let Err(e) = deliver(&plan) {
        discard(&plan);
        return Err(e);
    }

    // 3. The new set replaces the old, or the old is put back.
    let mut changed: Vec<KeyId> = Vec::new();
    let res = replace_set(
        &http,
        &mta,
        &account,
        creds,
        &key,
        &held,
        &plan.removed,
        &mut changed,
    )
    .await;
    if let Err(e) = res {
        discard(&plan);
        let undo = restore_set(&http, &mta, &account, creds, &before, &changed).await;
        return Err(Error::Invalid(match undo {
            Ok(()) => format!(
                "{e}; the MTA's earlier backups were put back, so the earlier recovery key \
                 still works and the new one is void"
            ),
            Err(u) => format!(
                "{e}; putting the earlier backups back failed too ({u}): run `mailid backup` \
                 again"
            ),
        }));
    }
    Ok(plan)
}

/// The recovery key as the holder keeps it: share files, or the text
/// (also in `recovery-key.txt` under `--out-dir`). Returns the output
/// directory when this run created it.
fn make_secret(
    key: &RecoveryKey,
    account: &Address,
    opts: &BackupOptions,
) -> Result<(Secret, Option<PathBuf>)> {
    match (opts.split, &opts.out_dir) {
        (Some((k, n)), dir) => {
            let dir = dir.clone().unwrap_or_else(|| PathBuf::from("."));
            let texts = key.split(k, n, account)?;
            let names: Vec<String> = (1..=texts.len())
                .map(|i| format!("share-{i}.txt"))
                .collect();
            let (files, created) = write_secrets(&dir, &names, &texts)?;
            Ok((Secret::Shares { k, n, files }, created))
        }
        (None, Some(dir)) => {
            let text = key.display();
            let body = Zeroizing::new(format!(
                "# mailid recovery key for {account}; keep it safe and apart from your devices\n{}\n",
                *text
            ));
            let (files, created) = write_secrets(dir, &["recovery-key.txt".into()], &[body])?;
            let file = files.into_iter().next();
            Ok((Secret::Key { text, file }, created))
        }
        (None, None) => Ok((
            Secret::Key {
                text: key.display(),
                file: None,
            },
            None,
        )),
    }
}

/// Every key of the account in the store, newest first, one per key ID,
/// each checked against its key ID and certificate.
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

/// Encrypts and stores each key, then removes `drop`; `changed` collects
/// every key ID whose backup was written or removed.
#[allow(clippy::too_many_arguments)]
async fn replace_set(
    http: &Http,
    mta: &Endpoint,
    account: &Address,
    creds: &Credentials,
    key: &RecoveryKey,
    held: &[Held],
    drop: &[KeyId],
    changed: &mut Vec<KeyId>,
) -> Result<()> {
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
        changed.push(h.id.key_id.clone());
        api::put_backup(http, mta, account, creds, &h.id.key_id, &body).await?;
    }
    for k in drop {
        changed.push(k.clone());
        api::delete_backup(http, mta, account, creds, k).await?;
    }
    Ok(())
}

/// Puts the backups of `changed` back as they were in `before`: the
/// earlier ciphertext where there was one, none where there was none.
async fn restore_set(
    http: &Http,
    mta: &Endpoint,
    account: &Address,
    creds: &Credentials,
    before: &[StoredBackup],
    changed: &[KeyId],
) -> Result<()> {
    for k in changed {
        match before.iter().find(|b| &b.key_id == k) {
            Some(b) => {
                let body = BackupUpload {
                    encrypted_key: b.encrypted_key.clone(),
                    certificate: b.certificate.clone(),
                    chain: b.chain.clone(),
                    ca_url: b.ca_url.clone(),
                };
                api::put_backup(http, mta, account, creds, k, &body).await?;
            }
            None => match api::delete_backup(http, mta, account, creds, k).await {
                Err(e) if e.problem_code() == Some("not-found") => {}
                other => other?,
            },
        }
    }
    Ok(())
}

/// Writes secret files in `dir` (made 0700 if missing), each created
/// exclusively with mode 0600; none is left behind on failure. Returns the
/// files and `dir` when this call created it.
fn write_secrets(
    dir: &Path,
    names: &[String],
    texts: &[Zeroizing<String>],
) -> Result<(Vec<PathBuf>, Option<PathBuf>)> {
    let created = (!dir.exists()).then(|| dir.to_path_buf());
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(dir, &e))?;
    let cleanup = |written: &[PathBuf]| {
        for p in written {
            let _ = fs::remove_file(p);
        }
        if let Some(d) = &created {
            let _ = fs::remove_dir(d);
        }
    };
    if let Some(taken) = names.iter().map(|n| dir.join(n)).find(|p| p.exists()) {
        cleanup(&[]);
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
            let _ = fs::remove_file(&path);
            cleanup(&written);
            return Err(Error::io(&path, &e));
        }
        written.push(path);
    }
    Ok((written, created))
}
