//! No password, code, credential, TOTP secret or key (a backup's
//! ciphertext, or a plaintext key a client sent by mistake) in the logs,
//! even at RUST_LOG=trace: the real binary's stderr is captured and
//! searched.

mod common;

use common::*;
use data_encoding::{BASE32_NOPAD, BASE64, BASE64URL_NOPAD, HEXLOWER};

const PW: &str = "Very-Secret-Passw0rd-xyzzy";
const ME: &str = "alice@example.org";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_never_reach_the_logs() {
    let dir = data_dir();
    // The operator commands at trace too (PostgreSQL's driver logs the
    // parameters of its statements at debug).
    let trace = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg("--data-dir").arg(dir.path()).args(args);
        cmd.env("RUST_LOG", "trace")
            .env_remove("MAILID_DATABASE")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(s) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        out
    };
    let add = trace(
        &["account", "add", ME, "--password-stdin"],
        Some(&format!("{PW}\n")),
    );
    let ca_add = trace(&["ca", "add", "ca1"], None);
    let cred = String::from_utf8(ca_add.stdout.clone())
        .unwrap()
        .trim()
        .to_string();
    let srv = Server::start_env(dir.path(), &[], &[("RUST_LOG", "trace")]);
    let c = client();
    let k = key_id();
    let mut codes = Vec::new();
    let t = totp(&c, &srv.url, ME, PW, &k).await;
    codes.push(t.totp.clone());
    let bad = wrong(&t.totp);
    codes.push(bad.clone());
    validate(&c, &srv.url, "ca1", &cred, ME, &bad, &k).await;
    assert!(
        validate(&c, &srv.url, "ca1", &cred, ME, &t.totp, &k)
            .await
            .valid
    );
    validate(&c, &srv.url, "ca1", &cred, ME, &t.totp, &k).await;
    let t2 = totp(&c, &srv.url, ME, PW, &k).await;
    codes.push(t2.totp.clone());
    validate(&c, &srv.url, "ca1", &cred, ME, &t2.totp, &key_id()).await;
    assert_eq!(
        totp_raw(&c, &srv.url, ME, "wrong-password-qqq", &k).await.0,
        401
    );
    // A signed validation with the totp as a number, so the body is refused.
    let body = format!(r#"{{"account":"{ME}","totp":{},"key_id":"{k}"}}"#, t2.totp);
    let resp = validate_signed_at(
        &c,
        &srv.url,
        "ca1",
        &cred,
        body.as_bytes(),
        mailid_shared::timefmt::now_unix(),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 400);
    // A key backup, and a plaintext key offered as one (refused).
    let (bk, backup) = common::backup::encrypted_key();
    common::backup::put_backup(&c, &srv.url, ME, PW, &bk, &backup).await;
    let (pk, plain_der) = common::backup::new_key();
    let plain = mailid_shared::pem::encode("PRIVATE KEY", &plain_der);
    let resp = c
        .put(format!("{}/v1/backups/{pk}", srv.url))
        .basic_auth(ME, Some(PW))
        .json(&serde_json::json!({ "encrypted_key": plain }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let pem_body = |text: &str| text.lines().nth(1).unwrap().to_string();

    let secret = totp_secret(dir.path());
    assert_eq!(secret.len(), 32);
    let log = srv.stop();
    assert!(
        log.contains("DEBUG") && log.contains("authenticated by password"),
        "{log}"
    );
    assert!(log.contains("code valid"), "the run was logged: {log}");
    assert!(log.contains("backup stored"), "{log}");
    let mut needles = vec![
        PW.to_string(),
        "wrong-password-qqq".to_string(),
        cred.clone(),
        HEXLOWER.encode(&BASE64URL_NOPAD.decode(cred.as_bytes()).unwrap()),
        BASE64.encode(format!("{ME}:{PW}").as_bytes()),
        HEXLOWER.encode(&secret),
        BASE32_NOPAD.encode(&secret),
        BASE64.encode(&secret),
        BASE64URL_NOPAD.encode(&secret),
        // As a database driver would print a byte parameter.
        format!("{secret:?}"),
        format!("{:?}", BASE64URL_NOPAD.decode(cred.as_bytes()).unwrap()),
        "$argon2id$".to_string(),
        pem_body(&backup),
        pem_body(&plain),
        BASE64.encode(&plain_der),
        format!("{plain_der:?}"),
    ];
    needles.extend(codes);
    let cli_logs = format!(
        "{}{}",
        String::from_utf8_lossy(&add.stderr),
        String::from_utf8_lossy(&ca_add.stderr)
    );
    for n in &needles {
        assert!(
            !log.contains(n.as_str()),
            "server log contains a secret ({} chars)",
            n.len()
        );
        assert!(!cli_logs.contains(n.as_str()));
    }
}

/// The account's TOTP secret, read from whichever database the data dir
/// uses.
fn totp_secret(dir: &std::path::Path) -> Vec<u8> {
    if !on_postgres() {
        return rusqlite::Connection::open(db_path(dir))
            .unwrap()
            .query_row(
                "SELECT totp_secret FROM accounts WHERE address = ?1",
                [ME],
                |r| r.get(0),
            )
            .unwrap();
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let url = config["database"].as_str().unwrap();
    let sql = format!("SELECT encode(totp_secret, 'hex') FROM accounts WHERE address = '{ME}'");
    HEXLOWER
        .decode(mailid_tests::pg::psql_ok(url, &sql).as_bytes())
        .unwrap()
}
