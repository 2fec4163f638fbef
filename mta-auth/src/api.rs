//! The HTTP API of SPEC §4: routing, decoding, problem documents.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::http::{header, HeaderMap, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use mailid_shared::http::{harden, PeerAddr, PeerCertificate};
use mailid_shared::problem::ErrorCode;
use mailid_shared::protocol::{
    BackupStored, BackupUpload, IdentityUpload, IdentityUploaded, TotpRequest, TotpResponse,
    ValidateBatchRequest, ValidateBatchResponse, ValidateRequest, ValidateResponse,
    MAX_VALIDATE_BATCH,
};
use mailid_shared::timefmt::{now_unix, rfc3339};
use mailid_shared::translog::{self, ConsistencyProof, LogKey};
use mailid_shared::{ApiJson, KeyId, Problem, Serial};
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::authz::Authenticator;
use crate::backup;
use crate::config::Config;
use crate::identity::{self, crl::CrlChecker};
use crate::idlog::IdLog;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::validate::{self, Presented, Validation};

/// Everything a handler needs.
pub struct AppState {
    pub store: Store,
    pub config: Config,
    pub auth: Authenticator,
    pub crls: CrlChecker,
    pub metrics: Arc<Metrics>,
    pub health: HealthCache,
    /// The identity log (SPEC §11).
    pub idlog: Arc<IdLog>,
}

/// Seconds a client is told to wait when the database is unreachable.
pub const UNAVAILABLE_RETRY_SECS: u64 = 5;

/// A storage failure as an HTTP answer: 503 `unavailable` with
/// `Retry-After` while the database is unreachable, else 500 (the cause
/// logged, never sent).
impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Problem {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable");
            Problem::new(
                ErrorCode::Unavailable,
                "the database is unavailable; retry later",
            )
            .retry_after(UNAVAILABLE_RETRY_SECS)
        } else {
            Problem::internal(e)
        }
    }
}

/// How long a database ping's answer serves `/healthz`.
const HEALTH_TTL: Duration = Duration::from_secs(1);
/// How long `/healthz` waits for the database.
const PING_TIMEOUT: Duration = Duration::from_millis(1500);

/// The latest database ping, reused for [`HEALTH_TTL`] so `/healthz`
/// stays cheap however often it is asked.
#[derive(Default)]
pub struct HealthCache(Mutex<Option<(Instant, bool)>>);

impl HealthCache {
    /// Whether the database answered, pinging it when the cached answer
    /// is older than [`HEALTH_TTL`].
    async fn database_up(&self, store: &Store) -> bool {
        if let Some((at, up)) = *self.0.lock().expect("health lock") {
            if at.elapsed() < HEALTH_TTL {
                return up;
            }
        }
        let up = match store.ping(PING_TIMEOUT).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "health check: database unreachable");
                false
            }
        };
        *self.0.lock().expect("health lock") = Some((Instant::now(), up));
        up
    }
}

type St = State<Arc<AppState>>;

