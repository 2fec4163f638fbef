//! Revocation checks against the issuing CA's latest CRL, fetched from the
//! certificate's CRL distribution point and verified with the issuer's key.
//!
//! One cache slot per (distribution point, issuer) holds the latest verified
//! CRL in memory, with its revoked serial numbers in a hash set (built once
//! per CRL, so a check is O(1) in the number of entries) and the validators
//! the CA sent with it (`ETag`, `Last-Modified`). The CRL itself is also kept
//! in SQLite so that a restart starts from it.
//!
//! * An upload always revalidates the slot with a conditional GET
//!   (`If-None-Match` / `If-Modified-Since`): a 304 keeps the cached CRL, a
//!   200 replaces it once it verifies and only if its CRL number (thisUpdate
//!   when either lacks one) is not lower than the cached one's.
//! * A lookup revalidates the same way when the slot was last tried more than
//!   the recheck interval ago; at most one refresh per slot is in flight, and
//!   other lookups use the cached CRL meanwhile.
//! * A failed fetch keeps the cached CRL (even past its nextUpdate). An upload
//!   with no CRL at all is `mta-unavailable`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use der::{Decode, Encode};
use mailid_shared::problem::ErrorCode;
use mailid_shared::{sigverify, Problem};
use sha2::{Digest, Sha256};
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::CrlNumber;
use x509_cert::Certificate;

use super::x509;
use crate::store::{CrlRow, Store};

/// Time allowed to fetch a CRL.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest CRL accepted.
pub const MAX_CRL_BYTES: usize = 8 * 1024 * 1024;

const OID_CRL_NUMBER: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.5.29.20");

/// A CRL that verified with the issuer's key.
pub struct VerifiedCrl {
    /// The parsed CRL.
    pub list: CertificateList,
    /// What the store keeps of it.
    pub row: CrlRow,
}

/// Parses a DER CRL and verifies that `issuer` issued and signed it.
pub fn verify_crl(der: &[u8], issuer: &Certificate) -> Result<VerifiedCrl, String> {
    let list = CertificateList::from_der(der).map_err(|e| format!("unparsable CRL: {e}"))?;
    if list.tbs_cert_list.issuer != issuer.tbs_certificate.subject {
        return Err("CRL issuer is not the certificate's issuer".into());
    }
    let tbs = list
        .tbs_cert_list
        .to_der()
        .map_err(|e| format!("CRL encoding: {e}"))?;
    sigverify::verify(
        &issuer.tbs_certificate.subject_public_key_info,
        &list.signature_algorithm,
        &tbs,
        list.signature.raw_bytes(),
    )
    .map_err(|e| format!("CRL signature: {e}"))?;
    let this_update = list.tbs_cert_list.this_update.to_unix_duration().as_secs() as i64;
    let next_update = list
        .tbs_cert_list
        .next_update
        .map(|t| t.to_unix_duration().as_secs() as i64);
    Ok(VerifiedCrl {
        row: CrlRow {
            der: der.to_vec(),
            this_update,
            next_update,
        },
        list,
    })
}

