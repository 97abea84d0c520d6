//! The HTTP admin surface every process serves: `/healthz`, `/metrics`, `/openapi.json`,
//! `/v1/status`, plus component routes. Every route is declared with its OpenAPI description
//! (utoipa-axum), so the document a process serves is generated from its handlers
//! ([`crate::openapi`]).

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus::{Encoder, Registry, TextEncoder};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::openapi::ApiInfo;
use ferrisdb_common::{Error, ErrorKind};

/// What the common routes need: the metrics to render and the document to serve.
#[derive(Clone)]
pub struct BaseState {
    registry: Registry,
    /// Set once the router, and so the document, is complete.
    openapi: Arc<OnceLock<String>>,
}

/// `/healthz`, `/metrics` and `/openapi.json`, with their descriptions.
fn base_routes() -> OpenApiRouter<BaseState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(identity))
}

/// `GET /v1/identity`'s query.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct IdentityParams {
    /// 32 to 128 hex digits, fresh for each ask.
    challenge: String,
}

/// Proofs that this server holds credentials, one per cluster credential it accepts.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct IdentityProofs {
    /// Hex HMAC-SHA256, keyed by a credential's SHA-256 digest, of a domain label, the port
    /// this server listens on and the challenge (docs/security.md, "Discovered credentials").
    proofs: Vec<String>,
}

/// Proves which cluster credentials this server accepts without revealing them, so a client
/// that found one on disk sends it only to a server that holds it (no credential needed).
/// Admin tokens are never proved: they may be short, and proofs on chosen challenges would
/// let anyone test guesses offline.
#[utoipa::path(
    get,
    path = "/v1/identity",
    tag = "health",
    security(()),
    params(IdentityParams),
    responses(
        (status = 200, description = "One proof per accepted credential (none for an open server)", body = IdentityProofs),
        (status = 400, description = "The challenge is not 32 to 128 hex digits", body = crate::openapi::ErrorBody)
    )
)]
async fn identity(
    axum::extract::Query(p): axum::extract::Query<IdentityParams>,
    known: Option<axum::Extension<crate::identity::Identity>>,
) -> Result<axum::Json<IdentityProofs>, ApiError> {
    crate::identity::check_challenge(&p.challenge)?;
    let proofs = known.map_or_else(Vec::new, |k| k.proofs(&p.challenge));
    Ok(axum::Json(IdentityProofs { proofs }))
}

/// Whether the process is up (for load balancers; no credential needed).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    security(()),
    responses((status = 200, description = "The process is up", body = String, content_type = "text/plain"))
)]
async fn healthz() -> &'static str {
    "ok\n"
}

/// The process's metrics in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    responses((status = 200, description = "Prometheus text exposition (version 0.0.4)", body = String, content_type = "text/plain"))
)]
async fn metrics(State(state): State<BaseState>) -> Response {
    render_metrics(&state.registry)
}

/// This API's OpenAPI 3.1 document (no credential needed: it is the same for every
/// deployment and says nothing about the data).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "openapi",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this admin API", body = Object, content_type = "application/json"))
)]
async fn openapi_json(State(state): State<BaseState>) -> Response {
    match state.openapi.get() {
        Some(json) => ([(header::CONTENT_TYPE, "application/json")], json.clone()).into_response(),
        None => ApiError(Error::unavailable("the document is not ready yet")).into_response(),
    }
}

/// The OpenAPI document of a component's admin API whose own routes are `routes`, as the
/// process serves it; no process (or state) needed.
pub fn document<S: Clone + Send + Sync + 'static>(
    info: &ApiInfo,
    routes: OpenApiRouter<S>,
) -> utoipa::openapi::OpenApi {
    crate::openapi::document(info, base_routes().into_openapi(), routes.into_openapi())
}

/// A component's admin router: the common routes (`/healthz`, `/metrics` from `registry`,
/// `/openapi.json`) and the component's `routes` with their `state`.
pub fn admin_router<S: Clone + Send + Sync + 'static>(
    info: &ApiInfo,
    registry: Registry,
    routes: OpenApiRouter<S>,
    state: S,
) -> Router {
    let slot = Arc::new(OnceLock::new());
    let (base, base_api) = base_routes()
        .with_state(BaseState {
            registry,
            openapi: slot.clone(),
        })
        .split_for_parts();
    let (own, own_api) = routes.with_state(state).split_for_parts();
    let api = crate::openapi::document(info, base_api, own_api);
    let _ = slot.set(crate::openapi::to_json(&api));
    base.merge(own)
}

