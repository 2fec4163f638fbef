//! RFC 9457 problem documents with the error codes of the mailid contract,
//! and (with the `server` feature) the axum glue that makes every error
//! answer one of them. The types are the client's too: it reads the
//! documents the services send.

use std::fmt;

#[cfg(feature = "server")]
use axum::extract::rejection::JsonRejection;
#[cfg(feature = "server")]
use axum::extract::{FromRequest, Request};
#[cfg(feature = "server")]
use axum::http::{header, HeaderValue, StatusCode};
#[cfg(feature = "server")]
use axum::response::{IntoResponse, Response};
#[cfg(feature = "server")]
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Media type of every error answer.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";
/// Prefix of every problem `type`.
pub const TYPE_PREFIX: &str = "urn:mailid:error:";

/// The error codes of SPEC §3, each with its fixed HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    BadRequest,
    BadCsr,
    UnsupportedKey,
    UnknownDomain,
    Unauthorized,
    TotpRejected,
    Locked,
    RateLimited,
    NotFound,
    Conflict,
    PayloadTooLarge,
    MtaUnavailable,
    /// A dependency of the service itself (its database, its signing
    /// token) is unreachable; retry after `Retry-After`.
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// Every code, for tests and documentation.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::BadRequest,
        ErrorCode::BadCsr,
        ErrorCode::UnsupportedKey,
        ErrorCode::UnknownDomain,
        ErrorCode::Unauthorized,
        ErrorCode::TotpRejected,
        ErrorCode::Locked,
        ErrorCode::RateLimited,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::MtaUnavailable,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The code as it appears after `urn:mailid:error:`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad-request",
            ErrorCode::BadCsr => "bad-csr",
            ErrorCode::UnsupportedKey => "unsupported-key",
            ErrorCode::UnknownDomain => "unknown-domain",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TotpRejected => "totp-rejected",
            ErrorCode::Locked => "locked",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::NotFound => "not-found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload-too-large",
            ErrorCode::MtaUnavailable => "mta-unavailable",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status the contract gives this code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::BadCsr
            | ErrorCode::UnsupportedKey
            | ErrorCode::UnknownDomain => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::TotpRejected | ErrorCode::Locked => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::MtaUnavailable | ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    /// A short human title.
    pub fn title(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "Bad request",
            ErrorCode::BadCsr => "Bad certificate signing request",
            ErrorCode::UnsupportedKey => "Unsupported key",
            ErrorCode::UnknownDomain => "Unknown domain",
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::TotpRejected => "TOTP code rejected",
            ErrorCode::Locked => "Account locked",
            ErrorCode::RateLimited => "Rate limited",
            ErrorCode::NotFound => "Not found",
            ErrorCode::Conflict => "Conflict",
            ErrorCode::PayloadTooLarge => "Payload too large",
            ErrorCode::MtaUnavailable => "MTA auth service unavailable",
            ErrorCode::Unavailable => "Service unavailable",
            ErrorCode::Internal => "Internal error",
        }
    }

    /// The full `type` URN.
    pub fn type_uri(self) -> String {
        format!("{TYPE_PREFIX}{}", self.as_str())
    }

    /// Parses a `type` URN back into a code.
    pub fn from_type_uri(uri: &str) -> Option<ErrorCode> {
        let code = uri.strip_prefix(TYPE_PREFIX)?;
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// The code a framework status maps to, for errors no handler made.
    pub fn for_status(status: u16) -> ErrorCode {
        match status {
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::TotpRejected,
            404 | 405 => ErrorCode::NotFound,
            409 => ErrorCode::Conflict,
            413 => ErrorCode::PayloadTooLarge,
            429 => ErrorCode::RateLimited,
            503 => ErrorCode::MtaUnavailable,
            400..=499 => ErrorCode::BadRequest,
            _ => ErrorCode::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of a problem document, as sent and as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemDocument {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    #[serde(default)]
    pub detail: String,
}

impl ProblemDocument {
    /// The error code, when the type is one of ours.
    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::from_type_uri(&self.type_uri)
    }
}

/// An error answer: a code, a detail for the client and optional headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub code: ErrorCode,
    pub detail: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem with a detail for the client. For 5xx codes the detail is
    /// replaced by a generic text so no internal detail leaks.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Problem {
            code,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// Adds a `Retry-After` header.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, detail)
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, detail)
    }

    /// An internal error: the cause is logged, the client sees nothing of it.
    pub fn internal(cause: impl fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }

    /// The document this problem is sent as.
    pub fn document(&self) -> ProblemDocument {
        let detail = match self.code {
            ErrorCode::Internal => "The server could not complete the request.".to_string(),
            _ => self.detail.clone(),
        };
        ProblemDocument {
            type_uri: self.code.type_uri(),
            title: self.code.title().to_string(),
            status: self.code.status(),
            detail,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl std::error::Error for Problem {}

#[cfg(feature = "server")]
impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.document()).unwrap_or_default();
        let mut resp = (status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.code == ErrorCode::Unauthorized {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"mailid\", charset=\"UTF-8\""),
            );
        }
        resp
    }
}

/// A JSON body extractor whose every rejection is a problem document
/// (`bad-request`, or `payload-too-large` over the body limit).
#[cfg(feature = "server")]
pub struct ApiJson<T>(pub T);

#[cfg(feature = "server")]
impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

#[cfg(feature = "server")]
fn json_rejection(rejection: JsonRejection) -> Problem {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return Problem::new(ErrorCode::PayloadTooLarge, "request body is too large");
    }
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            Problem::bad_request("Content-Type must be application/json")
        }
        JsonRejection::JsonSyntaxError(e) => {
            Problem::bad_request(format!("body is not valid JSON: {}", e.body_text()))
        }
        JsonRejection::JsonDataError(e) => Problem::bad_request(format!(
            "body does not match the request: {}",
            e.body_text()
        )),
        other => Problem::bad_request(format!("could not read body: {}", other.body_text())),
    }
}

/// Fallback for unknown routes and methods.
#[cfg(feature = "server")]
pub async fn not_found_fallback(req: Request) -> Problem {
    Problem::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

/// Middleware body: turns any error answer that is not yet a problem
/// document (from a framework layer, a timeout or a caught panic) into one.
#[cfg(feature = "server")]
pub async fn ensure_problem(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.as_bytes().starts_with(PROBLEM_CONTENT_TYPE.as_bytes()))
        .unwrap_or(false);
    if is_problem {
        return resp;
    }
    let code = ErrorCode::for_status(status.as_u16());
    let detail = status.canonical_reason().unwrap_or("error").to_string();
    let mut out = Problem::new(code, detail).into_response();
    // Keep the framework's own status when it is the one the code has.
    if code.status() == status.as_u16() {
        *out.status_mut() = status;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_map_to_statuses() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_type_uri(&code.type_uri()), Some(code));
            let doc = Problem::new(code, "x").document();
            assert_eq!(doc.status, code.status());
            assert_eq!(doc.code(), Some(code));
        }
        assert_eq!(ErrorCode::BadCsr.status(), 400);
        assert_eq!(ErrorCode::Locked.status(), 403);
        assert_eq!(ErrorCode::MtaUnavailable.status(), 503);
    }

    #[test]
    fn internal_detail_is_hidden() {
        let doc = Problem::new(ErrorCode::Internal, "db file /secret/x failed").document();
        assert!(!doc.detail.contains("secret"));
    }
}
