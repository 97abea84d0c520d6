//! The acceptor: one database's safekeeper state machine over its durable storage.
//!
//! Paxos-style, in the shape Neon's safekeepers use (docs/wal-protocol.md):
//!
//! 1. **Vote**: a proposer asks for term `t`. The acceptor grants it only if `t` is above every
//!    term it has promised, persisting the promise before answering, so it never votes twice in
//!    a term. The answer carries its log's position and term history.
//! 2. **Elected**: the winner sends its term history (the donor's, plus its own term starting
//!    where the donor's log ends). The acceptor finds the last point where its log agrees with
//!    that history, truncates anything after it (never below the commit position), and adopts
//!    the history. Only then does it take appends in that term.
//! 3. **Append**: frames at the end of the log from the current term's proposer, fdatasynced
//!    before the answer. A lower term is refused (`fenced`), which is how a deposed primary
//!    learns to step down. Only the session the last `Elected` opened may append; bytes that
//!    overlap the log held are compared with it, never assumed equal.
//!
//! Every input is checked against local state before anything is deleted, even from a peer
//! that holds the cluster credential: nothing at or below the commit position is ever removed
//! or changed unless object storage verifiably holds it (docs/wal-protocol.md, "Invariants").
//!
//! All methods are synchronous and do their own I/O; the gRPC layer runs them on the blocking
//! pool.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferrisdb_common::error::Reason;
use ferrisdb_common::lease;
use ferrisdb_common::wal::{self, FrameCheck};
use ferrisdb_common::{Error, ErrorKind, Lsn, Result};

use ferrisdb_server_common::term_history::{self, matching_lsn};

use crate::control::{Control, TermSwitch};
use crate::log::WalLog;

/// A proposer's identity for one election: 128 random bits it drew, sent with its vote
/// request and its `Elected`. Secret between proposer and acceptors (never in a status).
pub type ProposerId = u128;

/// How far above its promised term an acceptor grants a vote or takes `Elected`. A proposer
/// asks for one above the highest term it saw, so a sound cluster's terms move by one per
/// election; 2^20 leaves room for an acceptor that slept through a million elections, while
/// a peer trying to exhaust the term space needs 2^44 requests, each fsynced, to get there.
pub const MAX_TERM_STEP: u64 = 1 << 20;

/// One append request: frames at `begin` from the proposer of `term`, and the commit
/// position it knows.
#[derive(Debug, Clone, Copy)]
pub struct AppendArgs<'a> {
    /// The proposer's term.
    pub term: u64,
    /// The session its `Elected` opened ([`Acceptor::elected`]).
    pub session: u64,
    /// Where the frames begin.
    pub begin: Lsn,
    /// Whole frames (possibly none).
    pub frames: &'a [u8],
    /// The proposer's commit position.
    pub commit_lsn: Lsn,
}

/// A snapshot of the acceptor's position, as reported to proposers and operators.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AcceptorStatus {
    /// The highest promised term.
    pub term: u64,
    /// Term switches of the log held, up to its end.
    pub history: Vec<TermSwitch>,
    /// The first LSN held.
    pub log_start_lsn: Lsn,
    /// The end of the durable log.
    pub flush_lsn: Lsn,
    /// The last commit position heard.
    pub commit_lsn: Lsn,
    /// What the pageserver last reported durable in object storage (the trim point).
    pub remote_consistent_lsn: Lsn,
    /// WAL bytes on disk.
    pub disk_bytes: u64,
    /// Damage found in the log, until it is repaired.
    pub damage: Option<Damage>,
    /// Appends refused since start because their bytes differed from the log held.
    pub wal_mismatches: u64,
    /// Started empty while the peers held the database's log: no votes until caught up
    /// (see [`Acceptor::start_recovering`]).
    pub recovering: bool,
}

/// A damaged stretch of the log: from the first bad frame to the end the log must reach again
/// (its old end, or the commit position if that is further). Nothing is served, voted or
/// accepted until a peer's copy replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Damage {
    /// The first damaged LSN (a frame boundary).
    pub from: Lsn,
    /// The repaired log must reach at least here.
    pub to: Lsn,
}

/// What a peer reports of its log (`GetStatus`), as a candidate source for a repair.
#[derive(Debug, Clone)]
pub struct PeerLog {
    /// Its term history.
    pub history: Vec<TermSwitch>,
    /// The first LSN it holds.
    pub log_start: Lsn,
    /// The end of its log.
    pub flush: Lsn,
}

/// How a damaged log is mended from one peer's copy ([`Acceptor::repair_plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairPlan {
    /// Where the copy starts and the log is cut back to (or restarted at, when past the
    /// damage: object storage holds everything below).
    pub from: Lsn,
    /// Where the repaired log ends: the damaged stretch's end, or earlier where a newer term
    /// continued without this log's uncommitted suffix.
    pub to: Lsn,
}

/// How far past a damaged stretch's end a repair reads, for the frame that may straddle it:
/// the largest frame a committer appends, with its header (the same bound every hop of the
/// WAL path is sized by, `ferrisdb_common::message_size`).
pub const STRADDLE_BYTES: u64 =
    (ferrisdb_common::message_size::MAX_FRAME_BYTES + wal::FRAME_HEADER_LEN) as u64;

impl RepairPlan {
    /// Where the copy read from a peer whose log ends at `peer_flush` must reach for this plan
    /// to mend `damage`. Where the plan ends at the damaged stretch's own end, a torn write
    /// may have left that end inside a frame, and the frame straddling it is wanted too (see
    /// [`Acceptor::repair`]): up to [`STRADDLE_BYTES`] past it, as far as the peer holds.
    pub fn copy_end(&self, damage: Damage, peer_flush: Lsn) -> Lsn {
        if self.to == damage.to {
            peer_flush
                .min(self.to.saturating_add(STRADDLE_BYTES))
                .max(self.to)
        } else {
            self.to
        }
    }
}

/// One database's acceptor.
#[derive(Debug)]
pub struct Acceptor {
    dir: PathBuf,
    control: Control,
    log: WalLog,
    /// The commit position the control file last recorded; it is re-persisted lazily.
    persisted_commit_lsn: Lsn,
    damage: Option<Damage>,
    /// The append session the last `Elected` opened, as `(term, id)`; in memory only, so a
    /// restarted acceptor takes appends again only after a new `Elected`.
    session: Option<(u64, u64)>,
    /// Appends refused because their bytes differed from the log held.
    wal_mismatches: u64,
    /// Until when this acceptor promised a primary its read lease (`ferrisdb_common::lease`).
    /// In memory only: an acceptor that restarts cannot know what it promised before, so it
    /// assumes a full lease granted as it opened, unless it never promised any term.
    lease_until: Option<Instant>,
    /// What of [`Acceptor::lease_until`] was promised to terms before the current one, kept
    /// when a vote promises a newer term: a release by the current term's proposer gives back
    /// only its own lease, never one an older primary may still be using.
    older_leases_until: Option<Instant>,
    /// The current term's proposer gave its lease back ([`Acceptor::release_lease`]): this
    /// term is granted no more (a renewal sent before the release may arrive after it).
    lease_released: bool,
    /// A read found damage that nobody has yet started to repair ([`Acceptor::serve`]).
    found_damage: bool,
}

impl Acceptor {
    /// Opens (or creates) the acceptor whose files live in `dir`, with default segment size.
    pub fn open(dir: PathBuf) -> Result<Acceptor> {
        Acceptor::open_with(dir, crate::log::SEGMENT_TARGET_SIZE)
    }

    /// Opens (or creates) the acceptor in `dir`, starting new segments at `segment_size`.
    pub fn open_with(dir: PathBuf, segment_size: u64) -> Result<Acceptor> {
        std::fs::create_dir_all(&dir)?;
        let mut control = Control::load(&dir)?;
        let (mut log, recovery) = WalLog::open(&dir, control.log_start_lsn)?;
        log.set_segment_size(segment_size);
        if log.flush_lsn() > log.start_lsn() && !Control::exists(&dir) {
            // No byte is appended before a vote stored the control file, so WAL without one
            // means the file was lost (deleted, or a restore that missed it). Started as
            // pristine it would vote again in terms it may have promised, and take its old
            // WAL for an empty log (an outside audit: no warning at all).
            return Err(Error::corruption(format!(
                "{} holds WAL up to LSN {} but no control file: what this safekeeper promised is lost; delete the directory to have the database rebuilt from its peers (docs/wal-protocol.md, \"Amnesia\")",
                dir.display(),
                log.flush_lsn()
            )));
        }
        if control.reset_pending {
            // A reset was interrupted after its intent was stored: finish it.
            log.reset(control.log_start_lsn)?;
            control.reset_pending = false;
            control.store(&dir)?;
        }
        let mut damage = recovery.damage.map(|from| Damage {
            from,
            to: log.flush_lsn(),
        });
        if log.flush_lsn() < control.commit_lsn {
            // Bytes below the commit position were acknowledged; losing them is damage, not a
            // torn write. Peers hold them (they were committed), so it is repairable.
            let from = damage.map_or(log.flush_lsn(), |d| d.from);
            damage = Some(Damage {
                from,
                to: control.commit_lsn,
            });
        }
        if let Some(d) = damage {
            // Nothing is served from memory either until the repaired log is opened again
            // (the repair's own writes go through this log).
            log.recent().disable();
            tracing::error!(
                dir = %dir.display(),
                from = d.from,
                to = d.to,
                "WAL damaged: not serving this database until it is repaired from a peer"
            );
        }
        let persisted_commit_lsn = control.commit_lsn;
        let lease_until = (control.term > 0).then(|| Instant::now() + lease::LEASE);
        Ok(Acceptor {
            dir,
            control,
            log,
            persisted_commit_lsn,
            damage,
            session: None,
            wal_mismatches: 0,
            lease_until,
            // Which term a lease assumed at restart belonged to is unknown: none is released.
            older_leases_until: lease_until,
            lease_released: false,
            found_damage: false,
        })
    }

