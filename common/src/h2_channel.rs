//! A gRPC channel that sends each call straight onto one HTTP/2 connection (the `h2` crate),
//! for clients whose calls are all unary or server-streaming: FerrisDB's client API.
//!
//! Why not tonic's `Channel`: it is hyper's HTTP/2 client behind a `tower::Buffer`. A call
//! hops from the caller's task to the buffer's worker, then to hyper's dispatch task, and
//! hyper sends a request body from a further task once the stream has flow-control credit,
//! which it only gets after its HEADERS frame is out. A one-message request therefore leaves
//! as two socket writes (HEADERS, then DATA) and wakes two extra tasks. On point reads the
//! SDK made 1.75 `writev` calls per request and spent as much CPU as the compute serving them
//! (docs/benchmarks/request-path-profile.md, third round). Here the caller's task queues
//! HEADERS and the whole DATA frame on the connection together, and the connection task
//! writes them in one go, alongside whatever other calls queued meanwhile.
//!
//! What it gives up, on purpose:
//! - A request body is collected whole before it is sent, so client-streaming calls do not
//!   work through it. FerrisDB's client API has none; the servers' own channels (the
//!   append stream to the safekeepers) keep tonic's `Channel`.
//! - One connection per channel: it is made on first use and remade on the next call after
//!   it breaks, which is what `Channel::connect_lazy` did for the SDK.

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use http_body::{Body as _, Frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tonic::Status;
use tonic::codegen::http::{Request, Response, Uri};
use tonic::codegen::{Service, StdError};

use crate::error::{Error, Result};
use crate::net::{
    CONNECT_TIMEOUT, ClientTls, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, install_crypto_provider,
};

/// How often an idle or busy connection is pinged, and how long the pong may take: the same
/// as every other client channel's (`net`).
const KEEPALIVE: Keepalive = Keepalive {
    interval: KEEPALIVE_INTERVAL,
    timeout: KEEPALIVE_TIMEOUT,
};

/// When a connection is pinged and how long its pong may take.
#[derive(Debug, Clone, Copy)]
struct Keepalive {
    interval: Duration,
    timeout: Duration,
}

/// Flow-control windows we grant the server, as hyper's client does by default: a response
/// of the largest legal size streams without waiting on window updates every 64 KiB.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// A lazily connecting gRPC channel over one HTTP/2 connection. Cheap to clone: clones share
/// the connection.
#[derive(Clone)]
pub struct H2Channel {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for H2Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Channel")
            .field("origin", &self.shared.origin)
            .field("tls", &self.shared.tls.is_some())
            .finish()
    }
}

struct Shared {
    /// `scheme://authority` of every request (HTTP/2's `:scheme` and `:authority`).
    origin: Uri,
    /// `host:port` to dial.
    addr: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// The connection in use, if one was made and has not been seen to break.
    live: Mutex<Option<Live>>,
    /// Held while dialing, so callers arriving meanwhile share the one new connection.
    dialing: tokio::sync::Mutex<()>,
    keepalive: Keepalive,
}

#[derive(Clone)]
struct Live {
    send: SendRequest<Bytes>,
    /// Set once the connection's task has ended (closed, failed, or missed a pong).
    closed: Arc<AtomicBool>,
}

impl H2Channel {
    /// A channel to `url` (`http://host:port`, or `https://host:port` with `tls`). Nothing is
    /// dialed until the first call.
    pub fn new(url: &str, tls: Option<&ClientTls>) -> Result<H2Channel> {
        let bad = |why: &str| Error::invalid(format!("endpoint {url:?}: {why}"));
        let uri = Uri::from_str(url).map_err(|e| bad(&e.to_string()))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("the scheme must be http or https")),
        };
        if https && tls.is_none() {
            return Err(bad("https needs TLS settings (a CA to trust)"));
        }
        // The converse: TLS was asked for, and an http:// endpoint (a typo, one entry of a
        // list) would send the bearer token in clear before anything failed.
        if !https && tls.is_some() {
            return Err(bad(
                "TLS settings (a CA to trust) are given, so the endpoint must be https:// (over http:// credentials would travel in clear)",
            ));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?.clone();
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let origin = Uri::builder()
            .scheme(uri.scheme_str().unwrap_or("http"))
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        let tls = match tls {
            Some(tls) if https => Some(tls_connector(tls, host)?),
            _ => None,
        };
        Ok(H2Channel {
            shared: Arc::new(Shared {
                origin,
                addr,
                tls,
                live: Mutex::new(None),
                dialing: tokio::sync::Mutex::new(()),
                keepalive: KEEPALIVE,
            }),
        })
    }
}

