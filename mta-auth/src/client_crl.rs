//! Revocation of TLS client certificates: the CRLs given with
//! `serve --client-crl FILE|URL`, checked in every handshake by a rustls
//! verifier that is rebuilt and swapped in whenever they are re-read, so a
//! revoked client certificate (a lost laptop) stops logging in without a
//! restart.
//!
//! * At start every source must load and verify with a `--client-ca`
//!   certificate, or `serve` stops.
//! * Every refresh interval each source is read (file) or fetched (URL)
//!   again. A source that fails, does not verify, or is older than the one
//!   held (lower CRL number, or earlier thisUpdate) keeps its last good CRL
//!   and the failure is logged.
//! * A certificate whose issuer has none of the CRLs is refused (rustls'
//!   default for unknown revocation status); only the end-entity
//!   certificate is checked.
//! * Besides the handshake, [`ClientAuth::is_revoked`] lets a login on a
//!   connection opened before the revocation be refused too.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use der::{Decode, Encode};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use x509_cert::Certificate;

use crate::identity::crl::{
    cmp_magnitude, crl_number, holds_serial, revoked_serials, verify_crl, FETCH_TIMEOUT,
    MAX_CRL_BYTES,
};

/// Where a CRL comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrlSource {
    File(PathBuf),
    Url(String),
}

impl CrlSource {
    /// `http://…` and `https://…` are URLs; anything else is a file path.
    pub fn parse(text: &str) -> CrlSource {
        if text.starts_with("http://") || text.starts_with("https://") {
            CrlSource::Url(text.to_string())
        } else {
            CrlSource::File(PathBuf::from(text))
        }
    }
}

impl std::fmt::Display for CrlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CrlSource::File(p) => write!(f, "{}", p.display()),
            CrlSource::Url(u) => f.write_str(u),
        }
    }
}

/// A CRL that verified with one of the client CAs.
struct Loaded {
    der: Vec<u8>,
    /// DER of the issuer name.
    issuer: Vec<u8>,
    this_update: i64,
    number: Option<Vec<u8>>,
    /// Serial numbers listed, as magnitudes.
    revoked: HashSet<Vec<u8>>,
}

impl Loaded {
    /// Whether `self` may replace `old` (same rule as the upload CRL cache).
    fn not_older_than(&self, old: &Loaded) -> bool {
        match (&self.number, &old.number) {
            (Some(n), Some(o)) => cmp_magnitude(n, o).is_ge(),
            _ => self.this_update >= old.this_update,
        }
    }
}

/// The verifier in use and the CRLs it was built from (one per source).
struct Current {
    verifier: Arc<dyn ClientCertVerifier>,
    crls: Vec<Arc<Loaded>>,
}

/// TLS client-certificate authentication with refreshable CRLs.
pub struct ClientAuth {
    roots: Arc<RootCertStore>,
    cas: Vec<Certificate>,
    provider: Arc<CryptoProvider>,
    sources: Vec<CrlSource>,
    http: reqwest::Client,
    current: RwLock<Current>,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl ClientAuth {
    /// Trusts the certificates in `client_ca` and loads every CRL source;
    /// any failure is an error (`serve` stops).
    pub async fn load(
        client_ca: &Path,
        sources: Vec<CrlSource>,
        provider: Arc<CryptoProvider>,
    ) -> anyhow::Result<ClientAuth> {
        let mut roots = RootCertStore::empty();
        let mut cas = Vec::new();
        for c in mailid_shared::http::load_certs(client_ca)? {
            cas.push(
                Certificate::from_der(c.as_ref())
                    .with_context(|| format!("reading {}", client_ca.display()))?,
            );
            roots.add(c)?;
        }
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let mut auth = ClientAuth {
            roots: Arc::new(roots),
            cas,
            provider,
            sources,
            http,
            current: RwLock::new(Current {
                verifier: WebPkiClientVerifier::no_client_auth(),
                crls: Vec::new(),
            }),
        };
        let mut crls = Vec::new();
        for s in &auth.sources {
            crls.push(Arc::new(auth.read(s).await.map_err(anyhow::Error::msg)?));
        }
        let verifier = auth.build(&crls)?;
        auth.current = RwLock::new(Current { verifier, crls });
        Ok(auth)
    }

    /// Whether any CRL source was given.
    pub fn has_crls(&self) -> bool {
        !self.sources.is_empty()
    }

    fn build(&self, crls: &[Arc<Loaded>]) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
        let ders = crls
            .iter()
            .map(|c| CertificateRevocationListDer::from(c.der.clone()));
        WebPkiClientVerifier::builder_with_provider(self.roots.clone(), self.provider.clone())
            .with_crls(ders)
            .only_check_end_entity_revocation()
            .allow_unauthenticated()
            .build()
            .context("building the client-certificate verifier")
    }

