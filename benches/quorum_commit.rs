//! Quorum-commit benchmark: what a commit costs next to what the disk's own fdatasync costs.
//!
//! ```sh
//! export CARGO_TARGET_DIR=$HOME/.cache/ferrisdb-target   # optional: a shared build cache
//! cargo bench --bench quorum_commit
//! ```
//!
//! It starts an in-process cluster on 127.0.0.1 — three safekeepers, a pageserver on
//! `memory://` object storage and a compute — then:
//!
//! 1. measures the baseline: 2000 appends of a 200-byte record to a file opened for append, each
//!    followed by `fdatasync` (`File::sync_data`), in the same filesystem as the safekeepers'
//!    data directories, with one writer — once before the cluster starts and once after it
//!    stops, so drift in the disk's latency shows; the ratio column uses both runs together;
//! 2. for 1, 16 and 128 concurrent writers, runs blind-write transactions (one `set` of a unique
//!    key to a 100-byte value, then `commit`) through the SDK for a fixed duration, recording the
//!    latency of every acknowledged commit in an HDR histogram (microseconds) and counting
//!    failed commits separately, by error code. 100 unmeasured commits warm the path up first.
//!
//! 3. stops the compute, starts the same compute engine in this process (it wins the next term
//!    on the same safekeepers) and runs the same levels calling the primary directly — a read
//!    version, then `Primary::commit` — with no gRPC between the writers and the engine. The
//!    ratio of the two rates shows what the client protocol costs.
//!
//! All gRPC writers share one [`Database`] (clones of it share one HTTP/2 connection to the
//! compute), as an application would. The cluster and the writers run on the same Tokio runtime.
//!
//! It prints a Markdown table (commits/s, p50, p99, errors, the ratio of the commit p50 to the
//! fdatasync p50, and the in-process rate over the gRPC rate at the same concurrency) and, when `FERRISDB_BENCH_OUT` is set, writes the same results as JSON to
//! that path. Environment:
//!
//! - `FERRISDB_BENCH_DIR`: where the safekeepers' data and the baseline file go (default: the
//!   system temporary directory). Point it at the disk you want to measure.
//! - `FERRISDB_BENCH_SECS`: seconds per concurrency level (default 5).
//! - `FERRISDB_BENCH_OUT`: a path for the JSON results.
//! - `RUST_LOG`: the cluster's log filter (default `error`), printed to stderr.
//!
//! Run without `--bench` (as `cargo test --all-targets` runs benchmark targets), it only says
//! how to run it and exits, so the test suite never starts a cluster for it.
//!
//! docs/benchmarks/wal.md describes the method and how to read the ratio.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrisdb_client::Database;
use ferrisdb_common::DEFAULT_DATABASE;
use ferrisdb_common::proto::pageserver_client::PageserverClient;
use ferrisdb_common::wal::Mutation;
use ferrisdb_compute::atomics::Write as TxWrite;
use ferrisdb_compute::databases::Databases;
use ferrisdb_compute::metrics::Metrics;
use ferrisdb_compute::read_path::{TierConfig, Tiers};
use ferrisdb_compute::requests::{Commit, KeyRange};
use hdrhistogram::Histogram;
use serde_json::json;
use support::{Cluster, ClusterOptions, Stats, ms, new_histogram, record};

mod support;

/// Concurrency levels measured, in order.
const WRITER_COUNTS: [usize; 3] = [1, 16, 128];
/// Seconds per concurrency level unless `FERRISDB_BENCH_SECS` says otherwise.
const DEFAULT_SECS: f64 = 5.0;
/// Size of one record in the fdatasync baseline.
const BASELINE_RECORD_BYTES: usize = 200;
/// Appends measured in the fdatasync baseline.
const BASELINE_ITERATIONS: usize = 2000;
/// Size of the value each benchmark transaction writes.
const VALUE_BYTES: usize = 100;
/// Unmeasured commits made before the first level (connections, first WAL segment).
const WARMUP_COMMITS: usize = 100;
/// How long the in-process engine may take to win its term.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause after a failed commit, so an outage is counted rather than turned into a busy loop.
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// A baseline p50 below this (microseconds) cannot be a disk flush.
const SUSPICIOUSLY_FAST_FSYNC_MICROS: u64 = 20;

/// How the writers reach the transaction engine.
#[derive(Clone)]
enum Target {
    /// Through the SDK, over loopback gRPC.
    Grpc(Database),
    /// Calling the primary in this process.
    InProcess(Box<Databases>),
}

