//! HTTP serving shared by both services: plain HTTP or HTTPS (rustls) with
//! optional client certificates, bounded bodies, header and request
//! timeouts, a connection cap, and problem documents for every error.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::middleware::map_response;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

use crate::problem::{ensure_problem, not_found_fallback, ErrorCode, Problem};

/// Largest request body accepted (64 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A body declared larger than [`MAX_BODY_BYTES`] but at most this is read
/// and thrown away before the 413 answer, so the client reads the answer
/// instead of a connection reset (closing a socket with unread data resets
/// it). Larger declared bodies are refused at once.
pub const DRAIN_MAX_BYTES: u64 = 4 * 1024 * 1024;
/// Time allowed for reading and dropping an oversized body.
const DRAIN_TIME: Duration = Duration::from_secs(5);
/// Time allowed to send the request head; also how long a keep-alive
/// connection may sit idle before the server closes it (hyper starts the
/// head's timer as soon as the previous answer is sent). A client that
/// keeps idle connections longer races that close and may lose a request
/// it already sent; ours drop them after half of this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a whole request, head to answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for a TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections served at once; further ones wait in the accept queue.
pub const MAX_CONNECTIONS: usize = 8192;

/// The DER of the TLS client certificate the peer presented, if any; put in
/// every request's extensions.
#[derive(Clone, Debug, Default)]
pub struct PeerCertificate(pub Option<Arc<Vec<u8>>>);

/// The peer's socket address; put in every request's extensions.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// Adds the layers every mailid API has: the body limit, a request timeout,
/// panic catching, problem documents for framework errors and for unknown
/// routes or methods.
pub fn harden(router: Router) -> Router {
    router
        .fallback(not_found_fallback)
        .method_not_allowed_fallback(not_found_fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(map_response(ensure_problem))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(CatchPanicLayer::new())
        .layer(map_response(ensure_problem))
        .layer(axum::middleware::from_fn(refuse_declared_oversize))
}

/// Answers 413 to a request whose Content-Length is over the body limit,
/// after draining a moderately sized body (see [`DRAIN_MAX_BYTES`]). Bodies
/// without a length are cut off by the body limit inside.
async fn refuse_declared_oversize(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(len) = declared.filter(|&n| n > MAX_BODY_BYTES as u64) else {
        return next.run(req).await;
    };
    if len <= DRAIN_MAX_BYTES {
        let mut body = req.into_body();
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            use axum::body::HttpBody;
            while let Some(Ok(_)) =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
            {
            }
        })
        .await;
    }
    Problem::new(
        ErrorCode::PayloadTooLarge,
        format!("request body is larger than {MAX_BODY_BYTES} bytes"),
    )
    .into_response()
}

/// Reads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?
        .collect();
    let certs = certs.map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", path.display());
    }
    Ok(certs)
}

/// Builds a rustls server configuration. With `client_ca`, clients may
/// present a certificate chaining to it (clientAuth EKU required by rustls);
/// clients without one are still accepted and authenticate otherwise.
pub fn tls_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("reading TLS key {}: {e}", key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in load_certs(ca)? {
                roots.add(c)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let acceptor = tls.map(TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            p = permits.clone().acquire_owned() => p?,
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match acceptor {
                None => serve_conn(stream, router, peer, PeerCertificate(None)).await,
                Some(acc) => {
                    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acc.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| Arc::new(c.as_ref().to_vec()));
                    serve_conn(tls, router, peer, PeerCertificate(cert)).await
                }
            }
        });
    }
}

async fn serve_conn<S>(stream: S, router: Router, peer: SocketAddr, cert: PeerCertificate)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = router.map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(PeerAddr(peer));
        req.extensions_mut().insert(cert.clone());
        req
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024);
    let io = TokioIo::new(crate::wire::ProblemOnParseError::new(stream));
    let conn = builder.serve_connection(io, TowerToHyperService::new(svc));
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, %peer, "connection ended with error");
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
