//! The PostgreSQL backend: the same tables as SQLite, shared by any number
//! of CA replicas. The one-valid-identity rule is the partial unique index
//! `one_valid_identity`; enrollments serialise per account with an advisory
//! lock, revocations and CRL allocation with row locks ([`txn`]); the CRL
//! lease and the published CRLs are in [`crl`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailid_shared::db::OpenMode;
use mailid_shared::pg::{Notifier, PgDb, PgUrl};
use mailid_shared::protocol::RevocationReason;
use mailid_shared::{Address, KeyId, Serial};

use super::rules::NextCrl;
use super::{
    decode_serial, finish, Backend, CertRow, CrlEntryFn, CrlSignals, CrlState, MtaRoute, NewCert,
    PublishedCrl, RawCert, RevokeOutcome, RouteAndKey, StoreError,
};

pub(crate) mod crl;
pub(crate) mod txn;

/// The service name the schema is recorded under.
const SERVICE: &str = "mailid-ca";

/// The schema, one migration per version.
pub(crate) const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE certificates (
    serial      TEXT PRIMARY KEY,
    seq         BIGINT GENERATED ALWAYS AS IDENTITY,
    account     TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    not_before  BIGINT NOT NULL,
    not_after   BIGINT NOT NULL,
    issued_at   BIGINT NOT NULL,
    der         BYTEA NOT NULL,
    revoked_at  BIGINT,
    reason      BIGINT,
    active      BOOLEAN NOT NULL DEFAULT TRUE,
    CHECK (revoked_at IS NULL OR NOT active)
);
CREATE UNIQUE INDEX one_valid_identity ON certificates(account) WHERE active;
CREATE INDEX certificates_by_account ON certificates(account, issued_at);
CREATE INDEX certificates_by_issued ON certificates(issued_at);
CREATE INDEX certificates_by_key ON certificates(key_id);
-- The CRL is read from this index alone, already in order.
CREATE INDEX certificates_crl ON certificates(revoked_at, serial COLLATE \"C\")
    INCLUDE (not_after, reason) WHERE revoked_at IS NOT NULL;
CREATE TABLE mta_routes (
    domain      TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    ca_name     TEXT NOT NULL,
    credential  TEXT NOT NULL
);
CREATE TABLE crl_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    number       BIGINT NOT NULL,
    this_update  BIGINT,
    next_update  BIGINT,
    covered      BIGINT NOT NULL,
    revocations  BIGINT NOT NULL
);
INSERT INTO crl_state (id, number, covered, revocations) VALUES (1, 0, -1, 0);
CREATE TABLE compromised_keys (
    key_id  TEXT PRIMARY KEY,
    serial  TEXT NOT NULL,
    at      BIGINT NOT NULL
);
-- At most one replica signs CRLs: the holder of this lease; epoch is the
-- fencing token a publication must still carry.
CREATE TABLE crl_lease (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    holder      TEXT,
    epoch       BIGINT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
INSERT INTO crl_lease (id, holder, epoch, expires_at) VALUES (1, NULL, 0, '-infinity');
-- The CRLs published by lease holders; every replica serves the newest.
CREATE TABLE published_crls (
    number       BIGINT PRIMARY KEY,
    this_update  BIGINT NOT NULL,
    next_update  BIGINT NOT NULL,
    der          BYTEA NOT NULL
);
",
    "
-- Revocations not yet covered by a CRL, one row per revoking transaction
-- (appended without touching a shared row; taken by the CRL allocation).
CREATE TABLE crl_events (
    id  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    n   BIGINT NOT NULL
);
",
];

const CERT_COLUMNS: &str =
    "serial, account, key_id, not_before, not_after, issued_at, der, revoked_at, reason";

fn cert_row(r: &tokio_postgres::Row) -> Result<CertRow, StoreError> {
    finish(
        RawCert {
            serial: r.try_get(0)?,
            account: r.try_get(1)?,
            key_id: r.try_get(2)?,
            not_before: r.try_get(3)?,
            not_after: r.try_get(4)?,
            issued_at: r.try_get(5)?,
            revoked_at: r.try_get(7)?,
            reason: r.try_get(8)?,
        },
        r.try_get(6)?,
    )
}

