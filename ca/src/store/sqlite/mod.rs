//! The SQLite backend (the embedded default): today's schema and SQL behind
//! [`Backend`]. Every write goes through the single writer of [`Db`], so the
//! revoke-then-insert of an enrollment is one serialised transaction; the
//! partial unique index `one_valid_identity` is the backstop.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use mailid_shared::db::{Db, OpenMode};
use mailid_shared::protocol::RevocationReason;
use mailid_shared::{Address, KeyId, Serial};

use super::rules::NextCrl;
use super::{
    decode_serial, finish, Backend, CertRow, CrlEntryFn, CrlSignals, CrlState, MtaRoute, NewCert,
    PublishedCrl, RawCert, RevokeOutcome, RouteAndKey, StoreError,
};

pub(crate) mod txn;
use txn::{insert_superseding_in, next_crl_in, revoke_one};

pub(crate) const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE certificates (
    serial      TEXT PRIMARY KEY,
    account     TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    not_before  INTEGER NOT NULL,
    not_after   INTEGER NOT NULL,
    issued_at   INTEGER NOT NULL,
    der         BLOB NOT NULL,
    revoked_at  INTEGER,
    reason      INTEGER,
    active      INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    CHECK (revoked_at IS NULL OR active = 0)
);
CREATE UNIQUE INDEX one_valid_identity ON certificates(account) WHERE active = 1;
CREATE INDEX certificates_by_account ON certificates(account, issued_at);
CREATE INDEX certificates_revoked ON certificates(not_after) WHERE revoked_at IS NOT NULL;
CREATE INDEX certificates_by_issued ON certificates(issued_at);
CREATE TABLE mta_routes (
    domain      TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    ca_name     TEXT NOT NULL,
    credential  TEXT NOT NULL
);
CREATE TABLE crl_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    number       INTEGER NOT NULL,
    this_update  INTEGER,
    next_update  INTEGER,
    covered      INTEGER NOT NULL,
    revocations  INTEGER NOT NULL
);
INSERT INTO crl_state (id, number, covered, revocations) VALUES (1, 0, -1, 0);
",
    "
-- The CRL is read from this index alone, already in order: signing a CRL
-- of a million entries reads no certificate row and sorts nothing.
DROP INDEX certificates_revoked;
CREATE INDEX certificates_crl ON certificates(revoked_at, serial, not_after, reason)
    WHERE revoked_at IS NOT NULL;
",
    "
-- Keys reported compromised (a revocation with reason keyCompromise): never
-- certified again (S/MIME BR 6.1.1.3), and every other certificate for the
-- key is revoked with it, found through certificates_by_key.
CREATE INDEX certificates_by_key ON certificates(key_id);
CREATE TABLE compromised_keys (
    key_id  TEXT PRIMARY KEY,
    serial  TEXT NOT NULL,
    at      INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO compromised_keys (key_id, serial, at)
    SELECT key_id, serial, revoked_at FROM certificates WHERE reason = 1;
",
];

const CERT_COLUMNS: &str =
    "serial, account, key_id, not_before, not_after, issued_at, der, revoked_at, reason";

fn cert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(RawCert, Vec<u8>)> {
    Ok((
        RawCert {
            serial: r.get(0)?,
            account: r.get(1)?,
            key_id: r.get(2)?,
            not_before: r.get(3)?,
            not_after: r.get(4)?,
            issued_at: r.get(5)?,
            revoked_at: r.get(7)?,
            reason: r.get(8)?,
        },
        r.get(6)?,
    ))
}

fn query_certs(
    conn: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<CertRow>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(args, cert_row)?;
    let mut out = Vec::new();
    for r in rows {
        let (raw, der) = r?;
        out.push(finish(raw, der)?);
    }
    Ok(out)
}

fn route_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MtaRoute> {
    Ok(MtaRoute {
        domain: r.get(0)?,
        url: r.get(1)?,
        ca_name: r.get(2)?,
        credential: r.get(3)?,
    })
}

