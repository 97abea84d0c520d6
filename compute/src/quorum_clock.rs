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
//! renewed four times a second while the database is read or written, so answers stay fresh;
//! an idle one lets it lapse, and a reading then ages by [`DRIFT_PPM`] until the next answer
//! replaces it). This compute's own wall clock is not
//! used at all from then on: a step of it (an NTP jump, a VM resumed) changes nothing, where
//! before a step ahead stamped commits in the future and, since times never decrease, froze
//! them there. One safekeeper with a wrong clock moves nothing; a compute whose clock is off
//! says so. The estimate is as good as half a round trip (a millisecond on a LAN).
//!
//! Not every answer is as good as the last: under load a lease answer may wait behind
//! appends on either side, and the midpoint is then off by up to half that wait (several
//! milliseconds were seen on a loaded two-core host, a commit stamped after the moment its
//! client heard it had committed). So, as NTP's clock filter does, each safekeeper's reading
//! kept is the one with the smallest error bound: half its round trip, plus what the clocks
//! may have drifted apart since ([`DRIFT_PPM`]). A new answer replaces it when its bound is no
//! larger, which a fresh answer's soon is, so a reading never ages for long.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ferrisdb_server_common::clock::Clock;

/// How fast two clocks are taken to drift apart at most, in parts per million, when an old
/// reading is weighed against a new one (commodity quartz is within about 50).
const DRIFT_PPM: u64 = 100;

/// One safekeeper's reading: about when it was taken (the call's midpoint, monotonic clock),
/// what it read (Unix µs), and half the call's round trip (µs), the reading's error bound
/// when it was taken.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    remote: u64,
    half_rtt: u64,
}

impl Reading {
    /// Its error bound at `now`: half the round trip, plus the drift allowed since.
    fn bound_at(&self, now: Instant) -> u64 {
        let age =
            u64::try_from(now.saturating_duration_since(self.at).as_micros()).unwrap_or(u64::MAX);
        self.half_rtt.saturating_add(age / (1_000_000 / DRIFT_PPM))
    }
}

/// How far this compute's clock may be from the quorum's before it warns.
const WARN_AFTER_MICROS: i64 = 1_000_000;

/// A clock kept by the safekeepers' answers (see the module doc).
#[derive(Debug)]
pub struct QuorumClock {
    /// This compute's wall clock: until a majority has answered, and to warn about its offset.
    local: Arc<dyn Clock>,
    /// Each safekeeper's best reading (the smallest error bound, see the module doc).
    readings: Mutex<Vec<Option<Reading>>>,
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
        let rtt = received - sent;
        let reading = Reading {
            at: sent + rtt / 2,
            remote,
            half_rtt: u64::try_from(rtt.as_micros() / 2).unwrap_or(u64::MAX),
        };
        {
            let Ok(mut readings) = self.readings.lock() else {
                return;
            };
            let Some(slot) = readings.get_mut(member) else {
                return;
            };
            if slot.is_none_or(|kept| reading.half_rtt <= kept.bound_at(received)) {
                *slot = Some(reading);
            }
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

    /// The quorum's time at instant `now`: the median of every safekeeper's best reading
    /// carried forward to `now`, once a majority has answered (`None` before).
    fn at(&self, now: Instant) -> Option<u64> {
        let readings = self.readings.lock().ok()?;
        let mut estimates: Vec<u64> = readings
            .iter()
            .flatten()
            .map(|r| {
                let elapsed = now.saturating_duration_since(r.at).as_micros();
                r.remote
                    .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
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

    /// A reading taken over a slow round trip does not replace a fresher, tighter one; it
    /// does once the kept one has aged past its bound, and a tight one always does.
    #[test]
    fn the_reading_with_the_smallest_error_bound_is_kept() {
        let (_, c) = clock(10 * H);
        let t = Instant::now();
        let us = Duration::from_micros;
        for i in 0..3 {
            c.observe(i, t, t + us(100), 10 * H);
        }
        let at = t + us(50);
        assert_eq!(c.at(at), Some(10 * H));
        // 20 ms round trips, their readings 5 ms late (an answer queued at the safekeeper):
        // kept out while the tight reading's bound (50 µs, plus 100 µs per second) is smaller.
        let later = t + Duration::from_secs(1);
        for i in 0..3 {
            c.observe(i, later, later + us(20_000), 10 * H + 1_015_000);
        }
        assert_eq!(c.at(at + Duration::from_secs(1)), Some(10 * H + 1_000_000));
        // Two minutes on, the old reading's bound (12 ms) is past the slow one's (10 ms):
        // the slow reading is taken.
        let much_later = t + Duration::from_secs(120);
        for i in 0..3 {
            c.observe(i, much_later, much_later + us(20_000), 10 * H + 120_015_000);
        }
        assert_eq!(
            c.at(much_later + us(10_000)),
            Some(10 * H + 120_015_000),
            "an aged reading gives way"
        );
        // A tight reading replaces any.
        let next = much_later + Duration::from_secs(1);
        for i in 0..3 {
            c.observe(i, next, next, 10 * H + 121_000_000);
        }
        assert_eq!(c.at(next), Some(10 * H + 121_000_000));
    }
}
