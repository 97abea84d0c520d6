//! Single-key registers against FerrisDB, checked for linearizability: reads, blind writes of
//! values unique per key, and compare-and-set done as a transaction (read the register; if it
//! holds the expected value, write the new one and commit; otherwise write nothing and
//! complete `Fail` with `cas_mismatch`).
//!
//! A register is one key holding an 8-byte little-endian integer (absent: never written).
//! Registers are retired for fresh ones after a bounded number of writes ([`KeyPool`]), which
//! keeps each key's history small enough for the search.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ferrisdb_client::{Database, Transaction};
use rand::Rng;
use rand::rngs::SmallRng;
use serde::Serialize;
use tokio::sync::watch;

use crate::attempt::{AttemptError, CAS_MISMATCH, CommitSent, UNPARSEABLE, before_commit};
use crate::client_loop::{Client, FinalReads, read_each, run_clients};
use crate::history::{Key, Op, Recorder};
use crate::key_pool::{KeyPool, key_bytes};

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

/// The last value each client saw in each register: what its compare-and-sets expect.
type LastSeen = Arc<Mutex<HashMap<Key, Option<u64>>>>;

/// One register client: the database, the settings, the shared registers and what was last
/// seen in each.
#[derive(Debug, Clone)]
struct RegisterClient {
    db: Database,
    config: RegisterConfig,
    pool: KeyPool,
    last_seen: LastSeen,
}

impl Client for RegisterClient {
    fn generate(&self, rng: &mut SmallRng) -> Op {
        generate(rng, &self.pool, &self.config, &self.last_seen)
    }

    fn attempt(
        &self,
        op: Op,
        sent: CommitSent,
    ) -> impl Future<Output = Result<Op, AttemptError>> + Send {
        let this = self.clone();
        async move { attempt(&this.db, &this.config, &op, &sent).await }
    }

    fn acknowledged(&self, op: &Op) {
        remember(&self.last_seen, op);
    }
}

/// Runs `config.clients` clients until `stop` becomes true (or its sender is dropped),
/// recording every operation in `recorder`. Returns once every client has finished.
pub async fn run(
    db: Database,
    config: &RegisterConfig,
    recorder: Recorder,
    stop: watch::Receiver<bool>,
) {
    let client = RegisterClient {
        db,
        config: config.clone(),
        pool: KeyPool::new(config.active_keys, config.writes_per_key),
        last_seen: LastSeen::default(),
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
    let keys: Vec<Key> = recorder
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
    read_each(
        keys,
        recorder,
        config.op_timeout,
        deadline,
        |key| Op::RegisterRead { key, value: None },
        |key, sent| async move {
            let tx = db.create_transaction();
            let value = read_register(&tx, &config.prefix, key).await?;
            sent.commit(&tx, false).await?;
            Ok(Op::RegisterRead { key, value })
        },
    )
    .await
}