impl Target {
    /// The name in the tables.
    fn name(&self) -> &'static str {
        match self {
            Target::Grpc(_) => "gRPC",
            Target::InProcess(_) => "in process",
        }
    }

    /// Commits one blind write of `value` to `key` (read version, then commit), and returns
    /// the error code of a failure.
    async fn blind_write(&self, key: String, value: Bytes) -> Result<(), &'static str> {
        match self {
            Target::Grpc(db) => {
                let tx = db.create_transaction();
                tx.set(key, value);
                tx.commit().await.map(|_| ()).map_err(|e| e.code())
            }
            Target::InProcess(databases) => {
                let primary = databases.primary(DEFAULT_DATABASE).map_err(|e| e.code())?;
                let read_version = primary.read_version().await.map_err(|e| e.code())?;
                let key = Bytes::from(key);
                let writes = vec![KeyRange::single(&key)];
                let mutations = vec![TxWrite::Plain(Mutation::Set { key, value })];
                let commit = Commit {
                    read_version,
                    reads: Vec::new(),
                    writes,
                    mutations,
                };
                primary
                    .commit(commit)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.code())
            }
        }
    }
}

/// The result of one concurrency level.
#[derive(Debug, Clone)]
struct LevelResult {
    /// How the writers reached the engine.
    target: &'static str,
    /// Concurrent writer tasks.
    writers: usize,
    /// Latency and rate of the acknowledged commits.
    stats: Stats,
    /// Failed commits, by error code.
    errors: BTreeMap<&'static str, u64>,
}

impl LevelResult {
    /// All failed commits.
    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The disk's own commit cost, measured twice around the cluster run.
#[derive(Debug, Clone)]
struct Baseline {
    /// Measured before the cluster starts.
    before: Stats,
    /// Measured after the cluster has stopped.
    after: Stats,
    /// Both runs together: the reference the ratio column divides by.
    combined: Stats,
}

impl Baseline {
    /// Combines the runs before and after the cluster (histograms and the time each took).
    fn new(before: (Histogram<u64>, Duration), after: (Histogram<u64>, Duration)) -> Baseline {
        let mut all = before.0.clone();
        all.add(&after.0)
            .expect("histograms with the same bounds can be added");
        Baseline {
            before: Stats::from_histogram(&before.0, before.1),
            after: Stats::from_histogram(&after.0, after.1),
            combined: Stats::from_histogram(&all, before.1 + after.1),
        }
    }

