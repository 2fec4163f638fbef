//! Failures of the real `mailid` binary: each is one clear line on stderr
//! and exit status 1 (usage errors: 2), and changes nothing in the store.

#[path = "client_support.rs"]
mod support;

use support::*;

fn enroll_with(
    env: &Env,
    email: &str,
    mta: &str,
    ca: &str,
    password: &str,
) -> std::process::Output {
    env.try_enroll((email, mta, ca), password, &[], &[])
}

/// The store holds nothing for alice: `show` fails the same way with and
/// without `--json` (exit 1, one line on stderr, nothing on stdout).
fn store_is_empty(env: &Env) {
    for args in [
        &["--json", "show", "--email", ALICE][..],
        &["show", "--email", ALICE],
    ] {
        let out = env.mailid(args, None, &[]);
        let line = one_line_failure(&out);
        assert!(line.contains("holds no identity for"), "{args:?}: {line}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn wrong_password_mta_down_ca_down_and_bad_address() {
    let mut env = Env::start(1);
    let (mta, ca) = (env.mta.url(), env.cas[0].url());

    // Wrong password.
    let line = one_line_failure(&enroll_with(&env, ALICE, &mta, &ca, "not the password"));
    assert_eq!(
        line,
        "mailid: MTA refused the password for alice@example.com (401 unauthorized)"
    );
    // The same through MAILID_PASSWORD.
    let out = env.mailid(
        &["enroll", "--email", ALICE, "--mta", &mta, "--ca", &ca],
        None,
        &[("MAILID_PASSWORD", "wrong again")],
    );
    assert!(one_line_failure(&out).contains("refused the password"));

    // A bad address.
    let line = one_line_failure(&enroll_with(&env, "not-an-address", &mta, &ca, PASSWORD));
    assert_eq!(
        line,
        "mailid: 'not-an-address' is not a valid mail address: address must contain exactly one '@'"
    );
    let line = one_line_failure(&enroll_with(&env, "a b@example.com", &mta, &ca, PASSWORD));
    assert!(line.contains("is not a valid mail address"), "{line}");
    let line = one_line_failure(&env.mailid(&["lookup", "bad@@x", "--mta", &mta], None, &[]));
    assert!(line.contains("is not a valid mail address"), "{line}");

    // CA down: steps 2-4 run, then the CA cannot be reached.
    env.cas[0].server.as_mut().expect("CA running").stop();
    let out = enroll_with(&env, ALICE, &mta, &ca, PASSWORD);
    let line = one_line_failure(&out);
    assert_eq!(
        line,
        format!("mailid: cannot reach the CA at {ca}: connection refused")
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("step 4:"));

    // MTA down.
    env.mta.server.as_mut().expect("MTA running").stop();
    let line = one_line_failure(&enroll_with(&env, ALICE, &mta, &ca, PASSWORD));
    assert_eq!(
        line,
        format!("mailid: cannot reach the MTA at {mta}: connection refused")
    );
    let line = one_line_failure(&env.mailid(&["lookup", ALICE, "--mta", &mta], None, &[]));
    assert_eq!(
        line,
        format!("mailid: cannot reach the MTA at {mta}: connection refused")
    );

    store_is_empty(&env);
}

#[test]
fn usage_errors_exit_2_and_plain_http_is_loopback_only() {
    let env = Env::start(1);
    let (mta, ca) = (env.mta.url(), env.cas[0].url());
    // Missing option, unknown key type, no credentials at all.
    let out = env.mailid(&["enroll", "--email", ALICE, "--mta", &mta], None, &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = env.mailid(
        &[
            "enroll",
            "--email",
            ALICE,
            "--mta",
            &mta,
            "--ca",
            &ca,
            "--key-type",
            "dsa",
        ],
        None,
        &[("MAILID_PASSWORD", "x")],
    );
    assert_eq!(out.status.code(), Some(2));
    let out = env.mailid(
        &["enroll", "--email", ALICE, "--mta", &mta, "--ca", &ca],
        None,
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no MTA credentials"));

    // Plain http to a remote host is refused before anything is sent.
    let line = one_line_failure(&enroll_with(
        &env,
        ALICE,
        "http://mta.example.com",
        &ca,
        PASSWORD,
    ));
    assert!(line.contains("plain http is for loopback only"), "{line}");

    // An empty MAILID_PASSPHRASE is refused rather than taken as "store the
    // key in the clear".
    let out = env.try_enroll(
        (ALICE, &mta, &ca),
        PASSWORD,
        &[],
        &[("MAILID_PASSPHRASE", "")],
    );
    let line = one_line_failure(&out);
    assert!(
        line.contains("MAILID_PASSPHRASE is set but empty"),
        "{line}"
    );
    store_is_empty(&env);

    // A missing file for key-id, and a file that is no key.
    let missing = env.path("nope.pem").display().to_string();
    let line = one_line_failure(&env.mailid(&["key-id", &missing], None, &[]));
    assert_eq!(
        line,
        format!("mailid: {missing}: no such file or directory")
    );
    let junk = env.path("junk.txt");
    std::fs::write(&junk, "hello").expect("write");
    let line = one_line_failure(&env.mailid(&["key-id", &junk.display().to_string()], None, &[]));
    assert!(
        line.contains("is not a certificate, CSR, public key or private key"),
        "{line}"
    );

    // Revoking a serial the CA does not know.
    let out = env.mailid(
        &[
            "revoke",
            "--email",
            ALICE,
            "--mta",
            &mta,
            "--ca",
            &ca,
            "--serial",
            "0abc",
            "--password-stdin",
        ],
        Some(&format!("{PASSWORD}\n")),
        &[],
    );
    let line = one_line_failure(&out);
    assert!(
        line.contains("CA refused the look-up of serial 0abc") && line.contains("404"),
        "{line}"
    );
    store_is_empty(&env);
}

#[test]
fn revoke_with_the_cli_marks_the_store_and_the_crl() {
    let env = Env::start(1);
    let (mta, ca) = (env.mta.url(), env.cas[0].url());
    let out = env.enroll(0, &[], &[]);
    let serial = serial_after(&out, "CA issued serial");
    let out = env.mailid(
        &[
            "revoke",
            "--email",
            ALICE,
            "--mta",
            &mta,
            "--ca",
            &ca,
            "--serial",
            serial.as_str(),
            "--reason",
            "keyCompromise",
            "--password-stdin",
        ],
        Some(&format!("{PASSWORD}\n")),
        &[],
    );
    let text = ok(&out);
    assert!(
        text.contains(&format!("revoked serial {serial}")) && text.contains("keyCompromise"),
        "{text}"
    );
    assert!(crl_lists(&ca, &serial, &env.path("crl.pem")));
    let show = env.show();
    assert!(show["current"].is_null(), "{show}");
    assert_eq!(show["identities"][0]["status"], "revoked");
    assert_eq!(show["identities"][0]["reason"], "keyCompromise");
}

#[test]
fn an_upload_the_mta_refuses_leaves_the_identity_stored_and_says_so() {
    // An MTA that knows the CA for validation but does not trust its
    // certificate for publication.
    let root = mailid_tests::temp_dir();
    let mut mta = mailid_tests::MtaFixture::init(root.path(), "mta");
    mta.add_account(ALICE, PASSWORD);
    let mut ca = mailid_tests::CaFixture::init(root.path(), "ca1", &[]);
    let cred = mta.add_ca("ca1", None);
    mta.start(&[]);
    ca.add_mta("example.com", &mta.url(), "ca1", &cred);
    ca.start(&[]);
    let env = Env {
        root,
        mta,
        cas: vec![ca],
    };
    let (mta, ca) = (env.mta.url(), env.cas[0].url());
    let out = enroll_with(&env, ALICE, &mta, &ca, PASSWORD);
    let line = one_line_failure(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let serial = serial_after(&stdout, "CA issued serial");
    assert!(
        line.starts_with("mailid: MTA refused the upload of serial"),
        "{line}"
    );
    assert!(
        line.contains(&format!("serial {serial} is issued and stored in"))
            && line.ends_with(&format!(
                "(retry with: mailid upload --email {ALICE} --mta {mta})"
            )),
        "{line}"
    );
    let show = env.show();
    assert_eq!(show["current"]["serial"], serial.as_str(), "{show}");
    assert!(show["current"]["published_at"].is_null(), "{show}");
}
