//! The systems under test, behind one trait so the runner treats them alike.

use std::future::Future;

pub mod etcd;
pub mod ferrisdb;
pub mod postgres;
pub mod redis;

/// Why one operation failed; the code groups failures in reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    /// A short stable code (`not_committed`, `io`, `missing`, …).
    pub code: String,
    /// What happened.
    pub message: String,
}

impl OpError {
    /// An error with a code and a message.
    pub fn new(code: impl Into<String>, message: impl ToString) -> OpError {
        OpError {
            code: code.into(),
            message: message.to_string(),
        }
    }

    /// A key that was loaded was not found: a correctness failure, never a success.
    pub fn missing(key: &str) -> OpError {
        OpError::new("missing", format!("key {key} not found"))
    }
}

/// The outcome of one operation: how many times it was retried (after conflicts) on success.
pub type OpResult = Result<u32, OpError>;

/// How many times an atomic read-modify-write or transaction is attempted before it is
/// reported as a conflict failure.
pub const MAX_ATTEMPTS: u32 = 50;

/// A system under test.
pub trait Target: Send + Sync + 'static {
    /// One client's connection.
    type Conn: Connection;

    /// The name in reports (`ferrisdb`, `etcd`, …).
    fn name(&self) -> &'static str;

    /// Opens one client's own connection.
    fn connect(&self) -> impl Future<Output = anyhow::Result<Self::Conn>> + Send;

    /// Writes every key `0..keys` with a value of `value_size` bytes, replacing what was
    /// there.
    fn load(&self, keys: u64, value_size: usize)
    -> impl Future<Output = anyhow::Result<()>> + Send;

    /// A version to read at later (time travel), or `None` if the target cannot read the past.
    fn snapshot(&self) -> impl Future<Output = anyhow::Result<Option<u64>>> + Send;

    /// Housekeeping between measured phases so one phase's debris does not land on the next
    /// (etcd: compaction and defragmentation; PostgreSQL: a checkpoint). History at or after
    /// `keep` must stay readable. Returns what was done, for the report.
    fn between_phases(
        &self,
        keep: Option<u64>,
    ) -> impl Future<Output = anyhow::Result<String>> + Send;
}

/// One client's connection: every operation of every workload.
pub trait Connection: Send + 'static {
    /// Reads `key` (which must exist) with the target's strongest ordinary read.
    fn read(&mut self, key: String) -> impl Future<Output = OpResult> + Send;

    /// Writes `key` durably: acknowledged only once fsynced as configured.
    fn write(&mut self, key: String, value: Vec<u8>) -> impl Future<Output = OpResult> + Send;

    /// Reads up to `n` keys from `start` in key order.
    fn scan(&mut self, start: String, n: usize) -> impl Future<Output = OpResult> + Send;

    /// Reads `key` and writes `value` there atomically (no write in between by anyone else).
    fn read_modify_write(
        &mut self,
        key: String,
        value: Vec<u8>,
    ) -> impl Future<Output = OpResult> + Send;

    /// Reads every key of `keys` (sorted, distinct) and writes `value` to all of them in one
    /// atomic transaction.
    fn txn(&mut self, keys: Vec<String>, value: Vec<u8>) -> impl Future<Output = OpResult> + Send;

    /// Reads `key` as of `version` (from [`Target::snapshot`]).
    fn read_at(&mut self, key: String, version: u64) -> impl Future<Output = OpResult> + Send;
}
