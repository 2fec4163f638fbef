//! Tests of the PostgreSQL plumbing, the server-side ones against the
//! test cluster (`MAILID_TEST_PG_URL`).

use super::url::split_passfile_line;
use super::*;

#[test]
fn passwords_never_show() {
    for (url, shown) in [
        (
            "postgres://alice:s3cret@db.example:5432/mailid",
            "postgres://alice:***@db.example:5432/mailid",
        ),
        (
            "postgresql://alice:p%40ss@h/db?sslmode=disable&password=other",
            "postgresql://alice:***@h/db?sslmode=disable&password=***",
        ),
        (
            "postgresql:///mailid?host=/run/pg&user=bob",
            "postgresql:///mailid?host=/run/pg&user=bob",
        ),
    ] {
        let u = PgUrl::parse(url).unwrap();
        assert_eq!(u.to_string(), shown);
        assert!(!format!("{u:?}").contains("s3cret"));
        assert_eq!(u.secret_text(), url);
    }
}

#[test]
fn other_schemes_are_named() {
    let e = PgUrl::parse("mysql://root:pw@h/db").unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported database URL scheme 'mysql' (use postgres:// or postgresql://)"
    );
    assert!(PgUrl::parse("/var/lib/db").is_err());
    let e = PgUrl::parse("postgres://u:pw@h/db?frobnicate=1").unwrap_err();
    assert!(e.to_string().contains("unknown option"), "{e}");
    assert!(!e.to_string().contains("pw"), "{e}");
}

#[test]
fn dbname_is_replaced() {
    let u = PgUrl::parse("postgresql:///postgres?host=/tmp/s&port=5&user=p").unwrap();
    let v = u.with_dbname("t_x_1");
    assert_eq!(
        v.secret_text(),
        "postgresql:///t_x_1?host=/tmp/s&port=5&user=p"
    );
    assert_eq!(v.config().get_dbname(), Some("t_x_1"));
    let w = PgUrl::parse("postgres://u:pw@h:1")
        .unwrap()
        .with_dbname("d");
    assert_eq!(w.secret_text(), "postgres://u:pw@h:1/d");
}

#[test]
fn passfile_lines_split_on_unescaped_colons() {
    assert_eq!(
        split_passfile_line(r"h:5432:db:u:pa\:ss:x"),
        vec!["h", "5432", "db", "u", "pa:ss:x"]
    );
}

#[derive(Debug, thiserror::Error)]
enum E {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("refused")]
    Refused,
}

impl AsDbError for E {
    fn as_db(&self) -> Option<&DbError> {
        match self {
            E::Db(d) => Some(d),
            E::Refused => None,
        }
    }
}

impl From<tokio_postgres::Error> for E {
    fn from(e: tokio_postgres::Error) -> Self {
        E::Db(DbError::from(e))
    }
}

const MIGRATIONS: &[&str] = &["CREATE TABLE t (k TEXT PRIMARY KEY, v BIGINT NOT NULL)"];

#[test]
fn schema_writes_retries_and_notifications_on_a_real_server() {
    let url = testing::fresh_database("sharedpg");
    // Existing: an empty database is refused and nothing is created.
    let e = PgDb::open(&url, "svc", MIGRATIONS, OpenMode::Existing)
        .err()
        .unwrap();
    assert!(matches!(e, DbError::NoSchema { .. }), "{e}");
    let db = PgDb::open(&url, "svc", MIGRATIONS, OpenMode::Create).unwrap();
    // Several openers at once migrate once (the advisory lock).
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PgDb::open(&url, "svc", MIGRATIONS, OpenMode::Create))
        })
        .collect();
    for o in opens {
        o.join().unwrap().unwrap();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut changes = db.listen("t_changed");
    rt.block_on(async {
        // The listener reports its connection first.
        tokio::time::timeout(Duration::from_secs(5), changes.changed())
            .await
            .unwrap()
            .unwrap();
        db.write(|tx| {
            Box::pin(async move {
                tx.execute("INSERT INTO t (k, v) VALUES ('n', 0)", &[])
                    .await?;
                Ok::<(), E>(())
            })
        })
        .await
        .unwrap();
        // 40 increments under SERIALIZABLE from 40 tasks: collisions
        // are retried, none is lost.
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                db.write(|tx| {
                    Box::pin(async move {
                        tx.batch_execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                            .await?;
                        let v: i64 = tx
                            .query_one("SELECT v FROM t WHERE k = 'n'", &[])
                            .await?
                            .get(0);
                        tx.execute("UPDATE t SET v = $1 WHERE k = 'n'", &[&(v + 1)])
                            .await?;
                        tx.execute("SELECT pg_notify('t_changed', '')", &[]).await?;
                        Ok::<(), E>(())
                    })
                })
                .await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        let v: i64 = db
            .read(|tx| {
                Box::pin(async move {
                    Ok::<i64, E>(
                        tx.query_one("SELECT v FROM t WHERE k = 'n'", &[])
                            .await?
                            .get(0),
                    )
                })
            })
            .await
            .unwrap();
        assert_eq!(v, ok);
        assert!(ok >= 30, "only {ok} of 40 increments committed");
        tokio::time::timeout(Duration::from_secs(5), changes.changed())
            .await
            .unwrap()
            .unwrap();
        // An error from the body rolls back what it wrote.
        let r = db
            .write(|tx| {
                Box::pin(async move {
                    tx.execute("INSERT INTO t (k, v) VALUES ('gone', 1)", &[])
                        .await?;
                    Err::<(), E>(E::Refused)
                })
            })
            .await;
        assert!(matches!(r, Err(E::Refused)));
        let n: i64 = db
            .read(|tx| {
                Box::pin(async move {
                    Ok::<i64, E>(tx.query_one("SELECT COUNT(*) FROM t", &[]).await?.get(0))
                })
            })
            .await
            .unwrap();
        assert_eq!(n, 1);
        db.ping(Duration::from_secs(2)).await.unwrap();
    });
    // The same from synchronous code.
    let n: i64 = db.block_on(async {
        let c = db.client().await.unwrap();
        c.query_one("SELECT COUNT(*) FROM t", &[])
            .await
            .unwrap()
            .get(0)
    });
    assert_eq!(n, 1);
    drop(rt);
}

#[test]
fn an_unreachable_server_is_unavailable_quickly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = PgUrl::parse(&format!("postgres://u:topsecret@127.0.0.1:{port}/db")).unwrap();
    let t = std::time::Instant::now();
    let e = PgDb::open(&url, "svc", MIGRATIONS, OpenMode::Create)
        .err()
        .unwrap();
    assert!(e.is_unavailable(), "{e}");
    assert!(!e.to_string().contains("topsecret"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10));
}
