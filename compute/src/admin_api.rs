//! The compute's admin HTTP API (besides the common `/healthz`, `/metrics`,
//! `/openapi.json`): status, checkpoints, compaction and GC, time travel and branches. Each handler carries its
//! OpenAPI description; `docs/openapi/compute.json` is the document they generate.

use axum::Json;
use axum::extract::{Query, State};
use ferrisdb_common::proto::{CheckpointRequest, MaintenanceRequest};
use ferrisdb_common::{Error, Version};
use ferrisdb_server_common::admin::ApiError;
use ferrisdb_server_common::openapi::{
    ApiInfo, Branched, DatabaseList, Maintained, int64, opt_int64,
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::databases::Databases;
use crate::node::Node;

/// What the compute's OpenAPI document is called.
pub const ADMIN_API: ApiInfo = ApiInfo {
    component: "compute",
    title: "FerrisDB compute admin API",
    description: "Status, checkpoints, time travel and branches of a FerrisDB compute (the \
                  primary of one database and the branches it serves). Every route but \
                  /healthz, /readyz, /v1/identity and /openapi.json requires an admin token \
                  or the cluster credential (docs/security.md).",
};

/// The compute's own admin routes.
pub fn routes() -> OpenApiRouter<Databases> {
    OpenApiRouter::new()
        .routes(routes!(readyz))
        .routes(routes!(status))
        .routes(routes!(list_databases))
        .routes(routes!(checkpoint))
        .routes(routes!(version_at))
        .routes(routes!(history))
        .routes(routes!(branch))
        .routes(routes!(compact))
        .routes(routes!(collect_garbage))
}

/// The compute's admin API document, as `/openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ferrisdb_server_common::admin::document(&ADMIN_API, routes())
}

/// Which database an admin call is about (default: the one the compute was started for).
/// Anything else in the query is refused: a misspelt `?databse=b1` must not act on the
/// compute's own database as if nothing had been named (an outside audit's finding).
#[derive(serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DatabaseParam {
    /// The database (default: the compute's own).
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    database: Option<String>,
}

impl DatabaseParam {
    async fn node(&self, dbs: &Databases) -> Result<Node, Error> {
        node_of(dbs, self.database.as_deref()).await
    }
}

/// What the compute is for `database` (default: its own).
async fn node_of(dbs: &Databases, database: Option<&str>) -> Result<Node, Error> {
    dbs.find(database.unwrap_or(&dbs.root)).await
}

/// What `/readyz` asks for.
#[derive(serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ReadyParams {
    /// Ready to serve reads at the latest version (a primary, or a replica whose primary
    /// answers, with the pageserver answering too), rather than to take commits (the primary
    /// only).
    #[serde(default)]
    reads: bool,
}

/// Whether this compute is ready, and as what.
#[derive(serde::Serialize, ToSchema)]
struct Readiness {
    /// Whether it is ready for what was asked.
    ready: bool,
    /// `primary`, `replica`, `fenced` (a former primary that lost its term) or `starting`.
    role: &'static str,
    /// Why not, as an error code (`unavailable`, …), when a check failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
}

/// How long `/readyz` waits for its check (a load balancer's probe times out soon after).
const READY_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether this compute is ready to take commits for its database — it is the primary and
/// has just confirmed its term, as a read version does — or, with `reads=true`, to answer
/// reads at the latest version. 200 when ready, 503 when not. For load balancers: `/healthz`
/// only says the process is up, so a balancer probing it sends clients to standbys and
/// fenced computes, which refuse their commits.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    security(()),
    params(ReadyParams),
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready (starting, a replica, or cut off)", body = Readiness)
    )
)]
async fn readyz(
    State(dbs): State<Databases>,
    Query(params): Query<ReadyParams>,
) -> (axum::http::StatusCode, Json<Readiness>) {
    let not = |role, code: Option<&'static str>| {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                ready: false,
                role,
                code,
            }),
        )
    };
    let node = match dbs.node(&dbs.root) {
        Ok(node) => node,
        Err(e) => return not("starting", Some(e.kind().code())),
    };
    let role = match &node {
        Node::Primary(_) => "primary",
        Node::Replica(r) if r.is_fenced() => "fenced",
        Node::Replica(_) => "replica",
    };
    if role != "primary" && !params.reads {
        return not(role, None);
    }
    // The same proof a read version needs: a primary's term confirmed by a safekeeper
    // majority, a replica's primary answering. Reads also need the pageserver (all but the
    // newest and cached values come from it): without it, reads hang until they time out.
    let check = async {
        node.read_version().await?;
        if params.reads {
            node.view().pageserver_answers().await?;
        }
        Ok::<_, ferrisdb_common::Error>(())
    };
    match tokio::time::timeout(READY_CHECK_TIMEOUT, check).await {
        Ok(Ok(_)) => (
            axum::http::StatusCode::OK,
            Json(Readiness {
                ready: true,
                role,
                code: None,
            }),
        ),
        Ok(Err(e)) => not(role, Some(e.kind().code())),
        Err(_) => not(role, Some(ferrisdb_common::ErrorKind::Unavailable.code())),
    }
}

