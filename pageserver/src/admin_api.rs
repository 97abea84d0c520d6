//! The pageserver's admin HTTP API (besides the common `/healthz`, `/metrics`,
//! `/openapi.json`): status, checkpoints and branches. Each handler carries its OpenAPI
//! description; `docs/openapi/pageserver.json` is the document they generate.

use axum::Json;
use axum::extract::{Path, Query, State};
use ferrisdb_common::Version;
use ferrisdb_server_common::admin::ApiError;
use ferrisdb_server_common::openapi::{
    ApiInfo, Branched, DatabaseList, Maintained, int64, opt_int64,
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::databases::Databases;

/// What the pageserver's OpenAPI document is called.
pub const ADMIN_API: ApiInfo = ApiInfo {
    component: "pageserver",
    title: "FerrisDB pageserver admin API",
    description: "Status, checkpoints and branches of a FerrisDB pageserver, which turns the \
                  committed WAL into layers in object storage. Every route but /healthz, \
                  /v1/identity and /openapi.json requires an admin token or the cluster credential \
                  (docs/security.md).",
};

/// The pageserver's own admin routes.
pub fn routes() -> OpenApiRouter<Databases> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(list_databases))
        .routes(routes!(checkpoint))
        .routes(routes!(branch))
        .routes(routes!(compact))
        .routes(routes!(collect_garbage))
}

/// The pageserver's admin API document, as `/openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ferrisdb_server_common::admin::document(&ADMIN_API, routes())
}

/// Each database's ingest and upload positions, manifest generation and cache counters.
#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "status",
    responses((status = 200, description = "The pageserver's state", body = Object))
)]
async fn status(State(dbs): State<Databases>) -> Json<serde_json::Value> {
    let mut databases = serde_json::Map::new();
    for (name, t) in dbs.timelines.all() {
        let ancestor = t
            .ancestor()
            .map(|(parent, at)| serde_json::json!({"parent": parent, "version": at}));
        databases.insert(
            name.clone(),
            serde_json::json!({
                "ingested_version": t.ingested_version(),
                "remote_consistent_version": t.remote_consistent_version(),
                // The oldest version still readable (the retention window's start).
                "gc_horizon": t.readable_from(),
                "manifest_generation": t.manifest_generation().await,
                "open_layer_bytes": t.open_layer_bytes(),
                "block_cache": {"hits": t.cache_stats().0, "misses": t.cache_stats().1},
                "ancestor": ancestor,
            }),
        );
    }
    // Databases whose objects are damaged: not served, each with the error its requests get.
    let broken: serde_json::Map<String, serde_json::Value> = dbs
        .timelines
        .broken()
        .into_iter()
        .map(|(name, e)| {
            (
                name,
                serde_json::json!({"code": e.kind().code(), "message": e.message()}),
            )
        })
        .collect();
    Json(serde_json::json!({"kind": "pageserver", "databases": databases, "broken": broken}))
}

/// Every database this pageserver holds: root databases and branches, with each branch's
/// parent and branch point.
#[utoipa::path(
    get,
    path = "/v1/databases",
    tag = "databases",
    responses((status = 200, description = "The databases", body = DatabaseList))
)]
async fn list_databases(State(dbs): State<Databases>) -> Json<DatabaseList> {
    Json(DatabaseList::of(dbs.infos(), None))
}

#[derive(serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct CheckpointParams {
    /// Wait until this version is ingested first (default 0: no wait).
    #[serde(default, deserialize_with = "int64")]
    wait_for_version: u64,
}

/// A checkpoint's outcome.
#[derive(serde::Serialize, ToSchema)]
struct Checkpointed {
    /// The database.
    database: String,
    /// Everything up to here is in object storage.
    #[schema(value_type = u64)]
    remote_consistent_version: Version,
}

