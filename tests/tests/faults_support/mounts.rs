//! tmpfs and loop-image mounts for the storage faults (root only).
#![allow(dead_code, unused_imports)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mailid_shared::ProblemDocument;
use mailid_tests::flow::{self, KeyType};
use mailid_tests::{bin, rss_kib, temp_dir, CaFixture, MtaFixture, CA_BIN, MTA_BIN};
use serde_json::{json, Value};

use super::*;

// ---------------------------------------------------------------------------
// Mounts (root only).

/// A mount that is undone when dropped.
pub struct Mount {
    pub path: PathBuf,
}

impl Mount {
    /// Mounts a tmpfs of `size` (e.g. "16m") on a new directory `path`.
    pub fn tmpfs(path: &Path, size: &str) -> Result<Mount, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(path)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Mount {
            path: path.to_path_buf(),
        })
    }

    /// Makes an ext4 image of `mib` MiB at `image` and loop-mounts it on a
    /// new directory `path` with `errors=remount-ro`.
    pub fn ext4_loop(image: &Path, path: &Path, mib: u64) -> Result<Mount, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let f = std::fs::File::create(image).map_err(|e| e.to_string())?;
        f.set_len(mib << 20).map_err(|e| e.to_string())?;
        drop(f);
        let mk = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(image)
            .output()
            .map_err(|e| format!("running mkfs.ext4: {e}"))?;
        if !mk.status.success() {
            return Err(format!(
                "mkfs.ext4 failed: {}",
                String::from_utf8_lossy(&mk.stderr).trim()
            ));
        }
        let out = Command::new("mount")
            .args(["-o", "loop,errors=remount-ro"])
            .arg(image)
            .arg(path)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -o loop failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Mount {
            path: path.to_path_buf(),
        })
    }

    pub fn remount(&self, opts: &str) -> Result<(), String> {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.path)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// The block device (e.g. `loop3`) behind the mount.
    pub fn device(&self) -> Option<String> {
        let out = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&self.path)
            .output()
            .ok()?;
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        s.rsplit('/').next().map(str::to_string)
    }

    pub fn unmount(&self) -> bool {
        Command::new("umount")
            .arg(&self.path)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        for _ in 0..50 {
            if self.unmount() {
                return;
            }
            // Not mounted any more, or still busy.
            let mounted = Command::new("mountpoint")
                .arg("-q")
                .arg(&self.path)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !mounted {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why} (needs root and mount; run as root to exercise this fault)");
}

/// Fills the file system holding `dir` with a file; returns its path.
pub fn fill_disk(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("create filler");
    for size in [1 << 20, 4096, 1] {
        let chunk = vec![0u8; size];
        while f.write_all(&chunk).is_ok() {}
    }
    let _ = f.sync_all();
    path
}
