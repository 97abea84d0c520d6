//! Read replicas and failover, as separate processes: a `ferrisdb compute --replica` follows
//! the WAL and converges to the primary without ever showing a version the primary did not
//! commit, refuses commits naming the primary, and fires watches; a `--standby` compute takes
//! over when the primary is killed with SIGKILL, and the SDK, given both endpoints, carries
//! on.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrisdb_client::{ConnectOptions, Database, ErrorKind, RetryOptions, Version};
use support::{DevCluster, eventually, status};

/// The dev compute's command line, moved to a fresh port block and cache directory, its
/// role set by `role` (on the arguments' struct: no flag is spelled here).
fn second_compute(
    cluster: &DevCluster,
    name: &str,
    role: impl FnOnce(&mut ferrisdb_compute::Args),
) -> (Vec<String>, u16) {
    let base = support::free_base_port();
    cluster.adopt_ports(base);
    let mut args = cluster.component("compute").compute_args();
    args.listen_grpc = format!("127.0.0.1:{base}").parse().unwrap();
    args.listen_http = format!("127.0.0.1:{}", base + 80).parse().unwrap();
    args.warm_tier_dir = Some(cluster.data_dir.join(format!("{name}-cache")));
    role(&mut args);
    (support::compute_argv(&args), base)
}

/// `GET /readyz` (with `?reads=true` when `reads`) on an admin endpoint, without a
/// credential, as a load balancer probes it: the status code and the body.
async fn readyz(http: &str, reads: bool) -> (u16, serde_json::Value) {
    let url = format!("{http}/readyz{}", if reads { "?reads=true" } else { "" });
    let r = reqwest::get(&url).await.unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap())
}

fn counter(v: Option<Bytes>) -> u64 {
    v.map_or(0, |b| String::from_utf8_lossy(&b).parse().unwrap())
}

