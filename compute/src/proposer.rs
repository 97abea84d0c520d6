//! The WAL proposer: how the primary compute wins a term on the safekeepers and makes its log
//! durable on a quorum of them (docs/wal-protocol.md).
//!
//! Election: ask every safekeeper for its position, propose a term above all of them, and win
//! with a majority of votes. The most advanced log among the voters (by last term, then end
//! position) is the donor: the proposer's log is the donor's log, and its own term starts where
//! the donor's log ends. If object storage already holds more than any voter (the safekeepers'
//! disks were wiped), the log restarts at the pageserver's durable version instead.
//!
//! Replication: one task per safekeeper keeps a bidirectional `Append` stream open. It first
//! sends `Elected` (the acceptor truncates whatever diverges from our history), then streams
//! every frame the acceptor lacks, from our in-memory buffer or, for older WAL, from a
//! safekeeper that already holds it. A broken stream marks the safekeeper down at once, so
//! the committer can refuse new commits (`unavailable`) instead of appending to a minority.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferrisdb_common::error::Reason;
use ferrisdb_common::h2_channel::{StreamSender, grpc_message};
use ferrisdb_common::proto::safekeeper_client::SafekeeperClient;
use ferrisdb_common::proto::{
    AppendRequest, AppendResponse, ElectedRequest, LeaseRequest, ReadWalRequest, SafekeeperStatus,
    SafekeeperStatusRequest, TermSwitch, VoteRequest,
};
use ferrisdb_common::traceparent::TraceParent;
use ferrisdb_common::{Error, ErrorKind, Lsn, Result};
use ferrisdb_server_common::auth::{PeerChannel, StreamChannel};
use ferrisdb_server_common::telemetry;
use ferrisdb_server_common::term_history::{Vote, plan_election};
use tokio::sync::watch;
use tonic::codec::Codec as _;

use crate::lease::Lease;
use crate::quorum_clock::QuorumClock;
use ferrisdb_server_common::clock::SystemClock;

/// Where the log stands, as the append senders follow it.
#[derive(Debug, Clone, Copy)]
struct Positions {
    /// The end of the log.
    end: Lsn,
    /// The commit position; WAL sent carries it.
    commit: Lsn,
    /// The commit position that goes to every safekeeper even without WAL to carry it.
    announced: Lsn,
}

/// An idle append stream sends an empty append this often, to learn the safekeeper's state.
const KEEPALIVE: Duration = Duration::from_secs(1);
/// How long one RPC to a safekeeper may take before it counts as down.
const RPC_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a stopping compute waits for each safekeeper to take its lease back: short, since
/// it only saves the next compute a wait no longer than the lease.
const RELEASE_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a database goes without a read at the latest version or a commit before its
/// primary stops renewing the read lease ([`Proposer::renew_lease`]): a lease's length, so a
/// database read at least that often keeps it throughout.
pub const LEASE_IDLE: Duration = ferrisdb_common::lease::LEASE;
/// How long a read's liveness check ([`Proposer::confirm_term`]) waits for a majority before
/// the read is refused with `unavailable`.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause before reconnecting to a safekeeper that went down.
const RECONNECT: Duration = Duration::from_millis(100);
/// At most this much WAL goes in one append message, unless one frame alone is larger (up to
/// `message_size::MAX_FRAME_BYTES`, which every safekeeper accepts).
const MAX_APPEND_BYTES: usize = 4 << 20;
/// At most this much WAL is sent but not yet acknowledged on one stream.
const MAX_IN_FLIGHT_BYTES: u64 = 16 << 20;
/// How long the laggard (see [`laggard`]) gathers WAL before sending it, unless
/// [`LAGGARD_BYTES`] gather first. Each append costs a safekeeper a message, a write and an
/// fdatasync (on this project's VM, two virtio requests whose notifications are most of a
/// safekeeper's CPU), and a batch needs only a majority's: the third safekeeper takes the
/// batches of this long in one append. Where the safekeepers share a disk (`ferrisdb dev`),
/// each of the laggard's syncs also slows the two a commit waits for: 20 ms rather than 2
/// gave 2–18 % more durable writes and 5–15 % more of YCSB A at 16 clients, ahead in each
/// of six alternating passes (docs/benchmarks/request-path-profile.md, seventeenth round).
/// Commits wait for the laggard only when the other two stop keeping up, and then for at
/// most about [`SLOW_AFTER`] more, not for the rest of this (see `KeepUp`); what the laggard,
/// and whoever follows its commit position, learns comes up to this much later.
pub const LAGGARD_LINGER: Duration = Duration::from_millis(20);
/// The laggard sends at once once this much WAL is waiting for it.
const LAGGARD_BYTES: u64 = 1 << 20;
/// A safekeeper that leaves an append unanswered this long is slow (see [`PeerState::slow`]):
/// nobody lags while one of the others is, so a stalled disk or process behind an open stream
/// costs commits the laggard's wait only until its sender next wakes past this (under load,
/// the next batch), not for as long as it stalls. Many times an fdatasync's usual length, so
/// a sound safekeeper under load is not taken for a slow one.
pub const SLOW_AFTER: Duration = Duration::from_millis(5);
/// The buffer keeps at most this much WAL below the commit position for lagging safekeepers;
/// older WAL is read back from a safekeeper that has it.
const MAX_BUFFERED_COMMITTED_BYTES: usize = 64 << 20;

/// Whether the others keep making durable what the laggard holds back, looked at every
/// [`SLOW_AFTER`] while it gathers: at each look, the quorum's durable position must have
/// reached the end of the log as it stood at the look before. If not, the majority is not
/// keeping up without the laggard (one of them has stalled, or its answers are late), and
/// the laggard's WAL goes out at once rather than after the rest of its linger. This bounds
/// what a stall of an eager safekeeper costs a commit by about `SLOW_AFTER` plus the
/// laggard's own sync, however long the linger, and without waiting for the stalled one's
/// sender to notice (with no further batch, nothing would wake it before its keepalive).
#[derive(Debug, Default)]
struct KeepUp {
    /// The time of the next look, and the end of the log at the last one.
    last: Option<(tokio::time::Instant, Lsn)>,
}

impl KeepUp {
    /// At `now`, with the log ending at `end` and durable on a majority up to `durable`:
    /// `Some(next look)` while the laggard may go on gathering, `None` once it must send.
    fn look(
        &mut self,
        now: tokio::time::Instant,
        end: Lsn,
        durable: Option<Lsn>,
        every: Duration,
    ) -> Option<tokio::time::Instant> {
        match self.last {
            Some((at, _)) if now < at => Some(at),
            Some((_, then)) if durable.is_none_or(|d| d < then) => None,
            _ => {
                let next = now + every;
                self.last = Some((next, end));
                Some(next)
            }
        }
    }
}

/// What the proposer knows of one safekeeper in its term.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerState {
    /// Its append stream is open.
    pub up: bool,
    /// The end of its log, once it has adopted this term's history.
    pub flush: Option<Lsn>,
    /// Why it was last dropped, for error messages.
    pub last_error: Option<String>,
    /// It refused an append for its WAL disk budget, and no append has succeeded since: it
    /// does not count toward a quorum for new commits.
    pub full: bool,
    /// It has left an append unanswered for [`SLOW_AFTER`] or longer (a stalled disk or
    /// process whose stream is still open). It still counts toward a quorum; only, nobody
    /// lags while it is slow (see [`laggard`]).
    pub slow: bool,
}

impl PeerState {
    /// What is known of the safekeeper once its append stream ended with `result`: it is down
    /// (its position is asked again on reconnect), and full if it refused WAL for its disk
    /// budget — told by the error's reason, never its text — or was full when the stream
    /// ended. That verdict outlives the break on purpose: a reconnect that is refused again
    /// at once must not count the safekeeper as having room in between. It never outlives the
    /// next answer: every stream sends an append as soon as it opens (WAL the safekeeper lacks,
    /// or the commit position) and an empty one each idle [`KEEPALIVE`], and each answer sets
    /// `full` from the safekeeper's own report.
    pub fn after_stream_end(&self, result: &Result<()>) -> PeerState {
        let refused_for_budget = result
            .as_ref()
            .is_err_and(|e| e.reason() == Some(Reason::WalBudgetFull));
        PeerState {
            last_error: result.as_ref().err().map(|e| e.to_string()),
            full: refused_for_budget || self.full,
            ..PeerState::default()
        }
    }
}

/// When each append on a stream still waiting for its answer was sent, oldest first: a
/// stream answers in order, so the oldest is the one the safekeeper is late with.
#[derive(Debug, Default)]
struct Unanswered(VecDeque<tokio::time::Instant>);

impl Unanswered {
    fn sent(&mut self, at: tokio::time::Instant) {
        self.0.push_back(at);
    }

