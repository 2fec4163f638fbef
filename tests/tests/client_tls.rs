//! HTTPS to the MTA: `--ca-bundle` trust, and the holder signing in with a
//! TLS client certificate instead of a password (`mailid upload`).

#[path = "client_support.rs"]
mod support;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use support::*;

struct Tls {
    root: std::path::PathBuf,
    server_cert: std::path::PathBuf,
    server_key: std::path::PathBuf,
}

fn write(env: &Env, name: &str, text: &str) -> std::path::PathBuf {
    let p = env.path(name);
    std::fs::write(&p, text).expect("write");
    p
}

/// A TLS root, a server certificate for 127.0.0.1, and client certificates
/// for `accounts` (files `<account>.pem` / `<account>.key`).
fn tls_material(env: &Env, accounts: &[&str]) -> Tls {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "client test TLS root");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let root = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("root");

    let server_key = KeyPair::generate().expect("key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("params")
        .signed_by(&server_key, &root)
        .expect("server cert");
    for a in accounts {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, *a);
        p.subject_alt_names = vec![SanType::Rfc822Name((*a).try_into().expect("ia5"))];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &root).expect("client cert");
        write(env, &format!("{a}.pem"), &cert.pem());
        write(env, &format!("{a}.key"), &key.serialize_pem());
    }
    Tls {
        root: write(env, "tls-root.pem", &root.pem()),
        server_cert: write(env, "server.pem", &server.pem()),
        server_key: write(env, "server.key", &server_key.serialize_pem()),
    }
}

#[test]
fn https_with_a_ca_bundle_and_client_certificate_login() {
    let mut env = Env::start(1);
    let out = env.enroll(0, &[], &[]);
    let serial = serial_after(&out, "CA issued serial");

    // Restart the MTA on HTTPS, accepting client certificates.
    let tls = tls_material(&env, &[ALICE, "nobody@example.com"]);
    drop(env.mta.server.take());
    let (c, k, r) = (
        tls.server_cert.display().to_string(),
        tls.server_key.display().to_string(),
        tls.root.display().to_string(),
    );
    env.mta
        .start(&["--tls-cert", &c, "--tls-key", &k, "--client-ca", &r]);
    let mta = env.mta.url();
    assert!(mta.starts_with("https://"), "{mta}");

    // Without the bundle the server is not trusted: one line, exit 1.
    let line = one_line_failure(&env.mailid(&["lookup", ALICE, "--mta", &mta], None, &[]));
    assert!(
        line.starts_with(&format!("mailid: cannot reach the MTA at {mta}: ")),
        "{line}"
    );
    // With it, lookup works.
    let looked = ok(&env.mailid(
        &["--ca-bundle", &r, "lookup", ALICE, "--mta", &mta],
        None,
        &[],
    ));
    assert!(looked.contains(&format!("serial:   {serial}")), "{looked}");

    // Upload signed in with alice's client certificate, no password.
    let (cc, ck) = (
        env.path(&format!("{ALICE}.pem")).display().to_string(),
        env.path(&format!("{ALICE}.key")).display().to_string(),
    );
    let up = ok(&env.mailid(
        &[
            "--ca-bundle",
            &r,
            "upload",
            "--email",
            ALICE,
            "--mta",
            &mta,
            "--client-cert",
            &cc,
            "--client-key",
            &ck,
        ],
        None,
        &[],
    ));
    assert!(
        up.contains(&format!("MTA at {mta} publishes serial {serial}")),
        "{up}"
    );

    // A client certificate naming no account is refused.
    let (nc, nk) = (
        env.path("nobody@example.com.pem").display().to_string(),
        env.path("nobody@example.com.key").display().to_string(),
    );
    let line = one_line_failure(&env.mailid(
        &[
            "--ca-bundle",
            &r,
            "upload",
            "--email",
            ALICE,
            "--mta",
            &mta,
            "--client-cert",
            &nc,
            "--client-key",
            &nk,
        ],
        None,
        &[],
    ));
    assert_eq!(
        line,
        "mailid: MTA refused the client certificate for alice@example.com (401 unauthorized)"
    );
}
