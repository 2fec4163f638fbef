//! PostgreSQL plumbing shared by both services (SPEC §8): URL parsing that
//! never shows a password, a connection pool on its own small runtime,
//! migrations that replicas starting at once apply safely, transactions
//! retried on serialization failures, and one verdict for "the database is
//! unreachable" (503 `unavailable`, never a hang).
//!
//! * Every pooled connection lives on the pool's runtime (two worker
//!   threads), so the same [`PgDb`] serves async handlers ([`PgDb::write`],
//!   [`PgDb::read`]) and synchronous callers such as the operator CLI and
//!   the CRL publisher thread ([`PgDb::block_on`]).
//! * [`PgDb::write`] commits before it answers: an acknowledged write is
//!   durable (`synchronous_commit` as the server has it, `on` by default).
//! * An operation gets [`OP_TIMEOUT`] in all; past it, or when the server
//!   cannot be reached, it fails with [`DbError::Unavailable`].
//! * Migrations are SQL strings per service, versioned in `mailid_schema`
//!   and applied under a transaction-scoped advisory lock.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Transaction};
use futures_util::future::BoxFuture;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::db::{AsDbError, DbError, OpenMode};

/// The longest one database operation (with its retries) may take before
/// the caller gets [`DbError::Unavailable`]: SPEC §8 wants the 503 within
/// 5 s.
pub const OP_TIMEOUT: Duration = Duration::from_secs(4);
/// Connections per process.
pub const POOL_SIZE: usize = 16;
/// Attempts of a transaction that hit a serialization failure or deadlock.
const MAX_ATTEMPTS: u32 = 8;
/// The advisory lock key every mailid migration takes ("mailid" in ASCII).
const MIGRATION_LOCK: i64 = 0x6d61_696c_6964;

mod notify;
mod url;
pub use notify::{Notifier, NOTIFY_GATHER};
pub use url::{redact, PgUrl};

/// A PostgreSQL error in one line: the server's message when it sent one
/// (never a password: servers do not echo them), else what failed.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// Whether an error means the server is unreachable, shutting down or
/// refusing connections, rather than that the statement was wrong.
pub fn is_connection_failure(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                    SqlState::QUERY_CANCELED,
                ]
                .contains(code)
        }
        None => {
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                if s.is::<std::io::Error>() {
                    return true;
                }
                source = s.source();
            }
            let text = e.to_string();
            text.starts_with("error connecting") || text.starts_with("timeout")
        }
    }
}

/// Whether a transaction that failed with `e` may simply be run again.
pub fn is_retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        if is_connection_failure(&e) {
            DbError::Unavailable(describe(&e))
        } else {
            DbError::Postgres {
                retryable: is_retryable(&e),
                message: describe(&e),
            }
        }
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> DbError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => DbError::from(e),
        PoolError::Timeout(_) => DbError::Unavailable("no database connection within 5 s".into()),
        other => DbError::Unavailable(other.to_string()),
    }
}

/// A transaction's body: called with the open transaction, possibly more
/// than once (a serialization failure runs it again), so it clones what it
/// moves into its future.
pub trait TxFn<T, E>:
    for<'a> Fn(&'a Transaction<'a>) -> BoxFuture<'a, Result<T, E>> + Send + Sync + 'static
{
}

impl<T, E, F> TxFn<T, E> for F where
    F: for<'a> Fn(&'a Transaction<'a>) -> BoxFuture<'a, Result<T, E>> + Send + Sync + 'static
{
}

/// A single statement's body ([`PgDb::single`]): called with a pooled
/// connection.
pub trait ClientFn<T, E>:
    for<'a> Fn(&'a deadpool_postgres::Client) -> BoxFuture<'a, Result<T, E>> + Send + Sync + 'static
{
}

impl<T, E, F> ClientFn<T, E> for F where
    F: for<'a> Fn(&'a deadpool_postgres::Client) -> BoxFuture<'a, Result<T, E>>
        + Send
        + Sync
        + 'static
{
}

/// A PostgreSQL database: a pool of connections on its own runtime.
#[derive(Clone)]
pub struct PgDb {
    inner: Arc<Inner>,
}

struct Inner {
    url: PgUrl,
    pool: Pool,
    handle: tokio::runtime::Handle,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.pool.close();
        if let Some(rt) = self.runtime.take() {
            // Dropping a runtime may happen inside another one (a service
            // shutting down); shut it down without blocking.
            rt.shutdown_background();
        }
    }
}

