//! Strong Key Identifiers (draft-hallambaker-prismproof-key-01 §2.1).
//!
//! `KI = V || SHA-512(V || DER(SubjectPublicKeyInfo))[..n]` with V=0 → 16,
//! V=1 → 28, V=2 → 32 and V=3 → 64 digest bytes. mailid makes V=2 and parses
//! all four. The text form is RFC 4648 Base32 without padding, upper case,
//! with `-` after every five characters; parsers ignore dashes and case.
//!
//! The digest is taken over the key's canonical SPKI
//! ([`crate::sigverify::canonical_spki`]): an EC key sent with a compressed
//! or hybrid point has the key ID of its uncompressed form, so one key has
//! one key ID at the CA, the MTA and the client (and a key revoked for
//! keyCompromise cannot come back in another encoding).

use std::fmt;
use std::str::FromStr;

use data_encoding::BASE32_NOPAD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha512};

/// The version mailid uses whenever it makes a key identifier.
pub const DEFAULT_VERSION: u8 = 2;

/// A strong key identifier: the version byte followed by the truncated digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(Vec<u8>);

/// Why a key identifier could not be made or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyIdError {
    #[error("key ID is empty")]
    Empty,
    #[error("key ID is not valid Base32")]
    Base32,
    #[error("key ID version {0} is not one of 0, 1, 2, 3")]
    Version(u8),
    #[error("key ID of version {version} must have {expected} digest bytes, not {actual}")]
    Length {
        version: u8,
        expected: usize,
        actual: usize,
    },
}

/// Number of digest bytes for a version, or `None` for an unknown version.
pub fn digest_len(version: u8) -> Option<usize> {
    match version {
        0 => Some(16),
        1 => Some(28),
        2 => Some(32),
        3 => Some(64),
        _ => None,
    }
}

impl KeyId {
    /// Computes the identifier of a DER-encoded SubjectPublicKeyInfo (over
    /// its canonical form).
    pub fn compute(version: u8, spki_der: &[u8]) -> Result<Self, KeyIdError> {
        let n = digest_len(version).ok_or(KeyIdError::Version(version))?;
        let mut h = Sha512::new();
        h.update([version]);
        h.update(crate::sigverify::canonical_spki(spki_der));
        let digest = h.finalize();
        let mut out = Vec::with_capacity(n + 1);
        out.push(version);
        out.extend_from_slice(&digest[..n]);
        Ok(KeyId(out))
    }

    /// The V=2 identifier mailid uses for every key it certifies.
    pub fn of_spki(spki_der: &[u8]) -> Self {
        Self::compute(DEFAULT_VERSION, spki_der).expect("version 2 is valid")
    }

    /// Builds an identifier from its binary form, checking version and length.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyIdError> {
        let (&version, digest) = bytes.split_first().ok_or(KeyIdError::Empty)?;
        let expected = digest_len(version).ok_or(KeyIdError::Version(version))?;
        if digest.len() != expected {
            return Err(KeyIdError::Length {
                version,
                expected,
                actual: digest.len(),
            });
        }
        Ok(KeyId(bytes.to_vec()))
    }

    /// The binary form: version byte then digest.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The version byte.
    pub fn version(&self) -> u8 {
        self.0[0]
    }

    /// Base32 without padding or dashes, upper case.
    pub fn to_base32(&self) -> String {
        BASE32_NOPAD.encode(&self.0)
    }
}

impl fmt::Display for KeyId {
    /// The display form: Base32 with `-` after every five characters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b32 = self.to_base32();
        for (i, chunk) in b32.as_bytes().chunks(5).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            f.write_str(std::str::from_utf8(chunk).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = KeyIdError;

    /// Parses the text form, ignoring `-` and case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let cleaned: String = s
            .chars()
            .filter(|c| *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if cleaned.is_empty() {
            return Err(KeyIdError::Empty);
        }
        if cleaned.len() > 128 {
            return Err(KeyIdError::Base32);
        }
        let bytes = BASE32_NOPAD
            .decode(cleaned.as_bytes())
            .map_err(|_| KeyIdError::Base32)?;
        KeyId::from_bytes(&bytes)
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let id = KeyId::of_spki(b"not really an spki");
        assert_eq!(id.version(), 2);
        assert_eq!(id.as_bytes().len(), 33);
        let text = id.to_string();
        assert!(text.contains('-'));
        assert_eq!(text.parse::<KeyId>().unwrap(), id);
        assert_eq!(text.to_lowercase().parse::<KeyId>().unwrap(), id);
        assert_eq!(id.to_base32().parse::<KeyId>().unwrap(), id);
    }

    /// The SPKI of a P-256 or P-384 key with its point in another form.
    fn reencoded(spki: &[u8], point: Vec<u8>) -> Vec<u8> {
        use der::{Decode, Encode};
        let mut s = spki::SubjectPublicKeyInfoOwned::from_der(spki).unwrap();
        s.subject_public_key = der::asn1::BitString::from_bytes(&point).unwrap();
        s.to_der().unwrap()
    }

    #[test]
    fn one_key_one_id_whatever_the_point_encoding() {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        use p256::pkcs8::EncodePublicKey;
        for _ in 0..8 {
            let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
            let pk = sk.public_key();
            let spki = pk.to_public_key_der().unwrap().into_vec();
            let id = KeyId::of_spki(&spki);
            let compressed = reencoded(&spki, pk.to_encoded_point(true).as_bytes().to_vec());
            assert_ne!(compressed, spki);
            assert_eq!(KeyId::of_spki(&compressed), id);
            assert_eq!(
                crate::sigverify::canonical_spki(&compressed).as_ref(),
                &spki[..]
            );
            // Hybrid: 06/07 by the parity of Y, then X and Y.
            let mut hybrid = pk.to_encoded_point(false).as_bytes().to_vec();
            hybrid[0] = 6 | (hybrid[hybrid.len() - 1] & 1);
            assert_eq!(KeyId::of_spki(&reencoded(&spki, hybrid.clone())), id);
            // A hybrid point with the wrong parity tag is not that key.
            hybrid[0] ^= 1;
            assert_ne!(KeyId::of_spki(&reencoded(&spki, hybrid)), id);
        }
        let sk = p384::SecretKey::random(&mut rand::rngs::OsRng);
        let pk = sk.public_key();
        let spki = p384::pkcs8::EncodePublicKey::to_public_key_der(&pk)
            .unwrap()
            .into_vec();
        let compressed = reencoded(
            &spki,
            p384::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&pk, true)
                .as_bytes()
                .to_vec(),
        );
        assert_eq!(KeyId::of_spki(&compressed), KeyId::of_spki(&spki));
        // Bytes that are no SPKI are hashed as they are.
        assert_eq!(
            crate::sigverify::canonical_spki(b"k").as_ref(),
            b"k".as_slice()
        );
    }

    #[test]
    fn rejects_bad_text() {
        assert_eq!("".parse::<KeyId>(), Err(KeyIdError::Empty));
        assert_eq!("---".parse::<KeyId>(), Err(KeyIdError::Empty));
        assert_eq!("!!!!".parse::<KeyId>(), Err(KeyIdError::Base32));
        // Version 7 does not exist.
        let bad = BASE32_NOPAD.encode(&[7u8; 17]);
        assert_eq!(bad.parse::<KeyId>(), Err(KeyIdError::Version(7)));
        // Version 2 with a 16-byte digest.
        let short = BASE32_NOPAD.encode(&[2u8; 17]);
        assert!(matches!(
            short.parse::<KeyId>(),
            Err(KeyIdError::Length { version: 2, .. })
        ));
    }
}
