//! The CA key: generation (rcgen with aws-lc-rs), the PKCS#8 key file
//! (0600, encrypted by the shared [`pbes2`] helper when a passphrase is
//! given, so `openssl pkey` reads it) and the passphrase sources.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;

use anyhow::Context;
use pkcs8::der::Decode;
use rcgen::{KeyPair, RsaKeySize, SignatureAlgorithm};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use mailid_shared::pbes2;
use mailid_shared::sigverify::oids;

/// Environment variable that may hold the key passphrase.
pub const PASSPHRASE_ENV: &str = "MAILID_CA_PASSPHRASE";

/// The CA key types `init` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    P256,
    P384,
    Rsa2048,
    Rsa3072,
    Rsa4096,
}

impl KeyType {
    /// The signature algorithm the CA signs with.
    pub fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyType::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
        }
    }

    /// A fresh key of this type.
    pub fn generate(self) -> anyhow::Result<KeyPair> {
        let rsa = |size| KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size);
        let kp = match self {
            KeyType::P256 | KeyType::P384 => KeyPair::generate_for(self.algorithm()),
            KeyType::Rsa2048 => rsa(RsaKeySize::_2048),
            KeyType::Rsa3072 => rsa(RsaKeySize::_3072),
            KeyType::Rsa4096 => rsa(RsaKeySize::_4096),
        };
        kp.map_err(|e| anyhow::anyhow!("generating the CA key: {e}"))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::P256 => "p256",
            KeyType::P384 => "p384",
            KeyType::Rsa2048 => "rsa2048",
            KeyType::Rsa3072 => "rsa3072",
            KeyType::Rsa4096 => "rsa4096",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            KeyType::P256,
            KeyType::P384,
            KeyType::Rsa2048,
            KeyType::Rsa3072,
            KeyType::Rsa4096,
        ]
        .into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("unknown key type '{s}' (p256, p384, rsa2048, rsa3072, rsa4096)"))
    }
}

/// The key type of an unencrypted PKCS#8 key (for an imported key).
pub fn key_type_of(pkcs8_der: &[u8]) -> anyhow::Result<KeyType> {
    let info = pkcs8::PrivateKeyInfo::from_der(pkcs8_der).context("key is not PKCS#8")?;
    let alg = info.algorithm.oid;
    if alg == oids::EC_PUBLIC_KEY {
        let curve = info
            .algorithm
            .parameters_oid()
            .map_err(|_| anyhow::anyhow!("EC key without a named curve"))?;
        return match curve {
            c if c == oids::P256 => Ok(KeyType::P256),
            c if c == oids::P384 => Ok(KeyType::P384),
            c => anyhow::bail!("unsupported EC curve {c}"),
        };
    }
    if alg == oids::RSA_ENCRYPTION {
        let kp = KeyPair::from_pkcs8_der_and_sign_algo(
            &pkcs8_der.to_vec().into(),
            &rcgen::PKCS_RSA_SHA256,
        )
        .map_err(|e| anyhow::anyhow!("RSA key: {e}"))?;
        let spki = mailid_shared::sigverify::parse_spki(
            &rcgen::PublicKeyData::subject_public_key_info(&kp),
        )
        .map_err(|e| anyhow::anyhow!("RSA key: {e}"))?;
        return match mailid_shared::sigverify::classify(&spki) {
            Ok(mailid_shared::sigverify::KeyKind::Rsa { bits: 2048, .. }) => Ok(KeyType::Rsa2048),
            Ok(mailid_shared::sigverify::KeyKind::Rsa { bits: 3072, .. }) => Ok(KeyType::Rsa3072),
            Ok(mailid_shared::sigverify::KeyKind::Rsa { bits: 4096, .. }) => Ok(KeyType::Rsa4096),
            _ => anyhow::bail!("RSA CA keys must have 2048, 3072 or 4096 bits"),
        };
    }
    anyhow::bail!("unsupported CA key algorithm {alg}")
}

