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
}

/// Follows the WAL of `timeline`'s database from `safekeepers` until the task is dropped.
pub async fn follow(timeline: Arc<Timeline>, safekeepers: Vec<String>) -> Result<()> {
    wal_follower::follow(timeline.as_ref(), &safekeepers).await
}

/// How often the safekeepers hear what object storage holds.
const REPORT_EVERY: Duration = Duration::from_secs(2);

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