    fn answered(&mut self) {
        self.0.pop_front();
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// When the safekeeper becomes slow if its oldest unanswered append stays unanswered for
    /// `slow_after` ([`SLOW_AFTER`] but in tests).
    fn slow_at(&self, slow_after: Duration) -> Option<tokio::time::Instant> {
        self.0.front().map(|sent| *sent + slow_after)
    }

    /// Whether it is slow at `now`: an append unanswered for `slow_after` or longer.
    fn slow(&self, now: tokio::time::Instant, slow_after: Duration) -> bool {
        self.slow_at(slow_after).is_some_and(|at| now >= at)
    }
}

/// Every safekeeper's state, plus whether a newer term has fenced this proposer.
#[derive(Debug, Clone, Default)]
pub struct Quorum {
    /// One entry per safekeeper, in configuration order.
    pub peers: Vec<PeerState>,
    /// Why this proposer was fenced, once it was.
    pub fenced: Option<String>,
}

/// The safekeeper whose appends may wait up to [`LAGGARD_LINGER`] to gather into one: the
/// last, and only while every other one is up, has room and answers promptly, so that those
/// alone are a majority (with three, two). Any of them down, full or slow, and nobody lags:
/// every batch then goes to every safekeeper at once. Pure, for the tests.
pub fn laggard(q: &Quorum) -> Option<usize> {
    let (_, others) = q.peers.split_last()?;
    let eager = others.iter().filter(|p| p.up && !p.full && !p.slow).count();
    (eager == others.len() && eager >= q.majority()).then_some(others.len())
}

impl Quorum {
    /// How many safekeepers make a majority.
    pub fn majority(&self) -> usize {
        self.peers.len() / 2 + 1
    }

    /// Whether a majority has an open stream with room: an append now can succeed.
    pub fn quorum_up(&self) -> bool {
        self.peers.iter().filter(|p| p.up && !p.full).count() >= self.majority()
    }

    /// The highest LSN a majority has fsynced in this term.
    ///
    /// That is the majority-th highest flush position: the highest one that at least a
    /// majority has reached. Counted in place rather than sorted into a new `Vec`, because it
    /// runs on every answer from a safekeeper and for a handful of peers the allocation was
    /// most of its cost.
    pub fn durable_lsn(&self) -> Option<Lsn> {
        let majority = self.majority();
        let reached = |lsn: Lsn| {
            self.peers
                .iter()
                .filter(|p| p.flush.is_some_and(|f| f >= lsn))
                .count()
        };
        self.peers
            .iter()
            .filter_map(|p| p.flush)
            .filter(|&lsn| reached(lsn) >= majority)
            .max()
    }
}

#[derive(Debug)]
struct Log {
    /// Where `frames` begins; WAL below it must be read from a safekeeper.
    buffer_start: Lsn,
    frames: VecDeque<(Lsn, Bytes)>,
    buffered_bytes: usize,
    end: Lsn,
    commit: Lsn,
}

impl Log {
    /// Whole buffered frames from `from` towards `end`, at most [`MAX_APPEND_BYTES`] (but at
    /// least one frame); `None` when `from` lies below the buffer.
    fn buffered(&self, from: Lsn, end: Lsn) -> Option<Result<Bytes>> {
        if from < self.buffer_start {
            return None;
        }
        let missing = || Error::internal(format!("buffer does not hold LSN {from}"));
        // The buffer is in LSN order and holds up to 64 MiB of frames: find the first one by
        // binary search (a scan from the front cost more than everything else an append does;
        // docs/benchmarks/instructions.md).
        let first = self.frames.partition_point(|(begin, _)| *begin < from);
        let mut parts: Vec<&Bytes> = Vec::new();
        let mut len = 0usize;
        for (begin, f) in self.frames.range(first..) {
            if *begin != from + len as u64 {
                return Some(Err(missing()));
            }
            if len > 0 && len + f.len() > MAX_APPEND_BYTES {
                break;
            }
            parts.push(f);
            len += f.len();
        }
        Some(match parts.as_slice() {
            [] if from < end => Err(missing()),
            // One batch's frames, as buffered: no copy.
            [one] => Ok((*one).clone()),
            _ => {
                let mut out = BytesMut::with_capacity(len);
                for part in parts {
                    out.extend_from_slice(part);
                }
                Ok(out.freeze())
            }
        })
    }
}

/// The proposer's id for one election. Whoever learns it may take over this term's append
/// session, so it is never printed: `Debug` redacts it.
#[derive(Clone, Copy)]
struct ProposerId(u128);

impl ProposerId {
    fn to_bytes(self) -> Bytes {
        Bytes::copy_from_slice(&self.0.to_be_bytes())
    }
}

impl std::fmt::Debug for ProposerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProposerId(<redacted>)")
    }
}

/// The elected proposer of one database's term.
#[derive(Debug)]
pub struct Proposer {
    database: String,
    term: u64,
    /// 128 random bits drawn for this election: the acceptors record whose term they promised
    /// and take `Elected` in it only from this id.
    id: ProposerId,
    history: Vec<TermSwitch>,
    /// Object storage holds everything below this: an acceptor that has nothing above it is
    /// restarted here rather than fed WAL the others have already deleted.
    log_start: std::sync::atomic::AtomicU64,
    clients: Vec<SafekeeperClient<PeerChannel>>,
    /// The append stream's channel to each safekeeper (its own connection): the sender task
    /// puts each message straight onto the HTTP/2 stream, with no task in between.
    streams: Vec<StreamChannel>,
    /// The voter whose log became ours, and where that log ends.
    donor: (usize, Lsn),
    log: Mutex<Log>,
    /// What the senders follow; they are woken when the end or the announced commit moves.
    positions: watch::Sender<Positions>,
    /// Every safekeeper's state. Its watchers (the committer, `wait_durable`) are woken when
    /// the durable position moves or a safekeeper's standing changes, not at every answer.
    quorum: watch::Sender<Quorum>,
    /// Woken once, when this proposer is fenced (see [`Proposer::fenced`]).
    fence_notify: tokio::sync::Notify,
    /// Where traced batches begin and the trace context their appends carry (see
    /// [`Proposer::append_traced`]); empty unless traces are exported.
    traces: Mutex<VecDeque<(Lsn, TraceParent)>>,
    /// This term's read lease.
    lease: Lease,
    /// The lease was given back ([`Proposer::release_lease`]): never held again.
    lease_released: std::sync::atomic::AtomicBool,
    /// A read asked whether the lease runs since the renewal loop last looked: while reads
    /// (or commits) come, the lease is renewed; after [`LEASE_IDLE`] without either it is
    /// let lapse (see [`Proposer::renew_lease`]).
    lease_wanted: std::sync::atomic::AtomicBool,
    /// When every read lease an older term's primary may hold has run out, as the voters
    /// reported it: this term serves nothing before then.
    older_leases_end: tokio::time::Instant,
    /// How long that was from the election (zero: no older lease ran, or it was given back).
    older_lease: Duration,
    /// The safekeepers' clock, measured from their vote and lease answers.
    clock: Arc<QuorumClock>,
    /// [`LAGGARD_LINGER`] and [`SLOW_AFTER`] in microseconds, but for tests that lengthen
    /// them to see the laggard gather.
    laggard_timing_micros: [std::sync::atomic::AtomicU64; 2],
}

/// The gRPC path of `Safekeeper/Append`, opened directly on the HTTP/2 connection.
const APPEND_PATH: &str = "/ferrisdb.v1.Safekeeper/Append";

/// `msg` as one length-prefixed gRPC message.
fn append_message(msg: &AppendRequest) -> Result<Bytes> {
    // Frames stay far below the limit (MAX_FRAME_BYTES); a larger message would be our bug,
    // and the safekeeper would end the stream on it.
    let max = ferrisdb_common::message_size::MAX_MESSAGE_BYTES;
    grpc_message(msg, max).map_err(|len| {
        Error::internal(format!(
            "an append of {len} bytes is over the {max}-byte message limit"
        ))
    })
}

/// Most traced batches remembered for the senders: a sender far behind loses their
/// contexts (its appends are then not traced), never its WAL.
const MAX_TRACED_BATCHES: usize = 1024;

