//! The databases a compute is primary for: the one it was started for and that database's
//! branches (created through it, or found on the pageserver when it starts). Each has its own
//! term on the safekeepers and its own primary; the client API routes by database name.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ferrisdb_common::clock::{Clock, SystemClock};
use ferrisdb_common::proto::pageserver_client::PageserverClient;
use ferrisdb_common::proto::{CreateBranchRequest, ListDatabasesRequest, PageserverStatusRequest};
use ferrisdb_common::{Error, ErrorKind, Result, Version};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tonic::transport::Channel;

use crate::metrics::Metrics;
use crate::primary::{Primary, Tiers};
use crate::proposer::Proposer;

/// Pause between election attempts, and between attempts to list the pageserver's branches.
const RETRY: Duration = Duration::from_millis(300);

type PrimarySlot = watch::Receiver<Option<Arc<Primary>>>;

/// The databases served and how to reach the rest of the cluster.
#[derive(Debug, Clone)]
pub struct Databases {
    /// The database the compute was started for; branches of it are served too.
    pub root: String,
    safekeepers: Vec<String>,
    pageserver: PageserverClient<Channel>,
    metrics: Metrics,
    /// What each primary's hot and warm tiers are built with.
    tiers: Tiers,
    served: Arc<RwLock<BTreeMap<String, PrimarySlot>>>,
    elections: Arc<std::sync::Mutex<Vec<AbortHandle>>>,
}

impl Databases {
    /// Serves nothing yet.
    pub fn new(
        root: String,
        safekeepers: Vec<String>,
        pageserver: PageserverClient<Channel>,
        metrics: Metrics,
    ) -> Databases {
        Databases {
            root,
            safekeepers,
            pageserver,
            metrics,
            tiers: Tiers::default(),
            served: Arc::default(),
            elections: Arc::default(),
        }
    }

    /// Builds every primary's tiers with `tiers` (default: no hot-tier budget, no warm tier).
    pub fn with_tiers(mut self, tiers: Tiers) -> Databases {
        self.tiers = tiers;
        self
    }

    /// Starts winning a term for `database` in the background, unless already serving it.
    pub fn serve(&self, database: &str) {
        let Ok(mut served) = self.served.write() else {
            return;
        };
        if served.contains_key(database) {
            return;
        }
        let (tx, rx) = watch::channel(None);
        served.insert(database.to_string(), rx);
        let election = tokio::spawn(self.clone().become_primary(database.to_string(), tx));
        if let Ok(mut e) = self.elections.lock() {
            e.push(election.abort_handle());
        }
    }

    /// Serves every branch descending from the root that the pageserver knows, retrying
    /// until the pageserver answers.
    pub async fn serve_branches(self) {
        let databases = loop {
            match self
                .pageserver
                .clone()
                .list_databases(ListDatabasesRequest {})
                .await
            {
                Ok(r) => break r.into_inner().databases,
                Err(_) => tokio::time::sleep(RETRY).await,
            }
        };
        let parents: BTreeMap<String, String> = databases
            .iter()
            .filter(|d| !d.parent.is_empty())
            .map(|d| (d.name.clone(), d.parent.clone()))
            .collect();
        for d in &databases {
            // Walk up: a branch of a branch of the root is served too.
            let mut at = d.name.clone();
            let mut hops = 0;
            while let Some(p) = parents.get(&at) {
                if *p == self.root {
                    self.serve(&d.name);
                    break;
                }
                at = p.clone();
                hops += 1;
                if hops > parents.len() {
                    break;
                }
            }
        }
    }

    /// The primary of `database`: `database_not_found` if not served, `unavailable` until it
    /// has won its term.
    pub fn primary(&self, database: &str) -> Result<Arc<Primary>> {
        let served = self
            .served
            .read()
            .map_err(|_| Error::internal("database map poisoned"))?;
        let slot = served.get(database).ok_or_else(|| {
            Error::new(
                ErrorKind::DatabaseNotFound,
                format!(
                    "this compute serves database {:?} and its branches, not {database:?}",
                    self.root
                ),
            )
        })?;
        let primary = slot.borrow().clone();
        primary.ok_or_else(|| {
            Error::unavailable(format!(
                "the compute is starting {database:?}: it has not won a term yet"
            ))
        })
    }

    /// The databases served, each with its primary once elected.
    pub fn all(&self) -> Vec<(String, Option<Arc<Primary>>)> {
        self.served.read().map_or_else(
            |_| Vec::new(),
            |m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.borrow().clone()))
                    .collect()
            },
        )
    }

    /// Creates `name` as a branch of `parent` (a database served here) at a version or
    /// timestamp (neither: the parent's latest commit) and starts serving it. Returns the
    /// branch point.
    pub async fn branch(
        &self,
        name: &str,
        parent: &str,
        version: Option<Version>,
        timestamp_micros: Option<u64>,
    ) -> Result<Version> {
        let p = self.primary(parent)?;
        // Without a point, branch at the latest commit, which the pageserver may not have
        // ingested yet: name it so the pageserver waits for it.
        let version = match (version, timestamp_micros) {
            (None, None) => Some(p.read_version()?),
            (v, _) => v,
        };
        if let Some(v) = version {
            let req = PageserverStatusRequest {
                database: parent.to_string(),
            };
            // Make sure what the branch is cut from has reached the pageserver.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let s = self.pageserver.clone().get_status(req.clone()).await?;
                if s.into_inner().ingested_version >= v.0 {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(Error::new(
                        ErrorKind::FutureVersion,
                        format!("version {v} of {parent} is not on the pageserver yet"),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let req = CreateBranchRequest {
            database: name.to_string(),
            parent: parent.to_string(),
            version: version.map_or(0, |v| v.0),
            timestamp_micros,
        };
        let at = self
            .pageserver
            .clone()
            .create_branch(req)
            .await?
            .into_inner();
        self.serve(name);
        Ok(Version(at.version))
    }

    /// Retries elections for `database` until one is won and the log recovered, then
    /// publishes the primary.
    async fn become_primary(self, database: String, primary: watch::Sender<Option<Arc<Primary>>>) {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = async {
                // What object storage already holds bounds the log from below (see
                // Proposer::elect); for a new branch that is its branch point.
                let req = PageserverStatusRequest {
                    database: database.clone(),
                };
                let durable = self
                    .pageserver
                    .clone()
                    .get_status(req)
                    .await?
                    .into_inner()
                    .remote_consistent_version;
                let proposer = Proposer::elect(&database, &self.safekeepers, durable).await?;
                Primary::start(
                    database.clone(),
                    proposer,
                    self.pageserver.clone(),
                    clock.clone(),
                    self.metrics.clone(),
                    self.tiers.clone(),
                )
                .await
            }
            .await;
            match result {
                Ok(p) => {
                    primary.send_replace(Some(p));
                    return;
                }
                Err(e) => {
                    if attempt % 10 == 1 {
                        tracing::warn!(%database, attempt, error = %e, "not primary yet; retrying");
                    }
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// Stops elections still running.
    pub fn stop(&self) {
        if let Ok(e) = self.elections.lock() {
            for h in e.iter() {
                h.abort();
            }
        }
    }
}
