//! A read replica: follows the committed WAL from the safekeepers into its own hot tier and
//! serves read-only transactions, at the primary's read version once it has applied that far
//! (linearizable, see [`crate::freshness`]) or at an explicit version it has.
//!
//! It starts at what the pageserver has ingested (the hot tier's floor: everything below comes
//! from the pageserver) and applies each record the safekeepers stream. Safekeepers stream only
//! committed WAL, so a replica never shows a version the primary did not commit; it may lag,
//! and a read at a version it has not reached yet gets `future_version`. Commits are refused
//! with `read_only`, naming the primary when the replica was told where it is — or, on a
//! former primary that lost its term, with `fenced`, which is what its clients were told
//! before it became a replica.

use std::sync::Arc;

use ferrisdb_common::wal::WalRecord;
use ferrisdb_common::{Error, ErrorKind, Result, Version};
use ferrisdb_server_common::clock::SystemClock;
use ferrisdb_server_common::wal_follower::{self, WalSink};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::freshness::Freshness;
use crate::metrics::Metrics;
use crate::page_source::Pageserver;
use crate::read_path::Tiers;
use crate::view::DatabaseView;

/// A replica of one database.
#[derive(Debug)]
pub struct Replica {
    view: Arc<DatabaseView>,
    /// Read versions from the primary, when this replica knows where it is.
    freshness: Option<Freshness>,
    /// Why this compute stopped being primary, if it was primary before.
    lost_term: Option<String>,
    /// Set when this standby starts taking over from a primary that stopped answering.
    taking_over: std::sync::atomic::AtomicBool,
    /// Told when the follower found the WAL it needs next deleted ([`Replica::fell_behind`]).
    fell_behind: Arc<tokio::sync::Notify>,
    tasks: Vec<JoinHandle<()>>,
}

/// How long a read at the latest version waits for this replica to apply what the primary
/// has committed before it is refused as `unavailable`.
pub const CATCH_UP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Where the follower applies records: the view's hot tier, then its visible version, then
/// its watches (the same order as the primary's committer, which watches rely on).
struct Applier {
    view: Arc<DatabaseView>,
    applied: watch::Sender<Version>,
    /// Told when the WAL needed next is gone (see [`Replica::fell_behind`]).
    fell_behind: Arc<tokio::sync::Notify>,
}

impl WalSink for Applier {
    fn database(&self) -> &str {
        self.view.database()
    }

    fn applied_lsn(&self) -> u64 {
        self.applied.borrow().0
    }

    fn apply(&self, records: &[WalRecord]) -> Result<()> {
        for r in records {
            self.view
                .hot()
                .apply(r.version, r.commit_time_micros, &r.mutations);
            self.applied.send_replace(r.version);
            self.view.watches().on_commit(r.version, &r.mutations);
        }
        Ok(())
    }

    /// A replica cut off from the safekeepers for longer than a checkpoint and a trim finds
    /// the WAL it needs next deleted; it held its position for good, refusing reads at the
    /// latest version until the process was restarted (an outside audit). It starts again
    /// from what the pageserver has ingested instead, as a restart does.
    fn wal_trimmed(&self) -> bool {
        self.fell_behind.notify_one();
        true
    }
}

impl Replica {
    /// Starts following `database`'s WAL from what the pageserver has ingested. `lost_term`
    /// is why this compute stopped being primary, when it was.
    pub async fn start(
        database: String,
        safekeepers: Vec<String>,
        pageserver: Pageserver,
        metrics: Metrics,
        tiers: Tiers,
        primary_endpoints: &[String],
        lost_term: Option<String>,
    ) -> Result<Arc<Replica>> {
        let status = pageserver.pages.status(&database).await?;
        let floor = Version(status.ingested_version);
        let (view, applied) = DatabaseView::new(
            database.clone(),
            floor,
            pageserver,
            metrics,
            &tiers,
            Arc::new(SystemClock),
        );
        let view = Arc::new(view);
        let fell_behind = Arc::new(tokio::sync::Notify::new());
        let applier = Applier {
            view: view.clone(),
            applied,
            fell_behind: fell_behind.clone(),
        };
        let follow = tokio::spawn(async move {
            if let Err(e) = wal_follower::follow(&applier, &safekeepers).await {
                tracing::error!(database = applier.database(), error = %e, "replica stopped following the WAL");
            }
        });
        let evict = tokio::spawn(view.clone().evict_loop(None));
        tracing::info!(%database, %floor, "replica following the WAL");
        let freshness = Freshness::new(database.clone(), primary_endpoints)?;
        Ok(Arc::new(Replica {
            view,
            freshness,
            lost_term,
            taking_over: Default::default(),
            fell_behind,
            tasks: vec![follow, evict],
        }))
    }

