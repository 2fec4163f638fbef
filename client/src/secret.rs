//! Secrets: reading passwords and passphrases, and PKCS#8 encryption of
//! stored keys (PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC).

use std::io::BufRead;
use std::path::Path;

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

use crate::error::{Error, Result};

/// PBKDF2 iterations for stored keys (OWASP 2023 advice for HMAC-SHA256).
pub const PBKDF2_ITERATIONS: u32 = 600_000;

/// Highest iteration count accepted when decrypting (as the pkcs5 crate).
const MAX_ITERATIONS: u32 = 100_000_000;

fn crypto(what: &str) -> Error {
    Error::Crypto(format!("cannot {what}"))
}

/// PBKDF2-HMAC-SHA256 through aws-lc-rs (fast in every build profile).
fn derive(
    prf: pbkdf2::Algorithm,
    iterations: u32,
    salt: &[u8],
    pass: &[u8],
    out: &mut [u8],
) -> Result<()> {
    let n = NonZeroU32::new(iterations)
        .filter(|n| n.get() <= MAX_ITERATIONS)
        .ok_or_else(|| Error::Crypto(format!("unusable PBKDF2 iteration count {iterations}")))?;
    pbkdf2::derive(prf, n, salt, pass, out);
    Ok(())
}

/// Encrypts an unencrypted PKCS#8 DER key as PBES2 (PBKDF2-HMAC-SHA256,
/// AES-256-CBC); returns the EncryptedPrivateKeyInfo DER.
pub fn encrypt_pkcs8(plain_der: &[u8], passphrase: &[u8]) -> Result<Vec<u8>> {
    pkcs8::PrivateKeyInfo::try_from(plain_der)
        .map_err(|e| Error::Crypto(format!("not a PKCS#8 private key: {e}")))?;
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut iv);
    let params = pbes2::Parameters::pbkdf2_sha256_aes256cbc(PBKDF2_ITERATIONS, &salt, &iv)
        .map_err(|_| crypto("set up key encryption"))?;
    let mut key = Zeroizing::new([0u8; 32]);
    derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        PBKDF2_ITERATIONS,
        &salt,
        passphrase,
        key.as_mut(),
    )?;
    let unbound =
        UnboundCipherKey::new(&AES_256, key.as_ref()).map_err(|_| crypto("set up AES"))?;
    let cipher = PaddedBlockEncryptingKey::cbc_pkcs7(unbound).map_err(|_| crypto("set up AES"))?;
    let mut data = plain_der.to_vec();
    cipher
        .less_safe_encrypt(&mut data, EncryptionContext::Iv128(iv.into()))
        .map_err(|_| crypto("encrypt the key"))?;
    let info = pkcs8::EncryptedPrivateKeyInfo {
        encryption_algorithm: pkcs5::EncryptionScheme::Pbes2(params),
        encrypted_data: &data,
    };
    info.to_der()
        .map_err(|_| crypto("encode the encrypted key"))
}

/// Decrypts an EncryptedPrivateKeyInfo DER into unencrypted PKCS#8 DER.
/// PBKDF2 with AES-CBC runs on aws-lc-rs; other PBES schemes go through
/// the pkcs8 crate.
pub fn decrypt_pkcs8(encrypted_der: &[u8], passphrase: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(encrypted_der)
        .map_err(|e| Error::Crypto(format!("not an encrypted PKCS#8 key: {e}")))?;
    let wrong = || Error::Crypto("wrong passphrase for the encrypted key".into());
    let plain = match fast_path(&info) {
        Some((prf, kdf, (aes, key_len), iv)) => {
            let mut key = Zeroizing::new(vec![0u8; key_len]);
            derive(prf, kdf.iteration_count, kdf.salt, passphrase, &mut key)?;
            let unbound = UnboundCipherKey::new(aes, &key).map_err(|_| crypto("set up AES"))?;
            let cipher =
                PaddedBlockDecryptingKey::cbc_pkcs7(unbound).map_err(|_| crypto("set up AES"))?;
            let mut data = Zeroizing::new(info.encrypted_data.to_vec());
            let out = cipher
                .decrypt(&mut data, DecryptionContext::Iv128((*iv).into()))
                .map_err(|_| wrong())?;
            Zeroizing::new(out.to_vec())
        }
        None => Zeroizing::new(
            info.decrypt(passphrase)
                .map_err(|_| wrong())?
                .as_bytes()
                .to_vec(),
        ),
    };
    pkcs8::PrivateKeyInfo::try_from(plain.as_slice()).map_err(|_| wrong())?;
    Ok(plain)
}

