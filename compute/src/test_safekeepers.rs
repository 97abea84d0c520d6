//! Test aid: three in-process safekeepers on free loopback ports, for the proposer, committer
//! and pipeline tests that need a real WAL quorum without starting processes.

use ferrisdb_wal_service::service::Limits;
use tokio::sync::watch;

/// Starts three safekeepers under `dir`; sending `true` (or dropping the sender) stops them.
/// They run open (no credential), as an in-process peer that holds it would see them.
pub(crate) async fn safekeepers(dir: &std::path::Path) -> (Vec<String>, watch::Sender<bool>) {
    safekeepers_with(dir, Limits::default()).await
}

/// [`safekeepers`] with `limits` (a small WAL budget, to fill it).
///
/// Each one is handed listeners this function bound (to port 0), so no other test can take
/// its ports between being found free and being listened on; it panics if one cannot start.
#[allow(clippy::unwrap_used)]
pub(crate) async fn safekeepers_with(
    dir: &std::path::Path,
    limits: Limits,
) -> (Vec<String>, watch::Sender<bool>) {
    let (stop, stopped) = watch::channel(false);
    let mut urls = Vec::new();
    for i in 0..3 {
        let bind = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (grpc, http) = (bind(), bind());
        let grpc_addr = grpc.local_addr().unwrap();
        urls.push(format!("http://{grpc_addr}"));
        let config = ferrisdb_wal_service::SafekeeperConfig {
            name: format!("safekeeper-{i}"),
            listen_grpc: grpc_addr,
            listen_http: http.local_addr().unwrap(),
            data_dir: dir.join(format!("sk{i}")),
            peers: Vec::new(),
            limits,
            object_store: None,
            security: Default::default(),
        };
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let run = ferrisdb_wal_service::run_on(config, Some((grpc, http)), async move {
                let _ = stopped.wait_for(|s| *s).await;
            });
            if let Err(e) = run.await {
                tracing::error!(safekeeper = i, error = %e, "test safekeeper stopped");
            }
        });
    }
    (urls, stop)
}

/// A loopback TCP proxy in front of the safekeeper at `url` whose answers can be held back:
/// while the returned sender holds `true`, bytes from the safekeeper wait in the proxy
/// (requests still reach it), as a paused process or a stalled disk behind open connections
/// looks to a proposer. Returns the URL to dial instead.
#[allow(clippy::unwrap_used)]
pub(crate) async fn stallable(url: &str) -> (String, watch::Sender<bool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = url.trim_start_matches("http://").to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stall, stalled) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let mut stalled = stalled.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                let requests = tokio::io::copy(&mut from_client, &mut to_server);
                let answers = async {
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = match from_server.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if stalled.wait_for(|s| !*s).await.is_err()
                            || to_client.write_all(&buf[..n]).await.is_err()
                        {
                            return;
                        }
                    }
                };
                tokio::select! {
                    _ = requests => {}
                    _ = answers => {}
                }
            });
        }
    });
    (format!("http://{addr}"), stall)
}