impl PgDb {
    /// Connects to `url` and applies `service`'s migrations
    /// (`migrations[i]` brings its schema to version `i + 1`); with
    /// [`OpenMode::Existing`] a database without the service's schema is
    /// refused ([`DbError::NoSchema`]) and nothing is created. Synchronous:
    /// call it outside async code (or in `spawn_blocking`).
    pub fn open(
        url: &PgUrl,
        service: &str,
        migrations: &[&str],
        mode: OpenMode,
    ) -> Result<PgDb, DbError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pg-io")
            .enable_all()
            .build()
            .map_err(|e| DbError::Unavailable(format!("starting the database runtime: {e}")))?;
        let manager = Manager::from_config(
            url.config().clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(4)))
            .recycle_timeout(Some(Duration::from_secs(2)))
            .build()
            .map_err(|e| DbError::Unavailable(format!("building the connection pool: {e}")))?;
        let db = PgDb {
            inner: Arc::new(Inner {
                url: url.clone(),
                pool,
                handle: runtime.handle().clone(),
                runtime: Some(runtime),
            }),
        };
        let service = service.to_string();
        let migrations: Vec<String> = migrations.iter().map(|s| s.to_string()).collect();
        let d = db.clone();
        db.block_on(async move { d.migrate(&service, &migrations, mode).await })?;
        Ok(db)
    }

    /// The database URL (its `Display` hides the password).
    pub fn url(&self) -> &PgUrl {
        &self.inner.url
    }

    async fn migrate(
        &self,
        service: &str,
        migrations: &[String],
        mode: OpenMode,
    ) -> Result<(), DbError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let exists: bool = tx
            .query_one("SELECT to_regclass('mailid_schema') IS NOT NULL", &[])
            .await?
            .get(0);
        if !exists {
            if mode == OpenMode::Existing {
                return Err(DbError::NoSchema {
                    service: service.to_string(),
                });
            }
            tx.batch_execute(
                "CREATE TABLE mailid_schema (service TEXT PRIMARY KEY, version INTEGER NOT NULL)",
            )
            .await?;
        }
        let version: i32 = tx
            .query_opt(
                "SELECT version FROM mailid_schema WHERE service = $1",
                &[&service],
            )
            .await?
            .map(|r| r.get(0))
            .unwrap_or(0);
        if version == 0 && mode == OpenMode::Existing {
            return Err(DbError::NoSchema {
                service: service.to_string(),
            });
        }
        for (i, sql) in migrations.iter().enumerate().skip(version.max(0) as usize) {
            tx.batch_execute(sql).await?;
            let v = i as i32 + 1;
            tx.execute(
                "INSERT INTO mailid_schema (service, version) VALUES ($1, $2)
                 ON CONFLICT (service) DO UPDATE SET version = excluded.version",
                &[&service, &v],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A pooled connection. Only inside [`PgDb::block_on`] or a future run
    /// by the pool's runtime.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, DbError> {
        self.inner.pool.get().await.map_err(pool_error)
    }

    /// Runs `fut` to completion on the pool's runtime from synchronous code
    /// (the operator CLI, the CRL publisher thread). Panics if called from
    /// inside async code, like any `block_on`.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.inner.handle.block_on(fut)
    }

    /// Runs `f` in a read-write transaction and commits before answering;
    /// a serialization failure or deadlock runs it again (a bounded number
    /// of times); an `Err` from `f` rolls everything back. Fails with
    /// [`DbError::Unavailable`] after [`OP_TIMEOUT`] or when the server is
    /// unreachable.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + AsDbError + Send + 'static,
        F: TxFn<T, E>,
    {
        self.run(false, f).await
    }

    /// [`PgDb::write`] in a read-only transaction.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + AsDbError + Send + 'static,
        F: TxFn<T, E>,
    {
        self.run(true, f).await
    }

    /// Runs `f` with a pooled connection outside any explicit transaction:
    /// for a single statement (a read that needs no other in its snapshot),
    /// which PostgreSQL then runs as a transaction of its own, without the
    /// `BEGIN` and `COMMIT` round trips of [`PgDb::read`]. Same time limit
    /// and errors as [`PgDb::read`].
    pub async fn single<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: ClientFn<T, E>,
    {
        let db = self.clone();
        self.on_runtime(async move {
            let client = db.client().await.map_err(E::from)?;
            f(&client).await
        })
        .await
    }

    async fn run<T, E, F>(&self, read_only: bool, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + AsDbError + Send + 'static,
        F: TxFn<T, E>,
    {
        let db = self.clone();
        self.on_runtime(async move { db.attempts(read_only, &f).await })
            .await
    }

    /// Runs `job` on the pool's runtime within [`OP_TIMEOUT`].
    async fn on_runtime<T, E>(
        &self,
        job: impl Future<Output = Result<T, E>> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let job = async move {
            match tokio::time::timeout(OP_TIMEOUT, job).await {
                Ok(r) => r,
                Err(_) => Err(E::from(DbError::Unavailable(format!(
                    "the database did not answer within {} s",
                    OP_TIMEOUT.as_secs()
                )))),
            }
        };
        match self.inner.handle.spawn(job).await {
            Ok(r) => r,
            Err(_) => Err(E::from(DbError::Panicked)),
        }
    }

    async fn attempts<T, E, F>(&self, read_only: bool, f: &F) -> Result<T, E>
    where
        E: From<DbError> + AsDbError,
        F: TxFn<T, E>,
    {
        let mut attempt = 1;
        loop {
            let res = self.attempt(read_only, f).await;
            let retry = matches!(&res, Err(e) if e.as_db().is_some_and(DbError::is_retryable));
            if !retry || attempt >= MAX_ATTEMPTS {
                return res;
            }
            // Back off a little (randomised, growing) so the transactions
            // that collided do not collide again.
            let ms = rand::random::<u64>() % (5 << attempt.min(5));
            tokio::time::sleep(Duration::from_millis(ms + 1)).await;
            attempt += 1;
        }
    }

    async fn attempt<T, E, F>(&self, read_only: bool, f: &F) -> Result<T, E>
    where
        E: From<DbError>,
        F: TxFn<T, E>,
    {
        let mut client = self.client().await.map_err(E::from)?;
        let tx = client
            .build_transaction()
            .read_only(read_only)
            .start()
            .await
            .map_err(|e| E::from(DbError::from(e)))?;
        // An error drops `tx`, which rolls it back.
        let value = f(&tx).await?;
        tx.commit().await.map_err(|e| E::from(DbError::from(e)))?;
        Ok(value)
    }

    /// Whether the server answers a trivial query within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), DbError> {
        let db = self.clone();
        let job = async move {
            let client = db.client().await?;
            client.simple_query("SELECT 1").await?;
            Ok::<(), DbError>(())
        };
        let job = async move {
            tokio::time::timeout(timeout, job)
                .await
                .unwrap_or_else(|_| Err(DbError::Unavailable("no answer to a ping".into())))
        };
        self.inner
            .handle
            .spawn(job)
            .await
            .unwrap_or(Err(DbError::Panicked))
    }
}

