//! Issuing and validating key-bound TOTP codes, with the lockout counter
//! of each (account, key), each as one serialised write job.
//!
//! Only failures for a key with a live code count towards a lockout: a
//! guess cannot succeed for any other key, and counting those would let
//! anyone lock a holder out (SPEC §4).

use mailid_shared::protocol::ValidateReason;
use mailid_shared::{Address, KeyId};
use rusqlite::{Connection, OptionalExtension};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{Store, StoreError};
use crate::lockout::{LockState, LockoutPolicy};
use crate::totp::{self, KeyState, Outcome, TotpParams};

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

struct AccountCodes {
    secret: Zeroizing<Vec<u8>>,
    enabled: bool,
}

fn load_account(c: &Connection, addr: &str) -> rusqlite::Result<Option<AccountCodes>> {
    c.prepare_cached("SELECT totp_secret, enabled FROM accounts WHERE address = ?1")?
        .query_row([addr], |r| {
            Ok(AccountCodes {
                secret: Zeroizing::new(r.get(0)?),
                enabled: r.get(1)?,
            })
        })
        .optional()
}

fn save_lock(c: &Connection, addr: &str, key: &[u8], lock: &LockState) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE totp_keys SET failures = ?3, lockouts = ?4, locked_until = ?5
         WHERE address = ?1 AND key_id = ?2",
    )?
    .execute((addr, key, lock.failures, lock.lockouts, lock.locked_until))?;
    Ok(())
}

/// The key a code is presented for: its code state and its lockout.
struct Target {
    state: KeyState,
    lock: LockState,
}

/// The target key (if a code was ever issued for it), and the other keys
/// that may hold a live code.
fn load_keys(
    c: &Connection,
    addr: &str,
    key: &[u8],
    live_since: i64,
) -> rusqlite::Result<(Option<Target>, Vec<KeyState>)> {
    let mut st = c.prepare_cached(
        "SELECT key_id, generation, issued_at, failures, lockouts, locked_until FROM totp_keys
         WHERE address = ?1 AND (key_id = ?2 OR issued_at >= ?3)",
    )?;
    let rows = st.query_map((addr, key, live_since), |r| {
        Ok(Target {
            state: KeyState {
                key_id: r.get(0)?,
                generation: r.get::<_, i64>(1)? as u64,
                issued_at: r.get(2)?,
            },
            lock: LockState {
                failures: r.get(3)?,
                lockouts: r.get(4)?,
                locked_until: r.get(5)?,
            },
        })
    })?;
    let mut target = None;
    let mut others = Vec::new();
    for row in rows {
        let row = row?;
        if row.state.key_id == key {
            target = Some(row);
        } else {
            others.push(row.state);
        }
    }
    Ok((target, others))
}

impl Store {
    /// Issues the current code of (account, key); `NotFound` for an
    /// unknown or disabled account.
    pub async fn issue_code(
        &self,
        address: &Address,
        key_id: &KeyId,
        params: TotpParams,
        now: i64,
    ) -> Result<Issued, StoreError> {
        let addr = address.as_str().to_string();
        let key = key_id.as_bytes().to_vec();
        self.db
            .write(move |c| -> Result<Issued, StoreError> {
                let acct = load_account(c, &addr)?
                    .filter(|a| a.enabled)
                    .ok_or_else(|| StoreError::NotFound(format!("account {addr}")))?;
                let generation: i64 = c
                    .prepare_cached(
                        "INSERT INTO totp_keys (address, key_id, generation, issued_at)
                     VALUES (?1, ?2, 0, ?3)
                     ON CONFLICT(address, key_id) DO UPDATE SET issued_at = excluded.issued_at
                     RETURNING generation",
                    )?
                    .query_row((&addr, &key, now), |r| r.get(0))?;
                let code = totp::code_at(
                    &params,
                    &acct.secret,
                    &key,
                    generation as u64,
                    params.step(now),
                );
                Ok(Issued {
                    code: Zeroizing::new(code),
                    expires_at: params.expires_at(now),
                })
            })
            .await
    }

    /// Validates a code once: checks that the CA is still registered with
    /// `ca_secret`, the (account, key)'s lockout, then the code; a success
    /// bumps the key's generation (the code is dead) and resets the
    /// counter. A failure counts only if the key has a live code.
    #[allow(clippy::too_many_arguments)]
    pub async fn validate_code(
        &self,
        ca_name: &str,
        ca_secret: Zeroizing<Vec<u8>>,
        address: &Address,
        key_id: &KeyId,
        code: Zeroizing<String>,
        params: TotpParams,
        policy: LockoutPolicy,
        now: i64,
    ) -> Result<Validation, StoreError> {
        let ca = ca_name.to_string();
        let addr = address.as_str().to_string();
        let key = key_id.as_bytes().to_vec();
        self.db
            .write(move |c| -> Result<Validation, StoreError> {
                let stored: Option<Vec<u8>> = c
                    .prepare_cached("SELECT secret FROM cas WHERE name = ?1")?
                    .query_row([&ca], |r| r.get(0))
                    .optional()?;
                let same = stored.is_some_and(|s| bool::from(s.ct_eq(&ca_secret)));
                if !same {
                    return Ok(Validation::CaGone);
                }
                let Some(acct) = load_account(c, &addr)? else {
                    return Ok(rejected(ValidateReason::UnknownAccount));
                };
                if !acct.enabled {
                    return Ok(rejected(ValidateReason::Invalid));
                }
                let earliest_step = params.step(now).saturating_sub(params.skew);
                let live_since = (earliest_step * params.period) as i64;
                let (target, others) = load_keys(c, &addr, &key, live_since)?;
                if let Some(secs) = target.as_ref().and_then(|t| t.lock.locked_for(now)) {
                    return Ok(Validation::Rejected {
                        reason: ValidateReason::Locked,
                        retry_after: Some(secs.max(1)),
                        lockout_started: false,
                    });
                }
                let outcome = totp::classify(
                    &params,
                    &acct.secret,
                    now,
                    &code,
                    &key,
                    target.as_ref().map(|t| &t.state),
                    &others,
                );
                let reason = match outcome {
                    Outcome::Valid => {
                        c.prepare_cached(
                            "UPDATE totp_keys SET generation = generation + 1, issued_at = NULL,
                               failures = 0, lockouts = 0, locked_until = 0
                             WHERE address = ?1 AND key_id = ?2",
                        )?
                        .execute((&addr, &key))?;
                        return Ok(Validation::Valid);
                    }
                    Outcome::Replayed => return Ok(rejected(ValidateReason::Replayed)),
                    Outcome::Expired => ValidateReason::Expired,
                    Outcome::KeyMismatch => ValidateReason::KeyMismatch,
                    Outcome::Invalid => ValidateReason::Invalid,
                };
                // Only a key with a live code can be guessed: count there.
                let Some(Target { state, mut lock }) = target else {
                    return Ok(rejected(reason));
                };
                let live = state.issued_at.is_some_and(|at| at >= live_since);
                if !live {
                    return Ok(rejected(reason));
                }
                let lockout_started = lock.fail(&policy, now);
                save_lock(c, &addr, &key, &lock)?;
                Ok(Validation::Rejected {
                    reason,
                    retry_after: None,
                    lockout_started,
                })
            })
            .await
    }
}
