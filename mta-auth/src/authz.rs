//! Who is calling: account holders (HTTP Basic with Argon2id passwords,
//! throttled per address and per account, or a TLS client certificate
//! naming the account) and CAs (HMAC-signed requests with their credential).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{self, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use axum::http::{header, HeaderMap};
use mailid_shared::authsig::{self, Credential};
use mailid_shared::http::PeerCertificate;
use mailid_shared::problem::ErrorCode;
use mailid_shared::ratelimit::Limiter;
use mailid_shared::{Address, Problem};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::client_crl::ClientAuth;
use crate::config::LoginLimits;
use crate::identity::x509;
use crate::store::Store;

/// Argon2id memory cost in KiB (OWASP minimum).
pub const ARGON2_M_KIB: u32 = 19_456;
/// Argon2id passes.
pub const ARGON2_T: u32 = 2;
/// Argon2id lanes.
pub const ARGON2_P: u32 = 1;
/// How long a CA's secret is cached; a removal is also checked inside every
/// validation, so it takes effect at once.
const CA_CACHE_TTL: Duration = Duration::from_secs(1);

fn argon2() -> Argon2<'static> {
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None).expect("valid parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password with Argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

/// Checks a password against a PHC string (parameters from the string).
pub fn verify_password(hash: &str, password: &str) -> bool {
    verify_password_in(hash, password, &mut Vec::new())
}

/// [`verify_password`] with caller-provided Argon2 working memory, grown
/// to the hash's memory cost if needed and left allocated for the next
/// call. Reusing it keeps the service's Argon2 memory at one buffer per
/// permit: a fresh 19 MiB allocation per attempt made the process grow by
/// gigabytes under a flood of wrong passwords (the allocator kept the
/// freed buffers instead of reusing them).
pub fn verify_password_in(hash: &str, password: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (parsed.hash, parsed.salt) else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    let mut out = Zeroizing::new(vec![0u8; expected.len()]);
    if Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..])
        .is_err()
    {
        return false;
    }
    // `Output`'s equality is constant-time.
    password_hash::Output::new(&out).is_ok_and(|o| o == expected)
}

/// (account, client address) pairs remembered before expired ones are
/// dropped.
const KNOWN_PRUNE_AT: usize = 50_000;

/// Authenticates callers.
pub struct Authenticator {
    store: Store,
    /// Bounds concurrent Argon2 runs (each takes 19 MiB and a core).
    argon_permits: Semaphore,
    /// As many again for logins from an address known to the account, so
    /// they never wait behind a flood of guesses from elsewhere.
    known_permits: Semaphore,
    /// Most password checks running or waiting at once (`None`: no bound).
    argon_bound: Option<usize>,
    /// Password checks running or waiting now.
    argon_busy: AtomicUsize,
    /// Failed logins per client address.
    ip_failures: Limiter,
    /// Failed logins per account (skipped for known addresses).
    account_failures: Limiter,
    /// When each (account, address) pair last logged in with a password.
    known: Mutex<HashMap<(String, String), Instant>>,
    /// How long a pair stays known.
    known_for: Duration,
    /// Client-certificate CRLs, to refuse a certificate revoked after its
    /// connection was opened.
    client_auth: Option<Arc<ClientAuth>>,
    /// Argon2 working memory, at most one buffer per permit, reused.
    argon_memory: Mutex<Vec<Vec<Block>>>,
    ca_cache: Mutex<HashMap<String, CachedCa>>,
}

/// A CA secret and when it was read.
type CachedCa = (Instant, Arc<Zeroizing<Vec<u8>>>);

fn unauthorized() -> Problem {
    Problem::unauthorized("authentication required")
}

fn rate_limited(secs: u64, what: &str) -> Problem {
    Problem::new(
        ErrorCode::RateLimited,
        format!("too many failed logins {what}; retry later"),
    )
    .retry_after(secs)
}

/// The key of a client address in the per-address bucket: an IPv4
/// address, or an IPv6 /64 (one host usually holds a whole /64).
pub fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// A place among the password checks running or waiting; left on drop.
struct ArgonSlot<'a>(&'a AtomicUsize);

impl Drop for ArgonSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Per-minute rate and burst as a [`Limiter`] (0 per minute: disabled).
fn limiter(per_minute: u32, burst: u32) -> Limiter {
    Limiter::new(f64::from(per_minute) / 60.0, burst)
}

/// Splits an HTTP Basic `Authorization` header into (user, password).
pub fn parse_basic(headers: &HeaderMap) -> Option<(String, Zeroizing<String>)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = Zeroizing::new(data_encoding::BASE64.decode(rest.trim().as_bytes()).ok()?);
    let text = std::str::from_utf8(&raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), Zeroizing::new(pass.to_string())))
}

