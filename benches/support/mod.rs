//! What the benchmarks share: latency histograms and their summaries, sizes from the
//! environment, a deterministic key picker, and an in-process cluster on loopback gRPC.
//!
//! Each benchmark target compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrisdb_client::{Database, RetryOptions};
use ferrisdb_common::DEFAULT_DATABASE;
use ferrisdb_compute::ComputeConfig;
use ferrisdb_compute::read_path::TierConfig;
use ferrisdb_pageserver::PageserverConfig;
use ferrisdb_server_common::objstore::ObjectStoreConfig;
use ferrisdb_wal_service::SafekeeperConfig;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Largest latency the histograms hold (microseconds); larger values are clamped to it.
const HISTOGRAM_MAX_MICROS: u64 = 60_000_000;
/// How long the cluster may take to elect a primary and answer a read.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// True when run by `cargo bench`; `cargo test --all-targets` runs bench targets without
/// `--bench`, and then they only say how to run them.
pub fn benchmarking(name: &str) -> bool {
    if std::env::args().any(|a| a == "--bench") {
        return true;
    }
    println!("{name}: run it with `cargo bench --bench {name}`; skipping");
    false
}

/// Logs the cluster's errors (or `RUST_LOG`'s choice) to stderr.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

/// A count from the environment variable `name`, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Seconds from the environment variable `name`, or `default`; must be positive.
pub fn env_secs(name: &str, default: f64) -> Duration {
    let secs = match std::env::var(name) {
        Ok(s) => s
            .trim()
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("{name} must be a number of seconds")),
        Err(_) => default,
    };
    assert!(secs.is_finite() && secs > 0.0, "{name} must be positive");
    Duration::from_secs_f64(secs)
}

