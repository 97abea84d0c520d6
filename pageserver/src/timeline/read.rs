//! Point and range reads at a version: the in-memory layers, then the delta layers newest
//! first (from the newest image up), then a branch's parent.
//!
//! Layers cover disjoint version ranges, so the first source that holds any entry of a key at
//! or below the read version answers a point read; a range read merges every source.

use std::sync::Arc;

use bytes::Bytes;
use ferrisdb_common::{Error, ErrorKind, Result, Version};
use ferrisdb_server_common::versioned_map::{Lookup, VersionedMap};

use futures::{StreamExt, TryStreamExt};

use super::merge::{Row, SourceRows, visible};
use super::{READ_WAIT, Timeline};
use crate::format::delta::DeltaLayer;

/// How many layers a range read reads at once (each fetching a few blocks at once, see
/// `DeltaLayer::prefetched`): over a distant store, a read across many layers paid their
/// round trips one after another.
const LAYERS_AT_ONCE: usize = 4;

impl Timeline {
    /// Takes what a read needs under the layer-map lock — the in-memory layers' answer via
    /// `memory` and the delta layers as they stand — so the delta layers (immutable, read with
    /// async I/O) are queried after the lock is released, yet from the same consistent view.
    pub(super) fn snapshot<T>(
        &self,
        memory: impl FnOnce(&[&VersionedMap]) -> T,
    ) -> Result<(T, Vec<Arc<DeltaLayer>>)> {
        let map = self.read_map()?;
        let mems: Vec<&VersionedMap> = std::iter::once(&map.open)
            .chain(map.frozen.as_deref())
            .collect();
        Ok((memory(&mems), map.layers.clone()))
    }

    /// Refuses versions below the GC horizon: what they need may be gone.
    /// The oldest version readable here: this timeline's retention horizon or, on a branch,
    /// its parent's where that is higher (a branch's versions up to its branch point are read
    /// in its parent, whose GC keeps its branch points, so the parent's never passes the
    /// branch point). The status's `gc_horizon`, and where history and change feeds start
    /// when asked for "everything held".
    pub fn readable_from(&self) -> Version {
        let own = self.gc_horizon();
        match &self.ancestor {
            Some((parent, point)) => own.max(parent.readable_from().min(*point)),
            None => own,
        }
    }

