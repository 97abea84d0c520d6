//! The server half of FerrisDB's networking: gRPC servers with the per-connection limits,
//! TLS identities, binding listeners, serving gRPC and the admin HTTP API (over TLS when
//! configured), and the shutdown signal. Who may call what is in [`crate::auth`]; the client
//! half (channels, the bearer token a client sends) is `ferrisdb_common::net`.

use std::net::SocketAddr;
use std::time::Duration;

use ferrisdb_common::net::{REDACTED, install_crypto_provider};
use ferrisdb_common::{Error, Result};

use crate::admission::{self, Opening};

/// Most requests one client connection may have in flight at once (HTTP/2 streams, so
/// long-lived ones such as watches and WAL streams count too). A peer that opens more waits
/// for a stream to end (the HTTP/2 setting tells well-behaved clients) or has the extra
/// streams refused, so one connection cannot pin unbounded server memory.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// How often a server pings an HTTP/2 peer that has been quiet, and how long it waits for
/// the answer before closing the connection: a peer gone without a FIN (its host lost, a
/// partition) otherwise holds its connection, and its streams' state, until TCP gives up
/// hours later. A live client's HTTP/2 stack answers pings by itself.
pub const HTTP2_KEEPALIVE: (Duration, Duration) =
    (Duration::from_secs(30), Duration::from_secs(20));

/// A gRPC server builder with FerrisDB's per-connection limits; every server starts here.
/// TLS, when configured, is done by [`serve_grpc`] (with the handshake deadline).
pub fn grpc_server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .concurrency_limit_per_connection(MAX_STREAMS_PER_CONNECTION as usize)
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE.0))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE.1))
        // A span per request, child of the caller's trace (a disabled span unless traces
        // are exported: see crate::telemetry).
        .trace_fn(crate::telemetry::grpc_server_span)
}

/// A server's TLS identity: certificate chain and private key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// The certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// The private key, PEM.
    pub key_pem: Vec<u8>,
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
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(key)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(
                    key = %key.display(),
                    mode = format!("{:04o}", meta.permissions().mode() & 0o777),
                    "the TLS private key may be read by group or others: whoever reads it can pose as this server (chmod 600)"
                );
            }
        }
        let tls = ServerTls {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        };
        // Checked now, naming the files, rather than when the first listener starts (after
        // the process said it was serving) with only "TLS identity: transport error".
        tls.rustls_config().map_err(|e| {
            Error::invalid(format!(
                "--tls-cert {} / --tls-key {}: {}",
                cert.display(),
                key.display(),
                e.message()
            ))
        })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if let Some(problem) = validity_problem(&tls.cert_pem, now) {
            tracing::warn!(cert = %cert.display(), "the TLS certificate {problem}");
        }
        Ok(tls)
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

    /// A rustls server configuration with this identity for a gRPC listener: HTTP/2 only.
    pub fn grpc_rustls_config(&self) -> Result<std::sync::Arc<rustls::ServerConfig>> {
        let mut config = (*self.rustls_config()?).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(std::sync::Arc::new(config))
    }
}

/// How long before a certificate's end its coming expiry is warned about at start.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// What is wrong with the validity period of the first certificate of `cert_pem` at `now`
/// (Unix seconds): expired, not yet valid, or ending within [`EXPIRY_WARNING`]. Peers and
/// clients check it (rustls does) and refuse the handshake with an error that names the
/// client's side, not this server; a server that says so when it starts saves that hunt.
/// `None` also for a chain that cannot be parsed (rustls has accepted it by then).
pub fn validity_problem(cert_pem: &[u8], now: i64) -> Option<String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::pem_slice_iter(cert_pem).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let validity = cert.validity();
    let (from, to) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    let rfc3339 = |secs: i64| {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
        humantime::format_rfc3339_seconds(at).to_string()
    };
    if now > to {
        Some(format!(
            "expired at {}: clients and peers refuse to connect",
            rfc3339(to)
        ))
    } else if now < from {
        Some(format!(
            "is not valid before {}: clients and peers refuse to connect until then (is the clock right?)",
            rfc3339(from)
        ))
    } else if to - now < EXPIRY_WARNING.as_secs() as i64 {
        Some(format!(
            "expires at {} (in {} hours): renew it and restart",
            rfc3339(to),
            (to - now) / 3600
        ))
    } else {
        None
    }
}

/// Binds `addr`, saying which flag to fix when the port is taken.
pub async fn bind(addr: SocketAddr, what: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::unavailable(format!("cannot listen for {what} on {addr}: {e}")))
}