    /// Resolves once this replica has fallen behind the WAL the safekeepers keep: it follows
    /// no more, and the caller replaces it with one started from the pageserver.
    pub async fn fell_behind(&self) {
        self.fell_behind.notified().await;
    }

    /// What reads are answered from.
    pub fn view(&self) -> &Arc<DatabaseView> {
        &self.view
    }

    /// The version a read at "the latest version" reads at here: the primary's read version
    /// (linearizable: no older than any commit it acknowledged before this call), once this
    /// replica has applied that far ([`crate::freshness`]). Without a primary to ask — a
    /// replica started without `--primary-endpoint`, or a former primary that lost its term
    /// — nothing proves this replica current, and the read is refused as `unavailable`; a
    /// read at an explicit version is served either way.
    pub async fn read_version(&self) -> Result<Version> {
        let Some(freshness) = &self.freshness else {
            let why = match &self.lost_term {
                Some(lost) => format!("this compute lost its term ({lost})"),
                None => "this replica was started without --primary-endpoint".to_string(),
            };
            return Err(Error::unavailable(format!(
                "{why}, so it cannot prove a read at the latest version of {:?} is current: \
                 read at the primary, or at an explicit version here",
                self.view.database()
            )));
        };
        let version = freshness.read_version().await?;
        self.view.wait_visible(version, CATCH_UP_TIMEOUT).await?;
        Ok(version)
    }

    /// The latest version committed at or before `time_micros`, as the primary answers it.
    /// A commit already applied here with a later time settles it (times never decrease).
    /// Otherwise this replica may not have applied every commit made up to then (it lags),
    /// its own clock is not the one commits are stamped with, and the primary may have a
    /// batch stamped before then in flight: the primary is asked (it answers once every
    /// batch stamped up to then is visible, and refuses a time still ahead of its clock).
    pub async fn version_at(&self, time_micros: u64) -> Result<Version> {
        if time_micros < self.view.hot().last_commit_time() {
            return self.view.reader().version_at(time_micros).await;
        }
        let Some(freshness) = &self.freshness else {
            return Err(Error::unavailable(format!(
                "this replica has no commit after {time_micros} and no primary to ask whether \
                 one was made since (started without --primary-endpoint, or it lost its term): \
                 ask the primary"
            )));
        };
        freshness.version_at(time_micros).await
    }

    /// Whether this is a former primary that lost its term (status `role: "fenced"`).
    pub fn is_fenced(&self) -> bool {
        self.lost_term.is_some()
    }

    /// Marks this standby as taking over: commits are refused as `unavailable` (retried), no
    /// longer as `read_only` naming the primary that stopped answering.
    pub fn start_taking_over(&self) {
        self.taking_over
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The error a commit gets here: `read_only`, or `fenced` on a former primary, or
    /// `unavailable` (starting) on a standby taking over.
    pub fn refuse_commit(&self) -> Error {
        if self.taking_over.load(std::sync::atomic::Ordering::Relaxed) {
            return Error::unavailable(format!(
                "this compute is taking over as primary of {:?}: retry in a moment",
                self.view.database()
            ))
            .with_reason(ferrisdb_common::error::Reason::Starting);
        }
        let whom = match &self.freshness {
            Some(f) => format!("commit at the primary, {}", f.primary()),
            None => "commit at the primary".to_string(),
        };
        if let Some(why) = &self.lost_term {
            return Error::new(
                ErrorKind::Fenced,
                format!(
                    "this compute is no longer primary of {:?} ({why}); it serves reads as a \
                     replica; {whom}",
                    self.view.database()
                ),
            );
        }
        Error::new(
            ErrorKind::ReadOnly,
            format!(
                "this compute is a read replica of {:?}; {whom}",
                self.view.database()
            ),
        )
    }

    /// Status for the admin API.
    pub fn status(&self) -> serde_json::Value {
        let mut status = serde_json::json!({
            // "fenced" keeps what a former primary reported before it became a replica.
            "role": if self.lost_term.is_some() { "fenced" } else { "replica" },
            "applied_version": self.view.latest(),
            "primary_endpoint": self.freshness.as_ref().map(Freshness::primary),
            "lost_term": self.lost_term,
        });
        if let (Some(s), serde_json::Value::Object(tiers)) =
            (status.as_object_mut(), self.view.tier_status())
        {
            s.extend(tiers);
        }
        status
    }

    /// Stops following.
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.stop();
    }
}
