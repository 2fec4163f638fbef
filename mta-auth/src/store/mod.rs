//! Storage behind a narrow API, on SQLite (the embedded default) or
//! PostgreSQL (several replicas on one database).
//!
//! Callers see only the domain methods of [`Store`] and plain row types;
//! `Store` dispatches each to its backend through the crate-private
//! `Backend` trait, so both offer the same primitives and the compiler keeps
//! them in step. Every method is one transaction, durable before it
//! answers. Decisions such as a code's validity are the caller's, passed
//! in as a function where they must run inside the transaction.

mod backend;
mod log;
mod migrate;
mod pg;
mod rows;
mod sqlite;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mailid_shared::db::{AsDbError, DbError, OpenMode};
use mailid_shared::pg::PgUrl;
use mailid_shared::timefmt::now_unix;
use mailid_shared::translog::{tlog_tiles, Event, Hash, LogSigner};
use mailid_shared::{Address, KeyId};
use zeroize::Zeroizing;

use backend::Backend;
pub use log::{CheckpointRow, DumpEntry, LogDump, LogEntryRow};
pub use migrate::{sqlite_to_pg, MigrateError};
pub use rows::{
    AccountCodes, AccountRow, BackupPut, BackupRow, BackupWrite, CaRow, CodeSnapshot, CrlRow,
    IdentityRow, IssueRow, KeyRow, KeyState, KeyWrite, LockState,
};

/// A storage failure or a refused change.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A corrupt or inconsistent identity log row, or a refused log key.
    #[error("identity log: {0}")]
    Log(String),
    /// A caller broke a storage contract (a validation decision that asked
    /// for the other keys when it had them): a bug, answered 500.
    #[error("internal: {0}")]
    Contract(&'static str),
}

impl StoreError {
    /// Whether the database is unreachable (answered with 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Db(e) if e.is_unavailable())
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(DbError::Sqlite(e))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Db(DbError::from(e))
    }
}

impl AsDbError for StoreError {
    fn as_db(&self) -> Option<&DbError> {
        match self {
            StoreError::Db(e) => Some(e),
            _ => None,
        }
    }
}

/// Where a store keeps its rows.
#[derive(Clone)]
pub enum Location {
    /// A SQLite file (the data dir's `mta-auth.sqlite`).
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(Box<PgUrl>),
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({self})")
    }
}

/// The path, or the URL with its password hidden.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(u) => write!(f, "{u}"),
        }
    }
}

/// The MTA auth service's storage.
#[derive(Clone)]
pub struct Store {
    backend: Kind,
}

#[derive(Clone)]
enum Kind {
    Sqlite(sqlite::SqliteStore),
    Pg(pg::PgStore),
}

/// Runs `$call` on whichever backend the store has.
macro_rules! dispatch {
    ($self:ident, $b:ident => $call:expr) => {
        match &$self.backend {
            Kind::Sqlite($b) => $call,
            Kind::Pg($b) => $call,
        }
    };
}

