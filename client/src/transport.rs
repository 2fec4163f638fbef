//! HTTP to the two services: endpoints, TLS options, authentication, and
//! turning every failure into one clear [`Error`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mailid_shared::{Address, ProblemDocument};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::error::{io_reason, Error, Result, Service};

/// Largest answer body the client reads (certificates and chains are small).
const MAX_BODY: usize = 1 << 20;

/// A service's base URL, checked: `https`, or plain `http` on loopback only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Which service this is.
    pub service: Service,
    base: Url,
}

impl Endpoint {
    /// Parses and checks a base URL such as `https://mta.example.com` or
    /// `http://127.0.0.1:7701`.
    pub fn parse(service: Service, text: &str) -> Result<Self> {
        let url = Url::parse(text.trim())
            .map_err(|e| Error::Invalid(format!("the {service} URL '{text}' is not valid: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" => {
                if !is_loopback(&url) {
                    return Err(Error::Invalid(format!(
                        "refusing plain http to the {service} at {text}: plain http is for \
                         loopback only, use https"
                    )));
                }
            }
            other => {
                return Err(Error::Invalid(format!(
                    "the {service} URL '{text}' must be http or https, not {other}"
                )))
            }
        }
        if url.host().is_none() || url.query().is_some() || url.fragment().is_some() {
            return Err(Error::Invalid(format!(
                "the {service} URL '{text}' must be a base URL such as https://host:port"
            )));
        }
        Ok(Endpoint { service, base: url })
    }

    /// The base URL as text, without a trailing slash.
    pub fn base(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    /// The full URL of an API path such as `/v1/totp`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base(), path)
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// A TLS client certificate and its key, both PEM files.
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// The certificate (chain) file.
    pub cert: PathBuf,
    /// The PKCS#8, SEC1 or PKCS#1 key file.
    pub key: PathBuf,
}

/// How the client talks TLS.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Trust only these roots (PEM bundle) instead of the system's.
    pub ca_bundle: Option<PathBuf>,
    /// Present this certificate when a server asks for one.
    pub client_cert: Option<ClientCert>,
}

/// How the account holder authenticates to the MTA.
#[derive(Clone)]
pub enum Credentials {
    /// HTTP Basic with the account's password.
    Password(Zeroizing<String>),
    /// The TLS client certificate configured in [`TlsOptions`].
    ClientCertificate,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Password(_) => f.write_str("Password(<hidden>)"),
            Credentials::ClientCertificate => f.write_str("ClientCertificate"),
        }
    }
}

/// Who a request is made as.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    /// Nobody.
    Anonymous,
    /// The account holder.
    Holder(&'a Address, &'a Credentials),
}

/// One HTTP client for both services.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    mailid_shared::input::read_file(path).map_err(|e| Error::io(path, &e))
}

