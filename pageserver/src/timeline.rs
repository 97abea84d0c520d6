//! One database on the pageserver: the in-memory layer fed by the WAL, the delta layers in
//! object storage, reads at a version, and checkpoints.
//!
//! Reads search newest-first: the open in-memory layer, the frozen one being uploaded, then the
//! delta layers from newest to oldest. The first source that holds any entry of the key at or
//! below the read version answers, because layers cover disjoint version ranges.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::{Mutex, watch};

use ferrisdb_common::wal::WalRecord;
use ferrisdb_common::{Error, ErrorKind, Result, Version};
use ferrisdb_server_common::commit_times::CommitTimes;
use ferrisdb_server_common::objstore::{store_error, with_retries};

use crate::block_cache::BlockCache;
use crate::cold_segment;
use crate::compaction;
use crate::delta_layer::{self, DeltaLayer};
use crate::manifest::{self, LayerEntry, LayerKind, Manifest, SegmentEntry};
use crate::metrics::Metrics;
use ferrisdb_server_common::clock::{Clock, SystemClock};
use ferrisdb_server_common::versioned_map::{Lookup, RangeTombstones, VersionedMap};

/// A key's newest entry in one source: key, version, value (`None`: cleared).
type Row = (Bytes, Version, Option<Bytes>);

/// One source's part of a range read: its newest entry per key and its range tombstones over
/// the range.
type SourceRows = (Vec<Row>, RangeTombstones);