/// Takes over a listener bound elsewhere (see `ferrisdb_wal_service::run_on`).
pub fn adopt(listener: std::net::TcpListener, what: &str) -> Result<tokio::net::TcpListener> {
    listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
        .map_err(|e| Error::unavailable(format!("cannot listen for {what}: {e}")))
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
        let signal = tokio::select! {
            _ = interrupt => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        // An operator reading the log sees the stop asked for, not just the process gone.
        tracing::info!(signal, "asked to stop: shutting down");
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
        tracing::info!("asked to stop: shutting down");
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

    /// Whether [`Shutdown::wait`] would resolve now, without waiting: shutdown was requested,
    /// or nothing is left that could request it (the signal's task ended without sending,
    /// which `wait` also treats as a stop).
    pub fn is_requested(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
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

/// Serves gRPC on `listener` until `shutdown`, then drains for at most [`SHUTDOWN_GRACE`];
/// over TLS with `tls`. A connection is served once admitted: its TLS handshake and HTTP/2
/// preface within [`crate::admission::HANDSHAKE_DEADLINE`].
pub async fn serve_grpc(
    router: tonic::transport::server::Router,
    listener: tokio::net::TcpListener,
    tls: Option<&ServerTls>,
    shutdown: Shutdown,
) -> Result<()> {
    let tls = tls.map(ServerTls::grpc_rustls_config).transpose()?;
    let incoming = admission::admitted(accepted(listener), tls, Opening::Http2Preface);
    tokio::select! {
        r = router.serve_with_incoming_shutdown(incoming, shutdown.clone().wait()) => r.map_err(Error::from),
        _ = shutdown.deadline() => Ok(()),
    }
}

/// How long an accept loop waits after a failed accept (out of file descriptors, say)
/// before it tries again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The connections `listener` accepts, with `TCP_NODELAY` set. A failed accept is logged
/// (once, then again once accepts have worked in between) and retried after
/// [`ACCEPT_RETRY`]: tonic's own incoming stream retried at once, so a compute out of file
/// descriptors spun on `accept` at a whole core, logging nothing, while its clients' new
/// connections were dropped (an outside audit's finding).
fn accepted(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send + 'static {
    futures::stream::unfold((listener, false), |(listener, failing)| async move {
        let mut failing = failing;
        loop {
            match listener.accept().await {
                Ok((tcp, _)) => {
                    if failing {
                        tracing::info!("accepting connections again");
                    }
                    // Commits are small request/response exchanges: without TCP_NODELAY,
                    // Nagle's algorithm meets delayed ACKs and adds tens of milliseconds to a
                    // round trip.
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "TCP_NODELAY");
                    }
                    return Some((Ok(tcp), (listener, false)));
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(error = %e, "cannot accept connections (out of file descriptors?): retrying every {ACCEPT_RETRY:?}");
                    }
                    failing = true;
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            }
        }
    })
}

/// How long an HTTP/1.1 client of the admin API may take to send a request's headers, once
/// its connection is admitted (and how long a kept-alive connection may sit idle).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the admin HTTP `router` on `listener` until `shutdown`, bounded like
/// [`serve_grpc`]; over TLS with `tls`. Every error answer is a FerrisDB error in JSON (see
/// [`crate::admin::json_errors`]).
pub async fn serve_http(
    router: axum::Router,
    listener: tokio::net::TcpListener,
    tls: Option<&ServerTls>,
    shutdown: Shutdown,
) -> Result<()> {
    let tls = tls.map(ServerTls::rustls_config).transpose()?;
    let stop = shutdown.clone();
    let serve = async move {
        let router = crate::admin::json_errors(router);
        let mut builder =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder
            .http2()
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Some(HTTP2_KEEPALIVE.0))
            .keep_alive_timeout(HTTP2_KEEPALIVE.1);
        let incoming = admission::admitted(accepted(listener), tls, Opening::AnyByte);
        let mut incoming = std::pin::pin!(incoming);
        let stopped = stop.wait();
        tokio::pin!(stopped);
        loop {
            let conn = tokio::select! {
                _ = &mut stopped => return,
                next = futures::StreamExt::next(&mut incoming) => match next {
                    Some(Ok(conn)) => conn,
                    Some(Err(_)) => continue,
                    None => return,
                },
            };
            let (builder, router) = (builder.clone(), router.clone());
            tokio::spawn(async move {
                let service = hyper_util::service::TowerToHyperService::new(router);
                let _ = builder
                    .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(conn), service)
                    .await;
            });
        }
    };
    tokio::select! {
        () = serve => Ok(()),
        _ = shutdown.deadline() => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A self-signed certificate valid from `from` to `to` (years), PEM.
    fn cert(from: i32, to: i32) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem().into_bytes()
    }

    #[test]
    fn a_certificate_out_of_its_validity_or_near_its_end_is_named() {
        // 2030-01-01T00:00:00Z.
        let y2030 = 1_893_456_000;
        let day = 24 * 3600;
        let expired = validity_problem(&cert(2020, 2021), y2030).unwrap();
        assert!(
            expired.starts_with("expired at 2021-01-01T00:00:00Z"),
            "{expired}"
        );
        let early = validity_problem(&cert(2031, 2040), y2030).unwrap();
        assert!(
            early.starts_with("is not valid before 2031-01-01T00:00:00Z"),
            "{early}"
        );
        let ending = validity_problem(&cert(2020, 2030), y2030 - 3 * day).unwrap();
        assert!(ending.contains("(in 72 hours)"), "{ending}");
        assert_eq!(validity_problem(&cert(2020, 2030), y2030 - 15 * day), None);
        assert_eq!(validity_problem(b"not a certificate", y2030), None);
    }

    #[tokio::test]
    async fn is_requested_agrees_with_wait() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let asked = Shutdown::on(async move {
            let _ = rx.await;
        });
        assert!(!asked.is_requested());
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), asked.clone().wait())
            .await
            .unwrap();
        assert!(asked.is_requested());

        // A signal whose task ends without sending: `wait` resolves, so the flag says so too.
        let lost = Shutdown::on(async { panic!("the signal's source failed (expected)") });
        tokio::time::timeout(Duration::from_secs(5), lost.clone().wait())
            .await
            .unwrap();
        assert!(lost.is_requested());
    }

    #[test]
    fn debug_never_prints_a_secret() {
        let secret = "hunter2-very-secret";
        let shown = [
            format!("{:?}", crate::auth::Tokens::new([secret])),
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
