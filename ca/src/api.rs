//! HTTP front end: routing, lookups, the CA certificate, the CRL, health
//! and metrics. The handlers of enrollment, its preflight and holder
//! revocation are in [`crate::enroll`], their decisions in
//! [`crate::authority`].

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use mailid_shared::problem::Problem;
use mailid_shared::protocol::{AccountInfo, CertStatus, CertificateInfo};
use mailid_shared::timefmt::now_unix;
use mailid_shared::{Address, Serial};

use crate::state::{AppState, Shared};

/// Most certificates listed for one account.
pub const ACCOUNT_LIST_LIMIT: u32 = 1000;

/// The CA's router with every route of SPEC §5, hardened.
pub fn router(state: Shared) -> Router {
    let hist = state.metrics.requests.clone();
    let r = Router::new()
        .route("/v1/certificates", post(crate::enroll::enroll))
        .route("/v1/certificates/check", post(crate::enroll::check))
        .route("/v1/revocations", post(crate::enroll::revoke))
        .route("/v1/certificates/{serial}", get(certificate))
        .route("/v1/accounts/{address}", get(account))
        .route("/v1/crl.der", get(crl_der))
        .route("/v1/crl.pem", get(crl_pem))
        .route("/v1/ca.der", get(ca_der))
        .route("/v1/ca.pem", get(ca_pem))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state);
    mailid_shared::http::harden(r).layer(axum::middleware::from_fn(move |req, next| {
        mailid_shared::metrics::track_latency(hist.clone(), req, next)
    }))
}

/// "ok" while the database answers (a ping reused for up to a second),
/// else 503 `unavailable`.
async fn healthz(State(st): State<Shared>) -> Result<&'static str, Problem> {
    st.store.ping().await?;
    Ok("ok")
}

async fn certificate(
    State(st): State<Shared>,
    Path(serial): Path<String>,
) -> Result<Json<CertificateInfo>, Problem> {
    let serial: Serial = serial
        .parse()
        .map_err(|e| Problem::bad_request(format!("bad serial: {e}")))?;
    let row = st
        .store
        .get(&serial)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no certificate with serial {serial}")))?;
    Ok(Json(row.info(now_unix())))
}

async fn account(
    State(st): State<Shared>,
    Path(address): Path<String>,
) -> Result<Json<AccountInfo>, Problem> {
    let account =
        Address::parse(&address).map_err(|e| Problem::bad_request(format!("bad address: {e}")))?;
    let rows = st.store.by_account(&account, ACCOUNT_LIST_LIMIT).await?;
    let now = now_unix();
    let certificates: Vec<CertificateInfo> = rows.iter().map(|r| r.info(now)).collect();
    let current = certificates
        .iter()
        .find(|c| c.status == CertStatus::Valid)
        .map(|c| c.serial.clone());
    Ok(Json(AccountInfo {
        account,
        current,
        certificates,
    }))
}

fn crl_response(st: &AppState, headers: &HeaderMap, pem: bool) -> Response {
    let snap = st.crl.current();
    let etag = if pem {
        snap.etag_pem()
    } else {
        snap.etag.clone()
    };
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&snap.last_modified) {
        h.insert(header::LAST_MODIFIED, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, no-cache"),
    );
    if not_modified(headers, &etag, snap.this_update) {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    if pem {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-pem-file"),
        );
        (h, snap.pem()).into_response()
    } else {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/pkix-crl"),
        );
        (h, snap.der.clone()).into_response()
    }
}

/// RFC 9110 §13.1.2–13.1.3 for a GET: `If-None-Match` (weak comparison,
/// `*`, lists) decides when present; otherwise `If-Modified-Since` against
/// `last_modified` (each CRL's thisUpdate is later than the one before, so
/// a newer CRL is never hidden).
fn not_modified(headers: &HeaderMap, etag: &str, last_modified: i64) -> bool {
    let weak = |t: &str| t.trim().trim_start_matches("W/").to_string();
    // Several If-None-Match lines count as one comma-separated list.
    let mut lines = headers.get_all(header::IF_NONE_MATCH).iter().peekable();
    if lines.peek().is_some() {
        return lines
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim() == "*" || weak(t) == weak(etag));
    }
    headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::crl::parse_http_date)
        .is_some_and(|since| last_modified <= since)
}

async fn crl_der(State(st): State<Shared>, headers: HeaderMap) -> Response {
    crl_response(&st, &headers, false)
}

async fn crl_pem(State(st): State<Shared>, headers: HeaderMap) -> Response {
    crl_response(&st, &headers, true)
}

async fn ca_der(State(st): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/pkix-cert")],
        st.issuer.ca_der.clone(),
    )
        .into_response()
}

async fn ca_pem(State(st): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        st.issuer.chain_pem.clone(),
    )
        .into_response()
}

async fn metrics(State(st): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}
