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

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use bytes::Bytes;
use ferrisdb_common::{Result, Version};
use ferrisdb_server_common::objstore::with_retries;
use ferrisdb_server_common::versioned_map::{RangeTombstone, entry_bytes};
use object_store::ObjectStoreExt;

use super::Timeline;
use crate::format::delta::{self, DeltaLayer};
use crate::format::manifest::{self, LayerEntry, LayerKind};

/// One point entry of a layer: key, version, value (`None`: a tombstone).
type Point = (Bytes, Version, Option<Bytes>);

/// Every entry of one layer: its points and its range tombstones.
type LayerEntries = (Vec<Point>, Vec<RangeTombstone>);

/// One L1 layer encoded: its key range `[begin, end)` (an empty `end`: to the end of the
/// keyspace) and its body.
#[derive(Debug)]
struct EncodedPartition {
    begin: Bytes,
    end: Bytes,
    body: Bytes,
}

/// The bytes an entry counts for when sizing partitions (as the in-memory layers count it).
fn point_bytes((k, _, val): &Point) -> usize {
    entry_bytes(k, val.as_ref())
}

/// Reads every entry of `run` (L0 layers, oldest first, contiguous in versions, at least one),
/// splits them into partitions of about `target_bytes` each, cut only between keys, and
/// encodes each as an L1 layer covering the run's versions `(start, end]`.
///
/// The reading awaits the store; the merge, the split and the encoding are a second or more of
/// CPU after a long write load, so they run on the blocking pool, where they do not hold one of
/// the runtime's workers from `GetPage` and the WAL stream.
async fn merge_run(
    run: &[Arc<DeltaLayer>],
    (start, end): (Version, Version),
    target_bytes: usize,
) -> Result<Vec<EncodedPartition>> {
    let mut layers: Vec<LayerEntries> = Vec::with_capacity(run.len());
    for layer in run {
        layers.push(layer.all_entries().await?);
    }
    let times: Vec<(Version, u64)> = run.iter().flat_map(|l| l.times.clone()).collect();
    tokio::task::spawn_blocking(move || {
        let (points, tombstones) = merge_layers(layers)?;
        let partitions = split_points(&points, target_bytes);
        let mut encoded = Vec::with_capacity(partitions.len());
        for (i, (begin, end_key, slice)) in partitions.into_iter().enumerate() {
            let clipped = clip_tombstones(&tombstones, &begin, &end_key);
            // Commit times once per run, in its first partition.
            let times: &[(Version, u64)] = if i == 0 { &times } else { &[] };
            let size: usize = slice.iter().map(point_bytes).sum();
            let body = delta::encode_sorted(
                (start, end),
                slice.iter().map(|(k, v, val)| (k, *v, val)),
                &clipped,
                size,
                times,
            );
            encoded.push(EncodedPartition {
                begin,
                end: end_key,
                body,
            });
        }
        Ok(encoded)
    })
    .await
    .map_err(|e| ferrisdb_common::Error::internal(format!("compaction merge: {e}")))?
}

/// Merges the layers' points (oldest layer first, each sorted by key then version, as
/// checkpoints and compactions write them) into one run sorted by key then version, and
/// gathers their range tombstones oldest first.
///
/// A k-way merge over the layers' sorted entries: O(n log k) key comparisons and no per-entry
/// allocation, where inserting every entry into a map cost a tree walk and nodes for each.
/// Should two layers hold the same key at the same version (they do not when the run is
/// contiguous), the newer layer's entry wins, as it would in a map. A layer whose entries are
/// out of order is corrupt: the L1 layers' block index would mislead reads.
fn merge_layers(layers: Vec<LayerEntries>) -> Result<(Vec<Point>, Vec<RangeTombstone>)> {
    let total: usize = layers.iter().map(|(p, _)| p.len()).sum();
    let mut tombstones = Vec::new();
    let mut sources = Vec::with_capacity(layers.len());
    for (points, ts) in layers {
        tombstones.extend(ts);
        sources.push(points.into_iter());
    }
    tombstones.sort_by_key(|t| t.version);
    // The heap holds each layer's next entry, smallest (key, version, layer) on top.
    let mut heap = BinaryHeap::with_capacity(sources.len());
    for (layer, source) in sources.iter_mut().enumerate() {
        if let Some((k, v, val)) = source.next() {
            heap.push(Reverse((k, v, layer, val)));
        }
    }
    let mut merged: Vec<Point> = Vec::with_capacity(total);
    while let Some(Reverse((k, v, layer, val))) = heap.pop() {
        if let Some((nk, nv, nval)) = sources[layer].next() {
            if (&nk, nv) <= (&k, v) {
                return Err(ferrisdb_common::Error::corruption(format!(
                    "compaction: layer {layer} of the run holds its entries out of order"
                )));
            }
            heap.push(Reverse((nk, nv, layer, nval)));
        }
        match merged.last_mut() {
            // The same key and version from a newer layer (popped after the older one).
            Some(last) if last.0 == k && last.1 == v => last.2 = val,
            _ => merged.push((k, v, val)),
        }
    }
    Ok((merged, tombstones))
}

