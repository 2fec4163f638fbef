//! CRLs with replicas (SPEC §8): the signing lease and the published CRLs.
//!
//! At most one replica signs: the holder of the row `crl_lease`, taken when
//! it has expired (the epoch goes up by one: the fencing token) and renewed
//! by its holder while it lives. Times are the database's clock, so the
//! replicas' clocks need not agree. A signed CRL is published (stored in
//! `published_crls`) only in a transaction that finds the lease still held under the
//! same epoch and unexpired, with the lease row locked, so a replica whose
//! lease lapsed (paused, cut off) cannot publish over its successor. After
//! publishing, `NOTIFY mailid_ca_crl` tells every replica to load it.

use std::time::Duration;

use super::Pg;
use crate::store::StoreError;

/// Channel told (at commit) of every published CRL.
pub(crate) const CRL_CHANNEL: &str = "mailid_ca_crl";

/// How long a taken or renewed lease lasts.
pub(crate) const LEASE_TERM: Duration = Duration::from_secs(10);

/// Published CRLs kept besides the newest (older ones are deleted).
const KEEP: i64 = 4;

impl Pg {
    /// Renews the lease when `held` is still ours, else takes it when it
    /// has expired or, with `reclaim` (a replica starting), still names us
    /// (the epoch still goes up). Gives the epoch while we hold it.
    pub(crate) async fn crl_lease(
        &self,
        holder: &str,
        held: Option<i64>,
        reclaim: bool,
    ) -> Result<Option<i64>, StoreError> {
        let term = i64::try_from(LEASE_TERM.as_millis()).unwrap_or(10_000);
        let holder = holder.to_string();
        self.db
            .write(move |tx| {
                let holder = holder.clone();
                Box::pin(async move {
                    if let Some(epoch) = held {
                        let stmt = tx
                            .prepare_cached(
                                "UPDATE crl_lease
                                 SET expires_at = clock_timestamp() + $3::BIGINT * INTERVAL '1 millisecond'
                                 WHERE id = 1 AND holder = $1 AND epoch = $2
                                   AND expires_at > clock_timestamp()",
                            )
                            .await?;
                        if tx.execute(&stmt, &[&holder, &epoch, &term]).await? == 1 {
                            return Ok(Some(epoch));
                        }
                    }
                    let stmt = tx
                        .prepare_cached(
                            "UPDATE crl_lease
                             SET holder = $1, epoch = epoch + 1,
                                 expires_at = clock_timestamp() + $2::BIGINT * INTERVAL '1 millisecond'
                             WHERE id = 1
                               AND (expires_at <= clock_timestamp() OR (holder = $1 AND $3))
                             RETURNING epoch",
                        )
                        .await?;
                    Ok(tx
                        .query_opt(&stmt, &[&holder, &term, &reclaim])
                        .await?
                        .map(|r| r.get::<_, i64>(0)))
                })
            })
            .await
    }

    /// Lets the lease go (a replica shutting down), so another takes it at
    /// once rather than after it expires.
    pub(crate) async fn release_crl_lease(
        &self,
        holder: &str,
        epoch: i64,
    ) -> Result<(), StoreError> {
        let holder = holder.to_string();
        self.db
            .write(move |tx| {
                let holder = holder.clone();
                Box::pin(async move {
                    let stmt = tx
                        .prepare_cached(
                            "UPDATE crl_lease SET expires_at = '-infinity'
                             WHERE id = 1 AND holder = $1 AND epoch = $2",
                        )
                        .await?;
                    tx.execute(&stmt, &[&holder, &epoch]).await?;
                    Ok(())
                })
            })
            .await
    }

    /// Publishes a signed CRL if the lease is still `holder`'s under
    /// `epoch` and unexpired; whether it did.
    pub(crate) async fn publish_crl(
        &self,
        holder: &str,
        epoch: i64,
        crl: &crate::store::PublishedCrl,
    ) -> Result<bool, StoreError> {
        let holder = holder.to_string();
        let crl = std::sync::Arc::new(crl.clone());
        self.db
            .write(move |tx| {
                let (holder, crl) = (holder.clone(), crl.clone());
                Box::pin(async move {
                    // Locks the lease row: a take-over waits for this
                    // transaction, and one that came first fences it out.
                    let stmt = tx
                        .prepare_cached(
                            "SELECT 1 FROM crl_lease
                             WHERE id = 1 AND holder = $1 AND epoch = $2
                               AND expires_at > clock_timestamp()
                             FOR UPDATE",
                        )
                        .await?;
                    if tx.query_opt(&stmt, &[&holder, &epoch]).await?.is_none() {
                        return Ok(false);
                    }
                    let stmt = tx
                        .prepare_cached(
                            "INSERT INTO published_crls (number, this_update, next_update, der)
                             VALUES ($1, $2, $3, $4) ON CONFLICT (number) DO NOTHING",
                        )
                        .await?;
                    tx.execute(
                        &stmt,
                        &[&crl.number, &crl.this_update, &crl.next_update, &crl.der],
                    )
                    .await?;
                    let stmt = tx
                        .prepare_cached(
                            "DELETE FROM published_crls WHERE number < (
                                 SELECT MIN(number) FROM (
                                     SELECT number FROM published_crls ORDER BY number DESC LIMIT $1
                                 ) AS newest)",
                        )
                        .await?;
                    tx.execute(&stmt, &[&(KEEP + 1)]).await?;
                    let stmt = tx.prepare_cached("SELECT pg_notify($1, '')").await?;
                    tx.execute(&stmt, &[&CRL_CHANNEL]).await?;
                    Ok(true)
                })
            })
            .await
    }

    /// The newest published CRL (DER) if its number is above `above`.
    pub(crate) async fn latest_crl(&self, above: i64) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .read(move |tx| {
                Box::pin(async move {
                    let stmt = tx
                        .prepare_cached(
                            "SELECT der FROM published_crls WHERE number > $1 ORDER BY number DESC LIMIT 1",
                        )
                        .await?;
                    Ok(tx
                        .query_opt(&stmt, &[&above])
                        .await?
                        .map(|r| r.get::<_, Vec<u8>>(0)))
                })
            })
            .await
    }
}
