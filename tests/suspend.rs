//! Scale to zero through the real CLI: `ferrisdb dev --suspend-after` lets an idle compute
//! process exit, the next `ferrisdb get` wakes it through dev's proxy and reads the right
//! value without waiting out the suspended compute's read lease (given back as it stopped),
//! and the woken compute reports its cold start as a metric; a call outside a
//! transaction (`history`) wakes it as well, and a followed change feed keeps it awake.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::{BIN, DevCluster, cli, metric};

/// Whether `pid` is a live process (not gone, not a zombie waiting to be reaped).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_compute_exits_and_the_next_get_wakes_it() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("data"), &["--suspend-after", "2s"]).await;
    let ep = cluster.endpoint();
    let (ok, out, err) = cli(&["set", "greeting", "hello", "--endpoint", &ep]);
    assert!(ok, "set failed: {out} {err}");

    let first = cluster.component("compute").pid;
    assert!(first > 0 && alive(first));
    // Idle for 2 s: the compute process exits by itself.
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive(first) {
        assert!(
            Instant::now() < deadline,
            "the idle compute did not suspend"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", cluster.base_port + 20)).is_err(),
        "nothing serves behind the proxy while suspended"
    );

    // The next get goes through the proxy, which starts the compute again.
    let (ok, out, err) = cli(&["get", "greeting", "--endpoint", &ep, "--timeout", "30"]);
    assert!(ok, "get after suspend failed: {out} {err}");
    assert_eq!(out.trim(), "hello");
    let second = cluster.component("compute").pid;
    assert!(
        second != first && alive(second),
        "a new compute process serves"
    );

    let cold = metric(
        &cluster.admin_endpoint(),
        "ferrisdb_compute_cold_start_seconds",
    )
    .await
    .unwrap();
    assert!(cold > 0.0, "cold start recorded: {cold}");
    // The suspended compute gave its read lease back as it stopped, so the woken one, elected
    // well within the lease's 2 s, had no older lease to wait out (it waited ~1.5 s when the
    // lease was left to run out).
    let status = support::status(&cluster.admin_endpoint()).await.unwrap();
    assert_eq!(
        status["primary"]["older_lease_wait_ms"], 0,
        "the woken compute waited for the suspended one's lease: {status}"
    );
    println!(
        "cold start (process start to first answered read): {:.0} ms",
        cold * 1000.0
    );

    // And it keeps serving writes and reads, then suspends again.
    let (ok, _, err) = cli(&["set", "greeting", "again", "--endpoint", &ep]);
    assert!(ok, "{err}");
    let (_, out, _) = cli(&["get", "greeting", "--endpoint", &ep]);
    assert_eq!(out.trim(), "again");
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive(second) {
        assert!(
            Instant::now() < deadline,
            "the woken compute did not suspend again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, out, _) = cli(&["get", "greeting", "--endpoint", &ep, "--timeout", "30"]);
    assert_eq!(out.trim(), "again");

    // A call outside a transaction wakes it too: `history` asks again while the woken
    // compute is still starting (it once failed at once with `unavailable`).
    let third = cluster.component("compute").pid;
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive(third) {
        assert!(Instant::now() < deadline, "the compute did not suspend");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, out, err) = cli(&[
        "history",
        "greeting",
        "--endpoint",
        &ep,
        "--timeout",
        "30",
        "--json",
    ]);
    assert!(ok, "history after suspend failed: {out} {err}");
    let h: serde_json::Value = serde_json::from_str(&out).unwrap();
    let values: Vec<&str> = h["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["hello", "again"]);

    // A change feed being followed keeps it awake, as a waiting watch does; once the
    // follower goes, it suspends.
    let fourth = cluster.component("compute").pid;
    let mut follower = std::process::Command::new(BIN)
        .args(["changes", "--follow", "--endpoint", &ep, "--timeout", "30"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        alive(fourth),
        "the compute suspended under a change feed being followed"
    );
    assert!(follower.try_wait().unwrap().is_none(), "the follower ended");
    let _ = follower.kill();
    let _ = follower.wait();
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive(fourth) {
        assert!(
            Instant::now() < deadline,
            "the compute did not suspend once the follower left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
