//! The identity log's storage logic that both backends share (SPEC §11):
//! account blinds, the entry an identity change appends, and the tree
//! arithmetic of the sequencer and of proofs over the stored hashes (Go
//! sumdb/tlog's layout, via `tlog_tiles`), so that SQL stays in the
//! backends and roots and proofs read O(log n) hashes.

use std::cell::RefCell;
use std::collections::HashMap;

use hmac::{Hmac, Mac};
use mailid_shared::translog::tlog_tiles::{self, Error as TlogError, HashReader};
use mailid_shared::translog::{Entry, Event, Hash, LogError};
use mailid_shared::Serial;
use sha2::{Digest, Sha256};

use super::{IdentityRow, StoreError};

/// Most unsequenced entries one sequencer run takes.
pub(crate) const BATCH: i64 = 8192;

/// One entry of an account's history as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntryRow {
    pub seq: u64,
    /// `None` until the sequencer gives it a place in the tree.
    pub leaf_index: Option<u64>,
    /// The canonical entry bytes.
    pub entry: Vec<u8>,
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRow {
    pub size: u64,
    pub root: [u8; 32],
    /// The signed note text.
    pub note: String,
    /// Unix milliseconds of the signing.
    pub signed_at_ms: i64,
}

/// One `log_entries` row as stored.
#[derive(Debug, Clone)]
pub struct DumpEntry {
    pub leaf_index: Option<u64>,
    pub blind: [u8; 32],
    pub seq: u64,
    pub entry: Vec<u8>,
    pub leaf_hash: [u8; 32],
}

/// Every log row, for `log verify`.
#[derive(Debug, Default)]
pub struct LogDump {
    /// Every entry, in arrival order.
    pub entries: Vec<DumpEntry>,
    /// (stored hash index, hash), by index.
    pub hashes: Vec<(u64, [u8; 32])>,
    /// `log_state`: size and root.
    pub state: (u64, Vec<u8>),
    /// Every checkpoint, by size.
    pub checkpoints: Vec<CheckpointRow>,
    /// `log_heads`: (blind, seq, head).
    pub heads: Vec<([u8; 32], i64, [u8; 32])>,
    /// The bound log key, if any.
    pub vkey: Option<String>,
    /// Every published identity: (blind, SHA-256 of its certificate).
    pub identities: Vec<([u8; 32], [u8; 32])>,
}

/// A 32-byte column of a dumped row, held inline (a million rows of
/// separately allocated hashes cost `log verify` hundreds of MiB); a value
/// of another length (a corrupt row) reads as 32 zero bytes, which no
/// check accepts as a blind or a hash.
pub(crate) fn col32(v: &[u8]) -> [u8; 32] {
    v.try_into().unwrap_or([0; 32])
}

/// (blind, certificate hash) of an identities row.
pub(crate) fn identity_digest(key: &[u8], address: &str, cert: &[u8]) -> ([u8; 32], [u8; 32]) {
    (blind(key, address), Sha256::digest(cert).into())
}

/// The blind of an account: HMAC-SHA-256 under the log's blind key.
pub(crate) fn blind(key: &[u8], address: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(b"mailid-log-account-v1\0");
    mac.update(address.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The entry (canonical bytes and leaf hash) of an identity change.
pub(crate) fn entry_for(
    event: Event,
    blind: [u8; 32],
    seq: u64,
    prev: [u8; 32],
    row: &IdentityRow,
    at: i64,
) -> Result<(Vec<u8>, [u8; 32]), StoreError> {
    let serial = row
        .serial
        .parse::<Serial>()
        .map(|s| s.to_bytes())
        .unwrap_or_default();
    let e = Entry {
        event,
        blind,
        seq,
        prev,
        at,
        key_id: row.key_id.clone(),
        serial,
        cert: Sha256::digest(&row.certificate).into(),
        not_after: row.not_after,
    };
    let bytes = e.encode().map_err(log_err)?;
    let h = mailid_shared::translog::leaf_hash(&bytes).0;
    Ok((bytes, h))
}

/// A log format failure as a store error (a bug or a corrupt row).
pub(crate) fn log_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Log(e.to_string())
}

/// A 32-byte hash column.
pub(crate) fn hash32(v: &[u8]) -> Result<Hash, StoreError> {
    v.try_into()
        .map(Hash)
        .map_err(|_| log_err(LogError::Entry("hash length")))
}

/// A hash reader over fetched stored hashes.
pub(crate) struct MapReader<'a>(pub &'a HashMap<u64, Hash>);