/// Helpers for tests that need a PostgreSQL database.
pub mod testing {
    use super::*;

    /// Environment variable holding the admin URL of a running test
    /// cluster (scripts/test.sh starts one and sets it).
    pub const ADMIN_URL_VAR: &str = "MAILID_TEST_PG_URL";

    /// Creates a new, empty database on the test cluster and gives its URL.
    /// Panics (the test fails, never skips) when [`ADMIN_URL_VAR`] is not
    /// set.
    pub fn fresh_database(hint: &str) -> PgUrl {
        let admin = std::env::var(ADMIN_URL_VAR).unwrap_or_else(|_| {
            panic!(
                "{ADMIN_URL_VAR} is not set: PostgreSQL tests need a running cluster \
                 (scripts/test.sh starts one; by hand: scripts/pg-cluster.sh start DIR)"
            )
        });
        let admin = PgUrl::parse(&admin).expect("MAILID_TEST_PG_URL is a postgres:// URL");
        let clean: String = hint
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(24)
            .collect::<String>()
            .to_ascii_lowercase();
        let name = format!("t_{clean}_{:016x}", rand::random::<u64>());
        // On a thread of its own, so that async callers may use it too.
        let (admin2, name2) = (admin.clone(), name.clone());
        let create = move || {
            let (admin, name) = (admin2, name2);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let (client, conn) = admin
                    .config()
                    .connect(NoTls)
                    .await
                    .unwrap_or_else(|e| panic!("connecting to {admin}: {}", describe(&e)));
                let task = tokio::spawn(conn);
                client
                    .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .unwrap_or_else(|e| panic!("creating database {name}: {}", describe(&e)));
                drop(client);
                let _ = task.await;
            });
        };
        std::thread::spawn(create)
            .join()
            .expect("creating the test database");
        admin.with_dbname(&name)
    }
}

#[cfg(test)]
mod tests;
