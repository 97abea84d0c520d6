//! Orphans: objects under a database's `layers/` and `segments/` that no manifest names.
//!
//! Every object is uploaded before the manifest that names it and deleted after the manifest
//! that stops naming it (docs/bucket-layout.md), so a pageserver killed or failing between
//! the two steps leaves an object nothing reads: a layer whose manifest was never written, or
//! one a compaction or GC stopped naming but could not delete. Nothing else ever deletes
//! them, so without this sweep they stay in the bucket (and on the bill) for good.
//!
//! An object is an orphan only if the live manifest does not name it **and** it is older
//! than [`ORPHAN_GRACE`]. The age is what makes the sweep safe: a layer uploaded a moment ago
//! by a checkpoint still writing its manifest (this pageserver's, or a newer one's that is
//! about to fence this one) is unnamed too, and deleting it would lose the data the manifest
//! is about to promise. No upload takes an hour between its object and its manifest.
//!
//! Superseded manifest generations go the same way. Every checkpoint that moves the durable
//! version writes a generation, so a database written all day leaves thousands of them, and
//! every start lists them all to find the newest. Only the newest is ever read (by a
//! pageserver loading the database, and by a safekeeper checking what is durable before it
//! trims), so the sweep keeps the newest [`MANIFEST_GENERATIONS_KEPT`] (the last few, to look
//! at after an incident) and deletes older ones once they too are past the grace. It never
//! judges generations above the one it holds: those are a newer pageserver's.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use ferrisdb_common::Result;
use ferrisdb_server_common::objstore::{store_error, with_retries};

use super::Timeline;
use crate::format::manifest;

/// How old an unnamed object must be before the sweep deletes it.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(3600);

/// How many manifest generations, the live one included, the sweep always keeps.
pub const MANIFEST_GENERATIONS_KEPT: u64 = 10;

/// How often a database's objects are listed for orphans: listing costs a request per
/// thousand objects, so not at every checkpoint.
pub const ORPHAN_SWEEP_EVERY: Duration = Duration::from_secs(600);

impl Timeline {
    /// Deletes this database's orphans (see the module doc) if the last sweep was
    /// [`ORPHAN_SWEEP_EVERY`] ago or more, by the timeline's clock. Returns how many went.
    pub async fn sweep_orphans_if_due(&self) -> Result<usize> {
        let now = self.options.clock.now_micros();
        let last = self.last_orphan_sweep.load(Ordering::SeqCst);
        let every = u64::try_from(ORPHAN_SWEEP_EVERY.as_micros()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < every {
            return Ok(0);
        }
        self.last_orphan_sweep.store(now.max(1), Ordering::SeqCst);
        self.sweep_orphans().await
    }

    /// Deletes every object under this database's `layers/` and `segments/` that the live
    /// manifest does not name and that is older than [`ORPHAN_GRACE`]. Returns how many went.
    pub async fn sweep_orphans(&self) -> Result<usize> {
        let named: HashSet<Path> = {
            let manifest = self.manifest.lock().await;
            manifest
                .layers
                .iter()
                .map(|e| manifest::layer_path(&self.database, &e.name))
                .chain(
                    manifest
                        .segments
                        .iter()
                        .map(|s| manifest::segment_path(&self.database, &s.name)),
                )
                .collect()
        };
        let grace = u64::try_from(ORPHAN_GRACE.as_micros()).unwrap_or(u64::MAX);
        let cutoff = self.options.clock.now_micros().saturating_sub(grace);
        let mut deleted = 0;
        for kind in ["layers", "segments"] {
            let prefix = Path::from(format!("databases/{}/{kind}", self.database));
            let listed: Vec<object_store::ObjectMeta> = with_retries("list objects", || {
                self.store.list(Some(&prefix)).try_collect()
            })
            .await
            .map_err(store_error)?;
            for meta in listed {
                let modified = u64::try_from(meta.last_modified.timestamp_micros()).unwrap_or(0);
                if named.contains(&meta.location) || modified > cutoff {
                    continue;
                }
                if self
                    .delete_counted(
                        &meta.location,
                        &self.metrics.orphans_deleted,
                        "an orphan object",
                    )
                    .await
                {
                    deleted += 1;
                }
            }
        }
        deleted += self.sweep_old_manifests(cutoff).await?;
        if deleted > 0 {
            tracing::info!(
                database = %self.database,
                deleted,
                "deleted objects no manifest names (left by an upload or a deletion that did not finish) and superseded manifests"
            );
        }
        Ok(deleted)
    }

    /// Deletes `path` and counts it in `counter`; whether it went. A failure is logged
    /// (`what` names the object) and left to the next sweep.
    async fn delete_counted(
        &self,
        path: &Path,
        counter: &prometheus::IntCounter,
        what: &str,
    ) -> bool {
        match with_retries("delete", || self.store.delete(path)).await {
            Ok(()) => {
                counter.inc();
                true
            }
            Err(e) => {
                tracing::warn!(%path, error = %e, "could not delete {what}; the next sweep tries again");
                false
            }
        }
    }

    /// Deletes manifest generations more than [`MANIFEST_GENERATIONS_KEPT`] below the live one
    /// and written before `cutoff`. Returns how many went.
    async fn sweep_old_manifests(&self, cutoff: u64) -> Result<usize> {
        let live = self.manifest.lock().await.generation;
        let Some(below) = live.checked_sub(MANIFEST_GENERATIONS_KEPT - 1) else {
            return Ok(0);
        };
        let prefix = manifest::manifest_prefix(&self.database);
        let listed: Vec<object_store::ObjectMeta> = with_retries("list manifests", || {
            self.store.list(Some(&prefix)).try_collect()
        })
        .await
        .map_err(store_error)?;
        let mut deleted = 0;
        for meta in listed {
            let modified = u64::try_from(meta.last_modified.timestamp_micros()).unwrap_or(0);
            // Not a generation (nothing of ours), one of the kept ones, or too young: left.
            let Some(generation) = manifest::generation_of(&meta.location) else {
                continue;
            };
            if generation >= below || modified > cutoff {
                continue;
            }
            if self
                .delete_counted(
                    &meta.location,
                    &self.metrics.manifests_deleted,
                    "a superseded manifest",
                )
                .await
            {
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}
