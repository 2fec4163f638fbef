//! The CRL rules of the linter: the TBSCertList's fixed part is decoded
//! with x509-cert's types and judged by one function per rule; the
//! revoked entries are then read in one streaming pass, borrowed from the
//! input, and each is judged by the entry rules.
//!
//! Why not `x509_cert::crl::TbsCertList::from_der`: it allocates a
//! `RevokedCert` (serial, extension list, extension value) per entry, three
//! allocations for each of a million entries: the very cost
//! [`crate::crl_der`] exists to avoid. The fixed part is decoded by the
//! der/x509-cert types (strict DER); the entries are read by
//! [`super::crl_entries`], their times and extensions decoded by der once
//! per distinct encoding.

use std::collections::HashSet;

use der::asn1::{IntRef, ObjectIdentifier, OctetStringRef};
use der::{Decode, Header, Reader, SliceReader, Tag, TagNumber};
use spki::AlgorithmIdentifierRef;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, CrlReason};
use x509_cert::ext::Extensions;
use x509_cert::name::Name;
use x509_cert::time::Time;

use super::crl_entries::{Entries, Entry};
use super::{
    next_tlv, same_algorithm, serial_problem, start_time_problem, time_encoding, unix, CrlContext,
    Finding, Findings,
};
use crate::config::MAX_CRL_HOURS;

const OID_CRL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.20");
const OID_AKI: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");
const OID_REASON: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.21");

/// The TBSCertList's fields, decoded; the entries still as bytes.
pub struct Head<'a> {
    /// The version INTEGER, absent for v1.
    pub version: Option<u8>,
    pub signature: AlgorithmIdentifierRef<'a>,
    /// The issuer Name (DER TLV).
    pub issuer: &'a [u8],
    pub this_update: Time,
    pub next_update: Option<Time>,
    /// The contents of revokedCertificates, when present.
    pub entries: Option<&'a [u8]>,
    pub extensions: Option<Extensions>,
}

/// What the entry pass has already decoded: revocation dates and reason
/// extensions repeat from entry to entry (a batch of supersessions shares
/// a second; there are five reason codes), so each distinct encoding is
/// decoded and judged once.
#[derive(Default)]
struct Memo<'a> {
    /// The last revocationDate TLV, its time and what is wrong with its
    /// encoding.
    date: Option<(&'a [u8], i64, Option<String>)>,
    /// crlEntryExtensions encodings found clean.
    clean_extensions: Vec<&'a [u8]>,
}

impl<'a> Memo<'a> {
    fn date(&mut self, tlv: &'a [u8]) -> der::Result<(i64, Option<String>)> {
        match &self.date {
            Some((d, t, p)) if *d == tlv => Ok((*t, p.clone())),
            _ => {
                let time = Time::from_der(tlv)?;
                let (t, p) = (unix(&time), time_encoding(&time));
                self.date = Some((tlv, t, p.clone()));
                Ok((t, p))
            }
        }
    }
}

