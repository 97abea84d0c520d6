//! Network plumbing shared by every process: channels to peers, TLS identities, serving gRPC
//! and the admin HTTP API (over TLS when configured) on a bound listener, and the shutdown
//! signal. Who may call what is in [`crate::auth`].

use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// How long a connection attempt to a peer may take before the peer counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Largest gRPC message a FerrisDB client or server sends or accepts; derived in
/// [`crate::message_size`], which says why.
pub const MAX_MESSAGE_BYTES: usize = crate::message_size::MAX_MESSAGE_BYTES;

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

/// How a client checks a server's TLS certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM of the CA (or self-signed certificate) to trust; `None`: the platform's roots are
    /// not consulted, so give one for anything but a public CA.
    pub ca_pem: Option<Vec<u8>>,
    /// The name the certificate must carry (default: the endpoint's host).
    pub domain: Option<String>,
}

/// Picks rustls's process-wide crypto provider (ring); every TLS user calls it first. Two are
/// compiled in (other dependencies bring aws-lc-rs), and rustls refuses to guess between them.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already, which is all this wants.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A lazily connecting channel to `url`, over TLS when `tls` is given (the URL is then
/// `https://…`).
pub fn channel_with(url: &str, tls: Option<&ClientTls>) -> Result<Channel> {
    let Some(tls) = tls else {
        return channel(url);
    };
    install_crypto_provider();
    let mut config = tonic::transport::ClientTlsConfig::new();
    if let Some(ca) = &tls.ca_pem {
        config = config.ca_certificate(tonic::transport::Certificate::from_pem(ca));
    }
    if let Some(domain) = &tls.domain {
        config = config.domain_name(domain.clone());
    }
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| Error::invalid(format!("endpoint {url:?}: {e}")))?
        .tls_config(config)
        .map_err(|e| Error::invalid(format!("TLS for {url:?}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(endpoint.connect_lazy())
}

/// Most requests one client connection may have in flight at once (HTTP/2 streams, so
/// long-lived ones such as watches and WAL streams count too). A peer that opens more waits
/// for a stream to end (the HTTP/2 setting tells well-behaved clients) or has the extra
/// streams refused, so one connection cannot pin unbounded server memory.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// A gRPC server builder with FerrisDB's per-connection limits; every server starts here.
pub fn grpc_server() -> tonic::transport::Server {
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .concurrency_limit_per_connection(MAX_STREAMS_PER_CONNECTION as usize);
    // A span per request, child of the caller's trace (a disabled span unless traces are
    // exported: see crate::telemetry).
    #[cfg(feature = "otel")]
    let server = server.trace_fn(crate::telemetry::grpc_server_span);
    server
}

/// A server's TLS identity: certificate chain and private key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// The certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// The private key, PEM.
    pub key_pem: Vec<u8>,
}

/// What Debug prints in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// Debug for an optional secret: whether it is set, never what it is.
pub fn redact<T>(secret: &Option<T>) -> Option<&'static str> {
    secret.as_ref().map(|_| REDACTED)
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_pem", &String::from_utf8_lossy(&self.cert_pem))
            .field("key_pem", &REDACTED)
            .finish()
    }
}

impl ServerTls {
    /// Reads the certificate and key files.
    pub fn from_files(cert: &std::path::Path, key: &std::path::Path) -> Result<ServerTls> {
        let read = |p: &std::path::Path| {
            std::fs::read(p)
                .map_err(|e| Error::invalid(format!("cannot read {}: {e}", p.display())))
        };
        Ok(ServerTls {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }

    /// A rustls server configuration with this identity, offering HTTP/2 and HTTP/1.1 (the
    /// admin HTTP APIs).
    pub fn rustls_config(&self) -> Result<std::sync::Arc<rustls::ServerConfig>> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        install_crypto_provider();
        let certs = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::invalid(format!("TLS certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|e| Error::invalid(format!("TLS private key: {e}")))?;
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| Error::invalid(format!("TLS identity: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(std::sync::Arc::new(config))
    }

    /// A gRPC server builder serving with this identity.
    pub fn grpc_server(&self) -> Result<tonic::transport::Server> {
        install_crypto_provider();
        let identity = tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem);
        grpc_server()
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| Error::invalid(format!("TLS identity: {e}")))
    }
}

/// The gRPC metadata key of a bearer token.
pub const AUTHORIZATION: &str = "authorization";

/// Client side of bearer-token auth: adds `authorization: Bearer TOKEN` to every request.
#[derive(Clone, Default)]
pub struct SendToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl std::fmt::Debug for SendToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SendToken").field(&redact(&self.0)).finish()
    }
}

impl SendToken {
    /// Sends `token` when given; `invalid_argument` if it is not a valid header value.
    pub fn new(token: Option<&str>) -> Result<SendToken> {
        let value = token
            .map(|t| {
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| Error::invalid("the token must be printable ASCII"))
            })
            .transpose()?;
        Ok(SendToken(value))
    }
}

impl tonic::service::Interceptor for SendToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert(AUTHORIZATION, v.clone());
        }
        Ok(req)
    }
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

/// Serves the admin HTTP `router` on `listener` until `shutdown`, bounded like
/// [`serve_grpc`]; over TLS with `tls`.
pub async fn serve_http(
    router: axum::Router,
    listener: tokio::net::TcpListener,
    tls: Option<&ServerTls>,
    shutdown: Shutdown,
) -> Result<()> {
    let stop = shutdown.clone();
    let serve = async move {
        match tls {
            Some(tls) => {
                let config = tls.rustls_config()?;
                crate::admin::serve_tls(listener, router, config, stop.wait()).await;
                Ok(())
            }
            None => crate::admin::serve(listener, router, stop.wait())
                .await
                .map_err(Error::from),
        }
    };
    tokio::select! {
        r = serve => r,
        _ = shutdown.deadline() => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_a_secret() {
        let secret = "hunter2-very-secret";
        let shown = [
            format!("{:?}", crate::auth::Tokens::new([secret])),
            format!("{:?}", SendToken::new(Some(secret)).unwrap()),
            format!(
                "{:?}",
                ServerTls {
                    cert_pem: b"CERT".to_vec(),
                    key_pem: secret.as_bytes().to_vec(),
                }
            ),
        ];
        for s in shown {
            assert!(!s.contains(secret), "{s}");
            assert!(s.contains("redacted"), "{s}");
        }
    }
}
