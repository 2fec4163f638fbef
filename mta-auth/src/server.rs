//! Starting the service: open storage, bind, serve until told to stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use mailid_shared::db::OpenMode;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::authz::Authenticator;
use crate::client_crl::{self, ClientAuth, CrlSource};
use crate::config::Config;
use crate::identity::crl::CrlChecker;
use crate::metrics::Metrics;
use crate::store::{Location, Store};

/// TLS files for HTTPS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA certificates client certificates must chain to.
    pub client_ca: Option<PathBuf>,
    /// CRLs of those CAs (files or URLs), re-read while serving.
    pub client_crls: Vec<CrlSource>,
}

/// What `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub data_dir: PathBuf,
    /// Where the rows are (see [`Config::location`]).
    pub location: Location,
    /// The configuration (from `config.json`, with flags applied).
    pub config: Config,
    /// Address to bind; `config.listen` when `None`.
    pub listen: Option<String>,
    pub tls: Option<TlsFiles>,
    /// Allow plain HTTP on a non-loopback address.
    pub insecure_http: bool,
}

/// A running server.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// Whether it serves HTTPS.
    pub https: bool,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops accepting connections and waits for the server task.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await?
    }

    /// Waits until the server task ends (on its own or after `stop`).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await?
    }
}

/// Opens (and migrates) the store at `location` off the async threads;
/// only `init` passes [`OpenMode::Create`], every other command fails on a
/// missing database. Errors name the path or the URL without its password.
pub async fn open_store(location: &Location, mode: OpenMode) -> anyhow::Result<Store> {
    let loc = location.clone();
    let opened = tokio::task::spawn_blocking(move || Store::open_at(&loc, mode)).await?;
    opened.with_context(|| match location {
        Location::Sqlite(path) => format!("opening {}", path.display()),
        Location::Postgres(url) => format!("opening database {url}"),
    })
}

/// Binds and starts serving in the background; returns once the socket is
/// bound.
pub async fn start(opts: ServeOptions) -> anyhow::Result<Running> {
    opts.config.check()?;
    let store = open_store(&opts.location, OpenMode::Existing).await?;
    let mut client_auth = None;
    let tls = match &opts.tls {
        Some(TlsFiles {
            cert,
            key,
            client_ca: Some(ca),
            client_crls,
        }) => {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let auth = Arc::new(ClientAuth::load(ca, client_crls.clone(), provider.clone()).await?);
            client_auth = Some(auth.clone());
            Some(client_crl::tls_config(cert, key, auth, provider)?)
        }
        Some(t) => {
            if !t.client_crls.is_empty() {
                anyhow::bail!("--client-crl needs --client-ca");
            }
            Some(mailid_shared::http::tls_config(&t.cert, &t.key, None)?)
        }
        None => None,
    };
    let listen = opts
        .listen
        .clone()
        .unwrap_or_else(|| opts.config.listen.clone());
    let listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    if tls.is_none() && !addr.ip().is_loopback() && !opts.insecure_http {
        anyhow::bail!(
            "refusing plain HTTP on non-loopback address {addr}: give --tls-cert and --tls-key (or --insecure-http)"
        );
    }
    let keys =
        crate::idlog::setup(&opts.data_dir, &store, opts.config.log_origin.as_deref()).await?;
    let idlog = crate::idlog::IdLog::new(keys);
    let sequencer = tokio::spawn(idlog.clone().run(store.clone()));
    let auth = Authenticator::new(store.clone(), opts.config.login_limits, client_auth.clone());
    let refresher = client_auth.filter(|a| a.has_crls()).map(|a| {
        let every = std::time::Duration::from_secs(opts.config.client_crl_refresh_secs);
        tokio::spawn(a.refresh_forever(every))
    });
    let state = Arc::new(AppState {
        crls: CrlChecker::new(
            store.clone(),
            std::time::Duration::from_secs(opts.config.crl_recheck_secs),
        )?,
        store,
        config: opts.config.clone(),
        auth,
        metrics: Arc::new(Metrics::default()),
        health: Default::default(),
        idlog,
    });
    let router = api::router(state);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let https = tls.is_some();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            tokio::select! {
                _ = stop_rx => {},
                _ = mailid_shared::http::shutdown_signal() => {},
            }
        };
        let served = mailid_shared::http::serve(listener, router, tls, shutdown).await;
        if let Some(r) = refresher {
            r.abort();
        }
        sequencer.abort();
        served
    });
    Ok(Running {
        addr,
        https,
        stop: Some(stop_tx),
        task,
    })
}
