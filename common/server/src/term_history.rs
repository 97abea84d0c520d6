//! The pure part of the WAL protocol, shared by proposer and acceptors: term histories, where
//! two logs stop agreeing, and how an election picks the log to continue
//! (docs/wal-protocol.md).

use serde::{Deserialize, Serialize};

use ferrisdb_common::Lsn;

/// One entry of a term history: the term's proposer started writing at `lsn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermSwitch {
    /// The term.
    pub term: u64,
    /// Where its proposer's log began.
    pub lsn: Lsn,
}

/// The switches of `history` that a log ending at `flush_lsn` actually reaches. A switch
/// above it names records this log does not hold, so it must not count in an election.
pub fn up_to(history: &[TermSwitch], flush_lsn: Lsn) -> Vec<TermSwitch> {
    history
        .iter()
        .copied()
        .filter(|s| s.lsn <= flush_lsn)
        .collect()
}

/// The term of the last record of a log with `history` (already cut to the log's end).
pub fn last_term(history: &[TermSwitch]) -> u64 {
    history.last().map_or(0, |s| s.term)
}

/// The term that wrote the byte just below `lsn` in a log with `history`: the last term to
/// start writing below `lsn`; `None` when none did.
pub fn term_below(history: &[TermSwitch], lsn: Lsn) -> Option<u64> {
    history.iter().rev().find(|s| s.lsn < lsn).map(|s| s.term)
}

/// Where a log with history `own` (cut at `own_flush`) stops agreeing with a proposer whose
/// history is `proposer`: the end of the last term both hold (same term, same start), at
/// whichever of the two logs leaves that term first. With no term in common, nothing agrees (0).
pub fn matching_lsn(own: &[TermSwitch], own_flush: Lsn, proposer: &[TermSwitch]) -> Lsn {
    for (i, mine) in own.iter().enumerate().rev() {
        let Some(j) = proposer.iter().position(|p| p.term == mine.term) else {
            continue;
        };
        if proposer[j].lsn != mine.lsn {
            // One proposer per term starts at one place: a mismatch means nothing here agrees.
            continue;
        }
        let own_end = own.get(i + 1).map_or(own_flush, |s| s.lsn);
        let proposer_end = proposer.get(j + 1).map_or(Lsn::MAX, |s| s.lsn);
        return own_end.min(proposer_end);
    }
    0
}

/// What a voter reported with its vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    /// Its term history, cut at its log end.
    pub history: Vec<TermSwitch>,
    /// The end of its log.
    pub flush_lsn: Lsn,
    /// The last commit position it heard.
    pub commit_lsn: Lsn,
}

/// The outcome of an election won with a majority of votes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionPlan {
    /// Index (into the votes) of the voter whose log becomes the proposer's.
    pub donor: usize,
    /// Where the proposer's own term starts writing: the end of the log it continues.
    pub end: Lsn,
    /// The proposer's term history, ending in `(term, end)`.
    pub history: Vec<TermSwitch>,
    /// Where the log may start (object storage holds everything below).
    pub log_start: Lsn,
    /// A commit position known true at election time.
    pub commit: Lsn,
}

/// Plans the log of a proposer that won `term` with `votes` (a majority), when object storage
/// already holds every commit up to `durable_elsewhere`.
///
/// The donor is the voter with the most advanced log by (last term, end); any committed record
/// is on some voter (majorities intersect), and the most advanced log holds all of them. If
/// object storage is ahead of every voter — the safekeepers' disks were wiped after a
/// checkpoint — the log restarts empty where object storage ends.
pub fn plan_election(term: u64, votes: &[Vote], durable_elsewhere: Lsn) -> Option<ElectionPlan> {
    let (donor, best) = votes
        .iter()
        .enumerate()
        .max_by_key(|(_, v)| (last_term(&v.history), v.flush_lsn))?;
    let commit = votes.iter().map(|v| v.commit_lsn).max().unwrap_or(0);
    let (end, mut history) = if durable_elsewhere > best.flush_lsn {
        (durable_elsewhere, Vec::new())
    } else {
        (best.flush_lsn, best.history.clone())
    };
    history.push(TermSwitch { term, lsn: end });
    Some(ElectionPlan {
        donor,
        end,
        history,
        log_start: durable_elsewhere.min(end),
        commit: commit.min(end).max(durable_elsewhere.min(end)),
    })
}

