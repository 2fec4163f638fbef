//! Each certificate rule fed a TBS of the real issuer mutated to break it
//! (and only it); the unmutated TBS of every CA and subject key type
//! passes.

use der::asn1::{BitString, GeneralizedTime, Ia5String, ObjectIdentifier, OctetString, UtcTime};
use der::{Decode, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AccessDescription, AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints,
    CertificatePolicies, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
    SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Time;

use super::*;
use crate::keys::KeyType;
use crate::lint::test_support::{insert_der, mutated, p256, rules, AnySerial, Fixture, Tbs, NOW};
use crate::lint::LintProfile;
use crate::policy::CheckedCsr;

const ADDRESS: &str = "alice@example.org";

struct Case {
    fx: Fixture,
    csr: CheckedCsr,
    tbs: Vec<u8>,
}

fn case(ca: KeyType) -> Case {
    let fx = Fixture::new(ca);
    let csr = Fixture::csr(ADDRESS, &p256());
    let tbs = fx.tbs(&csr);
    Case { fx, csr, tbs }
}

impl Case {
    /// The rules that fire on the TBS after `mutate`.
    fn fires(&self, mutate: impl FnOnce(&mut Tbs)) -> Vec<&'static str> {
        let der = mutated::<Tbs>(&self.tbs, mutate);
        rules(&check_certificate(&der, &self.fx.cert_ctx(&self.csr)))
    }
}

fn utc(unix: i64) -> Time {
    Time::UtcTime(UtcTime::from_unix_duration(std::time::Duration::from_secs(unix as u64)).unwrap())
}

fn ext_mut(tbs: &mut Tbs, oid: ObjectIdentifier) -> &mut Extension {
    tbs.extensions
        .as_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e.extn_id == oid)
        .unwrap()
}

/// Replaces the value of extension `oid` with `value`'s DER.
fn set_value(tbs: &mut Tbs, oid: ObjectIdentifier, value: impl Encode) {
    ext_mut(tbs, oid).extn_value = OctetString::new(value.to_der().unwrap()).unwrap();
}

fn serial(der: &[u8]) -> SerialNumber<AnySerial> {
    SerialNumber::from_der(der).unwrap()
}

fn uri(s: &str) -> GeneralName {
    GeneralName::UniformResourceIdentifier(Ia5String::new(s).unwrap())
}

#[test]
fn the_issuers_certificates_pass() {
    let long = format!("{}@{}.example.org", "a".repeat(60), "b".repeat(20));
    for ca in [KeyType::P256, KeyType::P384, KeyType::Rsa2048] {
        let fx = Fixture::new(ca);
        let rsa =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .unwrap();
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        for (address, key) in [(ADDRESS, p256()), (ADDRESS, rsa), (long.as_str(), p384)] {
            let csr = Fixture::csr(address, &key);
            let tbs = fx.tbs(&csr);
            let found = check_certificate(&tbs, &fx.cert_ctx(&csr));
            assert!(found.is_empty(), "{ca:?} {address}: {found:?}");
        }
    }
}

#[test]
fn decode() {
    let c = case(KeyType::P256);
    let ctx = c.fx.cert_ctx(&c.csr);
    assert_eq!(
        rules(&check_certificate(b"\x30\x00", &ctx)),
        ["cert.decode"]
    );
    assert_eq!(
        rules(&check_certificate(&c.tbs[..40], &ctx)),
        ["cert.decode"]
    );
    let mut trailing = c.tbs.clone();
    trailing.push(0);
    assert_eq!(rules(&check_certificate(&trailing, &ctx)), ["cert.decode"]);
}

#[test]
fn default_values_written_out_are_not_der() {
    let c = case(KeyType::P256);
    // `critical FALSE` after the EKU extension's OID.
    let eku_oid = [0x06, 0x03, 0x55, 0x1d, 0x25];
    let at = c.tbs.windows(5).position(|w| w == eku_oid).unwrap() + 5;
    let tbs = insert_der(&c.tbs, at, &[0x01, 0x01, 0x00]);
    let found = check_certificate(&tbs, &c.fx.cert_ctx(&c.csr));
    assert_eq!(rules(&found), ["cert.decode"], "{found:?}");
    assert!(found[0].detail.contains("DEFAULT"), "{found:?}");
    // cA FALSE written out inside basicConstraints.
    let bc = |t: &mut Tbs| {
        ext_mut(t, OID_BC).extn_value =
            OctetString::new(vec![0x30, 0x03, 0x01, 0x01, 0x00]).unwrap()
    };
    assert_eq!(c.fires(bc), ["cert.basic_constraints"]);
}

