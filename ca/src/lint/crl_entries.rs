//! Reads the revokedCertificates of a TBSCertList entry by entry, borrowed
//! from the input.
//!
//! A hand-written reader, for speed: a CRL can hold a million entries, and
//! reading each with der's generic `Reader` (five headers an entry) took
//! 140 ns of the linter's ~230 ns per entry. This one reads only what an
//! entry can hold, `SEQUENCE { INTEGER, Time, [SEQUENCE] }`, with DER's
//! rules for those (one-byte tags, minimal definite lengths, minimal
//! INTEGERs); the times and extensions it returns as bytes are decoded by
//! der in [`super::crl`] (once per distinct encoding). `tests` checks it
//! against der's own decoding on valid and on corrupted lists.

use der::{ErrorKind, Tag};

/// One revoked certificate, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The serial INTEGER's content octets.
    pub serial: &'a [u8],
    /// The revocationDate TLV (UTCTime or GeneralizedTime).
    pub date: &'a [u8],
    /// The contents of crlEntryExtensions, when present.
    pub extensions: Option<&'a [u8]>,
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

fn error(kind: ErrorKind) -> der::Error {
    kind.into()
}

/// One TLV at the start of `bytes`: its tag byte, content and whole
/// encoding. DER: a definite length in the fewest octets.
fn tlv(bytes: &[u8]) -> der::Result<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first().ok_or_else(|| {
        error(ErrorKind::Incomplete {
            expected_len: 1u8.into(),
            actual_len: 0u8.into(),
        })
    })?;
    let (&first, rest) = rest
        .split_first()
        .ok_or_else(|| Tag::Sequence.length_error())?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81..=0x84 => {
            let n = usize::from(first & 0x7f);
            if rest.len() < n {
                return Err(Tag::Sequence.length_error());
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |a, b| (a << 8) | usize::from(*b));
            // The fewest octets: a long form only from 128, no leading zero.
            if len < 0x80 || rest[0] == 0 {
                return Err(error(ErrorKind::Noncanonical { tag: Tag::Sequence }));
            }
            (len, &rest[n..])
        }
        _ => return Err(error(ErrorKind::Noncanonical { tag: Tag::Sequence })),
    };
    if rest.len() < len {
        return Err(Tag::Sequence.length_error());
    }
    let head = bytes.len() - rest.len();
    Ok((tag, &rest[..len], &bytes[..head + len]))
}

/// Whether INTEGER content octets are DER: present and minimal.
fn minimal_integer(c: &[u8]) -> bool {
    match c {
        [] => false,
        [0, b, ..] => b & 0x80 != 0,
        [0xff, b, ..] => b & 0x80 == 0,
        _ => true,
    }
}

/// The entries of a revokedCertificates list (its contents).
pub struct Entries<'a> {
    rest: &'a [u8],
}

impl<'a> Entries<'a> {
    pub fn new(list: &'a [u8]) -> Entries<'a> {
        Entries { rest: list }
    }

    fn entry(&mut self) -> der::Result<Entry<'a>> {
        let (tag, body, whole) = tlv(self.rest)?;
        self.rest = &self.rest[whole.len()..];
        if tag != SEQUENCE {
            return Err(error(ErrorKind::TagUnexpected {
                expected: Some(Tag::Sequence),
                actual: Tag::Sequence,
            }));
        }
        let (tag, serial, whole) = tlv(body)?;
        if tag != INTEGER || !minimal_integer(serial) {
            return Err(Tag::Integer.value_error());
        }
        let body = &body[whole.len()..];
        let (tag, _, date) = tlv(body)?;
        if tag != UTC_TIME && tag != GENERALIZED_TIME {
            return Err(Tag::UtcTime.value_error());
        }
        let body = &body[date.len()..];
        let extensions = if body.is_empty() {
            None
        } else {
            let (tag, exts, whole) = tlv(body)?;
            if tag != SEQUENCE || whole.len() != body.len() {
                return Err(error(ErrorKind::TrailingData {
                    decoded: 0u8.into(),
                    remaining: 0u8.into(),
                }));
            }
            Some(exts)
        };
        Ok(Entry {
            serial,
            date,
            extensions,
        })
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = der::Result<Entry<'a>>;

    /// The next entry; after an error, nothing more.
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let e = self.entry();
        if e.is_err() {
            self.rest = &[];
        }
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::asn1::IntRef;
    use der::{Decode, Header, Reader, SliceReader};

    /// The same reading done with der's decoders (the independent
    /// implementation).
    fn with_der(list: &[u8]) -> der::Result<Vec<Entry<'_>>> {
        let mut r = SliceReader::new(list)?;
        let mut out = Vec::new();
        while !r.is_finished() {
            let h = Header::decode(&mut r)?;
            h.tag.assert_eq(Tag::Sequence)?;
            let body = r.read_slice(h.length)?;
            let mut e = SliceReader::new(body)?;
            let serial = IntRef::decode(&mut e)?.as_bytes();
            let date = crate::lint::next_tlv(&mut e, body)?;
            x509_cert::time::Time::from_der(date)?;
            let extensions = if e.is_finished() {
                None
            } else {
                let h = Header::decode(&mut e)?;
                h.tag.assert_eq(Tag::Sequence)?;
                Some(e.read_slice(h.length)?)
            };
            e.finish(())?;
            out.push(Entry {
                serial,
                date,
                extensions,
            });
        }
        Ok(out)
    }

