//! The newest WAL written, kept in memory for the readers that follow the log's end.
//!
//! A pageserver follows the committed log of one safekeeper with `ReadWal`, and every time
//! the commit position moves it asks for the few frames just committed. Read from the log,
//! each of those answers cost a trip to the blocking pool, the acceptor's lock (which every
//! append holds across its fdatasync, so the reader waits for a sync and the next append waits
//! for the reader) and a file read of bytes written moments before: that safekeeper spent
//! about half again the instructions per commit of the other two. The log hands each write
//! to this buffer as well, and a read that lies wholly inside it is answered from memory
//! under a lock held only for a copy.
//!
//! The buffer always holds exactly what the log holds at its positions: a write that does not
//! continue it starts it afresh, and whatever cuts the log back (a truncation of a divergent
//! suffix, a failed write or sync, a reset) forgets what lies at and above the cut.
//!
//! Memory: a buffer takes [`RECENT_WAL_BYTES`] when its database is first written and gives
//! it back once nothing has been written for [`IDLE_SWEEPS`] sweeps (the safekeeper sweeps
//! every second), and all the buffers of one process together hold at most
//! [`RECENT_WAL_BUDGET`]: with a thousand databases on a safekeeper only the busy ones keep
//! one, and a database that finds the budget spent is served from its log, as before the
//! buffer existed. Nothing is ever wrong for lack of a buffer, only slower.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use ferrisdb_common::Lsn;

/// How much of the newest WAL one database keeps: a second or more of commits at the rates
/// this machine class reaches, and every read that follows the log's end by less than that.
pub const RECENT_WAL_BYTES: usize = 4 << 20;

/// What all the buffers of one process may hold together: 64 busy databases' worth.
pub const RECENT_WAL_BUDGET: usize = 64 * RECENT_WAL_BYTES;

/// Sweeps without a write after which a buffer gives its memory back.
pub const IDLE_SWEEPS: u32 = 10;

/// Memory shared by buffers: what they hold together and the most they may.
#[derive(Debug)]
pub struct RecentBudget {
    held: AtomicUsize,
    limit: usize,
}

/// The budget of every buffer of this process.
static PROCESS_BUDGET: RecentBudget = RecentBudget::new(RECENT_WAL_BUDGET);

impl RecentBudget {
    /// A budget of `limit` bytes.
    pub const fn new(limit: usize) -> RecentBudget {
        RecentBudget {
            held: AtomicUsize::new(0),
            limit,
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Takes one buffer's worth, or says the budget is spent.
    fn take(&self) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held + RECENT_WAL_BYTES <= self.limit).then_some(held + RECENT_WAL_BYTES)
            })
            .is_ok()
    }

    fn give_back(&self) {
        self.held.fetch_sub(RECENT_WAL_BYTES, Ordering::AcqRel);
    }
}

/// The bytes all buffers of this process hold now (a gauge for operators).
pub fn held_bytes() -> usize {
    PROCESS_BUDGET.held()
}

/// The newest bytes of one database's log (see the module's note).
#[derive(Debug)]
pub struct RecentWal {
    inner: Mutex<Recent>,
    budget: &'static RecentBudget,
}

impl Default for RecentWal {
    fn default() -> RecentWal {
        RecentWal::with_budget(&PROCESS_BUDGET)
    }
}

#[derive(Debug, Default)]
struct Recent {
    /// The LSN of `bytes[0]`.
    start: Lsn,
    /// Never more than `RECENT_WAL_BYTES` long, with exactly that capacity while `holding`
    /// and none otherwise, so the budget counts what is really allocated.
    bytes: Vec<u8>,
    /// Whether this buffer has taken its share of the budget.
    holding: bool,
    /// Set while the log is damaged: nothing is kept or served until the repaired log is
    /// opened again and adopts the buffer.
    disabled: bool,
    /// Sweeps since the last write.
    idle_sweeps: u32,
}

impl Recent {
    fn end(&self) -> Lsn {
        self.start + self.bytes.len() as u64
    }

    /// Gives the memory back; says whether it held the budget's share.
    fn release(&mut self) -> bool {
        self.bytes = Vec::new();
        std::mem::take(&mut self.holding)
    }
}

impl Drop for RecentWal {
    fn drop(&mut self) {
        self.release();
    }
}

impl RecentWal {
    /// An empty buffer that takes its memory from `budget`.
    pub fn with_budget(budget: &'static RecentBudget) -> RecentWal {
        RecentWal {
            inner: Mutex::default(),
            budget,
        }
    }

