//! Reads at every version across checkpoints and a reload from the bucket, the change feed
//! batch by batch, and reads beyond ingestion.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferrisdb_common::wal::{Mutation, WalRecord};
use ferrisdb_common::{ErrorKind, Result, Version};
use object_store::ObjectStore;
use object_store::memory::InMemory;

use super::{Timeline, TimelineOptions};
use crate::block_cache::BlockCache;
use crate::metrics::Metrics;

pub(super) fn rec(version: u64, muts: &[(&str, Option<&str>)]) -> WalRecord {
    WalRecord {
        version: Version(version),
        commit_time_micros: version,
        mutations: muts
            .iter()
            .map(|(k, v)| match v {
                Some(v) => Mutation::Set {
                    key: Bytes::copy_from_slice(k.as_bytes()),
                    value: Bytes::copy_from_slice(v.as_bytes()),
                },
                None => Mutation::Clear {
                    key: Bytes::copy_from_slice(k.as_bytes()),
                },
            })
            .collect(),
    }
}

async fn load_all(store: Arc<dyn ObjectStore>, metrics: Metrics) -> Result<Timeline> {
    let cache = Arc::new(BlockCache::in_memory(1 << 20));
    Timeline::load_with_options(
        "db",
        store,
        metrics,
        cache,
        TimelineOptions::keep_everything(),
    )
    .await
}

fn s(v: &str) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(v.as_bytes()))
}

/// A commit time below the one before (a primary elected after a failover, its clock a little
/// behind its predecessor's) is raised at ingest: the change feed, the cold segments after a
/// checkpoint and reload, and `history` all give the same, never decreasing, times.
#[tokio::test]
async fn a_commit_time_below_the_one_before_is_raised_everywhere_alike() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let metrics = Metrics::new().unwrap();
    let t = load_all(store.clone(), metrics.clone()).await.unwrap();
    let at = |version: u64, time: u64| WalRecord {
        commit_time_micros: time,
        ..rec(version, &[("k", Some("v"))])
    };
    t.apply(&[at(10, 1_000), at(20, 2_000)]).unwrap();
    // The new primary's first two commits, stamped below 2_000.
    t.apply(&[at(30, 1_990)]).unwrap();
    t.apply(&[at(40, 1_995), at(50, 2_500)]).unwrap();
    let want = vec![
        (10, 1_000),
        (20, 2_000),
        (30, 2_000),
        (40, 2_000),
        (50, 2_500),
    ];
    let times = |rs: Vec<WalRecord>| {
        rs.iter()
            .map(|r| (r.version.0, r.commit_time_micros))
            .collect::<Vec<_>>()
    };
    assert_eq!(times(t.records_since(Version(0)).await.unwrap()), want);
    let history = |h: Vec<(Version, u64, Option<Bytes>)>| {
        h.iter()
            .map(|(v, time, _)| (v.0, *time))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        history(t.history(b"k", Version(0), Version(50)).await.unwrap()),
        want
    );
    assert_eq!(t.checkpoint(Version(50)).await.unwrap(), Version(50));
    let reloaded = load_all(store, metrics).await.unwrap();
    assert_eq!(
        times(reloaded.records_since(Version(0)).await.unwrap()),
        want
    );
    assert_eq!(
        history(
            reloaded
                .history(b"k", Version(0), Version(50))
                .await
                .unwrap()
        ),
        want
    );
    assert_eq!(reloaded.version_at(1_999).unwrap(), Version(10));
    assert_eq!(reloaded.version_at(2_000).unwrap(), Version(40));
}

