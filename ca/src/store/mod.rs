//! SQLite storage: certificates, the one-identity rule, MTA routes and the
//! CRL state.
//!
//! The partial unique index `one_valid_identity` makes two active
//! certificates for one account impossible in the database itself; every
//! write goes through the single writer of [`Db`], so the revoke-then-insert
//! of an enrollment is one serialised transaction.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use mailid_shared::db::{Db, DbError, OpenMode};
use mailid_shared::protocol::{CertStatus, CertificateInfo, RevocationReason};
use mailid_shared::timefmt::rfc3339;
use mailid_shared::{Address, KeyId, Serial};

mod txn;
use txn::{insert_superseding_in, next_crl_in, revoke_one};
pub use txn::{NextCrl, NANOS};

const MIGRATIONS: &[&str] = &[
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

/// A storage failure or a refused write.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The key was revoked for key compromise; it is never certified again.
    #[error("this key was revoked for key compromise and cannot be certified again")]
    CompromisedKey,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(DbError::Sqlite(e))
    }
}

/// A stored certificate.
#[derive(Debug, Clone)]
pub struct CertRow {
    pub serial: Serial,
    pub account: Address,
    pub key_id: KeyId,
    pub not_before: i64,
    pub not_after: i64,
    pub issued_at: i64,
    pub der: Vec<u8>,
    pub revoked_at: Option<i64>,
    pub reason: Option<RevocationReason>,
}

impl CertRow {
    /// Status at time `now`.
    pub fn status(&self, now: i64) -> CertStatus {
        if self.revoked_at.is_some() {
            CertStatus::Revoked
        } else if now > self.not_after {
            CertStatus::Expired
        } else {
            CertStatus::Valid
        }
    }

    /// The public view of this certificate at time `now`.
    pub fn info(&self, now: i64) -> CertificateInfo {
        CertificateInfo {
            serial: self.serial.clone(),
            account: self.account.clone(),
            key_id: self.key_id.clone(),
            status: self.status(now),
            not_before: rfc3339(self.not_before),
            not_after: rfc3339(self.not_after),
            revoked_at: self.revoked_at.map(rfc3339),
            reason: self.reason,
            certificate: mailid_shared::pem::encode("CERTIFICATE", &self.der),
        }
    }
}

/// The two facts an enrollment's route lookup reads together.
#[derive(Debug, Clone)]
pub struct RouteAndKey {
    /// The domain's MTA route, if this CA serves the domain.
    pub route: Option<MtaRoute>,
    /// Whether the key was revoked for key compromise (never certified again).
    pub key_compromised: bool,
}

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked { at: i64 },
    NotFound,
    AlreadyRevoked,
    Expired,
}

/// A domain's MTA auth service.
#[derive(Debug, Clone)]
pub struct MtaRoute {
    pub domain: String,
    pub url: String,
    pub ca_name: String,
    /// The credential text (a secret; never logged).
    pub credential: String,
}

/// One CRL entry.
#[derive(Debug, Clone)]
pub struct CrlEntry {
    pub serial: Serial,
    pub revoked_at: i64,
    pub reason: RevocationReason,
}

/// The persistent CRL state.
#[derive(Debug, Clone, Copy)]
pub struct CrlState {
    pub number: i64,
    pub this_update: Option<i64>,
    pub next_update: Option<i64>,
    /// The revocation counter the latest CRL covered.
    pub covered: i64,
    /// Revocations made so far (a counter other processes' writes bump too).
    pub revocations: i64,
}

const CERT_COLUMNS: &str =
    "serial, account, key_id, not_before, not_after, issued_at, der, revoked_at, reason";

