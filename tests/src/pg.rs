//! PostgreSQL for the tests: fresh databases on the cluster named by
//! `MAILID_TEST_PG_URL`, private clusters a test may stop or kill, and the
//! URLs the bad-URL tests need (test roles, a closed port).
//!
//! The clusters come from `scripts/pg-cluster.sh` (which `scripts/test.sh`
//! runs before the cargo tests); databases are created and dropped with
//! `psql`, so the harness needs no database driver of its own. The
//! PostgreSQL tests fail, never skip, when no cluster is configured.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Environment variable holding the admin URL of the shared test cluster.
pub const ENV_URL: &str = "MAILID_TEST_PG_URL";
/// Role with a password (scram-sha-256 on every line of a pg-cluster.sh
/// cluster) and CREATEDB.
pub const PW_ROLE: &str = "mailid_pw";
/// The password of [`PW_ROLE`].
pub const PW_RIGHT: &str = "right-password";
/// Role that may log in and nothing else: it may not create tables in a
/// database it does not own.
pub const NOCREATE_ROLE: &str = "mailid_nocreate";

/// The admin (superuser) URL of the shared test cluster, from
/// `MAILID_TEST_PG_URL`. Panics when it is unset: PostgreSQL tests fail
/// rather than skip.
pub fn admin_url() -> String {
    match std::env::var(ENV_URL) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_string(),
        _ => panic!(
            "{ENV_URL} is not set: the PostgreSQL tests need a cluster. Run them through \
             scripts/test.sh (which starts one), or start one with \
             `scripts/pg-cluster.sh start /tmp/some-dir` and export {ENV_URL}=<the URL it prints>"
        ),
    }
}

/// A new, uniquely named database on the shared test cluster, owned by its
/// superuser.
pub fn fresh_database(hint: &str) -> TestDatabase {
    TestDatabase::create(&admin_url(), hint, None)
}

/// A new database on the shared test cluster owned by `owner` (e.g.
/// [`PW_ROLE`], so a service logging in with a password can create its
/// tables).
pub fn fresh_database_owned(hint: &str, owner: &str) -> TestDatabase {
    TestDatabase::create(&admin_url(), hint, Some(owner))
}

/// A URL of `db` for [`PW_ROLE`] with `password`, over TCP to 127.0.0.1
/// (`postgresql://mailid_pw:PASSWORD@127.0.0.1:PORT/DB`). Needs a cluster
/// from pg-cluster.sh (one that listens on 127.0.0.1 and has the role).
pub fn password_url(db: &TestDatabase, password: &str) -> String {
    db.tcp_url_as(PW_ROLE, Some(password))
}

/// A URL of `db` for [`NOCREATE_ROLE`] (same socket or host as `db.url()`).
pub fn nocreate_url(db: &TestDatabase) -> String {
    db.url_as(NOCREATE_ROLE, None)
}

/// A URL whose server is unreachable: a closed TCP port on 127.0.0.1.
pub fn unreachable_url() -> String {
    format!(
        "postgresql://postgres@127.0.0.1:{}/postgres",
        crate::free_port()
    )
}

/// Runs `sql` with `psql` on `url` (stops at the first error); returns
/// stdout (unaligned, tuples only) or stderr.
pub fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = psql_output(url, sql);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// [`psql`] that must succeed.
pub fn psql_ok(url: &str, sql: &str) -> String {
    psql(url, sql).unwrap_or_else(|e| panic!("psql on {url}: {sql}\n{e}"))
}

fn psql_output(url: &str, sql: &str) -> Output {
    Command::new(psql_bin())
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "5")
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run psql (install postgresql-client): {e}"))
}

fn psql_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("psql").is_file()))
        .unwrap_or(false);
    if on_path {
        return PathBuf::from("psql");
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/psql"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| PathBuf::from("psql"))
}

/// A database created for one test, dropped (best effort, `WITH (FORCE)`)
/// when this value is dropped.
pub struct TestDatabase {
    name: String,
    admin: Conn,
    url: String,
}

