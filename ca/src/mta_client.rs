//! The TOTP check with an account's MTA auth service: `POST /v1/validate`,
//! HMAC-signed with the CA's credential ([`mailid_shared::authsig`]), 5 s
//! timeout per request, pooled connections. Concurrent checks for one
//! route share one `POST /v1/validate/batch` (a lane per route: at most
//! [`MAX_IN_FLIGHT`] requests out; a check that finds a free slot leaves at
//! once, the others wait and leave together when a slot frees) to save the
//! MTA and the CA a round trip each; an MTA without the batch path gets
//! single requests. Redirects are not followed (the signed request goes to
//! the configured MTA only) and the answer is read up to a bound; anything
//! else is "unavailable".

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailid_shared::authsig::{Credential, HEADER_CA, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use mailid_shared::protocol::{
    ValidateBatchRequest, ValidateBatchResponse, ValidateReason, ValidateRequest, ValidateResponse,
    MAX_VALIDATE_BATCH,
};
use mailid_shared::{Address, KeyId};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::store::MtaRoute;

/// Time allowed for one request to the MTA, connect to answer.
pub const MTA_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest single MTA answer read; a validation result is a few hundred
/// bytes.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What a batch answer may add per item to [`MAX_ANSWER_BYTES`].
pub const MAX_ANSWER_BYTES_PER_ITEM: usize = 2 * 1024;

/// Batch requests one route may have out at once.
pub const MAX_IN_FLIGHT: usize = 4;

/// How long a route whose MTA has no batch path (404 or 405) gets single
/// requests before the batch path is tried again.
pub const SINGLE_FOR: Duration = Duration::from_secs(300);

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

/// A pooled HTTP client for MTA calls, with its per-route lanes.
#[derive(Clone)]
pub struct MtaClient {
    http: reqwest::Client,
    lanes: Arc<Mutex<HashMap<LaneKey, Arc<Mutex<Lane>>>>>,
}

/// A lane's route: requests in one batch share URL, CA name and
/// credential.
#[derive(Clone, PartialEq, Eq, Hash)]
struct LaneKey {
    url: String,
    ca_name: String,
    credential: String,
}

/// The checks waiting for one route and the batches out for it.
#[derive(Default)]
struct Lane {
    queue: VecDeque<Pending>,
    in_flight: usize,
    /// Until when the MTA is asked one code a request (it has no batch
    /// path).
    single_until: Option<Instant>,
}

/// One check waiting for a batch.
struct Pending {
    req: ValidateRequest,
    reply: oneshot::Sender<Verdict>,
}

/// Why a request brought no answer body.
enum Failure {
    Status(reqwest::StatusCode),
    Other(String),
}

impl Failure {
    fn why(&self) -> String {
        match self {
            Failure::Status(s) => format!("MTA answered {s}"),
            Failure::Other(why) => why.clone(),
        }
    }
}

/// A request slot of a lane held by a caller sending its own code: when
/// it ends (answered, failed or the caller gone), codes that queued
/// meanwhile get a sender task that keeps the slot, else it is freed.
struct Slot<'a> {
    client: &'a MtaClient,
    route: &'a MtaRoute,
    lane: Arc<Mutex<Lane>>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut l = self.lane.lock().unwrap_or_else(|e| e.into_inner());
        if l.queue.is_empty() {
            l.in_flight -= 1;
            return;
        }
        drop(l);
        let (client, route) = (self.client.clone(), self.route.clone());
        tokio::spawn(client.send_waiting(route, self.lane.clone()));
    }
}

impl MtaClient {
    pub fn new() -> anyhow::Result<MtaClient> {
        let http = reqwest::Client::builder()
            .timeout(MTA_TIMEOUT)
            .connect_timeout(MTA_TIMEOUT)
            // Idle connections go well before the MTA closes them
            // (HEADER_TIMEOUT): a validation sent on a connection as it is
            // closed is lost, and is not safe to send again.
            .pool_idle_timeout(mailid_shared::http::HEADER_TIMEOUT / 2)
            .pool_max_idle_per_host(64)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(MtaClient {
            http,
            lanes: Arc::default(),
        })
    }

    /// Asks `route`'s MTA whether `totp` is good for `account` and `key_id`.
    /// Returns the verdict and how long the call took (its wait for a
    /// batch included).
    pub async fn validate(
        &self,
        route: &MtaRoute,
        account: &Address,
        totp: &str,
        key_id: &KeyId,
    ) -> (Verdict, Duration) {
        let start = Instant::now();
        let req = ValidateRequest {
            account: account.clone(),
            totp: totp.to_string(),
            key_id: key_id.clone(),
        };
        let v = self.check(route, req).await;
        (v, start.elapsed())
    }

    /// Sends `req` at once in this task if fewer than [`MAX_IN_FLIGHT`]
    /// requests are out for its route (or the route's MTA has no batch
    /// path); else queues it for the next batch and waits for its verdict.
    async fn check(&self, route: &MtaRoute, req: ValidateRequest) -> Verdict {
        let lane = self.lane(route);
        let (reply, verdict) = oneshot::channel();
        let mut pending = Some(Pending { req, reply });
        let own_slot = {
            let mut l = lane.lock().unwrap_or_else(|e| e.into_inner());
            if l.single_until.is_some_and(|t| Instant::now() < t) {
                false
            } else if l.in_flight < MAX_IN_FLIGHT {
                l.in_flight += 1;
                true
            } else {
                l.queue.extend(pending.take());
                false
            }
        };
        let Some(Pending { req, .. }) = pending else {
            return verdict
                .await
                .unwrap_or_else(|_| Verdict::Unavailable("validation abandoned".into()));
        };
        // Hands the slot on when the request ends, however it ends.
        let _slot = own_slot.then(|| Slot {
            client: self,
            route,
            lane,
        });
        self.single(route, req).await
    }

