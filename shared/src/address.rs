//! Mail addresses: plain addr-specs and strong email addresses.
//!
//! An [`Address`] is one ASCII addr-spec (dot-atom local part, host name
//! domain), at most 254 octets, kept in lower case. A [`StrongAddress`] is one
//! of the forms `KEYID?local@domain`, `KEYID??local@domain`, `?local@domain`
//! or a plain address.
//!
//! `?` is legal atext in an addr-spec, but it is the separator of the strong
//! forms: an address holding one (`a?b@example.com`, `?q@example.com`) would
//! read as a strong address naming another account, or none. So a plain
//! [`Address`] must not contain `?` ([`AddressError::QuestionMark`]); the
//! strong forms keep working.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::keyid::{KeyId, KeyIdError};

/// Longest address accepted, in octets (RFC 5321 path limit less the brackets).
pub const MAX_ADDRESS_LEN: usize = 254;
const MAX_LOCAL_LEN: usize = 64;

/// A normalised (lower-case) mail address.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(String);

/// Why an address could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address is empty")]
    Empty,
    #[error("address is longer than {MAX_ADDRESS_LEN} octets")]
    TooLong,
    #[error("address must be ASCII")]
    NotAscii,
    #[error("address must contain exactly one '@'")]
    At,
    #[error("local part of the address is not a valid dot-atom")]
    LocalPart,
    #[error("domain of the address is not a valid host name")]
    Domain,
    #[error("strong address has a bad key ID: {0}")]
    KeyId(KeyIdError),
    #[error("strong address has more than two '?' separators")]
    Marker,
    #[error("address must not contain '?' (it separates the key ID of a strong email address)")]
    QuestionMark,
}

fn is_atext(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&c)
}

fn valid_local(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= MAX_LOCAL_LEN
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.bytes().all(is_atext))
}

fn valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

impl Address {
    /// Parses and normalises an addr-spec. Refuses `?`, legal atext but the
    /// separator of strong email addresses ([`AddressError::QuestionMark`]).
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if s.len() > MAX_ADDRESS_LEN {
            return Err(AddressError::TooLong);
        }
        if !s.is_ascii() {
            return Err(AddressError::NotAscii);
        }
        if s.contains('?') {
            return Err(AddressError::QuestionMark);
        }
        let lower = s.to_ascii_lowercase();
        let mut parts = lower.split('@');
        let (local, domain) = match (parts.next(), parts.next(), parts.next()) {
            (Some(l), Some(d), None) => (l, d),
            _ => return Err(AddressError::At),
        };
        if !valid_local(local) {
            return Err(AddressError::LocalPart);
        }
        if !valid_domain(domain) {
            return Err(AddressError::Domain);
        }
        Ok(Address(lower))
    }

    /// The address text, lower case.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The domain part.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }

    /// The local part.
    pub fn local(&self) -> &str {
        self.0.rsplit_once('@').map(|(l, _)| l).unwrap_or("")
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.0)
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Address::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Which strong-address form was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrongForm {
    /// `local@domain`: no key constraint.
    Plain,
    /// `KEYID?local@domain`: the identity must have this key.
    KeyBound,
    /// `KEYID??local@domain`: the identity must have this key, strictly.
    KeyBoundStrict,
    /// `?local@domain`: any strong identity for the address.
    AnyStrong,
}

/// A strong email address: an address with an optional key constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrongAddress {
    /// The plain address.
    pub address: Address,
    /// The key the identity must have, if any.
    pub key_id: Option<KeyId>,
    /// The form that was parsed.
    pub form: StrongForm,
}

impl StrongAddress {
    /// Parses any of the four forms.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        let Some(q) = s.find('?') else {
            return Ok(StrongAddress {
                address: Address::parse(s)?,
                key_id: None,
                form: StrongForm::Plain,
            });
        };
        // The marker is the first '?' (or '??'); the plain address after it
        // may not hold another one (see `Address::parse`).
        let (prefix, rest) = s.split_at(q);
        let (strict, addr) = match rest.strip_prefix("??") {
            Some(a) => (true, a),
            None => (false, &rest[1..]),
        };
        if prefix.is_empty() {
            if strict {
                return Err(AddressError::Marker);
            }
            return Ok(StrongAddress {
                address: Address::parse(addr)?,
                key_id: None,
                form: StrongForm::AnyStrong,
            });
        }
        if addr.starts_with('?') {
            return Err(AddressError::Marker);
        }
        let key_id = prefix.parse::<KeyId>().map_err(AddressError::KeyId)?;
        Ok(StrongAddress {
            address: Address::parse(addr)?,
            key_id: Some(key_id),
            form: if strict {
                StrongForm::KeyBoundStrict
            } else {
                StrongForm::KeyBound
            },
        })
    }
}

impl fmt::Display for StrongAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.form, &self.key_id) {
            (StrongForm::KeyBound, Some(k)) => write!(f, "{k}?{}", self.address),
            (StrongForm::KeyBoundStrict, Some(k)) => write!(f, "{k}??{}", self.address),
            (StrongForm::AnyStrong, _) => write!(f, "?{}", self.address),
            _ => write!(f, "{}", self.address),
        }
    }
}

