//! Signed CRLs: the snapshot served (DER, PEM made on first use, ETag,
//! Last-Modified), signing one ([`sign_now`]), the CRL file of the data
//! directory and HTTP dates. When CRLs are signed and how replicas share
//! them is [`crate::publisher`]'s job.
//!
//! The CRL number is the signing time in nanoseconds, but above the last
//! number allocated and above the number of the CRL on disk; it is
//! allocated durably in the database before signing, so it is strictly
//! increasing across restarts, across processes and replicas and across a
//! restore of an older backup (of the database alone or of the whole data
//! directory). thisUpdate is backdated up to a minute, but never before the
//! newest revocation the CRL lists. A revoked certificate stays listed
//! until one CRL has listed it past its expiry: entries are the revoked
//! certificates expiring after the previous CRL's thisUpdate.

use axum::body::Bytes;

use crate::issuer::{CaIssuer, BACKDATE_SECS};
use crate::store::{NextCrl, PublishedCrl, Store};

/// A signed CRL ready to serve.
#[derive(Debug, Clone)]
pub struct CrlSnapshot {
    pub der: Bytes,
    /// The PEM form, made on first use (a million-entry CRL is 65 MB of
    /// PEM that most deployments never ask for).
    pem: std::sync::OnceLock<Bytes>,
    pub number: i64,
    pub this_update: i64,
    pub next_update: i64,
    pub entries: usize,
    /// Quoted entity tag of the DER form; the PEM form's is
    /// [`CrlSnapshot::etag_pem`].
    pub etag: String,
    /// HTTP date of thisUpdate.
    pub last_modified: String,
}

impl CrlSnapshot {
    /// Quoted entity tag of the PEM form (another representation, so
    /// another strong tag).
    pub fn etag_pem(&self) -> String {
        format!("\"crl-{}-pem\"", self.number)
    }

    /// Parses a DER CRL (from disk) into a snapshot.
    pub fn from_der(der: Vec<u8>) -> anyhow::Result<CrlSnapshot> {
        let s = crate::crl_der::summary(&der)?;
        let next_update = s
            .next_update
            .ok_or_else(|| anyhow::anyhow!("CRL has no nextUpdate"))?;
        Ok(Self::new(
            der,
            s.number,
            s.this_update,
            next_update,
            s.entries,
        ))
    }

    /// This CRL as published to other replicas.
    pub fn published(&self) -> PublishedCrl {
        PublishedCrl {
            number: self.number,
            this_update: self.this_update,
            next_update: self.next_update,
            der: self.der.to_vec(),
        }
    }

    fn new(
        der: Vec<u8>,
        number: i64,
        this_update: i64,
        next_update: i64,
        entries: usize,
    ) -> CrlSnapshot {
        CrlSnapshot {
            der: Bytes::from(der),
            pem: std::sync::OnceLock::new(),
            number,
            this_update,
            next_update,
            entries,
            etag: format!("\"crl-{number}\""),
            last_modified: http_date(this_update),
        }
    }

    /// The CRL in PEM.
    pub fn pem(&self) -> Bytes {
        self.pem
            .get_or_init(|| Bytes::from(mailid_shared::pem::encode("X509 CRL", &self.der)))
            .clone()
    }

    /// When this CRL should be replaced: half-way to nextUpdate.
    pub fn refresh_at(&self) -> i64 {
        self.this_update + (self.next_update - self.this_update) / 2
    }
}

/// IMF-fixdate, the HTTP date format (RFC 9110 §5.6.7).
const HTTP_DATE: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

/// An HTTP date (RFC 9110 IMF-fixdate).
pub fn http_date(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(HTTP_DATE).ok())
        .unwrap_or_default()
}