    fn release(&self) {
        if self.lock().release() {
            self.budget.give_back();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Recent> {
        // Every update leaves the buffer whole or empty, so a panic elsewhere while it was
        // held leaves nothing half-done to fear.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that the log now holds `frames` at `at`.
    pub(crate) fn written(&self, at: Lsn, frames: &[u8]) {
        const HALF: usize = RECENT_WAL_BYTES / 2;
        let mut r = self.lock();
        r.idle_sweeps = 0;
        if r.disabled {
            return;
        }
        // A write larger than half the buffer keeps only its newest half-buffer of bytes
        // (whole frames are checked by the reader, so a cut frame is never served).
        let (at, frames) = match frames.len().checked_sub(HALF) {
            Some(skip) if skip > 0 => (at + skip as u64, &frames[skip..]),
            _ => (at, frames),
        };
        if r.end() != at || r.bytes.is_empty() {
            r.bytes.clear();
            r.start = at;
        }
        if r.bytes.len() + frames.len() > RECENT_WAL_BYTES {
            // Keep the newest half: one move per half-buffer of WAL written, and the vector
            // never grows past the capacity the budget counted. `frames` is at most half, so
            // what is dropped is all old bytes.
            let drop = r.bytes.len() + frames.len() - HALF;
            r.bytes.drain(..drop);
            r.start += drop as u64;
        }
        if !r.holding {
            if !self.budget.take() {
                // Spent by busier databases: this one is read from its log.
                return;
            }
            r.holding = true;
            r.bytes.reserve_exact(RECENT_WAL_BYTES);
        }
        r.bytes.extend_from_slice(frames);
    }

    /// Counts one sweep; a buffer that saw no write for [`IDLE_SWEEPS`] of them gives its
    /// memory back (the next write takes it again, budget permitting).
    pub fn sweep(&self) {
        let mut r = self.lock();
        r.idle_sweeps = r.idle_sweeps.saturating_add(1);
        if r.idle_sweeps >= IDLE_SWEEPS && r.release() {
            self.budget.give_back();
        }
    }

    /// Records that the log was cut back to end at `end`.
    pub(crate) fn cut(&self, end: Lsn) {
        let mut r = self.lock();
        if end <= r.start {
            r.bytes.clear();
        } else if end < r.end() {
            let keep = (end - r.start) as usize;
            r.bytes.truncate(keep);
        }
    }

    /// Records that the log now starts at `start` (older segments deleted): what lies below is
    /// no longer served from here either, so a read below the log's start is refused the same
    /// way whether or not its bytes were recent.
    pub(crate) fn trimmed(&self, start: Lsn) {
        let mut r = self.lock();
        if start > r.start {
            let drop = ((start - r.start) as usize).min(r.bytes.len());
            r.bytes.drain(..drop);
            r.start += drop as u64;
        }
    }

    /// Records that the log was emptied.
    pub(crate) fn clear(&self) {
        self.lock().bytes.clear();
    }

    /// Empties the buffer and keeps it empty: the log is damaged (see [`RecentWal::enable`]).
    pub(crate) fn disable(&self) {
        // Under one lock: a write landing between giving the memory back and switching the
        // buffer off would take a budget share that is never served nor given back.
        let mut r = self.lock();
        r.disabled = true;
        let held = r.release();
        drop(r);
        if held {
            self.budget.give_back();
        }
    }

    /// Starts keeping what is written again, from empty.
    pub(crate) fn enable(&self) {
        let mut r = self.lock();
        r.bytes.clear();
        r.disabled = false;
    }

    /// The bytes `[start, end)` when the buffer holds all of them.
    pub fn read(&self, start: Lsn, end: Lsn) -> Option<Vec<u8>> {
        let r = self.lock();
        if r.disabled || start < r.start || end > r.end() || start >= end {
            return None;
        }
        let from = (start - r.start) as usize;
        let to = (end - r.start) as usize;
        Some(r.bytes[from..to].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_the_log_holds_and_nothing_else() {
        let r = RecentWal::default();
        assert_eq!(r.read(0, 1), None);
        r.written(100, b"abcdef");
        assert_eq!(r.read(100, 106).as_deref(), Some(&b"abcdef"[..]));
        assert_eq!(r.read(102, 104).as_deref(), Some(&b"cd"[..]));
        assert_eq!(r.read(99, 104), None, "below what it holds");
        assert_eq!(r.read(104, 107), None, "past what it holds");
        assert_eq!(r.read(104, 104), None, "empty");
        // A cut (a divergent suffix truncated) and a different write in its place.
        r.cut(103);
        assert_eq!(r.read(102, 104), None);
        r.written(103, b"XY");
        assert_eq!(r.read(100, 105).as_deref(), Some(&b"abcXY"[..]));
        // A write that does not continue the buffer starts it afresh.
        r.written(500, b"zz");
        assert_eq!(r.read(100, 102), None);
        assert_eq!(r.read(500, 502).as_deref(), Some(&b"zz"[..]));
        r.written(502, b"yy");
        r.trimmed(503);
        assert_eq!(r.read(502, 504), None, "below the log's start");
        assert_eq!(r.read(503, 504).as_deref(), Some(&b"y"[..]));
        r.trimmed(9000);
        assert_eq!(r.read(503, 504), None);
        r.cut(10);
        assert_eq!(r.read(500, 502), None);
        r.written(10, b"q");
        r.clear();
        assert_eq!(r.read(10, 11), None);
        // Disabled (a damaged log): nothing kept or served until enabled again.
        r.written(10, b"q");
        r.disable();
        assert_eq!(r.read(10, 11), None);
        r.written(11, b"r");
        assert_eq!(r.read(11, 12), None);
        r.enable();
        assert_eq!(r.read(11, 12), None, "enabled empty");
        r.written(20, b"s");
        assert_eq!(r.read(20, 21).as_deref(), Some(&b"s"[..]));
    }

    #[test]
    fn keeps_the_newest_half_once_full() {
        let r = RecentWal::default();
        let chunk = vec![7u8; 1 << 20];
        let mut at = 0;
        for _ in 0..5 {
            r.written(at, &chunk);
            at += chunk.len() as u64;
        }
        let held = (RECENT_WAL_BYTES / 2) as u64;
        assert_eq!(r.read(at - held, at).map(|b| b.len() as u64), Some(held));
        assert_eq!(r.read(at - held - 1, at), None);
        assert_eq!(r.lock().bytes.capacity(), RECENT_WAL_BYTES, "never grows");
        // A write larger than the buffer keeps its newest half-buffer.
        let big = vec![9u8; RECENT_WAL_BYTES + 10];
        r.written(at, &big);
        let end = at + big.len() as u64;
        assert_eq!(r.read(end - held, end).map(|b| b.len() as u64), Some(held));
        assert_eq!(r.read(end - held - 1, end), None);
        assert_eq!(r.lock().bytes.capacity(), RECENT_WAL_BYTES, "never grows");
    }

    #[test]
    fn idle_buffers_give_memory_back_and_the_budget_bounds_them_all() {
        let budget: &'static RecentBudget =
            Box::leak(Box::new(RecentBudget::new(3 * RECENT_WAL_BYTES)));
        let busy: Vec<RecentWal> = (0..3).map(|_| RecentWal::with_budget(budget)).collect();
        for b in &busy {
            b.written(0, b"frame");
            assert_eq!(b.read(0, 5).as_deref(), Some(&b"frame"[..]));
        }
        assert_eq!(budget.held(), 3 * RECENT_WAL_BYTES);
        let late = RecentWal::with_budget(budget);
        late.written(0, b"frame");
        assert_eq!(
            late.read(0, 5),
            None,
            "the budget is spent: read from the log"
        );
        assert_eq!(budget.held(), 3 * RECENT_WAL_BYTES);
        // Idle sweeps give memory back; a write in between restarts the count.
        for _ in 0..IDLE_SWEEPS - 1 {
            busy[0].sweep();
        }
        busy[0].written(5, b"more");
        for _ in 0..IDLE_SWEEPS - 1 {
            busy[0].sweep();
        }
        assert_eq!(busy[0].read(0, 9).as_deref(), Some(&b"framemore"[..]));
        busy[0].sweep();
        assert_eq!(busy[0].read(0, 9), None, "released after idle sweeps");
        assert_eq!(busy[0].lock().bytes.capacity(), 0);
        assert_eq!(budget.held(), 2 * RECENT_WAL_BYTES);
        // Its share went back, and the database written next takes it.
        late.written(5, b"again");
        assert_eq!(late.read(5, 10).as_deref(), Some(&b"again"[..]));
        busy[0].written(9, b"x");
        assert_eq!(busy[0].read(9, 10), None, "spent again");
        // A damaged log gives its share back; dropped buffers (databases deleted) too.
        busy[1].disable();
        assert_eq!(budget.held(), 2 * RECENT_WAL_BYTES);
        drop(busy);
        assert_eq!(budget.held(), RECENT_WAL_BYTES);
        drop(late);
        assert_eq!(budget.held(), 0);
    }
}
