//! Compute tiers benchmark: point reads per second answered by the hot tier and by the warm
//! tier, first in process, then over gRPC through the SDK.
//!
//! ```sh
//! cargo bench --bench compute_tiers
//! ```
//!
//! **In process**, from one task, through the read path a client read takes
//! (`TierReader::read`; the disk case calls the warm tier directly, since foyer may drop some
//! entries on their way to disk and a miss must not reach a pageserver).
//! `FERRISDB_BENCH_KEYS` keys (default 100,000) of 100-byte values and `FERRISDB_BENCH_READS`
//! random reads per case (default 300,000). The hot tier holds every key as a recent commit;
//! the warm tier holds every key as read from the pageserver at the hot tier's floor (the hot
//! tier itself empty).
//!
//! **Over gRPC**, an in-process cluster (three safekeepers, a pageserver on a local-directory
//! object store, a compute with default tiers) on loopback, read through the SDK by 1 and by 16
//! concurrent readers, each reading `FERRISDB_BENCH_GRPC_READS` (default 40,000) random keys
//! of `FERRISDB_BENCH_GRPC_KEYS` (default 20,000), 200 reads per transaction:
//! 1. *hot*: the pageserver is stopped before the keys are written, so every commit stays in
//!    the compute's hot tier;
//! 2. *pageserver*: the pageserver starts again, ingests the log and the hot tier empties;
//!    each key is then read once, a warm miss answered by the pageserver;
//! 3. *warm*: the same keys again, now answered by the warm tier.
//!
//! Which tier answered is taken from the compute's own `ferrisdb_compute_tier_hits_total`
//! counters and printed next to each row. `FERRISDB_BENCH_DIR` picks the disk for the data.
//!
//! Run without `--bench` (as `cargo test --all-targets` runs benchmark targets), it only says
//! how to run it.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ferrisdb_client::Database;
use ferrisdb_common::Version;
use ferrisdb_common::proto::pageserver_client::PageserverClient;
use ferrisdb_common::wal::Mutation;
use ferrisdb_compute::hot_tier::HotTier;
use ferrisdb_compute::metrics::Metrics;
use ferrisdb_compute::page_source::GrpcPageSource;
use ferrisdb_compute::read_path::{TierConfig, TierReader};
use ferrisdb_compute::warm_tier::{WarmCache, WarmTier, WarmTierConfig};
use hdrhistogram::Histogram;
use support::{Cluster, ClusterOptions, Lcg, Stats, env_usize, key};

mod support;

/// Reads/s and the latency histogram (ns) of `reads` random reads, in process.
struct Run {
    per_sec: f64,
    hist: Histogram<u64>,
    hits: usize,
}

fn row(name: &str, r: &Run) {
    println!(
        "| {name} | {} | {:.0} | {} | {} | {:.0} |",
        r.hist.len(),
        r.per_sec,
        r.hist.value_at_quantile(0.5),
        r.hist.value_at_quantile(0.99),
        r.hist.mean()
    );
}

fn reader(hot: Arc<HotTier>, warm: Option<Arc<WarmTier>>) -> TierReader {
    // Never connected: every read here is answered by a tier in front of the pageserver.
    let channel =
        ferrisdb_server_common::auth::call_channel("http://127.0.0.1:9").expect("channel");
    TierReader::new(
        "bench".into(),
        hot,
        warm,
        Arc::new(GrpcPageSource::new(PageserverClient::new(channel))),
        Metrics::new().expect("metrics"),
    )
}

/// `reads` random reads of `keys` keys, each timed; `read` says whether it found a value.
async fn timed_reads<F, Fut>(keys: usize, reads: usize, mut read: F) -> Run
where
    F: FnMut(Bytes) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let mut rng = Lcg(42);
    let mut hits = 0;
    let started = Instant::now();
    for _ in 0..reads {
        let k = key(rng.below(keys));
        let t = Instant::now();
        let found = read(k).await;
        let _ = hist.record(t.elapsed().as_nanos() as u64);
        hits += usize::from(found);
    }
    Run {
        per_sec: reads as f64 / started.elapsed().as_secs_f64(),
        hist,
        hits,
    }
}

