//! The SQLite backend (the embedded default): one file in the data dir
//! through `shared::db::Db`, whose one writer thread serialises every
//! read-modify-write and makes it durable before it answers.

mod accounts;
mod backups;
mod cas;
mod codes;
mod identities;
mod log;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use mailid_shared::db::{Db, OpenMode};
use mailid_shared::translog::{Event, Hash, LogSigner};
use mailid_shared::{Address, KeyId};
use zeroize::Zeroizing;

use super::backend::Backend;
use super::log::{CheckpointRow, LogDump, LogEntryRow};
use super::rows::{
    AccountRow, BackupPut, BackupRow, BackupWrite, CaRow, CodeSnapshot, CrlRow, IdentityRow,
    IssueRow, KeyWrite,
};
use super::StoreError;

/// Schema migrations; `MIGRATIONS[i]` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE accounts (
    address       TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    totp_secret   BLOB NOT NULL,
    enabled       INTEGER NOT NULL DEFAULT 1,
    failures      INTEGER NOT NULL DEFAULT 0,
    lockouts      INTEGER NOT NULL DEFAULT 0,
    locked_until  INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);
CREATE TABLE totp_keys (
    address    TEXT NOT NULL REFERENCES accounts(address) ON DELETE CASCADE,
    key_id     BLOB NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    issued_at  INTEGER,
    PRIMARY KEY (address, key_id)
) WITHOUT ROWID;
CREATE TABLE cas (
    name       TEXT PRIMARY KEY,
    secret     BLOB NOT NULL,
    trust_cert BLOB,
    created_at INTEGER NOT NULL
);
CREATE TABLE identities (
    address     TEXT PRIMARY KEY REFERENCES accounts(address) ON DELETE CASCADE,
    certificate BLOB NOT NULL,
    chain       TEXT NOT NULL,
    key_id      BLOB NOT NULL,
    serial      TEXT NOT NULL,
    not_after   INTEGER NOT NULL,
    uploaded_at INTEGER NOT NULL
);
CREATE TABLE crls (
    url         TEXT PRIMARY KEY,
    der         BLOB NOT NULL,
    this_update INTEGER NOT NULL,
    next_update INTEGER,
    fetched_at  INTEGER NOT NULL
);
",
    "
-- Version 2. Lockout per (account, key) on the key's row; the account-wide
-- counters of version 1 are no longer read (an account-wide lock let anyone
-- lock any holder out with guesses against keys that had no live code).
ALTER TABLE totp_keys ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE totp_keys ADD COLUMN lockouts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE totp_keys ADD COLUMN locked_until INTEGER NOT NULL DEFAULT 0;
UPDATE accounts SET failures = 0, lockouts = 0, locked_until = 0;
-- The registered CA whose trusted certificate a published identity chains
-- to: `ca remove` withdraws its identities, and a lookup serves one only
-- while that CA is registered. NULL: published before version 2 (filled
-- in by `Store::open`).
ALTER TABLE identities ADD COLUMN ca_name TEXT;
CREATE INDEX identities_by_ca ON identities (ca_name);
",
    "
-- Version 3. Key backups (SPEC §10): PEM `ENCRYPTED PRIVATE KEY` texts
-- under a recovery key the service never sees; kept when the account is
-- disabled.
CREATE TABLE backups (
    account       TEXT NOT NULL REFERENCES accounts(address) ON DELETE CASCADE,
    key_id        BLOB NOT NULL,
    encrypted_key TEXT NOT NULL,
    stored_at     INTEGER NOT NULL,
    -- The key's public certificate, chain and CA URL, when the client
    -- gave them (a new device rebuilds its store from them).
    certificate   TEXT,
    chain         TEXT,
    ca_url        TEXT,
    PRIMARY KEY (account, key_id)
) WITHOUT ROWID;
",
    "
