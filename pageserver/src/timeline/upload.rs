//! Checkpoints: freezing the open in-memory layer, uploading it as a delta layer and the
//! records behind it as a cold segment, then the manifest naming both; and the maintenance
//! (compaction, images, GC) that follows.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload};

use ferrisdb_common::{Error, Result, Version};
use ferrisdb_server_common::objstore::{store_error, with_retries};
use ferrisdb_server_common::versioned_map::VersionedMap;

use super::Timeline;
use crate::format::cold_segment;
use crate::format::delta::{self, DeltaLayer};
use crate::format::manifest::{self, LayerEntry, LayerKind, SegmentEntry};

impl Timeline {
    /// Uploads everything ingested (after waiting for `wait_for`) as a delta layer, then a
    /// manifest naming it. Returns the new remote consistent version.
    pub async fn checkpoint(&self, wait_for: Version) -> Result<Version> {
        let end = self.upload(wait_for).await.inspect_err(|_| {
            self.metrics.checkpoint_failures.inc();
        })?;
        // Compaction and GC follow a checkpoint; their failure does not undo it.
        if let Err(e) = self.maintain().await {
            tracing::warn!(database = %self.database, error = %e, "image/GC pass failed; retried after the next checkpoint");
        }
        Ok(end)
    }

    /// Writes an image layer where delta depth makes reads slow, then collects what the
    /// retention window no longer needs.
    pub async fn maintain(&self) -> Result<()> {
        self.compact_if_many().await?;
        self.write_image_if_deep().await?;
        self.collect_garbage().await?;
        self.sweep_orphans_if_due().await.map(|_| ())
    }

    /// Uploads a layer object just encoded, parsing it first (a malformed layer never reaches
    /// the bucket); returns it opened, and its size.
    pub(super) async fn put_layer(&self, name: &str, body: Bytes) -> Result<(DeltaLayer, u64)> {
        let path = manifest::layer_path(&self.database, name);
        let layer = DeltaLayer::from_bytes(
            self.store.clone(),
            path.clone(),
            name.to_string(),
            &body,
            self.cache.clone(),
        )?;
        let size = body.len() as u64;
        let payload = PutPayload::from(body);
        with_retries("put layer", || self.store.put(&path, payload.clone()))
            .await
            .map_err(store_error)?;
        Ok((layer, size))
    }

    /// Uploads everything ingested (after waiting for `wait_for`); see [`Timeline::checkpoint`].
    pub(super) async fn upload(&self, wait_for: Version) -> Result<Version> {
        self.wait_ingested(wait_for, Duration::from_secs(10))
            .await?;
        let mut manifest = self.manifest.lock().await;
        let start = manifest.remote_consistent_version;
        // Freeze: new WAL goes to a fresh open layer while this one uploads.
        let (frozen, end) = {
            let mut map = self.write_map()?;
            let end = self.ingested_version();
            let frozen = Arc::new(std::mem::take(&mut map.open));
            map.frozen = Some(frozen.clone());
            map.frozen_records = Arc::new(std::mem::take(&mut map.open_records));
            (frozen, end)
        };
        if end <= start {
            self.unfreeze(frozen, Thaw::Kept)?;
            return Ok(start);
        }
        let mut next = manifest.clone();
        next.generation += 1;
        next.remote_consistent_version = end;
        next.remote_consistent_term = self.term_at(end).unwrap_or(0);
        next.writer = self.writer.clone();
        let mut new_layer = None;
        if !frozen.is_empty() {
            // The layer starts where the newest delta layer ends, which is behind `start` when
            // checkpoints since then had only empty commits (a read's liveness record) to
            // upload: they moved the durable version on without a layer, and the deltas must
            // still chain without a gap, or a reload takes the gap for a lost layer.
            let start = delta_chain_end(&manifest.layers).unwrap_or(start);
            let name = delta::layer_name(start, end);
            let times: Vec<(Version, u64)> = self
                .times
                .read()
                .map_err(|_| Error::internal("commit times lock poisoned"))?
                .range(start, end)
                .to_vec();
            // Seconds of CPU for a large layer: on the blocking pool, so as not to hold one of
            // the runtime's workers from `GetPage` and the WAL stream meanwhile.
            let encoding = frozen.clone();
            let encoded =
                tokio::task::spawn_blocking(move || delta::encode(start, end, &encoding, &times))
                    .await;
            let body = match encoded {
                Ok(body) => body,
                Err(e) => {
                    self.unfreeze(frozen, Thaw::Kept)?;
                    return Err(Error::internal(format!("delta layer encoder: {e}")));
                }
            };
            let size = body.len() as u64;
            let path = manifest::layer_path(&self.database, &name);
            // Parsed from the bytes at hand (a malformed layer never reaches the bucket).
            let layer = DeltaLayer::from_bytes(
                self.store.clone(),
                path.clone(),
                name.clone(),
                &body,
                self.cache.clone(),
            );
            let layer = match layer {
                Ok(l) => l,
                Err(e) => {
                    self.unfreeze(frozen, Thaw::Kept)?;
                    return Err(e);
                }
            };
            // The layer is in the bucket before any manifest names it.
            let payload = PutPayload::from(body);
            let put = with_retries("put layer", || self.store.put(&path, payload.clone())).await;
            if let Err(e) = put {
                self.unfreeze(frozen, Thaw::Kept)?;
                return Err(store_error(e));
            }
            next.layers.push(LayerEntry {
                name,
                start,
                end,
                size,
                kind: LayerKind::Delta,
                keys: None,
            });
            new_layer = Some(Arc::new(layer));
        }
        // The committed log itself, as a cold segment (also before the manifest names it).
        let records = Arc::clone(&self.read_map()?.frozen_records);
        if let (Some(first), Some(last)) = (records.first(), records.last()) {
            let name = cold_segment::segment_name(first.version, last.version);
            let entry = SegmentEntry {
                name: name.clone(),
                first: first.version,
                last: last.version,
                size: 0,
            };
            // zstd is CPU work: keep it off the async workers.
            let encoded =
                tokio::task::spawn_blocking(move || cold_segment::encode_segment(&records))
                    .await
                    .map_err(|e| Error::internal(format!("segment encoder: {e}")))
                    .and_then(|r| r);
            let uploaded = match encoded {
                Ok(body) => {
                    let size = body.len() as u64;
                    let path = manifest::segment_path(&self.database, &name);
                    let payload = PutPayload::from(body);
                    with_retries("put segment", || self.store.put(&path, payload.clone()))
                        .await
                        .map(|_| size)
                        .map_err(store_error)
                }
                Err(e) => Err(e),
            };
            match uploaded {
                Ok(size) => next.segments.push(SegmentEntry { size, ..entry }),
                Err(e) => {
                    self.unfreeze(frozen, Thaw::Kept)?;
                    return Err(e);
                }
            }
        }
        if let Err(e) = manifest::store_next(&self.store, &next).await {
            self.unfreeze(frozen, Thaw::Kept)?;
            return Err(e);
        }
        self.unfreeze(frozen, Thaw::Uploaded(new_layer))?;
        if let Ok(mut map) = self.layers.write() {
            map.segments = next.segments.clone();
        }
        self.replace_manifest(&mut manifest, next);
        self.remote_consistent.send_replace(end);
        self.metrics
            .remote_consistent_version
            .with_label_values(&[&self.database])
            .set(end.0 as i64);
        self.metrics.checkpoints.inc();
        self.metrics
            .layers
            .with_label_values(&[&self.database])
            .set(manifest.layers.len() as i64);
        tracing::info!(database = %self.database, generation = manifest.generation, %end, "checkpoint uploaded");
        Ok(end)
    }

