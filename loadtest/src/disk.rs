//! Full disks: a small tmpfs mounted over one component's directory before the cluster
//! starts, filled to the last byte by a ballast file while the fault lasts, then freed.
//!
//! tmpfs needs root (CAP_SYS_ADMIN); without it the disk-full faults are skipped and the
//! report says why. The mount is private (mode 0700): FerrisDB refuses cache directories other
//! users could write to.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// A tmpfs mounted at a directory, unmounted on drop.
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` at `path` (created if missing).
    pub fn mount(path: &Path, bytes: u64) -> anyhow::Result<Tmpfs> {
        std::fs::create_dir_all(path)?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes},mode=0700"))
            .arg("tmpfs")
            .arg(path)
            .output()
            .context("running mount")?;
        if !out.status.success() {
            bail!(
                "mount -t tmpfs at {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process killed a moment ago may still hold a file open.
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
    }
}

/// A ballast file filling a filesystem, deleted on drop.
#[derive(Debug)]
pub struct Ballast {
    path: PathBuf,
}

impl Ballast {
    /// Writes `<dir>/chaos-ballast` until the filesystem is full.
    pub fn fill(dir: &Path) -> anyhow::Result<Ballast> {
        let path = dir.join("chaos-ballast");
        let ballast = Ballast { path: path.clone() };
        let mut f = std::fs::File::create(&path)?;
        let chunk = vec![0u8; 1 << 20];
        // Large writes first, then small ones for the last partial megabyte.
        for size in [1usize << 20, 4096, 1] {
            loop {
                match f.write(&chunk[..size]) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let _ = f.flush();
        Ok(ballast)
    }
}

impl Drop for Ballast {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