/// Parses an HTTP date (IMF-fixdate, RFC 9110 §5.6.7) to Unix seconds.
pub fn parse_http_date(text: &str) -> Option<i64> {
    time::PrimitiveDateTime::parse(text.trim(), HTTP_DATE)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

/// Signs a fresh CRL: allocates the number (above `floor`, the number of
/// the CRL on disk or being served, and above every number allocated
/// before), lists the entries (none dated after thisUpdate), signs.
/// Blocking (call from a blocking thread or the CLI). Gives the CRL and the
/// revocation counter it covers.
pub fn sign_now(
    store: &Store,
    issuer: &CaIssuer,
    next_update_hours: u32,
    now_ns: i64,
    floor: i64,
) -> anyhow::Result<(CrlSnapshot, i64)> {
    let NextCrl {
        number,
        this_update,
        next_update,
        prev_this_update: prev_this,
        covered,
    } = store.next_crl_blocking(
        now_ns,
        (BACKDATE_SECS, i64::from(next_update_hours) * 3600),
        floor,
    )?;
    let mut list = crate::crl_der::RevokedList::with_capacity(
        usize::try_from(covered).unwrap_or(0).min(4_000_000),
    );
    // Revocations dated after thisUpdate came in after the allocation; they
    // are not covered, so the next CRL (signed within a second) lists them.
    store.for_each_crl_entry_blocking(prev_this, this_update, |serial, at, reason| {
        list.push(serial, at, reason)
    })?;
    let entries = list.len();
    let now = now_ns.div_euclid(1_000_000_000);
    let der = issuer.sign_crl(number, this_update, next_update, now, list)?;
    Ok((
        CrlSnapshot::new(der, number, this_update, next_update, entries),
        covered,
    ))
}

/// The present in nanoseconds since the epoch (what CRL numbers count).
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

/// The number of the CRL in `path`, or 0 when there is none (or it does not
/// parse): the floor the next CRL's number must exceed, so a database
/// restored from an older backup never signs a number that relying parties
/// already saw.
pub fn file_number(path: &std::path::Path) -> i64 {
    std::fs::read(path)
        .ok()
        .and_then(|d| crate::crl_der::summary(&d).ok())
        .map_or(0, |s| s.number)
}

/// Writes a CRL file atomically and durably.
pub fn write_file(path: &std::path::Path, der: &[u8]) -> anyhow::Result<()> {
    Ok(mailid_shared::files::write_atomic(path, der)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::Config;
    use crate::keys::KeyType;
    use crate::signer::{file::FileKey, CaKey};
    use crate::store::NewCert;
    use mailid_shared::db::OpenMode;
    use mailid_shared::protocol::RevocationReason;
    use mailid_shared::{Address, KeyId, Serial};

    #[test]
    fn crl_times_numbers_and_expired_entries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ca.sqlite"), OpenMode::Create).unwrap();
        let cfg = Config::for_tests("T");
        let key = CaKey::File(FileKey::generate(KeyType::P256).unwrap());
        let root = crate::issuer::self_signed_root("T", &key, 1_000).unwrap();
        let issuer = CaIssuer::new(vec![root], key, &cfg).unwrap();
        let serial = Serial::random();
        let cert = NewCert {
            serial: serial.clone(),
            account: Address::parse("a@b.org").unwrap(),
            key_id: KeyId::of_spki(b"k"),
            not_before: 0,
            not_after: 5_000,
            der: vec![0],
        };
        store.insert_superseding_blocking(cert, 1_000).unwrap();
        store
            .revoke_blocking(serial, RevocationReason::KeyCompromise, 2_000)
            .unwrap();
        // Before expiry: listed; thisUpdate backdated a minute, nextUpdate
        // +24 h; numbered by the signing time in nanoseconds.
        const NS: i64 = crate::store::NANOS;
        let (a, covered) = sign_now(&store, &issuer, 24, 4_000 * NS, 0).unwrap();
        assert_eq!((a.number, a.entries, covered), (4_000 * NS, 1, 1));
        assert_eq!(a.this_update, 4_000 - 60);
        assert_eq!(a.next_update, a.this_update + 24 * 3600);
        assert_eq!(
            CrlSnapshot::from_der(a.der.to_vec()).unwrap().number,
            4_000 * NS
        );
        // The first CRL after expiry still lists it ...
        let b = sign_now(&store, &issuer, 24, 6_000 * NS, 0).unwrap().0;
        assert_eq!((b.number, b.entries), (6_000 * NS, 1));
        // ... the next one no longer does; a floor above the time (the
        // number of a newer CRL on disk) is exceeded.
        let c = sign_now(&store, &issuer, 24, 7_000 * NS, 9_000 * NS)
            .unwrap()
            .0;
        assert_eq!((c.number, c.entries), (9_000 * NS + 1, 0));
        let parsed = CrlSnapshot::from_der(c.der.to_vec()).unwrap();
        assert_eq!(
            (parsed.number, parsed.this_update, parsed.next_update),
            (9_000 * NS + 1, 6_940, 6_940 + 86_400)
        );
        // A revocation within the backdated minute: thisUpdate is not
        // before it.
        let serial = Serial::random();
        let cert = NewCert {
            serial: serial.clone(),
            account: Address::parse("c@b.org").unwrap(),
            key_id: KeyId::of_spki(b"k2"),
            not_before: 0,
            not_after: 50_000,
            der: vec![0],
        };
        store.insert_superseding_blocking(cert, 7_900).unwrap();
        store
            .revoke_blocking(serial, RevocationReason::Unspecified, 7_990)
            .unwrap();
        let d = sign_now(&store, &issuer, 24, 8_000 * NS, 0).unwrap().0;
        assert_eq!((d.this_update, d.entries), (7_990, 1));
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("yesterday"), None);
    }
}
