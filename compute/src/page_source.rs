//! What the compute asks the pageserver on its read path, as a seam: point reads, range reads,
//! a key's history, the version at a time, and how far it has ingested (the hot tier's floor
//! and evictions follow that). [`GrpcPageSource`] is the pageserver's gRPC client behind it;
//! [`FaultyPageSource`] wraps any source and fails the calls a test names, so tests can show
//! what a pageserver error does to a read without stopping a pageserver.
//!
//! The calls that are not reads (checkpoints, branches, listing databases, the change feed)
//! stay on the gRPC client itself ([`Pageserver::admin`]): they are forwarded, not answered
//! from the tiers, so there is nothing for a test to learn by faking them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use ferrisdb_common::proto::pageserver_client::PageserverClient;
use ferrisdb_common::proto::{
    HistoryEntry, HistoryRequest, PageGetRangeRequest, PageGetRequest, PageserverStatus,
    PageserverStatusRequest, VersionAtRequest,
};
use ferrisdb_common::{Error, Result, Version};
use ferrisdb_server_common::auth::PeerChannel;

/// Rows of a range read, and whether more lie past the limit.
pub type RangeRows = (Vec<(Bytes, Bytes)>, bool);

/// The pageserver's read side, as the compute's tiers use it. Requests are the pageserver's
/// own wire messages, so a source answers exactly what the pageserver would be asked.
#[tonic::async_trait]
pub trait PageSource: Send + Sync + std::fmt::Debug {
    /// The value of a key at a version (`future_version` until the version is ingested).
    async fn get(&self, req: PageGetRequest) -> Result<Option<Bytes>>;
    /// The rows of a range at a version, up to its limit.
    async fn get_range(&self, req: PageGetRangeRequest) -> Result<RangeRows>;
    /// Every version of a key in a version range, oldest first.
    async fn history(&self, req: HistoryRequest) -> Result<Vec<HistoryEntry>>;
    /// The latest version committed at or before a time.
    async fn version_at(&self, req: VersionAtRequest) -> Result<Version>;
    /// How far the pageserver has ingested a database, and how much object storage holds.
    async fn status(&self, database: &str) -> Result<PageserverStatus>;
}

/// The pageserver over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcPageSource {
    client: PageserverClient<PeerChannel>,
}

impl GrpcPageSource {
    /// Reads through `client`.
    pub fn new(client: PageserverClient<PeerChannel>) -> GrpcPageSource {
        GrpcPageSource { client }
    }
}

#[tonic::async_trait]
impl PageSource for GrpcPageSource {
    async fn get(&self, req: PageGetRequest) -> Result<Option<Bytes>> {
        Ok(self.client.clone().get(req).await?.into_inner().value)
    }

    async fn get_range(&self, req: PageGetRangeRequest) -> Result<RangeRows> {
        let resp = self.client.clone().get_range(req).await?.into_inner();
        let rows = resp.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
        Ok((rows, resp.more))
    }

    async fn history(&self, req: HistoryRequest) -> Result<Vec<HistoryEntry>> {
        Ok(self.client.clone().history(req).await?.into_inner().entries)
    }

    async fn version_at(&self, req: VersionAtRequest) -> Result<Version> {
        let resp = self.client.clone().version_at(req).await?.into_inner();
        Ok(Version(resp.version))
    }

    async fn status(&self, database: &str) -> Result<PageserverStatus> {
        let req = PageserverStatusRequest {
            database: database.to_string(),
        };
        Ok(self.client.clone().get_status(req).await?.into_inner())
    }
}

/// The pageserver as a compute reaches it: the page source reads go through, and the gRPC
/// client for the calls that are not reads.
#[derive(Debug, Clone)]
pub struct Pageserver {
    /// What the read path asks.
    pub pages: Arc<dyn PageSource>,
    /// Checkpoints, branches, the database list and the change feed.
    pub admin: PageserverClient<PeerChannel>,
}