#[tokio::test]
async fn reads_at_versions_across_checkpoints_and_reload() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let metrics = Metrics::new().unwrap();
    let t = load_all(store.clone(), metrics.clone()).await.unwrap();
    t.apply(&[rec(10, &[("a", Some("a1")), ("b", Some("b1"))])])
        .unwrap();
    t.apply(&[rec(20, &[("a", Some("a2"))])]).unwrap();
    assert_eq!(t.checkpoint(Version(20)).await.unwrap(), Version(20));
    t.apply(&[rec(30, &[("a", None), ("c", Some("c3"))])])
        .unwrap();
    t.apply(&[rec(40, &[("a", Some("a4"))])]).unwrap();
    assert_eq!(t.checkpoint(Version(40)).await.unwrap(), Version(40));
    t.apply(&[rec(50, &[("b", Some("b5"))])]).unwrap(); // not checkpointed

    let check = |t: Arc<Timeline>, with_tail: bool| async move {
        assert_eq!(t.get(b"a", Version(9)).await.unwrap(), None);
        assert_eq!(t.get(b"a", Version(10)).await.unwrap(), s("a1"));
        assert_eq!(t.get(b"a", Version(25)).await.unwrap(), s("a2"));
        assert_eq!(t.get(b"a", Version(30)).await.unwrap(), None);
        assert_eq!(t.get(b"a", Version(40)).await.unwrap(), s("a4"));
        let (r, more) = t
            .get_range(b"a", b"z", Version(30), 0, false)
            .await
            .unwrap();
        assert!(!more);
        let keys: Vec<_> = r.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(
            keys,
            vec![Bytes::from_static(b"b"), Bytes::from_static(b"c")]
        );
        let (r, more) = t.get_range(b"a", b"z", Version(40), 2, true).await.unwrap();
        assert!(more);
        assert_eq!(r[0], (Bytes::from_static(b"c"), Bytes::from_static(b"c3")));
        assert_eq!(r[1], (Bytes::from_static(b"b"), Bytes::from_static(b"b1")));
        if with_tail {
            assert_eq!(t.get(b"b", Version(50)).await.unwrap(), s("b5"));
        }
    };
    let t = Arc::new(t);
    check(t.clone(), true).await;
    let h: Vec<_> = t.history(b"a", Version(0), Version(50)).await.unwrap();
    let h: Vec<_> = h
        .iter()
        .map(|(v, time, val)| (v.0, *time, val.clone()))
        .collect();
    assert_eq!(
        h,
        vec![
            (10, 10, s("a1")),
            (20, 20, s("a2")),
            (30, 30, None),
            (40, 40, s("a4"))
        ]
    );
    assert_eq!(t.version_at(25).unwrap(), Version(20));
    assert_eq!(t.version_at(9).unwrap(), Version::ZERO);
    // A pageserver restarted with an empty disk sees exactly what was uploaded.
    let reloaded = Arc::new(load_all(store, metrics).await.unwrap());
    assert_eq!(reloaded.remote_consistent_version(), Version(40));
    assert_eq!(reloaded.ingested_version(), Version(40));
    check(reloaded.clone(), false).await;
    // The change feed: from memory and segments live, from segments alone after reload.
    let versions = |rs: Vec<WalRecord>| rs.iter().map(|r| r.version.0).collect::<Vec<_>>();
    assert_eq!(
        versions(t.records_since(Version(0)).await.unwrap()),
        vec![10, 20, 30, 40, 50]
    );
    assert_eq!(
        versions(t.records_since(Version(25)).await.unwrap()),
        vec![30, 40, 50]
    );
    // Batch by batch: one cold segment at a time, then memory, never the whole log.
    for (after, limit, want) in [
        (0, 100, vec![10, 20]),
        (10, 100, vec![20]),
        (20, 100, vec![30, 40]),
        (40, 100, vec![50]),
        (40, 1, vec![50]),
        (50, 100, vec![]),
    ] {
        let got = versions(t.records_batch(Version(after), limit).await.unwrap());
        assert_eq!(got, want, "after {after}");
    }
    // What is only in memory comes at most `limit` at a time, in order.
    t.apply(&[rec(60, &[("d", Some("d6"))])]).unwrap();
    t.apply(&[rec(70, &[("d", Some("d7"))])]).unwrap();
    for (after, want) in [(40, vec![50, 60]), (60, vec![70]), (70, vec![])] {
        let got = versions(t.records_batch(Version(after), 2).await.unwrap());
        assert_eq!(got, want, "after {after}");
    }
    let from_bucket = reloaded.records_since(Version(0)).await.unwrap();
    assert_eq!(versions(from_bucket.clone()), vec![10, 20, 30, 40]);
    assert_eq!(from_bucket[2], rec(30, &[("a", None), ("c", Some("c3"))]));
    assert_eq!(
        reloaded
            .history(b"a", Version(0), Version(40))
            .await
            .unwrap()
            .len(),
        4
    );
    assert_eq!(reloaded.version_at(35).unwrap(), Version(30));
    // Version 50 was never uploaded: the reloaded state must not pretend to have it.
    let e = reloaded
        .wait_ingested(Version(50), Duration::from_millis(10))
        .await;
    assert_eq!(e.unwrap_err().kind(), ErrorKind::FutureVersion);
}

