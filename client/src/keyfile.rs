//! `mailid key-id FILE`: the strong key ID of a certificate, CSR, public
//! key or private key, in PEM or DER.

use std::fmt;
use std::path::Path;

use der::{Decode, Encode};
use mailid_shared::{pem, sigverify, KeyId};
use rcgen::{KeyPair, PublicKeyData};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::request::CertReq;
use x509_cert::Certificate;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::secret::decrypt_pkcs8;

/// What kind of file a key ID came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Certificate,
    Csr,
    PublicKey,
    PrivateKey,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Certificate => "certificate",
            FileKind::Csr => "certificate request",
            FileKind::PublicKey => "public key",
            FileKind::PrivateKey => "private key",
        })
    }
}

/// The key ID of a file and what the file held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileKeyId {
    /// The V=2 strong key ID of the public key.
    pub key_id: KeyId,
    /// What the file held.
    pub kind: FileKind,
    /// The key type, e.g. `P-256`.
    pub key_type: String,
}

/// Reads `path` and computes its key ID. An encrypted private key needs
/// `passphrase`.
pub fn key_id_of_file(path: &Path, passphrase: Option<&[u8]>) -> Result<FileKeyId> {
    let bytes =
        Zeroizing::new(mailid_shared::input::read_file(path).map_err(|e| Error::io(path, &e))?);
    key_id_of_bytes(&bytes, passphrase).map_err(|e| Error::file(path, e.to_string()))
}

/// [`key_id_of_file`] on file contents.
pub fn key_id_of_bytes(bytes: &[u8], passphrase: Option<&[u8]>) -> Result<FileKeyId> {
    let text = std::str::from_utf8(bytes).ok();
    let (kind, spki) = match text.filter(|t| t.contains("-----BEGIN ")) {
        Some(t) => from_pem(t, passphrase)?,
        None => from_der(bytes, passphrase)?,
    };
    finish(kind, &spki)
}

/// The key ID of an unencrypted PKCS#8 private key; the key must load
/// (aws-lc checks that its public half matches the private one).
pub fn key_id_of_pkcs8(der: &[u8]) -> Result<FileKeyId> {
    let (kind, spki) = private_spki(der)?;
    finish(kind, &spki)
}

fn finish(kind: FileKind, spki: &SubjectPublicKeyInfoOwned) -> Result<FileKeyId> {
    let der = spki
        .to_der()
        .map_err(|e| Error::Crypto(format!("cannot encode the public key: {e}")))?;
    let key_type = sigverify::classify(spki)
        .map(|k| k.name())
        .unwrap_or_else(|_| "unknown key".into());
    Ok(FileKeyId {
        key_id: KeyId::of_spki(&der),
        kind,
        key_type,
    })
}

fn from_pem(
    text: &str,
    passphrase: Option<&[u8]>,
) -> Result<(FileKind, SubjectPublicKeyInfoOwned)> {
    let blocks =
        pem::decode_all(text).map_err(|e| Error::Crypto(format!("not readable PEM: {e}")))?;
    for block in &blocks {
        let der = Zeroizing::new(block.der.clone());
        let found = match block.label.as_str() {
            "CERTIFICATE" | "X509 CERTIFICATE" => Some(cert_spki(&der)?),
            "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => Some(csr_spki(&der)?),
            "PUBLIC KEY" => Some((FileKind::PublicKey, parse_spki(&der)?)),
            "RSA PUBLIC KEY" => Some(rsa_public_spki(&der)?),
            "PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY" => Some(private_spki(&der)?),
            "ENCRYPTED PRIVATE KEY" => Some(encrypted_spki(&der, passphrase)?),
            _ => None,
        };
        if let Some(f) = found {
            return Ok(f);
        }
    }
    let labels: Vec<&str> = blocks.iter().map(|b| b.label.as_str()).collect();
    Err(Error::Crypto(format!(
        "holds no certificate, CSR or key (found {})",
        labels.join(", ")
    )))
}

fn from_der(
    der: &[u8],
    passphrase: Option<&[u8]>,
) -> Result<(FileKind, SubjectPublicKeyInfoOwned)> {
    if let Ok(f) = cert_spki(der) {
        return Ok(f);
    }
    if let Ok(f) = csr_spki(der) {
        return Ok(f);
    }
    if let Ok(spki) = SubjectPublicKeyInfoOwned::from_der(der) {
        return Ok((FileKind::PublicKey, spki));
    }
    if pkcs8::EncryptedPrivateKeyInfo::try_from(der).is_ok() {
        return encrypted_spki(der, passphrase);
    }
    if let Ok(f) = private_spki(der) {
        return Ok(f);
    }
    if let Ok(f) = rsa_public_spki(der) {
        return Ok(f);
    }
    Err(Error::Crypto(
        "is not a certificate, CSR, public key or private key (PEM or DER)".into(),
    ))
}

