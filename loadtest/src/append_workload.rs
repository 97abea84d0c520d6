//! Elle's list-append workload against FerrisDB: transactions of one to a few micro-operations
//! (append a unique value to a list, or read a whole list) over a small set of keys.
//!
//! A list is stored as one value: its elements as 8-byte little-endian integers, in order.
//! By default an append is a read-modify-write inside the transaction (read the list, write
//! it back one element longer), so every append also reads its key and the resolver must
//! order conflicting transactions — the honest test of serializability. The `Atomic` mode
//! appends with FerrisDB's `append_if_fits` instead, a blind write that adds no read conflict.
//!
//! Each transaction is one attempt (no SDK retry loop), so its recorded outcome is exactly
//! what the client learned (see [`crate::attempt`]).

use std::future::Future;
use std::time::{Duration, Instant};

use ferrisdb_client::{AtomicOp, Database};
use rand::Rng;
use rand::rngs::SmallRng;
use serde::Serialize;
use tokio::sync::watch;

use crate::attempt::{AttemptError, CommitSent, UNPARSEABLE, before_commit};
use crate::client_loop::{Client, FinalReads, read_each, run_clients};
use crate::history::{Key, MicroOp, Op, Recorder};
use crate::key_pool::{KeyPool, key_bytes};

/// How appends are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AppendMode {
    /// Read the list and write it back longer, in the transaction.
    ReadModifyWrite,
    /// `append_if_fits`: no read, no read conflict.
    Atomic,
}

/// The list-append workload's settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppendConfig {
    /// Concurrent clients.
    pub clients: usize,
    /// Seed of the clients' random choices (client `i` uses a generator derived from it).
    pub seed: u64,
    /// Prefix of every key, so runs on one cluster do not meet.
    pub prefix: String,
    /// Lists in use at a time.
    pub active_keys: usize,
    /// Appends a list takes before it is retired for a fresh one.
    pub writes_per_key: u64,
    /// Micro-operations per transaction: 1 to this many.
    pub max_micro_ops: usize,
    /// Probability that a micro-operation is a read.
    pub read_fraction: f64,
    /// Time limit of one transaction (faults freeze processes).
    pub op_timeout: Duration,
    /// How appends are written.
    pub mode: AppendMode,
}

impl Default for AppendConfig {
    fn default() -> AppendConfig {
        AppendConfig {
            clients: 6,
            seed: 0,
            prefix: "check/append/".to_string(),
            active_keys: 16,
            writes_per_key: 128,
            max_micro_ops: 4,
            read_fraction: 0.5,
            op_timeout: Duration::from_secs(5),
            mode: AppendMode::ReadModifyWrite,
        }
    }
}

/// Decodes a stored list (absent: empty).
pub fn decode(value: Option<&[u8]>) -> Option<Vec<u64>> {
    let bytes = value.unwrap_or_default();
    if !bytes.len().is_multiple_of(8) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(8)
            .map(|c| {
                let mut word = [0u8; 8];
                word.copy_from_slice(c);
                u64::from_le_bytes(word)
            })
            .collect(),
    )
}

/// One list-append client: the database, the settings and the shared lists.
#[derive(Debug, Clone)]
struct AppendClient {
    db: Database,
    config: AppendConfig,
    pool: KeyPool,
}

impl Client for AppendClient {
    fn generate(&self, rng: &mut SmallRng) -> Op {
        Op::Txn(generate(rng, &self.pool, &self.config))
    }

    fn attempt(
        &self,
        op: Op,
        sent: CommitSent,
    ) -> impl Future<Output = Result<Op, AttemptError>> + Send {
        let this = self.clone();
        async move {
            let Op::Txn(mops) = op else {
                return Err(AttemptError::Refused("not_a_transaction"));
            };
            attempt(&this.db, &this.config, &mops, &sent).await
        }
    }
}

/// Runs `config.clients` clients until `stop` becomes true (or its sender is dropped),
/// recording every transaction in `recorder`. Returns once every client has finished its
/// last transaction (each is bounded by `config.op_timeout`).
pub async fn run(
    db: Database,
    config: &AppendConfig,
    recorder: Recorder,
    stop: watch::Receiver<bool>,
) {
    let client = AppendClient {
        db,
        config: config.clone(),
        pool: KeyPool::new(config.active_keys, config.writes_per_key),
    };
    run_clients(
        client,
        config.clients,
        config.seed,
        config.op_timeout,
        recorder,
        stop,
    )
    .await;
}