fn cert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(CertRowRaw, Vec<u8>)> {
    Ok((
        CertRowRaw {
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

struct CertRowRaw {
    serial: String,
    account: String,
    key_id: String,
    not_before: i64,
    not_after: i64,
    issued_at: i64,
    revoked_at: Option<i64>,
    reason: Option<i64>,
}

fn finish(raw: CertRowRaw, der: Vec<u8>) -> Result<CertRow, StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("{what} of {}", raw.serial));
    Ok(CertRow {
        serial: raw.serial.parse().map_err(|_| bad("serial"))?,
        account: Address::parse(&raw.account).map_err(|_| bad("account"))?,
        key_id: raw.key_id.parse().map_err(|_| bad("key ID"))?,
        not_before: raw.not_before,
        not_after: raw.not_after,
        issued_at: raw.issued_at,
        der,
        revoked_at: raw.revoked_at,
        reason: match raw.reason {
            None => None,
            Some(c) => Some(
                u8::try_from(c)
                    .ok()
                    .and_then(RevocationReason::from_code)
                    .ok_or_else(|| bad("reason"))?,
            ),
        },
    })
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

/// A certificate about to be stored.
#[derive(Debug, Clone)]
pub struct NewCert {
    pub serial: Serial,
    pub account: Address,
    pub key_id: KeyId,
    pub not_before: i64,
    pub not_after: i64,
    pub der: Vec<u8>,
}

/// The CA database.
#[derive(Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// Opens and migrates `path`; only [`OpenMode::Create`] (`init`)
    /// creates it.
    pub fn open(path: &Path, mode: OpenMode) -> Result<Store, StoreError> {
        Ok(Store {
            db: Db::open(path, MIGRATIONS, mode)?,
        })
    }

    /// Revokes every valid identity of the account (reason `superseded`),
    /// retires expired ones, and stores `cert` as the account's identity, in
    /// one transaction that is durable when this returns. Returns the
    /// serials it revoked.
    pub async fn insert_superseding(
        &self,
        cert: NewCert,
        now: i64,
    ) -> Result<Vec<Serial>, StoreError> {
        self.db
            .write(move |conn| insert_superseding_in(conn, &cert, now))
            .await
    }

    /// [`Store::insert_superseding`] for synchronous callers.
    pub fn insert_superseding_blocking(
        &self,
        cert: NewCert,
        now: i64,
    ) -> Result<Vec<Serial>, StoreError> {
        self.db
            .write_blocking(move |conn| insert_superseding_in(conn, &cert, now))
    }

    /// Revokes one certificate if it is valid.
    pub async fn revoke(
        &self,
        serial: Serial,
        reason: RevocationReason,
        now: i64,
    ) -> Result<RevokeOutcome, StoreError> {
        self.db
            .write(move |c| revoke_one(c, &serial, reason, now))
            .await
    }

    /// [`Store::revoke`] for synchronous callers (the operator CLI).
    pub fn revoke_blocking(
        &self,
        serial: Serial,
        reason: RevocationReason,
        now: i64,
    ) -> Result<RevokeOutcome, StoreError> {
        self.db
            .write_blocking(move |c| revoke_one(c, &serial, reason, now))
    }

    /// One certificate by serial.
    pub fn get_blocking(&self, serial: &Serial) -> Result<Option<CertRow>, StoreError> {
        let s = serial.as_str().to_string();
        self.db.read_blocking(move |c| {
            let sql = format!("SELECT {CERT_COLUMNS} FROM certificates WHERE serial = ?1");
            Ok(query_certs(c, &sql, &[&s])?.into_iter().next())
        })
    }

    /// One certificate by serial.
    pub async fn get(&self, serial: &Serial) -> Result<Option<CertRow>, StoreError> {
        let store = self.clone();
        let serial = serial.clone();
        run_blocking(move || store.get_blocking(&serial)).await
    }

    /// The newest `limit` certificates of an account, newest first.
    pub async fn by_account(
        &self,
        account: &Address,
        limit: u32,
    ) -> Result<Vec<CertRow>, StoreError> {
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

    /// Certificates for `list`, newest first, filtered by account and status.
    pub fn list_blocking(
        &self,
        account: Option<&Address>,
        status: Option<CertStatus>,
        now: i64,
    ) -> Result<Vec<CertRow>, StoreError> {
        let a = account.map(|a| a.as_str().to_string());
        self.db.read_blocking(move |c| {
            let sql = format!(
                "SELECT {CERT_COLUMNS} FROM certificates WHERE (?1 IS NULL OR account = ?1)
                 ORDER BY issued_at DESC, rowid DESC"
            );
            let rows = query_certs(c, &sql, &[&a])?;
            Ok(rows
                .into_iter()
                .filter(|r| status.is_none_or(|s| r.status(now) == s))
                .collect())
        })
    }

    /// Adds or replaces the route of a domain.
    pub fn put_route_blocking(&self, route: MtaRoute) -> Result<(), StoreError> {
        self.db.write_blocking(move |c| {
            c.execute(
                "INSERT INTO mta_routes (domain, url, ca_name, credential) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(domain) DO UPDATE SET url = ?2, ca_name = ?3, credential = ?4",
                params![route.domain, route.url, route.ca_name, route.credential],
            )?;
            Ok(())
        })
    }

    /// Removes a domain's route; whether there was one.
    pub fn remove_route_blocking(&self, domain: &str) -> Result<bool, StoreError> {
        let d = domain.to_ascii_lowercase();
        self.db.write_blocking(move |c| {
            Ok(c.execute("DELETE FROM mta_routes WHERE domain = ?1", [d])? > 0)
        })
    }

    /// Every route, by domain.
    pub fn routes_blocking(&self) -> Result<Vec<MtaRoute>, StoreError> {
        self.db.read_blocking(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT domain, url, ca_name, credential FROM mta_routes ORDER BY domain",
            )?;
            let rows = stmt.query_map([], route_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// The MTA route for `domain` (if any) and whether `key_id` was
    /// reported compromised, in one read; the caller decides what refuses.
    pub async fn route_and_key(
        &self,
        domain: &str,
        key_id: &KeyId,
    ) -> Result<RouteAndKey, StoreError> {
        let d = domain.to_ascii_lowercase();
        let k = key_id.to_string();
        self.db
            .read(move |c| {
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

    /// The CRL state.
    pub fn crl_state_blocking(&self) -> Result<CrlState, StoreError> {
        self.db.read_blocking(|c| {
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
        })
    }

    /// The CRL state.
    pub async fn crl_state(&self) -> Result<CrlState, StoreError> {
        let store = self.clone();
        run_blocking(move || store.crl_state_blocking()).await
    }

    /// Allocates the next CRL, signed at `now_ns` (nanoseconds since the
    /// epoch), valid from about `backdate` seconds before for `lifetime`
    /// seconds, numbered above `floor` (the number of the CRL on disk) and
    /// every number allocated before; durable before it returns. See
    /// [`NextCrl`].
    pub fn next_crl_blocking(
        &self,
        now_ns: i64,
        (backdate, lifetime): (i64, i64),
        floor: i64,
    ) -> Result<NextCrl, StoreError> {
        self.db
            .write_blocking(move |c| next_crl_in(c, now_ns, (backdate, lifetime), floor))
    }

    /// Calls `f` with every certificate revoked at or before `until` and
    /// still unexpired at `after` (serial number bytes, revocation time,
    /// reason), in revocation order, straight from the covering index
    /// `certificates_crl` (no table row is read, nothing is sorted, nothing
    /// is allocated per entry).
    pub fn for_each_crl_entry_blocking(
        &self,
        after: Option<i64>,
        until: i64,
        mut f: impl FnMut(&[u8], i64, RevocationReason) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let after = after.unwrap_or(i64::MIN);
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

    /// The entries of [`Store::for_each_crl_entry_blocking`] as a list.
    pub fn crl_entries_blocking(
        &self,
        after: Option<i64>,
        until: i64,
    ) -> anyhow::Result<Vec<CrlEntry>> {
        let mut out = Vec::new();
        self.for_each_crl_entry_blocking(after, until, |serial, revoked_at, reason| {
            out.push(CrlEntry {
                serial: Serial::from_bytes(serial),
                revoked_at,
                reason,
            });
            Ok(())
        })?;
        Ok(out)
    }
}

/// Decodes a stored serial (lowercase hex, as [`Serial`] stores it) into
/// `buf`; `None` for anything else or more than 32 bytes.
fn decode_serial<'a>(hex: &[u8], buf: &'a mut [u8; 32]) -> Option<&'a [u8]> {
    if hex.is_empty() || hex.len() % 2 != 0 || hex.len() > 2 * buf.len() {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        buf[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(&buf[..hex.len() / 2])
}

fn route_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MtaRoute> {
    Ok(MtaRoute {
        domain: r.get(0)?,
        url: r.get(1)?,
        ca_name: r.get(2)?,
        credential: r.get(3)?,
    })
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| StoreError::Db(DbError::Panicked))?
}

#[cfg(test)]
mod tests;