    fn lane(&self, route: &MtaRoute) -> Arc<Mutex<Lane>> {
        let key = LaneKey {
            url: route.url.clone(),
            ca_name: route.ca_name.clone(),
            credential: route.credential.clone(),
        };
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        lanes.entry(key).or_default().clone()
    }

    /// Sends what waits on `lane`, up to [`MAX_VALIDATE_BATCH`] a request,
    /// until nothing waits.
    async fn send_waiting(self, route: MtaRoute, lane: Arc<Mutex<Lane>>) {
        loop {
            let batch: Vec<Pending> = {
                let mut l = lane.lock().unwrap_or_else(|e| e.into_inner());
                if l.queue.is_empty() {
                    l.in_flight -= 1;
                    return;
                }
                let n = l.queue.len().min(MAX_VALIDATE_BATCH);
                l.queue.drain(..n).collect()
            };
            let (reqs, replies): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|p| (p.req, p.reply)).unzip();
            let verdicts = self.batch(&route, &lane, reqs).await;
            for (reply, v) in replies.into_iter().zip(verdicts) {
                let _ = reply.send(v);
            }
        }
    }

    /// One verdict per item of `reqs`, in order: a lone item as a single
    /// request, more as one batch request (single requests if the MTA has
    /// no batch path). A failed batch is "unavailable" for every item.
    async fn batch(
        &self,
        route: &MtaRoute,
        lane: &Mutex<Lane>,
        reqs: Vec<ValidateRequest>,
    ) -> Vec<Verdict> {
        let n = reqs.len();
        if n == 1 {
            let req = reqs.into_iter().next().expect("one item");
            return vec![self.single(route, req).await];
        }
        let batch = ValidateBatchRequest { items: reqs };
        let max = MAX_ANSWER_BYTES + n * MAX_ANSWER_BYTES_PER_ITEM;
        let body = match self.post(route, "/v1/validate/batch", &batch, max).await {
            Ok(b) => b,
            Err(Failure::Status(s))
                if s == reqwest::StatusCode::NOT_FOUND
                    || s == reqwest::StatusCode::METHOD_NOT_ALLOWED =>
            {
                tracing::info!(mta = %route.domain, "MTA has no batch validation; single requests");
                lane.lock().unwrap_or_else(|e| e.into_inner()).single_until =
                    Some(Instant::now() + SINGLE_FOR);
                let singles = batch.items.into_iter().map(|r| self.single(route, r));
                return futures_util::future::join_all(singles).await;
            }
            Err(f) => return vec![Verdict::Unavailable(f.why()); n],
        };
        let answer: ValidateBatchResponse = match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(_) => {
                let why = "MTA answer is not a batch validation result";
                return vec![Verdict::Unavailable(why.into()); n];
            }
        };
        if answer.results.len() != n {
            let why = format!(
                "MTA answered {} results for {n} codes",
                answer.results.len()
            );
            return vec![Verdict::Unavailable(why); n];
        }
        answer
            .results
            .into_iter()
            .zip(&batch.items)
            .map(|(a, r)| interpret(a, &r.account, &r.key_id))
            .collect()
    }

    /// One code, one `POST /v1/validate`.
    async fn single(&self, route: &MtaRoute, req: ValidateRequest) -> Verdict {
        let body = match self
            .post(route, "/v1/validate", &req, MAX_ANSWER_BYTES)
            .await
        {
            Ok(b) => b,
            Err(f) => return Verdict::Unavailable(f.why()),
        };
        let answer: ValidateResponse = match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(_) => return Verdict::Unavailable("MTA answer is not a validation result".into()),
        };
        interpret(answer, &req.account, &req.key_id)
    }

    /// Posts `body` signed to `path` of `route`'s MTA and reads a 2xx
    /// answer of at most `max` bytes.
    async fn post<T: Serialize>(
        &self,
        route: &MtaRoute,
        path: &str,
        body: &T,
        max: usize,
    ) -> Result<Vec<u8>, Failure> {
        let url = reqwest::Url::parse(&format!("{}{path}", route.url.trim_end_matches('/')))
            .map_err(|_| Failure::Other(format!("bad MTA URL for {}", route.domain)))?;
        let cred = Credential::parse(&route.credential)
            .map_err(|_| Failure::Other(format!("bad credential for {}", route.domain)))?;
        let body = serde_json::to_vec(body).map_err(|e| Failure::Other(e.to_string()))?;
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
            Err(e) if e.is_timeout() => return Err(Failure::Other("MTA timed out".into())),
            Err(_) => return Err(Failure::Other("MTA unreachable".into())),
        };
        let status = resp.status();
        if !status.is_success() {
            return Err(Failure::Status(status));
        }
        read_limited(resp, max).await.map_err(Failure::Other)
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
