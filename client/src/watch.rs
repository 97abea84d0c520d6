//! Watches: a future that completes when a key's value changes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::outgoing::Client;
use bytes::Bytes;
use ferrisdb_common::proto::WatchRequest;
use ferrisdb_common::{Result, Version};
use futures::future::BoxFuture;

/// What a fired watch saw: the version at which the key's value differed from the one the
/// watch was set on, and the value there (`None`: cleared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The version that changed the key (or a later one).
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

/// Waits on the compute until `key` differs from `known`, retrying while it is unavailable.
pub(crate) async fn wait(
    client: Client,
    database: Arc<str>,
    key: Bytes,
    known: Option<Bytes>,
) -> Result<WatchEvent> {
    let mut backoff = Duration::from_millis(10);
    loop {
        let req = WatchRequest {
            database: database.to_string(),
            key: key.clone(),
            value: known.clone(),
        };
        match client.clone().watch(req).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                return Ok(WatchEvent {
                    version: Version(resp.version),
                    value: resp.value,
                });
            }
            Err(status) => {
                let e: ferrisdb_common::Error = status.into();
                if e.kind() != ferrisdb_common::ErrorKind::Unavailable {
                    return Err(e);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
