//! The databases a compute serves: the one it was started for and that database's branches
//! (created through it, or found on the pageserver when it starts). For each it is primary
//! (its own term on the safekeepers), replica (following the WAL), or standby (a replica that
//! takes over when the primary stops answering); the client API routes by database name.
//!
//! A primary that loses its term (another compute won a newer one) does not go dark: it
//! becomes a replica of the log it used to write, still serving reads, and refuses commits
//! with `fenced`. A standby that was demoted this way goes back to watching the primary.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ferrisdb_common::error::Reason;
use ferrisdb_common::proto::pageserver_client::PageserverClient;
use ferrisdb_common::proto::{CreateBranchRequest, ListDatabasesRequest};
use ferrisdb_common::{Error, ErrorKind, Result, Version};
use ferrisdb_server_common::auth::CallChannel;
use ferrisdb_server_common::clock::Clock;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::Role;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::page_source::{PageSource, Pageserver};
use crate::primary::Primary;
use crate::proposer::Proposer;
use crate::read_path::Tiers;
use crate::replica::Replica;
use ferrisdb_common::proto::GetReadVersionRequest;
use ferrisdb_common::proto::database_client::DatabaseClient;

/// How long creating a branch waits for its parent, and then for itself, to be serving.
pub const BRANCH_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between election attempts, and between attempts to list the pageserver's branches.
const RETRY: Duration = Duration::from_millis(300);

/// The least time between two looks at the pageserver for a database a request named that
/// this compute does not serve ([`Databases::find`]).
pub const DISCOVERY_EVERY: Duration = Duration::from_secs(1);

/// How often a compute lists the pageserver's databases for branches of its root it does
/// not serve yet ([`Databases::serve_branches`]).
pub const BRANCH_DISCOVERY_EVERY: Duration = Duration::from_secs(5);

/// The longest pause between election attempts: each failed attempt doubles it from
/// [`RETRY`] up to here. Every failed election still raises the term on the safekeepers that
/// granted it, and an acceptor refuses a term more than `MAX_TERM_STEP` (2^20) above its own
/// promise; at a steady 300 ms, a compute retrying while a majority stayed damaged or away
/// would carry one safekeeper that far past the others in under four days, after which they
/// could never vote together again. At 2 s that takes over three weeks.
const ELECTION_RETRY_MAX: Duration = Duration::from_secs(2);

/// The pause after `failures` failed election attempts in a row.
fn election_pause(failures: u32) -> Duration {
    RETRY
        .saturating_mul(1u32 << failures.saturating_sub(1).min(8))
        .min(ELECTION_RETRY_MAX)
}

/// How often a standby asks the primary whether it is alive.
const PROBE_EVERY: Duration = Duration::from_millis(300);
/// Failed probes in a row after which a standby takes over (about a second of silence).
const PROBES_BEFORE_TAKEOVER: u32 = 3;
/// How long a standby lets a primary answer "starting" before it counts that as failure: a
/// restarted primary elects, recovers the log and then waits out the read lease of whoever
/// served before it (up to [`ferrisdb_common::lease::LEASE`]); taking over meanwhile would
/// fence it, and it would fence back. A primary stuck starting longer is taken over from.
const STARTING_GRACE: Duration = Duration::from_secs(6);

type NodeSlot = watch::Receiver<Option<Node>>;

/// The databases served and how to reach the rest of the cluster.
#[derive(Debug, Clone)]
pub struct Databases {
    /// The database the compute was started for; branches of it are served too.
    pub root: String,
    safekeepers: Vec<String>,
    pageserver: Pageserver,
    metrics: Metrics,
    /// What each primary's hot and warm tiers are built with.
    tiers: Tiers,
    served: Arc<RwLock<BTreeMap<String, NodeSlot>>>,
    elections: Arc<std::sync::Mutex<Vec<AbortHandle>>>,
    role: Role,
    /// The primary's client endpoint, then any standby's that may take over from it
    /// (replicas ask them for read versions; standbys watch them).
    primary_endpoints: Vec<String>,
    /// Where primaries run their commit pipelines (`None`: on the caller's runtime).
    pipeline: Option<tokio::runtime::Handle>,
    /// When [`Databases::find`] last asked the pageserver for its databases; held while it
    /// asks, so concurrent misses ask once.
    last_discovery: Arc<tokio::sync::Mutex<Option<tokio::time::Instant>>>,
    /// Why each database still starting failed its last attempt (a pageserver that holds it
    /// as damaged, say), so clients told to wait are told what for.
    start_errors: Arc<std::sync::Mutex<BTreeMap<String, Error>>>,
}

