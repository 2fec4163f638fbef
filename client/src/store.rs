//! The local key store (step 10).
//!
//! ```text
//! STORE/index.json                      the index: accounts and their identities
//! STORE/<address>/<serial>/key.pem      PKCS#8, mode 0600, encrypted with a passphrase
//! STORE/<address>/<serial>/cert.pem     the certificate
//! STORE/<address>/<serial>/chain.pem    the chain, issuer first
//! ```
//! Writes take an exclusive lock on `STORE/.lock`; files are written and
//! synced before the index that names them is atomically replaced.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use mailid_shared::protocol::RevocationReason;
use mailid_shared::{pem, timefmt, Address, KeyId, Serial};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::secret::{decrypt_pkcs8, encrypt_pkcs8};

const INDEX: &str = "index.json";
const INDEX_VERSION: u32 = 1;

/// Where an identity stands, as far as the client knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityStatus {
    /// The account's current identity.
    Current,
    /// Replaced by a newer identity (and revoked with reason `superseded`).
    Superseded,
    /// Revoked for another reason.
    Revoked,
}

impl IdentityStatus {
    /// `current`, `superseded` or `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityStatus::Current => "current",
            IdentityStatus::Superseded => "superseded",
            IdentityStatus::Revoked => "revoked",
        }
    }
}

/// One identity in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredIdentity {
    pub serial: Serial,
    pub key_id: KeyId,
    /// e.g. `P-256`.
    pub key_type: String,
    /// Base URL of the CA that issued it.
    pub ca_url: String,
    /// Issuer DN text.
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
    /// When the client stored it.
    pub enrolled_at: String,
    pub status: IdentityStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RevocationReason>,
    /// Whether the key file is encrypted.
    pub key_encrypted: bool,
    /// Base URL of the MTA it was published at, once uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<String>,
    /// Directory of its files, relative to the store.
    pub dir: String,
}

impl StoredIdentity {
    /// Whether it is current and within its validity.
    pub fn is_valid_now(&self) -> bool {
        self.status == IdentityStatus::Current
            && timefmt::parse_rfc3339(&self.not_after)
                .map(|t| t > timefmt::now_unix())
                .unwrap_or(false)
    }
}

/// An account's identities, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEntry {
    pub identities: Vec<StoredIdentity>,
}

impl AccountEntry {
    /// The current identity, if any.
    pub fn current(&self) -> Option<&StoredIdentity> {
        self.identities
            .iter()
            .rev()
            .find(|i| i.status == IdentityStatus::Current)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    version: u32,
    accounts: BTreeMap<Address, AccountEntry>,
}

/// What the client keeps of a new identity.
pub struct NewIdentity<'a> {
    pub serial: &'a Serial,
    pub key_id: &'a KeyId,
    pub key_type: &'a str,
    pub ca_url: &'a str,
    pub issuer: &'a str,
    pub not_before: &'a str,
    pub not_after: &'a str,
    pub certificate_pem: &'a str,
    pub chain_pem: &'a str,
    /// Unencrypted PKCS#8 DER of the private key.
    pub key_pkcs8: &'a [u8],
    /// Serials the CA revoked when issuing it.
    pub revoked: &'a [Serial],
}

/// The key store in one directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// The default store directory: `$XDG_DATA_HOME/mailid`, else
/// `~/.local/share/mailid`.
pub fn default_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("mailid"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/mailid")),
        None => Err(Error::Invalid(
            "no store directory: set HOME or XDG_DATA_HOME, or give --store DIR".into(),
        )),
    }
}

