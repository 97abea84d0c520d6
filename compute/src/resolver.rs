//! The conflict resolver: optimistic concurrency control over a window of recent commits.
//!
//! A transaction that read at version `r` commits only if no write committed after `r`
//! intersects any range it read. The resolver keeps the write ranges of every commit of the
//! last [`MAX_READ_VERSION_AGE`]; a read version older than what it still holds cannot be
//! checked and gets `transaction_too_old`.
//!
//! The 5-second rule does not depend on traffic: a read version's age is measured from the
//! commit time of the batch that superseded it (before then it was the latest, and a
//! transaction may have just been handed it). On an idle cluster the committer supersedes a
//! handed-out version with an empty heartbeat batch within
//! [`crate::committer::HEARTBEAT`], so a transaction that read, waited past 5 s and wrote is
//! refused whether or not anyone else committed meanwhile (docs/compute.md).

use std::collections::VecDeque;

use ferrisdb_common::limits::MAX_READ_VERSION_AGE;
use ferrisdb_common::{Error, ErrorKind, Result, Version};

use crate::requests::KeyRange;

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
    /// When `read_version` stopped being the latest committed version: the commit time of the
    /// first batch above it, if one is known.
    fn superseded_at(&self, read_version: Version) -> Option<u64> {
        let first_above = self.history.partition_point(|c| c.version <= read_version);
        self.history.get(first_above).map(|c| c.time_micros)
    }
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
    /// against `pending`, the writes of transactions ahead of it in the same batch; `now_micros`
    /// is the commit time, for the 5-second rule.
    pub fn check(
        &self,
        read_version: Version,
        reads: &[KeyRange],
        pending: &[KeyRange],
        now_micros: u64,
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
        if let Some(at) = self.superseded_at(read_version) {
            let age = now_micros.saturating_sub(at);
            if age > MAX_READ_VERSION_AGE.as_micros() as u64 {
                return Err(Error::new(
                    ErrorKind::TransactionTooOld,
                    format!(
                        "read version {read_version} was superseded {} ms ago; the limit is {} ms",
                        age / 1000,
                        MAX_READ_VERSION_AGE.as_millis()
                    ),
                ));
            }
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
    use bytes::Bytes;

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
        assert!(res.check(Version(10), &[r("a", "c")], &[], 2).is_ok());
        let e = res
            .check(Version(10), &[r("x", "x\0")], &[], 2)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotCommitted);
        assert!(res.check(Version(20), &[r("x", "z")], &[], 2).is_ok());
        // Adjacent is not intersecting.
        assert!(res.check(Version(10), &[r("y", "z")], &[], 2).is_ok());
        // Earlier transactions in the same batch count.
        let e = res
            .check(Version(20), &[r("m", "n")], &[r("m", "m\0")], 2)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotCommitted);
    }

    /// An empty range holds no key: as a read it conflicts with nothing, even strictly
    /// inside a newer write, and as a write it conflicts with no read.
    #[test]
    fn empty_ranges_share_no_key() {
        let mut res = Resolver::new(Version(0));
        res.add(Version(10), 1, vec![r("a", "z")]);
        assert!(res.check(Version(5), &[r("m", "m")], &[], 2).is_ok());
        assert!(res.check(Version(5), &[r("z", "z")], &[], 2).is_ok());
        assert_eq!(
            res.check(Version(5), &[r("m", "m"), r("m", "m\0")], &[], 2)
                .unwrap_err()
                .kind(),
            ErrorKind::NotCommitted
        );
        res.add(Version(20), 2, vec![r("q", "q")]);
        assert!(res.check(Version(10), &[r("p", "r")], &[], 2).is_ok());
        assert!(
            res.check(Version(10), &[r("p", "r")], &[r("q", "q")], 2)
                .is_ok()
        );
    }

    #[test]
    fn old_read_versions_are_too_old() {
        let mut res = Resolver::new(Version(100));
        assert!(
            res.check(Version(0), &[], &[], 2).is_ok(),
            "blind writes never conflict"
        );
        assert_eq!(
            res.check(Version(99), &[r("a", "b")], &[], 2)
                .unwrap_err()
                .kind(),
            ErrorKind::TransactionTooOld
        );
        let five_s = MAX_READ_VERSION_AGE.as_micros() as u64;
        res.add(Version(110), 1_000, vec![r("a", "b")]);
        res.add(Version(120), 1_000 + five_s + 1, vec![]);
        // The commit at 110 left the window: reads below it can no longer be checked.
        assert_eq!(
            res.check(Version(105), &[r("q", "r")], &[], 2)
                .unwrap_err()
                .kind(),
            ErrorKind::TransactionTooOld
        );
        let now = 1_000 + five_s + 1;
        assert!(res.check(Version(110), &[r("a", "b")], &[], now).is_ok());
    }

    /// The 5-second rule holds without traffic: a read version superseded more than 5 s
    /// before the commit is too old even when nothing else committed since.
    #[test]
    fn read_versions_age_from_when_they_were_superseded() {
        let five_s = MAX_READ_VERSION_AGE.as_micros() as u64;
        let mut res = Resolver::new(Version(100));
        // Still the latest: a transaction may have been handed it just now.
        assert!(
            res.check(Version(100), &[r("a", "b")], &[], 10 * five_s)
                .is_ok()
        );
        // A heartbeat (an empty batch) supersedes it at t = 1 s.
        res.add(Version(130), 1_000_000, vec![]);
        assert!(
            res.check(Version(100), &[r("a", "b")], &[], 1_000_000 + five_s)
                .is_ok()
        );
        let e = res
            .check(Version(100), &[r("a", "b")], &[], 1_000_000 + five_s + 1)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TransactionTooOld);
        // The heartbeat's own version is the latest: fine at any age.
        assert!(
            res.check(Version(130), &[r("a", "b")], &[], 100 * five_s)
                .is_ok()
        );
        // Blind writes read nothing, so no age applies.
        assert!(res.check(Version(100), &[], &[], 100 * five_s).is_ok());
    }
}