/// The service's router with every hardening layer.
pub fn router(state: Arc<AppState>) -> Router {
    let hist = state.metrics.latency.clone();
    let routes = Router::new()
        .route("/v1/totp", post(issue_totp))
        .route("/v1/validate", post(validate))
        .route("/v1/validate/batch", post(validate_batch))
        .route("/v1/identity", put(upload_identity))
        .route("/v1/identity/{address}", get(lookup_identity))
        .route("/v1/backups", get(list_backups))
        .route(
            "/v1/backups/{key_id}",
            put(put_backup).delete(delete_backup),
        )
        .route("/v1/log/checkpoint", get(log_checkpoint))
        .route("/v1/log/key", get(log_key))
        .route("/v1/log/consistency", get(log_consistency))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
        .route_layer(axum::middleware::from_fn(move |req, next| {
            mailid_shared::metrics::track_latency(hist.clone(), req, next)
        }));
    harden(routes)
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A body that went over the size limit while it was read: 413 whoever
/// sends it, as for a declared oversize body.
fn too_large(body: &Result<Bytes, BytesRejection>) -> Result<(), Problem> {
    match body {
        Err(r) if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => Err(Problem::new(
            ErrorCode::PayloadTooLarge,
            "request body is too large",
        )),
        _ => Ok(()),
    }
}

/// Decodes a JSON request body once the caller is authenticated, with the
/// answers of [`ApiJson`] (content type, syntax, shape): an unauthenticated
/// request gets 401 whatever its body.
async fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Problem> {
    let body = body.map_err(|e| Problem::bad_request(format!("could not read body: {e}")))?;
    let mut req = axum::extract::Request::new(axum::body::Body::from(body));
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        req.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    let ApiJson(v) = ApiJson::<T>::from_request(req, &()).await?;
    Ok(v)
}

async fn issue_totp(
    State(st): St,
    peer: Option<Extension<PeerCertificate>>,
    addr: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    too_large(&body)?;
    let ip = addr.map(|a| a.0 .0.ip());
    let account = st.auth.holder(&headers, peer.as_deref(), ip).await?;
    let req: TotpRequest = json_body(&headers, body).await?;
    let params = st.config.totp;
    let issued = match validate::issue(&st.store, &account, &req.key_id, params, now_unix()).await {
        Ok(i) => i,
        Err(StoreError::NotFound(_)) => {
            return Err(Problem::unauthorized("authentication required"))
        }
        Err(e) => return Err(Problem::from(e)),
    };
    st.metrics.codes_issued.fetch_add(1, Ordering::Relaxed);
    tracing::info!(%account, key_id = %req.key_id, "code issued");
    let body = TotpResponse {
        account,
        totp: issued.code.to_string(),
        digits: params.digits,
        period: params.period,
        expires_at: rfc3339(issued.expires_at),
        key_id: req.key_id,
    };
    Ok(no_store(Json(body).into_response()))
}

/// A registered CA's signed request: its name and secret (401 unless the
/// HMAC signature over method, path, time and body checks out), the body
/// decoded (400 otherwise) and the time it was checked at.
async fn signed_by_ca<T: DeserializeOwned>(
    st: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(String, Zeroizing<Vec<u8>>, T, i64), Problem> {
    let now = now_unix();
    let (ca, secret) = st
        .auth
        .ca(method.as_str(), uri.path(), headers, body, now)
        .await?;
    let req = serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request(format!("body does not match the request: {e}")))?;
    Ok((ca, secret, req, now))
}

async fn validate(
    State(st): St,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let (ca, secret, req, now) =
        signed_by_ca::<ValidateRequest>(&st, &method, &uri, &headers, &body).await?;
    let resp = validate_one(&st, &ca, &secret, req, now).await?;
    Ok(no_store(Json(resp).into_response()))
}

/// `POST /v1/validate/batch`: 1 to [`MAX_VALIDATE_BATCH`] codes, each
/// checked by [`validate_one`] as `/v1/validate` checks one. All items go
/// to the store at once (one group commit on SQLite, one pipeline on
/// PostgreSQL) and the answer leaves once every item's write is durable.
/// A body that does not decode (an item's account or key included) is
/// refused whole before any code is looked at.
async fn validate_batch(
    State(st): St,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let (ca, secret, req, now) =
        signed_by_ca::<ValidateBatchRequest>(&st, &method, &uri, &headers, &body).await?;
    if req.items.is_empty() || req.items.len() > MAX_VALIDATE_BATCH {
        return Err(Problem::bad_request(format!(
            "a batch carries 1 to {MAX_VALIDATE_BATCH} items"
        )));
    }
    let done = futures_util::future::join_all(
        req.items
            .into_iter()
            .map(|item| validate_one(&st, &ca, &secret, item, now)),
    )
    .await;
    let results = done.into_iter().collect::<Result<Vec<_>, Problem>>()?;
    Ok(no_store(
        Json(ValidateBatchResponse { results }).into_response(),
    ))
}

/// Validates one code for the CA `ca` (verified with `secret`) and counts
/// and logs the verdict; shared by both validation endpoints. A CA removed
/// since its signature was checked gets 401.
async fn validate_one(
    st: &AppState,
    ca: &str,
    secret: &Zeroizing<Vec<u8>>,
    req: ValidateRequest,
    now: i64,
) -> Result<ValidateResponse, Problem> {
    let presented = Presented {
        ca_secret: secret.clone(),
        key_id: req.key_id.clone(),
        code: Zeroizing::new(req.totp.clone()),
        now,
    };
    let result = validate::validate(
        &st.store,
        ca,
        &req.account,
        presented,
        st.config.totp,
        st.config.lockout,
    )
    .await?;
    Ok(match result {
        Validation::CaGone => {
            tracing::info!(%ca, "validation from a removed CA refused");
            return Err(Problem::unauthorized("unknown CA or bad signature"));
        }
        Validation::Valid => {
            st.metrics.validations.inc("valid");
            tracing::info!(%ca, account = %req.account, key_id = %req.key_id, "code valid");
            ValidateResponse::ok(req.account, req.key_id)
        }
        Validation::Rejected {
            reason,
            retry_after,
            lockout_started,
        } => {
            st.metrics.validations.inc(reason.as_str());
            if lockout_started {
                st.metrics.lockouts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(account = %req.account, key_id = %req.key_id, "key locked after repeated failures");
            }
            tracing::info!(%ca, account = %req.account, key_id = %req.key_id, %reason, "code refused");
            ValidateResponse::rejected(reason, retry_after)
        }
    })
}

async fn upload_identity(
    State(st): St,
    peer: Option<Extension<PeerCertificate>>,
    addr: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IdentityUploaded>, Problem> {
    too_large(&body)?;
    let ip = addr.map(|a| a.0 .0.ip());
    let account = st.auth.holder(&headers, peer.as_deref(), ip).await?;
    let req: IdentityUpload = json_body(&headers, body).await?;
    let row = match identity::check_upload(&st.store, &st.crls, &account, &req, now_unix()).await {
        Ok(r) => r,
        Err(p) => {
            st.metrics.identity_uploads.inc(p.code.as_str());
            tracing::info!(%account, problem = %p.code, "identity upload refused");
            return Err(p);
        }
    };
    let key_id = KeyId::from_bytes(&row.key_id).map_err(Problem::internal)?;
    let serial: Serial = row.serial.parse().map_err(Problem::internal)?;
    let not_after = rfc3339(row.not_after);
    st.store.put_identity(row).await?;
    st.idlog.poke();
    st.metrics.identity_uploads.inc("accepted");
    tracing::info!(%account, %serial, %key_id, "identity published");
    Ok(Json(IdentityUploaded {
        account,
        serial,
        key_id,
        not_after,
    }))
}

async fn lookup_identity(State(st): St, Path(address): Path<String>) -> Result<Response, Problem> {
    let mut published = match identity::lookup(&st.store, &st.crls, &address, now_unix()).await {
        Ok(p) => p,
        Err(p) if p.code == ErrorCode::NotFound => {
            return match crate::idlog::withdrawn(&st.store, &address).await? {
                Some((detail, account)) => {
                    let history = st.idlog.history(&st.store, &account).await?;
                    Ok(withdrawn_problem(Problem::not_found(detail), history))
                }
                None => Err(p),
            };
        }
        Err(p) => return Err(p),
    };
    published.history = st.idlog.history(&st.store, &published.account).await?;
    Ok(Json(published).into_response())
}

/// The 404 of a withdrawn identity: the problem document with the
/// account's `history` member (an RFC 9457 extension), so a client can
/// verify the withdrawal as it verifies a publication.
fn withdrawn_problem(p: Problem, history: Option<translog::History>) -> Response {
    let mut doc = match serde_json::to_value(p.document()) {
        Ok(d) => d,
        Err(_) => return p.into_response(),
    };
    if let (Some(h), Some(obj)) = (history, doc.as_object_mut()) {
        if let Ok(v) = serde_json::to_value(h) {
            obj.insert("history".into(), v);
        }
    }
    let mut resp = p.into_response();
    *resp.body_mut() = axum::body::Body::from(serde_json::to_vec(&doc).unwrap_or_default());
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    resp
}

/// `GET /v1/log/checkpoint`: the newest signed checkpoint, as stored.
async fn log_checkpoint(State(st): St) -> Result<Response, Problem> {
    let Some(cp) = st.store.log_checkpoint().await? else {
        return Err(
            Problem::new(ErrorCode::Unavailable, "no checkpoint is signed yet").retry_after(1),
        );
    };
    let mut resp = cp.note.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(no_store(resp))
}

/// `GET /v1/log/key`: the log's public key.
async fn log_key(State(st): St) -> Json<LogKey> {
    let v = &st.idlog.keys.verifier;
    Json(LogKey {
        origin: v.origin().to_string(),
        vkey: translog::vkey(v.origin(), v.public_key()),
        key_hash: format!("{:08x}", v.key_hash()),
        algorithm: "Ed25519".into(),
        public_key: data_encoding::BASE64.encode(v.public_key()),
    })
}

/// `GET /v1/log/consistency?from=N&to=M`: `1 <= N <= M <=` the newest
/// checkpoint's size.
async fn log_consistency(
    State(st): St,
    RawQuery(query): RawQuery,
) -> Result<Json<ConsistencyProof>, Problem> {
    let (mut from, mut to) = (None, None);
    for pair in query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let n = || {
            v.parse::<u64>()
                .ok()
                .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| Problem::bad_request(format!("{k} must be a tree size")))
        };
        match k {
            "from" if from.is_none() => from = Some(n()?),
            "to" if to.is_none() => to = Some(n()?),
            "from" | "to" => return Err(Problem::bad_request(format!("{k} given twice"))),
            _ => return Err(Problem::bad_request("only from and to are accepted")),
        }
    }
    let (Some(from), Some(to)) = (from, to) else {
        return Err(Problem::bad_request("from and to are required"));
    };
    let signed = st
        .store
        .log_checkpoint()
        .await?
        .map(|c| c.size)
        .unwrap_or(0);
    if from < 1 {
        return Err(Problem::bad_request("from must be at least 1"));
    }
    if from > to {
        return Err(Problem::bad_request("from must not exceed to"));
    }
    if to > signed {
        return Err(Problem::bad_request(format!(
            "to must not exceed the newest checkpoint's size {signed}"
        )));
    }
    let proof = st.store.log_consistency(from, to).await?;
    Ok(Json(ConsistencyProof {
        from,
        to,
        proof: proof.iter().map(translog::hash_b64).collect(),
    }))
}

