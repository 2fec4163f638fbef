//! Identity publication: uploads checked against a trusted CA, validity,
//! the account and the CA's CRL (served over loopback by a tiny HTTP
//! server in the test); lookups by plain and strong address.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use common::pki::{Leaf, TestCa};
use common::*;
use mailid_shared::KeyId;
use time::{Duration, OffsetDateTime};

const PW: &str = "identity-test-pw";
const ME: &str = "alice@example.org";

type Crls = Arc<Mutex<HashMap<String, Vec<u8>>>>;

/// Serves `GET /{name}` from the map; anything missing is 503.
async fn crl_server(crls: Crls) -> String {
    async fn get(State(c): State<Crls>, Path(name): Path<String>) -> Result<Vec<u8>, StatusCode> {
        c.lock()
            .unwrap()
            .get(&name)
            .cloned()
            .ok_or(StatusCode::SERVICE_UNAVAILABLE)
    }
    let app = axum::Router::new()
        .route("/{name}", axum::routing::get(get))
        .with_state(crls);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

async fn upload(
    c: &reqwest::Client,
    url: &str,
    leaf: &Leaf,
    chain: Option<&str>,
) -> reqwest::Response {
    let mut body = serde_json::json!({ "certificate": leaf.cert_pem });
    if let Some(ch) = chain {
        body["chain"] = ch.into();
    }
    c.put(format!("{url}/v1/identity"))
        .basic_auth(ME, Some(PW))
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn key_of(leaf: &Leaf) -> KeyId {
    use der::{Decode, Encode};
    let cert = x509_cert::Certificate::from_der(&leaf.der).unwrap();
    KeyId::of_spki(
        &cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_are_checked_and_published() {
    let dir = data_dir();
    add_account(dir.path(), ME, PW);
    add_account(dir.path(), "bob@example.org", PW);
    let ca = TestCa::new("Test CA");
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
    let crls: Crls = Arc::default();
    let crl_base = crl_server(crls.clone()).await;
    crls.lock()
        .unwrap()
        .insert("main.crl".into(), ca.crl(&[2], 1));
    let main_crl = format!("{crl_base}/main.crl");
    let srv = Server::start(dir.path(), &[]);
    let c = client();

    // Accepted, and published.
    let good = ca.valid_identity(ME, 1, &main_crl);
    let resp = upload(&c, &srv.url, &good, None).await;
    assert_eq!(resp.status().as_u16(), 200);
    let up: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(up["account"], ME);
    assert_eq!(up["serial"], "01");
    let kid = key_of(&good);
    assert_eq!(up["key_id"], kid.to_string());
    let got: serde_json::Value = c
        .get(format!("{}/v1/identity/{ME}", srv.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["account"], ME);
    assert_eq!(
        mailid_shared::pem::decode_one(got["certificate"].as_str().unwrap(), &["CERTIFICATE"])
            .unwrap(),
        good.der
    );
    let chain =
        mailid_shared::pem::decode_chain(got["chain"].as_str().unwrap(), "CERTIFICATE").unwrap();
    assert_eq!(
        chain,
        vec![mailid_shared::pem::decode_one(&ca.pem, &["CERTIFICATE"]).unwrap()]
    );
    assert_eq!(got["key_id"], kid.to_string());
    assert_eq!(got["serial"], "01");

    // Strong addresses, percent-encoded.
    let other = key_id();
    for (path, status) in [
        (format!("{kid}%3F{ME}"), 200),
        (format!("{kid}%3F%3F{ME}"), 200),
        (format!("%3F{ME}"), 200),
        ("Alice@Example.org".to_string(), 200),
        (format!("{other}%3F{ME}"), 404),
        ("bob@example.org".to_string(), 404),
    ] {
        let resp = c
            .get(format!("{}/v1/identity/{path}", srv.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{path}");
    }

    // Another account's certificate.
    let bobs = ca.valid_identity("bob@example.org", 3, &main_crl);
    assert_problem(upload(&c, &srv.url, &bobs, None).await, 400, "bad-request").await;
    // Revoked (serial 2 is on the CRL): conflict.
    let revoked = ca.valid_identity(ME, 2, &main_crl);
    assert_problem(upload(&c, &srv.url, &revoked, None).await, 409, "conflict").await;
    // From a CA the MTA does not trust (even with the same name).
    let rogue = TestCa::new("Test CA");
    let untrusted = rogue.valid_identity(ME, 4, &main_crl);
    assert_problem(
        upload(&c, &srv.url, &untrusted, Some(&rogue.pem)).await,
        400,
        "bad-request",
    )
    .await;
    // Expired, and not yet valid.
    let now = OffsetDateTime::now_utc();
    let expired = ca.identity(
        ME,
        5,
        Some(&main_crl),
        now - Duration::days(10),
        now - Duration::days(1),
    );
    assert_problem(
        upload(&c, &srv.url, &expired, None).await,
        400,
        "bad-request",
    )
    .await;
    let future = ca.identity(
        ME,
        6,
        Some(&main_crl),
        now + Duration::days(1),
        now + Duration::days(10),
    );
    assert_problem(
        upload(&c, &srv.url, &future, None).await,
        400,
        "bad-request",
    )
    .await;
    // No credentials.
    let resp = c
        .put(format!("{}/v1/identity", srv.url))
        .json(&serde_json::json!({ "certificate": good.cert_pem }))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 401, "unauthorized").await;

    // None of the refusals replaced the published identity.
    let got: serde_json::Value = c
        .get(format!("{}/v1/identity/{ME}", srv.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["serial"], "01");

    // A newer identity replaces it.
    let newer = ca.valid_identity(ME, 7, &main_crl);
    assert_eq!(
        upload(&c, &srv.url, &newer, None).await.status().as_u16(),
        200
    );
    let resp = c
        .get(format!("{}/v1/identity/{kid}%3F{ME}", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404, "old key no longer published");
    let got: serde_json::Value = c
        .get(format!("{}/v1/identity/{ME}", srv.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["serial"], "07");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crl_availability_signature_and_intermediates() {
    let dir = data_dir();
    add_account(dir.path(), ME, PW);
    let root = TestCa::new("Root CA");
    let ca_file = dir.path().join("root.pem");
    std::fs::write(&ca_file, &root.pem).unwrap();
    mta_ok(
        dir.path(),
        &[
            "ca",
            "add",
            "root",
            "--trust-cert",
            ca_file.to_str().unwrap(),
        ],
        None,
    );
    let crls: Crls = Arc::default();
    let base = crl_server(crls.clone()).await;
    let srv = Server::start(dir.path(), &[]);
    let c = client();

    // No CRL can be fetched and none is cached: 503.
    let leaf = root.valid_identity(ME, 10, &format!("{base}/missing.crl"));
    assert_problem(
        upload(&c, &srv.url, &leaf, None).await,
        503,
        "mta-unavailable",
    )
    .await;

    // A CRL signed by another key with the issuer's name is not used.
    let forger = TestCa::new("Root CA");
    crls.lock()
        .unwrap()
        .insert("forged.crl".into(), forger.crl(&[], 1));
    let leaf = root.valid_identity(ME, 11, &format!("{base}/forged.crl"));
    assert_problem(
        upload(&c, &srv.url, &leaf, None).await,
        503,
        "mta-unavailable",
    )
    .await;

    // A stale CRL (past nextUpdate) is refetched; when the fetch fails the
    // cached one is used.
    let now = OffsetDateTime::now_utc();
    crls.lock().unwrap().insert(
        "stale.crl".into(),
        root.crl_at(&[13], 1, now - Duration::hours(2), now - Duration::hours(1)),
    );
    let stale_url = format!("{base}/stale.crl");
    assert_eq!(
        upload(&c, &srv.url, &root.valid_identity(ME, 12, &stale_url), None)
            .await
            .status()
            .as_u16(),
        200
    );
    crls.lock().unwrap().remove("stale.crl");
    assert_eq!(
        upload(&c, &srv.url, &root.valid_identity(ME, 14, &stale_url), None)
            .await
            .status()
            .as_u16(),
        200
    );
    assert_problem(
        upload(&c, &srv.url, &root.valid_identity(ME, 13, &stale_url), None).await,
        409,
        "conflict",
    )
    .await;

    // A leaf from an intermediate chains to the trusted root only with the
    // intermediate in the chain; its CRL is the intermediate's.
    let sub = root.intermediate("Issuing CA");
    crls.lock()
        .unwrap()
        .insert("sub.crl".into(), sub.crl(&[], 1));
    let leaf = sub.valid_identity(ME, 20, &format!("{base}/sub.crl"));
    assert_problem(upload(&c, &srv.url, &leaf, None).await, 400, "bad-request").await;
    let resp = upload(&c, &srv.url, &leaf, Some(&sub.pem)).await;
    assert_eq!(resp.status().as_u16(), 200);
    let got: serde_json::Value = c
        .get(format!("{}/v1/identity/{ME}", srv.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let chain =
        mailid_shared::pem::decode_chain(got["chain"].as_str().unwrap(), "CERTIFICATE").unwrap();
    assert_eq!(chain.len(), 2, "issuer first, root last");
    assert_eq!(
        chain[1],
        mailid_shared::pem::decode_one(&root.pem, &["CERTIFICATE"]).unwrap()
    );
}
