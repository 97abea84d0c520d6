//! The commit pipeline: one task that turns queued commit requests into durable batches.
//!
//! Each batch: refuse at once if a safekeeper quorum is not connected (nothing is appended, so
//! `unavailable` is definite); resolve conflicts against recent commits, the batches still in
//! flight, and earlier transactions of the same batch; encode the survivors as one WAL frame at
//! the end of the log (its end LSN is the batch's version) and hand it to the proposer. Up to
//! [`MAX_IN_FLIGHT`] batches are in flight at once, so the next batch can go out while the
//! previous one is being fsynced (pipelining); requests arriving meanwhile join the next batch
//! (group commit), which leaves once it is as large as the one in flight (see `launch_now`). As the quorum's durable position passes each batch, in order, it is applied
//! to the hot tier and the resolver, its version is published, and its clients are answered.
//!
//! While the hot tier is over its memory budget (the pageserver has fallen behind), no new
//! batch is appended: queued requests wait, and the channel in front of the pipeline fills and
//! holds back new ones, until an eviction (signalled through
//! [`HotTier::subscribe_evictions`]) brings the bytes back under the budget. Commits are
//! slowed, and the wait is logged and counted
//! (`ferrisdb_compute_commit_throttled_seconds_total`); one held back in the queue longer
//! than [`COMMIT_TIMEOUT`] is refused `unavailable` (nothing was appended), so a client
//! without a deadline is not held for as long as the pageserver is away. Batches already in
//! flight still complete meanwhile.
//!
//! A batch not durable within [`COMMIT_TIMEOUT`] is answered `commit_unknown_result`, because
//! it is in the log and commits if the quorum returns; the pipeline keeps it and applies it
//! when it does, and answers new requests `unavailable` while the quorum is down.
//!
//! Sizes (ferrisdb_common::message_size): a batch takes transactions while they fit in
//! [`MAX_BATCH_BYTES`]; a larger transaction goes alone. A frame that still comes out larger
//! than one message carries (resolved atomic ops can grow) is never appended: the batch is
//! split and the rest goes in the next one, and a single transaction that alone is too large
//! gets `transaction_too_large`. Nothing the safekeepers could refuse for its size enters the
//! log, and every other refusal (nothing appended) is answered at once: the pipeline answers
//! every request and goes on serving the next.
//!
//! On an idle cluster the committer appends an empty heartbeat batch when read versions were
//! handed out and nothing was appended for [`HEARTBEAT`], so read versions age even without
//! traffic (the 5-second rule, see the resolver).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ferrisdb_common::atomic;
use ferrisdb_common::message_size::{MAX_BATCH_BYTES, MAX_FRAME_BYTES};
use ferrisdb_common::traceparent::TraceParent;
use ferrisdb_common::wal::{self, Mutation};
use ferrisdb_common::{Error, ErrorKind, Result, Version};
use ferrisdb_server_common::clock::Clock;
use ferrisdb_server_common::telemetry;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::atomics::{self, Write};
use crate::hot_tier::HotTier;
use crate::metrics::Metrics;
use crate::proposer::{Proposer, Quorum};
use crate::read_path::TierReader;
use crate::requests::{Commit, KeyRange};
use crate::resolver::Resolver;
use crate::watches::Watches;

/// How long a client waits for its batch to reach a quorum before hearing
/// `commit_unknown_result`.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// On an idle cluster, a read version handed out is superseded by an empty batch after at
/// most this long (plus the time to make it durable).
pub const HEARTBEAT: Duration = Duration::from_millis(250);
/// Batches appended but not yet durable. Two keep the log busy (one is written while the next
/// forms); more only make the batches smaller, and each batch costs every safekeeper an append
/// and a sync: at 64 writers on 2 cores, 8 in flight did 10.1k commits/s and 2 did 12.0k, with
/// a shorter p99 (docs/benchmarks/request-path-profile.md). A second goes out only once
/// enough has queued (see [`launch_now`]).
pub const MAX_IN_FLIGHT: usize = 2;
/// A commit position with no WAL to carry it waits this long for the next append, which then
/// carries it to every safekeeper; only then is it sent alone ([`Proposer::announce_commit`]).
/// Sent at once, every lone commit cost each safekeeper a second message (an empty append with
/// the new position) and its answer, the same per-message work as the append bar the sync,
/// and woke each of the compute's three senders once more. Commits are acknowledged without
/// waiting for this; the safekeepers, and the pageserver and replicas that follow their
/// commit position, learn of one up to this much later (docs/wal-protocol.md).
pub const COMMIT_LINGER: Duration = Duration::from_millis(2);

