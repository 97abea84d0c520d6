//! Who may call what: tokens, the cluster credential, and the rule that nothing is served
//! unauthenticated beyond loopback.
//!
//! Three scopes (docs/security.md):
//! - the **cluster credential**, carried on every internal call in its own metadata key
//!   ([`CLUSTER_TOKEN_HEADER`]); the safekeeper and pageserver gRPC services accept nothing
//!   else, so a client token can never drive the WAL protocol or read the pageserver;
//! - **client tokens** (`authorization: Bearer …`) on the compute's client API;
//! - **admin tokens** on every admin HTTP API (the cluster credential is accepted there too).
//!
//! Tokens are kept and compared as SHA-256 digests: a compare takes the same time whatever the
//! guess and whatever its length, and a digest in memory or a log is no secret.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use ferrisdb_common::h2_channel::H2Channel;
use ferrisdb_common::net::{self, CLUSTER_TOKEN_HEADER, ClientTls};
use ferrisdb_common::{Error, ErrorKind, Result};

use crate::serve::{self, ServerTls};

/// Fewest hex digits a cluster credential has: 32 random bytes.
pub const MIN_CLUSTER_TOKEN_HEX: usize = 64;

/// A set of accepted tokens, held as SHA-256 digests. Debug shows only how many.
#[derive(Clone, Default)]
pub struct Tokens(Arc<Vec<[u8; 32]>>);

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Tokens {
    /// Accepts exactly `tokens`.
    pub fn new<S: AsRef<str>>(tokens: impl IntoIterator<Item = S>) -> Tokens {
        Tokens(Arc::new(
            tokens.into_iter().map(|t| digest(t.as_ref())).collect(),
        ))
    }

    /// The tokens' SHA-256 digests (what [`crate::identity`] proves possession of).
    pub(crate) fn digests(&self) -> &[[u8; 32]] {
        &self.0
    }

    /// No token at all (accepts nothing).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Accepts what either set accepts.
    pub fn union(&self, other: &Tokens) -> Tokens {
        Tokens(Arc::new(
            self.0.iter().chain(other.0.iter()).copied().collect(),
        ))
    }

    /// Whether `presented` is one of the tokens. Every digest is compared in full, with no
    /// early exit, so timing says nothing about how close a guess came.
    pub fn accepts(&self, presented: Option<&str>) -> bool {
        let Some(presented) = presented else {
            return false;
        };
        let got = digest(presented);
        self.0.iter().fold(false, |found, want| {
            let diff = want
                .iter()
                .zip(got.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            found | (diff == 0)
        })
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} redacted)", self.0.len())
    }
}

/// Reads a token file: one token a line (blank lines and `#` comments skipped), so a file can
/// list the current and the next token during a rotation. Refused when group or others may
/// read it (on Unix), when it holds no token, or when a token is not printable ASCII.
pub fn read_token_file(path: &Path) -> Result<Vec<String>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::invalid(format!("token file {}: {e}", path.display())))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::invalid(format!(
                "token file {} may be read by group or others (mode {mode:04o}); \
                 make it private with `chmod 600 {}`",
                path.display(),
                path.display()
            )));
        }
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid(format!("token file {}: {e}", path.display())))?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    if tokens.is_empty() {
        return Err(Error::invalid(format!(
            "token file {} holds no token",
            path.display()
        )));
    }
    for (i, t) in tokens.iter().enumerate() {
        check_token(
            t,
            &format!("token file {}: token {}", path.display(), i + 1),
        )?;
    }
    Ok(tokens)
}

/// Most characters a token may have: it travels in a header of every call, and HTTP/2 peers
/// refuse large header lists (a 40,000-character cluster credential was accepted at start and
/// then every internal call failed with an opaque HTTP 431).
pub const MAX_TOKEN_CHARS: usize = 1024;

/// Tokens shorter than this are accepted with a warning: a guess at one takes fewer tries
/// than anyone should be able to afford (`openssl rand -hex 16` makes 32 characters).
pub const WEAK_TOKEN_CHARS: usize = 16;

