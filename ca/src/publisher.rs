//! The CRL publisher: decides when a CRL is signed and which one is served.
//!
//! The served CRL lives in memory (serving never signs) and on disk
//! (`DIR/crl.der`, a cache for the next start). A background task re-signs
//! it
//!
//! * after revocations: in-process ones wake it at once; revocations by
//!   other processes (the CLI, other replicas) are seen by polling the
//!   revocation counter every 250 ms and, on PostgreSQL, at once through
//!   `NOTIFY mailid_ca_revocations`; a burst costs one signing per ~1 s
//!   window;
//! * before half of its lifetime (thisUpdate … nextUpdate) has passed;
//! * at start-up, when it holds the lease (see [`Publisher::start`]).
//!
//! With replicas on one PostgreSQL database only the holder of the CRL
//! lease signs (it renews the lease every few seconds; another replica
//! takes it when it lapses) and publishes each CRL to the database under
//! its epoch, fenced so a replica whose lease lapsed cannot publish. Every
//! replica serves the newest published CRL: it reloads it on `NOTIFY
//! mailid_ca_crl` and polls every second as a fallback. On SQLite (one
//! process) the lease is always held and publishing is a no-op. A database
//! outage is logged and retried; the CRL in memory keeps being served.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::crl::{file_number, now_nanos, sign_now, write_file, CrlSnapshot};
use crate::issuer::CaIssuer;
use crate::metrics::Metrics;
use crate::store::{CrlSignals, Store};

/// Shortest time between two signings (the coalescing window).
pub const MIN_SIGN_INTERVAL: Duration = Duration::from_secs(1);
/// How often the revocation counter is polled (it catches revocations made
/// by other processes, e.g. `mailid-ca revoke`; the API's own revocations
/// wake the publisher at once). One indexed single-row read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How often the lease holder renews its lease (the lease lasts 10 s).
pub const RENEW_INTERVAL: Duration = Duration::from_secs(3);
/// How often a replica without the lease looks for a newer published CRL
/// (besides the NOTIFY) and tries to take the lease.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// The publisher: the current CRL plus what is needed to make the next.
pub struct Publisher {
    current: RwLock<Arc<CrlSnapshot>>,
    wake: Notify,
    store: Store,
    issuer: Arc<CaIssuer>,
    metrics: Arc<Metrics>,
    path: std::path::PathBuf,
    next_update_hours: u32,
    /// This process's name in the lease row.
    holder: String,
    /// The lease epoch while this process holds it.
    epoch: Mutex<Option<i64>>,
}

/// This replica's name in the lease row: the host and the data directory
/// (each replica has a copy of its own), so a replica restarted after a
/// crash takes its own lease back at once instead of waiting for it to
/// expire (a new epoch all the same: the crashed process is fenced out).
fn holder_name(crl_path: &std::path::Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let dir = crl_path
        .parent()
        .and_then(|d| std::fs::canonicalize(d).ok())
        .unwrap_or_default();
    format!("{host}:{}", dir.display())
}

