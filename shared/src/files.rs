//! Durable file replacement for the services' small state files.

use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes` atomically and durably: a temporary file
/// beside it is written and fsynced, renamed over `path`, and the directory
/// fsynced, so after a crash or power cut the file holds either the old or
/// the new contents, never a torn or empty one. The file gets mode 0644
/// (public state such as certificates and CRLs); see [`write_atomic_mode`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, bytes, 0o644)
}

/// [`write_atomic`] with exactly the given permission bits (the umask does
/// not apply), e.g. 0600 for operator-only files.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // An older temporary file keeps its mode: set it explicitly, which
        // also makes a permissive umask (000) unable to widen it.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_contents_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        super::write_atomic(&p, b"one").unwrap();
        super::write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn files_get_the_requested_mode_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let public = dir.path().join("ca.pem");
        let private = dir.path().join("config.json");
        super::write_atomic(&public, b"x").unwrap();
        super::write_atomic_mode(&private, b"y", 0o600).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&public), 0o644);
        assert_eq!(mode(&private), 0o600);
    }
}
