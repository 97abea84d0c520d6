//! Deterministic simulation of the WAL protocol (docs/wal-protocol.md, "Simulation").
//!
//! Three real [`Acceptor`]s (wal-service's state machine over its real segment files and
//! control file, on tmpfs) and up to three proposers exchange messages through a simulated
//! network that loses, duplicates, delays and reorders them and partitions any subsets of
//! nodes. Acceptors crash and restart, sometimes in the middle of an append (the unsynced
//! suffix is cut off the tail segment, a torn write for the real recovery code to find);
//! proposers crash, restart with new ids and compete for terms. The proposers make the real
//! proposer's decisions: [`plan_election`] picks the donor and history, [`next_term`] the
//! term, [`Quorum::durable_lsn`] the commit position, [`read_sources`] where WAL below the
//! election point is read from. Everything is driven by one seeded event queue: no threads,
//! no clock, so a seed replays exactly.
//!
//! The invariants are checked as the run goes and once more at the end ([`World::run`]).

pub mod net;
mod proposer;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use ferrisdb_common::{Error, Lsn};
use ferrisdb_server_common::term_history::TermSwitch;
use ferrisdb_wal_service::acceptor::{Acceptor, AcceptorStatus, AppendArgs, ProposerId};

use net::{Queue, Rng};
use proposer::{PNode, Phase};

/// Network node ids: acceptors are `0..n`, proposer `p` is `NODE_OFFSET + p`.
const NODE_OFFSET: usize = 8;
/// A small segment size, so logs span several segment files (and torn writes hit them).
const SEGMENT: u64 = 2048;
/// Simulated time between two ticks of every proposer (and of the commit persister).
const TICK: u64 = 20;
/// How long the final, healthy-network election may take before the run counts as failed.
const FINAL_LIMIT: u64 = 20_000;

/// Bugs planted on purpose, to show that the simulation catches them. Never set in the
/// normal runs; none of them touches production code.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bugs {
    /// The acceptor answers appends before its WAL is durable: a crash loses WAL it already
    /// acknowledged (modelled by cutting the log back past acknowledged appends).
    pub ack_before_fsync: bool,
    /// The proposer picks the donor by log length alone, ignoring the last term.
    pub donor_by_length: bool,
    /// The proposer counts a record durable once any one acceptor has flushed it.
    pub commit_on_one_flush: bool,
    /// The primary hands out read versions without confirming its term on a majority.
    pub read_without_check: bool,
}

/// One simulation run.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Everything random in the run derives from it.
    pub seed: u64,
    /// Simulated time during which faults are injected.
    pub duration: u64,
    /// Planted bugs (none in normal runs).
    pub bugs: Bugs,
}

/// What a run did (for the figures printed by the test).
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub events: u64,
    pub elections_won: u64,
    pub acked: u64,
    /// Read versions handed out after a successful liveness check.
    pub reads: u64,
    /// `ReadWal`s a leader sent to copy WAL below its election point to a lagging acceptor.
    pub wal_copies: u64,
    /// Streams a leader dropped because the WAL to send was not in its buffer (a copy read
    /// from a peer overshot the election point).
    pub buffer_misses: u64,
    pub acceptor_crashes: u64,
    pub torn_crashes: u64,
    pub proposer_crashes: u64,
    pub partitions: u64,
}

/// A request from a proposer to an acceptor.
#[derive(Debug, Clone)]
enum Msg {
    Status {
        round: u64,
    },
    Vote {
        round: u64,
        term: u64,
        id: ProposerId,
    },
    Elected {
        epoch: u64,
        term: u64,
        id: ProposerId,
        history: Vec<TermSwitch>,
    },
    Append {
        epoch: u64,
        term: u64,
        session: u64,
        begin: Lsn,
        frames: Vec<u8>,
        commit: Lsn,
    },
    /// A bounded `ReadWal` (the proposer copying WAL below its election point).
    ReadWal {
        epoch: u64,
        target: usize,
        start: Lsn,
        end: Lsn,
    },
}

/// An acceptor's answer.
#[derive(Debug, Clone)]
enum Reply {
    Status {
        round: u64,
        term: u64,
    },
    Vote {
        round: u64,
        result: Result<(bool, AcceptorStatus), Error>,
    },
    Elected {
        epoch: u64,
        result: Result<(Lsn, u64), Error>,
    },
    Append {
        epoch: u64,
        result: Result<Lsn, Error>,
    },
    ReadWal {
        epoch: u64,
        target: usize,
        start: Lsn,
        result: Result<Vec<u8>, Error>,
    },
}

