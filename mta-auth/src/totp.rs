//! RFC 6238 TOTP and the key-bound code derivation of docs/ARCHITECTURE.md.
//!
//! Each account has a random secret `S`. The code for key ID `K` in
//! generation `g` is RFC 6238 TOTP (HMAC-SHA-256) over the derived secret
//! `HMAC-SHA256(S, "mailid-totp-v1" || K || g)` (`g` as 8 bytes big endian).
//! This module is pure: no clock, no I/O (its [`KeyState`] is storage's
//! plain row).

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub use crate::store::KeyState;

/// Domain-separation label of the per-key derivation.
pub const DERIVE_LABEL: &[u8] = b"mailid-totp-v1";
/// How many steps before the window a code of the current or previous
/// generation is still recognised (to answer `expired` / `replayed`
/// rather than `invalid`).
pub const LOOKBACK_STEPS: u64 = 10;

/// Code length, step length and accepted clock skew.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpParams {
    /// Digits per code (6–10).
    pub digits: u32,
    /// Step length in seconds.
    pub period: u64,
    /// Steps accepted either side of the current one.
    pub skew: u64,
}

impl Default for TotpParams {
    fn default() -> Self {
        TotpParams {
            digits: 8,
            period: 30,
            skew: 1,
        }
    }
}

impl TotpParams {
    /// Checks the ranges this service supports.
    pub fn check(&self) -> Result<(), String> {
        if !(6..=10).contains(&self.digits) {
            return Err("TOTP digits must be between 6 and 10".into());
        }
        if !(1..=3600).contains(&self.period) {
            return Err("TOTP period must be between 1 and 3600 seconds".into());
        }
        if self.skew > 10 {
            return Err("TOTP skew must be at most 10 steps".into());
        }
        Ok(())
    }

    /// The step a Unix time falls in.
    pub fn step(&self, unix: i64) -> u64 {
        (unix.max(0) as u64) / self.period
    }

    /// End (Unix seconds) of the last step in which a code issued at
    /// `issued_at` is still accepted.
    pub fn expires_at(&self, issued_at: i64) -> i64 {
        ((self.step(issued_at) + self.skew + 1) * self.period) as i64
    }
}

/// RFC 4226 HOTP with any HMAC (`M` is e.g. `Hmac<Sha256>`).
pub fn hotp<M: Mac + KeyInit>(secret: &[u8], counter: u64, digits: u32) -> String {
    let mut mac = <M as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = (h[h.len() - 1] & 0x0f) as usize;
    let bin = (u64::from(h[offset] & 0x7f) << 24)
        | (u64::from(h[offset + 1]) << 16)
        | (u64::from(h[offset + 2]) << 8)
        | u64::from(h[offset + 3]);
    let code = bin % 10u64.pow(digits);
    format!("{code:0width$}", width = digits as usize)
}

/// RFC 6238 TOTP at a Unix time with step `period`.
pub fn totp<M: Mac + KeyInit>(secret: &[u8], unix: u64, period: u64, digits: u32) -> String {
    hotp::<M>(secret, unix / period, digits)
}

/// The derived secret of one (account, key, generation).
pub fn derive(account_secret: &[u8], key_id: &[u8], generation: u64) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(account_secret).expect("any key length");
    mac.update(DERIVE_LABEL);
    mac.update(key_id);
    mac.update(&generation.to_be_bytes());
    mac.finalize().into_bytes().into()
}

/// The service's code for (account, key, generation) at a step.
pub fn code_at(
    params: &TotpParams,
    account_secret: &[u8],
    key_id: &[u8],
    generation: u64,
    step: u64,
) -> String {
    let derived = derive(account_secret, key_id, generation);
    hotp::<Hmac<Sha256>>(&derived, step, params.digits)
}

/// What a presented code turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Valid,
    Replayed,
    Expired,
    KeyMismatch,
    Invalid,
}

fn matches_in(params: &TotpParams, derived: &[u8; 32], code: &[u8], first: u64, last: u64) -> bool {
    let mut found = subtle::Choice::from(0);
    for step in first..=last {
        let c = hotp::<Hmac<Sha256>>(derived, step, params.digits);
        found |= c.as_bytes().ct_eq(code);
    }
    found.into()
}

