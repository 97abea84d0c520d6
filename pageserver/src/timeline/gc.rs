//! Garbage collection: raising the retention horizon and deleting the layers and cold
//! segments only reads below it needed.

use ferrisdb_common::{Error, Result, Version};
use ferrisdb_server_common::objstore::with_retries;
use object_store::ObjectStoreExt;

use super::Timeline;
use crate::format::manifest::{self, LayerEntry, LayerKind};

impl Timeline {
    /// Raises the retention horizon to the newest version committed before
    /// `now - pitr_interval` (never above what object storage holds), and deletes what only
    /// reads below it needed: delta layers and older images covered by an image at or below the
    /// horizon, and cold segments entirely below it. The manifest that stops naming them is
    /// written first; an interrupted GC leaves only unnamed objects behind.
    ///
    /// "Now" is this pageserver's clock less how far it runs ahead of the computes' (see
    /// [`super::clock_ahead`]): the window is theirs, counted in their commit times.
    pub async fn collect_garbage(&self) -> Result<()> {
        let ahead = self.clock_ahead.micros();
        if let Some(ahead) = self
            .clock_ahead
            .warning_due(self.options.clock.now_micros())
        {
            tracing::warn!(
                database = %self.database,
                ahead_secs = ahead / 1_000_000,
                "this pageserver's clock runs ahead of the computes' commit times; GC counts the retention window by theirs (check NTP)"
            );
        }
        let now = self.options.clock.now_micros().saturating_sub(ahead);
        let cutoff = now.saturating_sub(
            u64::try_from(self.options.pitr_interval.as_micros()).unwrap_or(u64::MAX),
        );
        let Some(horizon) = self
            .times
            .read()
            .map_err(|_| Error::internal("commit times lock poisoned"))?
            .version_at(cutoff)
        else {
            return Ok(());
        };
        let mut manifest = self.manifest.lock().await;
        // Never above a branch point: branches read this database there.
        let branched = manifest.branches.iter().map(|b| b.version).min();
        let horizon = horizon
            .min(manifest.remote_consistent_version)
            .min(branched.unwrap_or(Version::MAX));
        if horizon <= manifest.gc_horizon {
            return Ok(());
        }
        let image = manifest
            .layers
            .iter()
            .filter(|e| e.kind == LayerKind::Image && e.end <= horizon)
            .map(|e| e.end)
            .max();
        let doomed = |e: &LayerEntry| match (image, e.kind) {
            // A delta ending at the horizon holds the changes made at it, which history from
            // the horizon still returns.
            (Some(i), LayerKind::Delta) => e.end <= i && e.end < horizon,
            (Some(i), LayerKind::Image) => e.end < i,
            (None, _) => false,
        };
        let doomed_layers: Vec<String> = manifest
            .layers
            .iter()
            .filter(|e| doomed(e))
            .map(|e| e.name.clone())
            .collect();
        let doomed_segments: Vec<String> = manifest
            .segments
            .iter()
            .filter(|s| s.last < horizon)
            .map(|s| s.name.clone())
            .collect();
        let mut next = manifest.clone();
        next.generation += 1;
        next.writer = self.writer.clone();
        next.gc_horizon = horizon;
        next.layers.retain(|e| !doomed(e));
        next.segments.retain(|s| s.last >= horizon);
        // Refuse reads below the horizon from now on, before anything they need can go.
        self.gc_horizon
            .fetch_max(horizon.0, std::sync::atomic::Ordering::SeqCst);
        manifest::store_next(&self.store, &next).await?;
        {
            let mut map = self.write_map()?;
            map.layers
                .retain(|l| !doomed_layers.iter().any(|d| d == l.name()));
            self.layers_dropped
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            map.segments = next.segments.clone();
        }
        self.metrics
            .layers
            .with_label_values(&[&self.database])
            .set(next.layers.len() as i64);
        self.replace_manifest(&mut manifest, next);
        drop(manifest);
        for name in &doomed_layers {
            let path = manifest::layer_path(&self.database, name);
            if let Err(e) = with_retries("delete layer", || self.store.delete(&path)).await {
                tracing::warn!(%path, error = %e, "could not delete a collected layer; it is no longer named");
            }
        }
        for name in &doomed_segments {
            let path = manifest::segment_path(&self.database, name);
            if let Err(e) = with_retries("delete segment", || self.store.delete(&path)).await {
                tracing::warn!(%path, error = %e, "could not delete a collected segment; it is no longer named");
            }
        }
        tracing::info!(
            database = %self.database,
            %horizon,
            layers = doomed_layers.len(),
            segments = doomed_segments.len(),
            "garbage collected"
        );
        Ok(())
    }
}
