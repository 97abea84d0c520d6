//! The primary's read lease: how long a safekeeper promises, and how much of that the primary
//! may use (docs/wal-protocol.md, "Read leases").
//!
//! A safekeeper that grants a lease to the proposer of its current term promises, for
//! [`LEASE`] on its own monotonic clock from the moment it grants, that no newer term's
//! primary will serve before then: it reports what is left of the promise with every vote,
//! and the winner of a newer term waits that long before it serves. The proposer counts its
//! lease from *before* it asked and uses only [`USABLE`] of it, so the two clocks may run at
//! rates up to [`MAX_DRIFT_PERCENT`] apart before the proposer's lease could outlast the
//! safekeeper's promise. Clocks need not agree on the time, only roughly on its rate.

use std::time::Duration;

/// What a safekeeper promises per grant, on its clock.
pub const LEASE: Duration = Duration::from_secs(2);

/// How far apart (in percent) the rates of two processes' monotonic clocks may be for a lease
/// to stay sound. Real clocks differ by parts per million; this allows for far worse.
pub const MAX_DRIFT_PERCENT: u32 = 10;

/// The part of a grant the proposer uses, counted on its clock from before its request:
/// `LEASE × (100 − d) / (100 + d)` for `d = MAX_DRIFT_PERCENT`, so a proposer clock fast by
/// `d` % against a safekeeper clock slow by `d` % still stops before the promise ends.
pub const USABLE: Duration = Duration::from_millis(
    LEASE.as_millis() as u64 * (100 - MAX_DRIFT_PERCENT as u64) / (100 + MAX_DRIFT_PERCENT as u64),
);

/// How often a primary renews: often enough that a few lost renewals in a row do not let the
/// lease run out (its reads then fall back to the liveness check, which is slower, never
/// wrong).
pub const RENEW_EVERY: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usable_part_leaves_room_for_drift_and_several_renewals() {
        // LEASE·(1−ρ)/(1+ρ) rounded down: never more.
        let exact = LEASE.as_secs_f64() * 0.9 / 1.1;
        assert!(USABLE.as_secs_f64() <= exact);
        assert!(USABLE.as_secs_f64() > exact - 0.001);
        assert!(USABLE > RENEW_EVERY * 4);
    }
}
