//! The client half of FerrisDB's networking: channels to servers (over TLS when configured),
//! the bearer token a client sends, and the crypto provider every TLS user installs. The
//! server half (listeners, TLS identities, graceful shutdown) lives with the servers, in
//! `ferrisdb-server-common`, so an application linking the SDK compiles no server code.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// How long a connection attempt to a peer may take before the peer counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How often a client pings its connection, idle or busy, and how long the pong may take
/// before the connection counts as dead: a peer that vanished without closing the socket (a
/// partition, a killed VM) fails the calls waiting on it instead of leaving them hanging.
/// Every client channel uses these (tonic's here, [`crate::h2_channel`]'s own).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// See [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

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
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
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
    if !url.starts_with("https://") {
        return Err(Error::invalid(format!(
            "endpoint {url:?}: TLS settings (a CA to trust) are given, so the endpoint must be https:// (over http:// credentials would travel in clear)"
        )));
    }
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
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    Ok(endpoint.connect_lazy())
}

/// What Debug prints in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// Debug for an optional secret: whether it is set, never what it is.
pub fn redact<T>(secret: &Option<T>) -> Option<&'static str> {
    secret.as_ref().map(|_| REDACTED)
}

/// The gRPC metadata key (HTTP header) that carries the cluster credential, distinct from
/// `authorization` so a client's bearer token is never taken for it.
pub const CLUSTER_TOKEN_HEADER: &str = "x-ferrisdb-cluster-token";

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_a_token() {
        let secret = "hunter2-very-secret";
        let shown = format!("{:?}", SendToken::new(Some(secret)).unwrap());
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }
}
