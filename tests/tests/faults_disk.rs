//! Storage faults, over the real binaries and real HTTP:
//!
//! * the disk full under the CA's and under the MTA's database (a small
//!   tmpfs): 500 `internal` / 503 `mta-unavailable`, nothing changed, the
//!   service stays up and recovers by itself when space is freed;
//! * the database read-only: at start (a tmpfs remounted read-only: `serve`
//!   refuses with one line on stderr and starts once it is writable again)
//!   and while serving (an ext4 loop image put into its error state, which
//!   the kernel turns read-only for good: 500 `internal`, nothing changed,
//!   the service stays up; it serves again after the operator repairs the
//!   file system and restarts it).
//!
//! Mounting needs root; without it these tests print why they are skipped
//! and pass.

#[path = "faults_support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use mailid_tests::flow::{self, KeyType};
use mailid_tests::{bin, temp_dir, CA_BIN, MTA_BIN};
use serde_json::{json, Value};
use support::*;

// ---------------------------------------------------------------------------
// Disk full.

#[test]
fn disk_full_under_the_ca_gives_500_changes_nothing_and_recovers() {
    let root = temp_dir();
    let disk = match Mount::tmpfs(&root.path().join("disk"), "16m") {
        Ok(m) => m,
        Err(why) => return skip("disk_full_under_the_ca", &why),
    };
    // SQLite in any run: the fault is the disk under the CA's SQLite file.
    let env = sqlite_env_in(root.path(), &disk.path);
    let (mta, ca) = (env.mta.url(), env.ca.url());
    let pid = ca_pid(&env);
    let first = serial_of(&try_enroll(&mta, &ca, ALICE));

    let filler = fill_disk(&disk.path);
    for i in 0..3 {
        let a = try_enroll(&mta, &ca, ALICE);
        assert_problem(
            &a,
            500,
            "internal",
            &format!("enrollment {i} on a full disk"),
        );
        assert!(a.took < Duration::from_secs(15), "took {:?}", a.took);
    }
    // Nothing changed; reads and the CRL still work.
    assert_eq!(account_state(&ca, ALICE), (Some(first.clone()), 1));
    assert!(healthy(&ca));
    let crl = flow::http()
        .get(format!("{ca}/v1/crl.der"))
        .send()
        .expect("GET crl");
    assert_eq!(crl.status(), 200);

    // Space comes back: the same process issues again, superseding `first`.
    std::fs::remove_file(&filler).unwrap();
    let second = serial_of(&try_enroll(&mta, &ca, ALICE));
    assert_eq!(account_state(&ca, ALICE), (Some(second), 2));
    let old: Value = flow::http()
        .get(format!("{ca}/v1/certificates/{first}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(old["status"], "revoked");
    assert_eq!(ca_pid(&env), pid, "the CA was restarted");
    let log = env.ca.server.as_ref().unwrap().log_text();
    assert_no_panic(&log, "the CA");
    drop(env);
    drop(disk);
}

#[test]
fn disk_full_under_the_mta_gives_documented_errors_and_recovers() {
    let root = temp_dir();
    let disk = match Mount::tmpfs(&root.path().join("disk"), "16m") {
        Ok(m) => m,
        Err(why) => return skip("disk_full_under_the_mta", &why),
    };
    let env = env_in(&disk.path, root.path(), None);
    let (mta, ca) = (env.mta.url(), env.ca.url());
    let mta_pid = env.mta.server.as_ref().and_then(|s| s.pid()).unwrap();
    let first = serial_of(&try_enroll(&mta, &ca, ALICE));
    // A code issued before the disk fills up.
    let c = flow::csr(ALICE, KeyType::P256);
    let code = flow::totp(&mta, ALICE, PASSWORD, &c.key_id);

    let filler = fill_disk(&disk.path);
    // Issuing a code needs a write: 500 internal, as a problem document.
    let other = flow::csr(ALICE, KeyType::P256);
    let resp = flow::http()
        .post(format!("{mta}/v1/totp"))
        .basic_auth(ALICE, Some(PASSWORD))
        .json(&json!({ "key_id": other.key_id }))
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = resp.text().unwrap();
    assert_problem(
        &Answer {
            status,
            content_type: ctype,
            problem: serde_json::from_str(&text).ok(),
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            took: Duration::ZERO,
        },
        500,
        "internal",
        "POST /v1/totp on a full disk",
    );
    // The MTA cannot record the code's use: the CA answers 503.
    let a = post_enroll(&ca, &c.pem, &code.totp);
    assert_problem(&a, 503, "mta-unavailable", "enrollment, MTA disk full");
    assert_eq!(account_state(&ca, ALICE), (Some(first), 1));
    // Lookups (reads) still work.
    let look = flow::http()
        .get(format!("{mta}/v1/identity/{ALICE}"))
        .send()
        .unwrap();
    assert_eq!(look.status(), 404);
    assert!(healthy(&mta));

    // Space comes back: the code was not used up by the failed validation.
    std::fs::remove_file(&filler).unwrap();
    let a = post_enroll(&ca, &c.pem, &code.totp);
    let second = serial_of(&a);
    assert_eq!(account_state(&ca, ALICE), (Some(second), 2));
    // Used now, so it is refused the second time.
    let again = post_enroll(&ca, &c.pem, &code.totp);
    assert_problem(&again, 403, "totp-rejected", "replay after recovery");
    assert_eq!(
        env.mta.server.as_ref().and_then(|s| s.pid()),
        Some(mta_pid),
        "the MTA was restarted"
    );
    assert_no_panic(&env.mta.server.as_ref().unwrap().log_text(), "the MTA");
    drop(env);
    drop(disk);
}

// ---------------------------------------------------------------------------
// Read-only database.

#[test]
fn a_read_only_database_at_start_is_refused_in_one_line() {
    let root = temp_dir();
    let disk = match Mount::tmpfs(&root.path().join("disk"), "16m") {
        Ok(m) => m,
        Err(why) => return skip("a_read_only_database_at_start", &why),
    };
    // SQLite in any run: the fault is the disk under the CA's SQLite file.
    let mut env = sqlite_env_in(&disk.path, &disk.path);
    let (mta, ca) = (env.mta.url(), env.ca.url());
    let first = serial_of(&try_enroll(&mta, &ca, ALICE));
    env.ca.server.as_mut().unwrap().stop();
    env.mta.server.as_mut().unwrap().stop();
    let ca_files = snapshot(&env.ca.dir);
    let mta_files = snapshot(&env.mta.dir);

    disk.remount("ro").expect("remount read-only");
    let out = serve_must_fail(&bin(CA_BIN), &env.ca.dir, &[]);
    let line = assert_one_line_failure(&out, "mailid-ca: ", &["read-only"]);
    eprintln!("CA: {line}");
    let out = serve_must_fail(&bin(MTA_BIN), &env.mta.dir, &[]);
    let line = assert_one_line_failure(&out, "mailid-mta-auth: ", &["read-only"]);
    eprintln!("MTA: {line}");

    disk.remount("rw").expect("remount read-write");
    assert_eq!(snapshot(&env.ca.dir), ca_files, "the CA's files changed");
    assert_eq!(snapshot(&env.mta.dir), mta_files, "the MTA's files changed");
    env.mta.server.as_mut().unwrap().restart();
    env.ca.server.as_mut().unwrap().restart();
    let mta = env.mta.url();
    let second = serial_of(&try_enroll(&mta, &ca, ALICE));
    assert_eq!(account_state(&ca, ALICE), (Some(second), 2));
    let old: Value = flow::http()
        .get(format!("{ca}/v1/certificates/{first}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(old["status"], "revoked");
    drop(env);
    drop(disk);
}

#[test]
fn a_database_turning_read_only_while_serving_changes_nothing() {
    let root = temp_dir();
    let image = root.path().join("ca.img");
    let disk = match Mount::ext4_loop(&image, &root.path().join("disk"), 32) {
        Ok(m) => m,
        Err(why) => return skip("a_database_turning_read_only_while_serving", &why),
    };
    let trigger = match disk.device() {
        Some(d) => PathBuf::from(format!("/sys/fs/ext4/{d}/trigger_fs_error")),
        None => return skip("a_database_turning_read_only_while_serving", "no device"),
    };
    if !trigger.exists() {
        return skip(
            "a_database_turning_read_only_while_serving",
            &format!("{} is missing", trigger.display()),
        );
    }
    // SQLite in any run: the fault is the disk under the CA's SQLite file.
    let mut env = sqlite_env_in(root.path(), &disk.path);
    let (mta, ca) = (env.mta.url(), env.ca.url());
    let pid = ca_pid(&env);
    let first = serial_of(&try_enroll(&mta, &ca, ALICE));

    // The fault strikes a while after set-up (the files written by `init`
    // have reached the disk). The kernel's answer to a file-system error:
    // read-only from now on. The CA's log is on the same file system.
    let _ = Command::new("sync").status();
    std::fs::write(&trigger, "mailid fault test\n").expect("trigger an ext4 error");
    for i in 0..3 {
        let c = flow::csr(ALICE, KeyType::P256);
        let code = flow::totp(&mta, ALICE, PASSWORD, &c.key_id);
        let a = post_enroll_or(&ca, &c.pem, &code.totp).unwrap_or_else(|e| {
            let server = env.ca.server.as_ref().unwrap();
            panic!(
                "no answer ({e:?}); CA process: {:?}; log:\n{}",
                std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .map(|s| s.lines().take(3).collect::<Vec<_>>().join(" "))
                    .unwrap_or_else(|_| "gone".into()),
                server.log_text()
            )
        });
        assert_problem(
            &a,
            500,
            "internal",
            &format!("enrollment {i}, read-only db"),
        );
        assert!(a.took < Duration::from_secs(15), "took {:?}", a.took);
    }
    assert!(healthy(&ca), "the CA went down");
    assert_eq!(ca_pid(&env), pid);
    assert_no_panic(&env.ca.server.as_ref().unwrap().log_text(), "the CA");

    // The operator repairs the file system and restarts the CA.
    env.ca.server.as_mut().unwrap().stop();
    assert!(disk.unmount(), "umount");
    let fsck = Command::new("e2fsck")
        .args(["-f", "-y"])
        .arg(&image)
        .output()
        .expect("e2fsck");
    assert!(
        fsck.status.code().unwrap_or(8) < 4,
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let out = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(&disk.path)
        .output()
        .expect("mount");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.ca.server.as_mut().unwrap().restart();
    assert_eq!(account_state(&ca, ALICE), (Some(first), 1));
    let second = serial_of(&try_enroll(&mta, &ca, ALICE));
    assert_eq!(account_state(&ca, ALICE), (Some(second), 2));
    drop(env);
    drop(disk);
}
