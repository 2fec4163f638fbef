//! Issuing and validating key-bound TOTP codes: the decision is a pure
//! function ([`decide`]) over the rows the store loads inside its write
//! transaction, so every storage backend shares it unchanged.
//!
//! Only failures for a key with a live code count towards a lockout: a
//! guess cannot succeed for any other key, and counting those would let
//! anyone lock a holder out (SPEC §4).

use mailid_shared::protocol::ValidateReason;
use mailid_shared::{Address, KeyId};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::lockout::LockoutPolicy;
use crate::store::{CodeSnapshot, KeyRow, KeyWrite, Store, StoreError};
use crate::totp::{self, Outcome, TotpParams};

/// A freshly issued code.
#[derive(Debug)]
pub struct Issued {
    pub code: Zeroizing<String>,
    /// Unix time the code stops being accepted.
    pub expires_at: i64,
}

/// The answer to a validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// The CA was removed (or its secret changed) meanwhile.
    CaGone,
    Valid,
    /// Refused; `retry_after` with `Locked`; `lockout_started` when this
    /// failure locked the (account, key).
    Rejected {
        reason: ValidateReason,
        retry_after: Option<u64>,
        lockout_started: bool,
    },
}

fn rejected(reason: ValidateReason) -> Validation {
    Validation::Rejected {
        reason,
        retry_after: None,
        lockout_started: false,
    }
}

/// A code presented by a CA, as the decision sees it (no `Debug`: it holds
/// secrets).
pub struct Presented {
    /// The secret the CA's request was verified with.
    pub ca_secret: Zeroizing<Vec<u8>>,
    pub key_id: KeyId,
    pub code: Zeroizing<String>,
    /// Unix time of the request.
    pub now: i64,
}

/// Issues the current code of (account, key); `NotFound` for an unknown
/// or disabled account.
pub async fn issue(
    store: &Store,
    address: &Address,
    key_id: &KeyId,
    params: TotpParams,
    now: i64,
) -> Result<Issued, StoreError> {
    let row = store.issue_code(address, key_id, now).await?;
    let code = totp::code_at(
        &params,
        &row.secret,
        key_id.as_bytes(),
        row.generation,
        params.step(now),
    );
    Ok(Issued {
        code: Zeroizing::new(code),
        expires_at: params.expires_at(now),
    })
}

/// Validates a code once, in one write transaction of the store: checks
/// that the CA is still registered with the secret it signed with, the
/// (account, key)'s lockout, then the code; a success kills the code and
/// resets the lockout, a failure counts only if the key has a live code.
pub async fn validate(
    store: &Store,
    ca_name: &str,
    address: &Address,
    presented: Presented,
    params: TotpParams,
    policy: LockoutPolicy,
) -> Result<Validation, StoreError> {
    let key_id = presented.key_id.clone();
    let since = live_since(&params, presented.now);
    store
        .validate_code(ca_name, address, &key_id, since, move |snapshot| {
            decide(&presented, &params, &policy, snapshot)
        })
        .await
}

/// Issue times from which a code may still be live at `now`: the start of
/// the earliest step the window accepts.
pub fn live_since(params: &TotpParams, now: i64) -> i64 {
    let earliest_step = params.step(now).saturating_sub(params.skew);
    (earliest_step * params.period) as i64
}