    /// The current position.
    pub fn status(&self) -> AcceptorStatus {
        AcceptorStatus {
            term: self.control.term,
            history: term_history::up_to(&self.control.history, self.log.flush_lsn()),
            log_start_lsn: self.log.start_lsn(),
            flush_lsn: self.log.flush_lsn(),
            commit_lsn: self.control.commit_lsn,
            remote_consistent_lsn: self.control.remote_consistent_lsn,
            disk_bytes: self.log.disk_bytes(),
            damage: self.damage,
            wal_mismatches: self.wal_mismatches,
            recovering: self.control.recovering,
        }
    }

    /// Whether this acceptor has never promised anything for the database, nor held a log
    /// of it: it cannot tell a new database from one whose log it lost.
    pub fn is_pristine(&self) -> bool {
        self.control.term == 0 && self.control.history.is_empty() && !self.control.recovering
    }

    /// Records that this acceptor lost the log its peers hold (it is pristine, and a peer has
    /// a term history). Until a primary elected by the others brings it up to date, it
    /// refuses votes: with its empty log it could otherwise make a majority with a lagging
    /// peer that elects a log without commits only the lost disk and an absent peer held.
    pub fn start_recovering(&mut self) -> Result<()> {
        if self.control.recovering {
            return Ok(());
        }
        let mut next = self.control.clone();
        next.recovering = true;
        next.store(&self.dir)?;
        self.control = next;
        Ok(())
    }

    /// Appends refused since start because their bytes differed from the log held.
    pub fn wal_mismatches(&self) -> u64 {
        self.wal_mismatches
    }

    fn check_intact(&self) -> Result<()> {
        match self.damage {
            Some(d) => Err(Error::corruption(format!(
                "the log is damaged from LSN {} (it must reach {}); not served until repaired from a peer",
                d.from, d.to
            ))),
            None => Ok(()),
        }
    }

    /// How this damaged log would be mended from `peer`'s copy, or `None` if the peer is no
    /// source (or nothing is damaged). Three checks, all against what this acceptor knows:
    ///
    /// - **Whose bytes.** Where the two term histories agree (same term, same start), the
    ///   peer's bytes are this log's bytes: one proposer per term wrote both. If they agree up
    ///   to the damaged stretch's end, the copy replaces the stretch exactly. If the peer's log
    ///   leaves this one earlier, at `agreed`, for a term newer than any this log holds, then
    ///   that term's proposer was elected by a majority and continued a log without this
    ///   log's suffix past `agreed`: none of that suffix was committed (every committed record
    ///   is in every later proposer's log), and the next `Elected` would cut it anyway. The
    ///   repaired log then ends at `agreed` — never below this acceptor's commit position.
    ///   A peer that leaves for an *older* term, or that is shorter, is no source.
    /// - **From where.** From the first damaged LSN (or from `agreed` if the whole damage lies
    ///   past it). A peer that has already trimmed part of what must be copied is a source
    ///   from its own log start only when `durable` — what the newest manifest says, read by
    ///   this process, never taken from the peer — covers that start: the log then restarts
    ///   there, as an `Elected` with a higher log start would.
    /// - **How far.** The peer must hold everything up to the repaired log's end.
    ///
    /// Found by the chaos run: a safekeeper killed with an uncommitted suffix and a flipped
    /// byte below it, while a new term took over without it, waited for an exact copy no
    /// peer would ever have, and stayed out until a second fault cost the quorum.
    pub fn repair_plan(&self, peer: &PeerLog, durable: Option<Lsn>) -> Option<RepairPlan> {
        let d = self.damage?;
        let own = term_history::up_to(&self.control.history, d.to);
        let theirs = term_history::up_to(&peer.history, peer.flush);
        let agreed = matching_lsn(&own, d.to, &theirs);
        let to = if agreed >= d.to {
            d.to
        } else {
            let newer = theirs
                .iter()
                .any(|s| s.lsn == agreed && s.term > term_history::last_term(&own));
            if !newer || agreed < self.control.commit_lsn {
                return None;
            }
            agreed
        };
        if peer.flush < to {
            return None;
        }
        let want = d.from.min(to);
        let from = if peer.log_start <= want || want == to {
            // Nothing the peer trimmed is needed (with `want == to` nothing is copied at all:
            // the repair only cuts the log back to `to`).
            want
        } else {
            let from = peer.log_start.min(to);
            if durable.is_none_or(|v| v < from) {
                return None;
            }
            from
        };
        // A cut below this log's own start has nothing to keep: only a restart (above)
        // can go there.
        if from < self.log.start_lsn() && from <= d.from {
            return None;
        }
        Some(RepairPlan { from, to })
    }

    /// Mends the damaged log from `peer`'s copy: `frames` are the peer's bytes from the plan's
    /// `from` (at least to its `to`; anything past `to` is not used). The plan is worked out
    /// again here from `peer` and `durable` (see [`Acceptor::repair_plan`]), so nothing is cut
    /// on a plan this acceptor would not make itself. The log is cut back to `from` (or
    /// restarted empty there, when the plan starts past the damage), the copy written and
    /// fsynced, and the whole log re-read from disk to prove it is intact and ends at `to`.
    pub fn repair(&mut self, peer: &PeerLog, frames: &[u8], durable: Option<Lsn>) -> Result<()> {
        let Some(d) = self.damage else { return Ok(()) };
        let Some(plan) = self.repair_plan(peer, durable) else {
            return Err(Error::invalid(format!(
                "this peer's log ({:?}, [{}, {})) is no source for the damaged [{}, {})",
                peer.history, peer.log_start, peer.flush, d.from, d.to
            )));
        };
        // The copy's whole frames up to the first boundary at or past `to`. Where the repaired
        // log keeps this log's history up to `to` (the stretch's own end), the frame that
        // straddles `to` was written by the same term in both logs, so `to` need not be a
        // boundary of the peer's frames: a torn write after damage ends the stretch
        // mid-frame. Where a newer term begins at `to`, the copy must end exactly there.
        let need = plan.to - plan.from;
        let mut took = 0usize;
        while (took as u64) < need {
            match wal::check_frame(&frames[took..]) {
                FrameCheck::Complete { len } => took += len,
                FrameCheck::Incomplete => {
                    return Err(Error::invalid(format!(
                        "a repair of [{}, {}) needs the peer's frames to at least {}; it sent {} bytes",
                        plan.from,
                        plan.to,
                        plan.to,
                        frames.len()
                    )));
                }
                FrameCheck::Corrupt(why) => {
                    return Err(Error::corruption(format!(
                        "the peer's copy from {} is damaged at {}: {why}",
                        plan.from,
                        plan.from + took as u64
                    )));
                }
            }
        }
        let end = plan.from + took as u64;
        let own_history_past_to = self
            .control
            .history
            .iter()
            .any(|s| s.lsn > plan.to && s.lsn < end);
        if end != plan.to && (plan.to != d.to || own_history_past_to) {
            return Err(Error::invalid(format!(
                "the peer's copy of [{}, {}) does not end on a frame boundary there",
                plan.from, plan.to
            )));
        }
        let copy = &frames[..took];
        if plan.from > d.from {
            // Everything below `from` is in object storage: record the intent, then drop the
            // log and start it empty there (an interrupted reset is finished on open).
            let mut next = self.control.clone();
            next.log_start_lsn = plan.from;
            next.commit_lsn = next.commit_lsn.max(plan.from);
            next.reset_pending = true;
            next.store(&self.dir)?;
            self.log.reset(plan.from)?;
            next.reset_pending = false;
            next.store(&self.dir)?;
            self.control = next;
            self.persisted_commit_lsn = self.control.commit_lsn;
        } else {
            // When the plan ends before the damage did, the history stays as it is: cut at
            // the shorter log's end it still describes it, as after `Elected`'s truncation.
            self.log.truncate(plan.from)?;
        }
        if !copy.is_empty() {
            self.log.write(copy)?;
        }
        self.log.sync()?;
        let (mut log, recovery) = WalLog::open(&self.dir, self.control.log_start_lsn)?;
        log.set_segment_size(self.log.segment_size());
        if recovery.damage.is_some() || log.flush_lsn() != end {
            return Err(Error::corruption(format!(
                "the log is still damaged after repair (it ends at {}, the copy at {end})",
                log.flush_lsn()
            )));
        }
        log.adopt_recent(self.log.recent());
        self.log = log;
        self.damage = None;
        Ok(())
    }

