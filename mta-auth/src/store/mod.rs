//! Storage behind a narrow API: SQLite through `shared::db::Db`.
//!
//! Every read-modify-write (issuing and validating codes, lockout counters,
//! publishing identities) runs as one `Db::write` job: serialised on the
//! one writer and durable before it answers, hence race-free. Callers see
//! only the domain methods of [`Store`] and plain row types, so another
//! backend (PostgreSQL for several instances) can offer the same methods;
//! decisions such as a code's validity are the caller's, passed in as a
//! function where they must run inside the transaction.

mod accounts;
mod cas;
mod codes;
mod identities;
mod rows;

use std::path::Path;

use mailid_shared::db::{Db, DbError, OpenMode};

pub use accounts::AccountRow;
pub use cas::CaRow;
pub use identities::{CrlRow, IdentityRow};
pub use rows::{AccountCodes, CodeSnapshot, IssueRow, KeyRow, KeyState, KeyWrite, LockState};

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
];

/// A storage failure or a refused change.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0} not found")]
    NotFound(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(DbError::Sqlite(e))
    }
}

/// The MTA auth service's storage.
#[derive(Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// Opens and migrates the database at `path`; only
    /// [`OpenMode::Create`] (`init`) creates it (0600).
    pub fn open(path: &Path, mode: OpenMode) -> Result<Store, StoreError> {
        let db = Db::open(path, MIGRATIONS, mode)?;
        identities::fill_ca_names(path)?;
        Ok(Store { db })
    }
}
