//! SQLite storage plumbing shared by both services (PostgreSQL's is in
//! `pg`), and the storage error both backends share.
//!
//! * WAL mode, `synchronous=FULL`: a committed transaction survives a power
//!   cut; database files are created 0600.
//! * A database is created only when the caller says so
//!   ([`OpenMode::Create`], the services' `init`); every other open
//!   ([`OpenMode::Existing`]) refuses a missing or never-initialised file
//!   instead of silently starting over with an empty one (which would
//!   forget revocations, routes and accounts).
//! * Migrations are SQL strings compiled into the binary, applied in order
//!   and counted in `PRAGMA user_version`.
//! * All writes go through one writer thread that runs each job inside its
//!   own savepoint of a `BEGIN IMMEDIATE` transaction, batching the jobs that
//!   are waiting into one commit (group commit: one fsync for many requests).
//!   A job's answer is released only after its batch is durable; a job that
//!   fails rolls back its savepoint and leaves the others untouched.
//! * Reads run on the blocking pool with pooled read connections, except a
//!   read of a few rows by key ([`Db::read_short`]), which runs where it is
//!   asked when a pooled connection is idle: the hop would cost more.

use std::fs::OpenOptions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

/// Most jobs committed together.
const MAX_BATCH: usize = 512;
/// Read connections kept open, and reads run at once: a read waits for a
/// pooled connection rather than opening one (a fresh connection sets its
/// pragmas and parses the schema: at 32 concurrent lookups that was 16% of
/// the MTA's CPU, docs/BENCHMARKS.md).
const MAX_IDLE_READERS: usize = 16;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database writer has stopped")]
    Closed,
    #[error("a storage job panicked")]
    Panicked,
    #[error("opening database {path}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// [`OpenMode::Existing`] found no database (or an empty file). The
    /// message leaves the path to the caller's context ("opening PATH").
    #[error("the database is missing or empty (only 'init' creates it; restore it from a backup)")]
    Missing { path: PathBuf },
    /// A PostgreSQL database without this service's schema
    /// ([`OpenMode::Existing`]).
    #[error("the database holds no {service} schema (only 'init' creates it)")]
    NoSchema { service: String },
    /// The database cannot be reached, is shutting down or did not answer
    /// in time: the services answer 503 `unavailable`.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// PostgreSQL refused a statement (the server's message, one line).
    #[error("postgresql: {message}")]
    Postgres {
        message: String,
        /// A serialization failure or deadlock: running the transaction
        /// again may succeed.
        retryable: bool,
    },
    /// A database URL that cannot be used (never holds the password).
    #[error("{0}")]
    BadUrl(String),
}

impl DbError {
    /// Whether the database is unreachable (503 `unavailable`), rather
    /// than the request or the data being wrong.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DbError::Unavailable(_))
    }

    /// Whether the transaction that failed may simply be run again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            DbError::Postgres {
                retryable: true,
                ..
            }
        )
    }
}

/// Lets the storage layer see the [`DbError`] inside a store's own error
/// type (to retry serialization failures, to answer 503 when the database
/// is down).
pub trait AsDbError {
    /// The database error this error carries, if it is one.
    fn as_db(&self) -> Option<&DbError>;
}

impl AsDbError for DbError {
    fn as_db(&self) -> Option<&DbError> {
        Some(self)
    }
}

/// Whether [`Db::open`] may create the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create it (0600) if it does not exist, then migrate: `init` only.
    Create,
    /// Open a database `init` made; a missing file, or one that holds no
    /// schema, is [`DbError::Missing`] and nothing is created.
    Existing,
}

type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;

/// Opens a connection to an existing database file (never creating one)
/// with the pragmas every mailid connection uses.
pub fn connect(path: &Path) -> Result<Connection, DbError> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn =
        Connection::open_with_flags(path, flags).map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::CannotOpen) if !path.exists() => DbError::Missing {
                path: path.to_path_buf(),
            },
            _ => DbError::Sqlite(e),
        })?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous=FULL;
         PRAGMA foreign_keys=ON;
         PRAGMA temp_store=MEMORY;",
    )?;
    Ok(conn)
}

