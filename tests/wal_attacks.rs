//! The data-loss sequences of issue 13 against the safekeeper processes of a running
//! `ferrisdb dev`, played over gRPC by a peer that can reach them: a forged append in the
//! public current term, `ReportDurable(u64::MAX)`, `RequestVote(u64::MAX)`, and a vote then
//! `Elected` with a start past the log end. Each is refused or harmless: canary data written
//! before (checkpointed to object storage and WAL-only) reads back after kill -9 and restart of
//! the whole tree, and a normal election still succeeds.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferrisdb_client::Database;
use ferrisdb_common::error::Reason;
use ferrisdb_common::proto::safekeeper_client::SafekeeperClient;
use ferrisdb_common::proto::{
    AppendRequest, DurableReport, ElectedRequest, SafekeeperStatusRequest, TermSwitch, VoteRequest,
};
use ferrisdb_common::wal::{Mutation, encode_frame};
use ferrisdb_common::{Error, ErrorKind};
use object_store::ObjectStore;
use support::DevCluster;

const DB: &str = "default";

async fn put(db: &Database, key: String, value: String) {
    let tx = db.create_transaction();
    tx.set(key, value);
    tx.commit().await.unwrap();
}

async fn get(db: &Database, key: &str) -> Option<String> {
    let key = Bytes::from(key.to_string());
    db.run(|tx| {
        let key = key.clone();
        async move { tx.get(key).await }
    })
    .await
    .unwrap()
    .map(|v| String::from_utf8(v.to_vec()).unwrap())
}

fn kind(s: impl Into<Error>) -> ErrorKind {
    s.into().kind()
}

