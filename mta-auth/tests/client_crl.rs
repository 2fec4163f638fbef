//! Revocation of TLS client certificates (`serve --client-crl`): a revoked
//! client certificate stops logging in while the service runs, others keep
//! working, a failing CRL source keeps the last good CRL, and a CRL that
//! cannot be loaded at start stops `serve`. CRLs are made by the test's
//! client CA (rcgen) and served over loopback by a tiny HTTP server.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::pki::{Leaf, TestCa};
use common::*;

const PW: &str = "client-crl-test-password";
const ME: &str = "alice@example.org";

/// The CRL the test server answers with; `None` answers 503.
type Served = Arc<Mutex<Option<Vec<u8>>>>;

async fn crl_server(served: Served) -> String {
    async fn get(State(s): State<Served>) -> Response {
        match s.lock().unwrap().clone() {
            Some(der) => (StatusCode::OK, der).into_response(),
            None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        }
    }
    let app = axum::Router::new()
        .route("/v1/crl.der", axum::routing::get(get))
        .with_state(served);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/crl.der", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_string()
}

struct Tls {
    root: reqwest::Certificate,
}

impl Tls {
    /// A client presenting `leaf`, with its own connection pool.
    fn client(&self, leaf: &Leaf) -> reqwest::Client {
        let id =
            reqwest::Identity::from_pem(format!("{}{}", leaf.cert_pem, leaf.key_pem).as_bytes())
                .unwrap();
        reqwest::Client::builder()
            .tls_certs_only([self.root.clone()])
            .identity(id)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }
}

/// `POST /v1/totp` with the client certificate only: the status, or `None`
/// when the TLS handshake (or the connection) failed.
async fn cert_login(c: &reqwest::Client, url: &str) -> Option<u16> {
    c.post(format!("{url}/v1/totp"))
        .json(&serde_json::json!({ "key_id": key_id() }))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// Regression (issue 11, item 6): a client certificate revoked while the
/// MTA runs stops fetching codes once the refreshed CRL lists it, also on a
/// connection opened before; a CRL source that then fails keeps the last
/// good CRL; the holder's other certificate keeps working throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_client_certificate_stops_logging_in() {
    let dir = data_dir();
    add_account(dir.path(), ME, PW);
    let pki = tempfile::tempdir().unwrap();
    let server_ca = TestCa::new("Server CA");
    let client_ca = TestCa::new("Client CA");
    let server = server_ca.server();
    let cert = write(pki.path(), "server.pem", server.cert_pem.as_bytes());
    let key = write(pki.path(), "server.key", server.key_pem.as_bytes());
    let cca = write(pki.path(), "client-ca.pem", client_ca.pem.as_bytes());
    let served: Served = Arc::new(Mutex::new(Some(client_ca.crl(&[], 1))));
    let crl_url = crl_server(served.clone()).await;
    let srv = Server::start(
        dir.path(),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--client-ca",
            &cca,
            "--client-crl",
            &crl_url,
            "--client-crl-refresh-secs",
            "1",
        ],
    );
    let tls = Tls {
        root: reqwest::Certificate::from_pem(server_ca.pem.as_bytes()).unwrap(),
    };
    let lost_leaf = client_ca.client_with_serial(ME, 1001);
    let current_leaf = client_ca.client_with_serial(ME, 1002);
    let current = tls.client(&current_leaf);
    // Kept open across the revocation (keep-alive).
    let pooled = tls.client(&lost_leaf);
    assert_eq!(
        cert_login(&tls.client(&lost_leaf), &srv.url).await,
        Some(200)
    );
    assert_eq!(cert_login(&current, &srv.url).await, Some(200));
    assert_eq!(cert_login(&pooled, &srv.url).await, Some(200));

    // The laptop is lost: the CA revokes serial 1001.
    *served.lock().unwrap() = Some(client_ca.crl(&[1001], 2));
    let start = Instant::now();
    let (fresh, on_open_connection) = loop {
        let on_open = cert_login(&pooled, &srv.url).await;
        let fresh = cert_login(&tls.client(&lost_leaf), &srv.url).await;
        if fresh != Some(200) {
            break (fresh, on_open);
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the revoked client certificate still logs in 15 s after the CRL listed it"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "revocation picked up after {:?}: new connection {fresh:?}, open connection {on_open_connection:?}",
        start.elapsed()
    );
    assert!(matches!(fresh, None | Some(401)), "{fresh:?}");
    let again = cert_login(&pooled, &srv.url).await;
    assert!(
        matches!(again, None | Some(401)),
        "open connection: {again:?}"
    );
    assert_eq!(cert_login(&current, &srv.url).await, Some(200));
    assert_eq!(
        cert_login(&tls.client(&current_leaf), &srv.url).await,
        Some(200)
    );
    // Basic still works for the holder beside the revoked certificate's
    // refusal (over a client without a certificate).
    let plain = reqwest::Client::builder()
        .tls_certs_only([tls.root.clone()])
        .build()
        .unwrap();
    let (s, _) = totp_raw(&plain, &srv.url, ME, PW, &key_id()).await;
    assert_eq!(s, 200);

    // The CRL source fails: the last good CRL stays in force.
    *served.lock().unwrap() = None;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let fresh = cert_login(&tls.client(&lost_leaf), &srv.url).await;
    assert!(matches!(fresh, None | Some(401)), "{fresh:?}");
    assert_eq!(
        cert_login(&tls.client(&current_leaf), &srv.url).await,
        Some(200)
    );
    let log = srv.stop();
    assert!(
        log.contains("client CRL refresh failed; keeping the last good CRL"),
        "{log}"
    );
}

