//! PKCS#8 private-key encryption for the whole project (PBES2: PBKDF2 with
//! HMAC-SHA-256 and AES-256-CBC, RFC 8018), so the CA key file, the
//! client's key store and the key backups of SPEC §10 are written one way
//! and read by `openssl pkey`/`openssl pkcs8` alike.
//!
//! Key derivation and AES run on aws-lc-rs, fast in every build profile;
//! keys written by other tools with schemes aws-lc-rs does not offer here
//! (scrypt, for example) are read through the `pkcs8` crate.

use std::num::NonZeroU32;

use aws_lc_rs::cipher::{
    DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey,
    UnboundCipherKey, AES_128, AES_256,
};
use aws_lc_rs::pbkdf2;
use der::Encode;
use pkcs8::pkcs5::{self, pbes2};
use rand::RngCore;
use zeroize::Zeroizing;

/// PBKDF2 iterations for a key protected by a passphrase a person chose
/// (OWASP's 2023 advice for PBKDF2-HMAC-SHA256).
pub const PASSPHRASE_ITERATIONS: u32 = 600_000;

/// PBKDF2 iterations for a key protected by a 256-bit random secret (a
/// backup's recovery key): stretching adds nothing to 2^256 guesses, so
/// this only keeps the format the one every tool reads.
pub const RANDOM_KEY_ITERATIONS: u32 = 10_000;

/// Highest iteration count accepted when decrypting (as the pkcs5 crate).
const MAX_ITERATIONS: u32 = 100_000_000;

/// Why a key could not be encrypted or decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Pbes2Error {
    /// The input is not the PKCS#8 structure it should be.
    #[error("{0}")]
    Malformed(String),
    /// The passphrase does not decrypt the key (or the ciphertext was
    /// altered: PBES2 cannot tell the two apart).
    #[error("wrong passphrase for the encrypted key")]
    WrongPassphrase,
    /// A scheme or parameter this project does not accept.
    #[error("{0}")]
    Unsupported(String),
}

type Result<T> = std::result::Result<T, Pbes2Error>;

fn failed(what: &str) -> Pbes2Error {
    Pbes2Error::Unsupported(format!("cannot {what}"))
}

/// PBKDF2 through aws-lc-rs, with the iteration count bounded.
fn derive(
    prf: pbkdf2::Algorithm,
    iterations: u32,
    salt: &[u8],
    pass: &[u8],
    out: &mut [u8],
) -> Result<()> {
    let n = NonZeroU32::new(iterations)
        .filter(|n| n.get() <= MAX_ITERATIONS)
        .ok_or_else(|| {
            Pbes2Error::Unsupported(format!("unusable PBKDF2 iteration count {iterations}"))
        })?;
    pbkdf2::derive(prf, n, salt, pass, out);
    Ok(())
}

/// Encrypts an unencrypted PKCS#8 DER key with [`PASSPHRASE_ITERATIONS`];
/// returns the EncryptedPrivateKeyInfo DER.
pub fn encrypt(plain_der: &[u8], passphrase: &[u8]) -> Result<Vec<u8>> {
    encrypt_with(plain_der, passphrase, PASSPHRASE_ITERATIONS)
}

/// Encrypts an unencrypted PKCS#8 DER key as PBES2 (PBKDF2-HMAC-SHA256 with
/// `iterations`, a fresh 16-byte salt and IV, AES-256-CBC).
pub fn encrypt_with(plain_der: &[u8], passphrase: &[u8], iterations: u32) -> Result<Vec<u8>> {
    pkcs8::PrivateKeyInfo::try_from(plain_der)
        .map_err(|e| Pbes2Error::Malformed(format!("not a PKCS#8 private key: {e}")))?;
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut iv);
    let params = pbes2::Parameters::pbkdf2_sha256_aes256cbc(iterations, &salt, &iv)
        .map_err(|_| failed("set up key encryption"))?;
    let mut key = Zeroizing::new([0u8; 32]);
    derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        passphrase,
        key.as_mut(),
    )?;
    let unbound =
        UnboundCipherKey::new(&AES_256, key.as_ref()).map_err(|_| failed("set up AES"))?;
    let cipher = PaddedBlockEncryptingKey::cbc_pkcs7(unbound).map_err(|_| failed("set up AES"))?;
    let mut data = plain_der.to_vec();
    cipher
        .less_safe_encrypt(&mut data, EncryptionContext::Iv128(iv.into()))
        .map_err(|_| failed("encrypt the key"))?;
    let info = pkcs8::EncryptedPrivateKeyInfo {
        encryption_algorithm: pkcs5::EncryptionScheme::Pbes2(params),
        encrypted_data: &data,
    };
    info.to_der()
        .map_err(|_| failed("encode the encrypted key"))
}

