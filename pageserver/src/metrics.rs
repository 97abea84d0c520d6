//! Pageserver metrics, exported on `/metrics`.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

/// The pageserver's counters and gauges.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Where they are registered.
    pub registry: Registry,
    /// The highest version applied, by database.
    pub ingested_version: IntGaugeVec,
    /// The highest version in object storage, by database.
    pub remote_consistent_version: IntGaugeVec,
    /// WAL records applied.
    pub ingested_records: IntCounter,
    /// Checkpoints uploaded.
    pub checkpoints: IntCounter,
    /// Checkpoints asked for early because a safekeeper's WAL neared its budget.
    pub early_checkpoints: IntCounter,
    /// Checkpoints that failed (the object store refused or did not answer, usually); each
    /// is retried, and what it held stays in memory meanwhile.
    pub checkpoint_failures: IntCounter,
    /// Databases whose WAL ingestion waits for a checkpoint: their in-memory layers hold
    /// what [`crate::timeline::HELD_CHECKPOINTS`] checkpoints would upload.
    pub ingest_paused: IntGauge,
    /// Live layers, by database.
    pub layers: IntGaugeVec,
    /// Reads served (get and range).
    pub reads: IntCounter,
    /// Read amplification: layers (in-memory and in object storage) a point read consulted.
    pub read_layers: Histogram,
    /// Objects no manifest named, deleted by the orphan sweep.
    pub orphans_deleted: IntCounter,
    /// Superseded manifest generations deleted by the same sweep.
    pub manifests_deleted: IntCounter,
    /// Databases held as broken: their objects are damaged and they are not served.
    pub broken_databases: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let by_database =
            |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &["database"]);
        let ingested_version = by_database(
            "ferrisdb_pageserver_ingested_version",
            "Highest version applied, by database",
        )?;
        let remote_consistent_version = by_database(
            "ferrisdb_pageserver_remote_consistent_version",
            "Highest version durable in object storage, by database",
        )?;
        let ingested_records = IntCounter::new(
            "ferrisdb_pageserver_ingested_records_total",
            "WAL records applied",
        )?;
        let checkpoints = IntCounter::new(
            "ferrisdb_pageserver_checkpoints_total",
            "Checkpoints uploaded",
        )?;
        let early_checkpoints = IntCounter::new(
            "ferrisdb_pageserver_early_checkpoints_total",
            "Checkpoints asked for before their time because a safekeeper's WAL neared its budget",
        )?;
        let checkpoint_failures = IntCounter::new(
            "ferrisdb_pageserver_checkpoint_failures_total",
            "Checkpoints that failed (object store errors, usually); retried, their data kept in memory",
        )?;
        let ingest_paused = IntGauge::new(
            "ferrisdb_pageserver_ingest_paused",
            "Databases whose WAL ingestion waits for a checkpoint to upload (the in-memory layers are full)",
        )?;
        let layers = by_database("ferrisdb_pageserver_layers", "Live layers, by database")?;
        let reads = IntCounter::new("ferrisdb_pageserver_reads_total", "Reads served")?;
        let orphans_deleted = IntCounter::new(
            "ferrisdb_pageserver_orphans_deleted_total",
            "Objects no manifest named (left by an upload or deletion that did not finish), deleted",
        )?;
        let manifests_deleted = IntCounter::new(
            "ferrisdb_pageserver_manifests_deleted_total",
            "Superseded manifest generations deleted (the newest few of each database are kept)",
        )?;
        let broken_databases = IntGauge::new(
            "ferrisdb_pageserver_broken_databases",
            "Databases not served because their objects in the bucket are damaged",
        )?;
        let read_layers = Histogram::with_opts(
            HistogramOpts::new(
                "ferrisdb_pageserver_read_layers",
                "Layers a point read consulted before it had its answer (read amplification)",
            )
            .buckets(vec![1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0]),
        )?;
        registry.register(Box::new(read_layers.clone()))?;
        for c in [
            &ingested_records,
            &checkpoints,
            &early_checkpoints,
            &checkpoint_failures,
            &reads,
            &orphans_deleted,
            &manifests_deleted,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        for g in [&ingested_version, &remote_consistent_version, &layers] {
            registry.register(Box::new(g.clone()))?;
        }
        registry.register(Box::new(broken_databases.clone()))?;
        registry.register(Box::new(ingest_paused.clone()))?;
        Ok(Metrics {
            registry,
            ingested_version,
            remote_consistent_version,
            ingested_records,
            checkpoints,
            early_checkpoints,
            checkpoint_failures,
            ingest_paused,
            layers,
            reads,
            read_layers,
            orphans_deleted,
            manifests_deleted,
            broken_databases,
        })
    }
}