// Term switches travel in the safekeeper protocol (votes, `Elected`, status).
impl From<&ferrisdb_common::proto::TermSwitch> for TermSwitch {
    fn from(t: &ferrisdb_common::proto::TermSwitch) -> TermSwitch {
        TermSwitch {
            term: t.term,
            lsn: t.lsn,
        }
    }
}

impl From<&TermSwitch> for ferrisdb_common::proto::TermSwitch {
    fn from(t: &TermSwitch) -> ferrisdb_common::proto::TermSwitch {
        ferrisdb_common::proto::TermSwitch {
            term: t.term,
            lsn: t.lsn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(term: u64, lsn: Lsn) -> TermSwitch {
        TermSwitch { term, lsn }
    }

    #[test]
    fn the_term_below_a_position_is_the_last_to_start_below_it() {
        let h = [ts(1, 0), ts(3, 100), ts(4, 250)];
        assert_eq!(term_below(&h, 0), None, "nothing lies below the start");
        assert_eq!(term_below(&h, 1), Some(1));
        assert_eq!(term_below(&h, 100), Some(1), "the byte at 99 is term 1's");
        assert_eq!(term_below(&h, 101), Some(3));
        assert_eq!(term_below(&h, 250), Some(3));
        assert_eq!(term_below(&h, u64::MAX), Some(4));
        // A log restarted where object storage ends holds no term below its start.
        assert_eq!(term_below(&[ts(7, 500)], 500), None);
        assert_eq!(term_below(&[], 500), None);
    }

    #[test]
    fn matching_lsn_cases() {
        // Same history: agrees up to our own end.
        assert_eq!(matching_lsn(&[ts(1, 0)], 300, &[ts(1, 0), ts(2, 500)]), 300);
        // We ran ahead in term 1 beyond where the proposer's log switched to term 2.
        assert_eq!(matching_lsn(&[ts(1, 0)], 800, &[ts(1, 0), ts(2, 500)]), 500);
        // Our term 2 was a losing proposer's: back to the common term 1.
        assert_eq!(
            matching_lsn(&[ts(1, 0), ts(2, 400)], 600, &[ts(1, 0), ts(3, 450)]),
            400
        );
        // Nothing in common.
        assert_eq!(matching_lsn(&[ts(1, 0)], 100, &[ts(2, 0)]), 0);
        assert_eq!(matching_lsn(&[], 0, &[ts(1, 0)]), 0);
    }

    #[test]
    fn the_donor_has_the_highest_last_term_then_the_longest_log() {
        let v = |h: Vec<TermSwitch>, flush, commit| Vote {
            history: h,
            flush_lsn: flush,
            commit_lsn: commit,
        };
        // A longer log from an older term loses to a shorter one from a newer term.
        let votes = [
            v(vec![ts(1, 0)], 900, 100),
            v(vec![ts(1, 0), ts(2, 300)], 400, 300),
        ];
        let plan = plan_election(3, &votes, 0).unwrap();
        assert_eq!(plan.donor, 1);
        assert_eq!(plan.end, 400);
        assert_eq!(plan.history, vec![ts(1, 0), ts(2, 300), ts(3, 400)]);
        assert_eq!(plan.commit, 300);
        // Object storage ahead of every voter: the log restarts there.
        let plan = plan_election(3, &votes, 5000).unwrap();
        assert_eq!((plan.end, plan.log_start, plan.commit), (5000, 5000, 5000));
        assert_eq!(plan.history, vec![ts(3, 5000)]);
        assert!(plan_election(1, &[], 0).is_none());
    }
}
