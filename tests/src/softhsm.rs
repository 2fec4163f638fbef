//! A throwaway SoftHSM2 token for the tests of a CA whose key is in a
//! PKCS#11 token (SPEC §9): a private SOFTHSM2_CONF and token directory,
//! one initialised token, gone when dropped. SoftHSM2 comes from
//! `apt-get install softhsm2 opensc` (scripts/test.sh installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The SoftHSM2 module of this machine.
pub fn module() -> PathBuf {
    for p in [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib64/pkcs11/libsofthsm2.so",
    ] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("SoftHSM2 is not installed (apt-get install softhsm2 opensc)");
}

/// A private SoftHSM2 configuration with one initialised token.
pub struct SoftHsm {
    /// Holds the configuration, the token directory and the PIN file.
    pub dir: tempfile::TempDir,
    /// The SOFTHSM2_CONF file every process using the token needs.
    pub conf: PathBuf,
    /// A file holding the user PIN (for `pin-source=file:`).
    pub pin_file: PathBuf,
}

impl SoftHsm {
    /// Initialises a token labelled `label` with user PIN `pin`.
    pub fn new(label: &str, pin: &str, so_pin: &str) -> SoftHsm {
        let dir = crate::temp_dir();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("token directory");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("softhsm2.conf");
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, format!("{pin}\n")).expect("PIN file");
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", label])
            .args(["--pin", pin, "--so-pin", so_pin])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .expect("softhsm2-util (apt-get install softhsm2)");
        assert!(out.status.success(), "{out:?}");
        SoftHsm {
            dir,
            conf,
            pin_file,
        }
    }
}
