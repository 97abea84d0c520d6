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
async fn a_bounded_chaos_run_loses_nothing_and_always_recovers() -> Result<(), String> {
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
    // A failure is returned, not panicked: the reason is then the last thing the test prints
    // (no backtrace after it), so even a log cut to its head and tail shows why it failed.
    let report = match run(config).await {
        Ok(report) => report,
        Err(e) => {
            let kept = dir.keep();
            return Err(format!(
                "chaos run could not complete (seed {seed}): {e:#}; files and logs kept in {}",
                kept.display()
            ));
        }
    };
    eprintln!("{}", report.markdown());
    for d in &report.disabled {
        eprintln!("chaos test: not injected here: {d}");
    }
    let mut failures = Vec::new();
    for (what, n) in [
        ("acknowledged writes lost", report.lost),
        ("refused writes present", report.refused_present),
        ("anomalies", report.anomalies),
        (
            "faults after which the cluster never served again",
            report.unrecovered,
        ),
    ] {
        if n > 0 {
            failures.push(format!("{what}: {n}"));
        }
    }
    if !report.valid && failures.is_empty() {
        failures.push("the report is not valid".to_string());
    }
    // A safekeeper left out is invisible while the other two make a quorum: every one must
    // hold the whole log again at the end.
    for s in report.stragglers.iter().take(5) {
        failures.push(format!("safekeeper never rejoined: {s}"));
    }
    // Which faults the cluster did not come back from.
    for e in report
        .events
        .iter()
        .filter(|e| !e.skipped && e.recovery_ms.is_none())
        .take(5)
    {
        failures.push(format!(
            "not recovered: #{} {} on {} held {} ms",
            e.index, e.kind, e.target, e.hold_ms
        ));
    }
    // What each failed checker found, the first few of it.
    for (workload, verdict) in report.verdicts.iter().filter(|(_, v)| !v.is_valid()) {
        for detail in verdict.details.iter().take(5) {
            failures.push(format!("{workload}: {detail}"));
        }
    }
    if report.faults_injected < 100 {
        failures.push(format!("only {} faults injected", report.faults_injected));
    }
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
        if injected == 0 {
            let skips: Vec<&String> = report
                .events
                .iter()
                .filter(|e| e.kind == kind)
                .map(|e| &e.note)
                .collect();
            failures.push(format!("{kind} was never injected; skips: {skips:?}"));
        }
    }
    // The checker saw real traffic, so a pass means something.
    if report.operations.ok <= 100 {
        failures.push(format!("too little traffic: {:?}", report.operations));
    }
    if report.replica_reads <= 10 {
        failures.push(format!("only {} replica reads", report.replica_reads));
    }
    if failures.is_empty() {
        return Ok(());
    }
    // Keep the cluster's files and logs (logs/*.chaos.log) for whoever reads the failure.
    let kept = dir.keep();
    Err(format!(
        "chaos run failed (seed {seed}; FERRISDB_CHAOS_SEED={seed} repeats its schedule; files and logs kept in {}): {}",
        kept.display(),
        failures.join("; ")
    ))
}