/// A checkpoint with only empty commits to upload (the records a read's liveness check
/// writes) moves the durable version on without a layer; the layer after it must still chain
/// on to the one before, or a pageserver restarted from the bucket refuses the manifest as
/// corrupt (the delta chain has a gap) and the database cannot be restored.
#[tokio::test]
async fn checkpoints_of_empty_commits_leave_a_bucket_that_reloads() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let metrics = Metrics::new().unwrap();
    let t = load_all(store.clone(), metrics.clone()).await.unwrap();
    t.apply(&[rec(10, &[("a", Some("a1"))])]).unwrap();
    assert_eq!(t.checkpoint(Version(10)).await.unwrap(), Version(10));
    // Only empty commits since: a checkpoint, then another with nothing new at all.
    t.apply(&[rec(20, &[]), rec(30, &[])]).unwrap();
    assert_eq!(t.checkpoint(Version(30)).await.unwrap(), Version(30));
    assert_eq!(t.checkpoint(Version(30)).await.unwrap(), Version(30));
    t.apply(&[rec(35, &[])]).unwrap();
    assert_eq!(t.checkpoint(Version(35)).await.unwrap(), Version(35));
    t.apply(&[rec(40, &[("a", Some("a4")), ("b", Some("b4"))])])
        .unwrap();
    assert_eq!(t.checkpoint(Version(40)).await.unwrap(), Version(40));
    t.apply(&[rec(50, &[])]).unwrap();
    assert_eq!(t.checkpoint(Version(50)).await.unwrap(), Version(50));

    let reloaded = load_all(store, metrics).await.unwrap();
    assert_eq!(reloaded.remote_consistent_version(), Version(50));
    for (at, a, b) in [
        (9, None, None),
        (10, s("a1"), None),
        (25, s("a1"), None),
        (39, s("a1"), None),
        (40, s("a4"), s("b4")),
        (50, s("a4"), s("b4")),
    ] {
        assert_eq!(
            reloaded.get(b"a", Version(at)).await.unwrap(),
            a,
            "a at {at}"
        );
        assert_eq!(
            reloaded.get(b"b", Version(at)).await.unwrap(),
            b,
            "b at {at}"
        );
    }
    let h = reloaded
        .history(b"a", Version(0), Version(50))
        .await
        .unwrap();
    let versions: Vec<u64> = h.iter().map(|(v, _, _)| v.0).collect();
    assert_eq!(versions, vec![10, 40]);
}

#[tokio::test(start_paused = true)]
async fn reads_beyond_ingestion_wait_then_fail_with_future_version() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let t = load_all(store, Metrics::new().unwrap()).await.unwrap();
    let e = t.get(b"a", Version(5)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FutureVersion);
}

#[tokio::test]
async fn a_checkpoint_is_due_once_the_open_layer_reaches_its_size_mark() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let t = Timeline::load_with_options(
        "db",
        store,
        Metrics::new().unwrap(),
        Arc::new(BlockCache::in_memory(1 << 20)),
        TimelineOptions {
            checkpoint_bytes: 10_000,
            ..TimelineOptions::keep_everything()
        },
    )
    .await
    .unwrap();
    let value = "v".repeat(1_000);
    // Nine values of 1 kB: under the mark, nothing is due.
    for i in 1..=9u64 {
        t.apply(&[rec(i, &[(&format!("k{i}"), Some(value.as_str()))])])
            .unwrap();
    }
    assert!(t.open_layer_bytes() < 10_000);
    let waited = tokio::time::timeout(Duration::from_millis(100), t.checkpoint_due()).await;
    assert!(waited.is_err(), "due at {} bytes", t.open_layer_bytes());
    // The tenth and eleventh are over it: due, though no one was waiting when they were
    // applied.
    t.apply(&[rec(10, &[("k10", Some(value.as_str()))])])
        .unwrap();
    t.apply(&[rec(11, &[("k11", Some(value.as_str()))])])
        .unwrap();
    assert!(t.open_layer_bytes() >= 10_000);
    tokio::time::timeout(Duration::from_secs(1), t.checkpoint_due())
        .await
        .expect("a checkpoint is due");
    // One signal was kept for the two records over the mark, not one each: after the
    // checkpoint empties the open layer, nothing more is due.
    t.checkpoint(Version(11)).await.unwrap();
    assert_eq!(t.open_layer_bytes(), 0);
    let again = tokio::time::timeout(Duration::from_millis(100), t.checkpoint_due()).await;
    assert!(again.is_err(), "a second signal was kept");
}

