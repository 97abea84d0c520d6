//! Time travel through the real binary: reads at each version and at timestamps between
//! commits, and `history`, while live, after a checkpoint, and after a restore from the bucket
//! alone.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{DevCluster, cli, now_micros};

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn get_at(ep: &str, flag: &str, at: &str) -> serde_json::Value {
    let (ok, out, err) = cli(&["get", "tt", flag, at, "--endpoint", ep, "--json"]);
    assert!(ok, "get {flag} {at} failed: {out} {err}");
    json(&out)["value"].clone()
}

/// Checks every version, every gap between commit times, and the history.
fn check(phase: &str, ep: &str, versions: &[u64], between: &[u64]) {
    for (i, v) in versions.iter().enumerate() {
        let want = format!("value-{}", i + 1);
        assert_eq!(
            get_at(ep, "--at-version", &v.to_string()),
            want,
            "{phase}: at version {v}"
        );
    }
    // A timestamp between commit i and i+1 reads commit i's value; before the first, nothing.
    assert!(
        get_at(ep, "--at-timestamp", &between[0].to_string()).is_null(),
        "{phase}: before the first write"
    );
    for (i, ts) in between[1..].iter().enumerate() {
        let want = format!("value-{}", i + 1);
        assert_eq!(
            get_at(ep, "--at-timestamp", &ts.to_string()),
            want,
            "{phase}: at timestamp {ts}"
        );
    }
    let (ok, out, _) = cli(&["history", "tt", "--endpoint", ep, "--json"]);
    assert!(ok, "{phase}: history failed");
    let h = json(&out);
    let got: Vec<(u64, String)> = h["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["version"].as_u64().unwrap(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(u64, String)> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| (*v, format!("value-{}", i + 1)))
        .collect();
    assert_eq!(got, want, "{phase}: history");
    let times: Vec<u64> = h["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["commit_time_micros"].as_u64().unwrap())
        .collect();
    for (i, t) in times.iter().enumerate() {
        assert!(
            between[i] < *t && *t <= between[i + 1],
            "{phase}: commit time {t} outside its window"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_by_version_and_timestamp_live_checkpointed_and_restored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Every write is checkpointed into its own L0 layer; three of them compact into L1.
    let mut cluster = DevCluster::start(&data, &["--compact-after-deltas", "3"]).await;
    let ep = cluster.endpoint();
    let mut versions = Vec::new();
    let mut between = vec![now_micros()];
    tokio::time::sleep(Duration::from_millis(5)).await;
    for i in 1..=5 {
        let (ok, out, err) = cli(&[
            "set",
            "tt",
            &format!("value-{i}"),
            "--endpoint",
            &ep,
            "--json",
        ]);
        assert!(ok, "set failed: {err}");
        versions.push(json(&out)["version"].as_u64().unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
        between.push(now_micros());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Other keys change in between, so versions of "tt" are not consecutive commits.
    assert!(cli(&["set", "other", "x", "--endpoint", &ep]).0);

    check("live", &ep, &versions, &between);
    for i in 0..4 {
        assert!(cli(&["set", "pad", &i.to_string(), "--endpoint", &ep]).0);
        assert!(
            cli(&[
                "admin",
                "checkpoint",
                "--endpoint",
                &cluster.admin_endpoint()
            ])
            .0
        );
    }
    let layers = data.join("objects/databases/default/layers");
    let l1 = std::fs::read_dir(&layers)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "l1")
        })
        .count();
    assert!(l1 > 0, "no L1 layer in {}", layers.display());
    check("compacted", &ep, &versions, &between);
    let (ok, _, err) = cli(&[
        "admin",
        "checkpoint",
        "--endpoint",
        &cluster.admin_endpoint(),
    ]);
    assert!(ok, "checkpoint failed: {err}");
    check("checkpointed", &ep, &versions, &between);

    cluster.stop();
    cluster.wipe_all_but_bucket();
    cluster.launch().await;
    check("restored", &ep, &versions, &between);

    // The admin API answers the same questions.
    let admin = cluster.admin_endpoint();
    let h: serde_json::Value = support::admin_get(&format!("{admin}/v1/history?key=tt"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let got: Vec<u64> = h["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(got, versions);
    let v: serde_json::Value = support::admin_get(&format!(
        "{admin}/v1/version_at?timestamp_micros={}",
        between[3]
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(v["version"].as_u64(), Some(versions[2]));
    // Read amplification is measured on the pageserver.
    let ps = cluster.component("pageserver");
    let reads = support::metric(&ps.http, "ferrisdb_pageserver_read_layers_count")
        .await
        .unwrap_or(0.0);
    assert!(
        reads > 0.0,
        "no point read was measured for read amplification"
    );

    // RFC 3339 timestamps work too.
    let t = std::time::UNIX_EPOCH + Duration::from_micros(between[3]);
    let rfc = humantime::format_rfc3339_micros(t).to_string();
    assert_eq!(get_at(&ep, "--at-timestamp", &rfc), "value-3");
    let (ok, out, _) = cli(&[
        "get",
        "tt",
        "--at-timestamp",
        "yesterday-ish",
        "--endpoint",
        &ep,
        "--json",
    ]);
    assert!(!ok);
    assert_eq!(json(&out)["error"]["code"], "invalid_argument");

    // A time still ahead maps to no version yet (a commit before it comes would change the
    // answer): `future_version`, as for a version above the latest, on every surface.
    let ahead = "2099-01-01T00:00:00Z";
    let refused = |args: &[&str], code: &str| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--endpoint", &ep, "--json"]);
        let (ok, out, err) = cli(&all);
        assert!(!ok, "{args:?}: {out} {err}");
        assert_eq!(json(&out)["error"]["code"], code, "{args:?}");
    };
    refused(&["get", "tt", "--at-timestamp", ahead], "future_version");
    refused(&["versionat", ahead], "future_version");
    // History over an inverted range, or from a version still ahead, is refused rather than
    // answered with nothing.
    let (first, last) = (versions[0].to_string(), versions[3].to_string());
    refused(
        &["history", "tt", "--from", &last, "--to", &first],
        "invalid_argument",
    );
    refused(
        &["history", "tt", "--from", "99999999999"],
        "future_version",
    );
    let (ok, out, err) = cli(&[
        "admin",
        "branch",
        "from-the-future",
        "--at-timestamp",
        ahead,
        "--endpoint",
        &admin,
        "--json",
    ]);
    assert!(!ok, "{out} {err}");
    assert_eq!(json(&out)["error"]["code"], "future_version");
    let resp = support::admin_get(&format!(
        "{admin}/v1/version_at?timestamp_micros=4070908800000000"
    ))
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 409);
}

fn feed(ep: &str, from: u64) -> Vec<serde_json::Value> {
    let (ok, out, err) = cli(&[
        "changes",
        "--from",
        &from.to_string(),
        "--endpoint",
        ep,
        "--json",
    ]);
    assert!(ok, "changes failed: {err}");
    out.lines().map(json).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_feed_serves_checkpointed_commits_from_parquet_and_new_ones_live() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cluster = DevCluster::start(&data, &[]).await;
    let ep = cluster.endpoint();
    let mut versions = Vec::new();
    for i in 0..12 {
        let (ok, out, _) = if i % 5 == 4 {
            cli(&[
                "clear",
                &format!("f{:02}", i - 1),
                "--endpoint",
                &ep,
                "--json",
            ])
        } else {
            cli(&[
                "set",
                &format!("f{i:02}"),
                &format!("v{i}"),
                "--endpoint",
                &ep,
                "--json",
            ])
        };
        assert!(ok);
        versions.push(json(&out)["version"].as_u64().unwrap());
    }
    let check = |records: &[serde_json::Value], phase: &str| {
        let got: Vec<u64> = records
            .iter()
            .map(|r| r["version"].as_u64().unwrap())
            .collect();
        assert_eq!(got, versions, "{phase}: versions");
        assert_eq!(records[4]["mutations"][0]["op"], "clear", "{phase}");
        assert_eq!(records[4]["mutations"][0]["key"], "f03", "{phase}");
        assert_eq!(
            records[5]["mutations"][0],
            serde_json::json!({"op": "set", "key": "f05", "value": "v5"}),
            "{phase}"
        );
    };
    check(&feed(&ep, 0), "live");
    assert!(
        cli(&[
            "admin",
            "checkpoint",
            "--endpoint",
            &cluster.admin_endpoint()
        ])
        .0
    );
    check(&feed(&ep, 0), "checkpointed");
    // From the middle: exactly the later commits.
    assert_eq!(feed(&ep, versions[6]).len(), 6);

    // Following: a reader waiting for the next commit gets it.
    let follower = std::process::Command::new(support::BIN)
        .args([
            "changes",
            "--from",
            &(versions[11] + 1).to_string(),
            "--follow",
            "--limit",
            "1",
        ])
        .args(["--endpoint", &ep, "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(cli(&["set", "live", "yes", "--endpoint", &ep]).0);
    let out = tokio::task::spawn_blocking(move || follower.wait_with_output().unwrap())
        .await
        .unwrap();
    let line = json(String::from_utf8_lossy(&out.stdout).trim());
    assert_eq!(line["mutations"][0]["key"], "live");

    // From the bucket alone, the checkpointed feed is intact.
    cluster.stop();
    cluster.wipe_all_but_bucket();
    cluster.launch().await;
    check(&feed(&cluster.endpoint(), 0), "restored");

    // The segments in the bucket are plain Parquet: a non-Rust reader sees the same rows. The
    // committer's heartbeats (empty records, appended when idle) are marker rows with
    // `op = none`; how many fall between the CLI's commits depends on timing, so they are
    // filtered out as the format's documentation tells readers to.
    let segments = data.join("objects/databases/default/segments");
    let has_pyarrow = std::process::Command::new("python3")
        .args(["-c", "import pyarrow"])
        .status()
        .is_ok_and(|s| s.success());
    if has_pyarrow {
        let script = format!(
            "import glob, pyarrow.parquet as pq\nrows=[r for f in sorted(glob.glob('{}/*.parquet')) for r in pq.read_table(f).to_pylist() if r['op'] != 'none']\nprint(len(rows), rows[4]['op'], rows[4]['key'].decode(), rows[5]['value'].decode())",
            segments.display()
        );
        let out = std::process::Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "12 clear f03 v5"
        );
    } else {
        eprintln!(
            "pyarrow not installed: the Parquet interop test in pageserver/tests installs and checks it"
        );
    }

    // A commit is in a feed read the moment it is acknowledged: the safekeepers (and so the
    // pageserver) learn a lone commit's position a little later, and the feed waits for it.
    {
        use futures::StreamExt;
        let db = cluster.db(Duration::from_secs(10)).await;
        for i in 0..30 {
            let tx = db.create_transaction();
            tx.set(format!("now{i:02}"), "x");
            let v = tx.commit().await.unwrap();
            let records: Vec<_> = db.changes(v, false).await.unwrap().collect().await;
            let got: Vec<u64> = records.into_iter().map(|r| r.unwrap().version.0).collect();
            assert_eq!(got, vec![v.0], "commit {i}: the feed from its version");
        }
    }
}

/// Compaction and GC on an operator's word, through `ferrisdb admin compact | gc` (the
/// compute's admin API, which asks the pageserver): the L0 layers become L1 with every
/// version still readable, and GC raises the retention horizon to the window's edge, after
/// which older versions are `version_too_old` and history from the default starts there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_gc_on_demand_through_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Nothing compacts on its own; the retention window is two seconds.
    let cluster = DevCluster::start(
        &data,
        &[
            "--compact-after-deltas",
            "1000",
            "--pitr-interval-secs",
            "2",
        ],
    )
    .await;
    let ep = cluster.endpoint();
    let admin = cluster.admin_endpoint();
    let run = |args: &[&str]| {
        let (ok, out, err) = cli(args);
        assert!(ok, "{args:?} failed: {out} {err}");
        json(&out)
    };
    let mut versions = Vec::new();
    for i in 1..=3 {
        let v = run(&["set", "gc", &format!("v{i}"), "--endpoint", &ep, "--json"]);
        versions.push(v["version"].as_u64().unwrap());
        run(&["admin", "checkpoint", "--endpoint", &admin, "--json"]);
    }
    let layers = |bucket_kind: &str| {
        walk(&data.join("objects"))
            .into_iter()
            .filter(|p| p.ends_with(bucket_kind))
            .count()
    };
    assert!(layers(".delta") >= 3, "one L0 layer per checkpoint");
    assert_eq!(layers(".l1"), 0);

    let compacted = run(&["admin", "compact", "--endpoint", &admin, "--json"]);
    assert_eq!(compacted["database"], "default");
    assert_eq!(layers(".delta"), 0, "every L0 layer merged");
    assert!(layers(".l1") >= 1);
    assert_eq!(
        compacted["layers"].as_u64(),
        Some(layers(".l1") as u64),
        "{compacted}"
    );
    for (i, v) in versions.iter().enumerate() {
        let got = run(&[
            "get",
            "gc",
            "--at-version",
            &v.to_string(),
            "--endpoint",
            &ep,
            "--json",
        ]);
        assert_eq!(
            got["value"],
            format!("v{}", i + 1),
            "at {v} after compaction"
        );
    }

    // Past the window, GC on demand raises the horizon above the first versions.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let collected = run(&["admin", "gc", "--endpoint", &admin, "--json"]);
    let horizon = collected["gc_horizon"].as_u64().unwrap();
    assert!(horizon > versions[0], "{collected}");
    let (ok, out, _) = cli(&[
        "get",
        "gc",
        "--at-version",
        &versions[0].to_string(),
        "--endpoint",
        &ep,
        "--json",
    ]);
    assert!(!ok);
    assert_eq!(json(&out)["error"]["code"], "version_too_old");
    let latest = run(&["get", "gc", "--endpoint", &ep, "--json"]);
    assert_eq!(latest["value"], "v3");
    // History and the change feed from their default start at the horizon, not refused.
    let h = run(&["history", "gc", "--endpoint", &ep, "--json"]);
    let seen: Vec<u64> = h["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert!(seen.iter().all(|v| *v >= horizon), "{h}");
    assert_eq!(seen.last(), versions.last(), "{h}");
    // The value current at the window's start, which history does not list when it was
    // written before, is read at the horizon the pageserver's status names.
    let status = run(&[
        "admin",
        "status",
        "--endpoint",
        &cluster.component("pageserver").http,
        "--json",
    ]);
    let shown = status["databases"]["default"]["gc_horizon"].as_u64();
    assert_eq!(shown, Some(horizon), "{status}");
    let (ok, out, err) = cli(&["changes", "--endpoint", &ep]);
    assert!(ok, "changes from the default: {out} {err}");
    // An unknown database is refused with its code.
    let (ok, out, _) = cli(&[
        "admin",
        "gc",
        "--database",
        "nosuch",
        "--endpoint",
        &admin,
        "--json",
    ]);
    assert!(!ok);
    assert_eq!(json(&out)["error"]["code"], "database_not_found");
}

/// Every file under `dir`, recursively.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

/// A followed change feed outlives its compute: killed with SIGKILL and started again, the
/// compute's stream breaks, and the SDK opens the feed again after the last record it
/// delivered, so the commit made after the restart arrives, with nothing missed or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_change_feed_resumes_across_a_compute_restart() {
    use ferrisdb_client::Mutation;
    use futures::StreamExt;

    let dir = tempfile::tempdir().unwrap();
    let mut cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let db = cluster.db(Duration::from_secs(30)).await;
    let put = |key: &'static str| {
        let db = db.clone();
        async move {
            let tx = db.create_transaction();
            tx.set(key, "x");
            tx.commit().await.unwrap()
        }
    };
    let keys = |r: ferrisdb_client::ChangeRecord| -> Vec<Vec<u8>> {
        r.mutations
            .into_iter()
            .filter_map(|m| match m {
                Mutation::Set { key, .. } => Some(key.to_vec()),
                _ => None,
            })
            .collect()
    };
    let before = put("feed/before").await;
    let mut feed = db.changes(before, true).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), feed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.version, before);
    assert_eq!(keys(first), vec![b"feed/before".to_vec()]);

    let compute = cluster.component("compute");
    DevCluster::kill_pid(compute.pid);
    tokio::task::block_in_place(|| cluster.restart(&compute));
    let after = db
        .run(|tx| async move {
            tx.set("feed/after", "y");
            Ok(())
        })
        .await;
    assert!(after.is_ok(), "{after:?}");
    // The next record is the one made after the restart: nothing before it is repeated.
    let next = tokio::time::timeout(Duration::from_secs(30), feed.next())
        .await
        .expect("the feed resumed")
        .unwrap()
        .unwrap();
    assert!(next.version > before);
    assert_eq!(keys(next), vec![b"feed/after".to_vec()]);
}

/// The client's `--timeout` bounds a call that hangs (found by an outside audit: with the
/// pageserver stopped, `history --timeout 5` answered after 10 s, when the compute's own
/// wait for the pageserver ran out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_hangs_is_cut_at_the_clients_timeout() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let ep = cluster.endpoint();
    let (ok, out, err) = cli(&["set", "hang", "v", "--endpoint", &ep]);
    assert!(ok, "{out} {err}");
    // History below the hot tier's floor is the pageserver's: let it ingest the commit.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pageserver = Pid::from_raw(cluster.component("pageserver").pid);
    kill(pageserver, Signal::SIGSTOP).unwrap();
    let started = std::time::Instant::now();
    let (ok, out, _) = cli(&[
        "history",
        "hang",
        "--endpoint",
        &ep,
        "--timeout",
        "2",
        "--json",
    ]);
    let took = started.elapsed();
    kill(pageserver, Signal::SIGCONT).unwrap();
    assert!(!ok, "history answered with its pageserver stopped: {out}");
    assert_eq!(json(&out)["error"]["code"], "unavailable", "{out}");
    // The bound under test is the 2 s asked for; without it the call took 7.7 s here (the
    // compute's own wait for the pageserver), 10 s in the audit.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        json(&out)["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("timeout")),
        "{out}"
    );
    // And with the pageserver back, the same call answers.
    let (ok, out, err) = cli(&["history", "hang", "--endpoint", &ep, "--json"]);
    assert!(ok, "{out} {err}");

    // A transaction's own calls are cut there too: with the compute stopped (its socket
    // accepts, nothing answers), a read, a scan and a read version end at the timeout with
    // `unavailable`, and a write with `commit_unknown_result` (the commit may have been
    // sent). Before, each waited for the connection's keep-alive to give up (10 s).
    let compute = Pid::from_raw(cluster.component("compute").pid);
    kill(compute, Signal::SIGSTOP).unwrap();
    let mut outcomes = Vec::new();
    for (args, code) in [
        (&["get", "hang"][..], "unavailable"),
        (&["scan", "a", "z"][..], "unavailable"),
        (&["getversion"][..], "unavailable"),
        (&["set", "hang", "w"][..], "commit_unknown_result"),
    ] {
        let mut argv = args.to_vec();
        argv.extend(["--endpoint", &ep, "--timeout", "2", "--json"]);
        let started = std::time::Instant::now();
        let (ok, out, _) = cli(&argv);
        outcomes.push((args, code, ok, out, started.elapsed()));
    }
    kill(compute, Signal::SIGCONT).unwrap();
    for (args, code, ok, out, took) in outcomes {
        assert!(!ok, "{args:?} answered with the compute stopped: {out}");
        assert_eq!(json(&out)["error"]["code"], code, "{args:?}: {out}");
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
    }
    // The compute, resumed, has the value from before (or the one whose commit was cut, if
    // it was sent): nothing else.
    let (ok, out, err) = cli(&["get", "hang", "--endpoint", &ep]);
    assert!(ok, "{out} {err}");
    assert!(out.trim() == "v" || out.trim() == "w", "{out}");
}

/// A pageserver whose clock runs two hours ahead of the compute's keeps the retention window
/// as the compute counts it: GC there collects nothing a read inside the window needs. (An
/// outside audit's pageserver under libfaketime +2 h discarded a whole 300 s window in one GC:
/// a version committed 86 s earlier answered `version_too_old`, its history empty.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pageserver_clock_ahead_of_the_computes_collects_nothing_inside_the_window() {
    let Some(lib) = support::libfaketime_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cluster =
        DevCluster::start(&dir.path().join("data"), &["--pitr-interval-secs", "300"]).await;
    let ep = cluster.endpoint();
    let admin = cluster.admin_endpoint();
    let run = |args: &[&str]| {
        let (ok, out, err) = cli(args);
        assert!(ok, "{args:?} failed: {out} {err}");
        json(&out)
    };
    let first = run(&["set", "skew", "A", "--endpoint", &ep, "--json"])["version"]
        .as_u64()
        .unwrap();
    run(&["admin", "checkpoint", "--endpoint", &admin, "--json"]);

    let pageserver = cluster.component("pageserver");
    DevCluster::kill_pid(pageserver.pid);
    let lib = lib.display().to_string();
    cluster.spawn_argv_with_env(
        "pageserver",
        &pageserver.argv,
        &[
            ("LD_PRELOAD", &lib),
            ("FAKETIME", "+2h"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    // Fresh commits reach the skewed pageserver; each checkpoint is followed by GC there.
    for i in 0..5 {
        run(&["set", "skew", &format!("B{i}"), "--endpoint", &ep, "--json"]);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (ok, _, err) = cli(&["admin", "checkpoint", "--endpoint", &admin, "--json"]);
            if ok {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "checkpoint: {err}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let collected = run(&["admin", "gc", "--endpoint", &admin, "--json"]);
    let horizon = collected["gc_horizon"].as_u64().unwrap();
    assert!(
        horizon <= first,
        "GC raised the horizon to {horizon}, past {first}, committed seconds ago: {collected}"
    );
    let got = run(&[
        "get",
        "skew",
        "--at-version",
        &first.to_string(),
        "--endpoint",
        &ep,
        "--json",
    ]);
    assert_eq!(got["value"], "A", "{got}");
    let (ok, out, err) = cli(&["history", "skew", "--endpoint", &ep]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 6, "every version of the key: {out}");
}

/// Sets `key` (a fresh key) through `run` (the primary may still be starting) and checks that
/// its commit time, read back through `ferrisdb history`, is the real moment, give or take a
/// second (the committer never lets times decrease, so a commit just after another primary's
/// may carry that one's last time). Returns the commit's version and the real time after it.
async fn set_at_the_real_moment(
    db: &ferrisdb_client::Database,
    endpoint: &str,
    key: &str,
) -> (u64, u64) {
    let before = now_micros();
    db.run(|tx| {
        let key = key.to_string();
        async move {
            tx.set(key, "x");
            Ok(())
        }
    })
    .await
    .unwrap();
    let after = now_micros();
    let (ok, out, err) = cli(&["history", key, "--endpoint", endpoint, "--json"]);
    assert!(ok, "{err}");
    let history = json(&out);
    let at = history["versions"][0]["commit_time_micros"]
        .as_u64()
        .unwrap();
    assert!(
        at + 1_000_000 >= before && at <= after + 1_000_000,
        "{key}: commit time {at} outside [{before}, {after}] (the real moment): {history}"
    );
    (history["versions"][0]["version"].as_u64().unwrap(), after)
}

/// A primary whose clock is an hour off (ahead, then behind) still stamps commits with the
/// safekeepers' time, so `versionat` and `--at-timestamp` keep meaning the real moment. (An
/// outside audit's primary under libfaketime +1 h pushed every commit time an hour ahead, and
/// `--at-timestamp now` answered "not found" for a key set seconds before; one at −1 h gave
/// every commit the same time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_times_follow_the_safekeepers_clocks_not_a_skewed_primarys() {
    let Some(lib) = support::libfaketime_or_skip() else {
        return;
    };
    let lib = lib.display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let ep = cluster.endpoint();
    let run = |args: &[&str]| {
        let (ok, out, err) = cli(args);
        assert!(ok, "{args:?} failed: {out} {err}");
        json(&out)
    };
    let compute = cluster.component("compute");
    let mut running = compute.pid;
    for skew in ["+1h", "-1h"] {
        DevCluster::kill_pid(running);
        running = cluster.spawn_argv_with_env(
            "compute",
            &compute.argv,
            &[
                ("LD_PRELOAD", &lib),
                ("FAKETIME", skew),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ],
        );
        let db = cluster.db(Duration::from_secs(30)).await;
        let (version, after) = set_at_the_real_moment(&db, &ep, &format!("skew{skew}")).await;
        let mapped = run(&["versionat", &after.to_string(), "--endpoint", &ep, "--json"]);
        assert!(
            mapped["version"].as_u64().unwrap() >= version,
            "{skew}: versionat(now) {mapped} is before the commit at {version}"
        );
    }
}

/// A primary whose own clock steps while it serves (an NTP jump, a VM resumed) keeps stamping
/// commits with the real time: it keeps time by the safekeepers' readings on its monotonic
/// clock. (Before, a step back let a 7 s old transaction commit past the 5-second rule, and a
/// step ahead would stamp commits in the future and, times never decreasing, freeze them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_whose_clock_steps_keeps_stamping_the_real_time() {
    let Some(lib) = support::libfaketime_or_skip() else {
        return;
    };
    let lib = lib.display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let step = dir.path().join("faketime");
    std::fs::write(&step, "+0\n").unwrap();
    let step_arg = step.display().to_string();
    let mut cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let compute = cluster.component("compute");
    DevCluster::kill_pid(compute.pid);
    cluster.spawn_argv_with_env(
        "compute",
        &compute.argv,
        &[
            ("LD_PRELOAD", &lib),
            ("FAKETIME_TIMESTAMP_FILE", &step_arg),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let db = cluster.db(Duration::from_secs(30)).await;
    for (i, offset) in ["+0", "+1h", "-1h", "+1h"].iter().enumerate() {
        eprintln!("the compute's clock at {offset}");
        std::fs::write(&step, format!("{offset}\n")).unwrap();
        set_at_the_real_moment(&db, &cluster.endpoint(), &format!("step{i}")).await;
    }
}

/// A timestamp maps to the same version every time, even one just past while commits are
/// in flight: a batch stamped at or before it (appended, or still being resolved) is waited
/// for before the answer, so no later lookup finds a commit the first one missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_just_past_maps_to_the_same_version_while_commits_are_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let db = cluster.db(Duration::from_secs(20)).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (db, stop) = (db.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let tx = db.create_transaction();
                    tx.set(format!("w{w}"), i.to_string());
                    let _ = tx.commit().await;
                    i += 1;
                }
            })
        })
        .collect();
    let mut seen = Vec::new();
    for _ in 0..200 {
        let t = now_micros() - 300;
        match db.version_at(t).await {
            Ok(v) => seen.push((t, v)),
            // Just ahead of the quorum's clock: nothing to compare.
            Err(e) if e.kind() == ferrisdb_client::ErrorKind::FutureVersion => {}
            Err(e) => panic!("version_at({t}): {e}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert!(seen.len() > 50, "only {} lookups answered", seen.len());
    let mut changed = Vec::new();
    for (t, v) in &seen {
        let again = db.version_at(*t).await.unwrap();
        if again != *v {
            changed.push(format!("{t}: {v} then {again}"));
        }
    }
    assert!(
        changed.is_empty(),
        "{} of {} lookups answered differently later: {changed:?}",
        changed.len(),
        seen.len()
    );
}
