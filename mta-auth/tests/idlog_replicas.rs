//! The identity log with three MTA replicas on one PostgreSQL database
//! (SPEC §8, §11): two hold the log key and sign, one does not (a data
//! dir made by copying config.json only); uploads spread over all three
//! give one tree, checkpoints signed at most once a second in all, the
//! same log key everywhere, and a log that `log verify` accepts. Needs
//! the cluster of `MAILID_TEST_PG_URL`.

mod common;

use common::pki::TestCa;
use common::*;
use mailid_tests::pg;

const PW: &str = "idlog-replicas-pw";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_one_log_and_sign_at_most_once_a_second() {
    let db = pg::fresh_database("mtapg_idlog");
    let one = tempfile::tempdir().unwrap();
    mta_ok(one.path(), &["init", "--database", db.url()], None);
    let cfg = one.path().join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v["login_limits"] = serde_json::json!({
        "ip_failures_per_minute": 100000, "ip_failure_burst": 100000,
        "account_failures_per_minute": 100000, "account_failure_burst": 100000,
    });
    std::fs::write(&cfg, v.to_string()).unwrap();
    let (two, three) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::copy(&cfg, two.path().join("config.json")).unwrap();
    std::fs::copy(
        one.path().join("log-key.pem"),
        two.path().join("log-key.pem"),
    )
    .unwrap();
    std::fs::copy(&cfg, three.path().join("config.json")).unwrap();

    let ca = TestCa::new("Replica CA");
    let ca_file = one.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    mta_ok(
        one.path(),
        &[
            "ca",
            "add",
            "testca",
            "--trust-cert",
            ca_file.to_str().unwrap(),
        ],
        None,
    );
    let users: Vec<String> = (0..6).map(|i| format!("r{i}@example.org")).collect();
    for u in &users {
        add_account(one.path(), u, PW);
    }
    let crl = empty_crl_server(&ca).await;
    let servers = [
        Server::start(one.path(), &[]),
        Server::start(two.path(), &[]),
        Server::start(three.path(), &[]),
    ];
    assert!(!three.path().join("log-key.pem").exists());
    let c = client();
    let mut keys = Vec::new();
    for s in &servers {
        let k: serde_json::Value = c
            .get(format!("{}/v1/log/key", s.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        keys.push(k["vkey"].as_str().unwrap().to_string());
    }
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");

    let mut tasks = Vec::new();
    for (i, u) in users.iter().enumerate() {
        for serial in 1..=3u64 {
            let url = servers[(i + serial as usize) % 3].url.clone();
            let (c, u, leaf) = (c.clone(), u.clone(), ca.valid_identity(u, serial, &crl));
            tasks.push(tokio::spawn(async move {
                let r = c
                    .put(format!("{url}/v1/identity"))
                    .basic_auth(&u, Some(PW))
                    .json(&serde_json::json!({ "certificate": leaf.cert_pem }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Every history, asked of the replica that does not sign, is complete
    // and proven in a checkpoint.
    for u in &users {
        let got: serde_json::Value = c
            .get(format!("{}/v1/identity/{u}", servers[2].url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let h = &got["history"];
        let entries = h["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 3, "{got}");
        let seqs: std::collections::BTreeSet<u64> =
            entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs.len(), 3);
        assert!(h["inclusion"].is_object(), "{got}");
    }
    drop(servers);
    let rows = db
        .psql("SELECT size || ' ' || signed_at FROM log_checkpoints ORDER BY signed_at")
        .unwrap();
    let signed: Vec<(i64, i64)> = rows
        .lines()
        .map(|l| {
            let (a, b) = l.trim().split_once(' ').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    assert!(signed.len() >= 2, "{signed:?}");
    for w in signed.windows(2) {
        assert!(
            w[1].1 - w[0].1 >= 1000,
            "signed less than 1 s apart: {signed:?}"
        );
        assert!(w[1].0 > w[0].0, "{signed:?}");
    }
    assert_eq!(signed.last().unwrap().0, 18);
    let out = mta_ok(three.path(), &["log", "verify"], None);
    assert!(
        out.starts_with("ok: 18 entries in the tree (0 pending), 6 accounts"),
        "{out}"
    );
}
