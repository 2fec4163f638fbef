//! Enrollment (`POST /v1/certificates`) and holder revocation
//! (`POST /v1/revocations`).
//!
//! A failed request changes nothing at the CA. Order of an enrollment:
//! rate limits, CSR checks, domain → MTA route, the TOTP check with the MTA
//! (which uses the code up), signing, then one durable transaction that
//! revokes the account's valid identities and stores the new certificate.
//!
//! Signing happens before that transaction, outside the database writer.
//! That is safe because the certificate is released to the client only
//! after the transaction committed: if the commit fails, the signed
//! certificate is dropped unseen, so every certificate a client holds is in
//! the database (SPEC §7).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::{Extension, Json};

use mailid_shared::http::PeerAddr;
use mailid_shared::problem::{ApiJson, ErrorCode, Problem};
use mailid_shared::protocol::{
    EnrollRequest, EnrollResponse, RevocationReason, RevokeRequest, RevokeResponse, ValidateReason,
};
use mailid_shared::timefmt::{now_unix, rfc3339};
use mailid_shared::{Address, KeyId};

use crate::api::Shared;
use crate::issuer::CsrPublicKey;
use crate::mta_client::Verdict;
use crate::store::{NewCert, RevokeOutcome};

/// Longest TOTP text passed on to an MTA.
pub const MAX_TOTP_LEN: usize = 16;

fn rate_limited(secs: u64, what: &str) -> Problem {
    Problem::new(
        ErrorCode::RateLimited,
        format!("too many requests {what}; retry later"),
    )
    .retry_after(secs)
}

fn check_ip(st: &Shared, peer: Option<Extension<PeerAddr>>) -> Result<(), Problem> {
    let ip = peer
        .map(|Extension(PeerAddr(a))| a.ip().to_string())
        .unwrap_or_default();
    st.ip_limit
        .check(&ip)
        .map_err(|s| rate_limited(s, "from this address"))
}

fn check_account(st: &Shared, account: &Address) -> Result<(), Problem> {
    st.account_limit
        .check(account.as_str())
        .map_err(|s| rate_limited(s, "for this account"))
}

/// Checks the form of a request's `totp` before it goes to an MTA: 1 to
/// [`MAX_TOTP_LEN`] decimal digits.
pub fn check_totp_text(totp: &str) -> Result<(), Problem> {
    if totp.is_empty() || totp.len() > MAX_TOTP_LEN || !totp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::bad_request("totp must be 1 to 16 decimal digits"));
    }
    Ok(())
}