type HeadRule = (&'static str, fn(&Head, &CrlContext, &mut Findings));

/// Every rule on the CRL's fixed part, in the order they run.
pub(crate) const HEAD_RULES: &[HeadRule] = &[
    ("crl.version", version),
    ("crl.signature_algorithm", signature_algorithm),
    ("crl.issuer", issuer),
    ("crl.this_update", this_update),
    ("crl.next_update", next_update),
    ("crl.time_encoding", time_encodings),
    ("crl.extensions", extensions),
    ("crl.number", number),
    ("crl.aki", aki),
    ("crl.entries", entries_present),
];

/// The rules on each entry: `crl.entry_serial`, `crl.entry_date` (no later
/// than thisUpdate, RFC 5280 time encoding), `crl.entry_reason` (only a
/// non-critical reasonCode among those SPEC §5 allows, never
/// `unspecified`) and `crl.duplicate_serial`.
pub const ENTRY_RULES: &[&str] = &[
    "crl.entry_serial",
    "crl.entry_date",
    "crl.entry_reason",
    "crl.duplicate_serial",
];

/// Checks a to-be-signed CRL (DER TBSCertList): the rules of
/// [`HEAD_RULES`] and [`ENTRY_RULES`], plus `crl.decode`. One pass over the
/// entries; the only per-entry memory is a set of borrowed serials.
pub fn check_crl(tbs_der: &[u8], ctx: &CrlContext) -> Vec<Finding> {
    let mut f = Findings::default();
    let head = match decode_head(tbs_der) {
        Ok(h) => h,
        Err(e) => {
            f.push("crl.decode", format!("not a DER TBSCertList: {e}"));
            return f.finish();
        }
    };
    for (_, rule) in HEAD_RULES {
        rule(&head, ctx, &mut f);
    }
    if let Some(list) = head.entries {
        if let Err(e) = check_entries(list, &head, &mut f) {
            f.push("crl.decode", format!("revoked entry does not decode: {e}"));
        }
    }
    f.finish()
}

/// Decodes the TBSCertList fields in order (RFC 5280 §5.1).
pub fn decode_head(der: &[u8]) -> der::Result<Head<'_>> {
    let body = super::sequence_body(der)?;
    let mut r = SliceReader::new(body)?;
    let version = match r.peek_tag()? {
        Tag::Integer => Some(u8::decode(&mut r)?),
        _ => None,
    };
    let signature = AlgorithmIdentifierRef::decode(&mut r)?;
    r.peek_tag()?.assert_eq(Tag::Sequence)?;
    let issuer = next_tlv(&mut r, body)?;
    let this_update = Time::decode(&mut r)?;
    let next_update = match peek(&r) {
        Some(Tag::UtcTime | Tag::GeneralizedTime) => Some(Time::decode(&mut r)?),
        _ => None,
    };
    let entries = match peek(&r) {
        Some(Tag::Sequence) => {
            let h = Header::decode(&mut r)?;
            Some(r.read_slice(h.length)?)
        }
        _ => None,
    };
    let extensions = match peek(&r) {
        Some(Tag::ContextSpecific {
            constructed: true,
            number,
        }) if number == TagNumber::N0 => {
            let h = Header::decode(&mut r)?;
            let mut inner = SliceReader::new(r.read_slice(h.length)?)?;
            let exts = Extensions::decode(&mut inner)?;
            inner.finish(())?;
            Some(exts)
        }
        _ => None,
    };
    r.finish(())?;
    Ok(Head {
        version,
        signature,
        issuer,
        this_update,
        next_update,
        entries,
        extensions,
    })
}

fn peek(r: &SliceReader<'_>) -> Option<Tag> {
    if r.is_finished() {
        None
    } else {
        r.peek_tag().ok()
    }
}

/// The one pass over the entries. Duplicates are found by sorting a
/// 64-bit fingerprint per serial (8 bytes an entry, sequential memory; a
/// hash set of a million serials was four times slower, all cache misses);
/// only fingerprints that repeat are compared by value, in a second pass.
fn check_entries(list: &[u8], head: &Head, f: &mut Findings) -> der::Result<()> {
    // ~35 bytes per entry: one allocation for the fingerprints.
    let mut prints: Vec<u64> = Vec::with_capacity(list.len() / 32);
    let this_update = unix(&head.this_update);
    let mut memo = Memo::default();
    for e in Entries::new(list) {
        let e = e?;
        entry_serial(&e, f);
        entry_date(&e, this_update, &mut memo, f)?;
        entry_reason(&e, &mut memo, f)?;
        prints.push(fingerprint(e.serial));
    }
    prints.sort_unstable();
    let repeated: HashSet<u64> = prints
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    drop(prints);
    if !repeated.is_empty() {
        duplicate_serials(list, &repeated, f)?;
    }
    Ok(())
}

/// A 64-bit fingerprint of a serial (length and content).
fn fingerprint(serial: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = (serial.len() as u64).wrapping_mul(K);
    for chunk in serial.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    h ^ (h >> 29)
}

