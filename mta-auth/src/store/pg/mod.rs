//! The PostgreSQL backend: any number of replicas on one database, through
//! `shared::pg::PgDb` (a pool, transactions committed before they answer,
//! serialization failures retried, [`DbError::Unavailable`] when the
//! server cannot be reached).
//!
//! Per-account read-modify-writes (issuing and validating codes) first
//! lock the account's row, so a code validates at most once whichever
//! replica is asked and lockout counters are exact.
//!
//! [`DbError::Unavailable`]: mailid_shared::db::DbError::Unavailable

mod accounts;
mod backups;
mod codes;
mod identities;

use std::time::Duration;

use mailid_shared::db::OpenMode;
use mailid_shared::pg::{PgDb, PgUrl};
use mailid_shared::{Address, KeyId};
use zeroize::Zeroizing;

use super::backend::Backend;
use super::rows::{
    AccountRow, BackupPut, BackupRow, BackupWrite, CaRow, CodeSnapshot, CrlRow, IdentityRow,
    IssueRow, KeyWrite,
};
use super::StoreError;

/// The service's name in `mailid_schema`.
pub(crate) const SERVICE: &str = "mailid-mta-auth";

/// The tables of this service, parents first (the order rows are copied
/// in by `db migrate`).
pub(crate) const TABLES: &[&str] = &[
    "accounts",
    "cas",
    "totp_keys",
    "identities",
    "crls",
    "backups",
];

/// Schema migrations; `MIGRATIONS[i]` brings the schema to version `i + 1`.
/// Version 1 has the same tables and meaning as SQLite's version 2, without
/// the account-wide lockout columns no version reads any more; version 2 is
/// SQLite's version 3 (key backups).
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE accounts (
    address       TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    totp_secret   BYTEA NOT NULL,
    enabled       BOOLEAN NOT NULL DEFAULT TRUE,
    created_at    BIGINT NOT NULL
);
CREATE TABLE totp_keys (
    address      TEXT NOT NULL REFERENCES accounts(address) ON DELETE CASCADE,
    key_id       BYTEA NOT NULL,
    generation   BIGINT NOT NULL DEFAULT 0,
    issued_at    BIGINT,
    failures     INTEGER NOT NULL DEFAULT 0,
    lockouts     INTEGER NOT NULL DEFAULT 0,
    locked_until BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (address, key_id)
);
CREATE TABLE cas (
    name       TEXT PRIMARY KEY,
    secret     BYTEA NOT NULL,
    trust_cert BYTEA,
    created_at BIGINT NOT NULL
);
CREATE TABLE identities (
    address     TEXT PRIMARY KEY REFERENCES accounts(address) ON DELETE CASCADE,
    certificate BYTEA NOT NULL,
    chain       TEXT NOT NULL,
    key_id      BYTEA NOT NULL,
    serial      TEXT NOT NULL,
    not_after   BIGINT NOT NULL,
    uploaded_at BIGINT NOT NULL,
    -- The registered CA whose trusted certificate ends the chain ('' for
    -- an identity that chains to none, never served).
    ca_name     TEXT NOT NULL
);
CREATE INDEX identities_by_ca ON identities (ca_name);
CREATE TABLE crls (
    url         TEXT PRIMARY KEY,
    der         BYTEA NOT NULL,
    this_update BIGINT NOT NULL,
    next_update BIGINT,
    fetched_at  BIGINT NOT NULL
);
",
    "
-- Key backups (SPEC §10): PEM `ENCRYPTED PRIVATE KEY` texts under a
-- recovery key the service never sees; kept when the account is disabled.
CREATE TABLE backups (
    account       TEXT NOT NULL REFERENCES accounts(address) ON DELETE CASCADE,
    key_id        BYTEA NOT NULL,
    encrypted_key TEXT NOT NULL,
    stored_at     BIGINT NOT NULL,
    -- The key's public certificate, chain and CA URL, when the client
    -- gave them (a new device rebuilds its store from them).
    certificate   TEXT,
    chain         TEXT,
    ca_url        TEXT,
    PRIMARY KEY (account, key_id)
);
",
];

/// The PostgreSQL backend.
#[derive(Clone)]
pub(crate) struct PgStore {
    db: PgDb,
}

