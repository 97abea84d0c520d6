//! Compute tiers benchmark: point reads per second answered by the hot tier vs the warm tier
//! (memory), and by the warm tier's disk, all in one process through the same read path a
//! client read takes (`PointReader::read`; the disk case calls the warm tier directly, since
//! foyer may drop some entries on their way to disk and a miss must not reach a pageserver).
//!
//! ```sh
//! cargo bench --bench compute_tiers
//! ```
//!
//! Sizes: `FERRISDB_BENCH_KEYS` keys (default 100,000) of 100-byte values, and
//! `FERRISDB_BENCH_READS` random reads per case (default 300,000), from one task. The hot tier
//! holds every key as a recent commit; the warm tier holds every key as read from the
//! pageserver at the hot tier's floor (the hot tier itself empty). `FERRISDB_BENCH_DIR` picks
//! the disk for the warm tier's disk case (default: a temp dir).
//!
//! Run without `--bench` (as `cargo test --all-targets` runs benchmark targets), it only says
//! how to run it.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ferrisdb_common::Version;
use ferrisdb_common::proto::pageserver_client::PageserverClient;
use ferrisdb_common::wal::Mutation;
use ferrisdb_compute::hot_tier::HotTier;
use ferrisdb_compute::metrics::Metrics;
use ferrisdb_compute::primary::PointReader;
use ferrisdb_compute::warm_tier::{WarmCache, WarmTier, WarmTierConfig};
use hdrhistogram::Histogram;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("user/{i:08}"))
}

/// A tiny deterministic generator (no dependency needed for picking keys).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

/// Reads/s and the latency histogram (ns) of `reads` random reads.
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

fn reader(hot: Arc<HotTier>, warm: Option<Arc<WarmTier>>) -> PointReader {
    // Never connected: every read here is answered by a tier in front of the pageserver.
    let channel = ferrisdb_common::net::channel("http://127.0.0.1:9").expect("channel");
    PointReader {
        hot,
        warm,
        pageserver: PageserverClient::new(channel),
        database: "bench".into(),
        metrics: Metrics::new().expect("metrics"),
    }
}

async fn through_reader(reader: &PointReader, keys: usize, reads: usize, at: Version) -> Run {
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let mut rng = Lcg(42);
    let mut hits = 0;
    let started = Instant::now();
    for _ in 0..reads {
        let k = key(rng.below(keys));
        let t = Instant::now();
        let v = reader.read(k, at).await;
        let _ = hist.record(t.elapsed().as_nanos() as u64);
        if matches!(v, Ok(Some(_))) {
            hits += 1;
        }
    }
    Run {
        per_sec: reads as f64 / started.elapsed().as_secs_f64(),
        hist,
        hits,
    }
}

async fn through_warm(warm: &WarmTier, keys: usize, reads: usize, at: Version) -> Run {
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let mut rng = Lcg(42);
    let mut hits = 0;
    let started = Instant::now();
    for _ in 0..reads {
        let k = key(rng.below(keys));
        let t = Instant::now();
        let v = warm.get(&k, at).await;
        let _ = hist.record(t.elapsed().as_nanos() as u64);
        if matches!(v, Some(Some(_))) {
            hits += 1;
        }
    }
    Run {
        per_sec: reads as f64 / started.elapsed().as_secs_f64(),
        hist,
        hits,
    }
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("compute_tiers: run it with `cargo bench --bench compute_tiers`; skipping");
        return;
    }
    let keys = env("FERRISDB_BENCH_KEYS", 100_000).max(1);
    let reads = env("FERRISDB_BENCH_READS", 300_000).max(1);
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
        if i % 1_000 == 0 {
            // Give the flusher room: foyer drops entries it cannot write in time.
            tokio::task::yield_now().await;
        }
    }

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
}
