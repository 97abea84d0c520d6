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

use ferrisdb_common::message_size::REPLY_TARGET_BYTES;
use std::sync::Arc;

use bytes::Bytes;
use ferrisdb_common::proto::{
    HistoryEntry, HistoryRequest, PageGetRangeRequest, PageGetRequest, VersionAtRequest,
};
use ferrisdb_common::{Result, Version};
use prometheus::IntCounter;
use tracing::Instrument;

use crate::hot_tier::{HotRead, HotTier};
use crate::metrics::Metrics;
use crate::page_source::{HistoryPage, PageSource, RangeRows};
use crate::range_cache::{MAX_CHUNK_BYTES, RangeAsk};
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

/// Range reads of up to this many rows ask the pageserver for more than they need (see
/// [`TierReader::read_range`])...
const READ_AHEAD_UP_TO: usize = 256;
/// ...at least this many, and always one more than asked.
const READ_AHEAD_ROWS: usize = 64;

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
    /// The read counters of each tier, resolved once: a label lookup per read cost about
    /// 0.3 % of a point read's instructions.
    counted: Arc<TierCounters>,
}

/// The counters one tier's lookups move.
#[derive(Debug)]
struct Counted {
    /// `tier_hits_total{tier}`.
    hit: IntCounter,
    /// `tier_misses_total{tier}`, for tiers that pass a read on.
    miss: Option<IntCounter>,
    /// `reads_total{tier}`, for tiers that answer a read (the range cache's hits are range
    /// reads, counted as such).
    read: Option<IntCounter>,
}

impl Counted {
    fn new(metrics: &Metrics, tier: &str, misses: bool, reads: bool) -> Counted {
        Counted {
            hit: metrics.tier_hits.with_label_values(&[tier]),
            miss: misses.then(|| metrics.tier_misses.with_label_values(&[tier])),
            read: reads.then(|| metrics.reads.with_label_values(&[tier])),
        }
    }

    fn count(&self, hit: bool) {
        let counter = if hit {
            if let Some(read) = &self.read {
                read.inc();
            }
            Some(&self.hit)
        } else {
            self.miss.as_ref()
        };
        if let Some(counter) = counter {
            counter.inc();
        }
    }
}

/// Every tier's counters, and the range reads'.
#[derive(Debug)]
struct TierCounters {
    hot: Counted,
    warm: Counted,
    pageserver: Counted,
    range_cache: Counted,
    range_reads: IntCounter,
}

