//! The Pageserver gRPC service.

use bytes::Bytes;
use std::time::Duration;

use ferrisdb_common::message_size::REPLY_TARGET_BYTES;
use ferrisdb_common::proto::pageserver_server::Pageserver;
use ferrisdb_common::proto::{
    ChangesBatch, ChangesRequest, CheckpointRequest, CommittedRecord, CreateBranchRequest,
    CreateBranchResponse, HistoryEntry, HistoryRequest, HistoryResponse, KeyValue,
    ListDatabasesRequest, ListDatabasesResponse, MaintenanceRequest, MaintenanceResponse,
    PageGetRangeRequest, PageGetRangeResponse, PageGetRequest, PageGetResponse, PageserverStatus,
    PageserverStatusRequest, VersionAtRequest, VersionAtResponse,
};
use ferrisdb_common::{Result, Version};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::databases::{Databases, Timelines};
use crate::timeline::{READ_WAIT, Timeline};

/// Records per streamed batch of the change feed.
const FEED_BATCH: usize = 256;

/// Streams committed records from `from` on; without `follow`, ends once caught up with what
/// was ingested when it started.
async fn feed(
    t: &Timeline,
    from: u64,
    follow: bool,
    tx: &mpsc::Sender<Result<ChangesBatch, Status>>,
) -> Result<()> {
    // Waited for before the stream started (`through_version`), so this is at least it.
    let stop_at = t.ingested_version();
    let from = t.feed_start(Version(from)).0;
    let mut after = Version(from.saturating_sub(1));
    loop {
        // One segment or FEED_BATCH records from memory at a time, however far back `from`
        // is: the feed's memory does not grow with the retained log.
        let records = t.records_batch(after, FEED_BATCH).await?;
        // Batches that changed nothing (the compute's idle heartbeats, commits of conflict
        // ranges only) are no change: the feed skips them.
        // A batch is cut by count and by bytes: a few commits of the largest legal size
        // would otherwise make one message no hop can carry, and the feed could never get
        // past them.
        let mut batch = ChangesBatch::default();
        let mut bytes = 0;
        let changed = records.iter().filter(|r| !r.mutations.is_empty());
        for r in changed {
            let record = CommittedRecord::from(r);
            bytes += record.encoded_len();
            batch.records.push(record);
            if batch.records.len() >= FEED_BATCH || bytes >= REPLY_TARGET_BYTES {
                if tx.send(Ok(std::mem::take(&mut batch))).await.is_err() {
                    return Ok(());
                }
                bytes = 0;
            }
        }
        if !batch.records.is_empty() && tx.send(Ok(batch)).await.is_err() {
            return Ok(());
        }
        if let Some(last) = records.last() {
            after = last.version;
        }
        if !follow && after >= stop_at {
            return Ok(());
        }
        if records.is_empty() {
            // Caught up: wait for the next ingested commit (or re-check now and then).
            let next = Version(t.ingested_version().0 + 1);
            let _ = t.wait_ingested(next, Duration::from_secs(1)).await;
            if tx.is_closed() {
                return Ok(());
            }
        }
    }
}

/// The gRPC face of the pageserver.
#[derive(Debug, Clone)]
pub struct PageserverService {
    timelines: Timelines,
    databases: Databases,
}

impl PageserverService {
    /// A service over `databases`.
    pub fn new(databases: Databases) -> PageserverService {
        PageserverService {
            timelines: databases.timelines.clone(),
            databases,
        }
    }
}

/// A database's storage, as a maintenance pass left it.
pub(crate) fn maintenance_of(t: &Timeline) -> MaintenanceResponse {
    MaintenanceResponse {
        layers: t.layer_count() as u64,
        gc_horizon: t.readable_from().0,
        remote_consistent_version: t.remote_consistent_version().0,
    }
}

fn status_of(t: &Timeline) -> PageserverStatus {
    PageserverStatus {
        ingested_version: t.ingested_version().0,
        remote_consistent_version: t.remote_consistent_version().0,
    }
}

