//! The identity log over real HTTP (SPEC §11): successive identities give
//! a chained history whose inclusion proof, and the consistency proofs
//! between every pair of checkpoints seen, verify with a small RFC 9162
//! verifier written for the tests (common/idlog.rs, not the production
//! code); withdrawals continue the chain; identities published before the
//! log are logged once at upgrade.

mod common;

use common::idlog::*;
use common::pki::TestCa;
use common::*;
use data_encoding::{BASE64, HEXLOWER};
use sha2::{Digest, Sha256};

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
    // The 404 says why and carries the history, withdrawal included and
    // proven.
    for _ in 0..2 {
        let r = c
            .get(format!("{}/v1/identity/{ME}", srv.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/problem+json"));
        let doc: serde_json::Value = r.json().await.unwrap();
        assert_eq!(doc["type"], "urn:mailid:error:not-found");
        assert!(
            doc["detail"].as_str().unwrap().ends_with("has expired"),
            "{doc}"
        );
        let h = &doc["history"];
        let events: Vec<&str> = h["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert_eq!(events, ["published", "withdrawn-expired"]);
        let (size, root) = parse_checkpoint(h["checkpoint"].as_str().unwrap());
        let newest = BASE64
            .decode(h["entries"][1]["entry"].as_str().unwrap().as_bytes())
            .unwrap();
        assert!(verify_inclusion(
            h["inclusion"]["leaf_index"].as_u64().unwrap(),
            size,
            leaf(&newest),
            &hashes(&h["inclusion"]["proof"]),
            root
        ));
    }
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
