//! The checked workloads as nemesis plugins: Elle's list-append transactions
//! ([`crate::append_workload`]) and single-key registers ([`crate::register_workload`]), run
//! under faults and judged by the history checker ([`crate::check`]) — strict serializability
//! of the transactions (dependency cycles with real-time edges) and linearizability of the
//! registers — beside the runner's own `survive` workload.
//!
//! A plugin is a table of plain functions, so each workload's settings here are fixed: a few
//! clients each (the machine also runs the whole cluster), their own key prefixes, and an
//! operation time limit shorter than the runner's recovery timeout.

use std::time::{Duration, Instant};

use ferrisdb_client::Database;
use tokio::sync::watch;

use crate::append_workload::{self, AppendConfig};
use crate::chaos_workload::{BoxFuture, Verdict, WorkloadPlugin};
use crate::check::{CheckReport, check};
use crate::client_loop::FinalReads;
use crate::history::{History, Recorder};
use crate::register_workload::{self, RegisterConfig};

/// How long the final reads may keep retrying after the faults healed.
const FINAL_READS: Duration = Duration::from_secs(120);

/// How many lines of the checker's report a verdict carries into the chaos report.
const DETAIL_LINES: usize = 40;

fn append_config() -> AppendConfig {
    AppendConfig {
        clients: 3,
        prefix: "chaos/append/".to_string(),
        ..AppendConfig::default()
    }
}

fn register_config() -> RegisterConfig {
    RegisterConfig {
        clients: 3,
        prefix: "chaos/register/".to_string(),
        ..RegisterConfig::default()
    }
}

/// List-append transactions (read-modify-write appends: the resolver must order them),
/// checked for lost and refused writes and for G0, G1, G2 and real-time cycles.
pub fn list_append() -> WorkloadPlugin {
    WorkloadPlugin {
        name: "list-append",
        run: |db, recorder, stop| Box::pin(run_append(db, recorder, stop)),
        final_reads: |db, recorder| Box::pin(final_append(db, recorder)),
        check: checked,
    }
}

/// Registers (reads, blind writes, compare-and-set), checked for linearizability per key.
pub fn registers() -> WorkloadPlugin {
    WorkloadPlugin {
        name: "registers",
        run: |db, recorder, stop| Box::pin(run_registers(db, recorder, stop)),
        final_reads: |db, recorder| Box::pin(final_registers(db, recorder)),
        check: checked,
    }
}

async fn run_append(db: Database, recorder: Recorder, stop: watch::Receiver<bool>) {
    append_workload::run(db, &append_config(), recorder, stop).await;
}

async fn run_registers(db: Database, recorder: Recorder, stop: watch::Receiver<bool>) {
    register_workload::run(db, &register_config(), recorder, stop).await;
}

fn final_append(db: Database, recorder: Recorder) -> BoxFuture<anyhow::Result<()>> {
    Box::pin(async move {
        let deadline = Instant::now() + FINAL_READS;
        let reads = append_workload::final_reads(&db, &append_config(), &recorder, deadline).await;
        all_read("list-append", reads)
    })
}

fn final_registers(db: Database, recorder: Recorder) -> BoxFuture<anyhow::Result<()>> {
    Box::pin(async move {
        let deadline = Instant::now() + FINAL_READS;
        let reads =
            register_workload::final_reads(&db, &register_config(), &recorder, deadline).await;
        all_read("registers", reads)
    })
}

/// A key the final reads could not read is a key whose lost writes nobody could see: the run
/// fails rather than pass it.
fn all_read(workload: &str, reads: FinalReads) -> anyhow::Result<()> {
    if reads.unread.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{workload}: {} of {} keys could not be read back: {:?}",
            reads.unread.len(),
            reads.keys,
            reads.unread
        )
    }
}

/// Runs the history checker and turns its report into the runner's verdict.
fn checked(history: &History) -> Verdict {
    verdict(&check(history))
}

/// The runner's terms for a checker report: lost and refused-present writes counted apart,
/// every anomaly (cycles, impossible reads, non-linearizable registers) in `anomalies`, and
/// the report's text (its first lines) as the details.
pub fn verdict(report: &CheckReport) -> Verdict {
    let text = report.to_string();
    Verdict {
        lost: report.lost_writes.len() as u64,
        refused_present: report.refused_present.len() as u64,
        anomalies: report.anomalies.len() as u64,
        details: text
            .lines()
            .take(DETAIL_LINES)
            .map(str::to_string)
            .collect(),
    }
}

/// The workloads a chaos run drives by default: [`survive`](crate::chaos_workload::survive), and the checked list-append and
/// register workloads of this module.
pub fn default_workloads() -> Vec<WorkloadPlugin> {
    vec![crate::chaos_workload::survive(), list_append(), registers()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{MicroOp, Op};

    #[test]
    fn a_lost_append_is_a_lost_write_in_the_verdict() {
        let r = Recorder::new();
        let append = Op::Txn(vec![MicroOp::Append { key: 1, value: 7 }]);
        r.invoke(1, append.clone()).ok(append);
        let read = |v: Vec<u64>| {
            Op::Txn(vec![MicroOp::Read {
                key: 1,
                value: Some(v),
            }])
        };
        r.invoke(2, read(vec![])).ok(read(vec![]));
        let v = checked(&r.history());
        assert_eq!(v.lost, 1, "{v:?}");
        assert!(!v.is_valid());
        assert!(v.details.iter().any(|l| l.contains("lost writes: 1")));

        let r = Recorder::new();
        let append = Op::Txn(vec![MicroOp::Append { key: 1, value: 7 }]);
        r.invoke(1, append.clone()).ok(append);
        r.invoke(2, read(vec![7])).ok(read(vec![7]));
        assert!(checked(&r.history()).is_valid());
    }

    #[test]
    fn an_unread_key_fails_the_final_reads() {
        let ok = FinalReads {
            keys: 2,
            read: 2,
            unread: vec![],
        };
        assert!(all_read("w", ok).is_ok());
        let bad = FinalReads {
            keys: 2,
            read: 1,
            unread: vec![5],
        };
        assert!(all_read("w", bad).is_err());
    }
}
