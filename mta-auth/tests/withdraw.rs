//! Identities the provider no longer vouches for are not served: `ca
//! remove` withdraws the identities chaining to that CA (and says how
//! many), a lookup never serves one whose CA is not registered, and a
//! disabled account's identity is hidden until `account enable`.

mod common;

use common::pki::{Leaf, TestCa};
use common::*;

const PW: &str = "withdraw-test-pw";
const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";

/// Registers `ca` as `name` with its certificate trusted.
fn trust(dir: &std::path::Path, name: &str, ca: &TestCa) {
    let file = dir.join(format!("{name}.pem"));
    std::fs::write(&file, &ca.pem).unwrap();
    mta_ok(
        dir,
        &["ca", "add", name, "--trust-cert", file.to_str().unwrap()],
        None,
    );
}

async fn upload(c: &reqwest::Client, url: &str, who: &str, leaf: &Leaf) -> u16 {
    c.put(format!("{url}/v1/identity"))
        .basic_auth(who, Some(PW))
        .json(&serde_json::json!({ "certificate": leaf.cert_pem }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn lookup(c: &reqwest::Client, url: &str, who: &str) -> u16 {
    c.get(format!("{url}/v1/identity/{who}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A data directory with ALICE's identity from CA "ca-a" and BOB's from
/// "ca-b" published through a running server.
async fn two_published(sqlite: bool) -> (tempfile::TempDir, Server, reqwest::Client) {
    let (a, b) = (TestCa::new("CA A"), TestCa::new("CA B"));
    let dir = if sqlite {
        sqlite_data_dir()
    } else {
        data_dir()
    };
    add_account(dir.path(), ALICE, PW);
    add_account(dir.path(), BOB, PW);
    trust(dir.path(), "ca-a", &a);
    trust(dir.path(), "ca-b", &b);
    let (crl_a, crl_b) = (empty_crl_server(&a).await, empty_crl_server(&b).await);
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    let alice = a.valid_identity(ALICE, 1, &crl_a);
    let bob = b.valid_identity(BOB, 1, &crl_b);
    assert_eq!(upload(&c, &srv.url, ALICE, &alice).await, 200);
    assert_eq!(upload(&c, &srv.url, BOB, &bob).await, 200);
    assert_eq!(lookup(&c, &srv.url, ALICE).await, 200);
    assert_eq!(lookup(&c, &srv.url, BOB).await, 200);
    (dir, srv, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ca_remove_withdraws_that_cas_identities_and_counts_them() {
    let (dir, srv, c) = two_published(false).await;

    // Removed while the server runs: ALICE's identity goes, BOB's stays.
    let out = mta_ok(dir.path(), &["ca", "remove", "ca-a"], None);
    assert_eq!(lookup(&c, &srv.url, ALICE).await, 404);
    assert_eq!(lookup(&c, &srv.url, BOB).await, 200);
    assert_eq!(out, "removed ca-a; withdrew 1 published identities\n");

    let out = mta_ok(dir.path(), &["--json", "ca", "remove", "ca-b"], None);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"name": "ca-b", "result": "removed", "identities_withdrawn": 1})
    );
    assert_eq!(lookup(&c, &srv.url, BOB).await, 404);

    // Re-registering a CA of the same name does not bring anything back.
    trust(dir.path(), "ca-a", &TestCa::new("CA A"));
    assert_eq!(lookup(&c, &srv.url, ALICE).await, 404);
    let out = mta_ok(dir.path(), &["ca", "remove", "ca-a"], None);
    assert_eq!(out, "removed ca-a; withdrew 0 published identities\n");
}

/// The lookup's own check, and identities published before the schema
/// recorded their CA (a NULL `ca_name`, as after the migration).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lookup_serves_only_identities_of_registered_cas() {
    // SQLite only: edits the SQLite file to make a pre-version-2 database.
    let (dir, srv, c) = two_published(true).await;
    drop(srv);
    let db = rusqlite::Connection::open(db_path(dir.path())).unwrap();
    db.execute_batch("UPDATE identities SET ca_name = NULL")
        .unwrap();
    // A CA row gone without `ca remove` (as a restore or a manual edit
    // might leave it): its identity is not served.
    db.execute("DELETE FROM cas WHERE name = 'ca-b'", [])
        .unwrap();
    drop(db);
    let srv = Server::start(dir.path(), &[]);
    assert_eq!(lookup(&c, &srv.url, ALICE).await, 200, "ca-a recognised");
    assert_eq!(lookup(&c, &srv.url, BOB).await, 404);
    let db = rusqlite::Connection::open(db_path(dir.path())).unwrap();
    let names: Vec<(String, String)> = db
        .prepare("SELECT address, ca_name FROM identities ORDER BY address")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        names,
        vec![(ALICE.into(), "ca-a".into()), (BOB.into(), String::new())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disabled_accounts_identity_is_not_served_until_enabled() {
    let (dir, srv, c) = two_published(false).await;
    mta_ok(dir.path(), &["account", "disable", ALICE], None);
    assert_eq!(lookup(&c, &srv.url, ALICE).await, 404);
    assert_eq!(lookup(&c, &srv.url, BOB).await, 200);
    mta_ok(dir.path(), &["account", "enable", ALICE], None);
    assert_eq!(lookup(&c, &srv.url, ALICE).await, 200);
}
