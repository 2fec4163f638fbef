//! The issuer: the CA certificate (self-signed root or imported
//! intermediate), identity certificates and CRLs, built with rcgen and
//! signed through the CA's [`Signer`] (file key or PKCS#11 token, behind
//! the pre-sign gate).
//!
//! Identity certificates are built from the CA's policy plus the CSR's
//! SubjectPublicKeyInfo only — never from rcgen's CSR parameters, which
//! would copy requested extensions such as `CA:TRUE`.

use std::sync::Arc;

use der::{Decode, Encode};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    CustomExtension, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyIdMethod, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
    SigningKey,
};
use time::OffsetDateTime;
use x509_cert::ext::pkix::certpolicy::PolicyInformation;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AccessDescription, AuthorityInfoAccessSyntax, BasicConstraints as X509Bc, CertificatePolicies,
    SubjectKeyIdentifier,
};
use x509_cert::Certificate;

use mailid_shared::metrics::LabeledCounter;
use mailid_shared::problem::{ErrorCode, Problem};
use mailid_shared::sigverify::KeyKind;
use mailid_shared::{KeyId, Serial};

use crate::config::Config;
use crate::crl_der::{self, RevokedList};
use crate::lint::{self, LintProfile};
use crate::policy::CheckedCsr;
use crate::signer::{CaKey, Checked, Gate, Gated, Kind, Refusal, Signer};

/// How far notBefore and thisUpdate are backdated, in seconds.
pub const BACKDATE_SECS: i64 = 60;

/// notAfter for an identity valid `days` days from `not_before`. The S/MIME
/// BR count the validity period inclusively (notBefore through notAfter), so
/// at the 825-day maximum the certificate ends one second early to stay
/// within 825 days; shorter periods are exactly `days` × 86,400 s.
pub fn not_after_for(not_before: i64, days: u32) -> i64 {
    let max = i64::from(crate::config::MAX_VALIDITY_DAYS) * 86_400 - 1;
    not_before + (i64::from(days) * 86_400).min(max)
}
/// Validity of a self-signed root made by `init`, in days.
pub const ROOT_VALIDITY_DAYS: i64 = 3650;

const OID_AIA: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];
const OID_CERT_POLICIES: &[u64] = &[2, 5, 29, 32];
const OID_SKI: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("2.5.29.14");
const OID_BC: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("2.5.29.19");
const ID_AD_CA_ISSUERS: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.2");

/// The subject key of a CSR, handed to rcgen as-is.
pub struct CsrPublicKey {
    alg: &'static SignatureAlgorithm,
    raw: Vec<u8>,
}

impl PublicKeyData for CsrPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

impl CsrPublicKey {
    /// The key of a checked CSR; refused (`bad-csr`) when rcgen would not
    /// write back exactly the CSR's SubjectPublicKeyInfo, so the key ID the
    /// holder computed is the one in the certificate.
    pub fn from_csr(csr: &CheckedCsr) -> Result<CsrPublicKey, Problem> {
        let alg: &'static SignatureAlgorithm = match csr.key {
            KeyKind::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyKind::Rsa { .. } => &rcgen::PKCS_RSA_SHA256,
            KeyKind::Other(_) => {
                return Err(Problem::new(ErrorCode::UnsupportedKey, "unsupported key"))
            }
        };
        let spki = spki::SubjectPublicKeyInfoRef::from_der(&csr.spki_der)
            .map_err(|_| Problem::new(ErrorCode::BadCsr, "CSR public key is malformed"))?;
        let raw = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| Problem::new(ErrorCode::BadCsr, "CSR public key is malformed"))?
            .to_vec();
        let key = CsrPublicKey { alg, raw };
        if key.subject_public_key_info() != csr.spki_der {
            return Err(Problem::new(
                ErrorCode::BadCsr,
                "CSR public key is not in its canonical DER form",
            ));
        }
        Ok(key)
    }
}

fn oid_arcs(oid: &der::asn1::ObjectIdentifier) -> Vec<u64> {
    oid.arcs().map(u64::from).collect()
}

