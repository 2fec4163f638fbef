//! Request and answer bodies of both services (SPEC §4 and §5).
//!
//! Times are RFC 3339 UTC strings ([`crate::timefmt`]); certificates, chains
//! and CRLs travel as PEM text.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::keyid::KeyId;
use crate::serial::Serial;

/// `POST /v1/totp` (MTA): ask for a code bound to a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TotpRequest {
    pub key_id: KeyId,
}

/// Answer to `POST /v1/totp`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TotpResponse {
    pub account: Address,
    pub totp: String,
    pub digits: u32,
    pub period: u64,
    pub expires_at: String,
    pub key_id: KeyId,
}

/// `POST /v1/validate` (MTA, CA-authenticated): check a code once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidateRequest {
    pub account: Address,
    pub totp: String,
    pub key_id: KeyId,
}

/// Why a validation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValidateReason {
    Invalid,
    Expired,
    Replayed,
    Locked,
    UnknownAccount,
    KeyMismatch,
}

impl ValidateReason {
    pub const ALL: [ValidateReason; 6] = [
        ValidateReason::Invalid,
        ValidateReason::Expired,
        ValidateReason::Replayed,
        ValidateReason::Locked,
        ValidateReason::UnknownAccount,
        ValidateReason::KeyMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ValidateReason::Invalid => "invalid",
            ValidateReason::Expired => "expired",
            ValidateReason::Replayed => "replayed",
            ValidateReason::Locked => "locked",
            ValidateReason::UnknownAccount => "unknown-account",
            ValidateReason::KeyMismatch => "key-mismatch",
        }
    }
}

impl fmt::Display for ValidateReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Answer to `POST /v1/validate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateResponse {
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub account: Option<Address>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key_id: Option<KeyId>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<ValidateReason>,
    /// Seconds until a lockout ends (with reason `locked`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub retry_after: Option<u64>,
}

impl ValidateResponse {
    pub fn ok(account: Address, key_id: KeyId) -> Self {
        ValidateResponse {
            valid: true,
            account: Some(account),
            key_id: Some(key_id),
            reason: None,
            retry_after: None,
        }
    }

    pub fn rejected(reason: ValidateReason, retry_after: Option<u64>) -> Self {
        ValidateResponse {
            valid: false,
            account: None,
            key_id: None,
            reason: Some(reason),
            retry_after,
        }
    }
}

/// Most items one `POST /v1/validate/batch` carries.
pub const MAX_VALIDATE_BATCH: usize = 64;

/// `POST /v1/validate/batch` (MTA, CA-authenticated): check 1 to
/// [`MAX_VALIDATE_BATCH`] codes in one round trip, each exactly as
/// `POST /v1/validate` checks one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidateBatchRequest {
    pub items: Vec<ValidateRequest>,
}

/// Answer to `POST /v1/validate/batch`: one result per item, in the
/// items' order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateBatchResponse {
    pub results: Vec<ValidateResponse>,
}

/// `PUT /v1/identity` (MTA): publish the holder's identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityUpload {
    pub certificate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
}

/// Answer to `PUT /v1/identity`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityUploaded {
    pub account: Address,
    pub serial: Serial,
    pub key_id: KeyId,
    pub not_after: String,
}

/// Answer to `GET /v1/identity/{address}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishedIdentity {
    pub account: Address,
    pub certificate: String,
    pub chain: String,
    pub key_id: KeyId,
    pub serial: Serial,
    pub not_after: String,
    /// The account's identity history with an inclusion proof (SPEC §11);
    /// absent from MTAs without the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<crate::translog::History>,
}

/// `PUT /v1/backups/{key_id}` (MTA, SPEC §10): store one encrypted key.
/// `encrypted_key` is a PEM `ENCRYPTED PRIVATE KEY` (PKCS#8 PBES2 with
/// AES-256), at most [`BACKUP_MAX_PEM`] bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupUpload {
    pub encrypted_key: String,
    /// The key's certificate (PEM), so a recovering device can rebuild its
    /// store; when given, the MTA checks that it names the account and
    /// carries the key of `{key_id}`. Certificates are public.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// The certificate's chain (PEM bundle, issuer first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// Base URL of the CA that issued the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_url: Option<String>,
}

