//! A multi-version sorted map: key → (version → value or tombstone), plus range tombstones.
//! The pageserver's in-memory layers and the compute's hot tier use it.
//!
//! A range tombstone `[begin, end)` at version `v` removes every key of the range as of `v`.
//! Point entries and range tombstones combine by version: a key's state at a read version is
//! its newest point entry unless a newer range tombstone covers it. Within one version (one
//! commit batch, whose mutations apply in order) a range clear removes the point entries the
//! batch wrote before it, and a point entry written after it at the same version beats it.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use ferrisdb_common::Version;

/// Every version of every key it holds; `None` is a tombstone.
#[derive(Debug, Default, Clone)]
pub struct VersionedMap {
    keys: BTreeMap<Bytes, BTreeMap<Version, Option<Bytes>>>,
    ranges: RangeTombstones,
    entries: usize,
    bytes: usize,
}

/// `[begin, end)` cleared at `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeTombstone {
    /// First key cleared.
    pub begin: Bytes,
    /// First key past the range.
    pub end: Bytes,
    /// The version that cleared it.
    pub version: Version,
}

impl RangeTombstone {
    /// Whether it covers `key`.
    pub fn covers(&self, key: &[u8]) -> bool {
        self.begin.as_ref() <= key && key < self.end.as_ref()
    }

    /// Whether it overlaps `[begin, end)`.
    pub fn overlaps(&self, begin: &[u8], end: &[u8]) -> bool {
        self.begin.as_ref() < end && begin < self.end.as_ref()
    }
}

/// A set of range tombstones. Range clears are rare next to point writes, so a list ordered by
/// version is enough; lookups scan it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RangeTombstones(Vec<RangeTombstone>);

impl RangeTombstones {
    /// Adds a tombstone (versions arrive in non-decreasing order, or are sorted afterwards).
    pub fn push(&mut self, t: RangeTombstone) {
        let sorted = self.0.last().is_none_or(|l| l.version <= t.version);
        self.0.push(t);
        if !sorted {
            self.0.sort_by_key(|t| t.version);
        }
    }

    /// The newest version at or below `version` whose tombstone covers `key`.
    pub fn covering(&self, key: &[u8], version: Version) -> Option<Version> {
        self.0
            .iter()
            .rev()
            .find(|t| t.version <= version && t.covers(key))
            .map(|t| t.version)
    }

    /// The tombstones at or below `version` overlapping `[begin, end)`, clipped to it.
    pub fn overlapping(&self, begin: &[u8], end: &[u8], version: Version) -> RangeTombstones {
        RangeTombstones(
            self.0
                .iter()
                .filter(|t| t.version <= version && t.overlaps(begin, end))
                .map(|t| RangeTombstone {
                    begin: t.begin.clone().max(Bytes::copy_from_slice(begin)),
                    end: t.end.clone().min(Bytes::copy_from_slice(end)),
                    version: t.version,
                })
                .collect(),
        )
    }

    /// The tombstones with versions in `[from, to]` covering `key`, oldest first.
    pub fn versions_covering(&self, key: &[u8], from: Version, to: Version) -> Vec<Version> {
        self.0
            .iter()
            .filter(|t| t.version >= from && t.version <= to && t.covers(key))
            .map(|t| t.version)
            .collect()
    }

    /// Every tombstone, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &RangeTombstone> {
        self.0.iter()
    }

    /// Every tombstone, oldest first, as a slice.
    pub fn as_slice(&self) -> &[RangeTombstone] {
        &self.0
    }

    /// Adds every tombstone of `other`.
    pub fn extend(&mut self, other: RangeTombstones) {
        for t in other.0 {
            self.push(t);
        }
    }

    /// How many it holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a point entry of `key` at `entry_version` is hidden by a tombstone at or below
    /// `version` (a tombstone at the entry's own version came earlier in its batch).
    pub fn hides(&self, key: &[u8], entry_version: Version, version: Version) -> bool {
        self.covering(key, version)
            .is_some_and(|t| t > entry_version)
    }
}