#[test]
fn version() {
    let c = case(KeyType::P256);
    use x509_cert::certificate::Version;
    assert_eq!(c.fires(|t| t.version = Version::V2), ["cert.version"]);
    assert_eq!(c.fires(|t| t.version = Version::V1), ["cert.version"]);
}

#[test]
fn serial_sign_and_length() {
    let c = case(KeyType::P256);
    let negative = [&[0x02, 0x10, 0x80][..], &[0x11; 15]].concat();
    assert_eq!(
        c.fires(|t| t.serial_number = serial(&negative)),
        ["cert.serial"]
    );
    let long = [&[0x02, 0x15, 0x01][..], &[0x22; 20]].concat();
    assert_eq!(
        c.fires(|t| t.serial_number = serial(&long)),
        ["cert.serial"]
    );
}

#[test]
fn serial_entropy() {
    let c = case(KeyType::P256);
    let short = [0x02, 0x04, 0x12, 0x34, 0x56, 0x78];
    assert_eq!(
        c.fires(|t| t.serial_number = serial(&short)),
        ["cert.serial_entropy"]
    );
}

#[test]
fn signature_algorithm() {
    let c = case(KeyType::P256);
    assert_eq!(
        c.fires(|t| t.signature.oid = "1.2.840.10045.4.3.3".parse().unwrap()),
        ["cert.signature_algorithm"]
    );
    // The same TBS against the profile of an RSA CA.
    let rsa = LintProfile {
        signature_algorithm: crate::lint::signature_algorithm(&rcgen::PKCS_RSA_SHA256).unwrap(),
        ..c.fx.profile.clone()
    };
    let ctx = CertContext {
        profile: &rsa,
        ..c.fx.cert_ctx(&c.csr)
    };
    assert_eq!(
        rules(&check_certificate(&c.tbs, &ctx)),
        ["cert.signature_algorithm"]
    );
}

#[test]
fn issuer() {
    let c = case(KeyType::P256);
    let other: Name = "CN=Another CA".parse().unwrap();
    assert_eq!(c.fires(|t| t.issuer = other), ["cert.issuer"]);
}

#[test]
fn validity() {
    let c = case(KeyType::P256);
    let nb = NOW - 60;
    assert_eq!(
        c.fires(|t| t.validity.not_after = utc(nb + 825 * 86_400)),
        ["cert.validity"]
    );
    // 825 days counted inclusively is the limit.
    assert!(c
        .fires(|t| t.validity.not_after = utc(nb + 825 * 86_400 - 1))
        .is_empty());
    assert_eq!(
        c.fires(|t| t.validity.not_after = utc(nb)),
        ["cert.validity"]
    );
}

#[test]
fn not_before() {
    let c = case(KeyType::P256);
    assert_eq!(
        c.fires(|t| t.validity.not_before = utc(NOW - 61)),
        ["cert.not_before"]
    );
    assert_eq!(
        c.fires(|t| t.validity.not_before = utc(NOW + 3600)),
        ["cert.not_before"]
    );
}

#[test]
fn time_encoding() {
    let c = case(KeyType::P256);
    let generalized = |t: &mut Tbs| {
        let d = t.validity.not_after.to_unix_duration();
        t.validity.not_after = Time::GeneralTime(GeneralizedTime::from_unix_duration(d).unwrap());
    };
    assert_eq!(c.fires(generalized), ["cert.time_encoding"]);
}

#[test]
fn subject() {
    let c = case(KeyType::P256);
    let cases = [
        "CN=bob@example.org",
        "CN=alice@example.org,O=Example",
        "CN=Alice@example.org",
        "",
    ];
    for name in cases {
        let name: Name = if name.is_empty() {
            Name::default()
        } else {
            name.parse().unwrap()
        };
        // An empty subject also makes the (non-critical) SAN wrong.
        let empty = name.0.is_empty();
        let found = c.fires(|t| t.subject = name);
        if empty {
            assert_eq!(found, ["cert.san", "cert.subject"]);
        } else {
            assert_eq!(found, ["cert.subject"]);
        }
    }
}

