//! Key backups (SPEC §10): the checks on `PUT /v1/backups/{key_id}` and the
//! account-holder operations behind the three backup routes.
//!
//! The service keeps ciphertexts it cannot read: each must be one PEM
//! `ENCRYPTED PRIVATE KEY` block whose DER is a PKCS#8
//! EncryptedPrivateKeyInfo under PBES2 with AES-256-CBC, so a plaintext key
//! or a weaker scheme is refused before anything is stored. Without the
//! recovery key it cannot check that a ciphertext holds the key the key ID
//! names; the client checks that when it recovers. A backup may carry the
//! key's certificate (public) so that a new device can rebuild its store:
//! the MTA checks that it names the account and carries the key of
//! `{key_id}`.

use mailid_shared::pbes2::{self, Pbes2Error};
use mailid_shared::problem::ErrorCode;
use mailid_shared::protocol::{
    BackupList, BackupStored, BackupUpload, StoredBackup, BACKUP_MAX_CERT_PEM, BACKUP_MAX_PEM,
    BACKUP_MAX_PER_ACCOUNT, BACKUP_MAX_URL,
};
use mailid_shared::timefmt::rfc3339;
use mailid_shared::{pem, Address, KeyId, Problem};
use pkcs8::der::Decode;
use pkcs8::EncryptedPrivateKeyInfo;

use crate::identity::{parse_certs, x509};
use crate::store::{BackupPut, BackupWrite, Store, StoreError};

/// The one PEM label a backup may carry.
pub const LABEL: &str = "ENCRYPTED PRIVATE KEY";

/// AES block size: PBES2 AES-CBC ciphertexts are whole blocks.
const AES_BLOCK: usize = 16;

/// The `{key_id}` of a backup route as a strong key ID; 400 otherwise.
pub fn key_id(text: &str) -> Result<KeyId, Problem> {
    text.parse()
        .map_err(|e| Problem::bad_request(format!("the path's key ID is not a strong key ID: {e}")))
}

/// Checks an upload for `account` and `key_id` and returns it as stored.
/// `encrypted_key`: 413 over [`BACKUP_MAX_PEM`]; 400 unless it is exactly
/// one `ENCRYPTED PRIVATE KEY` block holding a PKCS#8
/// EncryptedPrivateKeyInfo with PBES2 and AES-256-CBC; kept as its DER
/// re-encoded as PEM (64 columns, LF). `certificate`, `chain`, `ca_url`:
/// see [`check_public_parts`].
pub fn check_upload(
    upload: &BackupUpload,
    account: &Address,
    key_id: &KeyId,
) -> Result<BackupWrite, Problem> {
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
    pbes2::require_aes256(&der).map_err(|e| match e {
        Pbes2Error::Unsupported(why) => Problem::bad_request(format!("encrypted_key: {why}")),
        other => Problem::bad_request(format!("encrypted_key: {other}")),
    })?;
    let n = info.encrypted_data.len();
    if n == 0 || n % AES_BLOCK != 0 {
        return Err(Problem::bad_request(
            "encrypted_key's ciphertext is not a whole number of AES blocks",
        ));
    }
    check_public_parts(upload, account, key_id)?;
    Ok(BackupWrite {
        encrypted_key: pem::encode(LABEL, &der),
        certificate: upload.certificate.clone(),
        chain: upload.chain.clone(),
        ca_url: upload.ca_url.clone(),
    })
}

/// The optional public parts of a backup: `certificate` must be one
/// certificate naming `account` whose key is the key of `key_id`; `chain`
/// PEM certificates; each at most [`BACKUP_MAX_CERT_PEM`] bytes (413
/// above); `ca_url` an http(s) URL of at most [`BACKUP_MAX_URL`] bytes.
fn check_public_parts(
    upload: &BackupUpload,
    account: &Address,
    key_id: &KeyId,
) -> Result<(), Problem> {
    for (what, text) in [
        ("certificate", &upload.certificate),
        ("chain", &upload.chain),
    ] {
        if text.as_ref().is_some_and(|t| t.len() > BACKUP_MAX_CERT_PEM) {
            return Err(Problem::new(
                ErrorCode::PayloadTooLarge,
                format!("{what} is larger than {BACKUP_MAX_CERT_PEM} bytes"),
            ));
        }
    }
    if let Some(text) = &upload.certificate {
        let certs = parse_certs(text, "certificate")?;
        let [(_, cert)] = certs.as_slice() else {
            return Err(Problem::bad_request(
                "certificate must be exactly one PEM certificate",
            ));
        };
        if x509::single_rfc822_name(cert).as_ref() != Some(account) {
            return Err(Problem::bad_request(format!(
                "certificate does not name {account} as its one address"
            )));
        }
        let spki =
            x509::spki_der(cert).map_err(|e| Problem::bad_request(format!("certificate: {e}")))?;
        if &KeyId::of_spki(&spki) != key_id {
            return Err(Problem::bad_request(format!(
                "certificate is not for the key {key_id}"
            )));
        }
    }
    if let Some(text) = &upload.chain {
        parse_certs(text, "chain")?;
    }
    if let Some(url) = &upload.ca_url {
        let ok = url.len() <= BACKUP_MAX_URL
            && (url.starts_with("https://") || url.starts_with("http://"))
            && !url.chars().any(|c| c.is_control() || c.is_whitespace());
        if !ok {
            return Err(Problem::bad_request(format!(
                "ca_url must be an http(s) URL of at most {BACKUP_MAX_URL} bytes"
            )));
        }
    }
    Ok(())
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
    let backup = check_upload(upload, account, key_id)?;
    match store
        .put_backup(account, key_id, backup, BACKUP_MAX_PER_ACCOUNT)
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
                certificate: r.certificate,
                chain: r.chain,
                ca_url: r.ca_url,
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
