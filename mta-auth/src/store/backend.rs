//! The storage primitives every backend implements (SQLite, PostgreSQL):
//! one trait, so the compiler keeps the backends in step and [`Store`]
//! dispatches to either without its callers knowing which.
//!
//! [`Store`]: super::Store

use std::collections::HashMap;
use std::sync::Arc;

use mailid_shared::translog::{Event, Hash, LogSigner};
use mailid_shared::{Address, KeyId};
use zeroize::Zeroizing;

use super::log::{CheckpointRow, LogDump, LogEntryRow};
use super::rows::{
    AccountRow, BackupPut, BackupRow, BackupWrite, CaRow, CodeSnapshot, CrlRow, IdentityRow,
    IssueRow, KeyWrite,
};
use super::StoreError;

/// The storage primitives; each method is one transaction, committed
/// (durably) before it returns `Ok`.
pub(crate) trait Backend {
    /// Adds an account; `Exists` if the address is taken.
    async fn add_account(
        &self,
        address: &Address,
        password_hash: String,
        totp_secret: Zeroizing<Vec<u8>>,
        now: i64,
    ) -> Result<(), StoreError>;
    /// Every account, ordered by address; lockouts ending after `now`.
    async fn list_accounts(&self, now: i64) -> Result<Vec<AccountRow>, StoreError>;
    /// `NotFound` if there is no such account.
    async fn set_enabled(&self, address: &Address, enabled: bool) -> Result<(), StoreError>;
    /// `NotFound` if there is no such account.
    async fn set_password(&self, address: &Address, hash: String) -> Result<(), StoreError>;
    /// Password hash and enabled flag.
    async fn login_info(&self, address: &Address) -> Result<Option<(String, bool)>, StoreError>;
    /// Whether the account exists and is enabled.
    async fn is_enabled(&self, address: &Address) -> Result<bool, StoreError>;

    /// Registers a CA; `Exists` if the name is taken.
    async fn add_ca(
        &self,
        name: &str,
        secret: Zeroizing<Vec<u8>>,
        trust_cert: Option<Vec<u8>>,
        now: i64,
    ) -> Result<(), StoreError>;
    /// Every registered CA, by name.
    async fn list_cas(&self) -> Result<Vec<CaRow>, StoreError>;
    /// Removes a CA and withdraws its identities in the same transaction;
    /// how many were withdrawn. `NotFound` and nothing changed without it.
    async fn remove_ca(&self, name: &str) -> Result<usize, StoreError>;
    /// The credential secret of a registered CA.
    async fn ca_secret(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError>;
    /// The trusted CA certificates (name, DER), by name.
    async fn trusted_certs(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Records that a code of (account, key) was issued at `now`; `NotFound`
    /// for an unknown or disabled account.
    async fn issue_code(
        &self,
        address: &Address,
        key_id: &KeyId,
        now: i64,
    ) -> Result<IssueRow, StoreError>;
    /// Loads the snapshot of (CA, account, key), runs `decide`, applies its
    /// write, all in one transaction serialised per account. The other keys
    /// issued at or after `live_since` may be left unloaded: when `decide`
    /// answers `None` it runs again on a snapshot that has them. `decide`
    /// may also run again when the backend retries the transaction.
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
        F: Fn(CodeSnapshot) -> Option<(V, Option<KeyWrite>)> + Send + Sync + 'static;

    /// Publishes (or replaces) an account's identity.
    async fn put_identity(&self, row: IdentityRow, now: i64) -> Result<(), StoreError>;
    /// The identity of an enabled account chaining to a registered CA.
    async fn identity(&self, address: &Address) -> Result<Option<IdentityRow>, StoreError>;
    /// Deletes the account's identity if it still has `serial`, and logs
    /// `event` in the same transaction; whether it did.
    async fn withdraw_identity(
        &self,
        address: &Address,
        serial: String,
        event: Event,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// The CRL kept for a distribution point.
    async fn crl(&self, url: &str) -> Result<Option<CrlRow>, StoreError>;
    /// Keeps a CRL unless a newer one (by thisUpdate) is kept.
    async fn put_crl(&self, url: &str, row: CrlRow, now: i64) -> Result<(), StoreError>;

    /// Stores (or replaces) the backup of (account, key) unless the account
    /// holds `max` backups of other keys (`Full`); counted and written in
    /// one transaction serialised per account. `NotFound` for an unknown
    /// or disabled account.
    async fn put_backup(
        &self,
        address: &Address,
        key_id: &KeyId,
        backup: BackupWrite,
        max: usize,
        now: i64,
    ) -> Result<BackupPut, StoreError>;
    /// The account's backups, by `stored_at` then key ID.
    async fn backups(&self, address: &Address) -> Result<Vec<BackupRow>, StoreError>;
    /// Deletes the backup of (account, key); `NotFound` if there is none.
    async fn delete_backup(&self, address: &Address, key_id: &KeyId) -> Result<(), StoreError>;

    /// Records the log key (origin, vkey) unless one is recorded; returns
    /// the recorded one.
    async fn log_bind(&self, origin: String, vkey: String) -> Result<(String, String), StoreError>;
    /// The recorded log key (origin, vkey), if any.
    async fn log_bound(&self) -> Result<Option<(String, String)>, StoreError>;
    /// One sequencer run (see `Store::log_sequence`).
    async fn log_sequence(
        &self,
        signer: Arc<LogSigner>,
        min_interval_ms: i64,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError>;
    /// Whether a sequencer run has work: unsequenced entries, or no
    /// checkpoint yet (a read, no lock).
    async fn log_has_work(&self) -> Result<bool, StoreError>;
    /// The newest signed checkpoint.
    async fn log_checkpoint(&self) -> Result<Option<CheckpointRow>, StoreError>;
    /// The account's blind and its entries by seq.
    async fn log_history(
        &self,
        address: &Address,
    ) -> Result<([u8; 32], Vec<LogEntryRow>), StoreError>;
    /// The stored hashes at `indexes` (absent ones left out).
    async fn log_hashes(&self, indexes: Vec<u64>) -> Result<HashMap<u64, Hash>, StoreError>;
    /// Every log row in one snapshot (`log verify`).
    async fn log_dump(&self) -> Result<LogDump, StoreError>;
}
