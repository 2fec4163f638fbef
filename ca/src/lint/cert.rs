//! The identity-certificate rules of the linter: one function per rule,
//! each over the decoded TBSCertificate, against the SPEC §5 profile as
//! [`crate::issuer`] builds it.
//!
//! The TBS is decoded with a serial-number profile that accepts any
//! length, so an over-long serial is reported by its rule rather than as
//! an undecodable certificate; everything else is x509-cert's strict DER
//! decoding, and re-encoding must give back the input byte for byte.

use der::asn1::ObjectIdentifier;
use der::{Decode, Encode, Length, Tag, Tagged};
use x509_cert::certificate::{Profile, TbsCertificateInner, Version};
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints, CertificatePolicies,
    CrlDistributionPoints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
    SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;

use mailid_shared::sigverify::{self, KeyKind};
use mailid_shared::KeyId;

use super::{
    same_algorithm, serial_problem, time_encoding, unix, CertContext, Finding, Findings,
    MAX_BACKDATE_SECS, MAX_FUTURE_SECS,
};
use crate::config::MAX_VALIDITY_DAYS;
use crate::issuer::UB_COMMON_NAME;

/// Decodes serial numbers of any length (the rule `cert.serial` judges).
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct AnySerial;
impl Profile for AnySerial {
    fn check_serial_number(_: &x509_cert::serial_number::SerialNumber<Self>) -> der::Result<()> {
        Ok(())
    }
}

/// A decoded TBSCertificate as the rules see it.
pub type Tbs = TbsCertificateInner<AnySerial>;

pub const OID_SAN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
pub const OID_KU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
pub const OID_EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
pub const OID_BC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
pub const OID_AKI: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");
pub const OID_SKI: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
pub const OID_CRL_DP: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.31");
pub const OID_AIA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.1");
pub const OID_CERT_POLICIES: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.32");
const OID_CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const OID_EMAIL_PROTECTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.4");
const OID_CA_ISSUERS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.2");

/// The extensions of the profile; any other is a finding.
const PROFILE_EXTENSIONS: [ObjectIdentifier; 9] = [
    OID_SAN,
    OID_KU,
    OID_EKU,
    OID_BC,
    OID_AKI,
    OID_SKI,
    OID_CRL_DP,
    OID_AIA,
    OID_CERT_POLICIES,
];

/// A decoded TBSCertificate and what several rules need of it, computed
/// once.
pub struct Cert {
    pub tbs: Tbs,
    /// DER of the subject public key info.
    pub spki_der: Vec<u8>,
    /// The subject key's kind, or why it has none.
    pub key: Result<KeyKind, String>,
}