#[derive(Debug)]
enum Event {
    ToAcceptor {
        from: usize,
        acc: usize,
        msg: Msg,
    },
    ToProposer {
        acc: usize,
        pid: usize,
        reply: Reply,
    },
    Tick,
    Nemesis,
    Restart {
        acc: usize,
        incarnation: u64,
    },
}

/// One acceptor: the real state machine plus what the harness knows about it.
struct ANode {
    dir: PathBuf,
    acc: Acceptor,
    up: bool,
    incarnation: u64,
    /// The highest term it ever reported: a promise never goes back.
    max_term: u64,
    /// Crash in the middle of the next append that carries WAL, or of the next `Elected`
    /// that truncates.
    crash_in_write: bool,
    /// With [`Bugs::ack_before_fsync`]: where its WAL is really durable.
    lazily_synced: Lsn,
    appends_since_sync: u32,
    /// Its log below here, all below its commit position, was found equal to the committed
    /// log.
    verified: Lsn,
    /// Its log below here was found equal to the committed log (commit position or not).
    holds: Lsn,
}

/// The simulated world.
pub struct World {
    cfg: Config,
    /// Acceptors in the simulated cluster.
    pub n: usize,
    rng: Rng,
    q: Queue<Event>,
    acceptors: Vec<ANode>,
    proposers: Vec<PNode>,
    /// Partition group per network node (acceptors first, then proposers); `None`: healed.
    groups: Option<Vec<u8>>,
    loss: u64,
    dup: u64,
    max_delay: u64,
    /// The committed log as far as anyone knows it: the bytes below the highest commit
    /// position any acceptor reported. Every acceptor's bytes below its own commit position
    /// must equal it.
    committed: Vec<u8>,
    /// Records acknowledged to clients, as `(begin, bytes)`.
    acked: Vec<(Lsn, Vec<u8>)>,
    /// The end of the highest record acknowledged so far.
    max_acked_end: Lsn,
    /// Acknowledged records not yet covered by `committed`, checked one by one.
    unverified: Vec<usize>,
    /// Who completed an election in each term.
    winners: BTreeMap<u64, (usize, ProposerId)>,
    violation: Option<String>,
    trace: VecDeque<String>,
    pub stats: Stats,
    healing: bool,
    _tmp: tempfile::TempDir,
}

fn scratch() -> tempfile::TempDir {
    // tmpfs when there is one: the acceptors fsync a lot, and the simulation's crashes are
    // its own (a torn tail is cut by hand), so the disk's durability is not what is tested.
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::Builder::new()
            .prefix("ferrisdb-sim")
            .tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().expect("a scratch directory")
}

impl World {
    /// How many acceptors make a majority.
    pub fn majority(&self) -> usize {
        self.n / 2 + 1
    }

    pub fn new(cfg: Config) -> World {
        let mut rng = Rng::new(cfg.seed);
        let tmp = scratch();
        // Three acceptors mostly (as deployed), five in a third of the seeds.
        let n = if rng.chance(333) { 5 } else { 3 };
        let acceptors = (0..n)
            .map(|i| {
                let dir = tmp.path().join(format!("sk{i}"));
                let acc = Acceptor::open_with(dir.clone(), SEGMENT).expect("a fresh acceptor");
                ANode {
                    dir,
                    acc,
                    up: true,
                    incarnation: 0,
                    max_term: 0,
                    crash_in_write: false,
                    lazily_synced: 0,
                    appends_since_sync: 0,
                    verified: 0,
                    holds: 0,
                }
            })
            .collect();
        let loss = rng.range(0, 120);
        let dup = rng.range(0, 60);
        let max_delay = rng.range(2, 60);
        let proposers = (0..rng.range(1, 4)).map(|_| PNode::new(&mut rng)).collect();
        World {
            cfg,
            n,
            rng,
            q: Queue::new(),
            acceptors,
            proposers,
            groups: None,
            loss,
            dup,
            max_delay,
            committed: Vec::new(),
            acked: Vec::new(),
            max_acked_end: 0,
            unverified: Vec::new(),
            winners: BTreeMap::new(),
            violation: None,
            trace: VecDeque::new(),
            stats: Stats::default(),
            healing: false,
            _tmp: tmp,
        }
    }

