//! The store conformance suite: every test is a function over a fresh
//! [`Store`], run unchanged on SQLite (a temp dir) and on PostgreSQL (a
//! fresh database on the cluster named by `MAILID_TEST_PG_URL`; the
//! PostgreSQL runs fail, not skip, when it is unset).

use super::rules::NANOS;
use super::*;

/// A fresh SQLite store and what keeps it alive.
fn sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("ca.sqlite"), OpenMode::Create).unwrap();
    (store, dir)
}

/// A fresh PostgreSQL store in a new database on the cluster of
/// `MAILID_TEST_PG_URL` (a missing variable fails the test).
fn pg_store() -> Store {
    let url = mailid_shared::pg::testing::fresh_database("capg_store");
    Store::open_postgres(&url, OpenMode::Create).unwrap()
}

/// Defines `on_sqlite::NAME` and `on_postgres::NAME` tests running `NAME`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[test]
                fn $name() {
                    let (store, _dir) = super::sqlite_store();
                    super::$name(&store);
                }
            )*
        }
        mod on_postgres {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::pg_store());
                }
            )*
        }
    };
}

conformance!(
    the_database_forbids_two_valid_identities,
    crl_numbers_and_this_updates_strictly_increase,
    crl_entries_dated_after_this_update_wait_for_the_next_crl,
    a_key_compromise_reported_late_changes_the_reason_and_spreads,
    concurrent_enrollments_leave_one_valid_identity,
);

/// Inserts an active certificate for `a@example.org` past the superseding
/// logic, as a bug would; the database itself must refuse it.
fn raw_insert(store: &Store, serial: &Serial) -> Result<(), StoreError> {
    let serial = serial.as_str().to_string();
    match &store.backend {
        Backends::Sqlite(b) => b.db.write_blocking(move |conn| -> Result<(), StoreError> {
            conn.execute(
                "INSERT INTO certificates (serial, account, key_id, not_before, not_after, issued_at, der, active)
                 VALUES (?1, 'a@example.org', 'k', 0, 1000, 30, x'00', 1)",
                [serial],
            )?;
            Ok(())
        }),
        Backends::Pg(b) => b.db.block_on(async move {
            b.db.client()
                .await?
                .execute(
                    "INSERT INTO certificates (serial, account, key_id, not_before, not_after, issued_at, der, active)
                     VALUES ($1, 'a@example.org', 'k', 0, 1000, 30, '\\x00', TRUE)",
                    &[&serial],
                )
                .await?;
            Ok(())
        }),
    }
}

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

