//! `db migrate`: copying every row of a data dir's SQLite database into an
//! empty PostgreSQL database, in one PostgreSQL transaction that refuses a
//! target holding rows and checks the row count of every table before it
//! commits (so a refused or failed copy leaves the target as it was).

use std::path::Path;

use mailid_shared::db::{DbError, OpenMode};
use mailid_shared::pg::PgUrl;
use rusqlite::types::Value;
use tokio_postgres::types::ToSql;

use super::pg::{PgStore, TABLES};
use super::sqlite::SqliteStore;
use super::StoreError;

/// The identity log's one-row tables, which opening an empty database
/// fills in.
const SINGLETONS: &[&str] = &["log_config", "log_state"];

/// How a column is copied (PostgreSQL checks parameter types, NULLs too).
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Blob,
    OptBlob,
    OptText,
    Int,
    OptInt,
    Int4,
    Bool,
    /// `identities.ca_name`, NULL only in a database never opened since
    /// version 2 (opening fills it in); copied as `''`, never served.
    TextOrEmpty,
}

/// The copied columns of each table of [`TABLES`], in its order.
fn columns(table: &str) -> &'static [(&'static str, Kind)] {
    use Kind::*;
    match table {
        "accounts" => &[
            ("address", Text),
            ("password_hash", Text),
            ("totp_secret", Blob),
            ("enabled", Bool),
            ("created_at", Int),
        ],
        "cas" => &[
            ("name", Text),
            ("secret", Blob),
            ("trust_cert", OptBlob),
            ("created_at", Int),
        ],
        "totp_keys" => &[
            ("address", Text),
            ("key_id", Blob),
            ("generation", Int),
            ("issued_at", OptInt),
            ("failures", Int4),
            ("lockouts", Int4),
            ("locked_until", Int),
        ],
        "identities" => &[
            ("address", Text),
            ("certificate", Blob),
            ("chain", Text),
            ("key_id", Blob),
            ("serial", Text),
            ("not_after", Int),
            ("uploaded_at", Int),
            ("ca_name", TextOrEmpty),
        ],
        "crls" => &[
            ("url", Text),
            ("der", Blob),
            ("this_update", Int),
            ("next_update", OptInt),
            ("fetched_at", Int),
        ],
        "backups" => &[
            ("account", Text),
            ("key_id", Blob),
            ("encrypted_key", Text),
            ("stored_at", Int),
            ("certificate", OptText),
            ("chain", OptText),
            ("ca_url", OptText),
        ],
        "log_config" => &[
            ("id", Int4),
            ("blind_key", Blob),
            ("origin", OptText),
            ("vkey", OptText),
            ("created_at", Int),
        ],
        "log_heads" => &[("blind", Blob), ("seq", Int), ("head", Blob)],
        "log_entries" => &[
            ("id", Int),
            ("leaf_index", OptInt),
            ("blind", Blob),
            ("seq", Int),
            ("entry", Blob),
            ("leaf_hash", Blob),
        ],
        "log_hashes" => &[("idx", Int), ("hash", Blob)],
        "log_state" => &[("id", Int4), ("size", Int), ("root", Blob)],
        "log_checkpoints" => &[
            ("size", Int),
            ("root", Blob),
            ("note", Text),
            ("signed_at", Int),
        ],
        other => unreachable!("no table {other}"),
    }
}

/// A SQLite value as the PostgreSQL parameter of a column of `kind`.
fn param(kind: Kind, v: Value) -> Result<Box<dyn ToSql + Sync + Send>, String> {
    let int = |v: &Value| match v {
        Value::Integer(i) => Ok(*i),
        other => Err(format!("expected an integer, found {other:?}")),
    };
    Ok(match (kind, v) {
        (Kind::Text | Kind::TextOrEmpty | Kind::OptText, Value::Text(s)) => Box::new(s),
        (Kind::OptText, Value::Null) => Box::new(None::<String>),
        (Kind::TextOrEmpty, Value::Null) => Box::new(String::new()),
        (Kind::Blob | Kind::OptBlob, Value::Blob(b)) => Box::new(b),
        (Kind::OptBlob, Value::Null) => Box::new(None::<Vec<u8>>),
        (Kind::OptInt, Value::Null) => Box::new(None::<i64>),
        (Kind::Int | Kind::OptInt, v) => Box::new(int(&v)?),
        (Kind::Int4, v) => Box::new(i32::try_from(int(&v)?).map_err(|e| e.to_string())?),
        (Kind::Bool, v) => Box::new(int(&v)? != 0),
        (_, other) => return Err(format!("unexpected value {other:?}")),
    })
}

