//! HTTPS with rustls and TLS client-certificate login, with certificates
//! made in the test.

mod common;

use common::pki::TestCa;
use common::*;

const PW: &str = "tls-test-password";

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_and_client_certificate_login() {
    let dir = data_dir();
    add_account(dir.path(), "alice@example.org", PW);
    add_account(dir.path(), "dora@example.org", PW);
    mta_ok(
        dir.path(),
        &["account", "disable", "dora@example.org"],
        None,
    );
    let cred = add_ca(dir.path(), "ca1");
    let pki = tempfile::tempdir().unwrap();
    let server_ca = TestCa::new("Server CA");
    let client_ca = TestCa::new("Client CA");
    let rogue_ca = TestCa::new("Rogue CA");
    let server = server_ca.server();
    let cert = write(pki.path(), "server.pem", &server.cert_pem);
    let key = write(pki.path(), "server.key", &server.key_pem);
    let cca = write(pki.path(), "client-ca.pem", &client_ca.pem);
    let srv = Server::start(
        dir.path(),
        &["--tls-cert", &cert, "--tls-key", &key, "--client-ca", &cca],
    );
    assert!(srv.url.starts_with("https://127.0.0.1:"), "{}", srv.url);
    let root = reqwest::Certificate::from_pem(server_ca.pem.as_bytes()).unwrap();
    let with_identity = |leaf: &common::pki::Leaf| {
        let id =
            reqwest::Identity::from_pem(format!("{}{}", leaf.cert_pem, leaf.key_pem).as_bytes())
                .unwrap();
        reqwest::Client::builder()
            .tls_certs_only([root.clone()])
            .identity(id)
            .build()
            .unwrap()
    };
    let plain = reqwest::Client::builder()
        .tls_certs_only([root.clone()])
        .build()
        .unwrap();
    let k = key_id();

    // Basic login over HTTPS without a client certificate.
    let t = totp(&plain, &srv.url, "alice@example.org", PW, &k).await;
    assert_eq!(t.account.as_str(), "alice@example.org");

    // Client certificate alone.
    let alice = with_identity(&client_ca.client("alice@example.org"));
    let resp = alice
        .post(format!("{}/v1/totp", srv.url))
        .json(&serde_json::json!({ "key_id": k }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let t2: mailid_shared::protocol::TotpResponse = resp.json().await.unwrap();
    assert_eq!(t2.account.as_str(), "alice@example.org");
    let r = validate(
        &plain,
        &srv.url,
        "ca1",
        &cred,
        "alice@example.org",
        &t2.totp,
        &k,
    )
    .await;
    assert!(r.valid);

    // Certificates for an unknown or disabled account do not log in; Basic
    // still works beside them.
    for who in ["bob@example.org", "dora@example.org"] {
        let c = with_identity(&client_ca.client(who));
        let resp = c
            .post(format!("{}/v1/totp", srv.url))
            .json(&serde_json::json!({ "key_id": k }))
            .send()
            .await
            .unwrap();
        assert_problem(resp, 401, "unauthorized").await;
        let (s, _) = totp_raw(&c, &srv.url, "alice@example.org", PW, &k).await;
        assert_eq!(s, 200);
    }

    // A certificate from a CA the server does not trust fails the handshake.
    let rogue = with_identity(&rogue_ca.client("alice@example.org"));
    let res = rogue
        .post(format!("{}/v1/totp", srv.url))
        .json(&serde_json::json!({ "key_id": k }))
        .send()
        .await;
    assert!(res.is_err(), "rogue client certificate accepted: {res:?}");
}