/// rustls settings trusting `tls.ca_pem`, offering HTTP/2 by ALPN, checking the name
/// `tls.domain` (default: the endpoint's host).
fn tls_connector(
    tls: &ClientTls,
    host: &str,
) -> Result<(
    tokio_rustls::TlsConnector,
    rustls::pki_types::ServerName<'static>,
)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = &tls.ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| Error::invalid(format!("CA certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| Error::invalid(format!("CA certificate: {e}")))?;
        }
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = tls.domain.as_deref().unwrap_or(host).to_string();
    let name = ServerName::try_from(name)
        .map_err(|e| Error::invalid(format!("TLS name {:?}: {e}", tls.domain)))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

impl Shared {
    /// The connection in use, or a new one.
    async fn sender(&self) -> std::result::Result<Live, Status> {
        if let Some(live) = self.current() {
            return Ok(live);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(live) = self.current() {
            return Ok(live);
        }
        let live = self.dial().await?;
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = Some(live.clone());
        Ok(live)
    }

    fn current(&self) -> Option<Live> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.as_ref()
            .filter(|l| !l.closed.load(Ordering::Acquire))
            .cloned()
    }

    async fn dial(&self) -> std::result::Result<Live, Status> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| {
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
                unavailable(&format!("connecting to {}", self.addr), e)
            })?
            .map_err(|e| unavailable(&format!("connecting to {}", self.addr), e))?;
        // Small requests and answers must not wait on Nagle's algorithm.
        tcp.set_nodelay(true)
            .map_err(|e| unavailable("setting TCP_NODELAY", e))?;
        match &self.tls {
            None => handshake(tcp, self.keepalive).await,
            Some((connector, name)) => {
                let tls =
                    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                        .await
                        .map_err(|_| {
                            let e = std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "TLS handshake timed out",
                            );
                            unavailable(&format!("TLS with {}", self.addr), e)
                        })?
                        .map_err(|e| unavailable(&format!("TLS with {}", self.addr), e))?;
                handshake(tls, self.keepalive).await
            }
        }
    }

    /// Sends one call and returns its response as soon as the headers arrive.
    async fn call(
        &self,
        request: Request<tonic::body::Body>,
    ) -> std::result::Result<Response<ResponseBody>, Status> {
        let (mut parts, body) = request.into_parts();
        let data = collect(body).await?;
        // tonic hands over a path; HTTP/2 needs the scheme and authority as well.
        let mut uri = self.origin.clone().into_parts();
        uri.path_and_query = parts.uri.path_and_query().cloned();
        parts.uri =
            Uri::from_parts(uri).map_err(|e| Status::internal(format!("request URI: {e}")))?;
        let live = self.sender().await?;
        let broken = |e: h2::Error| {
            live.closed.store(true, Ordering::Release);
            from_h2(e)
        };
        let mut send = live.send.clone().ready().await.map_err(broken)?;
        let (response, mut stream) = send
            .send_request(Request::from_parts(parts, ()), data.is_empty())
            .map_err(broken)?;
        if !data.is_empty() {
            // Queued behind the HEADERS frame; h2 holds it until the stream has credit,
            // which the connection task grants before it next writes.
            stream.send_data(data, true).map_err(from_h2)?;
        }
        let response = response.await.map_err(from_h2)?;
        Ok(response.map(ResponseBody::new))
    }
}

impl H2Channel {
    /// Opens one bidirectional gRPC call to `path` (`/package.Service/Method`) carrying
    /// `metadata` (e.g. the bearer token): its HEADERS go out now, its messages as the caller
    /// sends them through the returned [`StreamSender`], and the response arrives once the
    /// server answers its headers. A server that refuses the call in its headers (an unknown
    /// method, a bad token) answers a response whose `grpc-status` says so; reading that is
    /// the caller's part, as it is tonic's for other calls.
    pub async fn open_stream(
        &self,
        path: &'static str,
        metadata: tonic::metadata::MetadataMap,
    ) -> std::result::Result<(StreamSender, Response<ResponseBody>), Status> {
        let mut uri = self.shared.origin.clone().into_parts();
        uri.path_and_query = Some(tonic::codegen::http::uri::PathAndQuery::from_static(path));
        let uri =
            Uri::from_parts(uri).map_err(|e| Status::internal(format!("request URI: {e}")))?;
        let mut request = Request::builder()
            .method("POST")
            .uri(uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| Status::internal(format!("request: {e}")))?;
        request.headers_mut().extend(metadata.into_headers());
        let live = self.shared.sender().await?;
        let broken = |e: h2::Error| {
            live.closed.store(true, Ordering::Release);
            from_h2(e)
        };
        let mut send = live.send.clone().ready().await.map_err(broken)?;
        let (response, stream) = send.send_request(request, false).map_err(broken)?;
        let response = response.await.map_err(from_h2)?;
        Ok((StreamSender { stream }, response.map(ResponseBody::new)))
    }
}

