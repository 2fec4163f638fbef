//! Published identities and the CRLs seen for them.

use mailid_shared::timefmt::now_unix;
use mailid_shared::Address;
use rusqlite::OptionalExtension;

use super::{Store, StoreError};

/// A published identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRow {
    pub address: Address,
    /// Leaf certificate DER.
    pub certificate: Vec<u8>,
    /// The chain as one PEM bundle.
    pub chain: String,
    /// Binary strong key ID.
    pub key_id: Vec<u8>,
    pub serial: String,
    pub not_after: i64,
}

/// The latest CRL seen at one distribution point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlRow {
    pub der: Vec<u8>,
    pub this_update: i64,
    pub next_update: Option<i64>,
}

impl Store {
    /// Publishes (or replaces) an account's identity.
    pub async fn put_identity(&self, row: IdentityRow) -> Result<(), StoreError> {
        self.db
            .write(move |c| -> Result<(), StoreError> {
                c.execute(
                    "INSERT INTO identities
                       (address, certificate, chain, key_id, serial, not_after, uploaded_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT(address) DO UPDATE SET
                       certificate = excluded.certificate, chain = excluded.chain,
                       key_id = excluded.key_id, serial = excluded.serial,
                       not_after = excluded.not_after, uploaded_at = excluded.uploaded_at",
                    (
                        row.address.as_str(),
                        &row.certificate,
                        &row.chain,
                        &row.key_id,
                        &row.serial,
                        row.not_after,
                        now_unix(),
                    ),
                )?;
                Ok(())
            })
            .await
    }

    /// The identity published for an address.
    pub async fn identity(&self, address: &Address) -> Result<Option<IdentityRow>, StoreError> {
        let addr = address.clone();
        self.db
            .read(move |c| -> Result<Option<IdentityRow>, StoreError> {
                Ok(c.query_row(
                    "SELECT certificate, chain, key_id, serial, not_after
                     FROM identities WHERE address = ?1",
                    [addr.as_str()],
                    |r| {
                        Ok(IdentityRow {
                            address: addr.clone(),
                            certificate: r.get(0)?,
                            chain: r.get(1)?,
                            key_id: r.get(2)?,
                            serial: r.get(3)?,
                            not_after: r.get(4)?,
                        })
                    },
                )
                .optional()?)
            })
            .await
    }

    /// The latest CRL kept for a distribution point URL.
    pub async fn crl(&self, url: &str) -> Result<Option<CrlRow>, StoreError> {
        let url = url.to_string();
        self.db
            .read(move |c| -> Result<Option<CrlRow>, StoreError> {
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

    /// Keeps a verified CRL unless a newer one is already kept.
    pub async fn put_crl(&self, url: &str, row: CrlRow) -> Result<(), StoreError> {
        let url = url.to_string();
        self.db
            .write(move |c| -> Result<(), StoreError> {
                c.execute(
                    "INSERT INTO crls (url, der, this_update, next_update, fetched_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(url) DO UPDATE SET
                       der = excluded.der, this_update = excluded.this_update,
                       next_update = excluded.next_update, fetched_at = excluded.fetched_at
                     WHERE excluded.this_update >= crls.this_update",
                    (&url, &row.der, row.this_update, row.next_update, now_unix()),
                )?;
                Ok(())
            })
            .await
    }
}