impl TestDatabase {
    fn create(admin_url: &str, hint: &str, owner: Option<&str>) -> TestDatabase {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let admin = Conn::parse(admin_url);
        let mut hint: String = hint
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        hint.truncate(30);
        let name = format!(
            "mailid_t_{hint}_{}_{}_{:06x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>() & 0xff_ffff
        );
        let mut sql = format!("CREATE DATABASE \"{name}\"");
        if let Some(owner) = owner {
            sql.push_str(&format!(" OWNER \"{owner}\""));
        }
        psql_ok(admin_url, &sql);
        if let Some(owner) = owner {
            // Before PostgreSQL 15 "public" belongs to the superuser, not to
            // the database owner; make the owner's rights the same everywhere.
            psql_ok(
                &admin.with_db(&name).render(),
                &format!("ALTER SCHEMA public OWNER TO \"{owner}\""),
            );
        }
        let url = admin.with_db(&name).render();
        TestDatabase { name, admin, url }
    }

    /// Its URL, as the superuser (what the services are given).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its URL for another role (same socket or host as [`url`](Self::url)).
    pub fn url_as(&self, user: &str, password: Option<&str>) -> String {
        let mut c = self.admin.with_db(&self.name);
        c.user = Some(user.to_string());
        c.password = password.map(str::to_string);
        c.render()
    }

    /// Its URL for a role over TCP to 127.0.0.1 on the cluster's port, in
    /// the `user:password@host:port` form.
    pub fn tcp_url_as(&self, user: &str, password: Option<&str>) -> String {
        let mut c = self.admin.with_db(&self.name);
        c.host = Some("127.0.0.1".to_string());
        c.user = Some(user.to_string());
        c.password = password.map(str::to_string);
        c.render()
    }

    /// Runs `sql` on it as the superuser.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        psql(&self.url, sql)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = psql_output(
            &self.admin.render(),
            &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
        );
    }
}

/// A private cluster in a temp dir (`scripts/pg-cluster.sh`), for tests
/// that stop or kill their database. Stopped and removed when dropped.
pub struct PgCluster {
    dir: tempfile::TempDir,
    admin_url: String,
}

impl PgCluster {
    /// Starts a new cluster on a free port; panics if it cannot.
    pub fn start() -> PgCluster {
        // Under /tmp: the unprivileged owner must reach it (as root the
        // cluster runs as another user), and socket paths must stay short.
        let dir = tempfile::Builder::new()
            .prefix("mailid-pgc-")
            .tempdir_in("/tmp")
            .expect("temp dir for a PostgreSQL cluster");
        let admin_url = cluster_script(dir.path(), "start");
        PgCluster { dir, admin_url }
    }

    /// Its admin (superuser) URL over the Unix socket.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// Its TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        Conn::parse(&self.admin_url)
            .port
            .and_then(|p| p.parse().ok())
            .expect("port in the cluster's admin URL")
    }

    /// Its directory (data in `data/`, socket in `sock/`, log in
    /// `postgres.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new database on this cluster, owned by the superuser.
    pub fn fresh_database(&self, hint: &str) -> TestDatabase {
        TestDatabase::create(&self.admin_url, hint, None)
    }

    /// A new database on this cluster owned by `owner`.
    pub fn fresh_database_owned(&self, hint: &str, owner: &str) -> TestDatabase {
        TestDatabase::create(&self.admin_url, hint, Some(owner))
    }

    /// Fast shutdown (kill -9 if it does not stop in time).
    pub fn stop(&self) {
        cluster_script(self.dir.path(), "stop");
    }

    /// kill -9 of the postmaster and its children.
    pub fn kill9(&self) {
        cluster_script(self.dir.path(), "kill");
    }

    /// Starts it again on the same data and port (stopping it first if it
    /// runs).
    pub fn restart(&self) {
        cluster_script(self.dir.path(), "restart");
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new(script_path())
            .args(["stop".as_ref(), self.dir.path().as_os_str()])
            .stdin(Stdio::null())
            .output();
    }
}

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-cluster.sh")
}

