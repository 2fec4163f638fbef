//! Secrets: reading passwords and passphrases, and the store's PKCS#8
//! encryption (the shared [`pbes2`] helper, in the client's error type).

use std::io::BufRead;
use std::path::Path;

use mailid_shared::pbes2;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Encrypts an unencrypted PKCS#8 DER key for the store (PBES2,
/// PBKDF2-HMAC-SHA256 with [`pbes2::PASSPHRASE_ITERATIONS`], AES-256-CBC).
pub fn encrypt_pkcs8(plain_der: &[u8], passphrase: &[u8]) -> Result<Vec<u8>> {
    pbes2::encrypt(plain_der, passphrase).map_err(|e| Error::Crypto(e.to_string()))
}

/// Decrypts an EncryptedPrivateKeyInfo DER into unencrypted PKCS#8 DER.
pub fn decrypt_pkcs8(encrypted_der: &[u8], passphrase: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    pbes2::decrypt(encrypted_der, passphrase).map_err(|e| Error::Crypto(e.to_string()))
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
    fn store_keys_use_the_passphrase_count() {
        let key = crate::keys::NewKey::generate(crate::keys::KeyType::P256).unwrap();
        let plain = key.pkcs8_der();
        let enc = encrypt_pkcs8(&plain, b"pass phrase").unwrap();
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(enc.as_slice()).unwrap();
        let kdf = info
            .encryption_algorithm
            .pbes2()
            .unwrap()
            .kdf
            .pbkdf2()
            .unwrap();
        assert_eq!(kdf.iteration_count, pbes2::PASSPHRASE_ITERATIONS);
        assert_eq!(*decrypt_pkcs8(&enc, b"pass phrase").unwrap(), *plain);
        let e = decrypt_pkcs8(&enc, b"other").unwrap_err();
        assert_eq!(e.to_string(), "wrong passphrase for the encrypted key");
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