impl FromIterator<RangeTombstone> for RangeTombstones {
    fn from_iter<I: IntoIterator<Item = RangeTombstone>>(iter: I) -> RangeTombstones {
        let mut v: Vec<RangeTombstone> = iter.into_iter().collect();
        v.sort_by_key(|t| t.version);
        RangeTombstones(v)
    }
}

/// What a source knows about a key at a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The source holds no version of the key at or below the version: look further down.
    Absent,
    /// The key's value (`None`: deleted) as of the version.
    Found(Option<Bytes>),
}

/// The bytes one point entry counts for in [`VersionedMap::approximate_bytes`]: its key, its
/// value, and 17 for the version and the tombstone flag. Whatever sizes runs of entries the
/// same way (a compaction's partitions, an encoder's buffer) uses this.
pub fn entry_bytes(key: &[u8], value: Option<&Bytes>) -> usize {
    key.len() + value.map_or(0, |v| v.len()) + 17
}

impl VersionedMap {
    /// Records `key` = `value` (or a tombstone) at `version`.
    pub fn insert(&mut self, key: Bytes, version: Version, value: Option<Bytes>) {
        self.bytes += entry_bytes(&key, value.as_ref());
        let versions = self.keys.entry(key).or_default();
        if versions.insert(version, value).is_none() {
            self.entries += 1;
        }
    }

