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

/// The data directory a component was started with.
fn data_dir_of(c: &support::ComponentInfo) -> std::path::PathBuf {
    let at = c.argv.iter().position(|a| a == "--data-dir").unwrap();
    std::path::PathBuf::from(&c.argv[at + 1])
}

/// Found by an outside audit: acknowledged commits were lost when a safekeeper with a wiped
/// disk came back and voted at once. Commits acknowledged by safekeepers 1 and 2 (3 was down)
/// lived on 2 alone once 1's disk was wiped; with 2 down, the empty 1 and the lagging 3 made a
/// majority and elected a log without them, and new commits reused their versions. A
/// safekeeper that holds nothing of a database whose log a peer holds now refuses to vote
/// until a primary elected by the others has brought it up to date: the cluster waits for
/// safekeeper 2 instead, and then has every acknowledged commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_safekeeper_votes_only_once_brought_up_to_date() {
    use ferrisdb_client::{ConnectOptions, Database, RetryOptions};

    let dir = tempfile::tempdir().unwrap();
    let mut cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let db = cluster.db(Duration::from_secs(30)).await;
    db.run(|tx| async move {
        tx.set("base", "0");
        Ok(())
    })
    .await
    .unwrap();
    let [sk1, sk2, sk3] =
        ["safekeeper-1", "safekeeper-2", "safekeeper-3"].map(|n| cluster.component(n));
    DevCluster::kill_pid(sk3.pid);
    // Acknowledged by safekeepers 1 and 2 only.
    let mut acked = Vec::new();
    for i in 0..5u32 {
        let tx = db.create_transaction();
        tx.set(format!("amn{i}"), format!("v{i}"));
        acked.push(tx.commit().await.unwrap());
    }
    let (compute, pageserver) = (
        cluster.component("compute"),
        cluster.component("pageserver"),
    );
    for c in [&compute, &pageserver, &sk2, &sk1] {
        DevCluster::kill_pid(c.pid);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::remove_dir_all(data_dir_of(&sk1)).unwrap();
    tokio::task::block_in_place(|| {
        for c in [&sk1, &sk3, &pageserver, &compute] {
            cluster.restart(c);
        }
    });

    // The wiped safekeeper 1 and the lagging 3 elect no one: no commit is acknowledged.
    let impatient = Database::connect_with(ConnectOptions::new(&cluster.endpoint()).retry(
        RetryOptions {
            timeout: Duration::from_secs(4),
            ..RetryOptions::default()
        },
    ))
    .await
    .unwrap();
    let refused = impatient
        .run(|tx| async move {
            tx.set("during", "x");
            Ok(())
        })
        .await;
    assert!(
        refused.is_err(),
        "a commit without safekeeper 2: {refused:?}"
    );
    let sk1_status = status(&sk1.http).await.unwrap();
    assert_eq!(
        sk1_status["databases"]["default"]["recovering"], true,
        "{sk1_status}"
    );

    // Safekeeper 2 returns: a primary is elected with its log, every acknowledged commit is
    // there, and safekeeper 1, brought up to date, votes again.
    tokio::task::block_in_place(|| cluster.restart(&sk2));
    let db = cluster.db(Duration::from_secs(30)).await;
    for (i, v) in acked.iter().enumerate() {
        let (version, key) = (*v, format!("amn{i}"));
        let value = db
            .run(|tx| {
                let key = key.clone();
                async move {
                    tx.set_read_version(version)?;
                    tx.get(key).await
                }
            })
            .await
            .unwrap();
        assert_eq!(
            value.as_deref(),
            Some(format!("v{i}").as_bytes()),
            "acknowledged commit {i} at version {version}"
        );
    }
    let latest = db
        .run(|tx| async move { tx.get("amn4").await })
        .await
        .unwrap();
    assert_eq!(latest.as_deref(), Some(&b"v4"[..]));
    eventually(
        Duration::from_secs(30),
        "safekeeper 1 caught up and votes again",
        || async {
            status(&sk1.http)
                .await
                .is_some_and(|s| s["databases"]["default"]["recovering"] == false)
        },
    )
    .await;
}
