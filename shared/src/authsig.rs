//! The CA credential: HMAC-SHA-256 signed requests from a CA to its MTA.
//!
//! Each CA registered at an MTA has a name and a 256-bit secret (the
//! *credential*, Base64url without padding). A signed request carries three
//! headers; the signature covers method, path, timestamp and the SHA-256 of
//! the body:
//!
//! ```text
//! X-Mailid-Ca: <name>
//! X-Mailid-Timestamp: <unix seconds>
//! X-Mailid-Signature: hex(HMAC-SHA256(secret, METHOD "\n" PATH "\n" TS "\n" hex(SHA256(body))))
//! ```

use data_encoding::{BASE64URL_NOPAD, HEXLOWER};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Header naming the calling CA.
pub const HEADER_CA: &str = "x-mailid-ca";
/// Header with the Unix timestamp of the request.
pub const HEADER_TIMESTAMP: &str = "x-mailid-timestamp";
/// Header with the hex HMAC.
pub const HEADER_SIGNATURE: &str = "x-mailid-signature";
/// Largest accepted clock difference, in seconds.
pub const MAX_SKEW_SECS: i64 = 60;

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    #[error("missing CA signature headers")]
    Missing,
    #[error("timestamp is not a number")]
    BadTimestamp,
    #[error("timestamp is more than {MAX_SKEW_SECS} s off")]
    Skew,
    #[error("signature does not verify")]
    BadSignature,
    #[error("credential is malformed")]
    BadCredential,
}

/// A CA credential secret; zeroed when dropped.
pub struct Credential(Zeroizing<Vec<u8>>);

impl Credential {
    /// A fresh 256-bit credential from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Credential(Zeroizing::new(bytes))
    }

    /// Parses the text form (surrounding white space is ignored).
    pub fn parse(text: &str) -> Result<Self, SigError> {
        let bytes = BASE64URL_NOPAD
            .decode(text.trim().as_bytes())
            .map_err(|_| SigError::BadCredential)?;
        if bytes.len() < 16 {
            return Err(SigError::BadCredential);
        }
        Ok(Credential(Zeroizing::new(bytes)))
    }

    /// From raw secret bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Credential(Zeroizing::new(bytes.to_vec()))
    }

    /// The text form, for the operator to hand to the CA.
    pub fn to_text(&self) -> String {
        BASE64URL_NOPAD.encode(&self.0)
    }

    /// The raw secret.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn mac(&self, method: &str, path: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
        let body_hash = HEXLOWER.encode(&Sha256::digest(body));
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        mac.update(method.as_bytes());
        mac.update(b"\n");
        mac.update(path.as_bytes());
        mac.update(b"\n");
        mac.update(timestamp.as_bytes());
        mac.update(b"\n");
        mac.update(body_hash.as_bytes());
        mac
    }

    /// The hex signature of a request.
    pub fn sign(&self, method: &str, path: &str, timestamp: i64, body: &[u8]) -> String {
        let mac = self.mac(method, path, &timestamp.to_string(), body);
        HEXLOWER.encode(&mac.finalize().into_bytes())
    }

    /// Checks a request's timestamp and signature (in constant time).
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        timestamp: &str,
        body: &[u8],
        signature_hex: &str,
        now: i64,
    ) -> Result<(), SigError> {
        let ts: i64 = timestamp.parse().map_err(|_| SigError::BadTimestamp)?;
        if (now - ts).abs() > MAX_SKEW_SECS {
            return Err(SigError::Skew);
        }
        let sig = HEXLOWER
            .decode(signature_hex.to_ascii_lowercase().as_bytes())
            .map_err(|_| SigError::BadSignature)?;
        self.mac(method, path, timestamp, body)
            .verify_slice(&sig)
            .map_err(|_| SigError::BadSignature)
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let c = Credential::generate();
        let again = Credential::parse(&c.to_text()).unwrap();
        let sig = c.sign("POST", "/v1/validate", 1000, b"{}");
        assert!(again
            .verify("POST", "/v1/validate", "1000", b"{}", &sig, 1030)
            .is_ok());
        assert_eq!(
            again.verify("POST", "/v1/validate", "1000", b"{}", &sig, 1061),
            Err(SigError::Skew)
        );
        assert_eq!(
            again.verify("POST", "/v1/validate", "1000", b"{ }", &sig, 1000),
            Err(SigError::BadSignature)
        );
        assert_eq!(
            again.verify("GET", "/v1/validate", "1000", b"{}", &sig, 1000),
            Err(SigError::BadSignature)
        );
        let other = Credential::generate();
        assert_eq!(
            other.verify("POST", "/v1/validate", "1000", b"{}", &sig, 1000),
            Err(SigError::BadSignature)
        );
        assert!(format!("{c:?}").contains("redacted"));
        assert_eq!(
            Credential::parse("short").err(),
            Some(SigError::BadCredential)
        );
    }
}
