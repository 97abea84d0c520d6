//! The conflict resolver: optimistic concurrency control over a window of recent commits.
//!
//! A transaction that read at version `r` commits only if no write committed after `r`
//! intersects any range it read. The resolver keeps the write ranges of every commit of the
//! last [`MAX_READ_VERSION_AGE`]; a read version older than what it still holds cannot be
//! checked and gets `transaction_too_old`.

use std::collections::VecDeque;

use bytes::Bytes;
use ferrisdb_common::limits::MAX_READ_VERSION_AGE;
use ferrisdb_common::{Error, ErrorKind, Result, Version};

/// The half-open key range `[begin, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// First key in the range.
    pub begin: Bytes,
    /// First key past the range.
    pub end: Bytes,
}

impl KeyRange {
    /// The range holding exactly `key`.
    pub fn single(key: &Bytes) -> KeyRange {
        let mut end = key.to_vec();
        end.push(0);
        KeyRange {
            begin: key.clone(),
            end: Bytes::from(end),
        }
    }

    /// Whether the two ranges share a key.
    pub fn intersects(&self, other: &KeyRange) -> bool {
        self.begin < other.end && other.begin < self.end
    }
}

#[derive(Debug)]
struct Committed {
    version: Version,
    time_micros: u64,
    writes: Vec<KeyRange>,
}

/// Recent commits' write ranges.
#[derive(Debug)]
pub struct Resolver {
    /// Every commit above this version is in `history`.
    oldest_checkable: Version,
    history: VecDeque<Committed>,
}

impl Resolver {
    /// A resolver that knows every commit above `start` (it has seen none yet).
    pub fn new(start: Version) -> Resolver {
        Resolver {
            oldest_checkable: start,
            history: VecDeque::new(),
        }
    }

    /// Checks a transaction that read `reads` at `read_version` against commits after it and
    /// against `pending`, the writes of transactions ahead of it in the same batch.
    pub fn check(
        &self,
        read_version: Version,
        reads: &[KeyRange],
        pending: &[KeyRange],
    ) -> Result<()> {
        if reads.is_empty() {
            // Blind writes read nothing, so nothing can have changed under them.
            return Ok(());
        }
        if read_version < self.oldest_checkable {
            return Err(Error::new(
                ErrorKind::TransactionTooOld,
                format!(
                    "read version {read_version} is older than the resolver's window (from {})",
                    self.oldest_checkable
                ),
            ));
        }
        let newer = self
            .history
            .iter()
            .rev()
            .take_while(|c| c.version > read_version)
            .flat_map(|c| c.writes.iter());
        for w in newer.chain(pending.iter()) {
            if reads.iter().any(|r| r.intersects(w)) {
                return Err(Error::new(
                    ErrorKind::NotCommitted,
                    "a write committed after the read version conflicts with a range this transaction read",
                ));
            }
        }
        Ok(())
    }

    /// Records a committed batch and forgets commits older than the window.
    pub fn add(&mut self, version: Version, time_micros: u64, writes: Vec<KeyRange>) {
        self.history.push_back(Committed {
            version,
            time_micros,
            writes,
        });
        let horizon = time_micros.saturating_sub(MAX_READ_VERSION_AGE.as_micros() as u64);
        while let Some(front) = self.history.front() {
            if front.time_micros >= horizon {
                break;
            }
            self.oldest_checkable = front.version;
            self.history.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: &str, b: &str) -> KeyRange {
        KeyRange {
            begin: Bytes::copy_from_slice(a.as_bytes()),
            end: Bytes::copy_from_slice(b.as_bytes()),
        }
    }

    #[test]
    fn conflicts_only_with_later_intersecting_writes() {
        let mut res = Resolver::new(Version(0));
        res.add(Version(10), 1, vec![r("b", "c")]);
        res.add(Version(20), 2, vec![r("x", "y")]);
        // Read at 10: the write at 10 is visible, the one at 20 is not.
        assert!(res.check(Version(10), &[r("a", "c")], &[]).is_ok());
        let e = res.check(Version(10), &[r("x", "x\0")], &[]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotCommitted);
        assert!(res.check(Version(20), &[r("x", "z")], &[]).is_ok());
        // Adjacent is not intersecting.
        assert!(res.check(Version(10), &[r("y", "z")], &[]).is_ok());
        // Earlier transactions in the same batch count.
        let e = res
            .check(Version(20), &[r("m", "n")], &[r("m", "m\0")])
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotCommitted);
    }

    #[test]
    fn old_read_versions_are_too_old() {
        let mut res = Resolver::new(Version(100));
        assert!(
            res.check(Version(0), &[], &[]).is_ok(),
            "blind writes never conflict"
        );
        assert_eq!(
            res.check(Version(99), &[r("a", "b")], &[])
                .unwrap_err()
                .kind(),
            ErrorKind::TransactionTooOld
        );
        let five_s = MAX_READ_VERSION_AGE.as_micros() as u64;
        res.add(Version(110), 1_000, vec![r("a", "b")]);
        res.add(Version(120), 1_000 + five_s + 1, vec![]);
        // The commit at 110 left the window: reads below it can no longer be checked.
        assert_eq!(
            res.check(Version(105), &[r("q", "r")], &[])
                .unwrap_err()
                .kind(),
            ErrorKind::TransactionTooOld
        );
        assert!(res.check(Version(110), &[r("a", "b")], &[]).is_ok());
    }
}