/// Reads through the whole read path (hot tier, warm tier, pageserver).
async fn through_reader(reader: &TierReader, keys: usize, reads: usize, at: Version) -> Run {
    timed_reads(keys, reads, |k| async move {
        matches!(reader.read(k, at).await, Ok(Some(_)))
    })
    .await
}

/// Reads from the warm tier alone.
async fn through_warm(warm: &WarmTier, keys: usize, reads: usize, at: Version) -> Run {
    timed_reads(keys, reads, |k| async move {
        matches!(warm.get(&k, at).await, Some(Some(_)))
    })
    .await
}

#[tokio::main]
async fn main() {
    if !support::benchmarking("compute_tiers") {
        return;
    }
    support::init_tracing();
    let in_process = in_process().await;
    let grpc = over_grpc().await;

    println!("\n## Over gRPC against in process (reads/s ratio)\n");
    println!(
        "| tier | in process, 1 task | gRPC, 1 reader | gRPC, 16 readers | gRPC 1 / in process | gRPC 16 / in process |"
    );
    println!("|---|---|---|---|---|---|");
    for (tier, local) in [("hot", in_process.hot), ("warm", in_process.warm)] {
        let one = grpc.rate(tier, 1);
        let many = grpc.rate(tier, 16);
        println!(
            "| {tier} | {local:.0} | {one:.0} | {many:.0} | {:.4} | {:.4} |",
            one / local,
            many / local
        );
    }
}

/// Reads/s of the in-process cases, for the comparison with gRPC.
struct InProcess {
    hot: f64,
    warm: f64,
}

