//! The primary: a compute that has won its term and serves reads and commits.

use std::future::Future;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use ferrisdb_common::proto::PageGetRequest;
use ferrisdb_common::proto::pageserver_client::PageserverClient;
use ferrisdb_common::{Error, ErrorKind, Result, Version};
use ferrisdb_server_common::auth::PeerChannel;
use ferrisdb_server_common::clock::Clock;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::committer::{CommitRequest, Committer};
use crate::hot_tier::{HotRead, HotTier};
use crate::metrics::Metrics;
use crate::proposer::Proposer;
use crate::resolver::KeyRange;
use crate::view::DatabaseView;
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
    pub pageserver: PageserverClient<PeerChannel>,
    /// The database read.
    pub database: String,
    /// Where hits and misses per tier are counted.
    pub metrics: Metrics,
}

impl PointReader {
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
        let value = self
            .pageserver
            .clone()
            .get(req)
            .instrument(span)
            .await?
            .into_inner()
            .value;
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

/// A compute that won its term: the proposer, the tiers and the pipeline.
#[derive(Debug)]
pub struct Primary {
    proposer: Arc<Proposer>,
    pipeline: mpsc::Sender<CommitRequest>,
    /// What reads are answered from; commits become visible in it.
    view: Arc<DatabaseView>,
    /// Read-version requests waiting for the next liveness check.
    read_checks: Arc<ReadChecks>,
    /// Tells the committer a read version was handed out (see committer::HEARTBEAT).
    read_versions_served: Arc<std::sync::atomic::AtomicBool>,
}

/// Batches read-version requests into liveness checks ([`Proposer::confirm_term`]), the way
/// FoundationDB's proxies batch theirs: one check in flight at a time; a request that arrives
/// while one is in flight waits for the next, so every request is answered by a check that
/// began after it arrived (docs/wal-protocol.md, "Linearizable reads").
#[derive(Debug)]
struct ReadChecks {
    proposer: Arc<Proposer>,
    view: Arc<DatabaseView>,
    metrics: Metrics,
    state: std::sync::Mutex<ReadBatch>,
}

/// The requests for the next check, and whether a check task is running.
#[derive(Debug, Default)]
struct ReadBatch {
    running: bool,
    waiting: Vec<oneshot::Sender<Result<Version>>>,
}

impl ReadChecks {
    /// A read version no older than any commit acknowledged (by any primary) before this call.
    async fn read_version(self: &Arc<Self>) -> Result<Version> {
        let (reply, answer) = oneshot::channel();
        let start = {
            // Nothing panics while holding the lock, so a poisoned one is still consistent.
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.waiting.push(reply);
            !std::mem::replace(&mut state.running, true)
        };
        if start {
            tokio::spawn(self.clone().run());
        }
        answer
            .await
            .map_err(|_| Error::unavailable("the read-version check stopped"))?
    }

    /// Runs checks while requests wait, each for the requests queued before it began.
    async fn run(self: Arc<Self>) {
        loop {
            let batch = {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                if state.waiting.is_empty() {
                    state.running = false;
                    return;
                }
                std::mem::take(&mut state.waiting)
            };
            // The version is taken before the check begins: every commit this primary
            // acknowledged before a batched request arrived is visible by now (the committer
            // makes a batch visible before answering it).
            let version = self.view.latest();
            let outcome = self.proposer.confirm_term().await.map(|()| version);
            let label = if outcome.is_ok() { "ok" } else { "refused" };
            self.metrics
                .liveness_checks
                .with_label_values(&[label])
                .inc();
            self.metrics.read_versions.inc_by(batch.len() as u64);
            for reply in batch {
                let _ = reply.send(outcome.clone());
            }
        }
    }
}

impl Primary {
    /// Finishes taking over after winning an election: waits until a majority holds the log
    /// as elected, then starts the pipeline with everything up to there committed.
    pub async fn start(
        database: String,
        proposer: Arc<Proposer>,
        pageserver: PageserverClient<PeerChannel>,
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
        let (view, committed_tx) =
            DatabaseView::new(database, start, pageserver, metrics.clone(), &tiers);
        let view = Arc::new(view);
        let (pipeline, requests) = mpsc::channel(4096);
        let committer = Committer::new(
            proposer.clone(),
            start,
            view.reader().clone(),
            clock,
            committed_tx,
            view.watches().clone(),
            metrics.clone(),
        );
        let read_versions_served = committer.read_versions_served();
        tokio::spawn(committer.run(requests));
        metrics.committed_version.set(start.0 as i64);
        tokio::spawn(view.clone().evict_loop(Some(proposer.clone())));
        let read_checks = Arc::new(ReadChecks {
            proposer: proposer.clone(),
            view: view.clone(),
            metrics,
            state: std::sync::Mutex::default(),
        });
        let primary = Arc::new(Primary {
            proposer,
            pipeline,
            view,
            read_checks,
            read_versions_served,
        });
        tracing::info!(database = %primary.database(), term = primary.proposer.term(), %start, "primary serving");
        Ok(primary)
    }

