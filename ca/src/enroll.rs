//! Enrollment (`POST /v1/certificates`), its read-only preflight
//! (`POST /v1/certificates/check`) and holder revocation
//! (`POST /v1/revocations`).
//!
//! A failed request changes nothing at the CA. Order of an enrollment:
//! rate limits, CSR checks, domain → MTA route (and the key never reported
//! compromised), the certificate drafted, then the TOTP check with the MTA
//! (which uses the code up), signing, then one durable transaction that
//! revokes the account's valid identities and stores the new certificate.
//! Every check that can fail locally comes before the MTA is asked, so a
//! refusal never costs the holder a code; the preflight runs the same
//! checks without a code and without taking rate-limit tokens.
//!
//! Signing happens before that transaction, outside the database writer.
//! That is safe because the certificate is released to the client only
//! after the transaction committed: if the commit fails, the signed
//! certificate is dropped unseen, so every certificate a client holds is in
//! the database (SPEC §7).
//!
//! To the public, a code for an account the MTA does not know reads exactly
//! like a wrong code for one it does (no account enumeration); the log and
//! `mailid_ca_mta_rejections_total` keep the MTA's reason.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::{Extension, Json};

use mailid_shared::http::PeerAddr;
use mailid_shared::problem::{ApiJson, ErrorCode, Problem};
use mailid_shared::protocol::{
    CheckRequest, CheckResponse, EnrollRequest, EnrollResponse, RevocationReason, RevokeRequest,
    RevokeResponse, ValidateReason,
};
use mailid_shared::timefmt::{now_unix, rfc3339};
use mailid_shared::{Address, KeyId};

use crate::issuer::{CsrPublicKey, Draft};
use crate::mta_client::Verdict;
use crate::policy::CheckedCsr;
use crate::state::Shared;
use crate::store::{MtaRoute, NewCert, RevokeOutcome};

/// Longest TOTP text passed on to an MTA.
pub const MAX_TOTP_LEN: usize = 16;

fn rate_limited(secs: u64, what: &str) -> Problem {
    Problem::new(
        ErrorCode::RateLimited,
        format!("too many requests {what}; retry later"),
    )
    .retry_after(secs)
}

fn peer_ip(peer: Option<Extension<PeerAddr>>) -> String {
    peer.map(|Extension(PeerAddr(a))| a.ip().to_string())
        .unwrap_or_default()
}

