//! The registration authority: the decisions of an enrollment, its
//! preflight, a holder's revocation and an operator's revocation, on
//! decoded requests, answering domain results or a [`Problem`]. HTTP
//! (extractors, status codes, `Location`, per-outcome metrics) stays in
//! [`crate::enroll`]; the operator CLI revokes through here too.
//!
//! A failed request changes nothing at the CA. Order of an enrollment:
//! rate limits, CSR checks, domain → MTA route and the key never reported
//! compromised, the certificate drafted, then the TOTP check with the MTA
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
//!
//! Each request arrives as the HTTP layer decoded it: the request, or the
//! problem its decoding found. The per-address rate limit is charged
//! first, so an undecodable body still costs a token (as it always has).

use std::sync::atomic::Ordering;

use mailid_shared::problem::{ErrorCode, Problem};
use mailid_shared::protocol::{
    CheckRequest, CheckResponse, EnrollRequest, EnrollResponse, RevocationReason, RevokeRequest,
    RevokeResponse, ValidateReason,
};
use mailid_shared::timefmt::{now_unix, rfc3339};
use mailid_shared::{Address, KeyId, Serial};

use crate::issuer::{CsrPublicKey, Draft};
use crate::mta_client::Verdict;
use crate::policy::CheckedCsr;
use crate::signer::SignError;
use crate::state::AppState;
use crate::store::{MtaRoute, NewCert, RevokeOutcome, Store, StoreError};

/// Longest TOTP text passed on to an MTA.
pub const MAX_TOTP_LEN: usize = 16;

/// Seconds a client is told to wait when the database is unreachable.
pub const UNAVAILABLE_RETRY_SECS: u64 = 5;

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::CompromisedKey => Problem::new(ErrorCode::UnsupportedKey, e.to_string()),
            // The database is away: nothing was done, try again later.
            e if e.is_unavailable() => unavailable(),
            other => Problem::internal(other),
        }
    }
}

/// 503 `unavailable` with Retry-After: the database cannot be reached.
pub fn unavailable() -> Problem {
    Problem::new(
        ErrorCode::Unavailable,
        "the CA's database is unavailable; retry later",
    )
    .retry_after(UNAVAILABLE_RETRY_SECS)
}

/// The problem of a failed signature: 503 `unavailable` while the CA key
/// cannot be reached (a PKCS#11 token gone; signing resumes by itself when
/// it is back), else 500.
pub fn signing_problem(e: anyhow::Error) -> Problem {
    match e.downcast_ref::<SignError>() {
        Some(SignError::Unavailable(why)) => {
            tracing::error!(error = %why, "the CA key is unavailable");
            Problem::new(
                ErrorCode::Unavailable,
                "the CA's signing key is unavailable; retry later",
            )
            .retry_after(UNAVAILABLE_RETRY_SECS)
        }
        _ => Problem::internal(e),
    }
}

fn rate_limited(secs: u64, what: &str) -> Problem {
    Problem::new(
        ErrorCode::RateLimited,
        format!("too many requests {what}; retry later"),
    )
    .retry_after(secs)
}

fn check_ip(st: &AppState, peer_ip: &str) -> Result<(), Problem> {
    st.ip_limit
        .check(peer_ip)
        .map_err(|s| rate_limited(s, "from this address"))
}