fn at(unix: i64) -> anyhow::Result<OffsetDateTime> {
    Ok(OffsetDateTime::from_unix_timestamp(unix)?)
}

/// An issued identity certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub serial: Serial,
    pub der: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
}

/// The CA's signing identity.
pub struct CaIssuer {
    signer: Signer,
    /// The CA's name, key identifier and key usages, as rcgen's
    /// [`Issuer`] wants them.
    params: CertificateParams,
    /// The CA's own certificate (DER).
    pub ca_der: Vec<u8>,
    /// The chain, the CA first and the root last (DER).
    pub chain: Vec<Vec<u8>>,
    /// The chain as one PEM bundle.
    pub chain_pem: String,
    /// The CA's subject key identifier (the AKI of what it signs).
    pub ski: Vec<u8>,
    validity_days: u32,
    /// Debug builds only: see [`misissue_validity_days`].
    misissue_validity_days: Option<u32>,
    /// The parts of the identity profile that come from the configuration
    /// (CRL distribution point, AIA caIssuers, certificate policy), built
    /// once by [`CaIssuer::new`] so a bad configuration stops the start,
    /// not an enrollment.
    crl_points: Vec<CrlDistributionPoint>,
    config_extensions: Vec<CustomExtension>,
    /// Lint findings by rule, counted by the pre-sign gate.
    lint_findings: Arc<LabeledCounter>,
}

/// The configured parts of the identity profile: the CRL distribution
/// point and the AIA and certificatePolicies extensions.
fn config_profile(
    cfg: &Config,
) -> anyhow::Result<(Vec<CrlDistributionPoint>, Vec<CustomExtension>)> {
    let ia5 = |what: &str, url: String| {
        der::asn1::Ia5String::new(&url).map_err(|_| {
            anyhow::anyhow!("the {what} URL '{}' is not ASCII", url.escape_default())
        })?;
        Ok::<_, anyhow::Error>(url)
    };
    let crl_url = ia5("CRL", cfg.crl_url())?;
    let ca_url = ia5("caIssuers", cfg.ca_url())?;
    let policy_oid: der::asn1::ObjectIdentifier = cfg
        .policy_oid
        .parse()
        .map_err(|_| anyhow::anyhow!("policy OID '{}' is not an OID", cfg.policy_oid))?;
    let aia = AuthorityInfoAccessSyntax(vec![AccessDescription {
        access_method: ID_AD_CA_ISSUERS,
        access_location: GeneralName::UniformResourceIdentifier(der::asn1::Ia5String::new(
            &ca_url,
        )?),
    }]);
    let policies = CertificatePolicies(vec![PolicyInformation {
        policy_identifier: policy_oid,
        policy_qualifiers: None,
    }]);
    Ok((
        vec![CrlDistributionPoint {
            uris: vec![crl_url],
        }],
        vec![
            CustomExtension::from_oid_content(OID_AIA, aia.to_der()?),
            CustomExtension::from_oid_content(OID_CERT_POLICIES, policies.to_der()?),
        ],
    ))
}

/// An identity certificate ready to be signed: every check that can fail
/// has passed, only the signature is left ([`CaIssuer::sign`]).
pub struct Draft {
    serial: Serial,
    params: CertificateParams,
    not_before: i64,
    not_after: i64,
    /// What the linter checks the TBS against: the address and the CSR's key.
    address: String,
    spki: Vec<u8>,
    /// The TBS the gate passed on [`CaIssuer::check`], if it ran.
    checked: Option<Checked>,
}

/// Longest subject commonName (ub-common-name, RFC 5280 Appendix A).
pub const UB_COMMON_NAME: usize = 64;