/// A random transaction.
fn generate(rng: &mut SmallRng, pool: &KeyPool, config: &AppendConfig) -> Vec<MicroOp> {
    let n = rng.random_range(1..=config.max_micro_ops.max(1));
    (0..n)
        .map(|_| {
            if rng.random_bool(config.read_fraction.clamp(0.0, 1.0)) {
                MicroOp::Read {
                    key: pool.read_key(rng),
                    value: None,
                }
            } else {
                let (key, value) = pool.write(rng);
                MicroOp::Append { key, value }
            }
        })
        .collect()
}

/// Reads list `key` in `tx`.
async fn read_list(
    tx: &ferrisdb_client::Transaction,
    prefix: &str,
    key: Key,
) -> Result<Vec<u64>, AttemptError> {
    let value = tx
        .get(key_bytes(prefix, key))
        .await
        .map_err(before_commit)?;
    decode(value.as_deref()).ok_or(AttemptError::Refused(UNPARSEABLE))
}

/// One attempt at a transaction; the operation with its reads filled in when it committed.
async fn attempt(
    db: &Database,
    config: &AppendConfig,
    mops: &[MicroOp],
    sent: &CommitSent,
) -> Result<Op, AttemptError> {
    let tx = db.create_transaction();
    let mut done = Vec::with_capacity(mops.len());
    let mut wrote = false;
    for m in mops {
        match m {
            MicroOp::Append { key, value } => {
                let k = key_bytes(&config.prefix, *key);
                match config.mode {
                    AppendMode::ReadModifyWrite => {
                        let mut list = read_list(&tx, &config.prefix, *key).await?;
                        list.push(*value);
                        let bytes: Vec<u8> = list.iter().flat_map(|v| v.to_le_bytes()).collect();
                        tx.set(k, bytes);
                    }
                    AppendMode::Atomic => {
                        tx.atomic_op(AtomicOp::AppendIfFits, k, value.to_le_bytes().to_vec());
                    }
                }
                wrote = true;
                done.push(m.clone());
            }
            MicroOp::Read { key, .. } => {
                let list = read_list(&tx, &config.prefix, *key).await?;
                done.push(MicroOp::Read {
                    key: *key,
                    value: Some(list),
                });
            }
        }
    }
    sent.commit(&tx, wrote).await?;
    Ok(Op::Txn(done))
}

/// Reads every list the history in `recorder` touched, each in a transaction of its own,
/// retrying until it succeeds or `deadline` has passed, and records the reads: the final
/// reads that lost writes are judged against. Call it after the faults have ended and
/// [`run`] has returned.
pub async fn final_reads(
    db: &Database,
    config: &AppendConfig,
    recorder: &Recorder,
    deadline: Instant,
) -> FinalReads {
    let keys: Vec<Key> = recorder
        .history()
        .operations
        .iter()
        .filter_map(|op| match &op.op {
            Op::Txn(mops) => Some(mops.iter().map(|m| match m {
                MicroOp::Append { key, .. } | MicroOp::Read { key, .. } => *key,
            })),
            _ => None,
        })
        .flatten()
        .collect();
    read_each(
        keys,
        recorder,
        config.op_timeout,
        deadline,
        |key| Op::Txn(vec![MicroOp::Read { key, value: None }]),
        |key, sent| async move {
            let tx = db.create_transaction();
            let list = read_list(&tx, &config.prefix, key).await?;
            sent.commit(&tx, false).await?;
            Ok(Op::Txn(vec![MicroOp::Read {
                key,
                value: Some(list),
            }]))
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn lists_round_trip_and_bad_lengths_do_not_decode() {
        let bytes: Vec<u8> = [3u64, 1, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(decode(Some(&bytes)), Some(vec![3, 1, 2]));
        assert_eq!(decode(None), Some(vec![]));
        assert_eq!(decode(Some(&bytes[..7])), None);
        assert_eq!(&key_bytes("p/", 42)[..], b"p/0000000042");
    }

    #[test]
    fn generated_transactions_follow_the_config() {
        let config = AppendConfig {
            max_micro_ops: 3,
            ..AppendConfig::default()
        };
        let pool = KeyPool::new(config.active_keys, config.writes_per_key);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut appends = std::collections::HashSet::new();
        let mut reads = 0;
        for _ in 0..200 {
            let t = generate(&mut rng, &pool, &config);
            assert!((1..=3).contains(&t.len()));
            for m in t {
                match m {
                    MicroOp::Append { key, value } => assert!(appends.insert((key, value))),
                    MicroOp::Read { value, .. } => {
                        assert_eq!(value, None);
                        reads += 1;
                    }
                }
            }
        }
        assert!(
            reads > 50 && appends.len() > 50,
            "{reads} reads, {} appends",
            appends.len()
        );
    }
}
