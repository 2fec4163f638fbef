//! Plain rows, owned by storage so that callers, the pure TOTP and lockout
//! logic and every backend share them without storage knowing what they
//! mean.

use mailid_shared::Address;

use zeroize::Zeroizing;

/// The persisted lockout state of one (account, key); its rules are in
/// `crate::lockout`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockState {
    /// Consecutive failures since the last success or lockout.
    pub failures: u32,
    /// Lockouts since the last success.
    pub lockouts: u32,
    /// Unix time the current lockout ends (0: none).
    pub locked_until: i64,
}

/// The code state of one key of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    /// Binary key ID.
    pub key_id: Vec<u8>,
    /// Bumped by every successful validation.
    pub generation: u64,
    /// When a code of this generation was last issued, if it was.
    pub issued_at: Option<i64>,
}

/// One row of `totp_keys`: a key's code state and its lockout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub state: KeyState,
    pub lock: LockState,
}

/// An account's TOTP secret and whether it is enabled (no `Debug`: it
/// holds the secret).
#[derive(Clone)]
pub struct AccountCodes {
    pub secret: Zeroizing<Vec<u8>>,
    pub enabled: bool,
}

/// What issuing a code records and needs: the account's secret and the
/// key's current generation (no `Debug`: it holds the secret).
pub struct IssueRow {
    pub secret: Zeroizing<Vec<u8>>,
    pub generation: u64,
}

/// Everything a validation reads, loaded inside its write transaction
/// (no `Debug`: it holds secrets).
#[derive(Clone)]
pub struct CodeSnapshot {
    /// The CA's registered secret; `None`: the CA is not registered.
    pub ca_secret: Option<Zeroizing<Vec<u8>>>,
    /// `None`: no such account.
    pub account: Option<AccountCodes>,
    /// The presented key's row, if a code was ever issued for it.
    pub target: Option<KeyRow>,
    /// The account's other keys with a code issued at or after the
    /// `live_since` the snapshot was loaded for; `None`: not loaded (a
    /// decision that needs them says so, and gets a snapshot with them).
    pub others: Option<Vec<KeyState>>,
}

/// A write to the presented key's row, made in the same transaction as
/// the snapshot was loaded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWrite {
    /// The code was used: bump the generation, forget the issue time and
    /// reset the lockout.
    ConsumeCode,
    /// Store this lockout state.
    SaveLock(LockState),
}

/// One account as `account list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AccountRow {
    pub address: Address,
    pub enabled: bool,
    /// Unix time the latest current lockout of the account's keys ends, if
    /// one of its keys is locked (lockouts are per (account, key)); in JSON
    /// an RFC 3339 UTC time, or null.
    #[serde(serialize_with = "rfc3339_or_null")]
    pub locked_until: Option<i64>,
}

/// Serialises Unix seconds as RFC 3339 UTC text (SPEC §3), `None` as null.
fn rfc3339_or_null<S: serde::Serializer>(t: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&mailid_shared::timefmt::rfc3339(*t)),
        None => s.serialize_none(),
    }
}

/// One CA as `ca list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CaRow {
    pub name: String,
    /// Whether a trusted CA certificate is registered for identity upload.
    pub trusts_certificate: bool,
    pub created_at: String,
}

/// A published identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRow {
    pub address: Address,
    /// Leaf certificate DER.
    pub certificate: Vec<u8>,
    /// The chain as one PEM bundle.
    pub chain: String,
    /// Binary strong key ID.
    pub key_id: Vec<u8>,
    pub serial: String,
    pub not_after: i64,
    /// Name of the registered CA whose trusted certificate ends the chain.
    pub ca_name: String,
}

/// The latest CRL seen at one distribution point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlRow {
    pub der: Vec<u8>,
    pub this_update: i64,
    pub next_update: Option<i64>,
}

/// One stored key backup: an opaque ciphertext the service cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRow {
    /// Binary strong key ID.
    pub key_id: Vec<u8>,
    /// The PEM text as stored.
    pub encrypted_key: String,
    /// Unix time it was stored (or last replaced).
    pub stored_at: i64,
    /// The key's certificate, chain and issuing CA's URL, when given.
    pub certificate: Option<String>,
    pub chain: Option<String>,
    pub ca_url: Option<String>,
}

/// A checked backup, as written.
#[derive(Debug, Clone)]
pub struct BackupWrite {
    /// The ciphertext's PEM text.
    pub encrypted_key: String,
    /// The key's certificate (PEM), its chain and its CA's URL: public.
    pub certificate: Option<String>,
    pub chain: Option<String>,
    pub ca_url: Option<String>,
}

/// What storing a backup did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupPut {
    /// Stored (added or replaced) at this Unix time.
    Stored(i64),
    /// Not stored: the account already holds the most backups allowed, none
    /// of them for this key ID.
    Full,
}