impl Store {
    /// Opens and migrates the SQLite database at `path`; only
    /// [`OpenMode::Create`] (`init`) creates it (0600).
    pub fn open(path: &Path, mode: OpenMode) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Kind::Sqlite(sqlite::SqliteStore::open(path, mode)?),
        })
    }

    /// Connects to the PostgreSQL database at `url` and migrates it (safe
    /// when replicas start at once); only [`OpenMode::Create`] (`init`)
    /// creates the schema. Synchronous: call it outside async code (or in
    /// `spawn_blocking`).
    pub fn open_pg(url: &PgUrl, mode: OpenMode) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Kind::Pg(pg::PgStore::open(url, mode)?),
        })
    }

    /// Opens the store at `location` (see [`Store::open`], [`Store::open_pg`]).
    pub fn open_at(location: &Location, mode: OpenMode) -> Result<Store, StoreError> {
        match location {
            Location::Sqlite(path) => Store::open(path, mode),
            Location::Postgres(url) => Store::open_pg(url, mode),
        }
    }

    /// Whether the database answers within `timeout` (SQLite: a local
    /// file, always).
    pub async fn ping(&self, timeout: Duration) -> Result<(), StoreError> {
        match &self.backend {
            Kind::Sqlite(_) => Ok(()),
            Kind::Pg(b) => b.ping(timeout).await,
        }
    }

    /// Adds an account; `Exists` if the address is taken.
    pub async fn add_account(
        &self,
        address: &Address,
        password_hash: String,
        totp_secret: Zeroizing<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let now = now_unix();
        dispatch!(self, b => b.add_account(address, password_hash, totp_secret, now).await)
    }

    /// Every account, ordered by address.
    pub async fn list_accounts(&self) -> Result<Vec<AccountRow>, StoreError> {
        let now = now_unix();
        dispatch!(self, b => b.list_accounts(now).await)
    }

    /// Enables or disables an account; `NotFound` if there is none.
    pub async fn set_enabled(&self, address: &Address, enabled: bool) -> Result<(), StoreError> {
        dispatch!(self, b => b.set_enabled(address, enabled).await)
    }

    /// Replaces an account's password hash; `NotFound` if there is none.
    pub async fn set_password(&self, address: &Address, hash: String) -> Result<(), StoreError> {
        dispatch!(self, b => b.set_password(address, hash).await)
    }

    /// Password hash and enabled flag, for a login.
    pub async fn login_info(
        &self,
        address: &Address,
    ) -> Result<Option<(String, bool)>, StoreError> {
        dispatch!(self, b => b.login_info(address).await)
    }

    /// Whether the account exists and is enabled.
    pub async fn is_enabled(&self, address: &Address) -> Result<bool, StoreError> {
        dispatch!(self, b => b.is_enabled(address).await)
    }

    /// Registers a CA; `Exists` if the name is taken.
    pub async fn add_ca(
        &self,
        name: &str,
        secret: Zeroizing<Vec<u8>>,
        trust_cert: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let now = now_unix();
        dispatch!(self, b => b.add_ca(name, secret, trust_cert, now).await)
    }

    /// Every registered CA, by name.
    pub async fn list_cas(&self) -> Result<Vec<CaRow>, StoreError> {
        dispatch!(self, b => b.list_cas().await)
    }

    /// Removes a CA and, in the same transaction, withdraws the identities
    /// that chain to its trusted certificate (each logged as
    /// withdrawn-ca-removed); returns how many were withdrawn. `NotFound` (and nothing changes) if there is no such CA.
    pub async fn remove_ca(&self, name: &str) -> Result<usize, StoreError> {
        dispatch!(self, b => b.remove_ca(name).await)
    }

    /// The credential secret of a CA, if it is registered.
    pub async fn ca_secret(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        dispatch!(self, b => b.ca_secret(name).await)
    }

    /// The trusted CA certificates (name, DER) for identity upload.
    pub async fn trusted_certs(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        dispatch!(self, b => b.trusted_certs().await)
    }

    /// Records that a code of (account, key) was issued at `now` and
    /// returns what computing it needs; `NotFound` for an unknown or
    /// disabled account.
    pub async fn issue_code(
        &self,
        address: &Address,
        key_id: &KeyId,
        now: i64,
    ) -> Result<IssueRow, StoreError> {
        dispatch!(self, b => b.issue_code(address, key_id, now).await)
    }

    /// Validates a code in one transaction: loads the [`CodeSnapshot`] of
    /// (CA, account, key), lets `decide` judge it, and applies the
    /// [`KeyWrite`] it returns to the key's row before answering its
    /// verdict. The account's other keys issued at or after `live_since`
    /// are loaded only for a `decide` that asks for them (answers `None`):
    /// a valid code costs the same however many devices the account has.
    /// Serialised with every other validation of the account (SQLite: the
    /// one writer; PostgreSQL: a lock on the account's row), so single use
    /// and the lockout counters are race-free across replicas. `decide` is
    /// pure and may run again if the transaction is retried.
    pub async fn validate_code<V, F>(
        &self,
        ca_name: &str,
        address: &Address,
        key_id: &KeyId,
        live_since: i64,
        decide: F,
    ) -> Result<V, StoreError>
    where
        V: Send + 'static,
        F: Fn(CodeSnapshot) -> Option<(V, Option<KeyWrite>)> + Send + Sync + 'static,
    {
        dispatch!(self, b => b.validate_code(ca_name, address, key_id, live_since, decide).await)
    }

    /// Publishes (or replaces) an account's identity.
    pub async fn put_identity(&self, row: IdentityRow) -> Result<(), StoreError> {
        let now = now_unix();
        dispatch!(self, b => b.put_identity(row, now).await)
    }

    /// The identity published for an address, if the account is enabled
    /// and the CA it chains to is still registered with a trusted
    /// certificate.
    pub async fn identity(&self, address: &Address) -> Result<Option<IdentityRow>, StoreError> {
        dispatch!(self, b => b.identity(address).await)
    }

    /// Withdraws the account's identity because it expired or its CA
    /// revoked it (`event`), if it is still the one with `serial` (a newer
    /// upload wins): deleted and logged in one transaction. Whether it was.
    pub async fn withdraw_identity(
        &self,
        address: &Address,
        serial: String,
        event: Event,
    ) -> Result<bool, StoreError> {
        let now = now_unix();
        dispatch!(self, b => b.withdraw_identity(address, serial, event, now).await)
    }

    /// The latest CRL kept for a distribution point URL.
    pub async fn crl(&self, url: &str) -> Result<Option<CrlRow>, StoreError> {
        dispatch!(self, b => b.crl(url).await)
    }

    /// Keeps a verified CRL unless a newer one is already kept.
    pub async fn put_crl(&self, url: &str, row: CrlRow) -> Result<(), StoreError> {
        let now = now_unix();
        dispatch!(self, b => b.put_crl(url, row, now).await)
    }

    /// Stores the backup of (account, key), replacing one for the same key;
    /// `Full` (nothing stored) when the account already holds `max`
    /// backups of other keys. The count and the write are one transaction
    /// serialised per account (SQLite: the one writer; PostgreSQL: a lock
    /// on the account's row), so the limit holds across replicas.
    /// `NotFound` for an unknown or disabled account.
    pub async fn put_backup(
        &self,
        address: &Address,
        key_id: &KeyId,
        backup: BackupWrite,
        max: usize,
    ) -> Result<BackupPut, StoreError> {
        let now = now_unix();
        dispatch!(self, b => b.put_backup(address, key_id, backup, max, now).await)
    }

    /// The account's backups, by `stored_at` then key ID.
    pub async fn backups(&self, address: &Address) -> Result<Vec<BackupRow>, StoreError> {
        dispatch!(self, b => b.backups(address).await)
    }

    /// Deletes the backup of (account, key); `NotFound` if the account has
    /// none for that key.
    pub async fn delete_backup(&self, address: &Address, key_id: &KeyId) -> Result<(), StoreError> {
        dispatch!(self, b => b.delete_backup(address, key_id).await)
    }

    /// Records the log key (origin, vkey) unless one is recorded; returns
    /// the recorded one (a replica compares it with its key file's).
    pub async fn log_bind(
        &self,
        origin: String,
        vkey: String,
    ) -> Result<(String, String), StoreError> {
        dispatch!(self, b => b.log_bind(origin, vkey).await)
    }

    /// The recorded log key (origin, vkey), if `serve` or `init` bound one.
    pub async fn log_bound(&self) -> Result<Option<(String, String)>, StoreError> {
        dispatch!(self, b => b.log_bound().await)
    }

    /// One run of the log's sequencer: unless the newest checkpoint was
    /// signed less than `min_interval_ms` before `now_ms` (PostgreSQL: the
    /// database's clock), or nothing is pending and a checkpoint exists,
    /// gives the pending entries their leaf indexes, stores the tree's new
    /// hashes and signs a checkpoint of the new tree, in one transaction
    /// that one replica at a time runs. The size it signed, if it did.
    pub async fn log_sequence(
        &self,
        signer: Arc<LogSigner>,
        min_interval_ms: i64,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        dispatch!(self, b => b.log_sequence(signer, min_interval_ms, now_ms).await)
    }

    /// Whether the sequencer has work: unsequenced entries, or no
    /// checkpoint signed yet (a read on the pending index).
    pub async fn log_has_work(&self) -> Result<bool, StoreError> {
        dispatch!(self, b => b.log_has_work().await)
    }

    /// The newest signed checkpoint.
    pub async fn log_checkpoint(&self) -> Result<Option<CheckpointRow>, StoreError> {
        dispatch!(self, b => b.log_checkpoint().await)
    }

    /// The account's blind and its log entries by seq.
    pub async fn log_history(
        &self,
        address: &Address,
    ) -> Result<([u8; 32], Vec<LogEntryRow>), StoreError> {
        dispatch!(self, b => b.log_history(address).await)
    }

    /// Every log row in one snapshot (`log verify`).
    pub async fn log_dump(&self) -> Result<LogDump, StoreError> {
        dispatch!(self, b => b.log_dump().await)
    }

    /// The inclusion proof of leaf `index` in the tree of `size` (which a
    /// checkpoint signed): O(log n) stored hashes, read in one query.
    pub async fn log_inclusion(&self, size: u64, index: u64) -> Result<Vec<Hash>, StoreError> {
        let need = log::Recorder::indexes(|r| tlog_tiles::prove_record(size, index, r));
        let map = dispatch!(self, b => b.log_hashes(need).await)?;
        tlog_tiles::prove_record(size, index, &log::MapReader(&map)).map_err(log::log_err)
    }

    /// The consistency proof from the tree of `from` to that of `to`
    /// (`1 <= from <= to`, both signed): O(log n) stored hashes.
    pub async fn log_consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
        let need = log::Recorder::indexes(|r| tlog_tiles::prove_tree(to, from, r));
        let map = dispatch!(self, b => b.log_hashes(need).await)?;
        tlog_tiles::prove_tree(to, from, &log::MapReader(&map)).map_err(log::log_err)
    }
}