/// Refuses a token that is empty or not printable ASCII without spaces (one that a header
/// cannot carry, or a blank that a listener beyond loopback would count as authentication);
/// warns about one shorter than [`WEAK_TOKEN_CHARS`]. `what` names it in the message.
pub fn check_token(token: &str, what: &str) -> Result<()> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(format!(
            "{what} is empty or not printable ASCII without spaces"
        )));
    }
    if token.len() > MAX_TOKEN_CHARS {
        return Err(Error::invalid(format!(
            "{what} has {} characters, more than the {MAX_TOKEN_CHARS} a request header may carry to every peer",
            token.len()
        )));
    }
    if token.len() < WEAK_TOKEN_CHARS {
        tracing::warn!(
            "{what} has {} characters: a token should have at least {WEAK_TOKEN_CHARS} (e.g. `openssl rand -hex 16`)",
            token.len()
        );
    }
    Ok(())
}

/// Reads a cluster credential file: like [`read_token_file`], and every token must be hex of
/// at least [`MIN_CLUSTER_TOKEN_HEX`] digits, so a weak or mistyped secret is refused at
/// start instead of accepted forever.
pub fn read_cluster_token_file(path: &Path) -> Result<Vec<String>> {
    let tokens = read_token_file(path)?;
    for (i, t) in tokens.iter().enumerate() {
        if t.len() < MIN_CLUSTER_TOKEN_HEX || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!(
                "cluster token file {}: token {} must be at least {MIN_CLUSTER_TOKEN_HEX} hex \
                 digits (32 random bytes; e.g. `openssl rand -hex 32`)",
                path.display(),
                i + 1
            )));
        }
    }
    Ok(tokens)
}

