//! LISTEN/NOTIFY between replicas, kept off the write path: a listener
//! that counts notifications on a connection of its own, and a notifier
//! that sends one `NOTIFY` after a burst of commits instead of one inside
//! every transaction (PostgreSQL takes a database-wide lock to commit a
//! transaction that notified, so a `NOTIFY` per write would serialise every
//! writer's commit and fsync).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_postgres::NoTls;

use super::{describe, Inner, PgDb};
use crate::db::DbError;

/// How long the notifier gathers pokes before it sends one `NOTIFY`.
pub const NOTIFY_GATHER: Duration = Duration::from_millis(20);

fn check_channel(channel: &str) {
    assert!(
        !channel.is_empty()
            && channel
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()),
        "channel names are fixed lowercase identifiers"
    );
}

impl PgDb {
    /// Listens on `channel` (a lowercase SQL identifier) on a connection of
    /// its own: the counter goes up on every notification and after every
    /// (re)connection, so a watcher reloads whatever it may have missed
    /// while the connection was down. The listener stops when every
    /// receiver is gone.
    pub fn listen(&self, channel: &str) -> tokio::sync::watch::Receiver<u64> {
        check_channel(channel);
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        let config = self.inner.url.config().clone();
        let channel = channel.to_string();
        self.inner.handle.spawn(listen_loop(config, channel, tx));
        rx
    }

    /// Sends one `NOTIFY channel` now (for a short-lived process, such as
    /// the operator CLI, that may exit before a [`Notifier`] sends).
    pub async fn notify(&self, channel: &str) -> Result<(), DbError> {
        check_channel(channel);
        let pool = self.inner.pool.clone();
        let sql = format!("NOTIFY {channel}");
        self.inner
            .handle
            .spawn(async move { send(&pool, &sql).await })
            .await
            .unwrap_or(Err(DbError::Panicked))
    }

    /// A notifier for `channel`: [`Notifier::poke`] after a commit that
    /// others should hear of; one `NOTIFY` follows within
    /// [`NOTIFY_GATHER`] for all the pokes of that time, sent outside any
    /// writer's transaction. A notification lost (the database away) is
    /// made up for by the listeners' polling.
    pub fn notifier(&self, channel: &str) -> Notifier {
        check_channel(channel);
        let shared = Arc::new(Shared {
            pending: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
        });
        let weak = Arc::downgrade(&self.inner);
        let sql = format!("NOTIFY {channel}");
        self.inner
            .handle
            .spawn(notify_loop(weak, Arc::downgrade(&shared), sql));
        Notifier { shared }
    }
}

struct Shared {
    pending: AtomicBool,
    wake: tokio::sync::Notify,
}

/// Sends coalesced notifications on one channel (see [`PgDb::notifier`]).
/// Dropping every clone stops its task.
#[derive(Clone)]
pub struct Notifier {
    shared: Arc<Shared>,
}

impl Notifier {
    /// Asks for a notification soon; never blocks, never fails.
    pub fn poke(&self) {
        if !self.shared.pending.swap(true, Ordering::AcqRel) {
            self.shared.wake.notify_one();
        }
    }
}

/// Sends `sql` (a `NOTIFY`) on a pooled connection, in its own
/// transaction.
async fn send(pool: &deadpool_postgres::Pool, sql: &str) -> Result<(), DbError> {
    let job = async {
        let client = pool.get().await.map_err(super::pool_error)?;
        client.batch_execute(sql).await?;
        Ok(())
    };
    tokio::time::timeout(super::OP_TIMEOUT, job)
        .await
        .unwrap_or_else(|_| Err(DbError::Unavailable("no answer to a NOTIFY".into())))
}

async fn notify_loop(db: Weak<Inner>, shared: Weak<Shared>, sql: String) {
    loop {
        {
            let Some(s) = shared.upgrade() else { return };
            // `notify_one` stores a permit, so a poke between the check and
            // the wait is not lost.
            let wake = s.wake.notified();
            if !s.pending.load(Ordering::Acquire) {
                // Woken or not, look again at the top: a stale permit
                // finds nothing pending, and a dropped notifier ends the
                // task within a second.
                tokio::select! {
                    _ = wake => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
        }
        tokio::time::sleep(NOTIFY_GATHER).await;
        match shared.upgrade() {
            Some(s) => s.pending.store(false, Ordering::Release),
            None => return,
        }
        let Some(inner) = db.upgrade() else { return };
        let pool = inner.pool.clone();
        drop(inner);
        if let Err(e) = send(&pool, &sql).await {
            tracing::debug!(%sql, error = %e, "a notification was not sent; listeners poll");
        }
    }
}

async fn listen_loop(
    config: tokio_postgres::Config,
    channel: String,
    tx: tokio::sync::watch::Sender<u64>,
) {
    use futures_util::future::poll_fn;
    while !tx.is_closed() {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let bump = || tx.send_modify(|n| *n = n.wrapping_add(1));
                let listen = format!("LISTEN {channel}");
                let conn_task = async {
                    while let Some(msg) = poll_fn(|cx| connection.poll_message(cx)).await {
                        match msg {
                            Ok(tokio_postgres::AsyncMessage::Notification(_)) => bump(),
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                };
                let setup = async {
                    if client.batch_execute(&listen).await.is_ok() {
                        bump();
                    }
                    // Hold the client until the connection ends.
                    std::future::pending::<()>().await
                };
                tokio::select! {
                    _ = conn_task => {}
                    _ = setup => {}
                    _ = tx.closed() => return,
                }
                tracing::warn!(%channel, "database notification connection lost; reconnecting");
            }
            Err(e) => {
                tracing::debug!(error = %describe(&e), %channel, "database notification connection failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tx.closed() => return,
        }
    }
}