impl Pageserver {
    /// Both over the one gRPC client.
    pub fn grpc(client: PageserverClient<PeerChannel>) -> Pageserver {
        Pageserver {
            pages: Arc::new(GrpcPageSource::new(client.clone())),
            admin: client,
        }
    }

    /// The same pageserver with reads going through `pages` (a test's fault injector).
    pub fn with_pages(self, pages: Arc<dyn PageSource>) -> Pageserver {
        Pageserver { pages, ..self }
    }
}

/// One kind of page-source call, for naming the calls a [`FaultyPageSource`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageCall {
    /// [`PageSource::get`].
    Get,
    /// [`PageSource::get_range`].
    GetRange,
    /// [`PageSource::history`].
    History,
    /// [`PageSource::version_at`].
    VersionAt,
    /// [`PageSource::status`].
    Status,
}

/// A page source that fails the calls a test asks it to and passes the rest to another, like
/// `ferrisdb_server_common::faulty_store::FaultyStore` for object storage. It counts every call, so
/// a test can also tell whether a tier in front answered without asking.
#[derive(Debug)]
pub struct FaultyPageSource {
    inner: Arc<dyn PageSource>,
    state: Mutex<Faults>,
}

#[derive(Debug, Default)]
struct Faults {
    /// Per call: the error to give and how many more times (`usize::MAX`: until cleared).
    failing: HashMap<PageCall, (Error, usize)>,
    calls: HashMap<PageCall, usize>,
}

impl FaultyPageSource {
    /// Passes every call to `inner` until told to fail some.
    pub fn new(inner: Arc<dyn PageSource>) -> FaultyPageSource {
        FaultyPageSource {
            inner,
            state: Mutex::default(),
        }
    }

    /// The next `times` calls of `call` fail with `error` (without reaching the inner source).
    pub fn fail(&self, call: PageCall, error: Error, times: usize) {
        self.lock().failing.insert(call, (error, times));
    }

    /// Every call of `call` fails with `error` until [`FaultyPageSource::heal`].
    pub fn fail_always(&self, call: PageCall, error: Error) {
        self.fail(call, error, usize::MAX);
    }

    /// Stops failing anything.
    pub fn heal(&self) {
        self.lock().failing.clear();
    }

    /// How many calls of `call` were made, failed or not.
    pub fn calls(&self, call: PageCall) -> usize {
        self.lock().calls.get(&call).copied().unwrap_or(0)
    }

    /// The fault a call meets now, if any; counts the call.
    fn check(&self, call: PageCall) -> Result<()> {
        let mut state = self.lock();
        *state.calls.entry(call).or_default() += 1;
        let Some((error, left)) = state.failing.get_mut(&call) else {
            return Ok(());
        };
        let error = error.clone();
        if *left != usize::MAX {
            *left -= 1;
        }
        if *left == 0 {
            state.failing.remove(&call);
        }
        Err(error)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Faults> {
        // Nothing panics while holding the lock, so a poisoned one is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[tonic::async_trait]
impl PageSource for FaultyPageSource {
    async fn get(&self, req: PageGetRequest) -> Result<Option<Bytes>> {
        self.check(PageCall::Get)?;
        self.inner.get(req).await
    }

    async fn get_range(&self, req: PageGetRangeRequest) -> Result<RangeRows> {
        self.check(PageCall::GetRange)?;
        self.inner.get_range(req).await
    }

    async fn history(&self, req: HistoryRequest) -> Result<Vec<HistoryEntry>> {
        self.check(PageCall::History)?;
        self.inner.history(req).await
    }

    async fn version_at(&self, req: VersionAtRequest) -> Result<Version> {
        self.check(PageCall::VersionAt)?;
        self.inner.version_at(req).await
    }

    async fn status(&self, database: &str) -> Result<PageserverStatus> {
        self.check(PageCall::Status)?;
        self.inner.status(database).await
    }
}
