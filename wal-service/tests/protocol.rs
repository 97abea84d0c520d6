//! Deterministic tests of the WAL protocol's hard cases: real acceptors (files on disk), driven
//! step by step by a simulated proposer that elects itself with the same
//! `term_history::plan_election` the compute uses. No timing, no network: each step is
//! explicit, so every interleaving here is reproduced exactly on every run.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use ferrisdb_common::wal::{self, Mutation, encode_frame};
use ferrisdb_common::{ErrorKind, Lsn};
use ferrisdb_server_common::term_history::{TermSwitch, Vote, plan_election};
use ferrisdb_wal_service::acceptor::{Acceptor, ProposerId};

struct Cluster {
    _dirs: Vec<tempfile::TempDir>,
    acceptors: Vec<Acceptor>,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let acceptors = dirs
            .iter()
            .map(|d| Acceptor::open(d.path().to_path_buf()).unwrap())
            .collect();
        Cluster {
            _dirs: dirs,
            acceptors,
        }
    }

    /// Reopens acceptor `i` from disk, as after a crash.
    fn restart(&mut self, i: usize) {
        let dir = self._dirs[i].path().to_path_buf();
        self.acceptors[i] = Acceptor::open(dir).unwrap();
    }

    fn log(&self, i: usize) -> Vec<u8> {
        let st = self.acceptors[i].status();
        self.acceptors[i]
            .read(st.log_start_lsn, st.flush_lsn, usize::MAX)
            .unwrap()
    }

    fn values(&self, i: usize) -> Vec<String> {
        let st = self.acceptors[i].status();
        wal::decode_frames(&self.log(i), st.log_start_lsn)
            .unwrap()
            .iter()
            .flat_map(|r| r.mutations.iter())
            .map(|m| String::from_utf8(m.value().unwrap().to_vec()).unwrap())
            .collect()
    }
}

/// A proposer as the compute runs one, minus the network.
struct Proposer {
    term: u64,
    history: Vec<TermSwitch>,
    end: Lsn,
    /// The elected log, as bytes from its start, for catching acceptors up.
    log: Vec<u8>,
    log_start: Lsn,
    /// Its id, drawn for this election.
    id: ProposerId,
    /// The append session each acceptor's `Elected` opened (0: none yet).
    sessions: Vec<u64>,
}

impl Proposer {
    /// Phase 1 on `voters`: Ok when a majority of the `n` acceptors granted `term`.
    fn elect(c: &mut Cluster, term: u64, voters: &[usize]) -> Result<Proposer, usize> {
        let mut votes = Vec::new();
        let mut granted = Vec::new();
        let id = ProposerId::from(term as u32) << 64 | 0xabc;
        for &i in voters {
            let (ok, st) = c.acceptors[i].vote(term, id).unwrap();
            if ok {
                granted.push(i);
                votes.push(Vote {
                    history: st.history,
                    flush_lsn: st.flush_lsn,
                    commit_lsn: st.commit_lsn,
                });
            }
        }
        if granted.len() < c.acceptors.len() / 2 + 1 {
            return Err(granted.len());
        }
        let plan = plan_election(term, &votes, 0).unwrap();
        let donor = granted[plan.donor];
        let st = c.acceptors[donor].status();
        let log = c.acceptors[donor]
            .read(st.log_start_lsn, plan.end, usize::MAX)
            .unwrap();
        Ok(Proposer {
            term,
            history: plan.history,
            end: plan.end,
            log,
            log_start: st.log_start_lsn,
            id,
            sessions: vec![0; c.acceptors.len()],
        })
    }

    /// Phase 2 set-up and catch-up of acceptor `i`.
    fn sync(&mut self, c: &mut Cluster, i: usize) -> ferrisdb_common::Result<()> {
        let (st, session) =
            c.acceptors[i].elected(self.term, self.id, &self.history, self.log_start, None)?;
        self.sessions[i] = session;
        let from = st.flush_lsn;
        if from < self.end {
            let tail = &self.log[(from - self.log_start) as usize..];
            c.acceptors[i].append(self.term, session, from, tail, 0)?;
        }
        Ok(())
    }

