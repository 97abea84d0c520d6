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
//! All writers share one [`Database`] (clones of it share one HTTP/2 connection to the compute),
//! as an application would. The cluster and the writers run on the same Tokio runtime.
//!
//! It prints a Markdown table (commits/s, p50, p99, errors, and the ratio of the commit p50 to
//! the fdatasync p50) and, when `FERRISDB_BENCH_OUT` is set, writes the same results as JSON to
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
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrisdb_client::{Database, RetryOptions};
use ferrisdb_common::DEFAULT_DATABASE;
use ferrisdb_common::objstore::ObjectStoreConfig;
use ferrisdb_compute::ComputeConfig;
use ferrisdb_pageserver::PageserverConfig;
use ferrisdb_wal_service::SafekeeperConfig;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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
/// How long the cluster may take to elect a primary and answer a read.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause after a failed commit, so an outage is counted rather than turned into a busy loop.
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// Largest latency the histograms hold (microseconds); larger values are clamped to it.
const HISTOGRAM_MAX_MICROS: u64 = 60_000_000;
/// A baseline p50 below this (microseconds) cannot be a disk flush.
const SUSPICIOUSLY_FAST_FSYNC_MICROS: u64 = 20;

/// Latency percentiles and rate of one measured series.
#[derive(Debug, Clone, Copy)]
struct Stats {
    /// Successful operations.
    ops: u64,
    /// Wall time of the series.
    elapsed: Duration,
    /// Median latency, microseconds.
    p50_us: u64,
    /// 90th-percentile latency, microseconds.
    p90_us: u64,
    /// 99th-percentile latency, microseconds.
    p99_us: u64,
    /// 99.9th-percentile latency, microseconds.
    p999_us: u64,
    /// Mean latency, microseconds.
    mean_us: f64,
    /// Largest latency, microseconds.
    max_us: u64,
}

impl Stats {
    /// Summarises `hist` (microseconds) for a series that took `elapsed`.
    fn from_histogram(hist: &Histogram<u64>, elapsed: Duration) -> Stats {
        Stats {
            ops: hist.len(),
            elapsed,
            p50_us: hist.value_at_quantile(0.50),
            p90_us: hist.value_at_quantile(0.90),
            p99_us: hist.value_at_quantile(0.99),
            p999_us: hist.value_at_quantile(0.999),
            mean_us: hist.mean(),
            max_us: hist.max(),
        }
    }

    /// The fields shared by every series in the JSON report.
    fn to_json(self) -> serde_json::Value {
        json!({
            "elapsed_secs": self.elapsed.as_secs_f64(),
            "ops_per_sec": self.ops_per_sec(),
            "p50_us": self.p50_us,
            "p90_us": self.p90_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "max_us": self.max_us,
            "mean_us": self.mean_us,
        })
    }

    /// Successful operations per second of wall time.
    fn ops_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ops as f64 / secs
        } else {
            0.0
        }
    }
}

/// The result of one concurrency level.
#[derive(Debug, Clone)]
struct LevelResult {
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

/// An empty latency histogram, microseconds, three significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3)
        .expect("histogram bounds 1..60 s with 3 significant digits are valid")
}

/// Records `d` in `hist` as whole microseconds (at least 1, clamped to the histogram's range).
fn record(hist: &mut Histogram<u64>, d: Duration) {
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    hist.saturating_record(micros);
}

/// Microseconds as milliseconds for the table.
fn ms(micros: u64) -> String {
    format!("{:.3}", micros as f64 / 1000.0)
}

/// Seconds per level from `FERRISDB_BENCH_SECS`.
fn level_duration() -> Duration {
    let secs = match std::env::var("FERRISDB_BENCH_SECS") {
        Ok(s) => s
            .trim()
            .parse::<f64>()
            .expect("FERRISDB_BENCH_SECS must be a number of seconds"),
        Err(_) => DEFAULT_SECS,
    };
    assert!(
        secs.is_finite() && secs > 0.0,
        "FERRISDB_BENCH_SECS must be positive"
    );
    Duration::from_secs_f64(secs)
}

