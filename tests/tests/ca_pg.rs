//! The CA on PostgreSQL over the real binary (SPEC §8), on the test
//! cluster of `MAILID_TEST_PG_URL`: the forms of `--database`
//! (before or after the subcommand, `MAILID_DATABASE`), `init --database`
//! recorded in `config.json`, and `db migrate --to` moving a populated
//! SQLite data directory (superseded, revoked and keyCompromise identities,
//! a route, the CRL state) into an empty database and refusing a non-empty
//! one.

#[path = "ca_support.rs"]
mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use mailid_tests::{bin, pg, run_env, CA_BIN};
use serde_json::Value;
use support::{crl_lists, crl_number, crl_text, Env};

const DOMAIN: &str = "example.org";

fn ca(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let d = dir.display().to_string();
    let mut all = vec!["--data-dir", d.as_str()];
    all.extend_from_slice(args);
    run_env(&bin(CA_BIN), &all, None, env)
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn config(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

/// `mta list` of the database a command line selects.
fn routes(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    ok(&ca(dir, args, env))
}

#[test]
fn database_flag_forms_and_the_url_init_records() {
    let root = mailid_tests::temp_dir();
    let db = pg::fresh_database("capg_flags");
    let on_pg = root.path().join("on-pg");
    let local = root.path().join("local");

    // `init --database` (after the subcommand) records the URL and makes no
    // SQLite file; later commands need no flag.
    ok(&ca(
        &on_pg,
        &["init", "--name", "PG CA", "--database", db.url()],
        &[],
    ));
    assert_eq!(config(&on_pg)["database"], db.url());
    assert!(!on_pg.join("ca.sqlite").exists());
    let cred = root.path().join("cred");
    std::fs::write(
        &cred,
        format!(
            "{}\n",
            mailid_shared::authsig::Credential::generate().to_text()
        ),
    )
    .unwrap();
    let c = cred.display().to_string();
    ok(&ca(
        &on_pg,
        &[
            "mta",
            "add",
            "--domain",
            DOMAIN,
            "--url",
            "http://127.0.0.1:9",
            "--ca-name",
            "pg-ca",
            "--credential-file",
            &c,
        ],
        &[],
    ));
    assert!(routes(&on_pg, &["mta", "list"], &[]).contains(DOMAIN));
    assert_eq!(
        db.psql("SELECT domain FROM mta_routes").unwrap(),
        DOMAIN,
        "the route is in PostgreSQL"
    );

    // A SQLite data dir: its own (empty) routes, or the database a flag
    // or the environment names, the flag before or after the subcommand.
    ok(&ca(&local, &["init", "--name", "Local CA"], &[]));
    assert!(local.join("ca.sqlite").exists());
    assert!(config(&local).get("database").is_none());
    assert!(!routes(&local, &["mta", "list"], &[]).contains(DOMAIN));
    assert!(routes(&local, &["--database", db.url(), "mta", "list"], &[]).contains(DOMAIN));
    assert!(routes(&local, &["mta", "list", "--database", db.url()], &[]).contains(DOMAIN));
    assert!(routes(&local, &["mta", "list"], &[("MAILID_DATABASE", db.url())]).contains(DOMAIN));
    // The flag overrides the environment.
    let other = pg::fresh_database("capg_flags_other");
    let out = ca(
        &local,
        &["--database", other.url(), "mta", "list"],
        &[("MAILID_DATABASE", db.url())],
    );
    // `other` holds no CA schema: refused in one line, nothing created.
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("no mailid-ca schema"), "{err}");
    assert_eq!(
        other
            .psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            .unwrap(),
        "0"
    );
    // A second init on a database that holds a CA is refused.
    let out = ca(
        &root.path().join("again"),
        &["init", "--name", "Again", "--database", db.url()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a CA's data"));
    assert!(!root.path().join("again").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn db_migrate_moves_a_populated_data_dir_and_refuses_a_non_empty_target() {
    let (a, b, c) = (
        format!("ann@{DOMAIN}"),
        format!("bob@{DOMAIN}"),
        format!("cy@{DOMAIN}"),
    );
    let mut env = Env::start_sqlite(DOMAIN, &[&a, &b, &c]);
    let a1 = env.enroll_new(&a, "p256").await;
    let a2 = env.enroll_new(&a, "p384").await;
    let b1 = env.enroll_new(&b, "p256").await;
    let c1 = env.enroll_new(&c, "rsa2048").await;
    let serial = |v: &Value| v["serial"].as_str().unwrap().to_string();
    ok(&ca(
        &env.ca.dir,
        &["revoke", &serial(&b1), "--reason", "keyCompromise"],
        &[],
    ));
    ok(&ca(&env.ca.dir, &["revoke", &serial(&c1)], &[]));
    let revoked = [serial(&a1), serial(&b1), serial(&c1)];
    let crl = env
        .wait_crl(Duration::from_secs(10), |p| {
            let t = crl_text(env.root.path(), p);
            revoked.iter().all(|s| crl_lists(&t, s))
        })
        .await;
    let last = crl_number(&crl_text(env.root.path(), &crl));
    let listed = ok(&ca(&env.ca.dir, &["list", "--json"], &[]));
    let (_, account_a) = env.get_json(&format!("/v1/accounts/{a}")).await;

    // The service stopped, the move.
    env.ca.server.as_mut().unwrap().stop();
    let db = pg::fresh_database("capg_migrate");
    let out = ca(&env.ca.dir, &["db", "migrate", "--to", db.url()], &[]);
    let said = ok(&out);
    assert!(
        said.contains("copied 4 certificates (3 revoked), 1 compromised keys and 1 MTA routes"),
        "{said}"
    );
    assert_eq!(config(&env.ca.dir)["database"], db.url());
    assert_eq!(db.psql("SELECT count(*) FROM certificates").unwrap(), "4");
    assert_eq!(ok(&ca(&env.ca.dir, &["list", "--json"], &[])), listed);

    // Served from PostgreSQL: the same accounts, a higher CRL number that
    // still lists every revocation, the one-identity rule, the compromised
    // key.
    env.ca.server.as_mut().unwrap().restart();
    assert_eq!(
        env.get_json(&format!("/v1/accounts/{a}")).await.1,
        account_a
    );
    let crl = env
        .wait_crl(Duration::from_secs(10), |p| {
            crl_number(&crl_text(env.root.path(), p)) > last
        })
        .await;
    let text = crl_text(env.root.path(), &crl);
    assert!(revoked.iter().all(|s| crl_lists(&text, s)), "{text}");
    let a3 = env.enroll_new(&a, "p256").await;
    assert_eq!(a3["revoked"], serde_json::json!([serial(&a2)]));
    let (_, show) = env
        .get_json(&format!("/v1/certificates/{}", serial(&b1)))
        .await;
    assert_eq!(show["reason"], "keyCompromise");
    assert_eq!(
        db.psql("SELECT count(*) FROM compromised_keys").unwrap(),
        "1"
    );

    // Another SQLite data dir cannot be moved into the now populated
    // database: one line, nothing changed on either side.
    let other = Env::start_sqlite(DOMAIN, &[&a]);
    let before = std::fs::read(other.ca.dir.join("config.json")).unwrap();
    let count = db.psql("SELECT count(*) FROM certificates").unwrap();
    let out = ca(&other.ca.dir, &["db", "migrate", "--to", db.url()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("is not empty"), "{err}");
    assert_eq!(
        std::fs::read(other.ca.dir.join("config.json")).unwrap(),
        before
    );
    assert_eq!(db.psql("SELECT count(*) FROM certificates").unwrap(), count);
    // A data dir already on PostgreSQL is not moved again.
    let out = ca(&env.ca.dir, &["db", "migrate", "--to", db.url()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already uses the PostgreSQL database"));
}
