//! `log verify` (SPEC §11) against the two history attacks issue 15 names
//! beside the row edits of idlog_faults.rs: a truncated history (the log
//! rolled back to an older tree, as a restore of an old backup does,
//! while a checkpoint of the larger tree is still held) and a fork of its
//! own checkpoints (a checkpoint validly signed with the data dir's log
//! key whose root is not the stored tree's at that size). Each is found
//! (exit 1, one line naming it) and `log verify` passes again once the
//! rows are restored. SQLite only: the tests edit and copy the SQLite file.

mod common;

use std::path::{Path, PathBuf};

use common::idlog::*;
use common::pki::TestCa;
use common::*;
use mailid_shared::translog::{Hash, LogSigner};

/// Runs `log verify`; exit 1 and one line, naming `what`.
fn verify_fails(dir: &Path, what: &str) {
    let out = mta(dir, &["log", "verify"], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("log verify: ") && err.contains(what), "{err}");
}

/// The SQLite files of a stopped data dir (database, WAL, shared memory).
fn db_files(dir: &Path) -> Vec<PathBuf> {
    let db = db_path(dir);
    let name = db.file_name().unwrap().to_str().unwrap().to_string();
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&name))
        .collect();
    out.sort();
    out
}

/// Copies the stopped data dir's database into `to` (a backup).
fn backup_db(dir: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in db_files(dir) {
        std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
    }
}

/// Puts the backup in `from` in place of the data dir's database.
fn restore_db(dir: &Path, from: &Path) {
    for f in db_files(dir) {
        std::fs::remove_file(f).unwrap();
    }
    for f in std::fs::read_dir(from).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
}

