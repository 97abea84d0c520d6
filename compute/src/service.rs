//! The client API (`ferrisdb.v1.Database`) served by the compute.

use std::sync::Arc;

use bytes::Bytes;
use ferrisdb_common::atomic;
use ferrisdb_common::proto::database_server::Database;
use ferrisdb_common::proto::session_request::Op;
use ferrisdb_common::proto::session_response::Result as Answer;
use ferrisdb_common::proto::{
    ChangesBatch, ChangesRequest, CommitRequest, CommitResponse, GetRangeRequest, GetRangeResponse,
    GetReadVersionRequest, GetReadVersionResponse, GetRequest, GetResponse, HistoryRequest,
    HistoryResponse, KeyValue, SessionRequest, VersionAtRequest, VersionAtResponse, WatchRequest,
    WatchResponse,
};
use ferrisdb_common::{Error, ErrorKind, Result, Version};
use ferrisdb_server_common::serve::Shutdown;
use futures::StreamExt as _;
use tonic::{Request, Response, Status, Streaming};

use crate::activity::Activity;
use crate::databases::Databases;
use crate::node::Node;
use crate::requests::{self, Commit};
use crate::session::{Answers, Start};

/// What the client API needs: the databases served and, once elected, their primaries.
///
/// Cloned for every operation a session starts (each runs as a future of its own, owning its
/// handle), so the state sits behind one `Arc`: a clone is one reference count, where cloning
/// the fields (the database name, the safekeepers' addresses, the pageserver client, the
/// metrics) cost ~1,750 instructions per operation with its drop, 6 % of a point read's in the
/// compute (docs/benchmarks/request-path-profile.md, fourteenth round).
#[derive(Debug, Clone)]
pub struct ComputeService {
    state: Arc<ServiceState>,
}

#[derive(Debug)]
struct ServiceState {
    databases: Databases,
    activity: Arc<Activity>,
    /// Sessions stop taking operations once this resolves, so a stop is not held up by a
    /// client's long-lived stream.
    shutdown: Shutdown,
    /// One permit per change feed being served: each has a connection to the pageserver of
    /// its own, so their number is bounded here rather than by the streams of one connection.
    feeds: Arc<tokio::sync::Semaphore>,
}

/// The most change feeds a compute serves at once (each holds a pageserver connection).
pub const MAX_CHANGE_FEEDS: usize = 1024;

impl ComputeService {
    /// A service routing each request to its database's primary (`unavailable` until it has
    /// won its term), recording client activity in `activity`; sessions end on `shutdown`.
    pub fn new(
        databases: Databases,
        activity: Arc<Activity>,
        shutdown: Shutdown,
    ) -> ComputeService {
        ComputeService {
            state: Arc::new(ServiceState {
                databases,
                activity,
                shutdown,
                feeds: Arc::new(tokio::sync::Semaphore::new(MAX_CHANGE_FEEDS)),
            }),
        }
    }

    async fn node(&self, database: &str) -> Result<Node> {
        self.state.activity.touch();
        self.state.databases.find(database).await
    }

    /// One operation of a session, by the same handler as its unary call.
    async fn run(self, op: Op) -> Result<Answer> {
        Ok(match op {
            Op::GetReadVersion(r) => Answer::GetReadVersion(self.read_version(r).await?),
            Op::Get(r) => Answer::Get(self.get(r).await?),
            Op::GetRange(r) => Answer::GetRange(self.get_range(r).await?),
            Op::Commit(r) => Answer::Commit(self.commit(r).await?),
        })
    }

    /// `GetReadVersion`, as a unary call or inside a session.
    async fn read_version(&self, req: GetReadVersionRequest) -> Result<GetReadVersionResponse> {
        let p = self.node(&req.database).await?;
        Ok(GetReadVersionResponse {
            version: p.read_version().await?.0,
        })
    }

    /// `Get`, as a unary call or inside a session.
    async fn get(&self, req: GetRequest) -> Result<GetResponse> {
        let p = self.node(&req.database).await?;
        let may_exist = requests::check_point_read(&req.key)?;
        let view = p.view();
        let read = |version| async move {
            // No key that long can exist: absent, as in FoundationDB.
            if !may_exist {
                return Ok(None);
            }
            view.get(req.key, version).await
        };
        let (read_version, value) = if req.latest {
            let (version, value) = p.read_latest(read).await?;
            (version.0, value)
        } else {
            (0, read(Version(req.version)).await?)
        };
        self.state.activity.read_answered();
        Ok(GetResponse {
            value,
            read_version,
        })
    }