/// The request half of a call opened by [`H2Channel::open_stream`]. What it is given is queued
/// on the connection at once (the connection task writes it as flow control allows, alongside
/// whatever else is queued), so a sender never waits; that buffering is unbounded, and bounding
/// how much is in flight is the caller's part.
pub struct StreamSender {
    stream: h2::SendStream<Bytes>,
}

impl std::fmt::Debug for StreamSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSender").finish_non_exhaustive()
    }
}

impl StreamSender {
    /// Queues `data` (whole gRPC messages, length-prefixed). An error means it was not
    /// queued: the stream was reset or the connection is gone.
    pub fn send(&mut self, data: Bytes) -> std::result::Result<(), Status> {
        self.stream.send_data(data, false).map_err(from_h2)
    }

    /// Ends the request half: the server reads to the end and may finish the call.
    pub fn finish(&mut self) {
        let _ = self.stream.send_data(Bytes::new(), true);
    }
}

/// `msg` as one length-prefixed, uncompressed gRPC message, for [`StreamSender::send`]; or,
/// when it is over `max` bytes (the receiver would end the whole call on it), its length.
pub fn grpc_message<M: prost::Message>(msg: &M, max: usize) -> std::result::Result<Bytes, usize> {
    let len = msg.encoded_len();
    if len > max {
        return Err(len);
    }
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.extend_from_slice(&[0]); // not compressed
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    // A BytesMut grows as needed, so encoding cannot run out of room.
    msg.encode_raw(&mut buf);
    Ok(buf.freeze())
}

/// Starts HTTP/2 on `io` and runs the connection (with its keepalive) on a task of its own.
async fn handshake<T>(io: T, every: Keepalive) -> std::result::Result<Live, Status>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, mut connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(from_h2)?;
    let closed = Arc::new(AtomicBool::new(false));
    let ping = connection.ping_pong();
    let flag = SetOnDrop(closed.clone());
    tokio::spawn(async move {
        // Set however the task ends, including when its runtime shuts down and drops it, so
        // a channel that outlives the runtime redials instead of reusing a dead connection.
        let _flag = flag;
        tokio::select! {
            result = &mut connection => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP/2 connection ended");
                }
            }
            () = keepalive(ping, every) => {
                tracing::debug!("HTTP/2 connection missed its keepalive pong; dropping it");
            }
        }
        // Dropping the connection fails the calls still waiting on it.
    });
    Ok(Live { send, closed })
}

