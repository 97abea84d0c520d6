//! One process per data directory: a server takes an exclusive lock on a file in its
//! directory before it reads or writes anything there, and holds it until it exits.
//!
//! Two safekeepers on one directory would each keep their own idea of the term and the log in
//! memory while writing the same files: each could vote for a different proposer in the same
//! term and acknowledge writes the other overwrites, which is how two clusters started on one
//! data dir (the first `ferrisdb dev` killed with SIGKILL, its children left running, a second
//! started on another port) lost acknowledged commits. PostgreSQL's `postmaster.pid` and
//! Neon's `safekeeper.lock` guard against the same mistake.
//!
//! The lock is `flock`-style (advisory, on the open file): the kernel drops it when the
//! process dies however it dies, so a SIGKILL never leaves a stale lock behind, and the pid
//! written into the file is only there to name the holder in the error.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ferrisdb_common::{Error, ErrorKind, Result};

/// The lock file's name inside a locked directory.
pub const LOCK_FILE: &str = "LOCK";

/// An exclusive lock on a directory, held until dropped (or the process exits).
#[derive(Debug)]
pub struct DirLock {
    /// Kept open: closing it releases the lock.
    _file: File,
    path: PathBuf,
}

/// Warns when `dir` (the data of `who`: a log, layers, cached values) may be read by other
/// users. A directory this process creates is private (0700); one that already existed keeps
/// its mode, the operator's choice, but the choice is named.
pub fn warn_if_readable_by_others(dir: &Path, who: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(dir) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    dir = %dir.display(),
                    mode = format!("{mode:o}"),
                    "the {who}'s directory may be read by other users of this machine, and it holds the database's data: chmod 700 it"
                );
            }
        }
    }
}

impl DirLock {
    /// Locks `dir` (created if missing) for `who` (e.g. "safekeeper"), or fails at once with
    /// `invalid_argument` naming the process that holds it.
    pub fn acquire(dir: &Path, who: &str) -> Result<DirLock> {
        // Private from the start: these directories hold user data (caches) or the log.
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
            builder.mode(0o700);
            options.mode(0o600);
        }
        builder.create(dir)?;
        warn_if_readable_by_others(dir, who);
        let path = dir.join(LOCK_FILE);
        let mut file = options.open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another process".to_string()
                } else {
                    format!("process {holder}")
                };
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "{} is in use by {holder}: one {who} per data directory (stop it, or \
                         give this one a directory of its own)",
                        dir.display()
                    ),
                ));
            }
            Err(TryLockError::Error(e)) => return Err(e.into()),
        }
        // Ours now: name this process in it for the next one that tries.
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        writeln!(file, "{}", std::process::id())?;
        Ok(DirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("sk");
        let first = DirLock::acquire(&data, "safekeeper").unwrap();
        assert_eq!(
            std::fs::read_to_string(first.path()).unwrap().trim(),
            std::process::id().to_string()
        );
        let e = DirLock::acquire(&data, "safekeeper").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(
            e.message()
                .contains(&format!("process {}", std::process::id())),
            "{e}"
        );
        // Another directory is free.
        let _other = DirLock::acquire(&dir.path().join("other"), "safekeeper").unwrap();
        drop(first);
        DirLock::acquire(&data, "safekeeper").unwrap();
    }
}