fn route_row(r: &tokio_postgres::Row) -> Result<MtaRoute, StoreError> {
    Ok(MtaRoute {
        domain: r.try_get(0)?,
        url: r.try_get(1)?,
        ca_name: r.try_get(2)?,
        credential: r.try_get(3)?,
    })
}

/// How long a `/healthz` answer is reused.
const PING_CACHE: Duration = Duration::from_secs(1);
/// How long a ping may take before the database counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// A PostgreSQL database shared by the CA's replicas.
#[derive(Clone)]
pub(crate) struct Pg {
    pub(crate) db: PgDb,
    /// Tells the CRL lease holder (on whichever replica) of revocations,
    /// after their commit.
    revoked: Notifier,
    /// The last ping's time and outcome.
    ping: Arc<Mutex<Option<(Instant, bool)>>>,
}

impl Pg {
    /// Connects and migrates (creating the schema in an empty database
    /// only with [`OpenMode::Create`]). Synchronous: call it outside an
    /// async runtime.
    pub(crate) fn open(url: &PgUrl, mode: OpenMode) -> Result<Pg, StoreError> {
        let db = PgDb::open(url, SERVICE, MIGRATIONS, mode)?;
        Ok(Pg {
            revoked: db.notifier(txn::REVOCATIONS_CHANNEL),
            db,
            ping: Arc::new(Mutex::new(None)),
        })
    }
}

impl Backend for Pg {
    async fn insert_superseding(&self, cert: NewCert, now: i64) -> Result<Vec<Serial>, StoreError> {
        let revoked = self
            .db
            .write(move |tx| {
                let cert = cert.clone();
                Box::pin(async move { txn::insert_superseding_in(tx, &cert, now).await })
            })
            .await?;
        if !revoked.is_empty() {
            self.revoked.poke();
        }
        Ok(revoked)
    }

    fn insert_superseding_blocking(
        &self,
        cert: NewCert,
        now: i64,
    ) -> Result<Vec<Serial>, StoreError> {
        self.db.block_on(self.insert_superseding(cert, now))
    }

    async fn revoke(
        &self,
        serial: Serial,
        reason: RevocationReason,
        now: i64,
    ) -> Result<RevokeOutcome, StoreError> {
        let outcome = self
            .db
            .write(move |tx| {
                let serial = serial.clone();
                Box::pin(async move { txn::revoke_one(tx, &serial, reason, now).await })
            })
            .await?;
        if matches!(outcome, RevokeOutcome::Revoked { .. }) {
            self.revoked.poke();
        }
        Ok(outcome)
    }

    fn revoke_blocking(
        &self,
        serial: Serial,
        reason: RevocationReason,
        now: i64,
    ) -> Result<RevokeOutcome, StoreError> {
        self.db.block_on(async {
            let outcome = self.revoke(serial, reason, now).await?;
            if matches!(outcome, RevokeOutcome::Revoked { .. }) {
                // The operator CLI exits at once: announce it before that
                // (the lease holder's poll would find it within a second).
                let _ = self.db.notify(txn::REVOCATIONS_CHANNEL).await;
            }
            Ok(outcome)
        })
    }

    fn get_blocking(&self, serial: &Serial) -> Result<Option<CertRow>, StoreError> {
        self.db.block_on(self.get(serial))
    }

    async fn get(&self, serial: &Serial) -> Result<Option<CertRow>, StoreError> {
        let s = serial.as_str().to_string();
        self.db
            .read(move |tx| {
                let s = s.clone();
                Box::pin(async move {
                    let sql = format!("SELECT {CERT_COLUMNS} FROM certificates WHERE serial = $1");
                    let stmt = tx.prepare_cached(&sql).await?;
                    tx.query_opt(&stmt, &[&s])
                        .await?
                        .as_ref()
                        .map(cert_row)
                        .transpose()
                })
            })
            .await
    }

    async fn by_account(&self, account: &Address, limit: u32) -> Result<Vec<CertRow>, StoreError> {
        let a = account.as_str().to_string();
        let limit = i64::from(limit);
        self.db
            .read(move |tx| {
                let a = a.clone();
                Box::pin(async move {
                    let sql = format!(
                        "SELECT {CERT_COLUMNS} FROM certificates WHERE account = $1
                         ORDER BY issued_at DESC, seq DESC LIMIT $2"
                    );
                    let stmt = tx.prepare_cached(&sql).await?;
                    tx.query(&stmt, &[&a, &limit])
                        .await?
                        .iter()
                        .map(cert_row)
                        .collect()
                })
            })
            .await
    }

