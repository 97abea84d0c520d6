//! Process-level tests of the WAL service: damaged WAL repaired from peers, two computes
//! fencing each other, and acknowledged commits surviving repeated SIGKILLs of safekeepers
//! and the compute while writers run.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferrisdb_client::{Bytes, Database, ErrorKind, RetryOptions, Version};
use ferrisdb_common::proto::ReadWalRequest;
use ferrisdb_common::proto::safekeeper_client::SafekeeperClient;
use support::{DevCluster, eventually, metric, status};

async fn put(db: &Database, key: String, value: String) -> Result<u64, ferrisdb_client::Error> {
    let tx = db.create_transaction();
    tx.set(key, value);
    tx.commit().await.map(|v| v.0)
}

/// Everything under `prefix`, read through `db`.
async fn read_prefix(db: &Database, prefix: &str) -> BTreeMap<String, String> {
    let (b, e) = (
        Bytes::from(prefix.to_string()),
        Bytes::from(format!("{prefix}\u{7f}")),
    );
    let rows = db
        .run(|tx| {
            let (b, e) = (b.clone(), e.clone());
            async move { tx.get_range(b, e, 0).await }
        })
        .await
        .unwrap();
    rows.into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8(k.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            )
        })
        .collect()
}

/// An outcome a writer saw for one key.
#[derive(Debug, Clone)]
enum Outcome {
    Acked(u64),
    /// Definitely not committed: refused before anything was appended.
    Refused(ErrorKind),
    Unknown,
}

fn classify(r: Result<u64, ferrisdb_client::Error>) -> Outcome {
    match r {
        Ok(v) => Outcome::Acked(v),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::Unavailable | ErrorKind::Fenced | ErrorKind::NotCommitted
            ) =>
        {
            Outcome::Refused(e.kind())
        }
        Err(e) if e.kind() == ErrorKind::CommitUnknownResult => Outcome::Unknown,
        Err(e) => panic!("unexpected commit error: {e}"),
    }
}

/// Every acknowledged write is present with its value, every refused one absent.
fn check_outcomes(
    outcomes: &BTreeMap<String, (String, Outcome)>,
    present: &BTreeMap<String, String>,
) -> usize {
    let mut acked = 0;
    for (key, (value, outcome)) in outcomes {
        match outcome {
            Outcome::Acked(_) => {
                acked += 1;
                assert_eq!(present.get(key), Some(value), "acknowledged {key} lost");
            }
            Outcome::Refused(kind) => {
                assert!(
                    !present.contains_key(key),
                    "{key} was refused ({kind}) but committed"
                );
            }
            Outcome::Unknown => {}
        }
    }
    acked
}

/// Where both damage tests start: a `ferrisdb dev` cluster in `data` holding twenty committed
/// keys `c00`..`c19` (`v0`..`v19`), a handle on it, and its three safekeepers in order.
async fn cluster_with_twenty_keys(
    data: &std::path::Path,
) -> (DevCluster, Database, Vec<support::ComponentInfo>) {
    let cluster = DevCluster::start(data, &[]).await;
    let db = cluster.db(Duration::from_secs(10)).await;
    for i in 0..20 {
        put(&db, format!("c{i:02}"), format!("v{i}")).await.unwrap();
    }
    let sks = (1..=3)
        .map(|i| cluster.component(&format!("safekeeper-{i}")))
        .collect();
    (cluster, db, sks)
}

/// Reads one followed stream until it has carried every record whose key starts with
/// `prefix` (`want` of them): the records' values in log order, and how many chunks with WAL
/// carried them.
async fn follow_until(
    stream: &mut tonic::Streaming<ferrisdb_common::proto::WalChunk>,
    prefix: &str,
    want: usize,
) -> (Vec<String>, usize) {
    let (mut values, mut chunks) = (Vec::new(), 0);
    while values.len() < want {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("the follower heard nothing for 30 s")
            .unwrap()
            .expect("the stream ended");
        if chunk.wal.is_empty() {
            continue;
        }
        chunks += 1;
        for r in ferrisdb_common::wal::decode_frames(&chunk.wal, chunk.begin_lsn).unwrap() {
            for m in &r.mutations {
                if m.key().starts_with(prefix.as_bytes()) {
                    values.push(String::from_utf8(m.value().unwrap().to_vec()).unwrap());
                }
            }
        }
    }
    (values, chunks)
}

