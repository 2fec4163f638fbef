//! Token-bucket rate limits keyed by client IP or account, shared by the CA
//! (requests per IP and per account) and the MTA (failed logins per IP and
//! per account). A peek tells whether a request would pass without taking a
//! token (the CA's enrollment preflight); a refund gives a token back (the
//! MTA counts only failed logins).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets kept before full (idle) ones are dropped.
const PRUNE_AT: usize = 50_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One limit: `rate` tokens per second up to `burst`; a rate of 0 disables it.
pub struct Limiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    pub fn new(rate: f64, burst: u32) -> Limiter {
        Limiter {
            rate,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; `Err(seconds)` says when to retry.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    /// Whether [`Limiter::check`] would give `key` a token now, without
    /// taking one (and without making a bucket for a new key).
    pub fn peek(&self, key: &str) -> Result<(), u64> {
        self.peek_at(key, Instant::now())
    }

    fn peek_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let Ok(map) = self.buckets.lock() else {
            return Ok(());
        };
        let Some(b) = map.get(key) else {
            return Ok(());
        };
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        let tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        self.verdict(tokens)
    }

    fn verdict(&self, tokens: f64) -> Result<(), u64> {
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(((1.0 - tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }

    /// Gives back a token taken by [`Limiter::check`] (up to the burst),
    /// for a limit that counts only some outcomes (the MTA's failed logins:
    /// a token is taken before the password check and returned when it
    /// succeeds).
    pub fn refund(&self, key: &str) {
        if self.rate <= 0.0 {
            return;
        }
        if let Ok(mut map) = self.buckets.lock() {
            if let Some(b) = map.get_mut(key) {
                b.tokens = (b.tokens + 1.0).min(self.burst);
            }
        }
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let Ok(mut map) = self.buckets.lock() else {
            return Ok(());
        };
        if map.len() >= PRUNE_AT {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
        }
        let b = map.entry(key.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        let v = self.verdict(b.tokens);
        if v.is_ok() {
            b.tokens -= 1.0;
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let l = Limiter::new(2.0, 3);
        let t = Instant::now();
        for _ in 0..3 {
            assert!(l.check_at("a", t).is_ok());
        }
        assert_eq!(l.check_at("a", t), Err(1));
        assert!(l.check_at("b", t).is_ok());
        assert!(l.check_at("a", t + Duration::from_millis(600)).is_ok());
        assert!(l.check_at("a", t + Duration::from_millis(600)).is_err());
        l.refund("a");
        assert!(l.check_at("a", t + Duration::from_millis(600)).is_ok());
        for _ in 0..10 {
            l.refund("b");
        }
        for _ in 0..3 {
            assert!(
                l.check_at("b", t).is_ok(),
                "a refund never passes the burst"
            );
        }
        assert!(l.check_at("b", t).is_err());
        // A peek takes nothing.
        let p = Limiter::new(1.0, 1);
        assert!(p.peek_at("a", t).is_ok());
        for _ in 0..5 {
            assert!(p.peek_at("a", t).is_ok());
        }
        assert!(p.check_at("a", t).is_ok());
        assert_eq!(p.peek_at("a", t), Err(1));
        assert_eq!(p.check_at("a", t), Err(1));
        assert!(p.peek_at("a", t + Duration::from_secs(1)).is_ok());
        let off = Limiter::new(0.0, 1);
        for _ in 0..100 {
            assert!(off.check_at("a", t).is_ok());
        }
    }
}
