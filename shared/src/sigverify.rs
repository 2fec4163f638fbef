//! Signature verification (never signing) for CSRs, certificates and CRLs:
//! ECDSA P-256/P-384 and RSA PKCS#1 v1.5 / PSS with SHA-2, key
//! classification for key policy, and the canonical (uncompressed) form of
//! an EC key, so that one key has one strong key ID however it was encoded.

use der::asn1::ObjectIdentifier as Oid;
use der::{Decode, Encode};
use sha2::{Digest, Sha256, Sha384, Sha512};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

/// OIDs used here and by the services.
pub mod oids {
    use der::asn1::ObjectIdentifier as Oid;
    pub const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
    pub const P256: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
    pub const P384: Oid = Oid::new_unwrap("1.3.132.0.34");
    pub const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
    pub const RSASSA_PSS: Oid = Oid::new_unwrap("1.2.840.113549.1.1.10");
    pub const MGF1: Oid = Oid::new_unwrap("1.2.840.113549.1.1.8");
    pub const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
    pub const SHA384_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
    pub const SHA512_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
    pub const ECDSA_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
    pub const ECDSA_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
    pub const ECDSA_SHA512: Oid = Oid::new_unwrap("1.2.840.10045.4.3.4");
    pub const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
    pub const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
    pub const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");
    pub const ED25519: Oid = Oid::new_unwrap("1.3.101.112");
    pub const EMAIL_ADDRESS: Oid = Oid::new_unwrap("1.2.840.113549.1.9.1");
    pub const COMMON_NAME: Oid = Oid::new_unwrap("2.5.4.3");
    pub const EXTENSION_REQUEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.14");
    pub const SUBJECT_ALT_NAME: Oid = Oid::new_unwrap("2.5.29.17");
}

/// What kind of public key an SPKI holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    P256,
    P384,
    /// RSA with the modulus size in bits and whether the public exponent is
    /// odd and at least 65537.
    Rsa {
        bits: usize,
        exponent_ok: bool,
    },
    /// Any other algorithm or curve, by OID text.
    Other(String),
}

impl KeyKind {
    /// A short name such as `P-256` or `RSA-2048`.
    pub fn name(&self) -> String {
        match self {
            KeyKind::P256 => "P-256".into(),
            KeyKind::P384 => "P-384".into(),
            KeyKind::Rsa { bits, .. } => format!("RSA-{bits}"),
            KeyKind::Other(oid) => format!("algorithm {oid}"),
        }
    }

    /// Whether this is an elliptic-curve key.
    pub fn is_ec(&self) -> bool {
        matches!(self, KeyKind::P256 | KeyKind::P384)
    }
}

/// Why a signature or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("unsupported key algorithm {0}")]
    UnsupportedKey(String),
    #[error("malformed public key")]
    BadKey,
    #[error("unsupported signature algorithm {0}")]
    UnsupportedAlgorithm(String),
    #[error("signature algorithm does not fit the key")]
    Mismatch,
    #[error("signature does not verify")]
    BadSignature,
}

fn rsa_key(spki: &SubjectPublicKeyInfoOwned) -> Result<rsa::RsaPublicKey, VerifyError> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    let bytes = spki
        .subject_public_key
        .as_bytes()
        .ok_or(VerifyError::BadKey)?;
    rsa::RsaPublicKey::from_pkcs1_der(bytes).map_err(|_| VerifyError::BadKey)
}

fn curve_of(spki: &SubjectPublicKeyInfoOwned) -> Option<Oid> {
    spki.algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<Oid>().ok())
}

/// How an EC public key's point is encoded (SEC 1 §2.3.3), by its first octet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointForm {
    /// `04 || X || Y`: the only form mailid certifies.
    Uncompressed,
    /// `02 || X` or `03 || X`.
    Compressed,
    /// `06 || X || Y` or `07 || X || Y`.
    Hybrid,
    /// Anything else (the point at infinity, garbage).
    Other,
}

