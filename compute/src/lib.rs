//! The FerrisDB compute: transactions over the quorum log and the pageserver.
//!
//! On start the compute wins a term on the safekeepers ([`proposer`]) and becomes the
//! [`primary`]: it serves the client API ([`service`]), resolves conflicts ([`resolver`]),
//! commits through one pipeline ([`committer`]) and keeps every commit the pageserver has not
//! yet ingested in the [`hot_tier`]. It holds nothing that cannot be rebuilt: killing it loses
//! no acknowledged commit.

pub(crate) mod activity;
pub mod admin_api;
pub mod args;
pub mod atomics;
pub(crate) mod committer;
pub mod databases;
#[cfg(any(test, feature = "test-aids"))]
pub mod faulty_page_source;
pub mod freshness;
pub mod hot_tier;
pub mod lease;
pub mod mark_table;
pub mod metrics;
pub mod node;
pub mod page_source;
pub mod pipeline_thread;
pub mod primary;
pub mod proposer;
pub mod quorum_clock;
pub mod range_cache;
pub mod read_path;
pub mod replica;
pub mod requests;
pub(crate) mod resolver;
pub(crate) mod service;
pub mod session;
pub mod view;
pub mod warm_tier;
pub mod watches;

#[cfg(test)]
mod pipeline_tests;
#[cfg(test)]
mod test_safekeepers;

pub use args::Args;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use ferrisdb_common::proto::database_server::DatabaseServer;
use ferrisdb_common::proto::pageserver_client::PageserverClient;
use ferrisdb_common::{Error, Result, validate_database_name};
use ferrisdb_server_common::{admin, auth, serve};
use pipeline_thread::PipelineThread;
use tonic::service::interceptor::InterceptedService;

use crate::activity::Activity;
use crate::databases::Databases;
use crate::metrics::Metrics;
use crate::service::ComputeService;

/// How a compute process is started. Debug shows whether a token is set, never the token.
#[derive(Clone)]
pub struct ComputeConfig {
    /// Where the client API is served.
    pub listen_grpc: SocketAddr,
    /// Where the admin HTTP API is served.
    pub listen_http: SocketAddr,
    /// The database this compute is primary for.
    pub database: String,
    /// gRPC endpoints of the safekeepers.
    pub safekeepers: Vec<String>,
    /// gRPC endpoint of the pageserver.
    pub pageserver: String,
    /// The hot tier's memory budget and the warm tier's memory and disk.
    pub tiers: crate::read_path::TierConfig,
    /// Primary, read replica or standby.
    pub role: Role,
    /// The primary's client endpoint, then standbys' that may take over from it: asked for
    /// read versions by a replica, named to clients whose commits reach one, and watched by
    /// a standby. An entry naming this compute's own `listen_grpc` is left out.
    pub primary_endpoints: Vec<String>,
    /// Exit after this long without a client request (scale to zero); `None`: never.
    pub suspend_after: Option<std::time::Duration>,
    /// TLS for the client and admin APIs, and the tokens they require (client tokens on the
    /// client API; admin tokens or the cluster credential on the admin API).
    pub security: auth::Security,
}

impl std::fmt::Debug for ComputeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputeConfig")
            .field("listen_grpc", &self.listen_grpc)
            .field("listen_http", &self.listen_http)
            .field("database", &self.database)
            .field("safekeepers", &self.safekeepers)
            .field("pageserver", &self.pageserver)
            .field("tiers", &self.tiers)
            .field("role", &self.role)
            .field("primary_endpoints", &self.primary_endpoints)
            .field("suspend_after", &self.suspend_after)
            .field("security", &self.security)
            .finish()
    }
}

impl ComputeConfig {
    /// A primary for `database` with default tiers, no suspension, no TLS and no tokens.
    pub fn new(
        listen_grpc: SocketAddr,
        listen_http: SocketAddr,
        database: &str,
        safekeepers: Vec<String>,
        pageserver: String,
    ) -> ComputeConfig {
        ComputeConfig {
            listen_grpc,
            listen_http,
            database: database.to_string(),
            safekeepers,
            pageserver,
            tiers: crate::read_path::TierConfig::default(),
            role: Role::Primary,
            primary_endpoints: Vec::new(),
            suspend_after: None,
            security: auth::Security::default(),
        }
    }
}

/// What a compute does for its database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    /// Wins a term on the safekeepers and commits.
    #[default]
    Primary,
    /// Follows the committed WAL and serves read-only transactions at what it has applied;
    /// commits are refused with `read_only`, naming the primary.
    Replica,
    /// A replica that takes over (wins the next term) when the primary stops answering.
    Standby,
}

