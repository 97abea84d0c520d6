//! A peer that holds valid access to the safekeepers (the cluster credential) plays each of the
//! data-loss sequences of issue 13 against real acceptors (files on disk). Each one must be
//! refused or harmless: the committed records read back from the acceptor, and again after it
//! is reopened from disk. These are the sequences that destroyed acknowledged data before the
//! protocol checked its inputs (docs/wal-protocol.md, "Invariants").

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use ferrisdb_common::wal::{self, Mutation, encode_frame};
use ferrisdb_common::{ErrorKind, Lsn};
use ferrisdb_server_common::term_history::TermSwitch;
use ferrisdb_wal_service::acceptor::{Acceptor, MAX_TERM_STEP, ProposerId};

const PROPOSER: ProposerId = 0x5eed_0000_0000_0000_0000_0000_0000_0001;
const ATTACKER: ProposerId = 0xbad;

fn ts(term: u64, lsn: Lsn) -> TermSwitch {
    TermSwitch { term, lsn }
}

fn record(at: Lsn, value: &str) -> Bytes {
    let m = Mutation::Set {
        key: Bytes::from_static(b"k"),
        value: Bytes::copy_from_slice(value.as_bytes()),
    };
    encode_frame(at, 0, &[m]).0
}

/// One acceptor holding three committed records, written by the proposer of term 1 through
/// its session, in segments small enough that each record gets its own.
struct Victim {
    dir: tempfile::TempDir,
    a: Acceptor,
    session: u64,
    commit: Lsn,
}

const COMMITTED: [&str; 3] = ["acked-1", "acked-2", "acked-3"];

impl Victim {
    fn new() -> Victim {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Acceptor::open_with(dir.path().to_path_buf(), 1).unwrap();
        assert!(a.vote(1, PROPOSER).unwrap().0);
        let (_, session) = a.elected(1, PROPOSER, &[ts(1, 0)], 0, None).unwrap();
        let mut end = 0;
        for v in COMMITTED {
            end = a.append(1, session, end, &record(end, v), end).unwrap();
        }
        // The commit position reaches the acceptor with the next (empty) append.
        a.append(1, session, end, &[], end).unwrap();
        assert_eq!(a.status().commit_lsn, end);
        a.persist_commit_lsn().unwrap();
        Victim {
            dir,
            a,
            session,
            commit: end,
        }
    }

    fn values(a: &Acceptor) -> Vec<String> {
        let st = a.status();
        let log = a.read(st.log_start_lsn, st.flush_lsn, usize::MAX).unwrap();
        wal::decode_frames(&log, st.log_start_lsn)
            .unwrap()
            .iter()
            .flat_map(|r| r.mutations.iter())
            .map(|m| String::from_utf8(m.value().unwrap().to_vec()).unwrap())
            .collect()
    }

    /// The committed records still begin the log, now and after a reopen from disk.
    fn assert_committed_prefix_intact(self) {
        assert_eq!(Victim::values(&self.a)[..3], COMMITTED);
        drop(self.a);
        let a = Acceptor::open(self.dir.path().to_path_buf()).unwrap();
        assert_eq!(
            Victim::values(&a)[..3],
            COMMITTED,
            "committed WAL changed on disk"
        );
    }

    /// Every committed record reads back, now and after a reopen from disk.
    fn assert_committed_intact(self) {
        assert_eq!(Victim::values(&self.a), COMMITTED, "committed WAL changed");
        assert!(self.a.status().flush_lsn >= self.commit);
        drop(self.a);
        let a = Acceptor::open(self.dir.path().to_path_buf()).unwrap();
        assert_eq!(a.status().damage, None);
        assert_eq!(
            Victim::values(&a),
            COMMITTED,
            "committed WAL changed on disk"
        );
        assert!(a.status().commit_lsn <= a.status().flush_lsn);
    }
}

