//! Fuzz target bodies for the safekeeper's files and state machine (see docs/fuzzing.md and
//! [`ferrisdb_common::fuzzing`]): the segment scanner behind [`WalLog::open`], the control
//! file, and the acceptor driven by arbitrary message sequences.

use bytes::Bytes;
use ferrisdb_common::fuzzing::{Input, ScratchDir, seal_frame};
use ferrisdb_common::wal::{self, Mutation};
use ferrisdb_common::{Lsn, Version};

use crate::acceptor::{Acceptor, ProposerId};
use crate::control::{Control, TermSwitch};
use crate::log::WalLog;

fn segment_name(start: Lsn) -> String {
    format!("{start:016X}.seg")
}

/// Target `wal_segments`: opening a log directory of arbitrary segment files (the scan that
/// tells a torn tail from damage) and reading it back.
///
/// The first byte picks one to three segments, raw bytes or sealed frames (with garbage
/// after them), and whether the segments meet. Invariants: an opened log's end is its start
/// plus the bytes it holds; a log without damage serves all of it as whole frames; reopening
/// finds what the first open left (no second cut, the same damage).
pub fn wal_segments(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.u8();
    let sealed = flags & 1 == 1;
    let gap = flags & 2 == 2;
    let count = 1 + (flags >> 2) % 3;
    // Mostly small positions; with the top bit, anything (a segment named near u64::MAX).
    let start = if flags & 0x80 == 0x80 {
        input.u64()
    } else {
        u64::from(input.u32())
    };
    let dir = ScratchDir::new();
    let mut at = start;
    let mut total = 0u64;
    for _ in 0..count {
        let mut bytes = Vec::new();
        if sealed {
            for _ in 0..input.u8() % 4 {
                let payload = input.bytes(300);
                let frame = seal_frame(at.wrapping_add(bytes.len() as u64), payload);
                bytes.extend_from_slice(&frame);
            }
            bytes.extend_from_slice(input.bytes(40));
        } else {
            bytes.extend_from_slice(input.bytes(2048));
        }
        std::fs::write(dir.path().join(segment_name(at)), &bytes)
            .unwrap_or_else(|e| panic!("writing a segment: {e}"));
        at = at.wrapping_add(bytes.len() as u64 + u64::from(gap));
        total += bytes.len() as u64;
    }

    let Ok((log, recovery)) = WalLog::open(dir.path(), start) else {
        return;
    };
    let (first, flush) = (log.start_lsn(), log.flush_lsn());
    assert_eq!(
        first, start,
        "the log starts elsewhere than its first segment"
    );
    assert_eq!(
        Some(flush),
        first.checked_add(log.disk_bytes()),
        "the log end is not start + bytes held"
    );
    assert!(
        recovery.truncated_bytes <= total,
        "cut {} of {total} bytes",
        recovery.truncated_bytes
    );
    // What is neither held nor cut is zeros at the end of the last segment (space written
    // ahead of the frames).
    assert!(log.disk_bytes() + recovery.truncated_bytes <= total);
    match recovery.damage {
        None => {
            let all = log
                .read(first, flush, usize::MAX)
                .unwrap_or_else(|e| panic!("an undamaged log is unreadable: {e}"));
            assert_eq!(
                all.len() as u64,
                flush - first,
                "an undamaged log served short"
            );
            assert_eq!(wal::whole_frames_len(&all).ok(), Some(all.len()));
            if flush > first {
                let one = log
                    .read(first, flush, 1)
                    .unwrap_or_else(|e| panic!("a one-frame read failed: {e}"));
                assert!(!one.is_empty(), "a small budget read nothing");
            }
        }
        Some(d) => {
            assert!(
                first <= d && d < flush,
                "damage at {d} outside [{first}, {flush})"
            );
            if let Ok(bytes) = log.read(first, flush, usize::MAX) {
                assert!(first + bytes.len() as u64 <= d, "damaged bytes were served");
            }
        }
    }
    drop(log);
    let (again, second) = WalLog::open(dir.path(), start)
        .unwrap_or_else(|e| panic!("a log that opened once fails to reopen: {e}"));
    assert_eq!((again.start_lsn(), again.flush_lsn()), (first, flush));
    assert_eq!(second.truncated_bytes, 0, "the second open cut again");
    assert_eq!(second.damage, recovery.damage);
}

