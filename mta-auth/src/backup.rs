//! Key backups (SPEC §10): the checks on `PUT /v1/backups/{key_id}` and the
//! account-holder operations behind the three backup routes.
//!
//! The service keeps ciphertexts it cannot read: each must be one PEM
//! `ENCRYPTED PRIVATE KEY` block whose DER is a PKCS#8
//! EncryptedPrivateKeyInfo under PBES2 with AES-256-CBC, so a plaintext key
//! or a weaker scheme is refused before anything is stored. Without the
//! recovery key it cannot check that a ciphertext holds the key the key ID
//! names; the client checks that when it recovers.

use mailid_shared::problem::ErrorCode;
use mailid_shared::protocol::{
    BackupList, BackupStored, BackupUpload, StoredBackup, BACKUP_MAX_PEM, BACKUP_MAX_PER_ACCOUNT,
};
use mailid_shared::timefmt::rfc3339;
use mailid_shared::{pem, Address, KeyId, Problem};
use pkcs8::der::Decode;
use pkcs8::pkcs5::{pbes2, EncryptionScheme};
use pkcs8::EncryptedPrivateKeyInfo;

use crate::store::{BackupPut, Store, StoreError};

/// The one PEM label a backup may carry.
pub const LABEL: &str = "ENCRYPTED PRIVATE KEY";

/// AES block size: PBES2 AES-CBC ciphertexts are whole blocks.
const AES_BLOCK: usize = 16;

/// The `{key_id}` of a backup route as a strong key ID; 400 otherwise.
pub fn key_id(text: &str) -> Result<KeyId, Problem> {
    text.parse()
        .map_err(|e| Problem::bad_request(format!("the path's key ID is not a strong key ID: {e}")))
}

/// Checks an uploaded `encrypted_key` and returns it as stored: its DER
/// re-encoded as PEM (64 columns, LF). 413 over [`BACKUP_MAX_PEM`]; 400
/// unless it is exactly one `ENCRYPTED PRIVATE KEY` block holding a PKCS#8
/// EncryptedPrivateKeyInfo with PBES2 and AES-256-CBC.
pub fn check_upload(upload: &BackupUpload) -> Result<String, Problem> {
    let text = upload.encrypted_key.as_str();
    if text.len() > BACKUP_MAX_PEM {
        return Err(Problem::new(
            ErrorCode::PayloadTooLarge,
            format!("encrypted_key is larger than {BACKUP_MAX_PEM} bytes"),
        ));
    }
    let trimmed = text.trim();
    if !trimmed.starts_with("-----BEGIN ") || !trimmed.ends_with("-----") {
        return Err(Problem::bad_request(format!(
            "encrypted_key must be one PEM block labelled {LABEL} and nothing else"
        )));
    }
    let der = pem::decode_one(trimmed, &[LABEL]).map_err(|e| {
        Problem::bad_request(format!(
            "encrypted_key: {e}; the MTA keeps only encrypted private keys"
        ))
    })?;
    let info = EncryptedPrivateKeyInfo::from_der(&der).map_err(|e| {
        Problem::bad_request(format!(
            "encrypted_key is not a PKCS#8 EncryptedPrivateKeyInfo: {e}"
        ))
    })?;
    let scheme = match &info.encryption_algorithm {
        EncryptionScheme::Pbes2(p) => match &p.encryption {
            pbes2::EncryptionScheme::Aes256Cbc { .. } => None,
            pbes2::EncryptionScheme::Aes128Cbc { .. } => Some("PBES2 with AES-128-CBC".into()),
            pbes2::EncryptionScheme::Aes192Cbc { .. } => Some("PBES2 with AES-192-CBC".into()),
            other => Some(format!("PBES2 with the cipher {}", other.oid())),
        },
        other => Some(format!("the scheme {}", other.oid())),
    };
    if let Some(found) = scheme {
        return Err(Problem::bad_request(format!(
            "encrypted_key must be encrypted with PBES2 and AES-256-CBC, not {found}"
        )));
    }
    let n = info.encrypted_data.len();
    if n == 0 || n % AES_BLOCK != 0 {
        return Err(Problem::bad_request(
            "encrypted_key's ciphertext is not a whole number of AES blocks",
        ));
    }
    Ok(pem::encode(LABEL, &der))
}

/// Stores (or replaces) the account's backup of `key_id`; 409 when the
/// account already holds [`BACKUP_MAX_PER_ACCOUNT`] backups of other keys,
/// 401 when the account went away or was disabled since it authenticated.
pub async fn store(
    store: &Store,
    account: &Address,
    key_id: &KeyId,
    upload: &BackupUpload,
) -> Result<BackupStored, Problem> {
    let pem = check_upload(upload)?;
    match store
        .put_backup(account, key_id, pem, BACKUP_MAX_PER_ACCOUNT)
        .await
    {
        Ok(BackupPut::Stored(at)) => Ok(BackupStored {
            account: account.clone(),
            key_id: key_id.clone(),
            stored_at: rfc3339(at),
        }),
        Ok(BackupPut::Full) => Err(Problem::new(
            ErrorCode::Conflict,
            format!("the account already holds {BACKUP_MAX_PER_ACCOUNT} backups; delete one first"),
        )),
        Err(StoreError::NotFound(_)) => Err(Problem::unauthorized("authentication required")),
        Err(e) => Err(e.into()),
    }
}

/// The account's backups, by `stored_at` then key ID.
pub async fn list(store: &Store, account: &Address) -> Result<BackupList, Problem> {
    let rows = store.backups(account).await?;
    let backups = rows
        .into_iter()
        .map(|r| {
            Ok(StoredBackup {
                key_id: KeyId::from_bytes(&r.key_id).map_err(Problem::internal)?,
                encrypted_key: r.encrypted_key,
                stored_at: rfc3339(r.stored_at),
            })
        })
        .collect::<Result<_, Problem>>()?;
    Ok(BackupList {
        account: account.clone(),
        backups,
    })
}

/// Deletes the account's backup of `key_id`; 404 if it has none (whoever
/// else has one).
pub async fn delete(store: &Store, account: &Address, key_id: &KeyId) -> Result<(), Problem> {
    match store.delete_backup(account, key_id).await {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound(_)) => {
            Err(Problem::not_found(format!("no backup for key ID {key_id}")))
        }
        Err(e) => Err(e.into()),
    }
}