/// The SQLite database of a data directory.
#[derive(Clone)]
pub(crate) struct Sqlite {
    pub(crate) db: Db,
}

impl Sqlite {
    /// Opens and migrates `path`; only [`OpenMode::Create`] (`init`)
    /// creates it.
    pub(crate) fn open(path: &Path, mode: OpenMode) -> Result<Sqlite, StoreError> {
        Ok(Sqlite {
            db: Db::open(path, MIGRATIONS, mode)?,
        })
    }
}

impl Backend for Sqlite {
    async fn insert_superseding(&self, cert: NewCert, now: i64) -> Result<Vec<Serial>, StoreError> {
        self.db
            .write(move |conn| insert_superseding_in(conn, &cert, now))
            .await
    }

    fn insert_superseding_blocking(
        &self,
        cert: NewCert,
        now: i64,
    ) -> Result<Vec<Serial>, StoreError> {
        self.db
            .write_blocking(move |conn| insert_superseding_in(conn, &cert, now))
    }

    async fn revoke(
        &self,
        serial: Serial,
        reason: RevocationReason,
        now: i64,
    ) -> Result<RevokeOutcome, StoreError> {
        self.db
            .write(move |c| revoke_one(c, &serial, reason, now))
            .await
    }

    fn revoke_blocking(
        &self,
        serial: Serial,
        reason: RevocationReason,
        now: i64,
    ) -> Result<RevokeOutcome, StoreError> {
        self.db
            .write_blocking(move |c| revoke_one(c, &serial, reason, now))
    }

    fn get_blocking(&self, serial: &Serial) -> Result<Option<CertRow>, StoreError> {
        let s = serial.as_str().to_string();
        self.db.read_blocking(move |c| {
            let sql = format!("SELECT {CERT_COLUMNS} FROM certificates WHERE serial = ?1");
            Ok(query_certs(c, &sql, &[&s])?.into_iter().next())
        })
    }

    async fn get(&self, serial: &Serial) -> Result<Option<CertRow>, StoreError> {
        let s = serial.as_str().to_string();
        self.db
            .read_short(move |c| {
                let sql = format!("SELECT {CERT_COLUMNS} FROM certificates WHERE serial = ?1");
                Ok(query_certs(c, &sql, &[&s])?.into_iter().next())
            })
            .await
    }

    async fn by_account(&self, account: &Address, limit: u32) -> Result<Vec<CertRow>, StoreError> {
        let a = account.as_str().to_string();
        self.db
            .read(move |c| {
                let sql = format!(
                    "SELECT {CERT_COLUMNS} FROM certificates WHERE account = ?1
                     ORDER BY issued_at DESC, rowid DESC LIMIT ?2"
                );
                query_certs(c, &sql, &[&a, &limit])
            })
            .await
    }

    fn list_blocking(&self, account: Option<&Address>) -> Result<Vec<CertRow>, StoreError> {
        let a = account.map(|a| a.as_str().to_string());
        self.db.read_blocking(move |c| {
            let sql = format!(
                "SELECT {CERT_COLUMNS} FROM certificates WHERE (?1 IS NULL OR account = ?1)
                 ORDER BY issued_at DESC, rowid DESC"
            );
            query_certs(c, &sql, &[&a])
        })
    }

    fn put_route_blocking(&self, route: MtaRoute) -> Result<(), StoreError> {
        self.db.write_blocking(move |c| {
            c.execute(
                "INSERT INTO mta_routes (domain, url, ca_name, credential) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(domain) DO UPDATE SET url = ?2, ca_name = ?3, credential = ?4",
                params![route.domain, route.url, route.ca_name, route.credential],
            )?;
            Ok(())
        })
    }

    fn remove_route_blocking(&self, domain: &str) -> Result<bool, StoreError> {
        let d = domain.to_ascii_lowercase();
        self.db.write_blocking(move |c| {
            Ok(c.execute("DELETE FROM mta_routes WHERE domain = ?1", [d])? > 0)
        })
    }

