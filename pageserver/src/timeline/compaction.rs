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

use std::sync::Arc;

use bytes::Bytes;
use ferrisdb_common::{Result, Version};
use ferrisdb_server_common::objstore::with_retries;
use ferrisdb_server_common::versioned_map::{RangeTombstone, VersionedMap};
use object_store::ObjectStoreExt;

use super::Timeline;
use crate::format::delta::{self, DeltaLayer};
use crate::format::manifest::{self, LayerEntry, LayerKind};

/// One L1 layer to write: its key range `[begin, end)` (an empty `end`: to the end of the
/// keyspace) and its entries.
#[derive(Debug)]
struct Partition {
    /// First key covered.
    begin: Bytes,
    /// First key past the partition; empty for the last one.
    end: Bytes,
    /// The entries of the run whose keys fall inside.
    data: VersionedMap,
}

/// Every entry of one layer: its points and its range tombstones.
type LayerEntries = (Vec<(Bytes, Version, Option<Bytes>)>, Vec<RangeTombstone>);

/// One L1 layer encoded: its key range `[begin, end)` (as in [`Partition`]) and its body.
#[derive(Debug)]
struct EncodedPartition {
    begin: Bytes,
    end: Bytes,
    body: Bytes,
}

/// Reads every entry of `run` (L0 layers, oldest first, contiguous in versions, at least one),
/// splits them into partitions of about `target_bytes` each, cut only between keys, and
/// encodes each as an L1 layer covering the run's versions `(start, end]`.
///
/// The reading awaits the store; the merge, the split and the encoding are seconds of CPU
/// after a long write load (every entry of the run goes through a map), so they run on the
/// blocking pool, where they do not hold one of the runtime's workers from `GetPage` and the
/// WAL stream.
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
        split_run(layers, target_bytes)
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                // Commit times once per run, in its first partition.
                let times: &[(Version, u64)] = if i == 0 { &times } else { &[] };
                EncodedPartition {
                    body: delta::encode(start, end, &p.data, times),
                    begin: p.begin,
                    end: p.end,
                }
            })
            .collect()
    })
    .await
    .map_err(|e| ferrisdb_common::Error::internal(format!("compaction merge: {e}")))
}

/// The merge of [`merge_run`]: `layers` oldest first, into partitions of about `target_bytes`.
fn split_run(layers: Vec<LayerEntries>, target_bytes: usize) -> Vec<Partition> {
    let mut all = VersionedMap::default();
    for (points, tombstones) in layers {
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
    partitions
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
        let mut manifest = self.manifest.lock().await;
        let layers = self.read_map()?.layers.clone();
        // Every L0 layer: checkpoints append them after the last L1 run, so they are
        // contiguous in versions.
        let run: Vec<Arc<DeltaLayer>> = layers
            .iter()
            .filter(|l| !l.image && !l.is_l1())
            .cloned()
            .collect();
        if run.len() < self.options.compact_after_deltas.max(2) {
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
        }
        self.metrics.layers.set(next.layers.len() as i64);
        *manifest = next;
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