    /// `micros` over the baseline's p50.
    fn ratio(&self, micros: u64) -> f64 {
        micros as f64 / self.combined.p50_us.max(1) as f64
    }
}

/// One fdatasync series: appends `BASELINE_RECORD_BYTES`-byte records to a new file in `dir`,
/// each write followed by `sync_data`, the way a safekeeper appends to its WAL segment.
/// Returns the latencies and the series' wall time.
fn fdatasync_series(dir: &Path) -> (Histogram<u64>, Duration) {
    let path = dir.join("fdatasync-baseline");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("create the fdatasync baseline file in the benchmark directory");
    let record_bytes = [0xabu8; BASELINE_RECORD_BYTES];
    let mut hist = new_histogram();
    let started = Instant::now();
    for _ in 0..BASELINE_ITERATIONS {
        let t0 = Instant::now();
        file.write_all(&record_bytes)
            .expect("append to the fdatasync baseline file");
        file.sync_data()
            .expect("fdatasync the fdatasync baseline file");
        record(&mut hist, t0.elapsed());
    }
    let elapsed = started.elapsed();
    drop(file);
    let _ = std::fs::remove_file(&path);
    (hist, elapsed)
}

/// The compute engine in this process, for the database the cluster serves: it wins the next
/// term on the cluster's safekeepers, as a restarted compute would.
async fn in_process_engine(cluster: &Cluster) -> Databases {
    let channel = ferrisdb_server_common::auth::call_channel(&cluster.pageserver)
        .expect("pageserver channel");
    let tiers = Tiers::open(&TierConfig::default())
        .await
        .expect("open the in-process compute's tiers");
    let databases = Databases::new(
        DEFAULT_DATABASE.to_string(),
        cluster.safekeepers.clone(),
        PageserverClient::new(channel),
        Metrics::new().expect("metrics"),
    )
    .with_tiers(tiers);
    databases.serve(DEFAULT_DATABASE);
    let started = Instant::now();
    while databases.primary(DEFAULT_DATABASE).is_err() {
        cluster.assert_running();
        assert!(
            started.elapsed() < STARTUP_TIMEOUT,
            "the in-process compute did not win a term within {STARTUP_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    databases
}

/// Unmeasured commits before the first level; failures are reported, not fatal.
async fn warm_up(target: &Target) {
    let value = Bytes::from(vec![b'w'; VALUE_BYTES]);
    let mut failed = 0;
    for i in 0..WARMUP_COMMITS {
        let key = format!("bench/warmup/{}/{i:08}", target.name());
        if target.blind_write(key, value.clone()).await.is_err() {
            failed += 1;
        }
    }
    if failed > 0 {
        eprintln!("warning: {failed} of {WARMUP_COMMITS} warm-up commits failed");
    }
}

/// Runs `writers` tasks committing blind writes through `target` for `duration`.
///
/// Each task starts a new transaction while the deadline has not passed, so the level's wall
/// time runs until the last in-flight commit is answered, and that is what the rate divides by.
async fn run_level(target: &Target, writers: usize, duration: Duration) -> LevelResult {
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let target = target.clone();
            let value = value.clone();
            tokio::spawn(async move {
                let mut hist = new_histogram();
                let mut errors: BTreeMap<&'static str, u64> = BTreeMap::new();
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    let key = format!("bench/{}/c{writers:03}/w{w:03}/{seq:010}", target.name());
                    seq += 1;
                    let t0 = Instant::now();
                    match target.blind_write(key, value.clone()).await {
                        Ok(()) => record(&mut hist, t0.elapsed()),
                        Err(code) => {
                            *errors.entry(code).or_default() += 1;
                            tokio::time::sleep(ERROR_PAUSE).await;
                        }
                    }
                }
                (hist, errors)
            })
        })
        .collect();
    let mut hist = new_histogram();
    let mut errors: BTreeMap<&'static str, u64> = BTreeMap::new();
    for task in tasks {
        let (h, e) = task.await.expect("a writer task panicked");
        hist.add(&h)
            .expect("histograms with the same bounds can be added");
        for (code, n) in e {
            *errors.entry(code).or_default() += n;
        }
    }
    LevelResult {
        target: target.name(),
        writers,
        stats: Stats::from_histogram(&hist, started.elapsed()),
        errors,
    }
}

/// Runs every concurrency level through `target`.
async fn run_levels(cluster: &Cluster, target: &Target, duration: Duration) -> Vec<LevelResult> {
    warm_up(target).await;
    let mut levels = Vec::new();
    for writers in WRITER_COUNTS {
        eprintln!(
            "measuring {writers} writer(s) {} for {duration:?}",
            target.name()
        );
        levels.push(run_level(target, writers, duration).await);
        cluster.assert_running();
    }
    levels
}

/// The in-process rate over the gRPC rate at the same concurrency, if both were measured.
fn over_grpc(levels: &[LevelResult], level: &LevelResult) -> Option<f64> {
    let grpc = levels
        .iter()
        .find(|l| l.target == "gRPC" && l.writers == level.writers)?;
    Some(level.stats.ops_per_sec() / grpc.stats.ops_per_sec().max(f64::MIN_POSITIVE))
}

/// The results as a Markdown table, the baseline first.
fn markdown(baseline: &Baseline, levels: &[LevelResult]) -> String {
    let b = &baseline.combined;
    let mut out = String::new();
    out.push_str(
        "| path | writers | commits/s | p50 ms | p99 ms | errors | p50 / fdatasync p50 | commits/s / gRPC's |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    out.push_str(&format!(
        "| fdatasync baseline ({BASELINE_RECORD_BYTES} B appends) | 1 | {:.0} | {} | {} | 0 | 1.00 | |\n",
        b.ops_per_sec(),
        ms(b.p50_us),
        ms(b.p99_us),
    ));
    for l in levels {
        let errors = if l.errors.is_empty() {
            "0".to_string()
        } else {
            let kinds: Vec<String> = l.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            format!("{} ({})", l.error_count(), kinds.join(", "))
        };
        out.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {} | {:.2} | {:.2} |\n",
            l.target,
            l.writers,
            l.stats.ops_per_sec(),
            ms(l.stats.p50_us),
            ms(l.stats.p99_us),
            errors,
            baseline.ratio(l.stats.p50_us),
            over_grpc(levels, l).unwrap_or(f64::NAN),
        ));
    }
    out
}

