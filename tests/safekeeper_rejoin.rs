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
    let refused = commit_within(&cluster, Duration::from_secs(4)).await;
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

/// The pageserver's ingested version, as its status reports it.
async fn ingested(pageserver_http: &str) -> Option<u64> {
    status(pageserver_http).await?["databases"]["default"]["ingested_version"].as_u64()
}

/// Found by an outside audit (audit 13 F2, F3): after a double fault that loses committed
/// WAL from the safekeepers (one of the two that acknowledged it restored from an older copy
/// of its directory, the other down), the restored copy and the third safekeeper elected a
/// log without those commits: they were lost, the next commits reused their versions, and
/// the pageserver, which had ingested them, went on from its position in the new log on top
/// of them. The pageserver's ingested WAL is committed WAL, so the compute now refuses to
/// elect a log that ends below it (the cluster waits for the missing safekeeper); once the
/// pageserver uploads what it ingested, the log restarts past it, and nothing it held is
/// lost or has its version reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_without_wal_the_pageserver_ingested_is_not_elected() {
    use ferrisdb_client::Database;

    let dir = tempfile::tempdir().unwrap();
    let mut cluster = DevCluster::start(
        &dir.path().join("data"),
        &["--checkpoint-interval-secs", "3600"],
    )
    .await;
    let db = cluster.db(Duration::from_secs(30)).await;
    // One commit alone, its version returned.
    async fn put(db: &Database, key: String) -> u64 {
        let tx = db.create_transaction();
        tx.set(key.clone(), key);
        tx.commit().await.unwrap().0
    }
    for i in 0..5 {
        put(&db, format!("a{i}")).await;
    }
    let [sk1, sk2, sk3] =
        ["safekeeper-1", "safekeeper-2", "safekeeper-3"].map(|n| cluster.component(n));
    let (compute, pageserver) = (
        cluster.component("compute"),
        cluster.component("pageserver"),
    );
    // An old copy of safekeeper 1's directory, taken at rest.
    DevCluster::kill_pid(sk3.pid);
    DevCluster::kill_pid(sk1.pid);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let backup = dir.path().join("sk1-backup");
    copy_dir(&data_dir_of(&sk1), &backup);
    let sk1_again = tokio::task::block_in_place(|| cluster.restart(&sk1));
    // Acknowledged by safekeepers 1 and 2 only, and ingested by the pageserver.
    let mut acked = Vec::new();
    for i in 0..5 {
        acked.push((format!("b{i}"), put(&db, format!("b{i}")).await));
    }
    let end = acked[4].1;
    eventually(
        Duration::from_secs(30),
        "the pageserver ingests the commits",
        || async { ingested(&pageserver.http).await.is_some_and(|v| v >= end) },
    )
    .await;

    // The double fault: safekeeper 1 comes back from its old copy while 2 is down.
    for pid in [compute.pid, sk2.pid, sk1_again] {
        DevCluster::kill_pid(pid);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::remove_dir_all(data_dir_of(&sk1)).unwrap();
    copy_dir(&backup, &data_dir_of(&sk1));
    tokio::task::block_in_place(|| {
        for c in [&sk1, &sk3, &compute] {
            cluster.restart(c);
        }
    });

    // No primary is elected from the two: no commit is acknowledged, and the compute says why.
    let refused = commit_within(&cluster, Duration::from_secs(5)).await;
    assert!(
        refused.is_err(),
        "a log without acknowledged commits was elected: {refused:?}"
    );
    let log = cluster.data_dir.join("logs/compute.restarted.log");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("is on none of the voting safekeepers"),
        "the compute does not say why it waits"
    );

    // The pageserver uploads what it ingested (its periodic checkpoint; asked for here): the
    // next election restarts the log past it, and every acknowledged commit reads back at its
    // version, with new commits above it.
    let url = format!("{}/v1/databases/default/checkpoint", pageserver.http);
    let token = support::admin_token(&url).unwrap();
    let answer = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{:?}", answer.text().await);
    let db = cluster.db(Duration::from_secs(30)).await;
    let after = db
        .run(|tx| async move {
            tx.set("after", "1");
            Ok(())
        })
        .await;
    assert!(after.is_ok(), "{after:?}");
    let version = put(&db, "after-2".into()).await;
    assert!(version > end, "version {version} reused below {end}");
    for (key, at) in &acked {
        let (key, at) = (key.clone(), *at);
        let value = db
            .run(|tx| {
                let key = key.clone();
                async move {
                    tx.set_read_version(ferrisdb_common::Version(at))?;
                    tx.get(key).await
                }
            })
            .await
            .unwrap();
        assert_eq!(value.as_deref(), Some(key.as_bytes()), "{key} at {at}");
    }
    let latest = db
        .run(|tx| async move { tx.get("b4").await })
        .await
        .unwrap();
    assert_eq!(latest.as_deref(), Some(&b"b4"[..]));
}

/// One commit through a client that retries for `limit` at most.
async fn commit_within(
    cluster: &DevCluster,
    limit: Duration,
) -> Result<(), ferrisdb_client::Error> {
    use ferrisdb_client::{ConnectOptions, Database, RetryOptions};
    let impatient = Database::connect_with(ConnectOptions::new(&cluster.endpoint()).retry(
        RetryOptions {
            timeout: limit,
            ..RetryOptions::default()
        },
    ))
    .await
    .unwrap();
    impatient
        .run(|tx| async move {
            tx.set("during", "x");
            Ok(())
        })
        .await
}

