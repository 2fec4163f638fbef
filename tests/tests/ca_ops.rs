//! CA under concurrency, faults and operator commands: many enrollments at
//! once, the MTA down or slow, restarts and crashes, CLI revocations, the
//! encrypted key, and an intermediate under an offline root.

#[path = "ca_support.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use mailid_tests::{bin, run_env, CA_BIN};
use serde_json::Value;
use support::*;

const DOMAIN: &str = "example.net";

fn ca_cli(dir: &Path, args: &[&str]) -> std::process::Output {
    let d = dir.display().to_string();
    let mut all = vec!["--data-dir", d.as_str()];
    all.extend_from_slice(args);
    run_env(&bin(CA_BIN), &all, None, &[])
}

fn valid_serials(dir: &Path, account: &str) -> Vec<String> {
    let out = ca_cli(
        dir,
        &["list", "--account", account, "--status", "valid", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| c["serial"].as_str().unwrap().to_string())
        .collect()
}

/// Enrolls 16 fresh keys per account, all at once; checks the outcome.
async fn burst(env: &Env, accounts: &[String]) {
    // Codes are fetched by account in parallel (the MTA checks an Argon2id
    // password for each), then all enrollments are sent at once.
    let mut prepared = Vec::new();
    let mut wanted = Vec::new();
    for a in accounts {
        for _ in 0..16 {
            wanted.push((a.clone(), Csr::rcgen("p256", a)));
        }
    }
    while !wanted.is_empty() {
        let rest = wanted.split_off(wanted.len().min(4));
        let fetches: Vec<_> = std::mem::replace(&mut wanted, rest)
            .into_iter()
            .map(|(a, csr)| env.spawn_totp(a, csr))
            .collect();
        for f in fetches {
            let (a, csr, code) = f.await.unwrap();
            prepared.push((a, csr.pem, code));
        }
    }
    let mut tasks = Vec::new();
    for (a, pem, code) in prepared {
        let http = env.http.clone();
        let url = format!("{}/v1/certificates", env.ca.url());
        tasks.push(tokio::spawn(async move {
            let resp = http
                .post(url)
                .json(&serde_json::json!({"csr": pem, "totp": code}))
                .send()
                .await
                .unwrap();
            (
                a,
                resp.status().as_u16(),
                resp.json::<Value>().await.unwrap(),
            )
        }));
    }
    let mut issued: Vec<(String, String)> = Vec::new();
    for t in tasks {
        let (a, status, v) = t.await.unwrap();
        assert_eq!(status, 201, "{a}: {v}");
        issued.push((a, v["serial"].as_str().unwrap().to_string()));
    }
    let crl = env
        .wait_crl(Duration::from_secs(15), |pem| {
            let text = crl_text(env.root.path(), pem);
            issued.iter().filter(|(_, s)| crl_lists(&text, s)).count()
                == issued.len() - accounts.len()
        })
        .await;
    let text = crl_text(env.root.path(), &crl);
    for a in accounts {
        let valid = valid_serials(&env.ca.dir, a);
        assert_eq!(valid.len(), 1, "{a}: {valid:?}");
        let (_, acct) = env.get_json(&format!("/v1/accounts/{a}")).await;
        assert_eq!(acct["current"], valid[0].as_str());
        for (_, s) in issued.iter().filter(|(x, _)| x == a) {
            let listed = crl_lists(&text, s);
            assert_eq!(listed, s != &valid[0], "{a} {s}: listed {listed}");
            let (_, info) = env.get_json(&format!("/v1/certificates/{s}")).await;
            let want = if s == &valid[0] { "valid" } else { "revoked" };
            assert_eq!(info["status"], want);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enrollments_leave_exactly_one_valid_identity() {
    let accounts: Vec<String> = (0..9).map(|i| format!("user{i}@{DOMAIN}")).collect();
    let refs: Vec<&str> = accounts.iter().map(String::as_str).collect();
    // Codes live ten minutes here: fetching 144 of them takes a while.
    let env = Env::start_with(&[], &["--totp-period", "600"], DOMAIN, &refs);
    // One account, 16 independent codes for 16 keys, at once.
    burst(&env, &accounts[..1]).await;
    // Eight accounts at once.
    burst(&env, &accounts[1..]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mta_down_or_slow_gives_503_and_changes_nothing() {
    let account = format!("gina@{DOMAIN}");
    let mut env = Env::start(&[], DOMAIN, &[&account]);
    let first = env.enroll_new(&account, "p256").await;
    let csr = Csr::rcgen("p256", &account);
    let totp = env.totp(&account, &csr.key_id).await;
    env.mta.server.as_mut().unwrap().stop();
    let start = Instant::now();
    let (status, v) = env.enroll(&csr.pem, &totp).await;
    assert_eq!((status, code(&v)), (503, "mta-unavailable".into()), "{v}");
    assert!(start.elapsed() < Duration::from_secs(30));
    assert!(!v["detail"].as_str().unwrap_or("").contains("127.0.0.1"));

    // A slow MTA: accepts connections, never answers → the 5 s timeout.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_url = format!("http://{}", hole.local_addr().unwrap());
    env.ca
        .add_mta(DOMAIN, &hole_url, "test-ca", &env.credential);
    let start = Instant::now();
    let (status, v) = env.enroll(&csr.pem, &totp).await;
    let took = start.elapsed();
    assert_eq!((status, code(&v)), (503, "mta-unavailable".into()), "{v}");
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(30),
        "{took:?}"
    );

    // Nothing changed.
    let (_, acct) = env.get_json(&format!("/v1/accounts/{account}")).await;
    assert_eq!(acct["current"], first["serial"]);
    assert_eq!(acct["certificates"].as_array().unwrap().len(), 1);

    // The MTA is back (on a new port; `mta add` takes effect at once).
    env.mta.server.as_mut().unwrap().restart();
    env.ca
        .add_mta(DOMAIN, &env.mta.url(), "test-ca", &env.credential);
    let second = env.enroll_new(&account, "p256").await;
    assert_eq!(second["revoked"], serde_json::json!([first["serial"]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarts_and_crashes_keep_state_and_crl_numbers_increase() {
    let account = format!("hank@{DOMAIN}");
    let mut env = Env::start(&[], DOMAIN, &[&account]);
    let a = env.enroll_new(&account, "p256").await;
    let b = env.enroll_new(&account, "p256").await;
    let a_serial = a["serial"].as_str().unwrap().to_string();
    let crl = env
        .wait_crl(Duration::from_secs(10), |p| {
            crl_lists(&crl_text(env.root.path(), p), &a_serial)
        })
        .await;
    let mut last = crl_number(&crl_text(env.root.path(), &crl));
    let before = env.get_json(&format!("/v1/accounts/{account}")).await;
    for crash in [false, true] {
        let server = env.ca.server.as_mut().unwrap();
        if crash {
            server.kill();
        }
        server.restart();
        assert_eq!(
            env.get_json(&format!("/v1/accounts/{account}")).await,
            before
        );
        let n = crl_number(&crl_text(
            env.root.path(),
            &env.get_text("/v1/crl.pem").await,
        ));
        assert!(n >= last, "CRL number went back from {last} to {n}");
        // The next CRL gets a higher number.
        let out = ca_cli(&env.ca.dir, &["crl"]);
        assert!(out.status.success());
        let cli_n = crl_number(&crl_text(
            env.root.path(),
            &String::from_utf8_lossy(&out.stdout),
        ));
        assert!(cli_n > n, "{cli_n} after {n}");
        let served = env
            .wait_crl(Duration::from_secs(10), |p| {
                crl_number(&crl_text(env.root.path(), p)) > cli_n
            })
            .await;
        last = crl_number(&crl_text(env.root.path(), &served));
        assert!(crl_lists(&crl_text(env.root.path(), &served), &a_serial));
    }
    let c = env.enroll_new(&account, "p384").await;
    assert_eq!(c["revoked"], serde_json::json!([b["serial"]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_commands_work_while_the_server_runs() {
    let account = format!("ivy@{DOMAIN}");
    let env = Env::start(&[], DOMAIN, &[&account]);
    let v = env.enroll_new(&account, "rsa2048").await;
    let serial = v["serial"].as_str().unwrap().to_string();
    let show = ca_cli(&env.ca.dir, &["show", &serial, "--json"]);
    assert!(show.status.success());
    let info: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(info["status"], "valid");
    assert_eq!(info["account"], account.as_str());
    // Revocation by the CLI reaches the served CRL within 5 s.
    let start = Instant::now();
    let out = ca_cli(
        &env.ca.dir,
        &["revoke", &serial, "--reason", "privilegeWithdrawn"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crl = env
        .wait_crl(Duration::from_secs(15), |p| {
            crl_lists(&crl_text(env.root.path(), p), &serial)
        })
        .await;
    eprintln!("CLI revocation served after {:?}", start.elapsed());
    assert!(crl_text(env.root.path(), &crl).contains("Privilege Withdrawn"));
    let (ca, crl_path) = env.trust_files().await;
    let (ok, text) = verify(
        env.root.path(),
        v["certificate"].as_str().unwrap(),
        &ca,
        &crl_path,
        None,
    );
    assert!(!ok && text.contains("revoked"), "{text}");
    // Errors: one line on stderr, exit 1; usage errors exit 2.
    let again = ca_cli(&env.ca.dir, &["revoke", &serial]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&again.stderr)
            .trim()
            .lines()
            .count(),
        1
    );
    let usage = ca_cli(&env.ca.dir, &["revoke", &serial, "--reason", "bored"]);
    assert_eq!(usage.status.code(), Some(2));
    let unknown = ca_cli(&env.ca.dir, &["show", "abcdef"]);
    assert_eq!(unknown.status.code(), Some(1));
    // --data-dir after the subcommand works too.
    let d = env.ca.dir.display().to_string();
    let out = run_env(
        &bin(CA_BIN),
        &["list", "--data-dir", &d, "--status", "revoked"],
        None,
        &[],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&serial));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_encrypted_key_needs_the_right_passphrase() {
    let root = mailid_tests::temp_dir();
    let dir = root.path().join("ca");
    let d = dir.display().to_string();
    let pass = "open sesame";
    let out = run_env(
        &bin(CA_BIN),
        &[
            "--data-dir",
            &d,
            "init",
            "--name",
            "Locked CA",
            "--key-type",
            "p384",
        ],
        None,
        &[("MAILID_CA_PASSPHRASE", pass)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = dir.join("ca-key.pem");
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // openssl reads it (PBES2, PBKDF2-SHA256, AES-256-CBC).
    let parsed = openssl(&["asn1parse", "-in", key.to_str().unwrap()]);
    assert!(
        parsed.contains("aes-256-cbc") && parsed.contains("hmacWithSHA256"),
        "{parsed}"
    );
    let passin = format!("pass:{pass}");
    openssl(&[
        "pkey",
        "-in",
        key.to_str().unwrap(),
        "-passin",
        &passin,
        "-noout",
    ]);
    // serve refuses without or with a wrong passphrase.
    for env in [vec![], vec![("MAILID_CA_PASSPHRASE", "wrong")]] {
        let out = run_env(
            &bin(CA_BIN),
            &["--data-dir", &d, "serve", "--listen", "127.0.0.1:0"],
            None,
            &env,
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("passphrase"));
    }
    let pf = root.path().join("pass.txt");
    std::fs::write(&pf, format!("{pass}\n")).unwrap();
    let p = pf.display().to_string();
    let server = mailid_tests::Server::start(
        &bin(CA_BIN),
        &dir,
        &["--listen", "127.0.0.1:0", "--passphrase-file", &p],
    );
    let ok = reqwest::get(format!("{}/healthz", server.url))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_intermediate_under_an_offline_root_issues_verifiable_identities() {
    let offline = OfflineRoot::create();
    let p = |n: &str| offline.path(n);
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &p("int.key"),
    ]);
    openssl(&[
        "req",
        "-new",
        "-key",
        &p("int.key"),
        "-subj",
        "/O=Mailid/CN=Mailid Intermediate",
        "-out",
        &p("int.csr"),
    ]);
    let chain = offline.sign_intermediate(&p("int.csr"));
    let root_pem = std::fs::read_to_string(p("root.pem")).unwrap();
    let int_pem = std::fs::read_to_string(p("int.pem")).unwrap();

    let account = format!("jane@{DOMAIN}");
    let env = Env::start(
        &["--import-cert", &chain, "--import-key", &p("int.key")],
        DOMAIN,
        &[&account],
    );
    let served = env.get_text("/v1/ca.pem").await;
    assert_eq!(
        mailid_shared::pem::decode_chain(&served, "CERTIFICATE")
            .unwrap()
            .len(),
        2
    );
    let v = env.enroll_new(&account, "p256").await;
    let answer_chain = v["chain"].as_str().unwrap();
    let ders = mailid_shared::pem::decode_chain(answer_chain, "CERTIFICATE").unwrap();
    assert_eq!(ders.len(), 2, "issuer first, root last");
    assert_eq!(
        ders[0],
        mailid_shared::pem::decode_one(&int_pem, &["CERTIFICATE"]).unwrap()
    );
    assert_eq!(
        ders[1],
        mailid_shared::pem::decode_one(&root_pem, &["CERTIFICATE"]).unwrap()
    );
    // The root is the only trust anchor; the intermediate comes from the answer.
    let untrusted = write(&env.path("untrusted.pem"), answer_chain);
    let crl = write(&env.path("int-crl.pem"), &env.get_text("/v1/crl.pem").await);
    let (ok, out) = verify(
        env.root.path(),
        v["certificate"].as_str().unwrap(),
        Path::new(&p("root.pem")),
        Path::new(&crl),
        Some(Path::new(&untrusted)),
    );
    assert!(ok, "{out}");
    // Without the intermediate it does not verify (the test can fail).
    let (ok, _) = verify(
        env.root.path(),
        v["certificate"].as_str().unwrap(),
        Path::new(&p("root.pem")),
        Path::new(&crl),
        None,
    );
    assert!(!ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serves_https_with_a_tls_certificate() {
    let root = mailid_tests::temp_dir();
    let mut ca = mailid_tests::CaFixture::init(root.path(), "tls-ca", &[]);
    let p = |n: &str| root.path().join(n).display().to_string();
    // A throw-away TLS CA and a server certificate for 127.0.0.1.
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("tls-ca.key"),
        "-out",
        &p("tls-ca.pem"),
        "-days",
        "2",
        "-subj",
        "/CN=TLS test CA",
    ]);
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("tls.key"),
        "-out",
        &p("tls.csr"),
        "-subj",
        "/CN=localhost",
    ]);
    let ext = write(
        &root.path().join("tls-ext.cnf"),
        "[v3]\nbasicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("tls.csr"),
        "-CA",
        &p("tls-ca.pem"),
        "-CAkey",
        &p("tls-ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-extensions",
        "v3",
        "-out",
        &p("tls.pem"),
    ]);
    let server = ca.start(&["--tls-cert", &p("tls.pem"), "--tls-key", &p("tls.key")]);
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let pem = std::fs::read(p("tls-ca.pem")).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap();
    let resp = client
        .get(format!("{}/v1/crl.der", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!resp.bytes().await.unwrap().is_empty());
}
