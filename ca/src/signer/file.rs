//! The CA key as a PKCS#8 file in the data directory (the key the CA has
//! always had), signing in process with rcgen on aws-lc-rs. Reading and
//! writing the file itself is [`crate::keys`]'s job.

use std::path::Path;

use rcgen::{KeyPair, PublicKeyData, SigningKey};
use zeroize::Zeroizing;

use super::SignError;
use crate::keys::{self, KeyType};

/// A CA key held in memory, loaded from or bound for the key file.
pub struct FileKey {
    pair: KeyPair,
    key_type: KeyType,
}

impl FileKey {
    /// A fresh key of type `key_type`.
    pub fn generate(key_type: KeyType) -> anyhow::Result<FileKey> {
        Ok(FileKey {
            pair: key_type.generate()?,
            key_type,
        })
    }

    /// The key in unencrypted PKCS#8 DER `der` (its type read from it).
    pub fn from_pkcs8(der: &[u8]) -> anyhow::Result<FileKey> {
        let key_type = keys::key_type_of(der)?;
        let pair =
            KeyPair::from_pkcs8_der_and_sign_algo(&der.to_vec().into(), key_type.algorithm())
                .map_err(|e| anyhow::anyhow!("CA key: {e}"))?;
        Ok(FileKey { pair, key_type })
    }

    /// Loads the key file `path` (decrypting it with `pass`).
    pub fn load(path: &Path, key_type: KeyType, pass: Option<&str>) -> anyhow::Result<FileKey> {
        Ok(FileKey {
            pair: keys::load_key(path, key_type, pass)?,
            key_type,
        })
    }

    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The private key as PKCS#8 DER (for the key file).
    pub fn pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.pair.serialize_der())
    }

    /// The public key as rcgen wants it (an EC point or an RSAPublicKey).
    pub fn der_bytes(&self) -> &[u8] {
        self.pair.der_bytes()
    }

    /// Signs `msg` (ECDSA signatures come DER-encoded from aws-lc-rs).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        SigningKey::sign(&self.pair, msg).map_err(|e| SignError::Failed(e.to_string()))
    }
}
