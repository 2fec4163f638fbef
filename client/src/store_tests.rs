use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::keys::{KeyType, NewKey};

fn record(
    store: &Store,
    addr: &Address,
    serial: &str,
    revoked: &[Serial],
    pass: Option<&[u8]>,
) -> (StoredIdentity, NewKey) {
    let key = NewKey::generate(KeyType::P256).unwrap();
    let serial: Serial = serial.parse().unwrap();
    let der = key.pkcs8_der();
    let new = NewIdentity {
        serial: &serial,
        key_id: &key.key_id,
        key_type: "P-256",
        ca_url: "http://127.0.0.1:7700",
        issuer: "CN=Test CA",
        not_before: "2026-01-01T00:00:00Z",
        not_after: "2099-01-01T00:00:00Z",
        certificate_pem: "cert",
        chain_pem: "chain",
        key_pkcs8: &der,
        revoked,
    };
    (store.record_new(addr, &new, pass).unwrap(), key)
}

#[test]
fn new_identities_supersede_old_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("s")).unwrap();
    let addr = Address::parse("a/b@example.com").unwrap();
    assert!(store.account(&addr).unwrap().identities.is_empty());

    let (first, key1) = record(&store, &addr, "01aa", &[], None);
    assert_eq!(first.status, IdentityStatus::Current);
    assert!(first.is_valid_now());
    assert!(first.dir.starts_with("a%2Fb@example.com/"));
    let (second, _) = record(
        &store,
        &addr,
        "02bb",
        std::slice::from_ref(&first.serial),
        None,
    );

    let entry = store.account(&addr).unwrap();
    assert_eq!(entry.identities.len(), 2);
    assert_eq!(entry.current().unwrap().serial, second.serial);
    let old = &entry.identities[0];
    assert_eq!(old.status, IdentityStatus::Superseded);
    assert_eq!(old.reason, Some(RevocationReason::Superseded));
    assert!(old.revoked_at.is_some());
    assert!(!old.is_valid_now());

    // Files and modes.
    let dir = store.path_of(old);
    let mode = fs::metadata(dir.join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(store.certificate_pem(old).unwrap(), "cert");
    assert_eq!(store.chain_pem(old).unwrap(), "chain");
    assert_eq!(*store.key_pkcs8(old, None).unwrap(), *key1.pkcs8_der());
    assert_eq!(store.addresses().unwrap(), vec![addr.clone()]);

    // Explicit revocation and publication.
    assert!(store
        .mark_revoked(
            &addr,
            &second.serial,
            RevocationReason::KeyCompromise,
            "2026-02-02T00:00:00Z"
        )
        .unwrap());
    assert!(store
        .mark_published(&addr, &first.serial, "http://mta")
        .unwrap());
    let entry = store.account(&addr).unwrap();
    assert!(entry.current().is_none());
    assert_eq!(entry.identities[1].status, IdentityStatus::Revoked);
    assert_eq!(
        entry.identities[0].published_at.as_deref(),
        Some("http://mta")
    );
    let unknown: Serial = "ff".parse().unwrap();
    assert!(!store.mark_published(&addr, &unknown, "x").unwrap());
}

#[test]
fn keys_are_encrypted_with_a_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let addr = Address::parse("carol@example.net").unwrap();
    let (id, key) = record(&store, &addr, "0c", &[], Some(b"pass"));
    assert!(id.key_encrypted);
    let text = fs::read_to_string(store.path_of(&id).join("key.pem")).unwrap();
    assert!(text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    assert!(store.key_pkcs8(&id, None).is_err());
    assert!(store.key_pkcs8(&id, Some(b"nope")).is_err());
    assert_eq!(
        *store.key_pkcs8(&id, Some(b"pass")).unwrap(),
        *key.pkcs8_der()
    );
}

#[test]
fn a_damaged_index_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    fs::write(tmp.path().join("index.json"), "{not json").unwrap();
    let addr = Address::parse("d@example.net").unwrap();
    let e = store.account(&addr).unwrap_err().to_string();
    assert!(e.contains("damaged"), "{e}");
}