impl Databases {
    /// Serves nothing yet.
    pub fn new(
        root: String,
        safekeepers: Vec<String>,
        pageserver: PageserverClient<CallChannel>,
        metrics: Metrics,
    ) -> Databases {
        Databases {
            root,
            safekeepers,
            pageserver: Pageserver::grpc(pageserver),
            metrics,
            tiers: Tiers::default(),
            served: Arc::default(),
            elections: Arc::default(),
            role: Role::Primary,
            primary_endpoints: Vec::new(),
            pipeline: None,
            last_discovery: Arc::default(),
            start_errors: Arc::default(),
        }
    }

    /// Serves every database as `role`, with the primary (or a standby that took over from
    /// it) at one of `primary_endpoints`.
    pub fn with_role(mut self, role: Role, primary_endpoints: Vec<String>) -> Databases {
        self.role = role;
        self.primary_endpoints = primary_endpoints;
        self
    }

    /// Builds every primary's tiers with `tiers` (default: no hot-tier budget, no warm tier).
    pub fn with_tiers(mut self, tiers: Tiers) -> Databases {
        self.tiers = tiers;
        self
    }

    /// Runs every primary's commit pipeline on `pipeline` (see [`crate::pipeline_thread`])
    /// rather than on the runtime that serves requests.
    pub fn with_pipeline_runtime(mut self, pipeline: tokio::runtime::Handle) -> Databases {
        self.pipeline = Some(pipeline);
        self
    }

    /// Names the pageserver's URL, so each change feed gets a connection of its own
    /// ([`Pageserver::feed_client`]).
    pub fn with_pageserver_url(mut self, url: &str) -> Databases {
        self.pageserver.url = Some(url.to_string());
        self
    }

    /// Sends every read of the pageserver through `pages` (a test's fault injector) instead
    /// of the gRPC client.
    pub fn with_page_source(mut self, pages: Arc<dyn PageSource>) -> Databases {
        self.pageserver = self.pageserver.with_pages(pages);
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
        let this = self.clone();
        let database = database.to_string();
        let election = tokio::spawn(async move {
            match this.role {
                Role::Primary => {
                    this.lead(&database, &tx).await;
                }
                Role::Replica => loop {
                    let replica = this.become_replica(&database, &tx, None).await;
                    replica.fell_behind().await;
                    tracing::warn!(%database, "the replica fell behind the WAL the safekeepers keep: starting it again from the pageserver");
                },
                Role::Standby => {
                    let mut replica = this.become_replica(&database, &tx, None).await;
                    // Without a primary to watch there is nothing to take over from twice:
                    // leading again after a demotion would only fence the new primary.
                    while !this.primary_endpoints.is_empty() {
                        tokio::select! {
                            _ = this.wait_for_primary_to_die(&database) => {}
                            _ = replica.fell_behind() => {
                                tracing::warn!(%database, "the standby fell behind the WAL the safekeepers keep: starting it again from the pageserver");
                                replica = this.become_replica(&database, &tx, None).await;
                                continue;
                            }
                        }
                        tracing::warn!(%database, primary = ?this.primary_endpoints, "the primary stopped answering: taking over");
                        // Until this compute serves as primary, its clients are told to wait,
                        // not sent to the primary that just stopped answering.
                        if let Some(Node::Replica(r)) = tx.borrow().as_ref() {
                            r.start_taking_over();
                        }
                        replica = this.lead(&database, &tx).await;
                    }
                }
            }
        });
        if let Ok(mut e) = self.elections.lock() {
            e.push(election.abort_handle());
        }
    }