fn parse_spki(der: &[u8]) -> Result<SubjectPublicKeyInfoOwned> {
    SubjectPublicKeyInfoOwned::from_der(der)
        .map_err(|e| Error::Crypto(format!("not a valid public key: {e}")))
}

fn cert_spki(der: &[u8]) -> Result<(FileKind, SubjectPublicKeyInfoOwned)> {
    let cert = Certificate::from_der(der)
        .map_err(|e| Error::Crypto(format!("not a valid certificate: {e}")))?;
    Ok((
        FileKind::Certificate,
        cert.tbs_certificate.subject_public_key_info,
    ))
}

fn csr_spki(der: &[u8]) -> Result<(FileKind, SubjectPublicKeyInfoOwned)> {
    let req = CertReq::from_der(der)
        .map_err(|e| Error::Crypto(format!("not a valid certificate request: {e}")))?;
    Ok((FileKind::Csr, req.info.public_key))
}

fn rsa_public_spki(der: &[u8]) -> Result<(FileKind, SubjectPublicKeyInfoOwned)> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::EncodePublicKey;
    let key = rsa::RsaPublicKey::from_pkcs1_der(der)
        .map_err(|e| Error::Crypto(format!("not a valid RSA public key: {e}")))?;
    let doc = key
        .to_public_key_der()
        .map_err(|e| Error::Crypto(format!("cannot encode the RSA public key: {e}")))?;
    Ok((FileKind::PublicKey, parse_spki(doc.as_bytes())?))
}

fn private_spki(der: &[u8]) -> Result<(FileKind, SubjectPublicKeyInfoOwned)> {
    let pair = KeyPair::try_from(der).map_err(|_| {
        Error::Crypto("not a usable private key (P-256, P-384 or RSA expected)".into())
    })?;
    Ok((
        FileKind::PrivateKey,
        parse_spki(&pair.subject_public_key_info())?,
    ))
}

fn encrypted_spki(
    der: &[u8],
    passphrase: Option<&[u8]>,
) -> Result<(FileKind, SubjectPublicKeyInfoOwned)> {
    let Some(pass) = passphrase else {
        return Err(Error::Crypto(
            "is an encrypted private key: give the passphrase with MAILID_PASSPHRASE or \
             --passphrase-file"
                .into(),
        ));
    };
    let plain = decrypt_pkcs8(der, pass)?;
    private_spki(&plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyType, NewKey};
    use crate::secret::encrypt_pkcs8;

    #[test]
    fn same_key_id_from_every_form() {
        for kt in [KeyType::P256, KeyType::P384, KeyType::Rsa3072] {
            let key = NewKey::generate(kt).unwrap();
            let want = key.key_id.clone();
            let addr = mailid_shared::Address::parse("bob@example.org").unwrap();
            let csr = key.csr_pem(&addr).unwrap();
            let csr_der = pem::decode_one(&csr, &["CERTIFICATE REQUEST"]).unwrap();
            let pub_pem = pem::encode("PUBLIC KEY", &key.spki_der);
            let priv_der = key.pkcs8_der();
            let priv_pem = pem::encode("PRIVATE KEY", &priv_der);
            let enc = encrypt_pkcs8(&priv_der, b"correct horse").unwrap();
            let enc_pem = pem::encode("ENCRYPTED PRIVATE KEY", &enc);
            let inputs: Vec<(&[u8], FileKind)> = vec![
                (csr.as_bytes(), FileKind::Csr),
                (&csr_der, FileKind::Csr),
                (pub_pem.as_bytes(), FileKind::PublicKey),
                (&key.spki_der, FileKind::PublicKey),
                (priv_pem.as_bytes(), FileKind::PrivateKey),
                (&priv_der, FileKind::PrivateKey),
            ];
            for (bytes, kind) in inputs {
                let got = key_id_of_bytes(bytes, None).unwrap();
                assert_eq!(got.key_id, want, "{kt} {kind}");
                assert_eq!(got.kind, kind);
                assert_eq!(got.key_type, kt.label());
            }
            let got = key_id_of_bytes(enc_pem.as_bytes(), Some(b"correct horse")).unwrap();
            assert_eq!(got.key_id, want);
            assert!(key_id_of_bytes(enc_pem.as_bytes(), None)
                .unwrap_err()
                .to_string()
                .contains("encrypted"));
            assert!(key_id_of_bytes(enc_pem.as_bytes(), Some(b"wrong")).is_err());
        }
    }

    #[test]
    fn rejects_other_files() {
        assert!(key_id_of_bytes(b"hello world", None).is_err());
        let pem = pem::encode("X509 CRL", b"\x30\x00");
        assert!(key_id_of_bytes(pem.as_bytes(), None)
            .unwrap_err()
            .to_string()
            .contains("X509 CRL"));
    }
}
