//! The PostgreSQL backend's read-modify-write transactions: enrollment
//! (serialised per account by a transaction-scoped advisory lock, the
//! partial unique index `one_valid_identity` as the backstop), revocation
//! (the certificate row locked), and CRL number allocation (the CRL state
//! row locked). Each runs inside the transaction `PgDb::write` gives it and
//! may run more than once (serialization failures and deadlocks are
//! retried), so it only reads its arguments.

use deadpool_postgres::Transaction;
// Polls in argument order: the statements go out in that order.
use futures_util::future::try_join4;

use mailid_shared::protocol::RevocationReason;
use mailid_shared::Serial;

use crate::store::rules::{allocate, CrlRead, NextCrl};
use crate::store::{NewCert, RevokeOutcome, StoreError};

/// Channel told (just after commit) of transactions that revoked
/// something; the CRL lease holder listens to it.
pub(crate) const REVOCATIONS_CHANNEL: &str = "mailid_ca_revocations";

/// Revokes `serial` if it is not yet revoked; a keyCompromise revocation
/// also revokes every other certificate for the key. Gives how many
/// changed, for the caller to record with [`bump_revocations`].
async fn revoke_in(
    tx: &Transaction<'_>,
    serial: &str,
    reason: RevocationReason,
    now: i64,
) -> Result<u64, StoreError> {
    let stmt = tx
        .prepare_cached(
            "UPDATE certificates SET revoked_at = $2, reason = $3, active = FALSE
             WHERE serial = $1 AND revoked_at IS NULL",
        )
        .await?;
    let mut n = tx
        .execute(&stmt, &[&serial, &now, &i64::from(reason.code())])
        .await?;
    if n > 0 && reason == RevocationReason::KeyCompromise {
        n += revoke_key(tx, serial, now).await?;
    }
    Ok(n)
}

/// Records `n` changed entries for the CRL publisher: one row appended to
/// `crl_events`, which no two writers share (a counter row would be every
/// revocation's lock, held through its commit and fsync, and serialise
/// all enrollments that supersede). The allocation of the next CRL takes
/// the rows it saw ([`next_crl_in`]); the commit is announced afterwards,
/// outside the transaction ([`super::Pg`]'s notifier).
async fn bump_revocations(tx: &Transaction<'_>, n: u64) -> Result<(), StoreError> {
    if n > 0 {
        let stmt = tx
            .prepare_cached("INSERT INTO crl_events (n) VALUES ($1)")
            .await?;
        tx.execute(&stmt, &[&(n as i64)]).await?;
    }
    Ok(())
}

/// The key of `serial` was reported compromised: records it, revokes every
/// other unexpired valid certificate for it and gives unexpired ones
/// already revoked for another reason the reason keyCompromise. Gives how
/// many more certificates changed.
async fn revoke_key(tx: &Transaction<'_>, serial: &str, now: i64) -> Result<u64, StoreError> {
    let stmt = tx
        .prepare_cached("SELECT key_id FROM certificates WHERE serial = $1")
        .await?;
    let key_id: String = tx.query_one(&stmt, &[&serial]).await?.get(0);
    let stmt = tx
        .prepare_cached(
            "INSERT INTO compromised_keys (key_id, serial, at) VALUES ($1, $2, $3)
             ON CONFLICT (key_id) DO NOTHING",
        )
        .await?;
    tx.execute(&stmt, &[&key_id, &serial, &now]).await?;
    let kc = i64::from(RevocationReason::KeyCompromise.code());
    let stmt = tx
        .prepare_cached(
            "UPDATE certificates SET revoked_at = $2, reason = $3, active = FALSE
             WHERE key_id = $1 AND revoked_at IS NULL AND not_after >= $2",
        )
        .await?;
    let revoked = tx.execute(&stmt, &[&key_id, &now, &kc]).await?;
    let stmt = tx
        .prepare_cached(
            "UPDATE certificates SET reason = $3
             WHERE key_id = $1 AND revoked_at IS NOT NULL AND not_after >= $2
               AND reason IS DISTINCT FROM $3",
        )
        .await?;
    let reasons = tx.execute(&stmt, &[&key_id, &now, &kc]).await?;
    Ok(revoked + reasons)
}

