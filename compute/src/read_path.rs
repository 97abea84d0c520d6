//! The read path through the tiers, the same for a primary and a replica: the hot tier, then
//! the warm tier, then the pageserver (through its [`PageSource`]), the last two at the hot
//! tier's floor. What differs between roles is only how versions become visible (the view);
//! how a read at a version is answered is this module.
//!
//! The hot tier holds every commit above its floor, so a key it has no entry for at or below
//! the read version has not changed since the floor, and the floor's value answers: from the
//! warm tier when it still holds it, else from the pageserver (which is then cached warm).
//! A pageserver error is the read's error: nothing is cached from a failed read, so a later
//! read asks again.

use std::sync::Arc;

use bytes::Bytes;
use ferrisdb_common::proto::{
    HistoryEntry, HistoryRequest, PageGetRangeRequest, PageGetRequest, VersionAtRequest,
};
use ferrisdb_common::{Result, Version};
use tracing::Instrument;

use crate::hot_tier::{HotRead, HotTier};
use crate::metrics::Metrics;
use crate::page_source::{PageSource, RangeRows};
use crate::warm_tier::{WarmCache, WarmTier, WarmTierConfig};

/// How big the tiers may grow, from the command line.
#[derive(Debug, Clone)]
pub struct TierConfig {
    /// Past this many bytes in the hot tier, commits wait for the pageserver to catch up
    /// (0: no budget).
    pub hot_budget_bytes: usize,
    /// The warm tier's memory and disk.
    pub warm: WarmTierConfig,
}

/// The default hot-tier budget: 512 MiB.
pub const DEFAULT_HOT_BUDGET_BYTES: usize = 512 << 20;

impl Default for TierConfig {
    fn default() -> TierConfig {
        TierConfig {
            hot_budget_bytes: DEFAULT_HOT_BUDGET_BYTES,
            warm: WarmTierConfig::default(),
        }
    }
}

/// What a database's tiers are built with: the hot tier's memory budget and the warm cache
/// shared by every database of the compute.
#[derive(Debug, Clone, Default)]
pub struct Tiers {
    /// Past this many bytes in the hot tier, commits wait for evictions (0: no budget).
    pub hot_budget_bytes: usize,
    /// The warm tier's cache (`None`: reads the hot tier cannot answer go to the pageserver).
    pub warm: Option<Arc<WarmCache>>,
}

impl Tiers {
    /// Opens the warm cache (its disk tier too) as configured.
    pub async fn open(config: &TierConfig) -> Result<Tiers> {
        Ok(Tiers {
            hot_budget_bytes: config.hot_budget_bytes,
            warm: Some(WarmCache::open(&config.warm).await?),
        })
    }
}

/// Reads of one database through its tiers: the hot tier, then the warm tier, then the
/// pageserver, the last two at the hot tier's floor.
#[derive(Debug, Clone)]
pub struct TierReader {
    hot: Arc<HotTier>,
    warm: Option<Arc<WarmTier>>,
    pages: Arc<dyn PageSource>,
    database: String,
    metrics: Metrics,
}

impl TierReader {
    /// Reads of `database` through `hot`, `warm` (if any) and `pages`, counted in `metrics`.
    pub fn new(
        database: String,
        hot: Arc<HotTier>,
        warm: Option<Arc<WarmTier>>,
        pages: Arc<dyn PageSource>,
        metrics: Metrics,
    ) -> TierReader {
        TierReader {
            hot,
            warm,
            pages,
            database,
            metrics,
        }
    }

    /// The hot tier.
    pub fn hot(&self) -> &Arc<HotTier> {
        &self.hot
    }

    /// The warm tier, if any.
    pub fn warm(&self) -> Option<&Arc<WarmTier>> {
        self.warm.as_ref()
    }

