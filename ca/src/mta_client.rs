//! The TOTP check with an account's MTA auth service: `POST /v1/validate`,
//! HMAC-signed with the CA's credential ([`mailid_shared::authsig`]), 5 s
//! timeout, pooled connections. Redirects are not followed (the signed
//! request goes to the configured MTA only) and the answer is read up to
//! [`MAX_ANSWER_BYTES`]; anything else is "unavailable".

use std::time::{Duration, Instant};

use mailid_shared::authsig::{Credential, HEADER_CA, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use mailid_shared::protocol::{ValidateReason, ValidateRequest, ValidateResponse};
use mailid_shared::{Address, KeyId};

use crate::store::MtaRoute;

/// Time allowed for one validation, connect to answer.
pub const MTA_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest MTA answer read; a validation result is a few hundred bytes.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The MTA's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The code is good for this account and key (and now used up).
    Valid,
    /// The MTA refused the code.
    Rejected {
        reason: ValidateReason,
        retry_after: Option<u64>,
    },
    /// The MTA could not be asked (down, slow, or refused our credential).
    Unavailable(String),
}

/// A pooled HTTP client for MTA calls.
#[derive(Clone)]
pub struct MtaClient {
    http: reqwest::Client,
}

impl MtaClient {
    pub fn new() -> anyhow::Result<MtaClient> {
        let http = reqwest::Client::builder()
            .timeout(MTA_TIMEOUT)
            .connect_timeout(MTA_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(MtaClient { http })
    }

    /// Asks `route`'s MTA whether `totp` is good for `account` and `key_id`.
    /// Returns the verdict and how long the call took.
    pub async fn validate(
        &self,
        route: &MtaRoute,
        account: &Address,
        totp: &str,
        key_id: &KeyId,
    ) -> (Verdict, Duration) {
        let start = Instant::now();
        let v = self.call(route, account, totp, key_id).await;
        (v, start.elapsed())
    }

    async fn call(
        &self,
        route: &MtaRoute,
        account: &Address,
        totp: &str,
        key_id: &KeyId,
    ) -> Verdict {
        let url = match reqwest::Url::parse(&format!(
            "{}/v1/validate",
            route.url.trim_end_matches('/')
        )) {
            Ok(u) => u,
            Err(_) => return Verdict::Unavailable(format!("bad MTA URL for {}", route.domain)),
        };
        let cred = match Credential::parse(&route.credential) {
            Ok(c) => c,
            Err(_) => return Verdict::Unavailable(format!("bad credential for {}", route.domain)),
        };
        let body = match serde_json::to_vec(&ValidateRequest {
            account: account.clone(),
            totp: totp.to_string(),
            key_id: key_id.clone(),
        }) {
            Ok(b) => b,
            Err(e) => return Verdict::Unavailable(e.to_string()),
        };
        let ts = mailid_shared::timefmt::now_unix();
        let sig = cred.sign("POST", url.path(), ts, &body);
        let resp = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header(HEADER_CA, &route.ca_name)
            .header(HEADER_TIMESTAMP, ts.to_string())
            .header(HEADER_SIGNATURE, sig)
            .body(body)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Verdict::Unavailable("MTA timed out".into()),
            Err(_) => return Verdict::Unavailable("MTA unreachable".into()),
        };
        let status = resp.status();
        if !status.is_success() {
            return Verdict::Unavailable(format!("MTA answered {status}"));
        }
        let body = match read_limited(resp, MAX_ANSWER_BYTES).await {
            Ok(b) => b,
            Err(why) => return Verdict::Unavailable(why),
        };
        let answer: ValidateResponse = match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(_) => return Verdict::Unavailable("MTA answer is not a validation result".into()),
        };
        interpret(answer, account, key_id)
    }
}

/// Reads an answer body of at most `max` bytes.
async fn read_limited(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err("MTA answer too large".into());
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max {
                    return Err("MTA answer too large".into());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) if e.is_timeout() => return Err("MTA timed out".into()),
            Err(_) => return Err("MTA answer cut off".into()),
        }
    }
}

/// Turns the MTA's answer into a verdict. A "valid" must name this account
/// and this key: one for another account or key counts as a rejection, and
/// one that names neither is not a validation result at all (the MTA is not
/// speaking the protocol), so nothing is granted.
pub fn interpret(answer: ValidateResponse, account: &Address, key_id: &KeyId) -> Verdict {
    if answer.valid {
        let (Some(for_account), Some(for_key)) = (&answer.account, &answer.key_id) else {
            return Verdict::Unavailable("MTA answer does not name the account and key".into());
        };
        if for_account != account {
            return Verdict::Rejected {
                reason: ValidateReason::Invalid,
                retry_after: None,
            };
        }
        if for_key != key_id {
            return Verdict::Rejected {
                reason: ValidateReason::KeyMismatch,
                retry_after: None,
            };
        }
        return Verdict::Valid;
    }
    Verdict::Rejected {
        reason: answer.reason.unwrap_or(ValidateReason::Invalid),
        retry_after: answer.retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_for_other_accounts_or_keys_are_rejections() {
        let a = Address::parse("a@x.org").unwrap();
        let b = Address::parse("b@x.org").unwrap();
        let k = KeyId::of_spki(b"k");
        let other = KeyId::of_spki(b"other");
        assert_eq!(
            interpret(ValidateResponse::ok(a.clone(), k.clone()), &a, &k),
            Verdict::Valid
        );
        assert_eq!(
            interpret(ValidateResponse::ok(b, k.clone()), &a, &k),
            Verdict::Rejected {
                reason: ValidateReason::Invalid,
                retry_after: None
            }
        );
        assert_eq!(
            interpret(ValidateResponse::ok(a.clone(), other), &a, &k),
            Verdict::Rejected {
                reason: ValidateReason::KeyMismatch,
                retry_after: None
            }
        );
        // A bare {"valid":true} grants nothing.
        for bare in [
            ValidateResponse {
                account: None,
                ..ValidateResponse::ok(a.clone(), k.clone())
            },
            ValidateResponse {
                key_id: None,
                ..ValidateResponse::ok(a.clone(), k.clone())
            },
        ] {
            assert!(matches!(interpret(bare, &a, &k), Verdict::Unavailable(_)));
        }
        assert_eq!(
            interpret(
                ValidateResponse::rejected(ValidateReason::Locked, Some(60)),
                &a,
                &k
            ),
            Verdict::Rejected {
                reason: ValidateReason::Locked,
                retry_after: Some(60)
            }
        );
    }
}