/// Whether the queued requests go out as a batch now, with `in_flight` batches appended and
/// not yet durable, the newest of them carrying `newest` transactions. When the batch would be
/// `refused` (no quorum, or fenced), at once: nothing is appended, and the queue is answered.
///
/// With nothing in flight, at once. With one in flight, only once as many transactions have
/// queued as it carries: a lone commit behind a lone commit still goes at once (a light load
/// pays no wait), while under load the queue grows into a batch as large as the one being
/// synced instead of trickling out one or two at a time, each costing every safekeeper an
/// append and a sync. At 16 writers that made batches of 6.2 instead of 4.7 transactions
/// and 11 % less safekeeper CPU per commit (docs/benchmarks/request-path-profile.md).
fn launch_now(in_flight: usize, newest: Option<usize>, queued: usize, refused: bool) -> bool {
    if refused {
        return true;
    }
    match newest {
        None => true,
        Some(newest) => in_flight < MAX_IN_FLIGHT && queued >= newest,
    }
}

/// A transaction asking to commit, with where its answer goes.
#[derive(Debug)]
pub struct CommitRequest {
    /// The transaction, checked at the door (`crate::requests`).
    pub commit: Commit,
    /// Where the outcome goes.
    pub reply: Reply,
    /// The span of the request that asked (its trace continues through the batch); `None`
    /// unless traces are exported.
    pub trace: Option<TraceParent>,
    /// When it reached the pipeline: one held back longer than [`COMMIT_TIMEOUT`] while the
    /// hot tier is over its budget is refused (`unavailable`, nothing appended).
    pub arrived: Instant,
}

/// A commit's outcome: its version, its commit time, and its order within its batch (the last
/// two bytes of its versionstamp).
pub type Committed = (Version, u64, u16);

/// Where a commit's outcome goes.
pub type Reply = oneshot::Sender<Result<Committed>>;

impl CommitRequest {
    /// What it counts for in a batch: the same count as the transaction-size limit.
    fn bytes(&self) -> usize {
        self.commit.bytes()
    }
}

/// Takes the next batch off the front of `queue`: transactions while they fit in
/// [`MAX_BATCH_BYTES`], and always at least one (a larger transaction goes alone).
fn next_batch(queue: &mut VecDeque<CommitRequest>) -> Vec<CommitRequest> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some(r) = queue.front() {
        let b = r.bytes();
        if !batch.is_empty() && bytes + b > MAX_BATCH_BYTES {
            break;
        }
        bytes += b;
        batch.extend(queue.pop_front());
    }
    batch
}

/// A batch appended to the log and waiting for the quorum.
struct InFlight {
    version: Version,
    time_micros: u64,
    mutations: Vec<Mutation>,
    writes: Vec<KeyRange>,
    /// `None` once answered (`commit_unknown_result` at the deadline).
    replies: Vec<Option<Reply>>,
    /// Transactions refused for a conflict while this batch was the last in the log, answered
    /// when it completes (see [`Committer::park_conflicts`]).
    conflicts: Vec<(Reply, Error)>,
    /// When it was appended.
    appended: Instant,
    deadline: Instant,
    /// The batch's spans, when one of its requests was traced.
    trace: Option<BatchTrace>,
}

/// The open spans of a traced batch (docs/observability.md): the batch, child of its first
/// traced request and linked to the others, and its quorum wait, which the safekeepers'
/// append spans are children of.
struct BatchTrace {
    batch: tracing::Span,
    quorum_wait: tracing::Span,
}

/// The span of a batch: disabled unless traces are exported and one of its requests carries
/// a trace; then the child of the first such request, linked to the others.
fn batch_span(batch: &[CommitRequest]) -> tracing::Span {
    if !telemetry::enabled() {
        return tracing::Span::none();
    }
    let mut traced = batch.iter().filter_map(|r| r.trace.as_ref());
    let Some(first) = traced.next() else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(
        target: telemetry::TARGET,
        parent: None,
        "commit.batch",
        transactions = batch.len(),
        version = tracing::field::Empty,
    );
    telemetry::set_parent(&span, first, false);
    for t in traced.take(telemetry::MAX_APPEND_TRACES) {
        telemetry::add_link(&span, t, false);
    }
    span
}

