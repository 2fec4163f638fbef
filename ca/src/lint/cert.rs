//! The identity-certificate rules of the linter: one function per rule,
//! each over the decoded TBSCertificate, against the SPEC §5 profile as
//! [`crate::issuer`] builds it.
//!
//! The TBS is read without copying ([`super::tbs`]); each extension value
//! is decoded with its x509-cert type and must be DER (its decoded value
//! re-encodes to the same length: der accepts DEFAULT values written out,
//! DER forbids them).

use der::asn1::ObjectIdentifier;
use der::{Decode, Encode, Header, Length, Tag};
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints, CertificatePolicies,
    CrlDistributionPoints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
    SubjectKeyIdentifier,
};

use mailid_shared::sigverify::{self, KeyKind};
use mailid_shared::KeyId;

use super::tbs::{self, ExtRef, TbsRef};
use super::{
    same_algorithm, serial_problem, start_time_problem, time_encoding, unix, CertContext, Finding,
    Findings,
};
use crate::config::MAX_VALIDITY_DAYS;
use crate::issuer::UB_COMMON_NAME;

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

/// A read TBSCertificate and what several rules need of it, computed
/// once.
pub struct Cert<'a> {
    pub tbs: TbsRef<'a>,
    /// The subject key's kind, or why it has none.
    pub key: Result<KeyKind, String>,
}

/// A certificate rule: name and check.
type Rule = (&'static str, fn(&Cert<'_>, &CertContext, &mut Findings));

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
/// rule of [`RULES`], plus `cert.decode` (strict DER). No findings: it may
/// be signed.
pub fn check_certificate(tbs_der: &[u8], ctx: &CertContext) -> Vec<Finding> {
    let tbs = match tbs::decode(tbs_der) {
        Ok(t) => t,
        Err(e) => {
            return vec![Finding::new(
                "cert.decode",
                format!("not a DER TBSCertificate: {e}"),
            )]
        }
    };
    let mut f = Findings::default();
    if tbs.default_written {
        f.push(
            "cert.decode",
            "not in DER form (a DEFAULT value is encoded)",
        );
    }
    let key = match sigverify::parse_spki(tbs.spki) {
        Ok(spki) => sigverify::classify(&spki).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let cert = Cert { tbs, key };
    for (_, rule) in RULES {
        rule(&cert, ctx, &mut f);
    }
    f.finish()
}

/// The one extension with this OID (a repeated one is `cert.extensions`'
/// finding; the first is judged here).
fn ext<'a>(c: &Cert<'a>, oid: ObjectIdentifier) -> Option<ExtRef<'a>> {
    c.tbs.extensions.iter().find(|e| e.oid == oid).copied()
}

