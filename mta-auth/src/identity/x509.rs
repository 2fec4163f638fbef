//! Certificate helpers on top of x509-cert: names, validity, extensions,
//! signatures.

use der::{Decode, Encode};
use mailid_shared::{sigverify, Address};
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    BasicConstraints, CrlDistributionPoints, ExtendedKeyUsage, SubjectAltName,
};
use x509_cert::Certificate;

const OID_SAN: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("2.5.29.17");
const OID_BASIC: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("2.5.29.19");
const OID_EKU: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("2.5.29.37");
const OID_CRL_DP: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.5.29.31");
const OID_EMAIL_PROTECTION: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.4");
const OID_ANY_EKU: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.5.29.37.0");

fn extension<'a, T: Decode<'a>>(
    cert: &'a Certificate,
    oid: der::asn1::ObjectIdentifier,
) -> Option<Result<T, der::Error>> {
    let ext = cert
        .tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == oid)?;
    Some(T::from_der(ext.extn_value.as_bytes()))
}

/// Every rfc822Name in the certificate's subjectAltName.
pub fn rfc822_names(cert: &Certificate) -> Vec<String> {
    match extension::<SubjectAltName>(cert, OID_SAN) {
        Some(Ok(san)) => san
            .0
            .iter()
            .filter_map(|n| match n {
                GeneralName::Rfc822Name(s) => Some(s.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The one address a certificate names in its SAN (none if zero, several
/// or unparsable).
pub fn single_rfc822_name(cert: &Certificate) -> Option<Address> {
    match rfc822_names(cert).as_slice() {
        [one] => Address::parse(one).ok(),
        _ => None,
    }
}

/// [`single_rfc822_name`] of a DER certificate.
pub fn single_rfc822_name_der(der: &[u8]) -> Option<Address> {
    Certificate::from_der(der)
        .ok()
        .and_then(|c| single_rfc822_name(&c))
}

/// notBefore and notAfter as Unix seconds.
pub fn validity(cert: &Certificate) -> (i64, i64) {
    let v = &cert.tbs_certificate.validity;
    (
        v.not_before.to_unix_duration().as_secs() as i64,
        v.not_after.to_unix_duration().as_secs() as i64,
    )
}

/// Whether basicConstraints says cA=true (a malformed extension is not).
pub fn is_ca(cert: &Certificate) -> bool {
    matches!(extension::<BasicConstraints>(cert, OID_BASIC), Some(Ok(b)) if b.ca)
}

/// Whether the certificate may protect mail: no extKeyUsage, or one that
/// lists emailProtection or anyExtendedKeyUsage.
pub fn allows_email(cert: &Certificate) -> bool {
    match extension::<ExtendedKeyUsage>(cert, OID_EKU) {
        None => true,
        Some(Ok(eku)) => eku
            .0
            .iter()
            .any(|o| *o == OID_EMAIL_PROTECTION || *o == OID_ANY_EKU),
        Some(Err(_)) => false,
    }
}

/// The http(s) URLs of the certificate's CRL distribution points.
pub fn crl_urls(cert: &Certificate) -> Vec<String> {
    let Some(Ok(dps)) = extension::<CrlDistributionPoints>(cert, OID_CRL_DP) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for dp in dps.0 {
        if let Some(DistributionPointName::FullName(names)) = dp.distribution_point {
            for n in names {
                if let GeneralName::UniformResourceIdentifier(u) = n {
                    let u = u.to_string();
                    if u.starts_with("http://") || u.starts_with("https://") {
                        out.push(u);
                    }
                }
            }
        }
    }
    out
}

/// Whether `parent` issued `child`: names match and the signature verifies.
pub fn issued_by(child: &Certificate, parent: &Certificate) -> bool {
    if child.tbs_certificate.issuer != parent.tbs_certificate.subject {
        return false;
    }
    let Ok(tbs) = child.tbs_certificate.to_der() else {
        return false;
    };
    sigverify::verify(
        &parent.tbs_certificate.subject_public_key_info,
        &child.signature_algorithm,
        &tbs,
        child.signature.raw_bytes(),
    )
    .is_ok()
}

/// DER of a certificate's SubjectPublicKeyInfo.
pub fn spki_der(cert: &Certificate) -> Result<Vec<u8>, der::Error> {
    cert.tbs_certificate.subject_public_key_info.to_der()
}