/// The state the pipeline owns.
pub struct Committer {
    proposer: Arc<Proposer>,
    resolver: Resolver,
    hot: Arc<HotTier>,
    clock: Arc<dyn Clock>,
    committed: watch::Sender<Version>,
    last_commit_time: u64,
    in_flight: VecDeque<InFlight>,
    /// Where atomic ops read the value they combine with.
    reader: TierReader,
    /// Told of every committed batch, after its version is published.
    watches: Arc<Watches>,
    metrics: Metrics,
    /// Set when a read version was handed out; cleared by every batch appended.
    read_versions_served: Arc<AtomicBool>,
    /// The commit time of the batch between being stamped and being appended, `u64::MAX`
    /// when there is none: see [`Committer::stamping`].
    stamping: Arc<AtomicU64>,
    /// When the last batch was appended.
    last_append: Instant,
    /// When the commit position, moved since the last append, is sent alone
    /// ([`COMMIT_LINGER`]); `None` when every append since carried it.
    announce_at: Option<Instant>,
    /// The largest frame this pipeline appends; [`MAX_FRAME_BYTES`] but for tests that
    /// inject refusals.
    max_frame_bytes: Arc<AtomicUsize>,
}

/// Marks a batch as stamped at a time and not yet appended, while it lives.
struct Stamped(Arc<AtomicU64>);

impl Stamped {
    fn at(stamping: &Arc<AtomicU64>, time_micros: u64) -> Stamped {
        stamping.store(time_micros, Ordering::SeqCst);
        Stamped(stamping.clone())
    }
}

impl Drop for Stamped {
    fn drop(&mut self) {
        self.0.store(u64::MAX, Ordering::SeqCst);
    }
}

impl Committer {
    /// A pipeline for a proposer whose log is committed up to `start`.
    pub fn new(
        proposer: Arc<Proposer>,
        start: Version,
        reader: TierReader,
        clock: Arc<dyn Clock>,
        committed: watch::Sender<Version>,
        watches: Arc<Watches>,
        metrics: Metrics,
    ) -> Committer {
        Committer {
            hot: reader.hot().clone(),
            reader,
            watches,
            proposer,
            resolver: Resolver::new(start),
            clock,
            committed,
            last_commit_time: 0,
            in_flight: VecDeque::new(),
            metrics,
            read_versions_served: Arc::default(),
            stamping: Arc::new(AtomicU64::new(u64::MAX)),
            last_append: Instant::now(),
            announce_at: None,
            max_frame_bytes: Arc::new(AtomicUsize::new(MAX_FRAME_BYTES)),
        }
    }

    /// The commit time of a batch stamped but not yet appended (`u64::MAX`: none). A batch
    /// is stamped before it is resolved (which may read) and appended after, so a timestamp
    /// lookup must not take the log's end for everything stamped up to a time while this is
    /// at or below it ([`crate::primary::Primary::version_at`]).
    pub fn stamping(&self) -> Arc<AtomicU64> {
        self.stamping.clone()
    }

    /// The flag a read-version server sets each time it hands one out, so that an idle
    /// pipeline supersedes it with a heartbeat batch.
    pub fn read_versions_served(&self) -> Arc<AtomicBool> {
        self.read_versions_served.clone()
    }

    /// The largest frame appended, shared so a test can lower it to inject refusals.
    #[cfg(test)]
    pub(crate) fn max_frame_bytes(&self) -> Arc<AtomicUsize> {
        self.max_frame_bytes.clone()
    }

