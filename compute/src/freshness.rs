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
//!
//! A replica may be told several endpoints (`--primary-endpoint P,S`: the primary, then the
//! standby that takes over from it). Any compute's read version is linearizable — a primary
//! confirms its term with a safekeeper majority, a replica asks its own primary, a fenced
//! compute with nobody to ask refuses — so whichever endpoint answers, its answer will do.
//! An ask tries the endpoint that answered last first, then the others in order, which is
//! what keeps a replica's latest reads available across a failover to a standby elsewhere.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ferrisdb_common::proto::database_client::DatabaseClient;
use ferrisdb_common::proto::{GetReadVersionRequest, VersionAtRequest};
use ferrisdb_common::{Error, ErrorKind, Result, Version};
use ferrisdb_server_common::auth::PeerChannel;
use tokio::sync::oneshot;

/// How long one ask of the primary may take before reads here are refused as `unavailable`.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Read versions from the primary, batched.
#[derive(Debug, Clone)]
pub struct Freshness {
    database: String,
    /// Where to ask, in the order the operator gave; never empty.
    endpoints: Arc<[Endpoint]>,
    /// The index of the endpoint that answered last, tried first.
    preferred: Arc<AtomicUsize>,
    state: Arc<Mutex<Pending>>,
}

/// One compute a replica may ask.
#[derive(Debug)]
struct Endpoint {
    address: String,
    client: DatabaseClient<PeerChannel>,
}

/// Requests waiting for the next ask, and whether an ask is in flight.
#[derive(Debug, Default)]
struct Pending {
    waiting: Vec<oneshot::Sender<Result<Version>>>,
    asking: bool,
}

impl Freshness {
    /// Asks the computes at `endpoints` (with the cluster credential, which every client API
    /// accepts) for `database`'s read versions; `None` when there is nobody to ask.
    pub fn new(database: String, endpoints: &[String]) -> Result<Option<Freshness>> {
        let endpoints = endpoints
            .iter()
            .map(|address| {
                let channel = ferrisdb_server_common::auth::peer_channel(address)?;
                Ok(Endpoint {
                    address: address.clone(),
                    client: ferrisdb_common::with_message_limits!(DatabaseClient::new(channel)),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if endpoints.is_empty() {
            return Ok(None);
        }
        Ok(Some(Freshness {
            database,
            endpoints: endpoints.into(),
            preferred: Arc::default(),
            state: Arc::default(),
        }))
    }

    /// The endpoint that answered last (the first one given, until another answers): the
    /// primary as far as this replica knows.
    pub fn primary(&self) -> &str {
        &self
            .endpoint(self.preferred.load(Ordering::Relaxed))
            .address
    }

    fn endpoint(&self, index: usize) -> &Endpoint {
        &self.endpoints[index % self.endpoints.len()]
    }

    /// The batch's state. Nothing that runs under this lock can panic, and the state stays
    /// consistent at every step, so a poisoned lock is taken over rather than leaving the
    /// requests already waiting unanswered.
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A read version at least as new as every commit the primary acknowledged before this
    /// call: the primary's answer to an ask that began after it.
    pub async fn read_version(&self) -> Result<Version> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut state = self.pending();
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
            let batch = {
                let mut state = self.pending();
                if state.waiting.is_empty() {
                    state.asking = false;
                    return;
                }
                std::mem::take(&mut state.waiting)
            };
            let answer = self.ask().await;
            for tx in batch {
                let _ = tx.send(answer.clone());
            }
        }
    }

    /// Asks the endpoint that answered last, then each other in order, until one answers.
    async fn ask(&self) -> Result<Version> {
        let refusals = match self
            .in_turn(
                |mut client, database| async move {
                    let req = GetReadVersionRequest { database };
                    Ok(Version(
                        client.get_read_version(req).await?.into_inner().version,
                    ))
                },
                |_| false,
            )
            .await
        {
            Ok(answer) => return answer,
            Err(refusals) => refusals,
        };
        // One endpoint: its refusal as it was (a `database_not_found` stays one). Several:
        // `unavailable` unless they all said the same, so a client moves on and retries.
        let kind = match refusals.first() {
            Some(e) if refusals.iter().all(|r| r.kind() == e.kind()) => e.kind(),
            _ => ferrisdb_common::ErrorKind::Unavailable,
        };
        let why = refusals
            .iter()
            .map(|e| e.message().to_string())
            .collect::<Vec<_>>()
            .join("; ");
        Err(Error::new(
            kind,
            format!(
                "this replica reads at the primary's read version and cannot prove a read here \
                 is current (read at an explicit version, or at the primary): {why}"
            ),
        ))
    }

    /// The primary's answer to `VersionAt(time_micros)`, asked as [`Freshness::ask`] asks.
    /// Not batched: lookups of times no commit here settles are rare next to reads.
    pub async fn version_at(&self, time_micros: u64) -> Result<Version> {
        let asked = self
            .in_turn(
                |mut client, database| async move {
                    let req = VersionAtRequest {
                        database,
                        timestamp_micros: time_micros,
                    };
                    Ok(Version(client.version_at(req).await?.into_inner().version))
                },
                // The primary's answer, not the endpoint's failure: a time ahead of its clock.
                |e| {
                    !matches!(
                        e.kind(),
                        ErrorKind::Unavailable | ErrorKind::Fenced | ErrorKind::ReadOnly
                    )
                },
            )
            .await;
        match asked {
            Ok(answer) => answer,
            Err(refusals) => Err(Error::unavailable(format!(
                "this replica maps a time no commit it has applied settles by asking the primary, \
                 and none answered: {}",
                refusals
                    .iter()
                    .map(|e| e.message().to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ))),
        }
    }

    /// Makes `call` on the endpoint that answered last, then on each other in order, each
    /// bounded by [`ASK_TIMEOUT`], until one answers (and is preferred from then on) or
    /// refuses with an error `is_answer` takes as the answer itself (that error is the
    /// answer). Otherwise every endpoint's refusal, named by its address.
    async fn in_turn<T, F, Fut>(
        &self,
        call: F,
        is_answer: impl Fn(&Error) -> bool,
    ) -> std::result::Result<Result<T>, Vec<Error>>
    where
        F: Fn(DatabaseClient<PeerChannel>, String) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut refusals = Vec::new();
        for offset in 0..self.endpoints.len() {
            let index = (first + offset) % self.endpoints.len();
            let endpoint = self.endpoint(index);
            let asked = call(endpoint.client.clone(), self.database.clone());
            match tokio::time::timeout(ASK_TIMEOUT, asked).await {
                Ok(Ok(answer)) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(Ok(answer));
                }
                Ok(Err(e)) if is_answer(&e) => return Ok(Err(e)),
                Ok(Err(e)) => refusals.push(Error::new(
                    e.kind(),
                    format!("{} refused: {}", endpoint.address, e.message()),
                )),
                Err(_) => refusals.push(Error::unavailable(format!(
                    "{} did not answer within {ASK_TIMEOUT:?}",
                    endpoint.address
                ))),
            }
        }
        Err(refusals)
    }
}
