//! Authentication of CAs and account holders, and malformed requests: every
//! refusal is a problem document with a 4xx status.

mod common;

use common::*;
use mailid_shared::timefmt::now_unix;

const PW: &str = "s3cret-pass";
const ME: &str = "alice@example.org";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn validate_refuses_unauthenticated_callers() {
    let dir = data_dir();
    add_account(dir.path(), ME, PW);
    let cred = add_ca(dir.path(), "ca1");
    let other = add_ca(dir.path(), "ca2");
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    let k = key_id();
    let t = totp(&c, &srv.url, ME, PW, &k).await;
    let body = serde_json::json!({"account": ME, "totp": t.totp, "key_id": k}).to_string();
    let url = format!("{}/v1/validate", srv.url);

    // No credential at all.
    let resp = c
        .post(&url)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_problem(resp, 401, "unauthorized").await;
    // Signed with another CA's credential.
    let resp = validate_signed_at(&c, &srv.url, "ca1", &other, body.as_bytes(), now_unix()).await;
    assert_problem(resp, 401, "unauthorized").await;
    // Unknown CA name.
    let resp = validate_signed_at(&c, &srv.url, "nope", &cred, body.as_bytes(), now_unix()).await;
    assert_problem(resp, 401, "unauthorized").await;
    // Timestamp 61 s off, either way.
    for off in [-61, 61] {
        let resp = validate_signed_at(
            &c,
            &srv.url,
            "ca1",
            &cred,
            body.as_bytes(),
            now_unix() + off,
        )
        .await;
        assert_problem(resp, 401, "unauthorized").await;
    }
    // Signature over another body.
    let cr = mailid_shared::authsig::Credential::parse(&cred).unwrap();
    let ts = now_unix();
    let sig = cr.sign("POST", "/v1/validate", ts, b"{}");
    let resp = c
        .post(&url)
        .header("x-mailid-ca", "ca1")
        .header("x-mailid-timestamp", ts.to_string())
        .header("x-mailid-signature", sig)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_problem(resp, 401, "unauthorized").await;

    // None of that used the code.
    let resp = validate_signed_at(&c, &srv.url, "ca2", &other, body.as_bytes(), now_unix()).await;
    assert_eq!(resp.status().as_u16(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["valid"], true, "{v}");

    // Removing a CA takes effect at once on the running server.
    let t = totp(&c, &srv.url, ME, PW, &k).await;
    let body = serde_json::json!({"account": ME, "totp": t.totp, "key_id": k}).to_string();
    mta_ok(dir.path(), &["ca", "remove", "ca1"], None);
    let resp = validate_signed_at(&c, &srv.url, "ca1", &cred, body.as_bytes(), now_unix()).await;
    assert_problem(resp, 401, "unauthorized").await;
    let resp = validate_signed_at(&c, &srv.url, "ca2", &other, body.as_bytes(), now_unix()).await;
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["valid"], true, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn totp_refuses_wrong_password_disabled_and_unknown_accounts() {
    let dir = data_dir();
    add_account(dir.path(), ME, PW);
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    let k = key_id();
    let (s, _) = totp_raw(&c, &srv.url, ME, "wrong", &k).await;
    assert_eq!(s, 401);
    let (s, _) = totp_raw(&c, &srv.url, "nobody@example.org", PW, &k).await;
    assert_eq!(s, 401);
    let (s, _) = totp_raw(&c, &srv.url, "not an address", PW, &k).await;
    assert_eq!(s, 401);
    let resp = c
        .post(format!("{}/v1/totp", srv.url))
        .json(&serde_json::json!({ "key_id": k }))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().contains_key("www-authenticate"));
    assert_problem(resp, 401, "unauthorized").await;
    // Upper-case address logs in as the same account.
    let (s, _) = totp_raw(&c, &srv.url, "Alice@Example.ORG", PW, &k).await;
    assert_eq!(s, 200);

    mta_ok(dir.path(), &["account", "disable", ME], None);
    let (s, body) = totp_raw(&c, &srv.url, ME, PW, &k).await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(body["type"], "urn:mailid:error:unauthorized");
    mta_ok(dir.path(), &["account", "enable", ME], None);
    assert_eq!(totp_raw(&c, &srv.url, ME, PW, &k).await.0, 200);

    // A new password replaces the old one at once.
    mta_ok(
        dir.path(),
        &["account", "passwd", ME, "--password-stdin"],
        Some("newpass\r\n"),
    );
    assert_eq!(totp_raw(&c, &srv.url, ME, PW, &k).await.0, 401);
    assert_eq!(totp_raw(&c, &srv.url, ME, "newpass", &k).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disabled_account_codes_are_refused_as_invalid() {
    let dir = data_dir();
    add_account(dir.path(), ME, PW);
    let cred = add_ca(dir.path(), "ca1");
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    let k = key_id();
    let t = totp(&c, &srv.url, ME, PW, &k).await;
    mta_ok(dir.path(), &["account", "disable", ME], None);
    let r = validate(&c, &srv.url, "ca1", &cred, ME, &t.totp, &k).await;
    assert!(!r.valid);
    assert_eq!(
        r.reason,
        Some(mailid_shared::protocol::ValidateReason::Invalid)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_requests_get_4xx_problem_documents() {
    let dir = data_dir();
    add_account(dir.path(), ME, PW);
    let cred = add_ca(dir.path(), "ca1");
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    let totp_url = format!("{}/v1/totp", srv.url);
    let send = |body: Vec<u8>| {
        c.post(&totp_url)
            .basic_auth(ME, Some(PW))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_problem(
        send(b"{not json".to_vec()).await.unwrap(),
        400,
        "bad-request",
    )
    .await;
    assert_problem(send(b"{}".to_vec()).await.unwrap(), 400, "bad-request").await;
    assert_problem(
        send(br#"{"key_id":"NOT-A-KEY-ID!"}"#.to_vec())
            .await
            .unwrap(),
        400,
        "bad-request",
    )
    .await;
    assert_problem(
        send(br#"{"key_id":42}"#.to_vec()).await.unwrap(),
        400,
        "bad-request",
    )
    .await;
    let big = format!(r#"{{"key_id":"{}"}}"#, "A".repeat(1024 * 1024));
    assert_problem(
        send(big.into_bytes()).await.unwrap(),
        413,
        "payload-too-large",
    )
    .await;
    let resp = c
        .post(&totp_url)
        .basic_auth(ME, Some(PW))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_problem(resp, 400, "bad-request").await;

    // Signed but malformed validations.
    for body in [
        b"{not json".to_vec(),
        br#"{"account":"alice@example.org","totp":"12345678"}"#.to_vec(),
        br#"{"account":"alice@example.org","totp":"12345678","key_id":"AAAA"}"#.to_vec(),
        br#"{"account":"not an address","totp":"12345678","key_id":"AAAA"}"#.to_vec(),
    ] {
        let resp = validate_signed_at(&c, &srv.url, "ca1", &cred, &body, now_unix()).await;
        assert_problem(resp, 400, "bad-request").await;
    }
    let big = vec![b' '; 1024 * 1024];
    let resp = validate_signed_at(&c, &srv.url, "ca1", &cred, &big, now_unix()).await;
    assert_problem(resp, 413, "payload-too-large").await;
    // Just over 64 KiB is refused too.
    let resp = send(vec![b' '; 64 * 1024 + 1]).await.unwrap();
    assert_problem(resp, 413, "payload-too-large").await;

    // Unknown routes and methods, bad identity addresses.
    let resp = c.get(format!("{}/v1/nope", srv.url)).send().await.unwrap();
    assert_problem(resp, 404, "not-found").await;
    let resp = c.get(format!("{}/v1/totp", srv.url)).send().await.unwrap();
    assert_eq!(resp.status().as_u16() / 100, 4);
    let resp = c
        .get(format!("{}/v1/identity/not%20an%20address", srv.url))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 400, "bad-request").await;
    let resp = c
        .get(format!(
            "{}/v1/identity/BADKEY%3Falice@example.org",
            srv.url
        ))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 400, "bad-request").await;
    let resp = c
        .put(format!("{}/v1/identity", srv.url))
        .basic_auth(ME, Some(PW))
        .json(&serde_json::json!({"certificate": "garbage"}))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 400, "bad-request").await;
    let resp = c
        .get(format!("{}/v1/identity/alice@example.org", srv.url))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 404, "not-found").await;
}

#[test]
fn plain_http_only_on_loopback() {
    let dir = data_dir();
    let out = mta(dir.path(), &["serve", "--listen", "0.0.0.0:0"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing plain HTTP"), "{err}");
}

/// POST /v1/totp and PUT /v1/identity check the caller before the body,
/// as /v1/validate does: without (valid) credentials the answer is 401
/// whatever the body is; an oversize body is still 413 for anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn holder_routes_authenticate_before_reading_the_body() {
    let dir = data_dir();
    add_account(dir.path(), ME, PW);
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    let bodies: [(&[u8], Option<&str>); 4] = [
        (b"{not json", Some("application/json")),
        (b"{}", Some("application/json")),
        (
            b"{\"key_id\":42,\"certificate\":7}",
            Some("application/json"),
        ),
        (b"{not json", None),
    ];
    for (method, path) in [("POST", "/v1/totp"), ("PUT", "/v1/identity")] {
        let url = format!("{}{path}", srv.url);
        for (body, ctype) in bodies {
            for password in [None, Some("wrong")] {
                let mut req = c.request(method.parse().unwrap(), &url).body(body.to_vec());
                if let Some(ct) = ctype {
                    req = req.header("content-type", ct);
                }
                if let Some(pw) = password {
                    req = req.basic_auth(ME, Some(pw));
                }
                let resp = req.send().await.unwrap();
                assert_eq!(
                    resp.status().as_u16(),
                    401,
                    "{method} {path} {:?} {ctype:?} {password:?}",
                    String::from_utf8_lossy(body)
                );
                assert_problem(resp, 401, "unauthorized").await;
            }
        }
        // Authenticated, the same broken body is a 400.
        let resp = c
            .request(method.parse().unwrap(), &url)
            .basic_auth(ME, Some(PW))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_problem(resp, 400, "bad-request").await;
        // Oversize: 413 with or without credentials.
        let resp = c
            .request(method.parse().unwrap(), &url)
            .header("content-type", "application/json")
            .body(vec![b' '; 64 * 1024 + 1])
            .send()
            .await
            .unwrap();
        assert_problem(resp, 413, "payload-too-large").await;
    }
}
