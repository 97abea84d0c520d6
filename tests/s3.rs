//! The S3 protocol for real, against a moto server the tests start: two pageservers racing on
//! the manifest (conditional PUT: exactly one wins), and a whole cluster checkpointing to S3
//! and restoring from the bucket alone.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use ferrisdb_common::wal::{Mutation, WalRecord};
use ferrisdb_common::{ErrorKind, Version};
use ferrisdb_pageserver::format::manifest;
use ferrisdb_pageserver::metrics::Metrics;
use ferrisdb_pageserver::timeline::Timeline;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use support::{DevCluster, Moto, cli};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pageservers_racing_on_the_manifest_exactly_one_wins() {
    let moto = Moto::start().await;
    moto.create_bucket("race").await;
    for round in 0..10 {
        let db = format!("db{round}");
        // Two pageservers, each with its own S3 client, following the same WAL.
        let a = Timeline::load(
            &db,
            moto.config("race", "p").open().unwrap(),
            Metrics::new().unwrap(),
        )
        .await
        .unwrap();
        let b = Timeline::load(
            &db,
            moto.config("race", "p").open().unwrap(),
            Metrics::new().unwrap(),
        )
        .await
        .unwrap();
        let rec = WalRecord {
            version: Version(100),
            // A real time: a 1970 commit would be outside the 7-day retention window at once.
            commit_time_micros: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64,
            mutations: vec![Mutation::Set {
                key: Bytes::from("k"),
                value: Bytes::from(format!("v{round}")),
            }],
        };
        a.apply(std::slice::from_ref(&rec)).unwrap();
        b.apply(std::slice::from_ref(&rec)).unwrap();
        let (ra, rb) = tokio::join!(a.checkpoint(Version(100)), b.checkpoint(Version(100)));
        let wins = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {ra:?} {rb:?}");
        let loser = if ra.is_ok() { rb } else { ra };
        assert_eq!(loser.unwrap_err().kind(), ErrorKind::Fenced);

        let store = moto.config("race", "p").open().unwrap();
        let m = manifest::load_latest(&store, &db).await.unwrap();
        assert_eq!(
            (m.generation, m.remote_consistent_version),
            (1, Version(100))
        );
        for layer in &m.layers {
            store
                .head(&manifest::layer_path(&db, &layer.name))
                .await
                .unwrap();
        }
        let fresh = Timeline::load(&db, store, Metrics::new().unwrap())
            .await
            .unwrap();
        assert_eq!(
            fresh.get(b"k", Version(100)).await.unwrap(),
            Some(Bytes::from(format!("v{round}")))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_on_s3_restores_from_the_bucket_alone() {
    let moto = Moto::start().await;
    moto.create_bucket("ferris").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = [
        "--object-store",
        "s3://ferris/cluster-a",
        "--s3-endpoint",
        &moto.endpoint,
        "--s3-region",
        "us-east-1",
    ];
    let creds = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let mut cluster = DevCluster::start_with_env(&data, &args, &creds).await;
    let db = cluster.db(Duration::from_secs(10)).await;
    for i in 0..30 {
        let tx = db.create_transaction();
        tx.set(format!("s3-{i:02}"), format!("value {i}"));
        tx.commit().await.unwrap();
    }
    let (ok, out, err) = cli(&[
        "admin",
        "checkpoint",
        "--endpoint",
        &cluster.admin_endpoint(),
    ]);
    assert!(ok, "checkpoint failed: {out} {err}");
    // The objects really are in the bucket, under the prefix.
    let store = moto.config("ferris", "cluster-a").open().unwrap();
    let names: Vec<String> = store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("databases/default/manifest/")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.ends_with(".delta")), "{names:?}");

    cluster.stop();
    std::fs::remove_dir_all(&data).unwrap();
    cluster.launch().await;
    let db = cluster.db(Duration::from_secs(10)).await;
    let rows = db
        .run(|tx| async move {
            tx.get_range(Bytes::from("s3-"), Bytes::from("s3."), 0)
                .await
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 30);
    assert_eq!(rows[17], (Bytes::from("s3-17"), Bytes::from("value 17")));
}
