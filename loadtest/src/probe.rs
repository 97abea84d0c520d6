//! Availability probes: one client commits to the primary every few milliseconds, another
//! reads through the replica, and each remembers its latest success — what the runner needs
//! to measure how long the cluster took to serve again after a fault healed.
//!
//! The replica's reads are also checked: the probe key only ever holds values the primary
//! probe wrote, so a replica read returning a value whose write was refused, or one no write
//! produced, is an anomaly (a replica may lag, so older values are fine).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrisdb_client::{Database, ErrorKind};
use tokio::sync::watch;

use crate::history::Recorder;

const PROBE_KEY: &[u8] = b"chaos/probe";
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const PROBE_PERIOD: Duration = Duration::from_millis(25);

/// The latest success of one probe.
#[derive(Debug, Default)]
pub struct LastOk {
    /// When the latest successful operation was invoked (ns since the run started).
    invoked: AtomicU64,
    /// When it completed.
    completed: AtomicU64,
}

impl LastOk {
    fn record(&self, invoked: u64, completed: u64) {
        // Probes run one at a time, so the latest success is the last one stored.
        self.invoked.store(invoked, Ordering::SeqCst);
        self.completed.store(completed, Ordering::SeqCst);
    }

    /// The completion time of a success invoked at or after `since`, if there was one.
    pub fn success_since(&self, since: u64) -> Option<u64> {
        let completed = self.completed.load(Ordering::SeqCst);
        (self.invoked.load(Ordering::SeqCst) >= since).then_some(completed)
    }
}

/// What the probes share with the runner.
#[derive(Debug, Default)]
pub struct Probes {
    /// Commits through the primary.
    pub primary: LastOk,
    /// Reads through the replica.
    pub replica: LastOk,
    /// Outcome of every probe write: value → acknowledged (`Some(true)`), refused
    /// (`Some(false)`) or unknown (`None`).
    writes: Mutex<BTreeMap<u64, Option<bool>>>,
    /// Replica reads checked.
    pub replica_reads: AtomicU64,
    /// Replica reads that returned a refused or never-written value.
    pub replica_anomalies: Mutex<Vec<String>>,
}

impl Probes {
    /// Runs both probes until `stop`.
    pub fn spawn(
        self: &Arc<Self>,
        primary: Database,
        replica: Database,
        recorder: Recorder,
        stop: watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let (p, r, s) = (self.clone(), recorder.clone(), stop.clone());
        let writer = tokio::spawn(async move { p.write_loop(primary, r, s).await });
        let p = self.clone();
        let reader = tokio::spawn(async move { p.read_loop(replica, recorder, stop).await });
        vec![writer, reader]
    }

    async fn write_loop(&self, db: Database, recorder: Recorder, stop: watch::Receiver<bool>) {
        let mut value = 0u64;
        while !*stop.borrow() {
            value += 1;
            self.set(value, None);
            let invoked = recorder.now_ns();
            let tx = db.create_transaction();
            tx.set(PROBE_KEY.to_vec(), value.to_le_bytes().to_vec());
            match tokio::time::timeout(PROBE_TIMEOUT, tx.commit()).await {
                Ok(Ok(_)) => {
                    self.set(value, Some(true));
                    self.primary.record(invoked, recorder.now_ns());
                }
                Ok(Err(e)) if e.kind() != ErrorKind::CommitUnknownResult => {
                    self.set(value, Some(false));
                }
                _ => {}
            }
            tokio::time::sleep(PROBE_PERIOD).await;
        }
    }

    fn set(&self, value: u64, outcome: Option<bool>) {
        if let Ok(mut w) = self.writes.lock() {
            w.insert(value, outcome);
        }
    }

    async fn read_loop(&self, db: Database, recorder: Recorder, stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            let invoked = recorder.now_ns();
            let tx = db.create_transaction();
            if let Ok(Ok(v)) = tokio::time::timeout(PROBE_TIMEOUT, tx.get(PROBE_KEY.to_vec())).await
            {
                self.replica.record(invoked, recorder.now_ns());
                self.replica_reads.fetch_add(1, Ordering::Relaxed);
                if let Some(v) = v {
                    self.check_replica_value(&v);
                }
            }
            tokio::time::sleep(PROBE_PERIOD).await;
        }
    }

    fn check_replica_value(&self, v: &[u8]) {
        let value = <[u8; 8]>::try_from(v).ok().map(u64::from_le_bytes);
        let known = value.and_then(|x| self.writes.lock().ok().map(|w| w.get(&x).copied()));
        let problem = match (value, known) {
            (Some(_), Some(Some(Some(false)))) => Some("a refused probe write"),
            (Some(_), Some(Some(_))) => None,
            _ => Some("a value no probe write produced"),
        };
        if let Some(problem) = problem
            && let Ok(mut a) = self.replica_anomalies.lock()
        {
            a.push(format!("the replica read {v:?}: {problem}"));
        }
    }
}
