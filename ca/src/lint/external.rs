//! The optional external linter (`serve --lint-url URL`, SPEC §9): a
//! pkilint REST server judges a copy of each to-be-signed certificate or
//! CRL, signed with a throwaway key of the CA key's algorithm (pkilint
//! lints whole documents; it never sees a signature by the CA key).
//!
//! Fail-closed: a finding of severity WARNING or above, an answer that is
//! not a lint result, a linter that is unreachable or does not answer
//! within the timeout all come back as findings, and any finding refuses
//! the signature. Endpoints (pkilint ≥ 0.10 REST API): `POST
//! /certificate/cabf-smime` (pkilint picks the S/MIME BR linter from the
//! certificate's policy) and `POST /crl/pkix/crl`, each with `{"b64": DER}`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use der::{Encode, Header, Length, Tag};
use rcgen::{KeyPair, SignatureAlgorithm, SigningKey};
use serde::Deserialize;
use spki::AlgorithmIdentifierRef;

use super::Finding;

/// How long one lint request may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The rules of the external linter's findings: pkilint found something
/// at WARNING or above; it answered something that is not a lint result;
/// it is unreachable or silent; the signed copy could not be made.
pub const RULE_NAMES: &[&str] = &[
    "external.pkilint",
    "external.refused",
    "external.unavailable",
    "external.copy",
];

/// pkilint severities that refuse a signature.
const REFUSING: &[&str] = &["FATAL", "ERROR", "WARNING"];

/// The algorithms a throwaway key is made for, in [`Keys`] order.
fn algorithms() -> [&'static SignatureAlgorithm; 5] {
    [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_RSA_SHA256,
        &rcgen::PKCS_RSA_SHA384,
        &rcgen::PKCS_RSA_SHA512,
    ]
}

/// One throwaway key per algorithm, made on first use and kept for the
/// process (an RSA key takes a while to make; none is ever trusted).
#[derive(Default)]
struct Keys([OnceLock<KeyPair>; 5]);

impl Keys {
    fn for_algorithm(&self, alg: &AlgorithmIdentifierRef) -> anyhow::Result<&KeyPair> {
        let i = algorithms()
            .iter()
            .position(|a| {
                super::signature_algorithm(a)
                    .is_ok_and(|want| super::same_algorithm(&want, alg.oid, alg.parameters))
            })
            .ok_or_else(|| anyhow::anyhow!("no throwaway key for this signature algorithm"))?;
        if let Some(k) = self.0[i].get() {
            return Ok(k);
        }
        let alg = algorithms()[i];
        let key = if i >= 2 {
            KeyPair::generate_rsa_for(alg, rcgen::RsaKeySize::_2048)
        } else {
            KeyPair::generate_for(alg)
        }
        .map_err(|e| anyhow::anyhow!("making a throwaway key: {e}"))?;
        Ok(self.0[i].get_or_init(|| key))
    }
}

/// A pkilint REST server.
#[derive(Clone)]
pub struct ExternalLinter {
    base: String,
    http: reqwest::Client,
    keys: Arc<Keys>,
}

#[derive(Deserialize)]
struct LintResults {
    results: Vec<LintResult>,
}

#[derive(Deserialize)]
struct LintResult {
    node_path: String,
    finding_descriptions: Vec<FindingDescription>,
}

#[derive(Deserialize)]
struct FindingDescription {
    severity: String,
    code: String,
    message: Option<String>,
}

/// What is being linted.
#[derive(Clone, Copy)]
enum Kind {
    Certificate,
    Crl,
}