/// Copies a directory tree (a safekeeper's data, at rest).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A read replica that applied commits the pageserver had not (the pageserver was stopped
/// meanwhile, then restarted from the bucket), when a double fault then rewrites those
/// commits' WAL (audit 13 F3: one of the two safekeepers that acknowledged them restored from
/// an older copy, the other down): the replica names the term it read below its position when
/// it resumes, the safekeepers' history says another term wrote there, and the replica does
/// not follow the new log. The new log's frames are sized so that one ends exactly where the
/// replica stopped, so only the term tells the two logs apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_does_not_follow_a_log_rewritten_under_it() {
    use ferrisdb_client::Database;
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let dir = tempfile::tempdir().unwrap();
    let mut cluster = DevCluster::start(
        &dir.path().join("data"),
        &["--checkpoint-interval-secs", "3600"],
    )
    .await;
    let db = cluster.db(Duration::from_secs(30)).await;
    async fn put(db: &Database, key: String, len: usize) -> u64 {
        let tx = db.create_transaction();
        tx.set(key, vec![b'v'; len]);
        tx.commit().await.unwrap().0
    }
    for i in 0..5 {
        put(&db, format!("a{i}"), 100).await;
    }
    let base = support::free_base_port();
    cluster.adopt_ports(base);
    let mut args = cluster.component("compute").compute_args();
    args.listen_grpc = format!("127.0.0.1:{base}").parse().unwrap();
    args.listen_http = format!("127.0.0.1:{}", base + 80).parse().unwrap();
    args.warm_tier_dir = Some(cluster.data_dir.join("replica-cache"));
    args.replica = true;
    cluster.spawn_argv("replica", &support::compute_argv(&args));
    let replica = Database::connect(&format!("http://127.0.0.1:{base}"))
        .await
        .unwrap();
    // A read on the replica at `version` (it serves explicit versions on its own), `None`
    // when it fails (a version it has not applied) or finds nothing.
    let on_replica = |key: String, version: u64| {
        let replica = replica.clone();
        async move {
            let tx = replica.create_transaction();
            tx.set_read_version(ferrisdb_common::Version(version))
                .ok()?;
            tx.get(key).await.ok().flatten()
        }
    };
    let a4 = put(&db, "a4".into(), 100).await;
    eventually(Duration::from_secs(30), "the replica serves", || async {
        on_replica("a4".into(), a4).await.is_some()
    })
    .await;

    let [sk1, sk2, sk3] =
        ["safekeeper-1", "safekeeper-2", "safekeeper-3"].map(|n| cluster.component(n));
    let (compute, pageserver) = (
        cluster.component("compute"),
        cluster.component("pageserver"),
    );
    // The pageserver ingests nothing more; the replica goes on following.
    kill(Pid::from_raw(pageserver.pid), Signal::SIGSTOP).unwrap();
    DevCluster::kill_pid(sk3.pid);
    DevCluster::kill_pid(sk1.pid);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let backup = dir.path().join("sk1-backup");
    copy_dir(&data_dir_of(&sk1), &backup);
    let sk1_again = tokio::task::block_in_place(|| cluster.restart(&sk1));
    // Acknowledged by safekeepers 1 and 2 only, and applied by the replica.
    let mut versions = Vec::new();
    for i in 0..5 {
        versions.push(put(&db, format!("b{i}"), 100).await);
    }
    let frame = versions[4] - versions[3];
    assert_eq!(
        versions[3] - versions[2],
        frame,
        "one frame per lone commit"
    );
    let end = versions[4];
    eventually(
        Duration::from_secs(30),
        "the replica applies the commits",
        || async { on_replica("b4".into(), end).await.is_some() },
    )
    .await;

    // The double fault: safekeeper 1 comes back from its old copy while 2 is down, and the
    // pageserver restarts from the bucket, which holds none of the commits.
    for pid in [pageserver.pid, compute.pid, sk2.pid, sk1_again] {
        DevCluster::kill_pid(pid);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::remove_dir_all(data_dir_of(&sk1)).unwrap();
    copy_dir(&backup, &data_dir_of(&sk1));
    tokio::task::block_in_place(|| {
        for c in [&sk1, &sk3, &pageserver, &compute] {
            cluster.restart(c);
        }
    });
    let db = cluster.db(Duration::from_secs(30)).await;
    // Once a primary is elected (retried until then), the new term's log, with a frame that
    // ends exactly where the replica stopped.
    db.run(|tx| async move {
        tx.set("c-first", vec![b'c'; 100]);
        Ok(())
    })
    .await
    .unwrap();
    let mut at = put(&db, "c-second".into(), 100).await;
    assert!(at < end, "the new log starts below the old one's end");
    while end - at >= 2 * frame {
        at = put(&db, format!("c{at}"), 100).await;
    }
    // A key as long as the old log's ("b0"), so the frame's size is the value's plus as much.
    let stretch = (end - at) as usize - (frame as usize - 100);
    at = put(&db, "c0".into(), stretch).await;
    assert_eq!(at, end, "a frame of the new log ends where the old one did");
    let mut after = 0;
    for i in 0..5 {
        after = put(&db, format!("c-after{i}"), 100).await;
    }

    // The replica refuses to go on from there, and says why.
    let log = cluster.data_dir.join("logs/replica.restarted.log");
    eventually(
        Duration::from_secs(40),
        "the replica reports the rewritten log",
        || async {
            std::fs::read_to_string(&log)
                .is_ok_and(|l| l.contains("the log was rewritten under it"))
        },
    )
    .await;
    // Nor does it serve the new log's commits: it never applies their versions, and a read
    // there fails rather than answer.
    assert_eq!(
        on_replica("c-after4".into(), after).await,
        None,
        "the replica applied the new log"
    );
}
