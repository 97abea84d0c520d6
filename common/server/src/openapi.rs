//! The OpenAPI 3.1 documents of the admin HTTP APIs, generated from the handlers (utoipa,
//! utoipa-axum): each process serves its own at `/openapi.json`, and `docs/openapi/` holds
//! the committed copies (`FERRISDB_BLESS=1 cargo test --test openapi` rewrites them).
//!
//! What every document shares is added here: the error answer (`{"error": {"code",
//! "message"}}`, the `default` response of every operation, since any route can answer
//! 400, 401, 404 or 405), and the two ways to authenticate (an admin bearer token, or the
//! cluster credential in its own header).

use utoipa::ToSchema;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder, SecurityRequirement,
};

/// The body of every error answer of an admin API.
#[derive(Debug, serde::Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The error of an [`ErrorBody`].
#[derive(Debug, serde::Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// The FerrisDB error code (docs/errors.md), stable across releases.
    #[schema(example = "invalid_argument")]
    pub code: String,
    /// A human-readable explanation (at most 512 bytes).
    pub message: String,
}

/// The answer of a branch created (compute and pageserver admin APIs).
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Branched {
    /// The new database.
    pub database: String,
    /// Its parent.
    pub parent: String,
    /// The parent's version it starts from.
    #[schema(value_type = u64)]
    pub version: ferrisdb_common::Version,
    /// Present when the compute is not serving the branch yet after its wait (10 s): why its
    /// last attempt to lead it failed (a safekeeper's `--max-databases` reached, say). The
    /// branch exists all the same, and is served once that is resolved; until then requests
    /// naming it are answered `unavailable` with this reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_served_yet: Option<String>,
}

/// One database a pageserver holds (compute and pageserver admin APIs, `GET /v1/databases`).
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct DatabaseEntry {
    /// Its name.
    pub name: String,
    /// The database it was branched from (none for a root database).
    pub parent: Option<String>,
    /// The parent's version it starts from (none for a root database).
    pub branch_version: Option<u64>,
    /// Whether the compute answering serves it (the compute's list only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served: Option<bool>,
}

/// Every database a pageserver holds, by name.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct DatabaseList {
    /// Root databases and branches, ordered by name.
    pub databases: Vec<DatabaseEntry>,
}

impl DatabaseList {
    /// The list from the pageserver's gRPC answer; `served` says, for a compute, which of
    /// them it serves.
    pub fn of(
        mut infos: Vec<ferrisdb_common::proto::DatabaseInfo>,
        served: Option<&dyn Fn(&str) -> bool>,
    ) -> DatabaseList {
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        let databases = infos
            .into_iter()
            .map(|d| {
                let root = d.parent.is_empty();
                DatabaseEntry {
                    served: served.map(|f| f(&d.name)),
                    parent: (!root).then_some(d.parent),
                    branch_version: (!root).then_some(d.branch_version),
                    name: d.name,
                }
            })
            .collect();
        DatabaseList { databases }
    }
}

/// A database's storage after a compaction or GC pass (compute and pageserver admin APIs).
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Maintained {
    /// The database.
    pub database: String,
    /// Layers its manifest names (delta, L1 partitions and images).
    pub layers: u64,
    /// Reads below this version are refused with `version_too_old`.
    pub gc_horizon: u64,
    /// Everything up to here is in object storage.
    pub remote_consistent_version: u64,
}

impl Maintained {
    /// The pageserver's answer, for `database`.
    pub fn of(database: String, m: ferrisdb_common::proto::MaintenanceResponse) -> Maintained {
        Maintained {
            database,
            layers: m.layers,
            gc_horizon: m.gc_horizon,
            remote_consistent_version: m.remote_consistent_version,
        }
    }
}

/// The security scheme of an admin token (or the cluster credential) as a bearer token.
pub const BEARER: &str = "bearer";

