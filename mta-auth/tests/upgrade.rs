//! A database made before key backups and the identity log existed
//! (SQLite schema version 2, PostgreSQL version 1) upgrades when the
//! service opens it: the rows it held stay, and backups can be stored.
//! Such a database is made here from a fresh one by dropping the backups
//! and log tables and setting the version back, which is exactly the
//! earlier schema. The PostgreSQL half needs the
//! cluster of `MAILID_TEST_PG_URL`.

mod common;

use common::backup::{encrypted_key, list_backups, put_backup};
use common::*;
use mailid_tests::pg;

const ME: &str = "holder@example.org";
const PW: &str = "upgrade-test-pw";
/// The identity log's tables (SQLite version 4, PostgreSQL version 3).
const LOG_TABLES: &str = "DROP TABLE log_config; DROP TABLE log_heads; DROP TABLE log_entries; \
     DROP TABLE log_hashes; DROP TABLE log_state; DROP TABLE log_checkpoints;";

/// Starts the service on `dir`, checks the account from before the upgrade
/// logs in, and stores and lists a backup.
async fn backups_work(dir: &std::path::Path) {
    let srv = Server::start(dir, &[]);
    let c = client();
    totp(&c, &srv.url, ME, PW, &key_id()).await;
    let (k, text) = encrypted_key();
    put_backup(&c, &srv.url, ME, PW, &k, &text).await;
    let l = list_backups(&c, &srv.url, ME, PW).await;
    assert_eq!(l.backups.len(), 1);
    assert_eq!(l.backups[0].key_id, k);
    srv.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sqlite_database_of_version_2_upgrades() {
    let dir = sqlite_data_dir();
    add_account(dir.path(), ME, PW);
    {
        let db = rusqlite::Connection::open(db_path(dir.path())).unwrap();
        let version: i64 = db
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 4);
        db.execute_batch(&format!(
            "DROP TABLE backups; {LOG_TABLES} PRAGMA user_version = 2;"
        ))
        .unwrap();
    }
    backups_work(dir.path()).await;
    let db = rusqlite::Connection::open(db_path(dir.path())).unwrap();
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgresql_database_of_version_1_upgrades() {
    let db = pg::fresh_database("mtapg_upgrade");
    let dir = tempfile::tempdir().unwrap();
    mta_ok(dir.path(), &["init", "--database", db.url()], None);
    add_account(dir.path(), ME, PW);
    let version = "SELECT version FROM mailid_schema WHERE service = 'mailid-mta-auth'";
    assert_eq!(db.psql(version).unwrap(), "3");
    db.psql(&format!(
        "DROP TABLE backups; {LOG_TABLES} \
         UPDATE mailid_schema SET version = 1 WHERE service = 'mailid-mta-auth'"
    ))
    .unwrap();
    assert_eq!(db.psql(version).unwrap(), "1");
    backups_work(dir.path()).await;
    assert_eq!(db.psql(version).unwrap(), "3");
}
