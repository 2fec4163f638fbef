//! The identity log over real HTTP (SPEC §11): successive identities give
//! a chained history whose inclusion proof, and the consistency proofs
//! between every pair of checkpoints seen, verify with a small RFC 9162
//! verifier written here (not the production code); `log verify` passes
//! and then finds a changed entry, a deleted newest entry and a changed
//! stored hash; no address is stored or served in the clear; checkpoints
//! are signed at most once a second under a burst of uploads.

mod common;

use common::pki::{Leaf, TestCa};
use common::*;
use data_encoding::{BASE64, HEXLOWER};
use sha2::{Digest, Sha256};

const PW: &str = "idlog-test-pw";
const ME: &str = "alice@example.org";

// ---- A test-only RFC 9162 §2.1.3.2 / §2.1.4.2 verifier ----

type H = [u8; 32];

fn node(l: &H, r: &H) -> H {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

fn leaf(entry: &[u8]) -> H {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// RFC 9162 §2.1.3.2.
fn verify_inclusion(index: u64, size: u64, leaf: H, proof: &[H], root: H) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s, mut r) = (index, size - 1, leaf);
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == root
}

/// RFC 9162 §2.1.4.2.
fn verify_consistency(first: u64, second: u64, h1: H, h2: H, proof: &[H]) -> bool {
    if first == second {
        return proof.is_empty() && h1 == h2;
    }
    if first == 0 || first > second {
        return false;
    }
    let mut path = proof.to_vec();
    if first.is_power_of_two() {
        path.insert(0, h1);
    }
    let Some(start) = path.first().copied() else {
        return false;
    };
    let (mut f, mut s) = (first - 1, second - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (start, start);
    for c in &path[1..] {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node(c, &fr);
            sr = node(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == h1 && sr == h2 && s == 0
}

fn hx(s: &str) -> H {
    HEXLOWER.decode(s.as_bytes()).unwrap().try_into().unwrap()
}

fn b64(s: &str) -> H {
    BASE64.decode(s.as_bytes()).unwrap().try_into().unwrap()
}

#[test]
fn the_test_verifier_passes_the_rfc6962_vectors() {
    let root6 = hx("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef");
    let root8 = hx("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328");
    let leaf5 = leaf(&HEXLOWER.decode(b"40414243").unwrap());
    let incl = [
        hx("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        hx("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
        hx("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ];
    assert!(verify_inclusion(5, 8, leaf5, &incl, root8));
    assert!(!verify_inclusion(4, 8, leaf5, &incl, root8));
    assert!(!verify_inclusion(5, 8, leaf5, &incl[..2], root8));
    let cons = [
        hx("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        hx("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
        hx("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ];
    assert!(verify_consistency(6, 8, root6, root8, &cons));
    assert!(!verify_consistency(6, 8, root8, root6, &cons));
    assert!(!verify_consistency(5, 8, root6, root8, &cons));
}

// ---- Helpers ----

/// An initialised data dir with account ME (and `others`) and a CA
/// trusted as "testca".
fn setup(dir: tempfile::TempDir, ca: &TestCa, others: &[String]) -> tempfile::TempDir {
    // Many first logins from one address at once: no throttling here.
    let path = dir.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["login_limits"] = serde_json::json!({
        "ip_failures_per_minute": 100000,
        "ip_failure_burst": 100000,
        "account_failures_per_minute": 100000,
        "account_failure_burst": 100000,
    });
    std::fs::write(&path, cfg.to_string()).unwrap();
    add_account(dir.path(), ME, PW);
    for o in others {
        add_account(dir.path(), o, PW);
    }
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    mta_ok(
        dir.path(),
        &[
            "ca",
            "add",
            "testca",
            "--trust-cert",
            ca_file.to_str().unwrap(),
        ],
        None,
    );
    dir
}

async fn upload(c: &reqwest::Client, url: &str, who: &str, leaf: &Leaf) {
    let r = c
        .put(format!("{url}/v1/identity"))
        .basic_auth(who, Some(PW))
        .json(&serde_json::json!({ "certificate": leaf.cert_pem }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

async fn lookup(c: &reqwest::Client, url: &str, who: &str) -> serde_json::Value {
    let r = c
        .get(format!("{url}/v1/identity/{who}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// (size, root) of a checkpoint note, read by hand.
fn parse_checkpoint(note: &str) -> (u64, H) {
    let lines: Vec<&str> = note.lines().collect();
    (lines[1].parse().unwrap(), b64(lines[2]))
}

fn hashes(v: &serde_json::Value) -> Vec<H> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| b64(h.as_str().unwrap()))
        .collect()
}

async fn checkpoint(c: &reqwest::Client, url: &str) -> String {
    let r = c
        .get(format!("{url}/v1/log/checkpoint"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    r.text().await.unwrap()
}

/// Uploads three identities of ME and checks the history after each.
async fn three_identities(c: &reqwest::Client, url: &str, ca: &TestCa, crl: &str) -> Vec<String> {
    let mut notes = vec![checkpoint(c, url).await];
    let mut ders = Vec::new();
    for serial in 1..=3u64 {
        let leaf_cert = ca.valid_identity(ME, serial, crl);
        upload(c, url, ME, &leaf_cert).await;
        ders.push(leaf_cert.der.clone());
        let got = lookup(c, url, ME).await;
        let h = &got["history"];
        let entries = h["entries"].as_array().unwrap();
        assert_eq!(entries.len(), serial as usize);
        // The chain, checked by hand: seq, prev = the leaf hash before.
        let mut prev = [0u8; 32];
        for (k, e) in entries.iter().enumerate() {
            let bytes = BASE64
                .decode(e["entry"].as_str().unwrap().as_bytes())
                .unwrap();
            assert_eq!(e["seq"], k as u64);
            assert_eq!(bytes[34..42], (k as u64).to_be_bytes());
            assert_eq!(bytes[42..74], prev);
            prev = leaf(&bytes);
            let want = if k == 0 { "published" } else { "superseded" };
            assert_eq!(e["event"], want);
        }
        // The newest entry carries the served certificate.
        let newest = BASE64
            .decode(
                entries.last().unwrap()["entry"]
                    .as_str()
                    .unwrap()
                    .as_bytes(),
            )
            .unwrap();
        let cert_hash: H = Sha256::digest(&ders[serial as usize - 1]).into();
        assert_eq!(newest[newest.len() - 40..newest.len() - 8], cert_hash);
        // Its inclusion proof in the returned checkpoint.
        let note = h["checkpoint"].as_str().unwrap();
        let (size, root) = parse_checkpoint(note);
        let inc = &h["inclusion"];
        assert_eq!(inc["tree_size"], size);
        let index = inc["leaf_index"].as_u64().unwrap();
        assert_eq!(entries.last().unwrap()["leaf_index"], index);
        assert!(verify_inclusion(
            index,
            size,
            prev,
            &hashes(&inc["proof"]),
            root
        ));
        assert!(!verify_inclusion(
            index,
            size,
            leaf(b"another entry"),
            &hashes(&inc["proof"]),
            root
        ));
        for text in [note.to_string(), h.to_string()] {
            assert!(!text.contains(ME) && !text.contains("alice"), "{text}");
        }
        notes.push(note.to_string());
    }
    notes.push(checkpoint(c, url).await);
    notes
}

/// Consistency proofs between every pair of checkpoints seen.
async fn all_consistent(c: &reqwest::Client, url: &str, notes: &[String]) {
    let seen: Vec<(u64, H)> = notes.iter().map(|n| parse_checkpoint(n)).collect();
    let mut checked = 0;
    for &(m, hm) in &seen {
        for &(n, hn) in &seen {
            if m == 0 || m > n {
                continue;
            }
            let r = c
                .get(format!("{url}/v1/log/consistency?from={m}&to={n}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(
                (body["from"].as_u64(), body["to"].as_u64()),
                (Some(m), Some(n))
            );
            let proof = hashes(&body["proof"]);
            assert!(verify_consistency(m, n, hm, hn, &proof), "{m} → {n}");
            if m < n {
                assert!(!verify_consistency(m, n, hn, hm, &proof));
            }
            checked += 1;
        }
    }
    assert!(checked >= 6, "{checked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_identities_give_a_history_with_proofs() {
    let ca = TestCa::new("Log CA");
    let dir = setup(data_dir(), &ca, &[]);
    let crl = empty_crl_server(&ca).await;
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    let url = srv.url.clone();

    let key: serde_json::Value = c
        .get(format!("{url}/v1/log/key"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(key["algorithm"], "Ed25519");
    let vkey = key["vkey"].as_str().unwrap();
    assert!(vkey.starts_with(&format!(
        "{}+{}+",
        key["origin"].as_str().unwrap(),
        key["key_hash"].as_str().unwrap()
    )));

    let notes = three_identities(&c, &url, &ca, &crl).await;
    all_consistent(&c, &url, &notes).await;
    // Every checkpoint is signed by the served key.
    let verifier = mailid_shared::translog::LogVerifier::from_vkey(vkey).unwrap();
    for n in &notes {
        verifier.open_checkpoint(n.as_bytes()).unwrap();
    }

    // Bad queries are 400 problem documents.
    let (size, _) = parse_checkpoint(notes.last().unwrap());
    for q in [
        "from=0&to=1".to_string(),
        "from=2&to=1".to_string(),
        format!("from=1&to={}", size + 1),
        "from=abc&to=1".to_string(),
        "from=1".to_string(),
        "".to_string(),
        "from=1&to=2&x=3".to_string(),
        "from=-1&to=2".to_string(),
    ] {
        let r = c
            .get(format!("{url}/v1/log/consistency?{q}"))
            .send()
            .await
            .unwrap();
        assert_problem(r, 400, "bad-request").await;
    }
    drop(srv);
    let out = mta_ok(dir.path(), &["log", "verify"], None);
    assert!(
        out.starts_with("ok: 3 entries in the tree (0 pending), 1 accounts"),
        "{out}"
    );
}

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

/// The events of ME's history, in order.
async fn events(c: &reqwest::Client, url: &str) -> Vec<String> {
    let got = lookup(c, url, ME).await;
    got["history"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn withdrawals_are_logged_in_the_chain() {
    let ca = TestCa::new("Log CA");
    let dir = setup(data_dir(), &ca, &[]);
    let crl = empty_crl_server(&ca).await;
    let srv = Server::start(dir.path(), &[]);
    let c = client();

    // Expired, noticed at the next lookup.
    let now = time::OffsetDateTime::now_utc();
    let short = ca.identity(
        ME,
        1,
        Some(&crl),
        now - time::Duration::hours(1),
        now + time::Duration::seconds(2),
    );
    upload(&c, &srv.url, ME, &short).await;
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let r = c
        .get(format!("{}/v1/identity/{ME}", srv.url))
        .send()
        .await
        .unwrap();
    assert_problem(r, 404, "not-found").await;
    upload(&c, &srv.url, ME, &ca.valid_identity(ME, 2, &crl)).await;
    assert_eq!(
        events(&c, &srv.url).await,
        ["published", "withdrawn-expired", "published"]
    );

    // Its CA removed: withdrawn in the same transaction.
    let out = mta_ok(dir.path(), &["ca", "remove", "testca"], None);
    assert!(out.contains('1'), "{out}");
    let ca_file = dir.path().join("ca.pem");
    mta_ok(
        dir.path(),
        &[
            "ca",
            "add",
            "testca",
            "--trust-cert",
            ca_file.to_str().unwrap(),
        ],
        None,
    );
    upload(&c, &srv.url, ME, &ca.valid_identity(ME, 3, &crl)).await;
    assert_eq!(
        events(&c, &srv.url).await,
        [
            "published",
            "withdrawn-expired",
            "published",
            "withdrawn-ca-removed",
            "published"
        ]
    );
    drop(srv);
    let out = mta_ok(dir.path(), &["log", "verify"], None);
    assert!(out.starts_with("ok: 5 entries in the tree"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identities_published_before_the_log_are_logged_once_at_upgrade() {
    let ca = TestCa::new("Log CA");
    let dir = setup(sqlite_data_dir(), &ca, &[]);
    let crl = empty_crl_server(&ca).await;
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    upload(&c, &srv.url, ME, &ca.valid_identity(ME, 1, &crl)).await;
    srv.stop();
    // Back to schema version 3: no log, no log key.
    {
        let db = rusqlite::Connection::open(db_path(dir.path())).unwrap();
        db.execute_batch(
            "DROP TABLE log_config; DROP TABLE log_heads; DROP TABLE log_entries; \
             DROP TABLE log_hashes; DROP TABLE log_state; DROP TABLE log_checkpoints; \
             PRAGMA user_version = 3;",
        )
        .unwrap();
    }
    std::fs::remove_file(dir.path().join("log-key.pem")).unwrap();
    for _ in 0..2 {
        let srv = Server::start(dir.path(), &[]);
        let got = lookup(&c, &srv.url, ME).await;
        let entries = got["history"]["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "{got}");
        assert_eq!(entries[0]["event"], "published");
        assert!(got["history"]["inclusion"].is_object(), "{got}");
        srv.stop();
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("log-key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
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