/// A directory name for an address: safe characters kept, others `%XX`.
fn dir_name(address: &Address) -> String {
    let mut out = String::new();
    for b in address.as_str().bytes() {
        if b.is_ascii_alphanumeric() || b"@.-_+".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct Lock(File);

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: flock on a file descriptor we own; unlocking cannot fail
        // in a way we could act on.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

impl Store {
    /// Opens (creating, mode 0700) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(dir, &e))?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// The store in `dir` if that directory exists; `None` (and nothing
    /// created) otherwise.
    pub fn existing(dir: &Path) -> Result<Option<Store>> {
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => Ok(Some(Store {
                dir: dir.to_path_buf(),
            })),
            Ok(_) => Err(Error::file(dir, "is not a directory")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(dir, &e)),
        }
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> Result<Lock> {
        let path = self.dir.join(".lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(&path, &e))?;
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(Error::io(&path, &std::io::Error::last_os_error()));
        }
        Ok(Lock(f))
    }

    fn load(&self) -> Result<Index> {
        let path = self.dir.join(INDEX);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Index {
                    version: INDEX_VERSION,
                    accounts: BTreeMap::new(),
                })
            }
            Err(e) => return Err(Error::io(&path, &e)),
        };
        let index: Index = serde_json::from_str(&text)
            .map_err(|e| Error::file(&path, format!("the store index is damaged: {e}")))?;
        if index.version != INDEX_VERSION {
            return Err(Error::file(
                &path,
                format!("store index version {} is not supported", index.version),
            ));
        }
        Ok(index)
    }

    fn save(&self, index: &Index) -> Result<()> {
        let text = serde_json::to_string_pretty(index)
            .map_err(|e| Error::file(&self.dir, format!("cannot encode the index: {e}")))?;
        write_atomic(&self.dir, INDEX, text.as_bytes(), 0o600)
    }

    /// A file of the store beside the index (e.g. the log pins); `None`
    /// when it does not exist.
    pub fn read_aux(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let p = self.dir.join(name);
        match fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&p, &e)),
        }
    }

    /// Replaces a file of the store beside the index, under the store's
    /// lock, atomically and synced (mode 0600).
    pub fn write_aux(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let _lock = self.lock()?;
        write_atomic(&self.dir, name, bytes, 0o600)
    }

    /// All identities of an account (empty when unknown).
    pub fn account(&self, address: &Address) -> Result<AccountEntry> {
        Ok(self
            .load()?
            .accounts
            .get(address)
            .cloned()
            .unwrap_or_default())
    }

    /// Every address in the store.
    pub fn addresses(&self) -> Result<Vec<Address>> {
        Ok(self.load()?.accounts.keys().cloned().collect())
    }

    /// Stores a new identity as current; the previous current one and
    /// those the CA revoked become superseded. The key is encrypted when a
    /// passphrase is given.
    pub fn record_new(
        &self,
        address: &Address,
        new: &NewIdentity<'_>,
        passphrase: Option<&[u8]>,
    ) -> Result<StoredIdentity> {
        let _lock = self.lock()?;
        let mut index = self.load()?;
        let (stored, _) = self.write_identity(address, new, IdentityStatus::Current, passphrase)?;
        let now = timefmt::rfc3339(timefmt::now_unix());
        let entry = index.accounts.entry(address.clone()).or_default();
        for old in entry.identities.iter_mut() {
            let revoked_by_ca = new.revoked.contains(&old.serial);
            if old.status == IdentityStatus::Current || revoked_by_ca {
                if old.status == IdentityStatus::Current {
                    old.status = IdentityStatus::Superseded;
                }
                if revoked_by_ca && old.revoked_at.is_none() {
                    old.revoked_at = Some(now.clone());
                    old.reason = Some(RevocationReason::Superseded);
                }
            }
        }
        entry.identities.retain(|i| &i.serial != new.serial);
        entry.identities.push(stored.clone());
        self.save(&index)?;
        Ok(stored)
    }

    /// Rebuilds an account from recovered identities (SPEC §10), oldest
    /// first, each with the status it gets. Refuses an account the store
    /// already holds; on any failure the index is untouched and the files
    /// written so far are removed.
    pub fn restore(
        &self,
        address: &Address,
        identities: &[(NewIdentity<'_>, IdentityStatus)],
        passphrase: Option<&[u8]>,
    ) -> Result<Vec<StoredIdentity>> {
        let _lock = self.lock()?;
        let mut index = self.load()?;
        if index
            .accounts
            .get(address)
            .is_some_and(|a| !a.identities.is_empty())
        {
            return Err(Error::Invalid(format!(
                "the store at {} already holds identities of {address}: recover into an \
                 empty store (--store DIR)",
                self.dir.display()
            )));
        }
        let account_dir = self.dir.join(dir_name(address));
        let fresh_dir = !account_dir.exists();
        let mut written: Vec<PathBuf> = Vec::new();
        let mut stored = Vec::with_capacity(identities.len());
        let result = (|| -> Result<()> {
            for (new, status) in identities {
                let before = self.dir.join(dir_name(address)).join(new.serial.as_str());
                if before.exists() {
                    return Err(Error::file(
                        &before,
                        "already exists though the index does not name it; move it away",
                    ));
                }
                let (id, dir) = self.write_identity(address, new, *status, passphrase)?;
                written.push(dir);
                stored.push(id);
            }
            index.accounts.insert(
                address.clone(),
                AccountEntry {
                    identities: stored.clone(),
                },
            );
            self.save(&index)
        })();
        if let Err(e) = result {
            for dir in &written {
                let _ = fs::remove_dir_all(dir);
            }
            if fresh_dir {
                let _ = fs::remove_dir(&account_dir);
            }
            return Err(e);
        }
        Ok(stored)
    }

    /// Writes one identity's files (key encrypted when a passphrase is
    /// given) and returns its index entry and directory.
    fn write_identity(
        &self,
        address: &Address,
        new: &NewIdentity<'_>,
        status: IdentityStatus,
        passphrase: Option<&[u8]>,
    ) -> Result<(StoredIdentity, PathBuf)> {
        let rel = format!("{}/{}", dir_name(address), new.serial);
        let dir = self.dir.join(&rel);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(&dir, &e))?;
        let key_pem = Zeroizing::new(match passphrase {
            Some(p) => pem::encode("ENCRYPTED PRIVATE KEY", &encrypt_pkcs8(new.key_pkcs8, p)?),
            None => pem::encode("PRIVATE KEY", new.key_pkcs8),
        });
        write_atomic(&dir, "key.pem", key_pem.as_bytes(), 0o600)?;
        write_atomic(&dir, "cert.pem", new.certificate_pem.as_bytes(), 0o644)?;
        write_atomic(&dir, "chain.pem", new.chain_pem.as_bytes(), 0o644)?;
        let id = StoredIdentity {
            serial: new.serial.clone(),
            key_id: new.key_id.clone(),
            key_type: new.key_type.to_string(),
            ca_url: new.ca_url.to_string(),
            issuer: new.issuer.to_string(),
            not_before: new.not_before.to_string(),
            not_after: new.not_after.to_string(),
            enrolled_at: timefmt::rfc3339(timefmt::now_unix()),
            status,
            revoked_at: None,
            reason: None,
            key_encrypted: passphrase.is_some(),
            published_at: None,
            dir: rel,
        };
        Ok((id, dir))
    }

    /// Marks an identity revoked (reason `superseded` makes it superseded).
    /// Returns false when the store does not hold it.
    pub fn mark_revoked(
        &self,
        address: &Address,
        serial: &Serial,
        reason: RevocationReason,
        revoked_at: &str,
    ) -> Result<bool> {
        self.update(address, serial, |i| {
            i.status = match reason {
                RevocationReason::Superseded => IdentityStatus::Superseded,
                _ => IdentityStatus::Revoked,
            };
            i.revoked_at = Some(revoked_at.to_string());
            i.reason = Some(reason);
        })
    }

    /// Notes that an identity was published at an MTA.
    pub fn mark_published(
        &self,
        address: &Address,
        serial: &Serial,
        mta_url: &str,
    ) -> Result<bool> {
        self.update(address, serial, |i| {
            i.published_at = Some(mta_url.to_string())
        })
    }

    fn update(
        &self,
        address: &Address,
        serial: &Serial,
        f: impl FnOnce(&mut StoredIdentity),
    ) -> Result<bool> {
        let _lock = self.lock()?;
        let mut index = self.load()?;
        let found = index
            .accounts
            .get_mut(address)
            .and_then(|a| a.identities.iter_mut().find(|i| &i.serial == serial));
        match found {
            Some(i) => {
                f(i);
                self.save(&index)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Directory holding an identity's files.
    pub fn path_of(&self, id: &StoredIdentity) -> PathBuf {
        self.dir.join(&id.dir)
    }

    /// The identity's certificate PEM.
    pub fn certificate_pem(&self, id: &StoredIdentity) -> Result<String> {
        let p = self.path_of(id).join("cert.pem");
        fs::read_to_string(&p).map_err(|e| Error::io(&p, &e))
    }

    /// The identity's chain PEM.
    pub fn chain_pem(&self, id: &StoredIdentity) -> Result<String> {
        let p = self.path_of(id).join("chain.pem");
        fs::read_to_string(&p).map_err(|e| Error::io(&p, &e))
    }

    /// [`Store::key_pkcs8`], checked to be the key of the identity's key ID
    /// and of its certificate: what leaves the store (a backup, a PKCS#12
    /// file) must be a pair that belongs together.
    pub fn checked_key(
        &self,
        id: &StoredIdentity,
        passphrase: Option<&[u8]>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let key = self.key_pkcs8(id, passphrase)?;
        let key_kid = crate::keyfile::key_id_of_pkcs8(&key)?.key_id;
        let cert_der = crate::cert::pem_to_der(&self.certificate_pem(id)?)?;
        let cert_kid = crate::cert::summarize(&cert_der)?.key_id;
        if key_kid != id.key_id || cert_kid != id.key_id {
            return Err(Error::file(
                &self.path_of(id),
                format!(
                    "the stored key does not match the certificate of serial {}",
                    id.serial
                ),
            ));
        }
        Ok(key)
    }

    /// The identity's private key as unencrypted PKCS#8 DER.
    pub fn key_pkcs8(
        &self,
        id: &StoredIdentity,
        passphrase: Option<&[u8]>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let p = self.path_of(id).join("key.pem");
        let text = Zeroizing::new(fs::read_to_string(&p).map_err(|e| Error::io(&p, &e))?);
        let blocks = pem::decode_all(&text).map_err(|e| Error::file(&p, e.to_string()))?;
        let block = blocks
            .into_iter()
            .next()
            .ok_or_else(|| Error::file(&p, "no key"))?;
        let der = Zeroizing::new(block.der);
        match (block.label.as_str(), passphrase) {
            ("PRIVATE KEY", _) => Ok(der),
            ("ENCRYPTED PRIVATE KEY", Some(pass)) => {
                decrypt_pkcs8(&der, pass).map_err(|e| Error::file(&p, e.to_string()))
            }
            ("ENCRYPTED PRIVATE KEY", None) => Err(Error::file(
                &p,
                "the key is encrypted: give the passphrase with MAILID_PASSPHRASE or \
                 --passphrase-file",
            )),
            (other, _) => Err(Error::file(&p, format!("unexpected PEM block '{other}'"))),
        }
    }
}

/// Writes `name` in `dir` through a synced temporary file and a rename.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let target = dir.join(name);
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &target)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(&target, &e)
    })
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
