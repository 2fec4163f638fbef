//! Reading certificates: the facts the client shows and stores, and whether
//! a certificate was issued by a given CA certificate.

use der::{Decode, Encode};
use mailid_shared::{pem, sigverify, timefmt, KeyId, Serial};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

use crate::error::{Error, Result};

/// What the client knows about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// Serial number, lower-case hex.
    pub serial: Serial,
    /// Subject DN text.
    pub subject: String,
    /// Issuer DN text.
    pub issuer: String,
    /// rfc822Name SAN entries.
    pub emails: Vec<String>,
    /// Validity start, RFC 3339.
    pub not_before: String,
    /// Validity end, RFC 3339.
    pub not_after: String,
    /// Validity end, Unix seconds.
    pub not_after_unix: i64,
    /// Strong key ID (V=2) of the subject public key.
    pub key_id: KeyId,
    /// Key type, e.g. `P-256`.
    pub key_type: String,
}

/// Decodes a single PEM certificate to DER.
pub fn pem_to_der(text: &str) -> Result<Vec<u8>> {
    pem::decode_one(text, &["CERTIFICATE"])
        .map_err(|e| Error::Crypto(format!("not a PEM certificate: {e}")))
}

/// Parses a DER certificate.
pub fn parse(der: &[u8]) -> Result<Certificate> {
    Certificate::from_der(der)
        .map_err(|e| Error::Crypto(format!("not a valid X.509 certificate: {e}")))
}

/// The DER SubjectPublicKeyInfo of a certificate.
pub fn spki_der(cert: &Certificate) -> Result<Vec<u8>> {
    cert.tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| Error::Crypto(format!("cannot encode the public key: {e}")))
}

/// Summarises a DER certificate.
pub fn summarize(der: &[u8]) -> Result<CertSummary> {
    let cert = parse(der)?;
    let tbs = &cert.tbs_certificate;
    let spki = spki_der(&cert)?;
    let key_type = sigverify::classify(&tbs.subject_public_key_info)
        .map(|k| k.name())
        .unwrap_or_else(|_| "unknown key".into());
    let not_before = tbs.validity.not_before.to_unix_duration().as_secs() as i64;
    let not_after = tbs.validity.not_after.to_unix_duration().as_secs() as i64;
    let emails = match tbs.get::<SubjectAltName>() {
        Ok(Some((_, san))) => san
            .0
            .iter()
            .filter_map(|g| match g {
                GeneralName::Rfc822Name(s) => Some(s.to_string().to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(CertSummary {
        serial: Serial::from_bytes(tbs.serial_number.as_bytes()),
        subject: tbs.subject.to_string(),
        issuer: tbs.issuer.to_string(),
        emails,
        not_before: timefmt::rfc3339(not_before),
        not_after: timefmt::rfc3339(not_after),
        not_after_unix: not_after,
        key_id: KeyId::of_spki(&spki),
        key_type,
    })
}

/// Whether `cert_der` names `issuer_der`'s subject as its issuer and its
/// signature verifies with the issuer's public key.
pub fn issued_by(cert_der: &[u8], issuer_der: &[u8]) -> bool {
    let (Ok(cert), Ok(issuer)) = (parse(cert_der), parse(issuer_der)) else {
        return false;
    };
    if cert.tbs_certificate.issuer != issuer.tbs_certificate.subject {
        return false;
    }
    let Ok(tbs) = cert.tbs_certificate.to_der() else {
        return false;
    };
    let Some(sig) = cert.signature.as_bytes() else {
        return false;
    };
    sigverify::verify(
        &issuer.tbs_certificate.subject_public_key_info,
        &cert.signature_algorithm,
        &tbs,
        sig,
    )
    .is_ok()
}
