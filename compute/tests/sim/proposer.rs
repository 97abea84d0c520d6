//! The simulated proposer: the real proposer's protocol (compute/src/proposer.rs) as a
//! message-driven state machine, making its decisions with the real pure functions
//! ([`next_term`], [`plan_election`], [`Quorum::durable_lsn`], [`read_sources`]).
//!
//! Election: ask every acceptor for its term; with a majority of answers ask for one above
//! the highest; with a majority of votes plan the log from the voters' positions. Then one
//! stream per acceptor: `Elected`, then appends of what it lacks from where its log ends (WAL
//! below the election point is read from the donor or an acceptor in sync, as the real
//! proposer does), with the commit position. A stream whose messages go unanswered is
//! dropped and reconnected (a new `Elected`, a new session), as a broken gRPC stream is.
//! The log counts as recovered once a majority holds it to the election point; records are
//! appended after that and acknowledged once a majority has flushed them.

use std::collections::VecDeque;

use bytes::Bytes;
use ferrisdb_common::wal::{Mutation, encode_frame};
use ferrisdb_common::{Error, ErrorKind, Lsn};
use ferrisdb_compute::proposer::{PeerState, Quorum, next_term, read_sources};
use ferrisdb_server_common::term_history::{ElectionPlan, TermSwitch, Vote, plan_election};
use ferrisdb_wal_service::acceptor::{AcceptorStatus, ProposerId};

use super::net::Rng;
use super::{Bugs, Msg, Reply, World};

/// How long an answer may take before the request counts as failed.
const RPC_TIMEOUT: u64 = 200;
/// Pause before a dropped stream reconnects.
const RECONNECT: u64 = 10;
/// An idle stream sends an empty append this often.
const KEEPALIVE: u64 = 100;
/// Appends sent but not answered on one stream.
const MAX_IN_FLIGHT: usize = 4;
/// Records per append message.
const MAX_APPEND_FRAMES: usize = 3;

/// One proposer process (a compute that may become primary).
pub struct PNode {
    pub alive: bool,
    pub phase: Phase,
    round: u64,
    next_election: u64,
    records: u64,
    tag: u64,
}

/// Where a proposer is in its life.
pub enum Phase {
    Idle,
    Status {
        round: u64,
        started: u64,
        terms: Vec<Option<u64>>,
    },
    Voting {
        round: u64,
        started: u64,
        term: u64,
        id: ProposerId,
        votes: Vec<Option<Result<(bool, AcceptorStatus), Error>>>,
    },
    Leader(Box<Leader>),
}

/// An elected proposer.
pub struct Leader {
    pub term: u64,
    id: ProposerId,
    history: Vec<TermSwitch>,
    /// The voter whose log became ours, and where that log ended.
    donor: (usize, Lsn),
    /// Where our own term starts writing; everything below is the donor's log.
    pub elected_end: Lsn,
    /// Our own records, `(begin, bytes)`, from `elected_end` on.
    frames: Vec<(Lsn, Vec<u8>)>,
    end: Lsn,
    pub commit: Lsn,
    pub quorum: Quorum,
    streams: Vec<Stream>,
    pub recovered: bool,
    /// Records (indexes into `frames`) not yet acknowledged.
    pending: VecDeque<usize>,
    next_epoch: u64,
    bugs: Bugs,
    /// The liveness check behind a read version, while one runs.
    check: Option<ReadCheck>,
}

/// One `confirm_term` (docs/wal-protocol.md, "Linearizable reads"): the version `v` visible
/// when it began, and the highest record any proposer had acknowledged by then, which `v`
/// must cover if the check succeeds.
struct ReadCheck {
    round: u64,
    started: u64,
    v: Lsn,
    floor: Lsn,
    confirmed: Vec<bool>,
}

enum Stream {
    Down {
        retry_at: u64,
    },
    Electing {
        epoch: u64,
        since: u64,
    },
    Up {
        epoch: u64,
        session: u64,
        sent: Lsn,
        in_flight: usize,
        last_heard: u64,
        last_sent: u64,
        commit_sent: Lsn,
        reading: Option<Reading>,
    },
}