    /// Records a range clear of `[begin, end)` at `version`, removing the point entries the
    /// same version wrote inside it earlier (they came before the clear in its batch).
    pub fn clear_range(&mut self, begin: Bytes, end: Bytes, version: Version) {
        if begin >= end {
            return;
        }
        let doomed: Vec<Bytes> = self
            .keys
            .range::<[u8], _>((Bound::Included(&begin[..]), Bound::Excluded(&end[..])))
            .filter(|(_, vs)| vs.contains_key(&version))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            if let Some(vs) = self.keys.get_mut(&k)
                && let Some(old) = vs.remove(&version)
            {
                self.entries -= 1;
                self.bytes = self.bytes.saturating_sub(entry_bytes(&k, old.as_ref()));
                if vs.is_empty() {
                    self.keys.remove(&k);
                }
            }
        }
        self.bytes += begin.len() + end.len() + 8;
        self.ranges.push(RangeTombstone {
            begin,
            end,
            version,
        });
    }

    /// Applies one mutation at `version`.
    pub fn apply(&mut self, version: Version, m: &ferrisdb_common::wal::Mutation) {
        match m {
            ferrisdb_common::wal::Mutation::ClearRange { begin, end } => {
                self.clear_range(begin.clone(), end.clone(), version)
            }
            _ => self.insert(m.key().clone(), version, m.value().cloned()),
        }
    }

    /// Adds every entry and range tombstone of `newer`, whose versions are all above this
    /// map's (each map already reflects its batches' order).
    pub fn absorb(&mut self, newer: &VersionedMap) {
        for (k, v, val) in newer.iter() {
            self.insert(k.clone(), v, val.clone());
        }
        for t in newer.ranges.iter() {
            self.bytes += t.begin.len() + t.end.len() + 8;
            self.ranges.push(t.clone());
        }
    }

    /// Adds a range tombstone as it stands, without touching point entries (for copying
    /// tombstones between maps whose batches are already applied).
    pub fn push_range_tombstone(&mut self, t: RangeTombstone) {
        self.bytes += t.begin.len() + t.end.len() + 8;
        self.ranges.push(t);
    }

    /// The range tombstones it holds.
    pub fn range_tombstones(&self) -> &RangeTombstones {
        &self.ranges
    }

    /// The latest entry of `key` at or below `version`, range tombstones included.
    pub fn get(&self, key: &[u8], version: Version) -> Lookup {
        let point = self
            .keys
            .get(key)
            .and_then(|vs| vs.range(..=version).next_back());
        let cleared = self.ranges.covering(key, version);
        match (point, cleared) {
            (Some((v, _)), Some(t)) if t > *v => Lookup::Found(None),
            (Some((_, val)), _) => Lookup::Found(val.clone()),
            (None, Some(_)) => Lookup::Found(None),
            (None, None) => Lookup::Absent,
        }
    }

    /// For each key in `[begin, end)`, its latest entry at or below `version`, in key order.
    pub fn range_at<'a>(
        &'a self,
        begin: &[u8],
        end: &[u8],
        version: Version,
    ) -> impl Iterator<Item = (&'a Bytes, &'a Option<Bytes>)> + 'a {
        let bounds = (Bound::Included(begin), Bound::Excluded(end));
        let iter = if begin < end {
            Some(self.keys.range::<[u8], _>(bounds))
        } else {
            None
        };
        iter.into_iter()
            .flatten()
            .filter_map(move |(k, vs)| vs.range(..=version).next_back().map(|(_, v)| (k, v)))
    }

    /// For each key in `[begin, end)`, its latest entry at or below `version` with that
    /// entry's own version, in key order.
    pub fn latest_in_range<'a>(
        &'a self,
        begin: &[u8],
        end: &[u8],
        version: Version,
    ) -> impl DoubleEndedIterator<Item = (&'a Bytes, Version, &'a Option<Bytes>)> + 'a {
        let bounds = (Bound::Included(begin), Bound::Excluded(end));
        let iter = (begin < end).then(|| self.keys.range::<[u8], _>(bounds));
        iter.into_iter().flatten().filter_map(move |(k, vs)| {
            vs.range(..=version)
                .next_back()
                .map(|(v, val)| (k, *v, val))
        })
    }

    /// Every entry of `key` with a version in `[from, to]`, oldest first.
    pub fn versions_of(
        &self,
        key: &[u8],
        from: Version,
        to: Version,
    ) -> impl Iterator<Item = (Version, &Option<Bytes>)> {
        let range = (from <= to).then_some(from..=to);
        self.keys
            .get(key)
            .into_iter()
            .flat_map(move |vs| range.clone().into_iter().flat_map(move |r| vs.range(r)))
            .map(|(v, val)| (*v, val))
    }

    /// Every point entry, by key then version (range tombstones: [`VersionedMap::range_tombstones`]).
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, Version, &Option<Bytes>)> {
        self.keys
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |(v, val)| (k, *v, val)))
    }

    /// How many (key, version) entries it holds.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries == 0 && self.ranges.is_empty()
    }

    /// Drops every entry at or below `version`, returning how many went.
    pub fn evict_up_to(&mut self, version: Version) -> usize {
        let mut evicted = 0;
        self.keys.retain(|key, versions| {
            let keep = versions.split_off(&Version(version.0.saturating_add(1)));
            for value in versions.values() {
                evicted += 1;
                self.bytes = self.bytes.saturating_sub(entry_bytes(key, value.as_ref()));
            }
            *versions = keep;
            !versions.is_empty()
        });
        self.entries -= evicted;
        let keep: RangeTombstones = self
            .ranges
            .iter()
            .filter(|t| t.version > version)
            .cloned()
            .collect();
        for t in self.ranges.iter().filter(|t| t.version <= version) {
            self.bytes = self.bytes.saturating_sub(t.begin.len() + t.end.len() + 8);
        }
        self.ranges = keep;
        evicted
    }

    /// Approximate bytes held.
    pub fn approximate_bytes(&self) -> usize {
        self.bytes
    }
}

