//! `db migrate --to URL` over the real binary: a populated SQLite data dir
//! (accounts, a disabled one, a lockout, a used code, a registered CA, a
//! published identity, a stored CRL, key backups) moved to PostgreSQL keeps everything
//! and is served from there; a non-empty target is refused with one line
//! and nothing changed. Needs the cluster of `MAILID_TEST_PG_URL`.

mod common;

use common::backup::{encrypted_key, list_backups, put_backup};
use common::pki::TestCa;
use common::*;
use mailid_shared::protocol::ValidateReason;
use mailid_tests::pg;

const PW: &str = "migrate-test-pw";
const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";
const CAROL: &str = "carol@example.org";

async fn lookup(c: &reqwest::Client, url: &str, who: &str) -> u16 {
    let r = c.get(format!("{url}/v1/identity/{who}")).send().await;
    r.unwrap().status().as_u16()
}

fn count(db: &pg::TestDatabase, table: &str) -> String {
    db.psql(&format!("SELECT count(*) FROM {table}")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_populated_sqlite_data_dir_moves_to_postgresql_whole() {
    let dir = sqlite_data_dir();
    let d = dir.path();
    for who in [ALICE, BOB, CAROL] {
        add_account(d, who, PW);
    }
    mta_ok(d, &["account", "disable", CAROL], None);
    let ca = TestCa::new("Migrate CA");
    let pem = d.join("ca.pem");
    std::fs::write(&pem, &ca.pem).unwrap();
    let cred = mta_ok(
        d,
        &["ca", "add", "ca1", "--trust-cert", pem.to_str().unwrap()],
        None,
    )
    .trim()
    .to_string();
    let crl_url = empty_crl_server(&ca).await;

    let srv = Server::start(d, &[]);
    let c = client();
    // A used code (BOB), a lockout (ALICE's key), a published identity
    // whose lookup stores the CA's CRL.
    let (kb, ka) = (key_id(), key_id());
    let used = totp(&c, &srv.url, BOB, PW, &kb).await;
    assert!(
        validate(&c, &srv.url, "ca1", &cred, BOB, &used.totp, &kb)
            .await
            .valid
    );
    let live = totp(&c, &srv.url, ALICE, PW, &ka).await;
    for _ in 0..5 {
        let r = validate(&c, &srv.url, "ca1", &cred, ALICE, &wrong(&live.totp), &ka).await;
        assert_eq!(r.reason, Some(ValidateReason::Invalid));
    }
    let leaf = ca.valid_identity(ALICE, 7, &crl_url);
    let up = c
        .put(format!("{}/v1/identity", srv.url))
        .basic_auth(ALICE, Some(PW))
        .json(&serde_json::json!({ "certificate": leaf.cert_pem }))
        .send()
        .await
        .unwrap();
    assert_eq!(up.status().as_u16(), 200);
    assert_eq!(lookup(&c, &srv.url, ALICE).await, 200);
    // Key backups: two of ALICE's, one of BOB's.
    for who in [ALICE, ALICE, BOB] {
        let (k, text) = encrypted_key();
        put_backup(&c, &srv.url, who, PW, &k, &text).await;
    }
    let alice_backups = serde_json::to_value(list_backups(&c, &srv.url, ALICE, PW).await).unwrap();
    let bob_backups = serde_json::to_value(list_backups(&c, &srv.url, BOB, PW).await).unwrap();
    srv.stop();

    // A target holding rows is refused: one line, neither it nor
    // config.json changes.
    let full = pg::fresh_database("mtapg_full");
    let other = tempfile::tempdir().unwrap();
    mta_ok(other.path(), &["init", "--database", full.url()], None);
    add_account(other.path(), "someone@example.org", PW);
    let config_before = std::fs::read(d.join("config.json")).unwrap();
    let out = mta(d, &["db", "migrate", "--to", full.url()], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("not empty (table accounts holds rows)"),
        "{err}"
    );
    assert_eq!(count(&full, "accounts"), "1");
    assert_eq!(count(&full, "cas"), "0");
    assert_eq!(std::fs::read(d.join("config.json")).unwrap(), config_before);

    // Into an empty database: everything, counted.
    let target = pg::fresh_database("mtapg_target");
    let out = mta_ok(d, &["db", "migrate", "--to", target.url()], None);
    assert!(
        out.starts_with(
            "copied 3 accounts, 1 cas, 2 totp_keys, 1 identities, 1 crls, 3 backups, \
             1 log_config, 1 log_heads, 1 log_entries, 1 log_hashes, 1 log_state, "
        ),
        "{out}"
    );
    for (table, n) in [
        ("accounts", "3"),
        ("cas", "1"),
        ("totp_keys", "2"),
        ("identities", "1"),
        ("crls", "1"),
        ("backups", "3"),
        ("log_entries", "1"),
        ("log_heads", "1"),
    ] {
        assert_eq!(count(&target, table), n, "{table}");
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["database"], target.url());
    // A second run refuses: the data dir uses PostgreSQL now.
    let out = mta(d, &["db", "migrate", "--to", target.url()], None);
    assert_eq!(out.status.code(), Some(1));

    // Served from PostgreSQL (the SQLite file set aside to prove it).
    std::fs::rename(db_path(d), d.join("old.sqlite")).unwrap();
    let list = mta_ok(d, &["account", "list"], None);
    assert!(list.contains(&format!("{CAROL}\tdisabled")), "{list}");
    assert!(list.contains(&format!("{ALICE}\tlocked until")), "{list}");
    assert!(mta_ok(d, &["ca", "list"], None).starts_with("ca1\ttrusted-cert"));
    let srv = Server::start(d, &[]);
    assert_eq!(lookup(&c, &srv.url, ALICE).await, 200);
    // The backups, byte for byte.
    let moved = serde_json::to_value(list_backups(&c, &srv.url, ALICE, PW).await).unwrap();
    assert_eq!(moved, alice_backups);
    let moved = serde_json::to_value(list_backups(&c, &srv.url, BOB, PW).await).unwrap();
    assert_eq!(moved, bob_backups);
    // The lockout holds, even for the right code.
    let r = validate(&c, &srv.url, "ca1", &cred, ALICE, &live.totp, &ka).await;
    assert_eq!(r.reason, Some(ValidateReason::Locked), "{r:?}");
    // The used code stays used; a new one works once.
    let r = validate(&c, &srv.url, "ca1", &cred, BOB, &used.totp, &kb).await;
    assert!(!r.valid, "{r:?}");
    let fresh = totp(&c, &srv.url, BOB, PW, &kb).await;
    assert!(
        validate(&c, &srv.url, "ca1", &cred, BOB, &fresh.totp, &kb)
            .await
            .valid
    );
    // The disabled account stays disabled; passwords moved.
    let (s, _) = totp_raw(&c, &srv.url, CAROL, PW, &key_id()).await;
    assert_eq!(s, 401);
    let (s, _) = totp_raw(&c, &srv.url, ALICE, "wrong", &key_id()).await;
    assert_eq!(s, 401);
    srv.stop();
}
