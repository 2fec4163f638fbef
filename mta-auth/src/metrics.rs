//! The service's Prometheus metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mailid_shared::metrics::{render_value, LabeledCounter, LabeledHistogram};

/// Counters and latencies exposed at `/metrics`.
#[derive(Default)]
pub struct Metrics {
    /// Validations by result (`valid` or a refusal reason).
    pub validations: LabeledCounter,
    /// Codes handed out by `POST /v1/totp`.
    pub codes_issued: AtomicU64,
    /// Lockouts of an (account, key) started.
    pub lockouts: AtomicU64,
    /// Identity uploads by result (`accepted` or the problem code).
    pub identity_uploads: LabeledCounter,
    /// Backup writes by result (`stored`, `deleted` or the problem code
    /// of a refused upload or delete).
    pub backup_writes: LabeledCounter,
    /// Request latency by route.
    pub latency: Arc<LabeledHistogram>,
}

impl Metrics {
    /// Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.validations.render(
            &mut out,
            "mailid_mta_validations_total",
            "Code validations by result.",
            "result",
        );
        render_value(
            &mut out,
            "mailid_mta_codes_issued_total",
            "TOTP codes issued.",
            "counter",
            self.codes_issued.load(Ordering::Relaxed) as f64,
        );
        render_value(
            &mut out,
            "mailid_mta_lockouts_total",
            "Lockouts of an (account, key) started.",
            "counter",
            self.lockouts.load(Ordering::Relaxed) as f64,
        );
        self.identity_uploads.render(
            &mut out,
            "mailid_mta_identity_uploads_total",
            "Identity uploads by result.",
            "result",
        );
        self.backup_writes.render(
            &mut out,
            "mailid_mta_backup_writes_total",
            "Key backup uploads and deletions by result.",
            "result",
        );
        self.latency.render(
            &mut out,
            "mailid_mta_request_duration_seconds",
            "Request latency by route.",
            "route",
        );
        out
    }
}
