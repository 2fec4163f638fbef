//! `mailid-ca serve`: loads the CA, starts the CRL publisher and serves.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::config::{Config, Paths};
use crate::metrics::Metrics;
use crate::publisher::Publisher;
use crate::state::AppState;

/// `serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on (a socket address: a bad one is a
    /// usage error).
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub listen: std::net::SocketAddr,
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// An external linter (a pkilint REST server's base URL): every
    /// identity certificate is also checked there, on a copy signed with a
    /// throwaway key, before the code goes to the MTA; a finding at WARNING
    /// or above, or no answer, refuses the enrollment (fail-closed).
    #[arg(long, value_name = "URL")]
    pub lint_url: Option<String>,
    /// How long the external linter may take per certificate.
    #[arg(long, value_name = "SECS", default_value_t = 5, requires = "lint_url")]
    pub lint_timeout_secs: u64,
}

/// Runs the service until SIGINT or SIGTERM, on the database `database`
/// (a URL from `--database`/`MAILID_DATABASE`) or else the one the data
/// directory's configuration names.
pub fn run(
    dir: &Path,
    database: Option<&str>,
    pass_file: Option<&Path>,
    args: &ServeArgs,
) -> anyhow::Result<()> {
    mailid_shared::logging::init();
    let cfg = Config::load(dir)?;
    // Refuses to start without the right passphrase for an encrypted key.
    let issuer = Arc::new(crate::ops::load_issuer(dir, &cfg, pass_file)?);
    // The key's type and, for a token, its URI (never the PIN).
    let key = format!("{:?}", issuer.signer().key());
    let (store, shown) = crate::ops::open_store_named(dir, database)?;
    let external_lint = match &args.lint_url {
        Some(url) => Some(
            crate::lint::external::ExternalLinter::new(
                url,
                std::time::Duration::from_secs(args.lint_timeout_secs.max(1)),
            )
            .with_context(|| format!("--lint-url {url}"))?,
        ),
        None => None,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(mailid_shared::http::tls_config(c, k, None)?),
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let metrics = Arc::new(Metrics {
            lint_findings: issuer.lint_findings(),
            ..Metrics::default()
        });
        let paths = Paths::new(dir);
        let hours = cfg.crl_next_update_hours;
        let crl = Publisher::start(store.clone(), issuer.clone(), metrics.clone(), paths.crl, hours)
            .await?;
        tokio::spawn(crl.clone().run());
        let publisher = crl.clone();
        let state =
            Arc::new(AppState::new(cfg, store, issuer, crl, metrics)?.with_external_lint(external_lint));
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        if tls.is_none() && !addr.ip().is_loopback() {
            // CRLs and the CA certificate are meant for plain http (the URLs
            // in certificates are http), but enrollments carry codes.
            tracing::warn!(%addr, "serving plain HTTP on a non-loopback address: put TLS (--tls-cert/--tls-key or a proxy) in front of /v1/certificates and /v1/revocations");
        }
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {scheme}://{addr}")?;
            out.flush()?;
        }
        tracing::info!(%addr, database = %shown, %key, "mailid-ca serving");
        mailid_shared::http::serve(
            listener,
            crate::api::router(state),
            tls,
            mailid_shared::http::shutdown_signal(),
        )
        .await?;
        publisher.release().await;
        tracing::info!("shut down");
        Ok(())
    })
}
