//! Each CRL rule fed a TBSCertList of the real issuer mutated to break it
//! (and only it); the unmutated ones pass. `lint_cost` (ignored) measures
//! the linter on a certificate and on CRLs of 100k and 1M entries.

use der::asn1::{GeneralizedTime, ObjectIdentifier, OctetString, UtcTime};
use der::{Decode, Encode};
use x509_cert::crl::{RevokedCert, TbsCertList};
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, CrlReason};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Time;
use x509_cert::Version;

use super::*;
use crate::keys::KeyType;
use crate::lint::test_support::{mutated, rules, Fixture, RevReason, NOW};

fn serial(n: u8) -> Vec<u8> {
    let mut s = vec![0x5a; 16];
    s[15] = n;
    s
}

/// A CRL of three entries (reasons superseded, keyCompromise, none).
fn sample(fx: &Fixture) -> Vec<u8> {
    fx.crl_tbs(
        7,
        &[
            (serial(1), NOW - 500, RevReason::Superseded),
            (serial(2), NOW - 400, RevReason::KeyCompromise),
            (serial(3), NOW - 300, RevReason::Unspecified),
        ],
    )
}

fn fires(fx: &Fixture, tbs: &[u8], mutate: impl FnOnce(&mut TbsCertList)) -> Vec<&'static str> {
    let der = mutated::<TbsCertList>(tbs, mutate);
    rules(&check_crl(&der, &fx.crl_ctx(Some(6))))
}

fn utc(unix: i64) -> Time {
    Time::UtcTime(UtcTime::from_unix_duration(std::time::Duration::from_secs(unix as u64)).unwrap())
}

fn list(t: &mut TbsCertList) -> &mut Vec<RevokedCert> {
    t.revoked_certificates.as_mut().unwrap()
}

fn reason_ext(code: CrlReason, critical: bool) -> Extension {
    Extension {
        extn_id: OID_REASON,
        critical,
        extn_value: OctetString::new(code.to_der().unwrap()).unwrap(),
    }
}

fn crl_ext_mut(t: &mut TbsCertList, oid: ObjectIdentifier) -> &mut Extension {
    t.crl_extensions
        .as_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e.extn_id == oid)
        .unwrap()
}

#[test]
fn the_issuers_crls_pass() {
    for ca in [KeyType::P256, KeyType::P384, KeyType::Rsa2048] {
        let fx = Fixture::new(ca);
        let every = [
            RevReason::Unspecified,
            RevReason::KeyCompromise,
            RevReason::AffiliationChanged,
            RevReason::Superseded,
            RevReason::CessationOfOperation,
            RevReason::PrivilegeWithdrawn,
        ];
        let list: Vec<_> = every
            .iter()
            .enumerate()
            .map(|(i, r)| (serial(i as u8), NOW - 1000 + i as i64, *r))
            .collect();
        for entries in [&list[..], &[]] {
            let tbs = fx.crl_tbs(9, entries);
            let found = check_crl(&tbs, &fx.crl_ctx(Some(8)));
            assert!(found.is_empty(), "{ca:?}: {found:?}");
            assert!(check_crl(&tbs, &fx.crl_ctx(None)).is_empty());
        }
    }
}

#[test]
fn decode() {
    let fx = Fixture::new(KeyType::P256);
    let tbs = sample(&fx);
    let ctx = fx.crl_ctx(None);
    assert_eq!(rules(&check_crl(b"\x30\x00", &ctx)), ["crl.decode"]);
    assert_eq!(
        rules(&check_crl(&tbs[..tbs.len() - 1], &ctx)),
        ["crl.decode"]
    );
    // A broken entry: the first entry's SEQUENCE header says INTEGER.
    let at = tbs
        .windows(3)
        .position(|w| w == [0x02, 0x10, 0x5a])
        .unwrap()
        - 2;
    let mut bad = tbs.clone();
    bad[at] = 0x02;
    assert_eq!(rules(&check_crl(&bad, &ctx)), ["crl.decode"]);
}

#[test]
fn version() {
    let fx = Fixture::new(KeyType::P256);
    let tbs = sample(&fx);
    assert_eq!(
        fires(&fx, &tbs, |t| t.version = Version::V1),
        ["crl.version"]
    );
}

#[test]
fn signature_algorithm() {
    let fx = Fixture::new(KeyType::P256);
    let tbs = sample(&fx);
    let sha384: ObjectIdentifier = "1.2.840.10045.4.3.3".parse().unwrap();
    assert_eq!(
        fires(&fx, &tbs, |t| t.signature.oid = sha384),
        ["crl.signature_algorithm"]
    );
}

