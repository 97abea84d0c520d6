//! The FerrisDB safekeeper: one acceptor of the quorum-replicated WAL.
//!
//! Each database's log lives in segment files of checksummed frames under the data directory,
//! with a control file holding the promised term and the term history. An append is answered
//! only after fdatasync. The primary compute drives the protocol (see [`acceptor`] and
//! docs/wal-protocol.md); pageservers follow the committed log with `ReadWal`.

pub mod acceptor;
pub mod admin_api;
pub mod args;
pub mod control;
pub mod durable;
#[doc(hidden)]
pub mod fuzzing;
pub mod log;
pub mod metrics;
pub mod recent;
pub mod service;
pub mod tail_buffer;
pub mod timeline;

pub use args::Args;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ferrisdb_common::proto::safekeeper_server::SafekeeperServer;
use ferrisdb_common::{Error, Result};
use ferrisdb_server_common::{admin, auth, serve};
use tonic::service::interceptor::InterceptedService;

use crate::metrics::Metrics;
use crate::service::{SafekeeperService, SafekeeperState};

/// How a safekeeper process is started.
#[derive(Debug, Clone)]
pub struct SafekeeperConfig {
    /// Its name in logs and status (`safekeeper-1`).
    pub name: String,
    /// Where the WAL protocol is served.
    pub listen_grpc: SocketAddr,
    /// Where the admin HTTP API is served.
    pub listen_http: SocketAddr,
    /// Where the logs are kept.
    pub data_dir: PathBuf,
    /// The other safekeepers' gRPC endpoints, for repairing damaged WAL.
    pub peers: Vec<String>,
    /// Segment size, WAL disk budget and database count limit.
    pub limits: service::Limits,
    /// The object store the pageserver uploads to, read to verify its durable claims before
    /// WAL is deleted. Without it, trimming stops at the commit position and a claim above it
    /// is not believed (docs/wal-protocol.md).
    pub object_store: Option<ferrisdb_server_common::objstore::ObjectStoreConfig>,
    /// TLS and the credentials the gRPC and admin APIs require.
    pub security: auth::Security,
}

/// Runs a safekeeper until `shutdown` resolves.
pub async fn run(
    config: SafekeeperConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    run_on(config, None, shutdown).await
}

/// [`run`] on listeners already bound (gRPC, then HTTP) rather than the configured
/// addresses, which should name the same ports. For tests that start safekeepers in their
/// own process: a port found free and bound again later can be taken in between by another
/// test (the safekeeper then fails to start, and its clients talk to a stranger).
pub async fn run_on(
    config: SafekeeperConfig,
    listeners: Option<(std::net::TcpListener, std::net::TcpListener)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    config
        .security
        .check_internal(config.listen_grpc, config.listen_http)?;
    config
        .security
        .warn_if_cleartext(&[config.listen_grpc, config.listen_http]);
    // Before anything in it is read: two safekeepers on one directory would each vote and
    // acknowledge on their own while overwriting each other's log.
    let _lock = ferrisdb_server_common::dir_lock::DirLock::acquire(&config.data_dir, "safekeeper")?;
    let metrics = Metrics::new().map_err(|e| Error::internal(format!("metrics: {e}")))?;
    let store = match &config.object_store {
        Some(c) => {
            let store = c.open()?;
            tokio::spawn(check_store(store.clone(), c.url.clone()));
            Some(store)
        }
        None => {
            tracing::warn!(
                "no --object-store: the pageserver's durable claims cannot be verified, so this \
                 safekeeper never deletes WAL (its --max-wal-bytes budget then stops commits \
                 once full): give it the bucket the pageserver uploads to"
            );
            None
        }
    };
    let state = SafekeeperState::open(
        config.data_dir.clone(),
        config.peers.clone(),
        config.limits,
        durable::DurableReader::new(store),
        metrics.clone(),
    )
    .await?;
    let (grpc_listener, http_listener) = match listeners {
        None => (
            serve::bind(config.listen_grpc, "gRPC").await?,
            serve::bind(config.listen_http, "HTTP").await?,
        ),
        Some((grpc, http)) => (serve::adopt(grpc, "gRPC")?, serve::adopt(http, "HTTP")?),
    };
    tracing::info!(name = %config.name, grpc = %config.listen_grpc, http = %config.listen_http, "safekeeper serving");

    let shutdown = serve::Shutdown::on(shutdown);
    let persister = {
        let state = state.clone();
        let stop = shutdown.clone().wait();
        tokio::spawn(async move {
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => state.persist_commit_positions().await,
                    _ = &mut stop => break,
                }
            }
            state.persist_commit_positions().await;
        })
    };

    let router = admin::admin_router(
        &admin_api::ADMIN_API,
        metrics.registry.clone(),
        admin_api::routes(),
        admin_api::AdminState {
            state: state.clone(),
            name: config.name.clone(),
        },
    );
    let http = config
        .security
        .spawn_admin(router, http_listener, shutdown.clone());
    let grpc = serve::grpc_server().add_service(InterceptedService::new(
        ferrisdb_common::with_message_limits!(SafekeeperServer::new(SafekeeperService::new(
            state.clone()
        ))),
        config.security.require_cluster(),
    ));
    config
        .security
        .serve_grpc(grpc, grpc_listener, shutdown)
        .await?;
    let _ = http.await;
    let _ = persister.await;
    Ok(())
}

/// How long the start-up look at the bucket may take before it is reported as unanswered.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Looks at the bucket once after start and warns if it cannot be read. A safekeeper starts
/// whatever the bucket's state (it holds the WAL, and the bucket may be down for a while);
/// but one given a wrong bucket, endpoint or credentials would otherwise never say so and
/// simply never delete WAL, until `--max-wal-bytes` stops commits (an outside audit's
/// finding).
async fn check_store(store: std::sync::Arc<dyn object_store::ObjectStore>, url: String) {
    let prefix = object_store::path::Path::from("databases");
    match tokio::time::timeout(
        STORE_CHECK_TIMEOUT,
        store.list_with_delimiter(Some(&prefix)),
    )
    .await
    {
        Ok(Ok(_)) => {
            tracing::info!(%url, "object store readable: the pageserver's durable claims can be verified")
        }
        Ok(Err(e)) => tracing::warn!(
            %url,
            error = %e,
            "cannot read --object-store: the pageserver's durable claims cannot be verified and no WAL is deleted until it can (check the bucket, endpoint and credentials)"
        ),
        Err(_) => tracing::warn!(
            %url,
            "--object-store did not answer within {STORE_CHECK_TIMEOUT:?}: no WAL is deleted until the pageserver's durable claims can be verified there"
        ),
    }
}