    /// Refuses a term implausibly far above the promised one (see [`MAX_TERM_STEP`]).
    fn check_term_step(&self, term: u64) -> Result<()> {
        let limit = self.control.term.saturating_add(MAX_TERM_STEP);
        if term > limit {
            return Err(Error::invalid(format!(
                "term {term} is implausibly far above the promised term {} (at most {MAX_TERM_STEP} ahead)",
                self.control.term
            )));
        }
        Ok(())
    }

    /// Phase 1: grants `term` to `proposer` if it is above every promised term (and not
    /// implausibly far above it: `invalid_argument`). The promise, with whose it is, is
    /// persisted before answering.
    pub fn vote(&mut self, term: u64, proposer: ProposerId) -> Result<(bool, AcceptorStatus)> {
        // A damaged log could make it the donor of a log with a hole: no vote until repaired.
        self.check_intact()?;
        self.check_term_step(term)?;
        if self.control.recovering {
            return Err(Error::unavailable(
                "this safekeeper started without the log its peers hold (a wiped or replaced \
                 disk): it votes again once a primary elected by the others has brought it up \
                 to date",
            ));
        }
        if term <= self.control.term {
            return Ok((false, self.status()));
        }
        let mut next = self.control.clone();
        next.term = term;
        next.proposer = Some(proposer_hex(proposer));
        next.store(&self.dir)?;
        self.older_leases_until = self.lease_until;
        self.lease_released = false;
        self.control = next;
        self.persisted_commit_lsn = self.control.commit_lsn;
        // A new term closes the old term's append session.
        self.session = None;
        Ok((true, self.status()))
    }

    /// Grants the proposer of the current term its read lease: until [`lease::LEASE`] after
    /// `now`, a newer term's winner is told to wait before serving ([`Acceptor::lease_remaining`]).
    /// Only the proposer this acceptor promised `term` to gets it; any other request is refused
    /// and answered with the promised term, which fences a proposer of an older term.
    pub fn grant_lease(&mut self, term: u64, proposer: ProposerId, now: Instant) -> (bool, u64) {
        let ours = self.is_current_proposer(term, proposer) && !self.lease_released;
        if ours {
            let until = now + lease::LEASE;
            self.lease_until = Some(self.lease_until.map_or(until, |u| u.max(until)));
        }
        (ours, self.control.term)
    }

    /// The proposer of the current term gives its read lease back: it answers no more reads
    /// for this term, so a newer term's winner need not wait for the lease to run out. Leases
    /// promised to older terms stay (their primaries may still be using them), and this term
    /// is granted no more. Like a grant, only the proposer promised `term` may do this; any
    /// other request changes nothing and is answered with the promised term.
    pub fn release_lease(&mut self, term: u64, proposer: ProposerId) -> (bool, u64) {
        let ours = self.is_current_proposer(term, proposer);
        if ours {
            self.lease_until = self.older_leases_until;
            self.lease_released = true;
        }
        (ours, self.control.term)
    }

    fn is_current_proposer(&self, term: u64, proposer: ProposerId) -> bool {
        term == self.control.term
            && self.control.proposer.as_deref() == Some(proposer_hex(proposer).as_str())
    }

    /// How much of the last lease granted is left at `now` (zero: none). A vote reports it, so
    /// the new term's primary serves only once the old primary's lease has run out.
    pub fn lease_remaining(&self, now: Instant) -> Duration {
        self.lease_until
            .map_or(Duration::ZERO, |u| u.saturating_duration_since(now))
    }

    /// Phase 2 set-up: adopt the elected proposer's `history` for `term`, truncating whatever
    /// part of this log diverges from it, and open the append session the proposer's stream
    /// must carry. `log_start_lsn` is where the proposer's log may begin (everything below is
    /// in object storage); a log that agrees with nothing above it is dropped and restarted
    /// there.
    ///
    /// `durable` is what the newest manifest in object storage says is durable (`None`: no
    /// object store configured, nothing can be verified). Nothing at or below the commit
    /// position is removed, and the log never restarts past its own end, unless `durable`
    /// covers it. Only the proposer the term was promised to may send this (a different id is
    /// `fenced`), and a term's history, once adopted, cannot be replaced by another.
    pub fn elected(
        &mut self,
        term: u64,
        proposer: ProposerId,
        history: &[TermSwitch],
        log_start_lsn: Lsn,
        durable: Option<Lsn>,
    ) -> Result<(AcceptorStatus, u64)> {
        self.check_intact()?;
        if term < self.control.term {
            return Err(fenced(term, self.control.term));
        }
        if term == 0 {
            return Err(Error::invalid("term 0 is never elected"));
        }
        self.check_term_step(term)?;
        let Some(last) = history.last() else {
            return Err(Error::invalid("elected with an empty term history"));
        };
        if last.term != term
            || history
                .windows(2)
                .any(|w| w[0].term >= w[1].term || w[0].lsn > w[1].lsn)
        {
            return Err(Error::invalid(format!(
                "term history {history:?} does not end in term {term} or is not increasing"
            )));
        }
        // Mid-term, the proposer's log start moves up past where its term started writing as
        // the pageserver makes WAL durable in object storage; a safekeeper that rejoins then
        // must take the term from there. That leaves no gap only if object storage really
        // holds everything below the claimed start — which this process checks itself.
        let term_start = last.lsn;
        if log_start_lsn > term_start && durable.is_none_or(|d| d < log_start_lsn) {
            return Err(Error::invalid(format!(
                "log start {log_start_lsn} lies past where term {term} starts writing \
                 ({term_start}) and object storage holds only up to {durable:?}: it would \
                 leave a gap"
            )));
        }
        let id = proposer_hex(proposer);
        if term == self.control.term {
            if let Some(owner) = &self.control.proposer
                && *owner != id
            {
                return Err(Error::new(
                    ErrorKind::Fenced,
                    format!("term {term} was promised to another proposer"),
                ));
            }
            if self.control.history.last().map(|s| s.term) == Some(term)
                && self.control.history != history
            {
                return Err(Error::invalid(format!(
                    "term {term} already has its history {:?}; one proposer, one history",
                    self.control.history
                )));
            }
        }
        let flush = self.log.flush_lsn();
        let commit = self.control.commit_lsn;
        let agreed = matching_lsn(
            &term_history::up_to(&self.control.history, flush),
            flush,
            history,
        );
        let mut next = self.control.clone();
        next.term = term;
        next.proposer = Some(id);
        next.history = history.to_vec();
        if agreed < log_start_lsn || agreed < self.log.start_lsn() {
            // Nothing worth keeping: what agrees lies below the object-storage horizon. That
            // is only true if object storage says so: dropping committed WAL, or restarting
            // the log past its own end, needs the manifest to cover it.
            let new_start = log_start_lsn.max(agreed);
            let held_committed = commit.min(flush);
            let mut must_be_durable = 0;
            if self.log.start_lsn() < held_committed {
                must_be_durable = held_committed;
            }
            if new_start > flush {
                must_be_durable = must_be_durable.max(new_start);
            }
            let verified = match durable {
                _ if must_be_durable == 0 => false,
                Some(d) if d >= must_be_durable => true,
                Some(d) => {
                    return Err(Error::invalid(format!(
                        "term {term}: restarting the log at {new_start} would drop WAL up to \
                         {must_be_durable}, but object storage holds only up to {d}"
                    )));
                }
                None => {
                    return Err(Error::unavailable(format!(
                        "term {term}: restarting the log at {new_start} would drop WAL up to \
                         {must_be_durable} that cannot be verified durable: no object store \
                         is configured on this safekeeper (--object-store)"
                    )));
                }
            };
            // Record the intent before deleting anything, so a crash midway is finished on
            // open rather than leaving an empty log under a commit position.
            next.log_start_lsn = new_start;
            if verified {
                next.commit_lsn = next.commit_lsn.max(new_start);
            }
            next.reset_pending = true;
            next.store(&self.dir)?;
            self.log.reset(next.log_start_lsn)?;
            next.reset_pending = false;
        } else {
            if agreed < commit {
                return Err(Error::corruption(format!(
                    "term {term} history diverges at {agreed}, below the committed {commit}"
                )));
            }
            self.log.truncate(agreed)?;
        }
        // Truncate first, then record the history: a crash between the two leaves the old
        // history, which still describes the (shorter) log correctly.
        next.store(&self.dir)?;
        self.persisted_commit_lsn = next.commit_lsn;
        self.control = next;
        let session = new_session();
        self.session = Some((term, session));
        Ok((self.status(), session))
    }

    /// Appends `frames` at `begin` for the proposer of `term` on `session`, fdatasynced on
    /// return, and learns the commit position. Returns the new end of the log.
    pub fn append(
        &mut self,
        term: u64,
        session: u64,
        begin: Lsn,
        frames: &[u8],
        commit_lsn: Lsn,
    ) -> Result<Lsn> {
        let req = AppendArgs {
            term,
            session,
            begin,
            frames,
            commit_lsn,
        };
        self.append_group(std::slice::from_ref(&req))
            .pop()
            .unwrap_or_else(|| Err(Error::internal("empty append group")))
    }

