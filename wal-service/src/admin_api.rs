//! The safekeeper's admin HTTP API (besides the common `/healthz`, `/metrics`,
//! `/openapi.json`): its status. The handler carries its OpenAPI description;
//! `docs/openapi/safekeeper.json` is the document generated from it.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ferrisdb_server_common::openapi::ApiInfo;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::service::SafekeeperState;

/// What the safekeeper's OpenAPI document is called.
pub const ADMIN_API: ApiInfo = ApiInfo {
    component: "safekeeper",
    title: "FerrisDB safekeeper admin API",
    description: "The state of a FerrisDB safekeeper, an acceptor of the WAL quorum. Every \
                  route but /healthz, /v1/identity and /openapi.json requires an admin token or the cluster \
                  credential (docs/security.md).",
};

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// The safekeeper.
    pub state: Arc<SafekeeperState>,
    /// Its name (`--name`).
    pub name: String,
}

/// The safekeeper's own admin routes.
pub fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(status))
}

/// The safekeeper's admin API document, as `/openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ferrisdb_server_common::admin::document(&ADMIN_API, routes())
}

/// Each database's log positions and term, the peers' lag, and databases found corrupt.
#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "status",
    responses((status = 200, description = "The safekeeper's state", body = Object))
)]
async fn status(State(admin): State<AdminState>) -> Json<serde_json::Value> {
    let (databases, corrupt) = admin.state.all_status().await;
    let lag = admin.state.peer_lag(&databases).await;
    Json(serde_json::json!({
        "kind": "safekeeper",
        "name": admin.name,
        "databases": databases,
        "peer_lag": lag,
        "corrupt_databases": corrupt,
    }))
}
