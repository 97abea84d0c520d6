//! How workloads plug into the nemesis runner: a table of three functions (run under faults,
//! read everything back after healing, check the history), so a workload and its checker can
//! be swapped without touching the runner.
//!
//! [`survive`] is the built-in one: single-write registers — every write creates its own key
//! with a value unique to it, and reads look at keys written earlier — whose check is "every
//! acknowledged write survives, no refused write appears, no read returns what was never
//! written, and no read misses a write acknowledged before the read began".

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferrisdb_client::{Database, ErrorKind};
use serde::Serialize;
use tokio::sync::watch;

use crate::history::{History, Key, Op, Outcome, Recorder};

/// A boxed future, as the function table returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A workload's checker verdict, in the report's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Acknowledged writes that are gone.
    pub lost: u64,
    /// Refused writes that became visible.
    pub refused_present: u64,
    /// Every other anomaly (cycles, stale or impossible reads).
    pub anomalies: u64,
    /// What each finding was, for the report (the first few).
    pub details: Vec<String>,
}

impl Verdict {
    /// Whether the history passed.
    pub fn is_valid(&self) -> bool {
        self.lost == 0 && self.refused_present == 0 && self.anomalies == 0
    }
}

/// A workload the runner can drive.
#[derive(Clone, Copy)]
pub struct WorkloadPlugin {
    /// Its name in reports.
    pub name: &'static str,
    /// Runs clients until `stop` turns true, recording every operation.
    pub run: fn(Database, Recorder, watch::Receiver<bool>) -> BoxFuture<()>,
    /// After the faults healed: reads back everything the checker needs.
    pub final_reads: fn(Database, Recorder) -> BoxFuture<anyhow::Result<()>>,
    /// Checks the history.
    pub check: fn(&History) -> Verdict,
}

impl std::fmt::Debug for WorkloadPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadPlugin")
            .field("name", &self.name)
            .finish()
    }
}

/// How long one operation may take before the client gives up on it (`Info`).
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// What an error means for a write: only `commit_unknown_result` leaves it open (the SDK
/// turns a connection cut during a commit into that); every other answer is the compute's
/// word that the transaction did not commit.
pub fn write_outcome(kind: ErrorKind) -> Outcome {
    if kind == ErrorKind::CommitUnknownResult {
        Outcome::Info
    } else {
        Outcome::Fail
    }
}

/// The built-in register workload ([`survive`]'s table).
pub fn survive() -> WorkloadPlugin {
    WorkloadPlugin {
        name: "survive",
        run: |db, recorder, stop| Box::pin(survive_run(db, recorder, stop)),
        final_reads: |db, recorder| Box::pin(survive_final_reads(db, recorder)),
        check: survive_check,
    }
}

const CLIENTS: u64 = 4;

fn key_bytes(key: Key) -> Vec<u8> {
    format!("chaos/survive/{key:012}").into_bytes()
}

/// The value written to `key`: unique, and recognisably this key's.
fn value_of(key: Key) -> u64 {
    key.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

fn decode(v: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(v.try_into().ok()?))
}