/// A `ReadWal` in progress for WAL below the election point.
struct Reading {
    from: Lsn,
    sources: Vec<(usize, Lsn)>,
    since: u64,
}

/// What handling one input produced, applied to the world afterwards.
#[derive(Default)]
struct Out {
    msgs: Vec<(usize, Msg)>,
    acks: Vec<(Lsn, Vec<u8>)>,
    fenced: Option<String>,
    violation: Option<String>,
    reads: u64,
    /// `ReadWal`s sent to copy WAL below the election point.
    copies: u64,
    /// Streams dropped because the WAL wanted was neither in the buffer nor below it.
    buffer_misses: u64,
}

impl PNode {
    pub fn new(rng: &mut Rng) -> PNode {
        PNode {
            alive: true,
            phase: Phase::Idle,
            round: 0,
            next_election: rng.range(0, 300),
            records: 0,
            tag: rng.next_u64(),
        }
    }
}

/// Whether proposer `p` leads and holds its elected log on a majority.
pub fn recovered(p: &PNode) -> bool {
    matches!(&p.phase, Phase::Leader(l) if l.recovered)
}

/// Begins an election: ask every acceptor for its term.
pub fn start_election(w: &mut World, pid: usize) {
    let now = w.q.now;
    let p = &mut w.proposers[pid];
    p.round += 1;
    let round = p.round;
    p.phase = Phase::Status {
        round,
        started: now,
        terms: vec![None; w.n],
    };
    for a in 0..w.n {
        w.send_to_acceptor(pid, a, Msg::Status { round });
    }
}

fn give_up(w: &mut World, pid: usize, backoff: (u64, u64)) {
    let wait = w.rng.range(backoff.0, backoff.1);
    let p = &mut w.proposers[pid];
    p.phase = Phase::Idle;
    p.next_election = w.q.now + wait;
}

/// With the terms of every acceptor that answered: ask for the next term.
fn ask_votes(w: &mut World, pid: usize) {
    let Phase::Status { round, terms, .. } = &w.proposers[pid].phase else {
        return;
    };
    let round = *round;
    let reported: Vec<u64> = terms.iter().flatten().copied().collect();
    if reported.len() < w.majority() {
        give_up(w, pid, (50, 600));
        return;
    }
    let Ok(term) = next_term(reported) else {
        give_up(w, pid, (50, 600));
        return;
    };
    let id = w.rng.u128();
    w.proposers[pid].phase = Phase::Voting {
        round,
        started: w.q.now,
        term,
        id,
        votes: (0..w.n).map(|_| None).collect(),
    };
    for a in 0..w.n {
        w.send_to_acceptor(pid, a, Msg::Vote { round, term, id });
    }
}

/// The planted bug [`Bugs::donor_by_length`]: the longest log wins, whatever its term.
fn plan(term: u64, votes: &[Vote], bugs: Bugs) -> Option<ElectionPlan> {
    let plan = plan_election(term, votes, 0)?;
    if !bugs.donor_by_length {
        return Some(plan);
    }
    let (donor, v) = votes.iter().enumerate().max_by_key(|(_, v)| v.flush_lsn)?;
    let mut history = v.history.clone();
    history.push(TermSwitch {
        term,
        lsn: v.flush_lsn,
    });
    Some(ElectionPlan {
        donor,
        end: v.flush_lsn,
        history,
        log_start: 0,
        commit: plan.commit.min(v.flush_lsn),
    })
}

