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

/// Requires an admin credential (see [`crate::auth::Require::admin`]) on every route of
/// `router` except `/healthz`, which load balancers probe without credentials. `/metrics`
/// is guarded like the rest: metric names and values describe the data (databases, sizes,
/// terms), and Prometheus sends a bearer token (`authorization.credentials_file`).
pub fn require(router: Router, require: crate::auth::Require) -> Router {
    if require.is_open() {
        return router;
    }
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let require = require.clone();
            async move {
                let headers = req.headers();
                let authorization = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                let cluster = headers
                    .get(crate::auth::CLUSTER_TOKEN_HEADER)
                    .and_then(|v| v.to_str().ok());
                if req.uri().path() == "/healthz" || require.accepts(authorization, cluster) {
                    next.run(req).await
                } else {
                    require.refusal().into_response()
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

/// Serves `router` over TLS on `listener` until `shutdown` resolves. Each connection does
/// its handshake in its own task (bounded in time), so a slow or silent client holds up no
/// one else.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    router: Router,
    config: std::sync::Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "admin API: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
            let Ok(Ok(stream)) = handshake.await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
        });
    }
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
