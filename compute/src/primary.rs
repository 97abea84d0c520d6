//! The primary: a compute that has won its term and serves reads and commits.

use std::future::Future;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use ferrisdb_common::proto::pageserver_client::PageserverClient;
use ferrisdb_common::{Error, ErrorKind, Result, Version};
use ferrisdb_server_common::auth::CallChannel;
use ferrisdb_server_common::clock::Clock;
use tokio::sync::{mpsc, oneshot};

use crate::committer::{CommitRequest, Committed, Committer};
use crate::metrics::Metrics;
use crate::page_source::Pageserver;
use crate::proposer::Proposer;
use crate::read_path::Tiers;
use crate::requests::Commit;
use crate::view::DatabaseView;

/// A compute that won its term: the proposer, the tiers and the pipeline.
#[derive(Debug)]
pub struct Primary {
    proposer: Arc<Proposer>,
    pipeline: mpsc::Sender<CommitRequest>,
    /// What reads are answered from; commits become visible in it.
    view: Arc<DatabaseView>,
    /// Read-version requests waiting for the next liveness check.
    read_checks: Arc<ReadChecks>,
    /// Tells the committer a read version was handed out (see committer::HEARTBEAT).
    read_versions_served: Arc<std::sync::atomic::AtomicBool>,
    /// The commit time of a batch stamped and not yet appended (see
    /// [`Committer::stamping`]).
    stamping: Arc<std::sync::atomic::AtomicU64>,
    metrics: Metrics,
}

/// Batches read-version requests into liveness checks ([`Proposer::confirm_term`]), the way
/// FoundationDB's proxies batch theirs: one check in flight at a time; a request that arrives
/// while one is in flight waits for the next, so every request is answered by a check that
/// began after it arrived (docs/wal-protocol.md, "Linearizable reads").
#[derive(Debug)]
struct ReadChecks {
    proposer: Arc<Proposer>,
    view: Arc<DatabaseView>,
    metrics: Metrics,
    state: std::sync::Mutex<ReadBatch>,
}

/// The requests for the next check, and whether a check task is running.
#[derive(Debug, Default)]
struct ReadBatch {
    running: bool,
    waiting: Vec<oneshot::Sender<Result<Version>>>,
}

impl ReadChecks {
    /// A read version no older than any commit acknowledged (by any primary) before this call.
    async fn read_version(self: &Arc<Self>) -> Result<Version> {
        let (reply, answer) = oneshot::channel();
        let start = {
            // Nothing panics while holding the lock, so a poisoned one is still consistent.
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.waiting.push(reply);
            !std::mem::replace(&mut state.running, true)
        };
        if start {
            tokio::spawn(self.clone().run());
        }
        answer
            .await
            .map_err(|_| Error::unavailable("the read-version check stopped"))?
    }

    /// Runs checks while requests wait, each for the requests queued before it began.
    async fn run(self: Arc<Self>) {
        loop {
            let batch = {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                if state.waiting.is_empty() {
                    state.running = false;
                    return;
                }
                std::mem::take(&mut state.waiting)
            };
            // The version is taken before the check begins: every commit this primary
            // acknowledged before a batched request arrived is visible by now (the committer
            // makes a batch visible before answering it).
            let version = self.view.latest();
            let outcome = self.proposer.confirm_term().await.map(|()| version);
            let label = if outcome.is_ok() { "ok" } else { "refused" };
            self.metrics
                .liveness_checks
                .with_label_values(&[label])
                .inc();
            self.metrics.read_versions.inc_by(batch.len() as u64);
            for reply in batch {
                let _ = reply.send(outcome.clone());
            }
        }
    }
}

/// How long a timestamp lookup waits for batches stamped at or before its time to become
/// visible (a commit's own deadline is 5 s).
const VERSION_AT_WAIT: Duration = Duration::from_secs(5);