    /// The database read.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The value of `key` at `version`: from the hot tier; or, when the key has not changed
    /// since the hot tier's floor, from the warm tier or the pageserver at that floor.
    pub async fn read(&self, key: Bytes, version: Version) -> Result<Option<Bytes>> {
        // One span per tier asked, when the request is traced (docs/observability.md).
        let hot_span = ferrisdb_server_common::span_in_trace!("read.hot");
        let at = match self.hot.get(&key, version) {
            HotRead::Found(v) => {
                self.count("hot", true);
                return Ok(v);
            }
            HotRead::AskPageserverAt(at) => at,
        };
        drop(hot_span);
        self.count("hot", false);
        // The warm tier is asked only after the hot tier loaded its floor (its correctness
        // argument depends on that order; see warm_tier).
        if let Some(warm) = &self.warm {
            let span = ferrisdb_server_common::span_in_trace!("read.warm");
            if let Some(v) = warm.get(&key, at).instrument(span).await {
                self.count("warm", true);
                return Ok(v);
            }
            self.count("warm", false);
        }
        let req = PageGetRequest {
            database: self.database.clone(),
            key: key.clone(),
            version: at.0,
        };
        let span = ferrisdb_server_common::span_in_trace!("read.pageserver");
        let value = self.pages.get(req).instrument(span).await?;
        self.count("pageserver", true);
        if let Some(warm) = &self.warm {
            warm.insert(&key, at, value.as_ref());
        }
        Ok(value)
    }

    /// A range read at `version`: the pageserver's answer at the hot tier's floor, overlaid
    /// with the hot tier's newer entries.
    pub async fn read_range(
        &self,
        begin: Bytes,
        end: Bytes,
        version: Version,
        limit: usize,
        reverse: bool,
    ) -> Result<RangeRows> {
        let (hot, at) = self.hot.range(&begin, &end, version);
        self.metrics.reads.with_label_values(&["range"]).inc();
        hot.read_range(begin, end, limit, reverse, |lo, hi, n| {
            let req = PageGetRangeRequest {
                database: self.database.clone(),
                begin: lo,
                end: hi,
                version: at.0,
                limit: n.min(u32::MAX as usize) as u32,
                reverse,
            };
            let span = ferrisdb_server_common::span_in_trace!("read.pageserver");
            self.pages.get_range(req).instrument(span)
        })
        .await
    }

    /// Every version of `key` in `[from, to]`, oldest first: the pageserver's up to the hot
    /// tier's floor, the hot tier's above it. `to` must be visible (the caller checks).
    pub async fn history(
        &self,
        key: Bytes,
        from: Version,
        to: Version,
    ) -> Result<Vec<HistoryEntry>> {
        let (hot, floor) = self.hot.history(&key, to);
        let mut entries = Vec::new();
        if from <= floor {
            let req = HistoryRequest {
                database: self.database.clone(),
                key: key.clone(),
                from_version: from.0,
                to_version: to.min(floor).0,
            };
            // Version 0 means "latest" on the wire; an empty range below version 1 has nothing.
            if req.to_version > 0 {
                entries = self.pages.history(req).await?;
            }
        }
        for (v, time, value, range_clear) in hot.into_iter().filter(|e| e.0 >= from) {
            // A range clear is a version of this key only where it removed a value.
            if range_clear {
                let had_value = match entries.last() {
                    Some(prev) => prev.value.is_some(),
                    None => self.read(key.clone(), Version(v.0 - 1)).await?.is_some(),
                };
                if !had_value {
                    continue;
                }
            }
            entries.push(HistoryEntry {
                version: v.0,
                commit_time_micros: time,
                value,
            });
        }
        Ok(entries)
    }

    /// The latest committed version at or before `time_micros` (0: nothing had committed).
    pub async fn version_at(&self, time_micros: u64) -> Result<Version> {
        if let Some(v) = self.hot.version_at(time_micros) {
            return Ok(v);
        }
        // Read before asking: if a later commit existed already, the answer cannot change.
        let settled = time_micros < self.hot.last_commit_time();
        if let Some(warm) = &self.warm {
            let cached = warm.version_at(time_micros).await;
            let outcome = if cached.is_some() { "hit" } else { "miss" };
            self.metrics
                .version_at_cache
                .with_label_values(&[outcome])
                .inc();
            if let Some(v) = cached {
                return Ok(v);
            }
        }
        // Older than every hot commit: the pageserver has all of those versions.
        let req = VersionAtRequest {
            database: self.database.clone(),
            timestamp_micros: time_micros,
        };
        let version = self.pages.version_at(req).await?;
        if let Some(warm) = &self.warm
            && settled
        {
            warm.remember_version_at(time_micros, version).await;
        }
        Ok(version)
    }