/// Attack 1: the current term is public (GetStatus). An append in it, without an election,
/// overlapping committed WAL with other bytes and claiming a commit position past them.
#[test]
fn a_forged_append_in_the_current_term_is_refused() {
    let mut v = Victim::new();
    let term = v.a.status().term;
    let forged = record(0, "forged-by-a-peer");
    let flush = v.a.status().flush_lsn;
    // No session, a guessed one, and at the log end rather than overlapping: all refused.
    for (session, begin) in [(0, 0), (1, 0), (v.session ^ 1, 0), (0, flush)] {
        let e =
            v.a.append(term, session, begin, &forged, u64::MAX)
                .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    }
    // Taking over the term's session needs the id the term was promised to.
    let history = v.a.status().history;
    let e = v.a.elected(term, ATTACKER, &history, 0, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");
    // Nothing moved: the proposer's own session still works.
    assert_eq!(v.a.status().flush_lsn, flush);
    assert_eq!(v.a.status().commit_lsn, v.commit);
    let end =
        v.a.append(term, v.session, flush, &record(flush, "after"), flush)
            .unwrap();
    assert!(end > flush);
    let values = Victim::values(&v.a);
    assert_eq!(values[..3], COMMITTED);
    assert_eq!(values[3], "after");
    v.assert_committed_prefix_intact();
}

/// Overlapping appends are compared byte for byte: a proposer's own session re-sending other
/// bytes over committed WAL is refused (`corruption`) and counted, never written or skipped.
#[test]
fn an_overlapping_append_that_differs_from_committed_wal_is_refused_and_reported() {
    let mut v = Victim::new();
    let first = record(0, "acked-1");
    // The identical bytes again are harmless.
    assert_eq!(
        v.a.append(1, v.session, 0, &first, v.commit).unwrap(),
        v.commit
    );
    let other = record(0, "acked-X");
    assert_eq!(other.len(), first.len());
    let e = v.a.append(1, v.session, 0, &other, v.commit).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
    assert_eq!(v.a.status().wal_mismatches, 1);
    // Longer than the log: the new tail is not written either.
    let mut longer = other.to_vec();
    longer.extend_from_slice(&record(v.commit, "tail"));
    let e = v.a.append(1, v.session, 0, &longer, 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corruption);
    assert_eq!(v.a.status().flush_lsn, v.commit);
    assert_eq!(v.a.status().wal_mismatches, 2);
    v.assert_committed_intact();
}

/// Above the commit position a mismatch is refused too: only a new election truncates a
/// divergent suffix.
#[test]
fn an_overlapping_append_that_differs_above_the_commit_position_is_refused() {
    let mut v = Victim::new();
    let end =
        v.a.append(1, v.session, v.commit, &record(v.commit, "uncommitted"), 0)
            .unwrap();
    let e =
        v.a.append(1, v.session, v.commit, &record(v.commit, "uncommitteX"), 0)
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert_eq!(v.a.status().flush_lsn, end);
    assert_eq!(Victim::values(&v.a)[3], "uncommitted");
    v.assert_committed_prefix_intact();
}

/// Attack 2: RequestVote, then Elected with a start position past the log end. This deleted
/// every segment on every safekeeper.
#[test]
fn elected_past_the_log_end_is_refused_and_deletes_nothing() {
    let mut v = Victim::new();
    let flush = v.a.status().flush_lsn;
    let segments = || {
        std::fs::read_dir(v.dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".seg")
            })
            .count()
    };
    let before = segments();
    assert!(before >= 3);
    assert!(v.a.vote(2, ATTACKER).unwrap().0);
    let far = flush + (1 << 30);
    // No object store to verify the claim against.
    let e =
        v.a.elected(2, ATTACKER, &[ts(2, far)], far, None)
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    // An object store that holds less than the claim.
    let e =
        v.a.elected(2, ATTACKER, &[ts(2, far)], far, Some(v.commit))
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    // A log start past where the term itself starts writing, beyond what object storage
    // holds, leaves a gap.
    let e =
        v.a.elected(2, ATTACKER, &[ts(1, 0), ts(2, flush)], far, Some(flush))
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    // A history sharing nothing with ours, starting at 0: truncating to 0 cuts committed WAL.
    let e = v.a.elected(2, ATTACKER, &[ts(2, 0)], 0, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
    // A history that rewinds (a later term starting lower) is malformed.
    let e =
        v.a.elected(2, ATTACKER, &[ts(1, flush), ts(2, 0)], 0, None)
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert_eq!(segments(), before, "a segment was deleted");
    assert_eq!(v.a.status().flush_lsn, flush);
    v.assert_committed_intact();
}

