//! Key backups in SQLite: opaque ciphertexts per (account, key ID), the
//! per-account limit counted and the row written in one write job of the
//! one writer, so two uploads cannot both pass the count.

use mailid_shared::db::Db;
use mailid_shared::{Address, KeyId};
use rusqlite::OptionalExtension;

use crate::store::{BackupPut, BackupRow, BackupWrite, StoreError};

pub(super) async fn put(
    db: &Db,
    address: &Address,
    key_id: &KeyId,
    backup: BackupWrite,
    max: usize,
    now: i64,
) -> Result<BackupPut, StoreError> {
    let addr = address.as_str().to_string();
    let key = key_id.as_bytes().to_vec();
    db.write(move |c| -> Result<BackupPut, StoreError> {
        let enabled: Option<bool> = c
            .prepare_cached("SELECT enabled FROM accounts WHERE address = ?1")?
            .query_row([&addr], |r| r.get(0))
            .optional()?;
        if enabled != Some(true) {
            return Err(StoreError::NotFound(format!("account {addr}")));
        }
        let others: i64 = c
            .prepare_cached("SELECT COUNT(*) FROM backups WHERE account = ?1 AND key_id <> ?2")?
            .query_row((&addr, &key), |r| r.get(0))?;
        if usize::try_from(others).unwrap_or(usize::MAX) >= max {
            return Ok(BackupPut::Full);
        }
        c.prepare_cached(
            "INSERT INTO backups
               (account, key_id, encrypted_key, stored_at, certificate, chain, ca_url)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(account, key_id) DO UPDATE SET
               encrypted_key = excluded.encrypted_key, stored_at = excluded.stored_at,
               certificate = excluded.certificate, chain = excluded.chain,
               ca_url = excluded.ca_url",
        )?
        .execute((
            &addr,
            &key,
            &backup.encrypted_key,
            now,
            &backup.certificate,
            &backup.chain,
            &backup.ca_url,
        ))?;
        Ok(BackupPut::Stored(now))
    })
    .await
}

pub(super) async fn list(db: &Db, address: &Address) -> Result<Vec<BackupRow>, StoreError> {
    let addr = address.as_str().to_string();
    db.read(move |c| -> Result<Vec<BackupRow>, StoreError> {
        let mut st = c.prepare_cached(
            "SELECT key_id, encrypted_key, stored_at, certificate, chain, ca_url FROM backups
             WHERE account = ?1 ORDER BY stored_at, key_id",
        )?;
        let rows = st.query_map([&addr], |r| {
            Ok(BackupRow {
                key_id: r.get(0)?,
                encrypted_key: r.get(1)?,
                stored_at: r.get(2)?,
                certificate: r.get(3)?,
                chain: r.get(4)?,
                ca_url: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    })
    .await
}

pub(super) async fn delete(db: &Db, address: &Address, key_id: &KeyId) -> Result<(), StoreError> {
    let addr = address.as_str().to_string();
    let key = key_id.as_bytes().to_vec();
    db.write(move |c| -> Result<(), StoreError> {
        let n = c
            .prepare_cached("DELETE FROM backups WHERE account = ?1 AND key_id = ?2")?
            .execute((&addr, &key))?;
        match n {
            0 => Err(StoreError::NotFound("backup".into())),
            _ => Ok(()),
        }
    })
    .await
}