-- Version 4. The identity log (SPEC §11): one entry per change of an
-- account's published identity, written in the change's transaction
-- (leaf_index NULL), given its leaf index by the sequencer, which stores
-- the tree's hashes (Go sumdb/tlog's stored hash index) and signs a
-- checkpoint at most once a second. No address is stored: accounts are
-- blinds (HMAC under log_config.blind_key).
CREATE TABLE log_config (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    blind_key  BLOB NOT NULL,
    origin     TEXT,
    vkey       TEXT,
    created_at INTEGER NOT NULL
);
CREATE TABLE log_heads (
    blind BLOB PRIMARY KEY,
    seq   INTEGER NOT NULL,
    head  BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE log_entries (
    id         INTEGER PRIMARY KEY,
    leaf_index INTEGER UNIQUE,
    blind      BLOB NOT NULL,
    seq        INTEGER NOT NULL,
    entry      BLOB NOT NULL,
    leaf_hash  BLOB NOT NULL,
    UNIQUE (blind, seq)
);
CREATE INDEX log_pending ON log_entries (id) WHERE leaf_index IS NULL;
CREATE TABLE log_hashes (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE log_state (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    size INTEGER NOT NULL,
    root BLOB NOT NULL
);
INSERT INTO log_state VALUES
    (1, 0, X'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
CREATE TABLE log_checkpoints (
    size      INTEGER PRIMARY KEY,
    root      BLOB NOT NULL,
    note      TEXT NOT NULL,
    signed_at INTEGER NOT NULL
);
",
];

/// The SQLite backend.
#[derive(Clone)]
pub(crate) struct SqliteStore {
    db: Db,
    /// The HMAC key of account blinds (read at open).
    blind_key: std::sync::Arc<Zeroizing<Vec<u8>>>,
}

impl SqliteStore {
    /// Opens and migrates the database at `path`; only
    /// [`OpenMode::Create`] (`init`) creates it (0600).
    pub(crate) fn open(path: &Path, mode: OpenMode) -> Result<SqliteStore, StoreError> {
        let db = Db::open(path, MIGRATIONS, mode)?;
        identities::fill_ca_names(path)?;
        let blind_key = std::sync::Arc::new(log::open(path)?);
        Ok(SqliteStore { db, blind_key })
    }
}

impl Backend for SqliteStore {
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
        cas::add(&self.db, name, secret, trust_cert, now).await
    }
    async fn list_cas(&self) -> Result<Vec<CaRow>, StoreError> {
        cas::list(&self.db).await
    }
    async fn remove_ca(&self, name: &str) -> Result<usize, StoreError> {
        let now = mailid_shared::timefmt::now_unix();
        cas::remove(&self.db, name, self.blind_key.clone(), now).await
    }
    async fn ca_secret(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        cas::secret(&self.db, name).await
    }
    async fn trusted_certs(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        cas::trusted_certs(&self.db).await
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
        F: Fn(CodeSnapshot) -> Option<(V, Option<KeyWrite>)> + Send + Sync + 'static,
    {
        codes::validate(&self.db, ca_name, address, key_id, live_since, decide).await
    }
    async fn put_identity(&self, row: IdentityRow, now: i64) -> Result<(), StoreError> {
        identities::put(&self.db, row, self.blind_key.clone(), now).await
    }
    async fn identity(&self, address: &Address) -> Result<Option<IdentityRow>, StoreError> {
        identities::get(&self.db, address).await
    }
    async fn withdraw_identity(
        &self,
        address: &Address,
        serial: String,
        event: Event,
        now: i64,
    ) -> Result<bool, StoreError> {
        identities::withdraw(
            &self.db,
            address,
            serial,
            event,
            self.blind_key.clone(),
            now,
        )
        .await
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

    async fn log_bind(&self, origin: String, vkey: String) -> Result<(String, String), StoreError> {
        log::bind(&self.db, origin, vkey).await
    }
    async fn log_bound(&self) -> Result<Option<(String, String)>, StoreError> {
        log::bound(&self.db).await
    }
    async fn log_sequence(
        &self,
        signer: Arc<LogSigner>,
        min_interval_ms: i64,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        log::sequence(&self.db, signer, min_interval_ms, now_ms).await
    }
    async fn log_has_work(&self) -> Result<bool, StoreError> {
        log::has_work(&self.db).await
    }
    async fn log_checkpoint(&self) -> Result<Option<CheckpointRow>, StoreError> {
        log::checkpoint(&self.db).await
    }
    async fn log_history(
        &self,
        address: &Address,
    ) -> Result<([u8; 32], Vec<LogEntryRow>), StoreError> {
        log::history(
            &self.db,
            self.blind_key.clone(),
            address.as_str().to_string(),
        )
        .await
    }
    async fn log_hashes(&self, indexes: Vec<u64>) -> Result<HashMap<u64, Hash>, StoreError> {
        log::hashes(&self.db, indexes).await
    }
    async fn log_dump(&self) -> Result<LogDump, StoreError> {
        log::dump(&self.db, self.blind_key.clone()).await
    }
}