impl Publisher {
    /// The CRL to serve at start: when this process holds (or takes) the
    /// lease, a CRL signed afresh, numbered above the one on disk and every
    /// one allocated (after a restore of the data directory from an older
    /// backup, the CRL on disk is older than CRLs already served, and
    /// serving it again would make the number go back), and published;
    /// otherwise the newest published CRL, or the one on disk until the
    /// lease holder publishes.
    pub async fn start(
        store: Store,
        issuer: Arc<CaIssuer>,
        metrics: Arc<Metrics>,
        path: std::path::PathBuf,
        next_update_hours: u32,
    ) -> anyhow::Result<Arc<Publisher>> {
        let holder = holder_name(&path);
        let mut epoch = store.crl_lease(&holder, None, true).await?;
        let snap = match epoch {
            Some(e) => {
                if store.is_shared() {
                    tracing::info!(epoch = e, holder, "took the CRL lease epoch {e}");
                }
                let (s2, i2, p2) = (store.clone(), issuer.clone(), path.clone());
                let snap = tokio::task::spawn_blocking(move || -> anyhow::Result<CrlSnapshot> {
                    let floor = file_number(&p2);
                    let (snap, _) = sign_now(&s2, &i2, next_update_hours, now_nanos(), floor)?;
                    write_file(&p2, &snap.der)?;
                    Ok(snap)
                })
                .await??;
                metrics.crl_signings.fetch_add(1, Ordering::Relaxed);
                if !store.publish_crl(&holder, e, &snap.published()).await? {
                    tracing::warn!(epoch = e, "lost the CRL lease epoch {e}");
                    epoch = None;
                }
                snap
            }
            None => match store.latest_crl(0).await? {
                Some(der) => CrlSnapshot::from_der(der)?,
                None => CrlSnapshot::from_der(std::fs::read(&path).map_err(|e| {
                    anyhow::anyhow!(
                        "no CRL to serve: another replica holds the CRL lease and published \
                         none yet, and {} cannot be read ({e})",
                        path.display()
                    )
                })?)?,
            },
        };
        let p = Arc::new(Publisher {
            current: RwLock::new(Arc::new(snap.clone())),
            wake: Notify::new(),
            store,
            issuer,
            metrics,
            path,
            next_update_hours,
            holder,
            epoch: Mutex::new(epoch),
        });
        p.record(&snap);
        Ok(p)
    }

    fn record(&self, s: &CrlSnapshot) {
        self.metrics
            .crl_number
            .store(s.number as u64, Ordering::Relaxed);
        self.metrics
            .crl_bytes
            .store(s.der.len() as u64, Ordering::Relaxed);
        self.metrics
            .crl_entries
            .store(s.entries as u64, Ordering::Relaxed);
    }

    /// The CRL being served.
    pub fn current(&self) -> Arc<CrlSnapshot> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Serves `snap` if it is newer than the CRL being served.
    fn serve(&self, snap: CrlSnapshot) -> bool {
        let mut g = match self.current.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if snap.number <= g.number {
            return false;
        }
        self.record(&snap);
        *g = Arc::new(snap);
        true
    }

    /// Asks for a re-signing soon (after a revocation).
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    fn epoch(&self) -> Option<i64> {
        self.epoch.lock().ok().and_then(|g| *g)
    }

    fn set_epoch(&self, e: Option<i64>) {
        if let Ok(mut g) = self.epoch.lock() {
            *g = e;
        }
    }

    /// Gives the lease up (at shutdown), so another replica signs at once.
    pub async fn release(&self) {
        if let (true, Some(e)) = (self.store.is_shared(), self.epoch()) {
            if self.store.release_crl_lease(&self.holder, e).await.is_ok() {
                tracing::info!(epoch = e, "released the CRL lease epoch {e}");
            }
        }
    }

    /// Renews or takes the lease; logs when it changes hands.
    async fn lease(&self) -> anyhow::Result<Option<i64>> {
        let held = self.epoch();
        let now = self.store.crl_lease(&self.holder, held, false).await?;
        if now != held {
            match (held, now) {
                (_, Some(e)) => tracing::info!(epoch = e, "took the CRL lease epoch {e}"),
                (Some(e), None) => tracing::warn!(epoch = e, "lost the CRL lease epoch {e}"),
                (None, None) => {}
            }
            self.set_epoch(now);
        }
        Ok(now)
    }

    /// Signs a CRL and, if still holding the lease under `epoch`, publishes
    /// and serves it.
    async fn resign(self: &Arc<Self>, epoch: i64) -> anyhow::Result<()> {
        let me = self.clone();
        let snap = tokio::task::spawn_blocking(move || -> anyhow::Result<CrlSnapshot> {
            let floor = me.current().number;
            let (snap, _) = sign_now(
                &me.store,
                &me.issuer,
                me.next_update_hours,
                now_nanos(),
                floor,
            )?;
            Ok(snap)
        })
        .await??;
        self.metrics.crl_signings.fetch_add(1, Ordering::Relaxed);
        if !self
            .store
            .publish_crl(&self.holder, epoch, &snap.published())
            .await?
        {
            tracing::warn!(
                epoch,
                number = snap.number,
                "lost the CRL lease epoch {epoch}; the CRL signed is not published"
            );
            self.set_epoch(None);
            return Ok(());
        }
        tracing::info!(
            number = snap.number,
            entries = snap.entries,
            epoch,
            "CRL signed"
        );
        let der = snap.der.clone();
        // Served at once; the file (a cache for the next start) follows.
        self.serve(snap);
        write_file(&self.path, &der)
    }

