//! Client activity: what scale to zero decides on, and the cold-start figure.
//!
//! Every client request touches the tracker; a watch also holds it busy for as long as it
//! waits, and a change feed for as long as it streams, so a compute with watchers or
//! followers is never idle. With `--suspend-after`, [`idle`] resolves
//! once nothing has touched the tracker for that long, and the compute shuts down: it holds
//! nothing that is not already durable on the safekeepers, so the next start (woken by
//! `ferrisdb dev` or `ferrisdb proxy` on the next connection) loses nothing.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use prometheus::{Gauge, IntCounter, IntGauge};

/// When the compute was last asked something, and how its cold start went.
#[derive(Debug)]
pub struct Activity {
    started: Instant,
    /// Milliseconds after `started` of the latest request.
    last_ms: AtomicU64,
    busy: AtomicUsize,
    first_read: OnceLock<Duration>,
    cold_start: Gauge,
    sessions: IntGauge,
    session_operations: IntCounter,
}

/// Counts an open client session while alive.
#[derive(Debug)]
pub struct OpenSession(IntGauge);

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Holds the compute busy while alive (a waiting watch).
#[derive(Debug)]
pub struct Busy<'a>(&'a Activity);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Holds the compute busy while alive, owning its tracker (a change feed's stream).
#[derive(Debug)]
pub struct BusyStream(std::sync::Arc<Activity>);

impl Drop for BusyStream {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    /// Keeps the compute busy until the guard drops; the guard owns the tracker, so it can
    /// live inside a stream answered to a client.
    pub fn busy_owned(self: &std::sync::Arc<Self>) -> BusyStream {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.touch();
        BusyStream(self.clone())
    }

    /// A tracker for a process that started at `started`, exporting the cold start on
    /// `registry` as `ferrisdb_compute_cold_start_seconds`.
    pub fn new(started: Instant, registry: &prometheus::Registry) -> prometheus::Result<Activity> {
        let cold_start = Gauge::new(
            "ferrisdb_compute_cold_start_seconds",
            "Seconds from process start to the first answered read (0 until then)",
        )?;
        registry.register(Box::new(cold_start.clone()))?;
        let sessions = IntGauge::new(
            "ferrisdb_compute_sessions",
            "Client sessions open (Database/Session streams)",
        )?;
        registry.register(Box::new(sessions.clone()))?;
        let session_operations = IntCounter::new(
            "ferrisdb_compute_session_operations_total",
            "Operations received inside client sessions",
        )?;
        registry.register(Box::new(session_operations.clone()))?;
        Ok(Activity {
            started,
            last_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            first_read: OnceLock::new(),
            cold_start,
            sessions,
            session_operations,
        })
    }

    /// Records a request now.
    pub fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// Keeps the compute busy until the guard drops.
    pub fn busy(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.touch();
        Busy(self)
    }

    /// Counts a session open until the guard drops.
    pub fn session_opened(&self) -> OpenSession {
        self.sessions.inc();
        OpenSession(self.sessions.clone())
    }

    /// Counts an operation received in a session.
    pub fn session_operation(&self) {
        self.session_operations.inc();
    }

    /// Records that a read was answered; the first one fixes the cold-start figure.
    pub fn read_answered(&self) {
        let mut first = false;
        let took = *self.first_read.get_or_init(|| {
            first = true;
            self.started.elapsed()
        });
        if first {
            self.cold_start.set(took.as_secs_f64());
            tracing::info!(
                cold_start_ms = took.as_millis() as u64,
                "first read answered"
            );
        }
    }

    /// Process start to first answered read, once there was one. Outside tests the figure is
    /// read from its metric (`ferrisdb_compute_cold_start_seconds`).
    #[cfg(test)]
    pub fn cold_start(&self) -> Option<Duration> {
        self.first_read.get().copied()
    }

    /// How long nothing has asked anything (zero while busy).
    pub fn idle_for(&self) -> Duration {
        if self.busy.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Acquire));
        self.started.elapsed().saturating_sub(last)
    }
}

/// Resolves once `activity` has been idle for `after`.
pub async fn idle(activity: &Activity, after: Duration) {
    loop {
        let idle = activity.idle_for();
        if idle >= after {
            return;
        }
        // Sleeping for the remainder is exact enough: nothing is decided by the sleep except
        // when to look again.
        tokio::time::sleep((after - idle).max(Duration::from_millis(50))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_quiet_and_for_busy_guards() {
        let a = Activity::new(Instant::now(), &prometheus::Registry::new()).unwrap();
        assert!(a.cold_start().is_none());
        tokio::time::advance(Duration::from_millis(30)).await;
        a.read_answered();
        a.read_answered();
        assert_eq!(a.cold_start(), Some(Duration::from_millis(30)));
        let guard = a.busy();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            a.idle_for(),
            Duration::ZERO,
            "a waiting watch keeps it busy"
        );
        drop(guard);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(a.idle_for(), Duration::from_secs(3));
        let started = tokio::time::Instant::now();
        idle(&a, Duration::from_secs(5)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
