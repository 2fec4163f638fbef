//! The identity log in SQLite (SPEC §11): the append made inside an
//! identity change's transaction, the sequencer run that extends the tree
//! and signs a checkpoint, and the reads of history, checkpoints, stored
//! hashes and (for `log verify`) every row. The one writer thread
//! serialises appends and sequencer runs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use mailid_shared::db::Db;
use mailid_shared::translog::{Event, Hash, LogSigner};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use zeroize::Zeroizing;

use crate::store::log::{self, CheckpointRow, DumpEntry, LogDump, LogEntryRow};
use crate::store::{IdentityRow, StoreError};

/// At open: makes the blind key if there is none and then (once, the
/// first open of schema version 4) logs every identity published before
/// the log existed; returns the key.
pub(super) fn open(path: &Path) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let mut conn = mailid_shared::db::connect(path)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut fresh = Zeroizing::new(vec![0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
    let created = tx.execute(
        "INSERT INTO log_config (id, blind_key, created_at) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO NOTHING",
        (&fresh[..], mailid_shared::timefmt::now_unix()),
    )? == 1;
    let key: Zeroizing<Vec<u8>> = Zeroizing::new(tx.query_row(
        "SELECT blind_key FROM log_config WHERE id = 1",
        [],
        |r| r.get(0),
    )?);
    if !created {
        // The log exists: every identity since was logged with its change.
        tx.commit()?;
        return Ok(key);
    }
    let published: Vec<(IdentityRow, i64)> = {
        let mut st = tx.prepare(
            "SELECT address, certificate, chain, key_id, serial, not_after, uploaded_at
             FROM identities",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?),
                r.get::<_, i64>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (address, (certificate, chain, key_id, serial, not_after), at) = row?;
            if let Ok(address) = address.parse() {
                let row = IdentityRow {
                    address,
                    certificate,
                    chain,
                    key_id,
                    serial,
                    not_after,
                    ca_name: String::new(),
                };
                out.push((row, at));
            }
        }
        out
    };
    for (row, at) in published {
        let b = log::blind(&key, row.address.as_str());
        let logged = tx
            .query_row("SELECT 1 FROM log_heads WHERE blind = ?1", [&b[..]], |_| {
                Ok(())
            })
            .optional()?
            .is_some();
        if !logged {
            append(&tx, &key, &row, Event::Published, at)?;
        }
    }
    tx.commit()?;
    Ok(key)
}

/// Phase 1: appends the account's next entry (unsequenced) and moves its
/// head, in the caller's transaction.
pub(super) fn append(
    c: &Connection,
    key: &[u8],
    row: &IdentityRow,
    event: Event,
    at: i64,
) -> Result<(), StoreError> {
    let blind = log::blind(key, row.address.as_str());
    let head: Option<(i64, Vec<u8>)> = c
        .prepare_cached("SELECT seq, head FROM log_heads WHERE blind = ?1")?
        .query_row([&blind[..]], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (seq, prev) = match head {
        Some((s, h)) => ((s + 1) as u64, log::hash32(&h)?.0),
        None => (0, [0u8; 32]),
    };
    let (entry, leaf) = log::entry_for(event, blind, seq, prev, row, at)?;
    c.prepare_cached(
        "INSERT INTO log_entries (blind, seq, entry, leaf_hash) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute((&blind[..], seq as i64, &entry, &leaf[..]))?;
    c.prepare_cached(
        "INSERT INTO log_heads (blind, seq, head) VALUES (?1, ?2, ?3)
         ON CONFLICT (blind) DO UPDATE SET seq = excluded.seq, head = excluded.head",
    )?
    .execute((&blind[..], seq as i64, &leaf[..]))?;
    Ok(())
}

/// Records the log key (origin, vkey) if none is; returns the recorded one.
pub(super) async fn bind(
    db: &Db,
    origin: String,
    vkey: String,
) -> Result<(String, String), StoreError> {
    db.write(move |c| -> Result<(String, String), StoreError> {
        c.execute(
            "UPDATE log_config SET origin = ?1, vkey = ?2 WHERE id = 1 AND vkey IS NULL",
            (&origin, &vkey),
        )?;
        Ok(c.query_row(
            "SELECT origin, vkey FROM log_config WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    })
    .await
}

/// The recorded log key (origin, vkey), if any.
pub(super) async fn bound(db: &Db) -> Result<Option<(String, String)>, StoreError> {
    db.read_short(move |c| -> Result<Option<(String, String)>, StoreError> {
        Ok(c.query_row(
            "SELECT origin, vkey FROM log_config WHERE id = 1 AND vkey IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
    })
    .await
}

/// Phase 2: one sequencer run. Unless the last checkpoint was signed less
/// than `min_interval_ms` ago, or nothing is pending and a checkpoint
/// exists, gives the pending entries their leaf indexes, stores the new
/// hashes and signs a checkpoint of the new tree; its size, if it signed.
pub(super) async fn sequence(
    db: &Db,
    signer: Arc<LogSigner>,
    min_interval_ms: i64,
    now_ms: i64,
) -> Result<Option<u64>, StoreError> {
    db.write(move |c| -> Result<Option<u64>, StoreError> {
        let last: Option<i64> =
            c.query_row("SELECT max(signed_at) FROM log_checkpoints", [], |r| {
                r.get(0)
            })?;
        if last.is_some_and(|l| now_ms - l < min_interval_ms) {
            return Ok(None);
        }
        let pending: Vec<(i64, [u8; 32])> = {
            let mut st = c.prepare_cached(
                "SELECT id, leaf_hash FROM log_entries WHERE leaf_index IS NULL
                 ORDER BY id LIMIT ?1",
            )?;
            let rows = st.query_map([log::BATCH], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?;
            let mut out = Vec::new();
            for r in rows {
                let (id, h) = r?;
                out.push((id, log::hash32(&h)?.0));
            }
            out
        };
        if pending.is_empty() && last.is_some() {
            return Ok(None);
        }
        let size: i64 = c.query_row("SELECT size FROM log_state WHERE id = 1", [], |r| r.get(0))?;
        let mut edge = HashMap::new();
        for idx in log::right_edge(size as u64) {
            let h: Vec<u8> = c
                .prepare_cached("SELECT hash FROM log_hashes WHERE idx = ?1")?
                .query_row([idx as i64], |r| r.get(0))?;
            edge.insert(idx, log::hash32(&h)?);
        }
        let ext = log::extend(size as u64, edge, &pending)?;
        for (id, li) in &ext.leaves {
            c.prepare_cached("UPDATE log_entries SET leaf_index = ?2 WHERE id = ?1")?
                .execute((id, *li as i64))?;
        }
        for (idx, h) in &ext.hashes {
            c.prepare_cached("INSERT INTO log_hashes (idx, hash) VALUES (?1, ?2)")?
                .execute((*idx as i64, &h.0[..]))?;
        }
        c.execute(
            "UPDATE log_state SET size = ?1, root = ?2 WHERE id = 1",
            (ext.size as i64, &ext.root.0[..]),
        )?;
        let note = signer
            .sign_checkpoint(ext.size, ext.root)
            .map_err(log::log_err)?;
        c.execute(
            "INSERT INTO log_checkpoints (size, root, note, signed_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (size) DO UPDATE SET note = excluded.note, signed_at = excluded.signed_at",
            (ext.size as i64, &ext.root.0[..], &note, now_ms),
        )?;
        Ok(Some(ext.size))
    })
    .await
}

fn checkpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, Vec<u8>, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_checkpoint(t: (i64, Vec<u8>, String, i64)) -> Result<CheckpointRow, StoreError> {
    Ok(CheckpointRow {
        size: t.0 as u64,
        root: log::hash32(&t.1)?.0,
        note: t.2,
        signed_at_ms: t.3,
    })
}

/// Whether there are unsequenced entries or no checkpoint.
pub(super) async fn has_work(db: &Db) -> Result<bool, StoreError> {
    db.read(move |c| -> Result<bool, StoreError> {
        Ok(c.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM log_entries WHERE leaf_index IS NULL)
                 OR NOT EXISTS (SELECT 1 FROM log_checkpoints)",
        )?
        .query_row([], |r| r.get(0))?)
    })
    .await
}

/// The newest signed checkpoint.
pub(super) async fn checkpoint(db: &Db) -> Result<Option<CheckpointRow>, StoreError> {
    db.read_short(move |c| -> Result<Option<CheckpointRow>, StoreError> {
        c.prepare_cached(
            "SELECT size, root, note, signed_at FROM log_checkpoints ORDER BY size DESC LIMIT 1",
        )?
        .query_row([], checkpoint_row)
        .optional()?
        .map(to_checkpoint)
        .transpose()
    })
    .await
}

/// An account's entries, by seq.
pub(super) async fn history(
    db: &Db,
    key: Arc<Zeroizing<Vec<u8>>>,
    address: String,
) -> Result<([u8; 32], Vec<LogEntryRow>), StoreError> {
    db.read_short(
        move |c| -> Result<([u8; 32], Vec<LogEntryRow>), StoreError> {
            let blind = log::blind(&key, &address);
            let mut st = c.prepare_cached(
                "SELECT seq, leaf_index, entry FROM log_entries WHERE blind = ?1 ORDER BY seq",
            )?;
            let rows = st.query_map([&blind[..]], |r| {
                Ok(LogEntryRow {
                    seq: r.get::<_, i64>(0)? as u64,
                    leaf_index: r.get::<_, Option<i64>>(1)?.map(|v| v as u64),
                    entry: r.get(2)?,
                })
            })?;
            Ok((blind, rows.collect::<Result<_, _>>()?))
        },
    )
    .await
}

/// The stored hashes at `indexes` (missing ones left out).
pub(super) async fn hashes(db: &Db, indexes: Vec<u64>) -> Result<HashMap<u64, Hash>, StoreError> {
    db.read_short(move |c| -> Result<HashMap<u64, Hash>, StoreError> {
        let mut out = HashMap::new();
        let mut st = c.prepare_cached("SELECT hash FROM log_hashes WHERE idx = ?1")?;
        for idx in indexes {
            if let Some(h) = st
                .query_row([idx as i64], |r| r.get::<_, Vec<u8>>(0))
                .optional()?
            {
                out.insert(idx, log::hash32(&h)?);
            }
        }
        Ok(out)
    })
    .await
}

/// A 32-byte blob column read in place (see [`log::col32`]).
fn blob32(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<[u8; 32]> {
    Ok(log::col32(r.get_ref(i)?.as_blob().unwrap_or_default()))
}

/// Every log row, in one snapshot.
pub(super) async fn dump(db: &Db, key: Arc<Zeroizing<Vec<u8>>>) -> Result<LogDump, StoreError> {
    db.read(move |c| -> Result<LogDump, StoreError> {
        let mut d = LogDump::default();
        let mut st = c.prepare(
            "SELECT leaf_index, blind, seq, entry, leaf_hash FROM log_entries ORDER BY id",
        )?;
        d.entries = st
            .query_map([], |r| {
                Ok(DumpEntry {
                    leaf_index: r.get::<_, Option<i64>>(0)?.map(|v| v as u64),
                    blind: blob32(r, 1)?,
                    seq: r.get::<_, i64>(2)? as u64,
                    entry: r.get(3)?,
                    leaf_hash: blob32(r, 4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut st = c.prepare("SELECT idx, hash FROM log_hashes ORDER BY idx")?;
        d.hashes = st
            .query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, blob32(r, 1)?)))?
            .collect::<Result<_, _>>()?;
        d.state = c.query_row("SELECT size, root FROM log_state WHERE id = 1", [], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
        })?;
        let mut st =
            c.prepare("SELECT size, root, note, signed_at FROM log_checkpoints ORDER BY size")?;
        let cps: Vec<_> = st
            .query_map([], checkpoint_row)?
            .collect::<Result<_, _>>()?;
        d.checkpoints = cps
            .into_iter()
            .map(to_checkpoint)
            .collect::<Result<_, _>>()?;
        let mut st = c.prepare("SELECT blind, seq, head FROM log_heads ORDER BY blind")?;
        d.heads = st
            .query_map([], |r| Ok((blob32(r, 0)?, r.get(1)?, blob32(r, 2)?)))?
            .collect::<Result<_, _>>()?;
        d.vkey = c
            .query_row("SELECT vkey FROM log_config WHERE id = 1", [], |r| r.get(0))
            .optional()?
            .flatten();
        let mut st = c.prepare("SELECT address, certificate FROM identities")?;
        d.identities = st
            .query_map([], |r| {
                Ok(log::identity_digest(
                    &key,
                    &r.get::<_, String>(0)?,
                    &r.get::<_, Vec<u8>>(1)?,
                ))
            })?
            .collect::<Result<_, _>>()?;
        Ok(d)
    })
    .await
}
