//! Published identities and the CRLs seen for them, in PostgreSQL.

use std::sync::Arc;

use mailid_shared::pg::PgDb;
use mailid_shared::Address;

use mailid_shared::translog::Event;
use zeroize::Zeroizing;

use crate::store::{CrlRow, IdentityRow, StoreError};

/// Publishes the identity and, in the same transaction, appends its log
/// entry (published, or superseded when another identity was live) under
/// the lock of the account's log head; the identical certificate uploaded
/// again is not logged again.
pub(super) async fn put(
    db: &PgDb,
    row: IdentityRow,
    blind_key: Arc<Zeroizing<Vec<u8>>>,
    now: i64,
) -> Result<(), StoreError> {
    let row = Arc::new(row);
    db.write(move |tx| {
        let (row, key) = (row.clone(), blind_key.clone());
        Box::pin(async move {
            let mut head = super::log::lock_head(tx, &key, row.address.as_str()).await?;
            if let Some(event) = super::log::event_for(tx, &row).await? {
                super::log::append(tx, &mut head, &row, event, now).await?;
            }
            tx.execute(
                "INSERT INTO identities
                   (address, certificate, chain, key_id, serial, not_after, uploaded_at, ca_name)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (address) DO UPDATE SET
                   certificate = excluded.certificate, chain = excluded.chain,
                   key_id = excluded.key_id, serial = excluded.serial,
                   not_after = excluded.not_after, uploaded_at = excluded.uploaded_at,
                   ca_name = excluded.ca_name",
                &[
                    &row.address.as_str(),
                    &row.certificate,
                    &row.chain,
                    &row.key_id,
                    &row.serial,
                    &row.not_after,
                    &now,
                    &row.ca_name,
                ],
            )
            .await?;
            Ok(())
        })
    })
    .await
}

/// Deletes the identities matching `cond` and returns them.
pub(super) async fn delete_returning(
    tx: &deadpool_postgres::Transaction<'_>,
    cond: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<IdentityRow>, StoreError> {
    let rows = tx
        .query(
            &format!(
                "DELETE FROM identities WHERE {cond}
                 RETURNING address, certificate, chain, key_id, serial, not_after, ca_name"
            ),
            params,
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(IdentityRow {
                address: r.get::<_, String>(0).parse().ok()?,
                certificate: r.get(1),
                chain: r.get(2),
                key_id: r.get(3),
                serial: r.get(4),
                not_after: r.get(5),
                ca_name: r.get(6),
            })
        })
        .collect())
}

/// Withdraws the identity of `address` if it is still the one with
/// `serial`, logging `event` under the account's head lock in the same
/// transaction; whether it was.
pub(super) async fn withdraw(
    db: &PgDb,
    address: &Address,
    serial: String,
    event: Event,
    blind_key: Arc<Zeroizing<Vec<u8>>>,
    now: i64,
) -> Result<bool, StoreError> {
    let addr = address.as_str().to_string();
    db.write(move |tx| {
        let (addr, serial, key) = (addr.clone(), serial.clone(), blind_key.clone());
        Box::pin(async move {
            let mut head = super::log::lock_head(tx, &key, &addr).await?;
            let rows =
                delete_returning(tx, "address = $1 AND serial = $2", &[&addr, &serial]).await?;
            for row in &rows {
                super::log::append(tx, &mut head, row, event, now).await?;
            }
            Ok(!rows.is_empty())
        })
    })
    .await
}

pub(super) async fn get(db: &PgDb, address: &Address) -> Result<Option<IdentityRow>, StoreError> {
    let addr = address.clone();
    db.read(move |tx| {
        let addr = addr.clone();
        Box::pin(async move {
            let st = tx
                .prepare_cached(
                    "SELECT i.certificate, i.chain, i.key_id, i.serial, i.not_after, i.ca_name
                     FROM identities i
                     JOIN accounts a ON a.address = i.address AND a.enabled
                     JOIN cas ON cas.name = i.ca_name AND cas.trust_cert IS NOT NULL
                     WHERE i.address = $1",
                )
                .await?;
            Ok(tx
                .query_opt(&st, &[&addr.as_str()])
                .await?
                .map(|r| IdentityRow {
                    address: addr.clone(),
                    certificate: r.get(0),
                    chain: r.get(1),
                    key_id: r.get(2),
                    serial: r.get(3),
                    not_after: r.get(4),
                    ca_name: r.get(5),
                }))
        })
    })
    .await
}

pub(super) async fn crl(db: &PgDb, url: &str) -> Result<Option<CrlRow>, StoreError> {
    let url = url.to_string();
    db.read(move |tx| {
        let url = url.clone();
        Box::pin(async move {
            Ok(tx
                .query_opt(
                    "SELECT der, this_update, next_update FROM crls WHERE url = $1",
                    &[&url],
                )
                .await?
                .map(|r| CrlRow {
                    der: r.get(0),
                    this_update: r.get(1),
                    next_update: r.get(2),
                }))
        })
    })
    .await
}

pub(super) async fn put_crl(db: &PgDb, url: &str, row: CrlRow, now: i64) -> Result<(), StoreError> {
    let url = url.to_string();
    let row = std::sync::Arc::new(row);
    db.write(move |tx| {
        let (url, row) = (url.clone(), row.clone());
        Box::pin(async move {
            tx.execute(
                "INSERT INTO crls (url, der, this_update, next_update, fetched_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (url) DO UPDATE SET
                   der = excluded.der, this_update = excluded.this_update,
                   next_update = excluded.next_update, fetched_at = excluded.fetched_at
                 WHERE excluded.this_update >= crls.this_update",
                &[&url, &row.der, &row.this_update, &row.next_update, &now],
            )
            .await?;
            Ok(())
        })
    })
    .await
}