/// A new random cluster credential: 32 bytes from the OS, hex.
pub fn generate_cluster_token() -> Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::internal("the system random source failed"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// What a server requires of each request: a bearer token from one set, or the cluster
/// credential from another. With neither set configured it is open (loopback only, see
/// [`check_exposure`]).
#[derive(Clone, Debug, Default)]
pub struct Require {
    bearer: Tokens,
    cluster: Tokens,
    refusal: &'static str,
}

impl Require {
    /// Open to everyone.
    pub fn open() -> Require {
        Require::default()
    }

    /// Only the cluster credential: the internal APIs (safekeeper, pageserver).
    pub fn cluster(cluster: &Tokens) -> Require {
        Require {
            bearer: Tokens::default(),
            cluster: cluster.clone(),
            refusal: "this internal API requires the cluster credential (--cluster-token-file)",
        }
    }

    /// A client token (`authorization: Bearer`), or the cluster credential (a standby
    /// probing its primary): the compute's client API. Open when no client token is set.
    pub fn client(client: &Tokens, cluster: &Tokens) -> Require {
        if client.is_empty() {
            return Require::open();
        }
        Require {
            bearer: client.clone(),
            cluster: cluster.clone(),
            refusal: "a valid bearer token is required (--token / FERRISDB_TOKEN)",
        }
    }

    /// An admin token or the cluster credential, either as `authorization: Bearer` or the
    /// cluster credential in its own header: every admin HTTP API.
    pub fn admin(admin: &Tokens, cluster: &Tokens) -> Require {
        Require {
            bearer: admin.union(cluster),
            cluster: cluster.clone(),
            refusal: "a valid admin token is required (Authorization: Bearer …; --admin-token-file)",
        }
    }

    /// What `/v1/identity` proves for a server listening on `port`: the cluster credential
    /// only. It is the one the CLI finds on disk, and it is at least 32 random bytes; proofs
    /// for admin tokens (which may be short) would give anyone an oracle to test guesses
    /// against offline.
    pub fn identity(&self, port: u16) -> crate::identity::Identity {
        crate::identity::Identity::new(self.cluster.digests(), port)
    }

    /// Whether anything is required at all.
    pub fn is_open(&self) -> bool {
        self.bearer.is_empty() && self.cluster.is_empty()
    }

    /// Whether a request with these header values passes.
    pub fn accepts(&self, authorization: Option<&str>, cluster: Option<&str>) -> bool {
        if self.is_open() {
            return true;
        }
        let bearer = authorization.and_then(bearer_token);
        // Both checks always run: which header carried a valid token does not show in timing.
        self.bearer.accepts(bearer) | self.cluster.accepts(cluster)
    }

    /// The error a refused request gets.
    pub fn refusal(&self) -> Error {
        Error::new(ErrorKind::Unauthenticated, self.refusal)
    }
}

/// The token of an `authorization: Bearer <token>` header. The scheme's name is matched
/// without regard to case (RFC 9110, 11.1: proxies and clients send `bearer` too).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

impl tonic::service::Interceptor for Require {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let md = req.metadata();
        let authorization = md.get(net::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let cluster = md.get(CLUSTER_TOKEN_HEADER).and_then(|v| v.to_str().ok());
        if self.accepts(authorization, cluster) {
            Ok(req)
        } else {
            Err(self.refusal().into())
        }
    }
}

/// Refuses to serve `what` on a non-loopback `addr` without authentication, naming the flag
/// that adds it and `--insecure`; with `insecure`, serves and warns.
pub fn check_exposure(
    addr: SocketAddr,
    what: &str,
    authenticated: bool,
    insecure: bool,
    flag: &str,
) -> Result<()> {
    if authenticated || addr.ip().is_loopback() {
        return Ok(());
    }
    if insecure {
        tracing::warn!(
            %addr,
            "--insecure: serving {what} on a non-loopback address WITHOUT authentication; \
             anyone who can reach {addr} can use it"
        );
        return Ok(());
    }
    Err(Error::invalid(format!(
        "refusing to serve {what} on {addr} without authentication: give {flag}, \
         listen on 127.0.0.1, or pass --insecure to serve it unauthenticated anyway"
    )))
}

/// The security settings of one server process (safekeeper, pageserver or compute).
#[derive(Clone, Default)]
pub struct Security {
    /// Serve every listener (gRPC and admin HTTP) over TLS with this identity.
    pub tls: Option<ServerTls>,
    /// Accepted cluster credentials (`--cluster-token-file`); the first is the one sent.
    pub cluster: Tokens,
    /// Accepted admin tokens (`--admin-token-file`).
    pub admin: Tokens,
    /// Accepted client tokens (`--token`, `--token-file`; the compute's client API).
    pub client: Tokens,
    /// Serve unauthenticated listeners beyond loopback (`--insecure`).
    pub insecure: bool,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls.is_some())
            .field("cluster", &self.cluster)
            .field("admin", &self.admin)
            .field("client", &self.client)
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl Security {
    /// Serves the admin HTTP `router` on `listener` in a task, behind the admin credential
    /// check and over TLS when configured: every process's admin API is started this way.
    pub fn spawn_admin(
        &self,
        router: axum::Router,
        listener: tokio::net::TcpListener,
        shutdown: serve::Shutdown,
    ) -> tokio::task::JoinHandle<Result<()>> {
        // The port clients reach, which identity proofs name (see `identity`).
        let port = listener.local_addr().map_or(0, |a| a.port());
        let router = require_on_admin(router, self.require_admin(), port);
        let tls = self.tls.clone();
        tokio::spawn(
            async move { serve::serve_http(router, listener, tls.as_ref(), shutdown).await },
        )
    }

    /// Serves a gRPC `router` (built on [`serve::grpc_server`]) on `listener` until
    /// `shutdown`, over TLS when configured: every process's gRPC API is served this way.
    pub async fn serve_grpc(
        &self,
        router: tonic::transport::server::Router,
        listener: tokio::net::TcpListener,
        shutdown: serve::Shutdown,
    ) -> Result<()> {
        serve::serve_grpc(router, listener, self.tls.as_ref(), shutdown).await
    }

    /// What the admin HTTP API requires.
    pub fn require_admin(&self) -> Require {
        Require::admin(&self.admin, &self.cluster)
    }

    /// What an internal gRPC API requires.
    pub fn require_cluster(&self) -> Require {
        Require::cluster(&self.cluster)
    }

    /// What the compute's client API requires.
    pub fn require_client(&self) -> Require {
        Require::client(&self.client, &self.cluster)
    }

    /// Checks an internal service's listeners: the gRPC one needs the cluster credential
    /// beyond loopback, the admin one an admin token or the cluster credential.
    pub fn check_internal(&self, grpc: SocketAddr, http: SocketAddr) -> Result<()> {
        check_exposure(
            grpc,
            "the internal gRPC API",
            !self.cluster.is_empty(),
            self.insecure,
            "--cluster-token-file",
        )?;
        self.check_admin(http)
    }

    /// Warns when a listener beyond loopback serves without TLS: its tokens and data travel
    /// in clear (fine on a trusted network, which FerrisDB cannot tell).
    pub fn warn_if_cleartext(&self, listeners: &[SocketAddr]) {
        if self.tls.is_some() {
            return;
        }
        for addr in listeners.iter().filter(|a| !a.ip().is_loopback()) {
            tracing::warn!(%addr, "serving without TLS beyond loopback: credentials and data travel in clear (--tls-cert/--tls-key)");
        }
    }

    /// Checks the admin listener.
    pub fn check_admin(&self, http: SocketAddr) -> Result<()> {
        check_exposure(
            http,
            "the admin HTTP API",
            !self.require_admin().is_open(),
            self.insecure,
            "--admin-token-file or --cluster-token-file",
        )
    }
}

/// Client side of the cluster credential: adds it to every request.
#[derive(Clone, Default)]
pub struct SendCluster(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for SendCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "SendCluster(redacted)"
        } else {
            "SendCluster(none)"
        })
    }
}

