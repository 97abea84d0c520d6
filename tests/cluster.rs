//! End-to-end tests of the walking skeleton with real processes: `ferrisdb dev` spawns three
//! safekeepers, a pageserver and a compute, which talk gRPC over loopback; tests drive them
//! through the SDK and the CLI, and kill them with SIGKILL.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use ferrisdb_client::{Bytes, ErrorKind};
use support::{DevCluster, checkpoint, cli, eventually, metric};

fn key(i: usize) -> String {
    format!("key-{i:04}")
}

fn val(i: usize) -> String {
    format!("value-{i}")
}

/// The first `n` of [`key`] → [`val`], in key order.
fn written(n: usize) -> Vec<(Bytes, Bytes)> {
    (0..n)
        .map(|i| (Bytes::from(key(i)), Bytes::from(val(i))))
        .collect()
}

/// A dev cluster whose data dir is `<dir>/data` and whose bucket, `<dir>/bucket`, lies outside
/// it (so the data dir can be wiped or the bucket damaged on its own); (cluster, data, bucket).
async fn cluster_with_own_bucket(
    dir: &std::path::Path,
) -> (DevCluster, std::path::PathBuf, std::path::PathBuf) {
    let data = dir.join("data");
    let bucket = dir.join("bucket");
    let store = format!("file://{}", bucket.display());
    let cluster = DevCluster::start(&data, &["--object-store", &store]).await;
    (cluster, data, bucket)
}

/// Commits [`written`]`(n)`, one transaction each; the last commit version.
async fn write_keys(db: &ferrisdb_client::Database, n: usize) -> u64 {
    let mut last_version = 0;
    for i in 0..n {
        let tx = db.create_transaction();
        tx.set(key(i), val(i));
        last_version = tx.commit().await.unwrap().0;
    }
    last_version
}

