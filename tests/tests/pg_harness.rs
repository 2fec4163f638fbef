//! Tests of the PostgreSQL test harness itself (`mailid_tests::pg` and
//! `scripts/pg-cluster.sh`): fresh databases are usable and dropped, a
//! private cluster survives kill -9 and restart, and the test roles refuse
//! and accept what the bad-URL tests rely on.

use mailid_tests::pg::{
    self, nocreate_url, password_url, psql, psql_ok, unreachable_url, PgCluster, NOCREATE_ROLE,
    PW_RIGHT, PW_ROLE,
};

fn database_exists(admin_url: &str, name: &str) -> bool {
    psql_ok(
        admin_url,
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'"),
    ) == "1"
}

#[test]
fn fresh_database_is_usable_and_dropped() {
    let admin = pg::admin_url();
    let db = pg::fresh_database("harness");
    let name = db.name().to_string();
    assert!(database_exists(&admin, &name));
    db.psql("CREATE TABLE t (id BIGINT PRIMARY KEY, v BYTEA NOT NULL)")
        .expect("create a table as the owner");
    psql_ok(db.url(), "INSERT INTO t VALUES (1, '\\x01'), (2, '\\x02')");
    assert_eq!(psql_ok(db.url(), "SELECT count(*) FROM t"), "2");

    // Two fresh databases never share a name.
    let other = pg::fresh_database("harness");
    assert_ne!(other.name(), name);

    drop(db);
    assert!(!database_exists(&admin, &name), "{name} still exists");
}

#[test]
fn fresh_database_is_dropped_while_in_use() {
    let admin = pg::admin_url();
    let db = pg::fresh_database("busy");
    let name = db.name().to_string();
    // A session holds the database open while it is dropped.
    let mut holder = std::process::Command::new("psql")
        .args(["-X", "-q", "-d", db.url(), "-c", "SELECT pg_sleep(30)"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn psql");
    // Wait until the session is connected to the database.
    let mut connected = false;
    for _ in 0..100 {
        let n = psql_ok(
            &admin,
            &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}'"),
        );
        if n != "0" {
            connected = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(connected, "the holding session never connected");
    drop(db);
    assert!(!database_exists(&admin, &name), "{name} still exists");
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn private_cluster_survives_kill9_and_restarts() {
    let cluster = PgCluster::start();
    let db = cluster.fresh_database("kill9");
    psql_ok(
        db.url(),
        "CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('kept')",
    );

    cluster.kill9();
    let refused = psql(db.url(), "SELECT 1").expect_err("a killed cluster must refuse");
    assert!(
        refused.contains("Connection refused") || refused.contains("No such file"),
        "unexpected error from a killed cluster: {refused}"
    );
    // Nothing listens on its TCP port either.
    assert!(std::net::TcpStream::connect(("127.0.0.1", cluster.port())).is_err());

    cluster.restart();
    assert_eq!(psql_ok(db.url(), "SELECT v FROM t"), "kept");

    cluster.stop();
    assert!(psql(db.url(), "SELECT 1").is_err());
    cluster.restart();
    assert_eq!(psql_ok(db.url(), "SELECT v FROM t"), "kept");
}

#[test]
fn private_cluster_is_stopped_when_dropped() {
    let cluster = PgCluster::start();
    let url = cluster.admin_url().to_string();
    let pid_file = cluster.dir().join("data/postmaster.pid");
    let pid = std::fs::read_to_string(&pid_file).expect("postmaster.pid");
    let pid = pid.lines().next().expect("pid line").trim().to_string();
    assert_eq!(psql_ok(&url, "SELECT 1"), "1");
    drop(cluster);
    assert!(psql(&url, "SELECT 1").is_err());
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = state.rsplit(") ").next().unwrap_or("").chars().next();
    assert!(
        matches!(state, None | Some('Z') | Some('X')),
        "postmaster {pid} still runs ({state:?})"
    );
}

#[test]
fn password_role_refuses_a_wrong_password_and_accepts_the_right_one() {
    let cluster = PgCluster::start();
    let db = cluster.fresh_database_owned("pw", PW_ROLE);

    let wrong = password_url(&db, "wrong-password");
    assert!(
        wrong.starts_with("postgresql://mailid_pw:wrong-password@127.0.0.1:"),
        "{wrong}"
    );
    let err = psql(&wrong, "SELECT 1").expect_err("a wrong password must be refused");
    assert!(err.contains("password authentication failed"), "{err}");
    // Over the socket too.
    let err = psql(&db.url_as(PW_ROLE, Some("wrong-password")), "SELECT 1")
        .expect_err("a wrong password must be refused on the socket");
    assert!(err.contains("password authentication failed"), "{err}");
    // No password at all is refused as well.
    assert!(psql(&db.tcp_url_as(PW_ROLE, None), "SELECT 1").is_err());

    let right = password_url(&db, PW_RIGHT);
    assert_eq!(psql_ok(&right, "SELECT current_user"), PW_ROLE);
    // As the owner it may create its tables.
    psql_ok(&right, "CREATE TABLE mine (id BIGINT)");
}

#[test]
fn nocreate_role_may_not_create_tables_in_a_foreign_database() {
    let cluster = PgCluster::start();
    let db = cluster.fresh_database("nocreate");
    let url = nocreate_url(&db);
    assert_eq!(psql_ok(&url, "SELECT current_user"), NOCREATE_ROLE);
    let err = psql(&url, "CREATE TABLE t (id BIGINT)").expect_err("must be refused");
    assert!(err.contains("permission denied"), "{err}");
    // The same statement works for the owner: the refusal is about rights.
    psql_ok(db.url(), "CREATE TABLE t (id BIGINT)");
}

#[test]
fn unreachable_url_is_refused() {
    let url = unreachable_url();
    assert!(url.starts_with("postgresql://postgres@127.0.0.1:"), "{url}");
    let err = psql(&url, "SELECT 1").expect_err("nothing listens there");
    assert!(err.contains("Connection refused"), "{err}");
}