    /// Serves `requests` until every sender is gone and nothing is in flight.
    pub async fn run(mut self, mut requests: mpsc::Receiver<CommitRequest>) {
        let mut quorum = self.proposer.watch_quorum();
        let mut evictions = self.hot.subscribe_evictions();
        let mut throttle = Throttle::default();
        let mut queue: VecDeque<CommitRequest> = VecDeque::new();
        let mut open = true;
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut q = quorum.borrow_and_update().clone();
        loop {
            // Copied only when it moved (an allocation per turn otherwise); this is the one
            // place it is copied (the `changed()` arm below marks what it saw unseen again).
            if quorum.has_changed().unwrap_or(false) {
                q = quorum.borrow_and_update().clone();
            }
            self.complete_durable(&q);
            // Marked seen before the bytes are checked, so an eviction in between still wakes
            // the select below.
            evictions.borrow_and_update();
            let throttled = !queue.is_empty() && self.hot.over_budget();
            throttle.update(throttled, &self.hot, &self.metrics);
            // A refusal appends nothing, so it need not wait for memory, nor for the queue to
            // grow (see `launch_now`).
            let refused = refusal(&q).is_err();
            let may_launch = !throttled || refused;
            if !queue.is_empty()
                && launch_now(
                    self.in_flight.len(),
                    self.in_flight.back().map(|b| b.replies.len()),
                    queue.len(),
                    refused,
                )
                && may_launch
            {
                let batch = next_batch(&mut queue);
                let rest = self.launch(batch, &q).await;
                // A batch split for its frame's size: the rest goes first in the next one.
                for r in rest.into_iter().rev() {
                    queue.push_front(r);
                }
                continue;
            }
            if !open && queue.is_empty() && self.in_flight.is_empty() {
                self.proposer.announce_commit();
                return;
            }
            let expire_at = throttled
                .then(|| queue.iter().map(|r| r.arrived).min())
                .flatten()
                .map(|at| at + COMMIT_TIMEOUT);
            let deadline = self
                .in_flight
                .iter()
                .find(|b| b.replies.iter().any(Option::is_some) || !b.conflicts.is_empty())
                .map(|b| b.deadline);
            tokio::select! {
                r = requests.recv(), if open && !throttled => match r {
                    Some(r) => {
                        let mut bytes: usize = queue.iter().map(CommitRequest::bytes).sum();
                        bytes += r.bytes();
                        queue.push_back(r);
                        while bytes < MAX_BATCH_BYTES {
                            let Ok(r) = requests.try_recv() else { break };
                            bytes += r.bytes();
                            queue.push_back(r);
                        }
                        // While the quorum is down nothing can be appended: say so now rather
                        // than hold the request behind a batch that may never finish.
                        if let Err(e) = refusal(&quorum.borrow()) {
                            for r in queue.drain(..) {
                                let _ = r.reply.send(Err(e.clone()));
                            }
                        }
                    }
                    None => open = false,
                },
                changed = quorum.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // `changed()` marked the new state seen; unmark it so the loop's top,
                    // which copies on `has_changed`, takes it.
                    quorum.mark_changed();
                }
                // The hot tier keeps the sender, so this never ends in an error.
                _ = evictions.changed(), if throttled => {}
                // Held back too long by the hot tier's budget: refused, so a client without a
                // deadline of its own is not held for as long as the pageserver is away.
                _ = tokio::time::sleep_until(expire_at.unwrap_or_else(Instant::now)), if expire_at.is_some() => {
                    // Every expired one, wherever it is in the queue: the timer is set by the
                    // oldest, so leaving it would wake this arm again at once.
                    let now = Instant::now();
                    let (expired, kept): (VecDeque<_>, VecDeque<_>) = queue
                        .drain(..)
                        .partition(|r| r.arrived + COMMIT_TIMEOUT <= now);
                    queue = kept;
                    for r in expired {
                        let _ = r.reply.send(Err(Error::unavailable(format!(
                            "not committed: held back {COMMIT_TIMEOUT:?} while the hot tier was over its memory budget (the pageserver is not keeping up)"
                        ))));
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.answer_unknown("not on a safekeeper quorum in time", Instant::now());
                }
                _ = tokio::time::sleep_until(self.announce_at.unwrap_or_else(Instant::now)), if self.announce_at.is_some() => {
                    self.announce_at = None;
                    self.proposer.announce_commit();
                }
                _ = heartbeat.tick() => {
                    let idle = queue.is_empty() && self.in_flight.is_empty();
                    if idle
                        && self.last_append.elapsed() >= HEARTBEAT
                        && self.read_versions_served.load(Ordering::Acquire)
                        && refusal(&quorum.borrow()).is_ok()
                    {
                        self.append_heartbeat().await;
                    }
                }
            }
        }
    }

    /// Notes an append: it carries the commit position to every safekeeper, so there is
    /// none left to announce.
    fn appended(&mut self) {
        self.last_append = Instant::now();
        self.announce_at = None;
    }

    /// Appends an empty batch: it supersedes the read versions handed out since the last
    /// batch, so they age on an idle cluster.
    async fn append_heartbeat(&mut self) {
        let time_micros = self.clock.now_micros().max(self.last_commit_time + 1);
        let _stamped = Stamped::at(&self.stamping, time_micros);
        let begin = self.proposer.end_lsn();
        let (frame, version) = wal::encode_frame(begin, time_micros, &[]);
        self.read_versions_served.store(false, Ordering::Release);
        if self.proposer.append(frame).is_err() {
            return;
        }
        self.last_commit_time = time_micros;
        self.appended();
        self.in_flight.push_back(InFlight {
            version,
            time_micros,
            mutations: Vec::new(),
            writes: Vec::new(),
            replies: Vec::new(),
            conflicts: Vec::new(),
            appended: Instant::now(),
            deadline: Instant::now() + COMMIT_TIMEOUT,
            trace: None,
        });
    }

    /// Resolves and appends one batch. Returns the transactions split off because the batch's
    /// frame came out too large; they go in the next batch.
    async fn launch(&mut self, batch: Vec<CommitRequest>, q: &Quorum) -> Vec<CommitRequest> {
        let mut conflicts = Vec::new();
        let rest = self.resolve_and_append(batch, q, &mut conflicts).await;
        self.park_conflicts(conflicts);
        rest
    }

