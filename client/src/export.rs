//! `mailid export --p12` (SPEC §10): one stored identity — private key,
//! certificate and the whole chain — as a password-protected PKCS#12 file
//! that mail programs import (Thunderbird/NSS, Outlook, Apple Mail).
//!
//! The PKCS#12 structure is built by the `p12-keystore` crate, not by hand.
//! Default protection: PBES2 (PBKDF2-HMAC-SHA-256, AES-256-CBC) for the key
//! and the certificates, HMAC-SHA-256 MAC; `legacy`: pbeWithSHAAnd3-KeyTripleDES-CBC
//! and an HMAC-SHA-1 MAC for importers that know nothing newer.
//! The file is written exclusively: an existing file is never replaced.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use mailid_shared::{pem, Address, KeyId, Serial};
use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
    PrivateKeyChain,
};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::store::{Store, StoredIdentity};
use crate::{cert, secret};

/// Iterations of the key derivation for encryption and for the MAC alike
/// (a MAC with fewer would be the cheaper way to test guessed passwords):
/// the store's count, OWASP's 2023 advice for PBKDF2-HMAC-SHA-256. OpenSSL
/// 3.0 and NSS read it (tests/tests/client_p12.rs); p12-keystore reads up
/// to 1,000,000.
pub const P12_ITERATIONS: u32 = mailid_shared::pbes2::PASSPHRASE_ITERATIONS;

/// The environment variable that may hold the PKCS#12 password.
pub const PASSWORD_ENV: &str = "MAILID_P12_PASSWORD";

/// What to export and where.
pub struct ExportOptions<'a> {
    /// The account.
    pub address: &'a str,
    /// An earlier identity in the store; `None` for the current one.
    pub serial: Option<&'a str>,
    /// 3DES and a SHA-1 MAC instead of PBES2/AES-256 and SHA-256.
    pub legacy: bool,
    /// The PKCS#12 file to create; must not exist.
    pub out: &'a Path,
    /// The PKCS#12 password (not empty).
    pub password: &'a str,
    /// The store's passphrase, when its keys are encrypted.
    pub passphrase: Option<&'a [u8]>,
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    /// The file written.
    pub file: PathBuf,
    /// The account.
    pub address: Address,
    /// Serial of the exported certificate.
    pub serial: Serial,
    /// Strong key ID of its key.
    pub key_id: KeyId,
    /// Whether the legacy protection was used.
    pub legacy: bool,
    /// Certificates in the file: the account's and its chain.
    pub certificates: usize,
}

impl std::fmt::Display for Exported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wrote {}: the key and certificate of {} (serial {}, key ID {}) with {} chain \
             certificate(s), protected with {}",
            self.file.display(),
            self.address,
            self.serial,
            self.key_id,
            self.certificates - 1,
            if self.legacy {
                "3DES and a SHA-1 MAC (legacy)"
            } else {
                "AES-256 (PBES2) and a SHA-256 MAC"
            }
        )
    }
}

/// The PKCS#12 password: one line of stdin when `from_stdin`, else
/// `MAILID_P12_PASSWORD`. Missing or empty is an error.
pub fn password(from_stdin: bool) -> Result<Zeroizing<String>> {
    if from_stdin {
        return secret::read_line(std::io::stdin().lock(), "PKCS#12 password");
    }
    match std::env::var_os(PASSWORD_ENV) {
        None => Err(Error::Invalid(format!(
            "no PKCS#12 password: give --p12-password-stdin or set {PASSWORD_ENV}"
        ))),
        Some(p) if p.is_empty() => Err(Error::Invalid(format!(
            "{PASSWORD_ENV} is set but empty; an empty PKCS#12 password is refused"
        ))),
        Some(p) => p
            .into_string()
            .map(Zeroizing::new)
            .map_err(|_| Error::Invalid(format!("{PASSWORD_ENV} is not valid UTF-8"))),
    }
}

