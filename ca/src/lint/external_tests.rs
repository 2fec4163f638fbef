//! The external linter against linters that are down or silent (always
//! run) and against a real pkilint REST server (`pkilint_rest`, ignored:
//! it needs python3 and, the first time, PyPI — run it with `cargo test -p
//! mailid-ca pkilint_rest -- --ignored`; the server comes from
//! `mailid_tests::pkilint`, which the end-to-end tests share).

use der::{Decode, Encode};

use super::*;
use crate::keys::KeyType;
use crate::lint::cert::OID_EKU;
use crate::lint::test_support::{self, mutated, p256, rules, Fixture, RevReason, Tbs, NOW};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn sample_tbs() -> Vec<u8> {
    let fx = Fixture::new(KeyType::P256);
    let csr = Fixture::csr("alice@example.org", &p256());
    fx.tbs(&csr)
}

#[test]
fn an_unreachable_linter_refuses() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let linter = ExternalLinter::new(&format!("http://127.0.0.1:{port}"), DEFAULT_TIMEOUT).unwrap();
    let found = runtime().block_on(linter.check_certificate(&sample_tbs()));
    assert_eq!(rules(&found), ["external.unavailable"], "{found:?}");
}

#[test]
fn a_silent_linter_refuses() {
    // Accepts connections (the kernel queues them) and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let linter = ExternalLinter::new(&url, std::time::Duration::from_secs(1)).unwrap();
    let found = runtime().block_on(linter.check_certificate(&sample_tbs()));
    assert_eq!(rules(&found), ["external.unavailable"], "{found:?}");
    assert!(
        found[0].detail.contains("did not answer in time"),
        "{found:?}"
    );
    drop(listener);
}

#[test]
fn bad_urls_and_undecodable_tbs_are_refused() {
    assert!(ExternalLinter::new("ftp://127.0.0.1/", DEFAULT_TIMEOUT).is_err());
    assert!(ExternalLinter::new("not a url", DEFAULT_TIMEOUT).is_err());
    let linter = ExternalLinter::new("http://127.0.0.1:9", DEFAULT_TIMEOUT).unwrap();
    let rt = runtime();
    assert_eq!(
        rules(&rt.block_on(linter.check_certificate(b"\x30\x00"))),
        ["external.copy"]
    );
    assert_eq!(
        rules(&rt.block_on(linter.check_crl(b"junk"))),
        ["external.copy"]
    );
}

#[test]
fn the_copy_is_a_certificate_signed_under_the_tbs_algorithm() {
    for kt in [KeyType::P256, KeyType::P384, KeyType::Rsa2048] {
        let fx = Fixture::new(kt);
        let csr = Fixture::csr("alice@example.org", &p256());
        let tbs = fx.tbs(&csr);
        let copy = signed_copy(Kind::Certificate, &tbs, &Keys::default()).unwrap();
        let cert = x509_cert::Certificate::from_der(&copy).unwrap();
        assert_eq!(cert.tbs_certificate.to_der().unwrap(), tbs);
        assert_eq!(cert.signature_algorithm, fx.profile.signature_algorithm);
        let crl_tbs = fx.crl_tbs(3, &[(vec![0x42; 16], NOW - 90, RevReason::Superseded)]);
        let copy = signed_copy(Kind::Crl, &crl_tbs, &Keys::default()).unwrap();
        let crl = x509_cert::crl::CertificateList::from_der(&copy).unwrap();
        assert_eq!(crl.tbs_cert_list.to_der().unwrap(), crl_tbs);
    }
}

#[test]
#[ignore]
fn pkilint_rest() {
    let server = mailid_tests::pkilint::start();
    // pkilint flags reserved names (.example) in CRL and AIA URLs, so the CA
    // gets a public-looking base URL, as in scripts/interop.sh.
    let cfg = crate::config::Config {
        base_url: "http://pki.example.com".into(),
        ..test_support::config()
    };
    let linter = ExternalLinter::new(&server.url, std::time::Duration::from_secs(20)).unwrap();
    let rt = runtime();
    for kt in [KeyType::P256, KeyType::Rsa2048] {
        let fx = Fixture::with_config(kt, &cfg);
        let csr = Fixture::csr("alice@example.com", &p256());
        let tbs = fx.tbs(&csr);
        let found = rt.block_on(linter.check_certificate(&tbs));
        assert!(found.is_empty(), "{kt:?} identity: {found:?}");
        // serverAuth next to emailProtection: the S/MIME BR forbid it.
        let server_auth = mutated::<Tbs>(&tbs, |t| {
            let eku = x509_cert::ext::pkix::ExtendedKeyUsage(vec![
                "1.3.6.1.5.5.7.3.4".parse().unwrap(),
                "1.3.6.1.5.5.7.3.1".parse().unwrap(),
            ]);
            let e = t
                .extensions
                .as_mut()
                .unwrap()
                .iter_mut()
                .find(|e| e.extn_id == OID_EKU)
                .unwrap();
            e.extn_value = der::asn1::OctetString::new(eku.to_der().unwrap()).unwrap();
        });
        let found = rt.block_on(linter.check_certificate(&server_auth));
        assert_eq!(rules(&found), ["external.pkilint"], "{found:?}");
        println!("{kt:?}: pkilint refuses serverAuth with {found:?}");
        let crl = fx.crl_tbs(
            4,
            &[
                (vec![0x42; 16], NOW - 90, RevReason::Superseded),
                (vec![0x43; 16], NOW - 80, RevReason::Unspecified),
            ],
        );
        let found = rt.block_on(linter.check_crl(&crl));
        assert!(found.is_empty(), "{kt:?} CRL: {found:?}");
    }
    // The default base URL (loopback) is an internal name to pkilint.
    let loopback = crate::config::Config {
        base_url: crate::config::DEFAULT_BASE_URL.into(),
        ..test_support::config()
    };
    let fx = Fixture::with_config(KeyType::P256, &loopback);
    let tbs = fx.tbs(&Fixture::csr("alice@example.com", &p256()));
    let found = rt.block_on(linter.check_certificate(&tbs));
    assert_eq!(rules(&found), ["external.pkilint"], "{found:?}");
    println!("pkilint refuses a loopback base URL with {found:?}");
    // Cost of one round trip, for docs/BENCHMARKS.md.
    let fx = Fixture::with_config(KeyType::P256, &cfg);
    let tbs = fx.tbs(&Fixture::csr("alice@example.com", &p256()));
    let n = 50;
    let start = std::time::Instant::now();
    for _ in 0..n {
        assert!(rt.block_on(linter.check_certificate(&tbs)).is_empty());
    }
    println!("pkilint_rest: {:?} per certificate", start.elapsed() / n);
}
