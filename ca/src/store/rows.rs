//! Reading stored rows back, shared by both backends: a certificate row's
//! text columns parsed into newtypes (anything that does not parse is
//! corruption), and stored serials decoded without allocating.

use mailid_shared::protocol::RevocationReason;
use mailid_shared::Address;

use super::{CertRow, StoreError};

/// A certificate row as both backends read it, before its text columns are
/// parsed into newtypes by [`finish`].
pub(crate) struct RawCert {
    pub(crate) serial: String,
    pub(crate) account: String,
    pub(crate) key_id: String,
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    pub(crate) issued_at: i64,
    pub(crate) revoked_at: Option<i64>,
    pub(crate) reason: Option<i64>,
}

/// Parses a [`RawCert`]; a value that does not parse is
/// [`StoreError::Corrupt`].
pub(crate) fn finish(raw: RawCert, der: Vec<u8>) -> Result<CertRow, StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("{what} of {}", raw.serial));
    Ok(CertRow {
        serial: raw.serial.parse().map_err(|_| bad("serial"))?,
        account: Address::parse(&raw.account).map_err(|_| bad("account"))?,
        key_id: raw.key_id.parse().map_err(|_| bad("key ID"))?,
        not_before: raw.not_before,
        not_after: raw.not_after,
        issued_at: raw.issued_at,
        der,
        revoked_at: raw.revoked_at,
        reason: match raw.reason {
            None => None,
            Some(c) => Some(
                u8::try_from(c)
                    .ok()
                    .and_then(RevocationReason::from_code)
                    .ok_or_else(|| bad("reason"))?,
            ),
        },
    })
}

/// Decodes a stored serial (lowercase hex, as [`Serial`] stores it) into
/// `buf`; `None` for anything else or more than 32 bytes.
pub(crate) fn decode_serial<'a>(hex: &[u8], buf: &'a mut [u8; 32]) -> Option<&'a [u8]> {
    if hex.is_empty() || hex.len() % 2 != 0 || hex.len() > 2 * buf.len() {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        buf[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(&buf[..hex.len() / 2])
}