/// The results as JSON, for `FERRISDB_BENCH_OUT`.
fn to_json(
    dir: &Path,
    secs: f64,
    baseline: &Baseline,
    levels: &[LevelResult],
) -> serde_json::Value {
    json!({
        "benchmark": "quorum_commit",
        "bench_dir": dir.display().to_string(),
        "seconds_per_level": secs,
        "value_bytes": VALUE_BYTES,
        "shared_database_handle": true,
        "fdatasync_baseline": {
            "writers": 1,
            "record_bytes": BASELINE_RECORD_BYTES,
            "iterations_per_run": BASELINE_ITERATIONS,
            "combined": baseline.combined.to_json(),
            "before_cluster": baseline.before.to_json(),
            "after_cluster": baseline.after.to_json(),
        },
        "levels": levels.iter().map(|l| json!({
            "path": l.target,
            "writers": l.writers,
            "commits": l.stats.ops,
            "commits_per_sec": l.stats.ops_per_sec(),
            "latency": l.stats.to_json(),
            "errors": l.error_count(),
            "errors_by_code": l.errors,
            "p50_over_fdatasync_p50": baseline.ratio(l.stats.p50_us),
            "commits_per_sec_over_grpc": over_grpc(levels, l),
        })).collect::<Vec<_>>(),
    })
}

/// Runs the whole benchmark: baseline, cluster, levels over gRPC and in process, baseline
/// again, report.
fn main() {
    if !support::benchmarking("quorum_commit") {
        return;
    }
    support::init_tracing();
    let duration = support::env_secs("FERRISDB_BENCH_SECS", DEFAULT_SECS);
    let base = support::base_dir();
    let tmp = support::temp_dir();
    let dir = tmp.path().to_path_buf();
    eprintln!("benchmark directory: {}", dir.display());

    eprintln!("measuring fdatasync ({BASELINE_ITERATIONS} appends) before the cluster starts");
    let before = fdatasync_series(&dir);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the Tokio runtime");
    let levels = runtime.block_on(async {
        let mut cluster = Cluster::start(
            &dir,
            ClusterOptions {
                object_store: "memory://".to_string(),
                tiers: TierConfig::default(),
            },
        );
        let db = Database::connect(&cluster.endpoint)
            .await
            .expect("a client for the compute");
        cluster.wait_until_primary(&db).await;
        let mut levels = run_levels(&cluster, &Target::Grpc(db), duration).await;

        // The same engine without the client protocol: the gRPC compute steps down and an
        // in-process one takes the next term over the same log.
        cluster.stop_compute().await;
        let engine = in_process_engine(&cluster).await;
        levels.extend(
            run_levels(
                &cluster,
                &Target::InProcess(Box::new(engine.clone())),
                duration,
            )
            .await,
        );
        engine.stop();
        cluster.shutdown().await;
        levels
    });
    drop(runtime);

    eprintln!("measuring fdatasync ({BASELINE_ITERATIONS} appends) after the cluster stopped");
    let after = fdatasync_series(&dir);
    let baseline = Baseline::new(before, after);
    if baseline.combined.p50_us < SUSPICIOUSLY_FAST_FSYNC_MICROS {
        eprintln!(
            "warning: fdatasync p50 is {} µs: {} is probably not on a durable disk (tmpfs?); \
             set FERRISDB_BENCH_DIR",
            baseline.combined.p50_us,
            base.display()
        );
    }

    println!();
    println!(
        "quorum commit: 3 safekeepers with data in {}, {:.1} s per level, {VALUE_BYTES}-byte \
         blind writes; gRPC writers share one Database handle",
        base.display(),
        duration.as_secs_f64()
    );
    println!(
        "fdatasync baseline: {} appends of {BASELINE_RECORD_BYTES} B, 1 writer: {:.0} ops/s, \
         p50 {} ms, p99 {} ms (before the cluster: p50 {} ms, p99 {} ms; after: p50 {} ms, \
         p99 {} ms)",
        baseline.combined.ops,
        baseline.combined.ops_per_sec(),
        ms(baseline.combined.p50_us),
        ms(baseline.combined.p99_us),
        ms(baseline.before.p50_us),
        ms(baseline.before.p99_us),
        ms(baseline.after.p50_us),
        ms(baseline.after.p99_us),
    );
    println!();
    print!("{}", markdown(&baseline, &levels));
    support::write_report(&to_json(&base, duration.as_secs_f64(), &baseline, &levels));
}