/// The pageserver's way of following (`ReadWal` with a gather window): commits that land while
/// the follower is caught up come one chunk per window, not one per commit, and every one of
/// them comes, in order; a follower that asks for no window (a replica) gets them all too. A
/// window past the limit is refused as bad input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gathering_follower_takes_many_commits_per_chunk_and_misses_none() {
    use ferrisdb_common::proto::SafekeeperStatusRequest;
    let dir = tempfile::tempdir().unwrap();
    let (_cluster, db, sks) = cluster_with_twenty_keys(&dir.path().join("data")).await;
    let mut client = SafekeeperClient::new(support::internal_channel(&sks[0].grpc));
    let follow = |start_lsn, gather_millis| ReadWalRequest {
        database: "default".into(),
        start_lsn,
        end_lsn: None,
        gather_millis,
        expected_term: 0,
    };
    let too_long = client.read_wal(follow(0, 1001)).await.unwrap_err();
    assert_eq!(
        ferrisdb_client::Error::from(too_long).kind(),
        ErrorKind::InvalidArgument
    );

    let start = client
        .get_status(SafekeeperStatusRequest {
            database: "default".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .commit_lsn;
    const WINDOW: Duration = Duration::from_secs(1);
    let mut gathered = client
        .read_wal(follow(start, WINDOW.as_millis() as u32))
        .await
        .unwrap()
        .into_inner();
    let mut eager = client
        .read_wal(follow(start, 0))
        .await
        .unwrap()
        .into_inner();
    let began = Instant::now();
    let n = 20;
    for i in 0..n {
        put(&db, format!("g{i:02}"), format!("v{i}")).await.unwrap();
    }
    let (values, chunks) = follow_until(&mut gathered, "g", n).await;
    let elapsed = began.elapsed();
    let expected: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
    assert_eq!(values, expected);
    // One chunk per window the commits (and the wait for the last one) spanned, at most.
    let windows = (elapsed.as_secs_f64() / WINDOW.as_secs_f64()).ceil() as usize;
    assert!(
        chunks <= windows + 1,
        "{chunks} chunks for {n} commits over {elapsed:?} in windows of {WINDOW:?}"
    );
    let (values, eager_chunks) = follow_until(&mut eager, "g", n).await;
    assert_eq!(values, expected);
    eprintln!("{n} lone commits: {chunks} gathered chunks, {eager_chunks} without a window");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_wal_is_reported_never_served_and_repaired_from_peers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut cluster, _, sks) = cluster_with_twenty_keys(&data).await;
    for sk in &sks {
        DevCluster::kill_pid(sk.pid);
    }
    // Flip one byte in the middle of safekeeper-1's log.
    let seg = data.join("safekeeper-1/default/0000000000000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let original = bytes.clone();
    // The segment runs ahead of its frames with zeros: flip a byte among the frames.
    let frames_end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    let mid = frames_end / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();

    // Alone, it cannot repair: it must say it is damaged and serve nothing.
    cluster.restart(&sks[0]);
    let http = sks[0].http.clone();
    eventually(
        Duration::from_secs(10),
        "safekeeper-1 reports damage",
        || async {
            status(&http)
                .await
                .is_some_and(|s| !s["databases"]["default"]["damage"].is_null())
        },
    )
    .await;
    assert_eq!(
        metric(&http, "ferrisdb_safekeeper_damaged_databases").await,
        Some(1.0)
    );
    let mut client = SafekeeperClient::new(support::internal_channel(&sks[0].grpc));
    let req = ReadWalRequest {
        database: "default".into(),
        start_lsn: 0,
        end_lsn: Some(u64::MAX),
        gather_millis: 0,
        expected_term: 0,
    };
    let served = match client.read_wal(req).await {
        Ok(r) => r
            .into_inner()
            .message()
            .await
            .map(|m| m.map(|c| c.wal.len())),
        Err(e) => Err(e),
    };
    let err = served.expect_err("damaged WAL was served");
    assert_eq!(
        ferrisdb_client::Error::from(err).kind(),
        ErrorKind::Corruption
    );

    // With its peers back, it repairs itself from them.
    cluster.restart(&sks[1]);
    cluster.restart(&sks[2]);
    eventually(Duration::from_secs(20), "safekeeper-1 repaired", || async {
        metric(&http, "ferrisdb_safekeeper_repairs_total").await == Some(1.0)
            && metric(&http, "ferrisdb_safekeeper_damaged_databases").await == Some(0.0)
    })
    .await;
    let repaired = std::fs::read(&seg).unwrap();
    assert_eq!(
        &repaired[..original.len()],
        &original[..],
        "repair did not restore the original bytes"
    );

    // It counts toward the quorum again: with safekeeper-2 gone, 1 and 3 carry commits.
    DevCluster::kill_pid(sks[1].pid);
    let db = cluster.db(Duration::from_secs(20)).await;
    eventually(
        Duration::from_secs(20),
        "a commit on safekeepers 1 and 3",
        || {
            let db = db.clone();
            async move { put(&db, "after-repair".into(), "yes".into()).await.is_ok() }
        },
    )
    .await;
    let all = read_prefix(&db, "c").await;
    assert_eq!(all.len(), 20);
    assert_eq!(all["c07"], "v7");
}

/// Found by the chaos run: a safekeeper restarted with a flipped byte below an uncommitted
/// suffix, while the next term was elected by the other two and continued without that
/// suffix. Its repair waited for a peer holding exactly its old log — which none ever
/// would — so it stayed out, and the next fault on another safekeeper cost the quorum. Now
/// it repairs up to where the newer term began and rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_safekeeper_rejoins_when_a_newer_term_dropped_its_uncommitted_suffix() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut cluster, db, sks) = cluster_with_twenty_keys(&data).await;
    let http = sks[0].http.clone();
    let position = |st: &serde_json::Value| {
        let d = &st["databases"]["default"];
        (
            d["flush_lsn"].as_u64().unwrap_or(0),
            d["commit_lsn"].as_u64().unwrap_or(0),
        )
    };
    // Everything so far is committed and announced on safekeeper-1.
    eventually(
        Duration::from_secs(10),
        "safekeeper-1 caught up",
        || async {
            let (flush, commit) = status(&http).await.map_or((0, 1), |s| position(&s));
            flush == commit && flush > 0
        },
    )
    .await;
    let committed = position(&status(&http).await.unwrap()).0;

    // Freeze safekeepers 2 and 3: the next commit's WAL reaches safekeeper-1 alone and is
    // never committed.
    for sk in &sks[1..] {
        kill(Pid::from_raw(sk.pid), Signal::SIGSTOP).unwrap();
    }
    // A stop takes effect per thread as each next enters the kernel: wait until every thread
    // of both is stopped, so none can still take the next append.
    eventually(
        Duration::from_secs(5),
        "safekeepers 2 and 3 stopped",
        || async { sks[1..].iter().all(|sk| all_threads_stopped(sk.pid)) },
    )
    .await;
    let doomed = {
        let db = db.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(
                Duration::from_secs(30),
                put(&db, "suffix".into(), "never".into()),
            )
            .await;
        })
    };
    eventually(
        Duration::from_secs(10),
        "an uncommitted suffix on safekeeper-1",
        || async {
            status(&http)
                .await
                .is_some_and(|s| position(&s).0 > committed)
        },
    )
    .await;
    let compute = cluster.component("compute");
    DevCluster::kill_pid(compute.pid);
    for sk in &sks {
        DevCluster::kill_pid(sk.pid);
    }
    doomed.abort();

    // Flip a byte among safekeeper-1's committed frames, below the suffix.
    let seg = data.join("safekeeper-1/default/0000000000000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = (committed / 2) as usize;
    bytes[at] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();

    // Safekeepers 2 and 3 elect the next term; it continues without the suffix.
    let sk2 = cluster.restart(&sks[1]);
    cluster.restart(&sks[2]);
    cluster.restart(&compute);
    let db = cluster.db(Duration::from_secs(30)).await;
    eventually(Duration::from_secs(30), "a commit in the next term", || {
        let db = db.clone();
        async move { put(&db, "next-term".into(), "yes".into()).await.is_ok() }
    })
    .await;
    // The next term began where safekeepers 2 and 3 ended: below safekeeper-1's suffix.
    let history = status(&sks[1].http).await.unwrap()["databases"]["default"]["history"].clone();
    let term_start = history
        .as_array()
        .and_then(|h| h.last())
        .map(|s| s["lsn"].as_u64());
    assert_eq!(term_start, Some(Some(committed)), "history {history}");

    // Safekeeper-1 finds its damage and repairs it from a peer of the newer term.
    cluster.restart(&sks[0]);
    eventually(Duration::from_secs(30), "safekeeper-1 repaired", || async {
        metric(&http, "ferrisdb_safekeeper_repairs_total").await == Some(1.0)
            && metric(&http, "ferrisdb_safekeeper_damaged_databases").await == Some(0.0)
    })
    .await;
    // And counts toward the quorum again: with safekeeper-2 gone, 1 and 3 carry commits.
    DevCluster::kill_pid(sk2);
    eventually(
        Duration::from_secs(30),
        "a commit on safekeepers 1 and 3",
        || {
            let db = db.clone();
            async move { put(&db, "after-repair".into(), "yes".into()).await.is_ok() }
        },
    )
    .await;
    let all = read_prefix(&db, "c").await;
    assert_eq!(all.len(), 20);
    assert_eq!(all["c07"], "v7");
    let rows = read_prefix(&db, "").await;
    assert_eq!(rows.get("after-repair").map(String::as_str), Some("yes"));
    assert_eq!(rows.get("next-term").map(String::as_str), Some("yes"));
    // The suffix was never acknowledged, and the new term continued without it.
    assert_eq!(rows.get("suffix"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_computes_for_one_database_never_both_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let first = cluster.db(Duration::from_secs(10)).await;
    put(&first, "before".into(), "1".into()).await.unwrap();

    // A second compute for the same database, on ports of its own.
    let compute = cluster.component("compute");
    let other = support::free_base_port();
    let mut args = compute.compute_args();
    args.listen_grpc = format!("127.0.0.1:{other}").parse().unwrap();
    args.listen_http = format!("127.0.0.1:{}", other + 80).parse().unwrap();
    // A cache directory of its own: one process per directory (the first one holds it).
    args.warm_tier_dir = Some(cluster.data_dir.join("compute-2-cache"));
    let argv = support::compute_argv(&args);
    let second = Database::connect(&format!("http://127.0.0.1:{other}"))
        .await
        .unwrap()
        .with_retry(RetryOptions {
            timeout: Duration::from_secs(10),
            ..RetryOptions::default()
        });

    let started = Instant::now();
    let mut writers = Vec::new();
    for (name, db) in [("a", first.clone()), ("b", second.clone())] {
        writers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut n = 0;
            while started.elapsed() < Duration::from_secs(4) {
                let (k, v) = (format!("{name}{n:04}"), format!("{n}"));
                let r = put(&db, k.clone(), v.clone()).await;
                seen.push((k, v, r.map_err(|e| e.kind())));
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.spawn_argv("compute-2", &argv);
    let a = writers.remove(0).await.unwrap();
    let b = writers.remove(0).await.unwrap();

    let acked = |w: &[(String, String, Result<u64, ErrorKind>)]| -> Vec<u64> {
        w.iter()
            .filter_map(|(_, _, r)| r.as_ref().ok().copied())
            .collect()
    };
    let (a_acked, b_acked) = (acked(&a), acked(&b));
    assert!(
        !a_acked.is_empty() && !b_acked.is_empty(),
        "both computes should have served for a while"
    );
    // The old primary's last commit precedes the new one's first: never both at once.
    assert!(
        a_acked.iter().max() < b_acked.iter().min(),
        "commits interleave: first compute up to {:?}, second from {:?}",
        a_acked.iter().max(),
        b_acked.iter().min()
    );
    assert!(
        a.iter().any(|(_, _, r)| *r == Err(ErrorKind::Fenced)),
        "the first compute was never told it is fenced"
    );
    let status = status(&cluster.admin_endpoint()).await.unwrap();
    assert_eq!(status["primary"]["role"], "fenced");

    // The fenced compute keeps serving reads at versions, as a replica of the log it lost:
    // it converges to the new primary's last commit and still refuses commits with `fenced`.
    // With no primary to ask, it cannot prove a read at the latest version current, and
    // refuses those rather than answer from a log it may be cut off from.
    let last_b = b
        .iter()
        .filter_map(|(k, v, r)| r.as_ref().ok().map(|at| (k.clone(), v.clone(), *at)))
        .next_back()
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the fenced compute serves the new primary's commits",
        || async {
            let tx = first.create_transaction();
            let got = match tx.set_read_version(Version(last_b.2)) {
                Ok(()) => tx.get(last_b.0.clone()).await,
                Err(e) => Err(e),
            };
            matches!(got, Ok(Some(v)) if v == last_b.1.as_bytes())
        },
    )
    .await;
    let latest = first.create_transaction().get(last_b.0.clone()).await;
    assert_eq!(latest.map_err(|e| e.kind()), Err(ErrorKind::Unavailable));
    let refused = put(&first, "after-fencing".into(), "x".into()).await;
    assert_eq!(refused.map_err(|e| e.kind()), Err(ErrorKind::Fenced));

    // Given both endpoints, the fenced one first, an explicit transaction (the shell's kind,
    // committed once, not retried) is refused with `fenced`, and the next one goes to the
    // new primary and commits (found by an outside audit: the shell kept choosing the fenced
    // compute for as long as it lived).
    let both = Database::connect(&format!("{},http://127.0.0.1:{other}", cluster.endpoint()))
        .await
        .unwrap();
    let tx = both.create_transaction();
    tx.set("explicit", "1");
    assert_eq!(
        tx.commit().await.map_err(|e| e.kind()),
        Err(ErrorKind::Fenced)
    );
    let tx = both.create_transaction();
    tx.set("explicit", "2");
    let committed = tx.commit().await.unwrap();
    let tx = second.create_transaction();
    tx.set_read_version(committed).unwrap();
    assert_eq!(
        tx.get("explicit").await.unwrap().as_deref(),
        Some(&b"2"[..])
    );

    // Nothing acknowledged is lost, nothing refused appears, nothing is duplicated.
    let mut outcomes = BTreeMap::new();
    for (k, v, r) in a.into_iter().chain(b) {
        let o = match r {
            Ok(version) => Outcome::Acked(version),
            Err(kind @ (ErrorKind::Fenced | ErrorKind::Unavailable)) => Outcome::Refused(kind),
            Err(ErrorKind::CommitUnknownResult) => Outcome::Unknown,
            Err(kind) => panic!("unexpected {kind}"),
        };
        outcomes.insert(k, (v, o));
    }
    let present = read_prefix(&second, "a")
        .await
        .into_iter()
        .chain(read_prefix(&second, "b").await)
        .collect();
    check_outcomes(&outcomes, &present);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_commits_survive_repeated_kill_9_of_safekeepers_and_compute() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let db = cluster.db(Duration::from_secs(10)).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (db, stop) = (db.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (k, v) = (format!("w{w}-{n:05}"), format!("value {w}/{n}"));
                let r = classify(put(&db, k.clone(), v.clone()).await);
                if !matches!(r, Outcome::Acked(_)) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                outcomes.push((k, v, r));
                n += 1;
            }
            outcomes
        }));
    }

    // Chaos: kill -9 one safekeeper at a time (a fixed rotation, so runs are comparable),
    // restart it; every third round kill -9 the compute too and start a new one.
    let mut pids: BTreeMap<String, i32> = cluster
        .components()
        .into_iter()
        .map(|c| (c.name.clone(), c.pid))
        .collect();
    for round in 0..9 {
        let name = format!("safekeeper-{}", round % 3 + 1);
        DevCluster::kill_pid(pids[&name]);
        if round % 3 == 2 {
            DevCluster::kill_pid(pids["compute"]);
            tokio::time::sleep(Duration::from_millis(200)).await;
            let c = cluster.component("compute");
            pids.insert("compute".into(), cluster.restart(&c));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let c = cluster.component(&name);
        pids.insert(name, cluster.restart(&c));
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut outcomes = BTreeMap::new();
    let mut per_writer_versions = Vec::new();
    for w in writers {
        let seen = w.await.unwrap();
        let versions: Vec<u64> = seen
            .iter()
            .filter_map(|(_, _, o)| {
                if let Outcome::Acked(v) = o {
                    Some(*v)
                } else {
                    None
                }
            })
            .collect();
        per_writer_versions.push(versions);
        for (k, v, o) in seen {
            outcomes.insert(k, (v, o));
        }
    }
    // Each writer commits one transaction after another: its versions only grow.
    for versions in &per_writer_versions {
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "a writer's versions went backwards"
        );
    }
    let db = cluster.db(Duration::from_secs(30)).await;
    let present = read_prefix(&db, "w").await;
    let acked = check_outcomes(&outcomes, &present);
    assert!(
        acked > 50,
        "only {acked} commits were acknowledged during chaos"
    );
    let unknown = outcomes
        .values()
        .filter(|(_, o)| matches!(o, Outcome::Unknown))
        .count();
    let refused = outcomes
        .values()
        .filter(|(_, o)| matches!(o, Outcome::Refused(_)))
        .count();
    eprintln!(
        "chaos: {acked} acknowledged, {refused} refused, {unknown} unknown; {} present",
        present.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_is_trimmed_below_object_storage_and_the_disk_budget_refuses_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--segment-size-bytes",
        "8192",
        "--max-wal-bytes",
        "65536",
        "--checkpoint-interval-secs",
        "3600",
    ];
    let mut cluster = DevCluster::start(&dir.path().join("data"), &args).await;
    let db = cluster.db(Duration::from_secs(2)).await;
    let value = "x".repeat(1000);
    let mut acked = Vec::new();
    let mut refusal = None;
    for i in 0..200 {
        let key = format!("b{i:03}");
        match put(&db, key.clone(), value.clone()).await {
            Ok(_) => acked.push(key),
            Err(e) if e.kind() == ErrorKind::Unavailable => {
                refusal = Some(e);
                break;
            }
            // The batch that first met the full budget may still commit later.
            Err(e) if e.kind() == ErrorKind::CommitUnknownResult => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let refusal = refusal.expect("64 KiB of WAL budget never filled");
    assert!(
        refusal.message().contains("WAL disk budget full"),
        "unclear refusal: {refusal}"
    );
    assert!(
        acked.len() >= 30,
        "only {} commits fit in the budget",
        acked.len()
    );

    // Uploading lets the safekeepers delete what object storage holds, and writes resume.
    let (ok, out, err) = support::cli(&[
        "admin",
        "checkpoint",
        "--endpoint",
        &cluster.admin_endpoint(),
    ]);
    assert!(ok, "checkpoint failed: {out} {err}");
    let sk = cluster.component("safekeeper-1");
    eventually(
        Duration::from_secs(20),
        "safekeeper-1 trims its WAL",
        || async {
            status(&sk.http)
                .await
                .is_some_and(|s| s["databases"]["default"]["log_start_lsn"].as_u64() > Some(0))
        },
    )
    .await;
    let db = cluster.db(Duration::from_secs(20)).await;
    eventually(
        Duration::from_secs(30),
        "writes resume after trimming",
        || {
            let (db, value) = (db.clone(), value.clone());
            async move { put(&db, "after-trim".into(), value).await.is_ok() }
        },
    )
    .await;
    let st = status(&sk.http).await.unwrap();
    assert!(st["databases"]["default"]["disk_bytes"].as_u64().unwrap() < 65536);
    let lag = st["peer_lag"]["default"].as_object().unwrap();
    assert_eq!(lag.len(), 2, "status lists both peers: {lag:?}");
    assert!(
        lag.values().all(|p| p["lag_bytes"].is_number()),
        "peer lag missing: {lag:?}"
    );

    // Everything acknowledged reads back, and still does after kill -9 of the whole tree:
    // recovery starts from object storage where the safekeepers' WAL now begins.
    let present = read_prefix(&db, "b").await;
    for k in &acked {
        assert_eq!(present.get(k), Some(&value), "{k} lost");
    }
    cluster.kill_all();
    cluster.launch().await;
    let db = cluster.db(Duration::from_secs(20)).await;
    let present = read_prefix(&db, "b").await;
    for k in &acked {
        assert_eq!(present.get(k), Some(&value), "{k} lost after restart");
    }
}

/// A WAL budget smaller than what the checkpoint interval lets pile up is kept by early
/// checkpoints: with periodic checkpoints an hour apart and a 16 MiB budget, 40 MiB of commits
/// go through, because the safekeepers tell the pageserver their WAL passed half the budget
/// and it uploads at once (an outside audit saw a 64 MiB budget throttle commits for good).
/// Without them the budget fills after ~16 MiB and nothing ever trims it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_wal_budget_is_kept_by_checkpoints_the_safekeepers_ask_for() {
    const MIB: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let budget = (16 * MIB).to_string();
    let args = [
        "--segment-size-bytes",
        "1048576",
        "--max-wal-bytes",
        &budget,
        "--checkpoint-interval-secs",
        "3600",
    ];
    let cluster = DevCluster::start(&dir.path().join("data"), &args).await;
    let db = cluster.db(Duration::from_secs(30)).await;
    // 400 commits of 100 kB (the largest value) over 20 keys: 40 MiB of WAL.
    let value = |i: usize| format!("{i:06}").repeat(100_000 / 6);
    let mut refused = 0;
    for i in 0..400 {
        let key = format!("v{:02}", i % 20);
        // A commit refused while an upload runs is retried; one that never gets through
        // (the budget full for good) fails the test.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match put(&db, key.clone(), value(i)).await {
                Ok(_) => break,
                Err(e) if e.kind() == ErrorKind::Unavailable => {
                    refused += 1;
                    assert!(
                        Instant::now() < deadline,
                        "commit {i} refused for a minute: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("commit {i}: {e}"),
            }
        }
    }
    let ps = cluster.component("pageserver").http.clone();
    let early = metric(&ps, "ferrisdb_pageserver_early_checkpoints_total")
        .await
        .unwrap();
    assert!(early >= 2.0, "{early} early checkpoints for 40 MiB of WAL");
    let sk = cluster.component("safekeeper-1");
    let on_disk = status(&sk.http).await.unwrap()["databases"]["default"]["disk_bytes"]
        .as_u64()
        .unwrap();
    assert!(on_disk < 16 * MIB, "{on_disk} bytes of WAL on disk");
    eprintln!("{early} early checkpoints, {refused} refusals retried, {on_disk} bytes of WAL");
    let present = read_prefix(&db, "v").await;
    for k in 0..20 {
        let last = 380 + k;
        assert_eq!(
            present.get(&format!("v{k:02}")),
            Some(&value(last)),
            "v{k:02}"
        );
    }
}

/// One flipped bit in a running safekeeper's WAL, met when a restarted pageserver reads the
/// log from its start: the safekeeper takes its log for damaged from there and repairs it from
/// a peer, and the pageserver follows the others meanwhile; every acknowledged commit is
/// ingested and reads back. Before, the pageserver asked the damaged safekeeper again and
/// again (3,052 times in 11 minutes in an outside audit), never the two intact copies, the
/// safekeeper's status said nothing was wrong, and ingestion stopped for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rot_in_a_running_safekeepers_wal_is_repaired_and_followed_around() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--checkpoint-interval-secs", "3600"];
    let mut cluster = DevCluster::start(&dir.path().join("data"), &args).await;
    let db = cluster.db(Duration::from_secs(30)).await;
    // ~6 MB of WAL, past the safekeepers' 4 MiB buffer of newest WAL: the start of the log
    // is read from disk.
    let value = |i: usize| format!("{i:06}").repeat(100_000 / 6);
    let mut last = 0;
    for i in 0..60 {
        last = put(&db, format!("r{i:02}"), value(i)).await.unwrap();
    }
    let ps = cluster.component("pageserver");
    let ingested = |ps: String| async move {
        status(&ps)
            .await
            .and_then(|s| s["databases"]["default"]["ingested_version"].as_u64())
    };
    eventually(Duration::from_secs(30), "the pageserver ingests", || {
        let ps = ps.http.clone();
        async move { ingested(ps).await >= Some(last) }
    })
    .await;
    // Rot: one bit, 200 kB into safekeeper-1's first segment, while it runs.
    let seg = cluster
        .data_dir
        .join("safekeeper-1/default/0000000000000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[200_000] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    // A pageserver that starts again reads the log from its start (nothing was uploaded).
    DevCluster::kill_pid(ps.pid);
    cluster.spawn_argv("pageserver", &ps.argv);
    eventually(
        Duration::from_secs(60),
        "the restarted pageserver ingests everything",
        || {
            let ps = ps.http.clone();
            async move { ingested(ps).await >= Some(last) }
        },
    )
    .await;
    let sk1 = cluster.component("safekeeper-1").http.clone();
    eventually(
        Duration::from_secs(30),
        "safekeeper-1 repairs its log",
        || {
            let sk1 = sk1.clone();
            async move {
                metric(&sk1, "ferrisdb_safekeeper_repairs_total").await >= Some(1.0)
                    && metric(&sk1, "ferrisdb_safekeeper_damaged_databases").await == Some(0.0)
            }
        },
    )
    .await;
    let log = std::fs::read_to_string(cluster.data_dir.join("logs/safekeeper-1.log")).unwrap();
    assert!(log.contains("found by a read"), "the damage is logged");
    // Its repaired log is the others' byte for byte.
    let sk2 = std::fs::read(
        cluster
            .data_dir
            .join("safekeeper-2/default/0000000000000000.seg"),
    )
    .unwrap();
    let sk1_now = std::fs::read(&seg).unwrap();
    assert_eq!(sk1_now[..300_000], sk2[..300_000]);
    let present = read_prefix(&db, "r").await;
    for i in 0..60 {
        assert_eq!(present.get(&format!("r{i:02}")), Some(&value(i)), "r{i:02}");
    }
}

/// Makes a directory tree immutable (`chattr +i`: not even root creates, renames or deletes
/// in it) until dropped: an object store that refuses every write, for a file:// bucket.
struct Immutable(std::path::PathBuf);

impl Immutable {
    /// `None` (with the reason) where `chattr` cannot do it: not root, or a file system
    /// without the attribute.
    fn new(dir: &std::path::Path) -> Result<Immutable, String> {
        let out = std::process::Command::new("chattr")
            .args(["-R", "+i"])
            .arg(dir)
            .output()
            .map_err(|e| format!("chattr: {e}"))?;
        let guard = Immutable(dir.to_path_buf());
        if !out.status.success() {
            return Err(format!(
                "chattr -R +i: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        // Root ignores permissions, not this attribute: check it holds.
        if std::fs::write(dir.join("probe"), b"x").is_ok() {
            return Err("chattr +i did not stop a write".to_string());
        }
        Ok(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .args(["-R", "-i"])
            .arg(&self.0)
            .status();
    }
}

/// While the bucket refuses every write, the pageserver holds at most two checkpoints' worth
/// of WAL in memory and then stops ingesting (said in its log and metrics); commits go on,
/// served from the compute's hot tier and kept by the safekeepers. Once the bucket takes
/// writes again everything is uploaded and read back. Without the bound the pageserver took
/// the WAL as fast as it came (an outside audit: 748 MB in memory against 256 MiB
/// `--checkpoint-bytes` during an S3 outage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pageserver_whose_uploads_fail_stops_ingesting_at_its_memory_bound() {
    const MIB: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--checkpoint-bytes",
        "1048576",
        "--checkpoint-interval-secs",
        "3600",
    ];
    let cluster = DevCluster::start(&dir.path().join("data"), &args).await;
    let db = cluster.db(Duration::from_secs(30)).await;
    put(&db, "before".into(), "1".into()).await.unwrap();
    let objects = cluster.data_dir.join("objects");
    let frozen = match Immutable::new(&objects) {
        Ok(f) => f,
        Err(why) => {
            eprintln!("skipped: cannot make the bucket refuse writes ({why})");
            return;
        }
    };
    let ps = cluster.component("pageserver").http.clone();
    // 60 commits of 100 kB over distinct keys: about 6 MiB, three times the bound.
    let value = |i: usize| format!("{i:06}").repeat(100_000 / 6);
    let mut last = 0;
    for i in 0..60 {
        last = put(&db, format!("k{i:02}"), value(i)).await.unwrap();
    }
    eventually(Duration::from_secs(30), "ingestion pauses", || async {
        metric(&ps, "ferrisdb_pageserver_ingest_paused").await == Some(1.0)
    })
    .await;
    let held = || async {
        let s = status(&ps).await.unwrap();
        let db = &s["databases"]["default"];
        (
            db["ingested_version"].as_u64().unwrap(),
            db["open_layer_bytes"].as_u64().unwrap(),
        )
    };
    let (ingested, open) = held().await;
    assert!(ingested < last, "ingested {ingested} of {last}");
    // The bound (2 MiB) and at most the chunk that crossed it.
    assert!(open <= 3 * MIB, "{open} bytes in the open layer");
    eventually(Duration::from_secs(30), "a checkpoint fails", || async {
        metric(&ps, "ferrisdb_pageserver_checkpoint_failures_total").await >= Some(1.0)
    })
    .await;
    // Still paused a little later, and every commit reads back meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(held().await.0, ingested, "ingestion went on");
    let present = read_prefix(&db, "k").await;
    assert_eq!(present.len(), 60);
    assert_eq!(present.get("k59"), Some(&value(59)));
    // The largest legal transaction, committed while ingestion waits: 99 values of ~100 kB
    // (9.9 MB with their keys and conflict ranges) in one frame, which reaches the pageserver
    // as one chunk past its bound once ingestion resumes.
    let large = |i: usize| format!("{i:03}").repeat(100_000 / 3);
    let tx = db.create_transaction();
    for i in 0..99 {
        tx.set(format!("t{i:03}"), large(i));
    }
    last = tx.commit().await.unwrap().0;
    assert_eq!(held().await.0, ingested, "ingestion went on");

    drop(frozen);
    eventually(
        Duration::from_secs(60),
        "ingestion resumes and catches up",
        || async {
            metric(&ps, "ferrisdb_pageserver_ingest_paused").await == Some(0.0)
                && held().await.0 >= last
        },
    )
    .await;
    eventually(
        Duration::from_secs(60),
        "the WAL reaches the bucket",
        || async {
            status(&ps).await.unwrap()["databases"]["default"]["remote_consistent_version"]
                .as_u64()
                .unwrap()
                >= last
        },
    )
    .await;
    let present = read_prefix(&db, "k").await;
    for i in 0..60 {
        assert_eq!(present.get(&format!("k{i:02}")), Some(&value(i)), "k{i:02}");
    }
    let present = read_prefix(&db, "t").await;
    assert_eq!(present.len(), 99);
    for i in 0..99 {
        assert_eq!(present.get(&format!("t{i:03}")), Some(&large(i)), "t{i:03}");
    }
}

/// Whether every thread of process `pid` is stopped (state `T` in /proc).
fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
            // The state follows the command name, which is in parentheses.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state == "T" || state == "t")
        })
    })
}

/// A safekeeper given a bucket it cannot read starts (it holds the WAL; the bucket may be down
/// for a while) but says so, since it then never deletes WAL.
#[test]
fn a_safekeeper_says_when_its_object_store_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_base_port();
    // An S3 endpoint nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let log_path = dir.path().join("sk.log");
    let mut child = std::process::Command::new(support::BIN)
        .args([
            "safekeeper",
            "--listen-grpc",
            &format!("127.0.0.1:{port}"),
            "--listen-http",
            &format!("127.0.0.1:{}", port + 80),
            "--data-dir",
            dir.path().join("sk").to_str().unwrap(),
            "--object-store",
            "s3://no-such-bucket/x",
            "--s3-endpoint",
            &endpoint,
        ])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("--object-store") && log.contains("no WAL is deleted") {
            break log;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the safekeeper exited: {log}"
        );
        assert!(Instant::now() < deadline, "no warning: {log}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(log.contains("safekeeper serving"), "{log}");
    let _ = child.kill();
    let _ = child.wait();
}
