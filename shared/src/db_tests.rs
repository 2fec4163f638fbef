//! Tests of the SQLite plumbing: group commit, open modes, short reads.

use super::*;

const MIGRATIONS: &[&str] = &["CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL);"];

#[derive(Debug, thiserror::Error)]
enum E {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("refused")]
    Refused,
}

impl From<rusqlite::Error> for E {
    fn from(e: rusqlite::Error) -> Self {
        E::Db(DbError::Sqlite(e))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_job_changes_nothing_and_others_commit() {
    let dir = tempfile_dir();
    let path = dir.join("t.sqlite");
    let db = Db::open(&path, MIGRATIONS, OpenMode::Create).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut handles = Vec::new();
    for i in 0..50i64 {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            db.write(move |c| -> Result<(), E> {
                c.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", (format!("k{i}"), i))?;
                if i % 2 == 1 {
                    return Err(E::Refused);
                }
                Ok(())
            })
            .await
        }));
    }
    let mut ok = 0;
    for h in handles {
        if h.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 25);
    let n: i64 = db
        .read(|c| -> Result<i64, E> {
            Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?)
        })
        .await
        .unwrap();
    assert_eq!(n, 25);
    // Reopening applies no migration twice.
    drop(db);
    let db = Db::open(&path, MIGRATIONS, OpenMode::Existing).unwrap();
    let v: i64 = db
        .read_blocking(|c| -> Result<i64, E> {
            Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?)
        })
        .unwrap();
    assert_eq!(v, 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_reads_run_here_when_a_connection_is_idle_and_wait_otherwise() {
    let dir = tempfile_dir();
    let db = Db::open(&dir.join("t.sqlite"), MIGRATIONS, OpenMode::Create).unwrap();
    db.write(|c| -> Result<(), E> {
        c.execute("INSERT INTO t (k, v) VALUES ('a', 7)", [])?;
        Ok(())
    })
    .await
    .unwrap();
    let get = |c: &Connection| -> Result<(i64, std::thread::ThreadId), E> {
        let v = c.query_row("SELECT v FROM t WHERE k = 'a'", [], |r| r.get(0))?;
        Ok((v, std::thread::current().id()))
    };
    // No idle connection yet: the first read goes through the pool
    // (another thread) and leaves its connection idle.
    let here = std::thread::current().id();
    let (v, on) = db.read_short(get).await.unwrap();
    assert_eq!(v, 7);
    assert_ne!(on, here);
    // Now one is idle: the read runs on this very thread.
    let (v, on) = db.read_short(get).await.unwrap();
    assert_eq!((v, on), (7, here));
    // Every read slot taken: a short read waits for one.
    let all = db
        .inner
        .read_slots
        .acquire_many(MAX_IDLE_READERS as u32)
        .await
        .unwrap();
    let waiting = tokio::spawn({
        let db = db.clone();
        async move { db.read_short(get).await.map(|(v, _)| v) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished());
    drop(all);
    assert_eq!(waiting.await.unwrap().unwrap(), 7);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn existing_mode_creates_nothing() {
    let dir = tempfile_dir();
    let path = dir.join("t.sqlite");
    // Missing: refused, and no file appears.
    let e = Db::open(&path, MIGRATIONS, OpenMode::Existing)
        .err()
        .unwrap();
    assert!(matches!(e, DbError::Missing { .. }), "{e}");
    assert!(e.to_string().contains("only 'init' creates it"), "{e}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    // Empty (truncated): refused and left empty.
    std::fs::write(&path, b"").unwrap();
    let e = Db::open(&path, MIGRATIONS, OpenMode::Existing)
        .err()
        .unwrap();
    assert!(matches!(e, DbError::Missing { .. }), "{e}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    // A reader connection never creates the file either.
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(connect(&path), Err(DbError::Missing { .. })));
    assert!(!path.exists());
    // Created by `Create`, then opened by `Existing`.
    drop(Db::open(&path, MIGRATIONS, OpenMode::Create).unwrap());
    drop(Db::open(&path, MIGRATIONS, OpenMode::Existing).unwrap());
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "mailid-db-test-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
