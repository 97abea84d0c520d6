//! Pageserver benchmark: WAL ingest throughput, point-read latency on a block-cache hit vs a
//! miss, time-travel read latency at old versions vs the latest, and how long an L0 → L1
//! compaction of a run of checkpoints takes.
//!
//! ```sh
//! cargo bench --bench pageserver
//! ```
//!
//! Everything runs in one process against object storage in a local directory
//! (`LocalFileSystem` in a temp dir, `FERRISDB_BENCH_DIR` to choose the disk), so a "miss" costs
//! a ranged read of a file plus checksum and lz4 decompression — a lower bound for S3, where a
//! miss adds a network round trip. Sizes: `FERRISDB_BENCH_KEYS` keys (default 100,000) of
//! 100-byte values, written in `FERRISDB_BENCH_VERSIONS` versions (default 10, so every key has
//! 10 versions for time travel). The compaction merges `FERRISDB_BENCH_COMPACT_DELTAS` (default
//! 8, the pageserver's default trigger) checkpoints, each of every key once; an image layer of
//! every key is then written over the result.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ferrisdb_common::Version;
use ferrisdb_common::wal::{self, Mutation};
use ferrisdb_pageserver::block_cache::BlockCache;
use ferrisdb_pageserver::metrics::Metrics;
use ferrisdb_pageserver::timeline::{Timeline, TimelineOptions};
use hdrhistogram::Histogram;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use support::{Lcg, env_usize as env, key};

mod support;

/// One WAL frame at `lsn` setting each key of `chunk` to `value`, as the compute encodes a
/// batch; and the position after it.
fn set_frame(chunk: &[usize], value: &Bytes, lsn: u64) -> (Bytes, u64) {
    let muts: Vec<Mutation> = chunk
        .iter()
        .map(|&i| Mutation::Set {
            key: key(i),
            value: value.clone(),
        })
        .collect();
    let (frame, v) = wal::encode_frame(lsn, 1_000_000 + lsn, &muts);
    (frame, v.0)
}

fn row(name: &str, h: &Histogram<u64>) {
    println!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} |",
        h.len(),
        h.value_at_quantile(0.5) as f64,
        h.value_at_quantile(0.99) as f64,
        h.mean()
    );
}

async fn timeline(store: Arc<dyn ObjectStore>, cache_bytes: usize) -> Timeline {
    let cache = Arc::new(BlockCache::in_memory(cache_bytes));
    Timeline::load_with_options(
        "bench",
        store,
        Metrics::new().expect("metrics"),
        cache,
        TimelineOptions::keep_everything(),
    )
    .await
    .expect("load timeline")
}

