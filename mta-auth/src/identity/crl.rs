//! Revocation checks against the issuing CA's latest CRL: fetched from the
//! certificate's CRL distribution point, verified with the issuer's key,
//! kept until its nextUpdate (and used, stale, when a fetch fails).

use std::time::Duration;

use der::{Decode, Encode};
use mailid_shared::problem::ErrorCode;
use mailid_shared::{sigverify, Problem};
use x509_cert::crl::CertificateList;
use x509_cert::Certificate;

use super::x509;
use crate::store::{CrlRow, Store};

/// Time allowed to fetch a CRL.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest CRL accepted.
pub const MAX_CRL_BYTES: usize = 8 * 1024 * 1024;

/// Fetches, verifies and keeps CRLs.
pub struct CrlChecker {
    store: Store,
    http: reqwest::Client,
}

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

/// Whether the CRL lists the certificate's serial number.
pub fn lists_serial(list: &CertificateList, cert: &Certificate) -> bool {
    list.tbs_cert_list
        .revoked_certificates
        .as_ref()
        .is_some_and(|revoked| {
            revoked
                .iter()
                .any(|r| r.serial_number == cert.tbs_certificate.serial_number)
        })
}

fn unavailable() -> Problem {
    Problem::new(
        ErrorCode::MtaUnavailable,
        "the issuing CA's CRL cannot be fetched and none is cached; try again later",
    )
}

impl CrlChecker {
    /// A checker over `store` with its own HTTP client.
    pub fn new(store: Store) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(CrlChecker { store, http })
    }

    async fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("fetching {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("fetching {url}: HTTP {}", resp.status()));
        }
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
        if body.starts_with(b"-----BEGIN") {
            let text = String::from_utf8_lossy(&body);
            return mailid_shared::pem::decode_one(&text, &["X509 CRL"])
                .map_err(|e| format!("CRL at {url}: {e}"));
        }
        Ok(body)
    }

    /// Whether `cert`, issued by `issuer`, is revoked in the latest CRL.
    /// No usable CRL at all is `mta-unavailable`.
    pub async fn is_revoked(
        &self,
        cert: &Certificate,
        issuer: &Certificate,
        now: i64,
    ) -> Result<bool, Problem> {
        let Some(url) = x509::crl_urls(cert).into_iter().next() else {
            return Err(Problem::bad_request(
                "the certificate names no http CRL distribution point",
            ));
        };
        let cached = match self.store.crl(&url).await.map_err(Problem::internal)? {
            Some(row) => verify_crl(&row.der, issuer).ok(),
            None => None,
        };
        if let Some(c) = &cached {
            if c.row.next_update.is_some_and(|n| n > now) {
                return Ok(lists_serial(&c.list, cert));
            }
        }
        let fresh = match self.fetch(&url).await {
            Ok(der) => verify_crl(&der, issuer),
            Err(e) => Err(e),
        };
        let best = match (fresh, cached) {
            (Ok(f), Some(c)) if c.row.this_update > f.row.this_update => c,
            (Ok(f), _) => {
                self.store
                    .put_crl(&url, f.row.clone())
                    .await
                    .map_err(Problem::internal)?;
                f
            }
            (Err(e), Some(c)) => {
                tracing::warn!(%url, error = %e, "CRL fetch failed; using the cached CRL");
                c
            }
            (Err(e), None) => {
                tracing::warn!(%url, error = %e, "CRL fetch failed and none is cached");
                return Err(unavailable());
            }
        };
        Ok(lists_serial(&best.list, cert))
    }
}