/// The second pass: the serials whose fingerprints repeat, compared by
/// value.
fn duplicate_serials(list: &[u8], repeated: &HashSet<u64>, f: &mut Findings) -> der::Result<()> {
    let mut seen: HashSet<&[u8]> = HashSet::new();
    for e in Entries::new(list) {
        let e = e?;
        if repeated.contains(&fingerprint(e.serial)) && !seen.insert(e.serial) {
            f.push(
                "crl.duplicate_serial",
                format!("serial {} is listed twice", hex(e.serial)),
            );
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn entry_serial(e: &Entry, f: &mut Findings) {
    if let Some(p) = serial_problem(e.serial) {
        f.push("crl.entry_serial", format!("entry {}: {p}", hex(e.serial)));
    }
}

fn entry_date<'a>(
    e: &Entry<'a>,
    this_update: i64,
    memo: &mut Memo<'a>,
    f: &mut Findings,
) -> der::Result<()> {
    let (t, encoding) = memo.date(e.date)?;
    if t > this_update {
        f.push(
            "crl.entry_date",
            format!("entry {} is revoked after thisUpdate", hex(e.serial)),
        );
    }
    if let Some(p) = encoding {
        f.push("crl.entry_date", format!("entry {}: {p}", hex(e.serial)));
    }
    Ok(())
}

/// Only a non-critical reasonCode, once, with a code SPEC §5 uses
/// (unspecified is expressed by leaving the extension out).
fn entry_reason<'a>(e: &Entry<'a>, memo: &mut Memo<'a>, f: &mut Findings) -> der::Result<()> {
    let Some(exts) = e.extensions else {
        return Ok(());
    };
    if memo.clean_extensions.contains(&exts) {
        return Ok(());
    }
    let mut problems = Vec::new();
    reason_problems(exts, &mut problems)?;
    if problems.is_empty() {
        if memo.clean_extensions.len() < 16 {
            memo.clean_extensions.push(exts);
        }
    } else {
        let who = hex(e.serial);
        for p in problems {
            f.push("crl.entry_reason", format!("entry {who}: {p}"));
        }
    }
    Ok(())
}

/// What is wrong with one entry's crlEntryExtensions.
fn reason_problems(exts: &[u8], problems: &mut Vec<String>) -> der::Result<()> {
    let mut r = SliceReader::new(exts)?;
    if r.is_finished() {
        problems.push("empty crlEntryExtensions".into());
    }
    let mut reasons = 0;
    while !r.is_finished() {
        let h = Header::decode(&mut r)?;
        h.tag.assert_eq(Tag::Sequence)?;
        let mut x = SliceReader::new(r.read_slice(h.length)?)?;
        let oid = ObjectIdentifier::decode(&mut x)?;
        let critical = match x.peek_tag()? {
            Tag::Boolean => {
                let c = bool::decode(&mut x)?;
                if !c {
                    problems.push("critical FALSE encoded (DER omits a DEFAULT)".into());
                }
                c
            }
            _ => false,
        };
        let value = OctetStringRef::decode(&mut x)?;
        x.finish(())?;
        if oid != OID_REASON {
            problems.push(format!("extension {oid} is not in the profile"));
            continue;
        }
        reasons += 1;
        if critical {
            problems.push("reasonCode must not be critical".into());
        }
        match CrlReason::from_der(value.as_bytes()) {
            Ok(
                CrlReason::KeyCompromise
                | CrlReason::AffiliationChanged
                | CrlReason::Superseded
                | CrlReason::CessationOfOperation
                | CrlReason::PrivilegeWithdrawn,
            ) => {}
            Ok(other) => problems.push(format!("reason {other:?} is not allowed")),
            Err(err) => problems.push(format!("reasonCode does not decode: {err}")),
        }
    }
    if reasons > 1 {
        problems.push(format!("reasonCode appears {reasons} times"));
    }
    Ok(())
}

fn version(h: &Head, _: &CrlContext, f: &mut Findings) {
    if h.version != Some(1) {
        f.push(
            "crl.version",
            format!("version is {:?}, not v2 (1)", h.version),
        );
    }
}

fn signature_algorithm(h: &Head, ctx: &CrlContext, f: &mut Findings) {
    if !same_algorithm(
        &ctx.profile.signature_algorithm,
        h.signature.oid,
        h.signature.parameters,
    ) {
        f.push(
            "crl.signature_algorithm",
            format!(
                "signature algorithm {} is not the CA key's",
                h.signature.oid
            ),
        );
    }
}

fn issuer(h: &Head, ctx: &CrlContext, f: &mut Findings) {
    if h.issuer != ctx.profile.issuer {
        let shown = Name::from_der(h.issuer).map_or_else(|_| hex(h.issuer), |n| n.to_string());
        f.push(
            "crl.issuer",
            format!("issuer '{shown}' is not the CA's subject"),
        );
    }
}

/// Backdated at most a minute, not in the future.
fn this_update(h: &Head, ctx: &CrlContext, f: &mut Findings) {
    let t = unix(&h.this_update);
    if let Some(p) = start_time_problem("thisUpdate", t, ctx.now) {
        f.push("crl.this_update", p);
    }
}

/// Present, after thisUpdate, within the configured lifetime (≤ 7 days).
fn next_update(h: &Head, ctx: &CrlContext, f: &mut Findings) {
    let Some(next) = &h.next_update else {
        f.push("crl.next_update", "nextUpdate is missing");
        return;
    };
    let (this, next) = (unix(&h.this_update), unix(next));
    let max = ctx
        .profile
        .crl_lifetime_secs
        .min(i64::from(MAX_CRL_HOURS) * 3600);
    if next <= this {
        f.push("crl.next_update", "nextUpdate is not after thisUpdate");
    } else if next - this > max {
        f.push(
            "crl.next_update",
            format!(
                "nextUpdate is {} s after thisUpdate (at most {max})",
                next - this
            ),
        );
    }
}

fn time_encodings(h: &Head, _: &CrlContext, f: &mut Findings) {
    for t in std::iter::once(&h.this_update).chain(h.next_update.as_ref()) {
        if let Some(p) = time_encoding(t) {
            f.push("crl.time_encoding", p);
        }
    }
}

/// CRL number and AKI, each once, non-critical; nothing else.
fn extensions(h: &Head, _: &CrlContext, f: &mut Findings) {
    let exts = h.extensions.as_deref().unwrap_or_default();
    for (i, e) in exts.iter().enumerate() {
        if e.extn_id != OID_CRL_NUMBER && e.extn_id != OID_AKI {
            f.push(
                "crl.extensions",
                format!("extension {} is not in the profile", e.extn_id),
            );
        } else if e.critical {
            f.push(
                "crl.extensions",
                format!("extension {} must not be critical", e.extn_id),
            );
        }
        if exts[..i].iter().any(|o| o.extn_id == e.extn_id) {
            f.push(
                "crl.extensions",
                format!("extension {} appears twice", e.extn_id),
            );
        }
    }
}

fn ext<'h>(h: &'h Head, oid: ObjectIdentifier) -> Option<&'h [u8]> {
    h.extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == oid)
        .map(|e| e.extn_value.as_bytes())
}