/// Target `control_file`: loading an arbitrary control file, then opening an acceptor on it.
///
/// The first byte picks raw bytes, or a [`Control`] in JSON that is stored properly (with its
/// checksum) so the acceptor's open runs on arbitrary state. Invariants: what is stored loads
/// back equal; loading and opening refuse bad state with an error, never a panic.
pub fn control_file(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let body = input.rest();
    let dir = ScratchDir::new();
    if mode & 1 == 0 {
        std::fs::write(dir.path().join("control.json"), body)
            .unwrap_or_else(|e| panic!("writing a control file: {e}"));
    } else {
        let Ok(control) = serde_json::from_slice::<Control>(body) else {
            return;
        };
        control
            .store(dir.path())
            .unwrap_or_else(|e| panic!("storing a control file: {e}"));
        let loaded = Control::load(dir.path())
            .unwrap_or_else(|e| panic!("a stored control file does not load: {e}"));
        assert_eq!(
            loaded, control,
            "the control file changed on its way through disk"
        );
    }
    let Ok(control) = Control::load(dir.path()) else {
        return;
    };
    let Ok(mut acceptor) = Acceptor::open_with(dir.path().to_path_buf(), 256) else {
        return;
    };
    let status = acceptor.status();
    assert!(
        status.term >= control.term,
        "the promised term went back on open"
    );
    let _ = acceptor.vote(control.term.saturating_add(1), 1);
    let _ = acceptor.read(status.log_start_lsn, status.flush_lsn, 1 << 16);
}

/// What the harness knows of the log the acceptor must protect.
#[derive(Debug, Default)]
struct Model {
    /// The bytes `[shadow_start, shadow_start + shadow.len())`, all at or below a commit
    /// position the acceptor reported: they must never change.
    shadow_start: Lsn,
    shadow: Vec<u8>,
    /// The highest position claimed durable in object storage (ReportDurable): committed
    /// bytes below it may be trimmed.
    durable_claim: Lsn,
    /// The highest term the acceptor reported: a promise never goes back.
    term: u64,
    /// Frame ends of appends sent, for positions that are frame boundaries.
    boundaries: Vec<Lsn>,
    /// The session the last successful `Elected` opened.
    session: u64,
}

impl Model {
    /// The session an append carries: mostly the elected one, sometimes a forged one.
    fn session(&self, input: &mut Input<'_>) -> u64 {
        match input.u8() % 4 {
            0 => u64::from(input.u8()),
            _ => self.session,
        }
    }

    fn shadow_end(&self) -> Lsn {
        self.shadow_start + self.shadow.len() as u64
    }

    /// An LSN for a message: mostly positions that matter (the log end, the commit position,
    /// frame boundaries), sometimes anything.
    fn position(&self, input: &mut Input<'_>, a: &Acceptor) -> Lsn {
        let st = a.status();
        match input.u8() % 8 {
            0 | 1 => st.flush_lsn,
            2 => st.commit_lsn,
            3 => st.log_start_lsn,
            4 => {
                let n = self.boundaries.len().max(1);
                self.boundaries
                    .get(usize::from(input.u8()) % n)
                    .copied()
                    .unwrap_or(0)
            }
            5 => st.flush_lsn.saturating_add(u64::from(input.u8())),
            6 => u64::from(input.u16()),
            _ => input.u64(),
        }
    }

    fn term(&self, input: &mut Input<'_>, a: &Acceptor) -> u64 {
        let st = a.status();
        match input.u8() % 6 {
            0 | 1 => st.term,
            2 => st.term.saturating_add(1),
            3 => st.history.last().map_or(0, |s| s.term),
            4 => u64::from(input.u8() % 8),
            _ => input.u64(),
        }
    }