    /// Serves every branch descending from the root that the pageserver knows, and goes on
    /// looking every [`BRANCH_DISCOVERY_EVERY`]: a branch created since (through another
    /// compute, or the pageserver's own route) is then served here too, so a standby has
    /// each branch's replica running, and takes each over with the root, before a client
    /// names it (it used to start one at the first request, which waited for the dead
    /// primary's probes first: an outside audit's branch answered `unavailable` 20 s after
    /// the failover, then took 4 s).
    pub async fn serve_branches(self) {
        loop {
            let pause = match self.discover_branches().await {
                Ok(()) => BRANCH_DISCOVERY_EVERY,
                Err(e) => {
                    tracing::debug!(error = %e, "listing the pageserver's databases");
                    RETRY
                }
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Every database the pageserver holds.
    pub async fn list_all(&self) -> Result<Vec<ferrisdb_common::proto::DatabaseInfo>> {
        Ok(self
            .pageserver
            .admin
            .clone()
            .list_databases(ListDatabasesRequest {})
            .await?
            .into_inner()
            .databases)
    }

    /// Whether this compute serves `database` (in any role, or starting to).
    pub fn serves(&self, database: &str) -> bool {
        self.served
            .read()
            .is_ok_and(|served| served.contains_key(database))
    }

    /// Asks the pageserver for its databases once and serves every branch descending from
    /// the root that is not served yet (created through the pageserver's own admin route,
    /// or by another compute).
    async fn discover_branches(&self) -> Result<()> {
        let databases = self.list_all().await?;
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
        Ok(())
    }

    /// [`Databases::node`], and for a database not served here, a look at the pageserver
    /// that began after the request arrived: a branch of the root created on the pageserver
    /// directly is served from the first request that names it (waiting, as a new branch
    /// does, for its first term). Looks are at most one a [`DISCOVERY_EVERY`] and shared by
    /// the requests waiting for one, so requests naming databases that exist nowhere cost
    /// the pageserver one call a second (and wait up to that long for their refusal).
    pub async fn find(&self, database: &str) -> Result<Node> {
        let asked = tokio::time::Instant::now();
        match self.node(database) {
            Err(e) if e.kind() == ErrorKind::DatabaseNotFound => {
                {
                    let mut last = self.last_discovery.lock().await;
                    // A look that began after this request arrived has seen what it needs.
                    if !last.is_some_and(|began| began >= asked) {
                        if let Some(began) = *last {
                            tokio::time::sleep_until(began + DISCOVERY_EVERY).await;
                        }
                        *last = Some(tokio::time::Instant::now());
                        if let Err(failed) = self.discover_branches().await {
                            tracing::debug!(error = %failed, "listing the pageserver's databases");
                            return Err(e);
                        }
                    }
                }
                self.node_when_started(database, BRANCH_START_TIMEOUT).await
            }
            found => found,
        }
    }

    /// The primary of `database`: `database_not_found` if not served, `unavailable` until it
    /// has won its term, `read_only` where this compute is a replica.
    pub fn primary(&self, database: &str) -> Result<Arc<Primary>> {
        self.node(database)?.primary().cloned()
    }

    /// What this compute is for `database`: `database_not_found` if not served,
    /// `unavailable` until it has a role.
    pub fn node(&self, database: &str) -> Result<Node> {
        let served = self
            .served
            .read()
            .map_err(|_| Error::internal("database map poisoned"))?;
        let Some(slot) = served.get(database) else {
            // Checked only on a miss (every served name is valid, and this runs per
            // request): a name no database can have is bad input, not one this compute lacks.
            ferrisdb_common::validate_database_name(database)?;
            return Err(Error::new(
                ErrorKind::DatabaseNotFound,
                format!(
                    "this compute serves database {:?} and its branches, not {}",
                    self.root,
                    ferrisdb_common::error::echo(database)
                ),
            ));
        };
        let node = slot.borrow().clone();
        node.ok_or_else(|| {
            let last = self
                .start_errors
                .lock()
                .ok()
                .and_then(|m| m.get(database).map(|e| format!(" (its last attempt: {e})")))
                .unwrap_or_default();
            Error::unavailable(format!(
                "the compute is starting {}: it is not serving it yet{last}",
                ferrisdb_common::error::echo(database)
            ))
            .with_reason(Reason::Starting)
        })
    }

    /// Records why starting `database` failed (`None`: it started).
    fn note_start(&self, database: &str, outcome: Option<&Error>) {
        if let Ok(mut m) = self.start_errors.lock() {
            match outcome {
                Some(e) => {
                    m.insert(database.to_string(), e.clone());
                }
                None => {
                    m.remove(database);
                }
            }
        }
    }

    /// [`Databases::node`], waiting up to `timeout` while `database` is still starting (a
    /// branch just created is electing its first term).
    pub async fn node_when_started(&self, database: &str, timeout: Duration) -> Result<Node> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.node(database) {
                Err(e)
                    if e.kind() == ErrorKind::Unavailable
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }

    /// The databases served, each with its role once it has one.
    pub fn all(&self) -> Vec<(String, Option<Node>)> {
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
    /// branch point once the branch serves, or after [`BRANCH_START_TIMEOUT`] with why it is
    /// still starting. A parent that is itself still starting is waited for as long.
    pub async fn branch(
        &self,
        name: &str,
        parent: &str,
        version: Option<Version>,
        timestamp_micros: Option<u64>,
    ) -> Result<(Version, Option<Error>)> {
        let p = self
            .node_when_started(parent, BRANCH_START_TIMEOUT)
            .await?
            .primary()
            .cloned()?;
        // Without a point, branch at the latest commit, which the pageserver may not have
        // ingested yet: name it so the pageserver waits for it. A timestamp is mapped here
        // too, where every commit up to now is known: the pageserver would map it by what it
        // has ingested so far and could cut the branch below a commit made before that time.
        let version = match (version, timestamp_micros) {
            (None, None) => p.read_version().await?,
            (None, Some(t)) => p.version_at(t).await?,
            (Some(v), None) => v,
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "branch at a version or at a timestamp, not both",
                ));
            }
        };
        // Past the parent's latest commit nothing can be waited for: no version above it
        // exists yet.
        let latest = p.view().latest();
        if version > latest {
            return Err(Error::new(
                ErrorKind::FutureVersion,
                format!("version {version} of {parent} is newer than its latest commit {latest}"),
            ));
        }
        // Make sure what the branch is cut from has reached the pageserver.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.pageserver.pages.status(parent).await?;
            if s.ingested_version >= version.0 {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::new(
                    ErrorKind::FutureVersion,
                    format!("version {version} of {parent} is not on the pageserver yet"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let req = CreateBranchRequest {
            database: name.to_string(),
            parent: parent.to_string(),
            version: Some(version.0),
            timestamp_micros: None,
        };
        let at = self
            .pageserver
            .admin
            .clone()
            .create_branch(req)
            .await?
            .into_inner();
        self.serve(name);
        // Answer once the branch serves, so the caller's next request finds it; a branch
        // still starting after the wait exists all the same, and the caller hears why.
        let starting = self
            .node_when_started(name, BRANCH_START_TIMEOUT)
            .await
            .err();
        Ok((Version(at.version), starting))
    }

    /// Serves `database` as its primary until a newer term fences it, then as a replica that
    /// says it lost its term (returned).
    async fn lead(&self, database: &str, node: &watch::Sender<Option<Node>>) -> Arc<Replica> {
        let primary = self.become_primary(database.to_string(), node).await;
        let why = primary.fenced().await;
        primary.view().watches().close();
        drop(primary);
        tracing::warn!(%database, %why, "lost the term: serving reads as a replica");
        self.become_replica(database, node, Some(why)).await
    }

    /// Retries elections for `database` until one is won and the log recovered, then
    /// publishes the primary.
    async fn become_primary(
        &self,
        database: String,
        node: &watch::Sender<Option<Node>>,
    ) -> Arc<Primary> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = async {
                // What object storage already holds bounds the log from below (see
                // Proposer::elect); for a new branch that is its branch point.
                // What it ingested is committed WAL, which the elected log must hold.
                let held = self.pageserver.pages.status(&database).await?;
                let proposer = Proposer::elect(
                    &database,
                    &self.safekeepers,
                    held.remote_consistent_version,
                    held.ingested_version,
                )
                .await?;
                // Commit times follow the safekeepers' clocks, not this compute's alone.
                let clock: Arc<dyn Clock> = proposer.clock();
                Primary::start(
                    database.clone(),
                    proposer,
                    self.pageserver.clone(),
                    clock,
                    self.metrics.clone(),
                    self.tiers.clone(),
                    self.pipeline.as_ref(),
                )
                .await
            }
            .await;
            match result {
                Ok(p) => {
                    self.note_start(&database, None);
                    node.send_replace(Some(Node::Primary(p.clone())));
                    return p;
                }
                Err(e) => {
                    self.note_start(&database, Some(&e));
                    if attempt % 10 == 1 {
                        tracing::warn!(%database, attempt, error = %e, "not primary yet; retrying");
                    }
                    tokio::time::sleep(election_pause(attempt)).await;
                }
            }
        }
    }

    /// Retries starting a replica of `database` until the pageserver answers, then publishes
    /// it. `lost_term` says why this compute stopped being primary, if it was.
    async fn become_replica(
        &self,
        database: &str,
        node: &watch::Sender<Option<Node>>,
        lost_term: Option<String>,
    ) -> Arc<Replica> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let replica = Replica::start(
                database.to_string(),
                self.safekeepers.clone(),
                self.pageserver.clone(),
                self.metrics.clone(),
                self.tiers.clone(),
                &self.primary_endpoints,
                lost_term.clone(),
            )
            .await;
            match replica {
                Ok(r) => {
                    self.note_start(database, None);
                    node.send_replace(Some(Node::Replica(r.clone())));
                    return r;
                }
                Err(e) => {
                    self.note_start(database, Some(&e));
                    if attempt % 10 == 1 {
                        tracing::warn!(%database, attempt, error = %e, "cannot start the replica yet; retrying");
                    }
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// Returns once the primary has failed [`PROBES_BEFORE_TAKEOVER`] probes in a row: it is
    /// unreachable or not serving. With several endpoints (the primary, then other standbys)
    /// a probe goes to all of them and succeeds if any answers, so a standby does not take
    /// over from another that already has. A primary that is merely slow or partitioned from
    /// this standby is fenced by the election that follows, so a wrong guess costs
    /// availability for a moment, never safety.
    async fn wait_for_primary_to_die(&self, database: &str) {
        // The cluster credential rides along, so a primary that requires client tokens
        // still answers this probe.
        let (endpoints, clients): (Vec<&String>, Vec<_>) = self
            .primary_endpoints
            .iter()
            .filter_map(|e| {
                let channel = ferrisdb_server_common::auth::peer_channel(e).ok()?;
                Some((
                    e,
                    ferrisdb_common::with_message_limits!(DatabaseClient::new(channel)),
                ))
            })
            .unzip();
        if clients.is_empty() {
            return;
        }
        let mut failures = 0;
        // Since when the primary has answered "starting" without a break.
        let mut starting_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            let probes = clients.iter().map(|client| {
                let mut client = client.clone();
                let req = GetReadVersionRequest {
                    database: database.to_string(),
                };
                async move {
                    match tokio::time::timeout(PROBE_EVERY, client.get_read_version(req)).await {
                        Ok(Ok(_)) => Probe::Alive,
                        // A primary that refuses the probe is alive: taking over would fence it.
                        Ok(Err(s)) if s.code() == tonic::Code::Unauthenticated => Probe::Alive,
                        Ok(Err(s)) if Error::from(s.clone()).reason() == Some(Reason::Starting) => {
                            Probe::Starting
                        }
                        Ok(Err(s)) => Probe::Silent(Error::from(s).to_string()),
                        Err(_) => Probe::Silent(format!("no answer within {PROBE_EVERY:?}")),
                    }
                }
            });
            let answers = futures::future::join_all(probes).await;
            let starting = if answers.contains(&Probe::Alive) {
                failures = 0;
                false
            } else if answers.contains(&Probe::Starting) {
                let since = *starting_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() < STARTING_GRACE {
                    failures = 0;
                } else {
                    failures += 1;
                }
                true
            } else {
                failures += 1;
                false
            };
            if !starting {
                starting_since = None;
            }
            if failures >= PROBES_BEFORE_TAKEOVER {
                // Why, in the operator's words: a TLS or address mistake on the probe path
                // looks like a dead primary from here, and taking over fences a healthy one.
                let why: Vec<String> = endpoints
                    .iter()
                    .zip(&answers)
                    .map(|(endpoint, probe)| match probe {
                        Probe::Silent(e) => format!("{endpoint}: {e}"),
                        other => format!("{endpoint}: {other:?}"),
                    })
                    .collect();
                tracing::warn!(%database, ?why, "the last {PROBES_BEFORE_TAKEOVER} probes of the primary all failed");
                return;
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

    /// Gives back the read lease of every database this compute leads, for a compute that
    /// answers no more requests (suspending or shutting down), so the next primary of each
    /// serves without waiting for the lease to run out. Call it after the client API has
    /// stopped and [`Databases::stop`], so no read and no new term starts afterwards.
    pub async fn release_leases(&self) {
        let primaries: Vec<Arc<Primary>> = match self.served.read() {
            Ok(served) => served
                .values()
                .filter_map(|slot| match slot.borrow().as_ref() {
                    Some(Node::Primary(p)) => Some(p.clone()),
                    _ => None,
                })
                .collect(),
            Err(_) => return,
        };
        futures::future::join_all(primaries.iter().map(|p| p.release_lease())).await;
    }
}

/// What one probe of a compute a standby watches found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Probe {
    /// It answered (or refused the credential): alive.
    Alive,
    /// It is starting up as primary.
    Starting,
    /// No answer, or an error (which): not serving.
    Silent(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn election_retries_back_off_to_a_bound() {
        let ms = |f| election_pause(f).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(4), ms(40), ms(u32::MAX)],
            [300, 300, 600, 1200, 2000, 2000, 2000]
        );
    }
}
