//! Test fixtures for the linter's unit tests: a real CA ([`CaIssuer`]) of
//! each key type, identities and CRLs it signs, and helpers that decode
//! their TBS, let a test mutate it and re-encode it with der.

use der::{Decode, Encode};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use x509_cert::Certificate;

use super::{CertContext, CrlContext, Finding, LintProfile};
use crate::config::Config;
use crate::crl_der::RevokedList;
use crate::issuer::{self_signed_root, CaIssuer, CsrPublicKey};
use crate::keys::KeyType;
use crate::policy::CheckedCsr;

/// Decodes serial numbers of any length, so tests can write over-long
/// ones (the rule `cert.serial` judges them).
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct AnySerial;
impl x509_cert::certificate::Profile for AnySerial {
    fn check_serial_number(_: &x509_cert::serial_number::SerialNumber<Self>) -> der::Result<()> {
        Ok(())
    }
}

/// A decoded TBSCertificate as the rules see it.
pub type Tbs = x509_cert::certificate::TbsCertificateInner<AnySerial>;

/// The signing time every fixture uses (2027-01-15).
pub const NOW: i64 = 1_800_000_000;

pub fn config() -> Config {
    Config::for_tests("Lint Test CA")
}

/// A CA and the lint profile made from it.
pub struct Fixture {
    pub ca: CaIssuer,
    pub profile: LintProfile,
}

impl Fixture {
    pub fn new(kt: KeyType) -> Fixture {
        Fixture::with_config(kt, &config())
    }

    pub fn with_config(kt: KeyType, cfg: &Config) -> Fixture {
        let key = crate::signer::CaKey::File(crate::signer::file::FileKey::generate(kt).unwrap());
        let root = self_signed_root("Lint Test CA", &key, NOW - 3600).unwrap();
        // The fixtures are raw material for the linter's own tests (some
        // deliberately broken): the CA makes them without its gate.
        let ca = CaIssuer::new(vec![root.clone()], key, cfg)
            .unwrap()
            .with_gate(crate::signer::accept_all());
        let profile = LintProfile::new(&root, &ca.ski, cfg, kt.algorithm()).unwrap();
        Fixture { ca, profile }
    }

    /// A checked CSR for `address` with a fresh key of `alg`.
    pub fn csr(address: &str, key: &KeyPair) -> CheckedCsr {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, "holder");
        p.subject_alt_names = vec![SanType::Rfc822Name(address.try_into().unwrap())];
        let pem = p.serialize_request(key).unwrap().pem().unwrap();
        crate::policy::check_csr(&pem).unwrap()
    }

    /// The TBSCertificate (DER) the CA makes for `csr` at [`NOW`].
    pub fn tbs(&self, csr: &CheckedCsr) -> Vec<u8> {
        let key = CsrPublicKey::from_csr(csr).unwrap();
        let issued = self.ca.issue(csr, &key, NOW).unwrap();
        let cert = Certificate::from_der(&issued.der).unwrap();
        cert.tbs_certificate.to_der().unwrap()
    }

    pub fn cert_ctx<'a>(&'a self, csr: &'a CheckedCsr) -> CertContext<'a> {
        CertContext {
            profile: &self.profile,
            address: csr.account.as_str(),
            subject_spki: Some(&csr.spki_der),
            now: NOW,
        }
    }

    /// The TBSCertList (DER) the CA makes at [`NOW`] (thisUpdate backdated
    /// a minute, nextUpdate a day later) with the given entries.
    pub fn crl_tbs(&self, number: i64, entries: &[(Vec<u8>, i64, RevReason)]) -> Vec<u8> {
        let mut list = RevokedList::with_capacity(entries.len());
        for (serial, at, reason) in entries {
            list.push(serial, *at, *reason).unwrap();
        }
        let this = NOW - 60;
        let der = self
            .ca
            .sign_crl(number, this, this + 86_400, NOW, list)
            .unwrap();
        let crl = x509_cert::crl::CertificateList::from_der(&der).unwrap();
        crl.tbs_cert_list.to_der().unwrap()
    }

    pub fn crl_ctx(&self, previous_number: Option<i64>) -> CrlContext<'_> {
        CrlContext {
            profile: &self.profile,
            now: NOW,
            previous_number,
        }
    }
}

pub use mailid_shared::protocol::RevocationReason as RevReason;

/// The names of the rules that fired, sorted and deduplicated.
pub fn rules(findings: &[Finding]) -> Vec<&'static str> {
    let mut r: Vec<_> = findings.iter().map(|f| f.rule).collect();
    r.sort_unstable();
    r.dedup();
    r
}

/// Decodes `der` as `T`, lets `mutate` change it, re-encodes it.
pub fn mutated<T>(der: &[u8], mutate: impl FnOnce(&mut T)) -> Vec<u8>
where
    T: for<'a> Decode<'a> + Encode,
{
    let mut v = T::from_der(der).unwrap();
    mutate(&mut v);
    v.to_der().unwrap()
}

/// A fresh P-256 key.
pub fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

/// Inserts `extra` at `at` into a DER TLV, fixing the length of every
/// TLV around it.
pub fn insert_der(tlv: &[u8], at: usize, extra: &[u8]) -> Vec<u8> {
    let (hlen, len) = match tlv[1] {
        l if l < 0x80 => (2, l as usize),
        l => {
            let n = (l & 0x7f) as usize;
            let len = tlv[2..2 + n].iter().fold(0, |a, b| (a << 8) | *b as usize);
            (2 + n, len)
        }
    };
    let content = &tlv[hlen..hlen + len];
    let at = at - hlen;
    let mut out = Vec::new();
    let mut i = 0;
    while i < content.len() {
        let child_len = {
            let c = &content[i..];
            match c[1] {
                l if l < 0x80 => 2 + l as usize,
                l => {
                    let n = (l & 0x7f) as usize;
                    2 + n + c[2..2 + n].iter().fold(0, |a, b| (a << 8) | *b as usize)
                }
            }
        };
        if i == at {
            out.extend_from_slice(extra);
        }
        let child = &content[i..i + child_len];
        if i < at && at < i + child_len {
            out.extend(insert_der(child, at - i, extra));
        } else {
            out.extend_from_slice(child);
        }
        i += child_len;
    }
    if at == content.len() {
        out.extend_from_slice(extra);
    }
    let mut header = vec![tlv[0]];
    match out.len() {
        n if n < 0x80 => header.push(n as u8),
        n if n < 0x100 => header.extend([0x81, n as u8]),
        n => header.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    header.extend(out);
    header
}