/// `/healthz` and `/metrics` (Prometheus text from `registry`) alone, for tests of the
/// common middleware.
pub fn base_router(registry: Registry) -> Router {
    let (router, _) = base_routes()
        .with_state(BaseState {
            registry,
            openapi: Arc::default(),
        })
        .split_for_parts();
    router
}

fn render_metrics(registry: &Registry) -> Response {
    let mut buf = Vec::new();
    match TextEncoder::new().encode(&registry.gather(), &mut buf) {
        Ok(()) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], buf).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// How much of a non-JSON error body (axum's rejection text) is read to become the message.
const MAX_REJECTION_BODY: usize = 4096;

/// The longest message an admin error answer carries, in bytes.
const MAX_ADMIN_MESSAGE_BYTES: usize = 512;

/// Makes every error answer of `router` JSON with a FerrisDB code, whoever produced it:
/// unknown routes (404), wrong methods (405), and axum's extractor rejections (a malformed
/// JSON body, query string or path: 400/415/422; a body over the limit: 413), which are
/// `text/plain` otherwise. The status stays what it was; the code follows from it.
pub fn json_errors(router: Router) -> Router {
    router
        .fallback(|req: axum::extract::Request| async move {
            let path = ferrisdb_common::error::echo(req.uri().path());
            error_response(
                StatusCode::NOT_FOUND,
                ErrorKind::InvalidArgument,
                &format!("no admin route {path}"),
            )
        })
        .layer(axum::middleware::from_fn(json_error_bodies))
}

/// The kind an HTTP error status stands for when no handler chose one.
fn kind_of_status(status: StatusCode) -> ErrorKind {
    match status {
        StatusCode::UNAUTHORIZED => ErrorKind::Unauthenticated,
        StatusCode::SERVICE_UNAVAILABLE => ErrorKind::Unavailable,
        s if s.is_server_error() => ErrorKind::Internal,
        _ => ErrorKind::InvalidArgument,
    }
}

/// An error answer: `{"error": {"code", "message"}}` with `status`.
fn error_response(status: StatusCode, kind: ErrorKind, message: &str) -> Response {
    let message = ferrisdb_common::error::truncate_message(message, MAX_ADMIN_MESSAGE_BYTES);
    let body = serde_json::json!({"error": {"code": kind.code(), "message": message}});
    (status, axum::Json(body)).into_response()
}

/// Rewrites an error answer that is not JSON into a FerrisDB error, keeping its status and
/// headers (`Allow` on a 405) and using its text, cut short, as the message.
///
/// It also refuses a query string whose parameters are not UTF-8 once percent-decoded: the
/// query extractor would replace the bad bytes with U+FFFD and carry on, so a history of
/// key `%FF` would silently be the history of another key.
async fn json_error_bodies(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if let Some(query) = req.uri().query()
        && !query_is_utf8(query)
    {
        return error_response(
            StatusCode::BAD_REQUEST,
            ErrorKind::InvalidArgument,
            "the query string is not UTF-8 once percent-decoded",
        );
    }
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_REJECTION_BODY)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let fresh = error_response(status, kind_of_status(status), &message);
    let (fresh_parts, fresh_body) = fresh.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    drop(fresh_parts);
    Response::from_parts(parts, fresh_body)
}

/// Whether every part of a query string is UTF-8 after percent-decoding (`+` is a space;
/// a `%` not followed by two hex digits stands for itself, as form decoding has it).
fn query_is_utf8(query: &str) -> bool {
    let raw = query.as_bytes();
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match raw[i] {
            b'%' => {
                let digit = |at: usize| raw.get(at).and_then(|b| hex(*b));
                match (digit(i + 1), digit(i + 2)) {
                    (Some(h), Some(l)) => {
                        decoded.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => decoded.push(b'%'),
                }
            }
            b'+' => decoded.push(b' '),
            b => decoded.push(b),
        }
        i += 1;
    }
    std::str::from_utf8(&decoded).is_ok()
}

/// The extractor of a route that takes no request body: a non-blank one is refused with
/// `invalid_argument`. A caller who sent `{"database": "b1"}` to a maintenance route meant
/// that database, and acting on the default one instead would be the wrong answer (an
/// outside audit's finding); the database goes in the query (`?database=b1`) or the path.
#[derive(Debug, Clone, Copy)]
pub struct NoBody;

impl<S: Send + Sync> axum::extract::FromRequest<S> for NoBody {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<NoBody, ApiError> {
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError(Error::invalid(format!("request body: {e}"))))?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(NoBody);
        }
        Err(ApiError(Error::invalid(
            "this route takes no request body: name the database in the query \
             (?database=NAME) or the path",
        )))
    }
}

