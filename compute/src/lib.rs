//! The FerrisDB compute: transactions over the quorum log and the pageserver.
//!
//! On start the compute wins a term on the safekeepers ([`proposer`]) and becomes the
//! [`primary`]: it serves the client API ([`service`]), resolves conflicts ([`resolver`]),
//! commits through one pipeline ([`committer`]) and keeps every commit the pageserver has not
//! yet ingested in the [`hot_tier`]. It holds nothing that cannot be rebuilt: killing it loses
//! no acknowledged commit.

pub mod committer;
pub mod hot_tier;
pub mod metrics;
pub mod primary;
pub mod proposer;
pub mod resolver;
pub mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::{get, post};
use ferrisdb_common::clock::{Clock, SystemClock};
use ferrisdb_common::proto::database_server::DatabaseServer;
use ferrisdb_common::proto::pageserver_client::PageserverClient;
use ferrisdb_common::proto::{CheckpointRequest, PageserverStatusRequest};
use ferrisdb_common::{Error, Result, Version, admin, net, validate_database_name};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::primary::Primary;
use crate::proposer::Proposer;
use crate::service::ComputeService;

/// Pause between election attempts.
const ELECTION_RETRY: Duration = Duration::from_millis(300);

/// How a compute process is started.
#[derive(Debug, Clone)]
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
}

/// Runs a compute until `shutdown` resolves.
pub async fn run(
    config: ComputeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    validate_database_name(&config.database)?;
    if config.safekeepers.is_empty() {
        return Err(Error::invalid("a compute needs --safekeeper endpoints"));
    }
    let metrics = Metrics::new().map_err(|e| Error::internal(format!("metrics: {e}")))?;
    let pageserver = PageserverClient::new(net::channel(&config.pageserver)?);
    let grpc_listener = net::bind(config.listen_grpc, "gRPC").await?;
    let http_listener = net::bind(config.listen_http, "HTTP").await?;
    tracing::info!(grpc = %config.listen_grpc, http = %config.listen_http, database = %config.database, "compute serving");

    let (primary_tx, primary_rx) = watch::channel(None);
    let election = tokio::spawn(become_primary(
        config.clone(),
        pageserver.clone(),
        metrics.clone(),
        primary_tx,
    ));

    let shutdown = net::Shutdown::on(shutdown);
    let routes = axum::Router::new()
        .route("/v1/status", get(status))
        .route("/v1/checkpoint", post(checkpoint))
        .route("/v1/version_at", get(version_at))
        .route("/v1/history", get(history))
        .with_state(AdminState {
            database: config.database.clone(),
            primary: primary_rx.clone(),
        });
    let router = admin::base_router(metrics.registry.clone()).merge(routes);
    let http = tokio::spawn(net::serve_http(router, http_listener, shutdown.clone()));
    let grpc = tonic::transport::Server::builder().add_service(DatabaseServer::new(
        ComputeService::new(config.database.clone(), primary_rx),
    ));
    net::serve_grpc(grpc, grpc_listener, shutdown).await?;
    election.abort();
    let _ = http.await;
    Ok(())
}

/// Retries elections until one is won and the log recovered, then publishes the primary.
async fn become_primary(
    config: ComputeConfig,
    pageserver: PageserverClient<tonic::transport::Channel>,
    metrics: Metrics,
    primary: watch::Sender<Option<Arc<Primary>>>,
) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let result = async {
            // What object storage already holds bounds the log from below (see Proposer::elect).
            let req = PageserverStatusRequest {
                database: config.database.clone(),
            };
            let durable = pageserver
                .clone()
                .get_status(req)
                .await?
                .into_inner()
                .remote_consistent_version;
            let proposer = Proposer::elect(&config.database, &config.safekeepers, durable).await?;
            Primary::start(
                config.database.clone(),
                proposer,
                pageserver.clone(),
                clock.clone(),
                metrics.clone(),
            )
            .await
        }
        .await;
        match result {
            Ok(p) => {
                primary.send_replace(Some(p));
                return;
            }
            Err(e) => {
                if attempt % 10 == 1 {
                    tracing::warn!(attempt, error = %e, "not primary yet; retrying");
                }
                tokio::time::sleep(ELECTION_RETRY).await;
            }
        }
    }
}

#[derive(Clone)]
struct AdminState {
    database: String,
    primary: watch::Receiver<Option<Arc<Primary>>>,
}

async fn status(State(s): State<AdminState>) -> Json<serde_json::Value> {
    let primary = s.primary.borrow().clone();
    Json(serde_json::json!({
        "kind": "compute",
        "database": s.database,
        "primary": primary.map(|p| p.status()),
    }))
}

fn primary_of(s: &AdminState) -> Result<Arc<Primary>, Error> {
    s.primary
        .borrow()
        .clone()
        .ok_or_else(|| Error::unavailable("the compute has not won a term yet"))
}

#[derive(serde::Deserialize)]
struct VersionAtParams {
    timestamp_micros: u64,
}

/// The version a timestamp maps to (the latest committed at or before it).
async fn version_at(
    State(s): State<AdminState>,
    axum::extract::Query(p): axum::extract::Query<VersionAtParams>,
) -> Result<Json<serde_json::Value>, Error> {
    let version = primary_of(&s)?.version_at(p.timestamp_micros).await?;
    Ok(Json(
        serde_json::json!({"timestamp_micros": p.timestamp_micros, "version": version}),
    ))
}

#[derive(serde::Deserialize)]
struct HistoryParams {
    key: String,
    #[serde(default)]
    from: u64,
    #[serde(default)]
    to: u64,
}

/// Every version of a (UTF-8) key with its commit time.
async fn history(
    State(s): State<AdminState>,
    axum::extract::Query(p): axum::extract::Query<HistoryParams>,
) -> Result<Json<serde_json::Value>, Error> {
    let key = bytes::Bytes::from(p.key.clone());
    let entries = primary_of(&s)?
        .history(key, Version(p.from), Version(p.to))
        .await?;
    let versions: Vec<_> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "version": e.version,
                "commit_time_micros": e.commit_time_micros,
                "value": e.value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()),
            })
        })
        .collect();
    Ok(Json(
        serde_json::json!({"key": p.key, "versions": versions}),
    ))
}

/// Uploads everything committed so far to object storage: waits for the pageserver to ingest
/// the latest commit, then has it checkpoint.
async fn checkpoint(State(s): State<AdminState>) -> Result<Json<serde_json::Value>, Error> {
    let primary = s
        .primary
        .borrow()
        .clone()
        .ok_or_else(|| Error::unavailable("the compute has not won a term yet"))?;
    let version = primary.read_version()?;
    let req = CheckpointRequest {
        database: primary.database().to_string(),
        wait_for_version: version.0,
    };
    let status = primary.pageserver().checkpoint(req).await?.into_inner();
    Ok(Json(serde_json::json!({
        "database": s.database,
        "checkpointed_version": version,
        "remote_consistent_version": status.remote_consistent_version,
    })))
}