    /// Checks the acceptor against what it promised, then learns its new commit position.
    fn check(&mut self, a: &Acceptor, what: &str) {
        let st = a.status();
        assert!(
            st.term >= self.term,
            "{what}: promised term went back from {} to {}",
            self.term,
            st.term
        );
        self.term = st.term;
        assert!(
            st.damage.is_none(),
            "{what}: the acceptor reports damage {:?}",
            st.damage
        );
        assert!(
            st.commit_lsn <= st.flush_lsn,
            "{what}: commit position {} past the log end {}",
            st.commit_lsn,
            st.flush_lsn
        );
        let end = self.shadow_end();
        // Committed bytes leave only from below, and only below a durability claim.
        let may_lose_below = self.shadow_start.max(self.durable_claim.min(end));
        if may_lose_below < end {
            assert!(
                st.log_start_lsn <= may_lose_below,
                "{what}: committed WAL [{}, {end}) is gone: the log now starts at {} \
                 (durable claim {})",
                self.shadow_start,
                st.log_start_lsn,
                self.durable_claim
            );
            assert!(
                st.flush_lsn >= end,
                "{what}: committed WAL up to {end} cut: the log ends at {}",
                st.flush_lsn
            );
        }
        let log = a
            .read(st.log_start_lsn, st.flush_lsn, usize::MAX)
            .unwrap_or_else(|e| panic!("{what}: the log is unreadable: {e}"));
        assert_eq!(
            log.len() as u64,
            st.flush_lsn - st.log_start_lsn,
            "{what}: the log served short"
        );
        let lo = self.shadow_start.max(st.log_start_lsn);
        if lo < end {
            let held = &log[(lo - st.log_start_lsn) as usize..(end - st.log_start_lsn) as usize];
            let want = &self.shadow[(lo - self.shadow_start) as usize..];
            assert!(
                held == want,
                "{what}: committed WAL in [{lo}, {end}) changed"
            );
        }
        // Learn what is newly committed (and forget what was legitimately trimmed).
        if st.commit_lsn > end || lo > self.shadow_start {
            let from = lo.min(st.commit_lsn).max(st.log_start_lsn);
            let to = st.commit_lsn.max(end).max(from);
            self.shadow_start = from;
            self.shadow =
                log[(from - st.log_start_lsn) as usize..(to - st.log_start_lsn) as usize].to_vec();
        }
    }

    /// After a crash the acceptor may have forgotten commit positions it never persisted:
    /// bytes above what it remembers are no longer its to protect.
    fn forget_above(&mut self, commit: Lsn) {
        if commit < self.shadow_end() {
            let keep = commit.saturating_sub(self.shadow_start) as usize;
            self.shadow.truncate(keep);
        }
    }
}

fn reopen(dir: &ScratchDir, segment_size: u64, what: &str) -> Acceptor {
    Acceptor::open_with(dir.path().to_path_buf(), segment_size)
        .unwrap_or_else(|e| panic!("{what}: the acceptor does not reopen: {e}"))
}

