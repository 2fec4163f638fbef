//! The CRL allocation rules both backends apply under their lock on the
//! CRL state: the number (strictly increasing across restarts, restores
//! and replicas) and thisUpdate of the next CRL. Pure functions, so the two
//! backends cannot drift apart.

/// The number and times a new CRL gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextCrl {
    /// See [`crl_number`].
    pub number: i64,
    /// See [`this_update`].
    pub this_update: i64,
    pub next_update: i64,
    /// The previous CRL's thisUpdate.
    pub prev_this_update: Option<i64>,
    /// The revocation counter at allocation: the CRL covers every
    /// revocation counted so far (all dated at or before `this_update`).
    pub covered: i64,
}

/// Nanoseconds per second.
pub const NANOS: i64 = 1_000_000_000;

/// The number of a CRL signed at `signing_ns`: the signing time in
/// nanoseconds since the epoch (as Boulder numbers its CRLs; it fits an i64
/// until 2262, well inside RFC 5280's 20 octets), but always above the last
/// number allocated (`last`) and the number of the CRL on disk (`floor`).
/// Time-based numbers survive a restore of an older backup (database alone
/// or the whole data directory): the clock has moved on past every number
/// served before, so the number never goes back and relying parties (which
/// ignore a lower number) keep taking new CRLs.
pub fn crl_number(last: i64, floor: i64, signing_ns: i64) -> i64 {
    signing_ns
        .max(last.saturating_add(1))
        .max(floor.saturating_add(1))
}

/// thisUpdate of a new CRL: `wanted` (the present backdated a little), but
/// not before the newest revocation it lists (`newest`; an entry dated
/// after the CRL's own thisUpdate is nonsense), and one second after the
/// previous CRL's (`prev`) when that is not earlier, so each CRL's
/// thisUpdate (its HTTP Last-Modified) is later than the one before and
/// `If-Modified-Since` can never hide a newer CRL; never later than the
/// present (`latest`, or `newest` if a revocation committed since `latest`
/// was read carries a later time: that time has passed too).
pub fn this_update(wanted: i64, latest: i64, prev: Option<i64>, newest: Option<i64>) -> i64 {
    let latest = newest.map_or(latest, |n| latest.max(n));
    let t = newest.map_or(wanted, |n| wanted.max(n));
    match prev {
        Some(p) if p >= t => (p + 1).min(latest),
        _ => t,
    }
}

/// What the allocation reads under the lock on the CRL state.
#[derive(Debug, Clone, Copy)]
pub struct CrlRead {
    /// The last number allocated.
    pub last: i64,
    /// The previous CRL's thisUpdate.
    pub prev: Option<i64>,
    /// The revocation counter.
    pub revocations: i64,
    /// The newest revocation time of any certificate.
    pub newest: Option<i64>,
}

/// The next CRL signed at `now_ns` (nanoseconds since the epoch): number
/// (see [`crl_number`], with `floor` the number of the CRL on disk or being
/// served), times (see [`this_update`], backdated by `backdate` seconds,
/// valid for `lifetime` seconds) and the revocation counter it covers.
pub fn allocate(
    now_ns: i64,
    (backdate, lifetime): (i64, i64),
    floor: i64,
    read: CrlRead,
) -> NextCrl {
    let latest = now_ns.div_euclid(NANOS);
    let this_update = this_update(latest - backdate, latest, read.prev, read.newest);
    NextCrl {
        number: crl_number(read.last, floor, now_ns),
        this_update,
        next_update: this_update + lifetime,
        prev_this_update: read.prev,
        covered: read.revocations,
    }
}
