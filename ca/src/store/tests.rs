use super::*;

fn cert(account: &str, not_after: i64) -> NewCert {
    NewCert {
        serial: Serial::random(),
        account: Address::parse(account).unwrap(),
        key_id: KeyId::of_spki(Serial::random().as_str().as_bytes()),
        not_before: 0,
        not_after,
        der: vec![1, 2, 3],
    }
}

#[test]
fn the_database_forbids_two_valid_identities() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("ca.sqlite")).unwrap();
    let a = cert("a@example.org", 1000);
    let b = cert("a@example.org", 1000);
    assert!(store
        .insert_superseding_blocking(a.clone(), 10)
        .unwrap()
        .is_empty());
    let revoked = store.insert_superseding_blocking(b.clone(), 20).unwrap();
    assert_eq!(revoked, vec![a.serial.clone()]);
    // A raw insert that bypasses the superseding logic is refused.
    let c = cert("a@example.org", 1000);
    let err = store.db.write_blocking(move |conn| -> Result<(), StoreError> {
        conn.execute(
            "INSERT INTO certificates (serial, account, key_id, not_before, not_after, issued_at, der, active)
             VALUES (?1, 'a@example.org', 'k', 0, 1000, 30, x'00', 1)",
            [c.serial.as_str()],
        )?;
        Ok(())
    });
    assert!(err.is_err());
    let rows = store
        .list_blocking(Some(&Address::parse("a@example.org").unwrap()), None, 30)
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].serial, b.serial);
    assert_eq!(rows[0].status(30), CertStatus::Valid);
    assert_eq!(rows[1].reason, Some(RevocationReason::Superseded));
    assert_eq!(store.crl_state_blocking().unwrap().revocations, 1);
    // Revoking twice: the second says so.
    let out = store
        .revoke_blocking(b.serial.clone(), RevocationReason::KeyCompromise, 40)
        .unwrap();
    assert_eq!(out, RevokeOutcome::Revoked { at: 40 });
    let out = store
        .revoke_blocking(b.serial.clone(), RevocationReason::KeyCompromise, 41)
        .unwrap();
    assert_eq!(out, RevokeOutcome::AlreadyRevoked);
    let entries = store.crl_entries_blocking(None).unwrap();
    let listed: Vec<(Serial, i64, RevocationReason)> = entries
        .iter()
        .map(|e| (e.serial.clone(), e.revoked_at, e.reason))
        .collect();
    assert_eq!(
        listed,
        vec![
            (a.serial.clone(), 20, RevocationReason::Superseded),
            (b.serial.clone(), 40, RevocationReason::KeyCompromise),
        ]
    );
    assert_eq!(store.crl_entries_blocking(Some(1000)).unwrap().len(), 0);
}

#[test]
fn stored_serials_decode_to_their_bytes() {
    let mut buf = [0u8; 32];
    for _ in 0..100 {
        let s = Serial::random();
        assert_eq!(
            decode_serial(s.as_str().as_bytes(), &mut buf).unwrap(),
            s.to_bytes().as_slice()
        );
    }
    for bad in ["", "a", "0G", "AB", "0x12", &"00".repeat(33)] {
        assert!(decode_serial(bad.as_bytes(), &mut buf).is_none(), "{bad}");
    }
}

#[test]
fn crl_numbers_and_this_updates_strictly_increase() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("ca.sqlite")).unwrap();
    let a = store.next_crl_blocking((100, 160), 100, 0).unwrap();
    let b = store.next_crl_blocking((150, 210), 100, 0).unwrap();
    assert_eq!(
        (a.number, a.this_update, a.next_update, a.prev_this_update),
        (1, 100, 200, None)
    );
    assert_eq!(
        (b.number, b.this_update, b.prev_this_update),
        (2, 150, Some(100))
    );
    // Signed in the same second: thisUpdate moves on by one second.
    let c = store.next_crl_blocking((150, 210), 100, 0).unwrap();
    assert_eq!((c.number, c.this_update, c.next_update), (3, 151, 251));
    // ...but never later than the present.
    let mut last = c;
    for _ in 0..100 {
        last = store.next_crl_blocking((150, 210), 100, 0).unwrap();
    }
    assert_eq!(last.this_update, 210);
    drop(store);
    let store = Store::open(&dir.path().join("ca.sqlite")).unwrap();
    assert_eq!(
        store.next_crl_blocking((160, 220), 100, 0).unwrap().number,
        104
    );
}

#[test]
fn a_key_compromise_reported_late_changes_the_reason_and_spreads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("ca.sqlite")).unwrap();
    let kc = RevocationReason::KeyCompromise;
    let a = cert("a@example.org", 1000);
    let b = cert("a@example.org", 1000);
    // Another account's certificate for a's key.
    let mut other = cert("o@example.org", 1000);
    other.key_id = a.key_id.clone();
    store.insert_superseding_blocking(a.clone(), 10).unwrap();
    store
        .insert_superseding_blocking(other.clone(), 11)
        .unwrap();
    store.insert_superseding_blocking(b.clone(), 20).unwrap();
    let superseded = store.get_blocking(&a.serial).unwrap().unwrap();
    assert_eq!(superseded.reason, Some(RevocationReason::Superseded));
    let before = store.crl_state_blocking().unwrap().revocations;
    assert!(matches!(
        store.revoke_blocking(a.serial.clone(), kc, 30).unwrap(),
        RevokeOutcome::Revoked { at: 20 }
    ));
    let row = store.get_blocking(&a.serial).unwrap().unwrap();
    assert_eq!((row.revoked_at, row.reason), (Some(20), Some(kc)));
    let o = store.get_blocking(&other.serial).unwrap().unwrap();
    assert_eq!((o.revoked_at, o.reason), (Some(30), Some(kc)));
    assert_eq!(store.crl_state_blocking().unwrap().revocations, before + 2);
    // Once keyCompromise, it stays so; b's own key is untouched.
    assert!(matches!(
        store.revoke_blocking(a.serial.clone(), kc, 40).unwrap(),
        RevokeOutcome::AlreadyRevoked
    ));
    assert!(store
        .get_blocking(&b.serial)
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
}
