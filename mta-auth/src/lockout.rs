//! Lockout after consecutive failed validations for one (account, key),
//! with a back-off that doubles with every lockout since the last success,
//! up to a cap. Pure logic; the store persists one [`LockState`] per
//! (account, key), and `crate::validate` counts only failures a guess could
//! have turned into a success (the key has a live code).

use serde::{Deserialize, Serialize};

pub use crate::store::LockState;

/// Largest exponent of the doubling (the back-off stops growing there).
const MAX_DOUBLINGS: u32 = 16;

/// When to lock and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutPolicy {
    /// Consecutive failures that lock the account.
    pub threshold: u32,
    /// Length of the first lockout in seconds.
    pub base_secs: u64,
    /// Longest lockout in seconds (the doubling stops there).
    #[serde(default = "default_max_secs")]
    pub max_secs: u64,
}

/// Default cap of the back-off: one hour (SPEC §4).
pub const DEFAULT_MAX_SECS: u64 = 3600;

fn default_max_secs() -> u64 {
    DEFAULT_MAX_SECS
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            threshold: 5,
            base_secs: 60,
            max_secs: DEFAULT_MAX_SECS,
        }
    }
}

impl LockoutPolicy {
    /// Checks the ranges this service supports.
    pub fn check(&self) -> Result<(), String> {
        if self.threshold == 0 {
            return Err("lockout threshold must be at least 1".into());
        }
        if !(1..=86_400).contains(&self.base_secs) {
            return Err("lockout base must be between 1 and 86400 seconds".into());
        }
        if !(self.base_secs..=86_400).contains(&self.max_secs) {
            return Err(
                "lockout cap (max_secs) must be between the lockout base and 86400 seconds".into(),
            );
        }
        Ok(())
    }

    /// Length of a lockout after `previous` lockouts since the last success.
    pub fn backoff(&self, previous: u32) -> u64 {
        (self.base_secs << previous.min(MAX_DOUBLINGS)).min(self.max_secs)
    }
}

/// The rules of the persisted lockout state of one (account, key).
impl LockState {
    /// Seconds the account stays locked, if it is locked at `now`.
    pub fn locked_for(&self, now: i64) -> Option<u64> {
        (self.locked_until > now).then(|| (self.locked_until - now) as u64)
    }

    /// Records a failure; returns true when it starts a lockout.
    pub fn fail(&mut self, policy: &LockoutPolicy, now: i64) -> bool {
        self.failures += 1;
        if self.failures < policy.threshold {
            return false;
        }
        self.locked_until = now + policy.backoff(self.lockouts) as i64;
        self.lockouts = self.lockouts.saturating_add(1);
        self.failures = 0;
        true
    }

    /// Records a success: everything resets.
    pub fn succeed(&mut self) {
        *self = LockState::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_threshold_and_doubles() {
        let p = LockoutPolicy::default();
        let mut s = LockState::default();
        for _ in 0..4 {
            assert!(!s.fail(&p, 100));
        }
        assert_eq!(s.locked_for(100), None);
        assert!(s.fail(&p, 100));
        assert_eq!(s.locked_for(100), Some(60));
        assert_eq!(s.locked_for(160), None);
        for _ in 0..4 {
            assert!(!s.fail(&p, 200));
        }
        assert!(s.fail(&p, 200));
        assert_eq!(s.locked_for(200), Some(120));
        s.succeed();
        assert_eq!(s, LockState::default());
        // Capped at an hour by default.
        assert_eq!(p.backoff(5), 1920);
        assert_eq!(p.backoff(6), 3600);
        assert_eq!(p.backoff(100), 3600);
    }

    #[test]
    fn cap_is_checked_and_applies() {
        let p = LockoutPolicy {
            threshold: 2,
            base_secs: 2,
            max_secs: 5,
        };
        assert!(p.check().is_ok());
        assert_eq!((p.backoff(0), p.backoff(1), p.backoff(2)), (2, 4, 5));
        let below_base = LockoutPolicy { max_secs: 1, ..p };
        assert!(below_base.check().is_err());
        let too_long = LockoutPolicy {
            max_secs: 86_401,
            ..p
        };
        assert!(too_long.check().is_err());
        // config.json files written before the cap existed get the default.
        let old: LockoutPolicy = serde_json::from_str(r#"{"threshold":5,"base_secs":60}"#).unwrap();
        assert_eq!(old.max_secs, DEFAULT_MAX_SECS);
    }
}
