//! The CA's Prometheus metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mailid_shared::metrics::{render_value, Histogram, LabeledCounter, LabeledHistogram};

/// Counters and histograms served on `/metrics`.
#[derive(Default)]
pub struct Metrics {
    /// Identity certificates issued.
    pub issued: AtomicU64,
    /// Revocations by reason.
    pub revoked: LabeledCounter,
    /// Enrollment outcomes: `issued` or the problem code.
    pub enrollments: LabeledCounter,
    /// Holder revocation outcomes.
    pub revocation_requests: LabeledCounter,
    /// Enrollment preflight (`/v1/certificates/check`) outcomes:
    /// `accepted` or the problem code.
    pub enrollment_checks: LabeledCounter,
    /// Codes the MTAs refused, by the MTA's reason (the public answer does
    /// not tell `unknown-account` from `invalid`; this does).
    pub mta_rejections: LabeledCounter,
    /// Latency of MTA validation calls.
    pub mta_latency: Histogram,
    /// Request latency by route.
    pub requests: Arc<LabeledHistogram>,
    /// Number of the CRL being served.
    pub crl_number: AtomicU64,
    /// Size in bytes of the CRL being served.
    pub crl_bytes: AtomicU64,
    /// Entries in the CRL being served.
    pub crl_entries: AtomicU64,
    /// CRLs signed by this process.
    pub crl_signings: AtomicU64,
    /// Pre-sign lint findings by rule (the in-process linter's, counted by
    /// the issuer's gate, and the external linter's).
    pub lint_findings: Arc<LabeledCounter>,
}

impl Metrics {
    /// Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        render_value(
            &mut out,
            "mailid_ca_certificates_issued_total",
            "Identity certificates issued.",
            "counter",
            get(&self.issued),
        );
        self.lint_findings.render(
            &mut out,
            "mailid_ca_lint_findings_total",
            "Pre-sign lint findings (each refused a signature), by rule.",
            "rule",
        );
        self.revoked.render(
            &mut out,
            "mailid_ca_revocations_total",
            "Certificates revoked, by reason.",
            "reason",
        );
        self.enrollments.render(
            &mut out,
            "mailid_ca_enrollments_total",
            "Enrollment requests by outcome.",
            "outcome",
        );
        self.revocation_requests.render(
            &mut out,
            "mailid_ca_revocation_requests_total",
            "Holder revocation requests by outcome.",
            "outcome",
        );
        self.enrollment_checks.render(
            &mut out,
            "mailid_ca_enrollment_checks_total",
            "Enrollment preflight checks by outcome.",
            "outcome",
        );
        self.mta_rejections.render(
            &mut out,
            "mailid_ca_mta_rejections_total",
            "TOTP codes the MTAs refused, by the MTA's reason.",
            "reason",
        );
        self.mta_latency.render(
            &mut out,
            "mailid_ca_mta_validate_seconds",
            "Latency of TOTP validation calls to MTAs.",
        );
        self.requests.render(
            &mut out,
            "mailid_ca_request_seconds",
            "Request latency by route.",
            "route",
        );
        render_value(
            &mut out,
            "mailid_ca_crl_number",
            "Number of the CRL being served.",
            "gauge",
            get(&self.crl_number),
        );
        render_value(
            &mut out,
            "mailid_ca_crl_bytes",
            "Size of the CRL being served.",
            "gauge",
            get(&self.crl_bytes),
        );
        render_value(
            &mut out,
            "mailid_ca_crl_entries",
            "Entries in the CRL being served.",
            "gauge",
            get(&self.crl_entries),
        );
        render_value(
            &mut out,
            "mailid_ca_crl_signings_total",
            "CRLs signed by this process.",
            "counter",
            get(&self.crl_signings),
        );
        out
    }
}