    fn count(&self, tier: &str, hit: bool) {
        if hit {
            self.metrics.tier_hits.with_label_values(&[tier]).inc();
            self.metrics.reads.with_label_values(&[tier]).inc();
        } else {
            self.metrics.tier_misses.with_label_values(&[tier]).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ferrisdb_common::proto::PageserverStatus;
    use ferrisdb_common::wal::Mutation;
    use ferrisdb_common::{Error, ErrorKind};

    use super::*;
    use crate::faulty_page_source::{FaultyPageSource, PageCall};

    /// A pageserver holding one version of a few keys.
    #[derive(Debug, Default)]
    struct Pages {
        rows: BTreeMap<Bytes, Bytes>,
    }

    #[tonic::async_trait]
    impl PageSource for Pages {
        async fn get(&self, req: PageGetRequest) -> Result<Option<Bytes>> {
            Ok(self.rows.get(&req.key).cloned())
        }
        async fn get_range(&self, req: PageGetRangeRequest) -> Result<RangeRows> {
            let rows = self
                .rows
                .range(req.begin..req.end)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Ok((rows, false))
        }
        async fn history(&self, _: HistoryRequest) -> Result<Vec<HistoryEntry>> {
            Ok(Vec::new())
        }
        async fn version_at(&self, _: VersionAtRequest) -> Result<Version> {
            Ok(Version::ZERO)
        }
        async fn status(&self, _: &str) -> Result<PageserverStatus> {
            Ok(PageserverStatus::default())
        }
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// A pageserver error surfaces with its own kind, nothing is cached from the failed read
    /// (the warm tier does not answer the next one with a wrong "absent"), and the next read
    /// after the pageserver recovers gets the stored value; a hot-tier answer never asks.
    #[tokio::test]
    async fn a_pageserver_error_fails_the_read_and_caches_nothing() {
        let floor = Version(100);
        let pages = Pages {
            rows: BTreeMap::from([(b("a"), b("stored")), (b("c"), b("other"))]),
        };
        let faulty = Arc::new(FaultyPageSource::new(Arc::new(pages)));
        let warm = Arc::new(WarmTier::in_memory(1 << 20).await.unwrap());
        let hot = Arc::new(HotTier::new(floor).with_observer(warm.clone()));
        let metrics = Metrics::new().unwrap();
        let reader = TierReader::new(
            "db".into(),
            hot.clone(),
            Some(warm),
            faulty.clone(),
            metrics,
        );

        faulty.fail(
            PageCall::Get,
            Error::new(ErrorKind::FutureVersion, "not ingested yet"),
            1,
        );
        let e = reader.read(b("a"), floor).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::FutureVersion, "{e}");
        faulty.fail_always(PageCall::Get, Error::unavailable("pageserver down"));
        for _ in 0..3 {
            let e = reader.read(b("a"), floor).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        }
        assert_eq!(faulty.calls(PageCall::Get), 4, "every miss asked again");

        faulty.heal();
        assert_eq!(reader.read(b("a"), floor).await.unwrap(), Some(b("stored")));
        // Now cached warm: answered without the pageserver, even while it fails again.
        faulty.fail_always(PageCall::Get, Error::unavailable("pageserver down"));
        assert_eq!(reader.read(b("a"), floor).await.unwrap(), Some(b("stored")));
        assert_eq!(faulty.calls(PageCall::Get), 5);

        // A newer write in the hot tier answers without asking anyone.
        hot.apply(
            Version(110),
            1,
            &[Mutation::Set {
                key: b("a"),
                value: b("new"),
            }],
        );
        assert_eq!(
            reader.read(b("a"), Version(110)).await.unwrap(),
            Some(b("new"))
        );
        assert_eq!(faulty.calls(PageCall::Get), 5);

        // Range reads: the error surfaces whole, never a partial answer.
        faulty.fail(PageCall::GetRange, Error::unavailable("pageserver down"), 1);
        let e = reader
            .read_range(b("a"), b("z"), Version(110), 10, false)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        let (rows, more) = reader
            .read_range(b("a"), b("z"), Version(110), 10, false)
            .await
            .unwrap();
        assert_eq!(rows, vec![(b("a"), b("new")), (b("c"), b("other"))]);
        assert!(!more);
    }
}