/// While the store refuses every upload, the in-memory layers fill to two checkpoints' worth
/// and then say they have no room (the WAL follower stops reading there); the wait asks for a
/// checkpoint again and again, and ends once one succeeds. Without the bound the open layer
/// grew with the write rate for as long as the store was down.
#[tokio::test(start_paused = true)]
async fn ingestion_waits_while_uploads_fail_and_resumes_after_one_succeeds() {
    let bucket: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let faulty = Arc::new(ferrisdb_server_common::faulty_store::FaultyStore::new(
        bucket, 0, 7,
    ));
    let metrics = Metrics::new().unwrap();
    let t = Arc::new(
        Timeline::load_with_options(
            "db",
            faulty.clone(),
            metrics.clone(),
            Arc::new(BlockCache::in_memory(1 << 20)),
            TimelineOptions {
                checkpoint_bytes: 10_000,
                ..TimelineOptions::keep_everything()
            },
        )
        .await
        .unwrap(),
    );
    faulty.set_fail_percent(100);
    let value = "v".repeat(1_000);
    let mut version = 0;
    while t.has_room() {
        version += 1;
        t.apply(&[rec(
            version,
            &[(&format!("k{version}"), Some(value.as_str()))],
        )])
        .unwrap();
        assert!(
            version < 100,
            "still room at {} bytes",
            t.open_layer_bytes()
        );
    }
    // Two checkpoints' worth (20,000 bytes of 1 kB values), not more.
    assert!((19..=22).contains(&version), "full after {version} records");
    assert!(t.checkpoint(Version(version)).await.is_err());
    assert!(!t.has_room(), "a failed upload kept everything in memory");
    assert_eq!(metrics.checkpoint_failures.get(), 1);

    let waiting = tokio::spawn({
        let t = t.clone();
        async move { t.wait_for_room().await }
    });
    // The wait asks for a checkpoint, and again after a failed one.
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(5), t.checkpoint_due())
            .await
            .expect("the wait asks for a checkpoint");
        assert!(t.checkpoint(Version(version)).await.is_err());
    }
    assert!(!waiting.is_finished(), "room while every upload fails");
    assert_eq!(metrics.ingest_paused.get(), 1);

    faulty.set_fail_percent(0);
    tokio::time::timeout(Duration::from_secs(5), t.checkpoint_due())
        .await
        .expect("the wait asks for a checkpoint");
    assert_eq!(
        t.checkpoint(Version(version)).await.unwrap(),
        Version(version)
    );
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the wait ends once a checkpoint made room")
        .unwrap();
    assert!(t.has_room());
    assert_eq!(metrics.ingest_paused.get(), 0);
    // Nothing held back was lost on the way.
    let v = t.get(b"k1", Version(version)).await.unwrap();
    assert_eq!(v.as_deref(), Some(value.as_bytes()));
}

/// A range read across many layers over a distant store reads several of them at once
/// (each layer here is one block, so only reading layers together puts more than one GET in
/// flight), and answers as over a near store.
#[tokio::test]
async fn a_range_read_reads_several_layers_at_once() {
    let bucket: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let t = load_all(bucket.clone(), Metrics::new().unwrap())
        .await
        .unwrap();
    for i in 1..=12u64 {
        t.apply(&[rec(i * 10, &[(&format!("k{i:02}"), Some("v"))])])
            .unwrap();
        t.checkpoint(Version(i * 10)).await.unwrap();
    }
    let want = t
        .get_range(b"k", b"l", Version(120), 0, false)
        .await
        .unwrap();
    assert_eq!(want.0.len(), 12);
    let slow = Arc::new(ferrisdb_server_common::faulty_store::FaultyStore::new(
        bucket, 0, 1,
    ));
    let far = load_all(slow.clone(), Metrics::new().unwrap())
        .await
        .unwrap();
    slow.set_get_delay(Duration::from_millis(5));
    let _ = slow.most_gets_in_flight();
    let got = far
        .get_range(b"k", b"l", Version(120), 0, false)
        .await
        .unwrap();
    assert_eq!(got, want);
    assert!(
        slow.most_gets_in_flight() > 1,
        "layers were read one at a time"
    );
    let limited = far
        .get_range(b"k", b"l", Version(120), 5, true)
        .await
        .unwrap();
    assert_eq!(limited.0.len(), 5);
    assert_eq!(limited.0[0].0.as_ref(), b"k12");
}

