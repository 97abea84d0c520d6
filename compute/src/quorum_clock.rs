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
//! carries the acceptor's wall clock) and keeps time by them, as NTP would: an answer read
//! `remote` at about the midpoint of the call (monotonic clock), so at a later instant `t` that
//! safekeeper's clock reads about `remote + (t − midpoint)`. The time is the median of those
//! estimates over every safekeeper's latest answer, once a majority has answered (the lease is
//! renewed four times a second, so answers stay fresh). This compute's own wall clock is not
//! used at all from then on: a step of it (an NTP jump, a VM resumed) changes nothing, where
//! before a step ahead stamped commits in the future and, since times never decrease, froze
//! them there. One safekeeper with a wrong clock moves nothing; a compute whose clock is off
//! says so. The estimate is as good as half a round trip (a millisecond on a LAN).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ferrisdb_server_common::clock::Clock;

/// How far this compute's clock may be from the quorum's before it warns.
const WARN_AFTER_MICROS: i64 = 1_000_000;

/// A clock kept by the safekeepers' answers (see the module doc).
#[derive(Debug)]
pub struct QuorumClock {
    /// This compute's wall clock: until a majority has answered, and to warn about its offset.
    local: Arc<dyn Clock>,
    /// Each safekeeper's latest reading: the instant it was (about) taken, and what it read.
    readings: Mutex<Vec<Option<(Instant, u64)>>>,
    majority: usize,
    /// Whether the local clock's offset has been warned about (once per crossing).
    warned: AtomicBool,
}

impl QuorumClock {
    /// A clock for a quorum of `members` safekeepers, at `local`'s time until a majority has
    /// answered.
    pub fn new(local: Arc<dyn Clock>, members: usize) -> QuorumClock {
        QuorumClock {
            local,
            readings: Mutex::new(vec![None; members]),
            majority: members / 2 + 1,
            warned: AtomicBool::new(false),
        }
    }

    /// Records safekeeper `member`'s clock: it read `remote` (Unix µs; 0: it cannot say) while
    /// a call sent at `sent` was answered at `received`.
    pub fn observe(&self, member: usize, sent: Instant, received: Instant, remote: u64) {
        if remote == 0 || received < sent {
            return;
        }
        let midpoint = sent + (received - sent) / 2;
        {
            let Ok(mut readings) = self.readings.lock() else {
                return;
            };
            let Some(slot) = readings.get_mut(member) else {
                return;
            };
            *slot = Some((midpoint, remote));
        }
        let Some(quorum) = self.at(received) else {
            return;
        };
        let offset = i64::try_from(i128::from(quorum) - i128::from(self.local.now_micros()))
            .unwrap_or(i64::MAX);
        let off = offset.abs() > WARN_AFTER_MICROS;
        if off && !self.warned.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                offset_ms = offset / 1000,
                "this compute's clock is off the safekeepers' by more than a second: commit times follow the quorum's clocks (check NTP here)"
            );
        } else if !off && self.warned.swap(false, Ordering::AcqRel) {
            tracing::info!(
                offset_ms = offset / 1000,
                "this compute's clock is back within a second of the safekeepers'"
            );
        }
    }

    /// The quorum's time at instant `now`: the median of every safekeeper's latest reading
    /// carried forward to `now`, once a majority has answered (`None` before).
    fn at(&self, now: Instant) -> Option<u64> {
        let readings = self.readings.lock().ok()?;
        let mut estimates: Vec<u64> = readings
            .iter()
            .flatten()
            .map(|(at, remote)| {
                let elapsed = now.saturating_duration_since(*at).as_micros();
                remote.saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
            })
            .collect();
        if estimates.len() < self.majority {
            return None;
        }
        estimates.sort_unstable();
        let n = estimates.len();
        Some(if n % 2 == 1 {
            estimates[n / 2]
        } else {
            // Two middles: the earlier, so two disagreeing clocks never push commit times
            // further ahead than the more modest says (times ahead cannot be taken back).
            estimates[n / 2 - 1]
        })
    }

    /// The quorum's time minus this compute's, in microseconds (0 before a majority answered).
    pub fn offset_micros(&self) -> i64 {
        let now = self.now_micros();
        i64::try_from(i128::from(now) - i128::from(self.local.now_micros())).unwrap_or(0)
    }
}

impl Clock for QuorumClock {
    fn now_micros(&self) -> u64 {
        self.at(Instant::now())
            .unwrap_or_else(|| self.local.now_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

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
    fn a_compute_an_hour_ahead_keeps_the_quorums_time_and_its_steps_change_nothing() {
        let (local, c) = clock(11 * H);
        let t = Instant::now();
        let rtt = Duration::from_micros(200);
        // Until a majority has answered, its own time.
        c.observe(0, t, t + rtt, 10 * H);
        assert_eq!(c.at(t + rtt), None);
        assert_eq!(c.now_micros(), 11 * H);
        c.observe(1, t, t + rtt, 10 * H + 30);
        // The median of two: the earlier. Read a second later, a second later.
        assert_eq!(c.at(t + rtt), Some(10 * H + 100));
        assert_eq!(
            c.at(t + rtt + Duration::from_secs(1)),
            Some(10 * H + 100 + 1_000_000)
        );
        // The local clock steps back two hours: nothing changes.
        local.0.store(9 * H, Ordering::SeqCst);
        assert_eq!(c.at(t + rtt), Some(10 * H + 100));
        assert!(c.now_micros() >= 10 * H);
    }

    #[test]
    fn one_wrong_safekeeper_moves_nothing() {
        let (_, c) = clock(10 * H);
        let t = Instant::now();
        c.observe(0, t, t, 10 * H);
        c.observe(1, t, t, 15 * H); // five hours ahead
        assert_eq!(c.at(t), Some(10 * H), "two readings: the earlier");
        c.observe(2, t, t, 10 * H + 20);
        assert_eq!(c.at(t), Some(10 * H + 20));
    }

    #[test]
    fn an_acceptor_that_cannot_say_is_not_counted() {
        let (_, c) = clock(10 * H);
        let t = Instant::now();
        for i in 0..3 {
            c.observe(i, t, t, 0);
        }
        assert_eq!(c.at(t), None);
        assert_eq!(c.now_micros(), 10 * H);
        assert_eq!(c.offset_micros(), 0);
    }
}