impl tonic::service::Interceptor for SendCluster {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert(CLUSTER_TOKEN_HEADER, v.clone());
        }
        // Internal calls continue the caller's trace (a read reaching the pageserver).
        crate::telemetry::inject_current(req.metadata_mut());
        Ok(req)
    }
}

/// A channel to another member of the cluster, carrying the cluster credential.
pub type PeerChannel = InterceptedService<Channel, SendCluster>;

/// A channel to a peer for calls that send one message each (unary and server-streaming),
/// carrying the cluster credential: the SDK's HTTP/2 channel
/// ([`ferrisdb_common::h2_channel`]), one socket write per call instead of two and no
/// task hops in front of the connection. The compute reads from the pageserver through it;
/// the client-streaming WAL append needs [`PeerChannel`].
pub type CallChannel = InterceptedService<H2Channel, SendCluster>;

/// How this process calls its peers: the credential it sends and the CA it trusts.
struct ClusterAccess {
    send: SendCluster,
    ca_pem: Option<Vec<u8>>,
    /// Whether this process serves or calls over TLS: then no peer is called over http://.
    uses_tls: bool,
}

/// Set once at start by the binary; internal clients are made deep inside every component
/// (proposer, WAL follower, repair), and one process is one member of one cluster, so this is
/// process-wide like rustls's crypto provider. Unset (in-process tests, benches): no
/// credential and no CA.
static CLUSTER_ACCESS: OnceLock<ClusterAccess> = OnceLock::new();

/// Sets the credential sent on internal calls and the CA (PEM) that `https://` peers'
/// certificates must chain to; `serves_tls` says whether this process's own listeners use
/// TLS. A process with either calls no peer over `http://`. Once per process; a second call
/// is refused.
pub fn install_cluster_access(
    token: Option<&str>,
    ca_pem: Option<Vec<u8>>,
    serves_tls: bool,
) -> Result<()> {
    let value = token
        .map(|t| {
            t.parse::<MetadataValue<Ascii>>()
                .map_err(|_| Error::invalid("the cluster credential must be printable ASCII"))
        })
        .transpose()?;
    CLUSTER_ACCESS
        .set(ClusterAccess {
            send: SendCluster(value),
            uses_tls: serves_tls || ca_pem.is_some(),
            ca_pem,
        })
        .map_err(|_| Error::internal("cluster access is already installed"))
}

/// A lazily connecting channel to the peer at `url` that carries the cluster credential;
/// over TLS (trusting `--tls-ca`) when `url` is `https://…`.
pub fn peer_channel(url: &str) -> Result<PeerChannel> {
    let (tls, send) = peer_access(url)?;
    Ok(InterceptedService::new(
        net::channel_with(url, tls.as_ref())?,
        send,
    ))
}

/// A lazily connecting [`CallChannel`] to the peer at `url`; over TLS (trusting `--tls-ca`)
/// when `url` is `https://…`.
pub fn call_channel(url: &str) -> Result<CallChannel> {
    let (tls, send) = peer_access(url)?;
    Ok(InterceptedService::new(
        H2Channel::new(url, tls.as_ref())?,
        send,
    ))
}

/// A lazily connecting HTTP/2 channel to the peer at `url` for bidirectional calls opened
/// with [`H2Channel::open_stream`] (the WAL append stream), and the metadata that carries the
/// cluster credential in such a call's headers. Messages go straight onto the HTTP/2 stream
/// from the caller's task, without tonic's body task in between.
pub fn stream_channel(url: &str) -> Result<StreamChannel> {
    let (tls, send) = peer_access(url)?;
    let mut metadata = tonic::metadata::MetadataMap::new();
    if let Some(v) = send.0 {
        metadata.insert(CLUSTER_TOKEN_HEADER, v);
    }
    Ok(StreamChannel {
        channel: H2Channel::new(url, tls.as_ref())?,
        metadata,
    })
}

