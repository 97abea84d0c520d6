//! gRPC plumbing shared by every process: channels to peers, serving on a bound listener, and
//! the shutdown signal.

use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// How long a connection attempt to a peer may take before the peer counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Largest gRPC message a FerrisDB client or server sends or accepts: above the 10 MB
/// transaction limit, so an oversized transaction reaches the size check and gets its code
/// (`transaction_too_large`) instead of a transport error, and large range answers pass.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A lazily connecting channel to `url` (`http://host:port`); it reconnects by itself after
/// the peer restarts.
pub fn channel(url: &str) -> Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| Error::invalid(format!("endpoint {url:?}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(endpoint.connect_lazy())
}

/// Binds `addr`, saying which flag to fix when the port is taken.
pub async fn bind(addr: SocketAddr, what: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::unavailable(format!("cannot listen for {what} on {addr}: {e}")))
}

/// Resolves on SIGINT or SIGTERM: the way every FerrisDB process is asked to stop.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// How long servers keep draining after shutdown is requested. Long-lived streams (a
/// proposer's `Append`, a pageserver's `ReadWal`) would otherwise hold a stop forever.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A shutdown request shared by a process's servers and tasks.
#[derive(Debug, Clone)]
pub struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    /// Requests shutdown when `signal` resolves.
    pub fn on(signal: impl std::future::Future<Output = ()> + Send + 'static) -> Shutdown {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            signal.await;
            let _ = tx.send(true);
        });
        Shutdown(rx)
    }

    /// Resolves once shutdown is requested.
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }

    /// Resolves [`SHUTDOWN_GRACE`] after shutdown is requested.
    async fn deadline(self) {
        self.wait().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    }
}

/// Serves gRPC on `listener` until `shutdown`, then drains for at most [`SHUTDOWN_GRACE`].
pub async fn serve_grpc(
    router: tonic::transport::server::Router,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> Result<()> {
    // Commits are small request/response exchanges: without TCP_NODELAY, Nagle's algorithm
    // meets delayed ACKs and adds tens of milliseconds to a round trip.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::select! {
        r = router.serve_with_incoming_shutdown(incoming, shutdown.clone().wait()) => r.map_err(Error::from),
        _ = shutdown.deadline() => Ok(()),
    }
}

/// Serves the admin HTTP `router` on `listener` until `shutdown`, bounded like [`serve_grpc`].
pub async fn serve_http(
    router: axum::Router,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> Result<()> {
    tokio::select! {
        r = crate::admin::serve(listener, router, shutdown.clone().wait()) => r.map_err(Error::from),
        _ = shutdown.deadline() => Ok(()),
    }
}