    async fn bytes(&self, source: &CrlSource) -> Result<Vec<u8>, String> {
        match source {
            CrlSource::File(p) => {
                let meta = std::fs::metadata(p).map_err(|e| format!("reading {source}: {e}"))?;
                if meta.len() > MAX_CRL_BYTES as u64 {
                    return Err(format!("CRL {source} is too large"));
                }
                std::fs::read(p).map_err(|e| format!("reading {source}: {e}"))
            }
            CrlSource::Url(u) => {
                let mut resp = self
                    .http
                    .get(u)
                    .send()
                    .await
                    .map_err(|e| format!("fetching {u}: {e}"))?;
                if !resp.status().is_success() {
                    return Err(format!("fetching {u}: HTTP {}", resp.status()));
                }
                let mut body = Vec::new();
                while let Some(chunk) = resp
                    .chunk()
                    .await
                    .map_err(|e| format!("reading {u}: {e}"))?
                {
                    if body.len() + chunk.len() > MAX_CRL_BYTES {
                        return Err(format!("CRL at {u} is too large"));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            }
        }
    }

    /// Reads one source (PEM or DER) and verifies it with a client CA.
    async fn read(&self, source: &CrlSource) -> Result<Loaded, String> {
        let body = self.bytes(source).await?;
        let der = if body.starts_with(b"-----BEGIN") {
            mailid_shared::pem::decode_one(&String::from_utf8_lossy(&body), &["X509 CRL"])
                .map_err(|e| format!("CRL {source}: {e}"))?
        } else {
            body
        };
        let mut why = String::from("no --client-ca certificate");
        for ca in &self.cas {
            match verify_crl(&der, ca) {
                Ok(v) => {
                    let list = &v.list.tbs_cert_list;
                    return Ok(Loaded {
                        issuer: list.issuer.to_der().unwrap_or_default(),
                        this_update: v.row.this_update,
                        number: crl_number(&v.list),
                        revoked: revoked_serials(&v.list),
                        der,
                    });
                }
                Err(e) => why = e,
            }
        }
        Err(format!(
            "CRL {source} is not a CRL issued by a --client-ca certificate ({why})"
        ))
    }

    /// Reads every source again; a source that fails keeps its last good
    /// CRL. Swaps in a new verifier when anything changed.
    pub async fn refresh(&self) {
        let held: Vec<Arc<Loaded>> = self.current.read().expect("lock").crls.clone();
        let mut next = held.clone();
        let mut changed = false;
        for (i, source) in self.sources.iter().enumerate() {
            match self.read(source).await {
                Ok(fresh) => {
                    let old = &held[i];
                    if fresh.der == old.der {
                        continue;
                    }
                    if !fresh.not_older_than(old) {
                        tracing::warn!(%source, "client CRL is older than the one held; keeping the last good CRL");
                        continue;
                    }
                    tracing::info!(%source, revoked = fresh.revoked.len(), "client CRL updated");
                    next[i] = Arc::new(fresh);
                    changed = true;
                }
                Err(e) => {
                    tracing::warn!(%source, error = %e, "client CRL refresh failed; keeping the last good CRL")
                }
            }
        }
        if !changed {
            return;
        }
        match self.build(&next) {
            Ok(verifier) => {
                *self.current.write().expect("lock") = Current {
                    verifier,
                    crls: next,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "client CRLs refused; keeping the last good ones")
            }
        }
    }

    /// Refreshes every `every` until the task is aborted.
    pub async fn refresh_forever(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            self.refresh().await;
        }
    }

    /// Whether a held CRL lists the certificate (DER): a connection opened
    /// before its revocation must not keep logging in.
    pub fn is_revoked(&self, der: &[u8]) -> bool {
        let Ok(cert) = Certificate::from_der(der) else {
            return true;
        };
        let issuer = cert.tbs_certificate.issuer.to_der().unwrap_or_default();
        let cur = self.current.read().expect("lock");
        cur.crls
            .iter()
            .any(|c| c.issuer == issuer && holds_serial(&c.revoked, &cert))
    }

    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.current.read().expect("lock").verifier.clone()
    }
}

/// The rustls verifier: delegates to the verifier built from the CRLs held
/// now, so a refresh takes effect for the next handshake.
#[derive(Debug)]
pub struct SwappableVerifier {
    auth: Arc<ClientAuth>,
    /// The CA names hinted to clients (the roots do not change).
    hints: Vec<DistinguishedName>,
}

impl SwappableVerifier {
    pub fn new(auth: Arc<ClientAuth>) -> SwappableVerifier {
        let hints = auth.verifier().root_hint_subjects().to_vec();
        SwappableVerifier { auth, hints }
    }
}

impl ClientCertVerifier for SwappableVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.auth
            .verifier()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.auth
            .verifier()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.auth
            .verifier()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.auth.verifier().supported_verify_schemes()
    }
}

/// The HTTPS server configuration with client certificates checked by
/// `auth` (as `mailid_shared::http::tls_config`, with a swappable verifier).
pub fn tls_config(
    cert: &Path,
    key: &Path,
    auth: Arc<ClientAuth>,
    provider: Arc<CryptoProvider>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = mailid_shared::http::load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("reading TLS key {}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(SwappableVerifier::new(auth)))
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
