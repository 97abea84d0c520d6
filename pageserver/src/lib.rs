//! The FerrisDB pageserver: turns the committed WAL into a database in object storage.
//!
//! It follows the WAL from the safekeepers (`ingest`) into an in-memory layer, serves reads at
//! any ingested version ([`timeline`]), and on checkpoint uploads the in-memory layer as a
//! sorted delta layer and then a new manifest generation (the object formats are in
//! [`format`](mod@format)). On start it rebuilds each database ([`databases`]) from its newest manifest
//! and resumes the WAL where that manifest's durable version ends. `service` is the gRPC API,
//! [`admin_api`] the admin HTTP one.
//!
//! Files import in one direction: the APIs use [`databases`], which uses [`timeline`], which
//! uses [`format`](mod@format) and [`block_cache`]; none of them imports back up.

pub mod admin_api;
pub mod args;
pub mod block_cache;
pub mod databases;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod ingest;
pub mod metrics;
pub(crate) mod service;
pub mod timeline;

pub use args::Args;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferrisdb_common::proto::pageserver_server::PageserverServer;
use ferrisdb_common::{Error, Result};
use ferrisdb_server_common::objstore::ObjectStoreConfig;
use ferrisdb_server_common::{admin, auth, serve};
use tonic::service::interceptor::InterceptedService;

use crate::databases::Databases;
use crate::metrics::Metrics;
use crate::service::PageserverService;

/// How a pageserver process is started.
#[derive(Debug, Clone)]
pub struct PageserverConfig {
    /// Where the read API is served.
    pub listen_grpc: SocketAddr,
    /// Where the admin HTTP API is served.
    pub listen_http: SocketAddr,
    /// Object storage holding the layers and manifests.
    pub object_store: ObjectStoreConfig,
    /// gRPC endpoints of the safekeepers to follow.
    pub safekeepers: Vec<String>,
    /// The databases to serve.
    pub databases: Vec<String>,
    /// How often ingested WAL is uploaded without being asked.
    pub checkpoint_interval: Duration,
    /// The block cache's sizes and disk directory.
    pub cache: block_cache::BlockCacheConfig,
    /// Retention window and image-layer threshold.
    pub timeline: timeline::TimelineOptions,
    /// Most branches served; creating one more is `limit_exceeded`.
    pub max_branches: usize,
    /// TLS and the credentials the gRPC and admin APIs require.
    pub security: auth::Security,
}

/// Runs a pageserver until `shutdown` resolves.
pub async fn run(
    config: PageserverConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    if config.safekeepers.is_empty() {
        return Err(Error::invalid(
            "a pageserver needs at least one --safekeeper to follow",
        ));
    }
    config
        .security
        .check_internal(config.listen_grpc, config.listen_http)?;
    config
        .security
        .warn_if_cleartext(&[config.listen_grpc, config.listen_http]);
    let store = config.object_store.open()?;
    if config.object_store.url.starts_with("memory:") {
        tracing::warn!(
            "--object-store memory:// keeps every upload inside this process: all of every database is lost when it stops (for tests and experiments only)"
        );
    }
    let metrics = Metrics::new().map_err(|e| Error::internal(format!("metrics: {e}")))?;
    let _cache_lock = config.cache.lock_disk("pageserver")?;
    let cache = Arc::new(block_cache::BlockCache::new(&config.cache).await?);
    let served = serve_databases(config, store, metrics, cache.clone(), shutdown).await;
    // Closed here, before the runtime stops, whether serving ended or never began (a corrupt
    // manifest): see `hybrid_cache::close` for what a cache left to its drop did.
    cache.close().await;
    served
}

/// The pageserver from its databases' start to the end of serving.
async fn serve_databases(
    config: PageserverConfig,
    store: Arc<dyn object_store::ObjectStore>,
    metrics: Metrics,
    cache: Arc<block_cache::BlockCache>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let databases = Databases::new(
        store,
        metrics.clone(),
        cache,
        config.timeline.clone(),
        config.safekeepers.clone(),
        config.checkpoint_interval,
    )
    .with_max_branches(config.max_branches);
    databases.start_all(&config.databases).await?;
    let grpc_listener = serve::bind(config.listen_grpc, "gRPC").await?;
    let http_listener = serve::bind(config.listen_http, "HTTP").await?;
    tracing::info!(grpc = %config.listen_grpc, http = %config.listen_http, store = %config.object_store.url, "pageserver serving");

    let shutdown = serve::Shutdown::on(shutdown);
    let router = admin::admin_router(
        &admin_api::ADMIN_API,
        metrics.registry.clone(),
        admin_api::routes(),
        databases.clone(),
    );
    let http = config
        .security
        .spawn_admin(router, http_listener, shutdown.clone());
    let grpc = serve::grpc_server().add_service(InterceptedService::new(
        ferrisdb_common::with_message_limits!(PageserverServer::new(PageserverService::new(
            databases.clone()
        ))),
        config.security.require_cluster(),
    ));
    config
        .security
        .serve_grpc(grpc, grpc_listener, shutdown)
        .await?;
    let _ = http.await;
    databases.stop();
    Ok(())
}