impl Proposer {
    /// Runs one election for `database` over `safekeepers`. `durable_elsewhere` is the version
    /// object storage already holds (the pageserver's remote consistent version);
    /// `committed_elsewhere` a position up to which the WAL is known to have committed (the
    /// pageserver's ingested version: it follows committed WAL only), or 0.
    ///
    /// A log that would continue below `committed_elsewhere` is refused (`unavailable`) rather
    /// than elected: every committed record is on some voter, so a most advanced voting log
    /// that ends below committed WAL means a safekeeper lost acknowledged WAL (a disk that
    /// lost fsynced writes, a directory restored from an old copy) while another that held it
    /// is down. Electing it loses those commits and reuses their versions. The election is
    /// tried again until that safekeeper returns, or until the pageserver uploads what it
    /// ingested, after which the log restarts past it (docs/wal-protocol.md, "Known limits").
    pub async fn elect(
        database: &str,
        safekeepers: &[String],
        durable_elsewhere: Lsn,
        committed_elsewhere: Lsn,
    ) -> Result<Arc<Proposer>> {
        let clients = safekeepers
            .iter()
            .map(|url| {
                Ok(ferrisdb_common::with_message_limits!(
                    SafekeeperClient::new(ferrisdb_server_common::auth::peer_channel(url)?)
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let streams = safekeepers
            .iter()
            .map(|url| ferrisdb_server_common::auth::stream_channel(url))
            .collect::<Result<Vec<_>>>()?;
        let majority = clients.len() / 2 + 1;
        let statuses = futures::future::join_all(clients.iter().map(|c| {
            let mut c = c.clone();
            let req = SafekeeperStatusRequest {
                database: database.to_string(),
            };
            async move { rpc(c.get_status(req)).await }
        }))
        .await;
        let reachable = statuses.iter().filter(|s| s.is_ok()).count();
        if reachable < majority {
            // What each of the others said: "unreachable" alone blamed the network for a
            // safekeeper that refused the database (its --max-databases reached, say).
            let why: Vec<String> = statuses
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    s.as_ref()
                        .err()
                        .map(|e| format!("safekeeper {}: {e}", i + 1))
                })
                .collect();
            return Err(Error::unavailable(format!(
                "only {reachable} of {} safekeepers answered; {majority} needed to elect ({})",
                clients.len(),
                why.join("; ")
            )));
        }
        let term = next_term(statuses.iter().flatten().map(|s| s.term))?;
        let id = ProposerId(rand::random());
        let clock = Arc::new(QuorumClock::new(Arc::new(SystemClock), clients.len()));
        let votes = futures::future::join_all(clients.iter().enumerate().map(|(i, c)| {
            let mut c = c.clone();
            let req = VoteRequest {
                database: database.to_string(),
                term,
                proposer_id: id.to_bytes(),
            };
            let clock = clock.clone();
            async move {
                let sent = std::time::Instant::now();
                let vote = rpc(c.request_vote(req)).await;
                if let Ok(v) = &vote {
                    clock.observe(i, sent, std::time::Instant::now(), v.now_micros);
                }
                vote
            }
        }))
        .await;
        let answered = tokio::time::Instant::now();
        // How long an older primary's lease may run: the longest any voter reports, never
        // more than a whole lease (a voter's word is not trusted beyond what it can promise).
        let older_lease = votes
            .iter()
            .flatten()
            .filter(|v| v.granted)
            .map(|v| Duration::from_millis(v.lease_remaining_ms).min(ferrisdb_common::lease::LEASE))
            .max()
            .unwrap_or_default();
        let granted: Vec<(usize, SafekeeperStatus)> = votes
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| match v {
                Ok(v) if v.granted => v.status.map(|s| (i, s)),
                _ => None,
            })
            .collect();
        if granted.len() < majority {
            return Err(Error::unavailable(format!(
                "term {term}: {} of {} votes; {majority} needed",
                granted.len(),
                clients.len()
            )));
        }
        let votes: Vec<Vote> = granted
            .iter()
            .map(|(_, s)| Vote {
                history: s.history.iter().map(Into::into).collect(),
                flush_lsn: s.flush_lsn,
                commit_lsn: s.commit_lsn,
            })
            .collect();
        let plan = plan_election(term, &votes, durable_elsewhere)
            .ok_or_else(|| Error::internal("no voters"))?;
        let donor = granted[plan.donor].0;
        if committed_elsewhere > plan.end {
            tracing::error!(
                database,
                term,
                committed_elsewhere,
                log_end = plan.end,
                durable_elsewhere,
                "WAL the pageserver ingested (so committed) is on none of the voting safekeepers: one of them lost acknowledged WAL while another that holds it is down; not electing a log without it (waiting for the other safekeepers, or for the pageserver to upload what it ingested)"
            );
            return Err(Error::unavailable(format!(
                "committed WAL up to {committed_elsewhere} is on none of the voting \
                 safekeepers (the most advanced log ends at {}): waiting for the others",
                plan.end
            )));
        }
        if plan.end > votes[plan.donor].flush_lsn {
            if votes[plan.donor].flush_lsn == 0 {
                // No safekeeper has held WAL for it: a new branch, or a database restored
                // from the bucket. Its log starts where object storage ends, as it should.
                tracing::info!(
                    database,
                    durable_elsewhere,
                    "no safekeeper holds WAL for this database yet: its log starts where object storage ends"
                );
            } else {
                tracing::warn!(
                    database,
                    durable_elsewhere,
                    donor_flush = votes[plan.donor].flush_lsn,
                    "object storage is ahead of every safekeeper: restarting the log there"
                );
            }
        }
        let (end, log_start, commit) = (plan.end, plan.log_start, plan.commit);
        let history: Vec<TermSwitch> = plan.history.iter().map(Into::into).collect();
        tracing::info!(
            database,
            term,
            donor,
            end,
            ?older_lease,
            clock_offset_micros = clock.offset_micros(),
            "won election"
        );
        let peers = vec![PeerState::default(); clients.len()];
        let lease = Lease::new(clients.len());
        Ok(Arc::new(Proposer {
            database: database.to_string(),
            term,
            id,
            history,
            log_start: std::sync::atomic::AtomicU64::new(log_start),
            clients,
            streams,
            donor: (donor, end),
            log: Mutex::new(Log {
                buffer_start: end,
                frames: VecDeque::new(),
                buffered_bytes: 0,
                end,
                commit,
            }),
            positions: watch::channel(Positions {
                end,
                commit,
                announced: commit,
            })
            .0,
            quorum: watch::channel(Quorum {
                peers,
                fenced: None,
            })
            .0,
            fence_notify: tokio::sync::Notify::new(),
            traces: Mutex::default(),
            lease,
            lease_released: std::sync::atomic::AtomicBool::new(false),
            lease_wanted: std::sync::atomic::AtomicBool::new(true),
            older_leases_end: answered + older_lease,
            older_lease,
            clock,
            laggard_timing_micros: [LAGGARD_LINGER, SLOW_AFTER]
                .map(|d| std::sync::atomic::AtomicU64::new(d.as_micros() as u64)),
        }))
    }

    /// Waits until every read lease an older term's primary may hold has run out (the voters
    /// said how long theirs may still run, each by its own clock, counted here from after
    /// their answers arrived). Before that, the old primary may still answer reads at its
    /// latest version without asking anyone, so this term must neither acknowledge a commit
    /// nor show a read what the old primary cannot see.
    pub async fn wait_for_older_leases(&self) {
        tokio::time::sleep_until(self.older_leases_end).await;
    }

    /// How long [`Proposer::wait_for_older_leases`] waits from the election: the longest
    /// lease an older term's primary may still hold, as the voters reported it.
    pub fn older_lease(&self) -> Duration {
        self.older_lease
    }

    /// Whether this term's read lease runs now: a read at the latest version that arrived
    /// before this call may be answered at the visible version without a liveness check.
    pub fn lease_held(&self) -> bool {
        // Read first: in the steady state of a read-heavy load no core writes the line.
        if !self.lease_wanted.load(std::sync::atomic::Ordering::Relaxed) {
            self.lease_wanted
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.lease_runs()
    }

    /// Whether the lease runs now, without counting as a use of it (status reports).
    pub fn lease_runs(&self) -> bool {
        !self.is_fenced()
            && !self
                .lease_released
                .load(std::sync::atomic::Ordering::Acquire)
            && self.lease.held_at(tokio::time::Instant::now())
    }

    /// Gives the read lease back, for a compute that has stopped answering reads (suspending
    /// or shutting down): from the moment this is called the lease is never held again, and
    /// the safekeepers that take the release tell the next term's winner it need not wait for
    /// the lease to run out, so a woken compute serves at once instead of up to
    /// [`ferrisdb_common::lease::LEASE`] later. A read answered under the lease before this
    /// call took its version while the lease ran, so it stays linearizable. Safekeepers that
    /// do not answer in time keep the lease until it runs out: the next term waits for them,
    /// as it would have.
    pub async fn release_lease(&self) {
        self.lease_released
            .store(true, std::sync::atomic::Ordering::Release);
        if self.is_fenced() {
            return;
        }
        let released = futures::future::join_all(self.clients.iter().map(|c| {
            let mut c = c.clone();
            let req = self.lease_request(true);
            async move {
                let answer = tokio::time::timeout(RELEASE_TIMEOUT, c.renew_lease(req)).await;
                matches!(answer, Ok(Ok(a)) if a.get_ref().granted)
            }
        }))
        .await
        .into_iter()
        .filter(|r| *r)
        .count();
        tracing::info!(
            database = %self.database,
            term = self.term,
            released,
            safekeepers = self.clients.len(),
            "gave the read lease back"
        );
    }

    /// This term's lease request: a renewal, or with `release` the lease given back.
    fn lease_request(&self, release: bool) -> LeaseRequest {
        LeaseRequest {
            database: self.database.clone(),
            term: self.term,
            proposer_id: self.id.to_bytes(),
            release,
        }
    }

    /// Renews the read lease on every safekeeper every `lease::RENEW_EVERY`, until the
    /// proposer is fenced or dropped, while the database is in use: after [`LEASE_IDLE`]
    /// with no read asking for the lease and no commit, renewals stop and the lease lapses;
    /// the next read takes the liveness check (one round trip, as every read did before
    /// leases) and renewals resume. An idle database then costs the safekeepers nothing:
    /// twelve renewals a second each, for every idle branch of a compute, were most of its
    /// idle CPU (an outside audit: 275 idle branches, ~1.1 cores). A safekeeper answering a
    /// newer term fences the proposer.
    async fn renew_lease(me: std::sync::Weak<Self>) {
        let mut tick = tokio::time::interval(ferrisdb_common::lease::RENEW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_end = None;
        let mut last_used = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            let Some(me) = me.upgrade() else { return };
            if me.is_fenced() || me.lease_released.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            // Commits count as use too: the quorum clock that stamps them reads the
            // safekeepers' clocks from the lease answers.
            let end = me.end_lsn();
            let read = me
                .lease_wanted
                .swap(false, std::sync::atomic::Ordering::Relaxed);
            if read || last_end != Some(end) {
                last_used = tokio::time::Instant::now();
            }
            last_end = Some(end);
            if last_used.elapsed() > LEASE_IDLE {
                continue;
            }
            let sent = tokio::time::Instant::now();
            for (i, c) in me.clients.iter().enumerate() {
                let mut c = c.clone();
                let req = me.lease_request(false);
                let me = Arc::downgrade(&me);
                // One task per safekeeper, so a slow one delays nobody's grant.
                tokio::spawn(async move {
                    let answer = rpc(c.renew_lease(req)).await;
                    let Some(me) = me.upgrade() else { return };
                    if let Ok(a) = &answer {
                        me.clock.observe(
                            i,
                            sent.into_std(),
                            std::time::Instant::now(),
                            a.now_micros,
                        );
                    }
                    match answer {
                        Ok(a) if a.granted && a.term == me.term => me.lease.granted(i, sent),
                        Ok(a) if a.term > me.term => me.fence(format!(
                            "safekeeper {} promised term {}, newer than ours ({})",
                            i + 1,
                            a.term,
                            me.term
                        )),
                        // Not (yet) ours, or unreachable: the lease runs out unless others grant.
                        _ => {}
                    }
                });
            }
        }
    }

    /// The quorum's clock (see [`crate::quorum_clock`]): commit times come from it.
    pub fn clock(&self) -> Arc<QuorumClock> {
        self.clock.clone()
    }

    /// The term this proposer won.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The end of the log: where the next append begins.
    pub fn end_lsn(&self) -> Lsn {
        self.positions.borrow().end
    }

    /// Where the log stood when this proposer was elected: everything up to here is committed
    /// once a majority holds it in this term.
    pub fn elected_end(&self) -> Lsn {
        self.donor.1
    }

    /// The liveness check behind every read version (docs/wal-protocol.md, "Linearizable
    /// reads"): asks every safekeeper for its promised term and succeeds once a majority
    /// answers with a term no newer than ours. Every answer is given after this call began, so
    /// success proves that, when it began, no majority had promised a newer term: no newer
    /// primary had been elected, let alone acknowledged a commit.
    ///
    /// A safekeeper that promised a newer term fences this proposer (it steps down, as when an
    /// append is refused). No majority within [`LIVENESS_TIMEOUT`] is `unavailable`: the read
    /// is refused, never answered stale.
    pub async fn confirm_term(&self) -> Result<()> {
        if let Some(why) = &self.quorum.borrow().fenced {
            return Err(Error::new(ErrorKind::Fenced, why.clone()));
        }
        let mut answers: futures::stream::FuturesUnordered<_> = self
            .clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut c = c.clone();
                let req = SafekeeperStatusRequest {
                    database: self.database.clone(),
                };
                async move { (i, c.get_status(req).await) }
            })
            .collect();
        let majority = self.clients.len() / 2 + 1;
        let count = async {
            use futures::StreamExt;
            let (mut confirmed, mut failed) = (0usize, 0usize);
            let mut last_error = String::new();
            while let Some((i, answer)) = answers.next().await {
                match answer {
                    Ok(status) if status.get_ref().term > self.term => {
                        let why = format!(
                            "safekeeper {} promised term {}, newer than ours ({})",
                            i + 1,
                            status.get_ref().term,
                            self.term
                        );
                        self.fence(why.clone());
                        return Err(Error::new(ErrorKind::Fenced, why));
                    }
                    Ok(_) => {
                        confirmed += 1;
                        if confirmed >= majority {
                            return Ok(());
                        }
                    }
                    Err(status) => {
                        failed += 1;
                        last_error = format!("safekeeper {}: {}", i + 1, status.message());
                        if failed > self.clients.len() - majority {
                            break;
                        }
                    }
                }
            }
            Err(Error::unavailable(format!(
                "cannot confirm term {} on a safekeeper majority (of {}, {failed} failed and \
                 {confirmed} confirmed before the check gave up; {majority} needed; last error: \
                 {last_error}): refusing to hand out a read version that might be stale",
                self.term,
                self.clients.len()
            )))
        };
        match tokio::time::timeout(LIVENESS_TIMEOUT, count).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::unavailable(format!(
                "no safekeeper majority confirmed term {} within {LIVENESS_TIMEOUT:?}: refusing \
                 to hand out a read version that might be stale",
                self.term
            ))),
        }
    }

    /// A view of the safekeepers' states that changes as they do.
    pub fn watch_quorum(&self) -> watch::Receiver<Quorum> {
        self.quorum.subscribe()
    }

    /// Sets how long the laggard gathers and when a safekeeper is slow, for tests.
    #[cfg(test)]
    pub(crate) fn set_laggard_timing(&self, linger: Duration, slow_after: Duration) {
        for (at, d) in self.laggard_timing_micros.iter().zip([linger, slow_after]) {
            at.store(d.as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// How long the laggard gathers, and when a safekeeper is slow.
    fn laggard_timing(&self) -> (Duration, Duration) {
        let [linger, slow_after] = self
            .laggard_timing_micros
            .each_ref()
            .map(|at| Duration::from_micros(at.load(std::sync::atomic::Ordering::Relaxed)));
        (linger, slow_after)
    }

    /// Starts one replication task per safekeeper, and the renewal of the read lease.
    pub fn start(self: &Arc<Self>) {
        for i in 0..self.clients.len() {
            let me = self.clone();
            tokio::spawn(async move { me.replicate(i).await });
        }
        tokio::spawn(Self::renew_lease(Arc::downgrade(self)));
    }

    /// Adds whole frames at the end of the log; the senders ship them. Returns the new end.
    /// More than one message carries is refused (nothing appended): a frame no safekeeper
    /// can take would stay in the log and stop every append after it.
    pub fn append(&self, frames: Bytes) -> Result<Lsn> {
        self.append_traced(frames, None)
    }

    /// [`Proposer::append`], with the trace context the safekeepers' spans for these frames
    /// are children of (docs/observability.md).
    pub fn append_traced(&self, frames: Bytes, trace: Option<TraceParent>) -> Result<Lsn> {
        if frames.len() > ferrisdb_common::message_size::MAX_FRAME_BYTES {
            return Err(Error::new(
                ErrorKind::TransactionTooLarge,
                format!(
                    "a {}-byte WAL frame is more than one message carries ({} bytes)",
                    frames.len(),
                    ferrisdb_common::message_size::MAX_FRAME_BYTES
                ),
            ));
        }
        let mut log = self
            .log
            .lock()
            .map_err(|_| Error::internal("proposer lock poisoned"))?;
        let begin = log.end;
        log.end += frames.len() as u64;
        log.buffered_bytes += frames.len();
        log.frames.push_back((begin, frames));
        let (end, commit) = (log.end, log.commit);
        drop(log);
        if let Some(trace) = trace
            && let Ok(mut traces) = self.traces.lock()
        {
            if traces.len() >= MAX_TRACED_BATCHES {
                traces.pop_front();
            }
            traces.push_back((begin, trace));
        }
        self.positions.send_modify(|p| {
            p.end = end;
            p.commit = commit;
        });
        Ok(end)
    }

    /// Records that object storage now holds everything below `lsn` (never beyond the commit
    /// position), for acceptors that must be restarted past deleted WAL.
    pub fn set_log_start(&self, lsn: Lsn) {
        let commit = self.positions.borrow().commit;
        self.log_start
            .fetch_max(lsn.min(commit), std::sync::atomic::Ordering::SeqCst);
    }

    /// Records that everything up to `lsn` is committed, so safekeepers may serve it, and
    /// sends it to each of them at once (with no WAL to carry it, in an empty append).
    pub fn set_commit(&self, lsn: Lsn) {
        self.set_commit_quietly(lsn);
        self.announce_commit();
    }

    /// Sends the commit position to every safekeeper that has not had it, in an empty append
    /// where no WAL carries it.
    pub fn announce_commit(&self) {
        self.positions.send_if_modified(|p| {
            let moved = p.announced < p.commit;
            p.announced = p.commit;
            moved
        });
    }

    /// [`Proposer::set_commit`] without waking the senders: the next append carries the
    /// position to each safekeeper (the senders read it when they send WAL), or
    /// [`Proposer::announce_commit`] sends it alone. A lone commit's position sent at once
    /// cost every safekeeper a second message and its answer; the committer announces it only
    /// when no append followed within `committer::COMMIT_LINGER`.
    pub fn set_commit_quietly(&self, lsn: Lsn) {
        let Ok(mut log) = self.log.lock() else { return };
        log.commit = log.commit.max(lsn);
        // Keep WAL above the commit position (it may still be needed to finish replication)
        // and a bounded tail below it for safekeepers that fell behind.
        while log.buffered_bytes > MAX_BUFFERED_COMMITTED_BYTES {
            let front_end = match log.frames.front() {
                Some((begin, f)) => begin + f.len() as u64,
                None => break,
            };
            if front_end > log.commit {
                break;
            }
            if let Some((_, f)) = log.frames.pop_front() {
                log.buffered_bytes -= f.len();
                log.buffer_start = front_end;
            }
        }
        let (end, commit) = (log.end, log.commit);
        drop(log);
        self.positions.send_if_modified(|p| {
            p.end = end;
            p.commit = commit;
            false
        });
    }

    /// Waits until a majority has fsynced up to `lsn`, the proposer is fenced, or `timeout`.
    pub async fn wait_durable(&self, lsn: Lsn, timeout: Duration) -> Result<()> {
        let mut rx = self.quorum.subscribe();
        let wait = rx.wait_for(|q| q.fenced.is_some() || q.durable_lsn().is_some_and(|d| d >= lsn));
        let q = match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(q)) => q.clone(),
            Ok(Err(_)) => return Err(Error::internal("proposer went away")),
            Err(_) => {
                return Err(Error::unavailable(format!(
                    "WAL up to {lsn} not on a safekeeper quorum after {timeout:?}"
                )));
            }
        };
        match q.fenced {
            Some(why) => Err(Error::new(ErrorKind::Fenced, why)),
            None => Ok(()),
        }
    }

    fn update_peer(&self, i: usize, f: impl FnOnce(&mut PeerState)) {
        self.quorum.send_modify(|q| f(&mut q.peers[i]));
    }

    /// Records safekeeper `i`'s answer: its log ends at `flush`, and whether it is full. The
    /// watchers are woken only when that moves the durable position or the safekeeper's
    /// fullness: of a batch's three answers, only the one that completes a majority wakes the
    /// committer (each answer used to, twice for nothing).
    fn peer_answered(&self, i: usize, flush: Lsn, full: bool) {
        self.quorum.send_if_modified(|q| {
            let durable = q.durable_lsn();
            let p = &mut q.peers[i];
            let was_full = std::mem::replace(&mut p.full, full);
            p.flush = Some(flush);
            was_full != full || q.durable_lsn() != durable
        });
    }

    fn fence(&self, why: String) {
        tracing::error!(database = %self.database, term = self.term, %why, "fenced: stepping down");
        self.quorum.send_modify(|q| {
            q.fenced.get_or_insert(why);
        });
        self.fence_notify.notify_waiters();
    }

    /// Waits until a newer term fences this proposer, and says why.
    pub async fn fenced(&self) -> String {
        loop {
            let woken = self.fence_notify.notified();
            tokio::pin!(woken);
            // Registered before the check, so a fence in between still wakes it.
            woken.as_mut().enable();
            if let Some(why) = &self.quorum.borrow().fenced {
                return why.clone();
            }
            woken.await;
        }
    }

    fn is_fenced(&self) -> bool {
        self.quorum.borrow().fenced.is_some()
    }

    /// Keeps safekeeper `i` replicated for as long as this proposer lives and is not fenced.
    async fn replicate(self: Arc<Self>, i: usize) {
        while !self.is_fenced() {
            let result = self.replicate_once(i).await;
            let was_up = self.quorum.borrow().peers[i].up;
            self.update_peer(i, |p| *p = p.after_stream_end(&result));
            match result {
                Err(e) if e.kind() == ErrorKind::Fenced => self.fence(e.message().to_string()),
                Err(e) if was_up => {
                    tracing::warn!(database = %self.database, safekeeper = i + 1, error = %e, "safekeeper down");
                }
                _ => {}
            }
            tokio::time::sleep(RECONNECT).await;
        }
    }

    async fn replicate_once(&self, i: usize) -> Result<()> {
        let mut client = self.clients[i].clone();
        let elected = rpc(client.elected(ElectedRequest {
            database: self.database.clone(),
            term: self.term,
            history: self.history.clone(),
            log_start_lsn: self.log_start.load(std::sync::atomic::Ordering::SeqCst),
            proposer_id: self.id.to_bytes(),
        }))
        .await?;
        // Appends on this stream carry the session this Elected opened: the acceptor takes
        // them from no other stream.
        let session = elected.session;
        let mut flush = elected.status.map_or(0, |s| s.flush_lsn);
        let (mut requests, mut responses) = self.open_append(i).await?;
        self.update_peer(i, |p| {
            p.up = true;
            p.flush = Some(flush);
        });
        tracing::info!(database = %self.database, safekeeper = i + 1, flush, "safekeeper in sync for term {}", self.term);
        let mut positions = self.positions.subscribe();
        let mut sent = flush;
        let mut commit_sent = 0;
        // Ask for an answer now, whatever the commit position (even 0): every answer says how
        // full the safekeeper is, and `full` must not outlive the next one (see
        // PeerState::after_stream_end).
        let mut probe = true;
        let mut unanswered = Unanswered::default();
        let mut slow = false;
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.tick().await;
        // While this safekeeper is the laggard: when the WAL waiting for it goes out, and the
        // next look at whether the others keep up (see `KeepUp`).
        let mut gather_until: Option<tokio::time::Instant> = None;
        let mut keep_up = KeepUp::default();
        loop {
            let Positions {
                end,
                commit,
                announced,
            } = *positions.borrow_and_update();
            let (linger, slow_after) = self.laggard_timing();
            // Checked at each wake-up rather than on a timer of its own: under load every
            // batch wakes this task, and without load nothing waits on the laggard for long.
            if !slow && unanswered.slow(tokio::time::Instant::now(), slow_after) {
                tracing::debug!(database = %self.database, safekeeper = i + 1, "safekeeper slow to answer: nobody lags");
                slow = true;
                self.update_peer(i, |p| p.slow = true);
            }
            let may_send = sent < end && sent.saturating_sub(flush) < MAX_IN_FLIGHT_BYTES;
            // The laggard's WAL waits to gather, and is not woken by each batch meanwhile: the
            // WAL and the commit position it carries are read afresh when the wait ends.
            let gathering = if may_send
                && end - sent < LAGGARD_BYTES
                && laggard(&self.quorum.borrow()) == Some(i)
            {
                let now = tokio::time::Instant::now();
                let until = *gather_until.get_or_insert_with(|| now + linger);
                let durable = self.quorum.borrow().durable_lsn();
                match keep_up.look(now, end, durable, slow_after) {
                    Some(next_look) if now < until => Some(until.min(next_look)),
                    _ => None,
                }
            } else {
                None
            };
            // WAL carries the newest commit position; without WAL, only an announced one goes
            // out alone (see `Proposer::set_commit_quietly`).
            let wal = if gathering.is_some() {
                None
            } else if may_send {
                gather_until = None;
                keep_up = KeepUp::default();
                Some(self.frames_from(i, sent, end).await?)
            } else if unanswered.is_empty() && (probe || commit_sent < announced) {
                Some(Bytes::new())
            } else {
                None
            };
            if let Some(wal) = wal {
                let n = wal.len() as u64;
                let req = AppendRequest {
                    database: self.database.clone(),
                    term: self.term,
                    begin_lsn: sent,
                    wal,
                    commit_lsn: commit,
                    session,
                    traceparents: self.traces_in(sent, sent + n),
                };
                // Queued on the stream at once; what is in flight is bounded above
                // (MAX_IN_FLIGHT_BYTES of WAL, one empty message at a time).
                requests
                    .send(append_message(&req)?)
                    .map_err(|_| Error::unavailable("append stream closed"))?;
                unanswered.sent(tokio::time::Instant::now());
                sent += n;
                commit_sent = commit;
                probe = false;
                continue;
            }
            tokio::select! {
                msg = responses.message() => {
                    let Some(resp) = msg? else {
                        return Err(Error::unavailable("safekeeper closed the append stream"));
                    };
                    flush = resp.flush_lsn;
                    unanswered.answered();
                    self.peer_answered(i, flush, resp.budget_full);
                    if slow && !unanswered.slow(tokio::time::Instant::now(), slow_after) {
                        slow = false;
                        self.update_peer(i, |p| p.slow = false);
                    }
                }
                _ = tokio::time::sleep_until(gathering.unwrap_or_else(tokio::time::Instant::now)), if gathering.is_some() => {}
                _ = keepalive.tick(), if gathering.is_none() => {
                    // An idle stream still hears how full the safekeeper is.
                    if unanswered.is_empty() {
                        probe = true;
                    }
                }
                changed = positions.changed(), if gathering.is_none() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Opens the append stream to safekeeper `i`: the sender half, and the answers.
    async fn open_append(
        &self,
        i: usize,
    ) -> Result<(StreamSender, tonic::Streaming<AppendResponse>)> {
        let stream = &self.streams[i];
        let (sender, response) = stream
            .channel
            .open_stream(APPEND_PATH, stream.metadata.clone())
            .await?;
        // A refusal (a bad credential, a fenced term at the door) comes in the headers.
        if let Some(status) = tonic::Status::from_header_map(response.headers())
            && status.code() != tonic::Code::Ok
        {
            return Err(status.into());
        }
        let (parts, body) = response.into_parts();
        let decoder =
            ferrisdb_common::codec::Codec::<AppendRequest, AppendResponse>::default().decoder();
        Ok((
            sender,
            tonic::Streaming::new_response(
                decoder,
                body,
                parts.status,
                None,
                Some(ferrisdb_common::message_size::MAX_MESSAGE_BYTES),
            ),
        ))
    }

    /// The trace contexts of the traced batches beginning in `[from, to)`; nothing (and no
    /// lock taken) unless traces are exported.
    fn traces_in(&self, from: Lsn, to: Lsn) -> Vec<String> {
        if !telemetry::enabled() || from >= to {
            return Vec::new();
        }
        let Ok(traces) = self.traces.lock() else {
            return Vec::new();
        };
        traces
            .iter()
            .filter(|(begin, _)| (from..to).contains(begin))
            .take(telemetry::MAX_APPEND_TRACES)
            .map(|(_, t)| t.to_string())
            .collect()
    }

    /// Whole frames of our log from `from` towards `end`, at most [`MAX_APPEND_BYTES`] (but at
    /// least one frame): from the buffer, or read back from a safekeeper that holds them.
    async fn frames_from(&self, target: usize, from: Lsn, end: Lsn) -> Result<Bytes> {
        let buffer_start = {
            let log = self
                .log
                .lock()
                .map_err(|_| Error::internal("proposer lock poisoned"))?;
            if let Some(frames) = log.buffered(from, end) {
                return frames;
            }
            log.buffer_start
        };
        self.read_from_peers(target, from, buffer_start).await
    }

    /// Reads `[from, to)` of our log from a safekeeper known to hold it: the donor for WAL
    /// below the election point, or any safekeeper in sync with this term.
    async fn read_from_peers(&self, target: usize, from: Lsn, to: Lsn) -> Result<Bytes> {
        let q = self.quorum.borrow().clone();
        let sources = read_sources(&q, self.donor, target, from);
        let mut last_err = Error::unavailable(format!("no safekeeper holds WAL from {from}"));
        for (j, f) in sources {
            let mut c = self.clients[j].clone();
            let req = ReadWalRequest {
                database: self.database.clone(),
                start_lsn: from,
                end_lsn: Some(to.min(f)),
                gather_millis: 0,
                expected_term: 0,
            };
            let read = async {
                let mut stream = c.read_wal(req).await?.into_inner();
                match stream.message().await? {
                    Some(chunk) if chunk.begin_lsn == from && !chunk.wal.is_empty() => {
                        Ok(chunk.wal)
                    }
                    _ => Err(Error::unavailable(format!(
                        "safekeeper {j} sent no WAL at {from}"
                    ))),
                }
            };
            match tokio::time::timeout(RPC_TIMEOUT, read).await {
                Ok(Ok(wal)) => return Ok(wal),
                Ok(Err(e)) => last_err = e,
                Err(_) => last_err = Error::unavailable(format!("safekeeper {j} timed out")),
            }
        }
        Err(last_err)
    }
}

/// The term an election asks for: one above the highest term any reachable safekeeper
/// reported. Checked: a term can never wrap back to one the acceptors already promised.
pub fn next_term(reported: impl IntoIterator<Item = u64>) -> Result<u64> {
    let highest = reported.into_iter().max().unwrap_or(0);
    highest.checked_add(1).ok_or_else(|| {
        Error::internal(format!(
            "a safekeeper reports term {highest}: the term space is exhausted"
        ))
    })
}

/// The safekeepers to read our log's WAL at `from` from (it lies below the proposer's
/// buffer), best first, as `(index, end of what it holds)`: every safekeeper that adopted
/// this term's history (`q`), plus the `donor` (the voter whose log became ours, with that
/// log's end at election time); never `target` itself, and only those holding `from`.
/// Pure, so the deterministic simulation (compute/tests/wal_simulation.rs) makes the same
/// choice as [`Proposer`].
pub fn read_sources(
    q: &Quorum,
    donor: (usize, Lsn),
    target: usize,
    from: Lsn,
) -> Vec<(usize, Lsn)> {
    let mut sources: Vec<(usize, Lsn)> = q
        .peers
        .iter()
        .enumerate()
        .filter_map(|(j, p)| p.flush.map(|f| (j, f)))
        .collect();
    sources.push(donor);
    sources.retain(|(j, f)| *j != target && *f > from);
    sources.sort_by_key(|(_, f)| std::cmp::Reverse(*f));
    sources
}

/// Runs one unary RPC with [`RPC_TIMEOUT`], mapping failures to FerrisDB errors.
async fn rpc<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    match tokio::time::timeout(RPC_TIMEOUT, call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(status.into()),
        Err(_) => Err(Error::unavailable("safekeeper did not answer in time")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_safekeepers::{safekeepers, safekeepers_with, stallable};

    /// The buffer answers from any frame boundary it holds, joins frames up to the append
    /// limit, hands a single batch over without copying it, and refuses an LSN inside a frame.
    #[test]
    fn buffered_frames_are_found_from_any_boundary() {
        let frame = |n: usize, fill: u8| Bytes::from(vec![fill; n]);
        let big = MAX_APPEND_BYTES / 2 + 1;
        let frames: VecDeque<(Lsn, Bytes)> = [
            (100, frame(10, 1)),
            (110, frame(20, 2)),
            (130, frame(5, 3)),
            (135, frame(big, 4)),
            (135 + big as u64, frame(big, 5)),
        ]
        .into_iter()
        .collect();
        let end = 135 + 2 * big as u64;
        let log = Log {
            buffer_start: 100,
            frames,
            buffered_bytes: 35 + 2 * big,
            end,
            commit: 0,
        };
        let got = |from: Lsn| log.buffered(from, end).map(|r| r.map(|b| b.to_vec()));
        assert!(got(99).is_none(), "below the buffer");
        let mut want = vec![2u8; 20];
        want.extend([3u8; 5]);
        want.extend(vec![4u8; big]);
        assert_eq!(
            got(110).unwrap().unwrap(),
            want,
            "joined up to the append limit"
        );
        assert_eq!(got(135 + big as u64).unwrap().unwrap(), vec![5u8; big]);
        let single = log.buffered(130, end).unwrap().unwrap();
        assert_eq!(single.len(), 5 + big);
        let last = log.buffered(135, end).unwrap().unwrap();
        assert_eq!(
            last.as_ptr(),
            log.frames[3].1.as_ptr(),
            "one frame is handed over as buffered"
        );
        let inside = got(105).unwrap().unwrap_err();
        assert_eq!(inside.kind(), ErrorKind::Internal, "{inside}");
        assert_eq!(
            got(end).unwrap().unwrap(),
            Vec::<u8>::new(),
            "nothing to send"
        );
    }

    async fn elect(urls: &[String]) -> Arc<Proposer> {
        loop {
            match Proposer::elect("db", urls, 0, 0).await {
                Ok(p) => return p,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// The liveness check behind read versions: it passes while no newer term exists, fences
    /// the proposer once one does, and refuses (`unavailable`) without a majority.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn confirm_term_passes_only_while_no_newer_term_exists() {
        let dir = tempfile::tempdir().unwrap();
        let (urls, stop) = safekeepers(dir.path()).await;
        let old = elect(&urls).await;
        old.confirm_term().await.unwrap();
        assert!(old.watch_quorum().borrow().fenced.is_none());
        // Someone waiting for the fence (the database's step-down task) is woken by it.
        let waiting = tokio::spawn({
            let old = old.clone();
            async move { old.fenced().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());

        let new = elect(&urls).await;
        assert!(new.term() > old.term());
        new.confirm_term().await.unwrap();
        let e = old.confirm_term().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");
        assert!(
            old.watch_quorum().borrow().fenced.is_some(),
            "the old proposer steps down"
        );
        let why = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the fence wakes its waiter")
            .unwrap();
        assert!(why.contains("term"), "{why}");
        // Asked after the fact, it answers at once.
        assert_eq!(old.fenced().await, why);
        // Once fenced, it refuses without asking.
        assert_eq!(
            old.confirm_term().await.unwrap_err().kind(),
            ErrorKind::Fenced
        );

        stop.send_replace(true);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let e = loop {
            match new.confirm_term().await {
                Err(e) => break e,
                // The servers take a moment to stop.
                Ok(()) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "safekeepers never stopped"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    }

    /// An idle primary lets its lease lapse instead of renewing it twelve times a second for
    /// nothing; the next read asks for it (that read takes the liveness check) and renewals
    /// resume. A newer term elected while it lapsed need not wait for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_primary_lets_its_lease_lapse_and_a_read_brings_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let (urls, _stop) = safekeepers(dir.path()).await;
        let p = elect(&urls).await;
        p.start();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !p.lease_held() {
            assert!(std::time::Instant::now() < deadline, "never got a lease");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // No read (status looks do not count) and no commit: after the idle time and the
        // last grant's usable part, the lease no longer runs.
        tokio::time::sleep(
            LEASE_IDLE + ferrisdb_common::lease::USABLE + Duration::from_millis(500),
        )
        .await;
        assert!(!p.lease_runs(), "an idle primary kept renewing its lease");
        // A newer term now would not wait for it.
        let before = p.lease.until().unwrap();
        assert!(before <= tokio::time::Instant::now());
        // A read asks for the lease: renewals resume.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !p.lease_held() {
            assert!(
                std::time::Instant::now() < deadline,
                "the lease never came back"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The read lease over real gRPC: a started proposer comes to hold it; a newer term's
    /// winner is told how long it may still run and serves only once it has, and the old
    /// proposer's next renewal is refused with the newer term, which fences it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_newer_term_waits_out_the_old_primarys_lease() {
        let dir = tempfile::tempdir().unwrap();
        let (urls, _stop) = safekeepers(dir.path()).await;
        let old = elect(&urls).await;
        assert!(!old.lease_held(), "no lease before any grant");
        old.start();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !old.lease_held() {
            assert!(std::time::Instant::now() < deadline, "never got a lease");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let old_until = old.lease.until().unwrap();
        let new = elect(&urls).await;
        // The voters granted the old lease moments ago: the new term has to wait.
        assert!(
            new.older_leases_end >= old_until,
            "the new term would serve at {:?}, before the old lease ends at {old_until:?}",
            new.older_leases_end
        );
        assert!(
            new.older_leases_end <= tokio::time::Instant::now() + ferrisdb_common::lease::LEASE
        );
        new.wait_for_older_leases().await;
        assert!(!old.lease_held(), "both would serve");
        assert!(tokio::time::Instant::now() >= old.lease.until().unwrap());
        // Renewals are refused from the vote on, with the newer term: the old one steps down.
        let mut quorum = old.watch_quorum();
        let fenced = tokio::time::timeout(
            Duration::from_secs(10),
            quorum.wait_for(|q| q.fenced.is_some()),
        )
        .await;
        assert!(fenced.is_ok(), "the old proposer was never fenced");
        assert_eq!(
            old.lease.until(),
            Some(old_until),
            "the lease never grew after the vote"
        );
    }

    /// A budget refusal is recognised by its reason, never by its text; the verdict outlives a
    /// break of the stream (down anyway) until an answer says otherwise.
    #[test]
    fn a_full_safekeeper_is_known_by_the_reason_of_its_refusal() {
        let up = PeerState {
            up: true,
            flush: Some(10),
            ..PeerState::default()
        };
        let refused = Error::unavailable(format!(
            "{} on this safekeeper",
            ferrisdb_common::error::WAL_BUDGET_FULL
        ))
        .with_reason(Reason::WalBudgetFull);
        let full = up.after_stream_end(&Err(refused));
        assert!(full.full && !full.up && full.flush.is_none());
        // The same words without the reason (a peer quoting them, say) are just "down".
        let lookalike = Error::unavailable(ferrisdb_common::error::WAL_BUDGET_FULL);
        assert!(!up.after_stream_end(&Err(lookalike)).full);
        // A later break for another cause keeps the verdict; a clean end too.
        let broken = full.after_stream_end(&Err(Error::unavailable("connection reset")));
        assert!(broken.full && broken.last_error.is_some());
        assert!(broken.after_stream_end(&Ok(())).full);
    }

    fn budget(max_wal_bytes: u64) -> ferrisdb_wal_service::service::Limits {
        ferrisdb_wal_service::service::Limits {
            max_wal_bytes,
            ..Default::default()
        }
    }

    /// Over real gRPC: an append past the budget is refused with the reason in the stream's
    /// trailers, and the proposer stops counting those safekeepers toward a quorum.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_append_past_the_budget_marks_the_safekeepers_full() {
        let dir = tempfile::tempdir().unwrap();
        let (urls, _stop) = safekeepers_with(dir.path(), budget(64 << 10)).await;
        let p = elect(&urls).await;
        p.start();
        let mut quorum = p.watch_quorum();
        quorum.wait_for(|q| q.quorum_up()).await.unwrap();
        // Well under the 15/16 mark: taken, and not reported full.
        let value = Bytes::from(vec![7u8; 40 << 10]);
        let set = |k: &str| ferrisdb_common::wal::Mutation::Set {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: value.clone(),
        };
        let (frame, first) = ferrisdb_common::wal::encode_frame(p.end_lsn(), 1, &[set("a")]);
        p.append(frame).unwrap();
        p.wait_durable(first.0, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(p.watch_quorum().borrow().peers.iter().all(|s| !s.full));
        // Past the budget in one step: refused, so only the refusal's reason can say "full".
        let (frame, _) = ferrisdb_common::wal::encode_frame(p.end_lsn(), 2, &[set("b")]);
        p.append(frame).unwrap();
        let q = tokio::time::timeout(
            Duration::from_secs(30),
            quorum.wait_for(|q| q.peers.iter().all(|s| s.full)),
        )
        .await;
        let Ok(q) = q else {
            panic!(
                "the safekeepers were never counted full: {:?}",
                p.watch_quorum().borrow()
            );
        };
        let q = q.unwrap().clone();
        assert!(!q.quorum_up());
        assert!(q.durable_lsn().is_none_or(|d| d < p.end_lsn()));
    }

    /// A stream asks for an answer as soon as it opens, even with nothing committed, so how
    /// full a safekeeper is becomes known without waiting for WAL (and a verdict of "full"
    /// from before a reconnect never outlives the first answer after it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fullness_is_learned_when_the_stream_opens() {
        let dir = tempfile::tempdir().unwrap();
        // A budget of 0: every safekeeper reports full from the start.
        let (urls, _stop) = safekeepers_with(dir.path(), budget(0)).await;
        let p = elect(&urls).await;
        assert_eq!(p.elected_end(), 0, "a new database");
        p.start();
        let mut quorum = p.watch_quorum();
        let q = tokio::time::timeout(
            Duration::from_secs(30),
            quorum.wait_for(|q| q.peers.iter().all(|s| s.up && s.full)),
        )
        .await
        .expect("fullness was never learned on an idle stream")
        .unwrap()
        .clone();
        assert!(!q.quorum_up());
    }

    #[test]
    fn the_last_safekeeper_lags_only_while_the_others_are_a_majority_with_room() {
        let up = PeerState {
            up: true,
            ..PeerState::default()
        };
        let full = PeerState {
            full: true,
            ..up.clone()
        };
        let q = |peers: Vec<PeerState>| Quorum {
            peers,
            fenced: None,
        };
        assert_eq!(laggard(&q(vec![up.clone(); 3])), Some(2));
        assert_eq!(laggard(&q(vec![up.clone(); 5])), Some(4));
        // The laggard's own state does not matter: it is not needed for a majority.
        assert_eq!(
            laggard(&q(vec![up.clone(), up.clone(), PeerState::default()])),
            Some(2)
        );
        // One of the others down or full: every batch needs every safekeeper that can take it.
        assert_eq!(
            laggard(&q(vec![PeerState::default(), up.clone(), up.clone()])),
            None
        );
        assert_eq!(laggard(&q(vec![up.clone(), full, up.clone()])), None);
        let slow = PeerState {
            slow: true,
            ..up.clone()
        };
        assert_eq!(
            laggard(&q(vec![slow.clone(), up.clone(), up.clone()])),
            None
        );
        // A slow laggard changes nothing: it is not waited for anyway.
        assert_eq!(laggard(&q(vec![up.clone(), up.clone(), slow])), Some(2));
        // Too few for anyone to lag.
        assert_eq!(laggard(&q(vec![up.clone(); 2])), None);
        assert_eq!(laggard(&q(vec![up.clone()])), None);
        assert_eq!(laggard(&q(Vec::new())), None);
    }

    /// Commits become durable on the first two safekeepers while the third gathers their WAL,
    /// which it then gets whole in the end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_are_durable_on_two_while_the_laggard_gathers() {
        // Long enough that nothing reaches the laggard while the commits below complete, and
        // no safekeeper is taken for a slow one however loaded the machine.
        let (_dir, _stop, p) = started(Duration::from_secs(5), Duration::from_secs(60)).await;
        let quorum = p.watch_quorum();
        let laggard_before = quorum.borrow().peers[2].flush;
        let mut end = 0;
        for i in 0..10u64 {
            end = commit_one(&p, i, 1).await;
        }
        let q = quorum.borrow().clone();
        assert_eq!(q.peers[0].flush, Some(end));
        assert_eq!(q.peers[1].flush, Some(end));
        assert_eq!(
            q.peers[2].flush, laggard_before,
            "the laggard was sent WAL before its linger ended"
        );
        // And once it ends, the laggard has it all.
        poll_until(&quorum, "the laggard never caught up", |q| {
            q.peers[2].flush == Some(end)
        })
        .await;
    }

    /// A proposer elected over three in-process safekeepers with the laggard's timing set,
    /// started, and all three up; their directory and stop switch come with it (keep both).
    async fn started(
        linger: Duration,
        slow_after: Duration,
    ) -> (tempfile::TempDir, watch::Sender<bool>, Arc<Proposer>) {
        let dir = tempfile::tempdir().unwrap();
        let (urls, stop) = safekeepers(dir.path()).await;
        let p = start_over(&urls, linger, slow_after).await;
        (dir, stop, p)
    }

    /// [`started`], with the first safekeeper behind a proxy that holds its answers while
    /// the returned stall switch is on (its stream stays open: a stall, not a break).
    async fn started_stalling_first(
        linger: Duration,
        slow_after: Duration,
    ) -> (
        tempfile::TempDir,
        watch::Sender<bool>,
        watch::Sender<bool>,
        Arc<Proposer>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (mut urls, stop) = safekeepers(dir.path()).await;
        let (proxied, stall) = stallable(&urls[0]).await;
        urls[0] = proxied;
        let p = start_over(&urls, linger, slow_after).await;
        (dir, stop, stall, p)
    }

    /// Elects a proposer over `urls` with the laggard's timing set, starts it, and waits
    /// until all are up.
    async fn start_over(urls: &[String], linger: Duration, slow_after: Duration) -> Arc<Proposer> {
        let p = elect(urls).await;
        p.set_laggard_timing(linger, slow_after);
        p.start();
        poll_until(&p.watch_quorum(), "all up", |q| {
            q.peers.iter().all(|s| s.up)
        })
        .await;
        p
    }

    /// Appends a one-key frame at the proposer's end and waits for it to be durable; returns
    /// the log's end after it.
    async fn commit_one(p: &Proposer, i: u64, value_len: usize) -> Lsn {
        let set = ferrisdb_common::wal::Mutation::Set {
            key: Bytes::from(format!("k{i}")),
            value: Bytes::from(vec![b'v'; value_len]),
        };
        let (frame, version) = ferrisdb_common::wal::encode_frame(p.end_lsn(), i, &[set]);
        p.append(frame).unwrap();
        p.wait_durable(version.0, Duration::from_secs(20))
            .await
            .unwrap();
        p.end_lsn()
    }

    /// Polls `quorum` (answers that move no majority wake no watcher) until `done` holds.
    async fn poll_until(
        quorum: &watch::Receiver<Quorum>,
        what: &str,
        done: impl Fn(&Quorum) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !done(&quorum.borrow()) {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A real stall, end to end: a safekeeper whose answers are held back behind its open
    /// connection is marked slow once an append of its waits past the bound, so nobody lags;
    /// commits stay durable on the other two meanwhile (the third among them), and the mark
    /// goes once its answers arrive.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_safekeeper_is_marked_slow_until_it_answers_again() {
        // A bound a loaded test machine's fdatasync does not reach, short against the test.
        let (_dir, _stop, stall, p) =
            started_stalling_first(LAGGARD_LINGER, Duration::from_millis(200)).await;
        let quorum = p.watch_quorum();
        let mut i = 0;
        commit_one(&p, i, 1).await;
        stall.send(true).unwrap();
        // Commits go on; the stalled one's sender wakes with each and finds its append overdue.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !quorum.borrow().peers[0].slow {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a stalled safekeeper was never marked slow"
            );
            i += 1;
            commit_one(&p, i, 1).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            laggard(&quorum.borrow()),
            None,
            "nobody lags beside a slow one"
        );
        // Its answers are held: the commits made now are durable on the other two.
        let stalled_at = quorum.borrow().peers[0].flush;
        for _ in 0..5 {
            i += 1;
            let end = commit_one(&p, i, 1).await;
            let q = quorum.borrow().clone();
            assert_eq!(q.peers[0].flush, stalled_at);
            assert!(
                q.peers[1].flush >= Some(end) && q.peers[2].flush >= Some(end),
                "{q:?}"
            );
            assert!(q.peers[0].up, "a stall is not a broken stream");
        }
        stall.send(false).unwrap();
        let end = p.end_lsn();
        poll_until(
            &quorum,
            "the stalled one caught up and lost the mark",
            |q| !q.peers[0].slow && q.peers[0].flush == Some(end),
        )
        .await;
        // (Polled: on a loaded machine another may be slow for a moment too.)
        poll_until(&quorum, "the third lags again", |q| laggard(q) == Some(2)).await;
    }

    /// A lone commit behind a stalled eager safekeeper waits for the laggard's look at
    /// whether the others keep up, not for the rest of its linger: with a linger the test
    /// would not outlast and no further batch to wake the stalled one's sender, the commit is
    /// still made durable, by the other eager one and the laggard.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_eager_safekeeper_does_not_hold_a_commit_for_the_laggards_linger() {
        // A linger the test would not outlast, and a look every 200 ms (a bound a loaded
        // test machine's fdatasync does not reach, short against the test).
        let (_dir, _stop, stall, p) =
            started_stalling_first(Duration::from_secs(600), Duration::from_millis(200)).await;
        let quorum = p.watch_quorum();
        // While all keep up, the laggard gathers: a commit is durable on the eager two.
        let first = commit_one(&p, 0, 1).await;
        assert_eq!(laggard(&quorum.borrow()), Some(2));
        stall.send(true).unwrap();
        // One commit, nothing after it: commit_one gives up after 20 s, long before 600.
        let end = commit_one(&p, 1, 1).await;
        let q = quorum.borrow().clone();
        assert!(
            q.peers[0].flush < Some(end),
            "the stalled one cannot have answered: {q:?}"
        );
        assert!(
            q.peers[1].flush >= Some(end) && q.peers[2].flush >= Some(end),
            "durable on the other eager one and the laggard: {q:?}"
        );
        assert!(end > first);
        stall.send(false).unwrap();
    }

    /// The laggard's look at the others: it gathers while the durable position reaches, at
    /// each look, the end of the log as it stood at the look before, and must send once it
    /// does not (or nothing is durable at all).
    #[test]
    fn the_laggard_gathers_only_while_the_others_keep_up() {
        let t0 = tokio::time::Instant::now();
        let every = Duration::from_millis(5);
        let mut k = KeepUp::default();
        // The first look only records where the log ends.
        assert_eq!(k.look(t0, 100, Some(50), every), Some(t0 + every));
        // Before the next look is due, nothing is judged.
        assert_eq!(
            k.look(t0 + every / 2, 180, Some(50), every),
            Some(t0 + every)
        );
        // Due: 100 is durable, so gather on, now owing 200 by the next look.
        assert_eq!(
            k.look(t0 + every, 200, Some(100), every),
            Some(t0 + every * 2)
        );
        // Due again, and 200 is not durable: send.
        assert_eq!(k.look(t0 + every * 2, 260, Some(199), every), None);
        // Nothing durable at all is not keeping up either.
        let mut k = KeepUp::default();
        assert!(k.look(t0, 10, None, every).is_some());
        assert_eq!(k.look(t0 + every, 10, None, every), None);
    }

    /// The largest transaction reaches the laggard at once rather than after its linger: more
    /// than [`LAGGARD_BYTES`] waiting is sent without gathering.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_largest_transaction_reaches_the_laggard_without_its_linger() {
        // A linger the test would not outlast.
        let (_dir, _stop, p) = started(Duration::from_secs(600), Duration::from_secs(60)).await;
        let quorum = p.watch_quorum();
        assert_eq!(laggard(&quorum.borrow()), Some(2));
        // One key whose value fills the largest frame a committer appends.
        let probe = {
            let m = ferrisdb_common::wal::Mutation::Set {
                key: Bytes::from_static(b"k0"),
                value: Bytes::new(),
            };
            ferrisdb_common::wal::encode_frame(0, 0, &[m]).0.len()
        };
        let largest = ferrisdb_common::message_size::MAX_FRAME_BYTES - probe;
        let end = commit_one(&p, 0, largest).await;
        assert!(end >= ferrisdb_common::message_size::MAX_FRAME_BYTES as u64);
        poll_until(&quorum, "the laggard waited out its linger", |q| {
            q.peers[2].flush == Some(end)
        })
        .await;
    }

    /// A safekeeper is slow from the moment its oldest unanswered append has waited
    /// [`SLOW_AFTER`], and no longer once that one is answered and the next is not as old.
    #[test]
    fn a_safekeeper_is_slow_while_its_oldest_unanswered_append_is_overdue() {
        let t0 = tokio::time::Instant::now();
        let ms = Duration::from_millis;
        let mut u = Unanswered::default();
        assert_eq!(u.slow_at(SLOW_AFTER), None);
        assert!(
            !u.slow(t0 + ms(1000), SLOW_AFTER),
            "nothing sent: never slow"
        );
        u.sent(t0);
        u.sent(t0 + ms(4));
        assert_eq!(u.slow_at(SLOW_AFTER), Some(t0 + SLOW_AFTER));
        assert!(!u.slow(t0 + SLOW_AFTER - ms(1), SLOW_AFTER));
        assert!(u.slow(t0 + SLOW_AFTER, SLOW_AFTER));
        // The first answered: the second, sent 4 ms later, is what it is late with now.
        u.answered();
        assert!(!u.slow(t0 + SLOW_AFTER, SLOW_AFTER));
        assert!(u.slow(t0 + ms(4) + SLOW_AFTER, SLOW_AFTER));
        u.answered();
        assert!(u.is_empty());
        assert!(!u.slow(t0 + ms(1000), SLOW_AFTER));
    }

    #[test]
    fn durable_lsn_is_the_majority_minimum() {
        let p = |flush| PeerState {
            up: true,
            flush,
            ..PeerState::default()
        };
        let q = Quorum {
            peers: vec![p(Some(300)), p(Some(100)), p(Some(200))],
            fenced: None,
        };
        assert_eq!(q.durable_lsn(), Some(200));
        let q = Quorum {
            peers: vec![p(Some(300)), PeerState::default(), PeerState::default()],
            fenced: None,
        };
        assert_eq!(q.durable_lsn(), None);
        assert!(!q.quorum_up());
    }
}