    /// `GetRange`, as a unary call or inside a session.
    async fn get_range(&self, req: GetRangeRequest) -> Result<GetRangeResponse> {
        let p = self.node(&req.database).await?;
        requests::check_range_read(&req.begin, &req.end)?;
        let view = p.view();
        let read =
            |version| view.get_range(req.begin, req.end, version, req.limit as usize, req.reverse);
        let (read_version, (rows, more)) = if req.latest {
            let (version, answer) = p.read_latest(read).await?;
            (version.0, answer)
        } else {
            (0, read(Version(req.version)).await?)
        };
        self.state.activity.read_answered();
        Ok(GetRangeResponse {
            kvs: rows
                .into_iter()
                .map(|(key, value)| KeyValue { key, value })
                .collect(),
            more,
            read_version,
        })
    }

    /// `Commit`, as a unary call or inside a session.
    async fn commit(&self, req: CommitRequest) -> Result<CommitResponse> {
        let p = self.node(&req.database).await?;
        let read_version = req.read_version;
        // Converted and checked here, once; the pipeline trusts what it is given.
        let Some(commit) = Commit::from_request(req)? else {
            // A read-only transaction is serializable at its read version: nothing to commit.
            return Ok(CommitResponse {
                version: read_version,
                commit_time_micros: 0,
                versionstamp: Bytes::new(),
            });
        };
        let (version, commit_time_micros, order) = p.primary()?.commit(commit).await?;
        Ok(CommitResponse {
            version: version.0,
            commit_time_micros,
            versionstamp: Bytes::copy_from_slice(&atomic::versionstamp(version.0, order)),
        })
    }
}

#[tonic::async_trait]
impl Database for ComputeService {
    async fn get_read_version(
        &self,
        req: Request<GetReadVersionRequest>,
    ) -> Result<Response<GetReadVersionResponse>, Status> {
        Ok(Response::new(self.read_version(req.into_inner()).await?))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        Ok(Response::new(
            ComputeService::get(self, req.into_inner()).await?,
        ))
    }

    async fn get_range(
        &self,
        req: Request<GetRangeRequest>,
    ) -> Result<Response<GetRangeResponse>, Status> {
        Ok(Response::new(
            ComputeService::get_range(self, req.into_inner()).await?,
        ))
    }

    type ChangesStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<ChangesBatch, Status>> + Send + 'static>,
    >;

    async fn changes(
        &self,
        req: Request<ChangesRequest>,
    ) -> Result<Response<Self::ChangesStream>, Status> {
        let mut req = req.into_inner();
        let p = self.node(&req.database).await?;
        let feed = self.state.feeds.clone().try_acquire_owned().map_err(|_| {
            Error::new(
                ErrorKind::LimitExceeded,
                format!(
                    "this compute serves {MAX_CHANGE_FEEDS} change feeds, its maximum: try again \
                     once one ends"
                ),
            )
        })?;
        // The pageserver holds every ingested commit (the hot tier only the newest values), so
        // it serves the feed; new commits reach it within milliseconds, and it waits for those
        // acknowledged before this request (whatever a client put here is replaced).
        req.through_version = p.view().latest().0;
        let stream = p.view().feed_client()?.changes(req).await?.into_inner();
        // A follower is a client waiting, as a watch is: no scale to zero under it.
        let busy = self.state.activity.busy_owned();
        let stream = stream.map(move |batch| {
            let _held = (&busy, &feed);
            batch
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn history(
        &self,
        req: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        let req = req.into_inner();
        let p = self.node(&req.database).await?;
        requests::check_history(&req.key)?;
        let (entries, more) = p
            .view()
            .history(req.key, Version(req.from_version), Version(req.to_version))
            .await?;
        Ok(Response::new(HistoryResponse { entries, more }))
    }

    async fn version_at(
        &self,
        req: Request<VersionAtRequest>,
    ) -> Result<Response<VersionAtResponse>, Status> {
        let req = req.into_inner();
        let p = self.node(&req.database).await?;
        let version = p.version_at(req.timestamp_micros).await?;
        Ok(Response::new(VersionAtResponse { version: version.0 }))
    }

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<WatchResponse>, Status> {
        let req = req.into_inner();
        let p = self.node(&req.database).await?;
        requests::check_watch(&req.key)?;
        let _busy = self.state.activity.busy();
        let (version, value) = p.view().watch(req.key, req.value).await?;
        Ok(Response::new(WatchResponse {
            version: version.0,
            value,
        }))
    }

    async fn commit(
        &self,
        req: Request<CommitRequest>,
    ) -> Result<Response<CommitResponse>, Status> {
        Ok(Response::new(
            ComputeService::commit(self, req.into_inner()).await?,
        ))
    }

    type SessionStream = Answers;

    async fn session(
        &self,
        req: Request<Streaming<SessionRequest>>,
    ) -> Result<Response<Answers>, Status> {
        let service = self.clone();
        let start: Start = Box::new(move |op| {
            service.state.activity.session_operation();
            Box::pin(service.clone().run(op))
        });
        Ok(Response::new(Answers::new(
            req.into_inner(),
            start,
            self.state.shutdown.clone(),
            self.state.activity.session_opened(),
        )))
    }
}
