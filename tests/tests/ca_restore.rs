//! The CA's data directory and its CRLs across a restore, over the real
//! binaries: a backup of the whole data directory or of the database alone,
//! restored after CRLs were served, never makes the CRL number go back (MTAs
//! ignore a CRL with a lower number until a later one passes the old one),
//! and no CRL entry is dated after the CRL's own thisUpdate.

#[path = "ca_support.rs"]
mod support;

use std::path::Path;
use std::time::Duration;

use mailid_tests::{bin, run_env, CA_BIN};
use support::*;

const DOMAIN: &str = "example.net";

fn ca_cli(dir: &Path, args: &[&str]) -> std::process::Output {
    let d = dir.display().to_string();
    let mut all = vec!["--data-dir", d.as_str()];
    all.extend_from_slice(args);
    run_env(&bin(CA_BIN), &all, None, &[])
}

/// Copies the regular files of `from` whose names pass `pick` into `to`
/// (created if needed).
fn copy_files(from: &Path, to: &Path, pick: impl Fn(&str) -> bool) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_file() && pick(&name) {
            std::fs::copy(&p, to.join(&name)).unwrap();
        }
    }
}

/// An `openssl -text` time (`Dec  7 01:05:15 2026 GMT`) as a tuple that
/// orders like the time.
fn openssl_time(text: &str) -> (u32, usize, u32, String) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let f: Vec<&str> = text.split_whitespace().collect();
    assert_eq!((f.len(), f[4]), (5, "GMT"), "{text}");
    let month = MONTHS.iter().position(|m| *m == f[0]).expect("month");
    (
        f[3].parse().expect("year"),
        month,
        f[1].parse().expect("day"),
        f[2].to_string(),
    )
}

fn is_db(name: &str) -> bool {
    name.starts_with("ca.sqlite")
}

/// The number of the CRL being served.
async fn served_number(env: &Env) -> u64 {
    crl_number(&crl_text(
        env.root.path(),
        &env.get_text("/v1/crl.pem").await,
    ))
}

/// Enrolls `account` again (superseding, so revoking, its identity) and
/// waits for a served CRL that lists the revoked serial; its number.
async fn revoke_by_enrolling(env: &Env, account: &str) -> u64 {
    let v = env.enroll_new(account, "p256").await;
    let revoked = v["revoked"][0].as_str().expect("one revoked").to_string();
    let crl = env
        .wait_crl(Duration::from_secs(10), |p| {
            crl_lists(&crl_text(env.root.path(), p), &revoked)
        })
        .await;
    crl_number(&crl_text(env.root.path(), &crl))
}

/// Takes a backup (the CA stopped, `pick`ed files copied), lets the CA
/// serve several newer CRLs, restores the backup and starts the CA again:
/// the CRL served then, and the next one, are numbered above every CRL
/// served before.
async fn restore_keeps_crl_numbers_increasing(pick: fn(&str) -> bool) {
    let account = format!("rita@{DOMAIN}");
    // SQLite in any run: the backups are copies of the data dir's ca.sqlite.
    let mut env = Env::start_sqlite(DOMAIN, &[&account]);
    env.enroll_new(&account, "p256").await;
    let mut served = vec![served_number(&env).await];

    let backup = env.path("backup");
    let server = env.ca.server.as_mut().unwrap();
    server.stop();
    copy_files(&env.ca.dir, &backup, pick);
    server.restart();
    served.push(served_number(&env).await);

    // Advance: revocations (CRLs signed by the server) and a CRL signed by
    // the operator command.
    for _ in 0..3 {
        served.push(revoke_by_enrolling(&env, &account).await);
    }
    let out = ca_cli(&env.ca.dir, &["crl"]);
    assert!(out.status.success());
    served.push(crl_number(&crl_text(
        env.root.path(),
        &String::from_utf8_lossy(&out.stdout),
    )));
    let newest = *served.iter().max().unwrap();

    // Restore: the picked files are replaced by the backup's.
    let server = env.ca.server.as_mut().unwrap();
    server.stop();
    for e in std::fs::read_dir(&env.ca.dir).unwrap() {
        let p = e.unwrap().path();
        if pick(&p.file_name().unwrap().to_string_lossy()) {
            std::fs::remove_file(&p).unwrap();
        }
    }
    copy_files(&backup, &env.ca.dir, |_| true);
    server.restart();
    let after = served_number(&env).await;
    assert!(
        after > newest,
        "after the restore the CRL number went back: {after} after {served:?}"
    );
    // The operator command signs above it too; the server serves that.
    let out = ca_cli(&env.ca.dir, &["crl"]);
    assert!(out.status.success());
    let cli_n = crl_number(&crl_text(
        env.root.path(),
        &String::from_utf8_lossy(&out.stdout),
    ));
    assert!(cli_n > after, "{cli_n} after {after}");
    env.wait_crl(Duration::from_secs(10), |p| {
        crl_number(&crl_text(env.root.path(), p)) >= cli_n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restoring_the_whole_data_dir_never_makes_crl_numbers_go_back() {
    restore_keeps_crl_numbers_increasing(|_| true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restoring_the_database_alone_never_makes_crl_numbers_go_back() {
    // crl.der stays the newer one.
    restore_keeps_crl_numbers_increasing(is_db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_crl_entry_is_dated_after_the_crls_this_update() {
    let account = format!("una@{DOMAIN}");
    let env = Env::start(&[], DOMAIN, &[&account]);
    env.enroll_new(&account, "p256").await;
    // Revoked now, by the server (superseded) and by the operator; the CRL
    // that lists them is signed within about a second, well inside the
    // minute thisUpdate is backdated by.
    let current = env.enroll_new(&account, "p256").await;
    let serial = current["serial"].as_str().unwrap().to_string();
    assert!(ca_cli(&env.ca.dir, &["revoke", &serial]).status.success());
    let pem = env
        .wait_crl(Duration::from_secs(10), |p| {
            crl_lists(&crl_text(env.root.path(), p), &serial)
        })
        .await;
    let text = crl_text(env.root.path(), &pem);
    let field = |l: &str, name: &str| l.trim().strip_prefix(name).map(openssl_time);
    let this_update = text
        .lines()
        .find_map(|l| field(l, "Last Update:"))
        .expect("thisUpdate");
    let dates: Vec<_> = text
        .lines()
        .filter_map(|l| field(l, "Revocation Date:"))
        .collect();
    assert_eq!(dates.len(), 2, "{text}");
    for d in &dates {
        assert!(
            *d <= this_update,
            "an entry revoked at {d:?} is listed by a CRL of thisUpdate {this_update:?}"
        );
    }
}
