//! Copying a SQLite store into an empty PostgreSQL one (`db migrate`):
//! every row of every table, in pages (never the whole table in memory),
//! in one PostgreSQL transaction, so a failed copy leaves the target empty.

use rusqlite::params;

use super::{Backends, Store, StoreError};

/// Rows per page.
const PAGE: i64 = 1000;

/// Row counts of a store, compared after a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub certificates: i64,
    pub revoked: i64,
    pub compromised_keys: i64,
    pub routes: i64,
    /// The last CRL number allocated.
    pub crl_number: i64,
}

const COUNTS: &str = "SELECT (SELECT COUNT(*) FROM certificates),
        (SELECT COUNT(*) FROM certificates WHERE revoked_at IS NOT NULL),
        (SELECT COUNT(*) FROM compromised_keys),
        (SELECT COUNT(*) FROM mta_routes),
        (SELECT number FROM crl_state WHERE id = 1)";

/// One page of certificates, as columns.
#[derive(Default)]
struct CertPage {
    serial: Vec<String>,
    account: Vec<String>,
    key_id: Vec<String>,
    not_before: Vec<i64>,
    not_after: Vec<i64>,
    issued_at: Vec<i64>,
    der: Vec<Vec<u8>>,
    revoked_at: Vec<Option<i64>>,
    reason: Vec<Option<i64>>,
    active: Vec<bool>,
}

impl Store {
    /// Row counts and the CRL number.
    pub fn counts_blocking(&self) -> Result<Counts, StoreError> {
        match &self.backend {
            Backends::Sqlite(b) => b.db.read_blocking(|c| {
                Ok(c.query_row(COUNTS, [], |r| {
                    Ok(Counts {
                        certificates: r.get(0)?,
                        revoked: r.get(1)?,
                        compromised_keys: r.get(2)?,
                        routes: r.get(3)?,
                        crl_number: r.get(4)?,
                    })
                })?)
            }),
            Backends::Pg(b) => b.db.block_on(b.db.read(|tx| {
                Box::pin(async move {
                    let r = tx.query_one(COUNTS, &[]).await?;
                    Ok(Counts {
                        certificates: r.try_get(0)?,
                        revoked: r.try_get(1)?,
                        compromised_keys: r.try_get(2)?,
                        routes: r.try_get(3)?,
                        crl_number: r.try_get(4)?,
                    })
                })
            })),
        }
    }

    /// Copies every row of this SQLite store into `target`, an empty
    /// PostgreSQL store, in one transaction there.
    pub fn copy_into_blocking(&self, target: &Store) -> Result<(), StoreError> {
        let (Backends::Sqlite(src), Backends::Pg(dst)) = (&self.backend, &target.backend) else {
            return Err(StoreError::Corrupt(
                "db migrate copies a SQLite store into a PostgreSQL one".into(),
            ));
        };
        let src = &src.db;
        dst.db.block_on(async {
            let mut client = dst.db.client().await?;
            let tx = client.transaction().await?;
            // Certificates, in rowid order (the PostgreSQL sequence keeps
            // their order for "newest first").
            let mut after = i64::MIN;
            loop {
                let (page, last) = src.read_blocking(|c| -> Result<_, StoreError> {
                    let mut stmt = c.prepare_cached(
                        "SELECT rowid, serial, account, key_id, not_before, not_after, issued_at,
                                der, revoked_at, reason, active
                         FROM certificates WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
                    )?;
                    let mut rows = stmt.query(params![after, PAGE])?;
                    let mut p = CertPage::default();
                    let mut last = None;
                    while let Some(r) = rows.next()? {
                        last = Some(r.get::<_, i64>(0)?);
                        p.serial.push(r.get(1)?);
                        p.account.push(r.get(2)?);
                        p.key_id.push(r.get(3)?);
                        p.not_before.push(r.get(4)?);
                        p.not_after.push(r.get(5)?);
                        p.issued_at.push(r.get(6)?);
                        p.der.push(r.get(7)?);
                        p.revoked_at.push(r.get(8)?);
                        p.reason.push(r.get(9)?);
                        p.active.push(r.get::<_, i64>(10)? != 0);
                    }
                    Ok((p, last))
                })?;
                let Some(last) = last else { break };
                after = last;
                tx.execute(
                    "INSERT INTO certificates (serial, account, key_id, not_before, not_after,
                         issued_at, der, revoked_at, reason, active)
                     SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[],
                         $5::BIGINT[], $6::BIGINT[], $7::BYTEA[], $8::BIGINT[], $9::BIGINT[],
                         $10::BOOLEAN[])",
                    &[
                        &page.serial,
                        &page.account,
                        &page.key_id,
                        &page.not_before,
                        &page.not_after,
                        &page.issued_at,
                        &page.der,
                        &page.revoked_at,
                        &page.reason,
                        &page.active,
                    ],
                )
                .await?;
            }
            // The small tables whole.
            let routes = src.read_blocking(|c| -> Result<Vec<[String; 4]>, StoreError> {
                let mut stmt =
                    c.prepare("SELECT domain, url, ca_name, credential FROM mta_routes")?;
                let rows =
                    stmt.query_map([], |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?]))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })?;
            for [domain, url, ca_name, credential] in &routes {
                tx.execute(
                    "INSERT INTO mta_routes (domain, url, ca_name, credential)
                     VALUES ($1, $2, $3, $4)",
                    &[domain, url, ca_name, credential],
                )
                .await?;
            }
            let keys =
                src.read_blocking(|c| -> Result<Vec<(String, String, i64)>, StoreError> {
                    let mut stmt = c.prepare("SELECT key_id, serial, at FROM compromised_keys")?;
                    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                    Ok(rows.collect::<Result<_, _>>()?)
                })?;
            for (key_id, serial, at) in &keys {
                tx.execute(
                    "INSERT INTO compromised_keys (key_id, serial, at) VALUES ($1, $2, $3)",
                    &[key_id, serial, at],
                )
                .await?;
            }
            let state = self.crl_state_blocking()?;
            tx.execute(
                "UPDATE crl_state SET number = $1, this_update = $2, next_update = $3,
                     covered = $4, revocations = $5 WHERE id = 1",
                &[
                    &state.number,
                    &state.this_update,
                    &state.next_update,
                    &state.covered,
                    &state.revocations,
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }
}
