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
#[allow(clippy::unwrap_used)]
pub(crate) async fn safekeepers_with(
    dir: &std::path::Path,
    limits: Limits,
) -> (Vec<String>, watch::Sender<bool>) {
    let (stop, stopped) = watch::channel(false);
    let mut urls = Vec::new();
    for i in 0..3 {
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
        };
        let (grpc, http) = (port(), port());
        urls.push(format!("http://{grpc}"));
        let config = ferrisdb_wal_service::SafekeeperConfig {
            name: format!("safekeeper-{i}"),
            listen_grpc: grpc,
            listen_http: http,
            data_dir: dir.join(format!("sk{i}")),
            peers: Vec::new(),
            limits,
            object_store: None,
            security: Default::default(),
        };
        let mut stopped = stopped.clone();
        tokio::spawn(ferrisdb_wal_service::run(config, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
    }
    (urls, stop)
}