#[tokio::main]
async fn main() {
    if !support::benchmarking("pageserver") {
        return;
    }
    let keys = env("FERRISDB_BENCH_KEYS", 100_000);
    let versions = env("FERRISDB_BENCH_VERSIONS", 10);
    let base = std::env::var("FERRISDB_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let dir = tempfile::tempdir_in(&base).expect("temp dir");
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local store"));

    // 1. Ingest: encode the WAL as the compute would (one frame per batch of 100 mutations),
    //    then time decoding and applying it, as the pageserver's follower does.
    let mut frames = Vec::new();
    let mut lsn = 0u64;
    let value = Bytes::from(vec![b'v'; 100]);
    let mut version_ends = Vec::new();
    for round in 0..versions {
        for chunk in (0..keys).collect::<Vec<_>>().chunks(100) {
            let (frame, v) = set_frame(chunk, &value, lsn);
            frames.push((lsn, frame));
            lsn = v;
        }
        version_ends.push((round, lsn));
    }
    let wal_bytes: usize = frames.iter().map(|(_, f)| f.len()).sum();
    let t = timeline(store.clone(), 64 << 20).await;
    let started = Instant::now();
    for (begin, frame) in &frames {
        let records = wal::decode_frames(frame, *begin).expect("decode");
        t.apply(&records).expect("apply");
    }
    let ingest = started.elapsed();
    let started = Instant::now();
    t.checkpoint(Version(lsn)).await.expect("checkpoint");
    let upload = started.elapsed();
    println!("## Pageserver benchmark ({keys} keys × {versions} versions, 100-byte values)\n");
    println!(
        "ingest: {:.1} MB of WAL ({} records) in {:.2} s = {:.1} MB/s; checkpoint upload {:.2} s\n",
        wal_bytes as f64 / 1e6,
        frames.len(),
        ingest.as_secs_f64(),
        wal_bytes as f64 / 1e6 / ingest.as_secs_f64(),
        upload.as_secs_f64()
    );

    // 2. Point reads at the latest version through a fresh pageserver: first touch of each
    //    block is a miss (ranged read + checksum + lz4), repeats are hits.
    let reads = 20_000.min(keys);
    let cold = timeline(store.clone(), 256 << 20).await;
    let mut rng = Lcg(7);
    let mut miss = Histogram::<u64>::new(3).expect("histogram");
    let mut hit = Histogram::<u64>::new(3).expect("histogram");
    let mut order: Vec<usize> = (0..reads).map(|_| rng.below(keys)).collect();
    for &i in &order {
        let s = Instant::now();
        let v = cold.get(&key(i), Version(lsn)).await.expect("get");
        let us = s.elapsed().as_micros() as u64;
        assert_eq!(v.as_deref(), Some(&value[..]));
        let (hits, misses) = cold.cache_stats();
        let _ = hits;
        // A read whose block was already cached moved only the hit counter.
        if misses > miss.len() + hit.len() {
            miss.record(us.max(1)).ok();
        } else {
            hit.record(us.max(1)).ok();
        }
    }
    order.reverse();
    for &i in &order {
        let s = Instant::now();
        cold.get(&key(i), Version(lsn)).await.expect("get");
        hit.record((s.elapsed().as_micros() as u64).max(1)).ok();
    }
    // 3. Time travel: the same keys at a random old version.
    let mut travel = Histogram::<u64>::new(3).expect("histogram");
    for &i in &order {
        let (_, at) = version_ends[rng.below(versions)];
        let s = Instant::now();
        let v = cold
            .get(&key(i), Version(at))
            .await
            .expect("get at version");
        travel.record((s.elapsed().as_micros() as u64).max(1)).ok();
        assert_eq!(v.as_deref(), Some(&value[..]));
    }
    println!("| read | count | p50 µs | p99 µs | mean µs |");
    println!("|---|---:|---:|---:|---:|");
    row("point read, block-cache miss", &miss);
    row("point read, block-cache hit", &hit);
    row("time-travel read (random old version, warm cache)", &travel);
    let (hits, misses) = cold.cache_stats();
    println!(
        "\nblock cache: {hits} hits, {misses} misses; miss p50 / hit p50 = {:.1}",
        miss.value_at_quantile(0.5) as f64 / hit.value_at_quantile(0.5).max(1) as f64
    );

    compaction(&base, keys, env("FERRISDB_BENCH_COMPACT_DELTAS", 8)).await;
}

/// 4. L0 → L1 compaction: `deltas` checkpoints of every key once each, written with compaction
///    off, then merged by a timeline that compacts after `deltas` L0 layers.
async fn compaction(base: &std::path::Path, keys: usize, deltas: usize) {
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("local store"));
    let options = |compact_after_deltas| TimelineOptions {
        compact_after_deltas,
        image_after_deltas: usize::MAX,
        ..TimelineOptions::keep_everything()
    };
    let load = |compact_after_deltas| {
        Timeline::load_with_options(
            "bench-compaction",
            store.clone(),
            Metrics::new().expect("metrics"),
            Arc::new(BlockCache::in_memory(64 << 20)),
            options(compact_after_deltas),
        )
    };
    let writer = load(usize::MAX).await.expect("load timeline");
    let mut lsn = 0u64;
    for round in 0..deltas {
        let value = Bytes::from(format!("{round:0>100}"));
        for chunk in (0..keys).collect::<Vec<_>>().chunks(100) {
            let (frame, v) = set_frame(chunk, &value, lsn);
            let records = wal::decode_frames(&frame, lsn).expect("decode");
            writer.apply(&records).expect("apply");
            lsn = v;
        }
        writer.checkpoint(Version(lsn)).await.expect("checkpoint");
    }
    drop(writer);
    let compactor = load(deltas).await.expect("load timeline");
    let started = Instant::now();
    compactor.maintain().await.expect("compaction");
    let took = started.elapsed();
    // The newest round's value is what a read at the end finds, from the L1 layers.
    let last = Bytes::from(format!("{:0>100}", deltas - 1));
    let probe = key(keys / 2);
    let read = compactor.get(&probe, Version(lsn)).await.expect("get");
    assert_eq!(
        read.as_deref(),
        Some(&last[..]),
        "compaction lost the newest value"
    );
    let entries = keys * deltas;
    println!(
        "\ncompaction: {deltas} L0 layers, {entries} entries, merged into L1 in {:.2} s = {:.0}k entries/s",
        took.as_secs_f64(),
        entries as f64 / took.as_secs_f64() / 1e3
    );
    drop(compactor);

    // 5. An image layer of every key over the compacted run.
    let imager = Timeline::load_with_options(
        "bench-compaction",
        store.clone(),
        Metrics::new().expect("metrics"),
        Arc::new(BlockCache::in_memory(64 << 20)),
        TimelineOptions {
            image_after_deltas: 1,
            ..options(usize::MAX)
        },
    )
    .await
    .expect("load timeline");
    let started = Instant::now();
    imager.maintain().await.expect("image");
    let took = started.elapsed();
    let read = imager.get(&probe, Version(lsn)).await.expect("get");
    assert_eq!(
        read.as_deref(),
        Some(&last[..]),
        "the image lost the newest value"
    );
    println!(
        "image: {keys} keys over {deltas} versions each, written in {:.2} s",
        took.as_secs_f64()
    );
}
