use super::*;
use crate::keys::KeyType;
use crate::signer::file::FileKey;
use crate::signer::CaKey;
use crate::store::CrlEntry;
use mailid_shared::protocol::RevocationReason;
use rcgen::KeyPair;

fn config() -> Config {
    Config::for_tests("Test CA")
}

fn issuer(kt: KeyType) -> CaIssuer {
    let key = CaKey::File(FileKey::generate(kt).unwrap());
    let root = self_signed_root("Test CA", &key, 1_800_000_000).unwrap();
    CaIssuer::new(vec![root], key, &config()).unwrap()
}

fn ext<'a>(cert: &'a Certificate, oid: &str) -> Option<&'a x509_cert::ext::Extension> {
    let oid: der::asn1::ObjectIdentifier = oid.parse().unwrap();
    cert.tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == oid)
}

#[test]
fn csr_extensions_are_ignored_and_the_profile_is_ours() {
    let ca = issuer(KeyType::P256);
    let subject = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    // A CSR asking for CA:TRUE, keyCertSign and serverAuth.
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = vec![SanType::Rfc822Name("alice@example.org".try_into().unwrap())];
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let pem = p.serialize_request(&subject).unwrap().pem().unwrap();
    let csr = crate::policy::check_csr(&pem).unwrap();
    let key = CsrPublicKey::from_csr(&csr).unwrap();
    let now = 1_800_000_100;
    let issued = ca.issue(&csr, &key, now).unwrap();
    assert_eq!(issued.not_before, now - 60);
    assert_eq!(issued.not_after - issued.not_before, 365 * 86_400);
    let cert = Certificate::from_der(&issued.der).unwrap();
    let tbs = &cert.tbs_certificate;
    assert_eq!(tbs.version, x509_cert::certificate::Version::V3);
    assert_eq!(
        Serial::from_bytes(tbs.serial_number.as_bytes()),
        issued.serial
    );
    assert_eq!(issued.serial.to_bytes().len(), 16);
    assert_eq!(tbs.subject.to_string(), "CN=alice@example.org");
    assert_eq!(tbs.subject_public_key_info.to_der().unwrap(), csr.spki_der);
    let bc = X509Bc::from_der(ext(&cert, "2.5.29.19").unwrap().extn_value.as_bytes()).unwrap();
    assert!(!bc.ca);
    let ku_ext = ext(&cert, "2.5.29.15").unwrap();
    assert!(ku_ext.critical);
    let ku = x509_cert::ext::pkix::KeyUsage::from_der(ku_ext.extn_value.as_bytes()).unwrap();
    assert!(ku.digital_signature() && ku.key_agreement());
    assert!(!ku.key_cert_sign() && !ku.key_encipherment());
    let eku = x509_cert::ext::pkix::ExtendedKeyUsage::from_der(
        ext(&cert, "2.5.29.37").unwrap().extn_value.as_bytes(),
    )
    .unwrap();
    assert_eq!(eku.0, vec!["1.3.6.1.5.5.7.3.4".parse().unwrap()]);
    let ski =
        SubjectKeyIdentifier::from_der(ext(&cert, "2.5.29.14").unwrap().extn_value.as_bytes())
            .unwrap();
    assert_eq!(ski.0.as_bytes(), csr.key_id.as_bytes());
    assert_eq!(ski.0.as_bytes().len(), 33);
    let aki = x509_cert::ext::pkix::AuthorityKeyIdentifier::from_der(
        ext(&cert, "2.5.29.35").unwrap().extn_value.as_bytes(),
    )
    .unwrap();
    assert_eq!(aki.key_identifier.unwrap().as_bytes(), &ca.ski[..]);
    let pol = CertificatePolicies::from_der(ext(&cert, "2.5.29.32").unwrap().extn_value.as_bytes())
        .unwrap();
    assert_eq!(pol.0[0].policy_identifier.to_string(), "2.23.140.1.5.1.3");
    let aia = AuthorityInfoAccessSyntax::from_der(
        ext(&cert, "1.3.6.1.5.5.7.1.1")
            .unwrap()
            .extn_value
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(
        aia.0[0].access_location,
        GeneralName::UniformResourceIdentifier(
            der::asn1::Ia5String::new("http://ca.example:7700/v1/ca.der").unwrap()
        )
    );
    assert!(ext(&cert, "2.5.29.31").is_some());
    assert_eq!(tbs.extensions.as_ref().unwrap().len(), 9);
}

#[test]
fn rsa_identities_get_key_encipherment_and_crls_carry_reasons() {
    let ca = issuer(KeyType::Rsa2048);
    let subject =
        KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, "bob@example.org");
    let csr =
        crate::policy::check_csr(&p.serialize_request(&subject).unwrap().pem().unwrap()).unwrap();
    let key = CsrPublicKey::from_csr(&csr).unwrap();
    let issued = ca.issue(&csr, &key, 1_800_000_100).unwrap();
    let cert = Certificate::from_der(&issued.der).unwrap();
    let ku = x509_cert::ext::pkix::KeyUsage::from_der(
        ext(&cert, "2.5.29.15").unwrap().extn_value.as_bytes(),
    )
    .unwrap();
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_agreement());
    let entries = vec![
        CrlEntry {
            serial: issued.serial.clone(),
            revoked_at: 1_800_000_200,
            reason: RevocationReason::Superseded,
        },
        CrlEntry {
            serial: Serial::random(),
            revoked_at: 1_800_000_230,
            reason: RevocationReason::Unspecified,
        },
    ];
    let der = ca
        .sign_crl(
            300,
            1_800_000_240,
            1_800_086_640,
            1_800_000_300,
            list_of(&entries),
        )
        .unwrap();
    let crl = x509_cert::crl::CertificateList::from_der(&der).unwrap();
    let list = crl.tbs_cert_list.revoked_certificates.unwrap();
    assert_eq!(list.len(), 2);
    assert!(list[0].crl_entry_extensions.is_some());
    assert!(list[1].crl_entry_extensions.is_none());
    let exts = crl.tbs_cert_list.crl_extensions.unwrap();
    let number = exts
        .iter()
        .find(|e| e.extn_id.to_string() == "2.5.29.20")
        .unwrap();
    let n = der::asn1::Uint::from_der(number.extn_value.as_bytes()).unwrap();
    assert_eq!(n.as_bytes(), &[1, 44]);
}

