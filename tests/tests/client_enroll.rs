//! `mailid enroll` twice against the real services: the second identity
//! supersedes the first at the CA, the MTA publishes the new one, `mailid
//! lookup` finds it and the store holds both.

#[path = "client_support.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;

use mailid_shared::{KeyId, Serial};
use serde_json::Value;
use support::*;

fn key_id_of(
    env: &Env,
    file: &std::path::Path,
    extra_env: &[(&str, &str)],
) -> std::process::Output {
    env.mailid(&["key-id", &file.display().to_string()], None, extra_env)
}

#[test]
fn enrolling_twice_supersedes_publishes_and_stores_both() {
    let env = Env::start(1);
    let ca = env.cas[0].url();

    let first_out = env.enroll(0, &[], &[]);
    for step in [
        "step 2:", "step 3:", "step 4:", "step 5:", "step 6:", "step 7:", "step 8:", "step 9:",
        "step 10:",
    ] {
        assert!(first_out.contains(step), "missing {step} in:\n{first_out}");
    }
    let first = serial_after(&first_out, "CA issued serial");
    assert!(
        first_out.contains("step 8: CA had no earlier valid identity"),
        "{first_out}"
    );

    // The second run (a P-384 key) makes the CA revoke the first.
    let second_out = env.enroll(0, &["--key-type", "p384"], &[]);
    let second = serial_after(&second_out, "CA issued serial");
    assert_ne!(first, second);
    assert!(
        second_out.contains(&format!("step 8: CA revoked serial {first} (superseded)")),
        "{second_out}"
    );
    assert!(second_out.contains("P-384"), "{second_out}");

    // The CA says the first is revoked and lists it in its CRL.
    let info: Value = reqwest::blocking::get(format!("{ca}/v1/certificates/{first}"))
        .and_then(|r| r.json())
        .expect("GET certificate");
    assert_eq!(info["status"], "revoked", "{info}");
    assert!(crl_lists(&ca, &first, &env.path("crl.pem")));

    // The MTA publishes the second; lookup returns it and writes its PEM.
    let out_file = env.path("looked-up.pem");
    let mta = env.mta.url();
    let looked = ok(&env.mailid(
        &[
            "lookup",
            ALICE,
            "--mta",
            &mta,
            "--out",
            &out_file.display().to_string(),
        ],
        None,
        &[],
    ));
    assert!(looked.contains(&format!("serial:   {second}")), "{looked}");

    // The store holds both; the old one superseded.
    let show = env.show();
    let ids = show["identities"].as_array().expect("identities");
    assert_eq!(ids.len(), 2, "{show}");
    let find = |s: &Serial| {
        ids.iter()
            .find(|i| i["serial"] == s.as_str())
            .expect("stored")
            .clone()
    };
    let old = find(&first);
    let new = find(&second);
    assert_eq!(old["status"], "superseded", "{show}");
    assert_eq!(old["reason"], "superseded", "{show}");
    assert_eq!(new["status"], "current", "{show}");
    assert_eq!(show["current"]["serial"], second.as_str());
    assert_eq!(new["ca_url"], ca.as_str());
    assert_eq!(new["published_at"], mta.as_str());
    let text = ok(&env.mailid(&["show", "--email", ALICE], None, &[]));
    assert!(
        text.contains(&format!("current: serial {second}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("superseded: serial {first}")),
        "{text}"
    );

    // The looked-up certificate is the stored one, and every file gives the
    // same key ID as the enrollment reported.
    let dir = env.store().join(new["dir"].as_str().expect("dir"));
    let stored_cert = std::fs::read_to_string(dir.join("cert.pem")).expect("cert.pem");
    assert_eq!(
        std::fs::read_to_string(&out_file).expect("--out file"),
        stored_cert
    );
    let want: KeyId = new["key_id"]
        .as_str()
        .expect("key_id")
        .parse()
        .expect("key ID");
    for f in ["cert.pem", "key.pem"] {
        let got = ok(&key_id_of(&env, &dir.join(f), &[]));
        assert_eq!(
            got.trim().parse::<KeyId>().expect("key-id output"),
            want,
            "{f}"
        );
    }
    let mode = std::fs::metadata(dir.join("key.pem"))
        .expect("key.pem")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // openssl: the current identity verifies, the old one is revoked.
    let crl = env.path("crl.pem");
    support::fetch_crl(&ca, &crl);
    let ca_pem = env.cas[0].ca_pem().display().to_string();
    let crl_s = crl.display().to_string();
    let cert_s = dir.join("cert.pem").display().to_string();
    let (good, text) = openssl(&[
        "verify",
        "-purpose",
        "smimesign",
        "-crl_check",
        "-CAfile",
        &ca_pem,
        "-CRLfile",
        &crl_s,
        &cert_s,
    ]);
    assert!(good, "{text}");
    let old_cert = env
        .store()
        .join(old["dir"].as_str().expect("dir"))
        .join("cert.pem");
    let old_s = old_cert.display().to_string();
    let (good, text) = openssl(&[
        "verify",
        "-crl_check",
        "-CAfile",
        &ca_pem,
        "-CRLfile",
        &crl_s,
        &old_s,
    ]);
    assert!(!good && text.contains("revoked"), "{text}");
}

#[test]
fn json_output_strong_lookup_and_encrypted_store() {
    let env = Env::start(1);
    let pass = [("MAILID_PASSPHRASE", "open sesame")];
    let out = env.enroll(0, &["--json", "--key-type", "rsa3072"], &pass);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["account"], ALICE);
    assert_eq!(v["key_type"], "RSA-3072");
    assert_eq!(v["revoked"], serde_json::json!([]));
    assert_eq!(v["steps"].as_array().map(Vec::len), Some(10), "{v}");
    let serial: Serial = v["serial"].as_str().expect("serial").parse().expect("hex");
    let key_id: KeyId = v["key_id"]
        .as_str()
        .expect("key_id")
        .parse()
        .expect("key ID");

    // The key is encrypted; openssl opens it with the passphrase.
    let dir = std::path::PathBuf::from(v["store"].as_str().expect("store"));
    let key = dir.join("key.pem");
    let key_text = std::fs::read_to_string(&key).expect("key.pem");
    assert!(key_text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    assert!(!key_text.contains("open sesame"));
    let key_s = key.display().to_string();
    let (good, text) = openssl(&[
        "pkey",
        "-in",
        &key_s,
        "-passin",
        "pass:open sesame",
        "-noout",
    ]);
    assert!(good, "{text}");
    let (good, _) = openssl(&["pkey", "-in", &key_s, "-passin", "pass:wrong", "-noout"]);
    assert!(!good);
    let got = ok(&env.mailid(&["key-id", &key_s], None, &pass));
    assert_eq!(got.trim().parse::<KeyId>().expect("key ID"), key_id);
    let line = one_line_failure(&env.mailid(&["key-id", &key_s], None, &[]));
    assert!(line.contains("encrypted"), "{line}");

    // Strong address lookups: the right key ID finds it, another does not.
    let mta = env.mta.url();
    let strong = format!("{key_id}?{ALICE}");
    let out = ok(&env.mailid(&["--json", "lookup", &strong, "--mta", &mta], None, &[]));
    let found: Value = serde_json::from_str(&out).expect("lookup --json");
    assert_eq!(found["serial"], serial.as_str());
    assert_eq!(found["key_id"], key_id.to_string());
    let other = KeyId::of_spki(b"some other key");
    let line = one_line_failure(&env.mailid(
        &["lookup", &format!("{other}?{ALICE}"), "--mta", &mta],
        None,
        &[],
    ));
    assert!(line.contains("404"), "{line}");
    let line =
        one_line_failure(&env.mailid(&["lookup", "nobody@example.com", "--mta", &mta], None, &[]));
    assert!(
        line.starts_with("mailid: MTA refused the look-up of nobody@example.com"),
        "{line}"
    );
    assert!(line.ends_with("(404 not-found)"), "{line}");
}
