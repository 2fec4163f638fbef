//! The identity log at run time (SPEC §11): the log key file, the
//! sequencer task that signs at most one checkpoint a second, and the
//! `history` a lookup returns; storage is `Store`'s, HTTP is `api`'s.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use data_encoding::BASE64;
use mailid_shared::translog::{
    self, Entry, Event, History, HistoryEntry, InclusionProof, LogSigner, LogVerifier,
};
use mailid_shared::{Address, KeyId, Serial};
use tokio::sync::Notify;

use crate::store::{CheckpointRow, Store, StoreError};

/// The log key in the data dir: PKCS#8 Ed25519 in PEM, 0600.
pub const KEY_FILE: &str = "log-key.pem";
/// PEM label of the key file.
const KEY_LABEL: &str = "PRIVATE KEY";
/// Least time between two checkpoint signings, across replicas.
pub const MIN_SIGN_INTERVAL_MS: i64 = 1000;
/// How often the sequencer looks for entries another replica appended.
const POLL: Duration = Duration::from_millis(250);
/// Least time between two warnings of failing sequencer runs.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// How long a lookup waits for its newest entry to be in a checkpoint.
const INCLUSION_WAIT: Duration = Duration::from_secs(2);

/// Unix milliseconds.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The default origin: `<hostname>/mailid-log`.
fn default_origin() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let host = if translog::is_origin_valid(&host) && !host.is_empty() {
        host
    } else {
        "localhost".to_string()
    };
    format!("{host}/mailid-log")
}

/// The key file's path in `data_dir`.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

/// The log's keys as this process holds them.
pub struct LogKeys {
    /// The recorded public key.
    pub verifier: LogVerifier,
    /// The private key, when the data dir holds `log-key.pem`: only such
    /// replicas sign checkpoints.
    pub signer: Option<Arc<LogSigner>>,
}

