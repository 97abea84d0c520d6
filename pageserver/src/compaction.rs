//! L0 → L1 compaction: a run of L0 delta layers (each covering every key over a stretch of
//! versions, as checkpoints write them) is merged into L1 delta layers that cover the run's
//! whole version range, each over one partition of the keyspace.
//!
//! A point read then opens one L1 layer for the run instead of every L0 layer in it, and a
//! range read only the partitions it overlaps. Every entry survives: compaction changes how
//! the entries are grouped, never which ones exist, so reads at every version in the run and
//! history are unchanged. Range tombstones are clipped to each partition they overlap.
//!
//! The merge holds the run in memory: runs are bounded by how many L0 layers trigger it
//! ([`crate::timeline::TimelineOptions::compact_after_deltas`]) times the checkpoint size.

use bytes::Bytes;
use ferrisdb_common::Version;
use ferrisdb_server_common::versioned_map::{RangeTombstone, VersionedMap};

use crate::delta_layer::DeltaLayer;

/// One L1 layer to write: its key range `[begin, end)` (an empty `end`: to the end of the
/// keyspace) and its entries.
#[derive(Debug)]
pub struct Partition {
    /// First key covered.
    pub begin: Bytes,
    /// First key past the partition; empty for the last one.
    pub end: Bytes,
    /// The entries of the run whose keys fall inside.
    pub data: VersionedMap,
}

/// Reads every entry of `run` (L0 layers, oldest first, contiguous in versions) and splits them
/// into partitions of about `target_bytes` each, cut only between keys.
pub async fn merge_run(
    run: &[std::sync::Arc<DeltaLayer>],
    target_bytes: usize,
) -> ferrisdb_common::Result<Vec<Partition>> {
    let mut all = VersionedMap::default();
    for layer in run {
        let (points, tombstones) = layer.all_entries().await?;
        for (k, v, val) in points {
            all.insert(k, v, val);
        }
        for t in tombstones {
            all.push_range_tombstone(t);
        }
    }
    // Cut points: the first key of each partition after the first.
    let mut cuts: Vec<Bytes> = Vec::new();
    let mut size = 0usize;
    let mut last: Option<&Bytes> = None;
    for (k, _, val) in all.iter() {
        if last != Some(k) {
            if size >= target_bytes.max(1) {
                cuts.push(k.clone());
                size = 0;
            }
            last = Some(k);
        }
        size += k.len() + val.as_ref().map_or(0, |v| v.len()) + 17;
    }
    let mut bounds = vec![Bytes::new()];
    bounds.extend(cuts);
    let mut partitions = Vec::with_capacity(bounds.len());
    for (i, begin) in bounds.iter().enumerate() {
        let end = bounds.get(i + 1).cloned().unwrap_or_default();
        let inside = |k: &[u8]| k >= begin.as_ref() && (end.is_empty() || k < end.as_ref());
        let mut data = VersionedMap::default();
        for (k, v, val) in all.iter().filter(|(k, _, _)| inside(k)) {
            data.insert(k.clone(), v, val.clone());
        }
        for t in all.range_tombstones().iter() {
            let (b, e) = (t.begin.clone().max(begin.clone()), clip_end(&t.end, &end));
            if b < e {
                data.push_range_tombstone(RangeTombstone {
                    begin: b,
                    end: e,
                    version: t.version,
                });
            }
        }
        partitions.push(Partition {
            begin: begin.clone(),
            end,
            data,
        });
    }
    Ok(partitions)
}

/// The smaller of a tombstone's end and a partition's end (empty: unbounded).
fn clip_end(t_end: &Bytes, p_end: &Bytes) -> Bytes {
    if p_end.is_empty() {
        t_end.clone()
    } else {
        t_end.clone().min(p_end.clone())
    }
}

/// The object name of L1 partition `index` of the run covering `(start, end]`.
pub fn l1_name(start: Version, end: Version, index: usize) -> String {
    format!("{:016X}-{:016X}-{index:04}.l1", start.0, end.0)
}
