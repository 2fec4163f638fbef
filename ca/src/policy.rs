//! CSR checks (the registration authority's first step): parse, proof of
//! possession, key policy and the single address.
//!
//! Requested extensions other than the subjectAltName are ignored: the
//! certificate profile is the CA's alone ([`crate::issuer`]).

use der::{Decode, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::request::CertReq;

use mailid_shared::problem::{ErrorCode, Problem};
use mailid_shared::sigverify::{self, oids, KeyKind, PointForm, VerifyError};
use mailid_shared::{Address, KeyId};

/// Largest CSR text accepted (the body limit is 64 KiB anyway).
pub const MAX_CSR_LEN: usize = 32 * 1024;

/// What enrollment needs from an accepted CSR.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    /// The one address the CSR names.
    pub account: Address,
    /// The DER SubjectPublicKeyInfo, exactly as in the CSR.
    pub spki_der: Vec<u8>,
    /// The classified key.
    pub key: KeyKind,
    /// The strong key identifier (V=2) of `spki_der`.
    pub key_id: KeyId,
}

fn bad_csr(detail: impl Into<String>) -> Problem {
    Problem::new(ErrorCode::BadCsr, detail)
}

fn unsupported(detail: impl Into<String>) -> Problem {
    Problem::new(ErrorCode::UnsupportedKey, detail)
}

/// Checks the key policy: P-256, P-384, RSA 2048–4096 with a modulus that
/// is a multiple of 8 and an odd public exponent of at least 65537.
pub fn check_key(kind: &KeyKind) -> Result<(), Problem> {
    match kind {
        KeyKind::P256 | KeyKind::P384 => Ok(()),
        KeyKind::Rsa { bits, exponent_ok } => {
            if !(2048..=4096).contains(bits) || bits % 8 != 0 {
                return Err(unsupported(format!(
                    "RSA keys must have 2048 to 4096 bits in whole bytes; this one has {bits}"
                )));
            }
            if !exponent_ok {
                return Err(unsupported(
                    "RSA public exponent must be odd and at least 65537",
                ));
            }
            Ok(())
        }
        KeyKind::Other(name) => Err(unsupported(format!(
            "{name} keys are not supported (P-256, P-384, RSA 2048-4096)"
        ))),
    }
}

/// Refuses an EC key whose point is not in the uncompressed form: the
/// certificate carries the key exactly as sent, and many relying parties
/// refuse compressed points (RFC 5480 §2.2 makes uncompressed the MUST).
fn check_point_form(spki: &spki::SubjectPublicKeyInfoOwned) -> Result<(), Problem> {
    match sigverify::ec_point_form(spki) {
        None | Some(PointForm::Uncompressed) => Ok(()),
        Some(PointForm::Compressed | PointForm::Hybrid) => Err(unsupported(
            "compressed and hybrid EC points are not supported; send the key's uncompressed point",
        )),
        Some(PointForm::Other) => Err(bad_csr("CSR public key is malformed")),
    }
}

/// Parses and checks a PEM CSR.
pub fn check_csr(pem_text: &str) -> Result<CheckedCsr, Problem> {
    if pem_text.len() > MAX_CSR_LEN {
        return Err(bad_csr("CSR is too long"));
    }
    let der = mailid_shared::pem::decode_one(
        pem_text,
        &["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"],
    )
    .map_err(|e| bad_csr(format!("CSR is not a PEM certificate request: {e}")))?;
    let req = CertReq::from_der(&der).map_err(|e| bad_csr(format!("CSR does not parse: {e}")))?;
    let spki = &req.info.public_key;
    let spki_der = spki
        .to_der()
        .map_err(|_| bad_csr("CSR public key does not encode"))?;
    check_point_form(spki)?;
    let key = match sigverify::classify(spki) {
        Ok(k) => k,
        Err(VerifyError::BadKey) => return Err(bad_csr("CSR public key is malformed")),
        Err(e) => return Err(unsupported(e.to_string())),
    };
    check_key(&key)?;
    let info_der = req
        .info
        .to_der()
        .map_err(|_| bad_csr("CSR request info does not encode"))?;
    let sig = req
        .signature
        .as_bytes()
        .ok_or_else(|| bad_csr("CSR signature is not a whole number of bytes"))?;
    sigverify::verify(spki, &req.algorithm, &info_der, sig).map_err(|e| match e {
        VerifyError::BadSignature => {
            bad_csr("CSR signature does not verify (no proof of possession)")
        }
        other => bad_csr(format!("CSR signature: {other}")),
    })?;
    let account = single_address(&req)?;
    Ok(CheckedCsr {
        account,
        key_id: KeyId::of_spki(&spki_der),
        spki_der,
        key,
    })
}

fn string_value(any: &der::Any) -> Option<String> {
    use der::{Tag, Tagged};
    match any.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::TeletexString => {
            std::str::from_utf8(any.value()).ok().map(str::to_string)
        }
        _ => None,
    }
}

