//! Watches: a future that completes when a key's value changes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::outgoing::Client;
use bytes::Bytes;
use ferrisdb_common::proto::{GetRequest, WatchRequest};
use ferrisdb_common::{Result, Version};
use futures::future::BoxFuture;

/// What a fired watch saw: the version at which the key's value differed from the one the
/// watch was set on, and the value there (`None`: cleared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The version that changed the key (a later one only when the key's history does not
    /// list the change: below the retention horizon).
    pub version: Version,
    /// The key's value at `version`.
    pub value: Option<Bytes>,
}

/// A key's watch: resolves once the key's committed value differs from the value the watch
/// was set on. Dropping it cancels it. It survives the compute going away: it retries
/// `unavailable` with backoff (a new primary answers at once if the value changed meanwhile).
///
/// Made by [`Database::watch`](crate::Database::watch) (the value now) or
/// [`Transaction::watch`](crate::Transaction::watch) (the value at the transaction's commit).
pub struct Watch {
    fut: BoxFuture<'static, Result<WatchEvent>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

impl Watch {
    pub(crate) fn new(fut: BoxFuture<'static, Result<WatchEvent>>) -> Watch {
        Watch { fut }
    }
}

impl Future for Watch {
    type Output = Result<WatchEvent>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.fut.as_mut().poll(cx)
    }
}

/// The value a watch is set on.
#[derive(Debug, Clone)]
pub(crate) enum Known {
    /// This value (`None`: the key has none).
    Value(Option<Bytes>),
    /// Whatever the key held at this version (a transaction's commit), read first.
    At(Version),
}

/// Where a watch's calls go: the compute to ask now (with its index among the endpoints),
/// and what to do when that one could not answer (move on to the next endpoint).
#[derive(Clone)]
pub(crate) struct Target {
    /// The endpoint to ask now.
    pub(crate) pick: Arc<dyn Fn() -> (usize, Client) + Send + Sync>,
    /// Called with the endpoint that was unavailable or fenced.
    pub(crate) failed: Arc<dyn Fn(usize) + Send + Sync>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Target")
    }
}

impl Target {
    /// Always the one compute (a transaction's watch: its own connection).
    pub(crate) fn fixed(client: Client) -> Target {
        Target {
            pick: Arc::new(move || (0, client.clone())),
            failed: Arc::new(|_| {}),
        }
    }
}

/// Waits on the compute until `key` differs from `known`, retrying while it is unavailable
/// and moving through the target's endpoints as a transaction would (a watch set through a
/// list of computes follows a failover to the standby).
pub(crate) async fn wait(
    target: Target,
    database: Arc<str>,
    key: Bytes,
    known: Known,
) -> Result<WatchEvent> {
    let mut backoff = Duration::from_millis(10);
    let mut known = known;
    loop {
        let (endpoint, mut client) = (target.pick)();
        // Only the read at the transaction's commit version can meet a compute that has not
        // applied that version yet (a replica behind, after a failover): it will have.
        let reading_at = matches!(known, Known::At(_));
        let outcome = match &known {
            // The value the watch is set on, read at its version first: on any compute, as
            // a read at an explicit version answers the same everywhere.
            Known::At(at) => client
                .get(GetRequest {
                    database: database.to_string(),
                    key: key.clone(),
                    version: at.0,
                    latest: false,
                })
                .await
                .map(|resp| {
                    known = Known::Value(resp.into_inner().value);
                    None
                }),
            Known::Value(value) => client
                .watch(WatchRequest {
                    database: database.to_string(),
                    key: key.clone(),
                    value: value.clone(),
                })
                .await
                .map(|resp| {
                    let resp = resp.into_inner();
                    Some(WatchEvent {
                        version: Version(resp.version),
                        value: resp.value,
                    })
                }),
        };
        match outcome {
            Ok(Some(event)) => return Ok(event),
            Ok(None) => continue,
            Err(status) => {
                let e: ferrisdb_common::Error = status.into();
                let retry = match e.kind() {
                    ferrisdb_common::ErrorKind::Unavailable
                    | ferrisdb_common::ErrorKind::Fenced => true,
                    // The version was committed: whoever is behind it catches up.
                    ferrisdb_common::ErrorKind::FutureVersion => reading_at,
                    _ => false,
                };
                if !retry {
                    return Err(e);
                }
                (target.failed)(endpoint);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::{BufMut, BytesMut};
    use ferrisdb_common::proto::{GetResponse, WatchResponse};
    use prost::Message;
    use tonic::codegen::http;

    use super::*;

    fn frame(msg: &impl Message) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_u8(0);
        buf.put_u32(msg.encoded_len() as u32);
        msg.encode(&mut buf).unwrap();
        buf.freeze()
    }

    /// A compute behind the commit a transaction's watch starts from: its first read at that
    /// version answers `future_version` (a replica that has not applied it yet, as one may
    /// after a failover), the next ones the value; its watch answers a later change.
    async fn behind_once() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let gets = Arc::new(AtomicUsize::new(0));
        let counted = gets.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let gets = counted.clone();
                tokio::spawn(async move {
                    let mut conn = h2::server::handshake(tcp).await.unwrap();
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        let ok = http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(())
                            .unwrap();
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        let body = match req.uri().path() {
                            "/ferrisdb.v1.Database/Get"
                                if gets.fetch_add(1, Ordering::SeqCst) == 0 =>
                            {
                                let mut refused = ok;
                                let h = refused.headers_mut();
                                h.insert("grpc-status", "11".parse().unwrap());
                                h.insert("grpc-message", "not applied yet".parse().unwrap());
                                h.insert("ferrisdb-code", "future_version".parse().unwrap());
                                respond.send_response(refused, true).unwrap();
                                continue;
                            }
                            "/ferrisdb.v1.Database/Get" => frame(&GetResponse {
                                value: Some(Bytes::from_static(b"old")),
                                read_version: 5,
                            }),
                            "/ferrisdb.v1.Database/Watch" => frame(&WatchResponse {
                                version: 9,
                                value: Some(Bytes::from_static(b"new")),
                            }),
                            other => panic!("unscripted {other}"),
                        };
                        let mut send = respond.send_response(ok, false).unwrap();
                        send.send_data(body, false).unwrap();
                        send.send_trailers(trailers).unwrap();
                    }
                });
            }
        });
        (url, gets)
    }

    /// A transaction's watch reads the key at its commit version first; a compute that has
    /// not applied that version yet is waited for, not taken for a failed watch.
    #[tokio::test]
    async fn a_watch_from_a_commit_waits_for_a_compute_behind_it() {
        let (url, gets) = behind_once().await;
        let db = crate::Database::connect(&url).await.unwrap();
        let watch = wait(
            Target::fixed(db.current_client()),
            Arc::from("db"),
            Bytes::from_static(b"k"),
            Known::At(Version(5)),
        );
        let event = tokio::time::timeout(Duration::from_secs(10), watch)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            event,
            WatchEvent {
                version: Version(9),
                value: Some(Bytes::from_static(b"new")),
            }
        );
        assert_eq!(
            gets.load(Ordering::SeqCst),
            2,
            "read again after the refusal"
        );
    }
}
