//! A multi-version sorted map: key → (version → value or tombstone). The in-memory layer and
//! loaded delta layers both use it.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use ferrisdb_common::Version;

/// Every version of every key it holds; `None` is a tombstone.
#[derive(Debug, Default, Clone)]
pub struct VersionedMap {
    keys: BTreeMap<Bytes, BTreeMap<Version, Option<Bytes>>>,
    entries: usize,
    bytes: usize,
}

/// What a source knows about a key at a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The source holds no version of the key at or below the version: look further down.
    Absent,
    /// The key's value (`None`: deleted) as of the version.
    Found(Option<Bytes>),
}

impl VersionedMap {
    /// Records `key` = `value` (or a tombstone) at `version`.
    pub fn insert(&mut self, key: Bytes, version: Version, value: Option<Bytes>) {
        self.bytes += key.len() + value.as_ref().map_or(0, |v| v.len()) + 17;
        let versions = self.keys.entry(key).or_default();
        if versions.insert(version, value).is_none() {
            self.entries += 1;
        }
    }

    /// The latest entry of `key` at or below `version`.
    pub fn get(&self, key: &[u8], version: Version) -> Lookup {
        match self
            .keys
            .get(key)
            .and_then(|vs| vs.range(..=version).next_back())
        {
            Some((_, v)) => Lookup::Found(v.clone()),
            None => Lookup::Absent,
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

    /// Every entry, by key then version.
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
        self.entries == 0
    }

    /// Approximate bytes held.
    pub fn approximate_bytes(&self) -> usize {
        self.bytes
    }
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
    }
}
