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

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

use bytes::Bytes;
use ferrisdb_common::limits::MAX_READ_VERSION_AGE;
use ferrisdb_common::{Error, ErrorKind, Result, Version};

use crate::requests::KeyRange;

/// A committed batch.
#[derive(Debug)]
struct Committed {
    version: Version,
    time_micros: u64,
    writes: Vec<KeyRange>,
}

/// Recent commits' write ranges.
///
/// They are kept twice. As a step function over the key space, as FoundationDB's resolver
/// keeps them: `steps[k] = v` says the newest write to any key from `k` up to the next step
/// was committed at `v` (no step at or below a key: none in the window). A check of a read
/// version with many commits after it looks at the steps its read ranges cover, however many
/// commits those are: scanning the commits instead cost a transaction with a 4-second-old
/// read version every write of those 4 seconds (~56k batches at 14k commits/s) times its
/// read ranges, in the committer's one task, holding up every commit behind it. And per
/// batch, for the common check: a read version a few batches old (most are the newest) is
/// checked against those batches' writes directly, cheaper than the step lookups
/// (`benches/resolver.rs`). Both answer exactly the same (a differential test pins it).
#[derive(Debug)]
pub struct Resolver {
    /// Every commit above this version is known here.
    oldest_checkable: Version,
    /// Batches in the window, oldest first (their versions and commit times only).
    history: VecDeque<Committed>,
    /// The newest write version per key range (see above).
    steps: BTreeMap<Bytes, Version>,
    /// `steps.len()` after the last pruning, which runs once it has doubled.
    pruned_len: usize,
}

/// Steps below this many are never pruned (the pass would cost more than it saves).
const PRUNE_FLOOR: usize = 1024;
/// A read version with at most this many batches after it is checked against their writes
/// directly; with more, against the steps.
const SCAN_UP_TO: usize = 16;

impl Resolver {
    /// When `read_version` stopped being the latest committed version: the commit time of the
    /// first batch above it, if one is known.
    fn superseded_at(&self, read_version: Version) -> Option<u64> {
        let first_above = self.history.partition_point(|c| c.version <= read_version);
        self.history.get(first_above).map(|c| c.time_micros)
    }

    /// The version of the step covering `key`.
    fn version_at(&self, key: &[u8]) -> Version {
        self.steps
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .map_or(Version::ZERO, |(_, v)| *v)
    }

    /// Whether a write committed above `read_version` touched a key of `r`.
    fn written_after(&self, r: &KeyRange, read_version: Version) -> bool {
        if r.begin >= r.end {
            // An empty range holds no key to have changed.
            return false;
        }
        if self.version_at(&r.begin) > read_version {
            return true;
        }
        self.steps
            .range::<[u8], _>((Bound::Excluded(&r.begin[..]), Bound::Excluded(&r.end[..])))
            .any(|(_, v)| *v > read_version)
    }

    /// Records that `w` was written at `version`, newer than every write recorded so far.
    fn record_write(&mut self, w: &KeyRange, version: Version) {
        if w.begin >= w.end {
            return;
        }
        // What lies from `end` on keeps its version: a step there says so, unless one is
        // already there.
        let after = self.version_at(&w.end);
        // Steps strictly inside go (one at `begin` is overwritten below); a point write has
        // none, and is spared collecting them.
        let inside = (Bound::Excluded(&w.begin[..]), Bound::Excluded(&w.end[..]));
        if self.steps.range::<[u8], _>(inside).next().is_some() {
            let keys: Vec<Bytes> = self
                .steps
                .range::<[u8], _>(inside)
                .map(|(k, _)| k.clone())
                .collect();
            for k in keys {
                self.steps.remove(&k);
            }
        }
        self.steps.insert(w.begin.clone(), version);
        self.steps.entry(w.end.clone()).or_insert(after);
    }

    /// Forgets what no checkable read can conflict with: a step at or below the oldest
    /// checkable version is no newer than any read version still accepted, so it becomes
    /// "not in the window", and a step equal to the one before it goes.
    fn prune(&mut self) {
        let oldest = self.oldest_checkable;
        let mut previous = Version::ZERO;
        self.steps.retain(|_, v| {
            if *v <= oldest {
                *v = Version::ZERO;
            }
            let keep = *v != previous;
            previous = *v;
            keep
        });
        self.pruned_len = self.steps.len();
    }
}

