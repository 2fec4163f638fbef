//! The store conformance suite: one set of checks written over `&Store`,
//! run unchanged on SQLite (a temp dir) and on PostgreSQL (a fresh
//! database on the cluster of `MAILID_TEST_PG_URL`; the PostgreSQL runs
//! fail, never skip, without it).

use std::sync::Arc;

use mailid_mta_auth::lockout::LockoutPolicy;
use mailid_mta_auth::store::{
    BackupPut, BackupWrite, CodeSnapshot, CrlRow, IdentityRow, KeyWrite, LockState, Store,
    StoreError,
};
use mailid_mta_auth::totp::TotpParams;
use mailid_mta_auth::validate::{self, Presented, Validation};
use mailid_shared::db::OpenMode;
use mailid_shared::protocol::ValidateReason;
use mailid_shared::timefmt::now_unix;
use mailid_shared::{Address, KeyId};
use zeroize::Zeroizing;

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn key(n: u8) -> KeyId {
    KeyId::of_spki(&[n; 32])
}

fn secret(n: u8) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(vec![n; 32])
}

/// A store on each backend, opened outside any runtime (PostgreSQL's open
/// is synchronous).
fn sqlite() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("mta-auth.sqlite"), OpenMode::Create).unwrap();
    (dir, store)
}

fn postgres(hint: &str) -> Store {
    let url = mailid_shared::pg::testing::fresh_database(&format!("mtapg{hint}"));
    Store::open_pg(&url, OpenMode::Create).unwrap()
}

fn run<F: std::future::Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Runs `suite` on SQLite and on PostgreSQL.
macro_rules! both {
    ($suite:ident) => {
        mod $suite {
            #[test]
            fn sqlite() {
                let (_dir, store) = super::sqlite();
                super::run(super::$suite(store));
            }
            #[test]
            fn postgres() {
                let store = super::postgres(stringify!($suite));
                super::run(super::$suite(store));
            }
        }
    };
}

both!(accounts);
both!(cas);
both!(codes);
both!(lockout_rows);
both!(concurrent_validations);
both!(identities);
both!(crls);
both!(backups);
both!(concurrent_backups);

