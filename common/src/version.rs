//! Versions: the u64 every commit of a database is stamped with.
//!
//! A version is the WAL position (LSN) just past the commit record that carries it, so versions
//! grow with the log, a reader at version `v` sees exactly the records ending at or below `v`,
//! and the committed position of the log is the latest committed version. Version 0 is the
//! empty database.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A point in a database's history (the end LSN of a commit record).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Version(pub u64);

/// A WAL position in bytes. Versions are LSNs, so this is the same type under its log name.
pub type Lsn = u64;

impl Version {
    /// The empty database.
    pub const ZERO: Version = Version(0);
    /// Larger than every real version.
    pub const MAX: Version = Version(u64::MAX);

    /// The raw u64.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u64> for Version {
    fn from(v: u64) -> Version {
        Version(v)
    }
}
