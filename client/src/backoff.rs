//! The retry budget every retrying loop of the SDK keeps: `run`'s transactions, single calls
//! and a followed change feed. One rule for all three, so `RetryOptions` means the same
//! wherever it applies: at most `max_retries` retries, none that would start past `timeout`
//! from the first try, and between them a pause drawn uniformly from zero to a bound that
//! starts at `initial_backoff` and doubles up to `max_backoff` ("full jitter": clients
//! refused together do not come back together).

use std::time::{Duration, Instant};

use rand::Rng;

/// How [`crate::Database::run`] (and every other retrying call of the SDK) retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOptions {
    /// Give up (returning the last error) once this much time has passed. It also bounds
    /// every call a transaction makes: in [`crate::Database::run`] none waits past the end of
    /// the run's timeout, and in a transaction from `create_transaction` each call waits at
    /// most this long; a read that waited it out fails `unavailable`, a commit
    /// `commit_unknown_result`. Zero: no bound on a call's wait, and no retries, except where
    /// the caller waits for good: a followed change feed reopens and a watch re-issues
    /// without end.
    pub timeout: Duration,
    /// Give up after this many retries.
    pub max_retries: u32,
    /// First backoff; it doubles up to `max_backoff`, with full jitter.
    pub initial_backoff: Duration,
    /// Largest backoff.
    pub max_backoff: Duration,
}

impl Default for RetryOptions {
    fn default() -> RetryOptions {
        RetryOptions {
            timeout: Duration::from_secs(30),
            max_retries: u32::MAX,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// One retrying loop's budget: when it started, how many retries it made, and the bound of
/// its next pause.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    options: RetryOptions,
    started: Instant,
    retries: u32,
    bound: Duration,
}

impl Backoff {
    /// A budget starting now.
    pub(crate) fn new(options: RetryOptions) -> Backoff {
        Backoff {
            options,
            started: Instant::now(),
            retries: 0,
            bound: options.initial_backoff,
        }
    }

    /// Retries made so far.
    pub(crate) fn retries(&self) -> u32 {
        self.retries
    }

    /// How much of the timeout is left for one call (`None`: no bound, as a zero timeout
    /// still lets the first try run to its end).
    pub(crate) fn remaining(&self) -> Option<Duration> {
        match self.options.timeout {
            Duration::ZERO => None,
            timeout => Some(timeout.saturating_sub(self.started.elapsed())),
        }
    }

    /// Whether one more retry fits the budget: under `max_retries`, and its pause (at its
    /// longest) ends inside the timeout.
    pub(crate) fn allows_retry(&self) -> bool {
        self.retries < self.options.max_retries
            && self.started.elapsed() + self.bound <= self.options.timeout
    }

    /// Counts a retry and sleeps its pause; the caller has checked [`Self::allows_retry`].
    pub(crate) async fn pause(&mut self) {
        self.retries += 1;
        let sleep = rand::rng().random_range(Duration::ZERO..=self.bound);
        tokio::time::sleep(sleep).await;
        self.bound = (self.bound * 2).min(self.options.max_backoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(timeout_ms: u64, max_retries: u32) -> RetryOptions {
        RetryOptions {
            timeout: Duration::from_millis(timeout_ms),
            max_retries,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
        }
    }

    /// The retry count bounds the loop, and each pause stays under its doubling bound.
    #[tokio::test]
    async fn retries_stop_at_the_count_and_pauses_stay_bounded() {
        let mut b = Backoff::new(options(10_000, 3));
        let mut n = 0;
        while b.allows_retry() {
            let before = Instant::now();
            b.pause().await;
            // Bounds 1, 2, 4 ms (and a timer's granularity on top).
            assert!(before.elapsed() < Duration::from_millis(50));
            n += 1;
        }
        assert_eq!((n, b.retries()), (3, 3));
        assert_eq!(
            b.bound,
            Duration::from_millis(4),
            "the bound stops at max_backoff"
        );
    }

    /// No retry starts when its pause could end past the timeout, and a zero timeout leaves
    /// no retries but an unbounded first call.
    #[tokio::test]
    async fn the_timeout_bounds_retries_but_not_the_first_try() {
        let b = Backoff::new(options(0, u32::MAX));
        assert!(!b.allows_retry());
        assert_eq!(b.remaining(), None);
        let b = Backoff::new(options(20, u32::MAX));
        assert!(b.allows_retry());
        assert!(
            b.remaining()
                .is_some_and(|r| r <= Duration::from_millis(20))
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
        assert!(!b.allows_retry());
        assert_eq!(b.remaining(), Some(Duration::ZERO));
    }
}