/// Enrollment: under the account's advisory lock, retires the account's
/// valid identities (revoked as superseded, or just deactivated when
/// expired) and inserts the new one. The four statements go out together
/// (pipelined on the one connection, so one round trip) and run in the
/// order sent: the lock first; a compromised key (checked again here: a
/// keyCompromise revocation may have come in since the check before the
/// MTA call) then rolls the whole transaction back.
pub(crate) async fn insert_superseding_in(
    tx: &Transaction<'_>,
    cert: &NewCert,
    now: i64,
) -> Result<Vec<Serial>, StoreError> {
    let account = cert.account.as_str();
    let key_id = cert.key_id.to_string();
    let superseded = i64::from(RevocationReason::Superseded.code());
    // Prepared first (from the cache after the first enrollment), so the
    // statements below are sent in the order they are polled.
    let (lock, compromised, retire, insert) = try_join4(
        tx.prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"),
        tx.prepare_cached("SELECT 1 FROM compromised_keys WHERE key_id = $1"),
        tx.prepare_cached(
            "WITH retired AS (
                 UPDATE certificates
                 SET active = FALSE,
                     revoked_at = CASE WHEN not_after >= $2::BIGINT THEN $2::BIGINT END,
                     reason = CASE WHEN not_after >= $2::BIGINT THEN $3::BIGINT END
                 WHERE account = $1 AND active
                 RETURNING serial, revoked_at
             ), counted AS (
                 INSERT INTO crl_events (n)
                 SELECT COUNT(*) FROM retired WHERE revoked_at IS NOT NULL
                 HAVING COUNT(*) > 0
             )
             SELECT serial FROM retired WHERE revoked_at IS NOT NULL",
        ),
        tx.prepare_cached(
            "INSERT INTO certificates (serial, account, key_id, not_before, not_after, issued_at, der, active)
             VALUES ($1, $2, $3, $4, $5, $6, $7, TRUE)",
        ),
    )
    .await?;
    let (_, compromised, retired, _) = try_join4(
        tx.execute(&lock, &[&account]),
        tx.query_opt(&compromised, &[&key_id]),
        tx.query(&retire, &[&account, &now, &superseded]),
        tx.execute(
            &insert,
            &[
                &cert.serial.as_str(),
                &account,
                &key_id,
                &cert.not_before,
                &cert.not_after,
                &now,
                &cert.der,
            ],
        ),
    )
    .await?;
    if compromised.is_some() {
        return Err(StoreError::CompromisedKey);
    }
    retired
        .iter()
        .map(|r| {
            let serial: &str = r.try_get(0)?;
            serial
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("serial {serial}")))
        })
        .collect()
}

/// Revokes one certificate (row locked) if it is valid; see the SQLite
/// twin for the keyCompromise rules.
pub(crate) async fn revoke_one(
    tx: &Transaction<'_>,
    serial: &Serial,
    reason: RevocationReason,
    now: i64,
) -> Result<RevokeOutcome, StoreError> {
    let stmt = tx
        .prepare_cached(
            "SELECT revoked_at, not_after, reason FROM certificates WHERE serial = $1 FOR UPDATE",
        )
        .await?;
    let row: Option<(Option<i64>, i64, Option<i64>)> = tx
        .query_opt(&stmt, &[&serial.as_str()])
        .await?
        .map(|r| (r.get(0), r.get(1), r.get(2)));
    let kc = RevocationReason::KeyCompromise;
    let kc_code = i64::from(kc.code());
    match row {
        None => Ok(RevokeOutcome::NotFound),
        Some((Some(at), not_after, stored))
            if reason == kc && stored != Some(kc_code) && not_after >= now =>
        {
            let stmt = tx
                .prepare_cached("UPDATE certificates SET reason = $2 WHERE serial = $1")
                .await?;
            tx.execute(&stmt, &[&serial.as_str(), &kc_code]).await?;
            let more = revoke_key(tx, serial.as_str(), now).await?;
            bump_revocations(tx, 1 + more).await?;
            Ok(RevokeOutcome::Revoked { at })
        }
        Some((Some(_), _, _)) => Ok(RevokeOutcome::AlreadyRevoked),
        Some((None, not_after, _)) if not_after < now => Ok(RevokeOutcome::Expired),
        Some((None, _, _)) => {
            let n = revoke_in(tx, serial.as_str(), reason, now).await?;
            bump_revocations(tx, n).await?;
            Ok(RevokeOutcome::Revoked { at: now })
        }
    }
}

/// Allocates the next CRL (see [`allocate`]) under the lock on the CRL
/// state row, so replicas allocating at once get increasing numbers.
pub(crate) async fn next_crl_in(
    tx: &Transaction<'_>,
    now_ns: i64,
    times: (i64, i64),
    floor: i64,
) -> Result<NextCrl, StoreError> {
    let stmt = tx
        .prepare_cached(
            "SELECT number, this_update, revocations FROM crl_state WHERE id = 1 FOR UPDATE",
        )
        .await?;
    let row = tx.query_one(&stmt, &[]).await?;
    let (last, prev, counted): (i64, Option<i64>, i64) = (row.get(0), row.get(1), row.get(2));
    // The revocations committed since the last allocation: the events this
    // statement sees are taken (and so covered by this CRL); one committed
    // later stays for the next.
    let stmt = tx
        .prepare_cached("WITH taken AS (DELETE FROM crl_events RETURNING n) SELECT COALESCE(SUM(n), 0)::BIGINT FROM taken")
        .await?;
    let pending: i64 = tx.query_one(&stmt, &[]).await?.get(0);
    let revocations = counted + pending;
    let stmt = tx
        .prepare_cached("SELECT MAX(revoked_at) FROM certificates WHERE revoked_at IS NOT NULL")
        .await?;
    let newest: Option<i64> = tx.query_one(&stmt, &[]).await?.get(0);
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
    let stmt = tx
        .prepare_cached(
            "UPDATE crl_state SET number = $1, this_update = $2, next_update = $3, covered = $4,
                revocations = $4
             WHERE id = 1",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &next.number,
            &next.this_update,
            &next.next_update,
            &next.covered,
        ],
    )
    .await?;
    Ok(next)
}
