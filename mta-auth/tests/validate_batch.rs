//! `POST /v1/validate/batch`: per-item verdicts as `/v1/validate` gives
//! them (a code repeated within one batch is used once), and the refusals
//! of a whole batch (size, signature, an undecodable item) that use no
//! code, over real HTTP against the real binary.

mod common;

use common::*;
use mailid_shared::authsig::Credential;
use mailid_shared::protocol::{ValidateBatchResponse, ValidateReason};
use mailid_shared::timefmt::now_unix;
use mailid_shared::KeyId;
use serde_json::{json, Value};

const PW: &str = "hunter2 is a fine password";

/// Sends `body` to `/v1/validate/batch`, signed as CA `ca` over `signed_path`.
async fn post_batch(
    c: &reqwest::Client,
    url: &str,
    ca: &str,
    cred: &str,
    signed_path: &str,
    body: &Value,
) -> reqwest::Response {
    let body = body.to_string();
    let ts = now_unix();
    let sig = Credential::parse(cred)
        .unwrap()
        .sign("POST", signed_path, ts, body.as_bytes());
    c.post(format!("{url}/v1/validate/batch"))
        .header("content-type", "application/json")
        .header("x-mailid-ca", ca)
        .header("x-mailid-timestamp", ts.to_string())
        .header("x-mailid-signature", sig)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A correctly signed batch that must answer 200.
async fn batch(
    c: &reqwest::Client,
    url: &str,
    cred: &str,
    items: &[(&str, &str, &KeyId)],
) -> ValidateBatchResponse {
    let items: Vec<Value> = items
        .iter()
        .map(|(a, code, k)| json!({"account": a, "totp": code, "key_id": k}))
        .collect();
    let resp = post_batch(
        c,
        url,
        "ca1",
        cred,
        "/v1/validate/batch",
        &json!({ "items": items }),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_item_gets_its_own_single_use_verdict() {
    let dir = data_dir();
    for a in ["alice@example.org", "bob@example.org", "carol@example.org"] {
        add_account(dir.path(), a, PW);
    }
    let cred = add_ca(dir.path(), "ca1");
    let srv = Server::start(dir.path(), &[]);
    let c = client();

    // Several good codes, different accounts and keys: all valid, in order.
    let keys: Vec<KeyId> = (0..3).map(|_| key_id()).collect();
    let owners = ["alice@example.org", "bob@example.org", "alice@example.org"];
    let mut good = Vec::new();
    for (a, k) in owners.iter().zip(&keys) {
        good.push((*a, totp(&c, &srv.url, a, PW, k).await.totp, k));
    }
    let items: Vec<_> = good.iter().map(|(a, t, k)| (*a, t.as_str(), *k)).collect();
    let r = batch(&c, &srv.url, &cred, &items).await;
    assert_eq!(r.results.len(), 3);
    for (res, (a, _, k)) in r.results.iter().zip(&good) {
        assert!(res.valid, "{res:?}");
        assert_eq!(res.account.as_ref().map(|x| x.as_str()), Some(*a));
        assert_eq!(res.key_id.as_ref(), Some(*k));
    }

    // A good code, a wrong code, the good code again, an unknown account.
    let (kb, kc) = (key_id(), key_id());
    let b = totp(&c, &srv.url, "bob@example.org", PW, &kb).await.totp;
    let cc = totp(&c, &srv.url, "carol@example.org", PW, &kc).await.totp;
    let bad = wrong(&cc);
    let r = batch(
        &c,
        &srv.url,
        &cred,
        &[
            ("bob@example.org", &b, &kb),
            ("carol@example.org", &bad, &kc),
            ("bob@example.org", &b, &kb),
            ("dave@example.org", &b, &kb),
        ],
    )
    .await;
    assert_eq!(r.results.len(), 4);
    let mut twice = [&r.results[0], &r.results[2]];
    twice.sort_by_key(|x| !x.valid);
    assert!(twice[0].valid, "{twice:?}");
    assert_eq!(twice[1].reason, Some(ValidateReason::Replayed));
    assert_eq!(r.results[1].reason, Some(ValidateReason::Invalid));
    assert_eq!(r.results[3].reason, Some(ValidateReason::UnknownAccount));

    // What a batch used up is replayed through the single endpoint.
    for (a, t, k) in good.iter().map(|(a, t, k)| (*a, t.as_str(), *k)).chain([(
        "bob@example.org",
        b.as_str(),
        &kb,
    )]) {
        let r = validate(&c, &srv.url, "ca1", &cred, a, t, k).await;
        assert_eq!(r.reason, Some(ValidateReason::Replayed), "{a}");
    }
    // Carol's code was not used up by the wrong one.
    let r = validate(&c, &srv.url, "ca1", &cred, "carol@example.org", &cc, &kc).await;
    assert!(r.valid, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_batches_use_up_nothing() {
    let dir = data_dir();
    add_account(dir.path(), "alice@example.org", PW);
    let cred = add_ca(dir.path(), "ca1");
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    let k = key_id();
    let code = totp(&c, &srv.url, "alice@example.org", PW, &k).await.totp;
    let item = json!({"account": "alice@example.org", "totp": code, "key_id": k});
    let path = "/v1/validate/batch";

    // 0 and 65 items.
    for n in [0, 65] {
        let body = json!({ "items": vec![item.clone(); n] });
        let resp = post_batch(&c, &srv.url, "ca1", &cred, path, &body).await;
        assert_problem(resp, 400, "bad-request").await;
    }
    // An item whose account does not parse, or whose key ID does not.
    let bad_account = json!({"account": "not an address", "totp": code, "key_id": k});
    let bad_key = json!({"account": "alice@example.org", "totp": code, "key_id": "nope"});
    for bad in [bad_account, bad_key] {
        let body = json!({ "items": [item.clone(), bad] });
        let resp = post_batch(&c, &srv.url, "ca1", &cred, path, &body).await;
        assert_problem(resp, 400, "bad-request").await;
    }
    // Signed for the single path, signed by an unknown CA, or not signed.
    let body = json!({ "items": [item.clone()] });
    let resp = post_batch(&c, &srv.url, "ca1", &cred, "/v1/validate", &body).await;
    assert_problem(resp, 401, "unauthorized").await;
    let resp = post_batch(&c, &srv.url, "ca2", &cred, path, &body).await;
    assert_problem(resp, 401, "unauthorized").await;
    let resp = c
        .post(format!("{}{path}", srv.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_problem(resp, 401, "unauthorized").await;

    // None of that used the code.
    let r = validate(&c, &srv.url, "ca1", &cred, "alice@example.org", &code, &k).await;
    assert!(r.valid, "{r:?}");
}