    /// Applies several appends with one fdatasync (group commit). Results come in order; the
    /// first failure ends the group (later appends are not applied and get no result). An
    /// `Ok` is only returned once its write is durable.
    pub fn append_group(&mut self, group: &[AppendArgs<'_>]) -> Vec<Result<Lsn>> {
        let mut results = Vec::with_capacity(group.len());
        let mut commit = self.control.commit_lsn;
        for req in group {
            match self.write_one(req) {
                Ok(()) => {
                    commit = commit.max(req.commit_lsn);
                    results.push(Ok(()));
                }
                Err(e) => {
                    results.push(Err(e));
                    break;
                }
            }
        }
        let synced = self.log.sync();
        let flush = self.log.flush_lsn();
        if synced.is_ok() {
            self.control.commit_lsn = self.control.commit_lsn.max(commit.min(flush));
            self.end_recovery(commit, flush);
        }
        results
            .into_iter()
            .map(|r| match (&synced, r) {
                (Err(e), Ok(())) => Err(e.clone()),
                (_, r) => r.map(|()| flush),
            })
            .collect()
    }

    /// Ends recovery once this log holds everything committed in the current term: its
    /// proposer (elected by a majority without this acceptor, and so holding every commit)
    /// reports a commit position past where its term began, and the log reaches it.
    fn end_recovery(&mut self, proposer_commit: Lsn, flush: Lsn) {
        let term_start = self.control.history.last().map(|s| s.lsn);
        let caught_up =
            term_start.is_some_and(|start| proposer_commit >= start) && proposer_commit <= flush;
        if !self.control.recovering || !caught_up {
            return;
        }
        let mut next = self.control.clone();
        next.recovering = false;
        match next.store(&self.dir) {
            Ok(()) => {
                tracing::info!(dir = %self.dir.display(), commit = proposer_commit, "caught up with the log the peers hold: voting again");
                self.control = next;
            }
            // Still recovering on disk: the next append tries again.
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot record the end of recovery")
            }
        }
    }

    fn write_one(&mut self, req: &AppendArgs<'_>) -> Result<()> {
        self.check_intact()?;
        let AppendArgs {
            term,
            session,
            begin,
            frames,
            ..
        } = *req;
        if term < self.control.term {
            return Err(fenced(term, self.control.term));
        }
        if term > self.control.term || self.control.history.last().map(|s| s.term) != Some(term) {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("not set up for term {term}: send Elected first"),
            ));
        }
        if self.session != Some((term, session)) {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "this append stream holds no session of term {term}: only the stream of the \
                     proposer that last completed Elected may append"
                ),
            ));
        }
        let flush = self.log.flush_lsn();
        let end = begin
            .checked_add(frames.len() as u64)
            .ok_or_else(|| Error::invalid("append end overflows the LSN space"))?;
        if begin > flush {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("append at {begin} leaves a gap after the log end {flush}"),
            ));
        }
        let overlap_end = end.min(flush);
        if overlap_end > begin {
            // Bytes this log already holds: compare them, never assume them equal.
            if begin < self.log.start_lsn() {
                return Err(Error::invalid(format!(
                    "append at {begin} overlaps WAL below the log start {}, which cannot be compared",
                    self.log.start_lsn()
                )));
            }
            let held = self.log.read_exact(begin, overlap_end - begin)?;
            let sent = &frames[..held.len()];
            if let Some(i) = held.iter().zip(sent).position(|(a, b)| a != b) {
                self.wal_mismatches += 1;
                let at = begin + i as u64;
                let commit = self.control.commit_lsn;
                if at < commit {
                    tracing::error!(
                        dir = %self.dir.display(),
                        term,
                        at,
                        commit,
                        "an append differs from committed WAL: refused"
                    );
                    return Err(Error::corruption(format!(
                        "append in term {term} differs at LSN {at} from committed WAL (commit \
                         position {commit}); committed WAL never changes"
                    )));
                }
                tracing::warn!(
                    dir = %self.dir.display(),
                    term,
                    at,
                    commit,
                    "an append differs from uncommitted WAL held: refused"
                );
                return Err(Error::invalid(format!(
                    "append in term {term} differs at LSN {at} from the WAL held; only a new \
                     election may truncate a divergent suffix"
                )));
            }
        }
        if end > flush {
            let new = &frames[(flush - begin) as usize..];
            if wal::whole_frames_len(new)? != new.len() {
                return Err(Error::invalid("append does not hold whole frames"));
            }
            self.log.write(new)?;
        }
        Ok(())
    }

    /// The buffer of the log's newest bytes (see [`crate::recent`]); the same one for the
    /// acceptor's lifetime.
    pub fn recent(&self) -> std::sync::Arc<crate::recent::RecentWal> {
        self.log.recent()
    }

    /// Reads whole frames in `[start, end)`; see [`WalLog::read`].
    pub fn read(&self, start: Lsn, end: Lsn, max_bytes: usize) -> Result<Vec<u8>> {
        self.check_intact()?;
        self.log.read(start, end, max_bytes)
    }

    /// [`Acceptor::read`] for serving: a frame that fails its checksum (rot under a running
    /// safekeeper) makes the log damaged from there, as if it had been found on open: nothing
    /// more is served, voted or appended until the stretch is repaired from a peer
    /// ([`Acceptor::take_found_damage`] tells the caller to start the repair). Before, the
    /// read failed and nothing else happened: the pageserver asked this safekeeper again and
    /// again, its status said nothing was wrong, and ingestion stopped (an outside audit).
    pub fn serve(&mut self, start: Lsn, end: Lsn, max_bytes: usize) -> Result<Vec<u8>> {
        // Damage already known is refused as such, not found again.
        self.check_intact()?;
        let read = self.log.read(start, end, max_bytes);
        if let Err(e) = &read
            && e.kind() == ErrorKind::Corruption
        {
            // A position inside a frame finds no frame there, which is not damage: refused as
            // the reader's error. Taken for damage, it made this log "damaged" from there, and
            // the repair asked each peer for the same stretch from the same position, which
            // failed the same way on each of them (one ReadWal took the database down).
            if !self.log.is_frame_boundary(start) {
                return Err(Error::invalid(format!(
                    "no frame begins at LSN {start} in this log (its frames run from {} to {}): \
                     the position is inside a frame, or from a log that was rewritten since",
                    self.log.start_lsn(),
                    self.log.flush_lsn()
                ))
                .with_reason(Reason::WalDiverged));
            }
            let from = self.log.first_bad_frame(start, end).unwrap_or(start);
            let d = Damage {
                from,
                to: self.log.flush_lsn().max(self.control.commit_lsn),
            };
            self.log.recent().disable();
            self.damage = Some(d);
            self.found_damage = true;
            tracing::error!(
                dir = %self.dir.display(),
                from = d.from,
                to = d.to,
                error = %e,
                "WAL damaged under a running safekeeper (found by a read): not serving this database until it is repaired from a peer"
            );
        }
        read
    }

    /// The term that wrote the byte just below `lsn`, by this acceptor's term history: the
    /// last term to start writing below `lsn`. `None` when no term did (nothing of this log
    /// lies below `lsn`, or it was never written here). What a WAL follower resuming at `lsn`
    /// is checked against.
    pub fn term_below(&self, lsn: Lsn) -> Option<u64> {
        term_history::term_below(&self.control.history, lsn)
    }

    /// The term history of the log held (every switch, including one past the log's end that
    /// an elected proposer announced before its first append).
    pub fn history(&self) -> &[TermSwitch] {
        &self.control.history
    }

    /// Whether a read found damage since the last call: the caller starts the repair (and
    /// counts the damaged database) once.
    pub fn take_found_damage(&mut self) -> bool {
        std::mem::take(&mut self.found_damage)
    }

    /// Deletes WAL that object storage holds, on the pageserver's `claim` that everything
    /// below it is durable there. The claim is checked, never trusted:
    ///
    /// - never above this acceptor's own commit position;
    /// - with an object store configured (`durable` is `Some`, what the newest manifest
    ///   names), never above `durable`;
    /// - without one (`durable` is `None`), nothing is trimmed: the claim cannot be checked.
    ///
    /// Whole segments ending at or below the resulting point go, never the tail. Returns the
    /// new first LSN.
    pub fn trim(&mut self, claim: Lsn, durable: Option<Lsn>) -> Result<Lsn> {
        self.check_intact()?;
        let commit = self.control.commit_lsn;
        let up_to = match durable {
            Some(d) => claim.min(d).min(commit),
            None => {
                // Nothing can check the claim: a pageserver on a store that does not keep
                // what it says it uploaded (`memory://`, a mistyped path) would have this
                // delete the only copy of committed WAL on its word alone.
                tracing::debug!(
                    dir = %self.dir.display(),
                    claim,
                    commit,
                    "durable claim with no object store to check it: not trimming"
                );
                return Ok(self.log.start_lsn());
            }
        };
        self.control.remote_consistent_lsn = self.control.remote_consistent_lsn.max(up_to);
        let start = self.log.trim(up_to)?;
        if start != self.control.log_start_lsn {
            self.control.log_start_lsn = start;
            self.control.store(&self.dir)?;
            self.persisted_commit_lsn = self.control.commit_lsn;
        }
        Ok(start)
    }

    /// The last commit position heard.
    pub fn commit_lsn(&self) -> Lsn {
        self.control.commit_lsn
    }

    /// Bytes of WAL on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.log.disk_bytes()
    }

    /// Records the commit position in the control file if it moved since it was last stored.
    /// It is kept lazily because a lagging value is safe (it only limits what is served).
    pub fn persist_commit_lsn(&mut self) -> Result<()> {
        if self.control.commit_lsn != self.persisted_commit_lsn {
            self.control.store(&self.dir)?;
            self.persisted_commit_lsn = self.control.commit_lsn;
        }
        Ok(())
    }
}

