//! The quorum's clock: where a primary's commit times come from.
//!
//! Commit times map timestamps to versions (`at_timestamp`, `versionat`, `history`) and never
//! decrease (the committer raises a time below the last one to it). Taken from one compute's
//! clock alone, one bad clock corrupted that map for everyone, silently: a primary an hour
//! behind gave every commit the same time (the last good one) for as long as it served, so a
//! read "as of" a moment in between saw later commits; one an hour ahead pushed every commit
//! time an hour into the future, and since times never decrease, every primary after it too
//! (an outside audit saw `--at-timestamp now` answer "not found" for a key set seconds
//! before).
//!
//! So a primary reads the safekeepers' clocks as it talks to them (each vote and lease answer
//! carries the acceptor's wall clock) and runs its own clock at the median offset to them, as
//! NTP would: `offset = remote − (sent + received) / 2` for each answer, the median over the
//! latest answer of every safekeeper once a majority has answered. One safekeeper with a
//! wrong clock moves nothing; a compute with a wrong clock is corrected and says so. The
//! estimate is as good as half a round trip (a millisecond on a LAN, far finer than anyone
//! asks of a timestamp).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use ferrisdb_server_common::clock::Clock;

/// How far this compute's clock may be from the quorum's before it warns.
const WARN_AFTER_MICROS: i64 = 1_000_000;

/// A clock that runs at the safekeepers' median offset from a local one (see the module doc).
#[derive(Debug)]
pub struct QuorumClock {
    local: Arc<dyn Clock>,
    /// The latest offset measured to each safekeeper (µs; `None`: none measured yet).
    offsets: Mutex<Vec<Option<i64>>>,
    /// The offset in use: the median once a majority has answered, 0 before.
    offset: AtomicI64,
    majority: usize,
    /// Whether the current offset has been warned about (once per crossing).
    warned: AtomicBool,
}

impl QuorumClock {
    /// A clock for a quorum of `members` safekeepers, at `local`'s time until a majority has
    /// answered.
    pub fn new(local: Arc<dyn Clock>, members: usize) -> QuorumClock {
        QuorumClock {
            local,
            offsets: Mutex::new(vec![None; members]),
            offset: AtomicI64::new(0),
            majority: members / 2 + 1,
            warned: AtomicBool::new(false),
        }
    }

    /// This compute's local time, for timing a call whose answer [`QuorumClock::observe`]s.
    pub fn local_micros(&self) -> u64 {
        self.local.now_micros()
    }

    /// Records safekeeper `member`'s clock: it read `remote` (0: it cannot say) while a call
    /// sent at local time `sent` was answered at local time `received`.
    pub fn observe(&self, member: usize, sent: u64, received: u64, remote: u64) {
        if remote == 0 || received < sent {
            return;
        }
        let midpoint = sent + (received - sent) / 2;
        let offset = i64::try_from(i128::from(remote) - i128::from(midpoint)).unwrap_or(0);
        let Ok(mut offsets) = self.offsets.lock() else {
            return;
        };
        let Some(slot) = offsets.get_mut(member) else {
            return;
        };
        *slot = Some(offset);
        let mut known: Vec<i64> = offsets.iter().flatten().copied().collect();
        if known.len() < self.majority {
            return;
        }
        known.sort_unstable();
        // An even count has two middles: the one nearer zero, so two disagreeing clocks
        // move this compute's no further than the more modest says.
        let median = if known.len() % 2 == 1 {
            known[known.len() / 2]
        } else {
            let (a, b) = (known[known.len() / 2 - 1], known[known.len() / 2]);
            if a.abs() <= b.abs() { a } else { b }
        };
        drop(offsets);
        self.offset.store(median, Ordering::Release);
        let off = median.abs() > WARN_AFTER_MICROS;
        if off && !self.warned.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                offset_ms = median / 1000,
                "this compute's clock is off the safekeepers' by more than a second: commit times follow the quorum's clocks (check NTP here)"
            );
        } else if !off && self.warned.swap(false, Ordering::AcqRel) {
            tracing::info!(
                offset_ms = median / 1000,
                "this compute's clock is back within a second of the safekeepers'"
            );
        }
    }

    /// The offset in use, in microseconds (the quorum's clock minus this compute's).
    pub fn offset_micros(&self) -> i64 {
        self.offset.load(Ordering::Acquire)
    }
}

impl Clock for QuorumClock {
    fn now_micros(&self) -> u64 {
        let now = i128::from(self.local.now_micros()) + i128::from(self.offset_micros());
        u64::try_from(now.max(0)).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[derive(Debug, Default)]
    struct Fixed(AtomicU64);

    impl Clock for Fixed {
        fn now_micros(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    const H: u64 = 3_600_000_000;

    fn clock(local: u64) -> (Arc<Fixed>, QuorumClock) {
        let f = Arc::new(Fixed(AtomicU64::new(local)));
        (f.clone(), QuorumClock::new(f, 3))
    }

    #[test]
    fn a_compute_an_hour_ahead_runs_at_the_quorums_time() {
        let (local, c) = clock(10 * H + H);
        // Until a majority has answered, its own time.
        c.observe(0, 10 * H + H, 10 * H + H + 200, 10 * H + 100);
        assert_eq!(c.now_micros(), 11 * H);
        c.observe(1, 10 * H + H, 10 * H + H + 200, 10 * H + 100);
        assert_eq!(c.offset_micros(), -(H as i64));
        local.0.store(12 * H, Ordering::SeqCst);
        assert_eq!(c.now_micros(), 11 * H);
    }

    #[test]
    fn one_wrong_safekeeper_moves_nothing() {
        let (_, c) = clock(10 * H);
        c.observe(0, 10 * H, 10 * H, 10 * H);
        c.observe(1, 10 * H, 10 * H, 10 * H + 5 * H); // five hours ahead
        // Two known: the middle nearer zero.
        assert_eq!(c.offset_micros(), 0);
        c.observe(2, 10 * H, 10 * H, 10 * H + 20);
        assert_eq!(c.offset_micros(), 20);
    }

    #[test]
    fn an_acceptor_that_cannot_say_is_not_counted() {
        let (_, c) = clock(10 * H);
        c.observe(0, 10 * H, 10 * H, 0);
        c.observe(1, 10 * H, 10 * H, 0);
        c.observe(2, 10 * H, 10 * H, 0);
        assert_eq!(c.offset_micros(), 0);
        assert_eq!(c.now_micros(), 10 * H);
    }
}
