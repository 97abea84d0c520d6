//! The commit pipeline: one task that turns queued commit requests into durable batches.
//!
//! For each batch: refuse at once if a safekeeper quorum is not connected (nothing is appended,
//! so the answer `unavailable` is definite); resolve conflicts, including against earlier
//! transactions of the same batch; encode the survivors as one WAL frame at the end of the
//! log (its end LSN is the batch's version); append it through the proposer and wait for a
//! majority to fsync it; then apply it to the hot tier and the resolver, publish the version
//! and answer. Requests arriving meanwhile form the next batch (group commit).
//!
//! A batch that was appended but not confirmed in time is answered `commit_unknown_result`,
//! because it may still commit; the pipeline keeps waiting for it, and answers new requests
//! `unavailable` while the quorum is down, rather than leave its outcome behind.

use std::sync::Arc;
use std::time::Duration;

use ferrisdb_common::clock::Clock;
use ferrisdb_common::wal::{self, Mutation};
use ferrisdb_common::{Error, ErrorKind, Result, Version};
use tokio::sync::{mpsc, oneshot, watch};

use crate::hot_tier::HotTier;
use crate::metrics::Metrics;
use crate::proposer::Proposer;
use crate::resolver::{KeyRange, Resolver};

/// How long a client waits for its batch to reach a quorum before hearing
/// `commit_unknown_result`.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// A batch stops growing past this many mutation bytes.
const MAX_BATCH_BYTES: usize = 8 << 20;

/// A transaction asking to commit.
#[derive(Debug)]
pub struct CommitRequest {
    /// The version its reads saw.
    pub read_version: Version,
    /// Ranges it read (non-snapshot).
    pub reads: Vec<KeyRange>,
    /// Ranges it wrote, including every mutated key.
    pub writes: Vec<KeyRange>,
    /// Its mutations, in order.
    pub mutations: Vec<Mutation>,
    /// Where the outcome goes: the commit version and commit time.
    pub reply: oneshot::Sender<Result<(Version, u64)>>,
}

impl CommitRequest {
    fn bytes(&self) -> usize {
        self.mutations
            .iter()
            .map(|m| m.key().len() + m.value().map_or(0, |v| v.len()))
            .sum()
    }
}

/// The state the pipeline owns.
pub struct Committer {
    proposer: Arc<Proposer>,
    resolver: Resolver,
    hot: Arc<HotTier>,
    clock: Arc<dyn Clock>,
    committed: watch::Sender<Version>,
    last_commit_time: u64,
    metrics: Metrics,
}

impl Committer {
    /// A pipeline for a proposer whose log is committed up to `start`.
    pub fn new(
        proposer: Arc<Proposer>,
        start: Version,
        hot: Arc<HotTier>,
        clock: Arc<dyn Clock>,
        committed: watch::Sender<Version>,
        metrics: Metrics,
    ) -> Committer {
        Committer {
            proposer,
            resolver: Resolver::new(start),
            hot,
            clock,
            committed,
            last_commit_time: 0,
            metrics,
        }
    }

    /// Serves `requests` until every sender is gone.
    pub async fn run(mut self, mut requests: mpsc::Receiver<CommitRequest>) {
        let mut queue: Vec<CommitRequest> = Vec::new();
        loop {
            if queue.is_empty() {
                match requests.recv().await {
                    Some(r) => queue.push(r),
                    None => return,
                }
            }
            let mut bytes: usize = queue.iter().map(CommitRequest::bytes).sum();
            while bytes < MAX_BATCH_BYTES {
                match requests.try_recv() {
                    Ok(r) => {
                        bytes += r.bytes();
                        queue.push(r);
                    }
                    Err(_) => break,
                }
            }
            let batch = std::mem::take(&mut queue);
            self.commit_batch(batch, &mut requests, &mut queue).await;
        }
    }

    async fn commit_batch(
        &mut self,
        batch: Vec<CommitRequest>,
        requests: &mut mpsc::Receiver<CommitRequest>,
        next: &mut Vec<CommitRequest>,
    ) {
        if let Err(e) = self.refusal() {
            for r in batch {
                let _ = r.reply.send(Err(e.clone()));
            }
            return;
        }
        let mut accepted = Vec::with_capacity(batch.len());
        let mut batch_writes: Vec<KeyRange> = Vec::new();
        for r in batch {
            match self.resolver.check(r.read_version, &r.reads, &batch_writes) {
                Ok(()) => {
                    batch_writes.extend(r.writes.iter().cloned());
                    accepted.push(r);
                }
                Err(e) => {
                    self.metrics.conflicts.inc();
                    let _ = r.reply.send(Err(e));
                }
            }
        }
        if accepted.is_empty() {
            return;
        }
        let time = self.clock.now_micros().max(self.last_commit_time + 1);
        self.last_commit_time = time;
        let mutations: Vec<Mutation> = accepted
            .iter()
            .flat_map(|r| r.mutations.iter().cloned())
            .collect();
        let (frame, version) = wal::encode_frame(self.proposer.end_lsn(), time, &mutations);
        if let Err(e) = self.proposer.append(frame) {
            for r in accepted {
                let _ = r.reply.send(Err(e.clone()));
            }
            return;
        }

        // Wait for the quorum, answering `unknown` at the deadline but never giving up on the
        // batch: it is in our log and will commit if the quorum comes back.
        let mut replies: Vec<_> = accepted.into_iter().map(|r| Some(r.reply)).collect();
        let mut timeout = COMMIT_TIMEOUT;
        loop {
            let wait = self.proposer.wait_durable(version.0, timeout);
            tokio::pin!(wait);
            let outcome = loop {
                tokio::select! {
                    outcome = &mut wait => break outcome,
                    Some(r) = requests.recv() => match self.refusal() {
                        Err(e) => { let _ = r.reply.send(Err(e)); }
                        Ok(()) => next.push(r),
                    },
                }
            };
            match outcome {
                Ok(()) => break,
                Err(e) => {
                    let unknown = Error::new(
                        ErrorKind::CommitUnknownResult,
                        format!("the commit may or may not have happened: {}", e.message()),
                    );
                    for reply in replies.iter_mut().filter_map(Option::take) {
                        let _ = reply.send(Err(unknown.clone()));
                    }
                    if e.kind() == ErrorKind::Fenced {
                        return;
                    }
                    timeout = Duration::from_secs(3600);
                }
            }
        }

        self.hot.apply(version, &mutations);
        self.resolver.add(version, time, batch_writes);
        self.committed.send_replace(version);
        self.proposer.set_commit(version.0);
        self.metrics.commits.inc_by(replies.len() as u64);
        self.metrics.batches.inc();
        for reply in replies.into_iter().flatten() {
            let _ = reply.send(Ok((version, time)));
        }
    }

    /// Why a new batch cannot be appended now, if it cannot.
    fn refusal(&self) -> Result<()> {
        let q = self.proposer.watch_quorum().borrow().clone();
        if let Some(why) = q.fenced {
            return Err(Error::new(
                ErrorKind::Fenced,
                format!("this compute is no longer primary: {why}"),
            ));
        }
        if !q.quorum_up() {
            let up = q.peers.iter().filter(|p| p.up).count();
            return Err(Error::unavailable(format!(
                "only {up} of {} safekeepers connected; a commit needs {}",
                q.peers.len(),
                q.majority()
            )));
        }
        Ok(())
    }
}