/// Why a migration did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The target already holds rows of this service.
    #[error("the target database is not empty (table {0} holds rows); nothing was copied")]
    NotEmpty(&'static str),
    /// The copy did not come out as the source (rolled back).
    #[error("{0}")]
    Check(String),
}

impl From<DbError> for MigrateError {
    fn from(e: DbError) -> Self {
        MigrateError::Store(e.into())
    }
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Store(e.into())
    }
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> Self {
        MigrateError::Store(e.into())
    }
}

/// Copies every row of the SQLite database at `source` (migrated first)
/// into the PostgreSQL database at `target` (its schema created first) and
/// returns the rows copied per table. Refuses a target where any of this
/// service's tables holds rows; commits only when every table's row count
/// matches the source's. Synchronous: not from async code.
pub fn sqlite_to_pg(
    source: &Path,
    target: &PgUrl,
) -> Result<Vec<(&'static str, u64)>, MigrateError> {
    drop(SqliteStore::open(source, OpenMode::Existing)?);
    let pg = PgStore::open(target, OpenMode::Create)?;
    let mut conn = mailid_shared::db::connect(source)?;
    // One read transaction: a consistent snapshot of the source.
    let snapshot = conn.transaction()?;
    let db = pg.db().clone();
    db.block_on(async {
        let mut client = db.client().await?;
        let tx = client.transaction().await?;
        let all = TABLES.join(", ");
        tx.batch_execute(&format!("LOCK TABLE {all} IN EXCLUSIVE MODE"))
            .await?;
        for table in TABLES.iter().filter(|t| !SINGLETONS.contains(t)) {
            let sql = format!("SELECT EXISTS (SELECT 1 FROM {table})");
            if tx.query_one(&sql, &[]).await?.get::<_, bool>(0) {
                return Err(MigrateError::NotEmpty(table));
            }
        }
        // The log's one-row tables hold only what opening the empty
        // target wrote (a fresh blind key, the empty tree): the source's
        // replace them.
        for table in SINGLETONS {
            tx.execute(&format!("DELETE FROM {table}"), &[]).await?;
        }
        let mut copied = Vec::new();
        for table in TABLES {
            let cols = columns(table);
            let names: Vec<&str> = cols.iter().map(|(n, _)| *n).collect();
            let marks: Vec<String> = (1..=cols.len()).map(|i| format!("${i}")).collect();
            let insert = tx
                .prepare(&format!(
                    "INSERT INTO {table} ({}) VALUES ({})",
                    names.join(", "),
                    marks.join(", ")
                ))
                .await?;
            let select = format!("SELECT {} FROM {table}", names.join(", "));
            let mut st = snapshot.prepare(&select)?;
            let mut rows = st.query([])?;
            let mut n = 0u64;
            while let Some(row) = rows.next()? {
                let mut params = Vec::with_capacity(cols.len());
                for (i, (name, kind)) in cols.iter().enumerate() {
                    let v: Value = row.get(i)?;
                    let p = param(*kind, v)
                        .map_err(|e| MigrateError::Check(format!("{table}.{name}: {e}")))?;
                    params.push(p);
                }
                let refs: Vec<&(dyn ToSql + Sync)> = params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                tx.execute(&insert, &refs).await?;
                n += 1;
            }
            let sql = format!("SELECT COUNT(*) FROM {table}");
            let source_count: i64 = snapshot.query_row(&sql, [], |r| r.get(0))?;
            let target_count: i64 = tx.query_one(&sql, &[]).await?.get(0);
            if source_count != target_count || target_count as u64 != n {
                return Err(MigrateError::Check(format!(
                    "table {table}: {source_count} rows in SQLite, {target_count} copied; nothing was copied"
                )));
            }
            copied.push((*table, n));
        }
        tx.execute(
            "SELECT setval(pg_get_serial_sequence('log_entries', 'id'),
                           COALESCE((SELECT max(id) FROM log_entries), 0) + 1, false)",
            &[],
        )
        .await?;
        tx.commit().await?;
        Ok(copied)
    })
}