fn the_database_forbids_two_valid_identities(store: &Store) {
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
    let err = raw_insert(store, &c.serial).unwrap_err().to_string();
    assert!(
        err.contains("UNIQUE constraint failed: certificates.account")
            || err.contains("\"one_valid_identity\""),
        "{err}"
    );
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
    let entries = store.crl_entries_blocking(None, i64::MAX).unwrap();
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
    assert_eq!(
        store
            .crl_entries_blocking(Some(1000), i64::MAX)
            .unwrap()
            .len(),
        0
    );
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

const NS: i64 = NANOS;

fn crl_numbers_and_this_updates_strictly_increase(store: &Store) {
    // Numbers are the signing time in nanoseconds.
    let a = store.next_crl_blocking(160 * NS, (60, 100), 0).unwrap();
    let b = store.next_crl_blocking(210 * NS, (60, 100), 0).unwrap();
    assert_eq!(
        (a.number, a.this_update, a.next_update, a.prev_this_update),
        (160 * NS, 100, 200, None)
    );
    assert_eq!(
        (b.number, b.this_update, b.prev_this_update),
        (210 * NS, 150, Some(100))
    );
    // Signed in the same second: the number goes up by one and thisUpdate
    // moves on by one second...
    let c = store.next_crl_blocking(210 * NS, (60, 100), 0).unwrap();
    assert_eq!(
        (c.number, c.this_update, c.next_update),
        (210 * NS + 1, 151, 251)
    );
    // ...but never later than the present.
    let mut last = c;
    for _ in 0..100 {
        last = store.next_crl_blocking(210 * NS, (60, 100), 0).unwrap();
    }
    assert_eq!((last.number, last.this_update), (210 * NS + 101, 210));
    assert_eq!(
        store
            .next_crl_blocking(220 * NS, (60, 100), 0)
            .unwrap()
            .number,
        220 * NS
    );
    // The clock went back: still one more than the last.
    assert_eq!(
        store
            .next_crl_blocking(60 * NS, (60, 100), 0)
            .unwrap()
            .number,
        220 * NS + 1
    );
    // A CRL on disk with a higher number (the database restored from an
    // older backup): the next is above it.
    assert_eq!(
        store
            .next_crl_blocking(220 * NS, (60, 100), 900 * NS)
            .unwrap()
            .number,
        900 * NS + 1
    );
    assert_eq!(store.crl_state_blocking().unwrap().number, 900 * NS + 1);
}

#[test]
fn crl_number_is_time_based_and_above_the_last_and_the_file() {
    assert_eq!(rules::crl_number(5, 0, 100 * NS), 100 * NS);
    assert_eq!(rules::crl_number(200 * NS, 0, 100 * NS), 200 * NS + 1);
    assert_eq!(rules::crl_number(5, 300 * NS, 100 * NS), 300 * NS + 1);
    // Sub-second: two CRLs a millisecond apart get numbers that far apart.
    assert_eq!(
        rules::crl_number(100 * NS, 0, 100 * NS + 1_000_000),
        100 * NS + 1_000_000
    );
    // Nothing wraps.
    assert_eq!(rules::crl_number(i64::MAX, 0, 0), i64::MAX);
}

#[test]
fn this_update_is_not_before_the_newest_revocation() {
    use rules::this_update;
    // Backdated a minute when nothing newer is listed.
    assert_eq!(this_update(240, 300, None, Some(100)), 240);
    assert_eq!(this_update(240, 300, None, None), 240);
    // A revocation within the last minute pulls it forward.
    assert_eq!(this_update(240, 300, None, Some(290)), 290);
    assert_eq!(this_update(240, 300, Some(280), Some(290)), 290);
    // Still later than the previous CRL's ...
    assert_eq!(this_update(240, 300, Some(295), Some(290)), 296);
    // ... but never later than the present ...
    assert_eq!(this_update(240, 300, Some(300), None), 300);
    // ... which a revocation committed after `latest` was read has reached.
    assert_eq!(this_update(240, 300, None, Some(301)), 301);
}

fn crl_entries_dated_after_this_update_wait_for_the_next_crl(store: &Store) {
    let a = cert("a@example.org", 10_000);
    store.insert_superseding_blocking(a.clone(), 10).unwrap();
    store
        .revoke_blocking(a.serial.clone(), RevocationReason::Unspecified, 1_000)
        .unwrap();
    // Signed at 1_010: thisUpdate is the revocation's time, not 950.
    let n = store.next_crl_blocking(1_010 * NS, (60, 100), 0).unwrap();
    assert_eq!((n.this_update, n.covered), (1_000, 1));
    let listed = store.crl_entries_blocking(None, n.this_update).unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed.iter().all(|e| e.revoked_at <= n.this_update));
    // A revocation dated after a thisUpdate is left to the next CRL (it is
    // not covered, so that one is signed).
    let b = cert("b@example.org", 10_000);
    store.insert_superseding_blocking(b.clone(), 10).unwrap();
    store
        .revoke_blocking(b.serial.clone(), RevocationReason::Unspecified, 2_000)
        .unwrap();
    assert_eq!(store.crl_entries_blocking(None, 1_999).unwrap().len(), 1);
    assert_eq!(store.crl_state_blocking().unwrap().revocations, 2);
}

fn a_key_compromise_reported_late_changes_the_reason_and_spreads(store: &Store) {
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

/// 32 enrollments for one account at once: every one is stored, exactly
/// one is the valid identity, the other 31 are revoked as superseded.
fn concurrent_enrollments_leave_one_valid_identity(store: &Store) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let certs: Vec<NewCert> = (0..32).map(|_| cert("c@example.org", 10_000)).collect();
    rt.block_on(async {
        let tasks: Vec<_> = certs
            .iter()
            .cloned()
            .map(|c| {
                let store = store.clone();
                tokio::spawn(async move { store.insert_superseding(c, 100).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    });
    let rows = store
        .list_blocking(Some(&Address::parse("c@example.org").unwrap()), None, 200)
        .unwrap();
    assert_eq!(rows.len(), 32);
    for c in &certs {
        assert!(
            rows.iter().any(|r| r.serial == c.serial),
            "{} lost",
            c.serial
        );
    }
    let valid = rows
        .iter()
        .filter(|r| r.status(200) == CertStatus::Valid)
        .count();
    let superseded = rows
        .iter()
        .filter(|r| r.reason == Some(RevocationReason::Superseded))
        .count();
    assert_eq!((valid, superseded), (1, 31));
    assert_eq!(store.crl_state_blocking().unwrap().revocations, 31);
}