/// The single address a CSR names: rfc822Name SANs, subject emailAddress
/// and a CN that looks like an address must all agree on exactly one.
fn single_address(req: &CertReq) -> Result<Address, Problem> {
    let mut texts: Vec<String> = Vec::new();
    let mut san_seen = false;
    for attr in req.info.attributes.iter() {
        if attr.oid != oids::EXTENSION_REQUEST {
            continue;
        }
        for value in attr.values.iter() {
            let exts: x509_cert::ext::Extensions = value
                .decode_as()
                .map_err(|_| bad_csr("CSR extension request does not parse"))?;
            for ext in exts.iter().filter(|e| e.extn_id == oids::SUBJECT_ALT_NAME) {
                san_seen = true;
                let san = SubjectAltName::from_der(ext.extn_value.as_bytes())
                    .map_err(|_| bad_csr("CSR subjectAltName does not parse"))?;
                for name in san.0 {
                    if let GeneralName::Rfc822Name(n) = name {
                        texts.push(n.to_string());
                    }
                }
            }
        }
    }
    let san_addresses = texts.len();
    for rdn in req.info.subject.0.iter() {
        for atv in rdn.0.iter() {
            let is_email = atv.oid == oids::EMAIL_ADDRESS;
            let is_cn = atv.oid == oids::COMMON_NAME;
            if !(is_email || is_cn) {
                continue;
            }
            let Some(v) = string_value(&atv.value) else {
                if is_email {
                    return Err(bad_csr("subject emailAddress is not a string"));
                }
                continue;
            };
            // A CN that is a plain name (no '@') is not an address.
            if is_email || v.contains('@') {
                texts.push(v);
            }
        }
    }
    let mut addresses: Vec<Address> = Vec::new();
    for t in &texts {
        let a = Address::parse(t).map_err(|e| {
            bad_csr(format!(
                "'{}' is not a usable address: {e}",
                t.escape_default()
            ))
        })?;
        if !addresses.contains(&a) {
            addresses.push(a);
        }
    }
    match addresses.len() {
        0 if san_seen && san_addresses == 0 => {
            Err(bad_csr("CSR subjectAltName holds no rfc822Name"))
        }
        0 => Err(bad_csr("CSR names no mail address")),
        1 => Ok(addresses.remove(0)),
        n => Err(bad_csr(format!(
            "CSR names {n} different addresses; exactly one is allowed"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn csr(key: &KeyPair, sans: &[&str], cn: Option<&str>) -> String {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        p.subject_alt_names = sans
            .iter()
            .map(|s| SanType::Rfc822Name((*s).try_into().unwrap()))
            .collect();
        p.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn accepts_one_address_in_san_or_cn() {
        let k = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let c = check_csr(&csr(&k, &["Alice@Example.org"], Some("Alice"))).unwrap();
        assert_eq!(c.account.as_str(), "alice@example.org");
        assert_eq!(c.key, KeyKind::P256);
        assert_eq!(
            c.key_id,
            KeyId::of_spki(&rcgen::PublicKeyData::subject_public_key_info(&k))
        );
        let c = check_csr(&csr(&k, &[], Some("bob@example.org"))).unwrap();
        assert_eq!(c.account.as_str(), "bob@example.org");
        // The same address twice is one address.
        let c = check_csr(&csr(&k, &["a@x.org"], Some("A@X.org"))).unwrap();
        assert_eq!(c.account.as_str(), "a@x.org");
    }

    #[test]
    fn refuses_bad_csrs() {
        let k = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let code = |pem: &str| check_csr(pem).unwrap_err().code;
        assert_eq!(code("garbage"), ErrorCode::BadCsr);
        assert_eq!(code(&csr(&k, &[], Some("Alice"))), ErrorCode::BadCsr);
        assert_eq!(
            code(&csr(&k, &["a@x.org", "b@x.org"], None)),
            ErrorCode::BadCsr
        );
        assert_eq!(
            code(&csr(&k, &["a@x.org"], Some("b@x.org"))),
            ErrorCode::BadCsr
        );
        // Flip a bit of the signature.
        let pem = csr(&k, &["a@x.org"], None);
        let mut der = mailid_shared::pem::decode_one(&pem, &["CERTIFICATE REQUEST"]).unwrap();
        let last = der.len() - 2;
        der[last] ^= 1;
        let tampered = mailid_shared::pem::encode("CERTIFICATE REQUEST", &der);
        assert_eq!(code(&tampered), ErrorCode::BadCsr);
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert_eq!(
            code(&csr(&ed, &["a@x.org"], None)),
            ErrorCode::UnsupportedKey
        );
    }

    #[test]
    fn rsa_key_policy() {
        let ok = |bits| {
            check_key(&KeyKind::Rsa {
                bits,
                exponent_ok: true,
            })
        };
        assert!(ok(2048).is_ok());
        assert!(ok(4096).is_ok());
        assert!(ok(3072).is_ok());
        assert!(ok(1024).is_err());
        assert!(ok(2047).is_err());
        assert!(ok(2056).is_ok());
        assert!(ok(2052).is_err());
        assert!(ok(4104).is_err());
        assert!(check_key(&KeyKind::Rsa {
            bits: 2048,
            exponent_ok: false
        })
        .is_err());
    }
}
