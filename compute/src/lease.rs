//! The primary's read lease (docs/wal-protocol.md, "Read leases"): while a majority of the
//! safekeepers has promised that no newer term's primary serves before the lease runs out, a
//! read at the latest version needs no liveness check.
//!
//! The proposer asks every safekeeper for a grant every [`lease::RENEW_EVERY`]. A grant
//! answered to a request sent at `s` (this process's monotonic clock) is good until
//! `s + lease::USABLE`; the lease runs until the majority-th latest of those ends, so a majority
//! has promised past it. Time is `tokio::time::Instant`, so tests can pause it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use ferrisdb_common::lease;
use tokio::time::Instant;

/// What the proposer knows of its lease: each safekeeper's last grant.
#[derive(Debug)]
pub struct Lease {
    /// The zero of `until`, taken when the lease was made.
    base: Instant,
    /// Nanoseconds after `base` the lease runs to (0: never held).
    until: AtomicU64,
    /// When the request of each safekeeper's newest grant was sent.
    grants: Mutex<Vec<Option<Instant>>>,
}

impl Lease {
    /// No lease yet, over `safekeepers` safekeepers.
    pub fn new(safekeepers: usize) -> Lease {
        Lease {
            base: Instant::now(),
            until: AtomicU64::new(0),
            grants: Mutex::new(vec![None; safekeepers]),
        }
    }

    /// Whether the lease runs at `now`. The caller takes `now` after the request it answers
    /// arrived.
    pub fn held_at(&self, now: Instant) -> bool {
        let until = self.until.load(Ordering::Acquire);
        until > 0 && now.saturating_duration_since(self.base).as_nanos() < u128::from(until)
    }

    /// Safekeeper `i` granted the lease asked for at `sent` (before the request left).
    pub fn granted(&self, i: usize, sent: Instant) {
        // Nothing panics while holding the lock, so a poisoned one is still consistent.
        let mut grants = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        let Some(slot) = grants.get_mut(i) else {
            return;
        };
        *slot = Some(slot.map_or(sent, |s| s.max(sent)));
        let majority = grants.len() / 2 + 1;
        let mut sent_times: Vec<Instant> = grants.iter().flatten().copied().collect();
        if sent_times.len() < majority {
            return;
        }
        sent_times.sort_unstable_by(|a, b| b.cmp(a));
        // The majority-th latest grant: a majority's promises all reach past it.
        let end = sent_times[majority - 1] + lease::USABLE;
        let nanos = end
            .saturating_duration_since(self.base)
            .as_nanos()
            .min(u128::from(u64::MAX)) as u64;
        self.until.fetch_max(nanos.max(1), Ordering::AcqRel);
    }

    /// When the lease runs out (`None`: never held).
    pub fn until(&self) -> Option<Instant> {
        match self.until.load(Ordering::Acquire) {
            0 => None,
            n => Some(self.base + std::time::Duration::from_nanos(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_lease_needs_a_majority_and_runs_from_before_the_request() {
        let lease = Lease::new(3);
        let t0 = Instant::now();
        assert!(!lease.held_at(t0));
        lease.granted(0, t0);
        assert!(!lease.held_at(t0), "one of three is no majority");
        tokio::time::advance(Duration::from_millis(100)).await;
        let t1 = Instant::now();
        lease.granted(2, t1);
        // The older of the two majority grants bounds it.
        assert_eq!(lease.until(), Some(t0 + lease::USABLE));
        assert!(lease.held_at(t0 + lease::USABLE - Duration::from_nanos(1)));
        assert!(!lease.held_at(t0 + lease::USABLE));
        // A newer grant of the same safekeeper moves it on; an out-of-range index is ignored.
        lease.granted(0, t1);
        lease.granted(7, t1 + Duration::from_secs(60));
        assert_eq!(lease.until(), Some(t1 + lease::USABLE));
        // It never moves back (a late answer to an older request).
        lease.granted(0, t0);
        lease.granted(2, t0);
        assert_eq!(lease.until(), Some(t1 + lease::USABLE));
    }
}
