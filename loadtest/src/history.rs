//! Histories of operations, as the fault suite records them and its checker reads them.
//!
//! The shape follows Jepsen's: every operation a client attempts is recorded when it is
//! invoked and again when it completes, with its outcome. The outcome is what the client
//! *knows*:
//!
//! - [`Outcome::Ok`]: the database acknowledged it; for a transaction this carries the values
//!   its reads returned.
//! - [`Outcome::Fail`]: the database answered that it did **not** happen (`not_committed`,
//!   `transaction_too_old`, a refusal before anything was sent). A failed write must never
//!   become visible.
//! - [`Outcome::Info`]: nobody knows (`commit_unknown_result`, a timeout, a connection cut
//!   during the commit, or the run ended before it completed). It may or may not have
//!   happened, and it is treated as concurrent with everything after its invocation.
//!
//! Two kinds of workload share the format: **list-append** transactions (Elle's), whose reads
//! return whole lists so the checker can infer the order of every write, and single-key
//! **registers**, checked for linearizability.
//!
//! Times are nanoseconds since the start of the run, from one monotonic clock in the process
//! that ran every client, so "completed before invoked" is a real-time order the database
//! must respect.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// A client process (a logical thread of the workload). A process runs one operation at a
/// time; after an `Info` outcome the workload moves on under a fresh process id, as Jepsen
/// does, because the old operation may still be in flight.
pub type ProcessId = u64;

/// A key of the workload (the workload maps it to bytes).
pub type Key = u64;

/// One step of a list-append transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MicroOp {
    /// Append `value` to the list at `key`. Values are unique per key across the whole run,
    /// which is what lets the checker recover the version order.
    Append {
        /// The list.
        key: Key,
        /// The element appended (unique for this key).
        value: u64,
    },
    /// Read the list at `key`. `value` is `None` when invoked and in operations that did not
    /// complete; `Some(list)` (possibly empty) once the read returned.
    Read {
        /// The list.
        key: Key,
        /// What the read returned, in list order.
        value: Option<Vec<u64>>,
    },
}

/// What an operation does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// A list-append transaction: its micro-operations in program order.
    Txn(Vec<MicroOp>),
    /// Read a register. `value` is filled in on completion (`None`: the key was absent).
    RegisterRead {
        /// The register.
        key: Key,
        /// What the read returned; meaningful only for an `Ok` outcome.
        value: Option<u64>,
    },
    /// Write a register (values unique per key across the run).
    RegisterWrite {
        /// The register.
        key: Key,
        /// The value written.
        value: u64,
    },
    /// Compare-and-set a register: succeeds (outcome `Ok`) only if it held `expected`.
    /// A CAS that found another value completes as `Fail`.
    RegisterCas {
        /// The register.
        key: Key,
        /// The value it must hold (`None`: absent).
        expected: Option<u64>,
        /// The value written when it did.
        new: u64,
    },
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Acknowledged: it took effect (reads carry their results in the recorded op).
    Ok,
    /// Refused: it definitely did not take effect.
    Fail,
    /// Unknown: it may or may not have taken effect.
    Info,
}

/// One operation, from invocation to completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Position in invocation order (unique within a history).
    pub index: u64,
    /// The client process that ran it.
    pub process: ProcessId,
    /// Nanoseconds since the run started, when the client invoked it.
    pub invoke_ns: u64,
    /// Nanoseconds since the run started, when the client learned the outcome. For `Info`
    /// this is when the client gave up, but the operation may take effect at any later time.
    pub complete_ns: u64,
    /// The operation; for `Ok` outcomes with the values its reads returned.
    pub op: Op,
    /// How it ended.
    pub outcome: Outcome,
    /// The error code (FerrisDB's stable code) for `Fail` and `Info`, for the report.
    pub error: Option<String>,
}

/// A whole run's operations, in invocation order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Every operation invoked during the run.
    pub operations: Vec<Operation>,
}

impl History {
    /// Operations by outcome: (ok, fail, info).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for op in &self.operations {
            match op.outcome {
                Outcome::Ok => counts.0 += 1,
                Outcome::Fail => counts.1 += 1,
                Outcome::Info => counts.2 += 1,
            }
        }
        counts
    }
}

/// Records a history from many concurrent clients. Cheap to clone; every clone appends to the
/// same history.
#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Arc<RecorderInner>,
}

#[derive(Debug)]
struct RecorderInner {
    start: Instant,
    state: Mutex<RecorderState>,
}