/// With every vote in (or the timeout): lead with a majority, else try again later.
fn count_votes(w: &mut World, pid: usize) {
    let Phase::Voting {
        term, id, votes, ..
    } = &w.proposers[pid].phase
    else {
        return;
    };
    let (term, id) = (*term, *id);
    let granted: Vec<(usize, AcceptorStatus)> = votes
        .iter()
        .enumerate()
        .filter_map(|(i, v)| match v {
            Some(Ok((true, st))) => Some((i, st.clone())),
            _ => None,
        })
        .collect();
    if granted.len() < w.majority() {
        give_up(w, pid, (50, 600));
        return;
    }
    let votes: Vec<Vote> = granted
        .iter()
        .map(|(_, s)| Vote {
            history: s.history.clone(),
            flush_lsn: s.flush_lsn,
            commit_lsn: s.commit_lsn,
        })
        .collect();
    let Some(plan) = plan(term, &votes, w.cfg.bugs) else {
        give_up(w, pid, (50, 600));
        return;
    };
    w.won(pid, term, id);
    let round = w.proposers[pid].round;
    let leader = Leader {
        term,
        id,
        history: plan.history,
        donor: (granted[plan.donor].0, plan.end),
        elected_end: plan.end,
        frames: Vec::new(),
        end: plan.end,
        commit: plan.commit,
        quorum: Quorum {
            peers: vec![PeerState::default(); w.n],
            fenced: None,
        },
        streams: (0..w.n).map(|_| Stream::Down { retry_at: 0 }).collect(),
        recovered: false,
        pending: VecDeque::new(),
        next_epoch: round << 32,
        bugs: w.cfg.bugs,
        check: None,
    };
    w.proposers[pid].phase = Phase::Leader(Box::new(leader));
    on_tick(w, pid);
}

/// Applies what a leader's step produced.
fn apply(w: &mut World, pid: usize, out: Out) {
    for (a, m) in out.msgs {
        w.send_to_acceptor(pid, a, m);
    }
    for (begin, bytes) in out.acks {
        w.acknowledge(begin, bytes);
    }
    w.stats.reads += out.reads;
    w.stats.wal_copies += out.copies;
    w.stats.buffer_misses += out.buffer_misses;
    if let Some(v) = out.violation {
        w.violate(format!("p{pid}: {v}"));
    }
    if let Some(why) = out.fenced {
        w.note(|| format!("p{pid} fenced: {why}"));
        give_up(w, pid, (100, 1500));
    }
}

/// Timers: election timeouts, stream reconnects and keep-alives, new client records.
pub fn on_tick(w: &mut World, pid: usize) {
    let now = w.q.now;
    match &w.proposers[pid].phase {
        Phase::Idle => {
            if now >= w.proposers[pid].next_election {
                start_election(w, pid);
            }
        }
        Phase::Status { started, .. } => {
            if now >= started + RPC_TIMEOUT {
                ask_votes(w, pid);
            }
        }
        Phase::Voting { started, .. } => {
            if now >= started + RPC_TIMEOUT {
                count_votes(w, pid);
            }
        }
        Phase::Leader(_) => {
            let mut values = Vec::new();
            if w.rng.chance(350) {
                for _ in 0..w.rng.range(1, 4) {
                    let len = w.rng.range(1, 48) as usize;
                    let v: Vec<u8> = (0..len).map(|_| w.rng.next_u64() as u8).collect();
                    values.push(v);
                }
            }
            let read = w.rng.chance(200);
            let floor = w.max_acked_end;
            let node = &mut w.proposers[pid];
            let tag = node.tag;
            let Phase::Leader(l) = &mut node.phase else {
                return;
            };
            let mut out = Out::default();
            if l.recovered {
                for v in values {
                    node.records += 1;
                    let key = format!("p{tag:x}-{}", node.records);
                    l.add_record(key, v, now);
                }
            }
            for a in 0..l.streams.len() {
                l.service(a, now, &mut out);
            }
            if l.check
                .as_ref()
                .is_some_and(|c| now >= c.started + RPC_TIMEOUT)
            {
                // No majority in time: the read is refused `unavailable`, never stale.
                l.check = None;
            }
            if read && l.recovered && l.bugs.read_without_check {
                // The planted bug: the version is handed out with no check at all.
                if l.commit < floor {
                    out.violation = Some(format!(
                        "term {} handed out read version {} though a record ending at {floor} \
                         was acknowledged before the read began",
                        l.term, l.commit
                    ));
                }
                out.reads += 1;
            } else if read && l.recovered && l.check.is_none() {
                let round = l.next_epoch;
                l.next_epoch += 1;
                l.check = Some(ReadCheck {
                    round,
                    started: now,
                    v: l.commit,
                    floor,
                    confirmed: vec![false; l.streams.len()],
                });
                for a in 0..l.streams.len() {
                    out.msgs.push((a, Msg::Status { round }));
                }
            }
            apply(w, pid, out);
        }
    }
}