/// The compute's state: its database, whether it is primary, and each database served.
#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "status",
    responses((status = 200, description = "The compute's state", body = Object))
)]
async fn status(State(dbs): State<Databases>) -> Json<serde_json::Value> {
    let all = dbs.all();
    let root = all
        .iter()
        .find(|(name, _)| *name == dbs.root)
        .and_then(|(_, p)| p.as_ref().map(|p| p.status()));
    let databases: serde_json::Map<String, serde_json::Value> = all
        .iter()
        .map(|(name, p)| {
            (
                name.clone(),
                serde_json::json!(p.as_ref().map(|p| p.status())),
            )
        })
        .collect();
    Json(serde_json::json!({
        "kind": "compute",
        "database": dbs.root,
        "primary": root,
        "databases": databases,
    }))
}

#[derive(serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct VersionAtParams {
    /// The database (default: the compute's own).
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    database: Option<String>,
    /// A wall-clock time, Unix microseconds.
    #[serde(deserialize_with = "int64")]
    timestamp_micros: u64,
}

/// The version a timestamp maps to.
#[derive(serde::Serialize, ToSchema)]
struct VersionAt {
    /// The time asked about.
    timestamp_micros: u64,
    /// The latest version committed at or before it.
    #[schema(value_type = u64)]
    version: Version,
}

/// The version a timestamp maps to (the latest committed at or before it).
#[utoipa::path(
    get,
    path = "/v1/version_at",
    tag = "time travel",
    params(VersionAtParams),
    responses((status = 200, description = "The version", body = VersionAt))
)]
async fn version_at(
    State(dbs): State<Databases>,
    Query(p): Query<VersionAtParams>,
) -> Result<Json<VersionAt>, ApiError> {
    let version = node_of(&dbs, p.database.as_deref())
        .await?
        .version_at(p.timestamp_micros)
        .await?;
    Ok(Json(VersionAt {
        timestamp_micros: p.timestamp_micros,
        version,
    }))
}

#[derive(serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    /// The database (default: the compute's own).
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    database: Option<String>,
    /// The key (UTF-8).
    key: String,
    /// The first version of interest (default, or 0: the oldest version still retained).
    #[serde(default, deserialize_with = "int64")]
    from: u64,
    /// The last version of interest (default, or 0: the latest).
    #[serde(default, deserialize_with = "int64")]
    to: u64,
}

/// One version of a key.
#[derive(serde::Serialize, ToSchema)]
struct HistoryEntry {
    /// The version that wrote it.
    #[schema(value_type = u64)]
    version: Version,
    /// When that version committed, Unix microseconds.
    commit_time_micros: u64,
    /// The value written (lossy UTF-8); null when the key was cleared.
    value: Option<String>,
}

/// Every version of a key.
#[derive(serde::Serialize, ToSchema)]
struct History {
    /// The key asked about.
    key: String,
    /// Its versions, oldest first.
    versions: Vec<HistoryEntry>,
}

/// Every version of a (UTF-8) key with its commit time.
#[utoipa::path(
    get,
    path = "/v1/history",
    tag = "time travel",
    params(HistoryParams),
    responses((status = 200, description = "The key's versions", body = History))
)]
async fn history(
    State(dbs): State<Databases>,
    Query(p): Query<HistoryParams>,
) -> Result<Json<History>, ApiError> {
    let key = bytes::Bytes::from(p.key.clone());
    let entries = node_of(&dbs, p.database.as_deref())
        .await?
        .view()
        .whole_history(key, Version(p.from), Version(p.to))
        .await?;
    let versions = entries
        .iter()
        .map(|e| HistoryEntry {
            version: Version(e.version),
            commit_time_micros: e.commit_time_micros,
            value: e
                .value
                .as_ref()
                .map(|v| String::from_utf8_lossy(v).into_owned()),
        })
        .collect();
    Ok(Json(History {
        key: p.key,
        versions,
    }))
}

/// Every database the pageserver holds (root databases and branches, with each branch's
/// parent and branch point), and whether this compute serves it: the root it was started
/// for and that root's branches.
#[utoipa::path(
    get,
    path = "/v1/databases",
    tag = "databases",
    responses((status = 200, description = "The databases", body = DatabaseList))
)]
async fn list_databases(State(dbs): State<Databases>) -> Result<Json<DatabaseList>, ApiError> {
    let infos = dbs.list_all().await?;
    let served = |name: &str| dbs.serves(name);
    Ok(Json(DatabaseList::of(infos, Some(&served))))
}

/// A checkpoint's outcome.
#[derive(serde::Serialize, ToSchema)]
struct Checkpointed {
    /// The database.
    database: String,
    /// The latest commit when the checkpoint was asked for.
    #[schema(value_type = u64)]
    checkpointed_version: Version,
    /// Everything up to here is in object storage.
    remote_consistent_version: u64,
}