/// The directory the benchmark's temporary directory goes under.
fn base_dir() -> PathBuf {
    std::env::var_os("FERRISDB_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
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

/// `n` distinct free ports on 127.0.0.1: each is bound to port 0 while the others are, so they
/// differ, then all are released for the components to bind.
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address of a bound listener"))
        .collect()
}

/// A running component: its name, how to stop it, and its task.
struct Component {
    /// For messages (`safekeeper-1`, `pageserver`, `compute`).
    name: String,
    /// Resolves the component's shutdown future when sent to (or dropped).
    stop: oneshot::Sender<()>,
    /// The component's `run`.
    task: JoinHandle<ferrisdb_common::Result<()>>,
}

/// A shutdown future for `run`: resolves when the sender is used or dropped.
async fn shutdown_future(rx: oneshot::Receiver<()>) {
    let _ = rx.await;
}

/// The in-process cluster.
struct Cluster {
    /// The compute's client endpoint (`http://127.0.0.1:port`).
    endpoint: String,
    /// Every component, in start order.
    components: Vec<Component>,
}

impl Cluster {
    /// Starts three safekeepers with data under `dir`, a pageserver on `memory://` and a
    /// compute, all on free ports of 127.0.0.1.
    fn start(dir: &Path) -> Cluster {
        let addrs = free_addrs(10);
        let mut components = Vec::new();
        let safekeepers: Vec<String> = (0..3).map(|i| format!("http://{}", addrs[2 * i])).collect();
        for i in 0..3 {
            let name = format!("safekeeper-{}", i + 1);
            let data_dir = dir.join(format!("sk{}", i + 1));
            std::fs::create_dir_all(&data_dir).expect("create a safekeeper data directory");
            let config = SafekeeperConfig {
                name: name.clone(),
                listen_grpc: addrs[2 * i],
                listen_http: addrs[2 * i + 1],
                data_dir,
                peers: (0..3)
                    .filter(|&j| j != i)
                    .map(|j| safekeepers[j].clone())
                    .collect(),
                limits: Default::default(),
            };
            let (stop, rx) = oneshot::channel();
            let task = tokio::spawn(ferrisdb_wal_service::run(config, shutdown_future(rx)));
            components.push(Component { name, stop, task });
        }

        let pageserver_grpc = addrs[6];
        let config = PageserverConfig {
            listen_grpc: pageserver_grpc,
            listen_http: addrs[7],
            object_store: ObjectStoreConfig::from_url("memory://"),
            safekeepers: safekeepers.clone(),
            databases: vec![DEFAULT_DATABASE.to_string()],
            checkpoint_interval: Duration::from_secs(30),
            cache: Default::default(),
            timeline: Default::default(),
        };
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(ferrisdb_pageserver::run(config, shutdown_future(rx)));
        components.push(Component {
            name: "pageserver".to_string(),
            stop,
            task,
        });

        let compute_grpc = addrs[8];
        let config = ComputeConfig::new(
            compute_grpc,
            addrs[9],
            DEFAULT_DATABASE,
            safekeepers,
            format!("http://{pageserver_grpc}"),
        );
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(ferrisdb_compute::run(config, shutdown_future(rx)));
        components.push(Component {
            name: "compute".to_string(),
            stop,
            task,
        });

        Cluster {
            endpoint: format!("http://{compute_grpc}"),
            components,
        }
    }

    /// Panics, naming it, if a component has already stopped (e.g. could not bind its port).
    fn assert_running(&self) {
        for c in &self.components {
            assert!(
                !c.task.is_finished(),
                "{} stopped during the benchmark; run with RUST_LOG=info to see why",
                c.name
            );
        }
    }

    /// Waits until the compute is primary: a read through `Database::run` succeeds.
    async fn wait_until_primary(&self, db: &Database) {
        let probe = db.clone().with_retry(RetryOptions {
            timeout: Duration::from_secs(1),
            ..RetryOptions::default()
        });
        let started = Instant::now();
        loop {
            self.assert_running();
            match probe
                .run(|tx| async move { tx.get("bench/ready").await })
                .await
            {
                Ok(_) => return,
                Err(e) if started.elapsed() < STARTUP_TIMEOUT => {
                    tracing::debug!(error = %e, "cluster not ready yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    panic!("the compute did not become primary within {STARTUP_TIMEOUT:?}: {e}")
                }
            }
        }
    }

    /// Stops every component, compute first, and reports any that failed.
    async fn shutdown(self) {
        for c in self.components.into_iter().rev() {
            let _ = c.stop.send(());
            match tokio::time::timeout(Duration::from_secs(10), c.task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => eprintln!("warning: {} exited with an error: {e}", c.name),
                Ok(Err(e)) => eprintln!("warning: {} panicked: {e}", c.name),
                Err(_) => eprintln!("warning: {} did not stop within 10 s", c.name),
            }
        }
    }
}

/// Commits one blind write of `value` to `key`; the commit's latency is the caller's to take.
async fn blind_write(db: &Database, key: String, value: Bytes) -> ferrisdb_client::Result<()> {
    let tx = db.create_transaction();
    tx.set(key, value);
    tx.commit().await.map(|_| ())
}

/// Unmeasured commits before the first level; failures are reported, not fatal.
async fn warm_up(db: &Database) {
    let value = Bytes::from(vec![b'w'; VALUE_BYTES]);
    let mut failed = 0;
    for i in 0..WARMUP_COMMITS {
        if blind_write(db, format!("bench/warmup/{i:08}"), value.clone())
            .await
            .is_err()
        {
            failed += 1;
        }
    }
    if failed > 0 {
        eprintln!("warning: {failed} of {WARMUP_COMMITS} warm-up commits failed");
    }
}

/// Runs `writers` tasks committing blind writes for `duration`, sharing `db`.
///
/// Each task starts a new transaction while the deadline has not passed, so the level's wall
/// time runs until the last in-flight commit is answered, and that is what the rate divides by.
async fn run_level(db: &Database, writers: usize, duration: Duration) -> LevelResult {
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let db = db.clone();
            let value = value.clone();
            tokio::spawn(async move {
                let mut hist = new_histogram();
                let mut errors: BTreeMap<&'static str, u64> = BTreeMap::new();
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    let key = format!("bench/c{writers:03}/w{w:03}/{seq:010}");
                    seq += 1;
                    let t0 = Instant::now();
                    match blind_write(&db, key, value.clone()).await {
                        Ok(()) => record(&mut hist, t0.elapsed()),
                        Err(e) => {
                            *errors.entry(e.code()).or_default() += 1;
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
        writers,
        stats: Stats::from_histogram(&hist, started.elapsed()),
        errors,
    }
}

/// The results as a Markdown table, the baseline first.
fn markdown(baseline: &Baseline, levels: &[LevelResult]) -> String {
    let b = &baseline.combined;
    let mut out = String::new();
    out.push_str("| writers | commits/s | p50 ms | p99 ms | errors | p50 / fdatasync p50 |\n");
    out.push_str("|---:|---:|---:|---:|---:|---:|\n");
    out.push_str(&format!(
        "| fdatasync baseline (1 writer, {BASELINE_RECORD_BYTES} B appends) | {:.0} | {} | {} | 0 | 1.00 |\n",
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
            "| {} | {:.0} | {} | {} | {} | {:.2} |\n",
            l.writers,
            l.stats.ops_per_sec(),
            ms(l.stats.p50_us),
            ms(l.stats.p99_us),
            errors,
            baseline.ratio(l.stats.p50_us),
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
            "writers": l.writers,
            "commits": l.stats.ops,
            "commits_per_sec": l.stats.ops_per_sec(),
            "latency": l.stats.to_json(),
            "errors": l.error_count(),
            "errors_by_code": l.errors,
            "p50_over_fdatasync_p50": baseline.ratio(l.stats.p50_us),
        })).collect::<Vec<_>>(),
    })
}

/// Runs the whole benchmark: baseline, cluster, levels, baseline again, report.
fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("quorum_commit: run it with `cargo bench --bench quorum_commit`; skipping");
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .try_init();

    let duration = level_duration();
    let base = base_dir();
    let tmp = tempfile::Builder::new()
        .prefix("ferrisdb-bench-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("create a temporary directory under {}: {e}", base.display()));
    let dir = tmp.path().to_path_buf();
    eprintln!("benchmark directory: {}", dir.display());

    eprintln!("measuring fdatasync ({BASELINE_ITERATIONS} appends) before the cluster starts");
    let before = fdatasync_series(&dir);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the Tokio runtime");
    let levels = runtime.block_on(async {
        let cluster = Cluster::start(&dir);
        let db = Database::connect(&cluster.endpoint)
            .await
            .expect("a client for the compute");
        cluster.wait_until_primary(&db).await;
        warm_up(&db).await;
        let mut levels = Vec::new();
        for writers in WRITER_COUNTS {
            eprintln!("measuring {writers} writer(s) for {duration:?}");
            levels.push(run_level(&db, writers, duration).await);
            cluster.assert_running();
        }
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
         blind writes, one shared Database handle",
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

    if let Some(out) = std::env::var_os("FERRISDB_BENCH_OUT") {
        let report = to_json(&base, duration.as_secs_f64(), &baseline, &levels);
        let text = serde_json::to_string_pretty(&report).expect("serialise the results");
        std::fs::write(&out, text + "\n").unwrap_or_else(|e| {
            panic!(
                "write the results to {}: {e}",
                PathBuf::from(&out).display()
            )
        });
        eprintln!("results written to {}", PathBuf::from(&out).display());
    }
}
