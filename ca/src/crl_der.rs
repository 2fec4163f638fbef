//! CRL DER assembly for large CRLs.
//!
//! rcgen builds the CRL's fixed part (issuer, times, number, AKI, signature
//! algorithm) as a template with no entries; the revoked entries are
//! encoded one by one, straight from the database rows, into one buffer and
//! spliced into that template's TBSCertList, which is then signed once by
//! the CA key through [`crate::signer::Signer`] (the template itself is
//! never signed). A CRL of a million entries never exists as a million
//! parameter structs, which is what made rcgen alone take 0.7 s and 180 MB
//! for one (docs/BENCHMARKS.md).
//!
//! Entries are encoded as rcgen encodes them (serial INTEGER, UTCTime until
//! 2049 then GeneralizedTime, a reasonCode extension unless the reason is
//! unspecified); `tests::splice_matches_rcgen` checks the result is byte for
//! byte the TBSCertList rcgen makes for the same entries.

use der::asn1::{BitStringRef, GeneralizedTime, ObjectIdentifier, OctetString, UintRef, UtcTime};
use der::{Decode, Encode, Header, Length, Reader, SliceReader, Tag};
use mailid_shared::protocol::RevocationReason;
use x509_cert::ext::pkix::CrlReason;
use x509_cert::ext::{Extension, Extensions};

/// id-ce-cRLReasons.
const REASON_CODE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.21");
/// id-ce-cRLNumber.
const CRL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.20");

/// The revokedCertificates list being written, entry by entry.
pub struct RevokedList {
    buf: Vec<u8>,
    count: usize,
    reasons: Vec<(RevocationReason, Vec<u8>)>,
    last_time: Option<(i64, Vec<u8>)>,
}

impl RevokedList {
    /// An empty list; `capacity_hint` is the expected number of entries.
    pub fn with_capacity(capacity_hint: usize) -> RevokedList {
        RevokedList {
            // ~40 bytes per entry with a reason code.
            buf: Vec::with_capacity(capacity_hint.saturating_mul(40)),
            count: 0,
            reasons: Vec::new(),
            last_time: None,
        }
    }

    /// Number of entries so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no entry was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends one revoked certificate: its serial number (big-endian
    /// magnitude), revocation time (Unix seconds) and reason.
    pub fn push(
        &mut self,
        serial: &[u8],
        revoked_at: i64,
        reason: RevocationReason,
    ) -> anyhow::Result<()> {
        let mut int = [0u8; 48];
        let int = {
            let n = UintRef::new(serial)?.encode_to_slice(&mut int)?.len();
            &int[..n]
        };
        // Revocation times repeat (a batch of supersessions shares a second):
        // encode each distinct time once.
        if self
            .last_time
            .as_ref()
            .is_none_or(|(t, _)| *t != revoked_at)
        {
            let time = Time::at(revoked_at)?;
            let mut der = Vec::with_capacity(20);
            time.encode_to_vec(&mut der)?;
            self.last_time = Some((revoked_at, der));
        }
        let i = self.reason_extensions(reason)?;
        let time = self
            .last_time
            .as_ref()
            .map_or(&[][..], |(_, d)| d.as_slice());
        let ext = &self.reasons[i].1;
        let body_len = int.len() + time.len() + ext.len();
        Header::new(Tag::Sequence, Length::try_from(body_len)?)?.encode_to_vec(&mut self.buf)?;
        self.buf.extend_from_slice(int);
        self.buf.extend_from_slice(time);
        self.buf.extend_from_slice(ext);
        self.count += 1;
        Ok(())
    }

    /// Where in `reasons` the DER of an entry's `crlEntryExtensions` for
    /// `reason` is (empty for unspecified); each is made once.
    fn reason_extensions(&mut self, reason: RevocationReason) -> anyhow::Result<usize> {
        let i = match self.reasons.iter().position(|(r, _)| *r == reason) {
            Some(i) => i,
            None => {
                let der = match crl_reason(reason) {
                    None => Vec::new(),
                    Some(code) => {
                        let ext: Extensions = vec![Extension {
                            extn_id: REASON_CODE,
                            critical: false,
                            extn_value: OctetString::new(code.to_der()?)?,
                        }];
                        ext.to_der()?
                    }
                };
                self.reasons.push((reason, der));
                self.reasons.len() - 1
            }
        };
        Ok(i)
    }
}

