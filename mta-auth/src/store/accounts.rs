//! Accounts: address, Argon2id password hash, TOTP secret, state.

use mailid_shared::timefmt::now_unix;
use mailid_shared::Address;
use rusqlite::OptionalExtension;
use zeroize::Zeroizing;

use super::{Store, StoreError};

/// One account as `account list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AccountRow {
    pub address: Address,
    pub enabled: bool,
    /// Unix time the latest current lockout of the account's keys ends, if
    /// one of its keys is locked (lockouts are per (account, key)); in JSON
    /// an RFC 3339 UTC time, or null.
    #[serde(serialize_with = "rfc3339_or_null")]
    pub locked_until: Option<i64>,
}

/// Serialises Unix seconds as RFC 3339 UTC text (SPEC §3), `None` as null.
fn rfc3339_or_null<S: serde::Serializer>(t: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&mailid_shared::timefmt::rfc3339(*t)),
        None => s.serialize_none(),
    }
}

impl Store {
    /// Adds an account; `Exists` if the address is taken.
    pub async fn add_account(
        &self,
        address: &Address,
        password_hash: String,
        totp_secret: Zeroizing<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let addr = address.as_str().to_string();
        self.db
            .write(move |c| -> Result<(), StoreError> {
                let n = c.execute(
                    "INSERT INTO accounts (address, password_hash, totp_secret, created_at)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT(address) DO NOTHING",
                    (&addr, &password_hash, totp_secret.as_slice(), now_unix()),
                )?;
                if n == 0 {
                    return Err(StoreError::Exists(format!("account {addr}")));
                }
                Ok(())
            })
            .await
    }

    /// Every account, ordered by address.
    pub async fn list_accounts(&self) -> Result<Vec<AccountRow>, StoreError> {
        let now = now_unix();
        self.db
            .read(move |c| -> Result<Vec<AccountRow>, StoreError> {
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

    /// Enables or disables an account; `NotFound` if there is none.
    pub async fn set_enabled(&self, address: &Address, enabled: bool) -> Result<(), StoreError> {
        let addr = address.as_str().to_string();
        self.db
            .write(move |c| -> Result<(), StoreError> {
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

    /// Replaces an account's password hash; `NotFound` if there is none.
    pub async fn set_password(&self, address: &Address, hash: String) -> Result<(), StoreError> {
        let addr = address.as_str().to_string();
        self.db
            .write(move |c| -> Result<(), StoreError> {
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

    /// Password hash and enabled flag, for a login.
    pub async fn login_info(
        &self,
        address: &Address,
    ) -> Result<Option<(String, bool)>, StoreError> {
        let addr = address.as_str().to_string();
        self.db
            .read(move |c| -> Result<Option<(String, bool)>, StoreError> {
                Ok(c.query_row(
                    "SELECT password_hash, enabled FROM accounts WHERE address = ?1",
                    [&addr],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?)
            })
            .await
    }

    /// Whether the account exists and is enabled.
    pub async fn is_enabled(&self, address: &Address) -> Result<bool, StoreError> {
        let addr = address.as_str().to_string();
        self.db
            .read(move |c| -> Result<bool, StoreError> {
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
}