    fn mine(list: &[u8]) -> der::Result<Vec<Entry<'_>>> {
        Entries::new(list)
            .map(|e| {
                let e = e?;
                x509_cert::time::Time::from_der(e.date)?;
                Ok(e)
            })
            .collect()
    }

    /// The revokedCertificates contents of a CRL the issuer signs.
    fn sample_list(n: usize) -> Vec<u8> {
        use crate::lint::test_support::{Fixture, RevReason, NOW};
        let fx = Fixture::new(crate::keys::KeyType::P256);
        let reasons = [
            RevReason::Superseded,
            RevReason::Unspecified,
            RevReason::KeyCompromise,
        ];
        let entries: Vec<_> = (0..n)
            .map(|i| {
                // Serials of 1 to 20 octets, some with a high first bit
                // (a leading zero in DER).
                let mut s: Vec<u8> = (0..=(i % 20) as u8)
                    .map(|b| b.wrapping_mul(37) ^ i as u8)
                    .collect();
                s[0] |= 1;
                (s, NOW - 1000 + i as i64, reasons[i % 3])
            })
            .collect();
        let tbs = fx.crl_tbs(3, &entries);
        let head = crate::lint::crl::decode_head(&tbs).unwrap();
        head.entries.unwrap().to_vec()
    }

    #[test]
    fn agrees_with_der_on_valid_lists() {
        let list = sample_list(300);
        let a = mine(&list).unwrap();
        assert_eq!(a, with_der(&list).unwrap());
        assert_eq!(a.len(), 300);
    }

    #[test]
    fn agrees_with_der_on_corrupted_lists() {
        let list = sample_list(40);
        let mut rng = rand::thread_rng();
        for _ in 0..20_000 {
            use rand::Rng;
            let mut bad = list.clone();
            for _ in 0..rng.gen_range(1..4) {
                if bad.is_empty() {
                    break;
                }
                let i = rng.gen_range(0..bad.len());
                match rng.gen_range(0..3) {
                    0 => bad[i] ^= 1 << rng.gen_range(0..8),
                    1 => bad[i] = rng.gen(),
                    _ => bad.truncate(i),
                }
            }
            let (a, b) = (mine(&bad), with_der(&bad));
            assert_eq!(a.is_ok(), b.is_ok(), "{bad:02x?}: {a:?} / {b:?}");
            if let (Ok(a), Ok(b)) = (a, b) {
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn lengths_and_integers_must_be_minimal() {
        // 0x81 0x05: a long form for a short length.
        assert!(tlv(&[0x30, 0x81, 0x05, 1, 2, 3, 4, 5]).is_err());
        assert!(tlv(&[0x30, 0x82, 0x00, 0x80]).is_err());
        assert!(tlv(&[0x30, 0x80, 0x00, 0x00]).is_err());
        assert!(tlv(&[0x30, 0x03, 1, 2]).is_err());
        assert!(minimal_integer(&[0x00, 0x80]) && minimal_integer(&[0x7f]));
        assert!(!minimal_integer(&[0x00, 0x7f]) && !minimal_integer(&[0xff, 0x80]));
        assert!(!minimal_integer(&[]));
    }
}
