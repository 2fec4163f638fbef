//! Certificate serial numbers in their text form: lower-case hex, no `0x`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes of randomness in a serial mailid makes (128 bits).
pub const SERIAL_BYTES: usize = 16;

/// A certificate serial number as lower-case hex without leading zero bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(String);

/// Why a serial could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SerialError {
    #[error("serial number is empty")]
    Empty,
    #[error("serial number must be hexadecimal")]
    NotHex,
    #[error("serial number is longer than 20 octets")]
    TooLong,
}

impl Serial {
    /// A fresh random positive 128-bit serial whose first byte is non-zero,
    /// so its text form is always 32 hex digits.
    pub fn random() -> Self {
        use rand::RngCore;
        let mut bytes = [0u8; SERIAL_BYTES];
        loop {
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            if bytes[0] != 0 {
                return Serial::from_bytes(&bytes);
            }
        }
    }

    /// From the big-endian magnitude bytes (leading zero bytes are dropped).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        let trimmed = &bytes[start..];
        if trimmed.is_empty() {
            return Serial("00".into());
        }
        Serial(data_encoding::HEXLOWER.encode(trimmed))
    }

    /// The big-endian magnitude bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        data_encoding::HEXLOWER
            .decode(self.0.as_bytes())
            .unwrap_or_default()
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Serial {
    type Err = SerialError;

    /// Accepts hex in any case, with an optional `0x` and optional `:`
    /// separators (as `openssl` prints them).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let s = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        let mut hex: String = s
            .chars()
            .filter(|c| *c != ':')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if hex.is_empty() {
            return Err(SerialError::Empty);
        }
        if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(SerialError::NotHex);
        }
        if hex.len() % 2 == 1 {
            hex.insert(0, '0');
        }
        if hex.len() > 80 {
            return Err(SerialError::TooLong);
        }
        let bytes = data_encoding::HEXLOWER
            .decode(hex.as_bytes())
            .map_err(|_| SerialError::NotHex)?;
        let serial = Serial::from_bytes(&bytes);
        if serial.0.len() > 40 {
            return Err(SerialError::TooLong);
        }
        Ok(serial)
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.0)
    }
}

impl Serialize for Serial {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Serial {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_serials_are_32_hex_digits() {
        for _ in 0..100 {
            let s = Serial::random();
            assert_eq!(s.as_str().len(), 32);
            assert_eq!(s.as_str().parse::<Serial>().unwrap(), s);
            assert_eq!(Serial::from_bytes(&s.to_bytes()), s);
        }
    }

    #[test]
    fn parsing_normalises() {
        assert_eq!("0x0ABC".parse::<Serial>().unwrap().as_str(), "0abc");
        assert_eq!("0AB:CD".parse::<Serial>().unwrap().as_str(), "abcd");
        assert_eq!("AB:CD".parse::<Serial>().unwrap().as_str(), "abcd");
        assert_eq!("000001".parse::<Serial>().unwrap().as_str(), "01");
        assert_eq!("".parse::<Serial>(), Err(SerialError::Empty));
        assert_eq!("xyz".parse::<Serial>(), Err(SerialError::NotHex));
        assert_eq!("ab".repeat(21).parse::<Serial>(), Err(SerialError::TooLong));
    }
}