/// Counts a backup write's result and passes it on.
fn count_backup<T>(st: &AppState, done: &str, res: Result<T, Problem>) -> Result<T, Problem> {
    let label = match &res {
        Ok(_) => done,
        Err(p) => p.code.as_str(),
    };
    st.metrics.backup_writes.inc(label);
    res
}

async fn put_backup(
    State(st): St,
    Path(key_id): Path<String>,
    peer: Option<Extension<PeerCertificate>>,
    addr: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    too_large(&body)?;
    let ip = addr.map(|a| a.0 .0.ip());
    let account = st.auth.holder(&headers, peer.as_deref(), ip).await?;
    let key_id = backup::key_id(&key_id)?;
    let req: BackupUpload = json_body(&headers, body).await?;
    let res = backup::store(&st.store, &account, &key_id, &req).await;
    let stored: BackupStored = count_backup(&st, "stored", res).inspect_err(|p| {
        tracing::info!(%account, %key_id, problem = %p.code, "backup refused");
    })?;
    tracing::info!(%account, %key_id, "backup stored");
    Ok(no_store(Json(stored).into_response()))
}

async fn list_backups(
    State(st): St,
    peer: Option<Extension<PeerCertificate>>,
    addr: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let ip = addr.map(|a| a.0 .0.ip());
    let account = st.auth.holder(&headers, peer.as_deref(), ip).await?;
    let list = backup::list(&st.store, &account).await?;
    Ok(no_store(Json(list).into_response()))
}

