//! Unit tests of the PKCS#12 export.

use std::os::unix::fs::PermissionsExt;

use p12_keystore::{KeyStore, Pkcs12Archive, Pkcs12ImportPolicy};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, PublicKeyData};

use super::*;
use crate::key_id_of_bytes;
use crate::store::NewIdentity;

const ALICE: &str = "alice@example.com";

/// A root, an intermediate and a leaf for alice; records the leaf in
/// `store` with its key encrypted under `pass`. Returns the serial, the
/// leaf DER and the chain DERs (issuer first).
fn record(store: &Store, serial: &str, pass: &[u8]) -> (Serial, Vec<u8>, Vec<Vec<u8>>) {
    let ca = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p
    };
    let root = CertifiedIssuer::self_signed(ca("Root"), KeyPair::generate().unwrap()).unwrap();
    let inter =
        CertifiedIssuer::signed_by(ca("Issuing"), KeyPair::generate().unwrap(), &root).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, ALICE);
    p.subject_alt_names = vec![rcgen::SanType::Rfc822Name(ALICE.try_into().unwrap())];
    let leaf = p.signed_by(&leaf_key, &inter).unwrap();
    let chain = vec![inter.der().to_vec(), root.der().to_vec()];
    let serial: Serial = serial.parse().unwrap();
    let key_id = KeyId::of_spki(&leaf_key.subject_public_key_info());
    let address = Address::parse(ALICE).unwrap();
    store
        .record_new(
            &address,
            &NewIdentity {
                serial: &serial,
                key_id: &key_id,
                key_type: "P-256",
                ca_url: "http://127.0.0.1:1",
                issuer: "CN=Issuing",
                not_before: "2026-01-01T00:00:00Z",
                not_after: "2099-01-01T00:00:00Z",
                certificate_pem: &leaf.pem(),
                chain_pem: &pem::encode_chain(&chain),
                key_pkcs8: &leaf_key.serialize_der(),
                revoked: &[],
            },
            Some(pass),
        )
        .unwrap();
    (serial, leaf.der().to_vec(), chain)
}

fn opts<'a>(out: &'a Path, serial: Option<&'a str>, legacy: bool) -> ExportOptions<'a> {
    ExportOptions {
        address: ALICE,
        serial,
        legacy,
        out,
        password: "p12 pw",
        passphrase: Some(b"store pass"),
    }
}

#[test]
fn exports_key_certificate_and_chain_that_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("s")).unwrap();
    let (first, first_leaf, _) = record(&store, "01aa", b"store pass");
    let (second, leaf, chain) = record(&store, "02bb", b"store pass");
    for legacy in [false, true] {
        let out = tmp.path().join(format!("alice-{legacy}.p12"));
        let done = export_p12(&store, &opts(&out, None, legacy)).unwrap();
        assert_eq!(done.serial, second);
        assert_eq!(done.certificates, 3);
        assert_eq!(done.legacy, legacy);
        let mode = fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let bytes = fs::read(&out).unwrap();
        let ks = KeyStore::from_pkcs12(&bytes, "p12 pw", Pkcs12ImportPolicy::Strict).unwrap();
        let (alias, kc) = ks.private_key_chain().unwrap();
        assert_eq!(alias, ALICE);
        assert_eq!(kc.local_key_id().as_ref(), done.key_id.as_bytes());
        let certs: Vec<&[u8]> = kc.certs().iter().map(|c| c.as_der()).collect();
        assert_eq!(certs, [&leaf[..], &chain[0][..], &chain[1][..]]);
        assert_eq!(
            key_id_of_bytes(kc.key().as_der(), None).unwrap().key_id,
            done.key_id
        );
        assert!(KeyStore::from_pkcs12(&bytes, "p12 pX", Pkcs12ImportPolicy::Strict).is_err());
        // In the file itself: leaf (paired by localKeyId), issuer, root.
        let bags = Pkcs12Archive::from_pkcs12(&bytes, "p12 pw").unwrap();
        let order: Vec<&[u8]> = bags.certs.iter().map(|b| b.cert.as_der()).collect();
        assert_eq!(order, [&leaf[..], &chain[0][..], &chain[1][..]]);
        assert_eq!(
            bags.certs[0].local_key_id.as_deref(),
            Some(done.key_id.as_bytes())
        );
        assert_eq!(bags.keys[0].friendly_name.as_deref(), Some(ALICE));
        // No temporary file is left beside it.
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            names.iter().all(|n| !n.to_string_lossy().starts_with('.')),
            "{names:?}"
        );
    }
    // An earlier identity by serial.
    let out = tmp.path().join("first.p12");
    let done = export_p12(&store, &opts(&out, Some(first.as_str()), false)).unwrap();
    assert_eq!(done.serial, first);
    let ks = KeyStore::from_pkcs12(
        &fs::read(&out).unwrap(),
        "p12 pw",
        Pkcs12ImportPolicy::Strict,
    )
    .unwrap();
    assert_eq!(
        ks.private_key_chain().unwrap().1.certs()[0].as_der(),
        &first_leaf[..]
    );
}

#[test]
fn failures_leave_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("s")).unwrap();
    record(&store, "01aa", b"store pass");
    let out = tmp.path().join("x.p12");
    let fails = |o: ExportOptions<'_>, expect: &str| {
        let e = export_p12(&store, &o).unwrap_err().to_string();
        assert!(e.contains(expect), "{e}");
        assert!(!out.exists());
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "only the store is there"
        );
    };
    fails(opts(&out, Some("77"), false), "holds no serial 77");
    fails(
        ExportOptions {
            address: "bob@example.com",
            ..opts(&out, None, false)
        },
        "no identity for bob@example.com",
    );
    fails(
        ExportOptions {
            passphrase: Some(b"wrong"),
            ..opts(&out, None, false)
        },
        "wrong passphrase",
    );
    fails(
        ExportOptions {
            passphrase: None,
            ..opts(&out, None, false)
        },
        "the key is encrypted",
    );
    fails(
        ExportOptions {
            password: "",
            ..opts(&out, None, false)
        },
        "empty PKCS#12 password",
    );
    let nowhere = tmp.path().join("no/such/dir/x.p12");
    let e = export_p12(&store, &opts(&nowhere, None, false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no such file or directory"), "{e}");

    // An existing file is refused and kept as it was.
    fs::write(&out, "mine").unwrap();
    let e = export_p12(&store, &opts(&out, None, false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(fs::read_to_string(&out).unwrap(), "mine");
    // Also when it appears between the check and the write.
    let e = write_new(&out, b"new").unwrap_err().to_string();
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(fs::read_to_string(&out).unwrap(), "mine");
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 2);
}