impl Authenticator {
    /// A new authenticator over `store`, throttling password logins as
    /// `limits` says; `client_auth` holds the client-certificate CRLs.
    pub fn new(store: Store, limits: LoginLimits, client_auth: Option<Arc<ClientAuth>>) -> Self {
        let permits = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(2);
        Authenticator {
            store,
            argon_permits: Semaphore::new(permits),
            known_permits: Semaphore::new(permits),
            argon_bound: (limits.argon2_queue > 0).then(|| permits + limits.argon2_queue as usize),
            argon_busy: AtomicUsize::new(0),
            ip_failures: limiter(limits.ip_failures_per_minute, limits.ip_failure_burst),
            account_failures: limiter(
                limits.account_failures_per_minute,
                limits.account_failure_burst,
            ),
            known: Mutex::new(HashMap::new()),
            known_for: Duration::from_secs(u64::from(limits.known_address_days) * 86_400),
            client_auth,
            argon_memory: Mutex::new(Vec::new()),
            ca_cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `address` logged in to `account` recently.
    fn is_known(&self, account: &str, address: &str) -> bool {
        let Ok(known) = self.known.lock() else {
            return false;
        };
        known
            .get(&(account.to_string(), address.to_string()))
            .is_some_and(|at| at.elapsed() < self.known_for)
    }

    fn remember(&self, account: &str, address: &str) {
        if self.known_for.is_zero() {
            return;
        }
        if let Ok(mut known) = self.known.lock() {
            if known.len() >= KNOWN_PRUNE_AT {
                let ttl = self.known_for;
                known.retain(|_, at| at.elapsed() < ttl);
                if known.len() >= KNOWN_PRUNE_AT {
                    known.clear();
                }
            }
            known.insert((account.to_string(), address.to_string()), Instant::now());
        }
    }

    /// Takes a place among the password checks, or 429 when they are full
    /// (unless `known`: an address that logged in to the account before is
    /// never refused, and runs on its own permits).
    fn argon_slot(&self, known: bool) -> Result<ArgonSlot<'_>, Problem> {
        let before = self.argon_busy.fetch_add(1, Ordering::SeqCst);
        let slot = ArgonSlot(&self.argon_busy);
        match self.argon_bound {
            Some(bound) if before >= bound && !known => Err(Problem::new(
                ErrorCode::RateLimited,
                "too many password checks are waiting; retry later",
            )
            .retry_after(1)),
            _ => Ok(slot),
        }
    }

    /// A hash checked for unknown accounts so they cost the same time
    /// (made on first need).
    fn dummy_hash() -> String {
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        DUMMY
            .get_or_init(|| {
                let mut filler = [0u8; 16];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut filler);
                hash_password(&data_encoding::HEXLOWER.encode(&filler)).unwrap_or_default()
            })
            .clone()
    }

    /// The account holder: a valid, unrevoked client certificate naming an
    /// enabled account wins; otherwise HTTP Basic from client address `ip`.
    /// Anything else is 401; a login refused by the throttle (see
    /// [`LoginLimits`]) is 429 before the password is checked.
    pub async fn holder(
        &self,
        headers: &HeaderMap,
        peer: Option<&PeerCertificate>,
        ip: Option<IpAddr>,
    ) -> Result<Address, Problem> {
        let cert = peer.and_then(|p| p.0.as_ref()).filter(|der| {
            let revoked = self.client_auth.as_ref().is_some_and(|a| a.is_revoked(der));
            if revoked {
                tracing::info!("revoked client certificate refused");
            }
            !revoked
        });
        if let Some(der) = cert {
            if let Some(addr) = x509::single_rfc822_name_der(der) {
                match self.store.is_enabled(&addr).await {
                    Ok(true) => {
                        tracing::debug!(account = %addr, "authenticated by client certificate");
                        return Ok(addr);
                    }
                    Ok(false) => {
                        tracing::debug!(account = %addr, "client certificate names no enabled account")
                    }
                    Err(e) => return Err(Problem::from(e)),
                }
            }
        }
        let Some((user, password)) = parse_basic(headers) else {
            return Err(unauthorized());
        };
        let address = Address::parse(&user).ok();
        let ip_key = ip.map(address_key).unwrap_or_default();
        // Unknown accounts are throttled alike, so a 429 tells nothing of
        // which accounts exist.
        let account_key = match &address {
            Some(a) => a.as_str().to_string(),
            None => user.chars().take(320).collect(),
        };
        self.ip_failures
            .check(&ip_key)
            .map_err(|s| rate_limited(s, "from this address"))?;
        let known = self.is_known(&account_key, &ip_key);
        let per_account = !known;
        if per_account {
            self.account_failures
                .check(&account_key)
                .map_err(|s| rate_limited(s, "for this account"))?;
        }
        let refund = || {
            self.ip_failures.refund(&ip_key);
            if per_account {
                self.account_failures.refund(&account_key);
            }
        };
        let slot = match self.argon_slot(known) {
            Ok(s) => s,
            Err(p) => {
                refund();
                tracing::debug!("password check refused: the Argon2 queue is full");
                return Err(p);
            }
        };
        let info = match &address {
            // No password was checked: an unreachable database (503)
            // costs the caller no token.
            Some(a) => self.store.login_info(a).await.inspect_err(|_| refund())?,
            None => None,
        };
        let permits = match known {
            true => &self.known_permits,
            false => &self.argon_permits,
        };
        let permit = permits.acquire().await.map_err(Problem::internal)?;
        let mut memory = self
            .argon_memory
            .lock()
            .ok()
            .and_then(|mut pool| pool.pop())
            .unwrap_or_default();
        let (ok, memory) = tokio::task::spawn_blocking(move || {
            let (hash, enabled) = match info {
                Some((h, e)) => (h, e),
                None => (Self::dummy_hash(), false),
            };
            let ok = verify_password_in(&hash, &password, &mut memory) && enabled;
            (ok, memory)
        })
        .await
        .map_err(Problem::internal)?;
        if let Ok(mut pool) = self.argon_memory.lock() {
            pool.push(memory);
        }
        drop(permit);
        drop(slot);
        match address {
            Some(a) if ok => {
                refund();
                self.remember(&account_key, &ip_key);
                tracing::debug!(account = %a, "authenticated by password");
                Ok(a)
            }
            _ => {
                tracing::info!("account login refused");
                Err(unauthorized())
            }
        }
    }