#[test]
fn subject_key() {
    let c = case(KeyType::P256);
    // Another key (with its own SKI, so only the key rule fires).
    let other = Fixture::csr(ADDRESS, &p256());
    fn with_key(spki: &[u8]) -> impl FnOnce(&mut Tbs) + '_ {
        move |t: &mut Tbs| {
            t.subject_public_key_info = spki::SubjectPublicKeyInfoOwned::from_der(spki).unwrap();
            let ski = KeyId::of_spki(spki);
            set_value(t, OID_SKI, OctetString::new(ski.as_bytes()).unwrap());
        }
    }
    assert_eq!(c.fires(with_key(&other.spki_der)), ["cert.subject_key"]);
    // A key type the policy refuses.
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let ed_spki = rcgen::PublicKeyData::subject_public_key_info(&ed);
    assert_eq!(c.fires(with_key(&ed_spki)), ["cert.subject_key"]);
}

#[test]
fn unique_ids() {
    let c = case(KeyType::P256);
    assert_eq!(
        c.fires(|t| t.subject_unique_id = Some(BitString::from_bytes(&[1]).unwrap())),
        ["cert.unique_ids"]
    );
}

#[test]
fn extensions() {
    let c = case(KeyType::P256);
    let unknown = Extension {
        extn_id: "1.2.3.4".parse().unwrap(),
        critical: false,
        extn_value: OctetString::new(vec![5, 0]).unwrap(),
    };
    assert_eq!(
        c.fires(|t| t.extensions.as_mut().unwrap().push(unknown)),
        ["cert.extensions"]
    );
    let twice = |t: &mut Tbs| {
        let eku = ext_mut(t, OID_EKU).clone();
        t.extensions.as_mut().unwrap().push(eku);
    };
    assert_eq!(c.fires(twice), ["cert.extensions"]);
}

#[test]
fn san() {
    let c = case(KeyType::P256);
    let names = |n: Vec<GeneralName>| move |t: &mut Tbs| set_value(t, OID_SAN, SubjectAltName(n));
    let mail = |s: &str| GeneralName::Rfc822Name(Ia5String::new(s).unwrap());
    assert_eq!(c.fires(names(vec![mail("bob@example.org")])), ["cert.san"]);
    assert_eq!(
        c.fires(names(vec![mail(ADDRESS), mail(ADDRESS)])),
        ["cert.san"]
    );
    assert_eq!(
        c.fires(names(vec![uri("http://example.org/")])),
        ["cert.san"]
    );
    assert_eq!(
        c.fires(|t| ext_mut(t, OID_SAN).critical = true),
        ["cert.san"]
    );
    assert_eq!(
        c.fires(|t| t
            .extensions
            .as_mut()
            .unwrap()
            .retain(|e| e.extn_id != OID_SAN)),
        ["cert.san"]
    );
}

#[test]
fn key_usage() {
    let c = case(KeyType::P256);
    assert_eq!(
        c.fires(|t| ext_mut(t, OID_KU).critical = false),
        ["cert.key_usage"]
    );
    let bits = |b| move |t: &mut Tbs| set_value(t, OID_KU, KeyUsage(b));
    // The RSA bits on an EC key; an extra bit; a missing one.
    assert_eq!(
        c.fires(bits(
            KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment
        )),
        ["cert.key_usage"]
    );
    assert_eq!(
        c.fires(bits(
            KeyUsages::DigitalSignature | KeyUsages::KeyAgreement | KeyUsages::KeyCertSign
        )),
        ["cert.key_usage"]
    );
    assert_eq!(
        c.fires(bits(KeyUsages::DigitalSignature.into())),
        ["cert.key_usage"]
    );
}

#[test]
fn eku() {
    let c = case(KeyType::P256);
    let server_auth: ObjectIdentifier = "1.3.6.1.5.5.7.3.1".parse().unwrap();
    let email: ObjectIdentifier = "1.3.6.1.5.5.7.3.4".parse().unwrap();
    assert_eq!(
        c.fires(|t| set_value(t, OID_EKU, ExtendedKeyUsage(vec![email, server_auth]))),
        ["cert.eku"]
    );
    assert_eq!(
        c.fires(|t| ext_mut(t, OID_EKU).critical = true),
        ["cert.eku"]
    );
}

