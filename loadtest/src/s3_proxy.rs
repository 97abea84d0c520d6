//! A fault-injecting TCP proxy in front of the S3 server (moto): the pageserver and the
//! safekeepers reach the bucket only through it, so the runner can make the object store fail
//! without any hook inside FerrisDB.
//!
//! Modes ([`ProxyMode`]): `Pass` forwards bytes; `Errors` answers new requests with
//! `503 Slow Down` and cuts connections in flight; `Latency` delays every chunk; `Timeouts`
//! swallows traffic (the client's own timeout fires) and closes the held connections once the
//! mode changes back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward everything.
    Pass = 0,
    /// Answer `503` and cut connections.
    Errors = 1,
    /// Delay every chunk by [`LATENCY`].
    Latency = 2,
    /// Forward nothing; hold connections open.
    Timeouts = 3,
}

/// How much each chunk is delayed in `Latency` mode.
pub const LATENCY: Duration = Duration::from_millis(400);

/// The answer to a request while the store "fails": S3's throttling error, which clients
/// retry.
fn slow_down() -> Vec<u8> {
    let body =
        "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>injected</Message></Error>";
    format!(
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The proxy; cheap to clone.
#[derive(Debug, Clone)]
pub struct S3Proxy {
    mode: Arc<AtomicU8>,
    /// Requests or connections the proxy failed, delayed or held on purpose.
    pub affected: Arc<AtomicU64>,
    /// `http://127.0.0.1:PORT` of the proxy.
    pub endpoint: String,
}

impl S3Proxy {
    /// Listens on a free loopback port and forwards to `upstream` (`127.0.0.1:PORT`).
    pub async fn start(upstream: String) -> anyhow::Result<S3Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let proxy = S3Proxy {
            mode: Arc::new(AtomicU8::new(ProxyMode::Pass as u8)),
            affected: Arc::new(AtomicU64::new(0)),
            endpoint,
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (p, upstream) = (p.clone(), upstream.clone());
                tokio::spawn(async move { p.serve(client, &upstream).await });
            }
        });
        Ok(proxy)
    }

    /// Switches the mode.
    pub fn set(&self, mode: ProxyMode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn mode(&self) -> ProxyMode {
        match self.mode.load(Ordering::SeqCst) {
            1 => ProxyMode::Errors,
            2 => ProxyMode::Latency,
            3 => ProxyMode::Timeouts,
            _ => ProxyMode::Pass,
        }
    }

    async fn wait_out(&self, mode: ProxyMode) {
        while self.mode() == mode {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn serve(&self, mut client: TcpStream, upstream: &str) {
        match self.mode() {
            ProxyMode::Errors => {
                self.affected.fetch_add(1, Ordering::Relaxed);
                let mut buf = [0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_secs(1), client.read(&mut buf)).await;
                let _ = client.write_all(&slow_down()).await;
                return;
            }
            ProxyMode::Timeouts => {
                self.affected.fetch_add(1, Ordering::Relaxed);
                self.wait_out(ProxyMode::Timeouts).await;
                return;
            }
            ProxyMode::Pass | ProxyMode::Latency => {}
        }
        let Ok(server) = TcpStream::connect(upstream).await else {
            return;
        };
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        // Either direction ending ends the connection.
        tokio::select! {
            _ = self.pump(cr, sw) => {}
            _ = self.pump(sr, cw) => {}
        }
    }

    async fn pump(
        &self,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
    ) {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            match self.mode() {
                ProxyMode::Pass => {}
                ProxyMode::Latency => {
                    self.affected.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(LATENCY).await;
                }
                ProxyMode::Errors => {
                    self.affected.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                ProxyMode::Timeouts => {
                    self.affected.fetch_add(1, Ordering::Relaxed);
                    self.wait_out(ProxyMode::Timeouts).await;
                    return;
                }
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
}
