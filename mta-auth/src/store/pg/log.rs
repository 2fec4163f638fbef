//! The identity log in PostgreSQL (SPEC §11). An append locks only its
//! account's `log_heads` row (no shared row, so uploads of different
//! accounts do not queue behind one another); a sequencer run locks
//! `log_state` with SKIP LOCKED, so one replica at a time extends the tree
//! and signs, and the one-second spacing of checkpoints is judged on the
//! database's clock inside that lock, whichever replica runs.

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::Transaction;
use mailid_shared::pg::PgDb;
use mailid_shared::translog::{Event, Hash, LogSigner};
use zeroize::Zeroizing;

use crate::store::log::{self, CheckpointRow, DumpEntry, LogDump, LogEntryRow};
use crate::store::{IdentityRow, StoreError};

/// At open: makes the blind key if there is none and then (once, the
/// replica whose insert made it) logs every identity published before the
/// log existed; returns the key.
pub(super) fn open(db: &PgDb) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let mut fresh = vec![0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
    let fresh = Arc::new(fresh);
    let key: Vec<u8> = db.block_on(db.write(move |tx| {
        let fresh = fresh.clone();
        Box::pin(async move {
            let created = tx
                .execute(
                    "INSERT INTO log_config (id, blind_key, created_at) VALUES (1, $1, $2)
                     ON CONFLICT (id) DO NOTHING",
                    &[&*fresh, &mailid_shared::timefmt::now_unix()],
                )
                .await?
                == 1;
            let key: Vec<u8> = tx
                .query_one("SELECT blind_key FROM log_config WHERE id = 1", &[])
                .await?
                .get(0);
            if !created {
                // The log exists: every identity since was logged.
                return Ok::<_, StoreError>(key);
            }
            let rows = tx
                .query(
                    "SELECT address, certificate, chain, key_id, serial, not_after, uploaded_at
                     FROM identities",
                    &[],
                )
                .await?;
            for r in rows {
                let Ok(address) = r.get::<_, String>(0).parse() else {
                    continue;
                };
                let row = IdentityRow {
                    address,
                    certificate: r.get(1),
                    chain: r.get(2),
                    key_id: r.get(3),
                    serial: r.get(4),
                    not_after: r.get(5),
                    ca_name: String::new(),
                };
                let mut head = lock_head(tx, &key, row.address.as_str()).await?;
                if head.seq < 0 {
                    append(tx, &mut head, &row, Event::Published, r.get(6)).await?;
                }
            }
            Ok::<_, StoreError>(key)
        })
    }))?;
    Ok(Zeroizing::new(key))
}

/// An account's log head, locked for the rest of the transaction.
pub(super) struct Head {
    blind: [u8; 32],
    /// Seq of the newest entry; -1 before the first.
    seq: i64,
    /// Leaf hash of the newest entry (zero before the first).
    head: [u8; 32],
}

/// Locks the account's log head (made if missing) and reads it, in one
/// statement: every change of one account's identity goes through this
/// lock, so its entries chain in order whichever replica writes them.
pub(super) async fn lock_head(
    tx: &Transaction<'_>,
    key: &[u8],
    address: &str,
) -> Result<Head, StoreError> {
    let blind = log::blind(key, address);
    let st = tx
        .prepare_cached(
            "INSERT INTO log_heads (blind, seq, head) VALUES ($1, -1, $2)
             ON CONFLICT (blind) DO UPDATE SET seq = log_heads.seq
             RETURNING seq, head",
        )
        .await?;
    let r = tx.query_one(&st, &[&&blind[..], &&[0u8; 32][..]]).await?;
    Ok(Head {
        blind,
        seq: r.get(0),
        head: log::hash32(&r.get::<_, Vec<u8>>(1))?.0,
    })
}