/// Asks the account's MTA about a code; maps every non-success to its problem.
async fn check_with_mta(
    st: &Shared,
    account: &Address,
    totp: &str,
    key_id: &KeyId,
) -> Result<(), Problem> {
    let route = st
        .store
        .route_for_key(account.domain(), key_id)
        .await?
        .ok_or_else(|| {
            Problem::new(
                ErrorCode::UnknownDomain,
                format!("this CA serves no MTA for domain {}", account.domain()),
            )
        })?;
    let (verdict, took) = st.mta.validate(&route, account, totp, key_id).await;
    st.metrics.mta_latency.observe(took);
    match verdict {
        Verdict::Valid => Ok(()),
        Verdict::Rejected {
            reason: ValidateReason::Locked,
            retry_after,
        } => Err(Problem::new(
            ErrorCode::Locked,
            "the account is locked at its MTA after failed codes",
        )
        .retry_after(retry_after.unwrap_or(60))),
        Verdict::Rejected { reason, .. } => Err(Problem::new(
            ErrorCode::TotpRejected,
            format!("the MTA rejected the code ({reason})"),
        )),
        Verdict::Unavailable(why) => {
            tracing::warn!(domain = %route.domain, reason = %why, "MTA unavailable");
            Err(Problem::new(
                ErrorCode::MtaUnavailable,
                "the account's MTA auth service is unavailable",
            ))
        }
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
    let res = enroll_inner(&st, peer, body).await;
    let outcome = match &res {
        Ok(_) => "issued",
        Err(p) => p.code.as_str(),
    };
    st.metrics.enrollments.inc(outcome);
    res
}

async fn enroll_inner(
    st: &Shared,
    peer: Option<Extension<PeerAddr>>,
    body: Result<ApiJson<EnrollRequest>, Problem>,
) -> Result<Created, Problem> {
    check_ip(st, peer)?;
    let ApiJson(req) = body?;
    let csr = crate::policy::check_csr(&req.csr)?;
    let key = CsrPublicKey::from_csr(&csr)?;
    check_totp_text(&req.totp)?;
    check_account(st, &csr.account)?;
    check_with_mta(st, &csr.account, &req.totp, &csr.key_id).await?;

    let issuer = st.issuer.clone();
    let csr2 = csr.clone();
    let issued = tokio::task::spawn_blocking(move || issuer.issue(&csr2, &key, now_unix()))
        .await
        .map_err(Problem::internal)?
        .map_err(Problem::internal)?;
    let new = NewCert {
        serial: issued.serial.clone(),
        account: csr.account.clone(),
        key_id: csr.key_id.clone(),
        not_before: issued.not_before,
        not_after: issued.not_after,
        der: issued.der.clone(),
    };
    // Durable before the certificate leaves this process.
    let revoked = st.store.insert_superseding(new, now_unix()).await?;
    st.metrics.issued.fetch_add(1, Ordering::Relaxed);
    if !revoked.is_empty() {
        st.metrics
            .revoked
            .add(RevocationReason::Superseded.as_str(), revoked.len() as u64);
        st.crl.poke();
    }
    tracing::info!(serial = %issued.serial, account = %csr.account, superseded = revoked.len(), "identity issued");
    Ok((
        StatusCode::CREATED,
        [(
            header::LOCATION,
            format!("/v1/certificates/{}", issued.serial),
        )],
        Json(EnrollResponse {
            serial: issued.serial,
            account: csr.account,
            key_id: csr.key_id,
            not_before: rfc3339(issued.not_before),
            not_after: rfc3339(issued.not_after),
            certificate: mailid_shared::pem::encode("CERTIFICATE", &issued.der),
            chain: st.issuer.chain_pem.clone(),
            revoked,
        }),
    ))
}

/// Reasons a holder may give; `privilegeWithdrawn` is the CA's alone.
pub fn holder_may_use(reason: RevocationReason) -> bool {
    reason != RevocationReason::PrivilegeWithdrawn
}

/// `POST /v1/revocations`.
pub async fn revoke(
    State(st): State<Shared>,
    peer: Option<Extension<PeerAddr>>,
    body: Result<ApiJson<RevokeRequest>, Problem>,
) -> Result<Json<RevokeResponse>, Problem> {
    let res = revoke_inner(&st, peer, body).await;
    let outcome = match &res {
        Ok(_) => "revoked",
        Err(p) => p.code.as_str(),
    };
    st.metrics.revocation_requests.inc(outcome);
    res
}

async fn revoke_inner(
    st: &Shared,
    peer: Option<Extension<PeerAddr>>,
    body: Result<ApiJson<RevokeRequest>, Problem>,
) -> Result<Json<RevokeResponse>, Problem> {
    check_ip(st, peer)?;
    let ApiJson(req) = body?;
    let reason = req.reason.unwrap_or(RevocationReason::Unspecified);
    if !holder_may_use(reason) {
        return Err(Problem::bad_request(format!(
            "reason {reason} is reserved for the CA"
        )));
    }
    check_totp_text(&req.totp)?;
    let row =
        st.store.get(&req.serial).await?.ok_or_else(|| {
            Problem::not_found(format!("no certificate with serial {}", req.serial))
        })?;
    let now = now_unix();
    // A certificate revoked for another reason may still be reported as
    // key-compromised (its reason changes; the key is never certified again).
    let report_compromise = reason == RevocationReason::KeyCompromise && row.reason != Some(reason);
    if row.revoked_at.is_some() && !report_compromise {
        return Err(Problem::new(
            ErrorCode::Conflict,
            "the certificate is already revoked",
        ));
    }
    if row.not_after < now {
        return Err(Problem::new(
            ErrorCode::Conflict,
            "the certificate has expired",
        ));
    }
    check_account(st, &row.account)?;
    check_with_mta(st, &row.account, &req.totp, &row.key_id).await?;
    match st
        .store
        .revoke(req.serial.clone(), reason, now_unix())
        .await?
    {
        RevokeOutcome::Revoked { at } => {
            st.metrics.revoked.inc(reason.as_str());
            st.crl.poke();
            tracing::info!(serial = %req.serial, %reason, "revoked by the holder");
            Ok(Json(RevokeResponse {
                serial: req.serial,
                revoked_at: rfc3339(at),
                reason,
            }))
        }
        RevokeOutcome::NotFound => Err(Problem::not_found("no such certificate")),
        RevokeOutcome::AlreadyRevoked => Err(Problem::new(
            ErrorCode::Conflict,
            "the certificate is already revoked",
        )),
        RevokeOutcome::Expired => Err(Problem::new(
            ErrorCode::Conflict,
            "the certificate has expired",
        )),
    }
}
