//! The identity log under faults and load (SPEC §11): `log verify` passes
//! and then finds a changed entry, a deleted newest entry, a changed
//! stored hash, a replaced certificate and a foreign checkpoint signature;
//! no address is stored in the clear; a burst of uploads gets checkpoints
//! at most once a second; kill -9 during uploads loses no acknowledged
//! entry and leaves the next checkpoint consistent with the last.

mod common;

use common::idlog::*;
use common::pki::{Leaf, TestCa};
use common::*;

/// Runs `log verify`; exit 1 and one line, naming `what`.
fn verify_fails(dir: &std::path::Path, what: &str) {
    let out = mta(dir, &["log", "verify"], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("log verify: ") && err.contains(what), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_verify_finds_tampering_and_no_address_is_stored() {
    let ca = TestCa::new("Log CA");
    let bob = "bob@example.org".to_string();
    let dir = setup(sqlite_data_dir(), &ca, std::slice::from_ref(&bob));
    let crl = empty_crl_server(&ca).await;
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    for serial in 1..=3u64 {
        upload(&c, &srv.url, ME, &ca.valid_identity(ME, serial, &crl)).await;
    }
    upload(&c, &srv.url, &bob, &ca.valid_identity(&bob, 9, &crl)).await;
    // Both newest entries are in a checkpoint once their lookups answer.
    lookup(&c, &srv.url, ME).await;
    lookup(&c, &srv.url, &bob).await;
    srv.stop();
    let ok = mta_ok(dir.path(), &["log", "verify", "--json"], None);
    let v: serde_json::Value = serde_json::from_str(&ok).unwrap();
    assert_eq!(
        (v["tree_size"].as_u64(), v["accounts"].as_u64()),
        (Some(4), Some(2))
    );

    let db = rusqlite::Connection::open(db_path(dir.path())).unwrap();
    // No address in the clear in any log table.
    for table in [
        "log_config",
        "log_heads",
        "log_entries",
        "log_hashes",
        "log_state",
        "log_checkpoints",
    ] {
        let mut st = db.prepare(&format!("SELECT * FROM {table}")).unwrap();
        let n = st.column_count();
        let mut rows = st.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            for i in 0..n {
                let v: rusqlite::types::Value = r.get(i).unwrap();
                let bytes = match v {
                    rusqlite::types::Value::Text(t) => t.into_bytes(),
                    rusqlite::types::Value::Blob(b) => b,
                    _ => continue,
                };
                for a in [ME, "alice", "bob"] {
                    assert!(
                        !bytes.windows(a.len()).any(|w| w == a.as_bytes()),
                        "{table} holds {a}"
                    );
                }
            }
        }
    }

    // A changed entry (its stored leaf hash left alone).
    let (id, entry): (i64, Vec<u8>) = db
        .query_row("SELECT id, entry FROM log_entries WHERE seq = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let mut changed = entry.clone();
    let last = changed.len() - 1;
    changed[last] ^= 1;
    let set = "UPDATE log_entries SET entry = ?2 WHERE id = ?1";
    db.execute(set, (id, &changed)).unwrap();
    verify_fails(dir.path(), "stored leaf hash does not match the entry");
    // ... and with its leaf hash recomputed too: the tree no longer matches.
    let old_leaf: Vec<u8> = db
        .query_row(
            "SELECT leaf_hash FROM log_entries WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    let set_leaf = "UPDATE log_entries SET leaf_hash = ?2 WHERE id = ?1";
    db.execute(set_leaf, (id, &leaf(&changed)[..])).unwrap();
    verify_fails(dir.path(), "");
    db.execute(set, (id, &entry)).unwrap();
    db.execute(set_leaf, (id, &old_leaf)).unwrap();
    mta_ok(dir.path(), &["log", "verify"], None);

    // The newest entry of an account deleted.
    let newest: (i64, Option<i64>, Vec<u8>, i64, Vec<u8>, Vec<u8>) = db
        .query_row(
            "SELECT id, leaf_index, blind, seq, entry, leaf_hash FROM log_entries
             WHERE seq = 2",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )
        .unwrap();
    db.execute("DELETE FROM log_entries WHERE id = ?1", [newest.0])
        .unwrap();
    verify_fails(dir.path(), "");
    db.execute(
        "INSERT INTO log_entries (id, leaf_index, blind, seq, entry, leaf_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        newest.clone(),
    )
    .unwrap();
    mta_ok(dir.path(), &["log", "verify"], None);

    // A changed stored hash.
    let old: Vec<u8> = db
        .query_row("SELECT hash FROM log_hashes WHERE idx = 2", [], |r| {
            r.get(0)
        })
        .unwrap();
    db.execute(
        "UPDATE log_hashes SET hash = zeroblob(32) WHERE idx = 2",
        [],
    )
    .unwrap();
    verify_fails(dir.path(), "stored hash 2 does not match");
    db.execute("UPDATE log_hashes SET hash = ?1 WHERE idx = 2", [&old])
        .unwrap();
    mta_ok(dir.path(), &["log", "verify"], None);

    // A replaced certificate.
    let cert: Vec<u8> = db
        .query_row(
            "SELECT certificate FROM identities WHERE address = ?1",
            [&bob],
            |r| r.get(0),
        )
        .unwrap();
    let set_cert = "UPDATE identities SET certificate = ?2 WHERE address = ?1";
    db.execute(set_cert, (&bob, &b"not the logged one"[..]))
        .unwrap();
    verify_fails(
        dir.path(),
        "its published certificate is not the logged one",
    );
    db.execute(set_cert, (&bob, &cert)).unwrap();
    mta_ok(dir.path(), &["log", "verify"], None);

    // A checkpoint signed by another key.
    let other = mailid_shared::translog::LogSigner::from_seed("x/mailid-log", &[3; 32]).unwrap();
    let (size, root): (i64, Vec<u8>) = db
        .query_row(
            "SELECT size, root FROM log_checkpoints ORDER BY size DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let forged = other
        .sign_checkpoint(
            size as u64,
            mailid_shared::translog::Hash(root.try_into().unwrap()),
        )
        .unwrap();
    db.execute(
        "UPDATE log_checkpoints SET note = ?2 WHERE size = ?1",
        (size, &forged),
    )
    .unwrap();
    verify_fails(dir.path(), &format!("checkpoint {size}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_uploads_gets_at_most_one_checkpoint_a_second() {
    let ca = TestCa::new("Log CA");
    let others: Vec<String> = (0..6).map(|i| format!("user{i}@example.org")).collect();
    let dir = setup(sqlite_data_dir(), &ca, &others);
    let crl = empty_crl_server(&ca).await;
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    let leaves: Vec<(String, Leaf)> = others
        .iter()
        .flat_map(|o| (1..=3u64).map(move |s| (o.clone(), s)))
        .map(|(o, s)| {
            let l = ca.valid_identity(&o, s, &crl);
            (o, l)
        })
        .collect();
    let mut tasks = Vec::new();
    for (o, l) in leaves {
        let (c, url) = (c.clone(), srv.url.clone());
        tasks.push(tokio::spawn(async move { upload(&c, &url, &o, &l).await }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for o in &others {
        let h = lookup(&c, &srv.url, o).await;
        assert_eq!(h["history"]["entries"].as_array().unwrap().len(), 3);
    }
    let metrics = c
        .get(format!("{}/metrics", srv.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let signed_metric: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mailid_mta_log_checkpoints_signed_total "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    srv.stop();
    let db = rusqlite::Connection::open(db_path(dir.path())).unwrap();
    let mut st = db
        .prepare("SELECT size, signed_at FROM log_checkpoints ORDER BY signed_at")
        .unwrap();
    let signed: Vec<(i64, i64)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(signed.len() >= 2, "{signed:?}");
    for w in signed.windows(2) {
        assert!(
            w[1].1 - w[0].1 >= 1000,
            "signed less than 1 s apart: {signed:?}"
        );
        assert!(w[1].0 > w[0].0, "{signed:?}");
    }
    assert_eq!(signed.last().unwrap().0, 18);
    assert_eq!(signed_metric, signed.len() as u64, "{signed:?}");
    mta_ok(dir.path(), &["log", "verify"], None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_log_survives_kill_9_during_uploads() {
    let ca = TestCa::new("Log CA");
    let users: Vec<String> = (0..4).map(|i| format!("k{i}@example.org")).collect();
    let dir = setup(data_dir(), &ca, &users);
    let crl = empty_crl_server(&ca).await;
    let mut srv = Server::start(dir.path(), &[]);
    let c = client();
    for u in &users {
        upload(&c, &srv.url, u, &ca.valid_identity(u, 1, &crl)).await;
    }
    lookup(&c, &srv.url, &users[3]).await;
    let before = parse_checkpoint(&checkpoint(&c, &srv.url).await);

    // Uploads until the service dies; the acknowledged ones are recorded.
    let leaves: Vec<(String, u64, Leaf)> = (0..40u64)
        .map(|k| {
            let u = users[k as usize % users.len()].clone();
            let l = ca.valid_identity(&u, 100 + k, &crl);
            (u, 100 + k, l)
        })
        .collect();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, u64)>::new()));
    let (c2, url, acked2) = (c.clone(), srv.url.clone(), acked.clone());
    let uploader = tokio::spawn(async move {
        for (u, serial, l) in leaves {
            let r = c2
                .put(format!("{url}/v1/identity"))
                .basic_auth(&u, Some(PW))
                .json(&serde_json::json!({ "certificate": l.cert_pem }))
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 200 => acked2.lock().unwrap().push((u, serial)),
                _ => break,
            }
        }
    });
    while acked.lock().unwrap().len() < 6 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    srv.child.kill().unwrap();
    srv.child.wait().unwrap();
    uploader.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 6);

    let srv = Server::start(dir.path(), &[]);
    for u in &users {
        let got = lookup(&c, &srv.url, u).await;
        let serials: Vec<String> = got["history"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["serial"].as_str().unwrap().to_string())
            .collect();
        for (_, s) in acked.iter().filter(|(a, _)| a == u) {
            let hex = format!("{s:02x}");
            assert!(
                serials.contains(&hex),
                "{u}: acknowledged {hex} lost: {serials:?}"
            );
        }
        assert!(got["history"]["inclusion"].is_object());
    }
    let after = parse_checkpoint(&checkpoint(&c, &srv.url).await);
    assert!(after.0 >= before.0 + acked.len() as u64);
    let r: serde_json::Value = c
        .get(format!(
            "{}/v1/log/consistency?from={}&to={}",
            srv.url, before.0, after.0
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(verify_consistency(
        before.0,
        after.0,
        before.1,
        after.1,
        &hashes(&r["proof"])
    ));
    srv.stop();
    let out = mta_ok(dir.path(), &["log", "verify"], None);
    assert!(out.contains("(0 pending)"), "{out}");
}
