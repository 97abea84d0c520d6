//! Compute metrics, exported on `/metrics`.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The compute's counters and gauges.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Where they are registered.
    pub registry: Registry,
    /// Transactions committed.
    pub commits: IntCounter,
    /// WAL batches made durable.
    pub batches: IntCounter,
    /// Transactions refused with `not_committed`.
    pub conflicts: IntCounter,
    /// Reads by the tier that answered (`hot`, `pageserver`).
    pub reads: IntCounterVec,
    /// The latest committed version.
    pub committed_version: IntGauge,
    /// Bytes held in the hot tier.
    pub hot_tier_bytes: IntGauge,
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
        let committed_version = IntGauge::new(
            "ferrisdb_compute_committed_version",
            "Latest committed version",
        )?;
        let hot_tier_bytes = IntGauge::new(
            "ferrisdb_compute_hot_tier_bytes",
            "Bytes held in the hot tier",
        )?;
        registry.register(Box::new(commits.clone()))?;
        registry.register(Box::new(batches.clone()))?;
        registry.register(Box::new(conflicts.clone()))?;
        registry.register(Box::new(reads.clone()))?;
        registry.register(Box::new(committed_version.clone()))?;
        registry.register(Box::new(hot_tier_bytes.clone()))?;
        Ok(Metrics {
            registry,
            commits,
            batches,
            conflicts,
            reads,
            committed_version,
            hot_tier_bytes,
        })
    }
}
