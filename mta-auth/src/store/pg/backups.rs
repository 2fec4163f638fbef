//! Key backups in PostgreSQL: opaque ciphertexts per (account, key ID).
//! A write first locks the account's row (as issuing a code does), so the
//! per-account limit is counted and kept in one transaction that runs
//! alone for that account across every replica; at READ COMMITTED the
//! count, taken after the lock, sees every upload committed before it.

use mailid_shared::pg::PgDb;
use mailid_shared::{Address, KeyId};

use crate::store::{BackupPut, BackupRow, BackupWrite, StoreError};

pub(super) async fn put(
    db: &PgDb,
    address: &Address,
    key_id: &KeyId,
    backup: BackupWrite,
    max: usize,
    now: i64,
) -> Result<BackupPut, StoreError> {
    let addr = address.as_str().to_string();
    let key = key_id.as_bytes().to_vec();
    let max = i64::try_from(max).unwrap_or(i64::MAX);
    db.write(move |tx| {
        let (addr, key, b) = (addr.clone(), key.clone(), backup.clone());
        Box::pin(async move {
            let enabled: Option<bool> = tx
                .query_opt(
                    "SELECT enabled FROM accounts WHERE address = $1 FOR NO KEY UPDATE",
                    &[&addr],
                )
                .await?
                .map(|r| r.get(0));
            if enabled != Some(true) {
                return Err(StoreError::NotFound(format!("account {addr}")));
            }
            let others: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM backups WHERE account = $1 AND key_id <> $2",
                    &[&addr, &key],
                )
                .await?
                .get(0);
            if others >= max {
                return Ok(BackupPut::Full);
            }
            tx.execute(
                "INSERT INTO backups
                   (account, key_id, encrypted_key, stored_at, certificate, chain, ca_url)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (account, key_id) DO UPDATE SET
                   encrypted_key = excluded.encrypted_key, stored_at = excluded.stored_at,
                   certificate = excluded.certificate, chain = excluded.chain,
                   ca_url = excluded.ca_url",
                &[
                    &addr,
                    &key,
                    &b.encrypted_key,
                    &now,
                    &b.certificate,
                    &b.chain,
                    &b.ca_url,
                ],
            )
            .await?;
            Ok(BackupPut::Stored(now))
        })
    })
    .await
}

pub(super) async fn list(db: &PgDb, address: &Address) -> Result<Vec<BackupRow>, StoreError> {
    let addr = address.as_str().to_string();
    db.read(move |tx| {
        let addr = addr.clone();
        Box::pin(async move {
            Ok(tx
                .query(
                    "SELECT key_id, encrypted_key, stored_at, certificate, chain, ca_url
                     FROM backups WHERE account = $1 ORDER BY stored_at, key_id",
                    &[&addr],
                )
                .await?
                .into_iter()
                .map(|r| BackupRow {
                    key_id: r.get(0),
                    encrypted_key: r.get(1),
                    stored_at: r.get(2),
                    certificate: r.get(3),
                    chain: r.get(4),
                    ca_url: r.get(5),
                })
                .collect())
        })
    })
    .await
}

pub(super) async fn delete(db: &PgDb, address: &Address, key_id: &KeyId) -> Result<(), StoreError> {
    let addr = address.as_str().to_string();
    let key = key_id.as_bytes().to_vec();
    db.write(move |tx| {
        let (addr, key) = (addr.clone(), key.clone());
        Box::pin(async move {
            let n = tx
                .execute(
                    "DELETE FROM backups WHERE account = $1 AND key_id = $2",
                    &[&addr, &key],
                )
                .await?;
            match n {
                0 => Err(StoreError::NotFound("backup".into())),
                _ => Ok(()),
            }
        })
    })
    .await
}