impl FromStr for StrongAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StrongAddress::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_addresses_are_normalised() {
        let a = Address::parse("Alice.Smith@Example.COM").unwrap();
        assert_eq!(a.as_str(), "alice.smith@example.com");
        assert_eq!(a.domain(), "example.com");
        assert_eq!(a.local(), "alice.smith");
    }

    #[test]
    fn bad_addresses_are_rejected() {
        assert_eq!(Address::parse(""), Err(AddressError::Empty));
        assert_eq!(Address::parse("alice"), Err(AddressError::At));
        assert_eq!(Address::parse("a@b@c"), Err(AddressError::At));
        assert_eq!(Address::parse("@example.com"), Err(AddressError::LocalPart));
        assert_eq!(
            Address::parse("a..b@example.com"),
            Err(AddressError::LocalPart)
        );
        assert_eq!(
            Address::parse(".a@example.com"),
            Err(AddressError::LocalPart)
        );
        assert_eq!(
            Address::parse("a b@example.com"),
            Err(AddressError::LocalPart)
        );
        assert_eq!(
            Address::parse("\"a\"@example.com"),
            Err(AddressError::LocalPart)
        );
        assert_eq!(Address::parse("alice@"), Err(AddressError::Domain));
        assert_eq!(Address::parse("alice@-x.com"), Err(AddressError::Domain));
        assert_eq!(Address::parse("alice@x..com"), Err(AddressError::Domain));
        assert_eq!(
            Address::parse("alice@exa_mple.com"),
            Err(AddressError::Domain)
        );
        assert_eq!(
            Address::parse("älice@example.com"),
            Err(AddressError::NotAscii)
        );
        let long = format!("{}@{}.com", "a".repeat(64), "b".repeat(200));
        assert_eq!(Address::parse(&long), Err(AddressError::TooLong));
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert_eq!(Address::parse(&long_local), Err(AddressError::LocalPart));
    }

    #[test]
    fn question_marks_are_refused_in_plain_addresses() {
        for a in [
            "a?b@example.com",
            "?q@example.com",
            "q?@example.com",
            "a@exa?mple.com",
            "?",
        ] {
            assert_eq!(Address::parse(a), Err(AddressError::QuestionMark), "{a}");
        }
        // Other atext specials stay legal.
        assert!(Address::parse("a!#$%&'*+-/=^_`{|}~b@example.com").is_ok());
        let key = KeyId::of_spki(b"k");
        // A strong form whose address part holds another '?'.
        assert_eq!(
            StrongAddress::parse(&format!("{key}?a?b@example.com")),
            Err(AddressError::QuestionMark)
        );
        assert_eq!(
            StrongAddress::parse("?a?b@example.com"),
            Err(AddressError::QuestionMark)
        );
        // `a?b@...` is not a plain address with a '?': 'a' is no key ID.
        assert!(matches!(
            StrongAddress::parse("a?b@example.com"),
            Err(AddressError::KeyId(_))
        ));
        // The strong forms still work.
        assert_eq!(
            StrongAddress::parse("?q@example.com").unwrap().form,
            StrongForm::AnyStrong
        );
        assert_eq!(
            StrongAddress::parse(&format!("{key}??q@example.com"))
                .unwrap()
                .address
                .as_str(),
            "q@example.com"
        );
        assert!(AddressError::QuestionMark.to_string().contains("'?'"));
    }

    #[test]
    fn strong_forms() {
        let key = KeyId::of_spki(b"k");
        let plain = StrongAddress::parse("Bob@Example.org").unwrap();
        assert_eq!(plain.form, StrongForm::Plain);
        assert_eq!(plain.key_id, None);

        let any = StrongAddress::parse("?bob@example.org").unwrap();
        assert_eq!(any.form, StrongForm::AnyStrong);
        assert_eq!(any.address.as_str(), "bob@example.org");
        assert_eq!(any.to_string(), "?bob@example.org");

        let bound = StrongAddress::parse(&format!("{key}?bob@example.org")).unwrap();
        assert_eq!(bound.form, StrongForm::KeyBound);
        assert_eq!(bound.key_id.as_ref(), Some(&key));
        assert_eq!(bound.to_string(), format!("{key}?bob@example.org"));

        let lower = format!("{}?bob@example.org", key.to_base32().to_lowercase());
        assert_eq!(
            StrongAddress::parse(&lower).unwrap().key_id,
            Some(key.clone())
        );

        let strict = StrongAddress::parse(&format!("{key}??bob@example.org")).unwrap();
        assert_eq!(strict.form, StrongForm::KeyBoundStrict);
        assert_eq!(strict.key_id, Some(key.clone()));
    }

    #[test]
    fn bad_strong_forms() {
        let key = KeyId::of_spki(b"k");
        assert!(matches!(
            StrongAddress::parse("NOTBASE32!?bob@example.org"),
            Err(AddressError::KeyId(_))
        ));
        assert_eq!(
            StrongAddress::parse("??bob@example.org"),
            Err(AddressError::Marker)
        );
        assert_eq!(
            StrongAddress::parse(&format!("{key}???bob@example.org")),
            Err(AddressError::Marker)
        );
        assert_eq!(
            StrongAddress::parse(&format!("{key}?bob")),
            Err(AddressError::At)
        );
        assert!(StrongAddress::parse("?").is_err());
        assert!(StrongAddress::parse("").is_err());
    }
}