/// A peer's channel for bidirectional streams, with the credential to open them with (see
/// [`stream_channel`]).
#[derive(Clone)]
pub struct StreamChannel {
    /// The connection (dialled on first use, redialled after it breaks).
    pub channel: H2Channel,
    /// The cluster credential, for the call's headers.
    pub metadata: tonic::metadata::MetadataMap,
}

impl std::fmt::Debug for StreamChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The metadata holds the credential: never printed.
        f.debug_struct("StreamChannel")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// Checks, at start, that every peer URL can be called under this process's cluster access
/// (installed by [`install_cluster_access`]): with TLS in use, each must be `https://` (see
/// [`peer_access`]). A refused URL stops the process before anything is sent.
pub fn check_peers<'a>(urls: impl IntoIterator<Item = &'a String>) -> Result<()> {
    for url in urls {
        peer_access(url)?;
    }
    Ok(())
}

/// What a channel to the peer at `url` needs from this process's cluster access: the CA to
/// trust when `url` is `https://…`, and the credential to send.
///
/// A process that uses TLS (it serves with a certificate or trusts a CA for its peers)
/// refuses an `http://` peer: one mistyped URL would otherwise send the cluster credential,
/// which lets its holder vote, append and trim the WAL, in clear, silently.
fn peer_access(url: &str) -> Result<(Option<ClientTls>, SendCluster)> {
    let access = CLUSTER_ACCESS.get();
    let https = url.starts_with("https://");
    if !https && access.is_some_and(|a| a.uses_tls) {
        return Err(Error::invalid(format!(
            "peer {url:?}: this process uses TLS (--tls-cert or --tls-ca), so every peer URL must be https:// (over http:// the cluster credential would travel in clear)"
        )));
    }
    let tls = https.then(|| ClientTls {
        ca_pem: access.and_then(|a| a.ca_pem.clone()),
        domain: None,
    });
    Ok((tls, access.map(|a| a.send.clone()).unwrap_or_default()))
}

/// Requires an admin credential (see [`Require::admin`]) on every route of
/// `router` except `/healthz`, which load balancers probe without credentials,
/// `/openapi.json` and `/v1/identity` (see [`is_open_route`]). `/metrics`
/// is guarded like the rest: metric names and values describe the data (databases, sizes,
/// terms), and Prometheus sends a bearer token (`authorization.credentials_file`). The
/// identity route proves the credentials this server accepts, listening on `port`
/// ([`crate::identity`]).
pub fn require_on_admin(router: axum::Router, require: Require, port: u16) -> axum::Router {
    let identity = require.identity(port);
    let router = router.layer(axum::Extension(identity));
    if require.is_open() {
        return router;
    }
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let require = require.clone();
            async move {
                let headers = req.headers();
                let authorization = headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                let cluster = headers
                    .get(CLUSTER_TOKEN_HEADER)
                    .and_then(|v| v.to_str().ok());
                if is_open_route(req.uri().path()) || require.accepts(authorization, cluster) {
                    next.run(req).await
                } else {
                    axum::response::IntoResponse::into_response(crate::admin::ApiError(
                        require.refusal(),
                    ))
                }
            }
        },
    ))
}