    fn list_blocking(&self, account: Option<&Address>) -> Result<Vec<CertRow>, StoreError> {
        let a = account.map(|a| a.as_str().to_string());
        self.db.block_on(self.db.read(move |tx| {
            let a = a.clone();
            Box::pin(async move {
                let sql = format!(
                    "SELECT {CERT_COLUMNS} FROM certificates
                     WHERE ($1::TEXT IS NULL OR account = $1)
                     ORDER BY issued_at DESC, seq DESC"
                );
                let stmt = tx.prepare_cached(&sql).await?;
                tx.query(&stmt, &[&a]).await?.iter().map(cert_row).collect()
            })
        }))
    }

    fn put_route_blocking(&self, route: MtaRoute) -> Result<(), StoreError> {
        self.db.block_on(self.db.write(move |tx| {
            let route = route.clone();
            Box::pin(async move {
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO mta_routes (domain, url, ca_name, credential)
                         VALUES ($1, $2, $3, $4)
                         ON CONFLICT (domain) DO UPDATE
                         SET url = $2, ca_name = $3, credential = $4",
                    )
                    .await?;
                tx.execute(
                    &stmt,
                    &[&route.domain, &route.url, &route.ca_name, &route.credential],
                )
                .await?;
                Ok(())
            })
        }))
    }

    fn remove_route_blocking(&self, domain: &str) -> Result<bool, StoreError> {
        let d = domain.to_ascii_lowercase();
        self.db.block_on(self.db.write(move |tx| {
            let d = d.clone();
            Box::pin(async move {
                let stmt = tx
                    .prepare_cached("DELETE FROM mta_routes WHERE domain = $1")
                    .await?;
                Ok(tx.execute(&stmt, &[&d]).await? > 0)
            })
        }))
    }

    fn routes_blocking(&self) -> Result<Vec<MtaRoute>, StoreError> {
        self.db.block_on(self.db.read(|tx| {
            Box::pin(async move {
                let stmt = tx
                    .prepare_cached(
                        "SELECT domain, url, ca_name, credential FROM mta_routes ORDER BY domain",
                    )
                    .await?;
                tx.query(&stmt, &[]).await?.iter().map(route_row).collect()
            })
        }))
    }

    async fn route_and_key(&self, domain: &str, key_id: &KeyId) -> Result<RouteAndKey, StoreError> {
        let d = domain.to_ascii_lowercase();
        let k = key_id.to_string();
        // One statement, so one round trip and no BEGIN/COMMIT: this runs
        // before every enrollment.
        self.db
            .single(move |client| {
                let (d, k) = (d.clone(), k.clone());
                Box::pin(async move {
                    let stmt = client
                        .prepare_cached(
                            "SELECT EXISTS (SELECT 1 FROM compromised_keys WHERE key_id = $2),
                                r.domain, r.url, r.ca_name, r.credential
                             FROM (SELECT 1) AS one
                             LEFT JOIN mta_routes AS r ON r.domain = $1",
                        )
                        .await?;
                    let row = client.query_one(&stmt, &[&d, &k]).await?;
                    let route = match row.try_get::<_, Option<String>>(1)? {
                        Some(domain) => Some(MtaRoute {
                            domain,
                            url: row.try_get(2)?,
                            ca_name: row.try_get(3)?,
                            credential: row.try_get(4)?,
                        }),
                        None => None,
                    };
                    Ok(RouteAndKey {
                        route,
                        key_compromised: row.try_get(0)?,
                    })
                })
            })
            .await
    }

    fn crl_state_blocking(&self) -> Result<CrlState, StoreError> {
        self.db.block_on(self.crl_state())
    }

    async fn crl_state(&self) -> Result<CrlState, StoreError> {
        self.db
            .read(|tx| {
                Box::pin(async move {
                    let stmt = tx
                        .prepare_cached(
                            "SELECT number, this_update, next_update, covered,
                                revocations + (SELECT COALESCE(SUM(n), 0) FROM crl_events)::BIGINT
                             FROM crl_state WHERE id = 1",
                        )
                        .await?;
                    let r = tx.query_one(&stmt, &[]).await?;
                    Ok(CrlState {
                        number: r.try_get(0)?,
                        this_update: r.try_get(1)?,
                        next_update: r.try_get(2)?,
                        covered: r.try_get(3)?,
                        revocations: r.try_get(4)?,
                    })
                })
            })
            .await
    }

    fn next_crl_blocking(
        &self,
        now_ns: i64,
        times: (i64, i64),
        floor: i64,
    ) -> Result<NextCrl, StoreError> {
        self.db.block_on(self.db.write(move |tx| {
            Box::pin(async move { txn::next_crl_in(tx, now_ns, times, floor).await })
        }))
    }

    fn for_each_crl_entry_blocking(
        &self,
        after: i64,
        until: i64,
        f: CrlEntryFn<'_>,
    ) -> anyhow::Result<()> {
        self.db.block_on(async move {
            use futures_util::TryStreamExt;
            let client = self.db.client().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT serial, revoked_at, reason FROM certificates
                     WHERE revoked_at IS NOT NULL AND revoked_at <= $2 AND not_after > $1
                     ORDER BY revoked_at, serial COLLATE \"C\"",
                )
                .await?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&after, &until];
            let rows = client.query_raw(&stmt, params).await?;
            let mut rows = std::pin::pin!(rows);
            let mut buf = [0u8; 32];
            while let Some(row) = rows.try_next().await? {
                let text: &str = row.try_get(0)?;
                let serial = decode_serial(text.as_bytes(), &mut buf)
                    .ok_or_else(|| StoreError::Corrupt(format!("serial {text}")))?;
                let reason = u8::try_from(row.try_get::<_, i64>(2)?)
                    .ok()
                    .and_then(RevocationReason::from_code)
                    .unwrap_or(RevocationReason::Unspecified);
                f(serial, row.try_get(1)?, reason)?;
            }
            Ok(())
        })
    }

    fn is_empty_blocking(&self) -> Result<bool, StoreError> {
        self.db.block_on(self.db.read(|tx| {
            Box::pin(async move {
                let stmt = tx
                    .prepare_cached(
                        "SELECT NOT EXISTS (SELECT 1 FROM certificates)
                AND NOT EXISTS (SELECT 1 FROM mta_routes)
                AND NOT EXISTS (SELECT 1 FROM compromised_keys)
                AND (SELECT number FROM crl_state WHERE id = 1) = 0",
                    )
                    .await?;
                Ok(tx.query_one(&stmt, &[]).await?.try_get(0)?)
            })
        }))
    }

    async fn crl_lease(
        &self,
        holder: &str,
        held: Option<i64>,
        reclaim: bool,
    ) -> Result<Option<i64>, StoreError> {
        Pg::crl_lease(self, holder, held, reclaim).await
    }

    async fn release_crl_lease(&self, holder: &str, epoch: i64) -> Result<(), StoreError> {
        Pg::release_crl_lease(self, holder, epoch).await
    }

    async fn publish_crl(
        &self,
        holder: &str,
        epoch: i64,
        crl: &PublishedCrl,
    ) -> Result<bool, StoreError> {
        Pg::publish_crl(self, holder, epoch, crl).await
    }

    async fn latest_crl(&self, above: i64) -> Result<Option<Vec<u8>>, StoreError> {
        Pg::latest_crl(self, above).await
    }

    fn crl_signals(&self) -> Option<CrlSignals> {
        Some(CrlSignals {
            revocations: self.db.listen(txn::REVOCATIONS_CHANNEL),
            published: self.db.listen(crl::CRL_CHANNEL),
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let cached = self.ping.lock().ok().and_then(|g| *g);
        let ok = match cached {
            Some((at, ok)) if at.elapsed() < PING_CACHE => ok,
            _ => {
                let ok = self.db.ping(PING_TIMEOUT).await.is_ok();
                if let Ok(mut g) = self.ping.lock() {
                    *g = Some((Instant::now(), ok));
                }
                ok
            }
        };
        if ok {
            Ok(())
        } else {
            Err(StoreError::Db(mailid_shared::db::DbError::Unavailable(
                "the database does not answer".into(),
            )))
        }
    }
}
