//! CAs registered at this MTA: name, credential secret, trusted certificate.

use mailid_shared::timefmt::now_unix;
use rusqlite::OptionalExtension;
use zeroize::Zeroizing;

use super::{Store, StoreError};

/// One CA as `ca list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CaRow {
    pub name: String,
    /// Whether a trusted CA certificate is registered for identity upload.
    pub trusts_certificate: bool,
    pub created_at: String,
}

impl Store {
    /// Registers a CA; `Exists` if the name is taken.
    pub async fn add_ca(
        &self,
        name: &str,
        secret: Zeroizing<Vec<u8>>,
        trust_cert: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let name = name.to_string();
        self.db
            .write(move |c| -> Result<(), StoreError> {
                let n = c.execute(
                    "INSERT INTO cas (name, secret, trust_cert, created_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(name) DO NOTHING",
                    (&name, secret.as_slice(), trust_cert, now_unix()),
                )?;
                if n == 0 {
                    return Err(StoreError::Exists(format!("CA {name}")));
                }
                Ok(())
            })
            .await
    }

    /// Every registered CA, by name.
    pub async fn list_cas(&self) -> Result<Vec<CaRow>, StoreError> {
        self.db
            .read(|c| -> Result<Vec<CaRow>, StoreError> {
                let mut st = c.prepare(
                    "SELECT name, trust_cert IS NOT NULL, created_at FROM cas ORDER BY name",
                )?;
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

    /// Removes a CA and, in the same transaction, withdraws the identities
    /// that chain to its trusted certificate; returns how many were
    /// withdrawn. `NotFound` (and nothing changes) if there is no such CA.
    pub async fn remove_ca(&self, name: &str) -> Result<usize, StoreError> {
        let name = name.to_string();
        self.db
            .write(move |c| -> Result<usize, StoreError> {
                if c.execute("DELETE FROM cas WHERE name = ?1", [&name])? == 0 {
                    return Err(StoreError::NotFound(format!("CA {name}")));
                }
                Ok(c.execute("DELETE FROM identities WHERE ca_name = ?1", [&name])?)
            })
            .await
    }

    /// The credential secret of a CA, if it is registered.
    pub async fn ca_secret(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let name = name.to_string();
        self.db
            .read(move |c| -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
                Ok(c.prepare_cached("SELECT secret FROM cas WHERE name = ?1")?
                    .query_row([&name], |r| r.get::<_, Vec<u8>>(0))
                    .optional()?
                    .map(Zeroizing::new))
            })
            .await
    }

    /// The trusted CA certificates (name, DER) for identity upload.
    pub async fn trusted_certs(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.db
            .read(|c| -> Result<Vec<(String, Vec<u8>)>, StoreError> {
                let mut st = c.prepare(
                    "SELECT name, trust_cert FROM cas WHERE trust_cert IS NOT NULL ORDER BY name",
                )?;
                let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
    }
}