/// Cuts a sorted run into partitions of about `target_bytes` each, only between keys (a key's
/// versions stay in one partition): each partition's first key (empty for the first), first
/// key past it (empty for the last) and its entries.
fn split_points(points: &[Point], target_bytes: usize) -> Vec<(Bytes, Bytes, &[Point])> {
    let mut cuts: Vec<usize> = Vec::new();
    let mut size = 0usize;
    for (i, p) in points.iter().enumerate() {
        let new_key = i == 0 || points[i - 1].0 != p.0;
        if new_key && i > 0 && size >= target_bytes.max(1) {
            cuts.push(i);
            size = 0;
        }
        size += point_bytes(p);
    }
    let mut partitions = Vec::with_capacity(cuts.len() + 1);
    let mut from = 0usize;
    for (n, &cut) in cuts
        .iter()
        .chain(std::iter::once(&points.len()))
        .enumerate()
    {
        let begin = if n == 0 {
            Bytes::new()
        } else {
            points[from].0.clone()
        };
        let end = points.get(cut).map(|p| p.0.clone()).unwrap_or_default();
        partitions.push((begin, end, &points[from..cut]));
        from = cut;
    }
    partitions
}

/// The tombstones overlapping the partition `[begin, end)` (empty `end`: unbounded), clipped
/// to it, oldest first.
fn clip_tombstones(
    tombstones: &[RangeTombstone],
    begin: &Bytes,
    end: &Bytes,
) -> Vec<RangeTombstone> {
    tombstones
        .iter()
        .filter_map(|t| {
            let (b, e) = (t.begin.clone().max(begin.clone()), clip_end(&t.end, end));
            (b < e).then(|| RangeTombstone {
                begin: b,
                end: e,
                version: t.version,
            })
        })
        .collect()
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
fn l1_name(start: Version, end: Version, index: usize) -> String {
    format!("{:016X}-{:016X}-{index:04}.l1", start.0, end.0)
}

impl Timeline {
    /// Merges the L0 delta layers into key-partitioned L1 layers once there are
    /// [`TimelineOptions::compact_after_deltas`](super::TimelineOptions::compact_after_deltas) of them: the L1 layers are uploaded, then a
    /// manifest naming them instead of the L0 layers, then the L0 objects are deleted.
    pub(super) async fn compact_if_many(&self) -> Result<()> {
        self.compact_at_least(self.options.compact_after_deltas.max(2))
            .await
    }

    /// Merges the L0 delta layers into L1 now, if there are at least two (an operator's
    /// compaction: one L0 layer is already as merged as it gets).
    pub async fn compact(&self) -> Result<()> {
        self.compact_at_least(2).await
    }

    /// Merges the L0 delta layers into L1 once there are `min_run` of them.
    async fn compact_at_least(&self, min_run: usize) -> Result<()> {
        let mut manifest = self.manifest.lock().await;
        let layers = self.read_map()?.layers.clone();
        // Every L0 layer: checkpoints append them after the last L1 run, so they are
        // contiguous in versions.
        let run: Vec<Arc<DeltaLayer>> = layers
            .iter()
            .filter(|l| !l.image && !l.is_l1())
            .cloned()
            .collect();
        if run.len() < min_run.max(2) {
            return Ok(());
        }
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return Ok(());
        };
        let (start, end) = (first.start, last.end);
        let encoded = merge_run(&run, (start, end), self.options.l1_target_bytes).await?;
        let l1_layers = encoded.len();
        let mut entries = Vec::with_capacity(encoded.len());
        let mut opened = Vec::with_capacity(encoded.len());
        for (i, p) in encoded.into_iter().enumerate() {
            let name = l1_name(start, end, i);
            let (layer, size) = self.put_layer(&name, p.body).await?;
            let layer = layer.with_keys(Some((p.begin.clone(), p.end.clone())));
            entries.push(LayerEntry {
                name,
                start,
                end,
                size,
                kind: LayerKind::Delta,
                keys: Some(manifest::KeyPartition::new(&p.begin, &p.end)),
            });
            opened.push(Arc::new(layer));
        }
        let doomed: Vec<String> = run.iter().map(|l| l.name().to_string()).collect();
        let is_doomed = |name: &str| doomed.iter().any(|d| d == name);
        let mut next = manifest.clone();
        next.generation += 1;
        next.writer = self.writer.clone();
        let at = next
            .layers
            .iter()
            .position(|e| is_doomed(&e.name))
            .unwrap_or(next.layers.len());
        next.layers.retain(|e| !is_doomed(&e.name));
        let at = at.min(next.layers.len());
        next.layers.splice(at..at, entries);
        manifest::store_next(&self.store, &next).await?;
        {
            let mut map = self.write_map()?;
            let at = map
                .layers
                .iter()
                .position(|l| is_doomed(l.name()))
                .unwrap_or(map.layers.len());
            map.layers.retain(|l| !is_doomed(l.name()));
            let at = at.min(map.layers.len());
            map.layers.splice(at..at, opened);
            self.layers_dropped
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.metrics
            .layers
            .with_label_values(&[&self.database])
            .set(next.layers.len() as i64);
        self.replace_manifest(&mut manifest, next);
        drop(manifest);
        for name in &doomed {
            let path = manifest::layer_path(&self.database, name);
            if let Err(e) = with_retries("delete L0 layer", || self.store.delete(&path)).await {
                tracing::warn!(%path, error = %e, "could not delete a compacted layer; it is no longer named");
            }
        }
        tracing::info!(database = %self.database, l0 = doomed.len(), l1 = l1_layers, %start, %end, "compacted L0 into L1");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrisdb_common::ErrorKind;
    use ferrisdb_server_common::versioned_map::VersionedMap;

    fn point(k: &str, v: u64, val: Option<&str>) -> Point {
        (
            Bytes::from(k.to_string()),
            Version(v),
            val.map(|s| Bytes::from(s.to_string())),
        )
    }

    /// Layers as checkpoints write them: each a stretch of versions above the last, its
    /// entries sorted by key then version, keys drawn at random so they interleave.
    fn random_layers(seed: u64, layers: usize) -> Vec<LayerEntries> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        (0..layers as u64)
            .map(|l| {
                let mut map = VersionedMap::default();
                for _ in 0..200 {
                    let key = Bytes::from(format!("k{:03}", next(150)));
                    let version = Version(l * 1000 + 1 + next(999));
                    let value = (next(5) != 0).then(|| Bytes::from(format!("{l}-{}", next(1000))));
                    map.insert(key, version, value);
                }
                let points = map
                    .iter()
                    .map(|(k, v, val)| (k.clone(), v, val.clone()))
                    .collect();
                let tombstones = vec![RangeTombstone {
                    begin: Bytes::from(format!("k{:03}", next(100))),
                    end: Bytes::from("k120"),
                    version: Version(l * 1000 + 500),
                }];
                (points, tombstones)
            })
            .collect()
    }

    #[test]
    fn the_merge_matches_inserting_every_entry_into_one_map() {
        for seed in 1..20 {
            let layers = random_layers(seed, 1 + (seed as usize % 8));
            let mut oracle = VersionedMap::default();
            for (points, tombstones) in &layers {
                for (k, v, val) in points {
                    oracle.insert(k.clone(), *v, val.clone());
                }
                for t in tombstones {
                    oracle.push_range_tombstone(t.clone());
                }
            }
            let (merged, tombstones) = merge_layers(layers).unwrap();
            let expected: Vec<Point> = oracle
                .iter()
                .map(|(k, v, val)| (k.clone(), v, val.clone()))
                .collect();
            assert_eq!(merged, expected, "seed {seed}");
            assert_eq!(
                tombstones,
                oracle.range_tombstones().as_slice(),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn the_newer_layer_wins_a_key_and_version_both_hold() {
        let older = (
            vec![point("a", 5, Some("old")), point("b", 5, None)],
            vec![],
        );
        let newer = (
            vec![point("a", 5, Some("new")), point("a", 6, None)],
            vec![],
        );
        let (merged, _) = merge_layers(vec![older, newer]).unwrap();
        assert_eq!(
            merged,
            vec![
                point("a", 5, Some("new")),
                point("a", 6, None),
                point("b", 5, None)
            ]
        );
    }

    #[test]
    fn a_layer_out_of_order_is_corruption_not_a_misleading_l1_layer() {
        let sorted = (
            vec![point("a", 1, Some("x")), point("c", 1, Some("x"))],
            vec![],
        );
        let unsorted = (
            vec![point("d", 2, Some("y")), point("b", 2, Some("y"))],
            vec![],
        );
        let e = merge_layers(vec![sorted, unsorted]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corruption);
        // The same key twice at one version within a layer is out of order too.
        let repeated = (
            vec![point("a", 1, Some("x")), point("a", 1, Some("y"))],
            vec![],
        );
        let e = merge_layers(vec![repeated]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corruption);
    }

    #[test]
    fn partitions_cover_the_run_and_cut_only_between_keys() {
        let (merged, _) = merge_layers(random_layers(7, 6)).unwrap();
        for target in [1usize, 300, 2_000, 1 << 30] {
            let parts = split_points(&merged, target);
            // Every entry once, in order.
            let joined: Vec<Point> = parts
                .iter()
                .flat_map(|(_, _, s)| s.iter().cloned())
                .collect();
            assert_eq!(joined, merged, "target {target}");
            assert!(
                parts[0].0.is_empty(),
                "the first partition starts at the keyspace's start"
            );
            assert!(
                parts.last().unwrap().1.is_empty(),
                "the last runs to its end"
            );
            for pair in parts.windows(2) {
                let (_, end, left) = &pair[0];
                let (begin, _, right) = &pair[1];
                assert_eq!(end, begin, "target {target}: partitions abut");
                assert_eq!(
                    &right[0].0, begin,
                    "target {target}: a partition starts at its first key"
                );
                assert_ne!(
                    left.last().unwrap().0,
                    right[0].0,
                    "target {target}: a key split"
                );
                let size: usize = left.iter().map(point_bytes).sum();
                assert!(
                    size >= target,
                    "target {target}: cut before the target was met"
                );
            }
            if target == 1 << 30 {
                assert_eq!(parts.len(), 1);
            }
        }
        // Only tombstones: one partition over the whole keyspace, no entries.
        let parts = split_points(&[], 100);
        assert_eq!(parts.len(), 1);
        assert!(parts[0].0.is_empty() && parts[0].1.is_empty() && parts[0].2.is_empty());
    }

    #[tokio::test]
    async fn the_largest_key_and_value_survive_the_merge_and_an_l1_layer() {
        use crate::block_cache::BlockCache;
        use ferrisdb_common::limits::{MAX_KEY_SIZE, MAX_VALUE_SIZE};
        use ferrisdb_server_common::versioned_map::Lookup;
        use object_store::memory::InMemory;
        use object_store::path::Path;
        let big_key = Bytes::from(vec![0xFE; MAX_KEY_SIZE]);
        let big_value = Bytes::from(vec![7; MAX_VALUE_SIZE]);
        let older = (
            vec![
                point("a", 1, Some("x")),
                (big_key.clone(), Version(2), Some(big_value.clone())),
            ],
            vec![],
        );
        let newer = (
            vec![
                point("b", 11, Some("y")),
                (big_key.clone(), Version(12), None),
            ],
            vec![],
        );
        let (merged, _) = merge_layers(vec![older, newer]).unwrap();
        // A target of one byte: every key a partition of its own, the big key's last.
        let parts = split_points(&merged, 1);
        assert_eq!(parts.len(), 3);
        let (begin, end, slice) = &parts[2];
        assert_eq!((begin, end.is_empty(), slice.len()), (&big_key, true, 2));
        let size = slice.iter().map(point_bytes).sum();
        let body = delta::encode_sorted(
            (Version(0), Version(20)),
            slice.iter().map(|(k, v, val)| (k, *v, val)),
            &[],
            size,
            &[],
        );
        let store: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("big.l1");
        store.put(&path, body.clone().into()).await.unwrap();
        let cache = Arc::new(BlockCache::in_memory(1 << 20));
        let layer = DeltaLayer::from_bytes(store, path, "big.l1".into(), &body, cache).unwrap();
        assert_eq!(
            layer.get(&big_key, Version(5)).await.unwrap(),
            Lookup::Found(Some(big_value))
        );
        assert_eq!(
            layer.get(&big_key, Version(12)).await.unwrap(),
            Lookup::Found(None)
        );
        assert_eq!(
            layer.get(&big_key, Version(1)).await.unwrap(),
            Lookup::Absent
        );
    }

    #[test]
    fn tombstones_are_clipped_to_each_partition() {
        let t = RangeTombstone {
            begin: Bytes::from("b"),
            end: Bytes::from("m"),
            version: Version(3),
        };
        let clipped = clip_tombstones(
            std::slice::from_ref(&t),
            &Bytes::from("d"),
            &Bytes::from("f"),
        );
        assert_eq!(clipped.len(), 1);
        assert_eq!(
            (&clipped[0].begin[..], &clipped[0].end[..]),
            (&b"d"[..], &b"f"[..])
        );
        let unbounded = clip_tombstones(std::slice::from_ref(&t), &Bytes::from("k"), &Bytes::new());
        assert_eq!(
            (&unbounded[0].begin[..], &unbounded[0].end[..]),
            (&b"k"[..], &b"m"[..])
        );
        assert!(clip_tombstones(&[t], &Bytes::from("m"), &Bytes::new()).is_empty());
    }
}
