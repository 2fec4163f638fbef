//! The key backups API of SPEC §10 over real HTTP on loopback, with real
//! PKCS#8 keys encrypted by the pkcs8 crate: the round trip, who may see
//! and change what, every refusal (each stores nothing), the per-account
//! limit, disabled accounts, a restart, TLS client-certificate login, and
//! keys encrypted by `openssl pkcs8 -topk8` (accepted with AES-256-CBC and
//! read back by openssl; AES-128 and PBES1 refused).
//! Runs on SQLite, or on PostgreSQL with `MAILID_TEST_BACKEND=postgres`.

mod common;

use common::backup::{aes256, encrypt, encrypted_key, new_key, RECOVERY};
use common::pki::TestCa;
use common::*;
use mailid_shared::protocol::{BackupList, BackupStored, BACKUP_MAX_PEM, BACKUP_MAX_PER_ACCOUNT};
use mailid_shared::{pem, KeyId};
use pkcs8::der::Decode;
use pkcs8::pkcs5::pbes2;
use pkcs8::EncryptedPrivateKeyInfo;

const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";
const PW: &str = "backups-test-pw";

async fn put_raw(
    c: &reqwest::Client,
    url: &str,
    who: Option<(&str, &str)>,
    key: &str,
    body: &serde_json::Value,
) -> reqwest::Response {
    let mut req = c.put(format!("{url}/v1/backups/{key}")).json(body);
    if let Some((user, pw)) = who {
        req = req.basic_auth(user, Some(pw));
    }
    req.send().await.unwrap()
}

/// Stores a backup as `who` (password [`PW`]); must succeed.
async fn put(c: &reqwest::Client, url: &str, who: &str, key: &KeyId, pem: &str) -> BackupStored {
    let body = serde_json::json!({ "encrypted_key": pem });
    let resp = put_raw(c, url, Some((who, PW)), &key.to_string(), &body).await;
    let status = resp.status().as_u16();
    let cache = resp.headers().get("cache-control").cloned();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert_eq!(cache.unwrap(), "no-store");
    serde_json::from_str(&text).unwrap()
}

async fn list(c: &reqwest::Client, url: &str, who: &str) -> BackupList {
    let resp = c
        .get(format!("{url}/v1/backups"))
        .basic_auth(who, Some(PW))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    resp.json().await.unwrap()
}

async fn delete(c: &reqwest::Client, url: &str, who: &str, key: &str) -> reqwest::Response {
    c.delete(format!("{url}/v1/backups/{key}"))
        .basic_auth(who, Some(PW))
        .send()
        .await
        .unwrap()
}