/// The durable version the newest manifest in the dev cluster's bucket names.
async fn manifest_durable(data: &std::path::Path) -> u64 {
    let store: Arc<dyn ObjectStore> = Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(data.join("objects")).unwrap(),
    );
    ferrisdb_pageserver::format::manifest::load_latest(&store, DB)
        .await
        .unwrap()
        .remote_consistent_version
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_reaches_the_safekeepers_cannot_destroy_acknowledged_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cluster = DevCluster::start(
        &data,
        &[
            "--segment-size-bytes",
            "4096",
            "--checkpoint-interval-secs",
            "3600",
        ],
    )
    .await;
    let db = cluster.db(Duration::from_secs(10)).await;
    let value = |i: usize| format!("{i}-{}", "v".repeat(200));
    for i in 0..30 {
        put(&db, format!("ckpt-{i:02}"), value(i)).await;
    }
    let (ok, out, err) = support::cli(&[
        "admin",
        "checkpoint",
        "--endpoint",
        &cluster.admin_endpoint(),
    ]);
    assert!(ok, "checkpoint failed: {out} {err}");
    let durable = manifest_durable(&data).await;
    assert!(durable > 0, "the checkpoint named nothing durable");
    for i in 0..30 {
        put(&db, format!("wal-{i:02}"), value(i)).await;
    }

    let sks: Vec<_> = (1..=3)
        .map(|i| cluster.component(&format!("safekeeper-{i}")))
        .collect();
    let status_req = || SafekeeperStatusRequest {
        database: DB.into(),
    };
    for sk in &sks {
        // A peer that holds the cluster credential: the protocol itself must refuse it.
        let mut c = SafekeeperClient::new(support::internal_channel(&sk.grpc));
        let st = c.get_status(status_req()).await.unwrap().into_inner();
        let term = st.term;
        assert!(st.commit_lsn > durable);

        // 1. A forged append in the public current term, over committed WAL and at the end.
        for begin in [st.log_start_lsn, st.flush_lsn] {
            let m = Mutation::Set {
                key: Bytes::from_static(b"wal-00"),
                value: Bytes::from_static(b"forged"),
            };
            let forged = AppendRequest {
                database: DB.into(),
                term,
                begin_lsn: begin,
                wal: encode_frame(begin, 0, &[m]).0,
                commit_lsn: u64::MAX,
                session: 0,
                traceparents: Vec::new(),
            };
            let mut answers = c
                .append(futures::stream::iter(vec![forged]))
                .await
                .unwrap()
                .into_inner();
            let e = answers.message().await.unwrap_err();
            assert_eq!(kind(e), ErrorKind::Unavailable, "{}", sk.name);
        }

        // 3. ReportDurable(u64::MAX): nothing above what the manifest names is deleted.
        let after = c
            .report_durable(DurableReport {
                database: DB.into(),
                remote_consistent_lsn: u64::MAX,
            })
            .await
            .unwrap()
            .into_inner();
        let durable_now = manifest_durable(&data).await;
        assert!(
            after.log_start_lsn <= durable_now,
            "{} trimmed to {} but object storage holds only {durable_now}",
            sk.name,
            after.log_start_lsn
        );
        assert!(after.flush_lsn >= st.commit_lsn);

        // 4. RequestVote(u64::MAX): refused, the term does not move.
        let e = c
            .request_vote(VoteRequest {
                database: DB.into(),
                term: u64::MAX,
                proposer_id: Bytes::copy_from_slice(&[0xba; 16]),
            })
            .await
            .unwrap_err();
        assert_eq!(kind(e), ErrorKind::InvalidArgument);

        // 2. A vote, then Elected with a start far past the log end: refused, nothing dropped.
        let vote = c
            .request_vote(VoteRequest {
                database: DB.into(),
                term: term + 1,
                proposer_id: Bytes::copy_from_slice(&[0xba; 16]),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(vote.granted);
        let far = st.flush_lsn + (1 << 30);
        let e = c
            .elected(ElectedRequest {
                database: DB.into(),
                term: term + 1,
                history: vec![TermSwitch {
                    term: term + 1,
                    lsn: far,
                }],
                log_start_lsn: far,
                proposer_id: Bytes::copy_from_slice(&[0xba; 16]),
            })
            .await
            .unwrap_err();
        assert_eq!(kind(e), ErrorKind::InvalidArgument, "{}", sk.name);
        let end = c.get_status(status_req()).await.unwrap().into_inner();
        assert!(end.flush_lsn >= st.commit_lsn, "{} lost WAL", sk.name);
        assert!(end.log_start_lsn <= durable_now);
    }

    // The vote fenced the primary (that is what a vote is for). kill -9 of the whole tree and a
    // restart: a normal election (the highest term seen plus one) succeeds, recovery starts
    // from object storage and the safekeepers' WAL, and every acknowledged write reads back.
    cluster.kill_all();
    cluster.launch().await;
    let db = cluster.db(Duration::from_secs(20)).await;
    for i in 0..30 {
        for prefix in ["ckpt", "wal"] {
            let key = format!("{prefix}-{i:02}");
            assert_eq!(get(&db, &key).await, Some(value(i)), "{key} lost");
        }
    }
    put(&db, "after-attacks".into(), "ok".into()).await;
    assert_eq!(get(&db, "after-attacks").await.as_deref(), Some("ok"));
}

/// A WAL reader that asks for the log from a position inside a frame (a peer's mistake, a
/// follower whose log was rewritten under it, or a credential holder's probe) is refused
/// (`wal_diverged`), and the safekeeper does not take the frame it cannot find there for
/// damage. Before, the read's checksum failure marked the log damaged from that position
/// (no serving, voting or appending until repaired), and the repair asked the peers for the
/// same stretch from the same position, which takes the same path on them. A follower that
/// names the term it read below its position is checked against the safekeeper's history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_from_inside_a_frame_or_another_terms_log_is_refused_and_damages_nothing() {
    use ferrisdb_common::proto::ReadWalRequest;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cluster = DevCluster::start(&data, &[]).await;
    let db = cluster.db(Duration::from_secs(10)).await;
    let value = |i: usize| format!("{i}-{}", "v".repeat(300));
    for i in 0..20 {
        put(&db, format!("k-{i:02}"), value(i)).await;
    }
    let sks: Vec<_> = (1..=3)
        .map(|i| cluster.component(&format!("safekeeper-{i}")))
        .collect();
    for sk in &sks {
        let mut c = SafekeeperClient::new(support::internal_channel(&sk.grpc));
        let st = c
            .get_status(SafekeeperStatusRequest {
                database: DB.into(),
            })
            .await
            .unwrap()
            .into_inner();
        // Versions are the LSNs where frames end: 10 bytes below the last one is inside it.
        let inside = st.commit_lsn - 10;
        for end_lsn in [Some(st.commit_lsn), None] {
            let req = ReadWalRequest {
                database: DB.into(),
                start_lsn: inside,
                end_lsn,
                gather_millis: 0,
                expected_term: 0,
            };
            let mut stream = c.read_wal(req).await.unwrap().into_inner();
            let e = tokio::time::timeout(Duration::from_secs(5), stream.message())
                .await
                .expect("an answer")
                .expect_err("WAL served from inside a frame");
            let e: Error = e.into();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{}", sk.name);
            assert_eq!(e.reason(), Some(Reason::WalDiverged), "{}", sk.name);
        }
        // From a frame boundary, a follower that names the term it read below it is served,
        // and told the term of what it is sent; one that names another term is refused.
        let term = st.history.last().unwrap().term;
        let follow = |expected_term| ReadWalRequest {
            database: DB.into(),
            start_lsn: st.commit_lsn,
            end_lsn: None,
            gather_millis: 0,
            expected_term,
        };
        let mut stream = c.read_wal(follow(term)).await.unwrap().into_inner();
        let keepalive = stream.message().await.unwrap().unwrap();
        assert_eq!((keepalive.begin_lsn, keepalive.term), (st.commit_lsn, term));
        let e: Error = c.read_wal(follow(term + 1)).await.unwrap_err().into();
        assert_eq!(
            (e.kind(), e.reason()),
            (ErrorKind::InvalidArgument, Some(Reason::WalDiverged)),
            "{}: {e}",
            sk.name
        );
    }
    // Give a repair, had one started, time to spread, then: no safekeeper thinks its log is
    // damaged, commits go on, and everything reads back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for sk in &sks {
        assert_eq!(
            support::metric(&sk.http, "ferrisdb_safekeeper_damaged_databases").await,
            Some(0.0),
            "{} took a read from inside a frame for damage",
            sk.name
        );
    }
    put(&db, "after".into(), "ok".into()).await;
    assert_eq!(get(&db, "after").await.as_deref(), Some("ok"));
    for i in 0..20 {
        assert_eq!(get(&db, &format!("k-{i:02}")).await, Some(value(i)));
    }
}