#[test]
fn issuer() {
    let fx = Fixture::new(KeyType::P256);
    let tbs = sample(&fx);
    let other: Name = "CN=Another CA".parse().unwrap();
    assert_eq!(fires(&fx, &tbs, |t| t.issuer = other), ["crl.issuer"]);
}

#[test]
fn this_update() {
    let fx = Fixture::new(KeyType::P256);
    let tbs = sample(&fx);
    // Backdated two minutes (nextUpdate moved along).
    let back = |t: &mut TbsCertList| {
        t.this_update = utc(NOW - 120);
        t.next_update = Some(utc(NOW - 120 + 86_400));
    };
    assert_eq!(fires(&fx, &tbs, back), ["crl.this_update"]);
    let ahead = |t: &mut TbsCertList| {
        t.this_update = utc(NOW + 600);
        t.next_update = Some(utc(NOW + 600 + 86_400));
    };
    assert_eq!(fires(&fx, &tbs, ahead), ["crl.this_update"]);
}

#[test]
fn next_update() {
    let fx = Fixture::new(KeyType::P256);
    let tbs = sample(&fx);
    assert_eq!(
        fires(&fx, &tbs, |t| t.next_update = None),
        ["crl.next_update"]
    );
    let this = NOW - 60;
    assert_eq!(
        fires(&fx, &tbs, |t| t.next_update = Some(utc(this + 86_401))),
        ["crl.next_update"]
    );
    assert_eq!(
        fires(&fx, &tbs, |t| t.next_update = Some(utc(this))),
        ["crl.next_update"]
    );
}

#[test]
fn time_encoding() {
    let fx = Fixture::new(KeyType::P256);
    let tbs = sample(&fx);
    let generalized = |t: &mut TbsCertList| {
        let d = t.next_update.unwrap().to_unix_duration();
        t.next_update = Some(Time::GeneralTime(
            GeneralizedTime::from_unix_duration(d).unwrap(),
        ));
    };
    assert_eq!(fires(&fx, &tbs, generalized), ["crl.time_encoding"]);
}

#[test]
fn extensions() {
    let fx = Fixture::new(KeyType::P256);
    let tbs = sample(&fx);
    let idp = Extension {
        extn_id: "2.5.29.28".parse().unwrap(),
        critical: true,
        extn_value: OctetString::new(vec![0x30, 0x00]).unwrap(),
    };
    assert_eq!(
        fires(&fx, &tbs, |t| t.crl_extensions.as_mut().unwrap().push(idp)),
        ["crl.extensions"]
    );
    let twice = |t: &mut TbsCertList| {
        let aki = crl_ext_mut(t, OID_AKI).clone();
        t.crl_extensions.as_mut().unwrap().push(aki);
    };
    assert_eq!(fires(&fx, &tbs, twice), ["crl.extensions"]);
    assert_eq!(
        fires(&fx, &tbs, |t| crl_ext_mut(t, OID_AKI).critical = true),
        ["crl.extensions"]
    );
}

#[test]
fn number() {
    let fx = Fixture::new(KeyType::P256);
    let tbs = sample(&fx);
    let ctx = |prev| fx.crl_ctx(prev);
    // Number 7 after 7, and after 8.
    assert_eq!(rules(&check_crl(&tbs, &ctx(Some(7)))), ["crl.number"]);
    assert_eq!(rules(&check_crl(&tbs, &ctx(Some(8)))), ["crl.number"]);
    assert_eq!(
        fires(&fx, &tbs, |t| t
            .crl_extensions
            .as_mut()
            .unwrap()
            .retain(|e| e.extn_id != OID_CRL_NUMBER)),
        ["crl.number"]
    );
    let negative = |t: &mut TbsCertList| {
        crl_ext_mut(t, OID_CRL_NUMBER).extn_value =
            OctetString::new(vec![0x02, 0x01, 0xff]).unwrap()
    };
    assert_eq!(fires(&fx, &tbs, negative), ["crl.number"]);
}

#[test]
fn aki() {
    let fx = Fixture::new(KeyType::P256);
    let tbs = sample(&fx);
    let other = AuthorityKeyIdentifier {
        key_identifier: Some(OctetString::new(vec![7; 20]).unwrap()),
        authority_cert_issuer: None,
        authority_cert_serial_number: None,
    };
    let wrong = |t: &mut TbsCertList| {
        crl_ext_mut(t, OID_AKI).extn_value = OctetString::new(other.to_der().unwrap()).unwrap()
    };
    assert_eq!(fires(&fx, &tbs, wrong), ["crl.aki"]);
    let missing = |t: &mut TbsCertList| {
        t.crl_extensions
            .as_mut()
            .unwrap()
            .retain(|e| e.extn_id != OID_AKI)
    };
    assert_eq!(fires(&fx, &tbs, missing), ["crl.aki"]);
}

