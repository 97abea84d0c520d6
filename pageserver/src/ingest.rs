//! Following the committed WAL from the safekeepers into a timeline.
//!
//! The follower streams from the safekeeper with the highest commit position. Safekeepers only
//! stream committed WAL, and the committed prefix is the same on all of them, so switching
//! between them is always safe; it switches when its stream breaks, or when its safekeeper
//! idles while another reports a higher commit position (a lagging safekeeper just restarted).

use std::sync::Arc;
use std::time::Duration;

use ferrisdb_common::proto::safekeeper_client::SafekeeperClient;
use ferrisdb_common::proto::{DurableReport, ReadWalRequest, SafekeeperStatusRequest};
use ferrisdb_common::{Error, Result, net, wal};
use tonic::transport::Channel;

use crate::timeline::Timeline;

const RETRY: Duration = Duration::from_millis(200);

/// Follows the WAL of `timeline`'s database from `safekeepers` until the task is dropped.
pub async fn follow(timeline: Arc<Timeline>, safekeepers: Vec<String>) -> Result<()> {
    let clients = safekeepers
        .iter()
        .map(|url| Ok(SafekeeperClient::new(net::channel(url)?)))
        .collect::<Result<Vec<_>>>()?;
    loop {
        let commits = commit_positions(&clients, timeline.database()).await;
        let best = commits
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.map(|c| (i, c)))
            .max_by_key(|(_, c)| *c);
        if let Some((i, _)) = best {
            match stream_from(&clients, i, &timeline).await {
                Ok(()) => {}
                Err(e) => tracing::info!(
                    database = timeline.database(),
                    safekeeper = %safekeepers[i],
                    error = %e,
                    "WAL stream ended; picking a safekeeper again"
                ),
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// How often the safekeepers hear what object storage holds.
const REPORT_EVERY: Duration = Duration::from_secs(2);

/// Tells every safekeeper, whenever it changes and periodically (a restarted safekeeper must
/// hear it too), up to which version object storage holds the WAL, so they can delete it.
pub async fn report_durable(timeline: Arc<Timeline>, safekeepers: Vec<String>) -> Result<()> {
    let clients = safekeepers
        .iter()
        .map(|url| Ok(SafekeeperClient::new(net::channel(url)?)))
        .collect::<Result<Vec<_>>>()?;
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

async fn commit_positions(
    clients: &[SafekeeperClient<Channel>],
    database: &str,
) -> Vec<Option<u64>> {
    let asks = clients.iter().map(|c| {
        let mut c = c.clone();
        let req = SafekeeperStatusRequest {
            database: database.to_string(),
        };
        async move {
            tokio::time::timeout(Duration::from_secs(1), c.get_status(req))
                .await
                .ok()
                .and_then(|r| r.ok())
                .map(|r| r.into_inner().commit_lsn)
        }
    });
    futures::future::join_all(asks).await
}

/// Streams from safekeeper `i` until the stream fails or another safekeeper is ahead.
async fn stream_from(
    clients: &[SafekeeperClient<Channel>],
    i: usize,
    timeline: &Timeline,
) -> Result<()> {
    let mut at = timeline.ingested_version().0;
    let mut client = clients[i].clone();
    let req = ReadWalRequest {
        database: timeline.database().to_string(),
        start_lsn: at,
        end_lsn: None,
    };
    let mut stream = client.read_wal(req).await?.into_inner();
    while let Some(chunk) = stream.message().await? {
        if chunk.begin_lsn != at {
            return Err(Error::internal(format!(
                "WAL chunk starts at {}, expected {at}",
                chunk.begin_lsn
            )));
        }
        if chunk.wal.is_empty() {
            // Idle: if another safekeeper has committed WAL this one lacks, go there.
            let others = commit_positions(clients, timeline.database()).await;
            if others.iter().flatten().any(|c| *c > at) && chunk.commit_lsn <= at {
                return Ok(());
            }
            continue;
        }
        let records = wal::decode_frames(&chunk.wal, chunk.begin_lsn)?;
        timeline.apply(&records)?;
        at += chunk.wal.len() as u64;
    }
    Ok(())
}