#[test]
fn basic_constraints() {
    let c = case(KeyType::P256);
    let bc = |ca, path_len_constraint| {
        move |t: &mut Tbs| {
            set_value(
                t,
                OID_BC,
                BasicConstraints {
                    ca,
                    path_len_constraint,
                },
            )
        }
    };
    assert_eq!(c.fires(bc(true, None)), ["cert.basic_constraints"]);
    assert_eq!(c.fires(bc(false, Some(0))), ["cert.basic_constraints"]);
    assert_eq!(
        c.fires(|t| ext_mut(t, OID_BC).critical = false),
        ["cert.basic_constraints"]
    );
}

#[test]
fn aki() {
    let c = case(KeyType::P256);
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(OctetString::new(vec![7; 20]).unwrap()),
        authority_cert_issuer: None,
        authority_cert_serial_number: None,
    };
    assert_eq!(c.fires(|t| set_value(t, OID_AKI, aki)), ["cert.aki"]);
}

#[test]
fn ski() {
    let c = case(KeyType::P256);
    let ski = SubjectKeyIdentifier(OctetString::new(vec![7; 20]).unwrap());
    assert_eq!(c.fires(|t| set_value(t, OID_SKI, ski)), ["cert.ski"]);
}

#[test]
fn crl_dp() {
    use x509_cert::ext::pkix::crl::dp::DistributionPoint;
    use x509_cert::ext::pkix::name::DistributionPointName;
    use x509_cert::ext::pkix::CrlDistributionPoints;
    let c = case(KeyType::P256);
    let dp = |u: &str| DistributionPoint {
        distribution_point: Some(DistributionPointName::FullName(vec![uri(u)])),
        reasons: None,
        crl_issuer: None,
    };
    let wrong = CrlDistributionPoints(vec![dp("http://elsewhere.example/crl")]);
    assert_eq!(
        c.fires(|t| set_value(t, OID_CRL_DP, wrong)),
        ["cert.crl_dp"]
    );
    let two = CrlDistributionPoints(vec![dp(&c.fx.profile.crl_url), dp(&c.fx.profile.crl_url)]);
    assert_eq!(c.fires(|t| set_value(t, OID_CRL_DP, two)), ["cert.crl_dp"]);
}

#[test]
fn aia() {
    let c = case(KeyType::P256);
    let aia = |method: &str, u: &str| {
        AuthorityInfoAccessSyntax(vec![AccessDescription {
            access_method: method.parse().unwrap(),
            access_location: uri(u),
        }])
    };
    let url = c.fx.profile.ca_issuers_url.clone();
    let ocsp = aia("1.3.6.1.5.5.7.48.1", &url);
    assert_eq!(c.fires(|t| set_value(t, OID_AIA, ocsp)), ["cert.aia"]);
    let elsewhere = aia("1.3.6.1.5.5.7.48.2", "http://elsewhere.example/ca.der");
    assert_eq!(c.fires(|t| set_value(t, OID_AIA, elsewhere)), ["cert.aia"]);
}

#[test]
fn policy() {
    use x509_cert::ext::pkix::certpolicy::PolicyInformation;
    let c = case(KeyType::P256);
    let policies = |oids: &[&str]| {
        CertificatePolicies(
            oids.iter()
                .map(|o| PolicyInformation {
                    policy_identifier: o.parse().unwrap(),
                    policy_qualifiers: None,
                })
                .collect(),
        )
    };
    let other = policies(&["2.23.140.1.5.1.1"]);
    assert_eq!(
        c.fires(|t| set_value(t, OID_CERT_POLICIES, other)),
        ["cert.policy"]
    );
    let extra = policies(&["2.23.140.1.5.1.3", "1.2.3.4"]);
    assert_eq!(
        c.fires(|t| set_value(t, OID_CERT_POLICIES, extra)),
        ["cert.policy"]
    );
}

#[test]
fn rsa_subjects_get_key_encipherment() {
    let fx = Fixture::new(KeyType::P384);
    let rsa = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let csr = Fixture::csr(ADDRESS, &rsa);
    let tbs = fx.tbs(&csr);
    let ec_bits = mutated::<Tbs>(&tbs, |t| {
        set_value(
            t,
            OID_KU,
            KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyAgreement),
        )
    });
    assert_eq!(
        rules(&check_certificate(&ec_bits, &fx.cert_ctx(&csr))),
        ["cert.key_usage"]
    );
}