    /// `version_too_old` below [`Timeline::readable_from`]: what a branch created at
    /// `version`, or a read there, would find gone.
    pub(super) fn check_readable(&self, version: Version) -> Result<()> {
        self.check_retained(version)?;
        let from = self.readable_from();
        if version < from {
            return Err(Error::new(
                ErrorKind::VersionTooOld,
                format!(
                    "version {version} of {} is below the retention horizon of the database it \
                     branched from ({from})",
                    self.database
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn check_retained(&self, version: Version) -> Result<()> {
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
    pub(super) fn layers_for(layers: &[Arc<DeltaLayer>], version: Version) -> Vec<Arc<DeltaLayer>> {
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

    /// Runs `read` once more if it failed while compaction or GC dropped layers: it may have
    /// chosen a layer whose object was deleted under it (`not found`); the layers that
    /// replaced it hold the same rows, so the second run answers. (An outside audit's reads
    /// at old versions failed 3 times in 12,451 during compaction with a small cache.)
    pub(super) async fn retry_if_layers_dropped<T, F, Fut>(&self, read: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let seen = self
            .layers_dropped
            .load(std::sync::atomic::Ordering::SeqCst);
        match read().await {
            Err(e)
                if self
                    .layers_dropped
                    .load(std::sync::atomic::Ordering::SeqCst)
                    != seen =>
            {
                tracing::debug!(database = %self.database, error = %e, "a read failed while layers were dropped; reading again");
                read().await
            }
            answer => answer,
        }
    }

    /// The value of `key` at `version` (waiting for it to be ingested).
    pub async fn get(&self, key: &[u8], version: Version) -> Result<Option<Bytes>> {
        self.check_retained(version)?;
        self.wait_ingested(version, READ_WAIT).await?;
        self.metrics.reads.inc();
        self.retry_if_layers_dropped(|| self.get_unchecked(key, version))
            .await
    }

    /// [`Timeline::get`] for a version known to be retained and ingested.
    pub(super) async fn get_unchecked(
        &self,
        key: &[u8],
        version: Version,
    ) -> Result<Option<Bytes>> {
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
    pub(super) async fn layers_range(
        layers: &[Arc<DeltaLayer>],
        begin: &[u8],
        end: &[u8],
        version: Version,
    ) -> Result<Vec<SourceRows>> {
        let reads = Self::layers_for(layers, version)
            .into_iter()
            .filter(|l| l.overlaps_keys(begin, end))
            .map(|layer| async move {
                Ok((
                    layer.latest_in_range(begin, end, version).await?,
                    layer.range_tombstones().overlapping(begin, end, version),
                ))
            });
        futures::stream::iter(reads)
            .buffered(LAYERS_AT_ONCE)
            .try_collect()
            .await
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
                .retry_if_layers_dropped(|| self.scan_windowed(begin, end, version, limit, reverse))
                .await;
        }
        self.retry_if_layers_dropped(|| self.get_range_whole(begin, end, version, reverse))
            .await
    }

    /// Every row of `[begin, end)` at `version`, merged at once ([`Timeline::get_range`]
    /// without a limit).
    async fn get_range_whole(
        &self,
        begin: &[u8],
        end: &[u8],
        version: Version,
        reverse: bool,
    ) -> Result<(Vec<(Bytes, Bytes)>, bool)> {
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
            live, 0, reverse,
        ))
    }

    /// The rows of `[begin, end)` at `version` in scan order, from the first on, until they
    /// hold `target_bytes` of keys and values and at least `min_rows` rows, and whether more
    /// may follow. It reads in windows ([`Timeline::scan_windowed`]), each sized from the rows
    /// seen so far, so a page of a range of any size costs about the page (an unlimited range
    /// read gathered the whole range, for every page of it).
    pub async fn get_range_until(
        &self,
        begin: &[u8],
        end: &[u8],
        version: Version,
        reverse: bool,
        min_rows: usize,
        target_bytes: usize,
    ) -> Result<(Vec<(Bytes, Bytes)>, bool)> {
        self.check_retained(version)?;
        self.wait_ingested(version, READ_WAIT).await?;
        self.metrics.reads.inc();
        let (mut lo, mut hi) = (Bytes::copy_from_slice(begin), Bytes::copy_from_slice(end));
        let mut out: Vec<(Bytes, Bytes)> = Vec::new();
        let mut bytes = 0usize;
        loop {
            // Enough rows of the size seen so far to reach the target, within bounds that keep
            // a window's own cost in check.
            let want = match out.len() {
                0 => 64,
                n => (target_bytes.saturating_sub(bytes) / (bytes / n).max(1) + 1).clamp(16, 4096),
            }
            .max(min_rows.saturating_sub(out.len()));
            if lo >= hi {
                return Ok((out, false));
            }
            let (rows, more) = self
                .retry_if_layers_dropped(|| self.scan_windowed(&lo, &hi, version, want, reverse))
                .await?;
            bytes += rows
                .iter()
                .map(|(k, v)| ferrisdb_common::message_size::range_row_bytes(k, v))
                .sum::<usize>();
            let last = rows.last().map(|(k, _)| k.clone());
            out.extend(rows);
            let Some(last) = last.filter(|_| more) else {
                return Ok((out, false));
            };
            if bytes >= target_bytes && out.len() >= min_rows {
                return Ok((out, true));
            }
            past(&last, reverse, &mut lo, &mut hi);
        }
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
            let (lo_ref, hi_ref) = (&lo, &hi);
            let scans = Self::layers_for(&layers, version)
                .into_iter()
                .filter(|l| l.overlaps_keys(lo_ref, hi_ref))
                .map(|layer| async move {
                    let (rows, cut) = layer
                        .scan_limited(lo_ref, hi_ref, version, want, reverse)
                        .await?;
                    let tombstones = layer
                        .range_tombstones()
                        .overlapping(lo_ref, hi_ref, version);
                    Ok::<_, Error>((rows, cut, tombstones))
                });
            let scanned: Vec<_> = futures::stream::iter(scans)
                .buffered(LAYERS_AT_ONCE)
                .try_collect()
                .await?;
            sources.extend(scanned);
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
            past(&f, reverse, &mut lo, &mut hi);
        }
    }
}

/// Narrows the rest of a range scan `[lo, hi)` to what lies past `last` in scan order.
pub(crate) fn past(last: &Bytes, reverse: bool, lo: &mut Bytes, hi: &mut Bytes) {
    if reverse {
        *hi = last.clone();
    } else {
        *lo = ferrisdb_common::overlay::successor(last);
    }
}