fn list_of(entries: &[CrlEntry]) -> RevokedList {
    let mut list = RevokedList::with_capacity(entries.len());
    for e in entries {
        list.push(&e.serial.to_bytes(), e.revoked_at, e.reason)
            .unwrap();
    }
    list
}

fn rcgen_reason(r: RevocationReason) -> Option<rcgen::RevocationReason> {
    use rcgen::RevocationReason as R;
    match r {
        RevocationReason::Unspecified => None,
        RevocationReason::KeyCompromise => Some(R::KeyCompromise),
        RevocationReason::AffiliationChanged => Some(R::AffiliationChanged),
        RevocationReason::Superseded => Some(R::Superseded),
        RevocationReason::CessationOfOperation => Some(R::CessationOfOperation),
        RevocationReason::PrivilegeWithdrawn => Some(R::PrivilegeWithdrawn),
    }
}

/// The spliced CRL's TBSCertList is byte for byte what rcgen builds from
/// the same entries (serials with the high bit set or leading zero bytes,
/// times on both sides of 2050, every reason), its signature verifies
/// under the CA key, and its summary reads back. With no entries the list
/// is absent, as rcgen (and RFC 5280) has it.
#[test]
fn crl_splice_matches_rcgen() {
    let reasons = RevocationReason::ALL;
    for kt in [KeyType::P256, KeyType::Rsa2048] {
        // The encoding is under test, not the profile: no lint gate (a
        // nextUpdate decades ahead is what the linter must refuse).
        let ca = issuer(kt).with_gate(crate::signer::accept_all());
        for n in [0usize, 1, 7, 300] {
            let entries: Vec<CrlEntry> = (0..n)
                .map(|i| {
                    let mut bytes = Serial::random().to_bytes();
                    match i % 3 {
                        0 => bytes[0] |= 0x80,
                        1 => bytes[0] = 0,
                        _ => {}
                    }
                    CrlEntry {
                        serial: Serial::from_bytes(&bytes),
                        revoked_at: if i % 4 == 0 {
                            2_600_000_000
                        } else {
                            1_800_000_000 + i as i64
                        },
                        reason: reasons[i % reasons.len()],
                    }
                })
                .collect();
            let ours = ca
                .sign_crl(
                    70_000,
                    1_800_000_240,
                    2_700_000_000,
                    1_800_000_300,
                    list_of(&entries),
                )
                .unwrap();
            let reference = CertificateRevocationListParams {
                this_update: at(1_800_000_240).unwrap(),
                next_update: at(2_700_000_000).unwrap(),
                crl_number: SerialNumber::from_slice(&70_000i64.to_be_bytes()[5..]),
                issuing_distribution_point: None,
                revoked_certs: entries
                    .iter()
                    .map(|e| rcgen::RevokedCertParams {
                        serial_number: SerialNumber::from_slice(&e.serial.to_bytes()),
                        revocation_time: at(e.revoked_at).unwrap(),
                        reason_code: rcgen_reason(e.reason),
                        invalidity_date: None,
                    })
                    .collect(),
                key_identifier_method: KeyIdMethod::PreSpecified(ca.ski.clone()),
            }
            .signed_by(&Issuer::from_params(&ca.params, ca.signer().key()))
            .unwrap();
            let ours_crl = x509_cert::crl::CertificateList::from_der(&ours).unwrap();
            let ref_crl = x509_cert::crl::CertificateList::from_der(reference.der()).unwrap();
            assert_eq!(
                ours_crl.tbs_cert_list.to_der().unwrap(),
                ref_crl.tbs_cert_list.to_der().unwrap(),
                "{kt:?} with {n} entries"
            );
            assert_eq!(ours_crl.signature_algorithm, ref_crl.signature_algorithm);
            let ca_cert = Certificate::from_der(&ca.ca_der).unwrap();
            let spki = ca_cert.tbs_certificate.subject_public_key_info.clone();
            let spki = mailid_shared::sigverify::parse_spki(&spki.to_der().unwrap()).unwrap();
            mailid_shared::sigverify::verify(
                &spki,
                &ours_crl.signature_algorithm,
                &ours_crl.tbs_cert_list.to_der().unwrap(),
                ours_crl.signature.raw_bytes(),
            )
            .unwrap();
            let sum = crate::crl_der::summary(&ours).unwrap();
            assert_eq!(sum.number, 70_000);
            assert_eq!(sum.this_update, 1_800_000_240);
            assert_eq!(sum.next_update, Some(2_700_000_000));
            assert_eq!(sum.entries, n);
        }
    }
}