/// Routes served without a credential: the health and readiness probes (load balancers
/// carry no credential; readiness says only a role and an error code), the API's own
/// description (the same for every deployment, and the repository's docs/openapi/ publish
/// it anyway), and the identity challenge (it proves a credential without revealing it).
fn is_open_route(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/openapi.json" | crate::identity::IDENTITY_PATH
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn tokens_accept_only_their_own() {
        let t = Tokens::new(["alpha", "beta"]);
        assert!(t.accepts(Some("alpha")));
        assert!(t.accepts(Some("beta")));
        assert!(!t.accepts(Some("alph")));
        assert!(!t.accepts(Some("alphaa")));
        assert!(!t.accepts(Some("")));
        assert!(!t.accepts(None));
        assert!(!Tokens::default().accepts(Some("")));
        assert_eq!(format!("{t:?}"), "Tokens(2 redacted)");
    }

    #[test]
    fn a_token_too_long_for_a_header_is_refused() {
        assert!(check_token(&"a".repeat(MAX_TOKEN_CHARS), "token").is_ok());
        let e = check_token(&"a".repeat(MAX_TOKEN_CHARS + 1), "token").unwrap_err();
        assert_eq!(e.kind(), ferrisdb_common::ErrorKind::InvalidArgument);
    }

    #[test]
    fn identity_proves_the_cluster_credential_and_never_an_admin_token() {
        let admin = Tokens::new(["short"]);
        let cluster = Tokens::new(["ab".repeat(32)]);
        let identity = Require::admin(&admin, &cluster).identity(4580);
        let challenge = crate::identity::new_challenge().unwrap();
        let proofs = identity.proofs(&challenge);
        assert_eq!(proofs.len(), 1);
        assert!(crate::identity::proves(
            &"ab".repeat(32),
            4580,
            &challenge,
            &proofs
        ));
        assert!(!crate::identity::proves("short", 4580, &challenge, &proofs));
    }

    #[test]
    fn scopes_differ() {
        let client = Tokens::new(["client"]);
        let admin = Tokens::new(["admin"]);
        let cluster = Tokens::new(["cluster"]);
        let internal = Require::cluster(&cluster);
        assert!(internal.accepts(None, Some("cluster")));
        assert!(!internal.accepts(Some("Bearer cluster"), None));
        assert!(!internal.accepts(Some("Bearer client"), Some("client")));
        let api = Require::client(&client, &cluster);
        assert!(api.accepts(Some("Bearer client"), None));
        assert!(api.accepts(None, Some("cluster")));
        assert!(!api.accepts(Some("Bearer admin"), None));
        let adm = Require::admin(&admin, &cluster);
        assert!(adm.accepts(Some("Bearer admin"), None));
        assert!(adm.accepts(Some("Bearer cluster"), None));
        assert!(
            adm.accepts(Some("bearer admin"), None),
            "the scheme in any case"
        );
        assert!(adm.accepts(Some("BEARER  admin"), None));
        assert!(!adm.accepts(Some("Basic admin"), None));
        assert!(!adm.accepts(Some("Beareradmin"), None));
        assert!(adm.accepts(None, Some("cluster")));
        assert!(!adm.accepts(Some("Bearer client"), None));
        assert!(!adm.accepts(None, Some("admin")));
        assert!(Require::client(&Tokens::default(), &cluster).is_open());
        assert!(Require::admin(&Tokens::default(), &Tokens::default()).is_open());
    }

    /// A blank or spaced token is refused wherever it comes from; a short one is only warned
    /// about (refusing it would break deployments that work).
    #[test]
    fn blank_tokens_are_refused() {
        for bad in ["", " ", "  ", "a b", "tab\there", "é"] {
            let e = check_token(bad, "--token").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad:?}");
            assert!(e.message().starts_with("--token"), "{}", e.message());
        }
        assert!(check_token("s3cret", "--token").is_ok());
        assert!(check_token(&"x".repeat(64), "--token").is_ok());
    }

    #[test]
    fn exposure_needs_auth_or_insecure() {
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(check_exposure(lo, "x", false, false, "--f").is_ok());
        assert!(check_exposure(any, "x", true, false, "--f").is_ok());
        assert!(check_exposure(any, "x", false, true, "--f").is_ok());
        let e = check_exposure(any, "x", false, false, "--f").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.message().contains("--insecure") && e.message().contains("--f"));
    }

    #[cfg(unix)]
    #[test]
    fn token_files_must_be_private_and_strong() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let good = generate_cluster_token().unwrap();
        assert_eq!(good.len(), 64);
        std::fs::write(&path, format!("# current\n{good}\n\n{}\n", "ab".repeat(40))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_cluster_token_file(&path).unwrap_err();
        assert!(e.message().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_cluster_token_file(&path).unwrap().len(), 2);
        std::fs::write(&path, "short\n").unwrap();
        assert!(read_cluster_token_file(&path).is_err());
        assert_eq!(read_token_file(&path).unwrap(), vec!["short".to_string()]);
        std::fs::write(&path, "\n# none\n").unwrap();
        assert!(read_token_file(&path).is_err());
    }
}
