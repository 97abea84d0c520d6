//! Commit times by version: how a timestamp maps to a version, and what `history` reports.
//!
//! Commit times never decrease as versions grow (the committer makes sure of it), so the index
//! is one sorted vector searched by either field.

use serde::{Deserialize, Serialize};

use ferrisdb_common::Version;

/// `(version, commit time in Unix microseconds)` for every commit batch held, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitTimes(Vec<(Version, u64)>);

impl CommitTimes {
    /// Records a commit. Versions must come in increasing order; a time earlier than the last
    /// one is raised to it, keeping the index searchable.
    pub fn push(&mut self, version: Version, time_micros: u64) {
        if let Some(&(last_v, last_t)) = self.0.last() {
            if version <= last_v {
                return;
            }
            self.0.push((version, time_micros.max(last_t)));
        } else {
            self.0.push((version, time_micros));
        }
    }

    /// The commit time of `version`, if it is a commit this index holds.
    pub fn time_of(&self, version: Version) -> Option<u64> {
        self.0
            .binary_search_by_key(&version, |(v, _)| *v)
            .ok()
            .map(|i| self.0[i].1)
    }

    /// The latest version committed at or before `time_micros`, if any is held.
    pub fn version_at(&self, time_micros: u64) -> Option<Version> {
        let n = self.0.partition_point(|(_, t)| *t <= time_micros);
        n.checked_sub(1).map(|i| self.0[i].0)
    }

    /// The entries with versions in `(after, up_to]`.
    pub fn range(&self, after: Version, up_to: Version) -> &[(Version, u64)] {
        let a = self.0.partition_point(|(v, _)| *v <= after);
        let b = self.0.partition_point(|(v, _)| *v <= up_to);
        &self.0[a..b.max(a)]
    }

    /// Drops entries at or below `version`.
    pub fn evict_up_to(&mut self, version: Version) {
        let n = self.0.partition_point(|(v, _)| *v <= version);
        self.0.drain(..n);
    }

    /// The newest entry's time, if any.
    pub fn last_time(&self) -> Option<u64> {
        self.0.last().map(|(_, t)| *t)
    }

    /// The oldest entry's time, if any.
    pub fn first_time(&self) -> Option<u64> {
        self.0.first().map(|(_, t)| *t)
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_timestamps_to_the_latest_version_at_or_before_them() {
        let mut t = CommitTimes::default();
        t.push(Version(10), 100);
        t.push(Version(20), 200);
        t.push(Version(30), 150); // a clock step back is raised to 200
        t.push(Version(25), 999); // out of order: ignored
        assert_eq!(t.version_at(99), None);
        assert_eq!(t.version_at(100), Some(Version(10)));
        assert_eq!(t.version_at(199), Some(Version(10)));
        assert_eq!(t.version_at(200), Some(Version(30)));
        assert_eq!(t.time_of(Version(30)), Some(200));
        assert_eq!(t.time_of(Version(25)), None);
        assert_eq!(
            t.range(Version(10), Version(30)),
            &[(Version(20), 200), (Version(30), 200)]
        );
        t.evict_up_to(Version(20));
        assert_eq!(t.first_time(), Some(200));
    }
}