    /// Encodes a record with value `v` at the end of the log.
    fn record(&mut self, v: &str) -> (Lsn, Bytes) {
        let m = Mutation::Set {
            key: Bytes::from_static(b"k"),
            value: Bytes::copy_from_slice(v.as_bytes()),
        };
        let (frame, version) = encode_frame(self.end, 0, &[m]);
        let begin = self.end;
        self.log.extend_from_slice(&frame);
        self.end = version.0;
        (begin, frame)
    }

    /// Appends a record to `targets` only, returning its end.
    fn append_to(&mut self, c: &mut Cluster, v: &str, targets: &[usize]) -> Lsn {
        let (begin, frame) = self.record(v);
        for &i in targets {
            c.acceptors[i]
                .append(self.term, self.sessions[i], begin, &frame, 0)
                .unwrap();
        }
        self.end
    }

    /// Tells `targets` the commit position.
    fn commit(&self, c: &mut Cluster, lsn: Lsn, targets: &[usize]) {
        for &i in targets {
            let flush = c.acceptors[i].status().flush_lsn;
            c.acceptors[i]
                .append(self.term, self.sessions[i], flush, &[], lsn)
                .unwrap();
        }
    }
}

#[test]
fn a_proposer_dying_after_a_minority_append_loses_only_that_record() {
    let mut c = Cluster::new(3);
    let mut p1 = Proposer::elect(&mut c, 1, &[0, 1, 2]).unwrap();
    for i in 0..3 {
        p1.sync(&mut c, i).unwrap();
    }
    let committed = p1.append_to(&mut c, "a", &[0, 1, 2]);
    p1.commit(&mut c, committed, &[0, 1, 2]);
    p1.append_to(&mut c, "b-minority", &[0]); // then p1 dies

    // The new proposer hears only from the two that lack "b".
    let mut p2 = Proposer::elect(&mut c, 2, &[1, 2]).unwrap();
    assert_eq!(p2.end, committed);
    for i in 0..3 {
        p2.sync(&mut c, i).unwrap(); // acceptor 0 truncates "b" here
    }
    p2.append_to(&mut c, "c", &[0, 1, 2]);
    for i in 0..3 {
        c.restart(i);
        assert_eq!(c.values(i), vec!["a", "c"], "acceptor {i}");
    }
    assert_eq!(c.log(0), c.log(1));
    assert_eq!(c.log(1), c.log(2));
}

#[test]
fn a_minority_record_seen_by_the_next_election_survives_everywhere() {
    let mut c = Cluster::new(3);
    let mut p1 = Proposer::elect(&mut c, 1, &[0, 1, 2]).unwrap();
    for i in 0..3 {
        p1.sync(&mut c, i).unwrap();
    }
    p1.append_to(&mut c, "a", &[0, 1, 2]);
    p1.append_to(&mut c, "b-minority", &[0]);
    // This time the holder of "b" votes: the most advanced log wins, so "b" is kept and
    // replicated (it was never acknowledged, so keeping it is as correct as dropping it).
    let mut p2 = Proposer::elect(&mut c, 2, &[0, 1]).unwrap();
    for i in 0..3 {
        p2.sync(&mut c, i).unwrap();
    }
    p2.append_to(&mut c, "c", &[0, 1, 2]);
    for i in 0..3 {
        assert_eq!(c.values(i), vec!["a", "b-minority", "c"], "acceptor {i}");
    }
}