/// Whether the identity is being logged, and as what (after
/// [`lock_head`]): compared with the live identity.
pub(super) async fn event_for(
    tx: &Transaction<'_>,
    row: &IdentityRow,
) -> Result<Option<Event>, StoreError> {
    let st = tx
        .prepare_cached("SELECT serial, certificate FROM identities WHERE address = $1")
        .await?;
    let current = tx.query_opt(&st, &[&row.address.as_str()]).await?;
    Ok(match current {
        None => Some(Event::Published),
        Some(c)
            if c.get::<_, String>(0) == row.serial && c.get::<_, Vec<u8>>(1) == row.certificate =>
        {
            None
        }
        Some(_) => Some(Event::Superseded),
    })
}

/// Phase 1: appends the account's next entry (unsequenced) after the
/// locked `head` and moves the head, in one statement of the caller's
/// transaction.
pub(super) async fn append(
    tx: &Transaction<'_>,
    head: &mut Head,
    row: &IdentityRow,
    event: Event,
    at: i64,
) -> Result<(), StoreError> {
    let (seq, prev) = match head.seq {
        s if s >= 0 => ((s + 1) as u64, head.head),
        _ => (0, [0u8; 32]),
    };
    let (entry, leaf) = log::entry_for(event, head.blind, seq, prev, row, at)?;
    let st = tx
        .prepare_cached(
            "WITH e AS (INSERT INTO log_entries (blind, seq, entry, leaf_hash)
                        VALUES ($1, $2, $3, $4))
             UPDATE log_heads SET seq = $2, head = $4 WHERE blind = $1",
        )
        .await?;
    tx.execute(&st, &[&&head.blind[..], &(seq as i64), &entry, &&leaf[..]])
        .await?;
    head.seq = seq as i64;
    head.head = leaf;
    Ok(())
}

/// Records the log key (origin, vkey) if none is; returns the recorded one.
pub(super) async fn bind(
    db: &PgDb,
    origin: String,
    vkey: String,
) -> Result<(String, String), StoreError> {
    db.write(move |tx| {
        let (origin, vkey) = (origin.clone(), vkey.clone());
        Box::pin(async move {
            tx.execute(
                "UPDATE log_config SET origin = $1, vkey = $2 WHERE id = 1 AND vkey IS NULL",
                &[&origin, &vkey],
            )
            .await?;
            let r = tx
                .query_one("SELECT origin, vkey FROM log_config WHERE id = 1", &[])
                .await?;
            Ok((r.get(0), r.get(1)))
        })
    })
    .await
}

/// The recorded log key (origin, vkey), if any.
pub(super) async fn bound(db: &PgDb) -> Result<Option<(String, String)>, StoreError> {
    db.read(move |tx| {
        Box::pin(async move {
            Ok(tx
                .query_opt(
                    "SELECT origin, vkey FROM log_config WHERE id = 1 AND vkey IS NOT NULL",
                    &[],
                )
                .await?
                .map(|r| (r.get(0), r.get(1))))
        })
    })
    .await
}

