//! The CA key in a PKCS#11 token (SPEC §9), over the real binaries and a
//! real SoftHSM2 token with a private SOFTHSM2_CONF per test: `init
//! --key-uri` generates the key there (sensitive, never extractable) or
//! uses an existing one; the CA certificate holds the token's public key
//! and no private key file exists; enrollments, holder and operator
//! revocations and CRLs for P-256, P-384 and RSA keys, checked by OpenSSL;
//! an intermediate whose CSR the token signed; `serve` refusing a wrong
//! PIN, module, token or label in one line; the PIN never in a trace log;
//! and a token taken away while serving (503, the CRL still served, then
//! recovery).

#[path = "hsm_support/mod.rs"]
mod hsm_support;
#[path = "ca_support.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hsm_support::*;
use mailid_tests::{bin, run_env, CA_BIN};
use serde_json::json;
use support::*;

/// Everything with the key generated in the token: enrollment, holder and
/// operator revocation, CRLs, each checked by OpenSSL.
async fn lifecycle(key_type: &str, log_level: &str) {
    let hsm = Hsm::new();
    let uri = hsm.uri("ca-key");
    let alice = format!("alice@{DOMAIN}");
    let bob = format!("bob@{DOMAIN}");
    let env = start(
        &hsm,
        &["--key-uri", &uri, "--key-type", key_type],
        &[("RUST_LOG", log_level)],
        &[&alice, &bob],
    );
    // The key was generated in the token: private, sensitive, never
    // extractable.
    let objects = hsm.tool(&["--list-objects"]);
    let private = objects
        .split("Private Key Object")
        .nth(1)
        .expect("a private key object");
    assert!(private.contains("label:      ca-key"), "{objects}");
    assert!(
        private.contains("sensitive") && private.contains("never extractable"),
        "{objects}"
    );
    // The CA certificate holds the token's public key; no key file.
    assert_eq!(cert_key(&env.ca.ca_pem()), hsm.public_key("ca-key"));
    assert_no_private_key(&env.ca.dir);
    let config = std::fs::read_to_string(env.ca.dir.join("config.json")).unwrap();
    assert!(
        config.contains("pkcs11:token=mailid;object=ca-key"),
        "{config}"
    );
    assert!(!config.contains(PIN));
    let access = private.lines().find(|l| l.contains("Access")).unwrap_or("");
    println!("{key_type}: key generated in the token; {}", access.trim());

    // Enrollment; the certificate verifies with the served CRL.
    let a = env.enroll_new(&alice, "p256").await;
    let a_serial = a["serial"].as_str().unwrap().to_string();
    let b = env.enroll_new(&bob, "p384").await;
    let b_serial = b["serial"].as_str().unwrap().to_string();
    let (ca_file, crl_file) = env.trust_files().await;
    for v in [&a, &b] {
        let (good, out) = verify(
            env.root.path(),
            v["certificate"].as_str().unwrap(),
            &ca_file,
            &crl_file,
            None,
        );
        assert!(good, "{out}");
    }

    // The holder revokes Alice's, the operator Bob's.
    let csr_key: mailid_shared::KeyId = a["key_id"].as_str().unwrap().parse().unwrap();
    let code = env.totp(&alice, &csr_key).await;
    let (s, r) = env
        .post(
            "/v1/revocations",
            json!({"serial": a_serial, "totp": code, "reason": "keyCompromise"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    ok(ca_cli(
        &hsm,
        &env.ca.dir,
        &["revoke", &b_serial, "--reason", "privilegeWithdrawn"],
    ));
    let crl = env
        .wait_crl(Duration::from_secs(15), |pem| {
            let t = crl_text(env.root.path(), pem);
            crl_lists(&t, &a_serial) && crl_lists(&t, &b_serial)
        })
        .await;
    assert!(crl_verifies(env.root.path(), &crl, &ca_file));
    let (_, crl_file) = env.trust_files().await;
    for v in [&a, &b] {
        let (good, out) = verify(
            env.root.path(),
            v["certificate"].as_str().unwrap(),
            &ca_file,
            &crl_file,
            None,
        );
        assert!(!good && out.contains("revoked"), "{out}");
    }
    // `mailid-ca crl` signs through the token too.
    let pem = ok(ca_cli(&hsm, &env.ca.dir, &["crl"]));
    assert!(crl_verifies(env.root.path(), &pem, &ca_file));
    println!(
        "{key_type}: 2 enrollments, holder + operator revocation, CRL {} verified by openssl",
        crl_number(&crl_text(env.root.path(), &pem))
    );

    // The PIN is in no log line.
    let log = env.ca.server.as_ref().unwrap().log_text();
    assert!(!log.contains(PIN), "the PIN is in the log");
    // The key URI is (the start-up line names the key), its PIN is not.
    assert!(log.contains("pkcs11:token=mailid;object=ca-key"), "{log}");
    if log_level == "trace" {
        assert!(log.contains("TRACE"), "the log is at trace level");
        println!("{key_type}: {} bytes of trace log, no PIN", log.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p256_key_in_the_token_signs_everything_and_the_pin_is_never_logged() {
    lifecycle("p256", "trace").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p384_key_in_the_token_signs_everything() {
    lifecycle("p384", "info").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rsa2048_key_in_the_token_signs_everything() {
    lifecycle("rsa2048", "debug").await;
}

#[test]
fn an_existing_key_pair_is_used_and_serve_refuses_a_bad_token_set_up_in_one_line() {
    let hsm = Hsm::new();
    // A key pair made beforehand (as in a key ceremony).
    hsm.tool(&[
        "--keypairgen",
        "--key-type",
        "EC:secp384r1",
        "--label",
        "ceremony",
        "--id",
        "42",
    ]);
    let before = hsm.tool(&["--list-objects"]);
    let root = mailid_tests::temp_dir();
    let uri = hsm.uri("ceremony");
    // --key-type says p256; the token's P-384 key is what is used.
    let ca = init_ca(
        &hsm,
        root.path(),
        &["--key-uri", &uri, "--key-type", "p256"],
    );
    assert_eq!(
        hsm.tool(&["--list-objects"]),
        before,
        "no key was generated"
    );
    assert_eq!(cert_key(&ca.ca_pem()), hsm.public_key("ceremony"));
    assert!(std::fs::read_to_string(ca.dir.join("config.json"))
        .unwrap()
        .contains("\"key_type\": \"p384\""));
    assert_no_private_key(&ca.dir);
    println!("existing P-384 key pair 'ceremony' used; the CA certificate holds its public key");

    // Each bad set-up: serve exits 1 with one line naming the problem.
    let config = ca.dir.join("config.json");
    let good = std::fs::read_to_string(&config).unwrap();
    let cases: [(&str, &str, &[&str]); 3] = [
        (
            "module-path=/usr/",
            "module-path=/nonexistent/",
            &["cannot load the PKCS#11 module /nonexistent/"],
        ),
        ("token=mailid", "token=gone", &["no token labelled 'gone'"]),
        (
            "object=ceremony",
            "object=nokey",
            &["no private key labelled 'nokey'"],
        ),
    ];
    for (from, to, words) in cases {
        assert!(good.contains(from), "{good}");
        std::fs::write(&config, good.replacen(from, to, 1)).unwrap();
        println!(
            "{}",
            assert_one_line(&serve_must_fail(&hsm, &ca.dir), words)
        );
    }
    std::fs::write(&config, &good).unwrap();
    // A wrong PIN.
    std::fs::write(&hsm.pin_file, "0000\n").unwrap();
    println!(
        "{}",
        assert_one_line(
            &serve_must_fail(&hsm, &ca.dir),
            &["wrong PIN for token 'mailid'"]
        )
    );
    // No PIN at all.
    std::fs::remove_file(&hsm.pin_file).unwrap();
    println!(
        "{}",
        assert_one_line(&serve_must_fail(&hsm, &ca.dir), &["PIN file"])
    );
    // The right PIN from the environment: `crl` signs with the token.
    std::fs::write(
        &config,
        good.replacen(
            &format!("&pin-source=file:{}", hsm.pin_file.display()),
            "",
            1,
        ),
    )
    .unwrap();
    let out = run_env(
        &bin(CA_BIN),
        &["--data-dir", ca.dir.to_str().unwrap(), "crl"],
        None,
        &[
            ("SOFTHSM2_CONF", hsm.conf.as_str()),
            ("MAILID_PKCS11_PIN", PIN),
        ],
    );
    let pem = ok(out);
    assert!(crl_verifies(root.path(), &pem, &ca.ca_pem()));
    println!("with MAILID_PKCS11_PIN: a CRL signed by the token verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_intermediate_under_an_offline_root_keeps_its_key_in_the_token() {
    let hsm = Hsm::new();
    let uri = hsm.uri("int-key");
    let offline = OfflineRoot::create();
    let p = |n: &str| offline.path(n);
    // The intermediate's key pair is generated in the token, which signs
    // its CSR.
    let csr_out = run_env(
        &bin(CA_BIN),
        &[
            "csr",
            "--key-uri",
            &uri,
            "--name",
            "HSM Intermediate",
            "--key-type",
            "rsa2048",
            "--out",
            &p("int.csr"),
        ],
        None,
        &hsm.env(),
    );
    println!("{}", ok(csr_out).trim());
    let check = Command::new("openssl")
        .args(["req", "-in", &p("int.csr"), "-verify", "-noout"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&check.stderr).contains("verify OK")
            || String::from_utf8_lossy(&check.stdout).contains("verify OK"),
        "{check:?}"
    );
    let chain = offline.sign_intermediate(&p("int.csr"));
    let account = format!("ivy@{DOMAIN}");
    let env = start(
        &hsm,
        &["--key-uri", &uri, "--import-cert", &chain],
        &[],
        &[&account],
    );
    assert_no_private_key(&env.ca.dir);
    assert_eq!(cert_key(&env.ca.ca_pem()), hsm.public_key("int-key"));
    let v = env.enroll_new(&account, "p256").await;
    let untrusted = env.path("untrusted.pem");
    std::fs::write(&untrusted, v["chain"].as_str().unwrap()).unwrap();
    let crl = env.path("int-crl.pem");
    let crl_pem = env.get_text("/v1/crl.pem").await;
    std::fs::write(&crl, &crl_pem).unwrap();
    assert!(crl_verifies(env.root.path(), &crl_pem, &env.ca.ca_pem()));
    let (good, out) = verify(
        env.root.path(),
        v["certificate"].as_str().unwrap(),
        Path::new(&p("root.pem")),
        &crl,
        Some(&untrusted),
    );
    assert!(good, "{out}");
    println!("intermediate (RSA key in the token) under an offline P-384 root: enrollment verifies to the root");
}

/// SoftHSM2 has no removable slot: the token is taken away by moving its
/// directory out of the token directory, and brought back by moving it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_taken_away_while_serving_gives_503_and_signing_resumes() {
    let hsm = Hsm::new();
    let uri = hsm.uri("ca-key");
    let alice = format!("alice@{DOMAIN}");
    let env = start(&hsm, &["--key-uri", &uri], &[], &[&alice]);
    let first = env.enroll_new(&alice, "p256").await;
    let first = first["serial"].as_str().unwrap().to_string();
    let tokens = hsm.token.dir.path().join("tokens");
    let token_dir = std::fs::read_dir(&tokens)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("the token's directory");
    let away = hsm.token.dir.path().join("away");
    std::fs::rename(&token_dir, &away).unwrap();

    let csr = Csr::openssl(env.root.path(), "p256", &alice, &[]);
    let totp = env.totp(&alice, &csr.key_id).await;
    let (s, v) = env.enroll(&csr.pem, &totp).await;
    println!("token away: enroll -> {s} {v}");
    assert_eq!((s, code(&v)), (503, "unavailable".to_string()), "{v}");
    // The CRL is still served; a revocation made now waits for the token.
    let before = crl_number(&crl_text(
        env.root.path(),
        &env.get_text("/v1/crl.pem").await,
    ));
    ok(ca_cli(&hsm, &env.ca.dir, &["revoke", &first]));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let crl = crl_text(env.root.path(), &env.get_text("/v1/crl.pem").await);
    assert_eq!(crl_number(&crl), before, "no CRL signed without the token");
    assert!(!crl_lists(&crl, &first));

    std::fs::rename(&away, &token_dir).unwrap();
    // The CA tries the token again at most once a second.
    let start = Instant::now();
    let (s, v) = loop {
        let totp = env.totp(&alice, &csr.key_id).await;
        let (s, v) = env.enroll(&csr.pem, &totp).await;
        if s != 503 || start.elapsed() > Duration::from_secs(10) {
            break (s, v);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    println!("token back: enroll -> {s} after {:?}", start.elapsed());
    assert_eq!(s, 201, "{v} {}", env.ca.server.as_ref().unwrap().log_text());
    env.wait_crl(Duration::from_secs(10), |pem| {
        crl_lists(&crl_text(env.root.path(), pem), &first)
    })
    .await;
    println!("token back: the revocation made while it was away is in the CRL");
    let log = env.ca.server.as_ref().unwrap().log_text();
    assert!(log.contains("opening the token again"), "{log}");
    assert!(log.contains("is unavailable; signing resumes"), "{log}");
    assert!(log.contains("the PKCS#11 token is open again"), "{log}");
}
