//! Retention: images and GC against every answer above the horizon, a parent's GC stopping
//! at a branch point, and limited range reads checked against the full merge and a model
//! through compaction and images.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ferrisdb_common::wal::{Mutation, WalRecord};
use ferrisdb_common::{ErrorKind, Version};
use ferrisdb_server_common::clock::Clock;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};

use super::tests::rec;
use super::{Timeline, TimelineOptions};
use crate::block_cache::BlockCache;
use crate::format::manifest;
use crate::metrics::Metrics;

#[derive(Debug, Default)]
struct TestClock(AtomicU64);

impl Clock for TestClock {
    fn now_micros(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A test clock set to the real time (the store dates objects by it), and that time.
fn clock_at_now() -> (Arc<TestClock>, u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    (Arc::new(TestClock(AtomicU64::new(now))), now)
}

async fn objects(store: &Arc<dyn ObjectStore>, kind: &str) -> Vec<String> {
    let mut names: Vec<String> = store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(kind))
        .collect();
    names.sort();
    names
}

type Step = (u64, &'static [(&'static str, Option<&'static str>)]);

/// Four commits: a and b, a again, b again and c, a cleared.
const STEPS: [Step; 4] = [
    (10, &[("a", Some("a1")), ("b", Some("b1"))]),
    (20, &[("a", Some("a2"))]),
    (30, &[("b", Some("b3")), ("c", Some("c3"))]),
    (40, &[("a", None)]),
];

async fn open(store: &Arc<dyn ObjectStore>, clock: &Arc<TestClock>) -> Timeline {
    let options = TimelineOptions {
        pitr_interval: Duration::from_micros(100),
        image_after_deltas: 2,
        clock: clock.clone(),
        ..TimelineOptions::default()
    };
    let cache = Arc::new(BlockCache::in_memory(1 << 20));
    Timeline::load_with_options("db", store.clone(), Metrics::new().unwrap(), cache, options)
        .await
        .unwrap()
}

fn s(v: &str) -> Option<Bytes> {
    Some(Bytes::from(v.to_string()))
}

#[tokio::test]
async fn parent_gc_stops_at_the_branch_point_and_the_branch_reads_through_it() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let clock = Arc::new(TestClock::default());
    let parent = Arc::new(open(&store, &clock).await);
    let steps = STEPS;
    for (v, muts) in &steps[..2] {
        parent.apply(&[rec(*v, muts)]).unwrap();
        parent.checkpoint(Version(*v)).await.unwrap();
    }
    Timeline::create_branch(&parent, "br", Version(20))
        .await
        .unwrap();
    let e = Timeline::create_branch(&parent, "br", Version(20))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    for (v, muts) in &steps[2..] {
        parent.apply(&[rec(*v, muts)]).unwrap();
        parent.checkpoint(Version(*v)).await.unwrap();
    }
    // Old enough for the horizon to reach 40, but the branch point holds it at 20.
    clock.0.store(1_000, Ordering::SeqCst);
    parent.maintain().await.unwrap();
    let m = manifest::load_latest(&store, "db").await.unwrap();
    assert_eq!(m.gc_horizon, Version(20));
    assert_eq!(
        parent.get(b"a", Version(10)).await.unwrap_err().kind(),
        ErrorKind::VersionTooOld
    );
    let cache = Arc::new(BlockCache::in_memory(1 << 20));
    let branch = Timeline::load_with_ancestor(
        "br",
        store.clone(),
        Metrics::new().unwrap(),
        cache,
        TimelineOptions::keep_everything(),
        Some(parent.clone()),
    )
    .await
    .unwrap();
    assert_eq!(branch.ancestor(), Some(("db".to_string(), Version(20))));
    assert_eq!(branch.remote_consistent_version(), Version(20));
    branch
        .apply(&[rec(50, &[("c", Some("mine")), ("b", None)])])
        .unwrap();
    for (k, v, want) in [
        ("a", 20, s("a2")),
        ("b", 20, s("b1")),
        ("c", 20, None),
        ("a", 50, s("a2")),
        ("b", 50, None),
        ("c", 50, s("mine")),
    ] {
        assert_eq!(
            branch.get(k.as_bytes(), Version(v)).await.unwrap(),
            want,
            "{k}@{v}"
        );
    }
    let (rows, _) = branch
        .get_range(b"a", b"z", Version(50), 0, false)
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            (Bytes::from("a"), Bytes::from("a2")),
            (Bytes::from("c"), Bytes::from("mine"))
        ]
    );
    let (rows, more) = branch
        .get_range(b"a", b"z", Version(50), 1, true)
        .await
        .unwrap();
    assert_eq!(
        (rows, more),
        (vec![(Bytes::from("c"), Bytes::from("mine"))], true)
    );
    let h: Vec<u64> = branch
        .history(b"a", Version(20), Version(50))
        .await
        .unwrap()
        .iter()
        .map(|(v, _, _)| v.0)
        .collect();
    assert_eq!(h, vec![20]);
    assert_eq!(branch.version_at(25).unwrap(), Version(20));
    assert_eq!(branch.version_at(55).unwrap(), Version(50));
}

