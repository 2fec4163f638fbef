//! Steps 1–3: a fresh key pair from the OS CSPRNG (through aws-lc-rs) and a
//! PKCS#10 CSR for the address.

use std::fmt;
use std::str::FromStr;

use mailid_shared::{Address, KeyId};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData, RsaKeySize, SanType,
};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The key types the client generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyType {
    /// ECDSA on NIST P-256 (the default).
    #[default]
    P256,
    /// ECDSA on NIST P-384.
    P384,
    /// RSA with a 3072-bit modulus.
    Rsa3072,
}

impl KeyType {
    /// The name used on the command line: `p256`, `p384`, `rsa3072`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::P256 => "p256",
            KeyType::P384 => "p384",
            KeyType::Rsa3072 => "rsa3072",
        }
    }

    /// A human name: `P-256`, `P-384`, `RSA-3072`.
    pub fn label(self) -> &'static str {
        match self {
            KeyType::P256 => "P-256",
            KeyType::P384 => "P-384",
            KeyType::Rsa3072 => "RSA-3072",
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
        match s.to_ascii_lowercase().replace('-', "").as_str() {
            "p256" => Ok(KeyType::P256),
            "p384" => Ok(KeyType::P384),
            "rsa3072" => Ok(KeyType::Rsa3072),
            _ => Err(format!(
                "unknown key type '{s}' (expected p256, p384 or rsa3072)"
            )),
        }
    }
}

/// A freshly generated key pair with its public key and strong key ID.
pub struct NewKey {
    pair: KeyPair,
    /// The type it was generated as.
    pub key_type: KeyType,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// The V=2 strong key ID of the SPKI.
    pub key_id: KeyId,
}

impl NewKey {
    /// Generates a key pair of the given type.
    pub fn generate(key_type: KeyType) -> Result<Self> {
        let pair = match key_type {
            KeyType::P256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyType::P384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyType::Rsa3072 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_3072)
            }
        }
        .map_err(|e| Error::Crypto(format!("cannot generate a {} key: {e}", key_type.label())))?;
        let spki_der = pair.subject_public_key_info();
        let key_id = KeyId::of_spki(&spki_der);
        Ok(NewKey {
            pair,
            key_type,
            spki_der,
            key_id,
        })
    }

    /// A PKCS#10 CSR in PEM: subject `CN=<address>`, SAN rfc822Name, signed
    /// by the key (proof of possession).
    pub fn csr_pem(&self, address: &Address) -> Result<String> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, address.as_str());
        params.distinguished_name = dn;
        let email = address
            .as_str()
            .try_into()
            .map_err(|e| Error::Crypto(format!("cannot put {address} in a CSR: {e}")))?;
        params.subject_alt_names = vec![SanType::Rfc822Name(email)];
        let csr = params
            .serialize_request(&self.pair)
            .map_err(|e| Error::Crypto(format!("cannot build the CSR: {e}")))?;
        csr.pem()
            .map_err(|e| Error::Crypto(format!("cannot encode the CSR: {e}")))
    }

    /// The private key as unencrypted PKCS#8 DER.
    pub fn pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.pair.serialize_der())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Decode;
    use x509_cert::request::CertReq;

    fn check(kt: KeyType, expect: &str) {
        let key = NewKey::generate(kt).unwrap();
        let alice = Address::parse("Alice@Example.com").unwrap();
        let pem = key.csr_pem(&alice).unwrap();
        let der = mailid_shared::pem::decode_one(&pem, &["CERTIFICATE REQUEST"]).unwrap();
        let req = CertReq::from_der(&der).unwrap();
        assert_eq!(req.info.subject.to_string(), "CN=alice@example.com");
        let spki = der::Encode::to_der(&req.info.public_key).unwrap();
        assert_eq!(spki, key.spki_der);
        assert_eq!(KeyId::of_spki(&spki), key.key_id);
        let kind = mailid_shared::sigverify::classify(&req.info.public_key).unwrap();
        assert_eq!(kind.name(), expect);
        // The request is signed by the key.
        let tbs = der::Encode::to_der(&req.info).unwrap();
        mailid_shared::sigverify::verify(
            &req.info.public_key,
            &req.algorithm,
            &tbs,
            req.signature.raw_bytes(),
        )
        .unwrap();
        // The SAN asks for the address.
        assert!(der
            .windows(alice.as_str().len())
            .any(|w| w == alice.as_str().as_bytes()));
        // The private key is PKCS#8.
        pkcs8::PrivateKeyInfo::try_from(key.pkcs8_der().as_slice()).unwrap();
    }

    #[test]
    fn generates_keys_and_csrs() {
        check(KeyType::P256, "P-256");
        check(KeyType::P384, "P-384");
        check(KeyType::Rsa3072, "RSA-3072");
    }

    #[test]
    fn key_types_parse() {
        assert_eq!("P-256".parse::<KeyType>(), Ok(KeyType::P256));
        assert_eq!("rsa3072".parse::<KeyType>(), Ok(KeyType::Rsa3072));
        assert!("ed25519".parse::<KeyType>().is_err());
    }
}
