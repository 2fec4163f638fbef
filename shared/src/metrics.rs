//! A small Prometheus text-format registry: counters, labelled counters,
//! gauges and latency histograms, lock-free on the hot path where possible.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Latency bucket bounds in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A counter keyed by one label value.
#[derive(Default)]
pub struct LabeledCounter {
    values: Mutex<BTreeMap<String, u64>>,
}

impl LabeledCounter {
    pub fn inc(&self, label: &str) {
        self.add(label, 1);
    }

    pub fn add(&self, label: &str, n: u64) {
        if let Ok(mut m) = self.values.lock() {
            *m.entry(label.to_string()).or_default() += n;
        }
    }

    pub fn get(&self, label: &str) -> u64 {
        self.values
            .lock()
            .ok()
            .and_then(|m| m.get(label).copied())
            .unwrap_or(0)
    }

    /// Writes the counter as `name{label="value"} n` lines.
    pub fn render(&self, out: &mut String, name: &str, help: &str, label: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        if let Ok(m) = self.values.lock() {
            for (k, v) in m.iter() {
                let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {v}", escape(k));
            }
        }
    }
}

/// A latency histogram.
pub struct Histogram {
    counts: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render_series(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }

    /// Writes the histogram in Prometheus text format.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        self.render_series(out, name, "");
    }
}

/// Histograms keyed by one label value (e.g. the route).
#[derive(Default)]
pub struct LabeledHistogram {
    series: Mutex<BTreeMap<String, std::sync::Arc<Histogram>>>,
}

impl LabeledHistogram {
    pub fn observe(&self, label: &str, d: Duration) {
        let h = match self.series.lock() {
            Ok(mut m) => m.entry(label.to_string()).or_default().clone(),
            Err(_) => return,
        };
        h.observe(d);
    }

    pub fn render(&self, out: &mut String, name: &str, help: &str, label: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        if let Ok(m) = self.series.lock() {
            for (k, h) in m.iter() {
                h.render_series(out, name, &format!("{label}=\"{}\"", escape(k)));
            }
        }
    }
}

/// Writes a single counter or gauge value.
pub fn render_value(out: &mut String, name: &str, help: &str, kind: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Axum middleware recording every request's latency by matched route into
/// the histogram the service keeps in `metrics`.
pub async fn track_latency(
    hist: std::sync::Arc<LabeledHistogram>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    hist.observe(&route, start.elapsed());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let c = LabeledCounter::default();
        c.inc("valid");
        c.add("invalid", 2);
        let h = LabeledHistogram::default();
        h.observe("/v1/validate", Duration::from_millis(2));
        let mut out = String::new();
        c.render(&mut out, "x_total", "help", "result");
        h.render(&mut out, "lat_seconds", "help", "route");
        assert!(out.contains("x_total{result=\"invalid\"} 2"));
        assert!(out.contains("lat_seconds_bucket{route=\"/v1/validate\",le=\"0.0025\"} 1"));
        assert!(out.contains("lat_seconds_count{route=\"/v1/validate\"} 1"));
    }
}
