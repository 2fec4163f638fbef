//! `mailid lookup --verify` (SPEC §11) against the real MTA's identity
//! log: three identities of one account verify with the first-seen and
//! current key IDs and every change reported; then each kind of tampering
//! — a changed entry, a deleted newest entry, a replaced certificate, a
//! truncated history (edited in the MTA's SQLite file), a forked log and a
//! new log key (as the client's pinned memory of them) — fails with one
//! line naming it.

#[path = "client_support.rs"]
mod support;

use std::path::Path;
use std::process::Output;

use mailid_shared::translog::LogSigner;
use serde_json::Value;
use support::*;

fn lookup(env: &Env) -> Output {
    let mta = env.mta.url();
    env.mailid(
        &["--json", "lookup", ALICE, "--mta", &mta, "--verify"],
        None,
        &[],
    )
}

/// A verified lookup, retried while the newest entry waits for its
/// checkpoint (at most one signing a second).
fn verified(env: &Env) -> Value {
    for _ in 0..10 {
        let out = lookup(env);
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).expect("lookup --json");
            return v["verified"].clone();
        }
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(err.contains("retry"), "lookup --verify failed: {err}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    panic!("the newest entry never reached a checkpoint");
}

/// `lookup --verify` must fail with one line containing `what`.
fn refused(env: &Env, what: &str) {
    let out = lookup(env);
    let line = one_line_failure(&out);
    assert!(line.contains("verify: "), "{line}");
    assert!(line.contains(what), "expected '{what}': {line}");
}

fn db(env: &Env) -> rusqlite::Connection {
    rusqlite::Connection::open(env.mta.dir.join("mta-auth.sqlite")).expect("open the MTA database")
}

fn current_key_id(env: &Env) -> String {
    env.show()["current"]["key_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Three identities, verified after the first and after the third.
fn three(env: &Env) -> (String, String) {
    env.enroll(0, &[], &[]);
    let first = current_key_id(env);
    let v = verified(env);
    assert_eq!(v["first_key_id"], first.as_str());
    assert_eq!(v["entries"], 1);
    env.enroll(0, &[], &[]);
    env.enroll(0, &[], &[]);
    let third = current_key_id(env);
    (first, third)
}

#[test]
fn three_identities_verify_and_every_change_is_reported() {
    let env = Env::start(1);
    let (first, third) = three(&env);
    let v = verified(&env);
    assert_eq!(v["first_key_id"], first.as_str(), "{v}");
    assert_eq!(v["current_key_id"], third.as_str(), "{v}");
    assert_eq!(v["entries"], 3, "{v}");
    let changes = v["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{v}");
    assert!(changes.iter().all(|c| c["event"] == "superseded"), "{v}");
    assert_eq!(changes[0]["from"], first.as_str());
    assert_eq!(changes[1]["to"], third.as_str());
    assert!(v["consistent_with"].as_u64().is_some(), "{v}");
    // The text form names each step.
    let mta = env.mta.url();
    let text = ok(&env.mailid(&["lookup", ALICE, "--mta", &mta, "--verify"], None, &[]));
    assert!(text.contains(&format!("first seen {first}")), "{text}");
    assert!(text.contains("chain intact"), "{text}");
    assert_eq!(text.matches("changed:").count(), 2, "{text}");
    // No address in clear in the client's pins either (they are the
    // client's own, keyed by address; the log's blind is what is pinned).
    let pins = std::fs::read_to_string(env.store().join("log-pins.json")).unwrap();
    assert!(pins.contains("\"blind\""), "{pins}");
}

#[test]
fn a_changed_entry_or_a_truncated_history_is_found() {
    let env = Env::start(1);
    three(&env);
    verified(&env);
    // One byte of the account's middle entry (its `at` field).
    let c = db(&env);
    let (id, mut entry): (i64, Vec<u8>) = c
        .query_row("SELECT id, entry FROM log_entries WHERE seq = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let n = entry.len();
    entry[n - 40] ^= 1;
    c.execute(
        "UPDATE log_entries SET entry = ?1 WHERE id = ?2",
        rusqlite::params![entry, id],
    )
    .unwrap();
    refused(&env, "chain broken at seq 2");
    // The history from seq 1 on (the first entry gone).
    c.execute("DELETE FROM log_entries WHERE seq = 0", [])
        .unwrap();
    refused(&env, "history truncated");
}

#[test]
fn a_deleted_newest_entry_is_found() {
    let env = Env::start(1);
    three(&env);
    verified(&env);
    // The newest entry deleted: the history now ends at the second, which
    // is not the identity served.
    db(&env)
        .execute("DELETE FROM log_entries WHERE seq = 2", [])
        .unwrap();
    refused(&env, "served certificate is not the one logged");
}

#[test]
fn a_replaced_certificate_is_found() {
    let env = Env::start(1);
    three(&env);
    verified(&env);
    // A certificate for alice the MTA never logged: issued by the CA (and
    // valid), but served in place of the published one.
    let (_, issued) = mailid_tests::flow::enroll_new_key(
        &env.mta.url(),
        &env.cas[0].url(),
        ALICE,
        PASSWORD,
        mailid_tests::flow::KeyType::P256,
    );
    let der = mailid_shared::pem::decode_one(&issued.certificate, &["CERTIFICATE"]).unwrap();
    db(&env)
        .execute(
            "UPDATE identities SET certificate = ?1, key_id = ?2, serial = ?3",
            rusqlite::params![der, issued.key_id.as_bytes(), issued.serial.as_str()],
        )
        .unwrap();
    refused(&env, "served certificate is not the one logged");
}

/// Rewrites the client's pins for this MTA.
fn edit_pins(store: &Path, f: impl FnOnce(&mut Value)) {
    let p = store.join("log-pins.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let mta = v["mtas"]
        .as_object_mut()
        .unwrap()
        .values_mut()
        .next()
        .unwrap();
    f(mta);
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn a_forked_log_or_a_new_log_key_is_refused() {
    let env = Env::start(1);
    three(&env);
    verified(&env);
    // A checkpoint of the same size with another root: a fork the client
    // saw before.
    let saved = std::fs::read(env.store().join("log-pins.json")).unwrap();
    edit_pins(&env.store(), |m| {
        let fake = mailid_shared::translog::Hash([7u8; 32]);
        m["root"] = Value::String(mailid_shared::translog::hash_b64(&fake));
    });
    refused(&env, "log forked");
    // A smaller checkpoint seen before whose root is not a prefix of this
    // log's.
    edit_pins(&env.store(), |m| {
        m["size"] = Value::from(1);
    });
    refused(&env, "log forked");
    std::fs::write(env.store().join("log-pins.json"), &saved).unwrap();
    verified(&env);
    // Another log key pinned for this MTA than the one it serves.
    let other = LogSigner::from_pkcs8(
        "elsewhere/mailid-log",
        &LogSigner::generate_pkcs8().unwrap(),
    )
    .unwrap();
    edit_pins(&env.store(), |m| {
        m["vkey"] = Value::String(other.vkey());
    });
    refused(&env, "log key changed");
}