/// A CRL given as a file is read at start: a certificate it lists is
/// refused from the first handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crl_file_refuses_listed_certificates_from_the_start() {
    let dir = data_dir();
    add_account(dir.path(), ME, PW);
    let pki = tempfile::tempdir().unwrap();
    let server_ca = TestCa::new("Server CA");
    let client_ca = TestCa::new("Client CA");
    let server = server_ca.server();
    let cert = write(pki.path(), "server.pem", server.cert_pem.as_bytes());
    let key = write(pki.path(), "server.key", server.key_pem.as_bytes());
    let cca = write(pki.path(), "client-ca.pem", client_ca.pem.as_bytes());
    let crl = write(pki.path(), "client.crl", &client_ca.crl(&[7], 1));
    let srv = Server::start(
        dir.path(),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--client-ca",
            &cca,
            "--client-crl",
            &crl,
        ],
    );
    let tls = Tls {
        root: reqwest::Certificate::from_pem(server_ca.pem.as_bytes()).unwrap(),
    };
    let revoked = cert_login(&tls.client(&client_ca.client_with_serial(ME, 7)), &srv.url).await;
    assert!(matches!(revoked, None | Some(401)), "{revoked:?}");
    let other = cert_login(&tls.client(&client_ca.client_with_serial(ME, 8)), &srv.url).await;
    assert_eq!(other, Some(200));
}

/// A CRL that cannot be loaded at start (missing, not a CRL, or not issued
/// by a `--client-ca` certificate) stops `serve` with one line, exit 1.
#[test]
fn an_unloadable_client_crl_stops_serve() {
    let dir = data_dir();
    let pki = tempfile::tempdir().unwrap();
    let server_ca = TestCa::new("Server CA");
    let client_ca = TestCa::new("Client CA");
    let other_ca = TestCa::new("Other CA");
    let server = server_ca.server();
    let cert = write(pki.path(), "server.pem", server.cert_pem.as_bytes());
    let key = write(pki.path(), "server.key", server.key_pem.as_bytes());
    let cca = write(pki.path(), "client-ca.pem", client_ca.pem.as_bytes());
    let missing = pki.path().join("missing.crl").display().to_string();
    let garbage = write(pki.path(), "garbage.crl", b"not a CRL");
    let foreign = write(pki.path(), "foreign.crl", &other_ca.crl(&[], 1));
    for (crl, expect) in [
        (missing.as_str(), "reading"),
        (garbage.as_str(), "unparsable CRL"),
        (
            foreign.as_str(),
            "is not a CRL issued by a --client-ca certificate",
        ),
        ("http://127.0.0.1:9/v1/crl.der", "fetching"),
    ] {
        let out = mta(
            dir.path(),
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--client-ca",
                &cca,
                "--client-crl",
                crl,
            ],
            None,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{crl}: {err}");
        assert!(out.stdout.is_empty(), "{crl}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{crl}: {err}");
        assert!(
            lines[0].starts_with("mailid-mta-auth: ") && lines[0].contains(expect),
            "{crl}: {err}"
        );
    }
}
