//! HTTP handlers of the registration authority: enrollment
//! (`POST /v1/certificates`), its read-only preflight
//! (`POST /v1/certificates/check`) and holder revocation
//! (`POST /v1/revocations`). Each extracts the peer address and the body,
//! calls [`crate::authority`], which decides, and counts the outcome; an
//! enrollment answers 201 with the certificate's `Location`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::{Extension, Json};

use mailid_shared::http::PeerAddr;
use mailid_shared::problem::{ApiJson, Problem};
use mailid_shared::protocol::{
    CheckRequest, CheckResponse, EnrollRequest, EnrollResponse, RevokeRequest, RevokeResponse,
};

use crate::authority;
use crate::state::Shared;

fn peer_ip(peer: Option<Extension<PeerAddr>>) -> String {
    peer.map(|Extension(PeerAddr(a))| a.ip().to_string())
        .unwrap_or_default()
}

/// The metric label of an outcome: `ok` on success, else the problem's code.
fn outcome<T>(res: &Result<T, Problem>, ok: &'static str) -> &'static str {
    match res {
        Ok(_) => ok,
        Err(p) => p.code.as_str(),
    }
}

/// A 201 answer: `Location` of the new certificate and the body.
type Created = (
    StatusCode,
    [(header::HeaderName, String); 1],
    Json<EnrollResponse>,
);

/// `POST /v1/certificates`.
pub async fn enroll(
    State(st): State<Shared>,
    peer: Option<Extension<PeerAddr>>,
    body: Result<ApiJson<EnrollRequest>, Problem>,
) -> Result<Created, Problem> {
    let req = body.map(|ApiJson(r)| r);
    let res = authority::enroll(&st, &peer_ip(peer), req).await;
    st.metrics.enrollments.inc(outcome(&res, "issued"));
    let issued = res?;
    Ok((
        StatusCode::CREATED,
        [(
            header::LOCATION,
            format!("/v1/certificates/{}", issued.serial),
        )],
        Json(issued),
    ))
}

/// `POST /v1/certificates/check`: see [`authority::check`].
pub async fn check(
    State(st): State<Shared>,
    peer: Option<Extension<PeerAddr>>,
    body: Result<ApiJson<CheckRequest>, Problem>,
) -> Result<Json<CheckResponse>, Problem> {
    let req = body.map(|ApiJson(r)| r);
    let res = authority::check(&st, &peer_ip(peer), req).await;
    st.metrics.enrollment_checks.inc(outcome(&res, "accepted"));
    res.map(Json)
}

/// `POST /v1/revocations`.
pub async fn revoke(
    State(st): State<Shared>,
    peer: Option<Extension<PeerAddr>>,
    body: Result<ApiJson<RevokeRequest>, Problem>,
) -> Result<Json<RevokeResponse>, Problem> {
    let req = body.map(|ApiJson(r)| r);
    let res = authority::revoke_as_holder(&st, &peer_ip(peer), req).await;
    st.metrics.revocation_requests.inc(outcome(&res, "revoked"));
    res.map(Json)
}