impl Primary {
    /// Finishes taking over after winning an election: waits until a majority holds the log
    /// as elected, then starts the pipeline with everything up to there committed. The
    /// proposer's senders and the committer run on `pipeline_runtime` when given (see
    /// [`crate::pipeline_thread`]), else on the caller's runtime.
    pub async fn start(
        database: String,
        proposer: Arc<Proposer>,
        pageserver: Pageserver,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        tiers: Tiers,
        pipeline_runtime: Option<&tokio::runtime::Handle>,
    ) -> Result<Arc<Primary>> {
        {
            // The senders' streams dial their connections from there, so those connections'
            // tasks run there too.
            let _on_pipeline = pipeline_runtime.map(tokio::runtime::Handle::enter);
            proposer.start();
        }
        let start = proposer.elected_end();
        proposer
            .wait_durable(start, Duration::from_secs(30))
            .await?;
        // An older primary may answer reads under its lease until it runs out: serving before
        // then could acknowledge a commit, or show a recovered one, it cannot see.
        proposer.wait_for_older_leases().await;
        proposer.set_commit(start);
        let start = Version(start);
        let (view, committed_tx) = DatabaseView::new(
            database,
            start,
            pageserver,
            metrics.clone(),
            &tiers,
            clock.clone(),
        );
        let view = Arc::new(view);
        let (pipeline, requests) = mpsc::channel(4096);
        let committer = Committer::new(
            proposer.clone(),
            start,
            view.reader().clone(),
            clock,
            committed_tx,
            view.watches().clone(),
            metrics.clone(),
        );
        let read_versions_served = committer.read_versions_served();
        let stamping = committer.stamping();
        pipeline_runtime
            .cloned()
            .unwrap_or_else(tokio::runtime::Handle::current)
            .spawn(committer.run(requests));
        metrics
            .committed_version
            .with_label_values(&[view.database()])
            .set(start.0 as i64);
        tokio::spawn(view.clone().evict_loop(Some(proposer.clone())));
        let read_checks = Arc::new(ReadChecks {
            proposer: proposer.clone(),
            view: view.clone(),
            metrics: metrics.clone(),
            state: std::sync::Mutex::default(),
        });
        let primary = Arc::new(Primary {
            proposer,
            pipeline,
            view,
            read_checks,
            read_versions_served,
            stamping,
            metrics,
        });
        tracing::info!(database = %primary.database(), term = primary.proposer.term(), %start, "primary serving");
        Ok(primary)
    }

    /// The term this primary leads.
    pub fn term(&self) -> u64 {
        self.proposer.term()
    }

    /// Gives the term's read lease back once this compute answers no more reads (see
    /// [`Proposer::release_lease`]).
    pub async fn release_lease(&self) {
        self.proposer.release_lease().await
    }

    /// Waits until a newer term fences this primary, and says why.
    pub async fn fenced(&self) -> String {
        self.proposer.fenced().await
    }

    /// Refuses with `fenced` once a newer term has taken over.
    fn check_not_fenced(&self) -> Result<()> {
        match &self.proposer.watch_quorum().borrow().fenced {
            Some(why) => Err(Error::new(
                ErrorKind::Fenced,
                format!("this compute is no longer primary: {why}"),
            )),
            None => Ok(()),
        }
    }

    /// A read version for a new transaction: the latest commit, under the read lease or once a
    /// safekeeper majority has confirmed (in a check that began after this call) that this
    /// compute still holds its term. So it is never older than a commit acknowledged anywhere before this call;
    /// `unavailable` when the check fails (cut off from the safekeepers), `fenced` when a
    /// newer term exists.
    pub async fn read_version(&self) -> Result<Version> {
        self.check_not_fenced()?;
        match self.leased_version() {
            Some(version) => Ok(version),
            None => self.checked_read_version().await,
        }
    }

    /// The visible version, if the read lease runs: no newer term can have served anything
    /// yet, so it is no older than any commit acknowledged before this call
    /// (docs/wal-protocol.md, "Read leases"). `None`: ask for a liveness check.
    fn leased_version(&self) -> Option<Version> {
        let version = self.view.latest();
        if !self.proposer.lease_held() {
            return None;
        }
        self.metrics.leased_read_versions.inc();
        self.read_version_served();
        Some(version)
    }

    /// A read version from the next liveness check (docs/wal-protocol.md, "Linearizable
    /// reads").
    async fn checked_read_version(&self) -> Result<Version> {
        self.read_version_served();
        self.read_checks.read_version().await
    }

