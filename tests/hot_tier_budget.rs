//! The hot tier's memory budget through the real binary: when the pageserver stops ingesting
//! (here: frozen with SIGSTOP), the compute's hot tier fills to its budget and commits slow
//! down — they wait, none is dropped or refused — and once the pageserver runs again every
//! waiting commit completes and every acknowledged write reads back.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{DevCluster, eventually, metric, status};

/// The budget the compute runs with: small, so a few hundred 1 KiB writes overrun it.
const BUDGET: u64 = 64 * 1024;
const WRITERS: usize = 8;
const COMMITS_PER_WRITER: usize = 40;
const VALUE_BYTES: usize = 1024;

/// The hot tier's bytes, from `/v1/status`.
async fn hot_bytes(admin: &str) -> u64 {
    let s = status(admin).await.unwrap();
    s["databases"]["default"]["hot_tier"]["bytes"]
        .as_u64()
        .unwrap()
}

fn key(w: usize, i: usize) -> String {
    format!("budget/{w:02}/{i:04}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_wait_for_a_stalled_pageserver_and_all_complete_when_it_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = DevCluster::start(
        &dir.path().join("data"),
        &["--hot-tier-budget-bytes", &BUDGET.to_string()],
    )
    .await;
    let admin = cluster.admin_endpoint();
    let pageserver = cluster.component("pageserver").pid;
    // Everything committed so far leaves the hot tier before the pageserver freezes.
    let db = cluster.db(Duration::from_secs(120)).await;
    eventually(Duration::from_secs(30), "an empty hot tier", || async {
        hot_bytes(&admin).await == 0
    })
    .await;

    kill(Pid::from_raw(pageserver), Signal::SIGSTOP).unwrap();
    let acknowledged = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let db = db.clone();
            let acknowledged = acknowledged.clone();
            tokio::spawn(async move {
                for i in 0..COMMITS_PER_WRITER {
                    let value = Bytes::from(vec![b'a' + (w as u8); VALUE_BYTES]);
                    db.run(|tx| {
                        let value = value.clone();
                        async move {
                            tx.set(key(w, i), value);
                            Ok(())
                        }
                    })
                    .await
                    .unwrap_or_else(|e| panic!("commit {w}/{i} failed: {e}"));
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    // The hot tier reaches its budget, and commits stop there: the count of acknowledged
    // commits stays put while the pageserver is frozen.
    eventually(
        Duration::from_secs(60),
        "the hot tier over budget",
        || async { hot_bytes(&admin).await >= BUDGET },
    )
    .await;
    let stalled_at = acknowledged.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = acknowledged.load(Ordering::SeqCst);
    let total = (WRITERS * COMMITS_PER_WRITER) as u64;
    assert!(
        still < total,
        "every commit finished with the pageserver frozen: the budget held nothing back"
    );
    // One batch may land past the budget (the check is before each batch), no more: at most
    // every writer's transaction once, with its entry overhead.
    let held = hot_bytes(&admin).await;
    let one_batch = (WRITERS * (VALUE_BYTES + 512)) as u64;
    assert!(
        held <= BUDGET + one_batch,
        "the hot tier grew to {held} bytes, past the {BUDGET}-byte budget plus one batch"
    );
    assert!(
        still <= stalled_at + WRITERS as u64,
        "commits kept completing while over budget: {stalled_at} then {still}"
    );
    let waiting = metric(&admin, "ferrisdb_compute_commit_throttled").await;
    assert_eq!(waiting, Some(1.0), "the compute reports commits waiting");

    // The pageserver resumes: it ingests, the hot tier drains, every commit completes.
    kill(Pid::from_raw(pageserver), Signal::SIGCONT).unwrap();
    for w in writers {
        tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .expect("the writers finish once the pageserver resumes")
            .unwrap();
    }
    assert_eq!(acknowledged.load(Ordering::SeqCst), total);
    let waited = metric(&admin, "ferrisdb_compute_commit_throttled_seconds_total")
        .await
        .unwrap();
    assert!(
        waited >= 2.0,
        "the throttle metric counts the 2 s (at least) commits waited: {waited}"
    );
    let tx = db.create_transaction();
    for w in 0..WRITERS {
        for i in 0..COMMITS_PER_WRITER {
            let v = tx.get(key(w, i)).await.unwrap();
            assert_eq!(
                v.as_deref(),
                Some(&[b'a' + (w as u8); VALUE_BYTES][..]),
                "{} reads back",
                key(w, i)
            );
        }
    }
    eventually(Duration::from_secs(30), "the hot tier drained", || async {
        hot_bytes(&admin).await < BUDGET
    })
    .await;
    cluster.stop();
}

/// Change feeds whose clients stop reading stall only themselves: with four of them holding
/// a backlog, reads that need the pageserver are answered, the hot tier is evicted as the
/// pageserver ingests, and commits go on past the hot tier's budget. (They once shared the
/// compute's one connection to the pageserver, whose flow-control window their unread data
/// used up: reads timed out, eviction stopped, and once the budget was full so did every
/// commit, until the feeds' clients went away.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_feeds_that_stop_reading_stall_only_themselves() {
    use ferrisdb_common::proto::ChangesRequest;
    use ferrisdb_common::proto::database_client::DatabaseClient;
    const FEED_BUDGET: u64 = 4 << 20;
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(
        &dir.path().join("data"),
        &["--hot-tier-budget-bytes", &FEED_BUDGET.to_string()],
    )
    .await;
    let admin = cluster.admin_endpoint();
    let db = cluster.db(Duration::from_secs(30)).await;
    let value = |i: usize| Bytes::from(format!("{i:08}").repeat(100_000 / 8));
    // A backlog of 12 MB for the feeds: more than the windows of one connection (5 MiB).
    for i in 0..120 {
        db.run(|tx| {
            let v = value(i);
            async move {
                tx.set(format!("feed/{:03}", i % 30), v);
                Ok(())
            }
        })
        .await
        .unwrap();
    }
    // Four followers from the start of the log, each on a connection of its own, which read
    // one batch and then nothing more while staying connected.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut raw = ferrisdb_common::with_message_limits!(DatabaseClient::new(
            ferrisdb_common::net::channel(&cluster.endpoint()).unwrap()
        ));
        let mut feed = raw
            .changes(ChangesRequest {
                database: "default".into(),
                from_version: 0,
                follow: true,
                through_version: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let first = tokio::time::timeout(Duration::from_secs(20), feed.message())
            .await
            .expect("a feed's first batch waited 20 s");
        assert!(first.unwrap().is_some(), "a first batch");
        stalled.push((raw, feed));
    }
    // Three times the hot tier's budget of commits: they complete only if the hot tier is
    // evicted as the pageserver ingests.
    for i in 0..120 {
        tokio::time::timeout(
            Duration::from_secs(30),
            db.run(|tx| {
                let v = value(1000 + i);
                async move {
                    tx.set(format!("feed/{:03}", i % 30), v);
                    Ok(())
                }
            }),
        )
        .await
        .unwrap_or_else(|_| panic!("commit {i} waited 30 s"))
        .unwrap_or_else(|e| panic!("commit {i}: {e}"));
    }
    // A read the hot tier cannot answer goes to the pageserver, and is answered.
    let absent = tokio::time::timeout(
        Duration::from_secs(20),
        db.run(|tx| async move { tx.get("feed/absent").await }),
    )
    .await
    .expect("a read of the pageserver waited 20 s")
    .unwrap();
    assert_eq!(absent, None);
    eventually(Duration::from_secs(30), "the hot tier evicted", || async {
        hot_bytes(&admin).await < FEED_BUDGET
    })
    .await;
    // The stalled feeds were still open (nothing ended them), and read on.
    for (_, feed) in &mut stalled {
        let batch = tokio::time::timeout(Duration::from_secs(20), feed.message())
            .await
            .expect("a stalled feed read on waited 20 s")
            .unwrap()
            .expect("the feed still follows");
        assert!(!batch.records.is_empty());
    }
}