/// The decoded extension `oid`, or a finding under `rule` when it is
/// missing, has the wrong criticality, does not decode or is not DER.
fn decoded<'a, T: Decode<'a> + Encode>(
    c: &Cert<'a>,
    oid: ObjectIdentifier,
    critical: bool,
    rule: &'static str,
    f: &mut Findings,
) -> Option<T> {
    let Some(e) = ext(c, oid) else {
        f.push(rule, format!("extension {oid} is missing"));
        return None;
    };
    if e.critical != critical {
        let want = if critical { "critical" } else { "not critical" };
        f.push(rule, format!("extension {oid} must be {want}"));
    }
    match T::from_der(e.value) {
        Ok(v) => {
            if v.encoded_len().ok() != Length::try_from(e.value.len()).ok() {
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

/// A Name for a finding: its RFC 4514 text, or hex when it does not decode.
fn show_name(der: &[u8]) -> String {
    x509_cert::name::Name::from_der(der)
        .map(|n| n.to_string())
        .unwrap_or_else(|_| der.iter().map(|b| format!("{b:02x}")).collect())
}

/// The DER of `CN=<address>`: one RDN holding one UTF8String (an address
/// cannot be a PrintableString: `@` is not in its alphabet).
fn cn_name(address: &str) -> der::Result<Vec<u8>> {
    let wrap = |tag: Tag, content: &[u8]| -> der::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(content.len() + 4);
        Header::new(tag, Length::try_from(content.len())?)?.encode_to_vec(&mut out)?;
        out.extend_from_slice(content);
        Ok(out)
    };
    let mut atv = OID_CN.to_der()?;
    atv.extend(wrap(Tag::Utf8String, address.as_bytes())?);
    wrap(Tag::Sequence, &wrap(Tag::Set, &wrap(Tag::Sequence, &atv)?)?)
}

fn version(c: &Cert, _: &CertContext, f: &mut Findings) {
    if c.tbs.version != Some(2) {
        let v = c.tbs.version.map_or(1, |v| u16::from(v) + 1);
        f.push("cert.version", format!("version is v{v}, not v3"));
    }
}

fn serial(c: &Cert, _: &CertContext, f: &mut Findings) {
    if let Some(p) = serial_problem(c.tbs.serial) {
        f.push("cert.serial", p);
    }
}

/// At least 64 random bits: a positive serial of at least 8 significant
/// octets (the issuer makes 16 random ones).
fn serial_entropy(c: &Cert, _: &CertContext, f: &mut Findings) {
    let significant = c.tbs.serial.iter().skip_while(|b| **b == 0).count();
    if significant < 8 {
        f.push(
            "cert.serial_entropy",
            format!("serial number has {significant} significant octets; at least 8 (64 random bits) are required"),
        );
    }
}

fn signature_algorithm(c: &Cert, ctx: &CertContext, f: &mut Findings) {
    let tbs = &c.tbs;
    let (oid, params) = (tbs.signature.oid, tbs.signature.parameters);
    if !same_algorithm(&ctx.profile.signature_algorithm, oid, params) {
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
    if c.tbs.issuer != ctx.profile.issuer {
        f.push(
            "cert.issuer",
            format!(
                "issuer '{}' is not the CA's subject",
                show_name(c.tbs.issuer)
            ),
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
    let nb = unix(&c.tbs.validity.not_before);
    if let Some(p) = start_time_problem("notBefore", nb, ctx.now) {
        f.push("cert.not_before", p);
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

/// Exactly `CN=<address>` (one RDN, one attribute, a UTF8String equal to
/// the address); an empty subject for an address longer than
/// ub-common-name.
fn subject(c: &Cert, ctx: &CertContext, f: &mut Findings) {
    const EMPTY: &[u8] = &[0x30, 0x00];
    if ctx.address.len() > UB_COMMON_NAME {
        if c.tbs.subject != EMPTY {
            f.push(
                "cert.subject",
                format!(
                    "address is longer than {UB_COMMON_NAME} octets, so the subject must be empty"
                ),
            );
        }
        return;
    }
    if cn_name(ctx.address).ok().as_deref() != Some(c.tbs.subject) {
        f.push(
            "cert.subject",
            format!(
                "subject '{}' is not exactly CN={}",
                show_name(c.tbs.subject),
                ctx.address
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
        if c.tbs.spki != want {
            f.push("cert.subject_key", "subject key is not the CSR's key");
        }
    }
}

fn unique_ids(c: &Cert, _: &CertContext, f: &mut Findings) {
    if c.tbs.unique_ids {
        f.push("cert.unique_ids", "issuer or subject unique ID present");
    }
}

/// Only the profile's extensions, each once.
fn extensions(c: &Cert, _: &CertContext, f: &mut Findings) {
    let exts = &c.tbs.extensions;
    for (i, e) in exts.iter().enumerate() {
        if !PROFILE_EXTENSIONS.contains(&e.oid) {
            f.push(
                "cert.extensions",
                format!("extension {} is not in the profile", e.oid),
            );
        }
        if exts[..i].iter().any(|o| o.oid == e.oid) {
            f.push(
                "cert.extensions",
                format!("extension {} appears twice", e.oid),
            );
        }
    }
}

/// Exactly one rfc822Name, the address; critical exactly when the subject
/// is empty (RFC 5280 §4.2.1.6).
fn san(c: &Cert, ctx: &CertContext, f: &mut Findings) {
    let critical = c.tbs.subject == [0x30, 0x00];
    let Some(san) = decoded::<SubjectAltName>(c, OID_SAN, critical, "cert.san", f) else {
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
    let Some(ku) = decoded::<KeyUsage>(c, OID_KU, true, "cert.key_usage", f) else {
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
    let Some(eku) = decoded::<ExtendedKeyUsage>(c, OID_EKU, false, "cert.eku", f) else {
        return;
    };
    if eku.0 != [OID_EMAIL_PROTECTION] {
        f.push("cert.eku", "extKeyUsage is not emailProtection alone");
    }
}

fn basic_constraints(c: &Cert, _: &CertContext, f: &mut Findings) {
    let rule = "cert.basic_constraints";
    let Some(bc) = decoded::<BasicConstraints>(c, OID_BC, true, rule, f) else {
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
    let Some(aki) = decoded::<AuthorityKeyIdentifier>(c, OID_AKI, false, "cert.aki", f) else {
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
    let Some(ski) = decoded::<SubjectKeyIdentifier>(c, OID_SKI, false, "cert.ski", f) else {
        return;
    };
    if ski.0.as_bytes() != KeyId::of_spki(c.tbs.spki).as_bytes() {
        f.push(
            "cert.ski",
            "subjectKeyIdentifier is not the strong key ID of the subject key",
        );
    }
}

/// One distribution point: the configured URL as its full name.
fn crl_dp(c: &Cert, ctx: &CertContext, f: &mut Findings) {
    let rule = "cert.crl_dp";
    let Some(dps) = decoded::<CrlDistributionPoints>(c, OID_CRL_DP, false, rule, f) else {
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
    let rule = "cert.aia";
    let Some(aia) = decoded::<AuthorityInfoAccessSyntax>(c, OID_AIA, false, rule, f) else {
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
    let rule = "cert.policy";
    let Some(cp) = decoded::<CertificatePolicies>(c, OID_CERT_POLICIES, false, rule, f) else {
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