/// Phase 2: one sequencer run (see `Store::log_sequence`); `now_ms` is
/// ignored for the database's clock.
pub(super) async fn sequence(
    db: &PgDb,
    signer: Arc<LogSigner>,
    min_interval_ms: i64,
) -> Result<Option<u64>, StoreError> {
    db.write(move |tx| {
        let signer = signer.clone();
        Box::pin(async move {
            let Some(state) = tx
                .query_opt(
                    "SELECT size, (extract(epoch FROM clock_timestamp()) * 1000)::bigint
                     FROM log_state WHERE id = 1 FOR UPDATE SKIP LOCKED",
                    &[],
                )
                .await?
            else {
                return Ok(None);
            };
            let (size, now_ms): (i64, i64) = (state.get(0), state.get(1));
            let last: Option<i64> = tx
                .query_one("SELECT max(signed_at) FROM log_checkpoints", &[])
                .await?
                .get(0);
            if last.is_some_and(|l| now_ms - l < min_interval_ms) {
                return Ok(None);
            }
            let mut pending = Vec::new();
            for r in tx
                .query(
                    "SELECT id, leaf_hash FROM log_entries WHERE leaf_index IS NULL
                     ORDER BY id LIMIT $1",
                    &[&log::BATCH],
                )
                .await?
            {
                pending.push((r.get::<_, i64>(0), log::hash32(&r.get::<_, Vec<u8>>(1))?.0));
            }
            if pending.is_empty() && last.is_some() {
                return Ok(None);
            }
            let edge_idx: Vec<i64> = log::right_edge(size as u64)
                .into_iter()
                .map(|i| i as i64)
                .collect();
            let mut edge = HashMap::new();
            for r in tx
                .query(
                    "SELECT idx, hash FROM log_hashes WHERE idx = ANY($1)",
                    &[&edge_idx],
                )
                .await?
            {
                edge.insert(
                    r.get::<_, i64>(0) as u64,
                    log::hash32(&r.get::<_, Vec<u8>>(1))?,
                );
            }
            let ext = log::extend(size as u64, edge, &pending)?;
            let ids: Vec<i64> = ext.leaves.iter().map(|l| l.0).collect();
            let lis: Vec<i64> = ext.leaves.iter().map(|l| l.1 as i64).collect();
            tx.execute(
                "UPDATE log_entries SET leaf_index = v.li
                 FROM unnest($1::bigint[], $2::bigint[]) AS v(id, li)
                 WHERE log_entries.id = v.id",
                &[&ids, &lis],
            )
            .await?;
            let idxs: Vec<i64> = ext.hashes.iter().map(|h| h.0 as i64).collect();
            let hs: Vec<Vec<u8>> = ext.hashes.iter().map(|h| h.1 .0.to_vec()).collect();
            tx.execute(
                "INSERT INTO log_hashes (idx, hash)
                 SELECT * FROM unnest($1::bigint[], $2::bytea[])",
                &[&idxs, &hs],
            )
            .await?;
            tx.execute(
                "UPDATE log_state SET size = $1, root = $2 WHERE id = 1",
                &[&(ext.size as i64), &&ext.root.0[..]],
            )
            .await?;
            let note = signer
                .sign_checkpoint(ext.size, ext.root)
                .map_err(log::log_err)?;
            tx.execute(
                "INSERT INTO log_checkpoints (size, root, note, signed_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (size) DO UPDATE SET note = excluded.note,
                   signed_at = excluded.signed_at",
                &[&(ext.size as i64), &&ext.root.0[..], &note, &now_ms],
            )
            .await?;
            Ok(Some(ext.size))
        })
    })
    .await
}

fn to_checkpoint(r: &tokio_postgres::Row) -> Result<CheckpointRow, StoreError> {
    Ok(CheckpointRow {
        size: r.get::<_, i64>(0) as u64,
        root: log::hash32(&r.get::<_, Vec<u8>>(1))?.0,
        note: r.get(2),
        signed_at_ms: r.get(3),
    })
}

/// Whether there are unsequenced entries or no checkpoint.
pub(super) async fn has_work(db: &PgDb) -> Result<bool, StoreError> {
    db.single(move |c| {
        Box::pin(async move {
            Ok(c.query_one(
                "SELECT EXISTS (SELECT 1 FROM log_entries WHERE leaf_index IS NULL)
                     OR NOT EXISTS (SELECT 1 FROM log_checkpoints)",
                &[],
            )
            .await?
            .get(0))
        })
    })
    .await
}

/// The newest signed checkpoint.
pub(super) async fn checkpoint(db: &PgDb) -> Result<Option<CheckpointRow>, StoreError> {
    db.read(move |tx| {
        Box::pin(async move {
            tx.query_opt(
                "SELECT size, root, note, signed_at FROM log_checkpoints
                 ORDER BY size DESC LIMIT 1",
                &[],
            )
            .await?
            .as_ref()
            .map(to_checkpoint)
            .transpose()
        })
    })
    .await
}