/// Target `acceptor`: one acceptor driven by an arbitrary sequence of votes, elections,
/// appends, commit positions, durability reports and restarts (clean or crash).
///
/// Invariants, checked after every message: nothing at or below a commit position the
/// acceptor reported ever changes or disappears, except committed bytes below a durability
/// claim, which may be trimmed from the start; the commit position never passes the log end;
/// the promised term never goes back; an acknowledged append is what the log holds at its
/// position; a restart always succeeds and finds no damage.
pub fn acceptor(data: &[u8]) {
    let mut input = Input::new(data);
    let dir = ScratchDir::new();
    let segment_size = 64 + u64::from(input.u8()) * 8;
    let mut a = reopen(&dir, segment_size, "first open");
    let mut m = Model::default();
    for step in 0..48 {
        if input.is_empty() {
            break;
        }
        let op = input.u8() % 9;
        let what = format!("step {step} (op {op})");
        match op {
            0 => {
                let term = m.term(&mut input, &a);
                let before = a.status().term;
                let proposer = ProposerId::from(input.u8() % 3);
                if let Ok((true, _)) = a.vote(term, proposer) {
                    assert!(
                        term > before,
                        "{what}: voted for {term} after promising {before}"
                    );
                }
            }
            1 => {
                let term = m.term(&mut input, &a);
                let st = a.status();
                let history = match input.u8() % 3 {
                    // A proposer that took this acceptor's log as the donor's.
                    0 => {
                        let mut h = st.history.clone();
                        if h.last().is_none_or(|s| s.term < term) {
                            h.push(TermSwitch {
                                term,
                                lsn: st.flush_lsn,
                            });
                        }
                        h
                    }
                    1 => vec![TermSwitch {
                        term,
                        lsn: m.position(&mut input, &a),
                    }],
                    _ => (0..1 + input.u8() % 3)
                        .map(|_| TermSwitch {
                            term: u64::from(input.u8() % 8),
                            lsn: m.position(&mut input, &a),
                        })
                        .collect(),
                };
                let log_start = match input.u8() % 3 {
                    0 => st.log_start_lsn,
                    1 => 0,
                    _ => m.position(&mut input, &a),
                };
                // No manifest: the acceptor may drop nothing committed on a reset.
                let proposer = ProposerId::from(input.u8() % 3);
                if let Ok((_, session)) = a.elected(term, proposer, &history, log_start, None) {
                    m.session = session;
                }
            }
            2 | 3 => {
                let term = m.term(&mut input, &a);
                // Far past any log end, but leaving room for the frames' own positions.
                let begin = m.position(&mut input, &a).min(u64::MAX / 2);
                let mut frames = Vec::new();
                for _ in 0..1 + input.u8() % 3 {
                    let tag = input.u8();
                    let at = begin.saturating_add(frames.len() as u64);
                    let mutation = Mutation::Set {
                        key: Bytes::from(vec![tag]),
                        value: Bytes::from(vec![tag; usize::from(input.u8() % 64)]),
                    };
                    let (frame, Version(end)) = wal::encode_frame(at, u64::from(tag), &[mutation]);
                    frames.extend_from_slice(&frame);
                    if m.boundaries.len() < 32 {
                        m.boundaries.push(end);
                    }
                }
                let end = begin.saturating_add(frames.len() as u64);
                let commit = match input.u8() % 4 {
                    0 => end,
                    1 => begin,
                    2 => a.status().commit_lsn,
                    _ => m.position(&mut input, &a),
                };
                let session = m.session(&mut input);
                if let Ok(flush) = a.append(term, session, begin, &frames, commit) {
                    let st = a.status();
                    assert!(
                        flush >= end,
                        "{what}: acknowledged [{begin}, {end}) at end {flush}"
                    );
                    if begin >= st.log_start_lsn {
                        let held = a.read(begin, end, usize::MAX).unwrap_or_else(|e| {
                            panic!("{what}: acknowledged frames unreadable: {e}")
                        });
                        assert!(
                            held == frames,
                            "{what}: acknowledged an append at [{begin}, {end}) whose bytes the log does not hold"
                        );
                    }
                }
            }
            4 => {
                let commit = m.position(&mut input, &a);
                let term = m.term(&mut input, &a);
                let begin = a.status().flush_lsn;
                let session = m.session(&mut input);
                let _ = a.append(term, session, begin, &[], commit);
            }
            5 => {
                let claim = m.position(&mut input, &a);
                m.durable_claim = m.durable_claim.max(claim);
                // The harness plays a truthful pageserver: the manifest holds the claim.
                let _ = a.trim(claim, Some(claim));
            }
            6 => {
                let _ = a.persist_commit_lsn();
            }
            7 => {
                a.persist_commit_lsn()
                    .unwrap_or_else(|e| panic!("{what}: persisting the commit position: {e}"));
                let before = a.status();
                drop(a);
                a = reopen(&dir, segment_size, &what);
                let after = a.status();
                assert_eq!(
                    (
                        after.term,
                        after.commit_lsn,
                        after.flush_lsn,
                        after.log_start_lsn
                    ),
                    (
                        before.term,
                        before.commit_lsn,
                        before.flush_lsn,
                        before.log_start_lsn
                    ),
                    "{what}: a clean restart changed the acceptor's position"
                );
            }
            _ => {
                drop(a);
                a = reopen(&dir, segment_size, &what);
                m.forget_above(a.status().commit_lsn);
            }
        }
        m.check(&a, &what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrisdb_common::fuzzing::replay_corpus;

    #[test]
    fn wal_segments_corpus_replays() {
        replay_corpus("wal_segments", wal_segments);
    }

    #[test]
    fn control_file_corpus_replays() {
        replay_corpus("control_file", control_file);
    }

    #[test]
    fn acceptor_corpus_replays() {
        replay_corpus("acceptor", acceptor);
    }
}
