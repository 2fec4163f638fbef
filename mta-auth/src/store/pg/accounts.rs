//! Accounts and registered CAs in PostgreSQL.

use mailid_shared::pg::PgDb;
use mailid_shared::translog::Event;
use mailid_shared::Address;
use zeroize::Zeroizing;

use crate::store::{AccountRow, CaRow, StoreError};

pub(super) async fn add(
    db: &PgDb,
    address: &Address,
    password_hash: String,
    totp_secret: Zeroizing<Vec<u8>>,
    now: i64,
) -> Result<(), StoreError> {
    let addr = address.as_str().to_string();
    db.write(move |tx| {
        let (addr, hash, secret) = (addr.clone(), password_hash.clone(), totp_secret.clone());
        Box::pin(async move {
            let n = tx
                .execute(
                    "INSERT INTO accounts (address, password_hash, totp_secret, created_at)
                     VALUES ($1, $2, $3, $4) ON CONFLICT (address) DO NOTHING",
                    &[&addr, &hash, &secret.as_slice(), &now],
                )
                .await?;
            if n == 0 {
                return Err(StoreError::Exists(format!("account {addr}")));
            }
            Ok(())
        })
    })
    .await
}

pub(super) async fn list(db: &PgDb, now: i64) -> Result<Vec<AccountRow>, StoreError> {
    db.read(move |tx| {
        Box::pin(async move {
            let rows = tx
                .query(
                    "SELECT a.address, a.enabled,
                       (SELECT COALESCE(MAX(k.locked_until), 0) FROM totp_keys k
                        WHERE k.address = a.address)
                     FROM accounts a ORDER BY a.address",
                    &[],
                )
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let Ok(address) = Address::parse(r.get::<_, &str>(0)) else {
                    continue;
                };
                let until: i64 = r.get(2);
                out.push(AccountRow {
                    address,
                    enabled: r.get(1),
                    locked_until: (until > now).then_some(until),
                });
            }
            Ok(out)
        })
    })
    .await
}

pub(super) async fn set_enabled(
    db: &PgDb,
    address: &Address,
    enabled: bool,
) -> Result<(), StoreError> {
    let addr = address.as_str().to_string();
    db.write(move |tx| {
        let addr = addr.clone();
        Box::pin(async move {
            let n = tx
                .execute(
                    "UPDATE accounts SET enabled = $2 WHERE address = $1",
                    &[&addr, &enabled],
                )
                .await?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("account {addr}")));
            }
            Ok(())
        })
    })
    .await
}

pub(super) async fn set_password(
    db: &PgDb,
    address: &Address,
    hash: String,
) -> Result<(), StoreError> {
    let addr = address.as_str().to_string();
    db.write(move |tx| {
        let (addr, hash) = (addr.clone(), hash.clone());
        Box::pin(async move {
            let n = tx
                .execute(
                    "UPDATE accounts SET password_hash = $2 WHERE address = $1",
                    &[&addr, &hash],
                )
                .await?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("account {addr}")));
            }
            Ok(())
        })
    })
    .await
}

pub(super) async fn login_info(
    db: &PgDb,
    address: &Address,
) -> Result<Option<(String, bool)>, StoreError> {
    let addr = address.as_str().to_string();
    db.read(move |tx| {
        let addr = addr.clone();
        Box::pin(async move {
            let st = tx
                .prepare_cached("SELECT password_hash, enabled FROM accounts WHERE address = $1")
                .await?;
            Ok(tx
                .query_opt(&st, &[&addr])
                .await?
                .map(|r| (r.get(0), r.get(1))))
        })
    })
    .await
}

pub(super) async fn is_enabled(db: &PgDb, address: &Address) -> Result<bool, StoreError> {
    let addr = address.as_str().to_string();
    db.read(move |tx| {
        let addr = addr.clone();
        Box::pin(async move {
            let st = tx
                .prepare_cached("SELECT enabled FROM accounts WHERE address = $1")
                .await?;
            Ok(tx
                .query_opt(&st, &[&addr])
                .await?
                .is_some_and(|r| r.get::<_, bool>(0)))
        })
    })
    .await
}

pub(super) async fn add_ca(
    db: &PgDb,
    name: &str,
    secret: Zeroizing<Vec<u8>>,
    trust_cert: Option<Vec<u8>>,
    now: i64,
) -> Result<(), StoreError> {
    let name = name.to_string();
    db.write(move |tx| {
        let (name, secret, trust) = (name.clone(), secret.clone(), trust_cert.clone());
        Box::pin(async move {
            let n = tx
                .execute(
                    "INSERT INTO cas (name, secret, trust_cert, created_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (name) DO NOTHING",
                    &[&name, &secret.as_slice(), &trust, &now],
                )
                .await?;
            if n == 0 {
                return Err(StoreError::Exists(format!("CA {name}")));
            }
            Ok(())
        })
    })
    .await
}

pub(super) async fn list_cas(db: &PgDb) -> Result<Vec<CaRow>, StoreError> {
    db.read(|tx| {
        Box::pin(async move {
            let rows = tx
                .query(
                    "SELECT name, trust_cert IS NOT NULL, created_at FROM cas ORDER BY name",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| CaRow {
                    name: r.get(0),
                    trusts_certificate: r.get(1),
                    created_at: mailid_shared::timefmt::rfc3339(r.get(2)),
                })
                .collect())
        })
    })
    .await
}

/// Removes the CA and withdraws its identities, each logged
/// (withdrawn-ca-removed) in the same transaction.
pub(super) async fn remove_ca(
    db: &PgDb,
    name: &str,
    blind_key: std::sync::Arc<Zeroizing<Vec<u8>>>,
    now: i64,
) -> Result<usize, StoreError> {
    let name = name.to_string();
    db.write(move |tx| {
        let (name, key) = (name.clone(), blind_key.clone());
        Box::pin(async move {
            if tx
                .execute("DELETE FROM cas WHERE name = $1", &[&name])
                .await?
                == 0
            {
                return Err(StoreError::NotFound(format!("CA {name}")));
            }
            let rows = super::identities::delete_returning(tx, "ca_name = $1", &[&name]).await?;
            for row in &rows {
                let mut head = super::log::lock_head(tx, &key, row.address.as_str()).await?;
                super::log::append(tx, &mut head, row, Event::WithdrawnCaRemoved, now).await?;
            }
            Ok(rows.len())
        })
    })
    .await
}

pub(super) async fn ca_secret(
    db: &PgDb,
    name: &str,
) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
    let name = name.to_string();
    db.read(move |tx| {
        let name = name.clone();
        Box::pin(async move {
            let st = tx
                .prepare_cached("SELECT secret FROM cas WHERE name = $1")
                .await?;
            Ok(tx
                .query_opt(&st, &[&name])
                .await?
                .map(|r| Zeroizing::new(r.get::<_, Vec<u8>>(0))))
        })
    })
    .await
}

pub(super) async fn trusted_certs(db: &PgDb) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    db.read(|tx| {
        Box::pin(async move {
            let rows = tx
                .query(
                    "SELECT name, trust_cert FROM cas WHERE trust_cert IS NOT NULL ORDER BY name",
                    &[],
                )
                .await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    })
    .await
}
