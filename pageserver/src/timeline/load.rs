//! Building a timeline from object storage: the newest manifest, then each layer's metadata
//! (footer, index, bloom filter, commit times; blocks are read on demand).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use object_store::ObjectStore;
use tokio::sync::{Mutex, Notify, watch};

use ferrisdb_common::{Error, Result};
use ferrisdb_server_common::commit_times::CommitTimes;

use super::{LayerMap, Timeline, TimelineOptions};
use crate::block_cache::BlockCache;
use crate::format::delta::DeltaLayer;
use crate::format::manifest::{self, LayerKind};
use crate::metrics::Metrics;

impl Timeline {
    /// Rebuilds a database's state from object storage with a private in-memory block cache.
    pub async fn load(
        database: &str,
        store: Arc<dyn ObjectStore>,
        metrics: Metrics,
    ) -> Result<Timeline> {
        Timeline::load_with_cache(
            database,
            store,
            metrics,
            Arc::new(BlockCache::in_memory(64 << 20)),
        )
        .await
    }

    /// Rebuilds a database's state from object storage: the newest manifest and its layers'
    /// metadata, reading blocks through `cache`.
    pub async fn load_with_cache(
        database: &str,
        store: Arc<dyn ObjectStore>,
        metrics: Metrics,
        cache: Arc<BlockCache>,
    ) -> Result<Timeline> {
        Timeline::load_with_options(database, store, metrics, cache, TimelineOptions::default())
            .await
    }

    /// Like [`Timeline::load_with_cache`], with retention and compaction settings.
    pub async fn load_with_options(
        database: &str,
        store: Arc<dyn ObjectStore>,
        metrics: Metrics,
        cache: Arc<BlockCache>,
        options: TimelineOptions,
    ) -> Result<Timeline> {
        Timeline::load_with_ancestor(database, store, metrics, cache, options, None).await
    }

    /// Like [`Timeline::load_with_options`], for a database that may be a branch: `ancestor`
    /// must be the parent its manifest names, already loaded.
    pub async fn load_with_ancestor(
        database: &str,
        store: Arc<dyn ObjectStore>,
        metrics: Metrics,
        cache: Arc<BlockCache>,
        options: TimelineOptions,
        ancestor: Option<Arc<Timeline>>,
    ) -> Result<Timeline> {
        let manifest = manifest::load_latest(&store, database).await?;
        let ancestor = match (&manifest.ancestor, ancestor) {
            (None, None) => None,
            (Some(point), Some(parent)) if parent.database == point.database => {
                Some((parent, point.version))
            }
            (point, _) => {
                return Err(Error::internal(format!(
                    "database {database}: manifest names ancestor {point:?}, which was not loaded"
                )));
            }
        };
        let mut layers = Vec::with_capacity(manifest.layers.len());
        let mut times = CommitTimes::default();
        let mut expect_start = None;
        let mut group = None;
        for entry in &manifest.layers {
            // Delta layers chain without gaps (GC removes only a prefix), the partitions of one
            // L1 run sharing its versions; images stand apart.
            let same_run = entry.keys.is_some() && group == Some((entry.start, entry.end));
            if entry.kind == LayerKind::Delta
                && !same_run
                && let Some(s) = expect_start
                && entry.start != s
            {
                return Err(Error::corruption(format!(
                    "manifest {} of {database}: layer {} does not follow the one before",
                    manifest.generation, entry.name
                )));
            }
            if entry.kind == LayerKind::Delta {
                expect_start = Some(entry.end);
                group = entry.keys.as_ref().map(|_| (entry.start, entry.end));
            }
            let keys = entry.keys.as_ref().map(|k| k.decode()).transpose()?;
            let path = manifest::layer_path(database, &entry.name);
            // Only the footer, index, bloom filter and times are read now; blocks on demand.
            let layer = DeltaLayer::open(
                store.clone(),
                path.clone(),
                entry.name.clone(),
                entry.size,
                cache.clone(),
            )
            .await
            .map_err(|e| Error::new(e.kind(), format!("{path}: {}", e.message())))?
            .with_image(entry.kind == LayerKind::Image)
            .with_keys(keys);
            for (v, t) in &layer.times {
                times.push(*v, *t);
            }
            layers.push(Arc::new(layer));
        }
        let durable = manifest.remote_consistent_version;
        let applied_term = (manifest.remote_consistent_term != 0)
            .then_some((durable, manifest.remote_consistent_term));
        let gc_horizon = manifest.gc_horizon.0;
        tracing::info!(
            database,
            generation = manifest.generation,
            layers = layers.len(),
            remote_consistent_version = %durable,
            "loaded manifest"
        );
        metrics
            .layers
            .with_label_values(&[database])
            .set(layers.len() as i64);
        metrics
            .remote_consistent_version
            .with_label_values(&[database])
            .set(durable.0 as i64);
        metrics
            .ingested_version
            .with_label_values(&[database])
            .set(durable.0 as i64);
        Ok(Timeline {
            database: database.to_string(),
            store,
            layers: RwLock::new(LayerMap {
                layers,
                segments: manifest.segments.clone(),
                ..LayerMap::default()
            }),
            times: RwLock::new(times),
            ingested: watch::channel(durable).0,
            remote_consistent: watch::channel(durable).0,
            generation: AtomicU64::new(manifest.generation),
            manifest: Mutex::new(manifest),
            writer: format!("{:016x}", rand::random::<u64>()),
            cache,
            gc_horizon: AtomicU64::new(gc_horizon),
            ancestor,
            options,
            metrics,
            oversized: Notify::new(),
            ingest_paused: std::sync::atomic::AtomicBool::new(false),
            budget_asked_at: AtomicU64::new(u64::MAX),
            image_skipped: Default::default(),
            last_orphan_sweep: AtomicU64::new(0),
            layers_dropped: AtomicU64::new(0),
            clock_ahead: Default::default(),
            applied_term: std::sync::Mutex::new(applied_term),
        })
    }

    /// The parent a branch's manifest names, if any (read before loading, to load parents
    /// first).
    pub async fn ancestor_of(
        store: &Arc<dyn ObjectStore>,
        database: &str,
    ) -> Result<Option<manifest::BranchPoint>> {
        Ok(manifest::load_latest(store, database).await?.ancestor)
    }
}