async fn read_at(db: &Database, key: &str, at: Option<Version>) -> (Version, Option<Bytes>) {
    let tx = db.create_transaction();
    if let Some(v) = at {
        tx.set_read_version(v).unwrap();
    }
    let value = tx.get(key.to_string()).await.unwrap();
    (tx.read_version().await.unwrap(), value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_converges_and_never_shows_an_uncommitted_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let primary = cluster.db(Duration::from_secs(20)).await;
    primary
        .run(|tx| async move {
            tx.set("n", "0");
            Ok(())
        })
        .await
        .unwrap();
    let (argv, base) = second_compute(&cluster, "replica", |a| {
        a.replica = true;
        a.primary_endpoints = vec![cluster.endpoint()];
    });
    cluster.spawn_argv("replica", &argv);
    let replica_ep = format!("http://127.0.0.1:{base}");
    let replica = Database::connect(&replica_ep).await.unwrap();
    eventually(Duration::from_secs(30), "the replica serves", || async {
        replica.create_transaction().get("n").await.is_ok()
    })
    .await;

    // A watch on the replica fires when the primary commits.
    let watch = tokio::spawn(replica.watch("flag").await.unwrap());

    // The primary counts to 150 while the replica is read; every replica snapshot must be one
    // the primary committed: the primary's own read at that version agrees.
    let writer = {
        let db = primary.clone();
        tokio::spawn(async move {
            for _ in 0..150 {
                db.run(|tx| async move {
                    let n = counter(tx.get("n").await?);
                    tx.set("n", (n + 1).to_string());
                    tx.set(format!("item/{:04}", n + 1), "x");
                    Ok(())
                })
                .await
                .unwrap();
            }
        })
    };
    let mut checked = 0;
    let mut last = (Version(0), 0);
    while !writer.is_finished() {
        let (at, value) = read_at(&replica, "n", None).await;
        let n = counter(value);
        let (_, on_primary) = read_at(&primary, "n", Some(at)).await;
        assert_eq!(
            counter(on_primary),
            n,
            "replica at {at} shows what the primary had there"
        );
        assert!(
            at >= last.0 && n >= last.1,
            "the replica never goes back: {last:?} then ({at}, {n})"
        );
        // A range read at the same version agrees with the counter (one transaction wrote both).
        let tx = replica.create_transaction();
        tx.set_read_version(at).unwrap();
        assert_eq!(
            tx.get_range("item/", "item0", 0).await.unwrap().len() as u64,
            n
        );
        last = (at, n);
        checked += 1;
    }
    writer.await.unwrap();
    assert!(
        checked > 3,
        "the replica was read while the primary wrote ({checked} times)"
    );
    // Reads at the latest version on the replica are linearizable: each begins after a
    // commit on the primary was acknowledged and sees it (the replica reads at the primary's
    // read version, once applied; it answered its own newest version, a commit behind).
    for i in 0..20u32 {
        primary
            .run(|tx| async move {
                tx.set("lin", i.to_string());
                Ok(())
            })
            .await
            .unwrap();
        let (at, value) = read_at(&replica, "lin", None).await;
        assert_eq!(value, Some(Bytes::from(i.to_string())), "read at {at}");
    }
    assert_eq!(counter(read_at(&replica, "n", None).await.1), 150);
    // A replica with no primary to ask cannot prove a read current: reads at the latest
    // version are refused as unavailable, reads at a version it has are served.
    let (argv, lone_base) = second_compute(&cluster, "lone", |a| {
        a.replica = true;
        a.primary_endpoints = Vec::new();
    });
    cluster.spawn_argv("lone", &argv);
    let lone = Database::connect_with(
        ConnectOptions::new(&format!("http://127.0.0.1:{lone_base}")).retry(RetryOptions {
            timeout: Duration::ZERO,
            ..RetryOptions::default()
        }),
    )
    .await
    .unwrap();
    let (at, _) = read_at(&primary, "n", None).await;
    eventually(
        Duration::from_secs(30),
        "the lone replica applies",
        || async {
            let tx = lone.create_transaction();
            tx.set_read_version(at).unwrap();
            tx.get("n").await.is_ok_and(|v| counter(v) == 150)
        },
    )
    .await;
    let e = lone.create_transaction().get("n").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.message().contains("--primary-endpoint"), "{e}");

    primary
        .run(|tx| async move {
            tx.set("flag", "up");
            Ok(())
        })
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(20), watch)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.value.as_deref(), Some(&b"up"[..]));

    // Writes to the replica are refused, naming the primary.
    let tx = replica.create_transaction();
    tx.set("nope", "1");
    let e = tx.commit().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ReadOnly);
    assert!(e.message().contains(&cluster.endpoint()), "{e}");
    // An SDK given the replica first moves to the primary for the write.
    let both = Database::connect_with(
        ConnectOptions::new(&format!("{replica_ep},{}", cluster.endpoint())).retry(RetryOptions {
            timeout: Duration::from_secs(20),
            ..RetryOptions::default()
        }),
    )
    .await
    .unwrap();
    both.run(|tx| async move {
        tx.set("routed", "yes");
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(both.current_endpoint(), cluster.endpoint());
    let s = status(&format!("http://127.0.0.1:{}", base + 80))
        .await
        .unwrap();
    assert_eq!(s["primary"]["role"], "replica", "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_primary_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    // One list for every compute, as an operator would write it: the standby leaves itself
    // out; the replica asks whichever of the two answers.
    let (argv, base) = second_compute(&cluster, "standby", |a| {
        a.standby = true;
        a.primary_endpoints = vec![cluster.endpoint(), format!("http://{}", a.listen_grpc)];
    });
    let computes = vec![cluster.endpoint(), format!("http://127.0.0.1:{base}")];
    cluster.spawn_argv("standby", &argv);
    let standby_http = format!("http://127.0.0.1:{}", base + 80);
    eventually(Duration::from_secs(30), "the standby follows", || async {
        status(&standby_http)
            .await
            .is_some_and(|s| s["primary"]["role"] == "replica")
    })
    .await;
    let (argv, replica_base) = second_compute(&cluster, "replica", |a| {
        a.replica = true;
        a.primary_endpoints = computes.clone();
    });
    cluster.spawn_argv("replica", &argv);
    let replica = Database::connect(&format!("http://127.0.0.1:{replica_base}"))
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "the replica serves", || async {
        replica.create_transaction().get("n").await.is_ok()
    })
    .await;
    // Only the primary is ready for commits, so a load balancer probing /readyz sends
    // clients there; the standby and the replica are ready for reads.
    let replica_http = format!("http://127.0.0.1:{}", replica_base + 80);
    let primary_http = cluster.component("compute").http.clone();
    assert_eq!(readyz(&primary_http, false).await.0, 200);
    for http in [&standby_http, &replica_http] {
        let (code, body) = readyz(http, false).await;
        assert_eq!(
            (code, &body["role"]),
            (503, &serde_json::json!("replica")),
            "{body}"
        );
        let (code, body) = readyz(http, true).await;
        assert_eq!(code, 200, "{http}: {body}");
    }
    // A pageserver that stops answering: not ready for reads (they would hang until they
    // time out), still ready for commits (the WAL does not need it).
    let pageserver = cluster.component("pageserver").pid;
    let signal = |s| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pageserver), s).unwrap();
    signal(nix::sys::signal::Signal::SIGSTOP);
    let (code, body) = readyz(&primary_http, true).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["code"], "unavailable", "{body}");
    assert_eq!(readyz(&primary_http, false).await.0, 200);
    // A read that needs it is refused, clearly, within the compute's bound on its calls.
    let (ok, out, err) = support::cli(&[
        "history",
        "n",
        "--endpoint",
        &cluster.endpoint(),
        "--timeout",
        "0",
    ]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("unavailable") && err.contains("pageserver did not answer"),
        "{err}"
    );
    signal(nix::sys::signal::Signal::SIGCONT);
    eventually(Duration::from_secs(30), "ready for reads again", || async {
        readyz(&primary_http, true).await.0 == 200
    })
    .await;

    let db = Database::connect_with(
        ConnectOptions::new(&format!("{},http://127.0.0.1:{base}", cluster.endpoint())).retry(
            RetryOptions {
                timeout: Duration::from_secs(30),
                ..RetryOptions::default()
            },
        ),
    )
    .await
    .unwrap();
    let ok = Arc::new(AtomicU64::new(0));
    let unknown = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let start_workers = || {
        stop.store(false, Ordering::SeqCst);
        (0..4)
            .map(|_| {
                let (db, ok, unknown, stop) =
                    (db.clone(), ok.clone(), unknown.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let r = db
                            .run(|tx| async move {
                                let n = counter(tx.get("n").await?);
                                tx.set("n", (n + 1).to_string());
                                Ok(())
                            })
                            .await;
                        match r {
                            Ok(()) => ok.fetch_add(1, Ordering::SeqCst),
                            Err(e) if e.kind() == ErrorKind::CommitUnknownResult => {
                                unknown.fetch_add(1, Ordering::SeqCst)
                            }
                            Err(e) => panic!("increment failed: {e}"),
                        };
                    }
                })
            })
            .collect::<Vec<_>>()
    };
    let workers = start_workers();
    let wait_for = |n: u64| {
        let ok = ok.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while ok.load(Ordering::SeqCst) < n {
                assert!(Instant::now() < deadline, "stuck below {n} increments");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(40).await;
    // A branch made after the standby started: the standby finds it by itself and takes it
    // over with the root, before any client names it.
    let (made, out, err) = support::cli(&[
        "admin",
        "branch",
        "late",
        "--from",
        "default",
        "--endpoint",
        &primary_http,
    ]);
    assert!(made, "{out} {err}");
    // Watches set through both endpoints, one by the database and one by a transaction (as
    // `ferrisdb watch` sets them), follow the failover: they fire for a change made on the
    // standby, with the version that made it.
    let watch_db = db.watch("watched").await.unwrap();
    let watch_db = tokio::spawn(watch_db);
    let tx = db.create_transaction();
    assert_eq!(tx.get("watched-tx").await.unwrap(), None);
    tx.commit().await.unwrap();
    let watch_tx = tokio::spawn(tx.watch("watched-tx"));
    let old = cluster.component("compute");
    DevCluster::kill_pid(old.pid);
    let before = ok.load(Ordering::SeqCst);
    wait_for(before + 40).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let s = status(&standby_http).await.unwrap();
    assert_eq!(
        s["primary"]["role"], "primary",
        "the standby took over: {s}"
    );
    let (code, body) = readyz(&standby_http, false).await;
    assert_eq!(
        (code, &body["role"]),
        (200, &serde_json::json!("primary")),
        "{body}"
    );
    eventually(
        Duration::from_secs(20),
        "the standby leads the branch no client named",
        || async {
            status(&standby_http)
                .await
                .is_some_and(|s| s["databases"]["late"]["role"] == "primary")
        },
    )
    .await;
    let standby = Database::connect(&format!("http://127.0.0.1:{base}"))
        .await
        .unwrap();
    let n = counter(read_at(&standby, "n", None).await.1);
    let (acked, unsure) = (ok.load(Ordering::SeqCst), unknown.load(Ordering::SeqCst));
    assert!(
        n >= acked && n <= acked + unsure,
        "every acknowledged increment survived the failover, none was invented: n={n} ok={acked} unknown={unsure}"
    );

    let tx = db.create_transaction();
    tx.set("watched", "after");
    tx.set("watched-tx", "after");
    let changed = tx.commit().await.unwrap();
    for (name, watch) in [("database", watch_db), ("transaction", watch_tx)] {
        let event = tokio::time::timeout(Duration::from_secs(30), watch)
            .await
            .unwrap_or_else(|_| panic!("the {name}'s watch never fired after the failover"))
            .unwrap()
            .unwrap();
        assert_eq!(event.value.as_deref(), Some(&b"after"[..]), "{name}");
        assert_eq!(
            event.version, changed,
            "{name}: the version that changed it"
        );
    }

    // The replica's reads at the latest version follow the failover: it asks the standby
    // now, and still sees every commit acknowledged before the read began.
    for round in 0..10 {
        let tx = db.create_transaction();
        tx.set("after-failover", round.to_string());
        let version = tx.commit().await.unwrap();
        let (read_version, value) = read_at(&replica, "after-failover", None).await;
        assert_eq!(
            value.as_deref(),
            Some(round.to_string().as_bytes()),
            "round {round}: the replica missed a commit the new primary acknowledged"
        );
        assert!(
            read_version >= version,
            "round {round}: {read_version:?} < {version:?}"
        );
    }
    let r = status(&format!("http://127.0.0.1:{}", replica_base + 80))
        .await
        .unwrap();
    assert_eq!(
        r["primary"]["primary_endpoint"], computes[1],
        "the replica names the compute that answered: {r}"
    );

    // The old primary comes back, under load: it wins a newer term and fences the standby,
    // which goes back to watching it. While the old primary is still starting (recovering,
    // then waiting out the standby's read lease) it answers the standby's probes "starting",
    // and the standby lets it finish instead of counting that as silence and taking over
    // again; the two must not fence each other in turn.
    let workers = start_workers();
    let restarted = cluster.restart(&old);
    let primary_http = old.http.clone();
    let settled = Instant::now() + Duration::from_secs(30);
    let term = loop {
        let s = status(&primary_http).await;
        if let Some(s) = &s
            && s["primary"]["role"] == "primary"
        {
            break s["primary"]["term"].as_u64().unwrap();
        }
        assert!(
            Instant::now() < settled,
            "the restarted primary never served: {s:?}; the standby: {:?}",
            status(&standby_http).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Longer than a standby's takeover (three failed probes, ~1 s) and an older primary's
    // lease (2 s) together: a standby that took over again would show here.
    let watch_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < watch_until {
        let s = status(&primary_http).await.unwrap();
        assert_eq!(
            (&s["primary"]["role"], s["primary"]["term"].as_u64()),
            (&serde_json::json!("primary"), Some(term)),
            "the restarted primary (pid {restarted}) kept its term: {s}"
        );
        let b = status(&standby_http).await.unwrap();
        assert_ne!(
            b["primary"]["role"], "primary",
            "the standby took over again: {b}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = ok.load(Ordering::SeqCst);
    wait_for(before + 20).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let n = counter(read_at(&db, "n", None).await.1);
    let (acked, unsure) = (ok.load(Ordering::SeqCst), unknown.load(Ordering::SeqCst));
    assert!(
        n >= acked && n <= acked + unsure,
        "every acknowledged increment survived the failback: n={n} ok={acked} unknown={unsure}"
    );
}

/// A replica maps timestamps by the primary's clock (the one commits are stamped with) and
/// only once it has applied every commit made up to then. Its own clock an hour ahead, it
/// used to answer a time half an hour in the future with its latest version (which a commit
/// before then would change); an hour behind, it refused the present as `future_version`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_maps_timestamps_by_the_primarys_clock() {
    let Some(lib) = support::libfaketime_or_skip() else {
        return;
    };
    let lib = lib.display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let ep = cluster.endpoint();
    let primary = cluster.db(Duration::from_secs(10)).await;
    let versionat = |endpoint: &str, micros: u64| {
        let (ok, out, err) = support::cli(&[
            "versionat",
            &micros.to_string(),
            "--endpoint",
            endpoint,
            "--json",
        ]);
        // With --json an error is a JSON object on stdout too.
        let json = |out: &str| serde_json::from_str::<serde_json::Value>(out.trim()).unwrap();
        ok.then(|| json(&out)["version"].as_u64().unwrap())
            .ok_or(format!("{out} {err}"))
    };
    let mut running = None;
    for skew in ["+1h", "-1h"] {
        if let Some(pid) = running {
            DevCluster::kill_pid(pid);
        }
        let (argv, base) = second_compute(&cluster, &format!("replica{skew}"), |a| {
            a.replica = true;
            a.primary_endpoints = vec![ep.clone()];
        });
        running = Some(cluster.spawn_argv_with_env(
            "replica",
            &argv,
            &[
                ("LD_PRELOAD", &lib),
                ("FAKETIME", skew),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ],
        ));
        let replica_ep = format!("http://127.0.0.1:{base}");
        let replica = Database::connect(&replica_ep).await.unwrap();
        eventually(Duration::from_secs(30), "the replica serves", || async {
            replica.create_transaction().get("k").await.is_ok()
        })
        .await;
        // A commit on the primary, then its commit time mapped on the replica at once: that
        // commit's version or later, however far behind the replica was.
        let tx = primary.create_transaction();
        tx.set("k", skew);
        let committed = tx.commit().await.unwrap();
        let history = primary.history("k", committed, committed).await.unwrap();
        let at = history[0].commit_time_micros;
        let mapped = versionat(&replica_ep, at).unwrap_or_else(|e| panic!("{skew}: {e}"));
        assert!(
            mapped >= committed.0,
            "{skew}: versionat({at}) on the replica gave {mapped}, before the commit at {committed}"
        );
        let now = support::now_micros();
        // Half an hour ahead of the primary's clock: not yet, whatever the replica's says.
        let e = versionat(&replica_ep, now + 1_800_000_000).unwrap_err();
        assert!(e.contains("future_version"), "{skew}: {e}");
    }
}

/// Found by an outside audit (audit 14 F1): a replica cut off from the safekeepers for longer
/// than a checkpoint and a trim found the WAL it needed next deleted, and kept its position for
/// good: reads at the latest version `unavailable` and newer explicit versions
/// `future_version`, until the process was restarted. It now starts again from what the
/// pageserver has ingested, as a restart does, and serves the newest commits. Here it is
/// stopped (SIGSTOP) while the safekeepers trim past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_fell_behind_the_trimmed_wal_starts_again_from_the_pageserver() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

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
    let primary = cluster.db(Duration::from_secs(20)).await;
    let put = |key: String| {
        let primary = primary.clone();
        async move {
            let tx = primary.create_transaction();
            tx.set(key, vec![7u8; 100_000]);
            tx.commit().await.unwrap()
        }
    };
    let first = put("first".into()).await;
    let (argv, base) = second_compute(&cluster, "replica", |a| a.replica = true);
    let pid = cluster.spawn_argv("replica", &argv);
    let replica = Database::connect(&format!("http://127.0.0.1:{base}"))
        .await
        .unwrap();
    // A read on the replica at an explicit version (it serves those without a primary).
    let on_replica = |key: &'static str, at: Version| {
        let replica = replica.clone();
        async move {
            let tx = replica.create_transaction();
            tx.set_read_version(at).ok()?;
            tx.get(key).await.ok().flatten()
        }
    };
    eventually(Duration::from_secs(30), "the replica serves", || async {
        on_replica("first", first).await.is_some()
    })
    .await;

    kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    // 40 MB of WAL, more than the stream's flow-control windows take in while the replica is
    // stopped, uploaded and trimmed meanwhile.
    for i in 0..400 {
        put(format!("k{i:04}")).await;
    }
    let last = put("last".into()).await;
    let sk = cluster.component("safekeeper-1").http;
    eventually(
        Duration::from_secs(60),
        "the safekeepers trim past the replica",
        || async {
            status(&sk).await.is_some_and(|s| {
                s["databases"]["default"]["log_start_lsn"]
                    .as_u64()
                    .is_some_and(|l| l > first.0)
            })
        },
    )
    .await;
    kill(Pid::from_raw(pid), Signal::SIGCONT).unwrap();

    eventually(
        Duration::from_secs(60),
        "the replica serves the newest commit",
        || async { on_replica("last", last).await.is_some() },
    )
    .await;
    assert_eq!(
        on_replica("k0300", last).await.as_deref(),
        Some(&[7u8; 100_000][..])
    );
    let log = std::fs::read_to_string(cluster.data_dir.join("logs/replica.restarted.log")).unwrap();
    assert!(
        log.contains("starting it again from the pageserver"),
        "not by a new start"
    );
}
