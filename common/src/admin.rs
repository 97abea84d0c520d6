//! The HTTP admin surface every process serves: `/healthz`, `/metrics`, `/v1/status`, plus
//! component routes.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};

use crate::error::{Error, ErrorKind};

/// `/healthz` and `/metrics` (Prometheus text from `registry`); components merge their own
/// routes (`/v1/status` and friends) into it.
pub fn base_router(registry: Registry) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { render_metrics(&registry) }
            }),
        )
}

/// Requires the bearer token on every route of `router` except `/healthz` (load balancers
/// probe it without credentials). Without a token configured, `router` is returned as is.
pub fn require_token(router: Router, token: crate::net::RequireToken) -> Router {
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let token = token.clone();
            async move {
                let header = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                if req.uri().path() == "/healthz" || token.accepts(header) {
                    next.run(req).await
                } else {
                    Error::new(
                        ErrorKind::Unauthenticated,
                        "a valid bearer token is required (Authorization: Bearer …)",
                    )
                    .into_response()
                }
            }
        },
    ))
}

fn render_metrics(registry: &Registry) -> Response {
    let mut buf = Vec::new();
    match TextEncoder::new().encode(&registry.gather(), &mut buf) {
        Ok(()) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], buf).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match self.kind() {
            ErrorKind::InvalidArgument
            | ErrorKind::KeyTooLarge
            | ErrorKind::ValueTooLarge
            | ErrorKind::TransactionTooLarge => StatusCode::BAD_REQUEST,
            ErrorKind::DatabaseNotFound => StatusCode::NOT_FOUND,
            ErrorKind::Unavailable | ErrorKind::Fenced => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::FutureVersion => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::ReadOnly => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = serde_json::json!({"error": {"code": self.code(), "message": self.message()}});
        (status, axum::Json(body)).into_response()
    }
}