/// A certificate rule: name and check.
type Rule = (&'static str, fn(&Cert, &CertContext, &mut Findings));

/// Every certificate rule, in the order they run.
pub(crate) const RULES: &[Rule] = &[
    ("cert.version", version),
    ("cert.serial", serial),
    ("cert.serial_entropy", serial_entropy),
    ("cert.signature_algorithm", signature_algorithm),
    ("cert.issuer", issuer),
    ("cert.validity", validity),
    ("cert.not_before", not_before),
    ("cert.time_encoding", time_encodings),
    ("cert.subject", subject),
    ("cert.subject_key", subject_key),
    ("cert.unique_ids", unique_ids),
    ("cert.extensions", extensions),
    ("cert.san", san),
    ("cert.key_usage", key_usage),
    ("cert.eku", eku),
    ("cert.basic_constraints", basic_constraints),
    ("cert.aki", aki),
    ("cert.ski", ski),
    ("cert.crl_dp", crl_dp),
    ("cert.aia", aia),
    ("cert.policy", policy),
];

/// Checks a to-be-signed identity certificate (DER TBSCertificate): every
/// rule of [`RULES`], plus `cert.decode` (it must decode as strict DER and
/// re-encode to the same bytes). No findings: it may be signed.
pub fn check_certificate(tbs_der: &[u8], ctx: &CertContext) -> Vec<Finding> {
    let tbs = match Tbs::from_der(tbs_der) {
        Ok(t) => t,
        Err(e) => {
            return vec![Finding::new(
                "cert.decode",
                format!("not a DER TBSCertificate: {e}"),
            )]
        }
    };
    let mut f = Findings::default();
    // der decodes strictly except for DEFAULT values written out (such as
    // an extension's `critical FALSE`): those make the DER form shorter.
    if tbs.encoded_len().ok() != Length::try_from(tbs_der.len()).ok() {
        f.push(
            "cert.decode",
            "not in DER form (a DEFAULT value is encoded)",
        );
    }
    let cert = Cert {
        spki_der: tbs.subject_public_key_info.to_der().unwrap_or_default(),
        key: sigverify::classify(&tbs.subject_public_key_info).map_err(|e| e.to_string()),
        tbs,
    };
    for (_, rule) in RULES {
        rule(&cert, ctx, &mut f);
    }
    f.finish()
}

/// The one extension with this OID (a repeated one is `cert.extensions`'
/// finding; the first is judged here).
fn ext(tbs: &Tbs, oid: ObjectIdentifier) -> Option<&Extension> {
    tbs.extensions.iter().flatten().find(|e| e.extn_id == oid)
}

/// The decoded extension `oid`, or a finding under `rule` when it is
/// missing, has the wrong criticality or does not decode.
fn decoded<'t, T: Decode<'t> + Encode>(
    tbs: &'t Tbs,
    oid: ObjectIdentifier,
    critical: bool,
    rule: &'static str,
    f: &mut Findings,
) -> Option<T> {
    let Some(e) = ext(tbs, oid) else {
        f.push(rule, format!("extension {oid} is missing"));
        return None;
    };
    if e.critical != critical {
        let want = if critical { "critical" } else { "not critical" };
        f.push(rule, format!("extension {oid} must be {want}"));
    }
    let value = e.extn_value.as_bytes();
    match T::from_der(value) {
        Ok(v) => {
            if v.encoded_len().ok() != Length::try_from(value.len()).ok() {
                f.push(rule, format!("extension {oid} is not in DER form"));
            }
            Some(v)
        }
        Err(err) => {
            f.push(rule, format!("extension {oid} does not decode: {err}"));
            None
        }
    }
}

fn version(c: &Cert, _: &CertContext, f: &mut Findings) {
    let tbs = &c.tbs;
    if tbs.version != Version::V3 {
        f.push(
            "cert.version",
            format!("version is {:?}, not v3", tbs.version),
        );
    }
}

fn serial(c: &Cert, _: &CertContext, f: &mut Findings) {
    let tbs = &c.tbs;
    if let Some(p) = serial_problem(tbs.serial_number.as_bytes()) {
        f.push("cert.serial", p);
    }
}

/// At least 64 random bits: a positive serial of at least 8 significant
/// octets (the issuer makes 16 random ones).
fn serial_entropy(c: &Cert, _: &CertContext, f: &mut Findings) {
    let tbs = &c.tbs;
    let bytes = tbs.serial_number.as_bytes();
    let significant = bytes.iter().skip_while(|b| **b == 0).count();
    if significant < 8 {
        f.push(
            "cert.serial_entropy",
            format!("serial number has {significant} significant octets; at least 8 (64 random bits) are required"),
        );
    }
}

fn signature_algorithm(c: &Cert, ctx: &CertContext, f: &mut Findings) {
    let tbs = &c.tbs;
    let (oid, params) = (tbs.signature.oid, tbs.signature.parameters.as_ref());
    if !same_algorithm(
        &ctx.profile.signature_algorithm,
        oid,
        params.map(Into::into),
    ) {
        f.push(
            "cert.signature_algorithm",
            format!(
                "signature algorithm {} is not the CA key's",
                tbs.signature.oid
            ),
        );
    }
}

fn issuer(c: &Cert, ctx: &CertContext, f: &mut Findings) {
    let tbs = &c.tbs;
    if tbs.issuer != ctx.profile.issuer {
        f.push(
            "cert.issuer",
            format!("issuer '{}' is not the CA's subject", tbs.issuer),
        );
    }
}

/// notAfter after notBefore, the period (counted inclusively, as the
/// S/MIME BR do) at most 825 days.
fn validity(c: &Cert, _: &CertContext, f: &mut Findings) {
    let tbs = &c.tbs;
    let nb = unix(&tbs.validity.not_before);
    let na = unix(&tbs.validity.not_after);
    if na <= nb {
        f.push("cert.validity", "notAfter is not after notBefore");
        return;
    }
    let max = i64::from(MAX_VALIDITY_DAYS) * 86_400;
    if na - nb + 1 > max {
        f.push(
            "cert.validity",
            format!(
                "validity is {} s; at most {MAX_VALIDITY_DAYS} days ({max} s) counting both ends",
                na - nb + 1
            ),
        );
    }
}

/// notBefore backdated at most a minute and not in the future.
fn not_before(c: &Cert, ctx: &CertContext, f: &mut Findings) {
    let tbs = &c.tbs;
    let nb = unix(&tbs.validity.not_before);
    if ctx.now - nb > MAX_BACKDATE_SECS {
        f.push(
            "cert.not_before",
            format!(
                "notBefore is backdated {} s (at most {MAX_BACKDATE_SECS})",
                ctx.now - nb
            ),
        );
    } else if nb - ctx.now > MAX_FUTURE_SECS {
        f.push(
            "cert.not_before",
            format!("notBefore is {} s in the future", nb - ctx.now),
        );
    }
}

fn time_encodings(c: &Cert, _: &CertContext, f: &mut Findings) {
    let tbs = &c.tbs;
    for t in [&tbs.validity.not_before, &tbs.validity.not_after] {
        if let Some(p) = time_encoding(t) {
            f.push("cert.time_encoding", p);
        }
    }
}

/// Exactly `CN=<address>` (one RDN, one attribute, a UTF8String or
/// PrintableString equal to the address); an empty subject for an address
/// longer than ub-common-name.
fn subject(c: &Cert, ctx: &CertContext, f: &mut Findings) {
    let tbs = &c.tbs;
    let rdns = &tbs.subject.0;
    if ctx.address.len() > UB_COMMON_NAME {
        if !rdns.is_empty() {
            f.push(
                "cert.subject",
                format!(
                    "address is longer than {UB_COMMON_NAME} octets, so the subject must be empty"
                ),
            );
        }
        return;
    }
    let ok = rdns.len() == 1
        && rdns[0].0.len() == 1
        && rdns[0].0.get(0).is_some_and(|atv| {
            atv.oid == OID_CN
                && matches!(atv.value.tag(), Tag::Utf8String | Tag::PrintableString)
                && atv.value.value() == ctx.address.as_bytes()
        });
    if !ok {
        f.push(
            "cert.subject",
            format!(
                "subject '{}' is not exactly CN={}",
                tbs.subject, ctx.address
            ),
        );
    }
}

/// The subject key is one the key policy allows and, when known, the
/// CSR's.
fn subject_key(c: &Cert, ctx: &CertContext, f: &mut Findings) {
    match &c.key {
        Ok(kind) => {
            if let Err(p) = crate::policy::check_key(kind) {
                f.push("cert.subject_key", p.detail);
            }
        }
        Err(e) => f.push("cert.subject_key", format!("subject key: {e}")),
    }
    if let Some(want) = ctx.subject_spki {
        if c.spki_der != want {
            f.push("cert.subject_key", "subject key is not the CSR's key");
        }
    }
}

fn unique_ids(c: &Cert, _: &CertContext, f: &mut Findings) {
    let tbs = &c.tbs;
    if tbs.issuer_unique_id.is_some() || tbs.subject_unique_id.is_some() {
        f.push("cert.unique_ids", "issuer or subject unique ID present");
    }
}

/// Only the profile's extensions, each once.
fn extensions(c: &Cert, _: &CertContext, f: &mut Findings) {
    let tbs = &c.tbs;
    let exts = tbs.extensions.as_deref().unwrap_or_default();
    for (i, e) in exts.iter().enumerate() {
        if !PROFILE_EXTENSIONS.contains(&e.extn_id) {
            f.push(
                "cert.extensions",
                format!("extension {} is not in the profile", e.extn_id),
            );
        }
        if exts[..i].iter().any(|o| o.extn_id == e.extn_id) {
            f.push(
                "cert.extensions",
                format!("extension {} appears twice", e.extn_id),
            );
        }
    }
}

/// Exactly one rfc822Name, the address; critical exactly when the subject
/// is empty (RFC 5280 §4.2.1.6).
fn san(c: &Cert, ctx: &CertContext, f: &mut Findings) {
    let tbs = &c.tbs;
    let critical = tbs.subject.0.is_empty();
    let Some(san) = decoded::<SubjectAltName>(tbs, OID_SAN, critical, "cert.san", f) else {
        return;
    };
    let ok = matches!(&san.0[..], [GeneralName::Rfc822Name(n)] if n.as_bytes() == ctx.address.as_bytes());
    if !ok {
        f.push(
            "cert.san",
            format!("subjectAltName is not exactly rfc822Name {}", ctx.address),
        );
    }
}

/// Critical, with exactly the bits for the subject key type: EC
/// digitalSignature + keyAgreement, RSA digitalSignature + keyEncipherment.
fn key_usage(c: &Cert, _: &CertContext, f: &mut Findings) {
    let tbs = &c.tbs;
    let Some(ku) = decoded::<KeyUsage>(tbs, OID_KU, true, "cert.key_usage", f) else {
        return;
    };
    let want = match &c.key {
        Ok(k) if k.is_ec() => KeyUsages::DigitalSignature | KeyUsages::KeyAgreement,
        Ok(KeyKind::Rsa { .. }) => KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment,
        // An unsupported key is cert.subject_key's finding.
        _ => return,
    };
    if ku.0 != want {
        f.push(
            "cert.key_usage",
            format!("keyUsage is {:?}, the profile gives {want:?}", ku.0),
        );
    }
}

fn eku(c: &Cert, _: &CertContext, f: &mut Findings) {
    let tbs = &c.tbs;
    let Some(eku) = decoded::<ExtendedKeyUsage>(tbs, OID_EKU, false, "cert.eku", f) else {
        return;
    };
    if eku.0 != [OID_EMAIL_PROTECTION] {
        f.push("cert.eku", "extKeyUsage is not emailProtection alone");
    }
}

fn basic_constraints(c: &Cert, _: &CertContext, f: &mut Findings) {
    let tbs = &c.tbs;
    let rule = "cert.basic_constraints";
    let Some(bc) = decoded::<BasicConstraints>(tbs, OID_BC, true, rule, f) else {
        return;
    };
    if bc.ca || bc.path_len_constraint.is_some() {
        f.push(
            rule,
            "basicConstraints must be cA=false without a path length",
        );
    }
}

/// The key identifier alone, equal to the CA's SKI.
fn aki(c: &Cert, ctx: &CertContext, f: &mut Findings) {
    let tbs = &c.tbs;
    let Some(aki) = decoded::<AuthorityKeyIdentifier>(tbs, OID_AKI, false, "cert.aki", f) else {
        return;
    };
    let ok = aki.authority_cert_issuer.is_none()
        && aki.authority_cert_serial_number.is_none()
        && aki
            .key_identifier
            .is_some_and(|k| k.as_bytes() == ctx.profile.ca_ski);
    if !ok {
        f.push(
            "cert.aki",
            "authorityKeyIdentifier is not the CA's key ID alone",
        );
    }
}

/// The strong key ID (V=2) of the certificate's own key.
fn ski(c: &Cert, _: &CertContext, f: &mut Findings) {
    let tbs = &c.tbs;
    let Some(ski) = decoded::<SubjectKeyIdentifier>(tbs, OID_SKI, false, "cert.ski", f) else {
        return;
    };
    if ski.0.as_bytes() != KeyId::of_spki(&c.spki_der).as_bytes() {
        f.push(
            "cert.ski",
            "subjectKeyIdentifier is not the strong key ID of the subject key",
        );
    }
}

/// One distribution point: the configured URL as its full name.
fn crl_dp(c: &Cert, ctx: &CertContext, f: &mut Findings) {
    let tbs = &c.tbs;
    let rule = "cert.crl_dp";
    let Some(dps) = decoded::<CrlDistributionPoints>(tbs, OID_CRL_DP, false, rule, f) else {
        return;
    };
    let ok = match &dps.0[..] {
        [DistributionPoint {
            distribution_point: Some(DistributionPointName::FullName(names)),
            reasons: None,
            crl_issuer: None,
        }] => is_uri(names, &ctx.profile.crl_url),
        _ => false,
    };
    if !ok {
        f.push(
            rule,
            format!(
                "CRL distribution point is not exactly {}",
                ctx.profile.crl_url
            ),
        );
    }
}

fn is_uri(names: &[GeneralName], url: &str) -> bool {
    matches!(names, [GeneralName::UniformResourceIdentifier(u)] if u.as_bytes() == url.as_bytes())
}

/// One caIssuers access description with the configured URL.
fn aia(c: &Cert, ctx: &CertContext, f: &mut Findings) {
    let tbs = &c.tbs;
    let rule = "cert.aia";
    let Some(aia) = decoded::<AuthorityInfoAccessSyntax>(tbs, OID_AIA, false, rule, f) else {
        return;
    };
    let ok = match &aia.0[..] {
        [a] => {
            a.access_method == OID_CA_ISSUERS
                && is_uri(
                    std::slice::from_ref(&a.access_location),
                    &ctx.profile.ca_issuers_url,
                )
        }
        _ => false,
    };
    if !ok {
        f.push(
            rule,
            format!(
                "authorityInfoAccess is not exactly caIssuers {}",
                ctx.profile.ca_issuers_url
            ),
        );
    }
}

/// The configured policy OID alone, without qualifiers.
fn policy(c: &Cert, ctx: &CertContext, f: &mut Findings) {
    let tbs = &c.tbs;
    let rule = "cert.policy";
    let Some(cp) = decoded::<CertificatePolicies>(tbs, OID_CERT_POLICIES, false, rule, f) else {
        return;
    };
    let ok = matches!(&cp.0[..], [p] if p.policy_identifier == ctx.profile.policy_oid && p.policy_qualifiers.is_none());
    if !ok {
        f.push(
            rule,
            format!(
                "certificatePolicies is not exactly {}",
                ctx.profile.policy_oid
            ),
        );
    }
}

#[cfg(test)]
#[path = "cert_tests.rs"]
mod tests;
