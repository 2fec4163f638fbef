//! The SQLite backend's read-modify-write transactions, each run by the
//! single writer inside `BEGIN IMMEDIATE` (so each is serialised against
//! every other write): enrollment (revoke the account's valid identities,
//! insert the new one), revocation, and CRL number allocation.

use rusqlite::{params, Connection, OptionalExtension};

use mailid_shared::protocol::RevocationReason;
use mailid_shared::Serial;

use crate::store::rules::{allocate, CrlRead, NextCrl};
use crate::store::{NewCert, RevokeOutcome, StoreError};

/// Revokes `serial` if it is not yet revoked and bumps the revocation
/// counter the CRL publisher watches; a keyCompromise revocation also
/// revokes every other certificate for the key. Gives how many were revoked.
pub(crate) fn revoke_in(
    conn: &Connection,
    serial: &str,
    reason: RevocationReason,
    now: i64,
) -> Result<usize, StoreError> {
    let mut n = conn
        .prepare_cached(
            "UPDATE certificates SET revoked_at = ?2, reason = ?3, active = 0
         WHERE serial = ?1 AND revoked_at IS NULL",
        )?
        .execute(params![serial, now, reason.code()])?;
    if n > 0 && reason == RevocationReason::KeyCompromise {
        n += revoke_key(conn, serial, now)?;
    }
    bump_revocations(conn, n)?;
    Ok(n)
}

/// Adds `n` changed entries to the revocation counter the CRL publisher
/// watches (so the next CRL is signed).
fn bump_revocations(conn: &Connection, n: usize) -> Result<(), StoreError> {
    if n > 0 {
        conn.prepare_cached("UPDATE crl_state SET revocations = revocations + ?1 WHERE id = 1")?
            .execute([n as i64])?;
    }
    Ok(())
}

/// The key of `serial` was reported compromised: records it, revokes every
/// other unexpired valid certificate for it (keyCompromise, whatever the
/// account) and gives unexpired ones already revoked for another reason the
/// reason keyCompromise. Gives how many more certificates changed.
fn revoke_key(conn: &Connection, serial: &str, now: i64) -> Result<usize, StoreError> {
    let key_id: String = conn
        .prepare_cached("SELECT key_id FROM certificates WHERE serial = ?1")?
        .query_row([serial], |r| r.get(0))?;
    conn.prepare_cached(
        "INSERT OR IGNORE INTO compromised_keys (key_id, serial, at) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![key_id, serial, now])?;
    let kc = RevocationReason::KeyCompromise.code();
    let revoked = conn
        .prepare_cached(
            "UPDATE certificates SET revoked_at = ?2, reason = ?3, active = 0
             WHERE key_id = ?1 AND revoked_at IS NULL AND not_after >= ?2",
        )?
        .execute(params![key_id, now, kc])?;
    let reasons = conn
        .prepare_cached(
            "UPDATE certificates SET reason = ?3
             WHERE key_id = ?1 AND revoked_at IS NOT NULL AND not_after >= ?2
               AND reason IS NOT ?3",
        )?
        .execute(params![key_id, now, kc])?;
    Ok(revoked + reasons)
}

/// Whether `key_id` was reported compromised.
pub(crate) fn is_compromised(conn: &Connection, key_id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM compromised_keys WHERE key_id = ?1")?
        .exists([key_id])?)
}

/// Enrollment: retires the account's valid identities (revoked as
/// superseded, or just deactivated when expired) and inserts the new one.
pub(crate) fn insert_superseding_in(
    conn: &Connection,
    cert: &NewCert,
    now: i64,
) -> Result<Vec<Serial>, StoreError> {
    // Checked again here: a keyCompromise revocation may have come in
    // since the check before the MTA call.
    if is_compromised(conn, &cert.key_id.to_string())? {
        return Err(StoreError::CompromisedKey);
    }
    let account = cert.account.as_str();
    let mut stmt = conn.prepare_cached(
        "SELECT serial, not_after FROM certificates WHERE account = ?1 AND active = 1",
    )?;
    let current: Vec<(String, i64)> = stmt
        .query_map([account], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut revoked = Vec::new();
    for (serial, not_after) in current {
        if not_after < now {
            // Expired: no longer valid, so nothing to revoke; just retire it.
            conn.prepare_cached("UPDATE certificates SET active = 0 WHERE serial = ?1")?
                .execute([&serial])?;
        } else if revoke_in(conn, &serial, RevocationReason::Superseded, now)? > 0 {
            revoked.push(
                serial
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("serial {serial}")))?,
            );
        }
    }
    conn.prepare_cached(
        "INSERT INTO certificates (serial, account, key_id, not_before, not_after, issued_at, der, active)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)",
    )?
    .execute(
        params![
            cert.serial.as_str(),
            account,
            cert.key_id.to_string(),
            cert.not_before,
            cert.not_after,
            now,
            cert.der
        ],
    )?;
    Ok(revoked)
}

pub(crate) fn revoke_one(
    conn: &Connection,
    serial: &Serial,
    reason: RevocationReason,
    now: i64,
) -> Result<RevokeOutcome, StoreError> {
    let row: Option<(Option<i64>, i64, Option<u8>)> = conn
        .query_row(
            "SELECT revoked_at, not_after, reason FROM certificates WHERE serial = ?1",
            [serial.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let kc = RevocationReason::KeyCompromise;
    match row {
        None => Ok(RevokeOutcome::NotFound),
        // A key compromise reported for a certificate already revoked for
        // another reason (superseded, say): the reason becomes
        // keyCompromise (RFC 5280 §5.3.1), the key is recorded and every
        // other certificate holding it is revoked. The revocation date
        // stays.
        Some((Some(at), not_after, stored))
            if reason == kc && stored != Some(kc.code()) && not_after >= now =>
        {
            conn.prepare_cached("UPDATE certificates SET reason = ?2 WHERE serial = ?1")?
                .execute(params![serial.as_str(), kc.code()])?;
            bump_revocations(conn, 1 + revoke_key(conn, serial.as_str(), now)?)?;
            Ok(RevokeOutcome::Revoked { at })
        }
        Some((Some(_), _, _)) => Ok(RevokeOutcome::AlreadyRevoked),
        Some((None, not_after, _)) if not_after < now => Ok(RevokeOutcome::Expired),
        Some((None, _, _)) => {
            revoke_in(conn, serial.as_str(), reason, now)?;
            Ok(RevokeOutcome::Revoked { at: now })
        }
    }
}

/// Allocates the next CRL (see [`allocate`]) in one transaction with the
/// reads it depends on.
pub(crate) fn next_crl_in(
    conn: &Connection,
    now_ns: i64,
    times: (i64, i64),
    floor: i64,
) -> Result<NextCrl, StoreError> {
    let (last, prev, revocations): (i64, Option<i64>, i64) = conn.query_row(
        "SELECT number, this_update, revocations FROM crl_state WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    // The covering index certificates_crl leads with revoked_at.
    let newest: Option<i64> = conn.query_row(
        "SELECT MAX(revoked_at) FROM certificates WHERE revoked_at IS NOT NULL",
        [],
        |r| r.get(0),
    )?;
    let next = allocate(
        now_ns,
        times,
        floor,
        CrlRead {
            last,
            prev,
            revocations,
            newest,
        },
    );
    conn.execute(
        "UPDATE crl_state SET number = ?1, this_update = ?2, next_update = ?3, covered = ?4
         WHERE id = 1",
        params![
            next.number,
            next.this_update,
            next.next_update,
            next.covered
        ],
    )?;
    Ok(next)
}