    /// Holds the conflict answers until the last batch in the log completes, as FoundationDB's
    /// commit proxy answers a batch's refused transactions with its committed ones.
    ///
    /// A transaction often conflicts with a write still in flight. Answered at once, its retry
    /// takes a read version from before that write, reads the old value and conflicts again,
    /// and again, each time backing off longer (YCSB F's retries of retries). Answered once
    /// the write's batch is durable, the retry's read version is at or past the write. The
    /// last batch in the log is at or after every write it could have conflicted with; with
    /// none in flight, every such write is already committed and the answer goes now.
    fn park_conflicts(&mut self, conflicts: Vec<(Reply, Error)>) {
        if conflicts.is_empty() {
            return;
        }
        match self.in_flight.back_mut() {
            Some(b) => b.conflicts.extend(conflicts),
            None => {
                for (reply, e) in conflicts {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }

    /// Resolves `batch` against the log and appends what passes; the refused for a conflict
    /// go to `conflicts`, everything else is answered here or on completion.
    async fn resolve_and_append(
        &mut self,
        batch: Vec<CommitRequest>,
        q: &Quorum,
        conflicts: &mut Vec<(Reply, Error)>,
    ) -> Vec<CommitRequest> {
        if let Err(e) = refusal(q) {
            for r in batch {
                let _ = r.reply.send(Err(e.clone()));
            }
            return Vec::new();
        }
        let batch_span = batch_span(&batch);
        let resolve = ferrisdb_server_common::child_span!(batch_span, "commit.resolve");
        let time_micros = self.clock.now_micros().max(self.last_commit_time + 1);
        // Until this returns (appended, or refused), a timestamp lookup waits for it.
        let _stamped = Stamped::at(&self.stamping, time_micros);
        let committed = *self.committed.borrow();
        // Batches in flight are ahead of this one in the log: their writes count as committed.
        let mut pending: Vec<KeyRange> = self
            .in_flight
            .iter()
            .flat_map(|b| b.writes.iter().cloned())
            .collect();
        let mut accepted = Vec::with_capacity(batch.len());
        for r in batch {
            if r.commit.read_version > committed {
                // Never handed out: its reads could not be checked against what it did not
                // see. A client error, not a wait (see docs/compute.md).
                let _ = r.reply.send(Err(Error::invalid(format!(
                    "read version {} is above the committed version {committed}",
                    r.commit.read_version
                ))));
                continue;
            }
            match self.resolver.check(
                r.commit.read_version,
                &r.commit.reads,
                &pending,
                time_micros,
            ) {
                Ok(()) => {
                    pending.extend(r.commit.writes.iter().cloned());
                    accepted.push(r);
                }
                Err(e) => {
                    self.metrics.conflicts.inc();
                    conflicts.push((r.reply, e));
                }
            }
        }
        let mut rest = Vec::new();
        let max_frame = self.max_frame_bytes.load(Ordering::Relaxed);
        let encoded = loop {
            if accepted.is_empty() {
                return rest;
            }
            match self.resolve_and_encode(&accepted, time_micros).await {
                Ok((frame, ..)) if frame.len() > max_frame => {
                    if accepted.len() == 1 {
                        // Alone and still too large for one message: refused, nothing appended.
                        let e = Error::new(
                            ErrorKind::TransactionTooLarge,
                            format!(
                                "the transaction's WAL frame would be {} bytes; one message carries {max_frame}",
                                frame.len()
                            ),
                        );
                        for r in accepted.drain(..) {
                            let _ = r.reply.send(Err(e.clone()));
                        }
                        return rest;
                    }
                    // Later transactions wait for the next batch; what they conflict with is
                    // unchanged (this part goes ahead of them either way).
                    let tail = accepted.split_off(accepted.len() / 2);
                    rest.splice(0..0, tail);
                }
                other => break other,
            }
        };
        let (frame, version, mutations) = match encoded {
            Ok(e) => e,
            Err(e) => {
                for r in accepted {
                    let _ = r.reply.send(Err(e.clone()));
                }
                return rest;
            }
        };
        drop(resolve);
        batch_span.record("version", version.0);
        let quorum_wait = ferrisdb_server_common::child_span!(batch_span, "commit.quorum_wait");
        let append = ferrisdb_server_common::child_span!(batch_span, "commit.append");
        let appended = self
            .proposer
            .append_traced(frame, telemetry::traceparent(&quorum_wait));
        drop(append);
        if let Err(e) = appended {
            // Nothing was appended: a definite refusal.
            for r in accepted {
                let _ = r.reply.send(Err(e.clone()));
            }
            return rest;
        }
        self.last_commit_time = time_micros;
        self.appended();
        self.read_versions_served.store(false, Ordering::Release);
        self.in_flight.push_back(InFlight {
            version,
            time_micros,
            mutations,
            writes: accepted
                .iter()
                .flat_map(|r| r.commit.writes.iter().cloned())
                .collect(),
            replies: accepted.into_iter().map(|r| Some(r.reply)).collect(),
            conflicts: Vec::new(),
            appended: Instant::now(),
            deadline: Instant::now() + COMMIT_TIMEOUT,
            trace: (!batch_span.is_disabled()).then_some(BatchTrace {
                batch: batch_span,
                quorum_wait,
            }),
        });
        rest
    }

    /// Turns the accepted transactions' writes into the batch's mutations (atomic ops resolved
    /// against the values before them, versionstamps filled in) and encodes the frame.
    async fn resolve_and_encode(
        &self,
        accepted: &[CommitRequest],
        time_micros: u64,
    ) -> Result<(bytes::Bytes, Version, Vec<Mutation>)> {
        let txns: Vec<&[Write]> = accepted.iter().map(|r| &r.commit.mutations[..]).collect();
        let keys = atomics::keys_needed(txns.iter().flat_map(|t| t.iter()));
        let mut before = HashMap::with_capacity(keys.len());
        if !keys.is_empty() {
            // Nothing completes while this task awaits: the committed version and the batches
            // in flight stay as they are, and together they are everything ahead of this batch.
            let at = *self.committed.borrow();
            for k in keys {
                let v = self.reader.read(k.clone(), at).await?;
                before.insert(k, v);
            }
            for b in &self.in_flight {
                for m in &b.mutations {
                    atomics::apply_to(&mut before, m);
                }
            }
        }
        let begin = self.proposer.end_lsn();
        let flat = |t: Vec<Vec<Mutation>>| t.into_iter().flatten().collect::<Vec<_>>();
        let stamped = txns
            .iter()
            .flat_map(|t| t.iter())
            .any(|w| matches!(w, Write::Atomic { op, .. } if op.is_versionstamp()));
        let placeholder = [0u8; atomic::VERSIONSTAMP_LEN];
        let first = flat(atomics::resolve_batch(&txns, &mut before.clone(), |_| {
            placeholder
        })?);
        let (frame, version) = wal::encode_frame(begin, time_micros, &first);
        if !stamped {
            return Ok((frame, version, first));
        }
        // The stamps do not change the frame's length, so the version stays.
        let mutations = flat(atomics::resolve_batch(&txns, &mut before, |i| {
            atomic::versionstamp(version.0, i)
        })?);
        let (frame, again) = wal::encode_frame(begin, time_micros, &mutations);
        if again != version {
            return Err(Error::internal("versionstamps changed the batch's length"));
        }
        Ok((frame, version, mutations))
    }

    /// Applies and answers, in log order, every in-flight batch the quorum now holds; once
    /// fenced, answers the rest `commit_unknown_result` (a newer term may or may not keep them).
    fn complete_durable(&mut self, q: &Quorum) {
        let durable = q.durable_lsn().unwrap_or(0);
        while self
            .in_flight
            .front()
            .is_some_and(|b| b.version.0 <= durable)
        {
            let Some(b) = self.in_flight.pop_front() else {
                break;
            };
            // The quorum wait ends here; apply is the batch's last phase.
            let _apply = b.trace.map(|t| {
                drop(t.quorum_wait);
                let apply = ferrisdb_server_common::child_span!(t.batch, "commit.apply");
                (apply, t.batch)
            });
            self.hot.apply(b.version, b.time_micros, &b.mutations);
            self.resolver.add(b.version, b.time_micros, b.writes);
            self.committed.send_replace(b.version);
            self.watches.on_commit(b.version, &b.mutations);
            self.proposer.set_commit_quietly(b.version.0);
            self.announce_at
                .get_or_insert_with(|| Instant::now() + COMMIT_LINGER);
            self.metrics.commits.inc_by(b.replies.len() as u64);
            self.metrics.batches.inc();
            self.metrics
                .batch_quorum_seconds
                .observe(b.appended.elapsed().as_secs_f64());
            for (order, reply) in b.replies.into_iter().enumerate() {
                if let Some(reply) = reply {
                    let _ = reply.send(Ok((b.version, b.time_micros, order as u16)));
                }
            }
            // After `committed` moved: a retry's read version now covers this batch.
            for (reply, e) in b.conflicts {
                let _ = reply.send(Err(e));
            }
        }
        if let Some(why) = &q.fenced {
            self.answer_unknown(
                &format!("this compute was fenced: {why}"),
                Instant::now() + COMMIT_TIMEOUT,
            );
            self.in_flight.clear();
        }
    }

    /// Answers `commit_unknown_result` to the not-yet-answered clients of every in-flight batch
    /// whose deadline is at or before `cutoff`.
    fn answer_unknown(&mut self, why: &str, cutoff: Instant) {
        let e = Error::new(
            ErrorKind::CommitUnknownResult,
            format!("the commit may or may not have happened: {why}"),
        );
        for b in self.in_flight.iter_mut().filter(|b| b.deadline <= cutoff) {
            for reply in b.replies.iter_mut().filter_map(Option::take) {
                let _ = reply.send(Err(e.clone()));
            }
            // A conflict is a definite refusal whatever becomes of the batch.
            for (reply, conflict) in b.conflicts.drain(..) {
                let _ = reply.send(Err(conflict));
            }
        }
    }
}

/// Tracks how long commits wait for the hot tier's memory, for the log and the metrics.
#[derive(Debug, Default)]
struct Throttle {
    /// When the current wait began, and when it was last counted.
    waiting: Option<(Instant, Instant)>,
}

impl Throttle {
    fn update(&mut self, throttled: bool, hot: &HotTier, metrics: &Metrics) {
        let now = Instant::now();
        match (self.waiting, throttled) {
            (None, true) => {
                self.waiting = Some((now, now));
                metrics.commit_throttled.set(1);
                tracing::warn!(
                    hot_tier_bytes = hot.bytes(),
                    budget = hot.budget(),
                    floor = %hot.floor(),
                    "the hot tier is over its memory budget: commits wait for the pageserver to catch up"
                );
            }
            (Some((since, counted)), true) => {
                metrics
                    .commit_throttled_seconds
                    .inc_by((now - counted).as_secs_f64());
                self.waiting = Some((since, now));
            }
            (Some((since, counted)), false) => {
                metrics
                    .commit_throttled_seconds
                    .inc_by((now - counted).as_secs_f64());
                metrics.commit_throttled.set(0);
                self.waiting = None;
                tracing::info!(
                    waited_ms = (now - since).as_millis() as u64,
                    hot_tier_bytes = hot.bytes(),
                    "the hot tier is back under its memory budget: commits resume"
                );
            }
            (None, false) => {}
        }
    }
}

/// Why a new batch cannot be appended now, if it cannot.
fn refusal(q: &Quorum) -> Result<()> {
    if let Some(why) = &q.fenced {
        return Err(Error::new(
            ErrorKind::Fenced,
            format!("this compute is no longer primary: {why}"),
        ));
    }
    if !q.quorum_up() {
        let up = q.peers.iter().filter(|p| p.up && !p.full).count();
        let why: Vec<String> = q
            .peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match (p.up, p.full, &p.last_error) {
                (true, true, _) => Some(format!(
                    "safekeeper {}: {} until the pageserver's uploads let old WAL be deleted",
                    i + 1,
                    ferrisdb_common::error::WAL_BUDGET_FULL
                )),
                (false, _, Some(e)) => Some(format!("safekeeper {}: {e}", i + 1)),
                (false, _, None) => Some(format!("safekeeper {}: not connected", i + 1)),
                (true, false, _) => None,
            })
            .collect();
        return Err(Error::unavailable(format!(
            "only {up} of {} safekeepers can take WAL; a commit needs {} ({})",
            q.peers.len(),
            q.majority(),
            why.join("; ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::hot_tier::HotRead;
    use crate::page_source::GrpcPageSource;
    use bytes::Bytes;
    use ferrisdb_common::proto::pageserver_client::PageserverClient;
    use ferrisdb_server_common::clock::SystemClock;

    use crate::test_safekeepers::safekeepers;

    #[test]
    fn a_second_batch_waits_until_the_queue_matches_the_one_in_flight() {
        // Nothing in flight: whatever is queued goes, even one transaction.
        assert!(launch_now(0, None, 1, false));
        // A lone commit behind a lone commit goes at once (no wait under light load).
        assert!(launch_now(1, Some(1), 1, false));
        // Behind a batch of 8, the queue grows to 8 before it goes.
        assert!(!launch_now(1, Some(8), 7, false));
        assert!(launch_now(1, Some(8), 8, false));
        // A heartbeat in flight (no transactions) holds nothing back.
        assert!(launch_now(1, Some(0), 1, false));
        // Never more than MAX_IN_FLIGHT, however long the queue.
        assert!(!launch_now(MAX_IN_FLIGHT, Some(1), 1000, false));
        // Without a quorum the queue is answered `unavailable` now, however short it is and
        // however many batches are stuck in flight: it never waits behind them.
        assert!(launch_now(1, Some(8), 1, true));
        assert!(launch_now(MAX_IN_FLIGHT, Some(8), 1, true));
    }

    fn set(key: &str, value: Bytes) -> Write {
        Write::Plain(Mutation::Set {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value,
        })
    }

    fn request(
        read_version: Version,
        w: Write,
    ) -> (CommitRequest, oneshot::Receiver<Result<Committed>>) {
        let (reply, outcome) = oneshot::channel();
        let req = CommitRequest {
            arrived: Instant::now(),
            commit: Commit {
                read_version,
                reads: Vec::new(),
                writes: Vec::new(),
                mutations: vec![w],
            },
            reply,
            trace: None,
        };
        (req, outcome)
    }

    /// With the hot tier over its budget, commits wait (none is appended, none answered) and
    /// every one of them completes, with its data readable, once an eviction frees memory.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_wait_while_the_hot_tier_is_over_budget_and_all_complete_after_eviction() {
        let dir = tempfile::tempdir().unwrap();
        let (urls, _stop) = safekeepers(dir.path()).await;
        let proposer = loop {
            match Proposer::elect("db", &urls, 0, 0).await {
                Ok(p) => break p,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        proposer.start();
        let start = proposer.elected_end();
        proposer
            .wait_durable(start, Duration::from_secs(30))
            .await
            .unwrap();
        let start = Version(start);
        let hot = Arc::new(HotTier::new(start).with_budget(4 << 10));
        let metrics = Metrics::new().unwrap();
        // No atomic ops here, so the pageserver is never asked.
        let pageserver = PageserverClient::new(
            ferrisdb_server_common::auth::call_channel("http://127.0.0.1:9").unwrap(),
        );
        let reader = TierReader::new(
            "db".into(),
            hot.clone(),
            None,
            Arc::new(GrpcPageSource::new(pageserver)),
            metrics.clone(),
        );
        let (committed_tx, committed) = watch::channel(start);
        let committer = Committer::new(
            proposer.clone(),
            start,
            reader,
            Arc::new(SystemClock),
            committed_tx,
            Arc::new(Watches::new(16)),
            metrics.clone(),
        );
        let (pipeline, requests) = mpsc::channel(64);
        tokio::spawn(committer.run(requests));

        // One big commit takes the hot tier past its budget.
        let big = Bytes::from(vec![7u8; 8 << 10]);
        let (req, outcome) = request(start, set("big", big.clone()));
        pipeline.send(req).await.unwrap();
        let (v1, _, _) = outcome.await.unwrap().unwrap();
        assert!(hot.over_budget());

        // First in the queue, one that has already waited almost COMMIT_TIMEOUT.
        let (mut late, late_outcome) = request(v1, set("late", Bytes::from_static(b"l")));
        late.arrived = Instant::now() - COMMIT_TIMEOUT + Duration::from_millis(300);
        pipeline.send(late).await.unwrap();
        let mut outcomes = Vec::new();
        for i in 0..5 {
            let (req, outcome) = request(v1, set(&format!("k{i}"), Bytes::from(format!("v{i}"))));
            pipeline.send(req).await.unwrap();
            outcomes.push(outcome);
        }
        while metrics.commit_throttled.get() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Waiting: nothing answered, nothing committed past the big batch.
        for o in &mut outcomes {
            assert!(matches!(
                o.try_recv(),
                Err(oneshot::error::TryRecvError::Empty)
            ));
        }
        assert_eq!(*committed.borrow(), v1);
        assert_eq!(hot.get(b"k0", v1), HotRead::AskPageserverAt(start));
        // Held back past COMMIT_TIMEOUT: refused, definitely (nothing was appended); the
        // others wait on.
        let e = late_outcome.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(e.to_string().contains("memory budget"), "{e}");
        for o in &mut outcomes {
            assert!(matches!(
                o.try_recv(),
                Err(oneshot::error::TryRecvError::Empty)
            ));
        }

        // The pageserver "ingests" the big batch; the eviction wakes the committer.
        hot.evict_up_to(v1);
        let mut last = v1;
        for (i, o) in outcomes.into_iter().enumerate() {
            let (v, _, _) = o.await.unwrap().unwrap();
            assert!(v > v1);
            last = last.max(v);
            assert_eq!(
                hot.get(format!("k{i}").as_bytes(), v),
                HotRead::Found(Some(Bytes::from(format!("v{i}"))))
            );
        }
        assert_eq!(*committed.borrow(), last);
        assert_eq!(metrics.commit_throttled.get(), 0);
    }
}