#[test]
fn validity_never_exceeds_825_days_counted_inclusively() {
    use crate::issuer::not_after_for;
    assert_eq!(not_after_for(1000, 365) - 1000, 365 * 86_400);
    assert_eq!(not_after_for(1000, 824) - 1000, 824 * 86_400);
    // Inclusive period: notAfter - notBefore + 1 s <= 825 days.
    assert_eq!(not_after_for(1000, 825) - 1000 + 1, 825 * 86_400);
}

/// The gate sees exactly the TBS the key signs (certificates and CRLs), and
/// a refusing gate means no certificate and no CRL.
#[test]
fn the_pre_sign_gate_sees_the_exact_tbs_and_can_refuse() {
    use crate::signer::{Refusal, SignError};
    use std::sync::{Arc, Mutex};
    type Seen = Mutex<Vec<(Vec<u8>, &'static str)>>;
    let seen: Arc<Seen> = Arc::default();
    let refuse = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s, r) = (seen.clone(), refuse.clone());
    let ca = issuer(KeyType::P384).with_gate(Arc::new(move |tbs: &[u8], kind| {
        s.lock().unwrap().push((tbs.to_vec(), kind.name()));
        if r.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Refusal::new("validity over 825 days"));
        }
        Ok(())
    }));
    let subject = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::Rfc822Name("bo@example.org".try_into().unwrap())];
    let pem = p.serialize_request(&subject).unwrap().pem().unwrap();
    let csr = crate::policy::check_csr(&pem).unwrap();
    let key = CsrPublicKey::from_csr(&csr).unwrap();

    let issued = ca.issue(&csr, &key, 1_800_000_100).unwrap();
    let cert = Certificate::from_der(&issued.der).unwrap();
    let crl = ca
        .sign_crl(
            9,
            1_800_000_100,
            1_800_086_500,
            1_800_000_100,
            RevokedList::with_capacity(0),
        )
        .unwrap();
    let crl = x509_cert::crl::CertificateList::from_der(&crl).unwrap();
    {
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.len(),
            2,
            "one look per signature, none for the CRL template"
        );
        assert_eq!(
            seen[0],
            (cert.tbs_certificate.to_der().unwrap(), "certificate")
        );
        assert_eq!(seen[1], (crl.tbs_cert_list.to_der().unwrap(), "crl"));
    }

    refuse.store(true, std::sync::atomic::Ordering::SeqCst);
    let e = ca.issue(&csr, &key, 1_800_000_200).unwrap_err();
    match e.downcast_ref::<SignError>() {
        Some(SignError::Refused(r)) => assert_eq!(r.why, "validity over 825 days"),
        other => panic!("{other:?} {e:#}"),
    }
    let e = ca
        .sign_crl(
            10,
            1_800_000_200,
            1_800_086_600,
            1_800_000_200,
            RevokedList::with_capacity(0),
        )
        .unwrap_err();
    assert!(
        matches!(e.downcast_ref::<SignError>(), Some(SignError::Refused(_))),
        "{e:#}"
    );
    assert_eq!(seen.lock().unwrap().len(), 4);
}

