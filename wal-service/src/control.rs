//! The acceptor's control file: the promised term, the term history of the log it holds, where
//! that log starts, and the last commit position it heard of.
//!
//! Replaced atomically: written to a temporary file, fsynced, renamed over the old one, and the
//! directory fsynced, so a crash leaves either the old or the new state, never a torn one. A
//! CRC32C over the body catches a control file damaged at rest.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use ferrisdb_common::{Error, Lsn, Result};
use serde::{Deserialize, Serialize};

const CONTROL_FILE: &str = "control.json";
const CONTROL_TMP: &str = "control.json.tmp";

pub use ferrisdb_server_common::term_history::TermSwitch;

/// The persistent part of an acceptor's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    /// The highest term promised: nothing from a lower term is accepted.
    pub term: u64,
    /// Term switches of the log held, oldest first.
    pub history: Vec<TermSwitch>,
    /// The first LSN held; everything below is durable in object storage.
    pub log_start_lsn: Lsn,
    /// The last commit position heard (may lag the truth; never ahead of it).
    pub commit_lsn: Lsn,
    /// Set while the log is being dropped and restarted at `log_start_lsn`: the intent is
    /// recorded here before any segment is deleted, and a restart finishes the job.
    #[serde(default)]
    pub reset_pending: bool,
    /// What the pageserver last reported durable in object storage, as far as it was believed
    /// (see [`crate::acceptor::Acceptor::trim`]).
    #[serde(default)]
    pub remote_consistent_lsn: Lsn,
    /// The proposer `term` was promised to (hex of its 128-bit id): only it may send `Elected`
    /// in that term. Absent in control files written before ids existed (and then bound by
    /// the first `Elected` of the term). Skipped when absent so older files keep their
    /// checksum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposer: Option<String>,
    /// Set when this acceptor started with no state for a database whose log its peers hold
    /// (its disk was wiped, or it replaces a lost safekeeper): it votes again only once a
    /// primary elected without it has brought it up to that primary's commit position
    /// (docs/wal-protocol.md, "Amnesia"). Skipped when unset so other files keep their
    /// checksum.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovering: bool,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    format: u32,
    control: Control,
    crc32c: u32,
}

impl Control {
    /// Whether `dir` holds a control file at all (a missing one loads as the default).
    pub fn exists(dir: &Path) -> bool {
        dir.join(CONTROL_FILE).exists()
    }

    /// Reads the control file in `dir`; a missing file is a fresh acceptor.
    pub fn load(dir: &Path) -> Result<Control> {
        let path = dir.join(CONTROL_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Control::default()),
            Err(e) => return Err(e.into()),
        };
        let on_disk: OnDisk = serde_json::from_slice(&bytes)
            .map_err(|e| Error::corruption(format!("{}: {e}", path.display())))?;
        if on_disk.format != 1 {
            return Err(Error::corruption(format!(
                "{}: unknown format {}",
                path.display(),
                on_disk.format
            )));
        }
        if on_disk.crc32c != on_disk.control.checksum()? {
            return Err(Error::corruption(format!(
                "{}: checksum mismatch",
                path.display()
            )));
        }
        Ok(on_disk.control)
    }

    /// Replaces the control file in `dir` atomically and durably.
    pub fn store(&self, dir: &Path) -> Result<()> {
        let on_disk = OnDisk {
            format: 1,
            control: self.clone(),
            crc32c: self.checksum()?,
        };
        let body = serde_json::to_vec_pretty(&on_disk)
            .map_err(|e| Error::internal(format!("encoding control file: {e}")))?;
        let tmp = dir.join(CONTROL_TMP);
        let mut f = File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(CONTROL_FILE))?;
        sync_dir(dir)
    }

    fn checksum(&self) -> Result<u32> {
        let body = serde_json::to_vec(self)
            .map_err(|e| Error::internal(format!("encoding control file: {e}")))?;
        Ok(crc32c::crc32c(&body))
    }
}

/// Makes a rename or file creation in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// The directory of one database's log under a safekeeper's data directory.
pub fn database_dir(data_dir: &Path, database: &str) -> PathBuf {
    data_dir.join(database)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_then_load_round_trips_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Control::load(dir.path()).unwrap(), Control::default());
        let c = Control {
            term: 7,
            history: vec![
                TermSwitch { term: 3, lsn: 0 },
                TermSwitch { term: 7, lsn: 420 },
            ],
            log_start_lsn: 0,
            commit_lsn: 400,
            reset_pending: false,
            remote_consistent_lsn: 0,
            proposer: Some(format!("{:032x}", 7u128)),
            recovering: true,
        };
        c.store(dir.path()).unwrap();
        assert_eq!(Control::load(dir.path()).unwrap(), c);
        let path = dir.path().join(CONTROL_FILE);
        let text = fs::read_to_string(&path).unwrap().replace("420", "421");
        fs::write(&path, text).unwrap();
        assert_eq!(
            Control::load(dir.path()).unwrap_err().kind(),
            ferrisdb_common::ErrorKind::Corruption
        );
    }
}
