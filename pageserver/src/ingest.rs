//! Following the committed WAL from the safekeepers into a timeline (the follower itself is
//! [`ferrisdb_server_common::wal_follower`], shared with read replicas), and telling the safekeepers
//! what object storage holds.

use std::sync::Arc;
use std::time::Duration;

use ferrisdb_common::proto::DurableReport;
use ferrisdb_common::wal::WalRecord;
use ferrisdb_common::{Result, Version};
use ferrisdb_server_common::wal_follower::{self, WalSink};

use crate::timeline::Timeline;

impl WalSink for Timeline {
    fn database(&self) -> &str {
        Timeline::database(self)
    }

    fn applied_lsn(&self) -> u64 {
        let Version(v) = self.ingested_version();
        v
    }

    fn apply(&self, records: &[WalRecord]) -> Result<()> {
        Timeline::apply(self, records)
    }

    fn gather(&self) -> Duration {
        INGEST_GATHER
    }

    fn has_room(&self) -> bool {
        Timeline::has_room(self)
    }

    fn wait_for_room(&self) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(Timeline::wait_for_room(self))
    }

    fn wal_budget(&self, wal_bytes: u64, max_wal_bytes: u64) {
        Timeline::wal_budget(self, wal_bytes, max_wal_bytes)
    }

    fn resume_term(&self) -> Option<u64> {
        self.term_at(self.ingested_version())
    }

    fn applied_term(&self, lsn: u64, term: u64) {
        Timeline::applied_term(self, Version(lsn), term)
    }
}

/// How long the safekeeper gathers committed WAL before streaming it here. Nothing reads the
/// pageserver at the newest version: the compute's hot tier holds every commit above what
/// the pageserver has ingested and asks it only at that floor. So the pageserver can take
/// the commits of a window in one message rather than one message per lone commit, which
/// cost a safekeeper and the pageserver a wake-up, a message and an apply each
/// (docs/wal-protocol.md, "Following with a gather window"). What waits for ingestion (the hot tier's eviction,
/// a branch cut at the newest version, uploads) waits up to this much longer.
pub const INGEST_GATHER: Duration = Duration::from_millis(10);

/// Follows the WAL of `timeline`'s database from `safekeepers` until the task is dropped.
pub async fn follow(timeline: Arc<Timeline>, safekeepers: Vec<String>) -> Result<()> {
    wal_follower::follow(timeline.as_ref(), &safekeepers).await
}

/// How often the safekeepers hear what object storage holds when it has not changed (a
/// restarted safekeeper must hear it too); a change is told at once.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Tells every safekeeper, whenever it changes and periodically (a restarted safekeeper must
/// hear it too), up to which version object storage holds the WAL, so they can delete it.
pub async fn report_durable(timeline: Arc<Timeline>, safekeepers: Vec<String>) -> Result<()> {
    let clients = wal_follower::clients(&safekeepers)?;
    let mut durable = timeline.watch_remote_consistent();
    loop {
        let lsn = durable.borrow_and_update().0;
        if lsn > 0 {
            let reports =
                clients.iter().map(|c| {
                    let mut c = c.clone();
                    let req = DurableReport {
                        database: timeline.database().to_string(),
                        remote_consistent_lsn: lsn,
                    };
                    async move {
                        tokio::time::timeout(Duration::from_secs(1), c.report_durable(req)).await
                    }
                });
            futures::future::join_all(reports).await;
        }
        let _ = tokio::time::timeout(REPORT_EVERY, durable.changed()).await;
    }
}