#[test]
fn entries() {
    let fx = Fixture::new(KeyType::P256);
    let tbs = sample(&fx);
    assert_eq!(
        fires(&fx, &tbs, |t| t.revoked_certificates = Some(Vec::new())),
        ["crl.entries"]
    );
}

#[test]
fn entry_serial() {
    let fx = Fixture::new(KeyType::P256);
    let tbs = sample(&fx);
    let negative = [&[0x02, 0x10, 0x80][..], &[0x11; 15]].concat();
    assert_eq!(
        fires(&fx, &tbs, |t| list(t)[1].serial_number =
            SerialNumber::from_der(&negative).unwrap()),
        ["crl.entry_serial"]
    );
    let zero = [0x02, 0x01, 0x00];
    assert_eq!(
        fires(&fx, &tbs, |t| list(t)[1].serial_number =
            SerialNumber::from_der(&zero).unwrap()),
        ["crl.entry_serial"]
    );
}

#[test]
fn entry_date() {
    let fx = Fixture::new(KeyType::P256);
    let tbs = sample(&fx);
    assert_eq!(
        fires(&fx, &tbs, |t| list(t)[0].revocation_date = utc(NOW)),
        ["crl.entry_date"]
    );
    let generalized = |t: &mut TbsCertList| {
        let d = list(t)[0].revocation_date.to_unix_duration();
        list(t)[0].revocation_date =
            Time::GeneralTime(GeneralizedTime::from_unix_duration(d).unwrap());
    };
    assert_eq!(fires(&fx, &tbs, generalized), ["crl.entry_date"]);
}

#[test]
fn entry_reason() {
    let fx = Fixture::new(KeyType::P256);
    let tbs = sample(&fx);
    let set = |exts: Vec<Extension>| {
        move |t: &mut TbsCertList| list(t)[2].crl_entry_extensions = Some(exts)
    };
    // unspecified is expressed by leaving the reason out.
    assert_eq!(
        fires(
            &fx,
            &tbs,
            set(vec![reason_ext(CrlReason::Unspecified, false)])
        ),
        ["crl.entry_reason"]
    );
    // Codes SPEC §5 does not use.
    for code in [
        CrlReason::CaCompromise,
        CrlReason::CertificateHold,
        CrlReason::AaCompromise,
    ] {
        assert_eq!(
            fires(&fx, &tbs, set(vec![reason_ext(code, false)])),
            ["crl.entry_reason"]
        );
    }
    assert_eq!(
        fires(
            &fx,
            &tbs,
            set(vec![reason_ext(CrlReason::Superseded, true)])
        ),
        ["crl.entry_reason"]
    );
    let twice = vec![
        reason_ext(CrlReason::Superseded, false),
        reason_ext(CrlReason::KeyCompromise, false),
    ];
    assert_eq!(fires(&fx, &tbs, set(twice)), ["crl.entry_reason"]);
    // invalidityDate is not in the profile.
    let invalidity = Extension {
        extn_id: "2.5.29.24".parse().unwrap(),
        critical: false,
        extn_value: OctetString::new(
            GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(NOW as u64 - 900))
                .unwrap()
                .to_der()
                .unwrap(),
        )
        .unwrap(),
    };
    assert_eq!(
        fires(&fx, &tbs, set(vec![invalidity])),
        ["crl.entry_reason"]
    );
    // An out-of-range code (7 is unused in CRLReason).
    let seven = Extension {
        extn_id: OID_REASON,
        critical: false,
        extn_value: OctetString::new(vec![0x0a, 0x01, 0x07]).unwrap(),
    };
    assert_eq!(fires(&fx, &tbs, set(vec![seven])), ["crl.entry_reason"]);
}

#[test]
fn duplicate_serial() {
    let fx = Fixture::new(KeyType::P256);
    let tbs = sample(&fx);
    let dup = |t: &mut TbsCertList| {
        let first = list(t)[0].clone();
        list(t).push(first);
    };
    assert_eq!(fires(&fx, &tbs, dup), ["crl.duplicate_serial"]);
}

#[test]
fn fingerprints_tell_serials_apart_and_only_repeats_are_reported() {
    // Same content, different length: different fingerprints.
    assert_ne!(fingerprint(&[1, 0]), fingerprint(&[1]));
    assert_ne!(fingerprint(&serial(1)), fingerprint(&serial(2)));
    let fx = Fixture::new(KeyType::P256);
    let list: Vec<_> = (0..200u8)
        .map(|i| (serial(i), NOW - 100, RevReason::Superseded))
        .chain([(serial(7), NOW - 90, RevReason::Superseded)])
        .collect();
    let found = check_crl(&fx.crl_tbs(3, &list), &fx.crl_ctx(None));
    assert_eq!(rules(&found), ["crl.duplicate_serial"]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].detail.contains(&hex(&serial(7))), "{found:?}");
}