/// Decrypts an EncryptedPrivateKeyInfo DER into unencrypted PKCS#8 DER.
pub fn decrypt(encrypted_der: &[u8], passphrase: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(encrypted_der)
        .map_err(|e| Pbes2Error::Malformed(format!("not an encrypted PKCS#8 key: {e}")))?;
    let plain = match fast_path(&info) {
        Some((prf, kdf, (aes, key_len), iv)) => {
            let mut key = Zeroizing::new(vec![0u8; key_len]);
            derive(prf, kdf.iteration_count, kdf.salt, passphrase, &mut key)?;
            let unbound = UnboundCipherKey::new(aes, &key).map_err(|_| failed("set up AES"))?;
            let cipher =
                PaddedBlockDecryptingKey::cbc_pkcs7(unbound).map_err(|_| failed("set up AES"))?;
            let mut data = Zeroizing::new(info.encrypted_data.to_vec());
            let out = cipher
                .decrypt(&mut data, DecryptionContext::Iv128((*iv).into()))
                .map_err(|_| Pbes2Error::WrongPassphrase)?;
            Zeroizing::new(out.to_vec())
        }
        None => Zeroizing::new(
            info.decrypt(passphrase)
                .map_err(|_| Pbes2Error::WrongPassphrase)?
                .as_bytes()
                .to_vec(),
        ),
    };
    pkcs8::PrivateKeyInfo::try_from(plain.as_slice()).map_err(|_| Pbes2Error::WrongPassphrase)?;
    Ok(plain)
}

/// Checks, without decrypting, that an EncryptedPrivateKeyInfo DER uses
/// PBES2 with AES-256-CBC (what SPEC §10 asks of a backup); the refusal
/// names the scheme found.
pub fn require_aes256(encrypted_der: &[u8]) -> Result<()> {
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(encrypted_der)
        .map_err(|e| Pbes2Error::Malformed(format!("not an encrypted PKCS#8 key: {e}")))?;
    let found = match &info.encryption_algorithm {
        pkcs5::EncryptionScheme::Pbes2(p) => match &p.encryption {
            pbes2::EncryptionScheme::Aes256Cbc { .. } => return Ok(()),
            pbes2::EncryptionScheme::Aes128Cbc { .. } => "PBES2 with AES-128-CBC".to_string(),
            pbes2::EncryptionScheme::Aes192Cbc { .. } => "PBES2 with AES-192-CBC".to_string(),
            other => format!("PBES2 with the cipher {}", other.oid()),
        },
        other => format!("the scheme {}", other.oid()),
    };
    Err(Pbes2Error::Unsupported(format!(
        "the key must be encrypted with PBES2 and AES-256-CBC, not {found}"
    )))
}

/// The PBKDF2 iteration count of an EncryptedPrivateKeyInfo DER; refuses
/// any other key derivation. A reader of ciphertexts from elsewhere (a
/// backup fetched from the MTA) bounds its work with this before
/// decrypting.
pub fn pbkdf2_iterations(encrypted_der: &[u8]) -> Result<u32> {
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(encrypted_der)
        .map_err(|e| Pbes2Error::Malformed(format!("not an encrypted PKCS#8 key: {e}")))?;
    info.encryption_algorithm
        .pbes2()
        .and_then(|p| p.kdf.pbkdf2())
        .map(|k| k.iteration_count)
        .ok_or_else(|| Pbes2Error::Unsupported("the key's key derivation is not PBKDF2".into()))
}

type FastPath<'a> = (
    pbkdf2::Algorithm,
    &'a pbes2::Pbkdf2Params<'a>,
    (&'static aws_lc_rs::cipher::Algorithm, usize),
    &'a [u8; 16],
);

