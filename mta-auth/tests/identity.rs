//! Identity publication: uploads checked against a trusted CA, validity,
//! the account and the CA's CRL (served over loopback by a tiny HTTP
//! server in the test); lookups by plain and strong address.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::pki::{Leaf, TestCa};
use common::*;
use mailid_shared::KeyId;
use time::{Duration, OffsetDateTime};

const PW: &str = "identity-test-pw";
const ME: &str = "alice@example.org";

/// What the test CRL server serves and has seen.
#[derive(Default)]
struct CrlState {
    /// CRLs by name.
    files: HashMap<String, Vec<u8>>,
    /// Requests per name.
    hits: HashMap<String, usize>,
    /// Requests per name answered 304 Not Modified.
    not_modified: HashMap<String, usize>,
    /// Delay before every answer.
    delay: std::time::Duration,
}

type Crls = Arc<Mutex<CrlState>>;

/// Serves `GET /{name}` from the map with a strong ETag (a digest of the
/// CRL) and honours `If-None-Match` with 304, as the CA does; anything
/// missing is 503.
async fn crl_server(crls: Crls) -> String {
    async fn get(State(c): State<Crls>, Path(name): Path<String>, headers: HeaderMap) -> Response {
        let (body, delay) = {
            let mut st = c.lock().unwrap();
            *st.hits.entry(name.clone()).or_default() += 1;
            (st.files.get(&name).cloned(), st.delay)
        };
        tokio::time::sleep(delay).await;
        let Some(body) = body else {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        };
        use sha2::Digest;
        let digest = sha2::Sha256::digest(&body);
        let etag = format!("\"{}\"", data_encoding::HEXLOWER.encode(&digest[..8]));
        let matches = headers
            .get("if-none-match")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
        if matches {
            *c.lock().unwrap().not_modified.entry(name).or_default() += 1;
            return (StatusCode::NOT_MODIFIED, [("etag", etag)]).into_response();
        }
        (StatusCode::OK, [("etag", etag)], body).into_response()
    }
    let app = axum::Router::new()
        .route("/{name}", axum::routing::get(get))
        .with_state(crls);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

fn serve_crl(crls: &Crls, name: &str, der: Vec<u8>) {
    crls.lock().unwrap().files.insert(name.into(), der);
}

fn hits(crls: &Crls, name: &str) -> usize {
    crls.lock().unwrap().hits.get(name).copied().unwrap_or(0)
}

fn not_modified(crls: &Crls, name: &str) -> usize {
    crls.lock()
        .unwrap()
        .not_modified
        .get(name)
        .copied()
        .unwrap_or(0)
}

/// `GET /v1/identity/{path}`: status and body.
async fn lookup(c: &reqwest::Client, url: &str, path: &str) -> (u16, serde_json::Value) {
    let resp = c
        .get(format!("{url}/v1/identity/{path}"))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// An initialised data directory with account ME and a CA trusted as
/// "testca".
fn setup(ca: &TestCa) -> tempfile::TempDir {
    let dir = data_dir();
    add_account(dir.path(), ME, PW);
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
    key_of_version(leaf, 2)
}

/// The strong key ID of version `v` (0 to 3) of the leaf's key.
fn key_of_version(leaf: &Leaf, v: u8) -> KeyId {
    use der::{Decode, Encode};
    let cert = x509_cert::Certificate::from_der(&leaf.der).unwrap();
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .unwrap();
    KeyId::compute(v, &spki).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_are_checked_and_published() {
    let ca = TestCa::new("Test CA");
    let dir = setup(&ca);
    add_account(dir.path(), "bob@example.org", PW);
    let crls: Crls = Arc::default();
    let crl_base = crl_server(crls.clone()).await;
    serve_crl(&crls, "main.crl", ca.crl(&[2], 1));
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

    // Strong addresses, percent-encoded; key IDs of every version (SPEC §3)
    // name the same key.
    let other = key_id();
    let (v0, v1, v3) = (
        key_of_version(&good, 0),
        key_of_version(&good, 1),
        key_of_version(&good, 3),
    );
    for (path, status) in [
        (format!("{kid}%3F{ME}"), 200),
        (format!("{v0}%3F{ME}"), 200),
        (format!("{v1}%3F%3F{ME}"), 200),
        (format!("{v3}%3F{ME}"), 200),
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
    serve_crl(&crls, "forged.crl", forger.crl(&[], 1));
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
    serve_crl(
        &crls,
        "stale.crl",
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
    crls.lock().unwrap().files.remove("stale.crl");
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
    serve_crl(&crls, "sub.crl", sub.crl(&[], 1));
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

/// SPEC §4: an upload is checked against the CA's latest CRL. After the CA
/// supersedes A with B (its served CRL lists A), uploading A again is
/// refused although the CRL the MTA fetched before is not yet past its
/// nextUpdate: every upload revalidates the cached CRL (conditional GET).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_revalidates_the_crl_so_a_superseded_certificate_is_refused() {
    let ca = TestCa::new("Test CA");
    let dir = setup(&ca);
    let crls: Crls = Arc::default();
    let base = crl_server(crls.clone()).await;
    let crl_url = format!("{base}/ca.crl");
    serve_crl(&crls, "ca.crl", ca.crl(&[], 1));
    let srv = Server::start(dir.path(), &[]);
    let c = client();

    // Enroll A, upload A.
    let a = ca.valid_identity(ME, 1, &crl_url);
    assert_eq!(upload(&c, &srv.url, &a, None).await.status().as_u16(), 200);
    // Uploading again asks the CA again; its CRL has not changed: 304.
    assert_eq!(upload(&c, &srv.url, &a, None).await.status().as_u16(), 200);
    assert_eq!(not_modified(&crls, "ca.crl"), 1, "a conditional GET");

    // Enroll B: the CA revokes A (superseded) and serves CRL 2.
    serve_crl(&crls, "ca.crl", ca.crl(&[1], 2));
    let b = ca.valid_identity(ME, 2, &crl_url);
    assert_eq!(upload(&c, &srv.url, &b, None).await.status().as_u16(), 200);
    // A again: revoked.
    assert_problem(upload(&c, &srv.url, &a, None).await, 409, "conflict").await;
    let (status, got) = lookup(&c, &srv.url, ME).await;
    assert_eq!(status, 200);
    assert_eq!(got["serial"], "02", "B stays published");

    // A CRL with a lower number (an old copy) does not replace the cached one.
    serve_crl(&crls, "ca.crl", ca.crl(&[], 1));
    assert_problem(upload(&c, &srv.url, &a, None).await, 409, "conflict").await;
    // The distribution point fails: the cached CRL is used.
    crls.lock().unwrap().files.remove("ca.crl");
    assert_problem(upload(&c, &srv.url, &a, None).await, 409, "conflict").await;
    assert_eq!(upload(&c, &srv.url, &b, None).await.status().as_u16(), 200);
    let (_, got) = lookup(&c, &srv.url, ME).await;
    assert_eq!(got["serial"], "02");
}

/// A published identity that its CA revokes stops being handed out: a
/// lookup checks the serial against the CA's CRL, revalidated after
/// `--crl-recheck-secs`, with one refresh at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoked_or_expired_published_identity_is_not_served() {
    let ca = TestCa::new("Test CA");
    let dir = setup(&ca);
    let crls: Crls = Arc::default();
    let base = crl_server(crls.clone()).await;
    let crl_url = format!("{base}/ca.crl");
    serve_crl(&crls, "ca.crl", ca.crl(&[], 1));
    let c = client();

    // Within the recheck interval lookups use the cached CRL: no fetch.
    let srv = Server::start(dir.path(), &["--crl-recheck-secs", "3600"]);
    let a = ca.valid_identity(ME, 1, &crl_url);
    assert_eq!(upload(&c, &srv.url, &a, None).await.status().as_u16(), 200);
    let kid = key_of(&a);
    serve_crl(&crls, "ca.crl", ca.crl(&[1], 2));
    let before = hits(&crls, "ca.crl");
    for _ in 0..3 {
        assert_eq!(lookup(&c, &srv.url, ME).await.0, 200);
    }
    assert_eq!(hits(&crls, "ca.crl"), before, "served from the cache");
    drop(srv);

    // After a restart the cache is revalidated on the first lookup.
    let srv = Server::start(dir.path(), &["--crl-recheck-secs", "1"]);
    for path in [ME.to_string(), format!("{kid}%3F{ME}"), format!("%3F{ME}")] {
        let resp = c
            .get(format!("{}/v1/identity/{path}", srv.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{path}");
        let doc: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(doc["type"], "urn:mailid:error:not-found");
        assert!(doc["detail"].as_str().unwrap().contains("revoked"), "{doc}");
    }

    // In a running server: B is published, then revoked (say by its holder
    // at the CA); once the recheck interval has passed, lookups give 404.
    let b = ca.valid_identity(ME, 2, &crl_url);
    assert_eq!(upload(&c, &srv.url, &b, None).await.status().as_u16(), 200);
    assert_eq!(lookup(&c, &srv.url, ME).await.1["serial"], "02");
    serve_crl(&crls, "ca.crl", ca.crl(&[1, 2], 3));
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let (status, doc) = lookup(&c, &srv.url, ME).await;
    assert_eq!(status, 404, "{doc}");
    assert!(doc["detail"].as_str().unwrap().contains("revoked"), "{doc}");

    // Single flight: while one lookup refreshes a slow CRL, the others
    // answer from the cache; the distribution point sees one request.
    let d = ca.valid_identity(ME, 4, &crl_url);
    assert_eq!(upload(&c, &srv.url, &d, None).await.status().as_u16(), 200);
    serve_crl(&crls, "ca.crl", ca.crl(&[1, 2], 4));
    crls.lock().unwrap().delay = std::time::Duration::from_millis(800);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let before = hits(&crls, "ca.crl");
    let lookups: Vec<_> = (0..8)
        .map(|_| {
            let (c, url) = (c.clone(), srv.url.clone());
            tokio::spawn(async move { lookup(&c, &url, ME).await.0 })
        })
        .collect();
    for l in lookups {
        assert_eq!(l.await.unwrap(), 200);
    }
    assert_eq!(hits(&crls, "ca.crl"), before + 1, "one refresh in flight");
    crls.lock().unwrap().delay = std::time::Duration::ZERO;

    // An expired published certificate: 404 as well.
    let now = OffsetDateTime::now_utc();
    let not_after = now + Duration::seconds(3);
    let e = ca.identity(ME, 5, Some(&crl_url), now - Duration::hours(1), not_after);
    assert_eq!(upload(&c, &srv.url, &e, None).await.status().as_u16(), 200);
    assert_eq!(lookup(&c, &srv.url, ME).await.0, 200);
    let wait = not_after - OffsetDateTime::now_utc() + Duration::milliseconds(1500);
    tokio::time::sleep(wait.try_into().unwrap_or_default()).await;
    let (status, doc) = lookup(&c, &srv.url, ME).await;
    assert_eq!(status, 404, "{doc}");
    assert!(doc["detail"].as_str().unwrap().contains("expired"), "{doc}");
}