fn keys(l: &BackupList) -> Vec<KeyId> {
    l.backups.iter().map(|b| b.key_id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_trip_replace_delete_and_restart() {
    let dir = data_dir();
    add_account(dir.path(), ALICE, PW);
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    assert!(list(&c, &srv.url, ALICE).await.backups.is_empty());

    let (k1, der1) = new_key();
    let (k2, pem2) = encrypted_key();
    let pem1 = aes256(&der1);
    let stored = put(&c, &srv.url, ALICE, &k1, &pem1).await;
    assert_eq!(stored.account.as_str(), ALICE);
    assert_eq!(stored.key_id, k1);
    assert!(mailid_shared::timefmt::parse_rfc3339(&stored.stored_at).is_some());
    put(&c, &srv.url, ALICE, &k2, &pem2).await;
    let l = list(&c, &srv.url, ALICE).await;
    assert_eq!(l.account.as_str(), ALICE);
    assert_eq!(l.backups.len(), 2);
    let got1 = l.backups.iter().find(|b| b.key_id == k1).unwrap();
    assert_eq!(got1.encrypted_key, pem1);
    // What comes back is the ciphertext sent: it decrypts to the key.
    let der = pem::decode_one(&got1.encrypted_key, &["ENCRYPTED PRIVATE KEY"]).unwrap();
    let plain = EncryptedPrivateKeyInfo::from_der(&der)
        .unwrap()
        .decrypt(RECOVERY)
        .unwrap();
    assert_eq!(plain.as_bytes(), der1.as_slice());
    // Ordered by stored_at, then key ID.
    let order: Vec<_> = l
        .backups
        .iter()
        .map(|b| (b.stored_at.clone(), b.key_id.as_bytes().to_vec()))
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);

    // The same key ID again replaces: still two, the new text.
    let pem1b = aes256(&der1);
    assert_ne!(pem1b, pem1);
    put(&c, &srv.url, ALICE, &k1, &pem1b).await;
    let l = list(&c, &srv.url, ALICE).await;
    assert_eq!(l.backups.len(), 2);
    let got1 = l.backups.iter().find(|b| b.key_id == k1).unwrap();
    assert_eq!(got1.encrypted_key, pem1b);

    // Key IDs are parsed, not compared as text: lower case without dashes
    // names the same key.
    let loose = k2.to_string().replace('-', "").to_lowercase();
    assert_eq!(delete(&c, &srv.url, ALICE, &loose).await.status(), 204);
    assert_eq!(keys(&list(&c, &srv.url, ALICE).await), vec![k1.clone()]);
    let again = delete(&c, &srv.url, ALICE, &k2.to_string()).await;
    assert_problem(again, 404, "not-found").await;

    // Writes are counted by result.
    let metrics = c
        .get(format!("{}/metrics", srv.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "mailid_mta_backup_writes_total{result=\"stored\"} 3",
        "mailid_mta_backup_writes_total{result=\"deleted\"} 1",
        "mailid_mta_backup_writes_total{result=\"not-found\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}: {metrics}");
    }

    // A restart keeps what was stored.
    let before = serde_json::to_value(list(&c, &srv.url, ALICE).await).unwrap();
    srv.stop();
    let srv = Server::start(dir.path(), &[]);
    let after = serde_json::to_value(list(&c, &srv.url, ALICE).await).unwrap();
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unauthenticated_and_other_accounts_are_refused() {
    let dir = data_dir();
    add_account(dir.path(), ALICE, PW);
    add_account(dir.path(), BOB, PW);
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    let (k, pem_a) = encrypted_key();
    let body = serde_json::json!({ "encrypted_key": pem_a });

    // No credentials, a wrong password, an unknown account: 401, nothing
    // stored, nothing listed or deleted.
    for who in [
        None,
        Some((ALICE, "wrong")),
        Some(("nobody@example.org", PW)),
    ] {
        let r = put_raw(&c, &srv.url, who, &k.to_string(), &body).await;
        assert_problem(r, 401, "unauthorized").await;
        let mut get = c.get(format!("{}/v1/backups", srv.url));
        let mut del = c.delete(format!("{}/v1/backups/{k}", srv.url));
        if let Some((u, p)) = who {
            get = get.basic_auth(u, Some(p));
            del = del.basic_auth(u, Some(p));
        }
        assert_problem(get.send().await.unwrap(), 401, "unauthorized").await;
        assert_problem(del.send().await.unwrap(), 401, "unauthorized").await;
    }
    // Unauthenticated with a bad body too: 401 before the body is read.
    let r = put_raw(&c, &srv.url, None, "not-a-key", &serde_json::json!({})).await;
    assert_problem(r, 401, "unauthorized").await;
    assert!(list(&c, &srv.url, ALICE).await.backups.is_empty());

    // Alice stores; Bob sees none of it, cannot delete it, and his upload
    // under the same key ID is his own row.
    put(&c, &srv.url, ALICE, &k, &pem_a).await;
    assert!(list(&c, &srv.url, BOB).await.backups.is_empty());
    assert_problem(
        delete(&c, &srv.url, BOB, &k.to_string()).await,
        404,
        "not-found",
    )
    .await;
    assert_eq!(keys(&list(&c, &srv.url, ALICE).await), vec![k.clone()]);
    let (_, pem_b) = encrypted_key();
    put(&c, &srv.url, BOB, &k, &pem_b).await;
    let alice = list(&c, &srv.url, ALICE).await;
    assert_eq!(alice.backups.len(), 1);
    assert_eq!(alice.backups[0].encrypted_key, pem_a);
    let bob = list(&c, &srv.url, BOB).await;
    assert_eq!(bob.account.as_str(), BOB);
    assert_eq!(bob.backups.len(), 1);
    assert_eq!(bob.backups[0].encrypted_key, pem_b);
    // Bob deleting his removes only his.
    assert_eq!(
        delete(&c, &srv.url, BOB, &k.to_string()).await.status(),
        204
    );
    assert_eq!(list(&c, &srv.url, ALICE).await.backups.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_oversized_and_weak_uploads_store_nothing() {
    let dir = data_dir();
    add_account(dir.path(), ALICE, PW);
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    let (k, der) = new_key();
    let good = aes256(&der);
    let epki = pem::decode_one(&good, &["ENCRYPTED PRIVATE KEY"]).unwrap();
    let (salt, iv) = (rand::random::<[u8; 16]>(), rand::random::<[u8; 16]>());
    let aes128 = encrypt(
        &der,
        pbes2::Parameters::pbkdf2_sha256_aes128cbc(1000, &salt, &iv).unwrap(),
    );
    // Over the limit, though still well inside the HTTP body limit.
    let body_len = BACKUP_MAX_PEM * 3 / 4 + 64;
    let huge = pem::encode("ENCRYPTED PRIVATE KEY", &vec![0x30; body_len]);
    assert!(huge.len() > BACKUP_MAX_PEM);

    let cases: Vec<(&str, String, u16, &str, &str)> = vec![
        ("oversized", huge, 413, "payload-too-large", "16384"),
        (
            "not PEM",
            "hello".into(),
            400,
            "bad-request",
            "ENCRYPTED PRIVATE KEY",
        ),
        (
            "wrong label",
            pem::encode("CERTIFICATE", &epki),
            400,
            "bad-request",
            "CERTIFICATE",
        ),
        (
            "unencrypted key",
            pem::encode("PRIVATE KEY", &der),
            400,
            "bad-request",
            "only encrypted private keys",
        ),
        (
            "unencrypted DER under the encrypted label",
            pem::encode("ENCRYPTED PRIVATE KEY", &der),
            400,
            "bad-request",
            "EncryptedPrivateKeyInfo",
        ),
        ("AES-128", aes128, 400, "bad-request", "AES-128-CBC"),
        (
            "two blocks",
            format!("{good}{good}"),
            400,
            "bad-request",
            "one PEM block",
        ),
        (
            "text around the block",
            format!("here it is:\n{good}"),
            400,
            "bad-request",
            "nothing else",
        ),
    ];
    for (what, text, status, code, detail) in cases {
        let body = serde_json::json!({ "encrypted_key": text });
        let r = put_raw(&c, &srv.url, Some((ALICE, PW)), &k.to_string(), &body).await;
        assert_eq!(r.status().as_u16(), status, "{what}");
        let doc: serde_json::Value = r.json().await.unwrap();
        assert_eq!(doc["type"], format!("urn:mailid:error:{code}"), "{what}");
        let d = doc["detail"].as_str().unwrap();
        assert!(d.contains(detail), "{what}: {d}");
    }
    // A malformed key ID, on PUT and DELETE.
    for bad in ["not-a-key-id", "AAAA", "%3F"] {
        let body = serde_json::json!({ "encrypted_key": good });
        let r = put_raw(&c, &srv.url, Some((ALICE, PW)), bad, &body).await;
        assert_problem(r, 400, "bad-request").await;
        assert_problem(delete(&c, &srv.url, ALICE, bad).await, 400, "bad-request").await;
    }
    // Bodies that are not the request: the problem documents of every route.
    let url = format!("{}/v1/backups/{k}", srv.url);
    let raw = |ct: &'static str, body: &'static str| {
        c.put(&url)
            .basic_auth(ALICE, Some(PW))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    assert_problem(
        raw("application/json", "{").await.unwrap(),
        400,
        "bad-request",
    )
    .await;
    assert_problem(raw("text/plain", "{}").await.unwrap(), 400, "bad-request").await;
    assert_problem(
        raw("application/json", r#"{"encrypted_key": 5}"#)
            .await
            .unwrap(),
        400,
        "bad-request",
    )
    .await;
    assert!(list(&c, &srv.url, ALICE).await.backups.is_empty());
    // The good one is then stored.
    put(&c, &srv.url, ALICE, &k, &good).await;
    assert_eq!(keys(&list(&c, &srv.url, ALICE).await), vec![k]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_most_64_backups_per_account() {
    let dir = data_dir();
    add_account(dir.path(), ALICE, PW);
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    // The MTA cannot tell which key a ciphertext holds: one text serves.
    let (_, text) = encrypted_key();
    let ids: Vec<KeyId> = (0..BACKUP_MAX_PER_ACCOUNT).map(|_| key_id()).collect();
    for k in &ids {
        put(&c, &srv.url, ALICE, k, &text).await;
    }
    let extra = key_id();
    let body = serde_json::json!({ "encrypted_key": text });
    let r = put_raw(&c, &srv.url, Some((ALICE, PW)), &extra.to_string(), &body).await;
    assert_problem(r, 409, "conflict").await;
    let l = list(&c, &srv.url, ALICE).await;
    assert_eq!(l.backups.len(), BACKUP_MAX_PER_ACCOUNT);
    assert!(!keys(&l).contains(&extra));
    // Replacing one of the 64 is allowed; after a delete the 65th fits.
    put(&c, &srv.url, ALICE, &ids[10], &text).await;
    assert_eq!(
        delete(&c, &srv.url, ALICE, &ids[0].to_string())
            .await
            .status(),
        204
    );
    put(&c, &srv.url, ALICE, &extra, &text).await;
    assert_eq!(
        list(&c, &srv.url, ALICE).await.backups.len(),
        BACKUP_MAX_PER_ACCOUNT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disabled_account_is_refused_and_keeps_its_backups() {
    let dir = data_dir();
    add_account(dir.path(), ALICE, PW);
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    let (k, text) = encrypted_key();
    put(&c, &srv.url, ALICE, &k, &text).await;
    mta_ok(dir.path(), &["account", "disable", ALICE], None);
    let body = serde_json::json!({ "encrypted_key": text });
    let (k2, _) = encrypted_key();
    let r = put_raw(&c, &srv.url, Some((ALICE, PW)), &k2.to_string(), &body).await;
    assert_problem(r, 401, "unauthorized").await;
    let r = c
        .get(format!("{}/v1/backups", srv.url))
        .basic_auth(ALICE, Some(PW))
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "unauthorized").await;
    let r = delete(&c, &srv.url, ALICE, &k.to_string()).await;
    assert_problem(r, 401, "unauthorized").await;
    mta_ok(dir.path(), &["account", "enable", ALICE], None);
    assert_eq!(keys(&list(&c, &srv.url, ALICE).await), vec![k]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_certificate_login_reaches_only_its_own_backups() {
    let dir = data_dir();
    add_account(dir.path(), ALICE, PW);
    add_account(dir.path(), BOB, PW);
    mta_ok(dir.path(), &["account", "disable", BOB], None);
    let pki = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (TestCa::new("Server CA"), TestCa::new("Client CA"));
    let server = server_ca.server();
    let write = |name: &str, text: &str| {
        let p = pki.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let (cert, key) = (
        write("s.pem", &server.cert_pem),
        write("s.key", &server.key_pem),
    );
    let cca = write("cca.pem", &client_ca.pem);
    let args = ["--tls-cert", &cert, "--tls-key", &key, "--client-ca", &cca];
    let srv = Server::start(dir.path(), &args);
    let root = reqwest::Certificate::from_pem(server_ca.pem.as_bytes()).unwrap();
    let as_holder = |who: &str| {
        let leaf = client_ca.client(who);
        let id = format!("{}{}", leaf.cert_pem, leaf.key_pem);
        reqwest::Client::builder()
            .tls_certs_only([root.clone()])
            .identity(reqwest::Identity::from_pem(id.as_bytes()).unwrap())
            .build()
            .unwrap()
    };
    let alice = as_holder(ALICE);
    let (k, text) = encrypted_key();
    let r = alice
        .put(format!("{}/v1/backups/{k}", srv.url))
        .json(&serde_json::json!({ "encrypted_key": text }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = alice
        .get(format!("{}/v1/backups", srv.url))
        .send()
        .await
        .unwrap();
    let l: BackupList = r.json().await.unwrap();
    assert_eq!(l.account.as_str(), ALICE);
    assert_eq!(keys(&l), vec![k.clone()]);
    // A disabled account's certificate logs in to nothing.
    let bob = as_holder(BOB);
    let r = bob
        .get(format!("{}/v1/backups", srv.url))
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, "unauthorized").await;
    let r = alice
        .delete(format!("{}/v1/backups/{k}", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
}

/// Runs openssl with `args` in `dir`; must succeed.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_encrypted_by_openssl() {
    let dir = data_dir();
    add_account(dir.path(), ALICE, PW);
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    openssl(
        w,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "key.pem",
        ],
    );
    let pass = "pass:recovery-words";
    let topk8 = |out: &str, scheme: &[&str]| {
        let mut args = vec![
            "pkcs8", "-topk8", "-in", "key.pem", "-passout", pass, "-out", out,
        ];
        args.extend_from_slice(scheme);
        openssl(w, &args);
        std::fs::read_to_string(w.join(out)).unwrap()
    };
    let read = |name: &str| std::fs::read_to_string(w.join(name)).unwrap();
    let cases = [
        ("aes256.pem", vec!["-v2", "aes-256-cbc"], 200),
        ("scrypt.pem", vec!["-v2", "aes-256-cbc", "-scrypt"], 200),
        ("aes128.pem", vec!["-v2", "aes-128-cbc"], 400),
        ("3des.pem", vec!["-v1", "PBE-SHA1-3DES"], 400),
    ];
    for (name, scheme, status) in cases {
        let text = topk8(name, &scheme);
        let k = key_id();
        let body = serde_json::json!({ "encrypted_key": text });
        let r = put_raw(&c, &srv.url, Some((ALICE, PW)), &k.to_string(), &body).await;
        assert_eq!(r.status().as_u16(), status, "{name}");
        if status != 200 {
            continue;
        }
        // openssl decrypts what the MTA hands back to the same key.
        let l = list(&c, &srv.url, ALICE).await;
        let got = l.backups.iter().find(|b| b.key_id == k).unwrap();
        std::fs::write(w.join("got.pem"), &got.encrypted_key).unwrap();
        openssl(
            w,
            &[
                "pkcs8", "-in", "got.pem", "-passin", pass, "-out", "back.pem",
            ],
        );
        openssl(
            w,
            &[
                "pkcs8", "-in", "key.pem", "-nocrypt", "-topk8", "-out", "orig.pem",
            ],
        );
        assert_eq!(read("back.pem"), read("orig.pem"), "{name}");
    }
    assert_eq!(list(&c, &srv.url, ALICE).await.backups.len(), 2);
}

/// The optional public parts: a certificate naming the account and
/// carrying the key of the path's key ID is kept with its chain and CA URL
/// and listed back; any other certificate, a chain that is not
/// certificates, or a bad URL is refused and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_must_name_the_account_and_carry_the_key() {
    use rcgen::PublicKeyData;
    let dir = data_dir();
    add_account(dir.path(), ALICE, PW);
    let srv = Server::start(dir.path(), &[]);
    let c = client();
    let ca = TestCa::new("Backup Test CA");
    let leaf = ca.valid_identity(ALICE, 7, "http://127.0.0.1:9/crl");
    let leaf_key = rcgen::KeyPair::from_pem(&leaf.key_pem).unwrap();
    let k = KeyId::of_spki(&leaf_key.subject_public_key_info());
    let text = aes256(&leaf_key.serialize_der());
    let bob_leaf = ca.valid_identity(BOB, 8, "http://127.0.0.1:9/crl");
    let (other_k, _) = new_key();
    let chain = ca.pem.clone();

    let good = serde_json::json!({
        "encrypted_key": text, "certificate": leaf.cert_pem, "chain": chain,
        "ca_url": "https://ca.example.org",
    });
    let resp = put_raw(&c, &srv.url, Some((ALICE, PW)), &k.to_string(), &good).await;
    assert_eq!(resp.status().as_u16(), 200);
    let l = list(&c, &srv.url, ALICE).await;
    let b = &l.backups[0];
    assert_eq!(b.certificate.as_deref(), Some(leaf.cert_pem.as_str()));
    assert_eq!(b.chain.as_deref(), Some(chain.as_str()));
    assert_eq!(b.ca_url.as_deref(), Some("https://ca.example.org"));

    let with = |field: &str, v: serde_json::Value| {
        let mut body = serde_json::json!({ "encrypted_key": text, "certificate": leaf.cert_pem });
        body[field] = v;
        body
    };
    let cases = [
        (
            "another account's certificate",
            k.clone(),
            with("certificate", bob_leaf.cert_pem.clone().into()),
            "does not name alice@example.org",
        ),
        (
            "the certificate of another key",
            other_k.clone(),
            with("certificate", leaf.cert_pem.clone().into()),
            "is not for the key",
        ),
        (
            "two certificates",
            k.clone(),
            with("certificate", format!("{}{}", leaf.cert_pem, chain).into()),
            "exactly one PEM certificate",
        ),
        (
            "a chain of junk",
            k.clone(),
            with("chain", "junk".into()),
            "chain",
        ),
        (
            "a CA URL that is not http(s)",
            k.clone(),
            with("ca_url", "file:///etc/passwd".into()),
            "ca_url",
        ),
    ];
    for (what, key, body, detail) in cases {
        let resp = put_raw(&c, &srv.url, Some((ALICE, PW)), &key.to_string(), &body).await;
        assert_eq!(resp.status().as_u16(), 400, "{what}");
        let doc: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(doc["type"], "urn:mailid:error:bad-request", "{what}");
        let d = doc["detail"].as_str().unwrap();
        assert!(d.contains(detail), "{what}: {d}");
    }
    // Nothing of the refusals was stored: the one good backup is unchanged.
    let after = list(&c, &srv.url, ALICE).await;
    assert_eq!(keys(&after), vec![k]);
    assert_eq!(after.backups[0].chain.as_deref(), Some(chain.as_str()));
    let big = "A".repeat(mailid_shared::protocol::BACKUP_MAX_CERT_PEM + 1);
    let resp = put_raw(
        &c,
        &srv.url,
        Some((ALICE, PW)),
        &after.backups[0].key_id.to_string(),
        &with("chain", big.into()),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 413);
}
