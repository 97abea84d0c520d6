//! Admitting a new connection: its TLS handshake (when the listener has TLS) and its first
//! bytes must arrive within [`HANDSHAKE_DEADLINE`], or it is closed.
//!
//! Why: neither tonic nor hyper bounds that stage. A TCP connection that never sent a byte,
//! or sent its TLS hello or HTTP/2 preface a byte at a time, was kept for good, and ~20,000
//! of them took every file descriptor of a compute: every client was refused and the admin
//! API stopped accepting (an outside audit). Once admitted, a connection is the protocol's
//! business: HTTP/2 pings find dead peers, and HTTP/1.1 bounds the reading of each request's
//! headers (see `crate::serve`).
//!
//! The bytes read here are handed on: an [`Admitted`] connection replays them before reading
//! on, so the server sees the connection as the client sent it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long a new connection has to finish its TLS handshake and send its first bytes.
/// Generous for any client on any network (a handshake is two round trips), short enough
/// that connections which never speak cannot pile up.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// The HTTP/2 connection preface a gRPC client sends first (RFC 9113 §3.4).
pub const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection must send first to be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// The HTTP/2 preface, whole: a gRPC listener (HTTP/2 only).
    Http2Preface,
    /// Any first byte: an HTTP listener that speaks HTTP/1.1 and HTTP/2.
    AnyByte,
}

impl Opening {
    fn len(self) -> usize {
        match self {
            Opening::Http2Preface => HTTP2_PREFACE.len(),
            Opening::AnyByte => 1,
        }
    }
}

/// The transport under an admitted connection: TCP, or TLS over it.
type Transport = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// A connection that finished its handshake and sent its opening in time; it reads the
/// opening again first, then the rest of what the client sends.
#[derive(Debug)]
pub struct Admitted {
    transport: Transport,
    opening: [u8; HTTP2_PREFACE.len()],
    /// Bytes of `opening` read by [`admit`].
    opening_len: usize,
    /// Bytes of `opening` handed on so far.
    replayed: usize,
    info: TcpConnectInfo,
}

/// Admits `tcp`: the TLS handshake with `tls`, then `opening`, both within
/// [`HANDSHAKE_DEADLINE`]. An error (timed out, closed, not HTTP/2) means: close it.
pub async fn admit(
    tcp: TcpStream,
    tls: Option<&TlsAcceptor>,
    opening: Opening,
) -> io::Result<Admitted> {
    let info = TcpConnectInfo {
        local_addr: tcp.local_addr().ok(),
        remote_addr: tcp.peer_addr().ok(),
    };
    let admit = async move {
        let mut transport = match tls {
            Some(acceptor) => Either::Right(Box::new(acceptor.accept(tcp).await?)),
            None => Either::Left(tcp),
        };
        let mut first = [0u8; HTTP2_PREFACE.len()];
        let len = opening.len();
        transport.read_exact(&mut first[..len]).await?;
        if opening == Opening::Http2Preface && &first != HTTP2_PREFACE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not an HTTP/2 connection preface (this port speaks gRPC)",
            ));
        }
        Ok(Admitted {
            transport,
            opening: first,
            opening_len: len,
            replayed: 0,
            info,
        })
    };
    tokio::time::timeout(HANDSHAKE_DEADLINE, admit)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no handshake within the deadline"))?
}

/// The connections `accepted` yields that pass [`admit`], each admitted in a task of its
/// own, so a slow or silent one holds up no other. Ends when the stream is dropped; until
/// then the accept loop runs in a task (which owns the listener).
pub fn admitted<S>(
    accepted: S,
    tls: Option<Arc<rustls::ServerConfig>>,
    opening: Opening,
) -> impl futures::Stream<Item = io::Result<Admitted>> + Send + 'static
where
    S: futures::Stream<Item = io::Result<TcpStream>> + Send + 'static,
{
    use futures::StreamExt;
    let acceptor = tls.map(TlsAcceptor::from);
    // Bounded: a server that stops taking connections makes admission wait, not queue.
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Admitted>>(64);
    tokio::spawn(async move {
        let mut accepted = std::pin::pin!(accepted);
        loop {
            let tcp = tokio::select! {
                // The server is gone: stop accepting (and drop the listener).
                _ = tx.closed() => return,
                next = accepted.next() => match next {
                    Some(Ok(tcp)) => tcp,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "accept failed");
                        continue;
                    }
                    None => return,
                },
            };
            let (tx, acceptor) = (tx.clone(), acceptor.clone());
            tokio::spawn(async move {
                match admit(tcp, acceptor.as_ref(), opening).await {
                    Ok(conn) => {
                        let _ = tx.send(Ok(conn)).await;
                    }
                    // Scanners, health checks that only open a socket, silent clients: not
                    // worth more than a debug line each.
                    Err(e) => tracing::debug!(error = %e, "connection not admitted"),
                }
            });
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}

impl Connected for Admitted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.replayed < this.opening_len {
            let rest = &this.opening[this.replayed..this.opening_len];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.transport).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().transport).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().transport).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.transport.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().transport).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().transport).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, server) = tokio::join!(client, listener.accept());
        (client.unwrap(), server.unwrap().0)
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_speaks_is_refused_at_the_deadline() {
        let (_client, server) = pair().await;
        let e = admit(server, None, Opening::AnyByte).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_preface_sent_a_byte_at_a_time_past_the_deadline_is_refused() {
        let (mut client, server) = pair().await;
        let admitting = tokio::spawn(admit(server, None, Opening::Http2Preface));
        for b in HTTP2_PREFACE {
            // Fails once the server has given up on the connection.
            if client.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let e = admitting.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn an_admitted_connection_replays_its_opening_then_reads_on() {
        let (mut client, server) = pair().await;
        client.write_all(HTTP2_PREFACE).await.unwrap();
        client.write_all(b"then more").await.unwrap();
        let mut conn = admit(server, None, Opening::Http2Preface).await.unwrap();
        let mut got = vec![0u8; HTTP2_PREFACE.len() + 9];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..24], HTTP2_PREFACE);
        assert_eq!(&got[24..], b"then more");
        assert!(conn.connect_info().remote_addr.is_some());
        // And writes go through to the client.
        conn.write_all(b"answer").await.unwrap();
        let mut answer = [0u8; 6];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"answer");
    }

    #[tokio::test]
    async fn something_other_than_http2_is_refused_on_a_grpc_listener() {
        let (mut client, server) = pair().await;
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let e = admit(server, None, Opening::Http2Preface)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