/// A checkpoint of empty commits only (a read's liveness record) uploads them in a segment and
/// lets them go, so the next checkpoint does not upload them again; and after a restart from
/// the bucket the change feed reads across them (it refused with `version_too_old`: the
/// commit times, loaded from layers, did not list them).
#[tokio::test]
async fn empty_commits_are_uploaded_once_and_the_feed_reads_across_them_after_a_restart() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let metrics = Metrics::new().unwrap();
    let t = load_all(store.clone(), metrics.clone()).await.unwrap();
    t.apply(&[rec(10, &[("a", Some("1"))])]).unwrap();
    t.checkpoint(Version(10)).await.unwrap();
    t.apply(&[rec(20, &[])]).unwrap();
    t.apply(&[rec(30, &[])]).unwrap();
    t.checkpoint(Version(30)).await.unwrap();
    t.apply(&[rec(40, &[])]).unwrap();
    t.checkpoint(Version(40)).await.unwrap();
    let segments: Vec<(u64, u64)> = t
        .read_map()
        .unwrap()
        .segments
        .iter()
        .map(|s| (s.first.0, s.last.0))
        .collect();
    assert_eq!(segments, vec![(10, 10), (20, 30), (40, 40)]);
    let versions = |rs: Vec<WalRecord>| rs.iter().map(|r| r.version.0).collect::<Vec<_>>();
    assert_eq!(
        versions(t.records_since(Version(0)).await.unwrap()),
        vec![10, 20, 30, 40]
    );

    let reloaded = load_all(store, metrics).await.unwrap();
    assert_eq!(reloaded.remote_consistent_version(), Version(40));
    assert_eq!(
        versions(reloaded.records_since(Version(0)).await.unwrap()),
        vec![10, 20, 30, 40]
    );
    reloaded.apply(&[rec(50, &[("a", Some("5"))])]).unwrap();
    assert_eq!(
        versions(reloaded.records_since(Version(10)).await.unwrap()),
        vec![20, 30, 40, 50]
    );
    assert_eq!(
        versions(reloaded.records_since(Version(40)).await.unwrap()),
        vec![50]
    );
}

/// The manifest's generation is read without the checkpoint lock, which an upload holds for
/// as long as the store takes: a status call answers while a checkpoint is stuck.
#[tokio::test]
async fn the_manifest_generation_is_read_while_a_checkpoint_holds_the_manifest() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let t = load_all(store, Metrics::new().unwrap()).await.unwrap();
    t.apply(&[rec(10, &[("a", Some("1"))])]).unwrap();
    t.checkpoint(Version(10)).await.unwrap();
    let held = t.manifest.lock().await;
    let generation = tokio::time::timeout(Duration::from_secs(1), t.manifest_generation())
        .await
        .expect("waited for the manifest lock");
    assert_eq!(generation, held.generation);
    assert_eq!(generation, 1);
}