/// An account's entries, by seq.
pub(super) async fn history(
    db: &PgDb,
    key: Arc<Zeroizing<Vec<u8>>>,
    address: String,
) -> Result<([u8; 32], Vec<LogEntryRow>), StoreError> {
    let blind = log::blind(&key, &address);
    db.read(move |tx| {
        Box::pin(async move {
            let rows = tx
                .query(
                    "SELECT seq, leaf_index, entry FROM log_entries WHERE blind = $1
                     ORDER BY seq",
                    &[&&blind[..]],
                )
                .await?;
            Ok((
                blind,
                rows.iter()
                    .map(|r| LogEntryRow {
                        seq: r.get::<_, i64>(0) as u64,
                        leaf_index: r.get::<_, Option<i64>>(1).map(|v| v as u64),
                        entry: r.get(2),
                    })
                    .collect(),
            ))
        })
    })
    .await
}

/// The stored hashes at `indexes` (missing ones left out), in one query.
pub(super) async fn hashes(db: &PgDb, indexes: Vec<u64>) -> Result<HashMap<u64, Hash>, StoreError> {
    let idx: Vec<i64> = indexes.into_iter().map(|i| i as i64).collect();
    db.read(move |tx| {
        let idx = idx.clone();
        Box::pin(async move {
            let mut out = HashMap::new();
            for r in tx
                .query(
                    "SELECT idx, hash FROM log_hashes WHERE idx = ANY($1)",
                    &[&idx],
                )
                .await?
            {
                out.insert(
                    r.get::<_, i64>(0) as u64,
                    log::hash32(&r.get::<_, Vec<u8>>(1))?,
                );
            }
            Ok(out)
        })
    })
    .await
}

/// Every log row, in one REPEATABLE READ snapshot.
pub(super) async fn dump(db: &PgDb, key: Arc<Zeroizing<Vec<u8>>>) -> Result<LogDump, StoreError> {
    db.read(move |tx| {
        let key = key.clone();
        Box::pin(async move {
            tx.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .await?;
            let entries = tx
                .query(
                    "SELECT leaf_index, blind, seq, entry, leaf_hash FROM log_entries ORDER BY id",
                    &[],
                )
                .await?
                .iter()
                .map(|r| DumpEntry {
                    leaf_index: r.get::<_, Option<i64>>(0).map(|v| v as u64),
                    blind: log::col32(r.get(1)),
                    seq: r.get::<_, i64>(2) as u64,
                    entry: r.get(3),
                    leaf_hash: log::col32(r.get(4)),
                })
                .collect();
            let mut d = LogDump {
                entries,
                ..LogDump::default()
            };
            d.hashes = tx
                .query("SELECT idx, hash FROM log_hashes ORDER BY idx", &[])
                .await?
                .iter()
                .map(|r| (r.get::<_, i64>(0) as u64, log::col32(r.get(1))))
                .collect();
            let s = tx
                .query_one("SELECT size, root FROM log_state WHERE id = 1", &[])
                .await?;
            d.state = (s.get::<_, i64>(0) as u64, s.get(1));
            d.checkpoints = tx
                .query(
                    "SELECT size, root, note, signed_at FROM log_checkpoints ORDER BY size",
                    &[],
                )
                .await?
                .iter()
                .map(to_checkpoint)
                .collect::<Result<_, _>>()?;
            d.heads = tx
                .query(
                    "SELECT blind, seq, head FROM log_heads WHERE seq >= 0 ORDER BY blind",
                    &[],
                )
                .await?
                .iter()
                .map(|r| (log::col32(r.get(0)), r.get(1), log::col32(r.get(2))))
                .collect();
            d.vkey = tx
                .query_opt("SELECT vkey FROM log_config WHERE id = 1", &[])
                .await?
                .and_then(|r| r.get(0));
            d.identities = tx
                .query("SELECT address, certificate FROM identities", &[])
                .await?
                .iter()
                .map(|r| log::identity_digest(&key, r.get::<_, &str>(0), r.get::<_, &[u8]>(1)))
                .collect();
            Ok(d)
        })
    })
    .await
}