async fn survive_run(db: Database, recorder: Recorder, stop: watch::Receiver<bool>) {
    let next_key = Arc::new(AtomicU64::new(0));
    let next_process = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let (db, recorder, stop) = (db.clone(), recorder.clone(), stop.clone());
        let (next_key, next_process) = (next_key.clone(), next_process.clone());
        tasks.push(tokio::spawn(async move {
            let mut process = next_process.fetch_add(1, Ordering::SeqCst);
            let mut n = client;
            while !*stop.borrow() {
                n = n.wrapping_add(1);
                // Two writes for each read.
                let outcome = if n % 3 != 0 {
                    let key = next_key.fetch_add(1, Ordering::SeqCst);
                    write(&db, &recorder, process, key).await
                } else {
                    let written = next_key.load(Ordering::SeqCst);
                    if written == 0 {
                        continue;
                    }
                    let key = (n.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 7) % written;
                    read(&db, &recorder, process, key).await
                };
                if outcome == Outcome::Info {
                    // The old operation may still be in flight: go on as a new process.
                    process = next_process.fetch_add(1, Ordering::SeqCst);
                }
                if outcome != Outcome::Ok {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn write(db: &Database, recorder: &Recorder, process: u64, key: Key) -> Outcome {
    let value = value_of(key);
    let op = Op::RegisterWrite { key, value };
    let pending = recorder.invoke(process, op.clone());
    let tx = db.create_transaction();
    tx.set(key_bytes(key), value.to_le_bytes().to_vec());
    match tokio::time::timeout(OP_TIMEOUT, tx.commit()).await {
        Ok(Ok(_)) => {
            pending.ok(op);
            Outcome::Ok
        }
        Ok(Err(e)) => match write_outcome(e.kind()) {
            Outcome::Info => {
                pending.info(e.kind().code());
                Outcome::Info
            }
            _ => {
                pending.fail(e.kind().code());
                Outcome::Fail
            }
        },
        Err(_) => {
            pending.info("client_timeout");
            Outcome::Info
        }
    }
}

async fn read(db: &Database, recorder: &Recorder, process: u64, key: Key) -> Outcome {
    let pending = recorder.invoke(process, Op::RegisterRead { key, value: None });
    let tx = db.create_transaction();
    match tokio::time::timeout(OP_TIMEOUT, tx.get(key_bytes(key))).await {
        Ok(Ok(v)) => {
            let value = match v.as_deref().map(decode) {
                Some(Some(v)) => Some(v),
                // A value of the wrong size is recorded as one no write produced.
                Some(None) => Some(u64::MAX),
                None => None,
            };
            pending.ok(Op::RegisterRead { key, value });
            Outcome::Ok
        }
        // A read changes nothing: whatever went wrong, it did not happen.
        Ok(Err(e)) => {
            pending.fail(e.kind().code());
            Outcome::Fail
        }
        Err(_) => {
            pending.fail("client_timeout");
            Outcome::Fail
        }
    }
}

/// Reads every key the run wrote (one range read, retried until it succeeds or 2 minutes
/// pass) and records one read per key.
async fn survive_final_reads(db: Database, recorder: Recorder) -> anyhow::Result<()> {
    let history = recorder.history();
    let keys: Vec<Key> = history
        .operations
        .iter()
        .filter_map(|o| match o.op {
            Op::RegisterWrite { key, .. } => Some(key),
            _ => None,
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let tx = db.create_transaction();
        let scan = tokio::time::timeout(
            OP_TIMEOUT,
            tx.get_range(b"chaos/survive/".to_vec(), b"chaos/survive0".to_vec(), 0),
        )
        .await;
        match scan {
            Ok(Ok(rows)) => {
                let found: BTreeMap<Vec<u8>, Option<u64>> = rows
                    .iter()
                    .map(|kv| (kv.0.to_vec(), decode(&kv.1)))
                    .collect();
                for key in keys {
                    let value = found.get(&key_bytes(key)).map(|v| v.unwrap_or(u64::MAX));
                    let pending = recorder.invoke(u64::MAX, Op::RegisterRead { key, value: None });
                    pending.ok(Op::RegisterRead { key, value });
                }
                return Ok(());
            }
            other => {
                if tokio::time::Instant::now() > deadline {
                    anyhow::bail!("the final read never succeeded: {other:?}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The check of [`survive`] (see the module's doc).
pub fn survive_check(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let note = |verdict: &mut Verdict, what: String| {
        if verdict.details.len() < 20 {
            verdict.details.push(what);
        }
    };
    let writes: BTreeMap<Key, &crate::history::Operation> = history
        .operations
        .iter()
        .filter_map(|o| match o.op {
            Op::RegisterWrite { key, .. } => Some((key, o)),
            _ => None,
        })
        .collect();
    for o in &history.operations {
        let Op::RegisterRead { key, value } = o.op else {
            continue;
        };
        if o.outcome != Outcome::Ok {
            continue;
        }
        let is_final = o.process == u64::MAX;
        let write = writes.get(&key);
        match (value, write) {
            (Some(v), Some(w)) if v == value_of(key) => {
                if w.outcome == Outcome::Fail {
                    verdict.refused_present += 1;
                    note(
                        &mut verdict,
                        format!(
                            "key {key}: the write was refused ({:?}) but read {o:?}",
                            w.error
                        ),
                    );
                }
            }
            (Some(v), _) => {
                verdict.anomalies += 1;
                note(
                    &mut verdict,
                    format!(
                        "key {key}: read {v}, which no write produced (op {})",
                        o.index
                    ),
                );
            }
            (None, Some(w)) if w.outcome == Outcome::Ok && w.complete_ns < o.invoke_ns => {
                if is_final {
                    verdict.lost += 1;
                    note(
                        &mut verdict,
                        format!("key {key}: acknowledged write {} lost", w.index),
                    );
                } else {
                    verdict.anomalies += 1;
                    note(
                        &mut verdict,
                        format!(
                            "key {key}: stale read {} missed write {} acknowledged before it began",
                            o.index, w.index
                        ),
                    );
                }
            }
            (None, _) => {}
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_finds_a_lost_write_a_refused_write_and_a_stale_read() {
        let r = Recorder::new();
        let w = |key| Op::RegisterWrite {
            key,
            value: value_of(key),
        };
        let read = |key, value| Op::RegisterRead { key, value };
        r.invoke(1, w(0)).ok(w(0));
        r.invoke(1, w(1)).fail("not_committed");
        r.invoke(1, w(2)).ok(w(2));
        r.invoke(2, read(2, None)).ok(read(2, None));
        r.invoke(u64::MAX, read(0, None)).ok(read(0, None));
        r.invoke(u64::MAX, read(1, Some(value_of(1))))
            .ok(read(1, Some(value_of(1))));
        r.invoke(u64::MAX, read(2, Some(value_of(2))))
            .ok(read(2, Some(value_of(2))));
        let v = survive_check(&r.history());
        assert_eq!((v.lost, v.refused_present, v.anomalies), (1, 1, 1), "{v:?}");
        assert!(!v.is_valid());

        let r = Recorder::new();
        r.invoke(1, w(0)).ok(w(0));
        r.invoke(1, w(1)).info("commit_unknown_result");
        r.invoke(u64::MAX, read(0, Some(value_of(0))))
            .ok(read(0, Some(value_of(0))));
        r.invoke(u64::MAX, read(1, None)).ok(read(1, None));
        assert!(survive_check(&r.history()).is_valid());
    }
}