/// The verdict on `presented` given the rows of `snapshot` (loaded with
/// [`live_since`] of its time), and the write to make to the key's row;
/// `None` when the verdict depends on the account's other keys and the
/// snapshot has not loaded them (only a code that is not the key's own:
/// it may be another key's, `key_mismatch`).
pub fn decide(
    presented: &Presented,
    params: &TotpParams,
    policy: &LockoutPolicy,
    snapshot: CodeSnapshot,
) -> Option<(Validation, Option<KeyWrite>)> {
    let now = presented.now;
    let same = snapshot
        .ca_secret
        .is_some_and(|s| bool::from(s.ct_eq(&presented.ca_secret)));
    if !same {
        return Some((Validation::CaGone, None));
    }
    let Some(acct) = snapshot.account else {
        return Some((rejected(ValidateReason::UnknownAccount), None));
    };
    if !acct.enabled {
        return Some((rejected(ValidateReason::Invalid), None));
    }
    let target = snapshot.target;
    if let Some(secs) = target.as_ref().and_then(|t| t.lock.locked_for(now)) {
        let locked = Validation::Rejected {
            reason: ValidateReason::Locked,
            retry_after: Some(secs.max(1)),
            lockout_started: false,
        };
        return Some((locked, None));
    }
    let key = presented.key_id.as_bytes();
    let outcome = totp::classify(
        params,
        &acct.secret,
        now,
        &presented.code,
        key,
        target.as_ref().map(|t| &t.state),
        snapshot.others.as_deref().unwrap_or_default(),
    );
    if outcome == Outcome::Invalid && snapshot.others.is_none() {
        return None;
    }
    let reason = match outcome {
        Outcome::Valid => return Some((Validation::Valid, Some(KeyWrite::ConsumeCode))),
        Outcome::Replayed => return Some((rejected(ValidateReason::Replayed), None)),
        Outcome::Expired => ValidateReason::Expired,
        Outcome::KeyMismatch => ValidateReason::KeyMismatch,
        Outcome::Invalid => ValidateReason::Invalid,
    };
    // Only a key with a live code can be guessed: count there.
    let Some(KeyRow { state, mut lock }) = target else {
        return Some((rejected(reason), None));
    };
    let live = state
        .issued_at
        .is_some_and(|at| at >= live_since(params, now));
    if !live {
        return Some((rejected(reason), None));
    }
    let lockout_started = lock.fail(policy, now);
    let verdict = Validation::Rejected {
        reason,
        retry_after: None,
        lockout_started,
    };
    Some((verdict, Some(KeyWrite::SaveLock(lock))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AccountCodes, KeyState, LockState};

    const S: &[u8] = &[7u8; 32];
    const CA: &[u8] = &[9u8; 32];
    const NOW: i64 = 1_800_000_000;

    fn key(n: u8) -> KeyId {
        let mut b = vec![2u8; 33];
        b[1] = n;
        KeyId::from_bytes(&b).unwrap()
    }

    fn state(k: &KeyId, generation: u64, issued_at: Option<i64>) -> KeyState {
        KeyState {
            key_id: k.as_bytes().to_vec(),
            generation,
            issued_at,
        }
    }

    fn row(state: KeyState, lock: LockState) -> KeyRow {
        KeyRow { state, lock }
    }

    fn code(k: &KeyId, generation: u64, at: i64) -> String {
        let p = TotpParams::default();
        totp::code_at(&p, S, k.as_bytes(), generation, p.step(at))
    }

    fn snapshot(target: Option<KeyRow>, others: Vec<KeyState>) -> CodeSnapshot {
        CodeSnapshot {
            ca_secret: Some(Zeroizing::new(CA.to_vec())),
            account: Some(AccountCodes {
                secret: Zeroizing::new(S.to_vec()),
                enabled: true,
            }),
            target,
            others: Some(others),
        }
    }

    /// As the stores run it: first without the other keys, then, if the
    /// decision asks, with them.
    fn run(k: &KeyId, code: &str, snap: CodeSnapshot) -> (Validation, Option<KeyWrite>) {
        let presented = Presented {
            ca_secret: Zeroizing::new(CA.to_vec()),
            key_id: k.clone(),
            code: Zeroizing::new(code.to_string()),
            now: NOW,
        };
        let policy = LockoutPolicy::default();
        let lazy = CodeSnapshot {
            others: None,
            ..snap.clone()
        };
        let params = TotpParams::default();
        decide(&presented, &params, &policy, lazy)
            .or_else(|| decide(&presented, &params, &policy, snap))
            .expect("a snapshot with the other keys is always decided")
    }

    fn counted(reason: ValidateReason, failures: u32) -> (Validation, Option<KeyWrite>) {
        let lock = LockState {
            failures,
            ..LockState::default()
        };
        (rejected_with(reason, false), Some(KeyWrite::SaveLock(lock)))
    }

    fn rejected_with(reason: ValidateReason, lockout_started: bool) -> Validation {
        Validation::Rejected {
            reason,
            retry_after: None,
            lockout_started,
        }
    }

    #[test]
    fn valid_code_is_consumed_and_resets_the_lock() {
        let k = key(1);
        let lock = LockState {
            failures: 3,
            lockouts: 2,
            locked_until: NOW - 1,
        };
        let snap = snapshot(Some(row(state(&k, 4, Some(NOW)), lock)), vec![]);
        let got = run(&k, &code(&k, 4, NOW), snap);
        assert_eq!(got, (Validation::Valid, Some(KeyWrite::ConsumeCode)));
    }

    #[test]
    fn replayed_code_is_refused_and_never_counted() {
        let k = key(1);
        // The generation moved on after a success; a new code is live.
        let snap = snapshot(
            Some(row(state(&k, 5, Some(NOW)), LockState::default())),
            vec![],
        );
        let got = run(&k, &code(&k, 4, NOW), snap);
        assert_eq!(got, (rejected(ValidateReason::Replayed), None));
    }

    #[test]
    fn expired_code_counts_only_with_a_live_code() {
        let k = key(1);
        let old = code(&k, 4, NOW - 300);
        let live = snapshot(
            Some(row(state(&k, 4, Some(NOW)), LockState::default())),
            vec![],
        );
        assert_eq!(run(&k, &old, live), counted(ValidateReason::Expired, 1));
        // Issued long ago: expired, nothing to guess, not counted.
        let stale = snapshot(
            Some(row(state(&k, 4, Some(NOW - 300)), LockState::default())),
            vec![],
        );
        let got = run(&k, &code(&k, 4, NOW), stale);
        assert_eq!(got, (rejected(ValidateReason::Expired), None));
    }

    #[test]
    fn only_a_code_that_is_not_the_keys_own_needs_the_other_keys() {
        let (k1, k2) = (key(1), key(2));
        let presented = |k: &KeyId, c: String| Presented {
            ca_secret: Zeroizing::new(CA.to_vec()),
            key_id: k.clone(),
            code: Zeroizing::new(c),
            now: NOW,
        };
        let (params, policy) = (TotpParams::default(), LockoutPolicy::default());
        let lazy = |target| CodeSnapshot {
            others: None,
            ..snapshot(target, vec![])
        };
        let live = || Some(row(state(&k2, 0, Some(NOW)), LockState::default()));
        // The key's own code: decided from its row alone.
        let own = decide(
            &presented(&k2, code(&k2, 0, NOW)),
            &params,
            &policy,
            lazy(live()),
        );
        assert_eq!(own, Some((Validation::Valid, Some(KeyWrite::ConsumeCode))));
        // Another key's code: undecided until the other keys are loaded.
        let theirs = presented(&k2, code(&k1, 0, NOW));
        assert_eq!(decide(&theirs, &params, &policy, lazy(live())), None);
        let full = snapshot(live(), vec![state(&k1, 0, Some(NOW))]);
        assert_eq!(
            decide(&theirs, &params, &policy, full),
            Some(counted(ValidateReason::KeyMismatch, 1))
        );
    }

    #[test]
    fn code_of_another_key_is_a_key_mismatch() {
        let (k1, k2) = (key(1), key(2));
        let other = state(&k1, 0, Some(NOW));
        let target = row(state(&k2, 0, Some(NOW)), LockState::default());
        let snap = snapshot(Some(target), vec![other.clone()]);
        let c = code(&k1, 0, NOW);
        assert_eq!(run(&k2, &c, snap), counted(ValidateReason::KeyMismatch, 1));
        // No code was ever issued for the presented key: not counted.
        let got = run(&k2, &c, snapshot(None, vec![other]));
        assert_eq!(got, (rejected(ValidateReason::KeyMismatch), None));
    }

    #[test]
    fn wrong_code_is_invalid_and_counted_for_a_live_code() {
        let k = key(1);
        let snap = snapshot(
            Some(row(state(&k, 0, Some(NOW)), LockState::default())),
            vec![],
        );
        assert_eq!(
            run(&k, "00000000", snap),
            counted(ValidateReason::Invalid, 1)
        );
        let snap = snapshot(
            Some(row(state(&k, 0, Some(NOW)), LockState::default())),
            vec![],
        );
        assert_eq!(
            run(&k, "not a code", snap),
            counted(ValidateReason::Invalid, 1)
        );
    }

    #[test]
    fn failures_without_a_live_code_are_not_counted() {
        let k = key(1);
        let unissued = row(state(&k, 3, None), LockState::default());
        let got = run(&k, "00000000", snapshot(Some(unissued), vec![]));
        assert_eq!(got, (rejected(ValidateReason::Invalid), None));
        let got = run(&k, "00000000", snapshot(None, vec![]));
        assert_eq!(got, (rejected(ValidateReason::Invalid), None));
    }

    #[test]
    fn threshold_failure_starts_a_lockout() {
        let k = key(1);
        let lock = LockState {
            failures: 4,
            lockouts: 0,
            locked_until: 0,
        };
        let snap = snapshot(Some(row(state(&k, 0, Some(NOW)), lock)), vec![]);
        let got = run(&k, "00000000", snap);
        let locked = LockState {
            failures: 0,
            lockouts: 1,
            locked_until: NOW + 60,
        };
        assert_eq!(
            got,
            (
                rejected_with(ValidateReason::Invalid, true),
                Some(KeyWrite::SaveLock(locked))
            )
        );
    }

    #[test]
    fn locked_key_refuses_even_the_right_code() {
        let k = key(1);
        let lock = LockState {
            failures: 0,
            lockouts: 1,
            locked_until: NOW + 42,
        };
        let snap = snapshot(Some(row(state(&k, 0, Some(NOW)), lock)), vec![]);
        let got = run(&k, &code(&k, 0, NOW), snap);
        let locked = Validation::Rejected {
            reason: ValidateReason::Locked,
            retry_after: Some(42),
            lockout_started: false,
        };
        assert_eq!(got, (locked, None));
    }

    #[test]
    fn disabled_or_unknown_account_is_refused() {
        let k = key(1);
        let c = code(&k, 0, NOW);
        let mut snap = snapshot(
            Some(row(state(&k, 0, Some(NOW)), LockState::default())),
            vec![],
        );
        if let Some(a) = snap.account.as_mut() {
            a.enabled = false;
        }
        assert_eq!(run(&k, &c, snap), (rejected(ValidateReason::Invalid), None));
        let mut snap = snapshot(None, vec![]);
        snap.account = None;
        let got = run(&k, &c, snap);
        assert_eq!(got, (rejected(ValidateReason::UnknownAccount), None));
    }

    #[test]
    fn removed_or_rekeyed_ca_is_gone() {
        let k = key(1);
        let c = code(&k, 0, NOW);
        let live = || row(state(&k, 0, Some(NOW)), LockState::default());
        let mut snap = snapshot(Some(live()), vec![]);
        snap.ca_secret = None;
        assert_eq!(run(&k, &c, snap), (Validation::CaGone, None));
        let mut snap = snapshot(Some(live()), vec![]);
        snap.ca_secret = Some(Zeroizing::new(vec![1u8; 32]));
        assert_eq!(run(&k, &c, snap), (Validation::CaGone, None));
    }

    #[test]
    fn live_since_is_the_start_of_the_window() {
        let p = TotpParams::default();
        assert_eq!(live_since(&p, NOW + 5), NOW - 30);
        assert_eq!(live_since(&p, 10), 0);
    }
}