fn check_ip(st: &Shared, peer: Option<Extension<PeerAddr>>) -> Result<(), Problem> {
    st.ip_limit
        .check(&peer_ip(peer))
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

/// The MTA route for the account's domain, in the same read as the check
/// that the key was never reported compromised.
async fn route_for(st: &Shared, account: &Address, key_id: &KeyId) -> Result<MtaRoute, Problem> {
    st.store
        .route_for_key(account.domain(), key_id)
        .await?
        .ok_or_else(|| {
            Problem::new(
                ErrorCode::UnknownDomain,
                format!("this CA serves no MTA for domain {}", account.domain()),
            )
        })
}

/// A checked CSR, its key, its route and its drafted certificate: all an
/// enrollment needs but the code.
struct Accepted {
    csr: CheckedCsr,
    key: CsrPublicKey,
    route: MtaRoute,
    draft: Draft,
}

/// The CSR checks: parse, proof of possession, key policy, one address,
/// and a key rcgen writes back unchanged.
fn accept_csr(csr_text: &str) -> Result<(CheckedCsr, CsrPublicKey), Problem> {
    let csr = crate::policy::check_csr(csr_text)?;
    let key = CsrPublicKey::from_csr(&csr)?;
    Ok((csr, key))
}

/// The route lookup (unknown domain, compromised key) and the draft: the
/// rest of an enrollment's checks that need no code.
async fn route_and_draft(
    st: &Shared,
    csr: CheckedCsr,
    key: CsrPublicKey,
) -> Result<Accepted, Problem> {
    let route = route_for(st, &csr.account, &csr.key_id).await?;
    let draft = st
        .issuer
        .draft(&csr, now_unix())
        .map_err(Problem::internal)?;
    Ok(Accepted {
        csr,
        key,
        route,
        draft,
    })
}

/// Asks the account's MTA about a code; maps every non-success to its problem.
async fn check_with_mta(
    st: &Shared,
    route: &MtaRoute,
    account: &Address,
    totp: &str,
    key_id: &KeyId,
) -> Result<(), Problem> {
    let (verdict, took) = st.mta.validate(route, account, totp, key_id).await;
    st.metrics.mta_latency.observe(took);
    match verdict {
        Verdict::Valid => Ok(()),
        Verdict::Rejected {
            reason,
            retry_after,
        } => {
            st.metrics.mta_rejections.inc(reason.as_str());
            tracing::info!(%account, %reason, "the MTA rejected a code");
            Err(rejection(reason, retry_after))
        }
        Verdict::Unavailable(why) => {
            tracing::warn!(domain = %route.domain, reason = %why, "MTA unavailable");
            Err(Problem::new(
                ErrorCode::MtaUnavailable,
                "the account's MTA auth service is unavailable",
            ))
        }
    }
}

/// The public problem for an MTA's refusal. An unknown account reads
/// exactly as a wrong code does, so the answer does not tell whether the
/// account exists.
pub fn rejection(reason: ValidateReason, retry_after: Option<u64>) -> Problem {
    match reason {
        ValidateReason::Locked => Problem::new(
            ErrorCode::Locked,
            "this key is locked at the account's MTA after failed codes",
        )
        .retry_after(retry_after.unwrap_or(60)),
        ValidateReason::UnknownAccount | ValidateReason::Invalid => Problem::new(
            ErrorCode::TotpRejected,
            format!("the MTA rejected the code ({})", ValidateReason::Invalid),
        ),
        other => Problem::new(
            ErrorCode::TotpRejected,
            format!("the MTA rejected the code ({other})"),
        ),
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
    let (csr, key) = accept_csr(&req.csr)?;
    check_totp_text(&req.totp)?;
    check_account(st, &csr.account)?;
    let Accepted {
        csr,
        key,
        route,
        draft,
    } = route_and_draft(st, csr, key).await?;
    // The code is used up from here on: only signing and the transaction
    // follow.
    check_with_mta(st, &route, &csr.account, &req.totp, &csr.key_id).await?;

    let issuer = st.issuer.clone();
    let issued = tokio::task::spawn_blocking(move || issuer.sign(draft, &key, now_unix()))
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

/// `POST /v1/certificates/check`: whether an enrollment of this CSR would
/// get past every check but the code's. Changes nothing, uses no code and
/// takes no enrollment rate-limit token (it only looks at the buckets); it
/// spends a token of its own per-address budget instead.
pub async fn check(
    State(st): State<Shared>,
    peer: Option<Extension<PeerAddr>>,
    body: Result<ApiJson<CheckRequest>, Problem>,
) -> Result<Json<CheckResponse>, Problem> {
    let res = check_inner(&st, peer, body).await;
    let outcome = match &res {
        Ok(_) => "accepted",
        Err(p) => p.code.as_str(),
    };
    st.metrics.enrollment_checks.inc(outcome);
    res
}

async fn check_inner(
    st: &Shared,
    peer: Option<Extension<PeerAddr>>,
    body: Result<ApiJson<CheckRequest>, Problem>,
) -> Result<Json<CheckResponse>, Problem> {
    let ip = peer_ip(peer);
    st.check_limit
        .check(&ip)
        .map_err(|s| rate_limited(s, "from this address"))?;
    st.ip_limit
        .peek(&ip)
        .map_err(|s| rate_limited(s, "from this address"))?;
    let ApiJson(req) = body?;
    let (csr, key) = accept_csr(&req.csr)?;
    st.account_limit
        .peek(csr.account.as_str())
        .map_err(|s| rate_limited(s, "for this account"))?;
    let Accepted { csr, route, .. } = route_and_draft(st, csr, key).await?;
    Ok(Json(CheckResponse {
        domain: route.domain,
        account: csr.account,
        key_id: csr.key_id,
    }))
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
    let route = route_for(st, &row.account, &row.key_id).await?;
    check_with_mta(st, &route, &row.account, &req.totp, &row.key_id).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_account_reads_as_a_wrong_code() {
        assert_eq!(
            rejection(ValidateReason::UnknownAccount, None),
            rejection(ValidateReason::Invalid, None)
        );
        for r in ValidateReason::ALL {
            let p = rejection(r, Some(5));
            assert!(!p.detail.contains("unknown"), "{p:?}");
            let want = if r == ValidateReason::Locked {
                ErrorCode::Locked
            } else {
                ErrorCode::TotpRejected
            };
            assert_eq!(p.code, want);
        }
    }
}