/// A safekeeper past half its WAL budget makes a checkpoint due at once, if enough WAL awaits
/// upload (a quarter of the budget, at least 1 MiB), and only once per checkpoint; a budget
/// too small to be true costs at most a checkpoint per MiB.
#[tokio::test]
async fn a_safekeeper_near_its_wal_budget_makes_a_checkpoint_due_once_per_checkpoint() {
    const MIB: u64 = 1 << 20;
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let metrics = Metrics::new().unwrap();
    let t = load_all(store, metrics.clone()).await.unwrap();
    let due = || async {
        tokio::time::timeout(Duration::from_millis(100), t.checkpoint_due())
            .await
            .is_ok()
    };
    // Versions are WAL positions: 4 MiB of WAL await upload.
    t.apply(&[rec(4 * MIB, &[("a", Some("1"))])]).unwrap();
    t.wal_budget(10 * MIB, 64 * MIB);
    assert!(!due().await, "under half the budget");
    t.wal_budget(40 * MIB, 64 * MIB);
    assert!(!due().await, "4 MiB pending is under a quarter of 64 MiB");
    t.wal_budget(0, 0);
    assert!(!due().await, "a safekeeper that said nothing");
    t.wal_budget(5 * MIB, 8 * MIB);
    assert!(due().await, "past half of 8 MiB with 4 MiB pending");
    assert_eq!(metrics.early_checkpoints.get(), 1);
    t.wal_budget(6 * MIB, 8 * MIB);
    assert!(!due().await, "asked twice before the checkpoint");

    t.checkpoint(Version(4 * MIB)).await.unwrap();
    assert_eq!(t.remote_consistent_version(), Version(4 * MIB));
    t.apply(&[rec(4 * MIB + 512 * 1024, &[("a", Some("2"))])])
        .unwrap();
    t.wal_budget(6 * MIB, 8 * MIB);
    assert!(!due().await, "512 KiB pending");
    t.apply(&[rec(8 * MIB, &[("a", Some("3"))])]).unwrap();
    t.wal_budget(6 * MIB, 8 * MIB);
    assert!(due().await, "asked again after the checkpoint");
    assert_eq!(metrics.early_checkpoints.get(), 2);

    // A budget of 1 KiB: a checkpoint per MiB at most, not one per chunk.
    t.checkpoint(Version(8 * MIB)).await.unwrap();
    t.apply(&[rec(8 * MIB + 100_000, &[("a", Some("4"))])])
        .unwrap();
    t.wal_budget(MIB, 1024);
    assert!(!due().await, "100 kB pending against a tiny budget");
    t.apply(&[rec(9 * MIB, &[("a", Some("5"))])]).unwrap();
    t.wal_budget(MIB, 1024);
    assert!(due().await);
    assert_eq!(metrics.early_checkpoints.get(), 3);
}

/// A long history comes in pages that read no further than they need: joined, the pages are
/// the whole history (a range clear that removed a value included, one that found nothing
/// not); each holds at most one entry past its byte target and reads about as many layers
/// as it answers entries, whatever follows it.
#[tokio::test]
async fn a_history_page_reads_only_the_layers_it_answers() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let t = load_all(store, Metrics::new().unwrap()).await.unwrap();
    let big = |i: u64| Bytes::from(vec![i as u8; 10_000]);
    let mut v = 0;
    for i in 0..40u64 {
        v += 10;
        let m = match i % 10 {
            // A range clear that removes the value, then one with nothing to remove.
            7 | 8 => Mutation::ClearRange {
                begin: Bytes::from_static(b"k"),
                end: Bytes::from_static(b"l"),
            },
            _ => Mutation::Set {
                key: Bytes::from_static(b"k"),
                value: big(i),
            },
        };
        t.apply(&[WalRecord {
            version: Version(v),
            commit_time_micros: v,
            mutations: vec![m],
        }])
        .unwrap();
        // One layer per version, but the last few stay in memory.
        if i < 36 {
            t.checkpoint(Version(v)).await.unwrap();
        }
    }
    let to = Version(v);
    let whole = t.history(b"k", Version(0), to).await.unwrap();
    let versions: Vec<u64> = whole.iter().map(|(v, _, _)| v.0).collect();
    // Of each ten: seven sets, the clear that removed one; the second clear is no version.
    let want: Vec<u64> = (1..=40u64)
        .filter(|i| (i - 1) % 10 != 8)
        .map(|i| i * 10)
        .collect();
    assert_eq!(versions, want);
    let target = 50_000;
    let (mut from, mut joined, mut pages) = (Version(0), Vec::new(), 0);
    loop {
        let (hits, misses) = t.cache_stats();
        let (page, more) = t.history_page(b"k", from, to, target).await.unwrap();
        let (hits2, misses2) = t.cache_stats();
        let blocks = (hits2 + misses2) - (hits + misses);
        pages += 1;
        let bytes: usize = page
            .iter()
            .map(|(_, _, v)| super::history::entry_bytes(v))
            .sum();
        let last = page
            .last()
            .map(|e| e.2.as_ref().map_or(0, |v| v.len()) + 32);
        assert!(
            bytes - last.unwrap_or(0) < target,
            "page {pages}: {bytes} bytes"
        );
        assert!(
            blocks <= page.len() as u64 + 2,
            "page {pages}: {blocks} blocks read for {} entries",
            page.len()
        );
        let next = page.last().map(|(v, _, _)| Version(v.0 + 1));
        joined.extend(page);
        match next {
            Some(n) if more => from = n,
            _ => break,
        }
    }
    assert!(pages >= 6, "{pages} pages");
    assert_eq!(joined, whole);
}