#[tokio::test]
async fn images_then_gc_keep_every_answer_above_the_horizon_and_refuse_below() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let clock = Arc::new(TestClock::default());
    let t = open(&store, &clock).await;
    let steps = STEPS;
    for (v, muts) in steps {
        t.apply(&[rec(v, muts)]).unwrap();
        t.checkpoint(Version(v)).await.unwrap();
    }
    assert_eq!(
        objects(&store, ".image").await.len(),
        2,
        "an image after every two deltas"
    );
    assert_eq!(objects(&store, ".delta").await.len(), 4);

    // Nothing is old enough yet: every version reads right, through the images too.
    let expect = [
        (10, "a", s("a1")),
        (20, "a", s("a2")),
        (30, "b", s("b3")),
        (40, "a", None),
        (40, "c", s("c3")),
        (25, "c", None),
    ];
    for (v, k, want) in &expect {
        assert_eq!(
            t.get(k.as_bytes(), Version(*v)).await.unwrap(),
            *want,
            "{k}@{v}"
        );
    }
    let (rows, _) = t
        .get_range(b"a", b"z", Version(40), 0, false)
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            (Bytes::from("b"), Bytes::from("b3")),
            (Bytes::from("c"), Bytes::from("c3"))
        ]
    );

    // The horizon reaches version 20: the delta below it goes; the one ending at it stays
    // for history from the horizon.
    clock.0.store(125, Ordering::SeqCst);
    t.maintain().await.unwrap();
    assert_eq!(objects(&store, ".delta").await.len(), 3);
    let expect = &expect;
    let check = |t: Timeline| async move {
        for (v, k, want) in &expect[1..] {
            assert_eq!(
                t.get(k.as_bytes(), Version(*v)).await.unwrap(),
                *want,
                "{k}@{v}"
            );
        }
        assert_eq!(
            t.get(b"a", Version(10)).await.unwrap_err().kind(),
            ErrorKind::VersionTooOld
        );
        assert_eq!(
            t.history(b"a", Version(1), Version(40))
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::VersionTooOld
        );
        let h = t.history(b"a", Version(20), Version(40)).await.unwrap();
        assert_eq!(
            h.iter().map(|(v, _, _)| v.0).collect::<Vec<_>>(),
            vec![20, 40],
            "history from the horizon on is whole"
        );
        // 0 is "from the oldest version still held": the horizon, not a refusal.
        let h = t.history(b"a", Version(0), Version(40)).await.unwrap();
        assert_eq!(
            h.iter().map(|(v, _, _)| v.0).collect::<Vec<_>>(),
            vec![20, 40]
        );
        // The change feed likewise: from 0 it starts at the horizon; from below it, refused.
        assert_eq!(t.feed_start(Version(0)), Version(20));
        assert_eq!(t.feed_start(Version(30)), Version(30));
        assert_eq!(
            t.records_batch(Version(0), 100).await.unwrap_err().kind(),
            ErrorKind::VersionTooOld
        );
        let after = Version(t.feed_start(Version(0)).0 - 1);
        let fed = t.records_batch(after, 100).await.unwrap();
        assert_eq!(fed.first().map(|r| r.version), Some(Version(20)));
        assert_eq!(
            t.version_at(15).unwrap_err().kind(),
            ErrorKind::VersionTooOld
        );
        let (rows, _) = t
            .get_range(b"a", b"z", Version(20), 0, false)
            .await
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (Bytes::from("a"), Bytes::from("a2")),
                (Bytes::from("b"), Bytes::from("b1"))
            ]
        );
        t
    };
    let t = check(t).await;
    // A pageserver rebuilt from the bucket alone answers the same, horizon included.
    let reloaded = check(open(&store, &clock).await).await;
    assert_eq!(
        reloaded.records_since(Version(5)).await.unwrap_err().kind(),
        ErrorKind::VersionTooOld
    );

    // Later still: only the newest image and what lies above it.
    clock.0.store(1_000, Ordering::SeqCst);
    t.maintain().await.unwrap();
    assert_eq!(
        objects(&store, ".delta").await.len(),
        1,
        "the one ending at 40"
    );
    assert_eq!(objects(&store, ".image").await.len(), 1);
    assert_eq!(t.get(b"c", Version(40)).await.unwrap(), s("c3"));
    assert_eq!(t.get(b"a", Version(40)).await.unwrap(), None);
    let m = manifest::load_latest(&store, "db").await.unwrap();
    assert_eq!(m.gc_horizon, Version(40));
    for e in &m.layers {
        store
            .head(&manifest::layer_path("db", &e.name))
            .await
            .unwrap();
    }
}

struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Random sets, clears and range clears over 9 rounds, checked against a plain model of
/// every version: point reads, full and limited range reads both ways, and history, from
/// memory, delta layers and images alike.
#[tokio::test]
async fn windowed_range_reads_match_the_full_merge() {
    use std::collections::BTreeMap;
    for seed in 0..12u64 {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let clock = Arc::new(TestClock::default());
        // L0 runs of 3 compact into L1 partitions of ~8 KiB; images every 2 runs.
        let options = TimelineOptions {
            pitr_interval: Duration::MAX,
            image_after_deltas: 2,
            compact_after_deltas: 3,
            l1_target_bytes: 8 << 10,
            clock,
            ..TimelineOptions::default()
        };
        let cache = Arc::new(BlockCache::in_memory(1 << 22));
        let t = Timeline::load_with_options(
            "db",
            store.clone(),
            Metrics::new().unwrap(),
            cache.clone(),
            options.clone(),
        )
        .await
        .unwrap();
        let mut rng = Lcg(seed);
        let mut versions = Vec::new();
        let mut model: BTreeMap<u64, BTreeMap<Bytes, Bytes>> = BTreeMap::new();
        let mut state: BTreeMap<Bytes, Bytes> = BTreeMap::new();
        for round in 0..9u64 {
            let v = (round + 1) * 10;
            let muts: Vec<Mutation> = (0..60)
                .map(|i| {
                    let key = Bytes::from(format!("k{:03}", rng.below(200)));
                    match rng.below(20) {
                        0..=3 => Mutation::Clear { key },
                        4 => Mutation::ClearRange {
                            end: Bytes::from(format!("k{:03}", rng.below(30) + 1)),
                            begin: key.slice(..3),
                        },
                        _ => Mutation::Set {
                            key,
                            value: Bytes::from(format!("{round}-{i}-{}", "x".repeat(600))),
                        },
                    }
                })
                .collect();
            for m in &muts {
                match m {
                    Mutation::Set { key, value } => {
                        state.insert(key.clone(), value.clone());
                    }
                    Mutation::Clear { key } => {
                        state.remove(key);
                    }
                    Mutation::ClearRange { begin, end } => {
                        state.retain(|k, _| !(begin <= k && k < end));
                    }
                }
            }
            model.insert(v, state.clone());
            t.apply(&[WalRecord {
                version: Version(v),
                commit_time_micros: v,
                mutations: muts,
            }])
            .unwrap();
            if round < 7 {
                t.checkpoint(Version(v)).await.unwrap();
            }
            versions.push(v);
        }
        for _ in 0..40 {
            let a = format!("k{:03}", rng.below(210));
            let b = format!("k{:03}", rng.below(210));
            let (begin, end) = if a <= b { (a, b) } else { (b, a) };
            let version = Version(versions[rng.below(versions.len() as u64) as usize]);
            let limit = 1 + rng.below(40) as usize;
            let reverse = rng.below(2) == 0;
            let (all, _) = t
                .get_range(begin.as_bytes(), end.as_bytes(), version, 0, false)
                .await
                .unwrap();
            let expected: Vec<(Bytes, Bytes)> = model[&version.0]
                .range(Bytes::from(begin.clone())..Bytes::from(end.clone()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(all, expected, "seed {seed}: [{begin}, {end}) @{version}");
            let probe = Bytes::from(format!("k{:03}", rng.below(200)));
            assert_eq!(
                t.get(&probe, version).await.unwrap(),
                model[&version.0].get(&probe).cloned(),
                "seed {seed}: get {probe:?} @{version}"
            );
            // History: one entry wherever the key's state changed between model versions.
            let history = t.history(&probe, Version(1), Version(90)).await.unwrap();
            let mut prev: Option<Bytes> = None;
            let mut changes = Vec::new();
            for (mv, snapshot) in &model {
                let now = snapshot.get(&probe).cloned();
                if now != prev {
                    changes.push((*mv, now.clone()));
                }
                prev = now;
            }
            // Entries that left the state unchanged (a clear of an absent key, a rewrite
            // of the same value) are real versions too; compare the changes only.
            let mut seen: Option<Bytes> = None;
            let got: Vec<(u64, Option<Bytes>)> = history
                .into_iter()
                .filter_map(|(v, _, val)| {
                    let changed = val != seen;
                    seen = val.clone();
                    changed.then_some((v.0, val))
                })
                .collect();
            assert_eq!(got, changes, "seed {seed}: history of {probe:?}");
            let mut want = all.clone();
            if reverse {
                want.reverse();
            }
            let more_exist = want.len() > limit;
            want.truncate(limit);
            let (got, more) = t
                .get_range(begin.as_bytes(), end.as_bytes(), version, limit, reverse)
                .await
                .unwrap();
            assert_eq!(
                got, want,
                "seed {seed}: [{begin}, {end}) @{version} limit {limit} reverse {reverse}"
            );
            assert!(
                !more_exist || more,
                "seed {seed}: more rows exist but `more` is false"
            );
        }
        // Compaction happened, and a pageserver rebuilt from the bucket reads the same at
        // every checkpointed version.
        let names: Vec<String> = store
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        assert!(
            names.iter().filter(|n| n.ends_with(".l1")).count() > 2,
            "{names:?}"
        );
        assert_eq!(names.iter().filter(|n| n.ends_with(".delta")).count(), 1);
        let reloaded =
            Timeline::load_with_options("db", store, Metrics::new().unwrap(), cache, options)
                .await
                .unwrap();
        for v in &versions[..7] {
            let (rows, _) = reloaded
                .get_range(b"k", b"l", Version(*v), 0, false)
                .await
                .unwrap();
            let want: Vec<(Bytes, Bytes)> = model[v]
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(rows, want, "seed {seed}: reloaded @{v}");
        }
    }
}

/// Objects no manifest names (an upload whose manifest never came, a deletion that failed)
/// are deleted once older than the grace period, and only those: a fresh unnamed object may
/// be a checkpoint's layer whose manifest is on its way.
#[tokio::test]
async fn orphans_older_than_the_grace_are_swept_and_nothing_named_is() {
    use super::orphans::{ORPHAN_GRACE, ORPHAN_SWEEP_EVERY};
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (clock, now) = clock_at_now();
    let t = open(&store, &clock).await;
    t.apply(&[rec(10, &[("a", Some("a1"))])]).unwrap();
    t.checkpoint(Version(10)).await.unwrap();
    t.apply(&[rec(20, &[("b", Some("b2"))])]).unwrap();
    t.checkpoint(Version(20)).await.unwrap();
    let named_layers = objects(&store, ".delta").await;
    let named_segments = objects(&store, ".parquet").await;
    assert!(!named_layers.is_empty() && !named_segments.is_empty());

    let orphan_layer = object_store::path::Path::from(
        "databases/db/layers/00000000000000000015-00000000000000000016.delta",
    );
    let orphan_segment = object_store::path::Path::from(
        "databases/db/segments/000000000000000F-0000000000000010.parquet",
    );
    for p in [&orphan_layer, &orphan_segment] {
        store
            .put(p, bytes::Bytes::from_static(b"left behind").into())
            .await
            .unwrap();
    }
    // Another database's objects are never this timeline's to judge.
    let other = object_store::path::Path::from("databases/dbx/layers/x.delta");
    store
        .put(&other, bytes::Bytes::from_static(b"x").into())
        .await
        .unwrap();

    // Young: kept.
    assert_eq!(t.sweep_orphans().await.unwrap(), 0);
    assert!(store.head(&orphan_layer).await.is_ok());

    // Past the grace: exactly the two orphans go.
    let later = now + ORPHAN_GRACE.as_micros() as u64 + 1_000_000;
    clock.0.store(later, Ordering::SeqCst);
    assert_eq!(t.sweep_orphans().await.unwrap(), 2);
    assert!(store.head(&orphan_layer).await.is_err());
    assert!(store.head(&orphan_segment).await.is_err());
    assert!(store.head(&other).await.is_ok());
    let own = |names: Vec<String>| -> Vec<String> {
        names
            .into_iter()
            .filter(|n| n.starts_with("databases/db/"))
            .collect()
    };
    assert_eq!(own(objects(&store, ".delta").await), named_layers);
    assert_eq!(own(objects(&store, ".parquet").await), named_segments);
    assert_eq!(
        t.get(b"a", Version(20)).await.unwrap(),
        s("a1"),
        "a named layer must survive"
    );
    let reloaded = open(&store, &clock).await;
    assert_eq!(reloaded.get(b"b", Version(20)).await.unwrap(), s("b2"));

    // The periodic sweep lists at most every ORPHAN_SWEEP_EVERY. (The store dates objects by
    // the real clock, far behind the test's from here on: every orphan is old enough.)
    let much_later = later + ORPHAN_GRACE.as_micros() as u64;
    clock.0.store(much_later, Ordering::SeqCst);
    store
        .put(&orphan_layer, bytes::Bytes::from_static(b"again").into())
        .await
        .unwrap();
    assert_eq!(t.sweep_orphans_if_due().await.unwrap(), 1);
    store
        .put(
            &orphan_layer,
            bytes::Bytes::from_static(b"and again").into(),
        )
        .await
        .unwrap();
    assert_eq!(t.sweep_orphans_if_due().await.unwrap(), 0, "not due yet");
    assert!(store.head(&orphan_layer).await.is_ok());
    clock.0.store(
        much_later + ORPHAN_SWEEP_EVERY.as_micros() as u64,
        Ordering::SeqCst,
    );
    assert_eq!(t.sweep_orphans_if_due().await.unwrap(), 1);
    assert!(store.head(&orphan_layer).await.is_err());
}

/// Superseded manifest generations are swept once past the grace, keeping the newest
/// `MANIFEST_GENERATIONS_KEPT`; the database loads from what is left with every commit.
#[tokio::test]
async fn superseded_manifests_past_the_grace_are_swept_keeping_the_newest() {
    use super::orphans::{MANIFEST_GENERATIONS_KEPT, ORPHAN_GRACE};
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (clock, now) = clock_at_now();
    let t = open(&store, &clock).await;
    let keys: Vec<String> = (0..16).map(|i| format!("k{i:02}")).collect();
    for (i, k) in keys.iter().enumerate() {
        let v = 10 * (i as u64 + 1);
        t.apply(&[rec(v, &[(k.as_str(), Some("v"))])]).unwrap();
        t.checkpoint(Version(v)).await.unwrap();
    }
    let generations = || async {
        let mut g: Vec<u64> = store
            .list(Some(&manifest::manifest_prefix("db")))
            .map_ok(|m| manifest::generation_of(&m.location).unwrap())
            .try_collect()
            .await
            .unwrap();
        g.sort();
        g
    };
    let before = generations().await;
    let live = *before.last().unwrap();
    assert!(
        before.len() as u64 > MANIFEST_GENERATIONS_KEPT + 2,
        "the test needs more generations than are kept: {before:?}"
    );
    // A generation above the live one (a newer pageserver's, say) is never this one's to judge.
    let newer = format!("databases/db/manifest/{:020}.json", live + 5);
    let newer = object_store::path::Path::from(newer);
    store
        .put(&newer, bytes::Bytes::from_static(b"{}").into())
        .await
        .unwrap();

    // Young: every generation kept.
    assert_eq!(t.sweep_orphans().await.unwrap(), 0);
    assert_eq!(generations().await.len(), before.len() + 1);

    // Past the grace: all but the newest MANIFEST_GENERATIONS_KEPT (and the newer one) go.
    clock.0.store(
        now + ORPHAN_GRACE.as_micros() as u64 + 1_000_000,
        Ordering::SeqCst,
    );
    let swept = t.sweep_orphans().await.unwrap();
    let after = generations().await;
    let mut expected: Vec<u64> = (live + 1 - MANIFEST_GENERATIONS_KEPT..=live).collect();
    expected.push(live + 5);
    assert_eq!(after, expected);
    assert_eq!(swept, before.len() - MANIFEST_GENERATIONS_KEPT as usize);
    store.delete(&newer).await.unwrap();

    // What is left loads as the live generation, with every commit.
    assert_eq!(
        manifest::load_latest(&store, "db")
            .await
            .unwrap()
            .generation,
        live
    );
    let reloaded = open(&store, &clock).await;
    for k in &keys {
        assert_eq!(
            reloaded.get(k.as_bytes(), Version(160)).await.unwrap(),
            s("v"),
            "{k}"
        );
    }
}

/// With compaction folding deltas into L1 runs, delta depth alone reached
/// `image_after_deltas` only after hours, and with no image GC could free nothing: the bucket
/// kept every write whatever the retention (an outside audit: 43 minutes with 120 s). Once the
/// horizon passes the newest image, retention asks for the next one, so the layers stay
/// bounded by the window; every read above the horizon still answers as a model says.
#[tokio::test]
async fn retention_asks_for_images_so_gc_frees_deltas_within_the_window() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let clock = Arc::new(TestClock::default());
    let options = TimelineOptions {
        pitr_interval: Duration::from_micros(100),
        image_after_deltas: 16,
        compact_after_deltas: 4,
        clock: clock.clone(),
        ..TimelineOptions::default()
    };
    let cache = Arc::new(BlockCache::in_memory(1 << 20));
    let t =
        Timeline::load_with_options("db", store.clone(), Metrics::new().unwrap(), cache, options)
            .await
            .unwrap();
    // The value of each key at each version written, for reads above the horizon.
    let mut model: Vec<(u64, String, String)> = Vec::new();
    for round in 0..40u64 {
        let v = (round + 1) * 10;
        let (key, value) = (format!("k{}", round % 3), format!("v{v}"));
        t.apply(&[rec(v, &[(&key, Some(&value))])]).unwrap();
        model.push((v, key, value));
        // Commit times are the versions (µs): the window keeps the last ~8 commits.
        clock.0.store(v + 20, Ordering::SeqCst);
        t.checkpoint(Version(v)).await.unwrap();
    }
    let m = manifest::load_latest(&store, "db").await.unwrap();
    let images = m
        .layers
        .iter()
        .filter(|l| l.kind == manifest::LayerKind::Image)
        .count();
    assert!(images >= 1, "no image in {} layers", m.layers.len());
    // 40 checkpoints; without images for retention every one of them stays named.
    assert!(
        m.layers.len() <= 12,
        "{} layers named with a window of ~8 commits",
        m.layers.len()
    );
    assert!(m.gc_horizon >= Version(300), "horizon {}", m.gc_horizon);
    // And GC deleted what it stopped naming.
    let layer_objects = objects(&store, "")
        .await
        .into_iter()
        .filter(|n| n.contains("/layers/"))
        .count();
    assert_eq!(layer_objects, m.layers.len(), "layer objects in the bucket");
    for at in (m.gc_horizon.0..=400).step_by(5) {
        for k in 0..3 {
            let key = format!("k{k}");
            let want = model
                .iter()
                .rev()
                .find(|(v, mk, _)| *v <= at && *mk == key)
                .map(|(_, _, val)| Bytes::from(val.clone()));
            let got = t.get(key.as_bytes(), Version(at)).await.unwrap();
            assert_eq!(got, want, "{key} at {at}");
        }
    }
}
