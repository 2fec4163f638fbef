//! The application state every request handler shares: configuration,
//! store, signer, CRL publisher, MTA client, metrics and rate limiters. It
//! lives apart from the HTTP layer so that the registration authority and
//! the server wiring can use it without importing `api`.

use std::sync::Arc;

use mailid_shared::ratelimit::Limiter;

use crate::config::Config;
use crate::issuer::CaIssuer;
use crate::lint::external::ExternalLinter;
use crate::metrics::Metrics;
use crate::mta_client::MtaClient;
use crate::publisher::Publisher;
use crate::store::Store;

/// Everything a request handler needs.
pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub issuer: Arc<CaIssuer>,
    pub crl: Arc<Publisher>,
    pub mta: MtaClient,
    pub metrics: Arc<Metrics>,
    pub ip_limit: Limiter,
    pub account_limit: Limiter,
    /// The enrollment preflight's own per-address budget (it only peeks at
    /// `ip_limit` and `account_limit`).
    pub check_limit: Limiter,
    /// `serve --lint-url`: the external linter every drafted identity
    /// certificate also passes (fail-closed).
    pub external_lint: Option<ExternalLinter>,
}

/// Shared state handle.
pub type Shared = Arc<AppState>;

impl AppState {
    /// The state of a running CA: the rate limiters come from the
    /// configuration's limits, the MTA client is a fresh pool.
    pub fn new(
        config: Config,
        store: Store,
        issuer: Arc<CaIssuer>,
        crl: Arc<Publisher>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<AppState> {
        let limits = config.rate_limits;
        Ok(AppState {
            store,
            issuer,
            crl,
            mta: MtaClient::new()?,
            metrics,
            ip_limit: Limiter::new(limits.ip_per_second, limits.ip_burst),
            account_limit: Limiter::new(limits.account_per_second, limits.account_burst),
            check_limit: Limiter::new(limits.ip_per_second, limits.ip_burst),
            external_lint: None,
            config,
        })
    }

    /// The same state with `linter` as the external linter.
    pub fn with_external_lint(mut self, linter: Option<ExternalLinter>) -> AppState {
        self.external_lint = linter;
        self
    }
}
