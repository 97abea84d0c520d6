//! The loop every checked workload's clients run, and the final reads after it: generate an
//! operation, record its invocation, make one attempt with a time limit, record how it ended,
//! and continue as a new process after an `Info`.

use std::future::Future;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::attempt::{
    AttemptError, CAS_MISMATCH, CommitSent, Completion, classify, new_process, record, stopped,
};
use crate::history::{Key, Op, Recorder};

/// What a workload's client does; [`run_clients`] runs the loop around it.
pub trait Client: Clone + Send + Sync + 'static {
    /// A new random operation, as it is invoked.
    fn generate(&self, rng: &mut SmallRng) -> Op;

    /// One attempt at `op`, committing through `sent`; the operation as it completed (reads
    /// filled in) when it was acknowledged.
    fn attempt(
        &self,
        op: Op,
        sent: CommitSent,
    ) -> impl Future<Output = Result<Op, AttemptError>> + Send;

    /// Told of every acknowledged operation, as it completed.
    fn acknowledged(&self, _op: &Op) {}
}

/// Runs `clients` copies of `client` until `stop` becomes true (or its sender is dropped),
/// recording every operation in `recorder`; client `i` draws from a generator seeded from
/// `seed` and `i`. Returns once every client has finished its last operation (each bounded
/// by `timeout`).
pub async fn run_clients<C: Client>(
    client: C,
    clients: usize,
    seed: u64,
    timeout: Duration,
    recorder: Recorder,
    stop: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    for i in 0..clients {
        let (client, recorder, stop) = (client.clone(), recorder.clone(), stop.clone());
        let seed = seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        tasks.spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut process = new_process();
            while !stopped(&stop) {
                let op = client.generate(&mut rng);
                let pending = recorder.invoke(process, op.clone());
                let sent = CommitSent::default();
                let completion = classify(timeout, &sent, client.attempt(op, sent.clone())).await;
                if let Completion::Ok(done) = &completion {
                    client.acknowledged(done);
                }
                let back_off = backs_off(&completion);
                if record(pending, completion) {
                    process = new_process();
                }
                if back_off {
                    // A compute that is down refuses at once: without a pause the clients
                    // would spin, starving the very processes that are recovering.
                    tokio::time::sleep(BACKOFF).await;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// How long a client pauses after an operation that did not succeed.
const BACKOFF: Duration = Duration::from_millis(20);

/// Whether a client should pause after `completion`: after any error, but not after an
/// answer the workload expects (a compare-and-set that found another value).
fn backs_off(completion: &Completion) -> bool {
    match completion {
        Completion::Ok(_) => false,
        Completion::Fail(code) => code != CAS_MISMATCH,
        Completion::Info(_) => true,
    }
}

/// What a workload's final reads achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FinalReads {
    /// Keys the history touched.
    pub keys: usize,
    /// Keys read successfully.
    pub read: usize,
    /// Keys that could not be read before the deadline.
    pub unread: Vec<crate::history::Key>,
}

/// Runs the read `op` (as a fresh process) until an attempt succeeds or `deadline` has passed,
/// recording every attempt; at least one attempt is made. `attempt` gets the [`CommitSent`]
/// it must commit through. Returns whether a read succeeded.
pub async fn read_until_ok<F, Fut>(
    recorder: &Recorder,
    op: Op,
    timeout: Duration,
    deadline: Instant,
    mut attempt: F,
) -> bool
where
    F: FnMut(CommitSent) -> Fut,
    Fut: Future<Output = Result<Op, AttemptError>>,
{
    let mut process = new_process();
    loop {
        let pending = recorder.invoke(process, op.clone());
        let sent = CommitSent::default();
        let completion = classify(timeout, &sent, attempt(sent.clone())).await;
        let ok = matches!(completion, Completion::Ok(_));
        if record(pending, completion) {
            process = new_process();
        }
        if ok {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads each of `keys` (duplicates read once) with [`read_until_ok`]: `invoked` is the read as invoked, `attempt`
/// one attempt at it.
pub async fn read_each<I, F, Fut>(
    mut keys: Vec<Key>,
    recorder: &Recorder,
    timeout: Duration,
    deadline: Instant,
    invoked: I,
    attempt: F,
) -> FinalReads
where
    I: Fn(Key) -> Op,
    F: Fn(Key, CommitSent) -> Fut,
    Fut: Future<Output = Result<Op, AttemptError>>,
{
    keys.sort_unstable();
    keys.dedup();
    let mut result = FinalReads {
        keys: keys.len(),
        ..FinalReads::default()
    };
    for key in keys {
        if read_until_ok(recorder, invoked(key), timeout, deadline, |sent| {
            attempt(key, sent)
        })
        .await
        {
            result.read += 1;
        } else {
            result.unread.push(key);
        }
    }
    result
}