#[test]
fn long_addresses_need_an_empty_subject_and_a_critical_san() {
    let fx = Fixture::new(KeyType::P256);
    let long = format!("{}@{}.example.org", "a".repeat(60), "b".repeat(20));
    let csr = Fixture::csr(&long, &p256());
    let tbs = fx.tbs(&csr);
    let cn: Name = "CN=x@example.org".parse().unwrap();
    let with_cn = mutated::<Tbs>(&tbs, |t| t.subject = cn);
    // A subject where none belongs; the SAN is then wrongly critical too.
    assert_eq!(
        rules(&check_certificate(&with_cn, &fx.cert_ctx(&csr))),
        ["cert.san", "cert.subject"]
    );
    let not_critical = mutated::<Tbs>(&tbs, |t| ext_mut(t, OID_SAN).critical = false);
    assert_eq!(
        rules(&check_certificate(&not_critical, &fx.cert_ctx(&csr))),
        ["cert.san"]
    );
}

#[test]
fn an_intermediate_with_a_multi_attribute_subject_passes() {
    use rcgen::{
        BasicConstraints as Bc, CertificateParams, DistinguishedName, DnType, DnValue, IsCa,
        Issuer, KeyIdMethod, KeyUsagePurpose,
    };
    let root_key = p256();
    let mut root = CertificateParams::default();
    root.distinguished_name = DistinguishedName::new();
    root.distinguished_name
        .push(DnType::CommonName, "Offline Root");
    root.is_ca = IsCa::Ca(Bc::Unconstrained);
    let root_issuer = Issuer::new(root.clone(), &root_key);
    let root_der = root.self_signed(&root_key).unwrap().der().to_vec();
    // An issuing CA named with a PrintableString and an O, as openssl makes.
    let int_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut int = CertificateParams::default();
    int.distinguished_name = DistinguishedName::new();
    int.distinguished_name.push(
        DnType::CommonName,
        DnValue::PrintableString("Issuing CA".try_into().unwrap()),
    );
    int.distinguished_name
        .push(DnType::OrganizationName, "mailid interop");
    int.is_ca = IsCa::Ca(Bc::Constrained(0));
    int.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    int.key_identifier_method = KeyIdMethod::Sha256;
    let int_der = int
        .signed_by(&int_key, &root_issuer)
        .unwrap()
        .der()
        .to_vec();
    let cfg = crate::lint::test_support::config();
    let int_key = crate::signer::CaKey::File(
        crate::signer::file::FileKey::from_pkcs8(&int_key.serialize_der()).unwrap(),
    );
    let ca = crate::issuer::CaIssuer::new(vec![int_der.clone(), root_der], int_key, &cfg).unwrap();
    let profile =
        LintProfile::new(&int_der, &ca.ski, &cfg, &rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let csr = Fixture::csr(ADDRESS, &p256());
    let key = crate::issuer::CsrPublicKey::from_csr(&csr).unwrap();
    let issued = ca.issue(&csr, &key, NOW).unwrap();
    let cert = x509_cert::Certificate::from_der(&issued.der).unwrap();
    let tbs = cert.tbs_certificate.to_der().unwrap();
    let ctx = CertContext {
        profile: &profile,
        address: ADDRESS,
        subject_spki: Some(&csr.spki_der),
        now: NOW,
    };
    let found = check_certificate(&tbs, &ctx);
    assert!(found.is_empty(), "{found:?}");
    // And its CRLs.
    let mut list = crate::crl_der::RevokedList::with_capacity(1);
    list.push(
        &[0x42; 16],
        NOW - 100,
        crate::lint::test_support::RevReason::Superseded,
    )
    .unwrap();
    let crl = ca
        .sign_crl(11, NOW - 60, NOW - 60 + 86_400, NOW, list)
        .unwrap();
    let crl = x509_cert::crl::CertificateList::from_der(&crl).unwrap();
    let ctx = crate::lint::CrlContext {
        profile: &profile,
        now: NOW,
        previous_number: Some(10),
    };
    let found = crate::lint::check_crl(&crl.tbs_cert_list.to_der().unwrap(), &ctx);
    assert!(found.is_empty(), "{found:?}");
}