async fn delete_backup(
    State(st): St,
    Path(key_id): Path<String>,
    peer: Option<Extension<PeerCertificate>>,
    addr: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
) -> Result<StatusCode, Problem> {
    let ip = addr.map(|a| a.0 .0.ip());
    let account = st.auth.holder(&headers, peer.as_deref(), ip).await?;
    let key_id = backup::key_id(&key_id)?;
    let res = backup::delete(&st.store, &account, &key_id).await;
    count_backup(&st, "deleted", res)?;
    tracing::info!(%account, %key_id, "backup deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// 200 `ok`, or 503 `unavailable` while the database is unreachable.
async fn healthz(State(st): St) -> Response {
    if st.health.database_up(&st.store).await {
        "ok".into_response()
    } else {
        Problem::new(ErrorCode::Unavailable, "the database is unreachable")
            .retry_after(UNAVAILABLE_RETRY_SECS)
            .into_response()
    }
}

async fn metrics(State(st): St) -> Response {
    let mut text = st.metrics.render();
    mailid_shared::metrics::render_value(
        &mut text,
        "mailid_mta_log_checkpoints_signed_total",
        "Identity log checkpoints this process signed (at most one a second across replicas).",
        "counter",
        st.idlog.signed.load(Ordering::Relaxed) as f64,
    );
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
