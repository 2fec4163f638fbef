//! The CA's storage: certificates, the one-identity rule, MTA routes, the
//! CRL state and keys reported compromised, behind one interface with two
//! backends.
//!
//! [`Store`] is what the rest of the crate uses; it dispatches to the
//! crate-private [`Backend`] trait, implemented by [`sqlite`] (the embedded
//! default, one file in the data directory) and [`pg`] (PostgreSQL, shared
//! by any number of replicas). The trait keeps the two in step; the rules
//! they share (CRL numbers and times) are the pure functions of [`rules`],
//! and the decisions stay in [`crate::authority`]. Both backends hold the
//! one-valid-identity rule in the database itself (a partial unique index)
//! and answer every write only after it is durable.

use std::future::Future;
use std::path::Path;

use mailid_shared::db::{DbError, OpenMode};
use mailid_shared::protocol::{CertStatus, CertificateInfo, RevocationReason};
use mailid_shared::timefmt::rfc3339;
use mailid_shared::{Address, KeyId, Serial};

mod copy;
pub(crate) mod pg;
mod rows;
pub(crate) mod rules;
pub(crate) mod sqlite;

pub use copy::Counts;
pub(crate) use rows::{decode_serial, finish, RawCert};
pub use rules::{NextCrl, NANOS};

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

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Db(DbError::from(e))
    }
}

impl mailid_shared::db::AsDbError for StoreError {
    fn as_db(&self) -> Option<&DbError> {
        match self {
            StoreError::Db(e) => Some(e),
            _ => None,
        }
    }
}

impl StoreError {
    /// Whether the database could not be reached (answered as 503
    /// `unavailable`, never 500).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Db(e) if e.is_unavailable())
    }
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

/// A signed CRL as a lease holder publishes it to the other replicas.
#[derive(Debug, Clone)]
pub struct PublishedCrl {
    pub number: i64,
    pub this_update: i64,
    pub next_update: i64,
    pub der: Vec<u8>,
}

/// Signals of a database shared by replicas: each receiver changes on a
/// NOTIFY (and after the listening connection reconnects).
#[derive(Clone)]
pub struct CrlSignals {
    /// A revocation committed (through any replica or the CLI).
    pub revocations: tokio::sync::watch::Receiver<u64>,
    /// A lease holder published a CRL.
    pub published: tokio::sync::watch::Receiver<u64>,
}

/// What [`Store::for_each_crl_entry_blocking`] calls per entry: serial
/// number bytes, revocation time, reason.
pub(crate) type CrlEntryFn<'a> =
    &'a mut dyn FnMut(&[u8], i64, RevocationReason) -> anyhow::Result<()>;

