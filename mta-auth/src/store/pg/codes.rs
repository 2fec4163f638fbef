//! The code tables in PostgreSQL: recording an issued code, and a
//! validation's load-decide-write, each in one transaction that first locks
//! the account's row, so validations and issues of one account run one at
//! a time across every replica (a code validates at most once, lockout
//! counters are exact).
//!
//! Storage only moves rows: what a code is and when a key locks are the
//! caller's (`crate::validate`).

use std::sync::Arc;

use deadpool_postgres::Transaction;
// Polls in argument order: the statements go out in that order.
use futures_util::future::try_join3;
use mailid_shared::pg::PgDb;
use mailid_shared::{Address, KeyId};
use zeroize::Zeroizing;

use crate::store::{
    AccountCodes, CodeSnapshot, IssueRow, KeyRow, KeyState, KeyWrite, LockState, StoreError,
};

const LOCK_ACCOUNT: &str =
    "SELECT totp_secret, enabled FROM accounts WHERE address = $1 FOR NO KEY UPDATE";
const CA_SECRET: &str = "SELECT secret FROM cas WHERE name = $1";
const LOAD_TARGET: &str = "SELECT key_id, generation, issued_at, failures, lockouts, locked_until
     FROM totp_keys WHERE address = $1 AND key_id = $2";
const LOAD_OTHERS: &str = "SELECT key_id, generation, issued_at, failures, lockouts, locked_until
     FROM totp_keys WHERE address = $1 AND issued_at >= $2 AND key_id <> $3";

/// Locks the account's row for the rest of the transaction and reads its
/// secret and state; `None`: no such account. `FOR NO KEY UPDATE`: as
/// exclusive as `FOR UPDATE` among issues and validations, without
/// blocking the foreign-key checks of rows that merely refer to the
/// account (an identity upload).
async fn lock_account(
    tx: &Transaction<'_>,
    addr: &str,
) -> Result<Option<AccountCodes>, StoreError> {
    let st = tx.prepare_cached(LOCK_ACCOUNT).await?;
    Ok(tx.query_opt(&st, &[&addr]).await?.map(|r| AccountCodes {
        secret: Zeroizing::new(r.get(0)),
        enabled: r.get(1),
    }))
}

