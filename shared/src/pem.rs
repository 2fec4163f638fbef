//! PEM helpers tolerant of any line length (64 or 76 columns), CRLF line
//! ends and surrounding text.

use data_encoding::BASE64;

/// One decoded PEM block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemBlock {
    /// The label between `BEGIN ` and the dashes, e.g. `CERTIFICATE`.
    pub label: String,
    /// The decoded DER bytes.
    pub der: Vec<u8>,
}

/// Why PEM text could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    #[error("no PEM block found")]
    NoBlock,
    #[error("PEM block '{0}' has no END line")]
    Unterminated(String),
    #[error("PEM block '{0}' is not valid base64")]
    Base64(String),
    #[error("expected a PEM block labelled {expected}, found '{found}'")]
    Label { expected: String, found: String },
    #[error("expected one PEM block, found {0}")]
    Count(usize),
}

/// Decodes every PEM block in `text`, in order.
pub fn decode_all(text: &str) -> Result<Vec<PemBlock>, PemError> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let label_end = after
            .find("-----")
            .ok_or_else(|| PemError::Unterminated(String::new()))?;
        let label = after[..label_end].trim().to_string();
        let body_start = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let body_end = body_start
            .find(&end_marker)
            .ok_or_else(|| PemError::Unterminated(label.clone()))?;
        let body: Vec<u8> = body_start[..body_end]
            .bytes()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let der = BASE64
            .decode(&body)
            .map_err(|_| PemError::Base64(label.clone()))?;
        blocks.push(PemBlock { label, der });
        rest = &body_start[body_end + end_marker.len()..];
    }
    if blocks.is_empty() {
        return Err(PemError::NoBlock);
    }
    Ok(blocks)
}

/// Decodes exactly one block whose label is one of `labels`.
pub fn decode_one(text: &str, labels: &[&str]) -> Result<Vec<u8>, PemError> {
    let mut blocks = decode_all(text)?;
    if blocks.len() != 1 {
        return Err(PemError::Count(blocks.len()));
    }
    let block = blocks.remove(0);
    if !labels.contains(&block.label.as_str()) {
        return Err(PemError::Label {
            expected: labels.join(" or "),
            found: block.label,
        });
    }
    Ok(block.der)
}

/// Decodes every block labelled `label` (e.g. a certificate chain).
pub fn decode_chain(text: &str, label: &str) -> Result<Vec<Vec<u8>>, PemError> {
    let blocks = decode_all(text)?;
    blocks
        .into_iter()
        .map(|b| {
            if b.label == label {
                Ok(b.der)
            } else {
                Err(PemError::Label {
                    expected: label.to_string(),
                    found: b.label,
                })
            }
        })
        .collect()
}

/// Encodes DER as PEM with 64-column lines and LF line ends.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = BASE64.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// Encodes several DER certificates as one PEM bundle, in the order given.
pub fn encode_chain(ders: &[Vec<u8>]) -> String {
    ders.iter().map(|d| encode("CERTIFICATE", d)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tolerance() {
        let der: Vec<u8> = (0..200u8).collect();
        let pem = encode("CERTIFICATE", &der);
        assert_eq!(decode_one(&pem, &["CERTIFICATE"]).unwrap(), der);
        // 76 columns, CRLF, leading text.
        let b64 = BASE64.encode(&der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let crlf = format!(
            "subject=foo\r\n-----BEGIN CERTIFICATE-----\r\n{}\r\n-----END CERTIFICATE-----\r\n",
            lines.join("\r\n")
        );
        assert_eq!(decode_one(&crlf, &["CERTIFICATE"]).unwrap(), der);
        let two = format!("{pem}{crlf}");
        assert_eq!(decode_chain(&two, "CERTIFICATE").unwrap().len(), 2);
        assert_eq!(decode_one(&two, &["CERTIFICATE"]), Err(PemError::Count(2)));
    }

    #[test]
    fn errors() {
        assert_eq!(decode_all("hello"), Err(PemError::NoBlock));
        assert!(matches!(
            decode_all("-----BEGIN X-----\nAAAA\n"),
            Err(PemError::Unterminated(_))
        ));
        assert!(matches!(
            decode_all("-----BEGIN X-----\n!!!!\n-----END X-----\n"),
            Err(PemError::Base64(_))
        ));
        let pem = encode("PRIVATE KEY", b"abc");
        assert!(matches!(
            decode_one(&pem, &["CERTIFICATE REQUEST"]),
            Err(PemError::Label { .. })
        ));
    }
}
