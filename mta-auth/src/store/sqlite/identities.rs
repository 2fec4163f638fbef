//! Published identities and the CRLs seen for them, in SQLite.
//!
//! Each identity records the registered CA whose trusted certificate it
//! chains to: a lookup serves it only while that CA is registered and the
//! account is enabled.

use std::path::Path;
use std::sync::Arc;

use mailid_shared::db::Db;
use mailid_shared::translog::Event;
use mailid_shared::{pem, Address};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use zeroize::Zeroizing;

use crate::store::{CrlRow, IdentityRow, StoreError};

/// Publishes the identity and, in the same transaction, appends its log
/// entry (published, or superseded when another identity was live); the
/// identical certificate uploaded again is not logged again.
pub(super) async fn put(
    db: &Db,
    row: IdentityRow,
    blind_key: Arc<Zeroizing<Vec<u8>>>,
    now: i64,
) -> Result<(), StoreError> {
    db.write(move |c| -> Result<(), StoreError> {
        let current: Option<(String, Vec<u8>)> = c
            .prepare_cached("SELECT serial, certificate FROM identities WHERE address = ?1")?
            .query_row([row.address.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let event = match &current {
            None => Some(Event::Published),
            Some((serial, cert)) if *serial == row.serial && *cert == row.certificate => None,
            Some(_) => Some(Event::Superseded),
        };
        if let Some(event) = event {
            super::log::append(c, &blind_key, &row, event, now)?;
        }
        c.execute(
            "INSERT INTO identities
               (address, certificate, chain, key_id, serial, not_after, uploaded_at, ca_name)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(address) DO UPDATE SET
               certificate = excluded.certificate, chain = excluded.chain,
               key_id = excluded.key_id, serial = excluded.serial,
               not_after = excluded.not_after, uploaded_at = excluded.uploaded_at,
               ca_name = excluded.ca_name",
            (
                row.address.as_str(),
                &row.certificate,
                &row.chain,
                &row.key_id,
                &row.serial,
                row.not_after,
                now,
                &row.ca_name,
            ),
        )?;
        Ok(())
    })
    .await
}

/// Deletes the identities matching `cond` and returns them.
pub(super) fn delete_returning(
    c: &Connection,
    cond: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<IdentityRow>, StoreError> {
    let mut st = c.prepare(&format!(
        "DELETE FROM identities WHERE {cond}
         RETURNING address, certificate, chain, key_id, serial, not_after, ca_name"
    ))?;
    let raw = st
        .query_map(params, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get::<_, Option<String>>(6)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(raw
        .into_iter()
        .filter_map(|(a, certificate, chain, key_id, serial, not_after, ca)| {
            Some(IdentityRow {
                address: a.parse().ok()?,
                certificate,
                chain,
                key_id,
                serial,
                not_after,
                ca_name: ca.unwrap_or_default(),
            })
        })
        .collect())
}

/// Withdraws the identity of `address` if it is still the one with
/// `serial`, logging `event` in the same transaction; whether it was.
pub(super) async fn withdraw(
    db: &Db,
    address: &Address,
    serial: String,
    event: Event,
    blind_key: Arc<Zeroizing<Vec<u8>>>,
    now: i64,
) -> Result<bool, StoreError> {
    let addr = address.as_str().to_string();
    db.write(move |c| -> Result<bool, StoreError> {
        let rows = delete_returning(c, "address = ?1 AND serial = ?2", &[&addr, &serial])?;
        for row in &rows {
            super::log::append(c, &blind_key, row, event, now)?;
        }
        Ok(!rows.is_empty())
    })
    .await
}

/// Two primary-key lookups joined to the identity's.
pub(super) async fn get(db: &Db, address: &Address) -> Result<Option<IdentityRow>, StoreError> {
    let addr = address.clone();
    db.read_short(move |c| -> Result<Option<IdentityRow>, StoreError> {
        Ok(c.prepare_cached(
            "SELECT i.certificate, i.chain, i.key_id, i.serial, i.not_after, i.ca_name
             FROM identities i
             JOIN accounts a ON a.address = i.address AND a.enabled
             JOIN cas ON cas.name = i.ca_name AND cas.trust_cert IS NOT NULL
             WHERE i.address = ?1",
        )?
        .query_row([addr.as_str()], |r| {
            Ok(IdentityRow {
                address: addr.clone(),
                certificate: r.get(0)?,
                chain: r.get(1)?,
                key_id: r.get(2)?,
                serial: r.get(3)?,
                not_after: r.get(4)?,
                ca_name: r.get(5)?,
            })
        })
        .optional()?)
    })
    .await
}

pub(super) async fn crl(db: &Db, url: &str) -> Result<Option<CrlRow>, StoreError> {
    let url = url.to_string();
    db.read(move |c| -> Result<Option<CrlRow>, StoreError> {
        Ok(c.query_row(
            "SELECT der, this_update, next_update FROM crls WHERE url = ?1",
            [&url],
            |r| {
                Ok(CrlRow {
                    der: r.get(0)?,
                    this_update: r.get(1)?,
                    next_update: r.get(2)?,
                })
            },
        )
        .optional()?)
    })
    .await
}

pub(super) async fn put_crl(db: &Db, url: &str, row: CrlRow, now: i64) -> Result<(), StoreError> {
    let url = url.to_string();
    db.write(move |c| -> Result<(), StoreError> {
        c.execute(
            "INSERT INTO crls (url, der, this_update, next_update, fetched_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(url) DO UPDATE SET
               der = excluded.der, this_update = excluded.this_update,
               next_update = excluded.next_update, fetched_at = excluded.fetched_at
             WHERE excluded.this_update >= crls.this_update",
            (&url, &row.der, row.this_update, row.next_update, now),
        )?;
        Ok(())
    })
    .await
}

/// Records, for identities published before the schema knew their CA
/// (`ca_name` NULL), the registered CA whose trusted certificate ends their
/// chain; one that chains to no registered CA gets `''` and is never served
/// again. Runs at open on its own connection; touches nothing once done.
pub(super) fn fill_ca_names(path: &Path) -> Result<(), StoreError> {
    let mut conn = mailid_shared::db::connect(path)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let legacy = pairs::<String, String>(
        &tx,
        "SELECT address, chain FROM identities WHERE ca_name IS NULL",
    )?;
    if !legacy.is_empty() {
        let cas = pairs::<String, Vec<u8>>(
            &tx,
            "SELECT name, trust_cert FROM cas WHERE trust_cert IS NOT NULL",
        )?;
        for (address, chain) in legacy {
            let anchor = pem::decode_chain(&chain, "CERTIFICATE")
                .ok()
                .and_then(|ders| ders.into_iter().last());
            let name = anchor
                .and_then(|a| cas.iter().find(|(_, t)| *t == a))
                .map(|(n, _)| n.as_str())
                .unwrap_or("");
            tx.execute(
                "UPDATE identities SET ca_name = ?2 WHERE address = ?1",
                (&address, name),
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Every row of a two-column query.
fn pairs<A, B>(c: &Connection, sql: &str) -> rusqlite::Result<Vec<(A, B)>>
where
    A: rusqlite::types::FromSql,
    B: rusqlite::types::FromSql,
{
    let mut st = c.prepare(sql)?;
    let out = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect();
    out
}