/// Uploads what the database has ingested (after `wait_for_version`) to object storage.
#[utoipa::path(
    post,
    path = "/v1/databases/{database}/checkpoint",
    tag = "storage",
    params(
        ("database" = String, Path, description = "The database", pattern = "^[A-Za-z0-9_-]{1,64}$"),
        CheckpointParams,
    ),
    responses((status = 200, description = "Checkpointed", body = Checkpointed))
)]
async fn checkpoint(
    State(dbs): State<Databases>,
    Path(database): Path<String>,
    Query(params): Query<CheckpointParams>,
    _body: ferrisdb_server_common::admin::NoBody,
) -> Result<Json<Checkpointed>, ApiError> {
    let t = dbs.timelines.get(&database)?;
    let v = t.checkpoint(Version(params.wait_for_version)).await?;
    Ok(Json(Checkpointed {
        database,
        remote_consistent_version: v,
    }))
}

/// The body of a branch request: the parent, and where in it (neither: its latest version).
#[derive(serde::Deserialize, ToSchema)]
// A misspelt field (`at_version`) must not branch at the latest commit as if it were absent.
#[serde(deny_unknown_fields)]
struct BranchParams {
    /// The database to branch from.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    parent: String,
    /// Branch at this version.
    #[serde(default, deserialize_with = "opt_int64")]
    version: Option<u64>,
    /// Branch at the version this time maps to, Unix microseconds.
    #[serde(default, deserialize_with = "opt_int64")]
    timestamp_micros: Option<u64>,
}

/// Creates database `{database}` as a branch of `parent`, by metadata only.
#[utoipa::path(
    post,
    path = "/v1/databases/{database}/branch",
    tag = "branches",
    params(("database" = String, Path, description = "The new database", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    request_body = BranchParams,
    responses((status = 200, description = "The branch exists", body = Branched))
)]
async fn branch(
    State(dbs): State<Databases>,
    Path(database): Path<String>,
    Json(params): Json<BranchParams>,
) -> Result<Json<Branched>, ApiError> {
    let at = dbs
        .branch(
            &database,
            &params.parent,
            params.version.map(Version),
            params.timestamp_micros,
        )
        .await?;
    Ok(Json(Branched {
        database,
        parent: params.parent,
        version: at,
        not_served_yet: None,
    }))
}

/// A route that takes no query parameters: any given is refused, not ignored.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

/// Runs a maintenance pass on `database` now; its storage afterwards.
async fn maintain(
    dbs: &Databases,
    database: String,
    collect_garbage: bool,
) -> Result<Json<Maintained>, ApiError> {
    let t = dbs.timelines.get(&database)?;
    if collect_garbage {
        t.collect_garbage().await?;
    } else {
        t.compact().await?;
    }
    Ok(Json(Maintained::of(
        database,
        crate::service::maintenance_of(&t),
    )))
}

/// Merges the database's L0 delta layers into L1 layers now, if there are at least two
/// (checkpoints do once there are `--compact-after-deltas` of them).
#[utoipa::path(
    post,
    path = "/v1/databases/{database}/compact",
    tag = "storage",
    params(("database" = String, Path, description = "The database", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses((status = 200, description = "Compacted (or nothing to merge)", body = Maintained))
)]
async fn compact(
    State(dbs): State<Databases>,
    Path(database): Path<String>,
    _query: Query<NoParams>,
    _body: ferrisdb_server_common::admin::NoBody,
) -> Result<Json<Maintained>, ApiError> {
    maintain(&dbs, database, false).await
}

/// Raises the database's retention horizon as far as its retention window (and its branch
/// points) allow, and deletes what only reads below it needed, now (checkpoints do it after
/// each upload).
#[utoipa::path(
    post,
    path = "/v1/databases/{database}/gc",
    tag = "storage",
    params(("database" = String, Path, description = "The database", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses((status = 200, description = "Collected (or nothing to collect)", body = Maintained))
)]
async fn collect_garbage(
    State(dbs): State<Databases>,
    Path(database): Path<String>,
    _query: Query<NoParams>,
    _body: ferrisdb_server_common::admin::NoBody,
) -> Result<Json<Maintained>, ApiError> {
    maintain(&dbs, database, true).await
}