/// The point form of an EC key's SPKI, or `None` for a key that is not EC.
pub fn ec_point_form(spki: &SubjectPublicKeyInfoOwned) -> Option<PointForm> {
    if spki.algorithm.oid != oids::EC_PUBLIC_KEY {
        return None;
    }
    let first = spki.subject_public_key.as_bytes()?.first().copied();
    Some(match first {
        Some(4) => PointForm::Uncompressed,
        Some(2 | 3) => PointForm::Compressed,
        Some(6 | 7) => PointForm::Hybrid,
        _ => PointForm::Other,
    })
}

/// The uncompressed SEC 1 encoding of a compressed or hybrid P-256/P-384
/// point, or `None` when the point is not valid on its curve (a hybrid
/// point's tag must also match the parity of its Y).
fn uncompressed_point(curve: Oid, point: &[u8]) -> Option<Vec<u8>> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let sec1: std::borrow::Cow<[u8]> = match point.first()? {
        2 | 3 => point.into(),
        tag @ (6 | 7) => {
            let y_odd = point.last()? & 1 == 1;
            if y_odd != (tag & 1 == 1) {
                return None;
            }
            let mut p = point.to_vec();
            p[0] = 4;
            p.into()
        }
        _ => return None,
    };
    if curve == oids::P256 {
        let k = p256::PublicKey::from_sec1_bytes(&sec1).ok()?;
        Some(k.to_encoded_point(false).as_bytes().to_vec())
    } else if curve == oids::P384 {
        let k = p384::PublicKey::from_sec1_bytes(&sec1).ok()?;
        Some(k.to_encoded_point(false).as_bytes().to_vec())
    } else {
        None
    }
}

/// The canonical DER SubjectPublicKeyInfo of a key: a P-256/P-384 key
/// whose point is compressed or hybrid comes back with the uncompressed
/// point; every other input (uncompressed keys, RSA, unparsable bytes)
/// comes back unchanged. Strong key IDs are computed over this form.
pub fn canonical_spki(der: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let canonical = || -> Option<Vec<u8>> {
        let mut spki = SubjectPublicKeyInfoOwned::from_der(der).ok()?;
        if !matches!(
            ec_point_form(&spki)?,
            PointForm::Compressed | PointForm::Hybrid
        ) {
            return None;
        }
        let curve = curve_of(&spki)?;
        let point = uncompressed_point(curve, spki.subject_public_key.as_bytes()?)?;
        spki.subject_public_key = der::asn1::BitString::from_bytes(&point).ok()?;
        spki.to_der().ok()
    };
    // Only EC keys can need work; skip the parse for everything else.
    if der.len() > 120 {
        return der.into();
    }
    match canonical() {
        Some(v) => v.into(),
        None => der.into(),
    }
}