/// The directory benchmark data goes under: `FERRISDB_BENCH_DIR`, or the temp directory.
pub fn base_dir() -> PathBuf {
    std::env::var_os("FERRISDB_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// A fresh temporary directory under [`base_dir`].
pub fn temp_dir() -> tempfile::TempDir {
    let base = base_dir();
    tempfile::Builder::new()
        .prefix("ferrisdb-bench-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("create a temporary directory under {}: {e}", base.display()))
}

/// The benchmark key number `i`.
pub fn key(i: usize) -> Bytes {
    Bytes::from(format!("user/{i:08}"))
}

/// A tiny deterministic generator, so every run reads the same keys in the same order.
pub struct Lcg(pub u64);

impl Lcg {
    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

/// An empty latency histogram, microseconds, three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3)
        .expect("histogram bounds 1..60 s with 3 significant digits are valid")
}

/// Records `d` in `hist` as whole microseconds (at least 1, clamped to the histogram's range).
pub fn record(hist: &mut Histogram<u64>, d: Duration) {
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    hist.saturating_record(micros);
}

/// Microseconds as milliseconds for the tables.
pub fn ms(micros: u64) -> String {
    format!("{:.3}", micros as f64 / 1000.0)
}

/// Latency percentiles and rate of one measured series.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Successful operations.
    pub ops: u64,
    /// Wall time of the series.
    pub elapsed: Duration,
    /// Median latency, microseconds.
    pub p50_us: u64,
    /// 90th-percentile latency, microseconds.
    pub p90_us: u64,
    /// 99th-percentile latency, microseconds.
    pub p99_us: u64,
    /// 99.9th-percentile latency, microseconds.
    pub p999_us: u64,
    /// Mean latency, microseconds.
    pub mean_us: f64,
    /// Largest latency, microseconds.
    pub max_us: u64,
}

impl Stats {
    /// Summarises `hist` (microseconds) for a series that took `elapsed`.
    pub fn from_histogram(hist: &Histogram<u64>, elapsed: Duration) -> Stats {
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

    /// The fields shared by every series in the JSON reports.
    pub fn to_json(self) -> serde_json::Value {
        json!({
            "ops": self.ops,
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
    pub fn ops_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ops as f64 / secs
        } else {
            0.0
        }
    }
}

/// Writes `report` as pretty JSON to `FERRISDB_BENCH_OUT`, when that is set.
pub fn write_report(report: &serde_json::Value) {
    if let Some(out) = std::env::var_os("FERRISDB_BENCH_OUT") {
        let out = PathBuf::from(out);
        let text = serde_json::to_string_pretty(report).expect("serialise the results");
        std::fs::write(&out, text + "\n")
            .unwrap_or_else(|e| panic!("write the results to {}: {e}", out.display()));
        eprintln!("results written to {}", out.display());
    }
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

/// A running component: how to stop it, and its task.
struct Component {
    /// Resolves the component's shutdown future when sent to (or dropped).
    stop: oneshot::Sender<()>,
    /// The component's `run`.
    task: JoinHandle<ferrisdb_common::Result<()>>,
}

impl Component {
    /// Runs `run` until stopped.
    fn spawn<F>(run: impl FnOnce(ShutdownSignal) -> F) -> Component
    where
        F: std::future::Future<Output = ferrisdb_common::Result<()>> + Send + 'static,
    {
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(run(ShutdownSignal(rx)));
        Component { stop, task }
    }

    /// Stops it and reports how it ended.
    async fn stop(self, name: &str) {
        let _ = self.stop.send(());
        match tokio::time::timeout(Duration::from_secs(10), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("warning: {name} exited with an error: {e}"),
            Ok(Err(e)) => eprintln!("warning: {name} panicked: {e}"),
            Err(_) => eprintln!("warning: {name} did not stop within 10 s"),
        }
    }
}

/// A component's shutdown future: resolves when its sender is used or dropped.
struct ShutdownSignal(oneshot::Receiver<()>);

impl ShutdownSignal {
    async fn wait(self) {
        let _ = self.0.await;
    }
}

/// Where an in-process cluster keeps its data and how its compute's tiers are sized.
pub struct ClusterOptions {
    /// The pageserver's object store (`memory://` is lost when the pageserver stops).
    pub object_store: String,
    /// The compute's hot and warm tiers.
    pub tiers: TierConfig,
}

/// Three safekeepers, a pageserver and a compute, each a task of this process serving
/// gRPC on 127.0.0.1, with the safekeepers' data (fdatasynced) under a directory.
pub struct Cluster {
    /// The safekeepers' gRPC endpoints.
    pub safekeepers: Vec<String>,
    /// The pageserver's gRPC endpoint.
    pub pageserver: String,
    /// The compute's client endpoint (`http://127.0.0.1:port`).
    pub endpoint: String,
    /// The compute's admin endpoint.
    pub admin: String,
    safekeeper_tasks: Vec<Component>,
    pageserver_config: PageserverConfig,
    pageserver_task: Option<Component>,
    compute_task: Option<Component>,
}

impl Cluster {
    /// Starts the cluster with safekeeper data under `dir`.
    pub fn start(dir: &Path, options: ClusterOptions) -> Cluster {
        let addrs = free_addrs(10);
        let safekeepers: Vec<String> = (0..3).map(|i| format!("http://{}", addrs[2 * i])).collect();
        let mut safekeeper_tasks = Vec::new();
        for i in 0..3 {
            let data_dir = dir.join(format!("sk{}", i + 1));
            std::fs::create_dir_all(&data_dir).expect("create a safekeeper data directory");
            let config = SafekeeperConfig {
                name: format!("safekeeper-{}", i + 1),
                listen_grpc: addrs[2 * i],
                listen_http: addrs[2 * i + 1],
                data_dir,
                peers: (0..3)
                    .filter(|&j| j != i)
                    .map(|j| safekeepers[j].clone())
                    .collect(),
                limits: Default::default(),
                object_store: None,
                security: Default::default(),
            };
            safekeeper_tasks.push(Component::spawn(|s| {
                ferrisdb_wal_service::run(config, s.wait())
            }));
        }

        let pageserver_config = PageserverConfig {
            listen_grpc: addrs[6],
            listen_http: addrs[7],
            object_store: ObjectStoreConfig::from_url(options.object_store),
            safekeepers: safekeepers.clone(),
            databases: vec![DEFAULT_DATABASE.to_string()],
            checkpoint_interval: Duration::from_secs(30),
            cache: Default::default(),
            timeline: Default::default(),
            max_branches: ferrisdb_pageserver::databases::DEFAULT_MAX_BRANCHES,
            security: Default::default(),
        };
        let pageserver = format!("http://{}", addrs[6]);
        let mut config = ComputeConfig::new(
            addrs[8],
            addrs[9],
            DEFAULT_DATABASE,
            safekeepers.clone(),
            pageserver.clone(),
        );
        config.tiers = options.tiers;
        let compute_task = Some(Component::spawn(|s| {
            ferrisdb_compute::run(config, s.wait())
        }));
        let mut cluster = Cluster {
            safekeepers,
            pageserver,
            endpoint: format!("http://{}", addrs[8]),
            admin: format!("http://{}", addrs[9]),
            safekeeper_tasks,
            pageserver_config,
            pageserver_task: None,
            compute_task,
        };
        cluster.start_pageserver();
        cluster
    }

    /// Starts the pageserver (again), on the same port and object store.
    pub fn start_pageserver(&mut self) {
        assert!(self.pageserver_task.is_none(), "the pageserver is running");
        let config = self.pageserver_config.clone();
        self.pageserver_task = Some(Component::spawn(|s| {
            ferrisdb_pageserver::run(config, s.wait())
        }));
    }

    /// Stops the pageserver: the compute's hot tier then keeps every commit.
    pub async fn stop_pageserver(&mut self) {
        if let Some(c) = self.pageserver_task.take() {
            c.stop("pageserver").await;
        }
    }

    /// Stops the compute, leaving the log and the pageserver to another primary.
    pub async fn stop_compute(&mut self) {
        if let Some(c) = self.compute_task.take() {
            c.stop("compute").await;
        }
    }

    /// Panics, naming it, if a component has stopped on its own (e.g. could not bind).
    pub fn assert_running(&self) {
        let named = self
            .safekeeper_tasks
            .iter()
            .map(|c| ("a safekeeper", c))
            .chain(self.pageserver_task.iter().map(|c| ("the pageserver", c)))
            .chain(self.compute_task.iter().map(|c| ("the compute", c)));
        for (name, c) in named {
            assert!(
                !c.task.is_finished(),
                "{name} stopped during the benchmark; run with RUST_LOG=info to see why"
            );
        }
    }

    /// Waits until the compute is primary: a read through `Database::run` succeeds.
    pub async fn wait_until_primary(&self, db: &Database) {
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

    /// The compute's `/v1/status`.
    pub async fn status(&self) -> serde_json::Value {
        reqwest::get(format!("{}/v1/status", self.admin))
            .await
            .and_then(|r| r.error_for_status())
            .expect("the compute's /v1/status")
            .json()
            .await
            .expect("/v1/status is JSON")
    }

    /// The sum of the compute's Prometheus samples named `name` with label `label`.
    pub async fn metric(&self, name: &str, label: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.admin))
            .await
            .and_then(|r| r.error_for_status())
            .expect("the compute's /metrics")
            .text()
            .await
            .expect("/metrics is text");
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Stops every component, compute first.
    pub async fn shutdown(mut self) {
        self.stop_compute().await;
        self.stop_pageserver().await;
        for (i, c) in self.safekeeper_tasks.into_iter().enumerate() {
            c.stop(&format!("safekeeper-{}", i + 1)).await;
        }
    }
}