/// Makes a self-signed root: CA:TRUE pathLen 0, keyCertSign + cRLSign,
/// SKI = the strong key ID of its key.
pub fn self_signed_root(name: &str, key: &impl SigningKey, now: i64) -> anyhow::Result<Vec<u8>> {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.serial_number = Some(SerialNumber::from_slice(&Serial::random().to_bytes()));
    p.not_before = at(now - BACKDATE_SECS)?;
    p.not_after = at(now + ROOT_VALIDITY_DAYS * 86_400)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.key_identifier_method = KeyIdMethod::PreSpecified(
        KeyId::of_spki(&key.subject_public_key_info())
            .as_bytes()
            .to_vec(),
    );
    let cert = p
        .self_signed(key)
        .map_err(|e| anyhow::anyhow!("signing the root: {e}"))?;
    Ok(cert.der().to_vec())
}

/// Copies a certificate's subject into an rcgen name, keeping string types.
fn rcgen_name(name: &x509_cert::name::Name) -> anyhow::Result<DistinguishedName> {
    use der::{Tag, Tagged};
    let mut dn = DistinguishedName::new();
    for rdn in name.0.iter() {
        for atv in rdn.0.iter() {
            let text = std::str::from_utf8(atv.value.value())
                .map_err(|_| anyhow::anyhow!("CA subject holds a non-text attribute"))?
                .to_string();
            let value = match atv.value.tag() {
                Tag::PrintableString => DnValue::PrintableString(
                    text.try_into()
                        .map_err(|_| anyhow::anyhow!("bad PrintableString in CA subject"))?,
                ),
                Tag::Ia5String => DnValue::Ia5String(
                    text.try_into()
                        .map_err(|_| anyhow::anyhow!("bad IA5String in CA subject"))?,
                ),
                Tag::Utf8String => DnValue::Utf8String(text),
                other => anyhow::bail!("CA subject uses unsupported string type {other}"),
            };
            let ty = DnType::from_oid(&oid_arcs(&atv.oid));
            if dn.get(&ty).is_some() {
                anyhow::bail!("CA subject repeats attribute {}", atv.oid);
            }
            dn.push(ty, value);
        }
    }
    Ok(dn)
}

/// The gate every identity certificate and CRL of this CA passes before
/// its key signs (SPEC §9: lint before sign): the in-process linter
/// ([`crate::lint`]) over the exact TBS, with `profile` built from the
/// configuration and the CA certificate. A finding refuses; each finding
/// is logged and counted by rule in `findings` (`/metrics`).
pub fn pre_sign_gate(profile: LintProfile, findings: Arc<LabeledCounter>) -> Gate {
    Arc::new(move |tbs: &[u8], kind: Kind<'_>| {
        let found = match kind {
            Kind::Certificate { address, spki, now } => lint::check_certificate(
                tbs,
                &lint::CertContext {
                    profile: &profile,
                    address,
                    subject_spki: Some(spki),
                    now,
                },
            ),
            Kind::Crl { now } => lint::check_crl(
                tbs,
                &lint::CrlContext {
                    profile: &profile,
                    now,
                    previous_number: None,
                },
            ),
        };
        if found.is_empty() {
            return Ok(());
        }
        let why = lint::describe(&found);
        tracing::error!(what = kind.name(), findings = %why, "the linter refused to let the CA key sign");
        for f in &found {
            findings.inc(f.rule);
        }
        Err(Refusal {
            why: format!("the {} failed the pre-sign lint: {why}", kind.name()),
            rules: found.iter().map(|f| f.rule).collect(),
        })
    })
}

/// A test hook, read in debug builds only: `MAILID_CA_TEST_MISISSUE_DAYS=N`
/// makes the issuer draft identities valid for N days whatever the
/// configuration and its 825-day cap, so the end-to-end tests can show
/// that the pre-sign linter refuses what a broken issuer would sign
/// (tests/tests/ca_lint.rs). Release builds never look at it.
fn misissue_validity_days() -> Option<u32> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let days = std::env::var("MAILID_CA_TEST_MISISSUE_DAYS")
        .ok()?
        .parse()
        .ok()?;
    tracing::warn!(
        days,
        "test hook MAILID_CA_TEST_MISISSUE_DAYS: identities will be drafted for this many days"
    );
    Some(days)
}