/// Applies the migrations not yet applied; `migrations[i]` brings the schema
/// to version `i + 1`.
pub fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<(), DbError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in migrations.iter().enumerate().skip(current.max(0) as usize) {
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
    }
    tx.commit()?;
    Ok(())
}

/// Opens the database file for writing (so a read-only file or file system
/// is reported as such), creating it 0600 only when `create` is set.
fn open_private(path: &Path, create: bool) -> Result<(), DbError> {
    OpenOptions::new()
        .create(create)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| DbError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(())
}

fn tighten_side_files(path: &Path) {
    for suffix in ["-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
    }
}

/// A database: one writer thread with group commit plus pooled readers.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
    readers: Mutex<Vec<Connection>>,
    /// [`MAX_IDLE_READERS`] permits: async reads hold one each.
    read_slots: tokio::sync::Semaphore,
}

/// The schema version of a database (0: no schema yet).
fn user_version(conn: &Connection) -> Result<i64, DbError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

impl Db {
    /// Opens the database (creating it 0600 first only with
    /// [`OpenMode::Create`]), migrates it, and starts the writer thread.
    pub fn open(path: &Path, migrations: &[&str], mode: OpenMode) -> Result<Db, DbError> {
        let missing = || DbError::Missing {
            path: path.to_path_buf(),
        };
        match mode {
            OpenMode::Create => open_private(path, true)?,
            OpenMode::Existing => {
                // Checked before SQLite touches it: on an empty file even
                // the connection's pragmas would write a header.
                match std::fs::metadata(path) {
                    Ok(m) if m.is_file() && m.len() > 0 => open_private(path, false)?,
                    Ok(_) => return Err(missing()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
                    Err(source) => {
                        return Err(DbError::Open {
                            path: path.to_path_buf(),
                            source,
                        })
                    }
                }
            }
        }
        let mut conn = connect(path)?;
        if mode == OpenMode::Existing && user_version(&conn)? == 0 {
            // An empty file (or a stranger's database): migrating it would
            // be the silent re-creation this mode is there to refuse.
            return Err(missing());
        }
        migrate(&mut conn, migrations)?;
        tighten_side_files(path);
        let (tx, rx) = mpsc::channel::<Job>(MAX_BATCH * 8);
        std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|source| DbError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Db {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                jobs: tx,
                readers: Mutex::new(Vec::new()),
                read_slots: tokio::sync::Semaphore::new(MAX_IDLE_READERS),
            }),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn job<T, E, F>(f: F) -> (Job, oneshot::Receiver<Result<T, E>>)
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn: &Connection| {
            let res = match catch_unwind(AssertUnwindSafe(|| f(conn))) {
                Ok(r) => r,
                Err(_) => Err(E::from(DbError::Panicked)),
            };
            let keep = res.is_ok();
            let finish: Finish = Box::new(move |commit: Result<(), String>| {
                let out = match (res, commit) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Ok(_), Err(msg)) => {
                        Err(E::from(DbError::Sqlite(rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                            Some(msg),
                        ))))
                    }
                    (Err(e), _) => Err(e),
                };
                let _ = tx.send(out);
            });
            (keep, finish)
        });
        (job, rx)
    }

    /// Runs `f` in a write transaction; resolves after the commit is durable.
    /// An `Err` from `f` rolls back everything `f` wrote.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (job, rx) = Self::job(f);
        self.inner
            .jobs
            .send(job)
            .await
            .map_err(|_| E::from(DbError::Closed))?;
        rx.await.map_err(|_| E::from(DbError::Closed))?
    }

    /// [`Db::write`] for synchronous callers (operator commands); must not
    /// be called from inside an async runtime.
    pub fn write_blocking<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (job, rx) = Self::job(f);
        self.inner
            .jobs
            .blocking_send(job)
            .map_err(|_| E::from(DbError::Closed))?;
        rx.blocking_recv().map_err(|_| E::from(DbError::Closed))?
    }

    fn take_reader(&self) -> Result<Connection, DbError> {
        if let Some(c) = self.inner.readers.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(c);
        }
        connect(&self.inner.path)
    }

    fn put_reader(&self, conn: Connection) {
        if let Ok(mut v) = self.inner.readers.lock() {
            if v.len() < MAX_IDLE_READERS {
                v.push(conn);
            }
        }
    }

    /// Runs a read-only `f` synchronously on a pooled connection.
    pub fn read_blocking<T, E, F>(&self, f: F) -> Result<T, E>
    where
        E: From<DbError>,
        F: FnOnce(&Connection) -> Result<T, E>,
    {
        let conn = self.take_reader().map_err(E::from)?;
        let res = f(&conn);
        self.put_reader(conn);
        res
    }

    /// Runs a read-only `f` that takes microseconds (a row or two by key,
    /// on small tables that stay in the page cache) on the caller's own
    /// thread when a pooled connection is idle: the round trip through the
    /// blocking pool (two thread wake-ups) costs more than such a read.
    /// With no idle connection it waits its turn as [`Db::read`] does.
    pub async fn read_short<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let idle = match self.inner.read_slots.try_acquire() {
            Ok(slot) => self
                .inner
                .readers
                .lock()
                .ok()
                .and_then(|mut v| v.pop())
                .map(|conn| (slot, conn)),
            Err(_) => None,
        };
        match idle {
            Some((_slot, conn)) => {
                let res = f(&conn);
                self.put_reader(conn);
                res
            }
            None => self.read(f).await,
        }
    }

    /// Runs a read-only `f` on the blocking pool with a pooled connection,
    /// at most [`MAX_IDLE_READERS`] at once (the others wait their turn).
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let _slot = self
            .inner
            .read_slots
            .acquire()
            .await
            .map_err(|_| E::from(DbError::Closed))?;
        let db = self.clone();
        match tokio::task::spawn_blocking(move || db.read_blocking(f)).await {
            Ok(r) => r,
            Err(_) => Err(E::from(DbError::Panicked)),
        }
    }
}

fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        // A panic outside the jobs (which are caught on their own) must not
        // end the only writer: the batch's callers get an error and the
        // next batch runs.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_batch(&conn, &mut batch)
        }));
        if caught.is_err() {
            batch.clear();
            let _ = exec(&conn, "ROLLBACK");
        }
    }
}

/// Runs one statement without parameters through the statement cache (the
/// transaction statements run for every job; parsing them each time shows
/// in profiles).
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn run_batch(conn: &Connection, batch: &mut Vec<Job>) {
    let mut finishes: Vec<Finish> = Vec::with_capacity(batch.len());
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        let msg = e.to_string();
        tracing::error!(error = %msg, "could not begin write transaction");
        // Run nothing; every job in the batch fails.
        for job in batch.drain(..) {
            let (_, finish) = job(&FailingConn::conn());
            finish(Err(msg.clone()));
        }
        return;
    }
    for job in batch.drain(..) {
        if exec(conn, "SAVEPOINT job").is_err() {
            let (_, finish) = job(&FailingConn::conn());
            finishes.push(Box::new(move |_| finish(Err("savepoint failed".into()))));
            continue;
        }
        let (keep, finish) = job(conn);
        let sp = if keep {
            exec(conn, "RELEASE job")
        } else {
            exec(conn, "ROLLBACK TO job").and_then(|_| exec(conn, "RELEASE job"))
        };
        if let Err(e) = sp {
            tracing::error!(error = %e, "savepoint end failed");
        }
        finishes.push(finish);
    }
    let commit = exec(conn, "COMMIT").map_err(|e| {
        let msg = e.to_string();
        tracing::error!(error = %msg, "commit failed");
        let _ = conn.execute_batch("ROLLBACK");
        msg
    });
    for f in finishes {
        f(commit.clone());
    }
}

/// A closed in-memory connection handed to jobs that must not touch the
/// real database (their batch could not start); their writes go nowhere.
struct FailingConn;

impl FailingConn {
    fn conn() -> Connection {
        Connection::open_in_memory().expect("in-memory sqlite")
    }
}

#[cfg(test)]
#[path = "db_tests.rs"]
mod tests;