#[test]
fn findings_are_capped_per_rule() {
    let fx = Fixture::new(KeyType::P256);
    let list: Vec<_> = (0..50)
        .map(|_| (serial(1), NOW - 100, RevReason::Superseded))
        .collect();
    let tbs = fx.crl_tbs(3, &list);
    let found = check_crl(&tbs, &fx.crl_ctx(None));
    assert_eq!(found.len(), crate::lint::MAX_FINDINGS_PER_RULE + 1);
    assert_eq!(found.last().unwrap().detail, "and 41 more of this rule");
}

/// Nanoseconds this thread has spent on a CPU (Linux schedstat), so the
/// cost can be read on a busy machine.
fn cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// The linter's cost: per certificate, and per CRL of 100k and 1M entries.
/// Run with `cargo test -p mailid-ca --release lint_cost -- --ignored
/// --nocapture`.
#[test]
#[ignore]
fn lint_cost() {
    use std::time::Instant;
    let fx = Fixture::new(KeyType::P256);
    for (name, key) in [
        ("P-256", crate::lint::test_support::p256()),
        (
            "RSA-2048",
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .unwrap(),
        ),
    ] {
        let csr = Fixture::csr("alice@example.org", &key);
        let tbs = fx.tbs(&csr);
        let ctx = fx.cert_ctx(&csr);
        // The best of 15 batches: the machine is shared, the minimum is
        // the cost without other work in the way; the median is shown too.
        let cpu_start = cpu_ns();
        let mut batches: Vec<_> = (0..15)
            .map(|_| {
                let n = 2_000;
                let start = Instant::now();
                for _ in 0..n {
                    let found = crate::lint::check_certificate(std::hint::black_box(&tbs), &ctx);
                    assert!(found.is_empty());
                }
                start.elapsed() / n
            })
            .collect();
        let cpu = cpu_ns().zip(cpu_start).map(|(b, a)| (b - a) / 30_000);
        batches.sort();
        let (per, median) = (batches[0], batches[7]);
        if std::env::var_os("LINT_COST_PHASES").is_some() {
            let time = |what: &str, f: &dyn Fn()| {
                let start = Instant::now();
                for _ in 0..2_000 {
                    f();
                }
                println!("  {what}: {:?}", start.elapsed() / 2_000);
            };
            use der::{Decode, Encode};
            time("decode", &|| {
                std::hint::black_box(crate::lint::test_support::Tbs::from_der(&tbs).unwrap());
            });
            let t = crate::lint::test_support::Tbs::from_der(&tbs).unwrap();
            time("encode", &|| {
                std::hint::black_box(t.to_der().unwrap());
            });
            time("classify", &|| {
                std::hint::black_box(
                    mailid_shared::sigverify::classify(&t.subject_public_key_info).unwrap(),
                );
            });
            time("read", &|| {
                std::hint::black_box(crate::lint::tbs::decode(&tbs).unwrap());
            });
            let cert = crate::lint::cert::Cert {
                key: mailid_shared::sigverify::classify(&t.subject_public_key_info)
                    .map_err(|e| e.to_string()),
                tbs: crate::lint::tbs::decode(&tbs).unwrap(),
            };
            for (name, rule) in crate::lint::cert::RULES {
                time(name, &|| {
                    let mut f = crate::lint::Findings::default();
                    rule(&cert, &ctx, &mut f);
                    std::hint::black_box(f);
                });
            }
            time("key id", &|| {
                std::hint::black_box(mailid_shared::KeyId::of_spki(&csr.spki_der));
            });
        }
        println!(
            "lint_cost: certificate ({name} subject): {per:?} per certificate (best batch; median {median:?}; on-CPU time {cpu:?} ns)"
        );
    }
    for size in [100_000u32, 1_000_000] {
        let list: Vec<_> = (0..size)
            .map(|i| {
                let mut s = rand::random::<[u8; 16]>().to_vec();
                s[0] &= 0x7f;
                s[0] |= 0x01;
                s[12..].copy_from_slice(&i.to_be_bytes());
                (s, NOW - 3600 + i64::from(i / 400), RevReason::Superseded)
            })
            .collect();
        let tbs = fx.crl_tbs(5, &list);
        let cpu_start = cpu_ns();
        let start = Instant::now();
        let found = check_crl(&tbs, &fx.crl_ctx(Some(4)));
        let took = start.elapsed();
        let cpu = cpu_ns().zip(cpu_start).map(|(b, a)| (b - a) / 1_000_000);
        assert!(found.is_empty(), "{found:?}");
        println!(
            "lint_cost: CRL of {size} entries ({} MB): {took:?} (on-CPU time {cpu:?} ms)",
            tbs.len() / 1_000_000
        );
    }
}
