//! How a replica proves a read at "the latest version" is current: it asks the primary.
//!
//! A replica applies the committed WAL as the safekeepers stream it, so its newest version
//! lags what the primary has acknowledged, and without the primary it cannot tell by how
//! much (cut off from the safekeepers, it would go on answering from a frozen log). A read at
//! the latest version must see every commit acknowledged before it began (DESIGN.md,
//! "Linearizable reads"), so a replica's read version is the primary's: it asks the primary
//! for a read version (the primary's own is linearizable: confirmed with a safekeeper
//! majority) and waits until it has applied that far. The data is still read here; only the
//! version comes from the primary, as FoundationDB's storage servers serve reads at versions
//! its proxies hand out.
//!
//! Asks are batched: every read-version request that arrives while an ask is in flight joins
//! the next one, so each answer comes from an ask that began after the request arrived (an
//! ask begun earlier could miss a commit acknowledged in between), and a busy replica sends
//! the primary one request per round trip, not one per transaction.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrisdb_common::proto::GetReadVersionRequest;
use ferrisdb_common::proto::database_client::DatabaseClient;
use ferrisdb_common::{Error, Result, Version};
use ferrisdb_server_common::auth::PeerChannel;
use tokio::sync::oneshot;

/// How long one ask of the primary may take before reads here are refused as `unavailable`.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Read versions from the primary, batched.
#[derive(Debug, Clone)]
pub struct Freshness {
    database: String,
    endpoint: String,
    client: DatabaseClient<PeerChannel>,
    state: Arc<Mutex<Pending>>,
}

/// Requests waiting for the next ask, and whether an ask is in flight.
#[derive(Debug, Default)]
struct Pending {
    waiting: Vec<oneshot::Sender<Result<Version>>>,
    asking: bool,
}

impl Freshness {
    /// Asks the primary at `endpoint` (with the cluster credential, which every client API
    /// accepts) for `database`'s read versions.
    pub fn new(database: String, endpoint: String) -> Result<Freshness> {
        let channel = ferrisdb_server_common::auth::peer_channel(&endpoint)?;
        let client = ferrisdb_common::with_message_limits!(DatabaseClient::new(channel));
        Ok(Freshness {
            database,
            endpoint,
            client,
            state: Arc::default(),
        })
    }

    /// A read version at least as new as every commit the primary acknowledged before this
    /// call: the primary's answer to an ask that began after it.
    pub async fn read_version(&self) -> Result<Version> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut state = self
                .state
                .lock()
                .map_err(|_| Error::internal("read-version batch poisoned"))?;
            state.waiting.push(tx);
            !std::mem::replace(&mut state.asking, true)
        };
        if start {
            tokio::spawn(self.clone().ask_until_drained());
        }
        rx.await
            .map_err(|_| Error::unavailable("the read-version batch was dropped"))?
    }

    /// Asks the primary once for everyone waiting, then again for whoever arrived meanwhile,
    /// until nobody waits.
    async fn ask_until_drained(self) {
        loop {
            let batch = match self.state.lock() {
                Ok(mut state) if !state.waiting.is_empty() => std::mem::take(&mut state.waiting),
                Ok(mut state) => {
                    state.asking = false;
                    return;
                }
                Err(_) => return,
            };
            let answer = self.ask().await;
            for tx in batch {
                let _ = tx.send(answer.clone());
            }
        }
    }

    async fn ask(&self) -> Result<Version> {
        let req = GetReadVersionRequest {
            database: self.database.clone(),
        };
        let mut client = self.client.clone();
        match tokio::time::timeout(ASK_TIMEOUT, client.get_read_version(req)).await {
            Ok(Ok(answer)) => Ok(Version(answer.into_inner().version)),
            Ok(Err(status)) => {
                let e = Error::from(status);
                Err(Error::new(
                    e.kind(),
                    format!(
                        "this replica reads at the primary's read version, and the primary at \
                         {} refused it: {}",
                        self.endpoint,
                        e.message()
                    ),
                ))
            }
            Err(_) => Err(Error::unavailable(format!(
                "this replica reads at the primary's read version, and the primary at {} did \
                 not answer within {ASK_TIMEOUT:?}: it cannot prove a read here is current \
                 (read at an explicit version, or at the primary)",
                self.endpoint
            ))),
        }
    }
}