/// Attack 3: ReportDurable(u64::MAX) with WAL that object storage does not hold. This deleted
/// committed WAL that no pageserver had uploaded.
#[test]
fn report_durable_max_deletes_nothing_object_storage_does_not_hold() {
    let mut v = Victim::new();
    let first_end = record(0, COMMITTED[0]).len() as u64;
    // Object storage (the newest manifest) holds only the first record.
    let start = v.a.trim(u64::MAX, Some(first_end)).unwrap();
    assert_eq!(start, first_end, "trimmed past what object storage holds");
    let st = v.a.status();
    assert_eq!(st.log_start_lsn, first_end);
    assert_eq!(st.remote_consistent_lsn, first_end);
    let log = v.a.read(first_end, st.flush_lsn, usize::MAX).unwrap();
    assert_eq!(log.len() as u64, v.commit - first_end);
    // With no object store configured, a claim above the commit position is not believed.
    assert_eq!(v.a.trim(u64::MAX, None).unwrap(), first_end);
    // And a sound claim never trims above the commit position: uncommitted WAL stays.
    let end =
        v.a.append(1, v.session, v.commit, &record(v.commit, "uncommitted"), 0)
            .unwrap();
    v.a.trim(end, Some(u64::MAX)).unwrap();
    assert!(v.a.status().log_start_lsn <= v.commit);
    let held = v.a.read(v.commit, end, usize::MAX).unwrap();
    assert_eq!(held.len() as u64, end - v.commit);
    drop(v.a);
    let a = Acceptor::open(v.dir.path().to_path_buf()).unwrap();
    let st = a.status();
    assert!(st.log_start_lsn <= v.commit);
    // Everything object storage does not hold is still on disk after a reopen.
    let kept = a.read(st.log_start_lsn, st.flush_lsn, usize::MAX).unwrap();
    assert_eq!(kept.len() as u64, end - st.log_start_lsn);
    assert!(st.log_start_lsn >= first_end);
}

/// Attack 4: RequestVote(u64::MAX) made the compute's next term wrap to 0: no compute could be
/// elected again. It is refused, and a normal election (max term seen + 1) still succeeds.
#[test]
fn a_vote_far_ahead_is_refused_and_a_normal_election_still_succeeds() {
    let mut v = Victim::new();
    let term = v.a.status().term;
    for far in [u64::MAX, u64::MAX - 1, term + MAX_TERM_STEP + 1] {
        let e = v.a.vote(far, ATTACKER).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        let e =
            v.a.elected(far, ATTACKER, &[ts(far, 0)], 0, None)
                .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    }
    assert_eq!(v.a.status().term, term, "a refused vote moved the term");
    // A normal election: the next term is the highest seen plus one.
    let next = v.a.status().term.checked_add(1).unwrap();
    assert!(v.a.vote(next, PROPOSER + 1).unwrap().0);
    let flush = v.a.status().flush_lsn;
    let mut history = v.a.status().history;
    history.push(ts(next, flush));
    let (st, session) = v.a.elected(next, PROPOSER + 1, &history, 0, None).unwrap();
    assert_eq!(st.flush_lsn, flush);
    // The old term's session is closed by the new term.
    let e =
        v.a.append(1, v.session, flush, &record(flush, "old"), 0)
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fenced);
    let end =
        v.a.append(next, session, flush, &record(flush, "new"), flush)
            .unwrap();
    v.a.append(next, session, end, &[], end).unwrap();
    assert_eq!(v.a.status().commit_lsn, end);
    let values = Victim::values(&v.a);
    assert_eq!(values[..3], COMMITTED);
    assert_eq!(values[3], "new");
    // Even a proposer that climbs as far as allowed, step by step, never wraps.
    let top = v.a.status().term + MAX_TERM_STEP;
    assert!(v.a.vote(top, ATTACKER).unwrap().0);
    drop(v.a);
    let a = Acceptor::open(v.dir.path().to_path_buf()).unwrap();
    assert_eq!(a.status().term, top);
    assert_eq!(Victim::values(&a)[..3], COMMITTED);
}

/// The promise records whose term it is across a restart: after a reopen, `Elected` in the
/// promised term from another id is still refused, and appends need a new session.
#[test]
fn the_term_owner_and_the_session_rule_survive_a_restart() {
    let v = Victim::new();
    let history = v.a.status().history;
    let session = v.session;
    drop(v.a);
    let mut a = Acceptor::open(v.dir.path().to_path_buf()).unwrap();
    let e = a.append(1, session, v.commit, &[], v.commit).unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::Unavailable,
        "a session outlived a restart"
    );
    let e = a.elected(1, ATTACKER, &history, 0, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fenced);
    let (_, session) = a.elected(1, PROPOSER, &history, 0, None).unwrap();
    a.append(1, session, v.commit, &[], v.commit).unwrap();
    // A second Elected by the same proposer (a reconnect) closes the earlier session.
    let (_, newer) = a.elected(1, PROPOSER, &history, 0, None).unwrap();
    assert_ne!(newer, session);
    let e = a.append(1, session, v.commit, &[], v.commit).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(Victim::values(&a), COMMITTED);
}