    fn routes_blocking(&self) -> Result<Vec<MtaRoute>, StoreError> {
        self.db.read_blocking(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT domain, url, ca_name, credential FROM mta_routes ORDER BY domain",
            )?;
            let rows = stmt.query_map([], route_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    async fn route_and_key(&self, domain: &str, key_id: &KeyId) -> Result<RouteAndKey, StoreError> {
        let d = domain.to_ascii_lowercase();
        let k = key_id.to_string();
        self.db
            .read_short(move |c| {
                let key_compromised = txn::is_compromised(c, &k)?;
                let mut stmt = c.prepare_cached(
                    "SELECT domain, url, ca_name, credential FROM mta_routes WHERE domain = ?1",
                )?;
                let route = stmt.query_row([d], route_row).optional()?;
                Ok(RouteAndKey {
                    route,
                    key_compromised,
                })
            })
            .await
    }

    fn crl_state_blocking(&self) -> Result<CrlState, StoreError> {
        self.db.read_blocking(crl_state_in)
    }

    async fn crl_state(&self) -> Result<CrlState, StoreError> {
        self.db.read(crl_state_in).await
    }

    fn next_crl_blocking(
        &self,
        now_ns: i64,
        times: (i64, i64),
        floor: i64,
    ) -> Result<NextCrl, StoreError> {
        self.db
            .write_blocking(move |c| next_crl_in(c, now_ns, times, floor))
    }

    fn for_each_crl_entry_blocking(
        &self,
        after: i64,
        until: i64,
        f: CrlEntryFn<'_>,
    ) -> anyhow::Result<()> {
        self.db.read_blocking(move |c| -> anyhow::Result<()> {
            let mut stmt = c.prepare_cached(
                "SELECT serial, revoked_at, reason FROM certificates
                 WHERE revoked_at IS NOT NULL AND revoked_at <= ?2 AND not_after > ?1
                 ORDER BY revoked_at, serial",
            )?;
            let mut rows = stmt.query([after, until])?;
            let mut buf = [0u8; 32];
            while let Some(row) = rows.next()? {
                let text = row.get_ref(0)?.as_bytes()?;
                let serial = decode_serial(text, &mut buf).ok_or_else(|| {
                    StoreError::Corrupt(format!("serial {}", String::from_utf8_lossy(text)))
                })?;
                let reason = u8::try_from(row.get::<_, i64>(2)?)
                    .ok()
                    .and_then(RevocationReason::from_code)
                    .unwrap_or(RevocationReason::Unspecified);
                f(serial, row.get(1)?, reason)?;
            }
            Ok(())
        })
    }

    fn is_empty_blocking(&self) -> Result<bool, StoreError> {
        self.db.read_blocking(|c| {
            Ok(c.query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM certificates)
                AND NOT EXISTS (SELECT 1 FROM mta_routes)
                AND NOT EXISTS (SELECT 1 FROM compromised_keys)
                AND (SELECT number FROM crl_state WHERE id = 1) = 0",
                [],
                |r| r.get(0),
            )?)
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn crl_lease(
        &self,
        _holder: &str,
        _held: Option<i64>,
        _reclaim: bool,
    ) -> Result<Option<i64>, StoreError> {
        Ok(Some(0))
    }

    async fn release_crl_lease(&self, _holder: &str, _epoch: i64) -> Result<(), StoreError> {
        Ok(())
    }

    async fn publish_crl(
        &self,
        _holder: &str,
        _epoch: i64,
        _crl: &PublishedCrl,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn latest_crl(&self, _above: i64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }

    fn crl_signals(&self) -> Option<CrlSignals> {
        None
    }
}

fn crl_state_in(c: &Connection) -> Result<CrlState, StoreError> {
    Ok(c.query_row(
        "SELECT number, this_update, next_update, covered, revocations FROM crl_state WHERE id = 1",
        [],
        |r| {
            Ok(CrlState {
                number: r.get(0)?,
                this_update: r.get(1)?,
                next_update: r.get(2)?,
                covered: r.get(3)?,
                revocations: r.get(4)?,
            })
        },
    )?)
}