/// Every `key-…` row at the latest version.
async fn all_keys(db: &ferrisdb_client::Database) -> Vec<(Bytes, Bytes)> {
    db.run(|tx| async move {
        tx.get_range(Bytes::from("key-"), Bytes::from("key."), 0)
            .await
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_set_get_clear_scan_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let ep = cluster.endpoint();
    let (ok, out, err) = cli(&["set", "hello", "world", "--endpoint", &ep, "--json"]);
    assert!(ok, "set failed: {err}");
    let set: serde_json::Value = serde_json::from_str(&out).unwrap();
    let set_version = set["version"].as_u64().unwrap();
    assert!(set_version > 0);

    let (ok, out, _) = cli(&["get", "hello", "--endpoint", &ep]);
    assert!(ok);
    assert_eq!(out.trim(), "world");
    let (ok, out, _) = cli(&["get", "hello", "--endpoint", &ep, "--json"]);
    assert!(ok);
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got["key"], "hello");
    assert_eq!(got["value"], "world");
    assert!(got["version"].as_u64().unwrap() >= set_version);

    let (ok, out, _) = cli(&["get", "missing", "--endpoint", &ep, "--json"]);
    assert!(ok);
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(got["value"].is_null());

    for (k, v) in [("b", "2"), ("a", "1"), ("c", "3")] {
        assert!(cli(&["set", k, v, "--endpoint", &ep]).0);
    }
    assert!(cli(&["clear", "b", "--endpoint", &ep]).0);
    let (ok, out, _) = cli(&["scan", "a", "hello", "--endpoint", &ep, "--json"]);
    assert!(ok);
    let scan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let keys: Vec<_> = scan["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, vec!["a", "c"]);
    let (ok, out, _) = cli(&[
        "scan",
        "a",
        "z",
        "--limit",
        "2",
        "--endpoint",
        &ep,
        "--json",
    ]);
    assert!(ok);
    let scan: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(scan["rows"].as_array().unwrap().len(), 2);

    // Reading at the version of the first write still sees only that write.
    let v = set_version.to_string();
    let (ok, out, _) = cli(&["get", "a", "--at-version", &v, "--endpoint", &ep, "--json"]);
    assert!(ok);
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        got["value"].is_null(),
        "a was written after version {v}: {got}"
    );

    // Bad input gets a code.
    let big = "x".repeat(10_001);
    let (ok, out, _) = cli(&["set", &big, "v", "--endpoint", &ep, "--json"]);
    assert!(!ok);
    let e: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["error"]["code"], "key_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_of_the_whole_tree() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let db = cluster.db(Duration::from_secs(10)).await;
    for i in 0..50 {
        let (k, v) = (key(i), val(i));
        db.run(|tx| {
            let (k, v) = (k.clone(), v.clone());
            async move {
                tx.set(k, v);
                Ok(())
            }
        })
        .await
        .unwrap();
    }
    cluster.kill_all();
    cluster.launch().await;
    let db = cluster.db(Duration::from_secs(10)).await;
    for i in 0..50 {
        let k = key(i);
        let got = db
            .run(|tx| {
                let k = k.clone();
                async move { tx.get(k).await }
            })
            .await
            .unwrap();
        assert_eq!(
            got,
            Some(Bytes::from(val(i))),
            "{} lost after kill -9",
            key(i)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_one_down_works_two_down_is_unavailable_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let ep = cluster.endpoint();
    let sk1 = cluster.component("safekeeper-1");
    let sk2 = cluster.component("safekeeper-2");

    DevCluster::kill_pid(sk1.pid);
    let (ok, _, err) = cli(&["set", "q1", "a", "--endpoint", &ep]);
    assert!(ok, "write failed with 1 of 3 safekeepers down: {err}");

    DevCluster::kill_pid(sk2.pid);
    let started = Instant::now();
    let (ok, out, _) = cli(&["set", "q2", "b", "--endpoint", &ep, "--json"]);
    let took = started.elapsed();
    assert!(!ok, "write succeeded with 2 of 3 safekeepers down");
    assert!(took < Duration::from_secs(10), "failing took {took:?}");
    let e: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["error"]["code"], "unavailable", "{out}");

    cluster.restart(&sk2);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if cli(&["set", "q3", "c", "--endpoint", &ep]).0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes did not resume after restarting a safekeeper"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (k, v) in [("q1", "a"), ("q3", "c")] {
        let (ok, out, _) = cli(&["get", k, "--endpoint", &ep]);
        assert!(ok);
        assert_eq!(out.trim(), v, "acknowledged {k} lost");
    }
    // q2 was refused before anything was appended, so it must not appear.
    let (ok, out, _) = cli(&["get", "q2", "--endpoint", &ep, "--json"]);
    assert!(ok);
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(got["value"].is_null(), "a refused write appeared: {got}");

    // The first safekeeper comes back too and is caught up: with the other two killed, the
    // quorum now needs it, so a write succeeding proves it holds the whole log.
    cluster.restart(&sk1);
    let sk3 = cluster.component("safekeeper-3");
    tokio::time::sleep(Duration::from_millis(500)).await;
    DevCluster::kill_pid(sk3.pid);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cli(&["set", "q4", "d", "--endpoint", &ep]).0 {
        assert!(Instant::now() < deadline, "safekeeper-1 was not caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (k, v) in [("q1", "a"), ("q3", "c"), ("q4", "d")] {
        let (ok, out, _) = cli(&["get", k, "--endpoint", &ep]);
        assert!(ok);
        assert_eq!(out.trim(), v, "acknowledged {k} lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_from_the_bucket_alone_after_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, data, _) = cluster_with_own_bucket(dir.path()).await;
    let db = cluster.db(Duration::from_secs(10)).await;
    let first_version = write_keys(&db, 40).await;
    let admin = cluster.admin_endpoint();
    let durable = |cp: serde_json::Value| cp["remote_consistent_version"].as_u64().unwrap();
    let cp = durable(checkpoint(&admin));
    assert!(cp >= first_version);
    // Reads only, then a checkpoint: the read versions' liveness records are all it has to
    // upload, so the durable version moves on with no layer. Once the next layer did not
    // chain on to the last, and a pageserver restored from this bucket refused it as corrupt.
    for _ in 0..2 {
        db.create_transaction().read_version().await.unwrap();
        tokio::time::sleep(ferrisdb_common::lease::LEASE + Duration::from_millis(200)).await;
    }
    db.create_transaction().read_version().await.unwrap();
    let idle = durable(checkpoint(&admin));
    assert!(
        idle > cp,
        "reads alone wrote no record (durable {idle}, before {cp}): the idle stretch is not tested"
    );
    let tx = db.create_transaction();
    tx.set("after-idle", "yes");
    let last_version = tx.commit().await.unwrap().0;
    assert!(durable(checkpoint(&admin)) >= last_version);
    cluster.stop();

    // Every local directory goes; only the bucket (outside the data dir here) remains.
    std::fs::remove_dir_all(&data).unwrap();
    cluster.launch().await;
    let db = cluster.db(Duration::from_secs(10)).await;
    assert_eq!(all_keys(&db).await, written(40));
    // The restored database keeps going: new versions continue above the restored ones.
    let tx = db.create_transaction();
    tx.set("after-restore", "yes");
    let v = tx.commit().await.unwrap();
    assert!(
        v.0 > last_version,
        "version {v} after restore is not above {last_version}"
    );
    let tx = db.create_transaction();
    assert_eq!(tx.get(key(7)).await.unwrap(), Some(Bytes::from(val(7))));
    assert_eq!(
        tx.get("after-restore").await.unwrap(),
        Some(Bytes::from("yes"))
    );
    assert_eq!(
        tx.get("after-idle").await.unwrap(),
        Some(Bytes::from("yes"))
    );
}

/// The newest manifest under `bucket`'s default database.
fn newest_manifest(bucket: &std::path::Path) -> std::path::PathBuf {
    let dir = bucket.join("databases/default/manifest");
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .max()
        .unwrap_or_else(|| panic!("no manifest in {}", dir.display()))
}

/// A database whose newest manifest is damaged is held as broken, and only it: the pageserver
/// starts and serves its other databases, its status and metrics name the damage, and a client
/// of the damaged database is told `unavailable` with the corruption as the reason, not a
/// refused connection. With the manifest restored, it is loaded again without a restart and
/// serves what was checkpointed. (Before, one damaged object stopped the whole pageserver, every database
/// with it, and it exited at every restart.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_is_held_broken_while_the_pageserver_serves_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, _, bucket) = cluster_with_own_bucket(dir.path()).await;
    let db = cluster.db(Duration::from_secs(10)).await;
    write_keys(&db, 20).await;
    checkpoint(&cluster.admin_endpoint());
    let components = cluster.components();
    cluster.stop();

    let manifest = newest_manifest(&bucket);
    let original = std::fs::read(&manifest).unwrap();
    let mut damaged = original.clone();
    damaged[original.len() / 3] ^= 0x5a;
    std::fs::write(&manifest, &damaged).unwrap();
    let name = manifest.file_name().unwrap().to_string_lossy().to_string();

    // The same processes, the pageserver also serving a second root database.
    let mut pageserver_http = String::new();
    for c in &components {
        let mut argv = c.argv.clone();
        if c.name == "pageserver" {
            pageserver_http = c.http.clone();
            if !argv.iter().any(|a| a == "--database") {
                argv.extend(["--database".into(), "default".into()]);
            }
            argv.extend(["--database".into(), "other".into()]);
        }
        cluster.spawn_argv(&c.name, &argv);
    }
    let mut seen = serde_json::Value::Null;
    eventually(Duration::from_secs(20), "the pageserver to serve", || {
        let http = pageserver_http.clone();
        async move { support::status(&http).await.is_some() }
    })
    .await;
    if let Some(s) = support::status(&pageserver_http).await {
        seen = s;
    }
    assert_eq!(
        seen["broken"]["default"]["code"], "corruption",
        "status should hold default as broken: {seen}"
    );
    let message = seen["broken"]["default"]["message"].as_str().unwrap();
    assert!(
        message.contains(&name),
        "the status should name the damaged manifest {name}: {message}"
    );
    assert!(
        seen["databases"]["other"]["ingested_version"].is_u64(),
        "the undamaged database should be served: {seen}"
    );
    assert!(
        seen["databases"].get("default").is_none(),
        "the damaged one should not be among those served: {seen}"
    );
    assert_eq!(
        metric(&pageserver_http, "ferrisdb_pageserver_broken_databases").await,
        Some(1.0)
    );
    // The undamaged database takes maintenance.
    let token = support::admin_token(&pageserver_http).unwrap();
    let r = reqwest::Client::new()
        .post(format!("{pageserver_http}/v1/databases/other/checkpoint"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);

    // The compute cannot start the damaged database and says why.
    let db = cluster.db(Duration::from_secs(3)).await;
    let e = db
        .run(|tx| async move { tx.get(key(0)).await })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(
        e.to_string().contains("corruption") && e.to_string().contains(&name),
        "the client should be told what the compute waits for: {e}"
    );

    // Repaired while it runs: the pageserver loads it again by itself (no restart), and the
    // compute, which kept retrying its start, serves what was checkpointed.
    std::fs::write(&manifest, &original).unwrap();
    eventually(
        Duration::from_secs(60),
        "the repaired database to be served",
        || {
            let http = pageserver_http.clone();
            async move {
                support::status(&http).await.is_some_and(|s| {
                    s["databases"]["default"]["ingested_version"].is_u64()
                        && s["broken"].as_object().is_some_and(|b| b.is_empty())
                })
            }
        },
    )
    .await;
    assert_eq!(
        metric(&pageserver_http, "ferrisdb_pageserver_broken_databases").await,
        Some(0.0)
    );
    let db = cluster.db(Duration::from_secs(60)).await;
    assert_eq!(all_keys(&db).await, written(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_are_serializable_and_conflicts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    const CLIENTS: u64 = 8;
    const INCREMENTS: u64 = 25;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let db = cluster.db(Duration::from_secs(60)).await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..INCREMENTS {
                db.run(|tx| async move {
                    let n = match tx.get("counter").await? {
                        Some(b) => u64::from_le_bytes(b[..].try_into().unwrap()),
                        None => 0,
                    };
                    tx.set("counter", (n + 1).to_le_bytes().to_vec());
                    Ok(())
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let db = cluster.db(Duration::from_secs(10)).await;
    let n = db
        .run(|tx| async move { tx.get("counter").await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        u64::from_le_bytes(n[..].try_into().unwrap()),
        CLIENTS * INCREMENTS
    );

    // Two transactions read the same key at the same version and both write it: one wins.
    let t1 = db.create_transaction();
    let t2 = db.create_transaction();
    let v1 = t1.get("contended").await.unwrap();
    let v2 = t2.get("contended").await.unwrap();
    assert_eq!(v1, v2);
    t1.set("contended", "t1");
    t2.set("contended", "t2");
    t1.commit().await.unwrap();
    let e = t2.commit().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotCommitted);
    let tx = db.create_transaction();
    assert_eq!(tx.get("contended").await.unwrap(), Some(Bytes::from("t1")));
}

/// The pageserver checkpoints by size as well as by time: with the periodic checkpoint an
/// hour away and a 1 MiB mark, the commit whose 100 kB value takes its in-memory layer past
/// the mark reaches the bucket on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pageserver_checkpoints_once_its_memory_reaches_the_mark() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = DevCluster::start(
        &dir.path().join("data"),
        &[
            "--checkpoint-interval-secs",
            "3600",
            "--checkpoint-bytes",
            "1048576",
        ],
    )
    .await;
    let db = cluster.db(Duration::from_secs(10)).await;
    let ps = cluster.component("pageserver").http;
    let checkpoints = || async { metric(&ps, "ferrisdb_pageserver_checkpoints_total").await };
    assert_eq!(checkpoints().await, Some(0.0));
    let value = Bytes::from(vec![b'x'; 100_000]);
    let mut versions = Vec::new();
    for i in 0..11 {
        let tx = db.create_transaction();
        tx.set(format!("big/{i:02}"), value.clone());
        versions.push(tx.commit().await.unwrap().0);
    }
    // Eleven values of 100 kB: the eleventh is past 1 MiB.
    let crossing = versions[10];
    eventually(Duration::from_secs(30), "a checkpoint by size", || async {
        metric(
            &ps,
            "ferrisdb_pageserver_remote_consistent_version{database=\"default\"}",
        )
        .await
        .is_some_and(|v| v as u64 >= crossing)
    })
    .await;
    assert!(checkpoints().await.unwrap() >= 1.0);
    let (ok, out, err) = cli(&["get", "big/10", "--endpoint", &cluster.endpoint()]);
    assert!(ok, "{err}");
    assert_eq!(out.trim().len(), 100_000);
    cluster.stop();
}

/// Whether process `pid` still exists (a zombie counts as gone).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// One process per data directory: a second safekeeper on a running one's directory exits at
/// once naming the holder. And `dev`'s components do not outlive it: SIGKILLed, it takes them
/// with it. (Left running, they once let a second `dev` started on another port share their
/// directories, and two clusters acknowledged different commits at the same versions.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_per_data_directory_and_none_outlives_dev() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let db = cluster.db(Duration::from_secs(10)).await;
    write_keys(&db, 3).await;
    let sk = cluster.component("safekeeper-1");
    let base = support::free_base_port();
    let mut argv = sk.argv.clone();
    for (flag, port) in [("--listen-grpc", base), ("--listen-http", base + 1)] {
        let i = argv.iter().position(|a| a == flag).unwrap();
        argv[i + 1] = format!("127.0.0.1:{port}");
    }
    let out = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second safekeeper started: {err}");
    assert!(
        err.contains(&format!("in use by process {}", sk.pid)),
        "{err}"
    );
    // The first one never noticed.
    assert!(alive(sk.pid));
    write_keys(&db, 3).await;
    // Nor does a second `dev` on the same directory get anywhere: it exits at once, naming
    // the running one, before it touches the cluster file the CLI finds the cluster by.
    let file = cluster.data_dir.join("cluster.json");
    let before = std::fs::read(&file).unwrap();
    let base = support::free_base_port().to_string();
    let data = cluster.data_dir.display().to_string();
    let second = std::process::Command::new(support::BIN)
        .args(["dev", "--data-dir", &data, "--base-port", &base])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "a second dev started: {err}");
    let dev = cluster.dev_pid().unwrap();
    assert!(err.contains(&format!("in use by process {dev}")), "{err}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "cluster.json rewritten"
    );
    write_keys(&db, 3).await;

    let components: Vec<i32> = cluster.components().iter().map(|c| c.pid).collect();
    support::DevCluster::kill_pid(cluster.dev_pid().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while components.iter().any(|p| alive(*p)) {
        assert!(
            std::time::Instant::now() < deadline,
            "components outlived dev: {:?}",
            components.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A compute out of file descriptors waits between accepts and says why, once, instead of
/// spinning on `accept` at a whole core with nothing in its log (an outside audit's finding:
/// ~31k failed accepts a second); once connections close, it serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compute_out_of_file_descriptors_says_so_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cluster = DevCluster::start(&data, &[]).await;
    let compute = cluster.component("compute");
    let open = std::fs::read_dir(format!("/proc/{}/fd", compute.pid))
        .unwrap()
        .count();
    let limit = format!("--nofile={}", open + 16);
    let pid = compute.pid.to_string();
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &limit])
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("skipped: `prlimit` (util-linux) could not lower the compute's limit");
        return;
    }
    let addr = cluster.endpoint().trim_start_matches("http://").to_string();
    // Far more connections than descriptors left: the backlog fills, accepts fail.
    let conns: Vec<_> = (0..64)
        .filter_map(|_| std::net::TcpStream::connect(&addr).ok())
        .collect();
    let log = data.join("logs/compute.log");
    let said = |log: &std::path::Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("cannot accept connections")
            .count()
    };
    eventually(
        Duration::from_secs(10),
        "the compute logs the failed accepts",
        || async { said(&log) > 0 },
    )
    .await;
    // Retried every 100 ms, but said again only after an accept worked in between (a
    // descriptor freed elsewhere): a few lines, not one per attempt.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lines = said(&log);
    assert!(
        lines <= 3,
        "logged {lines} times in 2 s: once per failure, not per attempt"
    );
    drop(conns);
    let ep = cluster.endpoint();
    eventually(
        Duration::from_secs(20),
        "the compute serves again",
        || async { cli(&["set", "after", "fds", "--endpoint", &ep]).0 },
    )
    .await;
    let (ok, out, err) = cli(&["get", "after", "--endpoint", &ep]);
    assert!(ok && out.trim() == "fds", "{out} {err}");
}

/// `changes --follow --timeout 0` ("no bound") follows across a compute killed and restarted:
/// it delivers the next commit, once, instead of exiting on the first `unavailable` (as it did:
/// a zero timeout left the feed no retries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_feed_followed_without_a_bound_survives_a_compute_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let ep = cluster.endpoint();
    let db = cluster.db(Duration::from_secs(10)).await;
    let from = write_keys(&db, 1).await + 1;
    let follower = std::process::Command::new(support::BIN)
        .args([
            "changes",
            "--from",
            &from.to_string(),
            "--follow",
            "--limit",
            "1",
        ])
        .args(["--endpoint", &ep, "--timeout", "0", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let compute = cluster.component("compute");
    DevCluster::kill_pid(compute.pid);
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.restart(&compute);
    let db = cluster.db(Duration::from_secs(30)).await;
    db.run(|tx| async move {
        tx.set("after-restart", "yes");
        Ok(())
    })
    .await
    .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || follower.wait_with_output().unwrap()),
    )
    .await
    .expect("the follower never printed the commit made after the restart")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let record: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(record["mutations"][0]["key"], "after-restart", "{record}");
}