impl Http {
    /// Builds the client: system roots, or only `ca_bundle` when given, and
    /// the client certificate when given.
    pub fn new(tls: &TlsOptions) -> Result<Self> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            // mailid's services close a connection idle for 10 s; one kept
            // longer (across a passphrase prompt) could be reused as it
            // closes, losing the request.
            .pool_idle_timeout(Duration::from_secs(5))
            .user_agent(concat!("mailid/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &tls.ca_bundle {
            let pem = read_file(path)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|_| Error::file(path, "not a PEM certificate bundle"))?;
            if certs.is_empty() {
                return Err(Error::file(path, "holds no certificate"));
            }
            b = b.tls_certs_only(certs);
        }
        if let Some(cc) = &tls.client_cert {
            let mut pem = read_file(&cc.cert)?;
            pem.push(b'\n');
            pem.extend_from_slice(&Zeroizing::new(read_file(&cc.key)?));
            let pem = Zeroizing::new(pem);
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|_| Error::file(&cc.key, "client certificate or key is not usable PEM"))?;
            b = b.identity(id);
        }
        let client = b
            .build()
            .map_err(|e| Error::Invalid(format!("cannot set up HTTPS: {}", innermost(&e))))?;
        Ok(Http { client })
    }

    /// Sends a JSON request and decodes a JSON answer. `what` names the
    /// request for error messages ("the enrollment of alice@example.com").
    pub async fn json<B: Serialize, T: DeserializeOwned>(
        &self,
        ep: &Endpoint,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<&B>,
        what: &str,
    ) -> Result<T> {
        let bytes = self.request(ep, method, path, auth, body, what).await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::BadAnswer {
            service: ep.service,
            url: ep.url(path),
            detail: e.to_string(),
        })
    }

    /// Sends a request and returns the body of a 2xx answer.
    pub async fn request<B: Serialize>(
        &self,
        ep: &Endpoint,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<&B>,
        what: &str,
    ) -> Result<Vec<u8>> {
        let url = ep.url(path);
        let mut req = self
            .client
            .request(method, &url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Auth::Holder(account, Credentials::Password(pw)) = auth {
            req = req.basic_auth(account.as_str(), Some(pw.as_str()));
        }
        let unreachable = |e: reqwest::Error| Error::Unreachable {
            service: ep.service,
            url: ep.base(),
            cause: describe(&e),
        };
        let mut resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(Error::BadAnswer {
                    service: ep.service,
                    url,
                    detail: "the answer is too large".into(),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return Ok(bytes);
        }
        Err(refusal(ep.service, status, &bytes, auth, what))
    }
}

fn refusal(service: Service, status: StatusCode, body: &[u8], auth: Auth<'_>, what: &str) -> Error {
    let doc: Option<ProblemDocument> = serde_json::from_slice(body).ok();
    let code = doc
        .as_ref()
        .and_then(|d| d.code().map(|c| c.as_str().to_string()))
        .or_else(|| status.canonical_reason().map(|r| r.to_ascii_lowercase()));
    let mut detail = doc.map(|d| d.detail).unwrap_or_default();
    detail.retain(|c| !c.is_control());
    let what = match (status, auth) {
        (StatusCode::UNAUTHORIZED, Auth::Holder(account, Credentials::Password(_))) => {
            detail.clear();
            format!("the password for {account}")
        }
        (StatusCode::UNAUTHORIZED, Auth::Holder(account, Credentials::ClientCertificate)) => {
            detail.clear();
            format!("the client certificate for {account}")
        }
        _ => what.to_string(),
    };
    Error::Refused {
        service,
        what,
        status: status.as_u16(),
        code,
        detail,
    }
}

/// A transport error as short text: "connection refused", "timed out", or
/// the innermost cause.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::TimedOut => "timed out".into(),
                std::io::ErrorKind::ConnectionReset => "connection reset".into(),
                _ => io_reason(io),
            };
        }
        src = s.source();
    }
    innermost(e)
}

fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        last = s.to_string();
        src = s.source();
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_allow_https_and_loopback_http_only() {
        assert!(Endpoint::parse(Service::Ca, "https://ca.example.com").is_ok());
        assert!(Endpoint::parse(Service::Ca, "http://127.0.0.1:7700").is_ok());
        assert!(Endpoint::parse(Service::Ca, "http://localhost:7700/").is_ok());
        assert!(Endpoint::parse(Service::Ca, "http://[::1]:7700").is_ok());
        let e = Endpoint::parse(Service::Mta, "http://mta.example.com").unwrap_err();
        assert!(e.to_string().contains("loopback only"), "{e}");
        assert!(Endpoint::parse(Service::Mta, "ftp://127.0.0.1").is_err());
        assert!(Endpoint::parse(Service::Mta, "not a url").is_err());
        let ep = Endpoint::parse(Service::Ca, "http://127.0.0.1:7700/").unwrap();
        assert_eq!(ep.url("/v1/ca.pem"), "http://127.0.0.1:7700/v1/ca.pem");
    }

    #[test]
    fn problem_documents_become_refusals() {
        let body = br#"{"type":"urn:mailid:error:totp-rejected","title":"TOTP code rejected","status":403,"detail":"code replayed"}"#;
        let e = refusal(
            Service::Ca,
            StatusCode::FORBIDDEN,
            body,
            Auth::Anonymous,
            "the enrollment",
        );
        assert_eq!(e.problem_code(), Some("totp-rejected"));
        assert_eq!(
            e.to_string(),
            "CA refused the enrollment: code replayed (403 totp-rejected)"
        );
        let e = refusal(
            Service::Mta,
            StatusCode::BAD_GATEWAY,
            b"<html>",
            Auth::Anonymous,
            "the lookup",
        );
        assert_eq!(e.to_string(), "MTA refused the lookup (502 bad gateway)");
    }
}