/// The in-process cases: the tiers called directly, one task.
async fn in_process() -> InProcess {
    let keys = env_usize("FERRISDB_BENCH_KEYS", 100_000).max(1);
    let reads = env_usize("FERRISDB_BENCH_READS", 300_000).max(1);
    let value = Bytes::from(vec![b'v'; 100]);
    let floor = Version(1_000_000_000);

    // Hot: every key committed above the floor, 100 keys per batch.
    let hot = Arc::new(HotTier::new(floor));
    let mut version = floor;
    for chunk in (0..keys).collect::<Vec<_>>().chunks(100) {
        version = Version(version.0 + 1);
        let batch: Vec<Mutation> = chunk
            .iter()
            .map(|i| Mutation::Set {
                key: key(*i),
                value: value.clone(),
            })
            .collect();
        hot.apply(version, version.0, &batch);
    }
    let hot_reader = reader(hot.clone(), None);

    // Warm (memory): the hot tier empty at the floor, every key cached as read there.
    let warm = Arc::new(WarmTier::in_memory(256 << 20).await.expect("warm tier"));
    for i in 0..keys {
        warm.insert(&key(i), floor, Some(&value));
    }
    let warm_reader = reader(Arc::new(HotTier::new(floor)), Some(warm.clone()));

    // Warm (disk): memory a small fraction of the data, the rest on disk.
    let dir = match std::env::var("FERRISDB_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d),
        Err(_) => tempfile::tempdir(),
    }
    .expect("temp dir");
    let disk_cache = WarmCache::open(&WarmTierConfig {
        memory_bytes: 1 << 20,
        disk: Some((dir.path().to_path_buf(), 256 << 20)),
    })
    .await
    .expect("warm tier with disk");
    let disk = disk_cache.tier(Version::ZERO);
    for i in 0..keys {
        disk.insert(&key(i), floor, Some(&value));
        if i % 100 == 0 {
            // Give the flusher room: foyer drops entries it cannot write in time.
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;

    // Warm everything up once (allocator, caches), unmeasured.
    let _ = through_reader(&hot_reader, keys, reads / 10, version).await;
    let _ = through_reader(&warm_reader, keys, reads / 10, version).await;

    let hot_run = through_reader(&hot_reader, keys, reads, version).await;
    let warm_run = through_reader(&warm_reader, keys, reads, version).await;
    let disk_run = through_warm(&disk, keys, reads.min(100_000), version).await;

    println!("\n## Compute tiers: point reads, {keys} keys of 100 bytes, one task\n");
    println!("| tier | reads | reads/s | p50 ns | p99 ns | mean ns |");
    println!("|---|---|---|---|---|---|");
    row("hot (skip list)", &hot_run);
    row("warm (foyer, memory)", &warm_run);
    row("warm (foyer, disk; direct)", &disk_run);
    println!();
    println!(
        "hot / warm-memory reads/s ratio: {:.2}x",
        hot_run.per_sec / warm_run.per_sec
    );
    println!(
        "warm-memory / warm-disk reads/s ratio: {:.2}x (disk case hit {} of {} reads)",
        warm_run.per_sec / disk_run.per_sec,
        disk_run.hits,
        disk_run.hist.len()
    );
    if hot_run.hits != reads || warm_run.hits != reads {
        eprintln!(
            "warning: hot answered {} of {reads}, warm {} of {reads}",
            hot_run.hits, warm_run.hits
        );
    }
    InProcess {
        hot: hot_run.per_sec,
        warm: warm_run.per_sec,
    }
}

/// Reads per transaction over gRPC (each transaction must end within the 5-second window).
const READS_PER_TRANSACTION: usize = 200;
/// Concurrent SDK readers measured, in order.
const READER_COUNTS: [usize; 2] = [1, 16];

/// One gRPC case: which tier was meant to answer, by how many readers, and what happened.
struct GrpcCase {
    tier: &'static str,
    readers: usize,
    stats: Stats,
    /// Reads that found the key's value.
    found: u64,
    /// Reads the compute counted per tier (`hot`, `warm`, `pageserver`) during the case.
    answered: [(&'static str, f64); 3],
}

/// Every gRPC case.
struct Grpc(Vec<GrpcCase>);

impl Grpc {
    /// Reads/s of `tier`'s case at `readers`.
    fn rate(&self, tier: &str, readers: usize) -> f64 {
        self.0
            .iter()
            .find(|c| c.tier == tier && c.readers == readers)
            .map_or(f64::NAN, |c| c.stats.ops_per_sec())
    }
}

/// Reads by `readers` SDK tasks sharing `db`: reader `r` reads `picks(r)`, in order.
async fn sdk_reads(
    db: &Database,
    readers: usize,
    picks: impl Fn(usize) -> Vec<usize>,
    value_len: usize,
) -> (Stats, u64) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..readers)
        .map(|r| {
            let db = db.clone();
            let picks = picks(r);
            tokio::spawn(async move {
                let mut hist = support::new_histogram();
                let mut found = 0u64;
                for chunk in picks.chunks(READS_PER_TRANSACTION) {
                    let tx = db.create_transaction();
                    for &i in chunk {
                        let t = Instant::now();
                        let value = tx.get(key(i)).await.expect("an SDK read");
                        support::record(&mut hist, t.elapsed());
                        if value.is_some_and(|v| v.len() == value_len) {
                            found += 1;
                        }
                    }
                }
                (hist, found)
            })
        })
        .collect();
    let mut hist = support::new_histogram();
    let mut found = 0;
    for t in tasks {
        let (h, f) = t.await.expect("a reader task panicked");
        hist.add(&h).expect("histograms with the same bounds add");
        found += f;
    }
    (Stats::from_histogram(&hist, started.elapsed()), found)
}

/// Reads per tier the compute has counted so far.
async fn answered(cluster: &Cluster) -> [(&'static str, f64); 3] {
    let mut out = [("hot", 0.0), ("warm", 0.0), ("pageserver", 0.0)];
    for (tier, n) in &mut out {
        *n = cluster
            .metric(
                "ferrisdb_compute_tier_hits_total",
                &format!("tier=\"{tier}\""),
            )
            .await;
    }
    out
}

/// Runs one case and records which tiers answered it.
async fn grpc_case(
    cluster: &Cluster,
    db: &Database,
    tier: &'static str,
    readers: usize,
    picks: impl Fn(usize) -> Vec<usize>,
    value_len: usize,
) -> GrpcCase {
    eprintln!("reading over gRPC: {tier}, {readers} reader(s)");
    let before = answered(cluster).await;
    let (stats, found) = sdk_reads(db, readers, picks, value_len).await;
    let after = answered(cluster).await;
    let mut delta = after;
    for (d, b) in delta.iter_mut().zip(before) {
        d.1 -= b.1;
    }
    cluster.assert_running();
    GrpcCase {
        tier,
        readers,
        stats,
        found,
        answered: delta,
    }
}

/// Waits until `/v1/status` satisfies `done`, or panics after a minute naming `what`.
async fn wait_status(cluster: &Cluster, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let started = Instant::now();
    loop {
        let status = cluster.status().await;
        if done(&status) {
            return;
        }
        assert!(
            started.elapsed().as_secs() < 60,
            "timed out waiting for {what}; status: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The hot tier's entries in a compute's `/v1/status`.
fn hot_entries(status: &serde_json::Value) -> Option<u64> {
    status["databases"]["default"]["hot_tier"]["entries"].as_u64()
}

/// `tier`'s case at every reader count: `reads` random reads of `keys` keys in all, each
/// reader with its own sequence.
async fn random_cases(
    cluster: &Cluster,
    db: &Database,
    tier: &'static str,
    keys: usize,
    reads: usize,
    value_len: usize,
) -> Vec<GrpcCase> {
    let mut cases = Vec::new();
    for readers in READER_COUNTS {
        let random = |r: usize| {
            let mut rng = Lcg(7 + r as u64);
            (0..reads / readers).map(|_| rng.below(keys)).collect()
        };
        cases.push(grpc_case(cluster, db, tier, readers, random, value_len).await);
    }
    cases
}

/// The gRPC cases, against an in-process cluster.
async fn over_grpc() -> Grpc {
    let keys = env_usize("FERRISDB_BENCH_GRPC_KEYS", 20_000).max(1);
    let reads = env_usize("FERRISDB_BENCH_GRPC_READS", 40_000).max(1);
    let value = Bytes::from(vec![b'g'; 100]);
    let tmp = support::temp_dir();
    let store = tmp.path().join("bucket");
    let mut cluster = Cluster::start(
        tmp.path(),
        ClusterOptions {
            object_store: format!("file://{}", store.display()),
            tiers: TierConfig::default(),
        },
    );
    let db = Database::connect(&cluster.endpoint)
        .await
        .expect("a client for the compute");
    cluster.wait_until_primary(&db).await;

    // Hot: with the pageserver stopped nothing is ingested, so nothing leaves the hot tier.
    cluster.stop_pageserver().await;
    for chunk in (0..keys).collect::<Vec<_>>().chunks(100) {
        let tx = db.create_transaction();
        for &i in chunk {
            tx.set(key(i), value.clone());
        }
        tx.commit().await.expect("load a batch of keys");
    }
    let loaded = keys as u64;
    wait_status(&cluster, "the hot tier to hold every key", |s| {
        hot_entries(s).unwrap_or(0) >= loaded
    })
    .await;
    let mut cases = random_cases(&cluster, &db, "hot", keys, reads, value.len()).await;

    // The pageserver comes back, catches up, and the hot tier empties.
    cluster.start_pageserver();
    wait_status(&cluster, "the hot tier to empty", |s| {
        hot_entries(s) == Some(0)
    })
    .await;
    let readers = READER_COUNTS[READER_COUNTS.len() - 1];
    let each_once = |r: usize| (r..keys).step_by(readers).collect();
    cases.push(grpc_case(&cluster, &db, "pageserver", readers, each_once, value.len()).await);
    cases.extend(random_cases(&cluster, &db, "warm", keys, reads, value.len()).await);
    cluster.shutdown().await;

    println!("\n## Compute tiers over gRPC: SDK point reads, {keys} keys of 100 bytes\n");
    println!(
        "| meant for | readers | reads | reads/s | p50 µs | p99 µs | found | answered by hot / warm / pageserver |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for c in &cases {
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {:.0} / {:.0} / {:.0} |",
            c.tier,
            c.readers,
            c.stats.ops,
            c.stats.ops_per_sec(),
            c.stats.p50_us,
            c.stats.p99_us,
            c.found,
            c.answered[0].1,
            c.answered[1].1,
            c.answered[2].1,
        );
    }
    Grpc(cases)
}