/// The serial numbers a CRL lists, as magnitudes (see [`magnitude`]).
pub(crate) fn revoked_serials(list: &CertificateList) -> HashSet<Vec<u8>> {
    list.tbs_cert_list
        .revoked_certificates
        .as_ref()
        .map(|r| {
            r.iter()
                .map(|e| magnitude(e.serial_number.as_bytes()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `revoked` (from [`revoked_serials`]) holds the certificate's
/// serial number.
pub(crate) fn holds_serial(revoked: &HashSet<Vec<u8>>, cert: &Certificate) -> bool {
    revoked.contains(&magnitude(cert.tbs_certificate.serial_number.as_bytes()))
}

/// Whether the CRL lists the certificate's serial number: the same test the
/// cache makes, on a CRL that is not cached (the fuzz targets use it).
pub fn lists_serial(list: &CertificateList, cert: &Certificate) -> bool {
    holds_serial(&revoked_serials(list), cert)
}

/// The magnitude of a non-negative DER integer without leading zero octets,
/// so that equal numbers compare equal however they were encoded.
fn magnitude(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

/// Orders two magnitudes as unsigned big-endian integers.
pub(crate) fn cmp_magnitude(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The CRL number extension of a CRL, if it has a readable one.
pub fn crl_number(list: &CertificateList) -> Option<Vec<u8>> {
    let ext = list
        .tbs_cert_list
        .crl_extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == OID_CRL_NUMBER)?;
    let n = CrlNumber::from_der(ext.extn_value.as_bytes()).ok()?;
    Some(magnitude(n.0.as_bytes()))
}

/// A verified CRL as a cache slot holds it.
struct Cached {
    /// Serial numbers on the CRL (magnitudes).
    revoked: HashSet<Vec<u8>>,
    this_update: i64,
    number: Option<Vec<u8>>,
    etag: Option<String>,
    last_modified: Option<String>,
}

impl Cached {
    fn new(v: &VerifiedCrl, etag: Option<String>, last_modified: Option<String>) -> Cached {
        Cached {
            revoked: revoked_serials(&v.list),
            this_update: v.row.this_update,
            number: crl_number(&v.list),
            etag,
            last_modified,
        }
    }

    /// Whether `self` may replace `old`: a CRL number not lower than the
    /// old one's, or (when either has none) a thisUpdate not earlier.
    fn not_older_than(&self, old: &Cached) -> bool {
        match (&self.number, &old.number) {
            (Some(new), Some(old)) => cmp_magnitude(new, old).is_ge(),
            _ => self.this_update >= old.this_update,
        }
    }

    fn lists(&self, cert: &Certificate) -> bool {
        holds_serial(&self.revoked, cert)
    }
}

/// What a slot knows.
#[derive(Default)]
struct SlotState {
    crl: Option<Arc<Cached>>,
    /// When the distribution point was last tried (successfully or not).
    tried: Option<Instant>,
    /// Whether the CRL kept in SQLite has been loaded.
    loaded: bool,
}

/// The cache for one (distribution point, issuer).
#[derive(Default)]
struct Slot {
    /// Held while the slot is refreshed: one refresh at a time.
    refresh: tokio::sync::Mutex<()>,
    state: Mutex<SlotState>,
}

impl Slot {
    fn crl(&self) -> Option<Arc<Cached>> {
        self.state.lock().expect("slot lock").crl.clone()
    }

    /// The cached CRL and whether it is due for revalidation.
    fn peek(&self, recheck: Duration) -> (Option<Arc<Cached>>, bool) {
        let s = self.state.lock().expect("slot lock");
        let due = s.tried.is_none_or(|t| t.elapsed() >= recheck);
        (s.crl.clone(), due)
    }
}

/// The answer of the distribution point.
enum Fetched {
    NotModified,
    Body {
        der: Vec<u8>,
        etag: Option<String>,
        last_modified: Option<String>,
    },
}

/// Slots are keyed by URL and a digest of the issuer's name and key.
type SlotKey = (String, [u8; 32]);

/// Fetches, verifies and keeps CRLs.
pub struct CrlChecker {
    store: Store,
    http: reqwest::Client,
    recheck: Duration,
    slots: Mutex<HashMap<SlotKey, Arc<Slot>>>,
}

fn unavailable() -> Problem {
    Problem::new(
        ErrorCode::MtaUnavailable,
        "the issuing CA's CRL cannot be fetched and none is cached; try again later",
    )
}

fn issuer_digest(issuer: &Certificate) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(issuer.tbs_certificate.subject.to_der().unwrap_or_default());
    h.update(
        issuer
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .unwrap_or_default(),
    );
    h.finalize().into()
}

fn header_text(resp: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl CrlChecker {
    /// A checker over `store` with its own HTTP client; lookups revalidate
    /// a cached CRL after `recheck`.
    pub fn new(store: Store, recheck: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(CrlChecker {
            store,
            http,
            recheck,
            slots: Mutex::new(HashMap::new()),
        })
    }

    fn slot(&self, url: &str, issuer: &Certificate) -> Arc<Slot> {
        let key = (url.to_string(), issuer_digest(issuer));
        self.slots
            .lock()
            .expect("slots lock")
            .entry(key)
            .or_default()
            .clone()
    }

    async fn fetch(&self, url: &str, cached: Option<&Cached>) -> Result<Fetched, String> {
        let mut req = self.http.get(url);
        if let Some(c) = cached {
            if let Some(e) = &c.etag {
                req = req.header(reqwest::header::IF_NONE_MATCH, e);
            }
            if let Some(m) = &c.last_modified {
                req = req.header(reqwest::header::IF_MODIFIED_SINCE, m);
            }
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| format!("fetching {url}: {e}"))?;
        if resp.status() == reqwest::StatusCode::NOT_MODIFIED {
            return match cached {
                Some(_) => Ok(Fetched::NotModified),
                None => Err(format!("fetching {url}: 304 without a cached CRL")),
            };
        }
        if !resp.status().is_success() {
            return Err(format!("fetching {url}: HTTP {}", resp.status()));
        }
        let etag = header_text(&resp, reqwest::header::ETAG);
        let last_modified = header_text(&resp, reqwest::header::LAST_MODIFIED);
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("reading {url}: {e}"))?
        {
            if body.len() + chunk.len() > MAX_CRL_BYTES {
                return Err(format!("CRL at {url} is too large"));
            }
            body.extend_from_slice(&chunk);
        }
        let der = if body.starts_with(b"-----BEGIN") {
            let text = String::from_utf8_lossy(&body);
            mailid_shared::pem::decode_one(&text, &["X509 CRL"])
                .map_err(|e| format!("CRL at {url}: {e}"))?
        } else {
            body
        };
        Ok(Fetched::Body {
            der,
            etag,
            last_modified,
        })
    }

    /// Loads the CRL kept in the database into a slot that has not looked yet.
    async fn load(&self, slot: &Slot, url: &str, issuer: &Certificate) {
        if slot.state.lock().expect("slot lock").loaded {
            return;
        }
        let kept = match self.store.crl(url).await {
            Ok(Some(row)) => match verify_crl(&row.der, issuer) {
                Ok(v) => Some(Arc::new(Cached::new(&v, None, None))),
                Err(e) => {
                    tracing::warn!(%url, error = %e, "kept CRL does not verify; ignored");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(%url, error = %e, "reading the kept CRL failed");
                None
            }
        };
        let mut s = slot.state.lock().expect("slot lock");
        s.loaded = true;
        if s.crl.is_none() {
            s.crl = kept;
        }
    }

    /// Revalidates a slot with its distribution point. The caller holds
    /// the slot's refresh lock. Failures keep the cached CRL.
    async fn refresh(&self, slot: &Slot, url: &str, issuer: &Certificate) {
        self.load(slot, url, issuer).await;
        let current = slot.crl();
        let fetched = self.fetch(url, current.as_deref()).await;
        slot.state.lock().expect("slot lock").tried = Some(Instant::now());
        let (der, etag, last_modified) = match fetched {
            Ok(Fetched::NotModified) => return,
            Ok(Fetched::Body {
                der,
                etag,
                last_modified,
            }) => (der, etag, last_modified),
            Err(e) => {
                match current {
                    Some(_) => {
                        tracing::warn!(%url, error = %e, "CRL fetch failed; using the cached CRL")
                    }
                    None => tracing::warn!(%url, error = %e, "CRL fetch failed and none is cached"),
                }
                return;
            }
        };
        let verified = match verify_crl(&der, issuer) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(%url, error = %e, "fetched CRL refused; keeping the cached one");
                return;
            }
        };
        let fresh = Cached::new(&verified, etag, last_modified);
        if let Some(old) = &current {
            if !fresh.not_older_than(old) {
                tracing::warn!(%url, "fetched CRL is older than the cached one; keeping the cached one");
                return;
            }
        }
        // The stored copy only serves a restart: failing to write it (a
        // full disk) must not stop the check.
        if let Err(e) = self.store.put_crl(url, verified.row).await {
            tracing::warn!(%url, error = %e, "keeping the CRL in the database failed");
        }
        slot.state.lock().expect("slot lock").crl = Some(Arc::new(fresh));
    }

    /// Whether `cert`, issued by `issuer`, is revoked in the latest CRL,
    /// after revalidating the cached CRL with the distribution point (for
    /// an upload). No usable CRL at all is `mta-unavailable`.
    pub async fn is_revoked(
        &self,
        cert: &Certificate,
        issuer: &Certificate,
    ) -> Result<bool, Problem> {
        let Some(url) = x509::crl_urls(cert).into_iter().next() else {
            return Err(Problem::bad_request(
                "the certificate names no http CRL distribution point",
            ));
        };
        let slot = self.slot(&url, issuer);
        let crl = {
            let _guard = slot.refresh.lock().await;
            self.refresh(&slot, &url, issuer).await;
            slot.crl()
        };
        match crl {
            Some(c) => Ok(c.lists(cert)),
            None => Err(unavailable()),
        }
    }

    /// Whether a published `cert` is revoked (for a lookup): the cached CRL,
    /// revalidated first when it was last tried more than the recheck
    /// interval ago and no other refresh of it is running. `None` when no
    /// CRL is known at all.
    pub async fn is_revoked_cached(
        &self,
        cert: &Certificate,
        issuer: &Certificate,
    ) -> Option<bool> {
        let url = x509::crl_urls(cert).into_iter().next()?;
        let slot = self.slot(&url, issuer);
        let (crl, due) = slot.peek(self.recheck);
        let crl = match (crl, due) {
            (Some(c), false) => Some(c),
            (Some(c), true) => match slot.refresh.try_lock() {
                // Someone else is refreshing: use the cache meanwhile.
                Err(_) => Some(c),
                Ok(_guard) => {
                    if slot.peek(self.recheck).1 {
                        self.refresh(&slot, &url, issuer).await;
                    }
                    slot.crl()
                }
            },
            // Nothing cached: wait for a running refresh, or do one.
            (None, _) => {
                let _guard = slot.refresh.lock().await;
                let (crl, due) = slot.peek(self.recheck);
                if crl.is_none() && due {
                    self.refresh(&slot, &url, issuer).await;
                }
                slot.crl()
            }
        };
        crl.map(|c| c.lists(cert))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magnitudes_compare_as_integers() {
        assert_eq!(magnitude(&[0, 0, 1, 2]), vec![1, 2]);
        assert_eq!(magnitude(&[0]), Vec::<u8>::new());
        use std::cmp::Ordering::*;
        assert_eq!(cmp_magnitude(&[1, 0], &[0xff]), Greater);
        assert_eq!(cmp_magnitude(&[2], &[3]), Less);
        assert_eq!(cmp_magnitude(&[], &[]), Equal);
    }
}