    async fn ca_secret(&self, name: &str) -> Result<Option<Arc<Zeroizing<Vec<u8>>>>, Problem> {
        if let Ok(cache) = self.ca_cache.lock() {
            if let Some((at, secret)) = cache.get(name) {
                if at.elapsed() < CA_CACHE_TTL {
                    return Ok(Some(secret.clone()));
                }
            }
        }
        let found = self.store.ca_secret(name).await?;
        let Ok(mut cache) = self.ca_cache.lock() else {
            return Ok(found.map(Arc::new));
        };
        match found {
            Some(secret) => {
                let secret = Arc::new(secret);
                cache.insert(name.to_string(), (Instant::now(), secret.clone()));
                Ok(Some(secret))
            }
            None => {
                cache.remove(name);
                Ok(None)
            }
        }
    }

    /// Checks a CA-signed request; returns the CA's name and secret.
    pub async fn ca(
        &self,
        method: &str,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<(String, Zeroizing<Vec<u8>>), Problem> {
        let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
        let (Some(name), Some(ts), Some(sig)) = (
            get(authsig::HEADER_CA),
            get(authsig::HEADER_TIMESTAMP),
            get(authsig::HEADER_SIGNATURE),
        ) else {
            return Err(Problem::unauthorized("CA signature headers are missing"));
        };
        let Some(secret) = self.ca_secret(name).await? else {
            tracing::info!(ca = %name, "validation from an unknown CA refused");
            return Err(Problem::unauthorized("unknown CA or bad signature"));
        };
        let cred = Credential::from_bytes(&secret);
        if let Err(e) = cred.verify(method, path, ts, body, sig, now) {
            tracing::info!(ca = %name, error = %e, "CA request signature refused");
            return Err(Problem::unauthorized(match e {
                authsig::SigError::Skew | authsig::SigError::BadTimestamp => {
                    "request timestamp is missing or more than 60 s off"
                }
                _ => "unknown CA or bad signature",
            }));
        }
        Ok((name.to_string(), Zeroizing::new(secret.to_vec())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_round_trip_with_owasp_params() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "correct horse "));
        assert!(!verify_password("not a hash", "x"));
    }

    #[test]
    fn reused_memory_verifies_like_fresh_memory() {
        let h = hash_password("correct horse").unwrap();
        // A hash with other parameters (made by another tool or an older
        // version) is checked with its own.
        let params = Params::new(8 * 1024, 3, 1, None).unwrap();
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let other = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"battery staple", &salt)
            .unwrap()
            .to_string();
        let mut memory = Vec::new();
        for _ in 0..2 {
            assert!(verify_password_in(&h, "correct horse", &mut memory));
            assert!(!verify_password_in(&h, "wrong", &mut memory));
            assert!(verify_password_in(&other, "battery staple", &mut memory));
            assert!(!verify_password_in(&other, "correct horse", &mut memory));
        }
        assert_eq!(memory.len(), ARGON2_M_KIB as usize);
        assert!(!verify_password_in(
            "$argon2id$v=19$m=19456,t=2,p=1$",
            "x",
            &mut memory
        ));
    }

    #[test]
    fn basic_header_parsing() {
        let mut h = HeaderMap::new();
        assert!(parse_basic(&h).is_none());
        let v = data_encoding::BASE64.encode(b"a@example.org:pa:ss");
        h.insert(header::AUTHORIZATION, format!("basic {v}").parse().unwrap());
        let (u, p) = parse_basic(&h).unwrap();
        assert_eq!(u, "a@example.org");
        assert_eq!(p.as_str(), "pa:ss");
        h.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert!(parse_basic(&h).is_none());
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert!(parse_basic(&h).is_none());
    }
}
