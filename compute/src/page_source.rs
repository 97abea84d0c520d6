//! What the compute asks the pageserver on its read path, as a seam: point reads, range reads,
//! a key's history, the version at a time, and how far it has ingested (the hot tier's floor
//! and evictions follow that). [`GrpcPageSource`] is the pageserver's gRPC client behind it;
//! `faulty_page_source::FaultyPageSource` (a test aid, with the `test-aids` feature) wraps any
//! source and fails the calls a test names, so tests can show what a pageserver error does to
//! a read without stopping a pageserver.
//!
//! The calls that are not reads (checkpoints, branches, listing databases, the change feed)
//! stay on the gRPC client itself ([`Pageserver::admin`]): they are forwarded, not answered
//! from the tiers, so there is nothing for a test to learn by faking them.

use std::sync::Arc;

use bytes::Bytes;
use ferrisdb_common::proto::pageserver_client::PageserverClient;
use ferrisdb_common::proto::{
    HistoryEntry, HistoryRequest, PageGetRangeRequest, PageGetRequest, PageserverStatus,
    PageserverStatusRequest, VersionAtRequest,
};
use ferrisdb_common::{Result, Version};
use ferrisdb_server_common::auth::CallChannel;

/// Rows of a range read, and whether more lie past the limit.
pub type RangeRows = (Vec<(Bytes, Bytes)>, bool);

/// A page of a key's history, oldest first, and whether more versions follow its last one
/// (the page stopped at the reply's byte target).
pub type HistoryPage = (Vec<HistoryEntry>, bool);

/// The pageserver's read side, as the compute's tiers use it. Requests are the pageserver's
/// own wire messages, so a source answers exactly what the pageserver would be asked.
#[tonic::async_trait]
pub trait PageSource: Send + Sync + std::fmt::Debug {
    /// The value of a key at a version (`future_version` until the version is ingested).
    async fn get(&self, req: PageGetRequest) -> Result<Option<Bytes>>;
    /// The rows of a range at a version, up to its limit.
    async fn get_range(&self, req: PageGetRangeRequest) -> Result<RangeRows>;
    /// The versions of a key in a version range, oldest first: one page, cut at the reply's
    /// byte target, saying whether more follow.
    async fn history(&self, req: HistoryRequest) -> Result<HistoryPage>;
    /// The latest version committed at or before a time.
    async fn version_at(&self, req: VersionAtRequest) -> Result<Version>;
    /// How far the pageserver has ingested a database, and how much object storage holds.
    async fn status(&self, database: &str) -> Result<PageserverStatus>;
}

/// The pageserver over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcPageSource {
    client: PageserverClient<CallChannel>,
}

impl GrpcPageSource {
    /// Reads through `client`.
    pub fn new(client: PageserverClient<CallChannel>) -> GrpcPageSource {
        GrpcPageSource { client }
    }
}

/// How long one call to the pageserver may take: past its own wait for a version to be
/// ingested (5 s, then `future_version`) with room for the read itself. A pageserver that is
/// paused or cut off behind an open connection answers nothing; without a bound the read
/// waited for the connection's keepalive and failed with a transport error.
pub const PAGESERVER_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(8);

/// `call`, or `unavailable` once it has taken [`PAGESERVER_CALL_TIMEOUT`].
async fn bounded<T>(
    what: &str,
    call: impl std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    match tokio::time::timeout(PAGESERVER_CALL_TIMEOUT, call).await {
        Ok(Ok(answer)) => Ok(answer.into_inner()),
        // No FerrisDB code: the connection failed, not the pageserver's answer (a keepalive
        // that went unanswered, a reset): say which call, to whom.
        Ok(Err(status))
            if status
                .metadata()
                .get(ferrisdb_common::error::CODE_METADATA_KEY)
                .is_none() =>
        {
            Err(ferrisdb_common::Error::unavailable(format!(
                "the pageserver did not answer a {what}: {}",
                status.message()
            )))
        }
        Ok(Err(status)) => Err(status.into()),
        Err(_) => Err(ferrisdb_common::Error::unavailable(format!(
            "the pageserver did not answer a {what} within {PAGESERVER_CALL_TIMEOUT:?}"
        ))),
    }
}

#[tonic::async_trait]
impl PageSource for GrpcPageSource {
    async fn get(&self, req: PageGetRequest) -> Result<Option<Bytes>> {
        Ok(bounded("read", self.client.clone().get(req)).await?.value)
    }

    async fn get_range(&self, req: PageGetRangeRequest) -> Result<RangeRows> {
        let resp = bounded("range read", self.client.clone().get_range(req)).await?;
        let rows = resp.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
        Ok((rows, resp.more))
    }

    async fn history(&self, req: HistoryRequest) -> Result<HistoryPage> {
        let page = bounded("history read", self.client.clone().history(req)).await?;
        Ok((page.entries, page.more))
    }

    async fn version_at(&self, req: VersionAtRequest) -> Result<Version> {
        let resp = bounded("timestamp lookup", self.client.clone().version_at(req)).await?;
        Ok(Version(resp.version))
    }

    async fn status(&self, database: &str) -> Result<PageserverStatus> {
        let req = PageserverStatusRequest {
            database: database.to_string(),
        };
        bounded("status call", self.client.clone().get_status(req)).await
    }
}

/// The pageserver as a compute reaches it: the page source reads go through, and the gRPC
/// client for the calls that are not reads.
#[derive(Debug, Clone)]
pub struct Pageserver {
    /// What the read path asks.
    pub pages: Arc<dyn PageSource>,
    /// Checkpoints, branches and the database list.
    pub admin: PageserverClient<CallChannel>,
    /// The pageserver's URL, when known: each followed change feed gets a connection of its
    /// own ([`Pageserver::feed_client`]).
    pub url: Option<String>,
}

impl Pageserver {
    /// Both over the one gRPC client.
    pub fn grpc(client: PageserverClient<CallChannel>) -> Pageserver {
        Pageserver {
            pages: Arc::new(GrpcPageSource::new(client.clone())),
            admin: client,
            url: None,
        }
    }

    /// A client for one change feed: on a connection of its own when the URL is known, else
    /// the shared one. A feed whose client stops reading leaves what the pageserver sent it
    /// unread, and unread data holds HTTP/2's connection-wide flow-control window: on the
    /// shared connection, a few stalled feeds (5 MiB between them) stopped every read and
    /// the ingest-position poll the hot tier's eviction needs, and then every commit (an
    /// outside audit's finding). On its own connection a stalled feed stalls only itself.
    pub fn feed_client(&self) -> Result<PageserverClient<CallChannel>> {
        match &self.url {
            Some(url) => Ok(ferrisdb_common::with_message_limits!(
                PageserverClient::new(ferrisdb_server_common::auth::call_channel(url)?)
            )),
            None => Ok(self.admin.clone()),
        }
    }

    /// The same pageserver with reads going through `pages` (a test's fault injector).
    pub fn with_pages(self, pages: Arc<dyn PageSource>) -> Pageserver {
        Pageserver { pages, ..self }
    }
}
