//! RFC 3339 UTC time text, the only time format on the wire.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Formats Unix seconds as RFC 3339 UTC, e.g. `2026-11-22T20:31:16Z`.
pub fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Parses RFC 3339 text into Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_111_111_109), "2005-03-18T01:58:29Z");
        assert_eq!(parse_rfc3339("2005-03-18T01:58:29Z"), Some(1_111_111_109));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