#[tonic::async_trait]
impl Pageserver for PageserverService {
    async fn get(&self, req: Request<PageGetRequest>) -> Result<Response<PageGetResponse>, Status> {
        let req = req.into_inner();
        let t = self.timelines.get(&req.database)?;
        let value = t.get(&req.key, Version(req.version)).await?;
        Ok(Response::new(PageGetResponse { value }))
    }

    async fn get_range(
        &self,
        req: Request<PageGetRangeRequest>,
    ) -> Result<Response<PageGetRangeResponse>, Status> {
        let req = req.into_inner();
        let t = self.timelines.get(&req.database)?;
        let version = Version(req.version);
        let (kvs, more) = if req.limit == 0 && req.target_bytes > 0 {
            // No limit but a byte target: read no further than the page needs.
            let target = usize::try_from(req.target_bytes).unwrap_or(usize::MAX);
            let min_rows = req.min_rows as usize;
            t.get_range_until(&req.begin, &req.end, version, req.reverse, min_rows, target)
                .await?
        } else {
            let limit = req.limit as usize;
            t.get_range(&req.begin, &req.end, version, limit, req.reverse)
                .await?
        };
        let (kvs, more) = cap_bytes(kvs, more, req.min_rows as usize, req.target_bytes);
        Ok(Response::new(PageGetRangeResponse {
            kvs: kvs
                .into_iter()
                .map(|(key, value)| KeyValue { key, value })
                .collect(),
            more,
        }))
    }

    async fn get_status(
        &self,
        req: Request<PageserverStatusRequest>,
    ) -> Result<Response<PageserverStatus>, Status> {
        let t = self.timelines.get(&req.get_ref().database)?;
        Ok(Response::new(status_of(&t)))
    }

    async fn history(
        &self,
        req: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        let req = req.into_inner();
        let t = self.timelines.get(&req.database)?;
        let to = if req.to_version == 0 {
            t.ingested_version()
        } else {
            Version(req.to_version)
        };
        // One page, read no further than it needs: the reader asks on from after its last.
        let (page, more) = t
            .history_page(&req.key, Version(req.from_version), to, REPLY_TARGET_BYTES)
            .await?;
        let entries = page
            .into_iter()
            .map(|(v, time, value)| HistoryEntry {
                version: v.0,
                commit_time_micros: time,
                value,
            })
            .collect();
        Ok(Response::new(HistoryResponse { entries, more }))
    }

    async fn version_at(
        &self,
        req: Request<VersionAtRequest>,
    ) -> Result<Response<VersionAtResponse>, Status> {
        let req = req.into_inner();
        let t = self.timelines.get(&req.database)?;
        Ok(Response::new(VersionAtResponse {
            version: t.version_at(req.timestamp_micros)?.0,
        }))
    }

    type ChangesStream = ReceiverStream<Result<ChangesBatch, Status>>;