/// Runs a compute until `shutdown` resolves.
pub async fn run(
    config: ComputeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let started = tokio::time::Instant::now();
    validate_database_name(&config.database)?;
    if config.safekeepers.is_empty() {
        return Err(Error::invalid("a compute needs --safekeeper endpoints"));
    }
    let security = &config.security;
    auth::check_exposure(
        config.listen_grpc,
        "the client API",
        !security.require_client().is_open(),
        security.insecure,
        "--token-file (or --token)",
    )?;
    security.check_admin(config.listen_http)?;
    security.warn_if_cleartext(&[config.listen_grpc, config.listen_http]);
    let metrics = Metrics::new().map_err(|e| Error::internal(format!("metrics: {e}")))?;
    let pageserver = ferrisdb_common::with_message_limits!(PageserverClient::new(
        auth::call_channel(&config.pageserver)?
    ));
    let grpc_listener = serve::bind(config.listen_grpc, "gRPC").await?;
    let http_listener = serve::bind(config.listen_http, "HTTP").await?;
    tracing::info!(grpc = %config.listen_grpc, http = %config.listen_http, database = %config.database, "compute serving");

    let _warm_lock = config.tiers.warm.lock_disk("compute")?;
    let tiers = crate::read_path::Tiers::open(&config.tiers).await?;
    let warm = tiers.warm.clone();
    let listeners = (grpc_listener, http_listener);
    // Lives until the warm cache is closed: the committer on it reads through that cache.
    let pipeline = PipelineThread::start()?;
    let served = serve_databases(
        config,
        started,
        metrics,
        pageserver,
        (tiers, pipeline.handle()),
        listeners,
        shutdown,
    )
    .await;
    // Closed before the runtime stops, on every path: see `hybrid_cache::close`.
    if let Some(warm) = warm {
        warm.close().await;
    }
    drop(pipeline);
    served
}

/// Whether `endpoint` (`http://host:port`, `https://…`) is this compute's own client API at
/// `own`: asking itself for a read version, or watching itself as the primary, would only
/// wait for itself. Hosts are compared as written or as loopback; a name other than
/// `localhost` is not resolved, so an endpoint spelled by another name is kept (it costs a
/// timed-out ask, never a wrong answer).
fn names_this_compute(endpoint: &str, own: SocketAddr) -> bool {
    let authority = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let Some((host, port)) = authority.rsplit_once(':') else {
        return false;
    };
    if port.parse::<u16>().ok() != Some(own.port()) {
        return false;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = match host {
        "localhost" => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        other => match other.parse::<std::net::IpAddr>() {
            Ok(ip) => ip,
            Err(_) => return false,
        },
    };
    ip == own.ip() || (own.ip().is_unspecified() && ip.is_loopback())
}

/// The compute from its databases' start to the end of serving (`listeners`: gRPC, then
/// admin HTTP; primaries' commit pipelines on `pipeline`).
async fn serve_databases(
    config: ComputeConfig,
    started: tokio::time::Instant,
    metrics: Metrics,
    pageserver: PageserverClient<auth::CallChannel>,
    (tiers, pipeline): (crate::read_path::Tiers, tokio::runtime::Handle),
    (grpc_listener, http_listener): (tokio::net::TcpListener, tokio::net::TcpListener),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let security = &config.security;
    let own = grpc_listener.local_addr()?;
    let primary_endpoints: Vec<String> = config
        .primary_endpoints
        .iter()
        .filter(|e| !names_this_compute(e, own))
        .cloned()
        .collect();
    let databases = Databases::new(
        config.database.clone(),
        config.safekeepers.clone(),
        pageserver.clone(),
        metrics.clone(),
    )
    .with_pageserver_url(&config.pageserver)
    .with_tiers(tiers)
    .with_role(config.role, primary_endpoints)
    .with_pipeline_runtime(pipeline);
    databases.serve(&config.database);
    let branches = tokio::spawn(databases.clone().serve_branches());

    let activity = Arc::new(
        Activity::new(started, &metrics.registry)
            .map_err(|e| Error::internal(format!("metrics: {e}")))?,
    );
    // Scale to zero: stop when idle, as if asked to.
    let shutdown = {
        let activity = activity.clone();
        let suspend_after = config.suspend_after;
        async move {
            let idle = async {
                match suspend_after {
                    Some(after) => activity::idle(&activity, after).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown => {}
                _ = idle => tracing::info!(?suspend_after, "idle: suspending (the next connection through dev or the proxy starts the compute again)"),
            }
        }
    };
    let shutdown = serve::Shutdown::on(shutdown);
    let router = admin::admin_router(
        &admin_api::ADMIN_API,
        metrics.registry.clone(),
        admin_api::routes(),
        databases.clone(),
    );
    let http = security.spawn_admin(router, http_listener, shutdown.clone());
    let grpc = serve::grpc_server().add_service(InterceptedService::new(
        ferrisdb_common::with_message_limits!(DatabaseServer::new(ComputeService::new(
            databases.clone(),
            activity.clone(),
            shutdown.clone(),
        ))),
        security.require_client(),
    ));
    security.serve_grpc(grpc, grpc_listener, shutdown).await?;
    branches.abort();
    databases.stop();
    // No read is answered from here on: the next compute need not wait out our leases.
    databases.release_leases().await;
    let _ = http.await;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::names_this_compute;

    #[test]
    fn a_compute_recognises_its_own_endpoint_in_a_shared_list() {
        let own = "127.0.0.1:4500".parse().unwrap();
        for e in [
            "http://127.0.0.1:4500",
            "https://127.0.0.1:4500/",
            "http://localhost:4500",
            "127.0.0.1:4500",
        ] {
            assert!(names_this_compute(e, own), "{e}");
        }
        for e in [
            "http://127.0.0.1:4501",
            "http://10.0.0.1:4500",
            "http://compute-1:4500",
            "http://127.0.0.1",
            "",
        ] {
            assert!(!names_this_compute(e, own), "{e}");
        }
        let any = "0.0.0.0:4500".parse().unwrap();
        assert!(names_this_compute("http://127.0.0.1:4500", any));
        assert!(names_this_compute(
            "http://[::1]:4500",
            "[::]:4500".parse().unwrap()
        ));
        assert!(!names_this_compute("http://10.0.0.1:4500", any));
    }
}
