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

use std::sync::{Mutex, MutexGuard};

use ferrisdb_common::Lsn;

/// How much of the newest WAL is kept: several seconds of commits at the rates this machine
/// class reaches, and every read that follows the log's end by less than that.
pub const RECENT_WAL_BYTES: usize = 4 << 20;

/// The newest bytes of one database's log (see the module's note).
#[derive(Debug, Default)]
pub struct RecentWal {
    inner: Mutex<Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    /// The LSN of `bytes[0]`.
    start: Lsn,
    bytes: Vec<u8>,
    /// Set while the log is damaged: nothing is kept or served until the repaired log is
    /// opened again and adopts the buffer.
    disabled: bool,
}

impl Recent {
    fn end(&self) -> Lsn {
        self.start + self.bytes.len() as u64
    }
}

impl RecentWal {
    fn lock(&self) -> MutexGuard<'_, Recent> {
        // Every update leaves the buffer whole or empty, so a panic elsewhere while it was
        // held leaves nothing half-done to fear.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that the log now holds `frames` at `at`.
    pub(crate) fn written(&self, at: Lsn, frames: &[u8]) {
        let mut r = self.lock();
        if r.disabled {
            return;
        }
        if r.end() != at || r.bytes.is_empty() {
            r.bytes.clear();
            r.start = at;
        }
        r.bytes.extend_from_slice(frames);
        if r.bytes.len() > RECENT_WAL_BYTES {
            // Keep the newest half: one move per half-buffer of WAL written.
            let drop = r.bytes.len() - RECENT_WAL_BYTES / 2;
            r.bytes.drain(..drop);
            r.start += drop as u64;
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
        let mut r = self.lock();
        r.bytes.clear();
        r.disabled = true;
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
    }
}