/// An acceptor's answer.
pub fn on_reply(w: &mut World, pid: usize, acc: usize, reply: Reply) {
    let now = w.q.now;
    let node = &mut w.proposers[pid];
    match (&mut node.phase, reply) {
        (Phase::Status { round, terms, .. }, Reply::Status { round: r, term }) if *round == r => {
            terms[acc] = Some(term);
            if terms.iter().all(Option::is_some) {
                ask_votes(w, pid);
            }
        }
        (Phase::Voting { round, votes, .. }, Reply::Vote { round: r, result }) if *round == r => {
            votes[acc] = Some(result);
            if votes.iter().all(Option::is_some) {
                count_votes(w, pid);
            }
        }
        (Phase::Leader(l), reply) => {
            let mut out = Out::default();
            match reply {
                Reply::Elected { epoch, result } => l.on_elected(acc, epoch, result, now, &mut out),
                Reply::Append { epoch, result } => l.on_append(acc, epoch, result, now, &mut out),
                Reply::ReadWal {
                    epoch,
                    target,
                    start,
                    result,
                } => l.on_read(target, epoch, start, result, now, &mut out),
                Reply::Status { round, term } => l.on_check(acc, round, term, &mut out),
                _ => {}
            }
            apply(w, pid, out);
        }
        _ => {}
    }
}

impl Leader {
    /// An answer to the liveness check: a newer term fences us; a majority no newer
    /// confirms the version taken when the check began.
    fn on_check(&mut self, acc: usize, round: u64, term: u64, out: &mut Out) {
        let Some(c) = &mut self.check else { return };
        if c.round != round {
            return;
        }
        if term > self.term {
            out.fenced = Some(format!("sk{acc} promised term {term}, newer than ours"));
            self.check = None;
            return;
        }
        c.confirmed[acc] = true;
        if c.confirmed.iter().filter(|&&x| x).count() > c.confirmed.len() / 2 {
            if c.v < c.floor {
                out.violation = Some(format!(
                    "term {} handed out read version {} though a record ending at {} was \
                     acknowledged before the read began",
                    self.term, c.v, c.floor
                ));
            }
            out.reads += 1;
            self.check = None;
        }
    }

    fn epoch(&self, acc: usize) -> Option<u64> {
        match &self.streams[acc] {
            Stream::Down { .. } => None,
            Stream::Electing { epoch, .. } | Stream::Up { epoch, .. } => Some(*epoch),
        }
    }

    fn add_record(&mut self, key: String, value: Vec<u8>, now: u64) {
        let m = Mutation::Set {
            key: Bytes::from(key),
            value: Bytes::from(value),
        };
        let (frame, _) = encode_frame(self.end, now, &[m]);
        self.frames.push((self.end, frame.to_vec()));
        self.pending.push_back(self.frames.len() - 1);
        self.end += frame.len() as Lsn;
    }

    /// A stream broke: the acceptor no longer counts, and it reconnects shortly.
    fn down(&mut self, acc: usize, now: u64) {
        self.streams[acc] = Stream::Down {
            retry_at: now + RECONNECT,
        };
        self.quorum.peers[acc] = PeerState::default();
    }

    fn fail(&mut self, acc: usize, e: &Error, now: u64, out: &mut Out) {
        if e.kind() == ErrorKind::Fenced {
            out.fenced.get_or_insert_with(|| e.message().to_string());
        }
        self.down(acc, now);
    }

