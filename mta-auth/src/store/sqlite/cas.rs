//! CAs registered at this MTA, in SQLite: name, credential secret, trusted
//! certificate.

use mailid_shared::db::Db;
use mailid_shared::translog::Event;
use rusqlite::OptionalExtension;
use zeroize::Zeroizing;

use crate::store::{CaRow, StoreError};

pub(super) async fn add(
    db: &Db,
    name: &str,
    secret: Zeroizing<Vec<u8>>,
    trust_cert: Option<Vec<u8>>,
    now: i64,
) -> Result<(), StoreError> {
    let name = name.to_string();
    db.write(move |c| -> Result<(), StoreError> {
        let n = c.execute(
            "INSERT INTO cas (name, secret, trust_cert, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO NOTHING",
            (&name, secret.as_slice(), trust_cert, now),
        )?;
        if n == 0 {
            return Err(StoreError::Exists(format!("CA {name}")));
        }
        Ok(())
    })
    .await
}

pub(super) async fn list(db: &Db) -> Result<Vec<CaRow>, StoreError> {
    db.read(|c| -> Result<Vec<CaRow>, StoreError> {
        let mut st =
            c.prepare("SELECT name, trust_cert IS NOT NULL, created_at FROM cas ORDER BY name")?;
        let rows = st.query_map([], |r| {
            Ok(CaRow {
                name: r.get(0)?,
                trusts_certificate: r.get(1)?,
                created_at: mailid_shared::timefmt::rfc3339(r.get(2)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    })
    .await
}

/// Removes the CA and withdraws its identities, each logged
/// (withdrawn-ca-removed) in the same transaction.
pub(super) async fn remove(
    db: &Db,
    name: &str,
    blind_key: std::sync::Arc<Zeroizing<Vec<u8>>>,
    now: i64,
) -> Result<usize, StoreError> {
    let name = name.to_string();
    db.write(move |c| -> Result<usize, StoreError> {
        if c.execute("DELETE FROM cas WHERE name = ?1", [&name])? == 0 {
            return Err(StoreError::NotFound(format!("CA {name}")));
        }
        let rows = super::identities::delete_returning(c, "ca_name = ?1", &[&name])?;
        for row in &rows {
            super::log::append(c, &blind_key, row, Event::WithdrawnCaRemoved, now)?;
        }
        Ok(rows.len())
    })
    .await
}

pub(super) async fn secret(db: &Db, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
    let name = name.to_string();
    db.read(move |c| -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        Ok(c.prepare_cached("SELECT secret FROM cas WHERE name = ?1")?
            .query_row([&name], |r| r.get::<_, Vec<u8>>(0))
            .optional()?
            .map(Zeroizing::new))
    })
    .await
}

pub(super) async fn trusted_certs(db: &Db) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    db.read(|c| -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut st = c.prepare(
            "SELECT name, trust_cert FROM cas WHERE trust_cert IS NOT NULL ORDER BY name",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    })
    .await
}