/// Merges sources holding disjoint versions into each key's visible entry at `version`, in key
/// order: the newest point entry, unless a newer range tombstone from any source hides it.
fn visible(
    sources: Vec<SourceRows>,
    version: Version,
) -> std::collections::BTreeMap<Bytes, (Version, Option<Bytes>)> {
    let mut tombstones = RangeTombstones::default();
    let mut merged: std::collections::BTreeMap<Bytes, (Version, Option<Bytes>)> =
        Default::default();
    for (rows, ts) in sources {
        tombstones.extend(ts);
        for (k, v, val) in rows {
            if merged.get(&k).is_none_or(|(b, _)| v > *b) {
                merged.insert(k, (v, val));
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

/// Retention and compaction settings of a timeline.
#[derive(Clone)]
pub struct TimelineOptions {
    /// Reads may go this far back in time; GC may remove what only older reads need.
    pub pitr_interval: Duration,
    /// An image layer is written once this many delta layers lie above the newest image.
    pub image_after_deltas: usize,
    /// L0 delta layers are merged into key-partitioned L1 layers once this many exist.
    pub compact_after_deltas: usize,
    /// Uncompressed size of one L1 layer's partition.
    pub l1_target_bytes: usize,
    /// Where "now" comes from, for the retention horizon.
    pub clock: Arc<dyn Clock>,
}

impl Default for TimelineOptions {
    fn default() -> TimelineOptions {
        TimelineOptions {
            pitr_interval: Duration::from_secs(7 * 24 * 3600),
            image_after_deltas: 16,
            compact_after_deltas: 8,
            l1_target_bytes: 8 << 20,
            clock: Arc::new(SystemClock),
        }
    }
}

impl TimelineOptions {
    /// Options that never collect anything (tools and tests that replay history with
    /// synthetic commit times).
    pub fn keep_everything() -> TimelineOptions {
        TimelineOptions {
            pitr_interval: Duration::MAX,
            ..TimelineOptions::default()
        }
    }
}

impl std::fmt::Debug for TimelineOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimelineOptions")
            .field("pitr_interval", &self.pitr_interval)
            .field("image_after_deltas", &self.image_after_deltas)
            .field("compact_after_deltas", &self.compact_after_deltas)
            .finish()
    }
}

/// Larger than every valid key (keys are at most 10,000 bytes): the end of a whole-keyspace scan.
fn keyspace_end() -> Vec<u8> {
    vec![0xFF; ferrisdb_common::limits::MAX_KEY_SIZE + 1]
}

/// How long a read waits for its version to be ingested before answering `future_version`.
pub const READ_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct LayerMap {
    open: VersionedMap,
    frozen: Option<Arc<VersionedMap>>,
    /// Oldest first.
    layers: Vec<Arc<DeltaLayer>>,
    /// The committed records behind `open` and `frozen`, in commit order: they become the
    /// next cold segment, and serve the change feed until then.
    open_records: Vec<WalRecord>,
    frozen_records: Vec<WalRecord>,
    /// Cold segments in the bucket, oldest first.
    segments: Vec<SegmentEntry>,
}

/// A database's pageserver state.
#[derive(Debug)]
pub struct Timeline {
    database: String,
    store: Arc<dyn ObjectStore>,
    layers: RwLock<LayerMap>,
    /// Commit time of every version held (layers and memory).
    times: RwLock<CommitTimes>,
    ingested: watch::Sender<Version>,
    remote_consistent: watch::Sender<Version>,
    /// The live manifest; holding it is the checkpoint lock.
    manifest: Mutex<Manifest>,
    /// This instance's identity in the manifests it writes.
    writer: String,
    cache: Arc<BlockCache>,
    options: TimelineOptions,
    /// Reads below this are refused; mirrors the manifest's `gc_horizon`.
    gc_horizon: std::sync::atomic::AtomicU64,
    /// For a branch: the parent's timeline and the branch point. The parent answers whatever
    /// this timeline's own layers do not (see [`Timeline::create_branch`]).
    ancestor: Option<(Arc<Timeline>, Version)>,
    metrics: Metrics,
}

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
            .as_image(entry.kind == LayerKind::Image)
            .with_keys(keys);
            for (v, t) in &layer.times {
                times.push(*v, *t);
            }
            layers.push(Arc::new(layer));
        }
        let durable = manifest.remote_consistent_version;
        let gc_horizon = manifest.gc_horizon.0;
        tracing::info!(
            database,
            generation = manifest.generation,
            layers = layers.len(),
            remote_consistent_version = %durable,
            "loaded manifest"
        );
        metrics.layers.set(layers.len() as i64);
        metrics.remote_consistent_version.set(durable.0 as i64);
        metrics.ingested_version.set(durable.0 as i64);
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
            manifest: Mutex::new(manifest),
            writer: format!("{:016x}", rand::random::<u64>()),
            cache,
            gc_horizon: std::sync::atomic::AtomicU64::new(gc_horizon),
            ancestor,
            options,
            metrics,
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

    /// The branch point, for a branch.
    pub fn ancestor(&self) -> Option<(String, Version)> {
        self.ancestor
            .as_ref()
            .map(|(t, v)| (t.database.clone(), *v))
    }

    /// Makes `name` a branch of `parent` at version `at`, by metadata only: `parent`'s
    /// manifest records the branch (so its GC keeps what the branch reads), then the branch's
    /// first manifest names the parent and makes `at` its durable version, so its WAL starts
    /// there. Fails with `invalid_argument` if `name` exists, and `version_too_old` or
    /// `future_version` if `at` is outside what the parent holds.
    pub async fn create_branch(parent: &Timeline, name: &str, at: Version) -> Result<()> {
        let existing = manifest::load_latest(&parent.store, name).await?;
        if existing.generation > 0 {
            return Err(Error::invalid(format!(
                "database {} already exists",
                ferrisdb_common::error::echo(name)
            )));
        }
        parent.check_retained(at)?;
        if at > parent.ingested_version() {
            return Err(Error::new(
                ErrorKind::FutureVersion,
                format!(
                    "cannot branch {} at {at}: only {} is ingested",
                    parent.database,
                    parent.ingested_version()
                ),
            ));
        }
        {
            let mut m = parent.manifest.lock().await;
            // Checked again under the manifest lock: GC raises the horizon under it.
            parent.check_retained(at)?;
            let mut next = m.clone();
            next.generation += 1;
            next.writer = parent.writer.clone();
            next.branches.push(manifest::BranchPoint {
                database: name.to_string(),
                version: at,
            });
            manifest::store_next(&parent.store, &next).await?;
            *m = next;
        }
        let mut first = Manifest::empty(name);
        first.generation = 1;
        first.remote_consistent_version = at;
        first.writer = parent.writer.clone();
        first.ancestor = Some(manifest::BranchPoint {
            database: parent.database.clone(),
            version: at,
        });
        manifest::store_next(&parent.store, &first)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::Fenced => Error::invalid(format!(
                    "database {} already exists",
                    ferrisdb_common::error::echo(name)
                )),
                _ => e,
            })?;
        tracing::info!(parent = %parent.database, branch = name, version = %at, "branch created");
        Ok(())
    }

    /// The parent a range read at `version` also needs: none when an image of this timeline
    /// already answers for everything below it.
    fn ancestor_below(
        &self,
        layers: &[Arc<DeltaLayer>],
        version: Version,
    ) -> Option<(&Arc<Timeline>, Version)> {
        let imaged = Self::layers_for(layers, version)
            .first()
            .is_some_and(|l| l.image);
        if imaged {
            None
        } else {
            self.ancestor_at(version)
        }
    }

    /// The parent's live rows as the oldest source of a merge: each at the branch point, which
    /// is below every version of the branch's own.
    fn parent_rows(rows: Vec<(Bytes, Bytes)>, at: Version) -> SourceRows {
        let rows = rows.into_iter().map(|(k, v)| (k, at, Some(v))).collect();
        (rows, RangeTombstones::default())
    }

    /// Where a read at `version` goes in the parent: the branch point or below.
    fn ancestor_at(&self, version: Version) -> Option<(&Arc<Timeline>, Version)> {
        self.ancestor
            .as_ref()
            .map(|(t, point)| (t, version.min(*point)))
    }

    /// The database's name.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Every commit up to here is applied.
    pub fn ingested_version(&self) -> Version {
        *self.ingested.borrow()
    }

    /// Every commit up to here is in object storage.
    pub fn remote_consistent_version(&self) -> Version {
        *self.remote_consistent.borrow()
    }

    /// A receiver that changes whenever the remote consistent version does.
    pub fn watch_remote_consistent(&self) -> watch::Receiver<Version> {
        self.remote_consistent.subscribe()
    }

    /// Applies committed records, which must continue exactly where ingestion stands.
    pub fn apply(&self, records: &[WalRecord]) -> Result<()> {
        let Some(last) = records.last() else {
            return Ok(());
        };
        {
            let mut map = self
                .layers
                .write()
                .map_err(|_| Error::internal("layer map lock poisoned"))?;
            let mut at = self.ingested_version();
            for r in records {
                if r.version <= at {
                    return Err(Error::internal(format!(
                        "record at version {} does not follow ingested {at}",
                        r.version
                    )));
                }
                for m in &r.mutations {
                    map.open.apply(r.version, m);
                }
                at = r.version;
            }
            map.open_records.extend(records.iter().cloned());
            // Under the layer-map lock, so a reader never sees a version without its time.
            let mut times = self
                .times
                .write()
                .map_err(|_| Error::internal("commit times lock poisoned"))?;
            for r in records {
                times.push(r.version, r.commit_time_micros);
            }
        }
        self.ingested.send_replace(last.version);
        self.metrics.ingested_version.set(last.version.0 as i64);
        self.metrics.ingested_records.inc_by(records.len() as u64);
        Ok(())
    }

    /// Waits until `version` is ingested, up to `timeout`.
    pub async fn wait_ingested(&self, version: Version, timeout: Duration) -> Result<()> {
        let mut rx = self.ingested.subscribe();
        let wait = rx.wait_for(|v| *v >= version);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::new(
                ErrorKind::FutureVersion,
                format!(
                    "version {version} of {} is not ingested after {timeout:?} (ingested {})",
                    self.database,
                    self.ingested_version()
                ),
            )),
        }
    }

    /// Takes what a read needs under the layer-map lock — the in-memory layers' answer via
    /// `memory` and the delta layers as they stand — so the delta layers (immutable, read with
    /// async I/O) are queried after the lock is released, yet from the same consistent view.
    fn snapshot<T>(
        &self,
        memory: impl FnOnce(&[&VersionedMap]) -> T,
    ) -> Result<(T, Vec<Arc<DeltaLayer>>)> {
        let map = self
            .layers
            .read()
            .map_err(|_| Error::internal("layer map lock poisoned"))?;
        let mems: Vec<&VersionedMap> = std::iter::once(&map.open)
            .chain(map.frozen.as_deref())
            .collect();
        Ok((memory(&mems), map.layers.clone()))
    }

    /// Refuses versions below the GC horizon: what they need may be gone.
    fn check_retained(&self, version: Version) -> Result<()> {
        let horizon = self.gc_horizon.load(std::sync::atomic::Ordering::SeqCst);
        if version.0 < horizon {
            return Err(Error::new(
                ErrorKind::VersionTooOld,
                format!(
                    "version {version} of {} is below the retention horizon {horizon}",
                    self.database
                ),
            ));
        }
        Ok(())
    }

    /// The layers a read at `version` consults, oldest first: the newest image at or below it
    /// (if any) and the delta layers above that image holding versions at or below it.
    fn layers_for(layers: &[Arc<DeltaLayer>], version: Version) -> Vec<Arc<DeltaLayer>> {
        let image = layers.iter().rposition(|l| l.image && l.end <= version);
        let base = image.map_or(Version::ZERO, |i| layers[i].end);
        image
            .map(|i| layers[i].clone())
            .into_iter()
            .chain(
                layers
                    .iter()
                    .filter(|l| !l.image && l.end > base && l.start < version)
                    .cloned(),
            )
            .collect()
    }

    /// The value of `key` at `version` (waiting for it to be ingested).
    pub async fn get(&self, key: &[u8], version: Version) -> Result<Option<Bytes>> {
        self.check_retained(version)?;
        self.wait_ingested(version, READ_WAIT).await?;
        self.metrics.reads.inc();
        self.get_unchecked(key, version).await
    }

    /// [`Timeline::get`] for a version known to be retained and ingested.
    async fn get_unchecked(&self, key: &[u8], version: Version) -> Result<Option<Bytes>> {
        let ((found, in_memory), layers) = self.snapshot(|mems| {
            let hit = mems
                .iter()
                .position(|m| m.get(key, version) != Lookup::Absent);
            (
                hit.map(|i| mems[i].get(key, version)),
                hit.map_or(mems.len(), |i| i + 1),
            )
        })?;
        let mut consulted = in_memory;
        let answer = async {
            if let Some(Lookup::Found(v)) = found {
                return Ok(v);
            }
            // Newest first: layers cover disjoint version ranges, and an image answers for
            // every version below it.
            for layer in Self::layers_for(&layers, version)
                .iter()
                .rev()
                .filter(|l| l.covers_key(key))
            {
                consulted += 1;
                match layer.get(key, version).await? {
                    Lookup::Found(v) => return Ok(v),
                    Lookup::Absent if layer.image => return Ok(None),
                    Lookup::Absent => {}
                }
            }
            // Nothing here: the key is as the parent had it at the branch point.
            match self.ancestor_at(version) {
                Some((parent, at)) => Box::pin(parent.get(key, at)).await,
                None => Ok(None),
            }
        }
        .await;
        self.metrics.read_layers.observe(consulted as f64);
        answer
    }

    /// Each layer's part of a range read of `[begin, end)` at `version` (not the in-memory
    /// layers').
    async fn layers_range(
        layers: &[Arc<DeltaLayer>],
        begin: &[u8],
        end: &[u8],
        version: Version,
    ) -> Result<Vec<SourceRows>> {
        let mut sources = Vec::new();
        for layer in Self::layers_for(layers, version)
            .into_iter()
            .filter(|l| l.overlaps_keys(begin, end))
        {
            sources.push((
                layer.latest_in_range(begin, end, version).await?,
                layer.range_tombstones().overlapping(begin, end, version),
            ));
        }
        Ok(sources)
    }

    /// The in-memory layers' parts of a range read.
    fn memory_range(
        mems: &[&VersionedMap],
        begin: &[u8],
        end: &[u8],
        version: Version,
    ) -> Vec<SourceRows> {
        mems.iter()
            .map(|m| {
                let rows = m
                    .latest_in_range(begin, end, version)
                    .map(|(k, v, val)| (k.clone(), v, val.clone()))
                    .collect();
                (rows, m.range_tombstones().overlapping(begin, end, version))
            })
            .collect()
    }

    /// Up to `limit` (0: all) key-value pairs of `[begin, end)` at `version`, in key order or
    /// reversed; the flag says whether the limit cut the range short.
    pub async fn get_range(
        &self,
        begin: &[u8],
        end: &[u8],
        version: Version,
        limit: usize,
        reverse: bool,
    ) -> Result<(Vec<(Bytes, Bytes)>, bool)> {
        self.check_retained(version)?;
        self.wait_ingested(version, READ_WAIT).await?;
        self.metrics.reads.inc();
        if limit > 0 {
            return self
                .scan_windowed(begin, end, version, limit, reverse)
                .await;
        }
        let (mut sources, layers) =
            self.snapshot(|mems| Self::memory_range(mems, begin, end, version))?;
        sources.extend(Self::layers_range(&layers, begin, end, version).await?);
        if let Some((parent, at)) = self.ancestor_below(&layers, version) {
            let (rows, _) = Box::pin(parent.get_range(begin, end, at, 0, false)).await?;
            sources.push(Self::parent_rows(rows, at));
        }
        let live = visible(sources, version)
            .into_iter()
            .filter_map(|(k, (_, v))| v.map(|v| (k, v)));
        Ok(ferrisdb_server_common::versioned_map::take_limited(
            live, limit, reverse,
        ))
    }

    /// A limited range read that touches only about as much as it returns: each source (the
    /// in-memory layers and the layers a read at `version` needs) yields its first `want` keys
    /// from the cursor in scan order; results are final up to the nearest point where a source
    /// was cut short, and the next window starts after it.
    async fn scan_windowed(
        &self,
        begin: &[u8],
        end: &[u8],
        version: Version,
        limit: usize,
        reverse: bool,
    ) -> Result<(Vec<(Bytes, Bytes)>, bool)> {
        let (mut lo, mut hi) = (Bytes::copy_from_slice(begin), Bytes::copy_from_slice(end));
        let mut out: Vec<(Bytes, Bytes)> = Vec::new();
        loop {
            // Ask for more than needed: tombstones and overwritten keys fall out in the merge.
            let want = (limit - out.len()) * 2 + 16;
            let (memory, layers) = self.snapshot(|mems| {
                mems.iter()
                    .map(|m| {
                        let it = m
                            .latest_in_range(&lo, &hi, version)
                            .map(|(k, v, val)| (k.clone(), v, val.clone()));
                        let rows: Vec<Row> = if reverse {
                            it.rev().take(want + 1).collect()
                        } else {
                            it.take(want + 1).collect()
                        };
                        let cut = rows.len() > want;
                        let tombstones = m.range_tombstones().overlapping(&lo, &hi, version);
                        (
                            rows.into_iter().take(want).collect::<Vec<Row>>(),
                            cut,
                            tombstones,
                        )
                    })
                    .collect::<Vec<_>>()
            })?;
            let mut sources = memory;
            for layer in Self::layers_for(&layers, version)
                .into_iter()
                .filter(|l| l.overlaps_keys(&lo, &hi))
            {
                let (rows, cut) = layer.scan_limited(&lo, &hi, version, want, reverse).await?;
                let tombstones = layer.range_tombstones().overlapping(&lo, &hi, version);
                sources.push((rows, cut, tombstones));
            }
            if let Some((parent, at)) = self.ancestor_below(&layers, version) {
                let (rows, cut) = Box::pin(parent.get_range(&lo, &hi, at, want, reverse)).await?;
                let (rows, tombstones) = Self::parent_rows(rows, at);
                sources.push((rows, cut, tombstones));
            }
            // Everything up to the nearest cut-off is final; past it, a cut source may still
            // hold keys it did not return.
            let frontier: Option<Bytes> = sources
                .iter()
                .filter(|(rows, cut, _)| *cut && !rows.is_empty())
                .filter_map(|(rows, _, _)| rows.last().map(|(k, _, _)| k.clone()))
                .reduce(|a, b| if reverse { a.max(b) } else { a.min(b) });
            let within = |k: &Bytes| {
                frontier
                    .as_ref()
                    .is_none_or(|f| if reverse { k >= f } else { k <= f })
            };
            let windowed = sources
                .into_iter()
                .map(|(rows, _, ts)| {
                    let rows = rows.into_iter().filter(|(k, _, _)| within(k)).collect();
                    (rows, ts)
                })
                .collect();
            let live = visible(windowed, version)
                .into_iter()
                .filter_map(|(k, (_, v))| v.map(|v| (k, v)));
            if reverse {
                out.extend(live.rev());
            } else {
                out.extend(live);
            }
            if out.len() > limit {
                out.truncate(limit);
                return Ok((out, true));
            }
            let Some(f) = frontier else {
                // No source was cut short: the whole remaining range has been read.
                return Ok((out, false));
            };
            if out.len() == limit {
                return Ok((out, true));
            }
            if reverse {
                hi = f;
            } else {
                let mut next = f.to_vec();
                next.push(0);
                lo = Bytes::from(next);
            }
        }
    }

    /// Every version of `key` in `[from, to]` with its commit time, oldest first (waiting for
    /// `to` to be ingested).
    pub async fn history(
        &self,
        key: &[u8],
        from: Version,
        to: Version,
    ) -> Result<Vec<(Version, u64, Option<Bytes>)>> {
        self.check_retained(from)?;
        self.wait_ingested(to, READ_WAIT).await?;
        let ((memory, mut cleared), layers) = self.snapshot(|mems| {
            let points = mems
                .iter()
                .flat_map(|m| {
                    m.versions_of(key, from, to)
                        .map(|(v, val)| (v, val.clone()))
                })
                .collect::<Vec<_>>();
            let cleared = mems
                .iter()
                .flat_map(|m| m.range_tombstones().versions_covering(key, from, to))
                .collect::<Vec<_>>();
            (points, cleared)
        })?;
        let mut entries = memory;
        // Images are copies of entries, not changes: history comes from the deltas.
        for layer in layers
            .iter()
            .filter(|l| !l.image && l.start < to && l.end >= from && l.covers_key(key))
        {
            entries.extend(layer.versions_of(key, from, to).await?);
            cleared.extend(layer.range_tombstones().versions_covering(key, from, to));
        }
        // A range clear is a version of the key only where it removed a value; a point entry
        // at the same version came after it in the batch and stands instead.
        cleared.retain(|c| !entries.iter().any(|(v, _)| v == c));
        cleared.sort();
        cleared.dedup();
        if !cleared.is_empty() {
            entries.sort_by_key(|(v, _)| *v);
            for c in cleared {
                let before = match entries.iter().rev().find(|(v, _)| *v < c) {
                    Some((_, val)) => val.is_some(),
                    None if c.0 > from.0 => {
                        self.get_unchecked(key, Version(c.0 - 1)).await?.is_some()
                    }
                    // The value just below the window is not retained; say it was cleared.
                    None => true,
                };
                if before {
                    entries.push((c, None));
                    entries.sort_by_key(|(v, _)| *v);
                }
            }
        }
        let mut out: Vec<(Version, u64, Option<Bytes>)> = {
            let times = self
                .times
                .read()
                .map_err(|_| Error::internal("commit times lock poisoned"))?;
            entries
                .into_iter()
                .map(|(v, val)| (v, times.time_of(v).unwrap_or(0), val))
                .collect()
        };
        out.sort_by_key(|(v, _, _)| *v);
        out.dedup_by_key(|(v, _, _)| *v);
        // A branch's versions up to its branch point are its parent's.
        if let Some((parent, at)) = self.ancestor_at(to)
            && from <= at
        {
            let mut older = Box::pin(parent.history(key, from, at)).await?;
            older.append(&mut out);
            out = older;
        }
        Ok(out)
    }

    /// The latest ingested version committed at or before `time_micros` (0 when none was).
    pub fn version_at(&self, time_micros: u64) -> Result<Version> {
        let v = self
            .times
            .read()
            .map_err(|_| Error::internal("commit times lock poisoned"))?
            .version_at(time_micros);
        let v = match (v, self.ancestor_at(Version::MAX)) {
            (Some(v), _) => v,
            // Before the branch's first commit: the parent's version then, up to the branch
            // point (a branch holds nothing of the parent's after it).
            (None, Some((parent, at))) => parent.version_at(time_micros)?.min(at),
            (None, None) => Version::ZERO,
        };
        self.check_retained(v)?;
        Ok(v)
    }

    /// Uploads everything ingested (after waiting for `wait_for`) as a delta layer, then a
    /// manifest naming it. Returns the new remote consistent version.
    pub async fn checkpoint(&self, wait_for: Version) -> Result<Version> {
        let end = self.upload(wait_for).await?;
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
        self.collect_garbage().await
    }

    /// Uploads a layer object just encoded, parsing it first (a malformed layer never reaches
    /// the bucket); returns it opened, and its size.
    async fn put_layer(&self, name: &str, body: Bytes) -> Result<(DeltaLayer, u64)> {
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

    /// Merges the L0 delta layers into key-partitioned L1 layers once there are
    /// [`TimelineOptions::compact_after_deltas`] of them: the L1 layers are uploaded, then a
    /// manifest naming them instead of the L0 layers, then the L0 objects are deleted.
    async fn compact_if_many(&self) -> Result<()> {
        let mut manifest = self.manifest.lock().await;
        let layers = self
            .layers
            .read()
            .map_err(|_| Error::internal("layer map lock poisoned"))?
            .layers
            .clone();
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
        let partitions = compaction::merge_run(&run, self.options.l1_target_bytes).await?;
        let times: Vec<(Version, u64)> = run.iter().flat_map(|l| l.times.clone()).collect();
        let mut entries = Vec::with_capacity(partitions.len());
        let mut opened = Vec::with_capacity(partitions.len());
        for (i, p) in partitions.iter().enumerate() {
            let name = compaction::l1_name(start, end, i);
            // Commit times once per run, in its first partition.
            let body = delta_layer::encode(start, end, &p.data, if i == 0 { &times } else { &[] });
            let (layer, size) = self.put_layer(&name, body).await?;
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
            let mut map = self
                .layers
                .write()
                .map_err(|_| Error::internal("layer map lock poisoned"))?;
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
        tracing::info!(database = %self.database, l0 = doomed.len(), l1 = partitions.len(), %start, %end, "compacted L0 into L1");
        Ok(())
    }

    /// An image of every live key at the durable version, once [`TimelineOptions::image_after_deltas`]
    /// delta layers lie above the newest image: reads at or above it then stop there.
    async fn write_image_if_deep(&self) -> Result<()> {
        let mut manifest = self.manifest.lock().await;
        let layers = self
            .layers
            .read()
            .map_err(|_| Error::internal("layer map lock poisoned"))?
            .layers
            .clone();
        let above = layers.iter().rposition(|l| l.image).map_or(0, |i| i + 1);
        // An L1 run's partitions count once: a read opens one of them.
        let runs: std::collections::BTreeSet<(Version, Version)> = layers[above..]
            .iter()
            .filter(|l| !l.image)
            .map(|l| (l.start, l.end))
            .collect();
        if runs.len() < self.options.image_after_deltas.max(1) {
            return Ok(());
        }
        let at = manifest.remote_consistent_version;
        let mut data = VersionedMap::default();
        let mut sources = Self::layers_range(&layers, b"", &keyspace_end(), at).await?;
        // A branch's image holds what it inherited too: reads stop at the image.
        if let Some((parent, point)) = self.ancestor_below(&layers, at) {
            let (rows, _) =
                Box::pin(parent.get_range(b"", &keyspace_end(), point, 0, false)).await?;
            sources.push(Self::parent_rows(rows, point));
        }
        for (k, (v, val)) in visible(sources, at) {
            if let Some(val) = val {
                data.insert(k, v, Some(val));
            }
        }
        let name = format!("{:016X}.image", at.0);
        let body = delta_layer::encode(at, at, &data, &[]);
        let (layer, size) = self.put_layer(&name, body).await?;
        let layer = layer.as_image(true);
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
        self.layers
            .write()
            .map_err(|_| Error::internal("layer map lock poisoned"))?
            .layers
            .push(Arc::new(layer));
        self.metrics.layers.set(next.layers.len() as i64);
        *manifest = next;
        tracing::info!(database = %self.database, version = %at, keys = data.len(), "image layer written");
        Ok(())
    }

    /// Raises the retention horizon to the newest version committed before
    /// `now - pitr_interval` (never above what object storage holds), and deletes what only
    /// reads below it needed: delta layers and older images covered by an image at or below the
    /// horizon, and cold segments entirely below it. The manifest that stops naming them is
    /// written first; an interrupted GC leaves only unnamed objects behind.
    async fn collect_garbage(&self) -> Result<()> {
        let cutoff = self.options.clock.now_micros().saturating_sub(
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
            let mut map = self
                .layers
                .write()
                .map_err(|_| Error::internal("layer map lock poisoned"))?;
            map.layers
                .retain(|l| !doomed_layers.iter().any(|d| d == l.name()));
            map.segments = next.segments.clone();
        }
        self.metrics.layers.set(next.layers.len() as i64);
        *manifest = next;
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

    /// Uploads everything ingested (after waiting for `wait_for`); see [`Timeline::checkpoint`].
    async fn upload(&self, wait_for: Version) -> Result<Version> {
        self.wait_ingested(wait_for, Duration::from_secs(10))
            .await?;
        let mut manifest = self.manifest.lock().await;
        let start = manifest.remote_consistent_version;
        // Freeze: new WAL goes to a fresh open layer while this one uploads.
        let (frozen, end) = {
            let mut map = self
                .layers
                .write()
                .map_err(|_| Error::internal("layer map lock poisoned"))?;
            let end = self.ingested_version();
            let frozen = Arc::new(std::mem::take(&mut map.open));
            map.frozen = Some(frozen.clone());
            map.frozen_records = std::mem::take(&mut map.open_records);
            (frozen, end)
        };
        if end <= start {
            self.unfreeze(frozen, None)?;
            return Ok(start);
        }
        let mut next = manifest.clone();
        next.generation += 1;
        next.remote_consistent_version = end;
        next.writer = self.writer.clone();
        let mut new_layer = None;
        if !frozen.is_empty() {
            let name = delta_layer::layer_name(start, end);
            let times: Vec<(Version, u64)> = self
                .times
                .read()
                .map_err(|_| Error::internal("commit times lock poisoned"))?
                .range(start, end)
                .to_vec();
            let body = delta_layer::encode(start, end, &frozen, &times);
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
                    self.unfreeze(frozen, None)?;
                    return Err(e);
                }
            };
            // The layer is in the bucket before any manifest names it.
            let payload = PutPayload::from(body);
            let put = with_retries("put layer", || self.store.put(&path, payload.clone())).await;
            if let Err(e) = put {
                self.unfreeze(frozen, None)?;
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
        let records = self
            .layers
            .read()
            .map_err(|_| Error::internal("layer map lock poisoned"))?
            .frozen_records
            .clone();
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
                    self.unfreeze(frozen, None)?;
                    return Err(e);
                }
            }
        }
        if let Err(e) = manifest::store_next(&self.store, &next).await {
            self.unfreeze(frozen, None)?;
            return Err(e);
        }
        self.unfreeze(frozen, new_layer)?;
        if let Ok(mut map) = self.layers.write() {
            map.segments = next.segments.clone();
        }
        *manifest = next;
        self.remote_consistent.send_replace(end);
        self.metrics.remote_consistent_version.set(end.0 as i64);
        self.metrics.checkpoints.inc();
        self.metrics.layers.set(manifest.layers.len() as i64);
        tracing::info!(database = %self.database, generation = manifest.generation, %end, "checkpoint uploaded");
        Ok(end)
    }

    /// Ends a freeze: the frozen data becomes `layer` if it was uploaded, or goes back into
    /// the open layer if not (nothing is lost when an upload fails).
    fn unfreeze(&self, frozen: Arc<VersionedMap>, layer: Option<Arc<DeltaLayer>>) -> Result<()> {
        let mut map = self
            .layers
            .write()
            .map_err(|_| Error::internal("layer map lock poisoned"))?;
        map.frozen = None;
        let frozen_records = std::mem::take(&mut map.frozen_records);
        match layer {
            Some(l) => map.layers.push(l),
            None => {
                // Not uploaded: the records go back in front of what arrived meanwhile.
                let newer = std::mem::replace(&mut map.open_records, frozen_records);
                map.open_records.extend(newer);
                let newer = std::mem::take(&mut map.open);
                let mut restored = (*frozen).clone();
                restored.absorb(&newer);
                map.open = restored;
            }
        }
        Ok(())
    }

    /// Bytes held in the open in-memory layer.
    pub fn open_layer_bytes(&self) -> usize {
        self.layers.read().map_or(0, |m| m.open.approximate_bytes())
    }

    /// Every committed record with a version above `after`, in commit order, read batch by
    /// batch with [`Timeline::records_batch`]. Memory grows with the whole answer: for tests
    /// and short stretches; the change feed streams batches instead.
    #[cfg(test)]
    pub async fn records_since(&self, after: Version) -> Result<Vec<WalRecord>> {
        let mut out: Vec<WalRecord> = Vec::new();
        let mut from = after;
        loop {
            let batch = self.records_batch(from, 3).await?;
            let Some(last) = batch.last() else {
                return Ok(out);
            };
            from = last.version;
            out.extend(batch);
        }
    }

    /// The next committed records with a version above `after`, in commit order, in memory
    /// bounded whatever `after` is: the records of the oldest cold segment holding any (what
    /// was checkpointed; one segment's worth, decoded alone), or else at most `limit` from
    /// memory (what was not). Empty once `after` is the latest ingested version. Call again
    /// from the last version returned for the rest. Refuses with `version_too_old` when the
    /// records just above `after` are no longer kept.
    pub async fn records_batch(&self, after: Version, limit: usize) -> Result<Vec<WalRecord>> {
        let limit = limit.max(1);
        // A branch's log up to its branch point is its parent's.
        if let Some((parent, at)) = self.ancestor_at(Version::MAX)
            && after < at
        {
            let older: Vec<WalRecord> = Box::pin(parent.records_batch(after, limit))
                .await?
                .into_iter()
                .filter(|r| r.version <= at)
                .collect();
            // Nothing of the parent's in (after, at]: the branch's own log goes on from `at`.
            if !older.is_empty() {
                return Ok(older);
            }
            return Box::pin(self.records_batch(at, limit)).await;
        }
        self.check_retained(Version(after.0.saturating_add(1)))?;
        let (segment, mut records) = {
            let map = self
                .layers
                .read()
                .map_err(|_| Error::internal("layer map lock poisoned"))?;
            let segment: Option<SegmentEntry> = map
                .segments
                .iter()
                .filter(|s| s.last > after)
                .min_by_key(|s| s.first)
                .cloned();
            // Records in memory are newer than every segment but may overlap the newest
            // (a checkpoint's segment is written before memory lets go); with a segment to
            // read, only what it covers is taken, and the duplicates are dropped below.
            let upto = segment.as_ref().map_or(Version::MAX, |s| s.last);
            let mut memory: Vec<&WalRecord> = map
                .frozen_records
                .iter()
                .chain(map.open_records.iter())
                .filter(|r| r.version > after && r.version <= upto)
                .collect();
            memory.sort_by_key(|r| r.version);
            memory.dedup_by_key(|r| r.version);
            let memory: Vec<WalRecord> = memory.into_iter().take(limit).cloned().collect();
            (segment, memory)
        };
        let mut out = Vec::new();
        if let Some(s) = segment {
            let bytes = manifest::read_object(
                &self.store,
                &manifest::segment_path(&self.database, &s.name),
            )
            .await?;
            let decoded = tokio::task::spawn_blocking(move || cold_segment::decode_segment(bytes))
                .await
                .map_err(|e| Error::internal(format!("segment decoder: {e}")))??;
            out.extend(decoded.into_iter().filter(|r| r.version > after));
        }
        out.append(&mut records);
        out.sort_by_key(|r| r.version);
        out.dedup_by_key(|r| r.version);
        // The first commit after `after` must be the first record returned, or a stretch of the
        // log is gone (checkpointed before cold segments existed, or collected).
        let first_commit = {
            let times = self
                .times
                .read()
                .map_err(|_| Error::internal("commit times lock poisoned"))?;
            times.range(after, Version::MAX).first().map(|(v, _)| *v)
        };
        if let Some(want) = first_commit
            && out.first().map(|r| r.version) != Some(want)
        {
            return Err(Error::new(
                ErrorKind::VersionTooOld,
                format!("the change feed no longer holds the commits after version {after}"),
            ));
        }
        Ok(out)
    }

    /// Block cache (hits, misses) so far.
    pub fn cache_stats(&self) -> (u64, u64) {
        self.cache.stats()
    }

    /// The live manifest generation.
    pub async fn manifest_generation(&self) -> u64 {
        self.manifest.lock().await.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrisdb_common::wal::Mutation;
    use object_store::memory::InMemory;

    pub(super) fn rec(version: u64, muts: &[(&str, Option<&str>)]) -> WalRecord {
        WalRecord {
            version: Version(version),
            commit_time_micros: version,
            mutations: muts
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => Mutation::Set {
                        key: Bytes::copy_from_slice(k.as_bytes()),
                        value: Bytes::copy_from_slice(v.as_bytes()),
                    },
                    None => Mutation::Clear {
                        key: Bytes::copy_from_slice(k.as_bytes()),
                    },
                })
                .collect(),
        }
    }

    async fn load_all(store: Arc<dyn ObjectStore>, metrics: Metrics) -> Result<Timeline> {
        let cache = Arc::new(BlockCache::in_memory(1 << 20));
        Timeline::load_with_options(
            "db",
            store,
            metrics,
            cache,
            TimelineOptions::keep_everything(),
        )
        .await
    }

    fn s(v: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(v.as_bytes()))
    }

    #[tokio::test]
    async fn reads_at_versions_across_checkpoints_and_reload() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let metrics = Metrics::new().unwrap();
        let t = load_all(store.clone(), metrics.clone()).await.unwrap();
        t.apply(&[rec(10, &[("a", Some("a1")), ("b", Some("b1"))])])
            .unwrap();
        t.apply(&[rec(20, &[("a", Some("a2"))])]).unwrap();
        assert_eq!(t.checkpoint(Version(20)).await.unwrap(), Version(20));
        t.apply(&[rec(30, &[("a", None), ("c", Some("c3"))])])
            .unwrap();
        t.apply(&[rec(40, &[("a", Some("a4"))])]).unwrap();
        assert_eq!(t.checkpoint(Version(40)).await.unwrap(), Version(40));
        t.apply(&[rec(50, &[("b", Some("b5"))])]).unwrap(); // not checkpointed

        let check = |t: Arc<Timeline>, with_tail: bool| async move {
            assert_eq!(t.get(b"a", Version(9)).await.unwrap(), None);
            assert_eq!(t.get(b"a", Version(10)).await.unwrap(), s("a1"));
            assert_eq!(t.get(b"a", Version(25)).await.unwrap(), s("a2"));
            assert_eq!(t.get(b"a", Version(30)).await.unwrap(), None);
            assert_eq!(t.get(b"a", Version(40)).await.unwrap(), s("a4"));
            let (r, more) = t
                .get_range(b"a", b"z", Version(30), 0, false)
                .await
                .unwrap();
            assert!(!more);
            let keys: Vec<_> = r.iter().map(|(k, _)| k.clone()).collect();
            assert_eq!(
                keys,
                vec![Bytes::from_static(b"b"), Bytes::from_static(b"c")]
            );
            let (r, more) = t.get_range(b"a", b"z", Version(40), 2, true).await.unwrap();
            assert!(more);
            assert_eq!(r[0], (Bytes::from_static(b"c"), Bytes::from_static(b"c3")));
            assert_eq!(r[1], (Bytes::from_static(b"b"), Bytes::from_static(b"b1")));
            if with_tail {
                assert_eq!(t.get(b"b", Version(50)).await.unwrap(), s("b5"));
            }
        };
        let t = Arc::new(t);
        check(t.clone(), true).await;
        let h: Vec<_> = t.history(b"a", Version(0), Version(50)).await.unwrap();
        let h: Vec<_> = h
            .iter()
            .map(|(v, time, val)| (v.0, *time, val.clone()))
            .collect();
        assert_eq!(
            h,
            vec![
                (10, 10, s("a1")),
                (20, 20, s("a2")),
                (30, 30, None),
                (40, 40, s("a4"))
            ]
        );
        assert_eq!(t.version_at(25).unwrap(), Version(20));
        assert_eq!(t.version_at(9).unwrap(), Version::ZERO);
        // A pageserver restarted with an empty disk sees exactly what was uploaded.
        let reloaded = Arc::new(load_all(store, metrics).await.unwrap());
        assert_eq!(reloaded.remote_consistent_version(), Version(40));
        assert_eq!(reloaded.ingested_version(), Version(40));
        check(reloaded.clone(), false).await;
        // The change feed: from memory and segments live, from segments alone after reload.
        let versions = |rs: Vec<WalRecord>| rs.iter().map(|r| r.version.0).collect::<Vec<_>>();
        assert_eq!(
            versions(t.records_since(Version(0)).await.unwrap()),
            vec![10, 20, 30, 40, 50]
        );
        assert_eq!(
            versions(t.records_since(Version(25)).await.unwrap()),
            vec![30, 40, 50]
        );
        // Batch by batch: one cold segment at a time, then memory, never the whole log.
        for (after, limit, want) in [
            (0, 100, vec![10, 20]),
            (10, 100, vec![20]),
            (20, 100, vec![30, 40]),
            (40, 100, vec![50]),
            (40, 1, vec![50]),
            (50, 100, vec![]),
        ] {
            let got = versions(t.records_batch(Version(after), limit).await.unwrap());
            assert_eq!(got, want, "after {after}");
        }
        // What is only in memory comes at most `limit` at a time, in order.
        t.apply(&[rec(60, &[("d", Some("d6"))])]).unwrap();
        t.apply(&[rec(70, &[("d", Some("d7"))])]).unwrap();
        for (after, want) in [(40, vec![50, 60]), (60, vec![70]), (70, vec![])] {
            let got = versions(t.records_batch(Version(after), 2).await.unwrap());
            assert_eq!(got, want, "after {after}");
        }
        let from_bucket = reloaded.records_since(Version(0)).await.unwrap();
        assert_eq!(versions(from_bucket.clone()), vec![10, 20, 30, 40]);
        assert_eq!(from_bucket[2], rec(30, &[("a", None), ("c", Some("c3"))]));
        assert_eq!(
            reloaded
                .history(b"a", Version(0), Version(40))
                .await
                .unwrap()
                .len(),
            4
        );
        assert_eq!(reloaded.version_at(35).unwrap(), Version(30));
        // Version 50 was never uploaded: the reloaded state must not pretend to have it.
        let e = reloaded
            .wait_ingested(Version(50), Duration::from_millis(10))
            .await;
        assert_eq!(e.unwrap_err().kind(), ErrorKind::FutureVersion);
    }

    #[tokio::test(start_paused = true)]
    async fn reads_beyond_ingestion_wait_then_fail_with_future_version() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let t = load_all(store, Metrics::new().unwrap()).await.unwrap();
        let e = t.get(b"a", Version(5)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::FutureVersion);
    }
}