    /// Runs the faulty phase, then heals everything and runs a final election by a fresh
    /// proposer, which must recover every acknowledged record. `Err` describes the first
    /// invariant violated, with the last events before it.
    pub fn run(mut self) -> Result<Stats, String> {
        self.q.at(0, Event::Tick);
        self.q.at(self.rng.range(0, 200), Event::Nemesis);
        while self.violation.is_none() {
            let Some(e) = self.q.pop() else { break };
            if self.q.now > self.cfg.duration {
                // Put it back: the final phase handles it.
                self.q.at(self.q.now, e);
                break;
            }
            self.stats.events += 1;
            self.handle(e);
        }
        if self.violation.is_none() {
            self.final_phase();
        }
        match self.violation.take() {
            None => Ok(self.stats),
            Some(v) => {
                let trace: Vec<String> = self.trace.iter().cloned().collect();
                Err(format!("{v}\n--- last events ---\n{}", trace.join("\n")))
            }
        }
    }

    fn note(&mut self, what: impl FnOnce() -> String) {
        if self.trace.len() >= 60 {
            self.trace.pop_front();
        }
        let line = format!("[{:>6}] {}", self.q.now, what());
        self.trace.push_back(line);
    }

    fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(format!("at time {}: {what}", self.q.now));
        }
    }

    fn handle(&mut self, e: Event) {
        match e {
            Event::Tick => {
                self.tick();
                self.q.after(TICK, Event::Tick);
            }
            Event::Nemesis => {
                if !self.healing {
                    self.nemesis();
                    let next = self.rng.range(30, 400);
                    self.q.after(next, Event::Nemesis);
                }
            }
            Event::Restart { acc, incarnation } => {
                let a = &mut self.acceptors[acc];
                if !a.up && a.incarnation == incarnation {
                    a.up = true;
                    self.note(|| format!("sk{acc} restarts"));
                }
            }
            Event::ToAcceptor { from, acc, msg } => {
                if !self.acceptors[acc].up || self.cut(from, acc) {
                    return;
                }
                self.on_acceptor(from, acc, msg);
            }
            Event::ToProposer { acc, pid, reply } => {
                if !self.proposers[pid].alive || self.cut(acc, NODE_OFFSET + pid) {
                    return;
                }
                proposer::on_reply(self, pid, acc, reply);
            }
        }
    }

    fn tick(&mut self) {
        for pid in 0..self.proposers.len() {
            if self.proposers[pid].alive {
                proposer::on_tick(self, pid);
            }
        }
        if (self.q.now / TICK).is_multiple_of(5) {
            // The safekeeper's persister stores the commit position every second.
            for a in 0..self.n {
                if self.acceptors[a].up
                    && let Err(e) = self.acceptors[a].acc.persist_commit_lsn()
                {
                    self.violate(format!("sk{a}: persisting the commit position failed: {e}"));
                }
            }
        }
        if (self.q.now / TICK).is_multiple_of(3) {
            self.check_global();
        }
    }

    /// Whether the network currently separates nodes `a` and `b`.
    fn cut(&self, a: usize, b: usize) -> bool {
        match &self.groups {
            None => false,
            Some(g) => g.get(a).copied().unwrap_or(0) != g.get(b).copied().unwrap_or(0),
        }
    }

    /// Sends a message, which may be lost, duplicated, delayed (and so reordered).
    fn send(&mut self, e: Event) {
        if self.rng.chance(self.loss) {
            return;
        }
        if self.rng.chance(self.dup) {
            let delay = self.rng.range(1, self.max_delay);
            self.q.after(delay, e_clone(&e));
        }
        let delay = self.rng.range(1, self.max_delay);
        self.q.after(delay, e);
    }

    fn send_to_acceptor(&mut self, pid: usize, acc: usize, msg: Msg) {
        self.send(Event::ToAcceptor {
            from: NODE_OFFSET + pid,
            acc,
            msg,
        });
    }

    fn nemesis(&mut self) {
        let nodes = NODE_OFFSET + self.proposers.len();
        match self.rng.range(0, 100) {
            0..=19 => {
                let g: Vec<u8> = (0..nodes).map(|_| self.rng.range(0, 3) as u8).collect();
                self.note(|| format!("partition {g:?}"));
                self.groups = Some(g);
                self.stats.partitions += 1;
            }
            20..=34 => {
                self.note(|| "heal".to_string());
                self.groups = None;
            }
            35..=49 => {
                let a = self.rng.range(0, self.n as u64) as usize;
                if self.acceptors[a].up {
                    self.crash_acceptor(a, None);
                }
            }
            50..=59 => {
                let a = self.rng.range(0, self.n as u64) as usize;
                self.acceptors[a].crash_in_write = true;
            }
            60..=69 => {
                let alive: Vec<usize> = (0..self.proposers.len())
                    .filter(|&p| self.proposers[p].alive)
                    .collect();
                if let Some(&p) = alive.get(self.rng.range(0, alive.len() as u64) as usize) {
                    self.proposers[p].alive = false;
                    self.stats.proposer_crashes += 1;
                    self.note(|| format!("p{p} crashes"));
                }
            }
            70..=79 => {
                let alive = self.proposers.iter().filter(|p| p.alive).count();
                if alive < 3 {
                    let p = PNode::new(&mut self.rng);
                    self.proposers.push(p);
                    let n = self.proposers.len() - 1;
                    self.note(|| format!("p{n} starts"));
                }
            }
            80..=89 => {
                // A standby that wrongly believes the primary is gone: an election now.
                let p = self.rng.range(0, self.proposers.len() as u64) as usize;
                if self.proposers[p].alive && matches!(self.proposers[p].phase, Phase::Idle) {
                    proposer::start_election(self, p);
                }
            }
            _ => {
                self.loss = self.rng.range(0, 150);
                self.dup = self.rng.range(0, 80);
                self.max_delay = self.rng.range(2, 80);
            }
        }
    }

    /// Crashes acceptor `a`. `torn`: it dies in the middle of an append that moved its log
    /// from the first LSN to the second, so some prefix of those bytes reached the disk.
    fn crash_acceptor(&mut self, a: usize, torn: Option<(Lsn, Lsn)>) {
        self.stats.acceptor_crashes += 1;
        let flush = self.acceptors[a].acc.status().flush_lsn;
        let cut = match torn {
            Some((from, to)) => {
                self.stats.torn_crashes += 1;
                Some(self.rng.range(from, to + 1))
            }
            None if self.cfg.bugs.ack_before_fsync => {
                let lazy = self.acceptors[a].lazily_synced;
                Some(self.rng.range(lazy.min(flush), flush + 1))
            }
            None => None,
        };
        self.note(|| format!("sk{a} crashes (log end {flush}, disk cut to {cut:?})"));
        // The state machine's memory (session, unpersisted commit position) is lost: it is
        // replaced by one reopened from disk, as a restart does; it stays unreachable until
        // it restarts. (Its files need no closing: nothing is buffered outside the kernel.)
        let dir = self.acceptors[a].dir.clone();
        if let Some(cut) = cut
            && let Err(e) = cut_log(&dir, cut)
        {
            self.violate(format!("sk{a}: cutting the torn tail failed: {e}"));
        }
        match Acceptor::open_with(dir, SEGMENT) {
            Ok(acc) => self.acceptors[a].acc = acc,
            Err(e) => {
                self.violate(format!("sk{a} cannot reopen after a crash: {e}"));
                return;
            }
        }
        let node = &mut self.acceptors[a];
        node.up = false;
        node.crash_in_write = false;
        node.incarnation += 1;
        node.lazily_synced = node.acc.status().flush_lsn;
        node.appends_since_sync = 0;
        let incarnation = node.incarnation;
        let down = if self.healing {
            1
        } else {
            self.rng.range(20, 1500)
        };
        self.q.after(
            down,
            Event::Restart {
                acc: a,
                incarnation,
            },
        );
        self.check_acceptor(a);
    }

    fn on_acceptor(&mut self, from: usize, a: usize, msg: Msg) {
        let pid = from - NODE_OFFSET;
        let reply = match msg {
            Msg::Status { round } => Some(Reply::Status {
                round,
                term: self.acceptors[a].acc.status().term,
            }),
            Msg::Vote { round, term, id } => {
                let result = self.acceptors[a].acc.vote(term, id);
                self.note(|| {
                    format!(
                        "sk{a} vote t{term} p{pid}: {:?}",
                        result.as_ref().map(|r| r.0)
                    )
                });
                Some(Reply::Vote { round, result })
            }
            Msg::Elected {
                epoch,
                term,
                id,
                history,
            } => {
                // A crash inside `Elected` after the truncation is durable but before the
                // new control file is renamed into place: the log is cut, the old control
                // file (old history, old commit position) is what a restart finds.
                let before = self.acceptors[a].acc.status().flush_lsn;
                let control = self.acceptors[a].dir.join("control.json");
                let old_control = if self.acceptors[a].crash_in_write {
                    std::fs::read(&control).ok()
                } else {
                    None
                };
                let result = self.acceptors[a]
                    .acc
                    .elected(term, id, &history, 0, None)
                    .map(|(st, session)| (st.flush_lsn, session));
                if let (Some(old), Ok((flush, _))) = (old_control, &result)
                    && *flush < before
                {
                    self.note(|| {
                        format!("sk{a} crashes in elected t{term} after truncating to {flush}")
                    });
                    if let Err(e) = std::fs::write(&control, old) {
                        self.violate(format!("sk{a}: restoring its old control file: {e}"));
                    }
                    self.stats.torn_crashes += 1;
                    self.crash_acceptor(a, None);
                    return;
                }
                self.note(|| {
                    format!(
                        "sk{a} elected t{term} p{pid} {history:?}: {:?}",
                        result.as_ref().map(|r| r.0)
                    )
                });
                Some(Reply::Elected { epoch, result })
            }
            Msg::Append {
                epoch,
                term,
                session,
                begin,
                frames,
                commit,
            } => {
                let before = self.acceptors[a].acc.status().flush_lsn;
                let args = AppendArgs {
                    term,
                    session,
                    begin,
                    frames: &frames,
                    commit_lsn: commit,
                };
                let result = self.acceptors[a]
                    .acc
                    .append_group(std::slice::from_ref(&args))
                    .pop()
                    .unwrap_or_else(|| Err(Error::internal("no result")));
                let after = self.acceptors[a].acc.status().flush_lsn;
                self.note(|| {
                    format!(
                        "sk{a} append t{term} p{pid} [{begin}, +{}) commit {commit}: {:?}",
                        frames.len(),
                        result
                    )
                });
                if after > before && self.acceptors[a].crash_in_write {
                    self.crash_acceptor(a, Some((before, after)));
                    return;
                }
                if after > before {
                    let node = &mut self.acceptors[a];
                    node.appends_since_sync += 1;
                    if node.appends_since_sync >= 3 {
                        node.appends_since_sync = 0;
                        node.lazily_synced = after;
                    }
                }
                Some(Reply::Append { epoch, result })
            }
            Msg::ReadWal {
                epoch,
                target,
                start,
                end,
            } => {
                let result = self.acceptors[a].acc.read(start, end, 300);
                Some(Reply::ReadWal {
                    epoch,
                    target,
                    start,
                    result,
                })
            }
        };
        self.check_acceptor(a);
        if let Some(reply) = reply {
            self.send(Event::ToProposer { acc: a, pid, reply });
        }
    }

    /// Invariants of one acceptor after it changed: its term never goes back, it is not
    /// damaged, and its log below its commit position is the committed log.
    fn check_acceptor(&mut self, a: usize) {
        let st = self.acceptors[a].acc.status();
        if st.term < self.acceptors[a].max_term {
            let was = self.acceptors[a].max_term;
            self.violate(format!(
                "sk{a}: promised term went back from {was} to {}",
                st.term
            ));
        }
        self.acceptors[a].max_term = self.acceptors[a].max_term.max(st.term);
        if let Some(d) = st.damage {
            self.violate(format!(
                "sk{a}: damaged log {d:?} (WAL it acknowledged is gone)"
            ));
            return;
        }
        if st.commit_lsn > st.flush_lsn {
            self.violate(format!(
                "sk{a}: commit position {} past its log end {}",
                st.commit_lsn, st.flush_lsn
            ));
            return;
        }
        // The log only changes at its end (appends) or by getting shorter (truncation, a
        // crash cutting its tail), and this runs after every step of the acceptor: bytes
        // below the lowest log end seen since they were compared are still the same bytes.
        let node = &mut self.acceptors[a];
        node.verified = node.verified.min(st.flush_lsn);
        node.holds = node.holds.min(st.flush_lsn);
        let from = node.verified;
        if st.commit_lsn <= from {
            return;
        }
        let held = match node.acc.read(from, st.commit_lsn, usize::MAX) {
            Ok(b) => b,
            Err(e) => {
                self.violate(format!("sk{a}: reading its committed log failed: {e}"));
                return;
            }
        };
        let known = self.committed.len().saturating_sub(from as usize);
        let common = held.len().min(known);
        if let Some(i) = (0..common).find(|&i| held[i] != self.committed[from as usize + i]) {
            self.violate(format!(
                "sk{a}: committed WAL differs at LSN {} (its commit position {}, known \
                 committed up to {})",
                from + i as Lsn,
                st.commit_lsn,
                self.committed.len()
            ));
            return;
        }
        if held.len() > known {
            self.committed.extend_from_slice(&held[common..]);
        }
        self.acceptors[a].verified = from + held.len() as Lsn;
    }

    /// Cluster-wide invariants: a majority holds the whole committed log and every
    /// acknowledged record; a live leader's commit position is on a majority.
    fn check_global(&mut self) {
        let c = self.committed.len() as Lsn;
        for a in 0..self.n {
            let node = &mut self.acceptors[a];
            let end = c.min(node.acc.status().flush_lsn);
            if node.holds >= end {
                continue;
            }
            let from = node.holds;
            if node
                .acc
                .read(from, end, usize::MAX)
                .is_ok_and(|b| b[..] == self.committed[from as usize..end as usize])
            {
                node.holds = end;
            }
        }
        let holding = (0..self.n)
            .filter(|&a| self.acceptors[a].holds >= c)
            .count();
        if holding < self.majority() {
            self.violate(format!(
                "the committed log [0, {c}) is whole on only {holding} acceptors"
            ));
            return;
        }
        let mut still = Vec::new();
        for i in std::mem::take(&mut self.unverified) {
            let (begin, bytes) = self.acked[i].clone();
            let end = begin + bytes.len() as Lsn;
            if end <= c {
                if self.committed[begin as usize..end as usize] != bytes[..] {
                    self.violate(format!(
                        "acknowledged record [{begin}, {end}) differs from the committed log"
                    ));
                    return;
                }
                continue;
            }
            let n = (0..self.n)
                .filter(|&a| self.holds(a, begin, &bytes))
                .count();
            if n < self.majority() {
                self.violate(format!(
                    "acknowledged record [{begin}, {end}) is held by only {n} acceptors"
                ));
                return;
            }
            still.push(i);
        }
        self.unverified = still;
        for p in 0..self.proposers.len() {
            let Phase::Leader(l) = &self.proposers[p].phase else {
                continue;
            };
            if !self.proposers[p].alive {
                continue;
            }
            let commit = l.commit;
            let n = (0..self.n)
                .filter(|&a| self.acceptors[a].acc.status().flush_lsn >= commit)
                .count();
            if n < self.majority() {
                self.violate(format!(
                    "p{p}'s commit position {commit} exceeds what a majority has flushed ({n})"
                ));
            }
        }
    }

    /// Whether acceptor `a`'s log holds exactly `bytes` at `begin`.
    fn holds(&self, a: usize, begin: Lsn, bytes: &[u8]) -> bool {
        let end = begin + bytes.len() as Lsn;
        let acc = &self.acceptors[a].acc;
        if acc.status().flush_lsn < end {
            return false;
        }
        acc.read(begin, end, usize::MAX)
            .is_ok_and(|held| held == bytes)
    }

    /// Records an acknowledgement to a client.
    fn acknowledge(&mut self, begin: Lsn, bytes: Vec<u8>) {
        self.stats.acked += 1;
        self.max_acked_end = self.max_acked_end.max(begin + bytes.len() as Lsn);
        self.acked.push((begin, bytes));
        self.unverified.push(self.acked.len() - 1);
    }

    /// Records a completed election: at most one proposer per term.
    fn won(&mut self, pid: usize, term: u64, id: ProposerId) {
        self.stats.elections_won += 1;
        self.note(|| format!("p{pid} wins term {term}"));
        if let Some((other, _)) = self.winners.get(&term)
            && *other != pid
        {
            let other = *other;
            self.violate(format!("term {term} was won by p{other} and by p{pid}"));
        }
        self.winners.insert(term, (pid, id));
    }

    /// Heals the network, restarts every acceptor, replaces every proposer with one fresh
    /// proposer and waits for it to recover the log; then checks every acknowledged record
    /// is in that log, byte for byte, on every acceptor of the recovering majority.
    fn final_phase(&mut self) {
        self.check_global();
        if self.violation.is_some() {
            return;
        }
        self.healing = true;
        self.groups = None;
        self.loss = 0;
        self.dup = 0;
        for a in 0..self.n {
            self.acceptors[a].crash_in_write = false;
            if !self.acceptors[a].up {
                self.acceptors[a].up = true;
                self.acceptors[a].incarnation += 1;
            }
        }
        for p in &mut self.proposers {
            p.alive = false;
        }
        let fresh = PNode::new(&mut self.rng);
        self.proposers.push(fresh);
        let pid = self.proposers.len() - 1;
        self.note(|| format!("final: p{pid} starts on a healed network"));
        proposer::start_election(self, pid);
        let limit = self.q.now + FINAL_LIMIT;
        while self.violation.is_none() && self.q.now < limit {
            if proposer::recovered(&self.proposers[pid]) {
                break;
            }
            let Some(e) = self.q.pop() else { break };
            self.stats.events += 1;
            self.handle(e);
        }
        if self.violation.is_some() {
            return;
        }
        let Phase::Leader(l) = &self.proposers[pid].phase else {
            self.violate("the final election on a healed network never completed".into());
            return;
        };
        if !l.recovered {
            self.violate("the final proposer never recovered its log on a majority".into());
            return;
        }
        let end = l.elected_end;
        let in_sync: Vec<usize> = (0..self.n)
            .filter(|&a| l.quorum.peers[a].flush.is_some_and(|f| f >= end))
            .collect();
        let logs: Vec<Vec<u8>> = in_sync
            .iter()
            .map(|&a| {
                self.acceptors[a]
                    .acc
                    .read(0, end, usize::MAX)
                    .unwrap_or_default()
            })
            .collect();
        for (k, log) in logs.iter().enumerate() {
            if log.len() as Lsn != end || *log != logs[0] {
                self.violate(format!(
                    "after recovery, sk{} holds {} bytes that differ from the recovered log",
                    in_sync[k],
                    log.len()
                ));
                return;
            }
        }
        let recovered = &logs[0];
        for (begin, bytes) in self.acked.clone() {
            let e = begin as usize + bytes.len();
            if e > recovered.len() || recovered[begin as usize..e] != bytes[..] {
                self.violate(format!(
                    "acknowledged record [{begin}, {e}) is missing from the log a healthy \
                     majority recovered (its end: {end})"
                ));
                return;
            }
        }
        if recovered.len() < self.committed.len()
            || recovered[..self.committed.len()] != self.committed[..]
        {
            self.violate("the recovered log does not extend the committed log".into());
        }
    }
}

fn e_clone(e: &Event) -> Event {
    match e {
        Event::ToAcceptor { from, acc, msg } => Event::ToAcceptor {
            from: *from,
            acc: *acc,
            msg: msg.clone(),
        },
        Event::ToProposer { acc, pid, reply } => Event::ToProposer {
            acc: *acc,
            pid: *pid,
            reply: reply.clone(),
        },
        Event::Tick => Event::Tick,
        Event::Nemesis => Event::Nemesis,
        Event::Restart { acc, incarnation } => Event::Restart {
            acc: *acc,
            incarnation: *incarnation,
        },
    }
}

/// What a crash leaves of a log whose unsynced suffix from `cut` on was lost: segments that
/// start past `cut` go, the one holding it is cut there (mid-frame, as a torn write is).
fn cut_log(dir: &Path, cut: Lsn) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
            continue;
        };
        let Ok(start) = Lsn::from_str_radix(hex, 16) else {
            continue;
        };
        let len = entry.metadata()?.len();
        if start > cut {
            std::fs::remove_file(entry.path())?;
        } else if start + len > cut {
            std::fs::OpenOptions::new()
                .write(true)
                .open(entry.path())?
                .set_len(cut - start)?;
        }
    }
    Ok(())
}