/// The security scheme of the cluster credential in its own header.
pub const CLUSTER_TOKEN: &str = "cluster_token";

/// The name of the shared error response.
const ERROR_RESPONSE: &str = "Error";

/// Which admin API a document describes.
#[derive(Debug, Clone, Copy)]
pub struct ApiInfo {
    /// The component (`compute`, `pageserver`, `safekeeper`): the file under `docs/openapi/`.
    pub component: &'static str,
    /// The document's title.
    pub title: &'static str,
    /// What the API is for.
    pub description: &'static str,
}

/// The document of one admin API: the common routes' paths (`base`) and the component's,
/// with the shared error response and security schemes.
pub fn document(info: &ApiInfo, base: OpenApi, component: OpenApi) -> OpenApi {
    let mut api = base;
    api.merge(component);
    api.info.title = info.title.to_string();
    api.info.description = Some(info.description.to_string());
    api.info.version = env!("CARGO_PKG_VERSION").to_string();
    api.info.license = Some(utoipa::openapi::License::new("Apache-2.0"));
    // The crate's authors are no contact for an operator.
    api.info.contact = None;
    let error = ResponseBuilder::new()
        .description(
            "An error: `{\"error\": {\"code\", \"message\"}}`, with the HTTP status its code maps to",
        )
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody"))))
                .build(),
        )
        .build();
    let mut components = api.components.take().unwrap_or_default();
    let mut schemas = Vec::new();
    ErrorBody::schemas(&mut schemas);
    let added = ComponentsBuilder::new()
        .schema_from::<ErrorBody>()
        .schemas_from_iter(schemas)
        .response(ERROR_RESPONSE, error)
        .security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An admin token (--admin-token-file) or the cluster credential",
                    ))
                    .build(),
            ),
        )
        .security_scheme(
            CLUSTER_TOKEN,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                ferrisdb_common::net::CLUSTER_TOKEN_HEADER,
                "The cluster credential (--cluster-token-file)",
            ))),
        )
        .build();
    components.schemas.extend(added.schemas);
    components.responses.extend(added.responses);
    components.security_schemes.extend(added.security_schemes);
    api.components = Some(components);
    // Either scheme will do; operations that need none (`/healthz`, `/openapi.json`) say so
    // with an empty requirement of their own.
    api.security = Some(vec![
        SecurityRequirement::new(BEARER, Vec::<String>::new()),
        SecurityRequirement::new(CLUSTER_TOKEN, Vec::<String>::new()),
    ]);
    for item in api.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for op in operations.into_iter().flatten() {
            op.responses
                .responses
                .entry("default".to_string())
                .or_insert_with(|| RefOr::Ref(Ref::from_response_name(ERROR_RESPONSE)));
        }
    }
    api
}

/// The document as served and committed: pretty JSON with a final newline.
pub fn to_json(api: &OpenApi) -> String {
    let mut json = api.to_pretty_json().unwrap_or_else(|e| {
        // Serializing plain data cannot fail; if it ever did, say so in the document.
        format!("{{\"error\": \"cannot serialize the OpenAPI document: {e}\"}}")
    });
    json.push('\n');
    json
}

/// Deserializes a `u64` admin input that its document declares as an integer of format
/// `int64` (OpenAPI's largest): a value above `i64::MAX` is refused like any malformed one,
/// so the API accepts exactly what its document describes.
pub fn int64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = <u64 as serde::Deserialize>::deserialize(d)?;
    check_int64(v).map_err(serde::de::Error::custom)
}

/// [`int64`] for an optional input.
pub fn opt_int64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = <Option<u64> as serde::Deserialize>::deserialize(d)?;
    v.map(check_int64)
        .transpose()
        .map_err(serde::de::Error::custom)
}

fn check_int64(v: u64) -> Result<u64, String> {
    if v > i64::MAX as u64 {
        return Err(format!("{v} is above the largest int64 ({})", i64::MAX));
    }
    Ok(v)
}