#[cfg(test)]
mod retention_tests {
    use super::tests::rec;
    use super::*;
    use ferrisdb_common::wal::Mutation;
    use futures::TryStreamExt;
    use object_store::memory::InMemory;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Default)]
    struct TestClock(AtomicU64);

    impl Clock for TestClock {
        fn now_micros(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    async fn objects(store: &Arc<dyn ObjectStore>, kind: &str) -> Vec<String> {
        let mut names: Vec<String> = store
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .into_iter()
            .filter(|n| n.ends_with(kind))
            .collect();
        names.sort();
        names
    }

    type Step = (u64, &'static [(&'static str, Option<&'static str>)]);

    /// Four commits: a and b, a again, b again and c, a cleared.
    const STEPS: [Step; 4] = [
        (10, &[("a", Some("a1")), ("b", Some("b1"))]),
        (20, &[("a", Some("a2"))]),
        (30, &[("b", Some("b3")), ("c", Some("c3"))]),
        (40, &[("a", None)]),
    ];

    async fn open(store: &Arc<dyn ObjectStore>, clock: &Arc<TestClock>) -> Timeline {
        let options = TimelineOptions {
            pitr_interval: Duration::from_micros(100),
            image_after_deltas: 2,
            clock: clock.clone(),
            ..TimelineOptions::default()
        };
        let cache = Arc::new(BlockCache::in_memory(1 << 20));
        Timeline::load_with_options("db", store.clone(), Metrics::new().unwrap(), cache, options)
            .await
            .unwrap()
    }

    fn s(v: &str) -> Option<Bytes> {
        Some(Bytes::from(v.to_string()))
    }

    #[tokio::test]
    async fn parent_gc_stops_at_the_branch_point_and_the_branch_reads_through_it() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let clock = Arc::new(TestClock::default());
        let parent = Arc::new(open(&store, &clock).await);
        let steps = STEPS;
        for (v, muts) in &steps[..2] {
            parent.apply(&[rec(*v, muts)]).unwrap();
            parent.checkpoint(Version(*v)).await.unwrap();
        }
        Timeline::create_branch(&parent, "br", Version(20))
            .await
            .unwrap();
        let e = Timeline::create_branch(&parent, "br", Version(20))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        for (v, muts) in &steps[2..] {
            parent.apply(&[rec(*v, muts)]).unwrap();
            parent.checkpoint(Version(*v)).await.unwrap();
        }
        // Old enough for the horizon to reach 40, but the branch point holds it at 20.
        clock.0.store(1_000, Ordering::SeqCst);
        parent.maintain().await.unwrap();
        let m = manifest::load_latest(&store, "db").await.unwrap();
        assert_eq!(m.gc_horizon, Version(20));
        assert_eq!(
            parent.get(b"a", Version(10)).await.unwrap_err().kind(),
            ErrorKind::VersionTooOld
        );
        let cache = Arc::new(BlockCache::in_memory(1 << 20));
        let branch = Timeline::load_with_ancestor(
            "br",
            store.clone(),
            Metrics::new().unwrap(),
            cache,
            TimelineOptions::keep_everything(),
            Some(parent.clone()),
        )
        .await
        .unwrap();
        assert_eq!(branch.ancestor(), Some(("db".to_string(), Version(20))));
        assert_eq!(branch.remote_consistent_version(), Version(20));
        branch
            .apply(&[rec(50, &[("c", Some("mine")), ("b", None)])])
            .unwrap();
        for (k, v, want) in [
            ("a", 20, s("a2")),
            ("b", 20, s("b1")),
            ("c", 20, None),
            ("a", 50, s("a2")),
            ("b", 50, None),
            ("c", 50, s("mine")),
        ] {
            assert_eq!(
                branch.get(k.as_bytes(), Version(v)).await.unwrap(),
                want,
                "{k}@{v}"
            );
        }
        let (rows, _) = branch
            .get_range(b"a", b"z", Version(50), 0, false)
            .await
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (Bytes::from("a"), Bytes::from("a2")),
                (Bytes::from("c"), Bytes::from("mine"))
            ]
        );
        let (rows, more) = branch
            .get_range(b"a", b"z", Version(50), 1, true)
            .await
            .unwrap();
        assert_eq!(
            (rows, more),
            (vec![(Bytes::from("c"), Bytes::from("mine"))], true)
        );
        let h: Vec<u64> = branch
            .history(b"a", Version(20), Version(50))
            .await
            .unwrap()
            .iter()
            .map(|(v, _, _)| v.0)
            .collect();
        assert_eq!(h, vec![20]);
        assert_eq!(branch.version_at(25).unwrap(), Version(20));
        assert_eq!(branch.version_at(55).unwrap(), Version(50));
    }

    #[tokio::test]
    async fn images_then_gc_keep_every_answer_above_the_horizon_and_refuse_below() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let clock = Arc::new(TestClock::default());
        let t = open(&store, &clock).await;
        let steps = STEPS;
        for (v, muts) in steps {
            t.apply(&[rec(v, muts)]).unwrap();
            t.checkpoint(Version(v)).await.unwrap();
        }
        assert_eq!(
            objects(&store, ".image").await.len(),
            2,
            "an image after every two deltas"
        );
        assert_eq!(objects(&store, ".delta").await.len(), 4);

        // Nothing is old enough yet: every version reads right, through the images too.
        let expect = [
            (10, "a", s("a1")),
            (20, "a", s("a2")),
            (30, "b", s("b3")),
            (40, "a", None),
            (40, "c", s("c3")),
            (25, "c", None),
        ];
        for (v, k, want) in &expect {
            assert_eq!(
                t.get(k.as_bytes(), Version(*v)).await.unwrap(),
                *want,
                "{k}@{v}"
            );
        }
        let (rows, _) = t
            .get_range(b"a", b"z", Version(40), 0, false)
            .await
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (Bytes::from("b"), Bytes::from("b3")),
                (Bytes::from("c"), Bytes::from("c3"))
            ]
        );

        // The horizon reaches version 20: the delta below it goes; the one ending at it stays
        // for history from the horizon.
        clock.0.store(125, Ordering::SeqCst);
        t.maintain().await.unwrap();
        assert_eq!(objects(&store, ".delta").await.len(), 3);
        let expect = &expect;
        let check = |t: Timeline| async move {
            for (v, k, want) in &expect[1..] {
                assert_eq!(
                    t.get(k.as_bytes(), Version(*v)).await.unwrap(),
                    *want,
                    "{k}@{v}"
                );
            }
            assert_eq!(
                t.get(b"a", Version(10)).await.unwrap_err().kind(),
                ErrorKind::VersionTooOld
            );
            assert_eq!(
                t.history(b"a", Version(0), Version(40))
                    .await
                    .unwrap_err()
                    .kind(),
                ErrorKind::VersionTooOld
            );
            let h = t.history(b"a", Version(20), Version(40)).await.unwrap();
            assert_eq!(
                h.iter().map(|(v, _, _)| v.0).collect::<Vec<_>>(),
                vec![20, 40],
                "history from the horizon on is whole"
            );
            assert_eq!(
                t.version_at(15).unwrap_err().kind(),
                ErrorKind::VersionTooOld
            );
            let (rows, _) = t
                .get_range(b"a", b"z", Version(20), 0, false)
                .await
                .unwrap();
            assert_eq!(
                rows,
                vec![
                    (Bytes::from("a"), Bytes::from("a2")),
                    (Bytes::from("b"), Bytes::from("b1"))
                ]
            );
            t
        };
        let t = check(t).await;
        // A pageserver rebuilt from the bucket alone answers the same, horizon included.
        let reloaded = check(open(&store, &clock).await).await;
        assert_eq!(
            reloaded.records_since(Version(5)).await.unwrap_err().kind(),
            ErrorKind::VersionTooOld
        );

        // Later still: only the newest image and what lies above it.
        clock.0.store(1_000, Ordering::SeqCst);
        t.maintain().await.unwrap();
        assert_eq!(
            objects(&store, ".delta").await.len(),
            1,
            "the one ending at 40"
        );
        assert_eq!(objects(&store, ".image").await.len(), 1);
        assert_eq!(t.get(b"c", Version(40)).await.unwrap(), s("c3"));
        assert_eq!(t.get(b"a", Version(40)).await.unwrap(), None);
        let m = manifest::load_latest(&store, "db").await.unwrap();
        assert_eq!(m.gc_horizon, Version(40));
        for e in &m.layers {
            store
                .head(&manifest::layer_path("db", &e.name))
                .await
                .unwrap();
        }
    }

    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    /// Random sets, clears and range clears over 9 rounds, checked against a plain model of
    /// every version: point reads, full and limited range reads both ways, and history, from
    /// memory, delta layers and images alike.
    #[tokio::test]
    async fn windowed_range_reads_match_the_full_merge() {
        use std::collections::BTreeMap;
        for seed in 0..12u64 {
            let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            let clock = Arc::new(TestClock::default());
            // L0 runs of 3 compact into L1 partitions of ~8 KiB; images every 2 runs.
            let options = TimelineOptions {
                pitr_interval: Duration::MAX,
                image_after_deltas: 2,
                compact_after_deltas: 3,
                l1_target_bytes: 8 << 10,
                clock,
            };
            let cache = Arc::new(BlockCache::in_memory(1 << 22));
            let t = Timeline::load_with_options(
                "db",
                store.clone(),
                Metrics::new().unwrap(),
                cache.clone(),
                options.clone(),
            )
            .await
            .unwrap();
            let mut rng = Lcg(seed);
            let mut versions = Vec::new();
            let mut model: BTreeMap<u64, BTreeMap<Bytes, Bytes>> = BTreeMap::new();
            let mut state: BTreeMap<Bytes, Bytes> = BTreeMap::new();
            for round in 0..9u64 {
                let v = (round + 1) * 10;
                let muts: Vec<Mutation> = (0..60)
                    .map(|i| {
                        let key = Bytes::from(format!("k{:03}", rng.below(200)));
                        match rng.below(20) {
                            0..=3 => Mutation::Clear { key },
                            4 => Mutation::ClearRange {
                                end: Bytes::from(format!("k{:03}", rng.below(30) + 1)),
                                begin: key.slice(..3),
                            },
                            _ => Mutation::Set {
                                key,
                                value: Bytes::from(format!("{round}-{i}-{}", "x".repeat(600))),
                            },
                        }
                    })
                    .collect();
                for m in &muts {
                    match m {
                        Mutation::Set { key, value } => {
                            state.insert(key.clone(), value.clone());
                        }
                        Mutation::Clear { key } => {
                            state.remove(key);
                        }
                        Mutation::ClearRange { begin, end } => {
                            state.retain(|k, _| !(begin <= k && k < end));
                        }
                    }
                }
                model.insert(v, state.clone());
                t.apply(&[WalRecord {
                    version: Version(v),
                    commit_time_micros: v,
                    mutations: muts,
                }])
                .unwrap();
                if round < 7 {
                    t.checkpoint(Version(v)).await.unwrap();
                }
                versions.push(v);
            }
            for _ in 0..40 {
                let a = format!("k{:03}", rng.below(210));
                let b = format!("k{:03}", rng.below(210));
                let (begin, end) = if a <= b { (a, b) } else { (b, a) };
                let version = Version(versions[rng.below(versions.len() as u64) as usize]);
                let limit = 1 + rng.below(40) as usize;
                let reverse = rng.below(2) == 0;
                let (all, _) = t
                    .get_range(begin.as_bytes(), end.as_bytes(), version, 0, false)
                    .await
                    .unwrap();
                let expected: Vec<(Bytes, Bytes)> = model[&version.0]
                    .range(Bytes::from(begin.clone())..Bytes::from(end.clone()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(all, expected, "seed {seed}: [{begin}, {end}) @{version}");
                let probe = Bytes::from(format!("k{:03}", rng.below(200)));
                assert_eq!(
                    t.get(&probe, version).await.unwrap(),
                    model[&version.0].get(&probe).cloned(),
                    "seed {seed}: get {probe:?} @{version}"
                );
                // History: one entry wherever the key's state changed between model versions.
                let history = t.history(&probe, Version(1), Version(90)).await.unwrap();
                let mut prev: Option<Bytes> = None;
                let mut changes = Vec::new();
                for (mv, snapshot) in &model {
                    let now = snapshot.get(&probe).cloned();
                    if now != prev {
                        changes.push((*mv, now.clone()));
                    }
                    prev = now;
                }
                // Entries that left the state unchanged (a clear of an absent key, a rewrite
                // of the same value) are real versions too; compare the changes only.
                let mut seen: Option<Bytes> = None;
                let got: Vec<(u64, Option<Bytes>)> = history
                    .into_iter()
                    .filter_map(|(v, _, val)| {
                        let changed = val != seen;
                        seen = val.clone();
                        changed.then_some((v.0, val))
                    })
                    .collect();
                assert_eq!(got, changes, "seed {seed}: history of {probe:?}");
                let mut want = all.clone();
                if reverse {
                    want.reverse();
                }
                let more_exist = want.len() > limit;
                want.truncate(limit);
                let (got, more) = t
                    .get_range(begin.as_bytes(), end.as_bytes(), version, limit, reverse)
                    .await
                    .unwrap();
                assert_eq!(
                    got, want,
                    "seed {seed}: [{begin}, {end}) @{version} limit {limit} reverse {reverse}"
                );
                assert!(
                    !more_exist || more,
                    "seed {seed}: more rows exist but `more` is false"
                );
            }
            // Compaction happened, and a pageserver rebuilt from the bucket reads the same at
            // every checkpointed version.
            let names: Vec<String> = store
                .list(None)
                .map_ok(|m| m.location.to_string())
                .try_collect::<Vec<_>>()
                .await
                .unwrap();
            assert!(
                names.iter().filter(|n| n.ends_with(".l1")).count() > 2,
                "{names:?}"
            );
            assert_eq!(names.iter().filter(|n| n.ends_with(".delta")).count(), 1);
            let reloaded =
                Timeline::load_with_options("db", store, Metrics::new().unwrap(), cache, options)
                    .await
                    .unwrap();
            for v in &versions[..7] {
                let (rows, _) = reloaded
                    .get_range(b"k", b"l", Version(*v), 0, false)
                    .await
                    .unwrap();
                let want: Vec<(Bytes, Bytes)> = model[v]
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(rows, want, "seed {seed}: reloaded @{v}");
            }
        }
    }
}