    /// Reconnects, times out and keeps alive stream `acc`, then sends what it can.
    fn service(&mut self, acc: usize, now: u64, out: &mut Out) {
        match &mut self.streams[acc] {
            Stream::Down { retry_at } if now >= *retry_at => {
                let epoch = self.next_epoch;
                self.next_epoch += 1;
                self.streams[acc] = Stream::Electing { epoch, since: now };
                out.msgs.push((
                    acc,
                    Msg::Elected {
                        epoch,
                        term: self.term,
                        id: self.id,
                        history: self.history.clone(),
                    },
                ));
            }
            Stream::Electing { since, .. } if now >= *since + RPC_TIMEOUT => self.down(acc, now),
            Stream::Up {
                in_flight,
                last_heard,
                last_sent,
                commit_sent,
                reading,
                ..
            } => {
                if let Some(r) = reading {
                    if now >= r.since + RPC_TIMEOUT {
                        let next = r.sources.first().map(|s| s.0);
                        let from = r.from;
                        self.next_source(acc, from, next, now, out);
                    }
                } else if *in_flight > 0 && now >= *last_heard + RPC_TIMEOUT {
                    // An answer went missing: on a real stream that is a broken connection.
                    self.down(acc, now);
                } else {
                    if *in_flight == 0 && now >= *last_sent + KEEPALIVE {
                        *commit_sent = 0;
                    }
                    self.pump(acc, now, out);
                }
            }
            _ => {}
        }
    }

    /// Sends stream `acc` what it lacks, as the real replication loop does.
    fn pump(&mut self, acc: usize, now: u64, out: &mut Out) {
        loop {
            let Stream::Up {
                sent,
                in_flight,
                commit_sent,
                reading,
                ..
            } = &self.streams[acc]
            else {
                return;
            };
            if reading.is_some() {
                return;
            }
            let (sent, in_flight, commit_sent) = (*sent, *in_flight, *commit_sent);
            if sent < self.end && in_flight < MAX_IN_FLIGHT {
                if sent >= self.elected_end {
                    let i = self.frames.partition_point(|(b, _)| *b < sent);
                    if self.frames.get(i).map(|f| f.0) != Some(sent) {
                        // The real proposer's `frames_from` fails the stream ("buffer does
                        // not hold LSN"): it reconnects, and `Elected` sets it straight.
                        out.buffer_misses += 1;
                        self.down(acc, now);
                        return;
                    }
                    let bytes: Vec<u8> = self.frames[i..]
                        .iter()
                        .take(MAX_APPEND_FRAMES)
                        .flat_map(|(_, f)| f.iter().copied())
                        .collect();
                    self.send_append(acc, bytes, now, out);
                } else {
                    // Below the election point: read it from a safekeeper that holds it.
                    let sources = read_sources(&self.quorum, self.donor, acc, sent);
                    let Some(&(src, f)) = sources.first() else {
                        self.down(acc, now);
                        return;
                    };
                    out.copies += 1;
                    out.msgs.push((
                        src,
                        Msg::ReadWal {
                            epoch: self.epoch(acc).unwrap_or(0),
                            target: acc,
                            start: sent,
                            end: self.elected_end.min(f),
                        },
                    ));
                    if let Stream::Up { reading, .. } = &mut self.streams[acc] {
                        *reading = Some(Reading {
                            from: sent,
                            sources,
                            since: now,
                        });
                    }
                    return;
                }
            } else if commit_sent < self.commit && in_flight == 0 {
                self.send_append(acc, Vec::new(), now, out);
            } else {
                return;
            }
        }
    }

    fn send_append(&mut self, acc: usize, frames: Vec<u8>, now: u64, out: &mut Out) {
        let (term, commit) = (self.term, self.commit);
        let Stream::Up {
            epoch,
            session,
            sent,
            in_flight,
            last_heard,
            last_sent,
            commit_sent,
            ..
        } = &mut self.streams[acc]
        else {
            return;
        };
        if *in_flight == 0 {
            *last_heard = now;
        }
        out.msgs.push((
            acc,
            Msg::Append {
                epoch: *epoch,
                term,
                session: *session,
                begin: *sent,
                commit,
                frames: frames.clone(),
            },
        ));
        *sent += frames.len() as Lsn;
        *in_flight += 1;
        *last_sent = now;
        *commit_sent = commit;
    }

    /// Tries the next source for a read that failed (`failed` was the one asked).
    fn next_source(
        &mut self,
        acc: usize,
        from: Lsn,
        failed: Option<usize>,
        now: u64,
        out: &mut Out,
    ) {
        let epoch = self.epoch(acc).unwrap_or(0);
        let elected_end = self.elected_end;
        let Stream::Up {
            reading: Some(r), ..
        } = &mut self.streams[acc]
        else {
            return;
        };
        if r.from != from || r.sources.first().map(|s| s.0) != failed {
            return;
        }
        r.sources.remove(0);
        match r.sources.first() {
            Some(&(src, f)) => {
                r.since = now;
                out.msgs.push((
                    src,
                    Msg::ReadWal {
                        epoch,
                        target: acc,
                        start: from,
                        end: elected_end.min(f),
                    },
                ));
            }
            None => self.down(acc, now),
        }
    }