/// Checks an imported or stored CA certificate and extracts its SKI.
pub fn check_ca_cert(cert: &Certificate, key: &impl PublicKeyData) -> anyhow::Result<Vec<u8>> {
    let spki = cert.tbs_certificate.subject_public_key_info.to_der()?;
    if spki != key.subject_public_key_info() {
        anyhow::bail!("the CA key does not belong to the CA certificate");
    }
    let mut ski = None;
    let mut is_ca = false;
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        if ext.extn_id == OID_SKI {
            ski = Some(
                SubjectKeyIdentifier::from_der(ext.extn_value.as_bytes())?
                    .0
                    .as_bytes()
                    .to_vec(),
            );
        } else if ext.extn_id == OID_BC {
            is_ca = X509Bc::from_der(ext.extn_value.as_bytes())?.ca;
        }
    }
    if !is_ca {
        anyhow::bail!("the CA certificate lacks basicConstraints CA:TRUE");
    }
    Ok(ski.unwrap_or_else(|| KeyId::of_spki(&spki).as_bytes().to_vec()))
}

impl CaIssuer {
    /// Builds the issuer from the chain (CA first) and its key, behind
    /// [`pre_sign_gate`].
    pub fn new(chain: Vec<Vec<u8>>, key: CaKey, cfg: &Config) -> anyhow::Result<CaIssuer> {
        let ca_der = chain
            .first()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no CA certificate"))?;
        let cert = Certificate::from_der(&ca_der)?;
        let ski = check_ca_cert(&cert, &key)?;
        let profile = LintProfile::new(&ca_der, &ski, cfg, key.algorithm())?;
        let lint_findings = Arc::new(LabeledCounter::default());
        let signer = Signer::new(key).with_gate(pre_sign_gate(profile, lint_findings.clone()));
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen_name(&cert.tbs_certificate.subject)?;
        params.key_identifier_method = KeyIdMethod::PreSpecified(ski.clone());
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let chain_pem = mailid_shared::pem::encode_chain(&chain);
        let (crl_points, config_extensions) = config_profile(cfg)?;
        Ok(CaIssuer {
            signer,
            params,
            ca_der,
            chain,
            chain_pem,
            ski,
            validity_days: cfg.validity_days,
            misissue_validity_days: misissue_validity_days(),
            crl_points,
            config_extensions,
            lint_findings,
        })
    }

    /// The same issuer with `gate` before every signature (the linter).
    pub fn with_gate(mut self, gate: Gate) -> CaIssuer {
        self.signer = self.signer.with_gate(gate);
        self
    }

    /// The end of a validity starting at `not_before`.
    fn not_after(&self, not_before: i64) -> i64 {
        match self.misissue_validity_days {
            Some(days) => not_before + i64::from(days) * 86_400 - 1,
            None => not_after_for(not_before, self.validity_days),
        }
    }

    /// Lint findings by rule since start (`mailid_ca_lint_findings_total`).
    pub fn lint_findings(&self) -> Arc<LabeledCounter> {
        self.lint_findings.clone()
    }