    /// Serves the newest published CRL if it is newer than ours.
    async fn reload(&self) -> anyhow::Result<()> {
        let above = self.current().number;
        if let Some(der) = self.store.latest_crl(above).await? {
            let snap = CrlSnapshot::from_der(der)?;
            let (number, entries) = (snap.number, snap.entries);
            if self.serve(snap) {
                tracing::info!(
                    number,
                    entries,
                    "serving the CRL published by the lease holder"
                );
            }
        }
        Ok(())
    }

    /// Whether a new CRL should be signed now.
    async fn due(&self) -> anyhow::Result<bool> {
        let state = self.store.crl_state().await?;
        let cur = self.current();
        Ok(state.covered != state.revocations
            || state.number != cur.number
            || mailid_shared::timefmt::now_unix() >= cur.refresh_at())
    }

    /// One round: lease, reload, sign if due. Errors (the database away)
    /// are the caller's to log.
    async fn round(
        self: &Arc<Self>,
        last_sign: &mut Instant,
        last_lease: &mut Instant,
        reload: bool,
    ) -> anyhow::Result<()> {
        let shared = self.store.is_shared();
        let held = self.epoch();
        let lease_due = match held {
            Some(_) => last_lease.elapsed() >= RENEW_INTERVAL,
            None => last_lease.elapsed() >= RELOAD_INTERVAL,
        };
        if shared && lease_due {
            *last_lease = Instant::now();
            self.lease().await?;
        }
        if shared && reload {
            self.reload().await?;
        }
        let Some(epoch) = self.epoch() else {
            return Ok(());
        };
        if !self.due().await? {
            return Ok(());
        }
        // Coalesce a burst: at most one signing per window.
        let since = last_sign.elapsed();
        if since < MIN_SIGN_INTERVAL {
            tokio::time::sleep(MIN_SIGN_INTERVAL - since).await;
        }
        *last_sign = Instant::now();
        self.resign(epoch).await
    }

    /// Runs until the process ends: polls, renews the lease, reloads and
    /// re-signs as described above; never gives up on errors.
    pub async fn run(self: Arc<Self>) {
        let mut last_sign = Instant::now() - MIN_SIGN_INTERVAL;
        let mut last_lease = Instant::now();
        let mut last_reload = Instant::now();
        let mut signals: Option<CrlSignals> = self.store.crl_signals();
        let mut failing = false;
        loop {
            let mut reload = false;
            let mut closed = false;
            match signals.as_mut() {
                Some(sig) => tokio::select! {
                    _ = self.wake.notified() => {},
                    _ = tokio::time::sleep(POLL_INTERVAL) => {},
                    r = sig.revocations.changed() => closed = r.is_err(),
                    r = sig.published.changed() => {
                        closed = r.is_err();
                        reload = true;
                    },
                },
                None => tokio::select! {
                    _ = self.wake.notified() => {},
                    _ = tokio::time::sleep(POLL_INTERVAL) => {},
                },
            }
            if closed {
                // The listener is gone: polling alone from now on.
                signals = None;
            }
            if last_reload.elapsed() >= RELOAD_INTERVAL {
                reload = true;
            }
            if reload {
                last_reload = Instant::now();
            }
            match self.round(&mut last_sign, &mut last_lease, reload).await {
                Ok(()) => {
                    if failing {
                        tracing::info!("the CRL publisher reaches the database again");
                        failing = false;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(error = %format!("{e:#}"), "the CRL publisher failed; retrying (the CRL in memory is still served)");
                        failing = true;
                    }
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
        }
    }
}
