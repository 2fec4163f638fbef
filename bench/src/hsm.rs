//! A throwaway SoftHSM2 token for benchmarks of a CA whose key is in a
//! PKCS#11 token (`--ca-key-type softhsm-p256` and the like): a private
//! SOFTHSM2_CONF and token directory, handed to every child process
//! through [`crate::server::child_env`].

use std::path::Path;

use anyhow::Context;

/// The token's user PIN (a benchmark secret, in a file of the temp dir).
const PIN: &str = "bench-pin-0000";

/// A SoftHSM2 token in a temporary directory, gone when dropped.
pub struct SoftHsm {
    _dir: tempfile::TempDir,
    /// The key URI for `mailid-ca init --key-uri`.
    pub uri: String,
}

/// The SoftHSM2 module of this machine.
fn module() -> anyhow::Result<&'static str> {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib64/pkcs11/libsofthsm2.so",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .context("SoftHSM2 is not installed (apt-get install softhsm2)")
}

impl SoftHsm {
    /// Makes the token and points child processes at it.
    pub async fn new() -> anyhow::Result<SoftHsm> {
        let dir = tempfile::tempdir()?;
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens)?;
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )?;
        let pin = dir.path().join("pin");
        std::fs::write(&pin, format!("{PIN}\n"))?;
        let out = tokio::process::Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", "bench"])
            .args(["--pin", PIN, "--so-pin", "bench-so-0000"])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .await
            .context("running softhsm2-util (apt-get install softhsm2)")?;
        anyhow::ensure!(
            out.status.success(),
            "softhsm2-util: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        crate::server::child_env("SOFTHSM2_CONF", &conf.display().to_string());
        let uri = format!(
            "pkcs11:token=bench;object=ca-key?module-path={}&pin-source=file:{}",
            module()?,
            pin.display()
        );
        Ok(SoftHsm { _dir: dir, uri })
    }
}