impl PgStore {
    /// Connects and migrates (several replicas starting at once migrate
    /// safely); with [`OpenMode::Existing`] a database without this
    /// service's schema is refused. Synchronous: not from async code.
    pub(crate) fn open(url: &PgUrl, mode: OpenMode) -> Result<PgStore, StoreError> {
        Ok(PgStore {
            db: PgDb::open(url, SERVICE, MIGRATIONS, mode)?,
        })
    }

    /// The database, for `db migrate`.
    pub(crate) fn db(&self) -> &PgDb {
        &self.db
    }

    /// Whether the server answers within `timeout`.
    pub(crate) async fn ping(&self, timeout: Duration) -> Result<(), StoreError> {
        Ok(self.db.ping(timeout).await?)
    }
}

impl Backend for PgStore {
    async fn add_account(
        &self,
        address: &Address,
        password_hash: String,
        totp_secret: Zeroizing<Vec<u8>>,
        now: i64,
    ) -> Result<(), StoreError> {
        accounts::add(&self.db, address, password_hash, totp_secret, now).await
    }
    async fn list_accounts(&self, now: i64) -> Result<Vec<AccountRow>, StoreError> {
        accounts::list(&self.db, now).await
    }
    async fn set_enabled(&self, address: &Address, enabled: bool) -> Result<(), StoreError> {
        accounts::set_enabled(&self.db, address, enabled).await
    }
    async fn set_password(&self, address: &Address, hash: String) -> Result<(), StoreError> {
        accounts::set_password(&self.db, address, hash).await
    }
    async fn login_info(&self, address: &Address) -> Result<Option<(String, bool)>, StoreError> {
        accounts::login_info(&self.db, address).await
    }
    async fn is_enabled(&self, address: &Address) -> Result<bool, StoreError> {
        accounts::is_enabled(&self.db, address).await
    }
    async fn add_ca(
        &self,
        name: &str,
        secret: Zeroizing<Vec<u8>>,
        trust_cert: Option<Vec<u8>>,
        now: i64,
    ) -> Result<(), StoreError> {
        accounts::add_ca(&self.db, name, secret, trust_cert, now).await
    }
    async fn list_cas(&self) -> Result<Vec<CaRow>, StoreError> {
        accounts::list_cas(&self.db).await
    }
    async fn remove_ca(&self, name: &str) -> Result<usize, StoreError> {
        accounts::remove_ca(&self.db, name).await
    }
    async fn ca_secret(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        accounts::ca_secret(&self.db, name).await
    }
    async fn trusted_certs(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        accounts::trusted_certs(&self.db).await
    }
    async fn issue_code(
        &self,
        address: &Address,
        key_id: &KeyId,
        now: i64,
    ) -> Result<IssueRow, StoreError> {
        codes::issue(&self.db, address, key_id, now).await
    }
    async fn validate_code<V, F>(
        &self,
        ca_name: &str,
        address: &Address,
        key_id: &KeyId,
        live_since: i64,
        decide: F,
    ) -> Result<V, StoreError>
    where
        V: Send + 'static,
        F: Fn(CodeSnapshot) -> (V, Option<KeyWrite>) + Send + Sync + 'static,
    {
        codes::validate(&self.db, ca_name, address, key_id, live_since, decide).await
    }
    async fn put_identity(&self, row: IdentityRow, now: i64) -> Result<(), StoreError> {
        identities::put(&self.db, row, now).await
    }
    async fn identity(&self, address: &Address) -> Result<Option<IdentityRow>, StoreError> {
        identities::get(&self.db, address).await
    }
    async fn crl(&self, url: &str) -> Result<Option<CrlRow>, StoreError> {
        identities::crl(&self.db, url).await
    }
    async fn put_crl(&self, url: &str, row: CrlRow, now: i64) -> Result<(), StoreError> {
        identities::put_crl(&self.db, url, row, now).await
    }
    async fn put_backup(
        &self,
        address: &Address,
        key_id: &KeyId,
        backup: BackupWrite,
        max: usize,
        now: i64,
    ) -> Result<BackupPut, StoreError> {
        backups::put(&self.db, address, key_id, backup, max, now).await
    }
    async fn backups(&self, address: &Address) -> Result<Vec<BackupRow>, StoreError> {
        backups::list(&self.db, address).await
    }
    async fn delete_backup(&self, address: &Address, key_id: &KeyId) -> Result<(), StoreError> {
        backups::delete(&self.db, address, key_id).await
    }
}
