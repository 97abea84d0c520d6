//! How far this pageserver's clock runs ahead of the computes' commit times.
//!
//! GC counts the retention window back from "now" (`collect_garbage`), but the versions it
//! maps "now − pitr" to carry commit times from the computes' clocks. A pageserver whose clock
//! runs ahead of theirs (a VM without NTP, a bad RTC) would collect history still inside the
//! window as they count it, all at once and for good: an outside audit lost every version of
//! a 300 s window to a pageserver two hours ahead.
//!
//! Each record ingested while following the log live was committed a moment before it
//! arrives, so `local now − commit time` is the skew plus a delivery delay that is never
//! negative: its minimum over recent records bounds how far ahead this clock runs. Old
//! records (catching up after a restart) only raise the offset, and the minimum ignores
//! them. The minimum is kept over two windows of [`WINDOW`], so a clock corrected later is
//! believed within two windows; an idle database keeps its last estimate.

use std::sync::Mutex;
use std::time::Duration;

/// How long one window of observations lasts, by the local clock.
const WINDOW: Duration = Duration::from_secs(600);

/// How far ahead is worth a warning: a minute, far beyond any delivery delay.
pub const WARN_AHEAD: Duration = Duration::from_secs(60);

/// How often the warning repeats while the clock stays ahead (GC runs after every
/// checkpoint, every 30 s or so per database: each time would flood the log).
pub const WARN_EVERY: Duration = Duration::from_secs(600);

/// The estimate: see the module doc.
#[derive(Debug, Default)]
pub struct ClockAhead(Mutex<Windows>);

#[derive(Debug, Default)]
struct Windows {
    /// When the current window started (local clock, Unix microseconds).
    started: u64,
    /// The smallest offset seen in the current window, and in the one before it.
    current: Option<i64>,
    previous: Option<i64>,
    /// When the last warning was given (local clock), if one was.
    warned: Option<u64>,
}

impl ClockAhead {
    /// Records that a record committed at `commit_time` (the compute's clock) arrived at
    /// `now` (this pageserver's).
    pub fn observe(&self, now: u64, commit_time: u64) {
        let offset = i64::try_from(i128::from(now) - i128::from(commit_time)).unwrap_or(
            if now > commit_time {
                i64::MAX
            } else {
                i64::MIN
            },
        );
        let Ok(mut w) = self.0.lock() else {
            return;
        };
        let window = u64::try_from(WINDOW.as_micros()).unwrap_or(u64::MAX);
        if now.saturating_sub(w.started) >= window {
            // An idle window leaves the last estimate standing.
            if w.current.is_some() {
                w.previous = w.current;
            }
            w.current = None;
            w.started = now;
        }
        w.current = Some(w.current.map_or(offset, |m| m.min(offset)));
    }

    /// How far ahead, if that is [`WARN_AHEAD`] or more and no warning was given in the last
    /// [`WARN_EVERY`] (by the local clock `now`): the caller warns with it.
    pub fn warning_due(&self, now: u64) -> Option<u64> {
        let ahead = self.micros();
        if ahead < duration_micros(WARN_AHEAD) {
            return None;
        }
        let mut w = self.0.lock().ok()?;
        if w.warned
            .is_some_and(|at| now.saturating_sub(at) < duration_micros(WARN_EVERY))
        {
            return None;
        }
        w.warned = Some(now);
        Some(ahead)
    }

    /// How many microseconds this clock runs ahead of the computes' (0 when behind, in step,
    /// or never observed).
    pub fn micros(&self) -> u64 {
        let Ok(w) = self.0.lock() else {
            return 0;
        };
        let least = match (w.current, w.previous) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => 0,
        };
        u64::try_from(least.max(0)).unwrap_or(0)
    }
}

fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn in_step_or_behind_is_zero() {
        let c = ClockAhead::default();
        assert_eq!(c.micros(), 0);
        c.observe(1000 * S, 1000 * S - 2_000); // 2 ms in flight
        assert_eq!(c.micros(), 2_000);
        c.observe(1001 * S, 1001 * S + 5 * S); // this clock behind: never negative
        assert_eq!(c.micros(), 0);
    }

    #[test]
    fn ahead_is_the_least_offset_and_old_records_do_not_raise_it() {
        let c = ClockAhead::default();
        let ahead = 7200 * S;
        // Catching up: records an hour old, then fresh ones.
        c.observe(10_000 * S + ahead, 6_400 * S);
        c.observe(10_000 * S + ahead, 10_000 * S - 500);
        assert_eq!(c.micros(), ahead + 500);
    }

    #[test]
    fn a_corrected_clock_is_believed_within_two_windows_and_idle_keeps_the_estimate() {
        let c = ClockAhead::default();
        let ahead = 3600 * S;
        c.observe(10_000 * S + ahead, 10_000 * S);
        assert_eq!(c.micros(), ahead);
        // Idle for a long while: the estimate stands.
        c.observe(50_000 * S + ahead, 50_000 * S);
        assert_eq!(c.micros(), ahead);
        // Corrected: in step from here on; two windows later the old offset is gone.
        let mut now = 60_000 * S;
        for _ in 0..3 {
            c.observe(now, now);
            now += 601 * S;
        }
        assert_eq!(c.micros(), 0);
    }

    #[test]
    fn the_warning_comes_once_per_warn_every_while_ahead() {
        let little = ClockAhead::default();
        let mut now = 10_000 * S;
        little.observe(now, now - 30 * S); // 30 s: not worth a warning
        assert_eq!(little.warning_due(now), None);
        let c = ClockAhead::default();
        let ahead = 3600 * S;
        c.observe(now + ahead, now);
        now += ahead;
        assert_eq!(c.warning_due(now), Some(ahead));
        assert_eq!(c.warning_due(now + 30 * S), None, "repeated at the next GC");
        assert_eq!(c.warning_due(now + 599 * S), None);
        assert_eq!(c.warning_due(now + 600 * S), Some(ahead));
    }
}
