//! The primary: a compute that has won its term and serves reads and commits.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferrisdb_common::clock::Clock;
use ferrisdb_common::proto::pageserver_client::PageserverClient;
use ferrisdb_common::proto::{
    HistoryEntry, HistoryRequest, PageGetRangeRequest, PageGetRequest, PageserverStatusRequest,
    VersionAtRequest,
};
use ferrisdb_common::{Error, ErrorKind, Result, Version};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::Channel;

use crate::committer::{CommitRequest, Committer};
use crate::hot_tier::{HotRead, HotTier};
use crate::metrics::Metrics;
use crate::proposer::Proposer;
use crate::resolver::KeyRange;
use crate::warm_tier::{WarmCache, WarmTier, WarmTierConfig};
use crate::watches::{Fired, Watches};

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

impl Tiers {
    /// Opens the warm cache (its disk tier too) as configured.
    pub async fn open(config: &TierConfig) -> Result<Tiers> {
        Ok(Tiers {
            hot_budget_bytes: config.hot_budget_bytes,
            warm: Some(WarmCache::open(&config.warm).await?),
        })
    }
}

/// What a primary's tiers are built with: the hot tier's memory budget and the warm cache
/// shared by every database of the compute.
#[derive(Debug, Clone, Default)]
pub struct Tiers {
    /// Past this many bytes in the hot tier, commits wait for evictions (0: no budget).
    pub hot_budget_bytes: usize,
    /// The warm tier's cache (`None`: reads the hot tier cannot answer go to the pageserver).
    pub warm: Option<Arc<WarmCache>>,
}

/// Point reads of one database: the hot tier, then the warm tier, then the pageserver, the
/// last two at the hot tier's floor.
#[derive(Debug, Clone)]
pub struct PointReader {
    /// The hot tier.
    pub hot: Arc<HotTier>,
    /// The warm tier, if any.
    pub warm: Option<Arc<WarmTier>>,
    /// The pageserver.
    pub pageserver: PageserverClient<Channel>,
    /// The database read.
    pub database: String,
    /// Where hits and misses per tier are counted.
    pub metrics: Metrics,
}

