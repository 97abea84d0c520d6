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