async fn accounts(s: Store) {
    let (a, b) = (addr("b@example.org"), addr("a@example.org"));
    s.add_account(&a, "hash-a".into(), secret(1)).await.unwrap();
    s.add_account(&b, "hash-b".into(), secret(2)).await.unwrap();
    let dup = s.add_account(&a, "x".into(), secret(3)).await;
    assert!(matches!(dup, Err(StoreError::Exists(_))), "{dup:?}");
    assert!(s.is_enabled(&a).await.unwrap());
    assert!(!s.is_enabled(&addr("nobody@example.org")).await.unwrap());
    assert_eq!(
        s.login_info(&a).await.unwrap(),
        Some(("hash-a".to_string(), true))
    );
    assert_eq!(
        s.login_info(&addr("nobody@example.org")).await.unwrap(),
        None
    );
    let list = s.list_accounts().await.unwrap();
    let names: Vec<_> = list.iter().map(|r| r.address.to_string()).collect();
    assert_eq!(names, ["a@example.org", "b@example.org"]);
    assert!(list.iter().all(|r| r.enabled && r.locked_until.is_none()));

    s.set_enabled(&a, false).await.unwrap();
    assert!(!s.is_enabled(&a).await.unwrap());
    assert!(!s.login_info(&a).await.unwrap().unwrap().1);
    let list = s.list_accounts().await.unwrap();
    assert!(!list[1].enabled && list[0].enabled);
    s.set_enabled(&a, true).await.unwrap();
    assert!(s.is_enabled(&a).await.unwrap());
    let gone = addr("nobody@example.org");
    assert!(matches!(
        s.set_enabled(&gone, true).await,
        Err(StoreError::NotFound(_))
    ));

    s.set_password(&a, "hash-a2".into()).await.unwrap();
    assert_eq!(s.login_info(&a).await.unwrap().unwrap().0, "hash-a2");
    assert!(matches!(
        s.set_password(&gone, "h".into()).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn cas(s: Store) {
    s.add_ca("ca-b", secret(1), None).await.unwrap();
    s.add_ca("ca-a", secret(2), Some(b"cert-a".to_vec()))
        .await
        .unwrap();
    assert!(matches!(
        s.add_ca("ca-a", secret(3), None).await,
        Err(StoreError::Exists(_))
    ));
    let list = s.list_cas().await.unwrap();
    let got: Vec<_> = list
        .iter()
        .map(|c| (c.name.as_str(), c.trusts_certificate))
        .collect();
    assert_eq!(got, [("ca-a", true), ("ca-b", false)]);
    assert_eq!(
        s.ca_secret("ca-b").await.unwrap().unwrap().as_slice(),
        &[1; 32]
    );
    assert!(s.ca_secret("ca-z").await.unwrap().is_none());
    assert_eq!(
        s.trusted_certs().await.unwrap(),
        [("ca-a".to_string(), b"cert-a".to_vec())]
    );

    // Removing a CA withdraws the identities chaining to it, and only them.
    let (x, y) = (addr("x@example.org"), addr("y@example.org"));
    for a in [&x, &y] {
        s.add_account(a, "h".into(), secret(4)).await.unwrap();
    }
    s.add_ca("ca-c", secret(5), Some(b"cert-c".to_vec()))
        .await
        .unwrap();
    s.put_identity(identity(&x, "ca-a", "01")).await.unwrap();
    s.put_identity(identity(&y, "ca-c", "02")).await.unwrap();
    assert_eq!(s.remove_ca("ca-a").await.unwrap(), 1);
    assert!(s.ca_secret("ca-a").await.unwrap().is_none());
    assert!(s.identity(&x).await.unwrap().is_none());
    assert!(s.identity(&y).await.unwrap().is_some());
    assert_eq!(s.trusted_certs().await.unwrap().len(), 1);
    assert!(matches!(
        s.remove_ca("ca-a").await,
        Err(StoreError::NotFound(_))
    ));
    let names: Vec<_> = s
        .list_cas()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["ca-b", "ca-c"]);
}

const CA: &str = "ca-1";

/// A real validation through `validate` (the shared decision).
async fn check(s: &Store, a: &Address, k: &KeyId, code: &str) -> Validation {
    let presented = Presented {
        ca_secret: secret(9),
        key_id: k.clone(),
        code: Zeroizing::new(code.to_string()),
        now: now_unix(),
    };
    validate::validate(
        s,
        CA,
        a,
        presented,
        TotpParams::default(),
        LockoutPolicy::default(),
    )
    .await
    .unwrap()
}

async fn codes(s: Store) {
    let a = addr("holder@example.org");
    let k = key(1);
    let params = TotpParams::default();
    // Unknown and disabled accounts get no code.
    assert!(matches!(
        validate::issue(&s, &a, &k, params, now_unix()).await,
        Err(StoreError::NotFound(_))
    ));
    s.add_account(&a, "h".into(), secret(1)).await.unwrap();
    s.add_ca(CA, secret(9), None).await.unwrap();
    s.set_enabled(&a, false).await.unwrap();
    assert!(matches!(
        validate::issue(&s, &a, &k, params, now_unix()).await,
        Err(StoreError::NotFound(_))
    ));
    s.set_enabled(&a, true).await.unwrap();

    let issued = validate::issue(&s, &a, &k, params, now_unix())
        .await
        .unwrap();
    let row = s.issue_code(&a, &k, now_unix()).await.unwrap();
    assert_eq!(row.generation, 0);
    assert_eq!(row.secret.as_slice(), &[1; 32]);
    assert_eq!(check(&s, &a, &k, &issued.code).await, Validation::Valid);
    // Used once: the same code again fails, the generation moved on.
    assert!(matches!(
        check(&s, &a, &k, &issued.code).await,
        Validation::Rejected {
            reason: ValidateReason::Replayed,
            ..
        }
    ));
    assert_eq!(
        s.issue_code(&a, &k, now_unix()).await.unwrap().generation,
        1
    );
    // A code of another key is no code for this one.
    let k2 = key(2);
    let other = validate::issue(&s, &a, &k2, params, now_unix())
        .await
        .unwrap();
    assert!(matches!(
        check(&s, &a, &k, &other.code).await,
        Validation::Rejected {
            reason: ValidateReason::KeyMismatch,
            ..
        }
    ));
    assert_eq!(check(&s, &a, &k2, &other.code).await, Validation::Valid);
    // A removed CA's validations are refused.
    s.remove_ca(CA).await.unwrap();
    let next = validate::issue(&s, &a, &k, params, now_unix())
        .await
        .unwrap();
    assert_eq!(check(&s, &a, &k, &next.code).await, Validation::CaGone);
}

/// What the snapshot of (account, key) holds, read through a decision
/// that writes nothing and asks for the other keys (the store loads them
/// only when asked).
async fn snapshot_of(s: &Store, a: &Address, k: &KeyId, since: i64) -> (Option<LockState>, usize) {
    s.validate_code(CA, a, k, since, |snap: CodeSnapshot| {
        let others = snap.others?.len();
        Some(((snap.target.map(|t| t.lock), others), None))
    })
    .await
    .unwrap()
}

async fn lockout_rows(s: Store) {
    let a = addr("holder@example.org");
    let (k1, k2) = (key(1), key(2));
    s.add_account(&a, "h".into(), secret(1)).await.unwrap();
    s.add_ca(CA, secret(9), None).await.unwrap();
    let now = now_unix();
    s.issue_code(&a, &k1, now).await.unwrap();
    s.issue_code(&a, &k2, now - 600).await.unwrap();
    let lock = LockState {
        failures: 0,
        lockouts: 3,
        locked_until: now + 120,
    };
    let wrote = s
        .validate_code(CA, &a, &k1, now - 60, move |_snap| {
            Some(((), Some(KeyWrite::SaveLock(lock))))
        })
        .await;
    assert!(wrote.is_ok());
    // Stored per (account, key) and read back; the other key is untouched
    // and, issued before `live_since`, not among the others.
    assert_eq!(snapshot_of(&s, &a, &k1, now - 60).await, (Some(lock), 0));
    assert_eq!(
        snapshot_of(&s, &a, &k2, now - 60).await,
        (Some(LockState::default()), 1)
    );
    assert_eq!(snapshot_of(&s, &a, &k2, now - 900).await.1, 1);
    let list = s.list_accounts().await.unwrap();
    assert_eq!(list[0].locked_until, Some(now + 120));
    // A real validation of the locked key is refused as locked.
    let code = validate::issue(&s, &a, &k1, TotpParams::default(), now_unix())
        .await
        .unwrap()
        .code;
    assert!(matches!(
        check(&s, &a, &k1, &code).await,
        Validation::Rejected {
            reason: ValidateReason::Locked,
            ..
        }
    ));
    // Consuming resets the lock.
    s.validate_code(CA, &a, &k1, now - 60, |_snap| {
        Some(((), Some(KeyWrite::ConsumeCode)))
    })
    .await
    .unwrap();
    assert_eq!(
        snapshot_of(&s, &a, &k1, now - 60).await.0,
        Some(LockState::default())
    );
    assert_eq!(s.list_accounts().await.unwrap()[0].locked_until, None);
}

/// Many tasks validate one code at the same moment, round after round:
/// exactly one success each time.
async fn concurrent_validations(s: Store) {
    const TASKS: usize = 16;
    let a = addr("holder@example.org");
    s.add_account(&a, "h".into(), secret(1)).await.unwrap();
    s.add_ca(CA, secret(9), None).await.unwrap();
    // Open the pool's connections first, so the validations overlap.
    let warm: Vec<_> = (0..TASKS)
        .map(|_| {
            let (s, a) = (s.clone(), a.clone());
            tokio::spawn(async move { s.is_enabled(&a).await.unwrap() })
        })
        .collect();
    for w in warm {
        assert!(w.await.unwrap());
    }
    for round in 0..20u8 {
        let k = key(round);
        let code = validate::issue(&s, &a, &k, TotpParams::default(), now_unix())
            .await
            .unwrap()
            .code;
        let code = Arc::new(code.to_string());
        let gate = Arc::new(tokio::sync::Barrier::new(TASKS));
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let (s, a, k, code, gate) =
                (s.clone(), a.clone(), k.clone(), code.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                gate.wait().await;
                check(&s, &a, &k, &code).await
            }));
        }
        let mut valid = 0;
        for t in tasks {
            match t.await.unwrap() {
                Validation::Valid => valid += 1,
                Validation::Rejected {
                    reason: ValidateReason::Replayed,
                    ..
                } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(valid, 1, "round {round}");
    }
}

fn identity(a: &Address, ca: &str, serial: &str) -> IdentityRow {
    IdentityRow {
        address: a.clone(),
        certificate: format!("cert-{serial}").into_bytes(),
        chain: format!("chain-{serial}"),
        key_id: key(7).as_bytes().to_vec(),
        serial: serial.to_string(),
        not_after: 2_000_000_000,
        ca_name: ca.to_string(),
    }
}

async fn identities(s: Store) {
    let a = addr("holder@example.org");
    s.add_account(&a, "h".into(), secret(1)).await.unwrap();
    s.add_ca("ca-a", secret(2), Some(b"cert-a".to_vec()))
        .await
        .unwrap();
    s.add_ca("ca-plain", secret(3), None).await.unwrap();
    assert!(s.identity(&a).await.unwrap().is_none());
    s.put_identity(identity(&a, "ca-a", "01")).await.unwrap();
    assert_eq!(
        s.identity(&a).await.unwrap(),
        Some(identity(&a, "ca-a", "01"))
    );
    // Replaced.
    s.put_identity(identity(&a, "ca-a", "02")).await.unwrap();
    assert_eq!(
        s.identity(&a).await.unwrap(),
        Some(identity(&a, "ca-a", "02"))
    );
    // Hidden while the account is disabled, served again once enabled.
    s.set_enabled(&a, false).await.unwrap();
    assert!(s.identity(&a).await.unwrap().is_none());
    s.set_enabled(&a, true).await.unwrap();
    assert!(s.identity(&a).await.unwrap().is_some());
    // A CA without a trusted certificate vouches for nothing.
    s.put_identity(identity(&a, "ca-plain", "03"))
        .await
        .unwrap();
    assert!(s.identity(&a).await.unwrap().is_none());
    // Hidden once the CA is removed.
    s.put_identity(identity(&a, "ca-a", "04")).await.unwrap();
    assert!(s.identity(&a).await.unwrap().is_some());
    s.remove_ca("ca-a").await.unwrap();
    assert!(s.identity(&a).await.unwrap().is_none());
}

async fn crls(s: Store) {
    let url = "http://ca.example/crl.der";
    assert!(s.crl(url).await.unwrap().is_none());
    let row = |n: u8, at: i64| CrlRow {
        der: vec![n; 4],
        this_update: at,
        next_update: Some(at + 3600),
    };
    s.put_crl(url, row(1, 1000)).await.unwrap();
    assert_eq!(s.crl(url).await.unwrap(), Some(row(1, 1000)));
    // An older one does not replace the newer.
    s.put_crl(url, row(2, 900)).await.unwrap();
    assert_eq!(s.crl(url).await.unwrap(), Some(row(1, 1000)));
    s.put_crl(url, row(3, 1100)).await.unwrap();
    assert_eq!(s.crl(url).await.unwrap(), Some(row(3, 1100)));
    let other = CrlRow {
        der: vec![9],
        this_update: 5,
        next_update: None,
    };
    s.put_crl("http://other.example/c", other.clone())
        .await
        .unwrap();
    assert_eq!(s.crl("http://other.example/c").await.unwrap(), Some(other));
    assert_eq!(s.crl(url).await.unwrap(), Some(row(3, 1100)));
}

/// A backup of only a ciphertext text.
fn bw(text: &str) -> BackupWrite {
    BackupWrite {
        encrypted_key: text.to_string(),
        certificate: None,
        chain: None,
        ca_url: None,
    }
}

/// The stored key IDs of an account, in listing order.
async fn backup_keys(s: &Store, a: &Address) -> Vec<Vec<u8>> {
    let rows = s.backups(a).await.unwrap();
    rows.into_iter().map(|r| r.key_id).collect()
}

async fn backups(s: Store) {
    let (a, b) = (addr("holder@example.org"), addr("other@example.org"));
    for who in [&a, &b] {
        s.add_account(who, "h".into(), secret(1)).await.unwrap();
    }
    assert!(s.backups(&a).await.unwrap().is_empty());
    let put = |who: &Address, n: u8, text: &str| {
        let (s, who, text) = (s.clone(), who.clone(), text.to_string());
        async move { s.put_backup(&who, &key(n), bw(&text), 3).await }
    };
    assert!(matches!(put(&a, 1, "one").await, Ok(BackupPut::Stored(_))));
    assert!(matches!(put(&a, 2, "two").await, Ok(BackupPut::Stored(_))));
    assert!(matches!(
        put(&b, 1, "b-one").await,
        Ok(BackupPut::Stored(_))
    ));
    // Replaced in place: the same key ID keeps one row.
    assert!(matches!(put(&a, 1, "one'").await, Ok(BackupPut::Stored(_))));
    let rows = s.backups(&a).await.unwrap();
    assert_eq!(rows.len(), 2);
    let one = rows.iter().find(|r| r.key_id == key(1).as_bytes()).unwrap();
    assert_eq!(one.encrypted_key, "one'");
    assert_eq!(
        (&one.certificate, &one.chain, &one.ca_url),
        (&None, &None, &None)
    );
    // The public parts are kept, and replaced with the rest.
    let full = BackupWrite {
        encrypted_key: "two'".into(),
        certificate: Some("cert".into()),
        chain: Some("chain".into()),
        ca_url: Some("https://ca.example".into()),
    };
    s.put_backup(&a, &key(2), full, 3).await.unwrap();
    let rows = s.backups(&a).await.unwrap();
    let two = rows.iter().find(|r| r.key_id == key(2).as_bytes()).unwrap();
    assert_eq!(two.certificate.as_deref(), Some("cert"));
    assert_eq!(two.chain.as_deref(), Some("chain"));
    assert_eq!(two.ca_url.as_deref(), Some("https://ca.example"));
    // Ordered by stored_at, then key ID.
    let mut sorted = rows.clone();
    sorted.sort_by(|x, y| (x.stored_at, &x.key_id).cmp(&(y.stored_at, &y.key_id)));
    assert_eq!(rows, sorted);
    // The limit counts other keys: a third fits, a fourth does not, a
    // replacement still does.
    assert!(matches!(
        put(&a, 3, "three").await,
        Ok(BackupPut::Stored(_))
    ));
    assert_eq!(put(&a, 4, "four").await.unwrap(), BackupPut::Full);
    assert!(matches!(put(&a, 3, "3'").await, Ok(BackupPut::Stored(_))));
    assert_eq!(backup_keys(&s, &a).await.len(), 3);
    // Accounts are apart.
    assert_eq!(backup_keys(&s, &b).await, vec![key(1).as_bytes().to_vec()]);
    assert!(matches!(
        s.delete_backup(&b, &key(2)).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(backup_keys(&s, &a).await.len(), 3);
    s.delete_backup(&a, &key(2)).await.unwrap();
    assert!(matches!(
        s.delete_backup(&a, &key(2)).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(backup_keys(&s, &a).await.len(), 2);
    // Unknown or disabled accounts store nothing; disabling keeps backups.
    let nobody = addr("nobody@example.org");
    assert!(matches!(
        put(&nobody, 1, "x").await,
        Err(StoreError::NotFound(_))
    ));
    s.set_enabled(&a, false).await.unwrap();
    assert!(matches!(
        put(&a, 5, "x").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(backup_keys(&s, &a).await.len(), 2);
}

/// Many tasks upload backups of different keys of one account at once,
/// round after round: the account never holds more than the limit.
async fn concurrent_backups(s: Store) {
    const TASKS: u8 = 12;
    const MAX: usize = 5;
    let a = addr("holder@example.org");
    s.add_account(&a, "h".into(), secret(1)).await.unwrap();
    for round in 0..4u8 {
        let gate = Arc::new(tokio::sync::Barrier::new(TASKS as usize));
        let mut tasks = Vec::new();
        for n in 0..TASKS {
            let (s, a, gate) = (s.clone(), a.clone(), gate.clone());
            let k = key(round * TASKS + n);
            tasks.push(tokio::spawn(async move {
                gate.wait().await;
                s.put_backup(&a, &k, bw("pem"), MAX).await.unwrap()
            }));
        }
        let mut stored = 0;
        for t in tasks {
            if let BackupPut::Stored(_) = t.await.unwrap() {
                stored += 1;
            }
        }
        assert_eq!(stored, MAX, "round {round}");
        let keys = backup_keys(&s, &a).await;
        assert_eq!(keys.len(), MAX, "round {round}");
        for k in keys {
            s.delete_backup(&a, &KeyId::from_bytes(&k).unwrap())
                .await
                .unwrap();
        }
    }
}
