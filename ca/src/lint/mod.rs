//! Lint before sign (SPEC §9): checks a to-be-signed certificate or CRL
//! against the identity profile of SPEC §5 and RFC 5280's encoding rules,
//! so that nothing the CA key signs was not checked first (CA/B Forum
//! S/MIME BR §4.3.1.2).
//!
//! The input is the DER the CA key is about to sign (a TBSCertificate or a
//! TBSCertList), read without copying it ([`tbs`], [`crl_entries`]) and
//! decoded piece by piece with der and x509-cert; every finding names the
//! rule it broke. [`check_certificate`] and [`check_crl`] never panic on any input
//! (fuzz target `lint`); a TBS that does not decode is itself a finding.
//! Each rule is a small function in [`cert`] or [`crl`] with a unit test
//! that feeds it a mutated TBS. [`external`] adds an optional pkilint REST
//! server on top, fail-closed.

pub mod cert;
pub mod crl;
pub mod crl_entries;
pub mod external;
pub mod tbs;
#[cfg(test)]
mod test_support;

use std::fmt;

use der::asn1::ObjectIdentifier;
use der::Decode;
use rcgen::SignatureAlgorithm;
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

use crate::config::Config;

pub use cert::check_certificate;
pub use crl::check_crl;

/// One broken rule: its name (stable, for logs and `/metrics`) and what
/// was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: &'static str,
    pub detail: String,
}

impl Finding {
    pub(crate) fn new(rule: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            rule,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.detail)
    }
}

/// Joins findings into one log line.
pub fn describe(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(Finding::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What the CA's configuration and certificate fix for everything it
/// signs; built once at start, like [`crate::issuer::CaIssuer`].
#[derive(Debug, Clone)]
pub struct LintProfile {
    /// DER of the CA certificate's subject (the issuer of what it signs).
    pub issuer: Vec<u8>,
    /// The CA's subject key identifier (the AKI of what it signs).
    pub ca_ski: Vec<u8>,
    /// The CRL distribution point URL identities must carry.
    pub crl_url: String,
    /// The AIA caIssuers URL identities must carry.
    pub ca_issuers_url: String,
    /// The certificatePolicies OID identities must carry.
    pub policy_oid: ObjectIdentifier,
    /// The AlgorithmIdentifier the CA key signs with.
    pub signature_algorithm: AlgorithmIdentifierOwned,
    /// Longest CRL nextUpdate − thisUpdate, in seconds.
    pub crl_lifetime_secs: i64,
}

const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_RSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const OID_RSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");

/// The AlgorithmIdentifier of signatures made with `alg` (RFC 5758 ECDSA
/// without parameters, RFC 4055 RSA with NULL parameters); the CA key
/// types of [`crate::keys::KeyType`] only.
pub fn signature_algorithm(alg: &SignatureAlgorithm) -> anyhow::Result<AlgorithmIdentifierOwned> {
    let (oid, null) = if *alg == rcgen::PKCS_ECDSA_P256_SHA256 {
        (OID_ECDSA_SHA256, false)
    } else if *alg == rcgen::PKCS_ECDSA_P384_SHA384 {
        (OID_ECDSA_SHA384, false)
    } else if *alg == rcgen::PKCS_RSA_SHA256 {
        (OID_RSA_SHA256, true)
    } else if *alg == rcgen::PKCS_RSA_SHA384 {
        (OID_RSA_SHA384, true)
    } else if *alg == rcgen::PKCS_RSA_SHA512 {
        (OID_RSA_SHA512, true)
    } else {
        anyhow::bail!("the CA signature algorithm {alg:?} is not one the profile allows");
    };
    Ok(AlgorithmIdentifierOwned {
        oid,
        parameters: null.then(der::asn1::Any::null),
    })
}

/// Whether an algorithm identifier read from a TBS is `want`.
pub(crate) fn same_algorithm(
    want: &AlgorithmIdentifierOwned,
    oid: ObjectIdentifier,
    parameters: Option<der::asn1::AnyRef<'_>>,
) -> bool {
    want.oid == oid && want.parameters.as_ref().map(der::asn1::AnyRef::from) == parameters
}

impl LintProfile {
    /// The profile of a CA: its certificate (DER), its SKI (as the issuer
    /// puts it into AKIs), its configuration and the algorithm its key
    /// signs with.
    pub fn new(
        ca_der: &[u8],
        ca_ski: &[u8],
        cfg: &Config,
        algorithm: &SignatureAlgorithm,
    ) -> anyhow::Result<LintProfile> {
        let ca = Certificate::from_der(ca_der)?;
        Ok(LintProfile {
            issuer: der::Encode::to_der(&ca.tbs_certificate.subject)?,
            ca_ski: ca_ski.to_vec(),
            crl_url: cfg.crl_url(),
            ca_issuers_url: cfg.ca_url(),
            policy_oid: cfg
                .policy_oid
                .parse()
                .map_err(|_| anyhow::anyhow!("policy OID '{}' is not an OID", cfg.policy_oid))?,
            signature_algorithm: signature_algorithm(algorithm)?,
            crl_lifetime_secs: i64::from(cfg.crl_next_update_hours) * 3600,
        })
    }
}

/// What an identity certificate is checked against.
#[derive(Debug, Clone, Copy)]
pub struct CertContext<'a> {
    pub profile: &'a LintProfile,
    /// The address being certified (normalised, as in the database).
    pub address: &'a str,
    /// The SubjectPublicKeyInfo (DER) of the checked CSR, when known: the
    /// certificate must carry exactly that key.
    pub subject_spki: Option<&'a [u8]>,
    /// The signing time (Unix seconds) the issuer used for the validity.
    pub now: i64,
}

/// What a CRL is checked against.
#[derive(Debug, Clone, Copy)]
pub struct CrlContext<'a> {
    pub profile: &'a LintProfile,
    /// The signing time (Unix seconds) the CRL's thisUpdate was taken from.
    pub now: i64,
    /// The number of the last CRL this CA signed, when known.
    pub previous_number: Option<i64>,
}