/// Classifies the key in an SPKI.
pub fn classify(spki: &SubjectPublicKeyInfoOwned) -> Result<KeyKind, VerifyError> {
    let alg = spki.algorithm.oid;
    if alg == oids::EC_PUBLIC_KEY {
        return match curve_of(spki) {
            Some(c) if c == oids::P256 => {
                p256::PublicKey::from_sec1_bytes(
                    spki.subject_public_key
                        .as_bytes()
                        .ok_or(VerifyError::BadKey)?,
                )
                .map_err(|_| VerifyError::BadKey)?;
                Ok(KeyKind::P256)
            }
            Some(c) if c == oids::P384 => {
                p384::PublicKey::from_sec1_bytes(
                    spki.subject_public_key
                        .as_bytes()
                        .ok_or(VerifyError::BadKey)?,
                )
                .map_err(|_| VerifyError::BadKey)?;
                Ok(KeyKind::P384)
            }
            Some(c) => Ok(KeyKind::Other(format!("EC curve {c}"))),
            // Explicit curve parameters (or none): not a named curve.
            None => Ok(KeyKind::Other("EC key without a named curve".into())),
        };
    }
    if alg == oids::RSA_ENCRYPTION {
        // Sized from the DER structure, so keys larger than the rsa crate
        // takes (4096 bits) are classified, and refused by policy, rather
        // than reported as malformed.
        let bytes = spki
            .subject_public_key
            .as_bytes()
            .ok_or(VerifyError::BadKey)?;
        let key = rsa::pkcs1::RsaPublicKey::from_der(bytes).map_err(|_| VerifyError::BadKey)?;
        let n = rsa::BigUint::from_bytes_be(key.modulus.as_bytes());
        let e = rsa::BigUint::from_bytes_be(key.public_exponent.as_bytes());
        if n.bits() == 0 {
            return Err(VerifyError::BadKey);
        }
        let odd = key
            .public_exponent
            .as_bytes()
            .last()
            .is_some_and(|b| b & 1 == 1);
        let exponent_ok = e >= rsa::BigUint::from(65537u32) && odd;
        return Ok(KeyKind::Rsa {
            bits: n.bits(),
            exponent_ok,
        });
    }
    if alg == oids::ED25519 {
        return Ok(KeyKind::Other("Ed25519".into()));
    }
    Ok(KeyKind::Other(alg.to_string()))
}

#[derive(Clone, Copy)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

fn hash_of(oid: &Oid) -> Option<Hash> {
    match *oid {
        o if o == oids::SHA256 => Some(Hash::Sha256),
        o if o == oids::SHA384 => Some(Hash::Sha384),
        o if o == oids::SHA512 => Some(Hash::Sha512),
        _ => None,
    }
}

fn digest(h: Hash, msg: &[u8]) -> Vec<u8> {
    match h {
        Hash::Sha256 => Sha256::digest(msg).to_vec(),
        Hash::Sha384 => Sha384::digest(msg).to_vec(),
        Hash::Sha512 => Sha512::digest(msg).to_vec(),
    }
}

/// RSASSA-PSS-params (RFC 4055), just what verification needs.
#[derive(der::Sequence)]
struct PssParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    hash: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    mgf: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    salt_len: Option<u32>,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    trailer: Option<u32>,
}

fn verify_pss(
    key: &rsa::RsaPublicKey,
    alg: &AlgorithmIdentifierOwned,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), VerifyError> {
    let unsupported = || VerifyError::UnsupportedAlgorithm("RSASSA-PSS parameters".into());
    let params = match &alg.parameters {
        Some(p) => PssParams::from_der(&p.to_der().map_err(|_| unsupported())?)
            .map_err(|_| unsupported())?,
        None => return Err(unsupported()),
    };
    let hash_oid = params
        .hash
        .as_ref()
        .map(|h| h.oid)
        .ok_or_else(unsupported)?;
    let hash = hash_of(&hash_oid).ok_or_else(unsupported)?;
    // MGF1 must use the same hash (the rsa crate uses one digest for both).
    if let Some(mgf) = &params.mgf {
        let inner = mgf
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<AlgorithmIdentifierOwned>().ok())
            .ok_or_else(unsupported)?;
        if mgf.oid != oids::MGF1 || inner.oid != hash_oid {
            return Err(unsupported());
        }
    } else {
        return Err(unsupported());
    }
    if params.trailer.unwrap_or(1) != 1 {
        return Err(unsupported());
    }
    let salt = params.salt_len.unwrap_or(20) as usize;
    let hashed = digest(hash, msg);
    let scheme = match hash {
        Hash::Sha256 => rsa::Pss::new_with_salt::<Sha256>(salt),
        Hash::Sha384 => rsa::Pss::new_with_salt::<Sha384>(salt),
        Hash::Sha512 => rsa::Pss::new_with_salt::<Sha512>(salt),
    };
    key.verify(scheme, &hashed, sig)
        .map_err(|_| VerifyError::BadSignature)
}

