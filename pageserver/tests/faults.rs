//! A write-heavy run against an object store that fails 20% of calls (some after the write
//! landed) and, for a while, all of them: nothing checkpointed is lost, and the manifest in the
//! bucket never names an object that is not there.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use ferrisdb_common::Version;
use ferrisdb_common::wal::{Mutation, WalRecord};
use ferrisdb_pageserver::block_cache::BlockCache;
use ferrisdb_pageserver::format::manifest;
use ferrisdb_pageserver::metrics::Metrics;
use ferrisdb_pageserver::timeline::{Timeline, TimelineOptions};
use ferrisdb_server_common::faulty_store::FaultyStore;

fn cache() -> Arc<BlockCache> {
    Arc::new(BlockCache::in_memory(1 << 20))
}
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};

fn record(version: u64, round: u64, n: u64) -> WalRecord {
    let mutations = (0..n)
        .map(|i| Mutation::Set {
            key: Bytes::from(format!("k{round:03}-{i:02}")),
            value: Bytes::from(format!("v{version}-{i}")),
        })
        .collect();
    WalRecord {
        version: Version(version),
        commit_time_micros: version,
        mutations,
    }
}

/// Every layer the live manifest names exists in the bucket.
async fn manifest_is_whole(bucket: &Arc<dyn ObjectStore>) -> manifest::Manifest {
    let m = manifest::load_latest(bucket, "db").await.unwrap();
    for layer in &m.layers {
        let path = manifest::layer_path("db", &layer.name);
        let meta = bucket
            .head(&path)
            .await
            .unwrap_or_else(|e| panic!("manifest {} names missing {path}: {e}", m.generation));
        assert_eq!(meta.size, layer.size, "{path} has the wrong size");
    }
    m
}

#[tokio::test(start_paused = true)]
async fn checkpoints_under_injected_faults_lose_nothing_and_never_dangle() {
    let bucket: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let faulty = Arc::new(FaultyStore::new(bucket.clone(), 20, 2026));
    let store: Arc<dyn ObjectStore> = faulty.clone();
    let t = Timeline::load_with_options(
        "db",
        store,
        Metrics::new().unwrap(),
        cache(),
        TimelineOptions::keep_everything(),
    )
    .await
    .unwrap();

    let mut version = 0;
    let mut checkpointed_rounds = 0;
    let mut failed_checkpoints = 0;
    for round in 0..60u64 {
        for _ in 0..5 {
            version += 100;
            t.apply(&[record(version, round, 4)]).unwrap();
        }
        // A stretch where the store is down entirely: checkpoints fail, data stays in memory.
        faulty.set_fail_percent(if (20..25).contains(&round) { 100 } else { 20 });
        match t.checkpoint(Version(version)).await {
            Ok(v) => {
                assert_eq!(v, Version(version));
                checkpointed_rounds = round + 1;
            }
            Err(_) => failed_checkpoints += 1,
        }
        let m = manifest_is_whole(&bucket).await;
        assert_eq!(m.remote_consistent_version, t.remote_consistent_version());
        // Reads never notice: the data is in memory or in layers.
        let v = t
            .get(format!("k{round:03}-03").as_bytes(), Version(version))
            .await
            .unwrap();
        assert_eq!(v, Some(Bytes::from(format!("v{version}-3"))));
    }
    assert!(
        failed_checkpoints >= 5,
        "the outage should have failed checkpoints"
    );
    assert!(
        faulty.injected() > 50,
        "only {} faults injected",
        faulty.injected()
    );
    assert_eq!(
        checkpointed_rounds, 60,
        "the last checkpoint should have succeeded"
    );

    // A pageserver rebuilt from the bucket alone has every write.
    let reloaded = Timeline::load_with_options(
        "db",
        bucket.clone(),
        Metrics::new().unwrap(),
        cache(),
        TimelineOptions::keep_everything(),
    )
    .await
    .unwrap();
    assert_eq!(reloaded.remote_consistent_version(), Version(version));
    let rows = reloaded
        .get_range(b"k", b"l", Version(version), 0, false)
        .await
        .unwrap()
        .0;
    assert_eq!(rows.len(), 60 * 4);
    for round in 0..60u64 {
        let last_in_round = (round * 5 + 5) * 100;
        let v = reloaded
            .get(format!("k{round:03}-01").as_bytes(), Version(version))
            .await
            .unwrap();
        assert_eq!(v, Some(Bytes::from(format!("v{last_in_round}-1"))));
    }
}

#[tokio::test]
async fn hot_reads_stay_in_the_block_cache_and_a_restart_refills_on_demand() {
    let bucket: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let t = Timeline::load_with_options(
        "db",
        bucket.clone(),
        Metrics::new().unwrap(),
        cache(),
        TimelineOptions::keep_everything(),
    )
    .await
    .unwrap();
    t.apply(&[record(100, 0, 50)]).unwrap();
    t.checkpoint(Version(100)).await.unwrap();

    // A restarted pageserver: empty cache, reads counted at the store.
    let counting = Arc::new(FaultyStore::new(bucket.clone(), 0, 1));
    let store: Arc<dyn ObjectStore> = counting.clone();
    let cache = Arc::new(ferrisdb_pageserver::block_cache::BlockCache::in_memory(
        1 << 20,
    ));
    let r = Timeline::load_with_options(
        "db",
        store,
        Metrics::new().unwrap(),
        cache,
        TimelineOptions::keep_everything(),
    )
    .await
    .unwrap();
    let after_open = counting.gets();
    let first = r.get(b"k000-07", Version(100)).await.unwrap();
    assert_eq!(first, Some(Bytes::from("v100-7")));
    let after_miss = counting.gets();
    assert!(after_miss > after_open, "a cold read must fetch its block");
    for _ in 0..20 {
        assert_eq!(r.get(b"k000-07", Version(100)).await.unwrap(), first);
        // A neighbour in the same block is a hit too.
        assert_eq!(
            r.get(b"k000-08", Version(100)).await.unwrap(),
            Some(Bytes::from("v100-8"))
        );
    }
    assert_eq!(
        counting.gets(),
        after_miss,
        "hot reads went to object storage"
    );
    // Keys the bloom filter rules out cost nothing either.
    assert_eq!(r.get(b"absent", Version(100)).await.unwrap(), None);
    assert_eq!(counting.gets(), after_miss);
    let (hits, misses) = r.cache_stats();
    assert!(hits >= 40 && misses >= 1, "hits {hits}, misses {misses}");
}