/// How far thisUpdate and notBefore may be backdated (SPEC §5), seconds.
pub const MAX_BACKDATE_SECS: i64 = 60;
/// How far in the future of `now` thisUpdate and notBefore may lie,
/// seconds (clock steps between drafting and linting).
pub const MAX_FUTURE_SECS: i64 = 5;
/// Most findings kept per rule (a broken CRL of a million entries gives a
/// handful of findings and a count, not a million).
pub const MAX_FINDINGS_PER_RULE: usize = 8;

/// Collects findings, at most [`MAX_FINDINGS_PER_RULE`] per rule plus one
/// saying how many more there were.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    list: Vec<Finding>,
    over: Vec<(&'static str, usize)>,
}

impl Findings {
    pub(crate) fn push(&mut self, rule: &'static str, detail: impl Into<String>) {
        let n = self.list.iter().filter(|f| f.rule == rule).count();
        if n < MAX_FINDINGS_PER_RULE {
            self.list.push(Finding::new(rule, detail));
        } else if let Some(o) = self.over.iter_mut().find(|(r, _)| *r == rule) {
            o.1 += 1;
        } else {
            self.over.push((rule, 1));
        }
    }

    pub(crate) fn finish(mut self) -> Vec<Finding> {
        for (rule, n) in self.over {
            self.list
                .push(Finding::new(rule, format!("and {n} more of this rule")));
        }
        self.list
    }
}

/// The next TLV of `r`, a reader over `bytes`, whole.
pub(crate) fn next_tlv<'a>(r: &mut der::SliceReader<'a>, bytes: &'a [u8]) -> der::Result<&'a [u8]> {
    use der::Reader;
    let start = usize::try_from(r.position())?;
    let h = der::Header::decode(r)?;
    r.read_slice(h.length)?;
    let end = usize::try_from(r.position())?;
    bytes
        .get(start..end)
        .ok_or_else(|| der::Tag::Sequence.length_error())
}

/// Unix seconds of an X.509 time.
pub(crate) fn unix(t: &x509_cert::time::Time) -> i64 {
    i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

/// RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
/// Gives what is wrong with `t`'s encoding.
pub(crate) fn time_encoding(t: &x509_cert::time::Time) -> Option<String> {
    /// 2050-01-01T00:00:00Z.
    const Y2050: i64 = 2_524_608_000;
    match t {
        x509_cert::time::Time::GeneralTime(_) if unix(t) < Y2050 => Some(format!(
            "{t} is before 2050 but encoded as GeneralizedTime (RFC 5280 wants UTCTime)"
        )),
        _ => None,
    }
}

/// What is wrong with a start time `t` (notBefore, thisUpdate; Unix
/// seconds) named `what`, signed at `now`: backdated more than
/// [`MAX_BACKDATE_SECS`] or more than [`MAX_FUTURE_SECS`] ahead.
pub(crate) fn start_time_problem(what: &str, t: i64, now: i64) -> Option<String> {
    if now - t > MAX_BACKDATE_SECS {
        Some(format!(
            "{what} is backdated {} s (at most {MAX_BACKDATE_SECS})",
            now - t
        ))
    } else if t - now > MAX_FUTURE_SECS {
        Some(format!("{what} is {} s in the future", t - now))
    } else {
        None
    }
}

/// The contents of the SEQUENCE that is the whole of `der` (a
/// TBSCertificate or TBSCertList), nothing after it.
pub(crate) fn sequence_body(der: &[u8]) -> der::Result<&[u8]> {
    use der::Reader;
    let mut outer = der::SliceReader::new(der)?;
    let h = der::Header::decode(&mut outer)?;
    h.tag.assert_eq(der::Tag::Sequence)?;
    let body = outer.read_slice(h.length)?;
    outer.finish(())?;
    Ok(body)
}

/// An INTEGER's content octets (two's complement): what is wrong with it
/// as a serial number (RFC 5280 §4.1.2.2: positive, at most 20 octets).
pub(crate) fn serial_problem(content: &[u8]) -> Option<String> {
    let negative = content.first().is_some_and(|b| b & 0x80 != 0);
    if negative {
        return Some("serial number is negative".into());
    }
    if content.iter().all(|b| *b == 0) {
        return Some("serial number is zero".into());
    }
    if content.len() > 20 {
        return Some(format!(
            "serial number has {} octets (at most 20)",
            content.len()
        ));
    }
    None
}

/// The name of every rule, certificate rules first (for documentation and
/// per-rule counters).
pub fn rule_names() -> Vec<&'static str> {
    let mut names = vec!["cert.decode"];
    names.extend(cert::RULES.iter().map(|(n, _)| *n));
    names.push("crl.decode");
    names.extend(crl::HEAD_RULES.iter().map(|(n, _)| *n));
    names.extend(crl::ENTRY_RULES);
    names
}