fn proposer_hex(id: ProposerId) -> String {
    format!("{id:032x}")
}

/// A fresh, unpredictable, non-zero session id (zero is what a request without one carries).
fn new_session() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

fn fenced(term: u64, current: u64) -> Error {
    Error::new(
        ErrorKind::Fenced,
        format!("term {term} is superseded by term {current}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::SEGMENT_TARGET_SIZE;
    use bytes::Bytes;
    use ferrisdb_common::wal::{Mutation, encode_frame};

    const P: ProposerId = 0xfeed;

    /// The append session the acceptor's last `Elected` opened (what the proposer was given).
    fn sess(a: &Acceptor) -> u64 {
        a.session.map_or(0, |s| s.1)
    }

    /// `Elected` from proposer [`P`] with no object store to verify anything against.
    fn elect(
        a: &mut Acceptor,
        term: u64,
        history: &[TermSwitch],
        log_start: Lsn,
    ) -> Result<AcceptorStatus> {
        a.elected(term, P, history, log_start, None)
            .map(|(st, _)| st)
    }

    fn ts(term: u64, lsn: Lsn) -> TermSwitch {
        TermSwitch { term, lsn }
    }

    /// What `st`'s acceptor would report to a repairing peer.
    fn peer_log(st: &AcceptorStatus) -> PeerLog {
        PeerLog {
            history: st.history.clone(),
            log_start: st.log_start_lsn,
            flush: st.flush_lsn,
        }
    }

    fn frame(at: Lsn, tag: u8) -> Bytes {
        let m = Mutation::Set {
            key: Bytes::from(vec![tag]),
            value: Bytes::from(vec![tag; 20]),
        };
        encode_frame(at, tag as u64, &[m]).0
    }

    /// Where every repair test starts: a peer and the acceptor to be damaged (`a`), both
    /// elected in term 1 by [`P`], with the same frames `tags` appended to both, each append
    /// committing up to its own start. The directories go with it: keep them bound for as
    /// long as the acceptors are used.
    struct Pair {
        peer_dir: tempfile::TempDir,
        dir: tempfile::TempDir,
        peer: Acceptor,
        a: Acceptor,
        /// Where each frame starts.
        starts: Vec<Lsn>,
        /// Where both logs end.
        end: Lsn,
    }

    fn pair_in_term_1(tags: std::ops::RangeInclusive<u8>, segment_size: u64) -> Pair {
        let peer_dir = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut peer = Acceptor::open_with(peer_dir.path().to_path_buf(), segment_size).unwrap();
        let mut a = Acceptor::open_with(dir.path().to_path_buf(), segment_size).unwrap();
        for acc in [&mut peer, &mut a] {
            acc.vote(1, P).unwrap();
            elect(acc, 1, &[ts(1, 0)], 0).unwrap();
        }
        let mut starts = Vec::new();
        let mut end = 0;
        for tag in tags {
            starts.push(end);
            let f = frame(end, tag);
            peer.append(1, sess(&peer), end, &f, end).unwrap();
            end = a.append(1, sess(&a), end, &f, end).unwrap();
        }
        Pair {
            peer_dir,
            dir,
            peer,
            a,
            starts,
            end,
        }
    }

    /// An acceptor that lost its log refuses votes, across restarts, until the proposer of a
    /// term it joined by `Elected` reports a commit past its term's start that this log holds.
    #[test]
    fn a_recovering_acceptor_votes_again_once_it_holds_what_its_term_committed() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        assert!(a.is_pristine());
        // What it got back of term 1 before its peers told it more exists.
        a.vote(1, P).unwrap();
        elect(&mut a, 1, &[ts(1, 0)], 0).unwrap();
        let f1 = frame(0, 1);
        let end1 = a.append(1, sess(&a), 0, &f1, 0).unwrap();
        a.start_recovering().unwrap();
        assert!(!a.is_pristine());
        assert_eq!(a.vote(5, P).unwrap_err().kind(), ErrorKind::Unavailable);
        drop(a);
        let mut a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        assert!(
            a.status().recovering,
            "forgot it is recovering across a restart"
        );
        assert_eq!(a.vote(5, P).unwrap_err().kind(), ErrorKind::Unavailable);
        // The others elected term 5 from a donor whose log went on to `end2`.
        let f2 = frame(end1, 2);
        let end2 = end1 + f2.len() as u64;
        elect(&mut a, 5, &[ts(1, 0), ts(5, end2)], 0).unwrap();
        // The proposer streams what it lacks, reporting the old commit position ...
        a.append(5, sess(&a), end1, &f2, end1).unwrap();
        assert!(
            a.status().recovering,
            "ended before its term committed anything"
        );
        // ... then a commit past this log's end does not end recovery either ...
        a.append(5, sess(&a), end2, &[], end2 + 1_000).unwrap();
        assert!(a.status().recovering, "ended at a commit it does not hold");
        // ... and its term's commit within what this log holds does, durably.
        drop(a);
        let mut a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        elect(&mut a, 5, &[ts(1, 0), ts(5, end2)], 0).unwrap();
        a.append(5, sess(&a), end2, &[], end2).unwrap();
        assert!(!a.status().recovering);
        assert!(a.vote(6, P).unwrap().0);
        drop(a);
        let a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        assert!(!a.status().recovering);
    }

    #[test]
    fn votes_once_per_term_and_persists_the_promise() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        assert!(a.vote(1, P).unwrap().0);
        assert!(!a.vote(1, P).unwrap().0, "voted twice in term 1");
        drop(a);
        let mut a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(a.status().term, 1);
        assert!(
            !a.vote(1, P).unwrap().0,
            "forgot its promise across a restart"
        );
        assert!(a.vote(2, P).unwrap().0);
    }

    /// Leases go only to the proposer the current term was promised to, votes report what is
    /// left of them, and a restarted acceptor that ever promised a term assumes a whole one.
    #[test]
    fn leases_are_granted_to_the_term_holder_and_reported_by_votes() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        let t0 = Instant::now();
        assert_eq!(
            a.lease_remaining(t0),
            Duration::ZERO,
            "a new acceptor promised nothing"
        );
        assert_eq!(a.grant_lease(1, P, t0), (false, 0), "no term promised yet");
        a.vote(1, P).unwrap();
        assert_eq!(a.grant_lease(1, P + 1, t0), (false, 1), "another proposer");
        assert_eq!(a.grant_lease(0, P, t0), (false, 1), "an older term");
        assert_eq!(a.grant_lease(2, P, t0), (false, 1), "a term not promised");
        assert_eq!(a.lease_remaining(t0), Duration::ZERO);
        assert_eq!(a.grant_lease(1, P, t0), (true, 1));
        let later = t0 + Duration::from_millis(500);
        assert_eq!(
            a.lease_remaining(later),
            lease::LEASE - Duration::from_millis(500)
        );
        // A vote for a newer term reports it, and from then on term 1 gets no lease.
        assert!(a.vote(2, P + 1).unwrap().0);
        assert_eq!(a.grant_lease(1, P, later), (false, 2));
        assert_eq!(
            a.lease_remaining(later),
            lease::LEASE - Duration::from_millis(500)
        );
        assert_eq!(a.lease_remaining(t0 + lease::LEASE), Duration::ZERO);
        // An earlier grant never shortens a later one.
        assert_eq!(a.grant_lease(2, P + 1, later), (true, 2));
        assert_eq!(a.grant_lease(2, P + 1, t0), (true, 2));
        assert_eq!(a.lease_remaining(later), lease::LEASE);
        drop(a);
        let before_restart = Instant::now();
        let a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        assert!(a.lease_remaining(before_restart) >= lease::LEASE);
    }

    /// A proposer that stops serving gives its lease back, so the next term need not wait;
    /// nobody else can, a lease an older term may still use stays, and a renewal arriving
    /// after the release grants nothing.
    #[test]
    fn a_released_lease_frees_the_next_term_but_keeps_older_leases() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        let t0 = Instant::now();
        a.vote(1, P).unwrap();
        assert_eq!(a.grant_lease(1, P, t0), (true, 1));
        assert_eq!(a.release_lease(1, P + 1), (false, 1), "another proposer");
        assert_eq!(a.release_lease(0, P), (false, 1), "an older term");
        assert_eq!(a.release_lease(2, P), (false, 1), "a term not promised");
        assert_eq!(
            a.lease_remaining(t0),
            lease::LEASE,
            "refused releases kept it"
        );
        assert_eq!(a.release_lease(1, P), (true, 1));
        assert_eq!(a.lease_remaining(t0), Duration::ZERO);
        assert_eq!(
            a.grant_lease(1, P, t0),
            (false, 1),
            "a renewal after the release"
        );
        assert_eq!(a.lease_remaining(t0), Duration::ZERO);

        // Term 2 is promised while term 1's lease runs: term 2's release leaves term 1's.
        let other = tempfile::tempdir().unwrap();
        let mut a = Acceptor::open(other.path().to_path_buf()).unwrap();
        a.vote(1, P).unwrap();
        assert_eq!(a.grant_lease(1, P, t0), (true, 1));
        assert!(a.vote(2, P + 1).unwrap().0);
        assert_eq!(a.grant_lease(2, P + 1, t0), (true, 2));
        let later = t0 + Duration::from_millis(100);
        assert_eq!(a.grant_lease(2, P + 1, later), (true, 2));
        assert_eq!(a.release_lease(2, P + 1), (true, 2));
        assert_eq!(
            a.lease_remaining(t0),
            lease::LEASE,
            "term 1's primary may still use its lease"
        );
        // A newer term can be leased again after an older one released.
        assert!(a.vote(3, P).unwrap().0);
        assert_eq!(a.grant_lease(3, P, later), (true, 3));
        assert_eq!(a.lease_remaining(later), lease::LEASE);

        // A lease assumed at a restart is never released: whose it was is unknown.
        drop(a);
        let before_restart = Instant::now();
        let mut a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(a.release_lease(1, P), (true, 1));
        assert!(a.lease_remaining(before_restart) >= lease::LEASE);
    }

    #[test]
    fn append_requires_election_and_refuses_old_terms() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        a.vote(2, P).unwrap();
        let f = frame(0, 1);
        let e = a.append(2, sess(&a), 0, &f, 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        elect(&mut a, 2, &[ts(2, 0)], 0).unwrap();
        let end = a.append(2, sess(&a), 0, &f, 0).unwrap();
        assert_eq!(end, f.len() as u64);
        // Re-sending what is already there is harmless.
        assert_eq!(a.append(2, sess(&a), 0, &f, end).unwrap(), end);
        assert_eq!(a.status().commit_lsn, end);
        a.vote(3, P).unwrap();
        let e = a.append(2, sess(&a), end, &frame(end, 2), end).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Fenced);
    }

    #[test]
    fn a_group_is_applied_in_order_and_stops_at_the_first_failure() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        a.vote(1, P).unwrap();
        elect(&mut a, 1, &[ts(1, 0)], 0).unwrap();
        let f1 = frame(0, 1);
        let e1 = f1.len() as u64;
        let f2 = frame(e1, 2);
        let e2 = e1 + f2.len() as u64;
        let gap = frame(e2 + 5, 3);
        let session = sess(&a);
        let args = |begin, frames: &'static [u8], commit| AppendArgs {
            term: 1,
            session,
            begin,
            frames,
            commit_lsn: commit,
        };
        let (f1s, f2s, gaps): (&'static [u8], &'static [u8], &'static [u8]) =
            (f1.to_vec().leak(), f2.to_vec().leak(), gap.to_vec().leak());
        let results = a.append_group(&[
            args(0, f1s, 0),
            args(e1, f2s, e1),
            args(e2 + 5, gaps, e2),
            args(e2, f1s, e2),
        ]);
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].as_ref().unwrap(), &e2);
        assert_eq!(results[1].as_ref().unwrap(), &e2);
        assert!(results[2].is_err());
        assert_eq!(a.status().flush_lsn, e2);
        assert_eq!(a.status().commit_lsn, e1);
        drop(a);
        let a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(a.status().flush_lsn, e2);
    }

    #[test]
    fn a_divergent_uncommitted_suffix_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        a.vote(1, P).unwrap();
        elect(&mut a, 1, &[ts(1, 0)], 0).unwrap();
        let f1 = frame(0, 1);
        let c = a.append(1, sess(&a), 0, &f1, 0).unwrap();
        let f2 = frame(c, 2);
        let end = a.append(1, sess(&a), c, &f2, c).unwrap();
        assert_eq!(a.status().commit_lsn, c);
        // Term 2's proposer took over from a donor whose log ended at `c`: our f2 diverges.
        a.vote(2, P).unwrap();
        let st = elect(&mut a, 2, &[ts(1, 0), ts(2, c)], 0).unwrap();
        assert_eq!(st.flush_lsn, c);
        assert!(end > c);
        drop(a);
        let a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(a.status().flush_lsn, c);
        assert_eq!(a.status().history, vec![ts(1, 0), ts(2, c)]);
    }

    #[test]
    fn election_never_truncates_below_the_commit_position() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        a.vote(1, P).unwrap();
        elect(&mut a, 1, &[ts(1, 0)], 0).unwrap();
        let f1 = frame(0, 1);
        let c = a.append(1, sess(&a), 0, &f1, 0).unwrap();
        a.append(1, sess(&a), c, &[], c).unwrap();
        a.vote(5, P).unwrap();
        // A (buggy) proposer whose history shares nothing with ours.
        let e = elect(&mut a, 5, &[ts(4, 0), ts(5, 10)], 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corruption);
        assert_eq!(a.status().flush_lsn, c);
    }

    #[test]
    fn wal_without_its_control_file_is_refused_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        a.vote(1, P).unwrap();
        elect(&mut a, 1, &[ts(1, 0)], 0).unwrap();
        let c = a.append(1, sess(&a), 0, &frame(0, 1), 0).unwrap();
        drop(a);
        std::fs::remove_file(dir.path().join("control.json")).unwrap();
        let e = Acceptor::open(dir.path().to_path_buf()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
        assert!(e.message().contains(&format!("WAL up to LSN {c}")), "{e}");
        // A fresh directory, and one whose control file was never needed, open as before.
        let fresh = tempfile::tempdir().unwrap();
        assert!(Acceptor::open(fresh.path().to_path_buf()).is_ok());
        assert!(Acceptor::open(fresh.path().to_path_buf()).is_ok());
    }

    #[test]
    fn an_interrupted_reset_is_finished_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        a.vote(1, P).unwrap();
        elect(&mut a, 1, &[ts(1, 0)], 0).unwrap();
        let c = a.append(1, sess(&a), 0, &frame(0, 1), 0).unwrap();
        a.append(1, sess(&a), c, &[], c).unwrap();
        a.persist_commit_lsn().unwrap();
        drop(a);
        // The crash: the intent to restart the log at 9000 is stored, no segment deleted yet.
        let mut control = Control::load(dir.path()).unwrap();
        control.term = 2;
        control.history = vec![ts(2, 9000)];
        control.log_start_lsn = 9000;
        control.commit_lsn = 9000;
        control.reset_pending = true;
        control.store(dir.path()).unwrap();
        let a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        let st = a.status();
        assert_eq!(
            (st.log_start_lsn, st.flush_lsn, st.commit_lsn),
            (9000, 9000, 9000)
        );
        assert!(!Control::load(dir.path()).unwrap().reset_pending);
    }

    /// Rot under a running safekeeper, found by a read: the log is damaged from the bad frame
    /// on (nothing served, voted or appended), the finding is handed once to whoever starts
    /// the repair, and the repair from a peer's copy makes it whole, as for damage found on
    /// open. Before, the read failed and the acceptor went on as if nothing were wrong.
    #[test]
    fn rot_found_by_a_read_makes_the_log_damaged_until_repaired() {
        let Pair {
            peer_dir: _peer_dir,
            dir,
            peer,
            mut a,
            starts,
            end,
        } = pair_in_term_1(1..=8, 1 << 20);
        let seg = dir.path().join(format!("{:016X}.seg", 0));
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[starts[2] as usize + 12] ^= 0x01; // inside the third frame
        std::fs::write(&seg, &bytes).unwrap();

        // Frames before it still read; the one read that meets it finds the damage.
        assert!(a.serve(0, starts[2], usize::MAX).is_ok());
        assert!(a.status().damage.is_none());
        let e = a.serve(starts[1], end, usize::MAX).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
        let d = a.status().damage.unwrap();
        assert_eq!((d.from, d.to), (starts[2], end));
        assert!(a.take_found_damage());
        assert!(!a.take_found_damage(), "handed over once");
        // Served again while damaged: refused, and not found a second time (that started a
        // second repair and left the damaged-databases gauge counting it for good).
        assert_eq!(
            a.serve(0, end, usize::MAX).unwrap_err().kind(),
            ErrorKind::Corruption
        );
        assert!(!a.take_found_damage(), "known damage found again");
        assert_eq!(
            a.read(0, starts[2], usize::MAX).unwrap_err().kind(),
            ErrorKind::Corruption
        );
        assert_eq!(a.vote(2, P).unwrap_err().kind(), ErrorKind::Corruption);

        let st = peer.status();
        let plan = a.repair_plan(&peer_log(&st), None).unwrap();
        assert_eq!((plan.from, plan.to), (starts[2], end));
        let copy = peer.read(plan.from, plan.to, usize::MAX).unwrap();
        a.repair(&peer_log(&st), &copy, None).unwrap();
        assert!(a.status().damage.is_none());
        assert_eq!(
            a.read(0, end, usize::MAX).unwrap(),
            peer.read(0, end, usize::MAX).unwrap()
        );
    }

    #[test]
    fn a_damaged_log_serves_nothing_until_repaired_from_a_peer_copy() {
        let Pair {
            peer_dir: _peer_dir,
            dir,
            peer,
            mut a,
            end,
            ..
        } = pair_in_term_1(1..=3, SEGMENT_TARGET_SIZE);
        a.persist_commit_lsn().unwrap();
        drop(a);
        let seg = dir.path().join(format!("{:016X}.seg", 0));
        let mut bytes = std::fs::read(&seg).unwrap();
        let second = frame(0, 1).len();
        bytes[second + 12] ^= 0x01; // inside the second frame
        std::fs::write(&seg, &bytes).unwrap();

        let mut a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        let d = a.status().damage.unwrap();
        assert_eq!(d.from, second as u64);
        let recent = a.recent();
        assert_eq!(
            a.read(0, end, 1 << 20).unwrap_err().kind(),
            ErrorKind::Corruption
        );
        assert_eq!(a.vote(2, P).unwrap_err().kind(), ErrorKind::Corruption);
        assert_eq!(
            a.append(1, sess(&a), end, &frame(end, 9), 0)
                .unwrap_err()
                .kind(),
            ErrorKind::Corruption
        );
        // A peer whose log departs from ours below the commit position is not a source.
        let alien = [ts(7, 0)];
        let log = |history: &[TermSwitch]| PeerLog {
            history: history.to_vec(),
            log_start: 0,
            flush: end,
        };
        assert_eq!(a.repair_plan(&log(&alien), None), None);
        let st = peer.status();
        assert_eq!(
            a.repair_plan(&peer_log(&st), None),
            Some(RepairPlan {
                from: d.from,
                to: d.to
            })
        );
        // Nor is a peer shorter than the damaged stretch.
        assert_eq!(a.repair_plan(&log(&st.history), None).unwrap().to, end);
        let short = PeerLog {
            flush: end - 1,
            ..peer_log(&st)
        };
        assert_eq!(a.repair_plan(&short, None), None);
        let copy = peer.read(d.from, d.to, usize::MAX).unwrap();
        // A copy cut short is refused; nothing is cut for it.
        assert_eq!(
            a.repair(&peer_log(&st), &copy[..copy.len() - 1], None)
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidArgument
        );
        a.repair(&peer_log(&st), &copy, None).unwrap();
        assert_repaired_to(&a, &peer, 0, end);
        // The buffer the readers hold was kept off while the log was damaged and comes back
        // empty with the repaired log (recent.rs pins the off switch); what is written after
        // the repair is served from it.
        assert_eq!(recent.read(d.from, d.to), None);
        let next = frame(end, 4);
        elect(&mut a, 1, &[ts(1, 0)], 0).unwrap();
        let after = a.append(1, sess(&a), end, &next, end).unwrap();
        assert_eq!(recent.read(end, after).unwrap(), next.to_vec());
        assert_eq!(
            a.read(0, end, usize::MAX).unwrap(),
            peer.read(0, end, usize::MAX).unwrap()
        );
        drop(a);
        let a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(a.status().damage, None);
    }

    /// Found by the chaos run: a safekeeper killed with an uncommitted suffix and a flipped
    /// byte, while a newer term took over from a log without that suffix. No peer holds the
    /// suffix, so an exact copy never came; the repair ends where the newer term began (as
    /// its `Elected` would have cut), whether the damage lies below that point or past it.
    #[test]
    fn damage_under_a_suffix_a_newer_term_dropped_is_repaired_up_to_where_that_term_began() {
        // (frame whose byte is flipped, where the repair must start)
        for (damaged_frame, expect_from_frame) in [(1usize, 1usize), (3, 3)] {
            // Three frames on both, committed up to the third's start.
            let Pair {
                peer_dir: _peer_dir,
                dir,
                mut peer,
                mut a,
                mut starts,
                mut end,
            } = pair_in_term_1(1..=3, SEGMENT_TARGET_SIZE);
            let common = end;
            let commit = starts[2];
            // Two more on `a` alone, in term 3: the suffix a newer term continues without.
            a.vote(3, P).unwrap();
            elect(&mut a, 3, &[ts(1, 0), ts(3, common)], 0).unwrap();
            for tag in 4..=5u8 {
                starts.push(end);
                end = a
                    .append(3, sess(&a), end, &frame(end, tag), commit)
                    .unwrap();
            }
            assert_eq!(a.status().commit_lsn, commit);
            // Term 4 continues the peer's log from `common` and writes on.
            peer.vote(4, P).unwrap();
            elect(&mut peer, 4, &[ts(1, 0), ts(4, common)], 0).unwrap();
            let mut peer_end = common;
            for tag in 6..=7u8 {
                peer_end = peer
                    .append(4, sess(&peer), peer_end, &frame(peer_end, tag), common)
                    .unwrap();
            }
            a.persist_commit_lsn().unwrap();
            drop(a);
            let seg = dir.path().join(format!("{:016X}.seg", 0));
            let mut bytes = std::fs::read(&seg).unwrap();
            bytes[starts[damaged_frame] as usize + 12] ^= 0x01;
            std::fs::write(&seg, &bytes).unwrap();

            let mut a = Acceptor::open(dir.path().to_path_buf()).unwrap();
            let d = a.status().damage.unwrap();
            assert_eq!((d.from, d.to), (starts[damaged_frame], end));
            let st = peer.status();
            // Not sources: our own lineage but shorter than the stretch; a newer term that
            // departs below the commit position; one that departs where ours does, for an
            // older term than ours (an abandoned proposer's log).
            let same_term = [ts(1, 0), ts(3, common)];
            let below_commit = [ts(1, 0), ts(4, commit - 1)];
            let older = [ts(1, 0), ts(2, common)];
            for (history, flush) in [
                (&same_term[..], end - 1),
                (&below_commit[..], peer_end),
                (&older[..], peer_end),
            ] {
                let candidate = PeerLog {
                    history: history.to_vec(),
                    log_start: 0,
                    flush,
                };
                assert_eq!(a.repair_plan(&candidate, None), None, "{history:?}");
            }
            let plan = a.repair_plan(&peer_log(&st), None).unwrap();
            let from = starts[expect_from_frame].min(common);
            assert_eq!(plan, RepairPlan { from, to: common });
            // The peer's copy runs into term 2; only up to `common` is used.
            let copy = if from < common {
                peer.read(from, peer_end, usize::MAX).unwrap()
            } else {
                Vec::new()
            };
            a.repair(&peer_log(&st), &copy, None).unwrap();
            let mine = a.status();
            assert_eq!(mine.damage, None);
            assert_eq!((mine.flush_lsn, mine.commit_lsn), (common, commit));
            // Cut at its end, the history still says term 3 began there (nothing of it held),
            // as right after that term's `Elected`.
            assert_eq!(mine.history, vec![ts(1, 0), ts(3, common)]);
            assert_eq!(
                a.read(0, common, usize::MAX).unwrap(),
                peer.read(0, common, usize::MAX).unwrap()
            );
            // Term 4's proposer brings it up to date like any lagging safekeeper, and a
            // restart finds it whole.
            a.vote(4, P).unwrap();
            elect(&mut a, 4, &[ts(1, 0), ts(4, common)], 0).unwrap();
            let rest = peer.read(common, peer_end, usize::MAX).unwrap();
            let after = a.append(4, sess(&a), common, &rest, common).unwrap();
            assert_eq!(after, peer_end);
            drop(a);
            let a = Acceptor::open(dir.path().to_path_buf()).unwrap();
            assert_eq!(a.status().damage, None);
            assert_eq!(
                a.read(0, peer_end, usize::MAX).unwrap(),
                peer.read(0, peer_end, usize::MAX).unwrap()
            );
        }
    }

    /// A torn write after the damage ends the stretch inside a frame the peer holds whole:
    /// the repair takes that frame too rather than wait for a copy ending mid-frame.
    /// Damages the committed frame at `damaged` in `a`'s log (in its first segment), writes
    /// `torn` (the start of a frame the peer holds whole) at `end` as a torn write would, and
    /// reopens it. The damaged stretch runs to the torn write's last byte that is not zero:
    /// inside the torn frame.
    fn torn_after_damage(
        mut a: Acceptor,
        dir: &tempfile::TempDir,
        damaged: Lsn,
        end: Lsn,
        torn: &[u8],
    ) -> (Acceptor, Damage) {
        a.persist_commit_lsn().unwrap();
        drop(a);
        let seg = dir.path().join(format!("{:016X}.seg", 0));
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[end as usize..end as usize + torn.len()].copy_from_slice(torn);
        bytes[damaged as usize + 12] ^= 0x01;
        std::fs::write(&seg, &bytes).unwrap();
        let a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        let d = a.status().damage.unwrap();
        assert_eq!(d.from, damaged);
        assert!(d.to > end && d.to <= end + torn.len() as u64, "{d:?}");
        (a, d)
    }

    /// How every repair ends: no damage left, the log flushed to `end`, and its bytes from
    /// `from` to `end` the peer's own.
    fn assert_repaired_to(a: &Acceptor, peer: &Acceptor, from: Lsn, end: Lsn) {
        let st = a.status();
        assert_eq!(st.damage, None);
        assert_eq!(st.flush_lsn, end);
        assert_eq!(
            a.read(from, end, usize::MAX).unwrap(),
            peer.read(from, end, usize::MAX).unwrap()
        );
    }

    #[test]
    fn damage_followed_by_a_torn_write_is_repaired_through_the_straddling_frame() {
        let Pair {
            peer_dir: _peer_dir,
            dir,
            mut peer,
            a,
            starts,
            end,
        } = pair_in_term_1(1..=4, SEGMENT_TARGET_SIZE);
        // The peer also holds a fifth frame; `a` got only its first half on disk.
        let fifth = frame(end, 5);
        let peer_end = peer.append(1, sess(&peer), end, &fifth, end).unwrap();
        let half = fifth.len() / 2;
        let (mut a, d) = torn_after_damage(a, &dir, starts[1], end, &fifth[..half]);
        let st = peer.status();
        let plan = a.repair_plan(&peer_log(&st), None).unwrap();
        assert_eq!(
            plan,
            RepairPlan {
                from: d.from,
                to: d.to
            }
        );
        // Copied only up to the stretch's end, the frame is cut: refused, nothing cut.
        let short = peer.read(plan.from, end, usize::MAX).unwrap();
        assert_eq!(
            a.repair(&peer_log(&st), &short, None).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        let copy = peer
            .read(plan.from, plan.copy_end(d, st.flush_lsn), usize::MAX)
            .unwrap();
        a.repair(&peer_log(&st), &copy, None).unwrap();
        assert_repaired_to(&a, &peer, 0, peer_end);
    }

    /// The edge of the straddle bound: a torn write leaves the stretch's end a few bytes into
    /// the largest frame a committer appends, and the peer holds more past it, so the copy
    /// read to [`RepairPlan::copy_end`] must reach that whole frame through the bound alone.
    #[test]
    fn a_torn_write_into_the_largest_frame_is_repaired_through_the_straddle_bound() {
        let Pair {
            peer_dir: _peer_dir,
            dir,
            mut peer,
            a,
            starts,
            end,
        } = pair_in_term_1(1..=3, SEGMENT_TARGET_SIZE);
        // A frame of exactly the committer's largest size, then another as large after it,
        // so that the peer's log end is no help and only the bound decides.
        let largest = |at: Lsn, tag: u8| {
            let value_len = |n: usize| {
                let m = Mutation::Set {
                    key: Bytes::from_static(b"k"),
                    value: Bytes::from(vec![tag; n]),
                };
                encode_frame(at, 7, &[m]).0
            };
            let probe = value_len(0).len();
            let f = value_len(ferrisdb_common::message_size::MAX_FRAME_BYTES - probe);
            assert_eq!(f.len(), ferrisdb_common::message_size::MAX_FRAME_BYTES);
            f
        };
        let big = largest(end, 3);
        let big_end = peer.append(1, sess(&peer), end, &big, end).unwrap();
        let after = largest(big_end, 4);
        let peer_end = peer
            .append(1, sess(&peer), big_end, &after, big_end)
            .unwrap();
        // `a` got only the big frame's first 64 bytes.
        let (mut a, d) = torn_after_damage(a, &dir, starts[1], end, &big[..64]);
        let st = peer.status();
        let plan = a.repair_plan(&peer_log(&st), None).unwrap();
        let copy_end = plan.copy_end(d, st.flush_lsn);
        // Past the big frame, and short of the peer's end: the bound, not the peer, decided.
        assert!(copy_end >= big_end && copy_end < peer_end, "{copy_end}");
        let copy = peer.read(plan.from, copy_end, usize::MAX).unwrap();
        assert_eq!(plan.from + copy.len() as u64, big_end);
        a.repair(&peer_log(&st), &copy, None).unwrap();
        assert_repaired_to(&a, &peer, 0, big_end);
    }

    /// Without an object store to check a durable claim against, nothing is trimmed, however
    /// modest the claim: a pageserver whose uploads do not last (`memory://`) would otherwise
    /// have the safekeepers delete the only other copy of committed WAL.
    #[test]
    fn an_unverifiable_durable_claim_trims_nothing() {
        let Pair {
            peer_dir: _peer_dir,
            dir: _dir,
            mut peer,
            a: _a,
            starts,
            end: _,
        } = pair_in_term_1(1..=6, 64);
        let start = peer.status().log_start_lsn;
        assert!(peer.commit_lsn() >= starts[3]);
        assert_eq!(peer.trim(starts[3], None).unwrap(), start);
        assert_eq!(peer.status().log_start_lsn, start);
        // The same claim, vouched for by object storage, trims.
        assert!(peer.trim(starts[3], Some(starts[3])).unwrap() > start);
    }

    /// Found by the soak: a safekeeper whose damaged stretch its peers had already trimmed
    /// (it was in object storage) found no source and stayed out for good.
    #[test]
    fn damage_the_peers_trimmed_is_repaired_from_their_log_start_when_object_storage_holds_it() {
        let Pair {
            peer_dir: _peer_dir,
            dir,
            mut peer,
            a,
            starts,
            end,
        } = pair_in_term_1(1..=6, 64);
        drop(a);
        // Damage the second frame, in whichever segment holds it.
        let mut segments: Vec<Lsn> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                Lsn::from_str_radix(name.strip_suffix(".seg")?, 16).ok()
            })
            .collect();
        segments.sort_unstable();
        assert!(segments.len() >= 3, "{segments:?}");
        let seg_start = *segments.iter().rev().find(|s| **s <= starts[1]).unwrap();
        let seg = dir.path().join(format!("{seg_start:016X}.seg"));
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[(starts[1] - seg_start) as usize + 12] ^= 0x01;
        std::fs::write(&seg, &bytes).unwrap();
        let mut a = Acceptor::open_with(dir.path().to_path_buf(), 64).unwrap();
        let d = a.status().damage.unwrap();
        assert_eq!(d.from, starts[1]);
        // The peer trimmed everything below the fourth frame: object storage holds it.
        // (Trimming deletes whole segments, so the new start is a segment boundary.)
        let cut = peer.trim(starts[3], Some(starts[3])).unwrap();
        assert!(cut > d.from, "{cut} {d:?}");
        let st = peer.status();
        assert_eq!(st.log_start_lsn, cut);
        // Without object storage vouching for the peer's start, it is no source.
        assert_eq!(a.repair_plan(&peer_log(&st), None), None);
        assert_eq!(a.repair_plan(&peer_log(&st), Some(cut - 1)), None);
        let plan = a.repair_plan(&peer_log(&st), Some(cut)).unwrap();
        assert_eq!(
            plan,
            RepairPlan {
                from: cut,
                to: d.to
            }
        );
        let copy = peer.read(plan.from, plan.to, usize::MAX).unwrap();
        // The restart is checked again at the repair itself.
        assert_eq!(
            a.repair(&peer_log(&st), &copy, Some(cut - 1))
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidArgument
        );
        a.repair(&peer_log(&st), &copy, Some(cut)).unwrap();
        assert_eq!(a.status().log_start_lsn, cut);
        assert_repaired_to(&a, &peer, cut, end);
        // A restart finds it whole, and the proposer's next Elected lets it append again.
        drop(a);
        let mut a = Acceptor::open_with(dir.path().to_path_buf(), 64).unwrap();
        assert_eq!(a.status().damage, None);
        assert_eq!(a.status().log_start_lsn, cut);
        a.elected(1, P, &[ts(1, 0)], cut, Some(cut)).unwrap();
        let next = frame(end, 7);
        let after = a.append(1, sess(&a), end, &next, end).unwrap();
        assert_eq!(after, end + next.len() as u64);
    }

    #[test]
    fn elected_with_a_higher_log_start_restarts_an_empty_log_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        a.vote(1, P).unwrap();
        // Restarting the log past its end needs object storage to hold what lies below.
        let e = elect(&mut a, 1, &[ts(1, 9000)], 9000).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        let e = a
            .elected(1, P, &[ts(1, 9000)], 9000, Some(8999))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert_eq!(a.status().flush_lsn, 0);
        let st = a.elected(1, P, &[ts(1, 9000)], 9000, Some(9000)).unwrap().0;
        assert_eq!((st.log_start_lsn, st.flush_lsn), (9000, 9000));
        let end = a.append(1, sess(&a), 9000, &frame(9000, 1), 0).unwrap();
        drop(a);
        let a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(
            (a.status().log_start_lsn, a.status().flush_lsn),
            (9000, end)
        );
    }

    /// Mid-term the proposer's log start passes where its term started writing (the WAL
    /// below is in object storage); a safekeeper that rejoins then takes the term from the
    /// log start, but only if the manifest it reads covers that start.
    #[test]
    fn a_rejoining_acceptor_takes_a_log_start_past_the_term_start_that_object_storage_covers() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Acceptor::open(dir.path().to_path_buf()).unwrap();
        a.vote(1, P).unwrap();
        // The term started writing at 0; the proposer's log now starts at 9000.
        let history = [ts(1, 0)];
        let e = a.elected(1, P, &history, 9000, Some(8999)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        let e = elect(&mut a, 1, &history, 9000).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert_eq!(a.status().flush_lsn, 0);
        let st = a.elected(1, P, &history, 9000, Some(9000)).unwrap().0;
        assert_eq!((st.log_start_lsn, st.flush_lsn), (9000, 9000));
        let end = a.append(1, sess(&a), 9000, &frame(9000, 1), 0).unwrap();
        assert!(end > 9000);
    }
}
