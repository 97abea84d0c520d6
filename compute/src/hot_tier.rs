//! The hot tier: every commit newer than what the pageserver has ingested, in memory.
//!
//! The invariant that makes reads correct: the hot tier holds *every* commit above its `floor`.
//! A read at version `v` therefore looks here first; if no entry of the key lies in
//! `(floor, v]`, the key did not change since `floor`, and the pageserver is asked at `floor`.
//! Entries at or below a version the pageserver has ingested are evicted and the floor raised,
//! under the same lock readers take, so a reader never sees a floor that its lookup disagrees
//! with.

use std::sync::RwLock;

use bytes::Bytes;
use ferrisdb_common::Version;
use ferrisdb_common::commit_times::CommitTimes;
use ferrisdb_common::overlay::Overlay;
use ferrisdb_common::versioned_map::{Lookup, VersionedMap};
use ferrisdb_common::wal::Mutation;

#[derive(Debug, Default)]
struct Inner {
    floor: Version,
    map: VersionedMap,
    times: CommitTimes,
}

/// Recent commits, versioned.
#[derive(Debug, Default)]
pub struct HotTier {
    inner: RwLock<Inner>,
}

/// One version of a key in the hot tier: version, commit time, value (`None`: cleared), and
/// whether a range clear made it.
pub type HotVersion = (Version, u64, Option<Bytes>, bool);

/// What the hot tier says about a point read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HotRead {
    /// The answer (`None`: deleted).
    Found(Option<Bytes>),
    /// Unchanged since this version: ask the pageserver there.
    AskPageserverAt(Version),
}

impl HotTier {
    /// An empty hot tier holding every commit above `floor` (there are none yet).
    pub fn new(floor: Version) -> HotTier {
        HotTier {
            inner: RwLock::new(Inner {
                floor,
                map: VersionedMap::default(),
                times: CommitTimes::default(),
            }),
        }
    }

    /// The versions of `key` in `(floor, to]` with commit times, oldest first, and the floor:
    /// versions at or below it must come from the pageserver. Range clears covering the key
    /// are included as clears flagged `true` (unless a point entry at the same version came
    /// after them); the caller drops those that removed nothing.
    pub fn history(&self, key: &[u8], to: Version) -> (Vec<HotVersion>, Version) {
        let Ok(inner) = self.inner.read() else {
            return (Vec::new(), Version::ZERO);
        };
        let from = Version(inner.floor.0 + 1);
        let mut entries: Vec<HotVersion> = inner
            .map
            .versions_of(key, from, to)
            .map(|(v, val)| (v, inner.times.time_of(v).unwrap_or(0), val.clone(), false))
            .collect();
        for c in inner
            .map
            .range_tombstones()
            .versions_covering(key, from, to)
        {
            if !entries.iter().any(|e| e.0 == c) {
                entries.push((c, inner.times.time_of(c).unwrap_or(0), None, true));
            }
        }
        entries.sort_by_key(|e| e.0);
        (entries, inner.floor)
    }

    /// The latest version committed at or before `time_micros` among the hot versions; `None`
    /// when the timestamp is older than all of them (ask the pageserver).
    pub fn version_at(&self, time_micros: u64) -> Option<Version> {
        let inner = self.inner.read().ok()?;
        inner.times.version_at(time_micros)
    }

    /// Applies a committed batch at `version`, committed at `time_micros`.
    pub fn apply(&self, version: Version, time_micros: u64, mutations: &[Mutation]) {
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        for m in mutations {
            inner.map.apply(version, m);
        }
        inner.times.push(version, time_micros);
    }

    /// A point read at `version`.
    pub fn get(&self, key: &[u8], version: Version) -> HotRead {
        let Ok(inner) = self.inner.read() else {
            return HotRead::AskPageserverAt(version);
        };
        if version <= inner.floor {
            return HotRead::AskPageserverAt(version);
        }
        match inner.map.get(key, version) {
            Lookup::Found(v) => HotRead::Found(v),
            Lookup::Absent => HotRead::AskPageserverAt(inner.floor),
        }
    }

