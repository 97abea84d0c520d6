//! Image layers: every live key at the durable version, written once enough delta layers lie
//! above the newest image, so reads at or above it stop there instead of opening them all,
//! or once the retention horizon has passed the newest image, so GC can free what lies below.

use std::collections::BTreeSet;
use std::sync::Arc;

use ferrisdb_common::{Result, Version};

use ferrisdb_server_common::versioned_map::entry_bytes;

use super::Timeline;
use super::merge::visible;
use crate::format::delta;
use crate::format::manifest::{self, LayerEntry, LayerKind};

/// Larger than every valid key (keys are at most 10,000 bytes): the end of a whole-keyspace scan.
fn keyspace_end() -> Vec<u8> {
    vec![0xFF; ferrisdb_common::limits::MAX_KEY_SIZE + 1]
}

impl Timeline {
    /// An image of every live key at the durable version, once [`TimelineOptions::image_after_deltas`](super::TimelineOptions::image_after_deltas)
    /// delta runs lie above the newest image (reads at or above it then stop there), or once
    /// retention wants one ([`retention_wants_image`]).
    pub(super) async fn write_image_if_deep(&self) -> Result<()> {
        let mut manifest = self.manifest.lock().await;
        let layers = self.read_map()?.layers.clone();
        let above = layers.iter().rposition(|l| l.image).map_or(0, |i| i + 1);
        // An L1 run's partitions count once: a read opens one of them.
        let runs: BTreeSet<(Version, Version)> = layers[above..]
            .iter()
            .filter(|l| !l.image)
            .map(|l| (l.start, l.end))
            .collect();
        let newest_image = manifest
            .layers
            .iter()
            .rposition(|l| l.kind == LayerKind::Image);
        if runs.len() < self.options.image_after_deltas.max(1)
            && !retention_wants_image(&manifest, newest_image, runs.len())
        {
            return Ok(());
        }
        // What the image would be built from, all of it in memory at once: the newest image
        // and every layer above it (a branch's inherited rows come on top, unbounded here).
        let input: u64 = manifest.layers[newest_image.unwrap_or(0)..]
            .iter()
            .map(|l| l.size)
            .sum();
        if input > self.options.image_max_input_bytes as u64 {
            if !self
                .image_skipped
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!(
                    database = %self.database,
                    input_bytes = input,
                    limit = self.options.image_max_input_bytes,
                    "no image layer: it would be built in memory from more than --image-max-input-bytes of layers; reads open the delta layers instead"
                );
            }
            return Ok(());
        }
        let at = manifest.remote_consistent_version;
        let mut sources = Self::layers_range(&layers, b"", &keyspace_end(), at).await?;
        // A branch's image holds what it inherited too: reads stop at the image.
        if let Some((parent, point)) = self.ancestor_below(&layers, at) {
            let (rows, _) =
                Box::pin(parent.get_range(b"", &keyspace_end(), point, 0, false)).await?;
            sources.push(Self::parent_rows(rows, point));
        }
        // The merge of every layer and the encoding are seconds of CPU for a large keyspace:
        // on the blocking pool, off the async workers that serve `GetPage` and the WAL
        // stream. The merge comes out sorted by key, so it is encoded as it stands.
        let (body, keys) = tokio::task::spawn_blocking(move || {
            let merged = visible(sources, at);
            let live = || {
                merged
                    .iter()
                    .filter(|(_, (_, val))| val.is_some())
                    .map(|(k, (v, val))| (k, *v, val))
            };
            let (keys, bytes) = live().fold((0usize, 0usize), |(n, b), (k, _, val)| {
                (n + 1, b + entry_bytes(k, val.as_ref()))
            });
            (
                delta::encode_sorted((at, at), live(), &[], bytes, &[]),
                keys,
            )
        })
        .await
        .map_err(|e| ferrisdb_common::Error::internal(format!("image encoder: {e}")))?;
        let name = format!("{:016X}.image", at.0);
        let (layer, size) = self.put_layer(&name, body).await?;
        let layer = layer.with_image(true);
        let mut next = manifest.clone();
        next.generation += 1;
        next.writer = self.writer.clone();
        next.layers.push(LayerEntry {
            name,
            start: at,
            end: at,
            size,
            kind: LayerKind::Image,
            keys: None,
        });
        manifest::store_next(&self.store, &next).await?;
        self.write_map()?.layers.push(Arc::new(layer));
        self.metrics
            .layers
            .with_label_values(&[&self.database])
            .set(next.layers.len() as i64);
        self.replace_manifest(&mut manifest, next);
        tracing::info!(database = %self.database, version = %at, keys, "image layer written");
        Ok(())
    }
}

/// Whether retention needs an image although delta depth does not: GC frees delta layers
/// only below an image at or under its horizon, so once the horizon has passed the newest
/// image (or, without one, has risen at all) and deltas lie above it, the next image is what
/// lets the bucket shrink a retention window later. Without this, depth alone decided, and
/// with compaction folding every eight L0 deltas into one L1 run, sixteen runs took hours:
/// the bucket kept every write until then whatever the retention (an outside audit: 43
/// minutes and 196 MB of deltas with 120 s retention, against a 27 MB image of the data).
/// The deltas above the newest image must be at least half its size, so that rewriting the
/// whole keyspace costs at most about twice what it will let go.
fn retention_wants_image(
    manifest: &manifest::Manifest,
    newest_image: Option<usize>,
    runs_above: usize,
) -> bool {
    if runs_above == 0 {
        return false;
    }
    let (image_end, image_size, above) = match newest_image {
        Some(i) => (
            manifest.layers[i].end,
            manifest.layers[i].size,
            &manifest.layers[i + 1..],
        ),
        None => (Version::ZERO, 0, &manifest.layers[..]),
    };
    let delta_bytes: u64 = above
        .iter()
        .filter(|l| l.kind != LayerKind::Image)
        .map(|l| l.size)
        .sum();
    manifest.gc_horizon > image_end && delta_bytes.saturating_mul(2) >= image_size
}