    /// The signer (the CA key behind the gate).
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    fn profile(
        &self,
        csr: &CheckedCsr,
        serial: &Serial,
        nb: i64,
        na: i64,
    ) -> anyhow::Result<CertificateParams> {
        let mut p = CertificateParams::default();
        p.serial_number = Some(SerialNumber::from_slice(&serial.to_bytes()));
        p.not_before = at(nb)?;
        p.not_after = at(na)?;
        p.distinguished_name = DistinguishedName::new();
        // ub-common-name is 64 (RFC 5280 Appendix A). A longer address is
        // carried by the SAN alone, with an empty subject, which the
        // mailbox-validated profile allows; rcgen then marks the SAN
        // critical, as RFC 5280 §4.2.1.6 requires.
        if csr.account.as_str().len() <= UB_COMMON_NAME {
            p.distinguished_name
                .push(DnType::CommonName, csr.account.as_str());
        }
        p.subject_alt_names = vec![SanType::Rfc822Name(csr.account.as_str().try_into()?)];
        p.key_usages = if csr.key.is_ec() {
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyAgreement,
            ]
        } else {
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ]
        };
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::EmailProtection];
        p.is_ca = IsCa::ExplicitNoCa;
        p.use_authority_key_identifier_extension = true;
        p.key_identifier_method = KeyIdMethod::PreSpecified(csr.key_id.as_bytes().to_vec());
        p.crl_distribution_points = self.crl_points.clone();
        p.custom_extensions = self.config_extensions.clone();
        Ok(p)
    }

    /// Builds the identity certificate for a checked CSR at time `now`,
    /// short of the signature. Enrollment does this before the code goes to
    /// the MTA (which uses it up), so nothing local fails after that.
    pub fn draft(&self, csr: &CheckedCsr, now: i64) -> anyhow::Result<Draft> {
        let serial = Serial::random();
        let not_before = now - BACKDATE_SECS;
        let not_after = self.not_after(not_before);
        let params = self.profile(csr, &serial, not_before, not_after)?;
        Ok(Draft {
            serial,
            params,
            not_before,
            not_after,
            address: csr.account.as_str().to_string(),
            spki: csr.spki_der.clone(),
            checked: None,
        })
    }

    /// Signs a draft for the CSR's key at time `now`: the validity is
    /// counted from the signing time (the draft may have waited for the
    /// MTA), so notBefore is never backdated more than a minute. A draft
    /// [`CaIssuer::check`]ed in the same second is signed as the TBS the
    /// gate passed, byte for byte (built and linted once); otherwise it is
    /// rebuilt with the new dates and goes through the gate again.
    pub fn sign(&self, mut draft: Draft, key: &CsrPublicKey, now: i64) -> anyhow::Result<Issued> {
        let der = match draft.checked.take().filter(|c| c.now() == now) {
            Some(checked) => {
                let sig = self.signer.sign_checked(&checked)?;
                assemble_certificate(checked.tbs(), &sig)?
            }
            None => {
                if now - BACKDATE_SECS != draft.not_before {
                    draft.not_before = now - BACKDATE_SECS;
                    draft.not_after = self.not_after(draft.not_before);
                    draft.params.not_before = at(draft.not_before)?;
                    draft.params.not_after = at(draft.not_after)?;
                }
                let gated = self.signer.gated(self.kind(&draft, now));
                self.build(&draft, key, &gated)?.der().to_vec()
            }
        };
        Ok(Issued {
            serial: draft.serial,
            der,
            not_before: draft.not_before,
            not_after: draft.not_after,
        })
    }

    /// The pre-sign gate's verdict on a draft as drafted, with no signature
    /// made: enrollment asks before the MTA uses the code up, so a linter
    /// finding changes nothing. Keeps the passed TBS in the draft for
    /// [`CaIssuer::sign`] and gives it (DER), for an external linter.
    pub fn check(&self, draft: &mut Draft, key: &CsrPublicKey) -> anyhow::Result<Vec<u8>> {
        let gated = self
            .signer
            .dry_run(self.kind(draft, draft.not_before + BACKDATE_SECS));
        self.build(draft, key, &gated)?;
        let checked = gated
            .take_checked()
            .ok_or_else(|| anyhow::anyhow!("the gate was never asked"))?;
        let tbs = checked.tbs().to_vec();
        draft.checked = Some(checked);
        Ok(tbs)
    }

    /// What the gate is told about `draft` signed at `now`.
    fn kind<'a>(&self, draft: &'a Draft, now: i64) -> Kind<'a> {
        Kind::Certificate {
            address: &draft.address,
            spki: &draft.spki,
            now,
        }
    }

    /// Builds `draft` with rcgen and hands its TBS to `gated`, which
    /// signs it (or, on a dry run, only asks the gate).
    fn build(
        &self,
        draft: &Draft,
        key: &CsrPublicKey,
        gated: &Gated<'_>,
    ) -> anyhow::Result<rcgen::Certificate> {
        draft
            .params
            .signed_by(key, &Issuer::from_params(&self.params, gated))
            .map_err(|e| signing_failed(e, gated))
    }

    /// Signs an identity certificate for a checked CSR at time `now`.
    pub fn issue(&self, csr: &CheckedCsr, key: &CsrPublicKey, now: i64) -> anyhow::Result<Issued> {
        self.sign(self.draft(csr, now)?, key, now)
    }

    /// Signs a CRL holding the entries of `list`: rcgen makes the fixed
    /// part, [`crate::crl_der`] splices the entries in, the CA key signs.
    /// `now` is the signing time (Unix seconds) the linter checks the dates
    /// against.
    pub fn sign_crl(
        &self,
        number: i64,
        this_update: i64,
        next_update: i64,
        now: i64,
        list: RevokedList,
    ) -> anyhow::Result<Vec<u8>> {
        let number_bytes = number.to_be_bytes();
        let start = number_bytes.iter().position(|b| *b != 0).unwrap_or(7);
        let params = CertificateRevocationListParams {
            this_update: at(this_update)?,
            next_update: at(next_update)?,
            crl_number: SerialNumber::from_slice(&number_bytes[start..]),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: KeyIdMethod::PreSpecified(self.ski.clone()),
        };
        // The template's own signature is thrown away: none is made.
        let template = params
            .signed_by(&Issuer::from_params(&self.params, self.signer.unsigned()))
            .map_err(|e| anyhow::anyhow!("building the CRL: {e}"))?;
        crl_der::assemble(template.der(), list, |tbs| {
            Ok(self.signer.sign(tbs, Kind::Crl { now })?)
        })
    }
}