/// Enrollment's path: `check` (a dry run of the gate) before the MTA call,
/// then `sign`. In the same second the certificate is the checked TBS byte
/// for byte, the gate is asked once, and the assembled certificate is what
/// x509-cert's own encoder makes of it, with a signature that verifies
/// (aws-lc-rs through sigverify, and OpenSSL in the end-to-end tests). A
/// second later the draft is rebuilt with the new dates and gated again.
#[test]
fn a_checked_draft_is_signed_as_checked_in_the_same_second() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    for kt in [KeyType::P256, KeyType::P384, KeyType::Rsa2048] {
        let looks = Arc::new(AtomicUsize::new(0));
        let l = looks.clone();
        let ca = issuer(kt).with_gate(Arc::new(move |_: &[u8], _| {
            l.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }));
        let subject = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![SanType::Rfc822Name("cy@example.org".try_into().unwrap())];
        let pem = p.serialize_request(&subject).unwrap().pem().unwrap();
        let csr = crate::policy::check_csr(&pem).unwrap();
        let key = CsrPublicKey::from_csr(&csr).unwrap();
        let now = 1_800_000_100;

        let mut draft = ca.draft(&csr, now).unwrap();
        let tbs = ca.check(&mut draft, &key).unwrap();
        let issued = ca.sign(draft, &key, now).unwrap();
        assert_eq!(looks.load(Ordering::SeqCst), 1, "{kt}: one look");
        let cert = Certificate::from_der(&issued.der).unwrap();
        assert_eq!(cert.tbs_certificate.to_der().unwrap(), tbs, "{kt}");
        assert_eq!(
            cert.to_der().unwrap(),
            issued.der,
            "{kt}: as x509-cert encodes it"
        );
        assert_eq!(cert.signature_algorithm, cert.tbs_certificate.signature);
        let ca_cert = Certificate::from_der(&ca.ca_der).unwrap();
        mailid_shared::sigverify::verify(
            &ca_cert.tbs_certificate.subject_public_key_info,
            &cert.signature_algorithm,
            &tbs,
            cert.signature.raw_bytes(),
        )
        .unwrap();
        assert_eq!(issued.not_before, now - BACKDATE_SECS);

        // Signed a second later: rebuilt with the new dates, gated again.
        let mut draft = ca.draft(&csr, now).unwrap();
        let tbs = ca.check(&mut draft, &key).unwrap();
        let issued = ca.sign(draft, &key, now + 1).unwrap();
        assert_eq!(looks.load(Ordering::SeqCst), 3, "{kt}: looked again");
        let cert = Certificate::from_der(&issued.der).unwrap();
        assert_ne!(cert.tbs_certificate.to_der().unwrap(), tbs);
        assert_eq!(issued.not_before, now + 1 - BACKDATE_SECS);
    }
}

#[test]
fn assembly_refuses_what_is_not_a_tbs() {
    for bad in [&b""[..], b"\x30\x03\x02\x01\x01", b"\x04\x00"] {
        assert!(assemble_certificate(bad, b"sig").is_err());
    }
}
