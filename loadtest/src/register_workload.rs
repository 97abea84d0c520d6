//! Single-key registers against FerrisDB, checked for linearizability: reads, blind writes of
//! values unique per key, and compare-and-set done as a transaction (read the register; if it
//! holds the expected value, write the new one and commit; otherwise write nothing and
//! complete `Fail` with `cas_mismatch`).
//!
//! A register is one key holding an 8-byte little-endian integer (absent: never written).
//! Registers are retired for fresh ones after a bounded number of writes ([`KeyPool`]), which
//! keeps each key's history small enough for the search.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ferrisdb_client::{Bytes, Database, Transaction};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::attempt::{
    AttemptError, CAS_MISMATCH, CommitSent, FinalReads, UNPARSEABLE, before_commit, classify,
    new_process, read_until_ok, record, stopped,
};
use crate::history::{Key, Op, Recorder};
use crate::key_pool::KeyPool;

/// The register workload's settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegisterConfig {
    /// Concurrent clients.
    pub clients: usize,
    /// Seed of the clients' random choices.
    pub seed: u64,
    /// Prefix of every key, so runs on one cluster do not meet.
    pub prefix: String,
    /// Registers in use at a time.
    pub active_keys: usize,
    /// Writes (and compare-and-sets) a register takes before it is retired.
    pub writes_per_key: u64,
    /// Probability that an operation is a read; the rest are split evenly between writes and
    /// compare-and-sets.
    pub read_fraction: f64,
    /// Time limit of one operation.
    pub op_timeout: Duration,
}

impl Default for RegisterConfig {
    fn default() -> RegisterConfig {
        RegisterConfig {
            clients: 6,
            seed: 0,
            prefix: "check/register/".to_string(),
            active_keys: 8,
            writes_per_key: 100,
            read_fraction: 0.5,
            op_timeout: Duration::from_secs(5),
        }
    }
}

/// The stored key of register `key`.
pub fn key_bytes(prefix: &str, key: Key) -> Bytes {
    Bytes::from(format!("{prefix}{key:010}"))
}

/// The last value each client saw in each register: what its compare-and-sets expect.
type LastSeen = Arc<Mutex<HashMap<Key, Option<u64>>>>;

/// Runs `config.clients` clients until `stop` becomes true (or its sender is dropped),
/// recording every operation in `recorder`. Returns once every client has finished.
pub async fn run(
    db: Database,
    config: &RegisterConfig,
    recorder: Recorder,
    stop: watch::Receiver<bool>,
) {
    let pool = KeyPool::new(config.active_keys, config.writes_per_key);
    let last_seen: LastSeen = Arc::default();
    let mut clients = JoinSet::new();
    for i in 0..config.clients {
        let (db, config, recorder, stop, pool, last_seen) = (
            db.clone(),
            config.clone(),
            recorder.clone(),
            stop.clone(),
            pool.clone(),
            last_seen.clone(),
        );
        let seed = config.seed ^ (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
        clients.spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut process = new_process();
            while !stopped(&stop) {
                let op = generate(&mut rng, &pool, &config, &last_seen);
                let pending = recorder.invoke(process, op.clone());
                let sent = CommitSent::default();
                let completion =
                    classify(config.op_timeout, &sent, attempt(&db, &config, &op, &sent)).await;
                if let crate::attempt::Completion::Ok(done) = &completion {
                    remember(&last_seen, done);
                }
                if record(pending, completion) {
                    process = new_process();
                }
            }
        });
    }
    while clients.join_next().await.is_some() {}
}

fn remember(last_seen: &LastSeen, op: &Op) {
    let mut seen = last_seen.lock().unwrap_or_else(PoisonError::into_inner);
    match *op {
        Op::RegisterRead { key, value } => {
            seen.insert(key, value);
        }
        Op::RegisterWrite { key, value } => {
            seen.insert(key, Some(value));
        }
        Op::RegisterCas { key, new, .. } => {
            seen.insert(key, Some(new));
        }
        Op::Txn(_) => {}
    }
}

/// A random operation.
fn generate(
    rng: &mut SmallRng,
    pool: &KeyPool,
    config: &RegisterConfig,
    last_seen: &LastSeen,
) -> Op {
    if rng.random_bool(config.read_fraction.clamp(0.0, 1.0)) {
        return Op::RegisterRead {
            key: pool.read_key(rng),
            value: None,
        };
    }
    let (key, value) = pool.write(rng);
    if rng.random_bool(0.5) {
        Op::RegisterWrite { key, value }
    } else {
        let expected = last_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .copied()
            .flatten();
        Op::RegisterCas {
            key,
            expected,
            new: value,
        }
    }
}

/// Reads register `key` in `tx`.
async fn read_register(
    tx: &Transaction,
    prefix: &str,
    key: Key,
) -> Result<Option<u64>, AttemptError> {
    let Some(value) = tx
        .get(key_bytes(prefix, key))
        .await
        .map_err(before_commit)?
    else {
        return Ok(None);
    };
    let word: [u8; 8] = value[..]
        .try_into()
        .map_err(|_| AttemptError::Refused(UNPARSEABLE))?;
    Ok(Some(u64::from_le_bytes(word)))
}

/// One attempt at an operation; the operation with its read filled in when it succeeded.
async fn attempt(
    db: &Database,
    config: &RegisterConfig,
    op: &Op,
    sent: &CommitSent,
) -> Result<Op, AttemptError> {
    let tx = db.create_transaction();
    match *op {
        Op::RegisterRead { key, .. } => {
            let value = read_register(&tx, &config.prefix, key).await?;
            sent.commit(&tx, false).await?;
            Ok(Op::RegisterRead { key, value })
        }
        Op::RegisterWrite { key, value } => {
            tx.set(key_bytes(&config.prefix, key), value.to_le_bytes().to_vec());
            sent.commit(&tx, true).await?;
            Ok(op.clone())
        }
        Op::RegisterCas { key, expected, new } => {
            if read_register(&tx, &config.prefix, key).await? != expected {
                return Err(AttemptError::Refused(CAS_MISMATCH));
            }
            tx.set(key_bytes(&config.prefix, key), new.to_le_bytes().to_vec());
            sent.commit(&tx, true).await?;
            Ok(op.clone())
        }
        Op::Txn(_) => Err(AttemptError::Refused("not_a_register_operation")),
    }
}

/// Reads every register the history in `recorder` touched, retrying each until it succeeds
/// or `deadline` has passed, and records the reads. Call it after the faults have ended and
/// [`run`] has returned.
pub async fn final_reads(
    db: &Database,
    config: &RegisterConfig,
    recorder: &Recorder,
    deadline: Instant,
) -> FinalReads {
    let mut keys: Vec<Key> = recorder
        .history()
        .operations
        .iter()
        .filter_map(|op| match op.op {
            Op::RegisterRead { key, .. }
            | Op::RegisterWrite { key, .. }
            | Op::RegisterCas { key, .. } => Some(key),
            Op::Txn(_) => None,
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut result = FinalReads {
        keys: keys.len(),
        ..FinalReads::default()
    };
    for key in keys {
        let op = Op::RegisterRead { key, value: None };
        let read = read_until_ok(
            recorder,
            op,
            config.op_timeout,
            deadline,
            |sent| async move {
                let tx = db.create_transaction();
                let value = read_register(&tx, &config.prefix, key).await?;
                sent.commit(&tx, false).await?;
                Ok(Op::RegisterRead { key, value })
            },
        )
        .await;
        if read {
            result.read += 1;
        } else {
            result.unread.push(key);
        }
    }
    result
}
