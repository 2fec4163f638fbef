//! Accounts in SQLite: address, Argon2id password hash, TOTP secret, state.

use mailid_shared::db::Db;
use mailid_shared::Address;
use rusqlite::OptionalExtension;
use zeroize::Zeroizing;

use crate::store::{AccountRow, StoreError};

pub(super) async fn add(
    db: &Db,
    address: &Address,
    password_hash: String,
    totp_secret: Zeroizing<Vec<u8>>,
    now: i64,
) -> Result<(), StoreError> {
    let addr = address.as_str().to_string();
    db.write(move |c| -> Result<(), StoreError> {
        let n = c.execute(
            "INSERT INTO accounts (address, password_hash, totp_secret, created_at)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT(address) DO NOTHING",
            (&addr, &password_hash, totp_secret.as_slice(), now),
        )?;
        if n == 0 {
            return Err(StoreError::Exists(format!("account {addr}")));
        }
        Ok(())
    })
    .await
}

pub(super) async fn list(db: &Db, now: i64) -> Result<Vec<AccountRow>, StoreError> {
    db.read(move |c| -> Result<Vec<AccountRow>, StoreError> {
        let mut st = c.prepare(
            "SELECT a.address, a.enabled,
               (SELECT COALESCE(MAX(k.locked_until), 0) FROM totp_keys k
                WHERE k.address = a.address)
             FROM accounts a ORDER BY a.address",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, bool>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (addr, enabled, until) = row?;
            let Ok(address) = Address::parse(&addr) else {
                continue;
            };
            out.push(AccountRow {
                address,
                enabled,
                locked_until: (until > now).then_some(until),
            });
        }
        Ok(out)
    })
    .await
}

pub(super) async fn set_enabled(
    db: &Db,
    address: &Address,
    enabled: bool,
) -> Result<(), StoreError> {
    let addr = address.as_str().to_string();
    db.write(move |c| -> Result<(), StoreError> {
        let n = c.execute(
            "UPDATE accounts SET enabled = ?2 WHERE address = ?1",
            (&addr, enabled),
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("account {addr}")));
        }
        Ok(())
    })
    .await
}

pub(super) async fn set_password(
    db: &Db,
    address: &Address,
    hash: String,
) -> Result<(), StoreError> {
    let addr = address.as_str().to_string();
    db.write(move |c| -> Result<(), StoreError> {
        let n = c.execute(
            "UPDATE accounts SET password_hash = ?2 WHERE address = ?1",
            (&addr, &hash),
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("account {addr}")));
        }
        Ok(())
    })
    .await
}

pub(super) async fn login_info(
    db: &Db,
    address: &Address,
) -> Result<Option<(String, bool)>, StoreError> {
    let addr = address.as_str().to_string();
    db.read(move |c| -> Result<Option<(String, bool)>, StoreError> {
        Ok(c.query_row(
            "SELECT password_hash, enabled FROM accounts WHERE address = ?1",
            [&addr],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
    })
    .await
}

pub(super) async fn is_enabled(db: &Db, address: &Address) -> Result<bool, StoreError> {
    let addr = address.as_str().to_string();
    db.read_short(move |c| -> Result<bool, StoreError> {
        Ok(c.query_row(
            "SELECT enabled FROM accounts WHERE address = ?1",
            [&addr],
            |r| r.get::<_, bool>(0),
        )
        .optional()?
        .unwrap_or(false))
    })
    .await
}
