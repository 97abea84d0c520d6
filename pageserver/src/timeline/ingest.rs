//! Applying committed WAL records to the open in-memory layer, and waiting for a version to
//! be applied. (Following the safekeepers is [`crate::ingest`]; this is what it feeds.)

use std::sync::atomic::Ordering;
use std::time::Duration;

use ferrisdb_common::wal::WalRecord;
use ferrisdb_common::{Error, ErrorKind, Result, Version};

use super::{HELD_CHECKPOINTS, Timeline};

/// The least WAL not yet in object storage for which a safekeeper's budget asks a checkpoint
/// early ([`Timeline::wal_budget`]): a safekeeper that reports a tiny budget (by mistake, or
/// a lie) costs at most one checkpoint per this much WAL.
pub const BUDGET_CHECKPOINT_MIN_BYTES: u64 = 1 << 20;

/// How often ingestion that waits for room asks for a checkpoint again: after a failed one
/// the checkpoint loop otherwise waits for new WAL (none comes while ingestion waits) or the
/// periodic interval.
const ROOM_RECHECK: Duration = Duration::from_secs(1);

impl Timeline {
    /// What the safekeeper streaming WAL here said of its WAL on disk and its budget
    /// (`--max-wal-bytes`; 0: not said). Past half the budget — its appends slow down from
    /// three quarters — a checkpoint is asked for at once rather than at the next periodic
    /// one, if enough WAL awaits upload for it to matter (a quarter of the budget): WAL is
    /// deleted only once object storage holds it, so with a budget smaller than what the
    /// checkpoint interval lets pile up, commits were slowed for good (an outside audit: 64
    /// MiB, throttled to ~45 commits/s with a healthy pageserver). Asked once per checkpoint.
    pub fn wal_budget(&self, wal_bytes: u64, max_wal_bytes: u64) {
        if max_wal_bytes == 0 || wal_bytes < max_wal_bytes / 2 {
            return;
        }
        let remote = self.remote_consistent_version().0;
        let pending = self.ingested_version().0.saturating_sub(remote);
        if pending < (max_wal_bytes / 4).max(BUDGET_CHECKPOINT_MIN_BYTES)
            || self.budget_asked_at.swap(remote, Ordering::Relaxed) == remote
        {
            return;
        }
        tracing::info!(
            database = %self.database,
            wal_bytes,
            max_wal_bytes,
            pending,
            "a safekeeper's WAL is past half its budget: checkpointing now"
        );
        self.metrics.early_checkpoints.inc();
        self.oversized.notify_one();
    }

    /// Bytes the in-memory layers hold: the open one and the one a checkpoint uploads.
    fn held_bytes(&self) -> usize {
        self.read_map().map_or(0, |m| {
            m.open.approximate_bytes() + m.frozen.as_ref().map_or(0, |f| f.approximate_bytes())
        })
    }

    /// Whether more WAL may be applied now: the in-memory layers hold less than
    /// [`HELD_CHECKPOINTS`] checkpoints' worth. When they do not, the uploads are not keeping
    /// up (the store is down or slow) and ingestion waits ([`Timeline::wait_for_room`]).
    pub fn has_room(&self) -> bool {
        self.held_bytes() < self.held_limit()
    }

    fn held_limit(&self) -> usize {
        self.options
            .checkpoint_bytes
            .saturating_mul(HELD_CHECKPOINTS)
    }

    /// Waits until [`Timeline::has_room`], asking for a checkpoint every [`ROOM_RECHECK`]
    /// meanwhile. What this holds back waits on the safekeepers (which keep WAL until object
    /// storage holds it) and, past their budget, slows commits: the pageserver's memory stays
    /// bounded however long the store is down.
    pub async fn wait_for_room(&self) {
        if self.has_room() {
            return;
        }
        if !self.ingest_paused.swap(true, Ordering::Relaxed) {
            self.metrics.ingest_paused.inc();
            tracing::warn!(
                database = %self.database,
                held_bytes = self.held_bytes(),
                limit = self.held_limit(),
                "WAL ingestion waits: the in-memory layers are full and their upload has not succeeded (is the object store reachable?)"
            );
        }
        let mut durable = self.remote_consistent.subscribe();
        while !self.has_room() {
            self.oversized.notify_one();
            let _ = tokio::time::timeout(ROOM_RECHECK, durable.changed()).await;
        }
        if self.ingest_paused.swap(false, Ordering::Relaxed) {
            self.metrics.ingest_paused.dec();
            tracing::info!(database = %self.database, "WAL ingestion resumes: a checkpoint made room");
        }
    }

    /// Applies committed records, which must continue exactly where ingestion stands.
    pub fn apply(&self, records: &[WalRecord]) -> Result<()> {
        let Some(last) = records.last() else {
            return Ok(());
        };
        let oversized = {
            let mut map = self.write_map()?;
            let mut at = self.ingested_version();
            for r in records {
                if r.version <= at {
                    return Err(Error::internal(format!(
                        "record at version {} does not follow ingested {at}",
                        r.version
                    )));
                }
                for m in &r.mutations {
                    map.open.apply(r.version, m);
                }
                at = r.version;
            }
            // Under the layer-map lock, so a reader never sees a version without its time.
            let mut times = self
                .times
                .write()
                .map_err(|_| Error::internal("commit times lock poisoned"))?;
            // Commit times never decrease (DESIGN.md §2). A primary stamps its own commits in
            // order, but one elected after a failover does not know its predecessor's last
            // time, and its clock may be a little behind: such a time is raised to the one
            // before here, where the log is whole, so the change feed, the cold segments and
            // `history` all carry the same time for a version.
            let mut floor = times.last_time().unwrap_or(0);
            for r in records {
                let mut r = r.clone();
                r.commit_time_micros = r.commit_time_micros.max(floor);
                floor = r.commit_time_micros;
                times.push(r.version, r.commit_time_micros);
                map.open_records.push(r);
            }
            map.open.approximate_bytes() >= self.options.checkpoint_bytes
        };
        if oversized {
            // Repeats while the layer stays over the mark coalesce into one kept signal.
            self.oversized.notify_one();
        }
        self.clock_ahead
            .observe(self.options.clock.now_micros(), last.commit_time_micros);
        self.ingested.send_replace(last.version);
        self.metrics
            .ingested_version
            .with_label_values(&[&self.database])
            .set(last.version.0 as i64);
        self.metrics.ingested_records.inc_by(records.len() as u64);
        Ok(())
    }

    /// Waits until `version` is ingested, up to `timeout`.
    pub async fn wait_ingested(&self, version: Version, timeout: Duration) -> Result<()> {
        let mut rx = self.ingested.subscribe();
        let wait = rx.wait_for(|v| *v >= version);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::new(
                ErrorKind::FutureVersion,
                format!(
                    "version {version} of {} is not ingested after {timeout:?} (ingested {})",
                    self.database,
                    self.ingested_version()
                ),
            )),
        }
    }
}