/// PBES2 with PBKDF2 and AES-CBC: the schemes aws-lc-rs runs here.
fn fast_path<'a>(info: &'a pkcs8::EncryptedPrivateKeyInfo<'a>) -> Option<FastPath<'a>> {
    let p = info.encryption_algorithm.pbes2()?;
    let kdf = p.kdf.pbkdf2()?;
    let prf = match kdf.prf {
        pbes2::Pbkdf2Prf::HmacWithSha256 => pbkdf2::PBKDF2_HMAC_SHA256,
        pbes2::Pbkdf2Prf::HmacWithSha384 => pbkdf2::PBKDF2_HMAC_SHA384,
        pbes2::Pbkdf2Prf::HmacWithSha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        pbes2::Pbkdf2Prf::HmacWithSha1 => pbkdf2::PBKDF2_HMAC_SHA1,
        _ => return None,
    };
    let (aes, iv) = match &p.encryption {
        pbes2::EncryptionScheme::Aes256Cbc { iv } => ((&AES_256, 32), *iv),
        pbes2::EncryptionScheme::Aes128Cbc { iv } => ((&AES_128, 16), *iv),
        _ => return None,
    };
    if kdf.key_length.is_some_and(|l| usize::from(l) != aes.1) {
        return None;
    }
    Some((prf, kdf, aes, iv))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p256_pkcs8() -> Vec<u8> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &rng,
        )
        .unwrap();
        doc.as_ref().to_vec()
    }

    #[test]
    fn round_trip_is_pbkdf2_sha256_aes256() {
        let plain = p256_pkcs8();
        let enc = encrypt_with(&plain, b"pass phrase", 2048).unwrap();
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(enc.as_slice()).unwrap();
        let p = info.encryption_algorithm.pbes2().unwrap();
        assert!(matches!(
            p.encryption,
            pbes2::EncryptionScheme::Aes256Cbc { .. }
        ));
        let kdf = p.kdf.pbkdf2().unwrap();
        assert_eq!(kdf.iteration_count, 2048);
        assert_eq!(kdf.prf, pbes2::Pbkdf2Prf::HmacWithSha256);
        assert_eq!(require_aes256(&enc), Ok(()));
        assert_eq!(*decrypt(&enc, b"pass phrase").unwrap(), plain);
        assert_eq!(decrypt(&enc, b"other"), Err(Pbes2Error::WrongPassphrase));
    }

    #[test]
    fn the_default_count_is_the_passphrase_one() {
        let enc = encrypt(&p256_pkcs8(), b"pw").unwrap();
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(enc.as_slice()).unwrap();
        let kdf = info
            .encryption_algorithm
            .pbes2()
            .unwrap()
            .kdf
            .pbkdf2()
            .unwrap();
        assert_eq!(kdf.iteration_count, PASSPHRASE_ITERATIONS);
    }

    #[test]
    fn reads_keys_encrypted_by_the_pkcs8_crate_and_requires_aes256() {
        let plain = p256_pkcs8();
        let info = pkcs8::PrivateKeyInfo::try_from(plain.as_slice()).unwrap();
        let (salt, iv) = ([7u8; 16], [9u8; 16]);
        let cases = [
            (
                pbes2::Parameters::pbkdf2_sha256_aes256cbc(2048, &salt, &iv).unwrap(),
                true,
            ),
            (
                pbes2::Parameters::pbkdf2_sha256_aes128cbc(2048, &salt, &iv).unwrap(),
                false,
            ),
            (
                pbes2::Parameters::scrypt_aes256cbc(
                    pkcs5::scrypt::Params::new(10, 8, 1, 32).unwrap(),
                    &salt,
                    &iv,
                )
                .unwrap(),
                true,
            ),
        ];
        for (params, aes256) in cases {
            let enc = info.encrypt_with_params(params, b"pw").unwrap();
            assert_eq!(*decrypt(enc.as_bytes(), b"pw").unwrap(), plain);
            assert!(decrypt(enc.as_bytes(), b"pX").is_err());
            assert_eq!(require_aes256(enc.as_bytes()).is_ok(), aes256);
            let iterations = pbkdf2_iterations(enc.as_bytes()).ok();
            assert!(matches!(iterations, Some(2048) | None));
        }
    }

    #[test]
    fn a_changed_ciphertext_or_garbage_is_refused() {
        let plain = p256_pkcs8();
        let enc = encrypt_with(&plain, b"pw", 1000).unwrap();
        let mut bad = enc.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(decrypt(&bad, b"pw").is_err());
        assert!(matches!(
            decrypt(b"junk", b"pw"),
            Err(Pbes2Error::Malformed(_))
        ));
        assert!(matches!(
            require_aes256(&plain),
            Err(Pbes2Error::Malformed(_))
        ));
        assert!(encrypt(b"not a key", b"pw").is_err());
    }
}