    /// For a range read at `version`: what the hot tier says (each hot key's value, and the
    /// ranges cleared above the floor) and the version at which the pageserver must be asked
    /// for the rest.
    pub fn range(&self, begin: &[u8], end: &[u8], version: Version) -> (Overlay, Version) {
        let Ok(inner) = self.inner.read() else {
            return (Overlay::default(), version);
        };
        if version <= inner.floor {
            return (Overlay::default(), version);
        }
        let cleared = inner
            .map
            .range_tombstones()
            .overlapping(begin, end, version);
        let entries = inner
            .map
            .latest_in_range(begin, end, version)
            .map(|(k, v, val)| {
                let val = if cleared.hides(k, v, version) {
                    None
                } else {
                    val.clone()
                };
                (k.clone(), val)
            })
            .collect();
        let cleared = cleared
            .iter()
            .map(|t| (t.begin.clone(), t.end.clone()))
            .collect();
        (Overlay { entries, cleared }, inner.floor)
    }

    /// Drops what the pageserver has ingested up to `version` and raises the floor there.
    pub fn evict_up_to(&self, version: Version) {
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        if version > inner.floor {
            inner.map.evict_up_to(version);
            inner.times.evict_up_to(version);
            inner.floor = version;
        }
    }

    /// (floor, entries, approximate bytes), for status and metrics.
    pub fn stats(&self) -> (Version, usize, usize) {
        self.inner.read().map_or((Version::ZERO, 0, 0), |i| {
            (i.floor, i.map.len(), i.map.approximate_bytes())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(k: &str, v: &str) -> Mutation {
        Mutation::Set {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
        }
    }

    #[test]
    fn reads_fall_through_to_the_floor() {
        let hot = HotTier::new(Version(100));
        hot.apply(Version(110), 1_000, &[set("a", "1")]);
        assert_eq!(hot.version_at(999), None);
        assert_eq!(hot.version_at(1_500), Some(Version(110)));
        hot.apply(
            Version(120),
            2_000,
            &[Mutation::Clear {
                key: Bytes::from_static(b"a"),
            }],
        );
        assert_eq!(
            hot.get(b"a", Version(115)),
            HotRead::Found(Some(Bytes::from_static(b"1")))
        );
        assert_eq!(hot.get(b"a", Version(120)), HotRead::Found(None));
        assert_eq!(
            hot.get(b"b", Version(120)),
            HotRead::AskPageserverAt(Version(100))
        );
        assert_eq!(
            hot.get(b"a", Version(90)),
            HotRead::AskPageserverAt(Version(90))
        );
        let (h, floor) = hot.history(b"a", Version(120));
        assert_eq!(floor, Version(100));
        assert_eq!(
            h,
            vec![
                (Version(110), 1_000, Some(Bytes::from_static(b"1")), false),
                (Version(120), 2_000, None, false)
            ]
        );
        hot.evict_up_to(Version(110));
        assert_eq!(
            hot.get(b"a", Version(115)),
            HotRead::AskPageserverAt(Version(110))
        );
        assert_eq!(hot.get(b"a", Version(125)), HotRead::Found(None));
        let (range, floor) = hot.range(b"a", b"z", Version(125));
        assert_eq!(floor, Version(110));
        assert_eq!(
            range.entries.into_iter().collect::<Vec<_>>(),
            vec![(Bytes::from_static(b"a"), None)]
        );
        hot.apply(
            Version(130),
            3_000,
            &[
                set("b", "2"),
                Mutation::ClearRange {
                    begin: Bytes::from_static(b"a"),
                    end: Bytes::from_static(b"c"),
                },
                set("bb", "3"),
            ],
        );
        let (range, _) = hot.range(b"a", b"z", Version(130));
        assert_eq!(
            range.entries.clone().into_iter().collect::<Vec<_>>(),
            vec![
                (Bytes::from_static(b"a"), None),
                (Bytes::from_static(b"bb"), Some(Bytes::from_static(b"3")))
            ]
        );
        assert!(range.overrides(b"ab") && range.overrides(b"bb") && !range.overrides(b"c"));
        assert_eq!(hot.get(b"b", Version(130)), HotRead::Found(None));
        assert_eq!(hot.get(b"ba", Version(130)), HotRead::Found(None));
        assert_eq!(
            hot.get(b"ba", Version(129)),
            HotRead::AskPageserverAt(Version(110))
        );
    }
}