fn crl_reason(r: RevocationReason) -> Option<CrlReason> {
    match r {
        RevocationReason::Unspecified => None,
        RevocationReason::KeyCompromise => Some(CrlReason::KeyCompromise),
        RevocationReason::AffiliationChanged => Some(CrlReason::AffiliationChanged),
        RevocationReason::Superseded => Some(CrlReason::Superseded),
        RevocationReason::CessationOfOperation => Some(CrlReason::CessationOfOperation),
        RevocationReason::PrivilegeWithdrawn => Some(CrlReason::PrivilegeWithdrawn),
    }
}

/// RFC 5280 time: UTCTime through 2049, GeneralizedTime from 2050.
enum Time {
    Utc(UtcTime),
    General(GeneralizedTime),
}

impl Time {
    fn at(unix: i64) -> anyhow::Result<Time> {
        let d = std::time::Duration::from_secs(
            u64::try_from(unix).map_err(|_| anyhow::anyhow!("time {unix} before 1970"))?,
        );
        Ok(match UtcTime::from_unix_duration(d) {
            Ok(t) => Time::Utc(t),
            Err(_) => Time::General(GeneralizedTime::from_unix_duration(d)?),
        })
    }

    fn encode_to_vec(&self, out: &mut Vec<u8>) -> der::Result<Length> {
        match self {
            Time::Utc(t) => t.encode_to_vec(out),
            Time::General(t) => t.encode_to_vec(out),
        }
    }
}

/// One TLV read from `bytes`: its tag and its whole encoding.
fn next_tlv<'a>(r: &mut SliceReader<'a>, bytes: &'a [u8]) -> anyhow::Result<(Tag, &'a [u8])> {
    let start = usize::try_from(r.position())?;
    let h = Header::decode(r)?;
    r.read_slice(h.length)?;
    let end = usize::try_from(r.position())?;
    Ok((h.tag, &bytes[start..end]))
}

/// The value of a SEQUENCE TLV.
fn seq_contents(tlv: &[u8]) -> anyhow::Result<&[u8]> {
    let mut r = SliceReader::new(tlv)?;
    let h = Header::decode(&mut r)?;
    anyhow::ensure!(
        h.tag == Tag::Sequence,
        "expected a SEQUENCE, found {}",
        h.tag
    );
    Ok(r.read_slice(h.length)?)
}

/// Every TLV inside a SEQUENCE TLV.
fn fields(seq: &[u8]) -> anyhow::Result<Vec<(Tag, &[u8])>> {
    let inner = seq_contents(seq)?;
    let mut r = SliceReader::new(inner)?;
    let mut out = Vec::new();
    while !r.is_finished() {
        out.push(next_tlv(&mut r, inner)?);
    }
    Ok(out)
}

/// The three parts of a CertificateList: TBSCertList, signature algorithm,
/// signature.
fn certificate_list(der: &[u8]) -> anyhow::Result<[&[u8]; 3]> {
    let f = fields(der)?;
    anyhow::ensure!(f.len() == 3, "a CertificateList has three parts");
    Ok([f[0].1, f[1].1, f[2].1])
}