/// Takes up to `limit` items (0: all), from the back when `reverse`, saying whether more remained.
pub fn take_limited<T>(
    items: impl DoubleEndedIterator<Item = T>,
    limit: usize,
    reverse: bool,
) -> (Vec<T>, bool) {
    let limit = if limit == 0 { usize::MAX } else { limit };
    let mut out = Vec::new();
    let mut more = false;
    let iter: Box<dyn Iterator<Item = T>> = if reverse {
        Box::new(items.rev())
    } else {
        Box::new(items)
    };
    for item in iter {
        if out.len() == limit {
            more = true;
            break;
        }
        out.push(item);
    }
    (out, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn reads_see_the_latest_entry_at_or_below_the_version() {
        let mut m = VersionedMap::default();
        m.insert(b("a"), Version(10), Some(b("a10")));
        m.insert(b("a"), Version(20), None);
        m.insert(b("a"), Version(30), Some(b("a30")));
        m.insert(b("b"), Version(15), Some(b("b15")));
        assert_eq!(m.get(b"a", Version(9)), Lookup::Absent);
        assert_eq!(m.get(b"a", Version(10)), Lookup::Found(Some(b("a10"))));
        assert_eq!(m.get(b"a", Version(25)), Lookup::Found(None));
        assert_eq!(m.get(b"a", Version(99)), Lookup::Found(Some(b("a30"))));
        let r: Vec<_> = m
            .range_at(b"a", b"c", Version(16))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(r, vec![(b("a"), Some(b("a10"))), (b("b"), Some(b("b15")))]);
        assert_eq!(m.range_at(b"c", b"a", Version(99)).count(), 0);
        assert_eq!(m.len(), 4);
        let h: Vec<_> = m
            .versions_of(b"a", Version(10), Version(29))
            .map(|(v, _)| v.0)
            .collect();
        assert_eq!(h, vec![10, 20]);
        assert_eq!(m.versions_of(b"a", Version(31), Version(30)).count(), 0);
        assert_eq!(m.evict_up_to(Version(15)), 2);
        assert_eq!(m.get(b"a", Version(16)), Lookup::Absent);
        assert_eq!(m.get(b"a", Version(99)), Lookup::Found(Some(b("a30"))));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn range_tombstones_combine_with_point_entries_by_version() {
        let mut m = VersionedMap::default();
        m.insert(b("a"), Version(10), Some(b("a10")));
        m.insert(b("c"), Version(10), Some(b("c10")));
        m.insert(b("m"), Version(10), Some(b("m10")));
        // One batch at 20: sets b, clears [a, f), then sets c again.
        m.insert(b("b"), Version(20), Some(b("b20")));
        m.clear_range(b("a"), b("f"), Version(20));
        m.insert(b("c"), Version(20), Some(b("c20")));
        assert_eq!(m.get(b"a", Version(15)), Lookup::Found(Some(b("a10"))));
        assert_eq!(m.get(b"a", Version(20)), Lookup::Found(None));
        assert_eq!(m.get(b"b", Version(20)), Lookup::Found(None));
        assert_eq!(m.get(b"c", Version(20)), Lookup::Found(Some(b("c20"))));
        assert_eq!(m.get(b"d", Version(20)), Lookup::Found(None));
        assert_eq!(m.get(b"d", Version(19)), Lookup::Absent);
        assert_eq!(m.get(b"f", Version(20)), Lookup::Absent);
        assert_eq!(m.get(b"m", Version(20)), Lookup::Found(Some(b("m10"))));
        let t = m.range_tombstones();
        assert!(t.hides(b"a", Version(10), Version(20)));
        assert!(!t.hides(b"c", Version(20), Version(20)));
        assert!(!t.hides(b"a", Version(10), Version(19)));
        let clipped = t.overlapping(b"c", b"z", Version(30));
        assert_eq!(clipped.len(), 1);
        assert_eq!(clipped.iter().next().map(|t| t.begin.clone()), Some(b("c")));
        assert_eq!(
            t.versions_covering(b"e", Version(0), Version(99)),
            vec![Version(20)]
        );
        m.evict_up_to(Version(20));
        assert!(m.range_tombstones().is_empty());
        assert_eq!(m.get(b"c", Version(20)), Lookup::Absent);
    }

    #[test]
    fn take_limited_cuts_and_reverses() {
        assert_eq!(take_limited(1..=5, 2, false), (vec![1, 2], true));
        assert_eq!(take_limited(1..=5, 2, true), (vec![5, 4], true));
        assert_eq!(take_limited(1..=2, 2, false), (vec![1, 2], false));
        assert_eq!(take_limited(1..=3, 0, false), (vec![1, 2, 3], false));
    }
}