/// An unlimited range read with a byte target comes in pages that read about their own size:
/// joined, forwards and backwards, the pages are the whole range (clears and a range clear
/// applied, the newest rows from memory), and no page reads more than a fraction of the
/// blocks the whole range takes.
#[tokio::test]
async fn a_range_page_reads_about_its_own_size() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let t = load_all(store, Metrics::new().unwrap()).await.unwrap();
    let key = |i: u32| Bytes::from(format!("k{i:05}"));
    let mut v = 0;
    for round in 0..4u32 {
        v += 10;
        let mut mutations: Vec<Mutation> = (0..8000u32)
            .filter(|i| i % 4 == round)
            .map(|i| Mutation::Set {
                key: key(i),
                value: Bytes::from(vec![round as u8; 1000]),
            })
            .collect();
        if round == 2 {
            mutations.push(Mutation::ClearRange {
                begin: key(500),
                end: key(700),
            });
            mutations.push(Mutation::Clear { key: key(5) });
        }
        t.apply(&[WalRecord {
            version: Version(v),
            commit_time_micros: v,
            mutations,
        }])
        .unwrap();
        if round < 3 {
            t.checkpoint(Version(v)).await.unwrap();
        }
    }
    let at = Version(v);
    let (whole, more) = t.get_range(b"k", b"l", at, 0, false).await.unwrap();
    assert!(!more);
    assert!(whole.len() > 7500 && !whole.iter().any(|(k, _)| *k == key(5)));
    let (h0, m0) = t.cache_stats();
    t.get_range(b"k", b"l", at, 0, false).await.unwrap();
    let (h1, m1) = t.cache_stats();
    let whole_blocks = (h1 + m1) - (h0 + m0);
    let target = 64 << 10;
    for reverse in [false, true] {
        let (mut lo, mut hi) = (Bytes::from_static(b"k"), Bytes::from_static(b"l"));
        let mut joined = Vec::new();
        loop {
            let (h0, m0) = t.cache_stats();
            let (page, more) = t
                .get_range_until(&lo, &hi, at, reverse, 1, target)
                .await
                .unwrap();
            let (h1, m1) = t.cache_stats();
            let blocks = (h1 + m1) - (h0 + m0);
            assert!(
                blocks * 4 < whole_blocks,
                "a page of {} rows read {blocks} of the range's {whole_blocks} blocks",
                page.len()
            );
            let bytes: usize = page.iter().map(|(k, v)| k.len() + v.len()).sum();
            assert!(!more || bytes >= target, "a short page said more follow");
            let last = page.last().map(|(k, _)| k.clone());
            joined.extend(page);
            match last {
                Some(last) if more => super::read::past(&last, reverse, &mut lo, &mut hi),
                _ => break,
            }
        }
        let mut want = whole.clone();
        if reverse {
            want.reverse();
        }
        assert!(joined == want, "reverse {reverse}: {} rows", joined.len());
    }
}