/// Reads the passphrase from `--passphrase-file` (first line) or from
/// `MAILID_CA_PASSPHRASE`; `None` when neither is given.
pub fn passphrase(file: Option<&Path>) -> anyhow::Result<Option<Zeroizing<String>>> {
    if let Some(f) = file {
        let text = Zeroizing::new(
            mailid_shared::input::read_text(f)
                .with_context(|| format!("reading passphrase file {}", f.display()))?,
        );
        let line = text.lines().next().unwrap_or("");
        if line.is_empty() {
            anyhow::bail!("passphrase file {} is empty", f.display());
        }
        return Ok(Some(Zeroizing::new(line.to_string())));
    }
    match std::env::var(PASSPHRASE_ENV) {
        Ok(v) if v.is_empty() => anyhow::bail!("{PASSPHRASE_ENV} is set but empty"),
        Ok(v) => Ok(Some(Zeroizing::new(v))),
        Err(_) => Ok(None),
    }
}

/// PEM text of a PKCS#8 key, encrypted when a passphrase is given.
pub fn encode_key(pkcs8_der: &[u8], pass: Option<&str>) -> anyhow::Result<Zeroizing<String>> {
    let Some(pass) = pass else {
        return Ok(Zeroizing::new(mailid_shared::pem::encode(
            "PRIVATE KEY",
            pkcs8_der,
        )));
    };
    let doc = pbes2::encrypt(pkcs8_der, pass.as_bytes())
        .map_err(|e| anyhow::anyhow!("encrypting the CA key: {e}"))?;
    Ok(Zeroizing::new(mailid_shared::pem::encode(
        "ENCRYPTED PRIVATE KEY",
        &doc,
    )))
}

/// Decodes a key file's PEM into PKCS#8 DER, decrypting with `pass`.
pub fn decode_key(pem_text: &str, pass: Option<&str>) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let blocks = mailid_shared::pem::decode_all(pem_text).context("key file is not PEM")?;
    let block = blocks
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("key file holds no PEM block"))?;
    let der = Zeroizing::new(block.der);
    match block.label.as_str() {
        "PRIVATE KEY" => Ok(der),
        "ENCRYPTED PRIVATE KEY" => {
            let pass = pass.ok_or_else(|| {
                anyhow::anyhow!(
                    "the CA key is encrypted: give --passphrase-file or set {PASSPHRASE_ENV}"
                )
            })?;
            pbes2::decrypt(&der, pass.as_bytes()).map_err(|e| match e {
                pbes2::Pbes2Error::WrongPassphrase => {
                    anyhow::anyhow!("wrong passphrase for the CA key")
                }
                other => anyhow::anyhow!("the CA key file: {other}"),
            })
        }
        other => anyhow::bail!("key file holds a '{other}' block; PKCS#8 is required"),
    }
}

/// Writes the key file (mode 0600, created exclusively).
pub fn save_key(path: &Path, pkcs8_der: &[u8], pass: Option<&str>) -> anyhow::Result<()> {
    let pem = encode_key(pkcs8_der, pass)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(pem.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Loads the CA key for signing.
pub fn load_key(path: &Path, key_type: KeyType, pass: Option<&str>) -> anyhow::Result<KeyPair> {
    let text = Zeroizing::new(
        mailid_shared::input::read_text(path)
            .with_context(|| format!("reading {}", path.display()))?,
    );
    let der = decode_key(&text, pass)?;
    KeyPair::from_pkcs8_der_and_sign_algo(&der.to_vec().into(), key_type.algorithm())
        .map_err(|e| anyhow::anyhow!("CA key does not load as {key_type}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypted_key_round_trip_and_wrong_passphrase() {
        let kp = KeyType::P256.generate().unwrap();
        let der = kp.serialize_der();
        let pem = encode_key(&der, Some("correct horse")).unwrap();
        assert!(pem.contains("ENCRYPTED PRIVATE KEY"));
        assert_eq!(
            decode_key(&pem, Some("correct horse")).unwrap().as_slice(),
            &der[..]
        );
        assert!(decode_key(&pem, Some("wrong")).is_err());
        assert!(decode_key(&pem, None).is_err());
        let plain = encode_key(&der, None).unwrap();
        assert_eq!(decode_key(&plain, None).unwrap().as_slice(), &der[..]);
        assert_eq!(key_type_of(&der).unwrap(), KeyType::P256);
    }

    #[test]
    fn key_types_parse() {
        assert_eq!("RSA3072".parse::<KeyType>().unwrap(), KeyType::Rsa3072);
        assert!("ed25519".parse::<KeyType>().is_err());
    }
}
