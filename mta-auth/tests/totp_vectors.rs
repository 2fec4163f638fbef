//! RFC 6238 Appendix B: all 18 vectors (SHA-1, SHA-256, SHA-512) through
//! this crate's own HOTP/TOTP code.

use hmac::Hmac;
use mailid_mta_auth::totp::totp;

#[test]
fn rfc6238_vectors() {
    let text = include_str!("../../shared/tests/vectors/totp-rfc6238.json");
    let doc: serde_json::Value = serde_json::from_str(text).unwrap();
    let mut checked = 0;
    for v in doc["vectors"].as_array().unwrap() {
        let secret = v["secret_ascii"].as_str().unwrap().as_bytes();
        let t = v["unix_time"].as_u64().unwrap();
        let step = v["step"].as_u64().unwrap();
        let digits = v["digits"].as_u64().unwrap() as u32;
        let got = match v["algorithm"].as_str().unwrap() {
            "SHA1" => totp::<Hmac<sha1::Sha1>>(secret, t, step, digits),
            "SHA256" => totp::<Hmac<sha2::Sha256>>(secret, t, step, digits),
            "SHA512" => totp::<Hmac<sha2::Sha512>>(secret, t, step, digits),
            other => panic!("unknown algorithm {other}"),
        };
        assert_eq!(got, v["totp"].as_str().unwrap(), "vector {v}");
        checked += 1;
    }
    assert_eq!(checked, 18);
}