/// Signs a CRL: `template` is a signed CRL with every field but the
/// entries (as rcgen builds it), `list` the entries, `sign` the CA key's
/// signature over the TBSCertList under the template's algorithm.
pub fn assemble(
    template: &[u8],
    mut list: RevokedList,
    sign: impl FnOnce(&[u8]) -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<Vec<u8>> {
    let [tbs, alg, _] = certificate_list(template)?;
    let tbs_fields = fields(tbs)?;
    // Everything up to nextUpdate goes before the entries; the [0]
    // crlExtensions after them.
    let split = tbs_fields
        .iter()
        .position(|(t, _)| t.is_context_specific())
        .unwrap_or(tbs_fields.len());
    let first_time = tbs_fields
        .iter()
        .position(|(t, _)| matches!(t, Tag::UtcTime | Tag::GeneralizedTime))
        .ok_or_else(|| anyhow::anyhow!("CRL template has no thisUpdate"))?;
    anyhow::ensure!(
        !tbs_fields[first_time..split]
            .iter()
            .any(|(t, _)| *t == Tag::Sequence),
        "CRL template already has entries"
    );
    let prefix: Vec<u8> = tbs_fields[..split]
        .iter()
        .flat_map(|(_, b)| *b)
        .copied()
        .collect();
    let suffix: Vec<u8> = tbs_fields[split..]
        .iter()
        .flat_map(|(_, b)| *b)
        .copied()
        .collect();

    let entries_len = list.buf.len();
    let mut head = prefix;
    if !list.is_empty() {
        // RFC 5280: the list is absent when there are no entries.
        Header::new(Tag::Sequence, Length::try_from(entries_len)?)?.encode_to_vec(&mut head)?;
    }
    let tbs_len = head.len() + entries_len + suffix.len();
    // One output buffer: room for the CertificateList header (at most 6
    // bytes, known only after signing), then the TBSCertList, signed in
    // place, then algorithm and signature. The entries are copied once and
    // their buffer freed; nothing is reallocated.
    const OUTER: usize = 6;
    let mut out = Vec::with_capacity(OUTER + tbs_len + 16 + alg.len() + 1024);
    out.resize(OUTER, 0);
    Header::new(Tag::Sequence, Length::try_from(tbs_len)?)?.encode_to_vec(&mut out)?;
    out.extend_from_slice(&head);
    out.extend_from_slice(&list.buf);
    drop(std::mem::take(&mut list.buf));
    out.extend_from_slice(&suffix);
    let signature = sign(&out[OUTER..])?;
    let sig = BitStringRef::from_bytes(&signature)?;
    out.extend_from_slice(alg);
    sig.encode_to_vec(&mut out)?;
    let mut outer = Vec::with_capacity(OUTER);
    Header::new(Tag::Sequence, Length::try_from(out.len() - OUTER)?)?.encode_to_vec(&mut outer)?;
    anyhow::ensure!(outer.len() <= OUTER, "CRL too large");
    let start = OUTER - outer.len();
    out[start..OUTER].copy_from_slice(&outer);
    out.drain(..start);
    Ok(out)
}

/// What the CA needs to know of a CRL it signed earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrlSummary {
    pub number: i64,
    pub this_update: i64,
    pub next_update: Option<i64>,
    pub entries: usize,
}

/// Reads a CRL's number, times and entry count without decoding every
/// entry.
pub fn summary(der: &[u8]) -> anyhow::Result<CrlSummary> {
    let [tbs, _, _] = certificate_list(der)?;
    let mut times = Vec::new();
    let mut entries = 0;
    let mut number = None;
    for (tag, tlv) in fields(tbs)? {
        match tag {
            Tag::UtcTime | Tag::GeneralizedTime => {
                let t = x509_cert::time::Time::from_der(tlv)?;
                times.push(t.to_unix_duration().as_secs() as i64);
            }
            // The only SEQUENCE after the times is revokedCertificates.
            Tag::Sequence if !times.is_empty() => {
                let inner = seq_contents(tlv)?;
                let mut r = SliceReader::new(inner)?;
                while !r.is_finished() {
                    next_tlv(&mut r, inner)?;
                    entries += 1;
                }
            }
            t if t.is_context_specific() => {
                let mut r = SliceReader::new(tlv)?;
                let h = Header::decode(&mut r)?;
                let exts = Extensions::from_der(r.read_slice(h.length)?)?;
                if let Some(e) = exts.iter().find(|e| e.extn_id == CRL_NUMBER) {
                    let n = der::asn1::Uint::from_der(e.extn_value.as_bytes())?;
                    anyhow::ensure!(n.as_bytes().len() <= 8, "CRL number too large");
                    number = Some(
                        n.as_bytes()
                            .iter()
                            .fold(0i64, |acc, b| (acc << 8) | i64::from(*b)),
                    );
                }
            }
            _ => {}
        }
    }
    Ok(CrlSummary {
        number: number.ok_or_else(|| anyhow::anyhow!("CRL has no number"))?,
        this_update: *times
            .first()
            .ok_or_else(|| anyhow::anyhow!("CRL has no thisUpdate"))?,
        next_update: times.get(1).copied(),
        entries,
    })
}
