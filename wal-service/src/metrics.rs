//! Safekeeper metrics, exported on `/metrics`.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

/// The safekeeper's counters and histograms.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Where they are registered.
    pub registry: Registry,
    /// Appends that wrote WAL.
    pub appends: IntCounter,
    /// WAL bytes appended.
    pub append_bytes: IntCounter,
    /// Group commits: fdatasyncs that made appends durable.
    pub fsyncs: IntCounter,
    /// Time from receiving an append to its fdatasync completing.
    pub append_seconds: Histogram,
    /// Databases that failed to open at all (e.g. a damaged control file).
    pub broken_databases: IntCounter,
    /// Databases whose WAL is damaged right now, not served until repaired from a peer.
    pub damaged_databases: IntGauge,
    /// Damaged logs repaired from a peer.
    pub repairs: IntCounter,
    /// Appends refused because the WAL disk budget was full.
    pub budget_refusals: IntCounter,
    /// Appends refused because their bytes differed from the WAL already held.
    pub wal_mismatches: IntCounter,
    /// Requests refused because they would have created a database past `--max-databases`.
    pub database_refusals: IntCounter,
    /// Memory the buffers of newest WAL hold (see [`crate::recent`]).
    pub recent_wal_bytes: IntGauge,
    /// Appends that failed on this safekeeper's own disk (a full disk, an I/O error).
    pub append_failures: IntCounter,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let appends = IntCounter::new(
            "ferrisdb_safekeeper_appends_total",
            "Appends that wrote WAL",
        )?;
        let append_bytes = IntCounter::new(
            "ferrisdb_safekeeper_append_bytes_total",
            "WAL bytes appended",
        )?;
        let fsyncs = IntCounter::new(
            "ferrisdb_safekeeper_group_fsyncs_total",
            "fdatasyncs that made appends durable (appends / this = group size)",
        )?;
        let append_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "ferrisdb_safekeeper_append_seconds",
                "Append latency including fdatasync",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16)?),
        )?;
        let broken_databases = IntCounter::new(
            "ferrisdb_safekeeper_unopenable_databases_total",
            "Databases that failed to open (e.g. a damaged control file)",
        )?;
        let damaged_databases = IntGauge::new(
            "ferrisdb_safekeeper_damaged_databases",
            "Databases whose WAL failed its checksums and is not served until repaired",
        )?;
        let budget_refusals = IntCounter::new(
            "ferrisdb_safekeeper_budget_refusals_total",
            "Appends refused because the WAL disk budget was full",
        )?;
        let repairs = IntCounter::new(
            "ferrisdb_safekeeper_repairs_total",
            "Damaged logs repaired from a peer",
        )?;
        let wal_mismatches = IntCounter::new(
            "ferrisdb_safekeeper_wal_mismatches_total",
            "Appends refused because their bytes differed from the WAL already held",
        )?;
        let database_refusals = IntCounter::new(
            "ferrisdb_safekeeper_database_refusals_total",
            "Requests refused because they would have created a database past --max-databases",
        )?;
        let recent_wal_bytes = IntGauge::new(
            "ferrisdb_safekeeper_recent_wal_bytes",
            "Memory held by the buffers of newest WAL that answer readers at the log's end",
        )?;
        let append_failures = IntCounter::new(
            "ferrisdb_safekeeper_append_failures_total",
            "Appends that failed writing or syncing this safekeeper's WAL (disk full, I/O error)",
        )?;
        registry.register(Box::new(append_failures.clone()))?;
        registry.register(Box::new(recent_wal_bytes.clone()))?;
        registry.register(Box::new(wal_mismatches.clone()))?;
        registry.register(Box::new(database_refusals.clone()))?;
        registry.register(Box::new(appends.clone()))?;
        registry.register(Box::new(append_bytes.clone()))?;
        registry.register(Box::new(fsyncs.clone()))?;
        registry.register(Box::new(append_seconds.clone()))?;
        registry.register(Box::new(broken_databases.clone()))?;
        registry.register(Box::new(damaged_databases.clone()))?;
        registry.register(Box::new(repairs.clone()))?;
        registry.register(Box::new(budget_refusals.clone()))?;
        Ok(Metrics {
            registry,
            appends,
            append_bytes,
            fsyncs,
            append_seconds,
            broken_databases,
            damaged_databases,
            repairs,
            budget_refusals,
            wal_mismatches,
            database_refusals,
            append_failures,
            recent_wal_bytes,
        })
    }
}