impl HashReader for MapReader<'_> {
    fn read_hashes(&self, idx: &[u64]) -> Result<Vec<Hash>, TlogError> {
        idx.iter()
            .map(|i| self.0.get(i).copied().ok_or(TlogError::IndexesNotInTree))
            .collect()
    }
}

/// A hash reader that only records which indexes a computation needs
/// (each `tlog_tiles` proof asks once).
#[derive(Default)]
pub(crate) struct Recorder(RefCell<Vec<u64>>);

impl HashReader for Recorder {
    fn read_hashes(&self, idx: &[u64]) -> Result<Vec<Hash>, TlogError> {
        self.0.borrow_mut().extend_from_slice(idx);
        Err(TlogError::IndexesNotInTree)
    }
}

impl Recorder {
    /// The indexes `f` asks for.
    pub(crate) fn indexes<T>(f: impl FnOnce(&Recorder) -> Result<T, TlogError>) -> Vec<u64> {
        let r = Recorder::default();
        let _ = f(&r);
        r.0.into_inner()
    }
}

/// What one sequencer run writes.
pub(crate) struct Extension {
    /// (entry row id, leaf index).
    pub leaves: Vec<(i64, u64)>,
    /// (stored hash index, hash), ascending.
    pub hashes: Vec<(u64, Hash)>,
    pub size: u64,
    pub root: Hash,
}

/// The stored hash indexes appending after `size` leaves needs: the
/// tree's right edge.
pub(crate) fn right_edge(size: u64) -> Vec<u64> {
    tlog_tiles::sub_tree_index(0, size, vec![])
}

/// Appends `pending` (row id, leaf hash) after `size` leaves, given the
/// right edge's hashes in `map`.
pub(crate) fn extend(
    size: u64,
    mut map: HashMap<u64, Hash>,
    pending: &[(i64, [u8; 32])],
) -> Result<Extension, StoreError> {
    let mut ext = Extension {
        leaves: Vec::with_capacity(pending.len()),
        hashes: Vec::new(),
        size,
        root: Hash::default(),
    };
    for (id, leaf) in pending {
        let n = ext.size;
        let hs = tlog_tiles::stored_hashes_for_record_hash(n, Hash(*leaf), &MapReader(&map))
            .map_err(log_err)?;
        let start = tlog_tiles::stored_hash_index(0, n);
        for (k, h) in hs.into_iter().enumerate() {
            map.insert(start + k as u64, h);
            ext.hashes.push((start + k as u64, h));
        }
        ext.leaves.push((*id, n));
        ext.size += 1;
    }
    ext.root = tlog_tiles::tree_hash(ext.size, &MapReader(&map)).map_err(log_err)?;
    Ok(ext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_give_the_same_tree_as_single_appends() {
        let leaves: Vec<(i64, [u8; 32])> = (0..37).map(|i| (i, [i as u8; 32])).collect();
        let all = extend(0, HashMap::new(), &leaves).unwrap();
        let mut stored: HashMap<u64, Hash> = HashMap::new();
        let mut size = 0;
        for chunk in leaves.chunks(5) {
            let edge: HashMap<u64, Hash> = right_edge(size)
                .into_iter()
                .map(|i| (i, stored[&i]))
                .collect();
            let ext = extend(size, edge, chunk).unwrap();
            stored.extend(ext.hashes.iter().copied());
            size = ext.size;
        }
        assert_eq!(size, 37);
        assert_eq!(
            tlog_tiles::tree_hash(37, &MapReader(&stored)).unwrap(),
            all.root
        );
        assert_eq!(stored.len() as u64, tlog_tiles::stored_hash_count(37));
    }
}
