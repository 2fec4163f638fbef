//! A throwaway SoftHSM2 token for benchmarks of a CA whose key is in a
//! PKCS#11 token (`--ca-key-type softhsm-p256` and the like): the tests'
//! token ([`mailid_tests::softhsm`]), its SOFTHSM2_CONF handed to every
//! child process through [`crate::server::child_env`].

use mailid_tests::softhsm;

/// The token's user PIN (a benchmark secret, in a file of the temp dir).
const PIN: &str = "bench-pin-0000";

/// A SoftHSM2 token in a temporary directory, gone when dropped.
pub struct SoftHsm {
    _token: softhsm::SoftHsm,
    /// The key URI for `mailid-ca init --key-uri`.
    pub uri: String,
}

impl SoftHsm {
    /// Makes the token and points child processes at it.
    pub async fn new() -> anyhow::Result<SoftHsm> {
        let token =
            tokio::task::spawn_blocking(|| softhsm::SoftHsm::new("bench", PIN, "bench-so-0000"))
                .await?;
        crate::server::child_env("SOFTHSM2_CONF", &token.conf.display().to_string());
        let uri = format!(
            "pkcs11:token=bench;object=ca-key?module-path={}&pin-source=file:{}",
            softhsm::module().display(),
            token.pin_file.display()
        );
        Ok(SoftHsm { _token: token, uri })
    }
}
