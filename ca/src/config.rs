//! The CA's configuration, `DIR/config.json`, written by `init`.
//!
//! MTA routes are not here but in SQLite ([`crate::store`]), so `mta add`
//! takes effect at once on a running server.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::keys::KeyType;

/// Longest certificate validity the contract allows.
pub const MAX_VALIDITY_DAYS: u32 = 825;
/// Longest CRL nextUpdate interval the contract allows (7 days).
pub const MAX_CRL_HOURS: u32 = 7 * 24;
/// The CA/B Forum S/MIME mailbox-validated strict policy.
pub const DEFAULT_POLICY_OID: &str = "2.23.140.1.5.1.3";
/// Base URL used when `init` is not given one.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:7700";

/// Rate limits: a token bucket per client IP (POST requests) and one per
/// account (enrollments and revocations). A rate of 0 disables the limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateLimits {
    pub ip_per_second: f64,
    pub ip_burst: u32,
    pub account_per_second: f64,
    pub account_burst: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            ip_per_second: 1000.0,
            ip_burst: 5000,
            account_per_second: 5.0,
            account_burst: 100,
        }
    }
}

/// Characters a base URL may hold: RFC 3986 unreserved and reserved ones
/// and `%` (no spaces, controls or non-ASCII: the URLs go into
/// certificates as IA5String URIs).
fn url_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c)
}

/// Checks a base URL: an absolute http(s) URL of URI characters only, with
/// a host and without user, query or fragment.
pub fn check_base_url(text: &str) -> anyhow::Result<()> {
    let shown = text.escape_default();
    let bad = |why: &str| anyhow::anyhow!("base URL '{shown}' {why}");
    if let Some(c) = text.chars().find(|c| !url_char(*c)) {
        return Err(bad(&format!(
            "holds '{}'; only ASCII URL characters are allowed",
            c.escape_default()
        )));
    }
    let url = reqwest::Url::parse(text).map_err(|e| bad(&format!("is not a URL: {e}")))?;
    let lower = text.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(bad("must be an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not hold a user name or password"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not hold a query or fragment"));
    }
    Ok(())
}

/// Everything `init` decides and `serve` uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// The CA's name (the CN of a self-signed root).
    pub name: String,
    /// Base of the CRL and caIssuers URLs put into certificates.
    pub base_url: String,
    /// Identity certificate validity in days (≤ 825).
    pub validity_days: u32,
    /// The CA key's type.
    pub key_type: KeyType,
    /// certificatePolicies OID put into identity certificates.
    pub policy_oid: String,
    /// CRL nextUpdate − thisUpdate in hours (≤ 168).
    pub crl_next_update_hours: u32,
    /// Whether the CA certificate was imported (an intermediate).
    #[serde(default)]
    pub imported: bool,
    #[serde(default)]
    pub rate_limits: RateLimits,
    /// The PostgreSQL URL the data lives in (recorded by `init --database`
    /// or `db migrate`); absent: SQLite in the data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The PKCS#11 URI of the CA key (`init --key-uri`), without any
    /// `pin-value`; absent: the key file `ca-key.pem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_uri: Option<String>,
}

impl Config {
    /// A configuration for unit tests: a CA named `name` with a P-256 key,
    /// base URL `http://ca.example:7700/`, 365-day identities, 24-hour CRLs.
    #[cfg(test)]
    pub(crate) fn for_tests(name: &str) -> Config {
        Config {
            name: name.into(),
            base_url: "http://ca.example:7700/".into(),
            validity_days: 365,
            key_type: KeyType::P256,
            policy_oid: DEFAULT_POLICY_OID.into(),
            crl_next_update_hours: 24,
            imported: false,
            rate_limits: Default::default(),
            database: None,
            key_uri: None,
        }
    }

    /// Checks the ranges of SPEC §5.
    pub fn validate(&self) -> anyhow::Result<()> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().any(char::is_control) {
            anyhow::bail!("the CA name must not be empty or hold control characters");
        }
        if self.validity_days == 0 || self.validity_days > MAX_VALIDITY_DAYS {
            anyhow::bail!("validity must be 1 to {MAX_VALIDITY_DAYS} days");
        }
        if self.crl_next_update_hours == 0 || self.crl_next_update_hours > MAX_CRL_HOURS {
            anyhow::bail!("CRL next update must be 1 to {MAX_CRL_HOURS} hours");
        }
        check_base_url(&self.base_url)?;
        self.policy_oid
            .parse::<der::asn1::ObjectIdentifier>()
            .map_err(|_| anyhow::anyhow!("policy OID '{}' is not an OID", self.policy_oid))?;
        Ok(())
    }

    /// The base URL without a trailing slash.
    pub fn base(&self) -> &str {
        self.base_url.trim_end_matches('/')
    }

    /// URL of the DER CRL.
    pub fn crl_url(&self) -> String {
        format!("{}/v1/crl.der", self.base())
    }

    /// URL of the DER CA certificate.
    pub fn ca_url(&self) -> String {
        format!("{}/v1/ca.der", self.base())
    }

    /// Reads `DIR/config.json`.
    pub fn load(dir: &Path) -> anyhow::Result<Config> {
        let path = Paths::new(dir).config;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (run 'mailid-ca init' first)", path.display()))?;
        let cfg: Config =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Writes `DIR/config.json`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = Paths::new(dir).config;
        let text = serde_json::to_string_pretty(self)?;
        mailid_shared::files::write_atomic_mode(&path, (text + "\n").as_bytes(), 0o600)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// The files in a CA data directory.
#[derive(Debug, Clone)]
pub struct Paths {
    pub config: PathBuf,
    /// The CA certificate, or the chain (the CA first, the root last).
    pub ca_pem: PathBuf,
    /// The CA key, PKCS#8 PEM, possibly encrypted (absent when the key is
    /// in a PKCS#11 token).
    pub key: PathBuf,
    pub db: PathBuf,
    /// The latest signed CRL (DER).
    pub crl: PathBuf,
}

impl Paths {
    pub fn new(dir: &Path) -> Paths {
        Paths {
            config: dir.join("config.json"),
            ca_pem: dir.join("ca.pem"),
            key: dir.join("ca-key.pem"),
            db: dir.join("ca.sqlite"),
            crl: dir.join("crl.der"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_base_url;

    #[test]
    fn base_urls_are_absolute_ascii_http_urls() {
        for good in [
            "http://127.0.0.1:7700",
            "https://ca.example.org/",
            "https://ca.example.org:8443/mailid/v1-base",
            "http://[::1]:7700",
        ] {
            assert!(check_base_url(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "notaurl",
            "http://exa mple/",
            "http://ex\u{e4}mple.org",
            "http://example.org/caf\u{e9}",
            "http://example.org/a\tb",
            "ftp://example.org",
            "http:example.org",
            "http://user:pw@example.org",
            "http://example.org/?q=1",
            "http://example.org/#f",
            "http://",
        ] {
            assert!(check_base_url(bad).is_err(), "{bad}");
        }
    }
}