/// An image is built in memory from the layers under it, so none is written from more than
/// `image_max_input_bytes` of them; the same reads are answered from the deltas instead.
#[tokio::test]
async fn no_image_is_built_from_more_than_its_input_bound() {
    let mut answers = Vec::new();
    for bound in [usize::MAX, 1] {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let options = TimelineOptions {
            image_after_deltas: 2,
            image_max_input_bytes: bound,
            ..TimelineOptions::keep_everything()
        };
        let cache = Arc::new(BlockCache::in_memory(1 << 20));
        let t = Timeline::load_with_options("db", store, Metrics::new().unwrap(), cache, options)
            .await
            .unwrap();
        for v in 1..=4u64 {
            let value = format!("v{v}");
            t.apply(&[rec(v * 10, &[("a", Some(value.as_str())), ("b", None)])])
                .unwrap();
            t.checkpoint(Version(v * 10)).await.unwrap();
        }
        let images = t
            .read_map()
            .unwrap()
            .layers
            .iter()
            .filter(|l| l.image)
            .count();
        assert_eq!(
            images > 0,
            bound == usize::MAX,
            "bound {bound}: {images} images"
        );
        let mut read = Vec::new();
        for v in [10, 25, 40] {
            read.push(t.get(b"a", Version(v)).await.unwrap());
            read.push(t.get(b"b", Version(v)).await.unwrap());
        }
        answers.push(read);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0][4], s("v4"));
}

/// A read that failed while compaction or GC dropped layers (its layer's object deleted
/// under it) is run once more; one that failed with the layers unchanged is not.
#[tokio::test]
async fn a_read_failing_across_dropped_layers_is_run_again() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let t = load_all(store, Metrics::new().unwrap()).await.unwrap();
    let runs = AtomicUsize::new(0);
    let answer = t
        .retry_if_layers_dropped(|| async {
            if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                // Compaction replaced the layers this run had chosen and deleted them.
                t.layers_dropped.fetch_add(1, Ordering::SeqCst);
                return Err(ferrisdb_common::Error::unavailable(
                    "object store: layer not found",
                ));
            }
            Ok(7)
        })
        .await;
    assert_eq!(answer.unwrap(), 7);
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    let runs = AtomicUsize::new(0);
    let answer: Result<u32> = t
        .retry_if_layers_dropped(|| async {
            runs.fetch_add(1, Ordering::SeqCst);
            Err(ferrisdb_common::Error::unavailable("object store: down"))
        })
        .await;
    assert_eq!(answer.unwrap_err().kind(), ErrorKind::Unavailable);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "nothing changed: not run again"
    );
}

/// The term the safekeepers named for the WAL below a checkpoint's end goes into its manifest,
/// and a timeline loaded from it names that term when it resumes following: a log rewritten
/// under the database while this pageserver was down is then refused (docs/wal-protocol.md,
/// "Followers check the term they resume in"). A checkpoint whose end the term was not named
/// for records none, rather than a term that may belong to another position.
#[tokio::test]
async fn the_term_below_the_durable_version_survives_a_reload() {
    use ferrisdb_server_common::wal_follower::WalSink;

    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let metrics = Metrics::new().unwrap();
    let t = load_all(store.clone(), metrics.clone()).await.unwrap();
    assert_eq!(
        WalSink::resume_term(&t),
        None,
        "a new database: nothing to check"
    );
    t.apply(&[rec(10, &[("a", Some("a1"))])]).unwrap();
    WalSink::applied_term(&t, 10, 3);
    assert_eq!(t.checkpoint(Version(10)).await.unwrap(), Version(10));
    let reloaded = load_all(store.clone(), metrics.clone()).await.unwrap();
    assert_eq!(WalSink::applied_lsn(&reloaded), 10);
    assert_eq!(WalSink::resume_term(&reloaded), Some(3));

    // Records applied past the last position a term was named for: none is recorded.
    t.apply(&[rec(20, &[("a", Some("a2"))])]).unwrap();
    assert_eq!(t.checkpoint(Version(20)).await.unwrap(), Version(20));
    let reloaded = load_all(store.clone(), metrics.clone()).await.unwrap();
    assert_eq!(WalSink::applied_lsn(&reloaded), 20);
    assert_eq!(WalSink::resume_term(&reloaded), None);

    WalSink::applied_term(&t, 20, 4);
    t.apply(&[rec(30, &[("b", Some("b3"))])]).unwrap();
    WalSink::applied_term(&t, 30, 5);
    assert_eq!(t.checkpoint(Version(30)).await.unwrap(), Version(30));
    let reloaded = load_all(store, metrics).await.unwrap();
    assert_eq!(WalSink::resume_term(&reloaded), Some(5));
    assert_eq!(reloaded.get(b"a", Version(30)).await.unwrap(), s("a2"));
}