/// The storage primitives each backend provides; [`Store`] documents each.
/// `_blocking` methods are for synchronous callers (the operator CLI and
/// the CRL publisher's blocking thread), never an async task.
pub(crate) trait Backend {
    fn insert_superseding(
        &self,
        cert: NewCert,
        now: i64,
    ) -> impl Future<Output = Result<Vec<Serial>, StoreError>> + Send;
    fn insert_superseding_blocking(
        &self,
        cert: NewCert,
        now: i64,
    ) -> Result<Vec<Serial>, StoreError>;
    fn revoke(
        &self,
        serial: Serial,
        reason: RevocationReason,
        now: i64,
    ) -> impl Future<Output = Result<RevokeOutcome, StoreError>> + Send;
    fn revoke_blocking(
        &self,
        serial: Serial,
        reason: RevocationReason,
        now: i64,
    ) -> Result<RevokeOutcome, StoreError>;
    fn get_blocking(&self, serial: &Serial) -> Result<Option<CertRow>, StoreError>;
    fn get(
        &self,
        serial: &Serial,
    ) -> impl Future<Output = Result<Option<CertRow>, StoreError>> + Send;
    fn by_account(
        &self,
        account: &Address,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<CertRow>, StoreError>> + Send;
    /// Every certificate (of `account`), newest first.
    fn list_blocking(&self, account: Option<&Address>) -> Result<Vec<CertRow>, StoreError>;
    fn put_route_blocking(&self, route: MtaRoute) -> Result<(), StoreError>;
    fn remove_route_blocking(&self, domain: &str) -> Result<bool, StoreError>;
    fn routes_blocking(&self) -> Result<Vec<MtaRoute>, StoreError>;
    fn route_and_key(
        &self,
        domain: &str,
        key_id: &KeyId,
    ) -> impl Future<Output = Result<RouteAndKey, StoreError>> + Send;
    fn crl_state_blocking(&self) -> Result<CrlState, StoreError>;
    fn crl_state(&self) -> impl Future<Output = Result<CrlState, StoreError>> + Send;
    fn next_crl_blocking(
        &self,
        now_ns: i64,
        times: (i64, i64),
        floor: i64,
    ) -> Result<NextCrl, StoreError>;
    /// Entries revoked at or before `until`, expiring after `after`, in
    /// revocation order, streamed (never the whole table in memory).
    fn for_each_crl_entry_blocking(
        &self,
        after: i64,
        until: i64,
        f: CrlEntryFn<'_>,
    ) -> anyhow::Result<()>;
    /// Whether nothing is stored yet: no certificate, route or compromised
    /// key, and no CRL number allocated.
    fn is_empty_blocking(&self) -> Result<bool, StoreError>;
    /// Whether the database answers.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Renews (`held`) or takes the CRL signing lease; the epoch while held.
    fn crl_lease(
        &self,
        holder: &str,
        held: Option<i64>,
        reclaim: bool,
    ) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;
    fn release_crl_lease(
        &self,
        holder: &str,
        epoch: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Publishes `crl` if the lease is still held under `epoch`.
    fn publish_crl(
        &self,
        holder: &str,
        epoch: i64,
        crl: &PublishedCrl,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// The newest published CRL numbered above `above`.
    fn latest_crl(
        &self,
        above: i64,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
    /// Change signals, for a database other processes serve from.
    fn crl_signals(&self) -> Option<CrlSignals>;
}

/// The CA database.
#[derive(Clone)]
pub struct Store {
    backend: Backends,
}

#[derive(Clone)]
enum Backends {
    Sqlite(sqlite::Sqlite),
    Pg(pg::Pg),
}

/// Runs `$e` with `$b` bound to the backend.
macro_rules! on {
    ($self:ident, $b:ident => $e:expr) => {
        match &$self.backend {
            Backends::Sqlite($b) => $e,
            Backends::Pg($b) => $e,
        }
    };
}

impl Store {
    /// Opens and migrates the SQLite database `path`; only
    /// [`OpenMode::Create`] (`init`) creates it.
    pub fn open(path: &Path, mode: OpenMode) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backends::Sqlite(sqlite::Sqlite::open(path, mode)?),
        })
    }

    /// Connects to and migrates a PostgreSQL database shared by replicas;
    /// only [`OpenMode::Create`] (`init`, `db migrate`) creates the schema
    /// in an empty database. Synchronous: not from inside an async task.
    pub fn open_postgres(
        url: &mailid_shared::pg::PgUrl,
        mode: OpenMode,
    ) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backends::Pg(pg::Pg::open(url, mode)?),
        })
    }

    /// Whether other processes may serve from this database too
    /// (PostgreSQL): the CRL is then signed by the lease holder only.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backends::Pg(_))
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
        on!(self, b => b.insert_superseding(cert, now).await)
    }

    /// [`Store::insert_superseding`] for synchronous callers.
    pub fn insert_superseding_blocking(
        &self,
        cert: NewCert,
        now: i64,
    ) -> Result<Vec<Serial>, StoreError> {
        on!(self, b => b.insert_superseding_blocking(cert, now))
    }

    /// Revokes one certificate if it is valid (a keyCompromise report also
    /// for one already revoked for another reason, spreading to every
    /// certificate of the key).
    pub async fn revoke(
        &self,
        serial: Serial,
        reason: RevocationReason,
        now: i64,
    ) -> Result<RevokeOutcome, StoreError> {
        on!(self, b => b.revoke(serial, reason, now).await)
    }

    /// [`Store::revoke`] for synchronous callers (the operator CLI).
    pub fn revoke_blocking(
        &self,
        serial: Serial,
        reason: RevocationReason,
        now: i64,
    ) -> Result<RevokeOutcome, StoreError> {
        on!(self, b => b.revoke_blocking(serial, reason, now))
    }

    /// One certificate by serial.
    pub fn get_blocking(&self, serial: &Serial) -> Result<Option<CertRow>, StoreError> {
        on!(self, b => b.get_blocking(serial))
    }

    /// One certificate by serial.
    pub async fn get(&self, serial: &Serial) -> Result<Option<CertRow>, StoreError> {
        on!(self, b => b.get(serial).await)
    }

    /// The newest `limit` certificates of an account, newest first.
    pub async fn by_account(
        &self,
        account: &Address,
        limit: u32,
    ) -> Result<Vec<CertRow>, StoreError> {
        on!(self, b => b.by_account(account, limit).await)
    }

    /// Certificates for `list`, newest first, filtered by account and status.
    pub fn list_blocking(
        &self,
        account: Option<&Address>,
        status: Option<CertStatus>,
        now: i64,
    ) -> Result<Vec<CertRow>, StoreError> {
        let rows = on!(self, b => b.list_blocking(account))?;
        Ok(rows
            .into_iter()
            .filter(|r| status.is_none_or(|s| r.status(now) == s))
            .collect())
    }

    /// Adds or replaces the route of a domain.
    pub fn put_route_blocking(&self, route: MtaRoute) -> Result<(), StoreError> {
        on!(self, b => b.put_route_blocking(route))
    }

    /// Removes a domain's route; whether there was one.
    pub fn remove_route_blocking(&self, domain: &str) -> Result<bool, StoreError> {
        on!(self, b => b.remove_route_blocking(domain))
    }

    /// Every route, by domain.
    pub fn routes_blocking(&self) -> Result<Vec<MtaRoute>, StoreError> {
        on!(self, b => b.routes_blocking())
    }

    /// The MTA route for `domain` (if any) and whether `key_id` was
    /// reported compromised, in one read; the caller decides what refuses.
    pub async fn route_and_key(
        &self,
        domain: &str,
        key_id: &KeyId,
    ) -> Result<RouteAndKey, StoreError> {
        on!(self, b => b.route_and_key(domain, key_id).await)
    }

    /// The CRL state.
    pub fn crl_state_blocking(&self) -> Result<CrlState, StoreError> {
        on!(self, b => b.crl_state_blocking())
    }

    /// The CRL state.
    pub async fn crl_state(&self) -> Result<CrlState, StoreError> {
        on!(self, b => b.crl_state().await)
    }

    /// Allocates the next CRL, signed at `now_ns` (nanoseconds since the
    /// epoch), valid from about `backdate` seconds before for `lifetime`
    /// seconds, numbered above `floor` (the number of the CRL on disk) and
    /// every number allocated before, under the lock on the CRL state;
    /// durable before it returns. See [`NextCrl`] and [`rules::allocate`].
    pub fn next_crl_blocking(
        &self,
        now_ns: i64,
        (backdate, lifetime): (i64, i64),
        floor: i64,
    ) -> Result<NextCrl, StoreError> {
        on!(self, b => b.next_crl_blocking(now_ns, (backdate, lifetime), floor))
    }

    /// Calls `f` with every certificate revoked at or before `until` and
    /// still unexpired at `after` (serial number bytes, revocation time,
    /// reason), in revocation order, streamed from the covering index
    /// `certificates_crl` (nothing sorted, nothing allocated per entry).
    pub fn for_each_crl_entry_blocking(
        &self,
        after: Option<i64>,
        until: i64,
        mut f: impl FnMut(&[u8], i64, RevocationReason) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let after = after.unwrap_or(i64::MIN);
        on!(self, b => b.for_each_crl_entry_blocking(after, until, &mut f))
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

    /// Whether nothing is stored yet: no certificate, route or compromised
    /// key, and no CRL number allocated (`init` and `db migrate` refuse a
    /// PostgreSQL database holding another CA's data).
    pub fn is_empty_blocking(&self) -> Result<bool, StoreError> {
        on!(self, b => b.is_empty_blocking())
    }

    /// Whether the database answers (for `/healthz`; the answer is reused
    /// for up to a second); SQLite always does.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on!(self, b => b.ping().await)
    }

    /// Renews the CRL signing lease when `held` is still `holder`'s epoch,
    /// else takes it if it expired (or, with `reclaim`, a replica starting
    /// again, if it still names `holder`; under a new epoch); gives the
    /// epoch while `holder` holds it. On SQLite (one process) the lease is
    /// always held, epoch 0.
    pub async fn crl_lease(
        &self,
        holder: &str,
        held: Option<i64>,
        reclaim: bool,
    ) -> Result<Option<i64>, StoreError> {
        on!(self, b => b.crl_lease(holder, held, reclaim).await)
    }

    /// Gives the lease up (at shutdown) so another replica takes it at once.
    pub async fn release_crl_lease(&self, holder: &str, epoch: i64) -> Result<(), StoreError> {
        on!(self, b => b.release_crl_lease(holder, epoch).await)
    }

    /// Publishes a signed CRL for every replica, only if the lease is still
    /// `holder`'s under `epoch` (fencing); whether it was published. On
    /// SQLite there is nobody to publish to: always true.
    pub async fn publish_crl(
        &self,
        holder: &str,
        epoch: i64,
        crl: &PublishedCrl,
    ) -> Result<bool, StoreError> {
        on!(self, b => b.publish_crl(holder, epoch, crl).await)
    }

    /// The newest published CRL (DER) numbered above `above`; never any
    /// on SQLite.
    pub async fn latest_crl(&self, above: i64) -> Result<Option<Vec<u8>>, StoreError> {
        on!(self, b => b.latest_crl(above).await)
    }

    /// NOTIFY signals of a shared database (`None` on SQLite).
    pub fn crl_signals(&self) -> Option<CrlSignals> {
        on!(self, b => b.crl_signals())
    }
}

#[cfg(test)]
mod conformance;