/// The error of a failed rcgen signature: the signer's own
/// ([`crate::signer::SignError`], which callers may downcast to), or rcgen's.
fn signing_failed(e: rcgen::Error, gated: &Gated<'_>) -> anyhow::Error {
    match gated.take_error() {
        Some(se) => se.into(),
        None => anyhow::anyhow!("signing: {e}"),
    }
}

#[cfg(test)]
#[path = "issuer_tests.rs"]
mod tests;

/// The Certificate of RFC 5280 §4.1 for a TBSCertificate and its
/// signature: SEQUENCE { tbs, the TBS's own signature
/// AlgorithmIdentifier, BIT STRING signature }. Hand-assembled (with
/// `der`'s header and BIT STRING encoders) because neither rcgen nor
/// x509-cert signs given TBS bytes, and re-encoding a decoded TBS could
/// change what the linter saw; this keeps the TBS byte for byte. Tested
/// against x509-cert's encoder and an independent verifier (issuer_tests).
pub(crate) fn assemble_certificate(tbs: &[u8], sig: &[u8]) -> anyhow::Result<Vec<u8>> {
    use der::asn1::{AnyRef, BitStringRef};
    use der::{Header, Length, Reader, SliceReader, Tag, TagNumber, Tagged};
    let alg = SliceReader::new(tbs)?.sequence(|r| {
        let first = AnyRef::decode(r)?;
        // version [0] EXPLICIT is absent only in a v1 TBS.
        if first.tag()
            == (Tag::ContextSpecific {
                constructed: true,
                number: TagNumber::N0,
            })
        {
            AnyRef::decode(r)?;
        }
        let alg = AnyRef::decode(r)?;
        r.read_slice(r.remaining_len())?;
        Ok(alg)
    })?;
    let alg = alg.to_der()?;
    let bits = BitStringRef::from_bytes(sig)?.to_der()?;
    let len = Length::try_from(tbs.len() + alg.len() + bits.len())?;
    let mut out = Header::new(Tag::Sequence, len)?.to_der()?;
    out.extend_from_slice(tbs);
    out.extend_from_slice(&alg);
    out.extend_from_slice(&bits);
    Ok(out)
}