/// Runs `pg-cluster.sh CMD DIR`; panics with its stderr on failure; returns
/// its trimmed stdout.
fn cluster_script(dir: &Path, cmd: &str) -> String {
    let out = Command::new(script_path())
        .arg(cmd)
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script_path().display()));
    assert!(
        out.status.success(),
        "scripts/pg-cluster.sh {cmd} {} failed ({}): {}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The parts of a libpq URL (`postgres[ql]://[user[:pw]@][host][:port][/db][?k=v&…]`)
/// the harness rewrites: user, password, host, port and database.
#[derive(Clone, Debug)]
struct Conn {
    user: Option<String>,
    password: Option<String>,
    host: Option<String>,
    port: Option<String>,
    dbname: Option<String>,
    params: Vec<(String, String)>,
}

impl Conn {
    fn parse(url: &str) -> Conn {
        let rest = url
            .strip_prefix("postgresql://")
            .or_else(|| url.strip_prefix("postgres://"))
            .unwrap_or_else(|| panic!("{ENV_URL}: not a postgresql:// URL: {url}"));
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((u, p)) => (Some(decode(u)), Some(decode(p))),
                None => (Some(decode(u)), None),
            },
            None => (None, None),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, p) = v6.split_once(']').unwrap_or((v6, ""));
            (h.to_string(), p.strip_prefix(':').unwrap_or("").to_string())
        } else {
            let (h, p) = hostport.split_once(':').unwrap_or((hostport, ""));
            (decode(h), p.to_string())
        };
        let mut c = Conn {
            user,
            password,
            host: Some(host).filter(|h| !h.is_empty()),
            port: Some(port).filter(|p| !p.is_empty()),
            dbname: Some(decode(db)).filter(|d| !d.is_empty()),
            params: Vec::new(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode(v);
            match k {
                "user" => c.user = Some(v),
                "password" => c.password = Some(v),
                "host" => c.host = Some(v),
                "port" => c.port = Some(v),
                "dbname" => c.dbname = Some(v),
                _ => c.params.push((k.to_string(), v)),
            }
        }
        c
    }

    fn with_db(&self, db: &str) -> Conn {
        let mut c = self.clone();
        c.dbname = Some(db.to_string());
        c
    }

    /// `postgresql://[user[:pw]@][host[:port]]/db[?host=/socket/dir&port=N&…]`.
    fn render(&self) -> String {
        let mut s = String::from("postgresql://");
        if let Some(u) = &self.user {
            s.push_str(&encode(u));
            if let Some(p) = &self.password {
                s.push(':');
                s.push_str(&encode(p));
            }
            s.push('@');
        }
        let socket = self.host.as_deref().is_none_or(|h| h.starts_with('/'));
        let mut query: Vec<(String, String)> = Vec::new();
        if socket {
            if let Some(h) = &self.host {
                query.push(("host".into(), h.clone()));
            }
            if let Some(p) = &self.port {
                query.push(("port".into(), p.clone()));
            }
        } else {
            let h = self.host.as_deref().unwrap_or_default();
            if h.contains(':') {
                s.push_str(&format!("[{h}]"));
            } else {
                s.push_str(h);
            }
            if let Some(p) = &self.port {
                s.push(':');
                s.push_str(p);
            }
        }
        s.push('/');
        s.push_str(&encode(self.dbname.as_deref().unwrap_or("postgres")));
        query.extend(self.params.iter().cloned());
        for (i, (k, v)) in query.iter().enumerate() {
            s.push(if i == 0 { '?' } else { '&' });
            s.push_str(k);
            s.push('=');
            // Socket directories stay readable: '/' is allowed in a query.
            s.push_str(&encode(v).replace("%2F", "/"));
        }
        s
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
