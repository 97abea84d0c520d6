//! Merging what several sources say about a range: the rows each source holds and the rule
//! that picks each key's visible entry. Range reads and image layers both build on it.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use bytes::Bytes;
use ferrisdb_common::Version;
use ferrisdb_server_common::versioned_map::RangeTombstones;

/// A key's newest entry in one source: key, version, value (`None`: cleared).
pub(super) type Row = (Bytes, Version, Option<Bytes>);

/// One source's part of a range read: its newest entry per key and its range tombstones over
/// the range.
pub(super) type SourceRows = (Vec<Row>, RangeTombstones);

/// Merges sources holding disjoint versions into each key's visible entry at `version`, in key
/// order: the newest point entry, unless a newer range tombstone from any source hides it.
pub(super) fn visible(
    sources: Vec<SourceRows>,
    version: Version,
) -> BTreeMap<Bytes, (Version, Option<Bytes>)> {
    let mut tombstones = RangeTombstones::default();
    let mut merged: BTreeMap<Bytes, (Version, Option<Bytes>)> = Default::default();
    for (rows, ts) in sources {
        tombstones.extend(ts);
        for (k, v, val) in rows {
            // One search per row: the entry API, not a lookup and then an insert (this merge
            // is a quarter of a range read's instructions; docs/benchmarks/instructions.md).
            match merged.entry(k) {
                Entry::Vacant(e) => {
                    e.insert((v, val));
                }
                Entry::Occupied(mut e) => {
                    if v > e.get().0 {
                        e.insert((v, val));
                    }
                }
            }
        }
    }
    if !tombstones.is_empty() {
        for (k, (v, val)) in merged.iter_mut() {
            if tombstones.hides(k, *v, version) {
                *val = None;
            }
        }
    }
    merged
}