type FastPath<'a> = (
    pbkdf2::Algorithm,
    &'a pbes2::Pbkdf2Params<'a>,
    (&'static aws_lc_rs::cipher::Algorithm, usize),
    &'a [u8; 16],
);

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

/// Reads one line (the password) from `input`; the line end is not part
/// of it.
pub fn read_line(input: impl BufRead, what: &str) -> Result<Zeroizing<String>> {
    let trimmed = mailid_shared::input::read_line(input, &format!("the {what} on stdin"))
        .map_err(Error::Invalid)?;
    if trimmed.is_empty() {
        return Err(Error::Invalid(format!("the {what} on stdin is empty")));
    }
    Ok(trimmed)
}

/// Reads a passphrase file: its first line, without the line end.
pub fn read_passphrase_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let bytes =
        Zeroizing::new(mailid_shared::input::read_file(path).map_err(|e| Error::io(path, &e))?);
    let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    if first.is_empty() {
        return Err(Error::file(path, "the passphrase file is empty"));
    }
    Ok(Zeroizing::new(first.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encryption_round_trip_uses_pbkdf2_sha256_aes256() {
        let key = crate::keys::NewKey::generate(crate::keys::KeyType::P256).unwrap();
        let plain = key.pkcs8_der();
        let enc = encrypt_pkcs8(&plain, b"pass phrase").unwrap();
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(enc.as_slice()).unwrap();
        let pbes2 = info.encryption_algorithm.pbes2().unwrap();
        assert!(matches!(
            pbes2.encryption,
            pkcs8::pkcs5::pbes2::EncryptionScheme::Aes256Cbc { .. }
        ));
        let kdf = pbes2.kdf.pbkdf2().unwrap();
        assert_eq!(kdf.iteration_count, PBKDF2_ITERATIONS);
        assert_eq!(kdf.prf, pkcs8::pkcs5::pbes2::Pbkdf2Prf::HmacWithSha256);
        assert_eq!(*decrypt_pkcs8(&enc, b"pass phrase").unwrap(), *plain);
        assert!(decrypt_pkcs8(&enc, b"other").is_err());
    }

    #[test]
    fn reads_keys_encrypted_by_the_pkcs8_crate() {
        let key = crate::keys::NewKey::generate(crate::keys::KeyType::P384).unwrap();
        let plain = key.pkcs8_der();
        let info = pkcs8::PrivateKeyInfo::try_from(plain.as_slice()).unwrap();
        let (salt, iv) = ([7u8; 16], [9u8; 16]);
        for params in [
            pbes2::Parameters::pbkdf2_sha256_aes256cbc(2048, &salt, &iv).unwrap(),
            pbes2::Parameters::pbkdf2_sha256_aes128cbc(2048, &salt, &iv).unwrap(),
            pbes2::Parameters::scrypt_aes256cbc(
                pkcs5::scrypt::Params::new(10, 8, 1, 32).unwrap(),
                &salt,
                &iv,
            )
            .unwrap(),
        ] {
            let enc = info.encrypt_with_params(params, b"pw").unwrap();
            assert_eq!(*decrypt_pkcs8(enc.as_bytes(), b"pw").unwrap(), *plain);
            assert!(decrypt_pkcs8(enc.as_bytes(), b"pX").is_err());
        }
    }

    #[test]
    fn lines_lose_their_ending() {
        assert_eq!(*read_line(&b"s3cret\n"[..], "password").unwrap(), "s3cret");
        assert_eq!(
            *read_line(&b"s3cret\r\nmore"[..], "password").unwrap(),
            "s3cret"
        );
        assert_eq!(*read_line(&b"a b "[..], "password").unwrap(), "a b ");
        assert!(read_line(&b"\n"[..], "password").is_err());
    }
}
