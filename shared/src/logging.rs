//! The services' log set-up, one for both: `RUST_LOG` (default `info`) to
//! stderr, colours only on a terminal, never a panic when the log cannot
//! be written, and never the database driver's statement parameters
//! (password hashes, TOTP secrets, CA credentials), whatever `RUST_LOG`
//! asks.

use std::io::IsTerminal;

use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Whether an event may be logged at all: PostgreSQL's driver logs every
/// statement with its parameters at debug, so nothing of it below info.
fn allowed(target: &str, level: &tracing::Level) -> bool {
    !(target.starts_with("tokio_postgres") && *level > tracing::Level::INFO)
}

/// Installs the subscriber (a second call does nothing).
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let driver = tracing_subscriber::filter::filter_fn(|m| allowed(m.target(), m.level()));
    // A log that cannot be written (disk full, read-only, closed pipe) must
    // not take requests down: by default the subscriber reports such errors
    // with `eprintln!`, which panics when stderr itself fails.
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .with_filter(filter)
        .with_filter(driver);
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

#[cfg(test)]
mod tests {
    use super::allowed;
    use tracing::Level;

    #[test]
    fn the_driver_never_logs_below_info() {
        assert!(!allowed("tokio_postgres::query", &Level::DEBUG));
        assert!(!allowed("tokio_postgres::prepare", &Level::TRACE));
        assert!(allowed("tokio_postgres::connection", &Level::WARN));
        assert!(allowed("mailid_ca::serve", &Level::DEBUG));
    }
}