/// Exports one identity of `store` as a PKCS#12 file.
pub fn export_p12(store: &Store, opts: &ExportOptions<'_>) -> Result<Exported> {
    if opts.password.is_empty() {
        return Err(Error::Invalid(
            "an empty PKCS#12 password is refused".into(),
        ));
    }
    // Fail before the slow work; the exclusive write checks again.
    if fs::symlink_metadata(opts.out).is_ok() {
        return Err(Error::file(
            opts.out,
            "already exists; mailid does not replace it",
        ));
    }
    let address = crate::parse_address(opts.address)?;
    let id = pick(store, &address, opts.serial)?;
    let key = store.checked_key(&id, opts.passphrase)?;
    let cert_der = cert::pem_to_der(&store.certificate_pem(&id)?)?;
    let chain_path = store.path_of(&id).join("chain.pem");
    let chain = pem::decode_chain(&store.chain_pem(&id)?, "CERTIFICATE")
        .map_err(|e| Error::file(&chain_path, e.to_string()))?;
    if chain.is_empty() {
        return Err(Error::file(&chain_path, "no certificates in the chain"));
    }
    let bytes = pkcs12(&address, &id.key_id, &key, &cert_der, &chain, opts)?;
    write_new(opts.out, &bytes)?;
    Ok(Exported {
        file: opts.out.to_path_buf(),
        address,
        serial: id.serial,
        key_id: id.key_id,
        legacy: opts.legacy,
        certificates: 1 + chain.len(),
    })
}

/// The current identity, or the one with `serial`.
fn pick(store: &Store, address: &Address, serial: Option<&str>) -> Result<StoredIdentity> {
    let entry = store.account(address)?;
    let dir = store.dir().display();
    if entry.identities.is_empty() {
        return Err(Error::Invalid(format!(
            "the store {dir} holds no identity for {address}"
        )));
    }
    match serial {
        Some(s) => {
            let serial: Serial = s
                .parse()
                .map_err(|e| Error::Invalid(format!("serial {s}: {e}")))?;
            entry
                .identities
                .iter()
                .find(|i| i.serial == serial)
                .cloned()
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "the store {dir} holds no serial {serial} for {address}"
                    ))
                })
        }
        None => entry.current().cloned().ok_or_else(|| {
            Error::Invalid(format!(
                "the store {dir} holds no current identity for {address} (give --serial)"
            ))
        }),
    }
}

/// The PKCS#12 bytes: one key bag (friendly name = the address, localKeyId
/// = the strong key ID) and the certificate bags, leaf first, root last.
fn pkcs12(
    address: &Address,
    key_id: &KeyId,
    key_der: &[u8],
    cert_der: &[u8],
    chain: &[Vec<u8>],
    opts: &ExportOptions<'_>,
) -> Result<Vec<u8>> {
    let p12 = |e: p12_keystore::error::Error| {
        Error::Crypto(format!("cannot build the PKCS#12 file: {e}"))
    };
    let key = PrivateKey::from_der(key_der).map_err(p12)?;
    let certs = std::iter::once(cert_der)
        .chain(chain.iter().map(Vec::as_slice))
        .map(Certificate::from_der)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(p12)?;
    let mut ks = KeyStore::new();
    ks.add_entry(
        address.as_str(),
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(key_id.as_bytes(), key, certs)),
    );
    let (enc, mac) = if opts.legacy {
        (
            EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc,
            MacAlgorithm::HmacSha1,
        )
    } else {
        (
            EncryptionAlgorithm::PbeWithHmacSha256AndAes256,
            MacAlgorithm::HmacSha256,
        )
    };
    ks.writer(opts.password)
        .encryption_algorithm(enc)
        .encryption_iterations(P12_ITERATIONS)
        .mac_algorithm(mac)
        .mac_iterations(P12_ITERATIONS)
        .write()
        .map_err(p12)
}

/// Writes `bytes` to `path`, mode 0600, never replacing a file: a synced
/// temporary file in the same directory is hard-linked to `path` (which
/// fails if `path` exists) and then removed. Nothing is left on failure.
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::file(path, "not a file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    let result = write().and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match result {
        Ok(()) => {
            // The new name is durable once the directory is synced.
            let _ = File::open(dir).and_then(|d| d.sync_all());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.exists() => Err(
            Error::file(path, "already exists; mailid does not replace it"),
        ),
        Err(e) => Err(Error::io(path, &e)),
    }
}

#[cfg(test)]
#[path = "export_tests.rs"]
mod tests;