impl ExternalLinter {
    /// A linter at `base_url` (e.g. `http://127.0.0.1:8000`) with a bound
    /// on each request.
    pub fn new(base_url: &str, timeout: Duration) -> anyhow::Result<ExternalLinter> {
        let url = reqwest::Url::parse(base_url)
            .map_err(|e| anyhow::anyhow!("lint URL '{}': {e}", base_url.escape_default()))?;
        if !matches!(url.scheme(), "http" | "https") {
            anyhow::bail!("lint URL '{}' is not http(s)", base_url.escape_default());
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        Ok(ExternalLinter {
            base: base_url.trim_end_matches('/').to_string(),
            http,
            keys: Arc::default(),
        })
    }

    /// Lints a to-be-signed identity certificate (DER TBSCertificate).
    /// Empty: pkilint found nothing at WARNING or above.
    pub async fn check_certificate(&self, tbs_der: &[u8]) -> Vec<Finding> {
        self.check(Kind::Certificate, tbs_der).await
    }

    /// Lints a to-be-signed CRL (DER TBSCertList).
    pub async fn check_crl(&self, tbs_der: &[u8]) -> Vec<Finding> {
        self.check(Kind::Crl, tbs_der).await
    }

    async fn check(&self, kind: Kind, tbs_der: &[u8]) -> Vec<Finding> {
        let tbs = tbs_der.to_vec();
        let keys = self.keys.clone();
        // Signing (and making an RSA key the first time) is CPU work.
        let signed = tokio::task::spawn_blocking(move || signed_copy(kind, &tbs, &keys)).await;
        let der = match signed {
            Ok(Ok(der)) => der,
            Ok(Err(e)) => return vec![Finding::new("external.copy", e.to_string())],
            Err(e) => return vec![Finding::new("external.copy", e.to_string())],
        };
        let path = match kind {
            Kind::Certificate => "/certificate/cabf-smime",
            Kind::Crl => "/crl/pkix/crl",
        };
        let body = serde_json::json!({
            "b64": base64::engine::general_purpose::STANDARD.encode(&der)
        });
        let url = format!("{}{path}", self.base);
        let answer = match self.http.post(&url).json(&body).send().await {
            Ok(a) => a,
            Err(e) => {
                let why = if e.is_timeout() {
                    "did not answer in time".to_string()
                } else {
                    format!("is unreachable: {e}")
                };
                return vec![Finding::new(
                    "external.unavailable",
                    format!("linter {url} {why}"),
                )];
            }
        };
        let status = answer.status();
        let text = match answer.text().await {
            Ok(t) => t,
            Err(e) => {
                return vec![Finding::new(
                    "external.unavailable",
                    format!("linter {url}: reading the answer: {e}"),
                )]
            }
        };
        if !status.is_success() {
            let shown: String = text.chars().take(300).collect();
            return vec![Finding::new(
                "external.refused",
                format!("linter {url} answered {status}: {}", shown.escape_default()),
            )];
        }
        match serde_json::from_str::<LintResults>(&text) {
            Ok(r) => findings(&r),
            Err(e) => vec![Finding::new(
                "external.refused",
                format!("linter {url} answered something that is not a lint result: {e}"),
            )],
        }
    }
}

/// pkilint's findings at WARNING or above.
fn findings(r: &LintResults) -> Vec<Finding> {
    r.results
        .iter()
        .flat_map(|res| {
            res.finding_descriptions
                .iter()
                .filter(|d| REFUSING.contains(&d.severity.as_str()))
                .map(move |d| {
                    let message = d
                        .message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default();
                    Finding::new(
                        "external.pkilint",
                        format!("{} {} at {}{message}", d.severity, d.code, res.node_path),
                    )
                })
        })
        .collect()
}

/// The document `tbs` makes when signed by a throwaway key of the
/// algorithm its signature field names.
fn signed_copy(kind: Kind, tbs: &[u8], keys: &Keys) -> anyhow::Result<Vec<u8>> {
    let alg = match kind {
        Kind::Certificate => super::tbs::decode(tbs)?.signature,
        Kind::Crl => super::crl::decode_head(tbs)?.signature,
    };
    let key = keys.for_algorithm(&alg)?;
    let alg = alg.to_der()?;
    let sig = key
        .sign(tbs)
        .map_err(|e| anyhow::anyhow!("signing the copy: {e}"))?;
    let bits = der::asn1::BitStringRef::from_bytes(&sig)?.to_der()?;
    let len = tbs.len() + alg.len() + bits.len();
    let mut out = Vec::with_capacity(len + 8);
    Header::new(Tag::Sequence, Length::try_from(len)?)?.encode_to_vec(&mut out)?;
    out.extend_from_slice(tbs);
    out.extend_from_slice(&alg);
    out.extend_from_slice(&bits);
    Ok(out)
}

#[cfg(test)]
#[path = "external_tests.rs"]
mod tests;
