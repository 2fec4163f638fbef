//! Reads a to-be-signed certificate without copying it: the fields of a
//! TBSCertificate as slices of the input or as der's borrowed types.
//!
//! Why not `x509_cert::TbsCertificate::from_der`: decoding into owned
//! structures (names, key, nine extensions) makes some fifty allocations
//! and was half of the linter's time per certificate; the rules need only
//! a few fields decoded (each extension value is still decoded by its
//! x509-cert type, in [`super::cert`]). Names are compared as DER bytes,
//! which is exact: DER has one encoding per value.

use der::asn1::{IntRef, ObjectIdentifier, OctetStringRef};
use der::{Decode, Header, Reader, SliceReader, Tag, TagNumber};
use spki::AlgorithmIdentifierRef;
use x509_cert::time::Validity;

use super::next_tlv;

/// One extension, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct ExtRef<'a> {
    pub oid: ObjectIdentifier,
    pub critical: bool,
    /// The extnValue OCTET STRING's content.
    pub value: &'a [u8],
}

/// A TBSCertificate's fields.
#[derive(Debug)]
pub struct TbsRef<'a> {
    /// The version INTEGER; absent means v1.
    pub version: Option<u8>,
    /// The serial INTEGER's content octets.
    pub serial: &'a [u8],
    pub signature: AlgorithmIdentifierRef<'a>,
    /// The issuer Name (DER TLV).
    pub issuer: &'a [u8],
    pub validity: Validity,
    /// The subject Name (DER TLV).
    pub subject: &'a [u8],
    /// The SubjectPublicKeyInfo (DER TLV).
    pub spki: &'a [u8],
    /// Whether an issuer or subject unique ID is present.
    pub unique_ids: bool,
    pub extensions: Vec<ExtRef<'a>>,
    /// A DEFAULT value written out (an extension's `critical FALSE`):
    /// BER, not DER.
    pub default_written: bool,
}

fn context(r: &SliceReader<'_>, constructed: bool, number: TagNumber) -> bool {
    !r.is_finished()
        && r.peek_tag().ok()
            == Some(Tag::ContextSpecific {
                constructed,
                number,
            })
}

/// Decodes a TBSCertificate (RFC 5280 §4.1) strictly: every field in
/// order, nothing after the last.
pub fn decode(der: &[u8]) -> der::Result<TbsRef<'_>> {
    let body = super::sequence_body(der)?;
    let mut r = SliceReader::new(body)?;
    let version = if context(&r, true, TagNumber::N0) {
        let h = Header::decode(&mut r)?;
        let mut v = SliceReader::new(r.read_slice(h.length)?)?;
        let n = u8::decode(&mut v)?;
        v.finish(())?;
        Some(n)
    } else {
        None
    };
    let serial = IntRef::decode(&mut r)?.as_bytes();
    let signature = AlgorithmIdentifierRef::decode(&mut r)?;
    let issuer = sequence_tlv(&mut r, body)?;
    let validity = Validity::decode(&mut r)?;
    let subject = sequence_tlv(&mut r, body)?;
    let spki = sequence_tlv(&mut r, body)?;
    let mut unique_ids = false;
    for n in [TagNumber::N1, TagNumber::N2] {
        if context(&r, false, n) || context(&r, true, n) {
            next_tlv(&mut r, body)?;
            unique_ids = true;
        }
    }
    let mut extensions = Vec::new();
    let mut default_written = false;
    if context(&r, true, TagNumber::N3) {
        let h = Header::decode(&mut r)?;
        let mut x = SliceReader::new(r.read_slice(h.length)?)?;
        let h = Header::decode(&mut x)?;
        h.tag.assert_eq(Tag::Sequence)?;
        let list = x.read_slice(h.length)?;
        x.finish(())?;
        let mut l = SliceReader::new(list)?;
        // Extensions ::= SEQUENCE SIZE (1..MAX) OF Extension
        if l.is_finished() {
            return Err(Tag::Sequence.length_error());
        }
        extensions.reserve(10);
        while !l.is_finished() {
            let (e, written) = extension(&mut l)?;
            default_written |= written;
            extensions.push(e);
        }
    }
    r.finish(())?;
    Ok(TbsRef {
        version,
        serial,
        signature,
        issuer,
        validity,
        subject,
        spki,
        unique_ids,
        extensions,
        default_written,
    })
}

/// The next TLV, which must be a SEQUENCE.
fn sequence_tlv<'a>(r: &mut SliceReader<'a>, bytes: &'a [u8]) -> der::Result<&'a [u8]> {
    r.peek_tag()?.assert_eq(Tag::Sequence)?;
    next_tlv(r, bytes)
}

/// One Extension; whether its `critical` was written out as FALSE.
pub fn extension<'a>(r: &mut SliceReader<'a>) -> der::Result<(ExtRef<'a>, bool)> {
    let h = Header::decode(r)?;
    h.tag.assert_eq(Tag::Sequence)?;
    let mut x = SliceReader::new(r.read_slice(h.length)?)?;
    let oid = ObjectIdentifier::decode(&mut x)?;
    let (critical, written) = match x.peek_tag()? {
        Tag::Boolean => {
            let c = bool::decode(&mut x)?;
            (c, !c)
        }
        _ => (false, false),
    };
    let value = OctetStringRef::decode(&mut x)?.as_bytes();
    x.finish(())?;
    Ok((
        ExtRef {
            oid,
            critical,
            value,
        },
        written,
    ))
}
