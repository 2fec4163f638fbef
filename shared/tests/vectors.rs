//! The strong key identifier vectors of the hand-out, copied into the repo.

use mailid_shared::keyid::KeyId;

fn hex(s: &str) -> Vec<u8> {
    data_encoding::HEXLOWER.decode(s.as_bytes()).unwrap()
}

#[test]
fn strong_key_id_vectors() {
    let text = include_str!("vectors/strong-key-id.json");
    let doc: serde_json::Value = serde_json::from_str(text).unwrap();
    let mut checked = 0;
    for v in doc["vectors"].as_array().unwrap() {
        let spki = hex(v["spki_der_hex"].as_str().unwrap());
        for id in v["ids"].as_array().unwrap() {
            let version = id["algorithm"].as_u64().unwrap() as u8;
            let ki = KeyId::compute(version, &spki).unwrap();
            assert_eq!(ki.as_bytes(), hex(id["hex"].as_str().unwrap()).as_slice());
            assert_eq!(ki.to_base32(), id["base32"].as_str().unwrap());
            assert_eq!(ki.to_string(), id["display"].as_str().unwrap());
            let display = id["display"].as_str().unwrap();
            assert_eq!(display.parse::<KeyId>().unwrap(), ki);
            assert_eq!(display.to_lowercase().parse::<KeyId>().unwrap(), ki);
            assert_eq!(id["base32"].as_str().unwrap().parse::<KeyId>().unwrap(), ki);
            checked += 1;
        }
    }
    assert_eq!(checked, 8);
}