impl PointReader {
    /// The value of `key` at `version`: from the hot tier; or, when the key has not changed
    /// since the hot tier's floor, from the warm tier or the pageserver at that floor.
    pub async fn read(&self, key: Bytes, version: Version) -> Result<Option<Bytes>> {
        let at = match self.hot.get(&key, version) {
            HotRead::Found(v) => {
                self.count("hot", true);
                return Ok(v);
            }
            HotRead::AskPageserverAt(at) => at,
        };
        self.count("hot", false);
        // The warm tier is asked only after the hot tier loaded its floor (its correctness
        // argument depends on that order; see warm_tier).
        if let Some(warm) = &self.warm {
            if let Some(v) = warm.get(&key, at).await {
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
        let value = self.pageserver.clone().get(req).await?.into_inner().value;
        self.count("pageserver", true);
        if let Some(warm) = &self.warm {
            warm.insert(&key, at, value.as_ref());
        }
        Ok(value)
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

/// How often the pageserver's ingest position is polled to evict the hot tier.
const EVICT_EVERY: Duration = Duration::from_millis(200);

/// A compute that won its term: the proposer, the tiers and the pipeline.
#[derive(Debug)]
pub struct Primary {
    database: String,
    proposer: Arc<Proposer>,
    hot: Arc<HotTier>,
    committed: watch::Receiver<Version>,
    pipeline: mpsc::Sender<CommitRequest>,
    pageserver: PageserverClient<Channel>,
    /// Point reads through the hot tier to the pageserver (the committer has a copy).
    reader: PointReader,
    /// Clients waiting for keys to change.
    watches: Arc<Watches>,
    metrics: Metrics,
}

/// Outstanding watches one compute holds per database before refusing more.
const MAX_WATCHES: usize = 100_000;

impl Primary {
    /// Finishes taking over after winning an election: waits until a majority holds the log
    /// as elected, then starts the pipeline with everything up to there committed.
    pub async fn start(
        database: String,
        proposer: Arc<Proposer>,
        pageserver: PageserverClient<Channel>,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        tiers: Tiers,
    ) -> Result<Arc<Primary>> {
        proposer.start();
        let start = proposer.elected_end();
        proposer
            .wait_durable(start, Duration::from_secs(30))
            .await?;
        proposer.set_commit(start);
        let start = Version(start);
        let warm = tiers.warm.as_ref().map(|w| Arc::new(w.tier()));
        let mut hot = HotTier::new(start).with_budget(tiers.hot_budget_bytes);
        if let Some(w) = &warm {
            hot = hot.with_observer(w.clone());
        }
        let hot = Arc::new(hot);
        metrics
            .hot_tier_budget_bytes
            .set(i64::try_from(hot.budget()).unwrap_or(i64::MAX));
        let (committed_tx, committed) = watch::channel(start);
        let (pipeline, requests) = mpsc::channel(4096);
        let reader = PointReader {
            hot: hot.clone(),
            warm,
            pageserver: pageserver.clone(),
            database: database.clone(),
            metrics: metrics.clone(),
        };
        let watches = Arc::new(Watches::new(MAX_WATCHES));
        let committer = Committer::new(
            proposer.clone(),
            start,
            reader.clone(),
            clock,
            committed_tx,
            watches.clone(),
            metrics.clone(),
        );
        tokio::spawn(committer.run(requests));
        metrics.committed_version.set(start.0 as i64);
        let primary = Arc::new(Primary {
            database,
            proposer,
            hot,
            committed,
            pipeline,
            pageserver,
            reader,
            watches,
            metrics,
        });
        tokio::spawn(primary.clone().evict_loop());
        tracing::info!(database = %primary.database, term = primary.proposer.term(), %start, "primary serving");
        Ok(primary)
    }

    /// The term this primary leads.
    pub fn term(&self) -> u64 {
        self.proposer.term()
    }

    /// Refuses with `fenced` once a newer term has taken over.
    fn check_not_fenced(&self) -> Result<()> {
        match &self.proposer.watch_quorum().borrow().fenced {
            Some(why) => Err(Error::new(
                ErrorKind::Fenced,
                format!("this compute is no longer primary: {why}"),
            )),
            None => Ok(()),
        }
    }

    /// The latest committed version.
    pub fn read_version(&self) -> Result<Version> {
        self.check_not_fenced()?;
        Ok(*self.committed.borrow())
    }

    fn check_version(&self, version: Version) -> Result<()> {
        let committed = *self.committed.borrow();
        if version > committed {
            return Err(Error::new(
                ErrorKind::FutureVersion,
                format!("version {version} is newer than the latest commit {committed}"),
            ));
        }
        Ok(())
    }

    /// A point read at `version`.
    pub async fn get(&self, key: Bytes, version: Version) -> Result<Option<Bytes>> {
        self.check_version(version)?;
        self.reader.read(key, version).await
    }

    /// A range read at `version`: the pageserver's answer at the hot tier's floor, overlaid
    /// with the hot tier's newer entries.
    pub async fn get_range(
        &self,
        begin: Bytes,
        end: Bytes,
        version: Version,
        limit: usize,
        reverse: bool,
    ) -> Result<(Vec<(Bytes, Bytes)>, bool)> {
        self.check_version(version)?;
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
            let mut pageserver = self.pageserver.clone();
            async move {
                let resp = pageserver.get_range(req).await?.into_inner();
                let rows = resp.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
                Ok((rows, resp.more))
            }
        })
        .await
    }

    /// Waits until the committed value of `key` differs from `known`; returns the version
    /// that made it differ (the latest, if it already does) and the value there.
    pub async fn watch(&self, key: Bytes, known: Option<Bytes>) -> Result<Fired> {
        // Register before reading, so a commit between the read and the wait is not missed
        // (see the watches module).
        let fired = self.watches.register(key.clone(), known.clone())?;
        let now = self.read_version()?;
        let current = self.reader.read(key, now).await?;
        if current != known {
            return Ok((now, current));
        }
        fired.await.map_err(|_| {
            Error::unavailable("the compute stopped serving this database; watch again")
        })
    }

    /// Every version of `key` in `[from, to]` (`to` 0: the latest), oldest first: the
    /// pageserver's up to the hot tier's floor, the hot tier's above it.
    pub async fn history(
        &self,
        key: Bytes,
        from: Version,
        to: Version,
    ) -> Result<Vec<HistoryEntry>> {
        let committed = *self.committed.borrow();
        let to = if to == Version::ZERO { committed } else { to };
        self.check_version(to)?;
        let (hot, floor) = self.hot.history(&key, to);
        let key_for_reads = key.clone();
        let mut entries = Vec::new();
        if from <= floor {
            let req = HistoryRequest {
                database: self.database.clone(),
                key: key_for_reads,
                from_version: from.0,
                to_version: to.min(floor).0,
            };
            // Version 0 means "latest" on the wire; an empty range below version 1 has nothing.
            if req.to_version > 0 {
                entries = self
                    .pageserver
                    .clone()
                    .history(req)
                    .await?
                    .into_inner()
                    .entries;
            }
        }
        for (v, time, value, range_clear) in hot.into_iter().filter(|e| e.0 >= from) {
            // A range clear is a version of this key only where it removed a value.
            if range_clear {
                let had_value = match entries.last() {
                    Some(prev) => prev.value.is_some(),
                    None => self.get(key.clone(), Version(v.0 - 1)).await?.is_some(),
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
        if let Some(warm) = &self.reader.warm {
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
        let version = Version(
            self.pageserver
                .clone()
                .version_at(req)
                .await?
                .into_inner()
                .version,
        );
        if let Some(warm) = &self.reader.warm
            && settled
        {
            warm.remember_version_at(time_micros, version).await;
        }
        Ok(version)
    }

    /// Queues a commit and waits for its outcome.
    pub async fn commit(
        &self,
        read_version: Version,
        reads: Vec<KeyRange>,
        writes: Vec<KeyRange>,
        mutations: Vec<crate::atomics::Write>,
    ) -> Result<crate::committer::Committed> {
        self.check_not_fenced()?;
        let (reply, outcome) = oneshot::channel();
        let req = CommitRequest {
            read_version,
            reads,
            writes,
            mutations,
            reply,
        };
        self.pipeline
            .send(req)
            .await
            .map_err(|_| Error::unavailable("commit pipeline stopped"))?;
        outcome.await.map_err(|_| {
            Error::new(
                ErrorKind::CommitUnknownResult,
                "commit pipeline stopped mid-commit",
            )
        })?
    }

    /// Status for the admin API.
    pub fn status(&self) -> serde_json::Value {
        let q = self.proposer.watch_quorum().borrow().clone();
        let (floor, entries, bytes) = self.hot.stats();
        let budget = Some(self.hot.budget()).filter(|b| *b != usize::MAX);
        let warm = self.reader.warm.as_ref().map(|w| w.status());
        serde_json::json!({
            "role": if q.fenced.is_some() { "fenced" } else { "primary" },
            "term": self.proposer.term(),
            "committed_version": *self.committed.borrow(),
            "safekeepers": q.peers.iter().map(|p| serde_json::json!({"up": p.up, "flush_lsn": p.flush})).collect::<Vec<_>>(),
            "hot_tier": {
                "floor": floor,
                "entries": entries,
                "bytes": bytes,
                "budget_bytes": budget,
                "over_budget": self.hot.over_budget(),
            },
            "warm_tier": warm,
        })
    }

    /// The pageserver client, for admin calls.
    pub fn pageserver(&self) -> PageserverClient<Channel> {
        self.pageserver.clone()
    }

    /// The database served.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Raises the hot tier's floor as the pageserver ingests.
    async fn evict_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(EVICT_EVERY).await;
            let req = PageserverStatusRequest {
                database: self.database.clone(),
            };
            if let Ok(resp) = self.pageserver.clone().get_status(req).await {
                let resp = resp.into_inner();
                self.proposer.set_log_start(resp.remote_consistent_version);
                let ingested = Version(resp.ingested_version);
                let committed = *self.committed.borrow();
                self.hot.evict_up_to(ingested.min(committed));
            }
            let (_, entries, bytes) = self.hot.stats();
            self.metrics.hot_tier_bytes.set(bytes as i64);
            self.metrics.hot_tier_entries.set(entries as i64);
            if let Some(warm) = &self.reader.warm {
                let cache = warm.cache();
                let gauge = &self.metrics.warm_tier_bytes;
                gauge
                    .with_label_values(&["memory"])
                    .set(cache.memory_bytes() as i64);
                gauge
                    .with_label_values(&["disk"])
                    .set(cache.disk_bytes() as i64);
            }
            self.metrics
                .committed_version
                .set(self.committed.borrow().0 as i64);
        }
    }
}