fn counter(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn key_row(r: &tokio_postgres::Row) -> KeyRow {
    KeyRow {
        state: KeyState {
            key_id: r.get(0),
            generation: r.get::<_, i64>(1) as u64,
            issued_at: r.get(2),
        },
        lock: LockState {
            failures: counter(r.get(3)),
            lockouts: counter(r.get(4)),
            locked_until: r.get(5),
        },
    }
}

/// The target key's row, if a code was ever issued for it.
async fn load_target(
    tx: &Transaction<'_>,
    addr: &str,
    key: &[u8],
) -> Result<Option<KeyRow>, StoreError> {
    let st = tx.prepare_cached(LOAD_TARGET).await?;
    Ok(tx
        .query_opt(&st, &[&addr, &key])
        .await?
        .as_ref()
        .map(key_row))
}

/// The account's other keys with a code issued at or after `live_since`.
async fn load_others(
    tx: &Transaction<'_>,
    addr: &str,
    key: &[u8],
    live_since: i64,
) -> Result<Vec<KeyState>, StoreError> {
    let st = tx.prepare_cached(LOAD_OTHERS).await?;
    let rows = tx.query(&st, &[&addr, &live_since, &key]).await?;
    Ok(rows.iter().map(|r| key_row(r).state).collect())
}

async fn apply(
    tx: &Transaction<'_>,
    addr: &str,
    key: &[u8],
    write: &KeyWrite,
) -> Result<(), StoreError> {
    match write {
        KeyWrite::ConsumeCode => {
            let st = tx
                .prepare_cached(
                    "UPDATE totp_keys SET generation = generation + 1, issued_at = NULL,
                       failures = 0, lockouts = 0, locked_until = 0
                     WHERE address = $1 AND key_id = $2",
                )
                .await?;
            tx.execute(&st, &[&addr, &key]).await?;
        }
        KeyWrite::SaveLock(lock) => {
            let st = tx
                .prepare_cached(
                    "UPDATE totp_keys SET failures = $3, lockouts = $4, locked_until = $5
                     WHERE address = $1 AND key_id = $2",
                )
                .await?;
            let failures = i32::try_from(lock.failures).unwrap_or(i32::MAX);
            let lockouts = i32::try_from(lock.lockouts).unwrap_or(i32::MAX);
            tx.execute(
                &st,
                &[&addr, &key, &failures, &lockouts, &lock.locked_until],
            )
            .await?;
        }
    }
    Ok(())
}

pub(super) async fn issue(
    db: &PgDb,
    address: &Address,
    key_id: &KeyId,
    now: i64,
) -> Result<IssueRow, StoreError> {
    let addr = address.as_str().to_string();
    let key = key_id.as_bytes().to_vec();
    db.write(move |tx| {
        let (addr, key) = (addr.clone(), key.clone());
        Box::pin(async move {
            let acct = lock_account(tx, &addr)
                .await?
                .filter(|a| a.enabled)
                .ok_or_else(|| StoreError::NotFound(format!("account {addr}")))?;
            let st = tx
                .prepare_cached(
                    "INSERT INTO totp_keys (address, key_id, generation, issued_at)
                     VALUES ($1, $2, 0, $3)
                     ON CONFLICT (address, key_id) DO UPDATE SET issued_at = excluded.issued_at
                     RETURNING generation",
                )
                .await?;
            let generation: i64 = tx.query_one(&st, &[&addr, &key, &now]).await?.get(0);
            Ok(IssueRow {
                secret: acct.secret,
                generation: generation as u64,
            })
        })
    })
    .await
}

pub(super) async fn validate<V, F>(
    db: &PgDb,
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
    let decide = Arc::new(decide);
    db.write(move |tx| {
        let (ca, addr, key, decide) = (ca.clone(), addr.clone(), key.clone(), decide.clone());
        Box::pin(async move {
            // The three reads go out together (pipelined: one round trip)
            // and run in the order sent. The lock comes first, so what the
            // other two read is stable until this transaction ends.
            // Prepared first (from the connection's cache after its first
            // validation), so that each query below is sent at its first
            // poll, in argument order.
            try_join3(
                tx.prepare_cached(LOCK_ACCOUNT),
                tx.prepare_cached(CA_SECRET),
                tx.prepare_cached(LOAD_TARGET),
            )
            .await?;
            let ca_secret = async {
                let st = tx.prepare_cached(CA_SECRET).await?;
                Ok::<_, StoreError>(
                    tx.query_opt(&st, &[&ca])
                        .await?
                        .map(|r| Zeroizing::new(r.get::<_, Vec<u8>>(0))),
                )
            };
            let (account, ca_secret, target) = try_join3(
                lock_account(tx, &addr),
                ca_secret,
                load_target(tx, &addr, &key),
            )
            .await?;
            // No account: no keys either (they belong to an account).
            let target = target.filter(|_| account.is_some());
            let snapshot = CodeSnapshot {
                ca_secret,
                account,
                target,
                others: None,
            };
            // The other keys only for a decision that needs them (a code
            // that is not the key's own): a second round trip, never taken
            // by a valid code.
            let (verdict, write) = match decide(snapshot.clone()) {
                Some(d) => d,
                None => {
                    let others = match snapshot.account {
                        Some(_) => load_others(tx, &addr, &key, live_since).await?,
                        None => Vec::new(),
                    };
                    decide(CodeSnapshot {
                        others: Some(others),
                        ..snapshot
                    })
                    .ok_or(StoreError::Contract(
                        "the decision asked for keys it was given",
                    ))?
                }
            };
            if let Some(write) = write {
                apply(tx, &addr, &key, &write).await?;
            }
            Ok(verdict)
        })
    })
    .await
}
