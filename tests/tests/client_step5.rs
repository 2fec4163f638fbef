//! Step 5: with two CAs and one MTA, enrolling at CA2 while holding a valid
//! CA1 identity revokes it at CA1 first (with a TOTP bound to its key).

#[path = "client_support.rs"]
mod support;

use mailid_shared::Serial;
use serde_json::Value;
use support::*;

#[test]
fn moving_to_another_ca_revokes_the_old_identity_there_first() {
    let env = Env::start(2);
    let (ca1, ca2) = (env.cas[0].url(), env.cas[1].url());

    let out1 = env.enroll(0, &[], &[]);
    let s1 = serial_after(&out1, "CA issued serial");
    assert!(
        out1.contains("step 5: no valid identity from another CA"),
        "{out1}"
    );

    // Re-enrolling at the same CA needs no step-5 revocation.
    let out2 = env.enroll(0, &[], &[]);
    let s2 = serial_after(&out2, "CA issued serial");
    assert!(
        out2.contains("step 5: no valid identity from another CA"),
        "{out2}"
    );
    assert!(
        out2.contains(&format!("step 8: CA revoked serial {s1}")),
        "{out2}"
    );

    // Moving to CA2: step 5 revokes s2 at CA1, then CA2 issues.
    let out3 = env.enroll(1, &["--json"], &[]);
    let v: Value = serde_json::from_str(&out3).unwrap_or_else(|e| panic!("{e}: {out3}"));
    assert_eq!(v["revoked_at_previous_ca"], s2.as_str(), "{v}");
    assert_eq!(v["ca"], ca2.as_str());
    assert_eq!(
        v["revoked"],
        serde_json::json!([]),
        "CA2 had nothing to supersede"
    );
    let steps: Vec<String> = serde_json::from_value(v["steps"].clone()).expect("steps");
    let step5 = steps
        .iter()
        .find(|s| s.starts_with("step 5:"))
        .expect("step 5 line");
    assert!(
        step5.contains(&format!("revoked serial {s2}")) && step5.contains(&ca1),
        "{step5}"
    );
    let s3: Serial = v["serial"].as_str().expect("serial").parse().expect("hex");

    // CA1's CRL lists s2 (and s1); its record says superseded.
    let crl = env.path("ca1-crl.pem");
    assert!(crl_lists(&ca1, &s2, &crl), "CA1's CRL does not list {s2}");
    assert!(crl_serials(&crl).contains(&s1));
    let info: Value = reqwest::blocking::get(format!("{ca1}/v1/certificates/{s2}"))
        .and_then(|r| r.json())
        .expect("GET certificate");
    assert_eq!(info["status"], "revoked", "{info}");
    assert_eq!(info["reason"], "superseded", "{info}");

    // CA2's identity is valid and published; the store knows all three.
    let info: Value = reqwest::blocking::get(format!("{ca2}/v1/certificates/{s3}"))
        .and_then(|r| r.json())
        .expect("GET certificate");
    assert_eq!(info["status"], "valid", "{info}");
    let mta = env.mta.url();
    let looked = ok(&env.mailid(&["--json", "lookup", ALICE, "--mta", &mta], None, &[]));
    let looked: Value = serde_json::from_str(&looked).expect("lookup --json");
    assert_eq!(looked["serial"], s3.as_str());
    let show = env.show();
    let ids = show["identities"].as_array().expect("identities");
    let status = |s: &Serial| {
        ids.iter()
            .find(|i| i["serial"] == s.as_str())
            .map(|i| (i["status"].clone(), i["ca_url"].clone()))
            .expect("stored")
    };
    assert_eq!(status(&s1), ("superseded".into(), ca1.clone().into()));
    assert_eq!(status(&s2), ("superseded".into(), ca1.clone().into()));
    assert_eq!(status(&s3), ("current".into(), ca2.clone().into()));

    // And back to CA1: step 5 now revokes s3 at CA2.
    let out4 = env.enroll(0, &[], &[]);
    assert!(
        out4.contains(&format!("step 5: revoked serial {s3}")),
        "{out4}"
    );
    assert!(crl_lists(&ca2, &s3, &env.path("ca2-crl.pem")));
}

#[test]
fn an_unreachable_previous_ca_stops_the_move_and_changes_nothing() {
    let mut env = Env::start(2);
    let out1 = env.enroll(0, &[], &[]);
    let s1 = serial_after(&out1, "CA issued serial");
    let ca1 = env.cas[0].url();
    if let Some(s) = env.cas[0].server.as_mut() {
        s.stop();
    }
    let mta = env.mta.url();
    let ca2 = env.cas[1].url();
    let out = env.try_enroll((ALICE, &mta, &ca2), PASSWORD, &[], &[]);
    let line = one_line_failure(&out);
    assert_eq!(
        line,
        format!("mailid: cannot reach the CA at {ca1}: connection refused")
    );
    // Nothing was issued at CA2 and the store still has s1 as current.
    let show = env.show();
    assert_eq!(show["current"]["serial"], s1.as_str(), "{show}");
    assert_eq!(show["identities"].as_array().map(Vec::len), Some(1));
    let acct: Value = reqwest::blocking::get(format!("{ca2}/v1/accounts/{ALICE}"))
        .and_then(|r| r.json())
        .expect("GET account");
    assert!(acct["current"].is_null(), "{acct}");
}