/// The checkpoint rows (size, root, note, signed_at), by size.
fn checkpoints(db: &rusqlite::Connection) -> Vec<(i64, Vec<u8>, String, i64)> {
    let mut st = db
        .prepare("SELECT size, root, note, signed_at FROM log_checkpoints ORDER BY size")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Uploads `serial` for `who` and waits until its entry is in a checkpoint.
async fn publish(c: &reqwest::Client, url: &str, ca: &TestCa, crl: &str, who: &str, serial: u64) {
    upload(c, url, who, &ca.valid_identity(who, serial, crl)).await;
    let v = lookup(c, url, who).await;
    assert!(v["history"]["inclusion"].is_object(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_verify_finds_a_truncated_history() {
    let ca = TestCa::new("Log CA");
    let bob = "bob@example.org".to_string();
    let dir = setup(sqlite_data_dir(), &ca, std::slice::from_ref(&bob));
    let crl = empty_crl_server(&ca).await;
    let c = client();
    let tmp = tempfile::tempdir().unwrap();
    let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));

    // An older tree of 2 entries, backed up ...
    let srv = Server::start(dir.path(), &[]);
    publish(&c, &srv.url, &ca, &crl, ME, 1).await;
    publish(&c, &srv.url, &ca, &crl, ME, 2).await;
    srv.stop();
    mta_ok(dir.path(), &["log", "verify"], None);
    backup_db(dir.path(), &old);
    // ... then 2 more entries in a larger, signed tree.
    let srv = Server::start(dir.path(), &[]);
    publish(&c, &srv.url, &ca, &crl, &bob, 9).await;
    publish(&c, &srv.url, &ca, &crl, ME, 3).await;
    srv.stop();
    let ok = mta_ok(dir.path(), &["log", "verify", "--json"], None);
    let v: serde_json::Value = serde_json::from_str(&ok).unwrap();
    assert_eq!(v["tree_size"].as_u64(), Some(4), "{v}");
    backup_db(dir.path(), &new);
    let newest = {
        let db = rusqlite::Connection::open(db_path(dir.path())).unwrap();
        checkpoints(&db).pop().unwrap()
    };
    assert_eq!(newest.0, 4);

    // The old backup restored: entries, stored hashes, heads, identities
    // and log_state of the 2-entry tree, consistent among themselves ...
    restore_db(dir.path(), &old);
    mta_ok(dir.path(), &["log", "verify"], None);
    // An auditor who kept the 4-entry checkpoint (as served by GET
    // /v1/log/checkpoint) sees the cut with `--checkpoint FILE`.
    let kept = tmp.path().join("checkpoint-4.txt");
    std::fs::write(&kept, &newest.2).unwrap();
    let kept_arg = kept.to_str().unwrap();
    let out = mta(
        dir.path(),
        &["log", "verify", "--checkpoint", kept_arg],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("given checkpoint #1: beyond the tree's 2 leaves"),
        "{err}"
    );
    // ... and so does the log itself while the checkpoint of the 4-entry
    // tree is still held.
    {
        let db = rusqlite::Connection::open(db_path(dir.path())).unwrap();
        db.execute(
            "INSERT INTO log_checkpoints (size, root, note, signed_at) VALUES (?1, ?2, ?3, ?4)",
            newest.clone(),
        )
        .unwrap();
    }
    verify_fails(dir.path(), "checkpoint 4: beyond the tree's 2 leaves");

    // Restored: passes again, also against the kept checkpoint.
    restore_db(dir.path(), &new);
    mta_ok(
        dir.path(),
        &["log", "verify", "--checkpoint", kept_arg],
        None,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_verify_finds_a_fork_of_its_checkpoints() {
    let ca = TestCa::new("Log CA");
    let dir = setup(sqlite_data_dir(), &ca, &[]);
    let crl = empty_crl_server(&ca).await;
    let c = client();
    let srv = Server::start(dir.path(), &[]);
    for serial in 1..=4 {
        publish(&c, &srv.url, &ca, &crl, ME, serial).await;
    }
    srv.stop();
    mta_ok(dir.path(), &["log", "verify"], None);

    // The data dir's own log key and origin sign a second tree of 3
    // entries built from other leaves.
    let pem = std::fs::read_to_string(dir.path().join("log-key.pem")).unwrap();
    let der = mailid_shared::pem::decode_one(&pem, &["PRIVATE KEY"]).unwrap();
    let db = rusqlite::Connection::open(db_path(dir.path())).unwrap();
    let origin: String = db
        .query_row("SELECT origin FROM log_config WHERE id = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    let signer = LogSigner::from_pkcs8(&origin, &der).unwrap();
    let l: Vec<H> = (0..3)
        .map(|i| leaf(format!("fork {i}").as_bytes()))
        .collect();
    let fork_root = node(&node(&l[0], &l[1]), &l[2]);
    let note = signer.sign_checkpoint(3, Hash(fork_root)).unwrap();
    // Shown to someone who kept it: `--checkpoint` finds the fork.
    let tmp = tempfile::tempdir().unwrap();
    let given = tmp.path().join("fork-3.txt");
    std::fs::write(&given, &note).unwrap();
    let out = mta(
        dir.path(),
        &["log", "verify", "--checkpoint", given.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("given checkpoint #1: its root is not the tree's"),
        "{err}"
    );
    let before = checkpoints(&db);
    let kept = before.iter().find(|c| c.0 == 3).cloned();
    db.execute(
        "INSERT INTO log_checkpoints (size, root, note, signed_at) VALUES (3, ?1, ?2, ?3)
         ON CONFLICT (size) DO UPDATE SET root = excluded.root, note = excluded.note",
        (&fork_root[..], &note, before.last().unwrap().3),
    )
    .unwrap();
    // Validly signed, so only the tree shows it.
    let parsed = mailid_shared::translog::LogVerifier::from_vkey(&signer.vkey())
        .unwrap()
        .open_checkpoint(note.as_bytes())
        .unwrap();
    assert_eq!(parsed.size(), 3);
    verify_fails(dir.path(), "checkpoint 3: its root is not the tree's");

    // Restored: passes again.
    match kept {
        Some(k) => db
            .execute(
                "UPDATE log_checkpoints SET root = ?2, note = ?3, signed_at = ?4 WHERE size = ?1",
                k,
            )
            .map(|_| ()),
        None => db
            .execute("DELETE FROM log_checkpoints WHERE size = 3", [])
            .map(|_| ()),
    }
    .unwrap();
    assert_eq!(checkpoints(&db), before);
    mta_ok(dir.path(), &["log", "verify"], None);
}