    /// The term this primary leads.
    pub fn term(&self) -> u64 {
        self.proposer.term()
    }

    /// Waits until a newer term fences this primary, and says why.
    pub async fn fenced(&self) -> String {
        let mut quorum = self.proposer.watch_quorum();
        let why = match quorum.wait_for(|q| q.fenced.is_some()).await {
            Ok(q) => q.fenced.clone(),
            Err(_) => None,
        };
        why.unwrap_or_else(|| "the proposer stopped".to_string())
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

    /// A read version for a new transaction: the latest commit, once a safekeeper majority
    /// has confirmed (in a check that began after this call) that this compute still holds
    /// its term. So it is never older than a commit acknowledged anywhere before this call;
    /// `unavailable` when the check fails (cut off from the safekeepers), `fenced` when a
    /// newer term exists.
    pub async fn read_version(&self) -> Result<Version> {
        self.check_not_fenced()?;
        // An idle pipeline supersedes it soon, so it ages even without traffic.
        self.read_versions_served
            .store(true, std::sync::atomic::Ordering::Release);
        self.read_checks.read_version().await
    }

    /// Runs `read` at the latest visible version and gives its answer, with that version, once
    /// a liveness check that began after this call confirmed the term, as
    /// [`Primary::read_version`] does; the read and the check run concurrently, so a read at
    /// the latest version costs the client one round trip. Reading at the version visible when
    /// the call arrived is as safe as reading at the one the check takes when it begins (the
    /// argument of docs/wal-protocol.md needs only a version taken after the request arrived,
    /// and the check begins after that).
    pub async fn read_latest<T, F, Fut>(&self, read: F) -> Result<(Version, T)>
    where
        F: FnOnce(Version) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.check_not_fenced()?;
        let version = self.view.latest();
        let (_, answer) = tokio::try_join!(self.read_version(), read(version))?;
        Ok((version, answer))
    }

    /// What reads are answered from.
    pub fn view(&self) -> &Arc<DatabaseView> {
        &self.view
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
            // The request's span (the gRPC server span), which the batch continues.
            trace: ferrisdb_server_common::telemetry::current(),
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
        let mut status = serde_json::json!({
            "role": if q.fenced.is_some() { "fenced" } else { "primary" },
            "term": self.proposer.term(),
            "committed_version": self.view.latest(),
            "safekeepers": q.peers.iter().map(|p| serde_json::json!({"up": p.up, "flush_lsn": p.flush})).collect::<Vec<_>>(),
        });
        if let (Some(s), serde_json::Value::Object(tiers)) =
            (status.as_object_mut(), self.view.tier_status())
        {
            s.extend(tiers);
        }
        status
    }

    /// The pageserver client, for admin calls.
    pub fn pageserver(&self) -> PageserverClient<PeerChannel> {
        self.view.pageserver()
    }

    /// The database served.
    pub fn database(&self) -> &str {
        self.view.database()
    }
}
