//! The bounded chaos run (issue 16): a real multi-process cluster (three safekeepers, a
//! pageserver on S3 through a fault-injecting proxy in front of moto, a primary compute and a
//! read replica), a checked workload, and at least 100 faults of every kind the nemesis knows —
//! SIGKILL and SIGSTOP of each process kind, iptables partitions of four links, full disks,
//! flipped bytes in WAL and in the bucket, object-store errors, latency and timeouts — drawn
//! from a seed printed at the start (`FERRISDB_CHAOS_SEED` sets it). Nothing acknowledged may be
//! lost, nothing refused may appear, no read may be impossible or stale, and availability must
//! come back after every fault. See docs/testing.md ("Chaos runs").

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ferrisdb_loadtest::chaos::{ChaosConfig, run};
use ferrisdb_loadtest::schedule::{FaultKind, Timing};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bounded_chaos_run_loses_nothing_and_always_recovers() {
    let seed = std::env::var("FERRISDB_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64
        });
    eprintln!("chaos test: seed {seed} (FERRISDB_CHAOS_SEED={seed} to reuse it)");
    let dir = tempfile::tempdir().unwrap();
    let config = ChaosConfig {
        binary: env!("CARGO_BIN_EXE_ferrisdb").into(),
        data_dir: dir.path().join("data"),
        seed,
        faults: Some(125),
        // A bound on the test's time, not a measurement: the count above is the target.
        duration: Some(Duration::from_secs(150)),
        timing: Timing {
            min_hold: Duration::from_millis(150),
            max_hold: Duration::from_millis(500),
            max_gap: Duration::from_millis(100),
        },
        kinds: FaultKind::all(),
        recovery_timeout: Duration::from_secs(30),
        workloads: ferrisdb_loadtest::chaos_checked::default_workloads(),
        command: format!("tests/chaos.rs with FERRISDB_CHAOS_SEED={seed}"),
    };
    let report = run(config).await.unwrap();
    eprintln!("{}", report.markdown());
    if !report.valid {
        // Keep the cluster's files and logs (logs/*.chaos.log) for whoever reads the failure.
        let kept = dir.keep();
        eprintln!(
            "chaos test: the cluster's files and logs are kept in {}",
            kept.display()
        );
    }
    for d in &report.disabled {
        eprintln!("chaos test: not injected here: {d}");
    }
    assert_eq!(report.lost, 0, "acknowledged writes lost (seed {seed})");
    assert_eq!(
        report.refused_present, 0,
        "refused writes present (seed {seed})"
    );
    assert_eq!(report.anomalies, 0, "anomalies (seed {seed})");
    assert_eq!(
        report.unrecovered, 0,
        "faults after which the cluster never served again (seed {seed})"
    );
    assert!(report.valid);
    assert!(
        report.faults_injected >= 100,
        "only {} faults injected (seed {seed})",
        report.faults_injected
    );
    // Every kind that can be injected on this machine was, at least once.
    let possible: Vec<String> = FaultKind::all()
        .iter()
        .filter(|k| {
            let label = k.label();
            !report.disabled.iter().any(|d| {
                (label.starts_with("partition/") && d.starts_with("partitions:"))
                    || (label.starts_with("disk_full/") && d.starts_with("full disks:"))
            })
        })
        .map(FaultKind::label)
        .collect();
    for kind in possible {
        let injected = report.by_kind.get(&kind).map_or(0, |s| s.injected);
        assert!(
            injected > 0,
            "{kind} was never injected (seed {seed}); skips: {:?}",
            report
                .events
                .iter()
                .filter(|e| e.kind == kind)
                .map(|e| &e.note)
                .collect::<Vec<_>>()
        );
    }
    // The checker saw real traffic, so a pass means something.
    assert!(report.operations.ok > 100, "{:?}", report.operations);
    assert!(report.replica_reads > 10);
}