    /// Ends a freeze: the frozen data becomes its layer if it was uploaded, or goes back into
    /// the open layer if not (nothing is lost when an upload fails).
    ///
    /// An uploaded freeze's map and records are freed on the blocking pool, after the layer
    /// map's lock is released: a checkpoint of a million entries takes ~0.2 s of CPU just to
    /// free, which under the lock would stall every read and the WAL's ingestion, and on an
    /// async worker would hold it from `GetPage` and the WAL stream.
    fn unfreeze(&self, frozen: Arc<VersionedMap>, thaw: Thaw) -> Result<()> {
        let freed = {
            let mut map = self.write_map()?;
            let in_map = map.frozen.take();
            let frozen_records = std::mem::take(&mut map.frozen_records);
            match thaw {
                Thaw::Uploaded(layer) => {
                    map.layers.extend(layer);
                    (frozen, in_map, frozen_records)
                }
                Thaw::Kept => {
                    // Not uploaded: the records go back in front of what arrived meanwhile.
                    let frozen_records = Arc::unwrap_or_clone(frozen_records);
                    let newer = std::mem::replace(&mut map.open_records, frozen_records);
                    map.open_records.extend(newer);
                    let newer = std::mem::take(&mut map.open);
                    let mut restored = (*frozen).clone();
                    restored.absorb(&newer);
                    map.open = restored;
                    (frozen, in_map, Arc::default())
                }
            }
        };
        free_off_worker(freed);
        Ok(())
    }
}

/// How a freeze ends ([`Timeline::unfreeze`]).
enum Thaw {
    /// Uploaded: its records are in a cold segment and its data in this layer, none when it
    /// held only empty commits (a read's liveness record); memory lets both go. (Such a
    /// checkpoint once put its records back as if it had failed, so every later one uploaded
    /// them again: read-only stretches left overlapping segments in the manifest.)
    Uploaded(Option<Arc<DeltaLayer>>),
    /// Not uploaded (failed, or nothing new): everything goes back into the open layer.
    Kept,
}

/// Where the chain of delta layers in `layers` ends (the highest end of a delta layer), or
/// `None` without one: the next delta layer starts there.
pub(super) fn delta_chain_end(layers: &[LayerEntry]) -> Option<Version> {
    layers
        .iter()
        .filter(|l| l.kind == LayerKind::Delta)
        .map(|l| l.end)
        .max()
}

/// Drops `garbage` on the blocking pool when there is a runtime (inline when not, as in a
/// synchronous caller).
fn free_off_worker<T: Send + 'static>(garbage: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(move || drop(garbage));
        }
        Err(_) => drop(garbage),
    }
}