impl Resolver {
    /// A resolver that knows every commit above `start` (it has seen none yet).
    pub fn new(start: Version) -> Resolver {
        Resolver {
            oldest_checkable: start,
            history: VecDeque::new(),
            steps: BTreeMap::new(),
            pruned_len: 0,
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
        let first_after = self.history.partition_point(|c| c.version <= read_version);
        let conflict = if self.history.len() - first_after <= SCAN_UP_TO {
            let newer = self
                .history
                .range(first_after..)
                .flat_map(|c| c.writes.iter());
            newer
                .chain(pending.iter())
                .any(|w| reads.iter().any(|r| r.intersects(w)))
        } else {
            reads.iter().any(|r| {
                self.written_after(r, read_version) || pending.iter().any(|w| r.intersects(w))
            })
        };
        if conflict {
            return Err(Error::new(
                ErrorKind::NotCommitted,
                "a write committed after the read version conflicts with a range this transaction read",
            ));
        }
        Ok(())
    }

    /// Records a committed batch and forgets commits older than the window.
    pub fn add(&mut self, version: Version, time_micros: u64, writes: Vec<KeyRange>) {
        for w in &writes {
            self.record_write(w, version);
        }
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
        if self.steps.len() > PRUNE_FLOOR.max(2 * self.pruned_len) {
            self.prune();
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

    /// The step function decides exactly as a scan of every commit in the window would (the
    /// resolver's first form, kept here as the model; `check` itself scans when few batches
    /// are newer than the read version, and both are compared): random batches of point and range
    /// writes (empty ones too) over a small key space, read ranges checked at every read
    /// version the window accepts, time moving so commits leave the window, and pruning at
    /// random moments.
    #[test]
    fn the_step_function_decides_as_a_scan_of_the_window() {
        struct Model {
            oldest: Version,
            history: VecDeque<(Version, u64, Vec<KeyRange>)>,
        }
        impl Model {
            fn conflicts(&self, rv: Version, reads: &[KeyRange]) -> bool {
                self.history
                    .iter()
                    .filter(|(v, ..)| *v > rv)
                    .flat_map(|(_, _, w)| w.iter())
                    .any(|w| reads.iter().any(|r| r.intersects(w)))
            }
            fn add(&mut self, v: Version, t: u64, writes: Vec<KeyRange>) {
                self.history.push_back((v, t, writes));
                let horizon = t.saturating_sub(MAX_READ_VERSION_AGE.as_micros() as u64);
                while self.history.front().is_some_and(|(_, ft, _)| *ft < horizon) {
                    self.oldest = self.history.pop_front().unwrap().0;
                }
            }
        }
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let key = |n: &mut dyn FnMut(u64) -> u64| -> Bytes {
            let len = n(3) as usize;
            Bytes::from((0..len).map(|_| b'a' + n(6) as u8).collect::<Vec<u8>>())
        };
        let range = |n: &mut dyn FnMut(u64) -> u64| -> KeyRange {
            let a = key(n);
            match n(4) {
                0 => KeyRange::single(&a),
                1 => KeyRange {
                    begin: a.clone(),
                    end: a,
                },
                _ => {
                    let b = key(n);
                    let (begin, end) = if a <= b { (a, b) } else { (b, a) };
                    KeyRange { begin, end }
                }
            }
        };
        let step = MAX_READ_VERSION_AGE.as_micros() as u64 / 40;
        let mut res = Resolver::new(Version(1));
        let mut model = Model {
            oldest: Version(1),
            history: VecDeque::new(),
        };
        let (mut version, mut time) = (1u64, 0u64);
        let mut checks = (0, 0);
        for _ in 0..3000 {
            version += 1 + next(3);
            time += next(step);
            let writes: Vec<KeyRange> = (0..next(4)).map(|_| range(&mut next)).collect();
            res.add(Version(version), time, writes.clone());
            model.add(Version(version), time, writes);
            assert_eq!(res.oldest_checkable, model.oldest);
            if next(50) == 0 {
                res.prune();
            }
            for _ in 0..4 {
                let rv = Version(model.oldest.0 + next(version - model.oldest.0 + 1));
                let reads: Vec<KeyRange> = (0..1 + next(3)).map(|_| range(&mut next)).collect();
                let want = model.conflicts(rv, &reads);
                // Both ways of answering, whichever `check` picks for this read version.
                let by_steps = reads.iter().any(|r| res.written_after(r, rv));
                assert_eq!(by_steps, want, "the steps at {rv}: {reads:?}");
                // `now` at the last commit: the 5-second rule is the window's, not the steps'.
                let got = res.check(rv, &reads, &[], time);
                match got {
                    Ok(()) => assert!(!want, "missed a conflict at {rv}: {reads:?}"),
                    Err(e) if e.kind() == ErrorKind::NotCommitted => {
                        assert!(want, "a false conflict at {rv}: {reads:?}");
                    }
                    Err(e) => assert_eq!(e.kind(), ErrorKind::TransactionTooOld, "{e}"),
                }
                checks.0 += 1;
                checks.1 += usize::from(want);
            }
        }
        // Both outcomes were exercised, many times.
        assert!(checks.1 > 500 && checks.0 - checks.1 > 500, "{checks:?}");
    }

    #[test]
    fn empty_ranges_conflict_with_nothing() {
        let mut res = Resolver::new(Version(0));
        res.add(Version(10), 1, vec![r("a", "z"), r("m", "m")]);
        assert!(res.check(Version(5), &[r("m", "m")], &[], 1).is_ok());
        assert!(
            res.check(Version(5), &[r("m", "n")], &[r("q", "q")], 1)
                .is_err()
        );
        let mut res = Resolver::new(Version(0));
        res.add(Version(10), 1, vec![r("m", "m")]);
        assert!(res.check(Version(5), &[r("a", "z")], &[], 1).is_ok());
        assert!(
            res.check(Version(5), &[r("a", "z")], &[r("m", "m")], 1)
                .is_ok()
        );
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