impl TierCounters {
    fn new(metrics: &Metrics) -> TierCounters {
        TierCounters {
            hot: Counted::new(metrics, "hot", true, true),
            warm: Counted::new(metrics, "warm", true, true),
            pageserver: Counted::new(metrics, "pageserver", false, true),
            range_cache: Counted::new(metrics, "range_cache", true, false),
            range_reads: metrics.reads.with_label_values(&["range"]),
        }
    }
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
            counted: Arc::new(TierCounters::new(&metrics)),
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
                self.counted.hot.count(true);
                return Ok(v);
            }
            HotRead::AskPageserverAt(at) => at,
        };
        drop(hot_span);
        self.counted.hot.count(false);
        // The warm tier is asked only after the hot tier loaded its floor (its correctness
        // argument depends on that order; see warm_tier).
        if let Some(warm) = &self.warm {
            let span = ferrisdb_server_common::span_in_trace!("read.warm");
            if let Some(v) = warm.get(&key, at).instrument(span).await {
                self.counted.warm.count(true);
                return Ok(v);
            }
            self.counted.warm.count(false);
        }
        let req = PageGetRequest {
            database: self.database.clone(),
            key: key.clone(),
            version: at.0,
        };
        let span = ferrisdb_server_common::span_in_trace!("read.pageserver");
        let value = self.pages.get(req).instrument(span).await?;
        self.counted.pageserver.count(true);
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
        let (hot, at) = self.hot.range(&begin, &end, version, limit, reverse);
        self.counted.range_reads.inc();
        // Capped in bytes as well as rows: a range of large values (or `limit` 0, every row)
        // would otherwise make an answer no hop can carry. The client reads on after the last
        // row while `more` is set.
        hot.read_range_capped(
            begin,
            end,
            limit,
            reverse,
            REPLY_TARGET_BYTES,
            |lo, hi, n| self.pageserver_range(lo, hi, n, reverse, at),
        )
        .await
    }

    /// Up to `limit` rows of `[begin, end)` at `at` (the hot tier's floor, or an older read
    /// version), and whether the range holds more: from the warm tier's range cache when a
    /// cached answer settles it, else from the pageserver (then cached).
    async fn pageserver_range(
        &self,
        begin: Bytes,
        end: Bytes,
        limit: usize,
        reverse: bool,
        at: Version,
    ) -> Result<RangeRows> {
        let ranges = self.warm.as_ref().map(|w| w.ranges());
        if let Some(ranges) = ranges {
            let ask = RangeAsk {
                begin: &begin,
                end: &end,
                limit,
                reverse,
                at,
            };
            let found = ranges.get(ask);
            self.counted.range_cache.count(found.is_some());
            if let Some(found) = found {
                return Ok(found);
            }
        }
        // Reading ahead lets the cached answer settle later scans that start inside it, and
        // at least one row more than asked lets it settle the same read again (it then knows
        // whether more follow). Only for small pages, so the extra rows can never push an
        // answer past the message limit.
        let ask_for = match limit {
            1..=READ_AHEAD_UP_TO => (limit + 1).max(READ_AHEAD_ROWS),
            _ => limit,
        };
        // What is read ahead is capped in bytes too, so a scan over large values does not
        // pull 64 of them to answer a read of one; half a chunk, so a capped answer of
        // middling rows still fits the cache.
        let (target_bytes, min_rows) = if ask_for > limit {
            ((MAX_CHUNK_BYTES / 2) as u64, limit + 1)
        } else {
            // Any other page stops at the reply target (see read_range).
            (REPLY_TARGET_BYTES as u64, 1)
        };
        let req = PageGetRangeRequest {
            database: self.database.clone(),
            begin: begin.clone(),
            end: end.clone(),
            version: at.0,
            limit: ask_for.min(u32::MAX as usize) as u32,
            reverse,
            target_bytes,
            min_rows: min_rows.min(u32::MAX as usize) as u32,
        };
        let span = ferrisdb_server_common::span_in_trace!("read.pageserver");
        let (mut rows, mut more) = self.pages.get_range(req).instrument(span).await?;
        if let Some(ranges) = ranges {
            let ask = RangeAsk {
                begin: &begin,
                end: &end,
                limit: ask_for,
                reverse,
                at,
            };
            ranges.insert(ask, &rows, more);
        }
        if limit > 0 && rows.len() > limit {
            rows.truncate(limit);
            more = true;
        }
        Ok((rows, more))
    }

    /// The versions of `key` in `[from, to]`, oldest first, one page of them: the pageserver's
    /// up to the hot tier's floor, the hot tier's above it, and whether more follow the last
    /// one (the pageserver's page stopped at its byte target; the caller asks again from the
    /// version after it). `to` must be visible (the caller checks).
    pub async fn history(&self, key: Bytes, from: Version, to: Version) -> Result<HistoryPage> {
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
                let more;
                (entries, more) = self.pages.history(req).await?;
                // The pageserver's part goes on past this page: the hot tier's versions come
                // after all of it, in a later page.
                if more && !entries.is_empty() {
                    return Ok((entries, true));
                }
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
        Ok((entries, false))
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
        async fn history(&self, _: HistoryRequest) -> Result<HistoryPage> {
            Ok((Vec::new(), false))
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

    /// A pageserver holding every version of every key (a clear is a `None` version).
    #[derive(Debug, Default)]
    struct Versions {
        keys: std::sync::Mutex<BTreeMap<Bytes, BTreeMap<Version, Option<Bytes>>>>,
        range_calls: std::sync::atomic::AtomicU64,
        /// Keys and values answered to range reads.
        range_bytes: std::sync::atomic::AtomicU64,
        /// History entries answered, over all pages.
        history_entries: std::sync::atomic::AtomicU64,
    }

    impl Versions {
        fn write(&self, version: Version, m: &Mutation) {
            let mut keys = self.keys.lock().unwrap();
            match m {
                Mutation::Set { key, value } => {
                    keys.entry(key.clone())
                        .or_default()
                        .insert(version, Some(value.clone()));
                }
                Mutation::Clear { key } => {
                    keys.entry(key.clone()).or_default().insert(version, None);
                }
                Mutation::ClearRange { begin, end } => {
                    for (_, vs) in keys.range_mut(begin.clone()..end.clone()) {
                        vs.insert(version, None);
                    }
                }
            }
        }

        /// The whole answer at `version`, in scan order, unlimited.
        fn live(
            &self,
            begin: &Bytes,
            end: &Bytes,
            version: Version,
            reverse: bool,
        ) -> Vec<(Bytes, Bytes)> {
            let keys = self.keys.lock().unwrap();
            let mut rows: Vec<(Bytes, Bytes)> = if begin < end {
                keys.range(begin.clone()..end.clone())
                    .filter_map(|(k, vs)| {
                        let v = vs.range(..=version).next_back()?.1.clone()?;
                        Some((k.clone(), v))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            if reverse {
                rows.reverse();
            }
            rows
        }
    }

    #[tonic::async_trait]
    impl PageSource for Versions {
        async fn get(&self, req: PageGetRequest) -> Result<Option<Bytes>> {
            let keys = self.keys.lock().unwrap();
            Ok(keys
                .get(&req.key)
                .and_then(|vs| vs.range(..=Version(req.version)).next_back())
                .and_then(|(_, v)| v.clone()))
        }
        async fn get_range(&self, req: PageGetRangeRequest) -> Result<RangeRows> {
            self.range_calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut rows = self.live(&req.begin, &req.end, Version(req.version), req.reverse);
            let limit = req.limit as usize;
            let mut more = limit > 0 && rows.len() > limit;
            if more {
                rows.truncate(limit);
            }
            // The byte cap as the pageserver applies it.
            let target = req.target_bytes as usize;
            more |= ferrisdb_common::message_size::cap_by_bytes(
                &mut rows,
                req.min_rows as usize,
                target,
                |(k, v)| ferrisdb_common::message_size::range_row_bytes(k, v),
            );
            let answered: usize = rows
                .iter()
                .map(|(k, v)| ferrisdb_common::message_size::range_row_bytes(k, v))
                .sum();
            self.range_bytes
                .fetch_add(answered as u64, std::sync::atomic::Ordering::Relaxed);
            Ok((rows, more))
        }
        async fn history(&self, req: HistoryRequest) -> Result<HistoryPage> {
            // Paged as the pageserver pages it: cut at the reply's byte target.
            let keys = self.keys.lock().unwrap();
            let mut entries: Vec<HistoryEntry> = keys
                .get(&req.key)
                .map(|vs| {
                    vs.range(Version(req.from_version)..=Version(req.to_version))
                        .map(|(v, value)| HistoryEntry {
                            version: v.0,
                            commit_time_micros: v.0,
                            value: value.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let more = ferrisdb_common::message_size::cap_history(&mut entries);
            self.history_entries
                .fetch_add(entries.len() as u64, std::sync::atomic::Ordering::Relaxed);
            Ok((entries, more))
        }
        async fn version_at(&self, _: VersionAtRequest) -> Result<Version> {
            Ok(Version::ZERO)
        }
        async fn status(&self, _: &str) -> Result<PageserverStatus> {
            Ok(PageserverStatus::default())
        }
    }

    /// A long history comes in pages, as a client reads it (each page from the version after
    /// the last one): every version once, in order, the pageserver's then the hot tier's, a
    /// range clear only where it removed a value; and each of the pageserver's entries is
    /// fetched once over all the pages, not again for every later page.
    #[tokio::test]
    async fn a_long_history_pages_without_fetching_again() {
        use ferrisdb_common::limits::{MAX_KEY_SIZE, MAX_VALUE_SIZE};
        use std::sync::atomic::Ordering::Relaxed;
        let model = Arc::new(Versions::default());
        // The largest key, so the page's bytes are not only values.
        let key = Bytes::from(vec![b'h'; MAX_KEY_SIZE]);
        let value = |i: u64| Bytes::from(vec![i as u8; MAX_VALUE_SIZE]);
        let below = 150u64;
        for v in 1..=below {
            model.write(
                Version(v),
                &Mutation::Set {
                    key: key.clone(),
                    value: value(v),
                },
            );
        }
        let floor = Version(below);
        let hot = Arc::new(HotTier::new(floor));
        let reader = TierReader::new(
            "db".into(),
            hot.clone(),
            None,
            model.clone(),
            Metrics::new().unwrap(),
        );
        // Above the floor: a set, a range clear that removes it, a range clear with nothing
        // to remove (not a version of the key), a set.
        let clear = Mutation::ClearRange {
            begin: b("h"),
            end: b("i"),
        };
        let set = |v: u64| Mutation::Set {
            key: key.clone(),
            value: value(v),
        };
        hot.apply(Version(151), 151, &[set(151)]);
        hot.apply(Version(152), 152, std::slice::from_ref(&clear));
        hot.apply(Version(153), 153, &[clear]);
        hot.apply(Version(154), 154, &[set(154)]);
        let to = Version(154);
        let (mut from, mut got, mut pages) = (Version(1), Vec::new(), 0);
        loop {
            let (entries, more) = reader.history(key.clone(), from, to).await.unwrap();
            pages += 1;
            let next = entries.last().map(|e| Version(e.version + 1));
            got.extend(entries);
            match next {
                Some(next) if more => from = next,
                _ => break,
            }
        }
        let versions: Vec<u64> = got.iter().map(|e| e.version).collect();
        let want: Vec<u64> = (1..=152).chain([154]).collect();
        assert_eq!(versions, want);
        assert_eq!(got[151].value, None, "the range clear that removed a value");
        assert_eq!(got[152].value.as_ref(), Some(&value(154)));
        assert!(pages > 3, "150 values of 100 kB come in pages, got {pages}");
        assert_eq!(
            model.history_entries.load(Relaxed),
            below,
            "each of the pageserver's versions is fetched once"
        );
    }

    /// Each read moves the counters of the tiers it passed: a hit where it was answered (and
    /// `reads_total` for that tier), a miss where it was passed on; a range read counts once
    /// as `range`, and once in the range cache.
    #[tokio::test]
    async fn reads_count_the_tiers_they_pass() {
        let model = Arc::new(Versions::default());
        let floor = Version(10);
        model.write(
            floor,
            &Mutation::Set {
                key: b("old"),
                value: b("1"),
            },
        );
        let cache = WarmTier::in_memory(1 << 20).await.unwrap().cache().clone();
        let warm = Arc::new(cache.tier(floor));
        let hot = Arc::new(HotTier::new(floor).with_observer(warm.clone()));
        let metrics = Metrics::new().unwrap();
        let reader = TierReader::new(
            "db".into(),
            hot.clone(),
            Some(warm),
            model.clone(),
            metrics.clone(),
        );
        let new = Version(11);
        hot.apply(
            new,
            0,
            &[Mutation::Set {
                key: b("new"),
                value: b("2"),
            }],
        );
        assert_eq!(reader.read(b("new"), new).await.unwrap(), Some(b("2")));
        assert_eq!(reader.read(b("old"), new).await.unwrap(), Some(b("1")));
        assert_eq!(reader.read(b("old"), new).await.unwrap(), Some(b("1")));
        for _ in 0..2 {
            let (rows, _) = reader
                .read_range(b("a"), b("z"), new, 0, false)
                .await
                .unwrap();
            assert_eq!(rows, vec![(b("new"), b("2")), (b("old"), b("1"))]);
        }
        let get =
            |vec: &prometheus::IntCounterVec, tier: &str| vec.with_label_values(&[tier]).get();
        let hits: Vec<u64> = ["hot", "warm", "pageserver", "range_cache"]
            .iter()
            .map(|t| get(&metrics.tier_hits, t))
            .collect();
        let misses: Vec<u64> = ["hot", "warm", "pageserver", "range_cache"]
            .iter()
            .map(|t| get(&metrics.tier_misses, t))
            .collect();
        let reads: Vec<u64> = ["hot", "warm", "pageserver", "range", "range_cache"]
            .iter()
            .map(|t| get(&metrics.reads, t))
            .collect();
        assert_eq!(
            hits,
            vec![1, 1, 1, 1],
            "hits: hot, warm, pageserver, range cache"
        );
        assert_eq!(
            misses,
            vec![2, 1, 0, 1],
            "misses: hot, warm, pageserver, range cache"
        );
        assert_eq!(
            reads,
            vec![1, 1, 1, 2, 0],
            "reads: hot, warm, pageserver, range, range cache"
        );
    }

    /// A short scan over the largest values reads ahead at most about half a cache chunk, not
    /// 64 rows of them, and its answers stay whole: forwards, backwards, repeated (the
    /// answers are too large to cache) and continued from a later key.
    #[tokio::test]
    async fn reading_ahead_over_the_largest_values_is_capped_in_bytes() {
        use ferrisdb_common::limits::{MAX_KEY_SIZE, MAX_VALUE_SIZE};
        use std::sync::atomic::Ordering::Relaxed;
        let model = Arc::new(Versions::default());
        let at = Version(10);
        let key = |i: u8| {
            let mut k = vec![b'k'; MAX_KEY_SIZE];
            k[MAX_KEY_SIZE - 1] = i;
            Bytes::from(k)
        };
        for i in 0..100u8 {
            model.write(
                at,
                &Mutation::Set {
                    key: key(i),
                    value: Bytes::from(vec![i; MAX_VALUE_SIZE]),
                },
            );
        }
        let cache = WarmTier::in_memory(1 << 20).await.unwrap().cache().clone();
        let warm = Arc::new(cache.tier(at));
        let hot = Arc::new(HotTier::new(at).with_observer(warm.clone()));
        let reader = TierReader::new(
            "db".into(),
            hot,
            Some(warm.clone()),
            model.clone(),
            Metrics::new().unwrap(),
        );
        let row = ferrisdb_common::message_size::range_row_bytes(
            &[0; MAX_KEY_SIZE],
            &[0; MAX_VALUE_SIZE],
        ) as u64;
        let mut calls = 0;
        for (lo, limit, reverse) in [(0, 1, false), (0, 1, false), (40, 3, false), (0, 2, true)] {
            let (begin, end) = (key(lo), key(100));
            let before = model.range_bytes.load(Relaxed);
            let got = reader
                .read_range(begin.clone(), end.clone(), at, limit, reverse)
                .await
                .unwrap();
            let mut want = model.live(&begin, &end, at, reverse);
            want.truncate(limit);
            assert_eq!(
                got,
                (want, true),
                "[{lo}, 100) limit {limit} reverse {reverse}"
            );
            // The rows needed and the one that tells whether more follow, nothing more.
            let answered = model.range_bytes.load(Relaxed) - before;
            assert_eq!(answered, (limit as u64 + 1) * row, "limit {limit}");
            calls += 1;
        }
        assert_eq!(model.range_calls.load(Relaxed), calls);
        assert_eq!(
            warm.ranges().usage(),
            (0, 0),
            "answers this large are not cached"
        );
    }

    /// Range reads through the tiers, the range cache included, against a model holding every
    /// version: random sets, clears and range clears, evictions at random points, and reads of
    /// random ranges (empty and inverted too) at versions from below the floor to the newest,
    /// forwards and backwards, with and without a limit. Every answer must be the model's.
    /// Several seeds, so the rarer interleavings (a range clear in the same eviction as a
    /// change to a cached range elsewhere, then a patch) come up.
    #[tokio::test]
    async fn range_reads_through_the_range_cache_match_a_model_of_every_version() {
        for seed in [0xfe11, 1, 2, 3, 4, 5, 6, 7] {
            range_reads_match_the_model(seed).await;
        }
    }

    async fn range_reads_match_the_model(seed: u64) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let key = |i: u32| b(&format!("k{i:02}"));
        let model = Arc::new(Versions::default());
        let start = Version(10);
        for i in (0..40).step_by(3) {
            model.write(
                start,
                &Mutation::Set {
                    key: key(i),
                    value: b(&format!("v{i}@10")),
                },
            );
        }
        // The view starts at 10: its caches know nothing below.
        let cache = WarmTier::in_memory(1 << 20).await.unwrap().cache().clone();
        let warm_at_start = Arc::new(cache.tier(start));
        let hot = Arc::new(HotTier::new(start).with_observer(warm_at_start.clone()));
        let reader = TierReader::new(
            "db".into(),
            hot.clone(),
            Some(warm_at_start.clone()),
            model.clone(),
            Metrics::new().unwrap(),
        );
        let mut newest = start;
        let mut checked = 0;
        for step in 0..6000 {
            match rng.random_range(0..20) {
                0..=1 => {
                    newest = Version(newest.0 + 1);
                    let m = match rng.random_range(0..10) {
                        0 => {
                            let lo: u32 = rng.random_range(0..40);
                            Mutation::ClearRange {
                                begin: key(lo),
                                end: key(lo + rng.random_range(1..6)),
                            }
                        }
                        1..=2 => Mutation::Clear {
                            key: key(rng.random_range(0..40)),
                        },
                        _ => Mutation::Set {
                            key: key(rng.random_range(0..40)),
                            value: b(&format!("s{step}")),
                        },
                    };
                    model.write(newest, &m);
                    hot.apply(newest, step, std::slice::from_ref(&m));
                }
                2 => {
                    let floor = hot.floor().0;
                    hot.evict_up_to(Version(rng.random_range(floor..=newest.0)));
                }
                _ => {
                    // Mostly a few popular ranges (so answers repeat and hit), sometimes any.
                    let (lo, hi): (u32, u32) = if rng.random_bool(0.7) {
                        [(0, 10), (5, 9), (12, 30), (20, 21), (33, 43), (1, 40)]
                            [rng.random_range(0..6)]
                    } else {
                        let lo = rng.random_range(0..42);
                        (lo, rng.random_range(lo.saturating_sub(2)..43))
                    };
                    let (begin, end) = (key(lo), key(hi));
                    let version = if rng.random_bool(0.7) {
                        newest
                    } else {
                        Version(rng.random_range(start.0..=newest.0))
                    };
                    let limit = rng.random_range(0..6);
                    let reverse = rng.random_bool(0.3);
                    let got = reader
                        .read_range(begin.clone(), end.clone(), version, limit, reverse)
                        .await
                        .unwrap();
                    let mut want = model.live(&begin, &end, version, reverse);
                    let more = limit > 0 && want.len() > limit;
                    if more {
                        want.truncate(limit);
                    }
                    let context = format!(
                        "seed {seed} step {step}: [{lo}, {hi}) at {version} limit {limit} reverse {reverse}, floor {}",
                        hot.floor()
                    );
                    assert_eq!(got.0, want, "{context}");
                    // `more` says the limit cut the range short: always when rows remain, and
                    // possibly (as in FoundationDB) when the limit was reached exactly.
                    let exact = limit > 0 && got.0.len() == limit;
                    assert!(
                        got.1 == more || (exact && got.1),
                        "{context}: more {}",
                        got.1
                    );
                    checked += 1;
                }
            }
        }
        let (hits, misses) = warm_at_start.ranges().hit_stats();
        assert!(checked > 4000, "{checked} reads checked");
        // The cache was exercised both ways (a hit skips the model's pageserver).
        assert!(hits > 100 && misses > 100, "hits {hits}, misses {misses}");
        assert_eq!(
            model.range_calls.load(std::sync::atomic::Ordering::Relaxed),
            misses
        );
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