/// Verifies `sig` over `msg` with the key in `spki` under signature
/// algorithm `alg`.
pub fn verify(
    spki: &SubjectPublicKeyInfoOwned,
    alg: &AlgorithmIdentifierOwned,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), VerifyError> {
    let a = alg.oid;
    let ecdsa_hash = match a {
        o if o == oids::ECDSA_SHA256 => Some(Hash::Sha256),
        o if o == oids::ECDSA_SHA384 => Some(Hash::Sha384),
        o if o == oids::ECDSA_SHA512 => Some(Hash::Sha512),
        _ => None,
    };
    if let Some(h) = ecdsa_hash {
        // ECDSA goes through aws-lc-rs (the same library that signs): its
        // assembly P-256/P-384 verification is about five times faster
        // than the pure-Rust p256/p384 arithmetic, and CSR verification is
        // the largest cost of an enrollment (docs/BENCHMARKS.md).
        use aws_lc_rs::signature as sig_alg;
        let point = spki
            .subject_public_key
            .as_bytes()
            .ok_or(VerifyError::BadKey)?;
        let algorithm: &sig_alg::EcdsaVerificationAlgorithm = match (classify(spki)?, h) {
            (KeyKind::P256, Hash::Sha256) => &sig_alg::ECDSA_P256_SHA256_ASN1,
            (KeyKind::P256, Hash::Sha384) => &sig_alg::ECDSA_P256_SHA384_ASN1,
            (KeyKind::P256, Hash::Sha512) => &sig_alg::ECDSA_P256_SHA512_ASN1,
            (KeyKind::P384, Hash::Sha256) => &sig_alg::ECDSA_P384_SHA256_ASN1,
            (KeyKind::P384, Hash::Sha384) => &sig_alg::ECDSA_P384_SHA384_ASN1,
            (KeyKind::P384, Hash::Sha512) => &sig_alg::ECDSA_P384_SHA512_ASN1,
            (KeyKind::Other(o), _) => return Err(VerifyError::UnsupportedKey(o)),
            (KeyKind::Rsa { .. }, _) => return Err(VerifyError::Mismatch),
        };
        return sig_alg::UnparsedPublicKey::new(algorithm, point)
            .verify(msg, sig)
            .map_err(|_| VerifyError::BadSignature);
    }
    let rsa_hash = match a {
        o if o == oids::SHA256_WITH_RSA => Some(Hash::Sha256),
        o if o == oids::SHA384_WITH_RSA => Some(Hash::Sha384),
        o if o == oids::SHA512_WITH_RSA => Some(Hash::Sha512),
        _ => None,
    };
    if rsa_hash.is_some() || a == oids::RSASSA_PSS {
        if spki.algorithm.oid != oids::RSA_ENCRYPTION && spki.algorithm.oid != oids::RSASSA_PSS {
            return Err(VerifyError::Mismatch);
        }
        let key = rsa_key(spki)?;
        return match rsa_hash {
            Some(h) => {
                let hashed = digest(h, msg);
                let scheme = match h {
                    Hash::Sha256 => rsa::Pkcs1v15Sign::new::<Sha256>(),
                    Hash::Sha384 => rsa::Pkcs1v15Sign::new::<Sha384>(),
                    Hash::Sha512 => rsa::Pkcs1v15Sign::new::<Sha512>(),
                };
                key.verify(scheme, &hashed, sig)
                    .map_err(|_| VerifyError::BadSignature)
            }
            None => verify_pss(&key, alg, msg, sig),
        };
    }
    Err(VerifyError::UnsupportedAlgorithm(a.to_string()))
}

/// Parses a DER SubjectPublicKeyInfo.
pub fn parse_spki(der: &[u8]) -> Result<SubjectPublicKeyInfoOwned, VerifyError> {
    SubjectPublicKeyInfoOwned::from_der(der).map_err(|_| VerifyError::BadKey)
}