    async fn changes(
        &self,
        req: Request<ChangesRequest>,
    ) -> Result<Response<Self::ChangesStream>, Status> {
        let req = req.into_inner();
        let t = self.timelines.get(&req.database)?;
        // The compute's newest commit when the request reached it: the feed holds it. A
        // version nothing ever commits is refused after the wait, as a read at it is.
        t.wait_ingested(Version(req.through_version), READ_WAIT)
            .await?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            if let Err(e) = feed(&t, req.from_version, req.follow, &tx).await {
                let _ = tx.send(Err(e.into())).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn compact(
        &self,
        req: Request<MaintenanceRequest>,
    ) -> Result<Response<MaintenanceResponse>, Status> {
        let t = self.timelines.get(&req.into_inner().database)?;
        t.compact().await?;
        Ok(Response::new(maintenance_of(&t)))
    }

    async fn collect_garbage(
        &self,
        req: Request<MaintenanceRequest>,
    ) -> Result<Response<MaintenanceResponse>, Status> {
        let t = self.timelines.get(&req.into_inner().database)?;
        t.collect_garbage().await?;
        Ok(Response::new(maintenance_of(&t)))
    }

    async fn checkpoint(
        &self,
        req: Request<CheckpointRequest>,
    ) -> Result<Response<PageserverStatus>, Status> {
        let req = req.into_inner();
        let t = self.timelines.get(&req.database)?;
        t.checkpoint(Version(req.wait_for_version)).await?;
        Ok(Response::new(status_of(&t)))
    }

    async fn create_branch(
        &self,
        req: Request<CreateBranchRequest>,
    ) -> Result<Response<CreateBranchResponse>, Status> {
        let req = req.into_inner();
        let version = req.version.map(Version);
        let at = self
            .databases
            .branch(&req.database, &req.parent, version, req.timestamp_micros)
            .await?;
        Ok(Response::new(CreateBranchResponse {
            database: req.database,
            parent: req.parent,
            version: at.0,
        }))
    }

    async fn list_databases(
        &self,
        _req: Request<ListDatabasesRequest>,
    ) -> Result<Response<ListDatabasesResponse>, Status> {
        let databases = self.databases.infos();
        Ok(Response::new(ListDatabasesResponse { databases }))
    }
}

/// A range answer ended at the first row, past the first `min_rows`, that brings its keys and
/// values to `target_bytes` (0: no cap), with `more` set when rows were dropped. The rows past
/// it were read and are dropped here: the cap saves the wire and the reader's memory, which is
/// where a read ahead over large values costs (the timeline's own read is bounded by `limit`).
fn cap_bytes(
    mut rows: Vec<(Bytes, Bytes)>,
    more: bool,
    min_rows: usize,
    target_bytes: u64,
) -> (Vec<(Bytes, Bytes)>, bool) {
    let target = usize::try_from(target_bytes).unwrap_or(usize::MAX);
    let capped =
        ferrisdb_common::message_size::cap_by_bytes(&mut rows, min_rows, target, |(k, v)| {
            ferrisdb_common::message_size::range_row_bytes(k, v)
        });
    (rows, more || capped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(sizes: &[usize]) -> Vec<(Bytes, Bytes)> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, n)| (Bytes::from(vec![i as u8]), Bytes::from(vec![0u8; *n])))
            .collect()
    }

    /// The cap ends the answer at the row that reaches it, never before `min_rows`, sets
    /// `more` only when it dropped rows, and keeps `more` from the timeline otherwise.
    #[test]
    fn the_byte_cap_ends_an_answer_past_min_rows() {
        let big = ferrisdb_common::limits::MAX_VALUE_SIZE;
        // No cap: as read.
        assert_eq!(cap_bytes(rows(&[big; 5]), false, 1, 0).0.len(), 5);
        // Largest values: one row reaches 64 KiB, but two are needed.
        let (r, more) = cap_bytes(rows(&[big; 5]), false, 2, 64 << 10);
        assert_eq!((r.len(), more), (2, true));
        // Small rows: all of them fit under the cap; `more` is the timeline's.
        let (r, more) = cap_bytes(rows(&[100; 64]), false, 2, 64 << 10);
        assert_eq!((r.len(), more), (64, false));
        let (r, more) = cap_bytes(rows(&[100; 64]), true, 2, 64 << 10);
        assert_eq!((r.len(), more), (64, true));
        // A row of a 1-byte key and a 9-byte value counts 26 bytes, its framing included.
        assert_eq!(
            ferrisdb_common::message_size::range_row_bytes(&[1], &[0; 9]),
            26
        );
        // The cap reached exactly at the last row drops nothing.
        let (r, more) = cap_bytes(rows(&[9, 9]), false, 1, 52);
        assert_eq!((r.len(), more), (2, false));
        // Reached at the second of three: the third goes.
        let (r, more) = cap_bytes(rows(&[9, 9, 9]), false, 1, 52);
        assert_eq!((r.len(), more), (2, true));
        // Empty answers stay empty.
        assert_eq!(cap_bytes(Vec::new(), false, 1, 1), (Vec::new(), false));
    }
}
