//! The database setting over the real binary (SPEC §8): `--database`
//! before or after the subcommand and from `MAILID_DATABASE`; `init
//! --database` records it; bad URLs are one line, exit 1, nothing changed,
//! the password never printed. Needs the cluster of `MAILID_TEST_PG_URL`
//! (scripts/pg-cluster.sh: it has the roles the bad-URL cases use).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;
use mailid_tests::pg::{self, TestDatabase};

/// Runs the binary with `--data-dir dir args…` and extra environment.
fn mta_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir").arg(dir).args(args);
    cmd.env_remove("MAILID_DATABASE")
        .env_remove("MAILID_MTA_DATA_DIR")
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn accounts(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["account", "list"];
    args.extend_from_slice(extra);
    mta_ok(dir, &args, None)
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect()
}

fn config(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

/// Tables in the database's public schema.
fn tables(db: &TestDatabase) -> String {
    db.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        .unwrap()
}

#[test]
fn database_flag_before_and_after_the_subcommand_and_from_the_environment() {
    let db = pg::fresh_database("mtapg_flag");
    let url = db.url().to_string();
    let on_pg = tempfile::tempdir().unwrap();
    let out = mta_ok(on_pg.path(), &["init", "--database", &url], None);
    assert!(out.contains("initialised"), "{out}");
    // Recorded in config.json (0600); no SQLite file.
    assert_eq!(config(on_pg.path())["database"], url.as_str());
    assert!(!db_path(on_pg.path()).exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(on_pg.path().join("config.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Later commands need no flag.
    add_account(on_pg.path(), "a@example.org", "pw");
    assert_eq!(accounts(on_pg.path(), &[]), ["a@example.org"]);

    // A SQLite data dir, pointed at the database by flag or environment.
    let on_sqlite = sqlite_data_dir();
    let d = on_sqlite.path();
    let add = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.arg("--data-dir").arg(d).args(args);
        cmd.env_remove("MAILID_DATABASE")
            .env("MAILID_PASSWORD", "pw");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    add(
        &["--database", &url, "account", "add", "b@example.org"],
        &[],
    );
    add(
        &["account", "add", "c@example.org", "--database", &url],
        &[],
    );
    add(
        &["account", "add", "d@example.org"],
        &[("MAILID_DATABASE", &url)],
    );
    let all = [
        "a@example.org",
        "b@example.org",
        "c@example.org",
        "d@example.org",
    ];
    assert_eq!(accounts(on_pg.path(), &[]), all);
    assert_eq!(accounts(d, &["--database", &url]), all);
    assert!(accounts(d, &[]).is_empty(), "the SQLite file is untouched");
    // The flag overrides the recorded URL: a database without the schema
    // is refused (only init creates it), and nothing is created there.
    let bare = pg::fresh_database("mtapg_bare");
    let out = mta_env(
        on_pg.path(),
        &["account", "list", "--database", bare.url()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("holds no mailid-mta-auth schema"), "{err}");
    assert_eq!(tables(&bare), "0");

    // init again: the same database is fine, another one is refused.
    let again = mta_ok(on_pg.path(), &["init"], None);
    assert!(again.contains("already initialised"), "{again}");
    let out = mta_env(on_pg.path(), &["init", "--database", bare.url()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("db migrate"));
    assert_eq!(config(on_pg.path())["database"], url.as_str());
    assert_eq!(tables(&bare), "0");
}

const SECRET: &str = "Sekr1t-Pa55word-never-shown";

/// A failure that is one line naming `what`, exit 1, the password never
/// printed.
fn refused(out: &Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    let text = format!("{err}{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(what), "wanted {what:?} in {err}");
    assert!(!text.contains(SECRET), "{text}");
    assert!(!text.contains(pg::PW_RIGHT), "{text}");
}

#[test]
fn bad_urls_are_one_line_exit_1_nothing_changed_password_never_printed() {
    let root = tempfile::tempdir().unwrap();
    let fresh = root.path().join("fresh");
    let owned = pg::fresh_database_owned("mtapg_pw", pg::PW_ROLE);
    let theirs = pg::fresh_database("mtapg_nocreate");
    let unreachable = format!(
        "postgresql://postgres:{SECRET}@127.0.0.1:{}/postgres",
        mailid_tests::free_port()
    );
    // (URL, what init says, what the other commands say).
    let cases = [
        (
            format!("mysql://root:{SECRET}@127.0.0.1/mail"),
            "unsupported database URL scheme 'mysql'",
            "unsupported database URL scheme 'mysql'",
        ),
        (
            unreachable,
            "the database is unavailable",
            "the database is unavailable",
        ),
        (
            pg::password_url(&owned, SECRET),
            "password authentication failed",
            "password authentication failed",
        ),
        (
            pg::nocreate_url(&theirs),
            "permission denied for schema public",
            "holds no mailid-mta-auth schema",
        ),
    ];
    // An existing data dir whose config must not change.
    let existing = sqlite_data_dir();
    let before = std::fs::read(existing.path().join("config.json")).unwrap();
    for (url, what, other) in &cases {
        let out = mta_env(&fresh, &["init", "--database", url], &[]);
        refused(&out, what);
        assert!(!fresh.exists(), "init created the data dir for {what}");
        for args in [
            vec!["account", "list", "--database", url.as_str()],
            vec![
                "--database",
                url.as_str(),
                "serve",
                "--listen",
                "127.0.0.1:0",
            ],
        ] {
            let out = mta_env(existing.path(), &args, &[]);
            refused(&out, other);
        }
        let out = mta_env(
            existing.path(),
            &["ca", "list"],
            &[("MAILID_DATABASE", url.as_str())],
        );
        refused(&out, other);
    }
    assert_eq!(tables(&owned), "0");
    assert_eq!(tables(&theirs), "0");
    assert_eq!(
        std::fs::read(existing.path().join("config.json")).unwrap(),
        before
    );
    // A password from PGPASSWORD: the right one works, the wrong one is
    // refused without being shown.
    let bare = owned.tcp_url_as(pg::PW_ROLE, None);
    let out = mta_env(
        &fresh,
        &["init", "--database", &bare],
        &[("PGPASSWORD", SECRET)],
    );
    refused(&out, "password authentication failed");
    let out = mta_env(
        &fresh,
        &["init", "--database", &bare],
        &[("PGPASSWORD", pg::PW_RIGHT)],
    );
    assert!(out.status.success(), "{out:?}");
    // The right password in the URL: recorded in config.json (0600), never
    // on stdout, stderr or in the service's log.
    let with_pw = pg::password_url(&owned, pg::PW_RIGHT);
    let d2 = root.path().join("d2");
    let out = mta_env(&d2, &["init", "--database", &with_pw], &[]);
    assert!(out.status.success(), "{out:?}");
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!shown.contains(pg::PW_RIGHT), "{shown}");
    assert_eq!(config(&d2)["database"], with_pw.as_str());
    let srv = Server::start(&d2, &[]);
    let log = srv.stop();
    assert!(log.contains("mailid_pw:***@"), "{log}");
    assert!(!log.contains(pg::PW_RIGHT), "{log}");
}
