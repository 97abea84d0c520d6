//! A multi-version sorted map: key → (version → value or tombstone). The in-memory layer and
//! loaded delta layers both use it.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::Version;
use bytes::Bytes;

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

    /// Drops every entry at or below `version`, returning how many went.
    pub fn evict_up_to(&mut self, version: Version) -> usize {
        let mut evicted = 0;
        self.keys.retain(|key, versions| {
            let keep = versions.split_off(&Version(version.0.saturating_add(1)));
            for value in versions.values() {
                evicted += 1;
                self.bytes = self
                    .bytes
                    .saturating_sub(key.len() + value.as_ref().map_or(0, |v| v.len()) + 17);
            }
            *versions = keep;
            !versions.is_empty()
        });
        self.entries -= evicted;
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
    fn take_limited_cuts_and_reverses() {
        assert_eq!(take_limited(1..=5, 2, false), (vec![1, 2], true));
        assert_eq!(take_limited(1..=5, 2, true), (vec![5, 4], true));
        assert_eq!(take_limited(1..=2, 2, false), (vec![1, 2], false));
        assert_eq!(take_limited(1..=3, 0, false), (vec![1, 2, 3], false));
    }
}
