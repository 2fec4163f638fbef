//! The service configuration: `config.json` in the data directory, written
//! by `init`, overridable by `serve` flags.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use mailid_shared::pg::PgUrl;

use crate::lockout::LockoutPolicy;
use crate::store::Location;
use crate::totp::TotpParams;

/// Name of the configuration file in the data directory.
pub const CONFIG_FILE: &str = "config.json";
/// Name of the SQLite database in the data directory.
pub const DB_FILE: &str = "mta-auth.sqlite";
/// Default listen address (SPEC §4).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7701";

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}

/// Default seconds after which a lookup revalidates a cached CRL.
pub const DEFAULT_CRL_RECHECK_SECS: u64 = 2;

fn default_crl_recheck_secs() -> u64 {
    DEFAULT_CRL_RECHECK_SECS
}

/// Default seconds between re-reads of the `--client-crl` sources.
pub const DEFAULT_CLIENT_CRL_REFRESH_SECS: u64 = 60;

fn default_client_crl_refresh_secs() -> u64 {
    DEFAULT_CLIENT_CRL_REFRESH_SECS
}

/// Throttling of HTTP Basic logins (each one costs an Argon2id run).
///
/// Two token buckets count *failed* logins: a token is taken before the
/// password is checked and given back when it is right, so a client that
/// knows its passwords is never slowed, however fast it logs in. An empty
/// bucket answers 429 `rate-limited` with `Retry-After`, before Argon2 runs.
/// The per-account bucket is skipped for an address that logged in to the
/// account successfully in the last [`LoginLimits::known_address_days`], and
/// such a login has Argon2 slots of its own (as many as the others) and is
/// never refused for a full queue, so wrong passwords sent from elsewhere
/// neither lock the holder out nor queue ahead of her; a holder on a new address waits at most one refill interval
/// once the guessing stops. A rate of 0 disables its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoginLimits {
    /// Failed logins per minute refilled per client address (IPv4 address
    /// or IPv6 /64).
    pub ip_failures_per_minute: u32,
    /// Failed logins a client address may make at once.
    pub ip_failure_burst: u32,
    /// Failed logins per minute refilled per account.
    pub account_failures_per_minute: u32,
    /// Failed logins an account may take at once.
    pub account_failure_burst: u32,
    /// Days an address that logged in to an account stays exempt from the
    /// account's bucket (kept in memory; 0: no exemption).
    pub known_address_days: u32,
    /// Password checks that may wait for an Argon2 slot (beyond those
    /// running); more get 429 at once. 0: no bound.
    pub argon2_queue: u32,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            ip_failures_per_minute: 10,
            ip_failure_burst: 10,
            account_failures_per_minute: 10,
            account_failure_burst: 20,
            known_address_days: 30,
            argon2_queue: 128,
        }
    }
}

/// Settings kept in `config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// TOTP code parameters.
    #[serde(default)]
    pub totp: TotpParams,
    /// Lockout threshold and back-off.
    #[serde(default)]
    pub lockout: LockoutPolicy,
    /// Listen address used when `serve` has no `--listen`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Seconds after which `GET /v1/identity/{address}` revalidates the
    /// cached CRL of the published certificate's CA (0: on every lookup).
    #[serde(default = "default_crl_recheck_secs")]
    pub crl_recheck_secs: u64,
    /// Throttling of password logins.
    #[serde(default)]
    pub login_limits: LoginLimits,
    /// Seconds between re-reads (files) or re-fetches (URLs) of the CRLs
    /// given with `serve --client-crl`.
    #[serde(default = "default_client_crl_refresh_secs")]
    pub client_crl_refresh_secs: u64,
    /// The PostgreSQL database URL recorded by `init --database` or
    /// `db migrate --to`; absent: the SQLite file in the data dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseUrl>,
    /// The identity log's origin (checkpoint and key name, SPEC §11);
    /// absent: the one the database recorded, or `<hostname>/mailid-log`
    /// when the first `init` or `serve` records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_origin: Option<String>,
}

/// A database URL as written in `config.json` (which is 0600: it may hold
/// a password); `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", mailid_shared::pg::redact(&self.0))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            totp: TotpParams::default(),
            lockout: LockoutPolicy::default(),
            listen: default_listen(),
            crl_recheck_secs: default_crl_recheck_secs(),
            login_limits: LoginLimits::default(),
            client_crl_refresh_secs: default_client_crl_refresh_secs(),
            database: None,
            log_origin: None,
        }
    }
}

impl Config {
    /// Checks every value.
    pub fn check(&self) -> anyhow::Result<()> {
        self.totp.check().map_err(anyhow::Error::msg)?;
        self.lockout.check().map_err(anyhow::Error::msg)?;
        if let Some(o) = &self.log_origin {
            if !mailid_shared::translog::is_origin_valid(o) {
                anyhow::bail!("log_origin {o:?} must be non-empty ASCII without spaces or '+'");
            }
        }
        if self.client_crl_refresh_secs == 0 {
            anyhow::bail!("client_crl_refresh_secs must be at least 1");
        }
        Ok(())
    }

    /// Path of the configuration file in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(CONFIG_FILE)
    }

    /// Loads and checks `dir/config.json`.
    pub fn load(dir: &Path) -> anyhow::Result<Config> {
        let path = Self::path(dir);
        if !path.exists() {
            anyhow::bail!(
                "{} is not initialised (no {CONFIG_FILE}); run `mailid-mta-auth init --data-dir {}` first",
                dir.display(),
                dir.display()
            );
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let cfg: Config =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        cfg.check()
            .with_context(|| format!("checking {}", path.display()))?;
        Ok(cfg)
    }

    /// Where the data dir's rows are: `flag` (`--database` or
    /// `MAILID_DATABASE`, overriding), else the URL in `config.json`, else
    /// the SQLite file in `dir`. A bad URL is an error naming the problem,
    /// never showing a password.
    pub fn location(&self, dir: &Path, flag: Option<&str>) -> anyhow::Result<Location> {
        let text = flag
            .filter(|t| !t.trim().is_empty())
            .or(self.database.as_ref().map(|d| d.0.as_str()));
        match text {
            Some(text) => Ok(Location::Postgres(Box::new(PgUrl::parse(text)?))),
            None => Ok(Location::Sqlite(dir.join(DB_FILE))),
        }
    }

    /// Replaces `dir/config.json` atomically (0600).
    pub fn replace(&self, dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(dir);
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        mailid_shared::files::write_atomic_mode(&path, text.as_bytes(), 0o600)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Writes `dir/config.json` with mode 0600 (never overwrites).
    pub fn create(&self, dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(dir);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_partial_files() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::default();
        cfg.create(dir.path()).unwrap();
        assert_eq!(Config::load(dir.path()).unwrap(), cfg);
        assert!(cfg.create(dir.path()).is_err(), "never overwrites");
        let partial: Config =
            serde_json::from_str(r#"{"lockout":{"threshold":3,"base_secs":2}}"#).unwrap();
        assert_eq!(partial.totp, TotpParams::default());
        assert_eq!(partial.lockout.threshold, 3);
        assert_eq!(partial.crl_recheck_secs, DEFAULT_CRL_RECHECK_SECS);
        assert_eq!(partial.login_limits, LoginLimits::default());
        let limits: Config =
            serde_json::from_str(r#"{"login_limits":{"ip_failures_per_minute":0}}"#).unwrap();
        assert_eq!(limits.login_limits.ip_failures_per_minute, 0);
        assert_eq!(limits.login_limits.argon2_queue, 128);
        assert!(Config::load(&dir.path().join("nope")).is_err());
    }
}
