//! Compute metrics, exported on `/metrics`.
//!
//! The registry is shared by every database a compute serves, so the gauges show the last
//! writer; the counters add up over all of them.

use prometheus::{
    Counter, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// The compute's counters and gauges.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Where they are registered.
    pub registry: Registry,
    /// Transactions committed.
    pub commits: IntCounter,
    /// WAL batches made durable.
    pub batches: IntCounter,
    /// From a batch's append to a safekeeper quorum holding it (fsynced).
    pub batch_quorum_seconds: Histogram,
    /// Transactions refused with `not_committed`.
    pub conflicts: IntCounter,
    /// Reads by the tier that answered (`hot`, `warm`, `pageserver`, `range`).
    pub reads: IntCounterVec,
    /// Point lookups a tier answered, by tier (`hot`, `warm`, `pageserver`).
    pub tier_hits: IntCounterVec,
    /// Point lookups a tier could not answer, by tier (`hot`, `warm`).
    pub tier_misses: IntCounterVec,
    /// The latest committed version, by database (a compute serves its branches too).
    pub committed_version: IntGaugeVec,
    /// Bytes held in the hot tier, by database.
    pub hot_tier_bytes: IntGaugeVec,
    /// Entries held in the hot tier, by database.
    pub hot_tier_entries: IntGaugeVec,
    /// The hot tier's memory budget.
    pub hot_tier_budget_bytes: IntGauge,
    /// Bytes held by the warm tier, by medium (`memory`, `disk`).
    pub warm_tier_bytes: IntGaugeVec,
    /// `version_at` answers from the warm tier's metadata cache, by outcome (`hit`, `miss`).
    pub version_at_cache: IntCounterVec,
    /// Seconds commits spent waiting for the hot tier to get under its budget.
    pub commit_throttled_seconds: Counter,
    /// 1 while commits wait for the hot tier to get under its budget.
    pub commit_throttled: IntGauge,
    /// Liveness checks behind read versions, by outcome (`ok`, `refused`).
    pub liveness_checks: IntCounterVec,
    /// Read versions answered by a liveness check (over `liveness_checks`: the batch size).
    pub read_versions: IntCounter,
    /// Read versions answered under the read lease, with no liveness check.
    pub leased_read_versions: IntCounter,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let commits = IntCounter::new("ferrisdb_compute_commits_total", "Transactions committed")?;
        let batches = IntCounter::new(
            "ferrisdb_compute_commit_batches_total",
            "WAL batches made durable",
        )?;
        let conflicts = IntCounter::new(
            "ferrisdb_compute_conflicts_total",
            "Transactions refused with not_committed",
        )?;
        let reads = IntCounterVec::new(
            Opts::new(
                "ferrisdb_compute_reads_total",
                "Reads by the tier that answered",
            ),
            &["tier"],
        )?;
        let tier_hits = IntCounterVec::new(
            Opts::new(
                "ferrisdb_compute_tier_hits_total",
                "Point lookups a tier answered (hot, warm, pageserver)",
            ),
            &["tier"],
        )?;
        let tier_misses = IntCounterVec::new(
            Opts::new(
                "ferrisdb_compute_tier_misses_total",
                "Point lookups a tier could not answer, passed to the next (hot, warm)",
            ),
            &["tier"],
        )?;
        let committed_version = IntGaugeVec::new(
            Opts::new(
                "ferrisdb_compute_committed_version",
                "Latest committed version, by database",
            ),
            &["database"],
        )?;
        let hot_tier_bytes = IntGaugeVec::new(
            Opts::new(
                "ferrisdb_compute_hot_tier_bytes",
                "Bytes held in the hot tier, by database",
            ),
            &["database"],
        )?;
        let hot_tier_entries = IntGaugeVec::new(
            Opts::new(
                "ferrisdb_compute_hot_tier_entries",
                "Point entries held in the hot tier, by database",
            ),
            &["database"],
        )?;
        let hot_tier_budget_bytes = IntGauge::new(
            "ferrisdb_compute_hot_tier_budget_bytes",
            "The hot tier's memory budget; past it commits wait for evictions",
        )?;
        let warm_tier_bytes = IntGaugeVec::new(
            Opts::new(
                "ferrisdb_compute_warm_tier_bytes",
                "Bytes held by the warm tier (disk: estimated)",
            ),
            &["medium"],
        )?;
        let version_at_cache = IntCounterVec::new(
            Opts::new(
                "ferrisdb_compute_version_at_cache_total",
                "version_at lookups in the warm tier's metadata cache",
            ),
            &["outcome"],
        )?;
        let commit_throttled_seconds = Counter::new(
            "ferrisdb_compute_commit_throttled_seconds_total",
            "Seconds commits waited for the hot tier to get under its memory budget",
        )?;
        let commit_throttled = IntGauge::new(
            "ferrisdb_compute_commit_throttled",
            "1 while commits wait for the hot tier to get under its memory budget",
        )?;
        let liveness_checks = IntCounterVec::new(
            Opts::new(
                "ferrisdb_compute_liveness_checks_total",
                "Checks with a safekeeper majority that this primary still holds its term, \
                 made before handing out read versions, by outcome (ok, refused)",
            ),
            &["outcome"],
        )?;
        let read_versions = IntCounter::new(
            "ferrisdb_compute_read_versions_total",
            "Read versions answered by a liveness check (refused ones included)",
        )?;
        let leased_read_versions = IntCounter::new(
            "ferrisdb_compute_leased_read_versions_total",
            "Read versions answered under the primary's read lease, without a liveness check",
        )?;
        registry.register(Box::new(leased_read_versions.clone()))?;
        registry.register(Box::new(liveness_checks.clone()))?;
        registry.register(Box::new(read_versions.clone()))?;
        registry.register(Box::new(commits.clone()))?;
        registry.register(Box::new(batches.clone()))?;
        let batch_quorum_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "ferrisdb_compute_batch_quorum_seconds",
                "From a WAL batch's append to a safekeeper quorum holding it",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16)?),
        )?;
        registry.register(Box::new(batch_quorum_seconds.clone()))?;
        registry.register(Box::new(conflicts.clone()))?;
        registry.register(Box::new(reads.clone()))?;
        registry.register(Box::new(tier_hits.clone()))?;
        registry.register(Box::new(tier_misses.clone()))?;
        registry.register(Box::new(committed_version.clone()))?;
        registry.register(Box::new(hot_tier_bytes.clone()))?;
        registry.register(Box::new(hot_tier_entries.clone()))?;
        registry.register(Box::new(hot_tier_budget_bytes.clone()))?;
        registry.register(Box::new(warm_tier_bytes.clone()))?;
        registry.register(Box::new(version_at_cache.clone()))?;
        registry.register(Box::new(commit_throttled_seconds.clone()))?;
        registry.register(Box::new(commit_throttled.clone()))?;
        Ok(Metrics {
            registry,
            commits,
            batches,
            batch_quorum_seconds,
            conflicts,
            reads,
            tier_hits,
            tier_misses,
            committed_version,
            hot_tier_bytes,
            hot_tier_entries,
            hot_tier_budget_bytes,
            warm_tier_bytes,
            version_at_cache,
            commit_throttled_seconds,
            commit_throttled,
            liveness_checks,
            read_versions,
            leased_read_versions,
        })
    }
}