    fn on_elected(
        &mut self,
        acc: usize,
        epoch: u64,
        result: Result<(Lsn, u64), Error>,
        now: u64,
        out: &mut Out,
    ) {
        if !matches!(self.streams[acc], Stream::Electing { epoch: e, .. } if e == epoch) {
            return;
        }
        match result {
            Ok((flush, session)) => {
                self.streams[acc] = Stream::Up {
                    epoch,
                    session,
                    sent: flush,
                    in_flight: 0,
                    last_heard: now,
                    last_sent: now,
                    commit_sent: 0,
                    reading: None,
                };
                self.quorum.peers[acc] = PeerState {
                    up: true,
                    flush: Some(flush),
                    ..PeerState::default()
                };
                self.on_quorum(now, out);
                self.pump(acc, now, out);
            }
            Err(e) => self.fail(acc, &e, now, out),
        }
    }

    fn on_append(
        &mut self,
        acc: usize,
        epoch: u64,
        result: Result<Lsn, Error>,
        now: u64,
        out: &mut Out,
    ) {
        let Stream::Up {
            epoch: e,
            in_flight,
            last_heard,
            ..
        } = &mut self.streams[acc]
        else {
            return;
        };
        if *e != epoch {
            return;
        }
        match result {
            Ok(flush) => {
                *in_flight = in_flight.saturating_sub(1);
                *last_heard = now;
                let p = &mut self.quorum.peers[acc];
                // Answers of one stream may arrive out of order here (not on a real
                // stream); each reported a log end durable in this term, so take the
                // highest.
                p.flush = Some(p.flush.map_or(flush, |f| f.max(flush)));
                self.on_quorum(now, out);
                self.pump(acc, now, out);
            }
            Err(e) => self.fail(acc, &e, now, out),
        }
    }

    fn on_read(
        &mut self,
        target: usize,
        epoch: u64,
        start: Lsn,
        result: Result<Vec<u8>, Error>,
        now: u64,
        out: &mut Out,
    ) {
        if self.epoch(target) != Some(epoch) {
            return;
        }
        let Stream::Up {
            reading: Some(r),
            sent,
            ..
        } = &mut self.streams[target]
        else {
            return;
        };
        if r.from != start {
            return;
        }
        let asked = r.sources.first().map(|s| s.0);
        match result {
            Ok(bytes) if !bytes.is_empty() && *sent == start => {
                self.streams_reading_done(target);
                self.send_append(target, bytes, now, out);
                self.pump(target, now, out);
            }
            _ => self.next_source(target, start, asked, now, out),
        }
    }

    fn streams_reading_done(&mut self, acc: usize) {
        if let Stream::Up { reading, .. } = &mut self.streams[acc] {
            *reading = None;
        }
    }

    /// The quorum changed: maybe the elected log is recovered, maybe records are durable.
    fn on_quorum(&mut self, now: u64, out: &mut Out) {
        let durable = if self.bugs.commit_on_one_flush {
            self.quorum.peers.iter().filter_map(|p| p.flush).max()
        } else {
            self.quorum.durable_lsn()
        };
        let Some(durable) = durable else {
            return;
        };
        let before = self.commit;
        if !self.recovered && durable >= self.elected_end {
            self.recovered = true;
            self.commit = self.commit.max(self.elected_end);
        }
        if self.recovered {
            while let Some(&i) = self.pending.front() {
                let (begin, bytes) = &self.frames[i];
                let end = begin + bytes.len() as Lsn;
                if end > durable {
                    break;
                }
                out.acks.push((*begin, bytes.clone()));
                self.commit = self.commit.max(end);
                self.pending.pop_front();
            }
        }
        if self.commit != before {
            // The new commit position goes out on every idle stream.
            for a in 0..self.streams.len() {
                self.pump(a, now, out);
            }
        }
    }
}