#[test]
fn two_proposers_racing_for_one_term_cannot_both_win() {
    let mut c = Cluster::new(3);
    let mut p0 = Proposer::elect(&mut c, 1, &[0, 1, 2]).unwrap();
    for i in 0..3 {
        p0.sync(&mut c, i).unwrap();
    }
    p0.append_to(&mut c, "a", &[0, 1, 2]);
    // Both pick term 2; their vote requests interleave: A asks 0 then 1, B asks 2 then 1.
    let (a0, _) = c.acceptors[0].vote(2, 0xa).unwrap();
    let (b2, _) = c.acceptors[2].vote(2, 0xb).unwrap();
    let (a1, _) = c.acceptors[1].vote(2, 0xa).unwrap();
    let (b1, _) = c.acceptors[1].vote(2, 0xb).unwrap();
    assert!(a0 && b2 && a1);
    assert!(!b1, "acceptor 1 voted twice in term 2");
    // Every acceptor now refuses term 2 to anyone else: B can never gather a majority.
    assert_eq!(Proposer::elect(&mut c, 2, &[0, 1, 2]).err(), Some(0));
    // B retries with term 3 and wins, which fences A's term 2 everywhere it lands.
    let mut b = Proposer::elect(&mut c, 3, &[0, 1, 2]).unwrap();
    for i in 0..3 {
        b.sync(&mut c, i).unwrap();
    }
    b.append_to(&mut c, "from-b", &[0, 1, 2]);
    let flush = c.acceptors[0].status().flush_lsn;
    let m = Mutation::Set {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"from-a"),
    };
    let (frame, _) = encode_frame(flush, 0, &[m]);
    let e = c.acceptors[0].append(2, 1, flush, &frame, 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fenced);
    let e = c.acceptors[1]
        .elected(2, 0xa, &[TermSwitch { term: 2, lsn: 0 }], 0, None)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fenced);
    assert_eq!(c.values(0), vec!["a", "from-b"]);
}

#[test]
fn an_acceptor_rejoining_with_a_divergent_log_is_cut_back_and_caught_up() {
    let mut c = Cluster::new(3);
    let mut p1 = Proposer::elect(&mut c, 1, &[0, 1, 2]).unwrap();
    for i in 0..3 {
        p1.sync(&mut c, i).unwrap();
    }
    let committed = p1.append_to(&mut c, "a", &[0, 1, 2]);
    p1.commit(&mut c, committed, &[0, 1, 2]);
    // Acceptor 0 is partitioned with p1, which keeps writing to it alone.
    p1.append_to(&mut c, "x1", &[0]);
    p1.append_to(&mut c, "x2", &[0]);
    // The majority side moves on through two terms.
    let mut p2 = Proposer::elect(&mut c, 2, &[1, 2]).unwrap();
    p2.sync(&mut c, 1).unwrap();
    p2.sync(&mut c, 2).unwrap();
    p2.append_to(&mut c, "b", &[1, 2]);
    let mut p3 = Proposer::elect(&mut c, 3, &[1, 2]).unwrap();
    p3.sync(&mut c, 1).unwrap();
    p3.sync(&mut c, 2).unwrap();
    p3.append_to(&mut c, "c", &[1, 2]);
    // Acceptor 0's log is longer than the majority's at the point it diverged, and its
    // history (term 1 only) still matches term 1: the matching point is where term 1 ended
    // for the proposer, so x1 and x2 go, and the term-2 and term-3 records arrive.
    assert!(c.acceptors[0].status().flush_lsn > committed);
    p3.sync(&mut c, 0).unwrap();
    c.restart(0);
    assert_eq!(c.values(0), vec!["a", "b", "c"]);
    assert_eq!(c.log(0), c.log(1));
    assert_eq!(
        c.acceptors[0].status().history,
        c.acceptors[1].status().history
    );
}

#[test]
fn a_crash_between_truncation_and_new_history_leaves_a_consistent_acceptor() {
    let mut c = Cluster::new(3);
    let mut p1 = Proposer::elect(&mut c, 1, &[0, 1, 2]).unwrap();
    for i in 0..3 {
        p1.sync(&mut c, i).unwrap();
    }
    p1.append_to(&mut c, "a", &[0, 1, 2]);
    p1.append_to(&mut c, "x", &[0]);
    let mut p2 = Proposer::elect(&mut c, 2, &[1, 2]).unwrap();
    p2.sync(&mut c, 0).unwrap();
    // Whatever the moment of a crash, a restarted acceptor's history never claims records
    // it does not hold.
    c.restart(0);
    let st = c.acceptors[0].status();
    assert!(st.history.iter().all(|s| s.lsn <= st.flush_lsn));
    assert_eq!(c.values(0), vec!["a"]);
}