/// A FerrisDB error as an admin API answer: the status its kind stands for and the JSON body
/// `{"error": {"code", "message"}}`. Handlers return `Result<_, ApiError>` and use `?` on
/// FerrisDB results; the wrapper exists because the error type lives in the wire crate,
/// which the SDK shares and which therefore knows nothing of HTTP servers.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        ApiError(e)
    }
}

/// A peer's gRPC answer (the pageserver's, to a compute's admin call) keeps its FerrisDB code.
impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> ApiError {
        ApiError(Error::from(status))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let ApiError(error) = self;
        let status = match error.kind() {
            ErrorKind::InvalidArgument
            | ErrorKind::KeyTooLarge
            | ErrorKind::ValueTooLarge
            | ErrorKind::TransactionTooLarge => StatusCode::BAD_REQUEST,
            ErrorKind::DatabaseNotFound => StatusCode::NOT_FOUND,
            ErrorKind::Unavailable | ErrorKind::Fenced => StatusCode::SERVICE_UNAVAILABLE,
            // A version the server does not have yet: the client's to retry later, never a
            // server fault (a 5xx would page someone for a client asking too early).
            ErrorKind::FutureVersion => StatusCode::CONFLICT,
            // Below the retention window: what was asked for is gone for good, and asking
            // again will not bring it back.
            ErrorKind::VersionTooOld => StatusCode::GONE,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::ReadOnly => StatusCode::CONFLICT,
            ErrorKind::LimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        error_response(status, error.kind(), error.message())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
    }

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Params {
        n: u64,
    }

    /// Sends one raw HTTP/1.1 request; returns (status, content type, body).
    async fn raw(addr: std::net::SocketAddr, request: &str) -> (u16, String, serde_json::Value) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let content_type = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-type: ")
                    .map(String::from)
            })
            .unwrap_or_default();
        let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
        (status, content_type, json)
    }

    /// What a request can be refused for is a 4xx with its code; only a fault of the server's
    /// own is a 5xx (which would page an operator).
    #[test]
    fn errors_map_to_the_status_their_cause_deserves() {
        for (kind, want) in [
            (ErrorKind::InvalidArgument, 400),
            (ErrorKind::DatabaseNotFound, 404),
            (ErrorKind::FutureVersion, 409),
            (ErrorKind::VersionTooOld, 410),
            (ErrorKind::LimitExceeded, 429),
            (ErrorKind::Unavailable, 503),
            (ErrorKind::Internal, 500),
            (ErrorKind::Corruption, 500),
        ] {
            let response = ApiError(Error::new(kind, "x")).into_response();
            assert_eq!(response.status().as_u16(), want, "{kind:?}");
        }
    }

    #[tokio::test]
    async fn every_rejection_is_a_json_error_with_a_code() {
        let router = base_router(Registry::new())
            .route(
                "/v1/body",
                post(|axum::Json(_b): axum::Json<Body>| async { "ok" }),
            )
            .route(
                "/v1/query",
                get(|axum::extract::Query(_p): axum::extract::Query<Params>| async { "ok" }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, json_errors(router)).await });
        let post = |path: &str, ctype: &str, body: &str| {
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        };
        let get =
            |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let cases = [
            (post("/v1/body", "application/json", "{not json"), 400),
            (post("/v1/body", "application/json", "{\"other\": 1}"), 422),
            (post("/v1/body", "text/plain", "{\"name\": \"x\"}"), 415),
            (get("/v1/query?n=notanumber"), 400),
            (get("/v1/query?n=1&key=%FF"), 400),
            (get("/v1/query?n=1&key=a%C3"), 400),
            (get("/v1/query"), 400),
            (get("/v1/nowhere"), 404),
            (post("/v1/query", "application/json", "{}"), 405),
        ];
        for (request, want) in cases {
            let (status, ctype, body) = raw(addr, &request).await;
            assert_eq!(status, want, "{request}: {body}");
            assert!(ctype.starts_with("application/json"), "{request}: {ctype}");
            assert_eq!(
                body["error"]["code"], "invalid_argument",
                "{request}: {body}"
            );
            assert!(!body["error"]["message"].as_str().unwrap().is_empty());
        }
        // What worked keeps working.
        let (status, _, _) = raw(
            addr,
            &post("/v1/body", "application/json", "{\"name\": \"x\"}"),
        )
        .await;
        assert_eq!(status, 200);
        let (status, _, _) = raw(addr, &get("/healthz")).await;
        assert_eq!(status, 200);
        let (status, _, _) = raw(addr, &get("/v1/query?n=1&key=%C3%A9+x%2")).await;
        assert_eq!(status, 200);
    }
}
