//! Seeding the CA's database directly (not through the API), for the
//! growth and CRL benchmarks. The rows look like real ones to every query
//! the CA runs: one valid identity per account, each with a key of its
//! own, revoked rows with a
//! revocation time and reason; their `der` column is a placeholder, which
//! only `GET /v1/certificates/{serial}` of a seeded serial would show.

use std::path::Path;

use mailid_shared::timefmt::now_unix;
use mailid_shared::Serial;

/// Inserts `n` certificates into the CA database at `db` (the CA must not
/// be running): the first `revoked` revoked (reasons cycling), the rest
/// valid, each for its own account under `seed.example`. Returns the
/// serials of up to 16 of the valid ones.
pub fn certificates(db: &Path, n: usize, revoked: usize) -> anyhow::Result<Vec<String>> {
    let mut conn = rusqlite::Connection::open(db)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let now = now_unix();
    let tx = conn.transaction()?;
    let mut valid = Vec::new();
    {
        let mut insert = tx.prepare(
            "INSERT INTO certificates (serial, account, key_id, not_before, not_after, issued_at, der, revoked_at, reason, active)
             VALUES (?1, ?2, ?8, ?3, ?4, ?3, x'3000', ?5, ?6, ?7)",
        )?;
        for i in 0..n {
            let serial = Serial::random();
            let account = format!("seed{i}@seed.example");
            let (revoked_at, reason, active) = if i < revoked {
                (Some(now - 50), Some([1i64, 3, 4, 5, 9][i % 5]), 0)
            } else {
                if valid.len() < 16 {
                    valid.push(serial.as_str().to_string());
                }
                (None, None, 1)
            };
            insert.execute(rusqlite::params![
                serial.as_str(),
                account,
                now - 100,
                now + 300 * 86_400,
                revoked_at,
                reason,
                active,
                // A key of its own: a keyCompromise revocation of one
                // seeded certificate revokes only that one.
                format!("SEED-{i}")
            ])?;
        }
    }
    // Seeded revocations count like real ones, so the CA re-signs its CRL.
    tx.execute(
        "UPDATE crl_state SET revocations = revocations + ?1 WHERE id = 1",
        [revoked as i64],
    )?;
    tx.commit()?;
    Ok(valid)
}