/// Classifies `code` presented for `target` (`None`: no code was ever
/// issued for that key) of an account whose other keys are `others`.
pub fn classify(
    params: &TotpParams,
    account_secret: &[u8],
    now: i64,
    code: &str,
    target_key: &[u8],
    target: Option<&KeyState>,
    others: &[KeyState],
) -> Outcome {
    let code = code.as_bytes();
    if code.len() != params.digits as usize || !code.iter().all(u8::is_ascii_digit) {
        return Outcome::Invalid;
    }
    let now_step = params.step(now);
    let first = now_step.saturating_sub(params.skew);
    let last = now_step + params.skew;
    let live = |ks: &KeyState| {
        ks.issued_at
            .is_some_and(|at| now_step <= params.step(at) + params.skew)
    };
    let generation = target.map(|t| t.generation).unwrap_or(0);
    let current = derive(account_secret, target_key, generation);
    if let Some(t) = target {
        if live(t) && matches_in(params, &current, code, first, last) {
            return Outcome::Valid;
        }
    }
    let old_first = now_step.saturating_sub(params.skew + LOOKBACK_STEPS);
    if generation > 0 {
        let previous = derive(account_secret, target_key, generation - 1);
        if matches_in(params, &previous, code, old_first, last) {
            return Outcome::Replayed;
        }
    }
    if target.is_some() && matches_in(params, &current, code, old_first, last) {
        return Outcome::Expired;
    }
    for other in others.iter().filter(|o| o.key_id != target_key && live(o)) {
        let derived = derive(account_secret, &other.key_id, other.generation);
        if matches_in(params, &derived, code, first, last) {
            return Outcome::KeyMismatch;
        }
    }
    Outcome::Invalid
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &[u8] = &[7u8; 32];
    const K1: &[u8] = &[2u8; 33];
    const K2: &[u8] = &[3u8; 33];

    fn state(key: &[u8], generation: u64, issued_at: Option<i64>) -> KeyState {
        KeyState {
            key_id: key.to_vec(),
            generation,
            issued_at,
        }
    }

    #[test]
    fn rfc4226_hotp_sha1_appendix_d() {
        // RFC 4226 Appendix D, 6 digits.
        let expect = ["755224", "287082", "359152", "969429", "338314"];
        for (i, e) in expect.iter().enumerate() {
            assert_eq!(
                hotp::<Hmac<sha1::Sha1>>(b"12345678901234567890", i as u64, 6),
                *e
            );
        }
    }

    #[test]
    fn classify_outcomes() {
        let p = TotpParams::default();
        let now = 1_800_000_000;
        let step = p.step(now);
        let issued = state(K1, 4, Some(now));
        let code = code_at(&p, S, K1, 4, step);
        assert_eq!(
            classify(&p, S, now, &code, K1, Some(&issued), &[]),
            Outcome::Valid
        );
        // One step later still fine, two steps later expired.
        assert_eq!(
            classify(&p, S, now + 30, &code, K1, Some(&issued), &[]),
            Outcome::Valid
        );
        assert_eq!(
            classify(&p, S, now + 60, &code, K1, Some(&issued), &[]),
            Outcome::Expired
        );
        // Not issued: a correct code is not enough.
        let not_issued = state(K1, 4, None);
        assert_eq!(
            classify(&p, S, now, &code, K1, Some(&not_issued), &[]),
            Outcome::Expired
        );
        // After the success the generation moved on: the old code is a replay.
        let used = state(K1, 5, None);
        assert_eq!(
            classify(&p, S, now, &code, K1, Some(&used), &[]),
            Outcome::Replayed
        );
        // A code for K1 presented for K2.
        let k2 = state(K2, 0, Some(now));
        assert_eq!(
            classify(
                &p,
                S,
                now,
                &code,
                K2,
                Some(&k2),
                &[issued.clone(), k2.clone()]
            ),
            Outcome::KeyMismatch
        );
        assert_eq!(
            classify(&p, S, now, &code, K2, None, std::slice::from_ref(&issued)),
            Outcome::KeyMismatch
        );
        // Another account's secret.
        assert_eq!(
            classify(&p, &[8u8; 32], now, &code, K1, Some(&issued), &[]),
            Outcome::Invalid
        );
        assert_eq!(
            classify(&p, S, now, "1234567", K1, Some(&issued), &[]),
            Outcome::Invalid
        );
        assert_eq!(
            classify(&p, S, now, "abcdefgh", K1, Some(&issued), &[]),
            Outcome::Invalid
        );
    }

    #[test]
    fn generations_and_keys_give_different_codes() {
        let p = TotpParams::default();
        let a = code_at(&p, S, K1, 0, 100);
        assert_ne!(a, code_at(&p, S, K1, 1, 100));
        assert_ne!(a, code_at(&p, S, K2, 0, 100));
        assert_eq!(a.len(), 8);
    }

    #[test]
    fn expiry_is_end_of_last_accepted_step() {
        let p = TotpParams::default();
        assert_eq!(p.expires_at(1_000_000_005), 1_000_000_050);
        assert!(TotpParams { digits: 5, ..p }.check().is_err());
        assert!(p.check().is_ok());
    }
}