    /// Tells the committer: an idle pipeline supersedes a read version handed out soon, so it
    /// ages even without traffic.
    fn read_version_served(&self) {
        self.read_versions_served
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Runs `read` at the latest visible version and gives its answer, with that version: at
    /// once under the read lease, otherwise once a liveness check that began after this call
    /// confirmed the term, as [`Primary::read_version`] does; the read and the check run
    /// concurrently, so a read at the latest version costs the client one round trip. Reading
    /// at the version visible when the call arrived is as safe as reading at the one the check
    /// takes when it begins (the argument of docs/wal-protocol.md needs only a version taken
    /// after the request arrived, and the check begins after that).
    pub async fn read_latest<T, F, Fut>(&self, read: F) -> Result<(Version, T)>
    where
        F: FnOnce(Version) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.check_not_fenced()?;
        if let Some(version) = self.leased_version() {
            return Ok((version, read(version).await?));
        }
        let version = self.view.latest();
        let (_, answer) = tokio::try_join!(self.checked_read_version(), read(version))?;
        Ok((version, answer))
    }

    /// The latest version committed at or before `time_micros`, once that time has passed
    /// by the clock commits are stamped with. The same answer every time: unless a visible
    /// commit with a later time settles it, it waits until every batch stamped at or before
    /// that time is visible (appended batches wait for their quorum; a batch still being
    /// resolved is stamped before it is appended, so it is waited for first).
    pub async fn version_at(&self, time_micros: u64) -> Result<Version> {
        self.view.check_time(time_micros)?;
        if time_micros >= self.view.hot().last_commit_time() {
            let deadline = tokio::time::Instant::now() + VERSION_AT_WAIT;
            while self.stamping.load(std::sync::atomic::Ordering::SeqCst) <= time_micros {
                if tokio::time::Instant::now() > deadline {
                    return Err(Error::unavailable(
                        "a commit batch stamped before that time is still being resolved",
                    ));
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            let appended = Version(self.proposer.end_lsn());
            self.view
                .wait_visible(appended, VERSION_AT_WAIT)
                .await
                .map_err(|e| match e.kind() {
                    // `wait_visible` speaks as a replica behind its primary; here the batches
                    // wait for their safekeeper quorum.
                    ErrorKind::Unavailable => Error::unavailable(format!(
                        "commits appended before that time (up to version {appended}) did not \
                         become visible (acknowledged by a safekeeper quorum) within \
                         {VERSION_AT_WAIT:?}; try again"
                    )),
                    _ => e,
                })?;
        }
        self.view.version_at(time_micros).await
    }

    /// What reads are answered from.
    pub fn view(&self) -> &Arc<DatabaseView> {
        &self.view
    }

    /// Queues a commit, checked on its way in ([`crate::requests`]), and waits for its outcome.
    pub async fn commit(&self, commit: Commit) -> Result<Committed> {
        self.check_not_fenced()?;
        let (reply, outcome) = oneshot::channel();
        let req = CommitRequest {
            commit,
            reply,
            // The request's span (the gRPC server span), which the batch continues.
            trace: ferrisdb_server_common::telemetry::current(),
            arrived: tokio::time::Instant::now(),
        };
        self.pipeline
            .send(req)
            .await
            .map_err(|_| Error::unavailable("commit pipeline stopped"))?;
        outcome.await.map_err(|_| {
            Error::new(
                ErrorKind::CommitUnknownResult,
                "commit pipeline stopped mid-commit",
            )
        })?
    }

    /// Status for the admin API.
    pub fn status(&self) -> serde_json::Value {
        let q = self.proposer.watch_quorum().borrow().clone();
        let mut status = serde_json::json!({
            "role": if q.fenced.is_some() { "fenced" } else { "primary" },
            "term": self.proposer.term(),
            "read_lease": self.proposer.lease_runs(),
            // How long this term waited, once elected, for an older primary's read lease.
            "older_lease_wait_ms": self.proposer.older_lease().as_millis() as u64,
            "committed_version": self.view.latest(),
            "safekeepers": q.peers.iter().map(|p| serde_json::json!({"up": p.up, "flush_lsn": p.flush})).collect::<Vec<_>>(),
        });
        if let (Some(s), serde_json::Value::Object(tiers)) =
            (status.as_object_mut(), self.view.tier_status())
        {
            s.extend(tiers);
        }
        status
    }

    /// The pageserver client, for admin calls.
    pub fn pageserver(&self) -> PageserverClient<CallChannel> {
        self.view.pageserver()
    }

    /// The database served.
    pub fn database(&self) -> &str {
        self.view.database()
    }
}
