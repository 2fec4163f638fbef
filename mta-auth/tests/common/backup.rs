//! Real key backups for the tests: fresh keys encrypted by the pkcs8 crate
//! (PBES2 with AES-256-CBC, a low PBKDF2 count) under a test recovery key.

use mailid_shared::{pem, KeyId};
use pkcs8::der::Decode;
use pkcs8::pkcs5::pbes2;
use pkcs8::PrivateKeyInfo;
use rcgen::PublicKeyData;

/// The recovery key the tests encrypt under (the MTA never sees it).
pub const RECOVERY: &[u8] = b"a recovery key the MTA never sees";

/// A fresh P-256 key: its strong key ID and its PKCS#8 DER.
pub fn new_key() -> (KeyId, Vec<u8>) {
    let kp = rcgen::KeyPair::generate().unwrap();
    (
        KeyId::of_spki(&kp.subject_public_key_info()),
        kp.serialize_der(),
    )
}

/// The key encrypted under [`RECOVERY`] with `params`, as PEM.
pub fn encrypt(der: &[u8], params: pbes2::Parameters<'_>) -> String {
    let doc = PrivateKeyInfo::from_der(der)
        .unwrap()
        .encrypt_with_params(params, RECOVERY)
        .unwrap();
    pem::encode("ENCRYPTED PRIVATE KEY", doc.as_bytes())
}

/// PBES2 with AES-256-CBC.
pub fn aes256(der: &[u8]) -> String {
    let (salt, iv) = (rand::random::<[u8; 16]>(), rand::random::<[u8; 16]>());
    encrypt(
        der,
        pbes2::Parameters::pbkdf2_sha256_aes256cbc(1000, &salt, &iv).unwrap(),
    )
}

/// A fresh key's ID and its backup text.
pub fn encrypted_key() -> (KeyId, String) {
    let (k, der) = new_key();
    (k, aes256(&der))
}

/// `PUT /v1/backups/{key}` as `user`; must answer 200.
pub async fn put_backup(
    c: &reqwest::Client,
    url: &str,
    user: &str,
    pw: &str,
    key: &KeyId,
    text: &str,
) {
    let resp = c
        .put(format!("{url}/v1/backups/{key}"))
        .basic_auth(user, Some(pw))
        .json(&serde_json::json!({ "encrypted_key": text }))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_eq!(status, 200, "{}", resp.text().await.unwrap());
}

/// `GET /v1/backups` as `user`; must answer 200.
pub async fn list_backups(
    c: &reqwest::Client,
    url: &str,
    user: &str,
    pw: &str,
) -> mailid_shared::protocol::BackupList {
    let resp = c
        .get(format!("{url}/v1/backups"))
        .basic_auth(user, Some(pw))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.unwrap()
}
