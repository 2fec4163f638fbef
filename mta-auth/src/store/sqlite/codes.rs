//! The code tables in SQLite: recording an issued code, and loading a
//! validation's rows, handing them to the caller's decision and applying
//! the writes it returns, all in one serialised write job.
//!
//! Storage only moves rows: what a code is and when a key locks are the
//! caller's (`crate::validate`).

use mailid_shared::db::Db;
use mailid_shared::{Address, KeyId};
use rusqlite::{Connection, OptionalExtension};
use zeroize::Zeroizing;

use crate::store::{
    AccountCodes, CodeSnapshot, IssueRow, KeyRow, KeyState, KeyWrite, LockState, StoreError,
};

fn load_account(c: &Connection, addr: &str) -> rusqlite::Result<Option<AccountCodes>> {
    c.prepare_cached("SELECT totp_secret, enabled FROM accounts WHERE address = ?1")?
        .query_row([addr], |r| {
            Ok(AccountCodes {
                secret: Zeroizing::new(r.get(0)?),
                enabled: r.get(1)?,
            })
        })
        .optional()
}

/// The target key's row, if a code was ever issued for it.
fn load_target(c: &Connection, addr: &str, key: &[u8]) -> rusqlite::Result<Option<KeyRow>> {
    c.prepare_cached(
        "SELECT key_id, generation, issued_at, failures, lockouts, locked_until FROM totp_keys
         WHERE address = ?1 AND key_id = ?2",
    )?
    .query_row((addr, key), key_row)
    .optional()
}

/// The account's other keys with a code issued at or after `live_since`.
fn load_others(
    c: &Connection,
    addr: &str,
    key: &[u8],
    live_since: i64,
) -> rusqlite::Result<Vec<KeyState>> {
    let mut st = c.prepare_cached(
        "SELECT key_id, generation, issued_at, failures, lockouts, locked_until FROM totp_keys
         WHERE address = ?1 AND issued_at >= ?2 AND key_id != ?3",
    )?;
    let rows = st.query_map((addr, live_since, key), key_row)?;
    rows.map(|r| r.map(|row| row.state)).collect()
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        state: KeyState {
            key_id: r.get(0)?,
            generation: r.get::<_, i64>(1)? as u64,
            issued_at: r.get(2)?,
        },
        lock: LockState {
            failures: r.get(3)?,
            lockouts: r.get(4)?,
            locked_until: r.get(5)?,
        },
    })
}

/// What a validation of (ca, addr, key) reads first: the CA's secret, the
/// account and the key's own row (the other keys are left unloaded).
fn load_snapshot(
    c: &Connection,
    ca: &str,
    addr: &str,
    key: &[u8],
) -> rusqlite::Result<CodeSnapshot> {
    let ca_secret = c
        .prepare_cached("SELECT secret FROM cas WHERE name = ?1")?
        .query_row([ca], |r| r.get(0))
        .optional()?
        .map(Zeroizing::new);
    Ok(CodeSnapshot {
        ca_secret,
        account: load_account(c, addr)?,
        target: load_target(c, addr, key)?,
        others: None,
    })
}

fn apply(c: &Connection, addr: &str, key: &[u8], write: &KeyWrite) -> rusqlite::Result<()> {
    match write {
        KeyWrite::ConsumeCode => c
            .prepare_cached(
                "UPDATE totp_keys SET generation = generation + 1, issued_at = NULL,
                   failures = 0, lockouts = 0, locked_until = 0
                 WHERE address = ?1 AND key_id = ?2",
            )?
            .execute((addr, key))?,
        KeyWrite::SaveLock(lock) => c
            .prepare_cached(
                "UPDATE totp_keys SET failures = ?3, lockouts = ?4, locked_until = ?5
                 WHERE address = ?1 AND key_id = ?2",
            )?
            .execute((addr, key, lock.failures, lock.lockouts, lock.locked_until))?,
    };
    Ok(())
}

pub(super) async fn issue(
    db: &Db,
    address: &Address,
    key_id: &KeyId,
    now: i64,
) -> Result<IssueRow, StoreError> {
    let addr = address.as_str().to_string();
    let key = key_id.as_bytes().to_vec();
    db.write(move |c| -> Result<IssueRow, StoreError> {
        let acct = load_account(c, &addr)?
            .filter(|a| a.enabled)
            .ok_or_else(|| StoreError::NotFound(format!("account {addr}")))?;
        let generation: i64 = c
            .prepare_cached(
                "INSERT INTO totp_keys (address, key_id, generation, issued_at)
                 VALUES (?1, ?2, 0, ?3)
                 ON CONFLICT(address, key_id) DO UPDATE SET issued_at = excluded.issued_at
                 RETURNING generation",
            )?
            .query_row((&addr, &key, now), |r| r.get(0))?;
        Ok(IssueRow {
            secret: acct.secret,
            generation: generation as u64,
        })
    })
    .await
}

/// Serialised with every other write by the one writer, so single use and
/// the lockout counters are race-free.
pub(super) async fn validate<V, F>(
    db: &Db,
    ca_name: &str,
    address: &Address,
    key_id: &KeyId,
    live_since: i64,
    decide: F,
) -> Result<V, StoreError>
where
    V: Send + 'static,
    F: Fn(CodeSnapshot) -> Option<(V, Option<KeyWrite>)> + Send + Sync + 'static,
{
    let ca = ca_name.to_string();
    let addr = address.as_str().to_string();
    let key = key_id.as_bytes().to_vec();
    db.write(move |c| -> Result<V, StoreError> {
        let snapshot = load_snapshot(c, &ca, &addr, &key)?;
        // The other keys only for a decision that needs them (a code that
        // is not the key's own): a valid code reads one key row.
        let (verdict, write) = match decide(snapshot.clone()) {
            Some(d) => d,
            None => decide(CodeSnapshot {
                others: Some(load_others(c, &addr, &key, live_since)?),
                ..snapshot
            })
            .ok_or(StoreError::Contract(
                "the decision asked for keys it was given",
            ))?,
        };
        if let Some(write) = write {
            apply(c, &addr, &key, &write)?;
        }
        Ok(verdict)
    })
    .await
}
