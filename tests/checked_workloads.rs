//! The fault suite's checked workloads against a real `ferrisdb dev` cluster with no faults:
//! list-append transactions and registers run concurrently for a few seconds, every list and
//! register is read once more at the end, and the history checker (`ferrisdb_loadtest::check`)
//! must find no anomaly, no lost write and no refused write present — while hundreds of
//! operations were acknowledged, so it had something to check.
//!
//! Random choices come from a seed printed at the start (`FERRISDB_WORKLOAD_SEED` sets it).

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use ferrisdb_loadtest::append_workload::{self, AppendConfig};
use ferrisdb_loadtest::check::check;
use ferrisdb_loadtest::history::{Op, Outcome, Recorder};
use ferrisdb_loadtest::register_workload::{self, RegisterConfig};
use support::DevCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_append_and_registers_check_clean_without_faults() {
    let seed = std::env::var("FERRISDB_WORKLOAD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(support::now_micros);
    println!("seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let db = cluster.db(Duration::from_secs(10)).await;

    let append = AppendConfig {
        clients: 4,
        seed,
        // Few keys and few appends per key: conflicts are frequent and keys get retired.
        active_keys: 8,
        writes_per_key: 32,
        ..AppendConfig::default()
    };
    let registers = RegisterConfig {
        clients: 3,
        seed: seed.wrapping_add(1),
        active_keys: 4,
        writes_per_key: 40,
        ..RegisterConfig::default()
    };
    let recorder = Recorder::new();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let lists = tokio::spawn({
        let (db, append, recorder, stopped) = (
            db.clone(),
            append.clone(),
            recorder.clone(),
            stopped.clone(),
        );
        async move { append_workload::run(db, &append, recorder, stopped).await }
    });
    let regs = tokio::spawn({
        let (db, registers, recorder) = (db.clone(), registers.clone(), recorder.clone());
        async move { register_workload::run(db, &registers, recorder, stopped).await }
    });
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.send(true).unwrap();
    lists.await.unwrap();
    regs.await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let final_lists = append_workload::final_reads(&db, &append, &recorder, deadline).await;
    let final_regs = register_workload::final_reads(&db, &registers, &recorder, deadline).await;
    assert!(final_lists.unread.is_empty(), "{final_lists:?}");
    assert!(final_regs.unread.is_empty(), "{final_regs:?}");
    // Keys were retired and fresh ones used.
    assert!(final_lists.keys > append.active_keys, "{final_lists:?}");

    let history = recorder.history();
    let report = check(&history);
    println!("{report}");
    assert!(report.anomalies.is_empty(), "{report}");
    assert!(report.lost_writes.is_empty(), "{report}");
    assert!(report.refused_present.is_empty(), "{report}");
    assert!(report.is_valid());
    assert_eq!(report.unverified_appends, 0, "{report}");
    assert!(report.unchecked_registers.is_empty(), "{report}");
    // Enough was acknowledged of both kinds to make the verdict mean something: transactions
    // that appended, and registers read and written.
    let ok = |f: &dyn Fn(&Op) -> bool| {
        history
            .operations
            .iter()
            .filter(|o| o.outcome == Outcome::Ok && f(&o.op))
            .count()
    };
    let appends = ok(
        &|op| matches!(op, Op::Txn(m) if m.iter().any(|m| matches!(m, ferrisdb_loadtest::history::MicroOp::Append { .. }))),
    );
    let register_writes = ok(&|op| matches!(op, Op::RegisterWrite { .. } | Op::RegisterCas { .. }));
    assert!(report.counts.ok >= 300, "{report}");
    assert!(
        appends >= 100,
        "{appends} appending transactions acknowledged\n{report}"
    );
    assert!(
        register_writes >= 50,
        "{register_writes} register writes acknowledged\n{report}"
    );
    assert!(report.registers_linearizable >= 4, "{report}");
}