/// Uploads everything committed so far to object storage: waits for the pageserver to ingest
/// the latest commit, then has it checkpoint.
#[utoipa::path(
    post,
    path = "/v1/checkpoint",
    tag = "storage",
    params(DatabaseParam),
    responses((status = 200, description = "Checkpointed", body = Checkpointed))
)]
async fn checkpoint(
    State(dbs): State<Databases>,
    Query(db): Query<DatabaseParam>,
    _body: ferrisdb_server_common::admin::NoBody,
) -> Result<Json<Checkpointed>, ApiError> {
    let node = db.node(&dbs).await?;
    // The latest commit, not a read version handed out: no heartbeat follows.
    let version = node.view().latest();
    let view = node.view();
    let req = CheckpointRequest {
        database: view.database().to_string(),
        wait_for_version: version.0,
    };
    let status = view.pageserver().checkpoint(req).await?.into_inner();
    Ok(Json(Checkpointed {
        database: view.database().to_string(),
        checkpointed_version: version,
        remote_consistent_version: status.remote_consistent_version,
    }))
}

/// The body of a branch request.
#[derive(serde::Deserialize, ToSchema)]
// A misspelt field (`at_version`) must not branch at the latest commit as if it were absent.
#[serde(deny_unknown_fields)]
struct BranchParams {
    /// The new database.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    name: String,
    /// The database to branch from (default: the compute's own).
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    parent: Option<String>,
    /// Branch at this version (default: the latest commit).
    #[serde(default, deserialize_with = "opt_int64")]
    version: Option<u64>,
    /// Branch at the version this time maps to, Unix microseconds.
    #[serde(default, deserialize_with = "opt_int64")]
    timestamp_micros: Option<u64>,
}

/// Creates a database as a branch of another at a version or timestamp (neither: the latest
/// commit), by metadata only, and starts serving it.
#[utoipa::path(
    post,
    path = "/v1/branch",
    tag = "branches",
    request_body = BranchParams,
    responses((status = 200, description = "The branch exists and is served, or (with `not_served_yet`) exists and is still starting after 10 s, and why", body = Branched))
)]
async fn branch(
    State(dbs): State<Databases>,
    Json(p): Json<BranchParams>,
) -> Result<Json<Branched>, ApiError> {
    let parent = p.parent.clone().unwrap_or_else(|| dbs.root.clone());
    let (at, starting) = dbs
        .branch(&p.name, &parent, p.version.map(Version), p.timestamp_micros)
        .await?;
    Ok(Json(Branched {
        database: p.name,
        parent,
        version: at,
        not_served_yet: starting.map(|e| e.to_string()),
    }))
}

/// Which maintenance pass an admin call asks the pageserver for.
#[derive(Debug, Clone, Copy)]
enum Pass {
    Compact,
    CollectGarbage,
}

/// Has the pageserver run `pass` on the database now; its storage afterwards.
async fn maintain(
    dbs: &Databases,
    db: DatabaseParam,
    pass: Pass,
) -> Result<Json<Maintained>, ApiError> {
    let node = db.node(dbs).await?;
    let view = node.view();
    let database = view.database().to_string();
    let req = MaintenanceRequest {
        database: database.clone(),
    };
    let mut pages = view.pageserver();
    let answer = match pass {
        Pass::Compact => pages.compact(req).await,
        Pass::CollectGarbage => pages.collect_garbage(req).await,
    };
    Ok(Json(Maintained::of(database, answer?.into_inner())))
}

/// Has the pageserver merge the database's L0 delta layers into L1 layers now, if there are
/// at least two (checkpoints do once there are `--compact-after-deltas` of them).
#[utoipa::path(
    post,
    path = "/v1/compact",
    tag = "storage",
    params(DatabaseParam),
    responses((status = 200, description = "Compacted (or nothing to merge)", body = Maintained))
)]
async fn compact(
    State(dbs): State<Databases>,
    Query(db): Query<DatabaseParam>,
    _body: ferrisdb_server_common::admin::NoBody,
) -> Result<Json<Maintained>, ApiError> {
    maintain(&dbs, db, Pass::Compact).await
}

/// Has the pageserver raise the database's retention horizon as far as its retention window
/// (and its branch points) allow and delete what only reads below it needed, now
/// (checkpoints do it after each upload).
#[utoipa::path(
    post,
    path = "/v1/gc",
    tag = "storage",
    params(DatabaseParam),
    responses((status = 200, description = "Collected (or nothing to collect)", body = Maintained))
)]
async fn collect_garbage(
    State(dbs): State<Databases>,
    Query(db): Query<DatabaseParam>,
    _body: ferrisdb_server_common::admin::NoBody,
) -> Result<Json<Maintained>, ApiError> {
    maintain(&dbs, db, Pass::CollectGarbage).await
}