/// Largest `encrypted_key` the MTA keeps (16 KiB of PEM).
pub const BACKUP_MAX_PEM: usize = 16 * 1024;
/// Largest `certificate` or `chain` of a backup (PEM bytes each).
pub const BACKUP_MAX_CERT_PEM: usize = 16 * 1024;
/// Longest `ca_url` of a backup.
pub const BACKUP_MAX_URL: usize = 2048;
/// Most backups the MTA keeps for one account.
pub const BACKUP_MAX_PER_ACCOUNT: usize = 64;

/// Answer to `PUT /v1/backups/{key_id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupStored {
    pub account: Address,
    pub key_id: KeyId,
    pub stored_at: String,
}

/// One stored backup, as `GET /v1/backups` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredBackup {
    pub key_id: KeyId,
    pub encrypted_key: String,
    pub stored_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_url: Option<String>,
}

/// Answer to `GET /v1/backups`: the authenticated account's backups, by
/// key ID.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupList {
    pub account: Address,
    pub backups: Vec<StoredBackup>,
}

/// `POST /v1/certificates` (CA): enroll a CSR with a code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub csr: String,
    pub totp: String,
}

/// `POST /v1/certificates/check` (CA): would the CA accept this CSR? A
/// read-only preflight that takes no code, so a client can learn that the
/// CA refuses (unknown domain, key, CSR, rate limit, wrong URL) before it
/// revokes anything elsewhere.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckRequest {
    pub csr: String,
}

/// Answer to `POST /v1/certificates/check` (200): what an enrollment of the
/// CSR would certify. It promises nothing about the code the enrollment
/// will carry, which only the MTA can check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResponse {
    pub account: Address,
    pub key_id: KeyId,
    /// The account's domain, which the CA routes to an MTA.
    pub domain: String,
}

/// Answer to `POST /v1/certificates` (201).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub serial: Serial,
    pub account: Address,
    pub key_id: KeyId,
    pub not_before: String,
    pub not_after: String,
    pub certificate: String,
    /// One PEM bundle: the issuer first, the root last.
    pub chain: String,
    /// Serials this enrollment revoked (reason `superseded`).
    pub revoked: Vec<Serial>,
}

/// CRL reason codes mailid uses (RFC 5280 §5.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RevocationReason {
    #[serde(rename = "unspecified")]
    Unspecified,
    #[serde(rename = "keyCompromise")]
    KeyCompromise,
    #[serde(rename = "affiliationChanged")]
    AffiliationChanged,
    #[serde(rename = "superseded")]
    Superseded,
    #[serde(rename = "cessationOfOperation")]
    CessationOfOperation,
    #[serde(rename = "privilegeWithdrawn")]
    PrivilegeWithdrawn,
}

impl RevocationReason {
    pub const ALL: [RevocationReason; 6] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn,
    ];

    /// The RFC 5280 CRLReason value.
    pub fn code(self) -> u8 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
            RevocationReason::PrivilegeWithdrawn => 9,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::PrivilegeWithdrawn => "privilegeWithdrawn",
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RevocationReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown revocation reason '{s}' (expected one of: {})",
                    Self::ALL.map(|r| r.as_str()).join(", ")
                )
            })
    }
}

/// `POST /v1/revocations` (CA): the holder revokes with a code bound to the
/// certificate's key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeRequest {
    pub serial: Serial,
    pub totp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RevocationReason>,
}

/// Answer to `POST /v1/revocations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeResponse {
    pub serial: Serial,
    pub revoked_at: String,
    pub reason: RevocationReason,
}

/// Status of a certificate at the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertStatus {
    Valid,
    Revoked,
    Expired,
}

impl CertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CertStatus::Valid => "valid",
            CertStatus::Revoked => "revoked",
            CertStatus::Expired => "expired",
        }
    }
}

impl FromStr for CertStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "valid" => Ok(CertStatus::Valid),
            "revoked" => Ok(CertStatus::Revoked),
            "expired" => Ok(CertStatus::Expired),
            _ => Err(format!(
                "unknown status '{s}' (expected valid, revoked or expired)"
            )),
        }
    }
}

/// Answer to `GET /v1/certificates/{serial}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateInfo {
    pub serial: Serial,
    pub account: Address,
    pub key_id: KeyId,
    pub status: CertStatus,
    pub not_before: String,
    pub not_after: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RevocationReason>,
    pub certificate: String,
}

/// Answer to `GET /v1/accounts/{address}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountInfo {
    pub account: Address,
    pub current: Option<Serial>,
    pub certificates: Vec<CertificateInfo>,
}
