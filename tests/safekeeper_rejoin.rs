//! A safekeeper that drops out of a term must be able to rejoin it (found by the nemesis,
//! issue 16). Once the primary's log start has moved up (the pageserver made old WAL durable
//! in the bucket), a safekeeper that was killed and restarted used to be refused on every
//! reconnect — `invalid_argument: log start N lies past where term T starts writing (S): it
//! would leave a gap` (wal-service/src/acceptor.rs, `elected`) — and stayed out of the quorum
//! for the rest of the term, so one more safekeeper failure stopped every commit until the
//! compute restarted. The acceptor now takes such a log start when the newest manifest in
//! object storage covers it, which it reads itself.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{DevCluster, eventually, status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_safekeeper_rejoins_the_term_after_the_log_start_moved() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = DevCluster::start(
        &dir.path().join("data"),
        &[
            "--checkpoint-interval-secs",
            "1",
            "--segment-size-bytes",
            "65536",
        ],
    )
    .await;
    let db = cluster.db(Duration::from_secs(30)).await;
    let admin = cluster.admin_endpoint();
    // Enough WAL, checkpointed, for the primary's log start to move past its term's start.
    for i in 0..400u32 {
        db.run(|tx| async move {
            tx.set(format!("k{i:04}"), vec![7u8; 200]);
            Ok(())
        })
        .await
        .unwrap();
    }
    let sk_http = cluster.component("safekeeper-3").http;
    eventually(
        Duration::from_secs(60),
        "the pageserver uploads WAL",
        || async {
            status(&sk_http).await.is_some_and(|s| {
                s["databases"]["default"]["remote_consistent_lsn"]
                    .as_u64()
                    .is_some_and(|l| l > 0)
            })
        },
    )
    .await;
    // The primary hears of the upload on its next view of the pageserver.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sk3 = cluster.component("safekeeper-3");
    DevCluster::kill_pid(sk3.pid);
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.run(|tx| async move {
        tx.set("while-down", "1");
        Ok(())
    })
    .await
    .unwrap();
    tokio::task::block_in_place(|| cluster.restart(&sk3));
    eventually(
        Duration::from_secs(30),
        "the restarted safekeeper-3 is back in the primary's quorum",
        || async {
            status(&admin)
                .await
                .is_some_and(|s| s["primary"]["safekeepers"][2]["up"] == true)
        },
    )
    .await;
    // With safekeeper-3 back, losing safekeeper-2 leaves a quorum: commits go on.
    DevCluster::kill_pid(cluster.component("safekeeper-2").pid);
    let t = db.create_transaction();
    t.set("after", "2");
    tokio::time::timeout(Duration::from_secs(30), t.commit())
        .await
        .expect("a commit with two of three safekeepers up")
        .unwrap();
}
