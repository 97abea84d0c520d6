//! Sessions (docs/session.md) against a real cluster: many concurrent transactions on one SDK
//! handle share one stream, each gets its own answers (the largest value included), contended
//! read-modify-writes stay serializable, and a handle with sessions off reaches the same
//! data through unary calls (the compute's session counter shows which path each took).

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use ferrisdb_client::{ConnectOptions, Database, RangeOptions};
use ferrisdb_common::limits::MAX_VALUE_SIZE;
use futures::TryStreamExt;
use support::{DevCluster, metric};

const TASKS: u64 = 48;

fn key(i: u64) -> Bytes {
    Bytes::from(format!("session/{i:03}"))
}

/// Task `i`'s value: distinct per task, and the largest legal value for task 0.
fn value(i: u64) -> Bytes {
    if i == 0 {
        return Bytes::from(vec![0xa5; MAX_VALUE_SIZE]);
    }
    Bytes::from(format!("value of {i}"))
}

async fn session_operations(admin: &str) -> f64 {
    metric(admin, "ferrisdb_compute_session_operations_total")
        .await
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transactions_share_a_session_and_get_their_own_answers() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(dir.path(), &[]).await;
    let admin = cluster.admin_endpoint();
    let db = cluster.db(Duration::from_secs(60)).await;
    let before = session_operations(&admin).await;

    // Every task writes its own key and bumps one shared counter (read-modify-write, so
    // they conflict and retry), then reads its own key back.
    let tasks = (0..TASKS).map(|i| {
        let db = db.clone();
        tokio::spawn(async move {
            db.run(|tx| async move {
                let n = match tx.get("session/counter").await? {
                    Some(v) => u64::from_be_bytes(v[..].try_into().unwrap()),
                    None => 0,
                };
                tx.set("session/counter", (n + 1).to_be_bytes().to_vec());
                tx.set(key(i), value(i));
                Ok(())
            })
            .await
            .unwrap();
            let got = db
                .run(|tx| async move { tx.get(key(i)).await })
                .await
                .unwrap();
            assert_eq!(got, Some(value(i)), "task {i} read another task's answer");
        })
    });
    for t in futures::future::join_all(tasks).await {
        t.unwrap();
    }

    let tx = db.create_transaction();
    let counter = tx.get("session/counter").await.unwrap().unwrap();
    assert_eq!(u64::from_be_bytes(counter[..].try_into().unwrap()), TASKS);
    let rows: Vec<(Bytes, Bytes)> = tx
        .get_range_stream(key(0), key(TASKS), RangeOptions::default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rows.len() as u64, TASKS);
    for (i, (k, v)) in rows.into_iter().enumerate() {
        assert_eq!((k, v), (key(i as u64), value(i as u64)));
    }
    // At least a read, a commit and a read-back per task went through the session.
    let during = session_operations(&admin).await - before;
    assert!(during >= (3 * TASKS) as f64, "{during} session operations");
    assert!(metric(&admin, "ferrisdb_compute_sessions").await.unwrap() >= 1.0);

    // With sessions off, the same data through unary calls; the session counter stands still.
    let unary =
        Database::connect_with(ConnectOptions::new(&cluster.endpoint()).use_sessions(false))
            .await
            .unwrap();
    let settled = session_operations(&admin).await;
    let tx = unary.create_transaction();
    assert_eq!(tx.get(key(0)).await.unwrap(), Some(value(0)));
    assert_eq!(tx.get("session/counter").await.unwrap(), Some(counter));
    tx.set("session/unary", "yes");
    tx.commit().await.unwrap();
    assert_eq!(session_operations(&admin).await, settled);
    // And a session handle sees the unary handle's commit.
    let seen = db.create_transaction().get("session/unary").await.unwrap();
    assert_eq!(seen.as_deref(), Some(&b"yes"[..]));
}