/// Loads the data dir's log key, making one (0600) when there is none
/// and the database has none recorded yet (a fresh `init`, or the first
/// `serve` after an upgrade), and records its origin and vkey in the
/// database if none are. A key or origin other than the recorded ones is
/// refused. A data dir without the key on a database that has one (a
/// replica made by `init --database` or a copied config.json) serves the
/// log without signing; copying `log-key.pem` there makes it a signer too.
pub async fn setup(
    data_dir: &Path,
    store: &Store,
    origin: Option<&str>,
) -> anyhow::Result<LogKeys> {
    let path = key_path(data_dir);
    let bound = store.log_bound().await?;
    let pkcs8: zeroize::Zeroizing<Vec<u8>> = match std::fs::read_to_string(&path) {
        Ok(text) => mailid_shared::pem::decode_one(&zeroize::Zeroizing::new(text), &[KEY_LABEL])
            .map(zeroize::Zeroizing::new)
            .with_context(|| format!("reading the log key {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some((rec_origin, vkey)) = bound {
                if origin.is_some_and(|o| o != rec_origin) {
                    anyhow::bail!("the log origin {origin:?} is not the database's {rec_origin:?}");
                }
                tracing::warn!(
                    key = %path.display(),
                    "no log key in the data dir: this replica serves the identity log but does not sign checkpoints"
                );
                let verifier = LogVerifier::from_vkey(&vkey)
                    .map_err(|e| anyhow::anyhow!("the database's log key {vkey:?}: {e}"))?;
                return Ok(LogKeys {
                    verifier,
                    signer: None,
                });
            }
            let der = zeroize::Zeroizing::new(LogSigner::generate_pkcs8()?);
            let pem = zeroize::Zeroizing::new(mailid_shared::pem::encode(KEY_LABEL, &der));
            mailid_shared::files::write_atomic_mode(&path, pem.as_bytes(), 0o600)
                .with_context(|| format!("writing {}", path.display()))?;
            der
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let origin = match (origin, &bound) {
        (Some(o), _) => o.to_string(),
        (None, Some((o, _))) => o.clone(),
        (None, None) => default_origin(),
    };
    let signer = LogSigner::from_pkcs8(&origin, &pkcs8)
        .with_context(|| format!("the log key {} or origin {origin:?}", path.display()))?;
    let (rec_origin, rec_vkey) = store.log_bind(origin.clone(), signer.vkey()).await?;
    if rec_vkey != signer.vkey() {
        anyhow::bail!(
            "the log key in {} ({}) is not the database's ({rec_vkey}); copy {KEY_FILE} from the first replica",
            data_dir.display(),
            signer.vkey()
        );
    }
    if rec_origin != origin {
        anyhow::bail!("the log origin {origin:?} is not the database's {rec_origin:?}");
    }
    let verifier = LogVerifier::from_vkey(&rec_vkey)?;
    Ok(LogKeys {
        verifier,
        signer: Some(Arc::new(signer)),
    })
}

/// The running log: its keys and the poke that wakes the sequencer.
pub struct IdLog {
    pub keys: LogKeys,
    poke: Notify,
    /// Checkpoints this process signed.
    pub signed: AtomicU64,
}

impl IdLog {
    pub fn new(keys: LogKeys) -> Arc<IdLog> {
        Arc::new(IdLog {
            keys,
            poke: Notify::new(),
            signed: AtomicU64::new(0),
        })
    }

    /// Wakes the sequencer (after an append).
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// The sequencer (only with the private key): on a poke or every
    /// [`POLL`], one run; the spacing of signatures is the store's
    /// (checked in the run's transaction).
    pub async fn run(self: Arc<Self>, store: Store) {
        let Some(signer) = self.keys.signer.clone() else {
            return;
        };
        let mut last_warning: Option<tokio::time::Instant> = None;
        loop {
            let run = async {
                if !store.log_has_work().await? {
                    return Ok(None);
                }
                store
                    .log_sequence(signer.clone(), MIN_SIGN_INTERVAL_MS, now_ms())
                    .await
            };
            match run.await {
                Ok(Some(size)) => {
                    self.signed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(size, "log checkpoint signed");
                }
                Ok(None) => {}
                // One warning per WARN_EVERY while the database fails.
                Err(e) if last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) => {
                    last_warning = Some(tokio::time::Instant::now());
                    tracing::warn!(error = %e, "log sequencer run failed");
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = self.poke.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// The account's `history`: its entries, the newest checkpoint and
    /// the inclusion proof of the newest entry in it (waiting up to
    /// [`INCLUSION_WAIT`] for the entry to be signed); `None` for an
    /// account with no entry.
    pub async fn history(
        &self,
        store: &Store,
        address: &Address,
    ) -> Result<Option<History>, StoreError> {
        let deadline = tokio::time::Instant::now() + INCLUSION_WAIT;
        loop {
            let (blind, rows) = store.log_history(address).await?;
            let Some(newest) = rows.last() else {
                return Ok(None);
            };
            let cp = store.log_checkpoint().await?;
            let included = match (&cp, newest.leaf_index) {
                (Some(cp), Some(i)) if i < cp.size => Some((cp.size, i)),
                _ => None,
            };
            if included.is_none() && tokio::time::Instant::now() < deadline {
                self.poke();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let inclusion = match included {
                Some((size, index)) => Some(InclusionProof {
                    leaf_index: index,
                    tree_size: size,
                    proof: store
                        .log_inclusion(size, index)
                        .await?
                        .iter()
                        .map(translog::hash_b64)
                        .collect(),
                }),
                None => None,
            };
            let signed = cp.as_ref().map(|c| c.size).unwrap_or(0);
            return Ok(Some(History {
                blind: BASE64.encode(&blind),
                entries: rows
                    .iter()
                    .map(|r| history_entry(r.seq, r.leaf_index.filter(|i| *i < signed), &r.entry))
                    .collect(),
                checkpoint: cp.map(|c: CheckpointRow| c.note).unwrap_or_default(),
                inclusion,
            }));
        }
    }
}

/// Why an address has no identity when its newest log entry withdrew it
/// (and, for a strong address, withdrew the key it names): the 404
/// detail a lookup answers with, as on the lookup that noticed it, and
/// the account.
pub async fn withdrawn(
    store: &Store,
    asked: &str,
) -> Result<Option<(String, Address)>, StoreError> {
    let Ok(strong) = mailid_shared::StrongAddress::parse(asked) else {
        return Ok(None);
    };
    let (_, rows) = store.log_history(&strong.address).await?;
    let Some(newest) = rows.last().and_then(|r| Entry::decode(&r.entry).ok()) else {
        return Ok(None);
    };
    if let Some(kid) = &strong.key_id {
        if kid.as_bytes() != newest.key_id.as_slice() {
            return Ok(None);
        }
    }
    let why = match newest.event {
        Event::WithdrawnExpired => "has expired",
        Event::WithdrawnRevoked => "was revoked by its CA",
        Event::WithdrawnCaRemoved => "was withdrawn: its CA was removed from this MTA",
        Event::Published | Event::Superseded => return Ok(None),
    };
    Ok(Some((
        format!("the identity published for {asked} {why}"),
        strong.address,
    )))
}

/// One served entry: the bytes, and their fields decoded for reading.
fn history_entry(seq: u64, leaf_index: Option<u64>, bytes: &[u8]) -> HistoryEntry {
    let decoded = Entry::decode(bytes).ok();
    HistoryEntry {
        seq,
        leaf_index,
        entry: BASE64.encode(bytes),
        event: decoded
            .as_ref()
            .map(|e| e.event.name().to_string())
            .unwrap_or_default(),
        key_id: decoded
            .as_ref()
            .and_then(|e| KeyId::from_bytes(&e.key_id).ok())
            .map(|k| k.to_string())
            .unwrap_or_default(),
        serial: decoded
            .as_ref()
            .map(|e| Serial::from_bytes(&e.serial).as_str().to_string())
            .unwrap_or_default(),
        at: decoded
            .map(|e| mailid_shared::timefmt::rfc3339(e.at))
            .unwrap_or_default(),
    }
}