#[derive(Debug, Default)]
struct RecorderState {
    next_index: u64,
    /// Completed operations and, in `pending`, those still in flight.
    done: Vec<Operation>,
    pending: std::collections::BTreeMap<u64, Operation>,
}

/// An operation in flight, returned by [`Recorder::invoke`]. Completing it records the
/// outcome; dropping it without completing records `Info` (the client lost track of it).
#[derive(Debug)]
pub struct Pending {
    recorder: Recorder,
    index: Option<u64>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Recorder {
        Recorder {
            inner: Arc::new(RecorderInner {
                start: Instant::now(),
                state: Mutex::new(RecorderState::default()),
            }),
        }
    }

    /// Nanoseconds since the recorder was created.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.inner.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records that `process` invokes `op` now.
    pub fn invoke(&self, process: ProcessId, op: Op) -> Pending {
        let now = self.now_ns();
        let mut state = self.lock();
        let index = state.next_index;
        state.next_index += 1;
        state.pending.insert(
            index,
            Operation {
                index,
                process,
                invoke_ns: now,
                complete_ns: now,
                op,
                outcome: Outcome::Info,
                error: None,
            },
        );
        Pending {
            recorder: self.clone(),
            index: Some(index),
        }
    }

    /// The history so far. Operations still in flight appear as `Info`, completing now.
    pub fn history(&self) -> History {
        let now = self.now_ns();
        let state = self.lock();
        let mut operations = state.done.clone();
        operations.extend(state.pending.values().cloned().map(|mut op| {
            op.complete_ns = now;
            op
        }));
        operations.sort_by_key(|op| op.index);
        History { operations }
    }

    fn complete(&self, index: u64, op: Option<Op>, outcome: Outcome, error: Option<String>) {
        let now = self.now_ns();
        let mut state = self.lock();
        if let Some(mut record) = state.pending.remove(&index) {
            record.complete_ns = now;
            if let Some(op) = op {
                record.op = op;
            }
            record.outcome = outcome;
            record.error = error;
            state.done.push(record);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecorderState> {
        // A panicking client thread must not hide the rest of the history.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Pending {
    /// Acknowledged; `op` is the operation with the values its reads returned.
    pub fn ok(mut self, op: Op) {
        if let Some(index) = self.index.take() {
            self.recorder.complete(index, Some(op), Outcome::Ok, None);
        }
    }

    /// Definitely did not happen, with the error code that says so.
    pub fn fail(mut self, code: impl Into<String>) {
        if let Some(index) = self.index.take() {
            self.recorder
                .complete(index, None, Outcome::Fail, Some(code.into()));
        }
    }

    /// Unknown outcome, with the error code or reason.
    pub fn info(mut self, code: impl Into<String>) {
        if let Some(index) = self.index.take() {
            self.recorder
                .complete(index, None, Outcome::Info, Some(code.into()));
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(index) = self.index.take() {
            self.recorder
                .complete(index, None, Outcome::Info, Some("abandoned".to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_outcomes_in_invocation_order() {
        let recorder = Recorder::new();
        let a = recorder.invoke(1, Op::RegisterWrite { key: 7, value: 1 });
        let b = recorder.invoke(
            2,
            Op::RegisterRead {
                key: 7,
                value: None,
            },
        );
        let c = recorder.invoke(3, Op::RegisterWrite { key: 7, value: 2 });
        b.ok(Op::RegisterRead {
            key: 7,
            value: Some(1),
        });
        a.ok(Op::RegisterWrite { key: 7, value: 1 });
        drop(c);
        let _still_running = recorder.invoke(4, Op::RegisterWrite { key: 7, value: 3 });
        let history = recorder.history();
        let outcomes: Vec<_> = history
            .operations
            .iter()
            .map(|op| (op.index, op.outcome))
            .collect();
        assert_eq!(
            outcomes,
            vec![
                (0, Outcome::Ok),
                (1, Outcome::Ok),
                (2, Outcome::Info),
                (3, Outcome::Info)
            ]
        );
        assert_eq!(
            history.operations[1].op,
            Op::RegisterRead {
                key: 7,
                value: Some(1)
            }
        );
        assert_eq!(history.counts(), (2, 0, 2));
        let json = serde_json::to_string(&history).unwrap();
        let back: History = serde_json::from_str(&json).unwrap();
        assert_eq!(back, history);
    }
}