fn check_account(st: &AppState, account: &Address) -> Result<(), Problem> {
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

/// The MTA route for the account's domain. A key reported compromised is
/// refused first (`unsupported-key`: it is never certified again), then a
/// domain without a route (`unknown-domain`); both facts come from one read.
async fn route_for(st: &AppState, account: &Address, key_id: &KeyId) -> Result<MtaRoute, Problem> {
    let found = st.store.route_and_key(account.domain(), key_id).await?;
    if found.key_compromised {
        return Err(StoreError::CompromisedKey.into());
    }
    found.route.ok_or_else(|| {
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

/// The route lookup (compromised key, unknown domain) and the draft: the
/// rest of an enrollment's checks that need no code.
async fn route_and_draft(
    st: &AppState,
    csr: CheckedCsr,
    key: CsrPublicKey,
) -> Result<Accepted, Problem> {
    let route = route_for(st, &csr.account, &csr.key_id).await?;
    let mut draft = st
        .issuer
        .draft(&csr, now_unix())
        .map_err(Problem::internal)?;
    lint_draft(st, &mut draft, &key).await?;
    Ok(Accepted {
        csr,
        key,
        route,
        draft,
    })
}

/// Lint before sign, before anything is used up (SPEC §9): the draft
/// through the issuer's pre-sign gate (the in-process linter, no signature
/// made), then, with `serve --lint-url`, through the external linter. A
/// finding is 500 `internal` (logged and counted by rule).
async fn lint_draft(st: &AppState, draft: &mut Draft, key: &CsrPublicKey) -> Result<(), Problem> {
    let tbs = st.issuer.check(draft, key).map_err(signing_problem)?;
    let Some(linter) = &st.external_lint else {
        return Ok(());
    };
    let found = linter.check_certificate(&tbs).await;
    if found.is_empty() {
        return Ok(());
    }
    for f in &found {
        st.metrics.lint_findings.inc(f.rule);
    }
    let why = crate::lint::describe(&found);
    tracing::error!(findings = %why, "the external linter refused a certificate");
    Err(Problem::internal(anyhow::anyhow!(
        "the certificate failed the external lint: {why}"
    )))
}

/// Asks the account's MTA about a code; maps every non-success to its problem.
async fn check_with_mta(
    st: &AppState,
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

/// An enrollment (`POST /v1/certificates`), in the order of
/// docs/ARCHITECTURE.md "CA enrollment": the issued certificate, durable
/// before this returns, and the serials it superseded.
pub async fn enroll(
    st: &AppState,
    peer_ip: &str,
    req: Result<EnrollRequest, Problem>,
) -> Result<EnrollResponse, Problem> {
    check_ip(st, peer_ip)?;
    let req = req?;
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

    // A file key signs in microseconds, less than a hop to the blocking
    // pool costs; a PKCS#11 token may take long and goes there.
    let issued = if st.issuer.signer().may_block() {
        let issuer = st.issuer.clone();
        tokio::task::spawn_blocking(move || issuer.sign(draft, &key, now_unix()))
            .await
            .map_err(Problem::internal)?
    } else {
        st.issuer.sign(draft, &key, now_unix())
    }
    .map_err(signing_problem)?;
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
    Ok(EnrollResponse {
        serial: issued.serial,
        account: csr.account,
        key_id: csr.key_id,
        not_before: rfc3339(issued.not_before),
        not_after: rfc3339(issued.not_after),
        certificate: mailid_shared::pem::encode("CERTIFICATE", &issued.der),
        chain: st.issuer.chain_pem.clone(),
        revoked,
    })
}

/// The preflight (`POST /v1/certificates/check`): whether an enrollment of
/// this CSR would get past every check but the code's. Changes nothing,
/// uses no code and takes no enrollment rate-limit token (it only looks at
/// the buckets); it spends a token of its own per-address budget instead.
pub async fn check(
    st: &AppState,
    peer_ip: &str,
    req: Result<CheckRequest, Problem>,
) -> Result<CheckResponse, Problem> {
    st.check_limit
        .check(peer_ip)
        .map_err(|s| rate_limited(s, "from this address"))?;
    st.ip_limit
        .peek(peer_ip)
        .map_err(|s| rate_limited(s, "from this address"))?;
    let req = req?;
    let (csr, key) = accept_csr(&req.csr)?;
    st.account_limit
        .peek(csr.account.as_str())
        .map_err(|s| rate_limited(s, "for this account"))?;
    let Accepted { csr, route, .. } = route_and_draft(st, csr, key).await?;
    Ok(CheckResponse {
        domain: route.domain,
        account: csr.account,
        key_id: csr.key_id,
    })
}

/// Reasons a holder may give; `privilegeWithdrawn` is the CA's alone.
pub fn holder_may_use(reason: RevocationReason) -> bool {
    reason != RevocationReason::PrivilegeWithdrawn
}

/// Why the revocation transaction revoked nothing; each caller words it.
#[derive(Debug)]
pub enum Unrevoked {
    /// No certificate has this serial.
    NotFound,
    /// It was revoked before (and this is no new key-compromise report).
    AlreadyRevoked,
    /// It expired; an expired certificate is not revoked.
    Expired,
    /// The database failed.
    Store(StoreError),
}

impl From<Unrevoked> for Problem {
    fn from(u: Unrevoked) -> Self {
        match u {
            Unrevoked::NotFound => Problem::not_found("no such certificate"),
            Unrevoked::AlreadyRevoked => {
                Problem::new(ErrorCode::Conflict, "the certificate is already revoked")
            }
            Unrevoked::Expired => Problem::new(ErrorCode::Conflict, "the certificate has expired"),
            Unrevoked::Store(e) => e.into(),
        }
    }
}

/// The outcome of the revocation transaction (`store::revoke`), shared by
/// the holder's and the operator's path: the revocation time, or why not.
fn settled(outcome: Result<RevokeOutcome, StoreError>) -> Result<i64, Unrevoked> {
    match outcome.map_err(Unrevoked::Store)? {
        RevokeOutcome::Revoked { at } => Ok(at),
        RevokeOutcome::NotFound => Err(Unrevoked::NotFound),
        RevokeOutcome::AlreadyRevoked => Err(Unrevoked::AlreadyRevoked),
        RevokeOutcome::Expired => Err(Unrevoked::Expired),
    }
}

/// A holder's revocation (`POST /v1/revocations`): the reason allowed, the
/// certificate revocable, the code valid at the account's MTA, then the
/// transaction.
pub async fn revoke_as_holder(
    st: &AppState,
    peer_ip: &str,
    req: Result<RevokeRequest, Problem>,
) -> Result<RevokeResponse, Problem> {
    check_ip(st, peer_ip)?;
    let req = req?;
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
    let at = settled(
        st.store
            .revoke(req.serial.clone(), reason, now_unix())
            .await,
    )?;
    st.metrics.revoked.inc(reason.as_str());
    st.crl.poke();
    tracing::info!(serial = %req.serial, %reason, "revoked by the holder");
    Ok(RevokeResponse {
        serial: req.serial,
        revoked_at: rfc3339(at),
        reason,
    })
}

/// An operator's revocation (`mailid-ca revoke`): any reason, no code, the
/// same transaction as a holder's. Returns the revocation time. A running
/// server's CRL publisher sees it through the database.
pub fn revoke_as_operator(
    store: &Store,
    serial: &Serial,
    reason: RevocationReason,
) -> Result<i64, Unrevoked> {
    settled(store.revoke_blocking(serial.clone(), reason, now_unix()))
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