/// Present, non-negative, at most 20 octets, above the previous CRL's.
fn number(h: &Head, ctx: &CrlContext, f: &mut Findings) {
    let rule = "crl.number";
    let Some(value) = ext(h, OID_CRL_NUMBER) else {
        f.push(rule, "cRLNumber is missing");
        return;
    };
    let n = match IntRef::from_der(value) {
        Ok(n) => n.as_bytes(),
        Err(e) => return f.push(rule, format!("cRLNumber does not decode: {e}")),
    };
    if n.first().is_some_and(|b| b & 0x80 != 0) {
        return f.push(rule, "cRLNumber is negative");
    }
    if n.len() > 20 {
        return f.push(
            rule,
            format!("cRLNumber has {} octets (at most 20)", n.len()),
        );
    }
    let Some(prev) = ctx.previous_number else {
        return;
    };
    let value = (n.len() <= 16).then(|| n.iter().fold(0i128, |a, b| (a << 8) | i128::from(*b)));
    if value.is_some_and(|v| v <= i128::from(prev)) {
        f.push(
            rule,
            format!(
                "cRLNumber {} is not above the previous CRL's {prev}",
                value.unwrap_or(0)
            ),
        );
    }
}

/// The key identifier alone, equal to the CA's SKI.
fn aki(h: &Head, ctx: &CrlContext, f: &mut Findings) {
    let Some(value) = ext(h, OID_AKI) else {
        return f.push("crl.aki", "authorityKeyIdentifier is missing");
    };
    let ok = AuthorityKeyIdentifier::from_der(value).is_ok_and(|a| {
        a.authority_cert_issuer.is_none()
            && a.authority_cert_serial_number.is_none()
            && a.key_identifier
                .is_some_and(|k| k.as_bytes() == ctx.profile.ca_ski)
    });
    if !ok {
        f.push(
            "crl.aki",
            "authorityKeyIdentifier is not the CA's key ID alone",
        );
    }
}

/// RFC 5280 §5.1.2.6: an empty list is left out, not encoded empty.
fn entries_present(h: &Head, _: &CrlContext, f: &mut Findings) {
    if h.entries.is_some_and(<[u8]>::is_empty) {
        f.push("crl.entries", "revokedCertificates is present but empty");
    }
}

#[cfg(test)]
#[path = "crl_tests.rs"]
mod tests;