/// Sets its flag when dropped.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Returns when a ping goes unanswered for `every.timeout`.
async fn keepalive(ping: Option<h2::PingPong>, every: Keepalive) {
    let Some(mut ping) = ping else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(every.interval).await;
        match tokio::time::timeout(every.timeout, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

/// The whole request body (one encoded message for a unary or server-streaming call).
async fn collect(mut body: tonic::body::Body) -> std::result::Result<Bytes, Status> {
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match &first {
            None if rest.is_empty() => first = Some(data),
            _ => {
                if let Some(f) = first.take() {
                    rest.extend_from_slice(&f);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}

/// A transport failure as the status the SDK acts on: `unavailable` (try another endpoint; for
/// a commit, the outcome is unknown), with the I/O error kept as the source so the SDK can
/// tell a refused connection (never sent) from a broken one.
fn unavailable<E: std::error::Error + Send + Sync + 'static>(what: &str, source: E) -> Status {
    let mut status = Status::unavailable(format!("{what}: {source}"));
    status.set_source(Arc::new(source));
    status
}

/// The status for an HTTP/2 failure: the stream-level reasons gRPC gives a meaning
/// (cancelled, resource exhausted, permission denied); anything else is the transport failing.
fn from_h2(e: h2::Error) -> Status {
    use h2::Reason;
    match e.reason() {
        Some(Reason::CANCEL) if e.is_remote() => Status::cancelled(e.to_string()),
        Some(Reason::ENHANCE_YOUR_CALM) => Status::resource_exhausted(e.to_string()),
        Some(Reason::INADEQUATE_SECURITY) => Status::permission_denied(e.to_string()),
        _ => unavailable("HTTP/2", e),
    }
}

impl Service<Request<tonic::body::Body>> for H2Channel {
    type Response = Response<ResponseBody>;
    type Error = StdError;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<Self::Response, StdError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::result::Result<(), StdError>> {
        // Readiness (the server's stream limit) is awaited inside the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { shared.call(request).await.map_err(StdError::from) })
    }
}

/// A response body read off its HTTP/2 stream, giving flow-control credit back as it goes.
/// The default one is empty (what an interceptor's refusal answers with).
#[derive(Default)]
pub struct ResponseBody {
    recv: Option<h2::RecvStream>,
    data_done: bool,
    done: bool,
}

impl ResponseBody {
    fn new(recv: h2::RecvStream) -> ResponseBody {
        ResponseBody {
            recv: Some(recv),
            data_done: false,
            done: false,
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let Some(recv) = this.recv.as_mut().filter(|_| !this.done) else {
            return Poll::Ready(None);
        };
        if !this.data_done {
            match ready!(recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // The bytes are ours now; let the server send more.
                    let _ = recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(from_h2(e))));
                }
                None => this.data_done = true,
            }
        }
        let trailers = ready!(recv.poll_trailers(cx));
        this.done = true;
        match trailers {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(from_h2(e)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.recv.as_ref().is_none_or(|r| r.is_end_stream())
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use tokio::net::TcpListener;
    use tonic::codegen::http;

    fn request(body: Bytes) -> Request<tonic::body::Body> {
        Request::builder()
            .method("POST")
            .uri("/ferrisdb.v1.Test/Echo")
            .header("content-type", "application/grpc")
            .body(tonic::body::Body::new(http_body_full(body)))
            .unwrap()
    }

    /// A one-frame body, as tonic encodes a unary request.
    fn http_body_full(data: Bytes) -> impl http_body::Body<Data = Bytes, Error = Status> + Send {
        struct Once(Option<Bytes>);
        impl http_body::Body for Once {
            type Data = Bytes;
            type Error = Status;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<std::result::Result<Frame<Bytes>, Status>>> {
                Poll::Ready(self.0.take().map(|d| Ok(Frame::data(d))))
            }
        }
        Once(Some(data))
    }

    async fn read_all(mut body: ResponseBody) -> (Vec<u8>, Option<http::HeaderMap>) {
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let frame = frame.unwrap();
            match frame.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        (data, trailers)
    }

    /// An HTTP/2 server that answers each request with its own body and `grpc-status: 0`,
    /// and closes each connection after `per_connection` requests. Returns its address and
    /// the number of connections it accepted.
    async fn echo_server(per_connection: usize) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut conn = h2::server::handshake(tcp).await.unwrap();
                    // The connection only makes progress while `accept` is polled, so each
                    // request is answered on a task of its own.
                    for _ in 0..per_connection {
                        let Some(Ok((req, mut respond))) = conn.accept().await else {
                            return;
                        };
                        tokio::spawn(async move {
                            let mut body = req.into_body();
                            let mut got = Vec::new();
                            while let Some(chunk) = body.data().await {
                                let chunk = chunk.unwrap();
                                body.flow_control().release_capacity(chunk.len()).unwrap();
                                got.extend_from_slice(&chunk);
                            }
                            let mut send = respond.send_response(Response::new(()), false).unwrap();
                            send.send_data(Bytes::from(got), false).unwrap();
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", "0".parse().unwrap());
                            send.send_trailers(trailers).unwrap();
                        });
                    }
                    // Let the last answer drain before the connection goes.
                    let _ = tokio::time::timeout(Duration::from_millis(500), conn.accept()).await;
                });
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn a_call_carries_its_body_and_gets_the_answer_with_trailers() {
        let (addr, _) = echo_server(usize::MAX).await;
        let mut channel = H2Channel::new(&format!("http://{addr}"), None).unwrap();
        let resp = channel
            .call(request(Bytes::from_static(b"hello")))
            .await
            .unwrap();
        let (data, trailers) = read_all(resp.into_body()).await;
        assert_eq!(data, b"hello");
        assert_eq!(trailers.unwrap().get("grpc-status").unwrap(), "0");
    }

    /// The largest message either side may send goes through both flow-control windows.
    #[tokio::test]
    async fn the_largest_message_goes_both_ways() {
        let (addr, _) = echo_server(usize::MAX).await;
        let mut channel = H2Channel::new(&format!("http://{addr}"), None).unwrap();
        let big: Bytes = (0..crate::net::MAX_MESSAGE_BYTES)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        let resp = channel.call(request(big.clone())).await.unwrap();
        let (data, _) = read_all(resp.into_body()).await;
        assert_eq!(data.len(), big.len());
        assert!(data == big[..]);
    }

    /// Calls made together share one connection; after the server closes it, the next call
    /// dials a new one.
    #[tokio::test]
    async fn one_connection_shared_and_remade_after_it_closes() {
        let (addr, accepted) = echo_server(8).await;
        let channel = H2Channel::new(&format!("http://{addr}"), None).unwrap();
        let calls: Vec<_> = (0..8u8)
            .map(|i| {
                let mut c = channel.clone();
                tokio::spawn(async move {
                    let resp = c.call(request(Bytes::from(vec![i; 10]))).await.unwrap();
                    read_all(resp.into_body()).await.0
                })
            })
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap(), vec![i as u8; 10]);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // The server has answered its 8 and closes; wait until the channel has seen it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while channel.shared.current().is_some() {
            assert!(tokio::time::Instant::now() < deadline, "close never seen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let resp = channel
            .clone()
            .call(request(Bytes::from_static(b"again")))
            .await
            .unwrap();
        assert_eq!(read_all(resp.into_body()).await.0, b"again");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// A channel used from a runtime that has since shut down (its connection task dropped)
    /// dials again from the next runtime instead of failing on the dead connection.
    #[test]
    fn a_channel_outliving_its_runtime_redials() {
        let server = tokio::runtime::Runtime::new().unwrap();
        let (addr, accepted) = server.block_on(echo_server(usize::MAX));
        let channel = H2Channel::new(&format!("http://{addr}"), None).unwrap();
        for round in 1..=2 {
            let first = tokio::runtime::Runtime::new().unwrap();
            let mut c = channel.clone();
            let answer = first.block_on(async move {
                let resp = c.call(request(Bytes::from_static(b"x"))).await.unwrap();
                read_all(resp.into_body()).await.0
            });
            assert_eq!(answer, b"x");
            drop(first);
            assert_eq!(accepted.load(Ordering::SeqCst), round);
            assert!(channel.shared.current().is_none(), "round {round}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_unavailable_with_the_io_error_as_source() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut channel = H2Channel::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        let err = channel
            .call(request(Bytes::from_static(b"x")))
            .await
            .unwrap_err();
        let status = err.downcast::<Status>().unwrap();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        let io = std::error::Error::source(&*status)
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .unwrap();
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    /// A peer that accepts the connection and then says nothing (a hung process, a partition
    /// that drops packets): the call fails once a ping goes unanswered, rather than hanging.
    #[tokio::test]
    async fn a_silent_peer_fails_the_call_after_a_missed_pong() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                held.push(tcp);
            }
        });
        let mut channel = H2Channel::new(&format!("http://{addr}"), None).unwrap();
        Arc::get_mut(&mut channel.shared).unwrap().keepalive = Keepalive {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(200),
        };
        let call = channel.call(request(Bytes::from_static(b"x")));
        let err = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("the call hung past its keepalive")
            .unwrap_err();
        assert_eq!(
            err.downcast::<Status>().unwrap().code(),
            tonic::Code::Unavailable
        );
    }

    #[test]
    fn bad_endpoints_are_refused_with_invalid() {
        for url in [
            "ftp://127.0.0.1:1",
            "127.0.0.1:4500",
            "http://",
            "https://127.0.0.1:1",
        ] {
            let err = H2Channel::new(url, None).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{url}");
        }
        let bad_ca = ClientTls {
            ca_pem: Some(
                b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".to_vec(),
            ),
            domain: None,
        };
        let err = H2Channel::new("https://127.0.0.1:1", Some(&bad_ca)).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
    }
}
