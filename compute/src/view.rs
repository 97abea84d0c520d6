//! The read side of one database on this compute: its tiers (read through
//! [`crate::read_path`]), the version reads may see, the watches, and the eviction loop that
//! follows the pageserver. A primary and a read replica differ only in how versions become
//! visible (the commit pipeline, or the WAL followed from the safekeepers); everything they
//! answer from is this view.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferrisdb_common::proto::HistoryEntry;
use ferrisdb_common::proto::pageserver_client::PageserverClient;
use ferrisdb_common::{Error, ErrorKind, Result, Version};
use ferrisdb_server_common::auth::CallChannel;
use ferrisdb_server_common::clock::Clock;
use tokio::sync::watch;

use crate::hot_tier::HotTier;
use crate::metrics::Metrics;
use crate::page_source::{Pageserver, RangeRows};
use crate::proposer::Proposer;
use crate::read_path::{TierReader, Tiers};
use crate::watches::{Fired, Watches};

/// How often the pageserver's ingest position is polled to evict the hot tier.
const EVICT_EVERY: Duration = Duration::from_millis(200);

/// Outstanding watches one compute holds per database before refusing more.
const MAX_WATCHES: usize = 100_000;

/// One database's tiers and what of it is visible.
#[derive(Debug)]
pub struct DatabaseView {
    database: String,
    hot: Arc<HotTier>,
    /// The newest version reads may see: the latest commit (primary) or the latest applied
    /// WAL record (replica).
    visible: watch::Receiver<Version>,
    pageserver: Pageserver,
    /// Reads through the hot tier, the warm tier and the pageserver.
    reader: TierReader,
    /// Clients waiting for keys to change.
    watches: Arc<Watches>,
    metrics: Metrics,
    /// What "now" is to a timestamp (commit times come from the primary's clock).
    clock: Arc<dyn Clock>,
}

impl DatabaseView {
    /// A view whose hot tier holds every commit above `floor` (none yet), made visible
    /// through the returned sender.
    pub fn new(
        database: String,
        floor: Version,
        pageserver: Pageserver,
        metrics: Metrics,
        tiers: &Tiers,
        clock: Arc<dyn Clock>,
    ) -> (DatabaseView, watch::Sender<Version>) {
        let warm = tiers.warm.as_ref().map(|w| Arc::new(w.tier(floor)));
        let mut hot = HotTier::new(floor).with_budget(tiers.hot_budget_bytes);
        if let Some(w) = &warm {
            hot = hot.with_observer(w.clone());
        }
        let hot = Arc::new(hot);
        metrics
            .hot_tier_budget_bytes
            .set(i64::try_from(hot.budget()).unwrap_or(i64::MAX));
        let (visible_tx, visible) = watch::channel(floor);
        let reader = TierReader::new(
            database.clone(),
            hot.clone(),
            warm,
            pageserver.pages.clone(),
            metrics.clone(),
        );
        let view = DatabaseView {
            database,
            hot,
            visible,
            pageserver,
            reader,
            watches: Arc::new(Watches::new(MAX_WATCHES)),
            metrics,
            clock,
        };
        (view, visible_tx)
    }

    /// The database.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The hot tier.
    pub fn hot(&self) -> &Arc<HotTier> {
        &self.hot
    }

    /// Reads through the tiers.
    pub fn reader(&self) -> &TierReader {
        &self.reader
    }

    /// The watch table, told of every batch made visible.
    pub fn watches(&self) -> &Arc<Watches> {
        &self.watches
    }

    /// The pageserver's gRPC client, for what is not a read (checkpoints, branches).
    pub fn pageserver(&self) -> PageserverClient<CallChannel> {
        self.pageserver.admin.clone()
    }

    /// A pageserver client for one change feed (see [`Pageserver::feed_client`]).
    pub fn feed_client(&self) -> Result<PageserverClient<CallChannel>> {
        self.pageserver.feed_client()
    }

    /// Whether the pageserver answers for this database (a status call): reads of anything
    /// not in the hot or warm tier need it.
    pub async fn pageserver_answers(&self) -> Result<()> {
        self.pageserver
            .pages
            .status(&self.database)
            .await
            .map(|_| ())
    }

    /// The newest visible version.
    pub fn latest(&self) -> Version {
        *self.visible.borrow()
    }

    /// Waits until `version` is visible here, at most `timeout` (then `unavailable`: a
    /// replica that far behind its primary answers nothing rather than something old).
    pub async fn wait_visible(&self, version: Version, timeout: Duration) -> Result<()> {
        let mut visible = self.visible.clone();
        match tokio::time::timeout(timeout, visible.wait_for(|v| *v >= version)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::unavailable(format!(
                "{:?} stopped applying the WAL before version {version}",
                self.database
            ))),
            Err(_) => Err(Error::unavailable(format!(
                "{:?} has applied up to version {}, behind the primary's {version}, after \
                 {timeout:?}",
                self.database,
                self.latest()
            ))),
        }
    }

    /// The tiers' part of `/v1/status`.
    pub fn tier_status(&self) -> serde_json::Value {
        let (floor, entries, bytes) = self.hot.stats();
        let budget = Some(self.hot.budget()).filter(|b| *b != usize::MAX);
        let warm = self.reader.warm().map(|w| w.status());
        serde_json::json!({
            "hot_tier": {
                "floor": floor,
                "entries": entries,
                "bytes": bytes,
                "budget_bytes": budget,
                "over_budget": self.hot.over_budget(),
            },
            "warm_tier": warm,
        })
    }

    /// Refuses versions above what is visible here with `future_version`.
    pub fn check_version(&self, version: Version) -> Result<()> {
        let committed = *self.visible.borrow();
        if version > committed {
            return Err(Error::new(
                ErrorKind::FutureVersion,
                format!("version {version} is newer than the latest commit {committed}"),
            ));
        }
        Ok(())
    }

    /// A point read at `version`.
    pub async fn get(&self, key: Bytes, version: Version) -> Result<Option<Bytes>> {
        self.check_version(version)?;
        self.reader.read(key, version).await
    }

    /// A range read at `version`: the pageserver's answer at the hot tier's floor, overlaid
    /// with the hot tier's newer entries.
    pub async fn get_range(
        &self,
        begin: Bytes,
        end: Bytes,
        version: Version,
        limit: usize,
        reverse: bool,
    ) -> Result<RangeRows> {
        self.check_version(version)?;
        self.reader
            .read_range(begin, end, version, limit, reverse)
            .await
    }

    /// Waits until the committed value of `key` differs from `known`; returns the version
    /// that made it differ and the value there.
    pub async fn watch(&self, key: Bytes, known: Option<Bytes>) -> Result<Fired> {
        // Register before reading, so a commit between the read and the wait is not missed
        // (see the watches module).
        let fired = self.watches.register(key.clone(), known.clone())?;
        let now = *self.visible.borrow();
        let current = self.reader.read(key.clone(), now).await?;
        if current != known {
            // It changed before this watch was set (a watch re-issued after a failover, or
            // set on a stale value): answer the version of that change, not this read's, so
            // a watcher reading "the value before" at version − 1 reads the old one.
            // Finding it may need the pageserver; if that fails, the read's version still
            // tells the watcher the value changed (a later one than the change, as before).
            let changed = match self.last_change(&key, now).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(error = %e, "the watched key's last change could not be found; answering the read's version");
                    now
                }
            };
            return Ok((changed, current));
        }
        fired.await.map_err(|_| {
            Error::unavailable("the compute stopped serving this database; watch again")
        })
    }

    /// The version of `key`'s newest change at or before `at` (`at` itself when its history
    /// holds none: a change below the retention horizon, or one its history does not list).
    /// The hot tier answers a recent change alone; an older one pages through the history.
    async fn last_change(&self, key: &Bytes, at: Version) -> Result<Version> {
        let hot = self.reader.hot();
        let (recent, floor) = hot.history(key, at);
        let mut from = if recent.is_empty() {
            Version::ZERO
        } else {
            // Above the floor: the hot tier's versions only, no pageserver call.
            Version(floor.0 + 1)
        };
        let mut last = None;
        loop {
            let (entries, more) = self.reader.history(key.clone(), from, at).await?;
            let Some(entry) = entries.last() else {
                break;
            };
            last = Some(Version(entry.version));
            if !more || entry.version >= at.0 {
                break;
            }
            from = Version(entry.version + 1);
        }
        Ok(last.unwrap_or(at))
    }

    /// The versions of `key` in `[from, to]` (`to` 0: the latest), oldest first, one page of
    /// them (at most [`REPLY_TARGET_BYTES`] past its first entry), and whether more follow its
    /// last one: the pageserver's up to the hot tier's floor, the hot tier's above it. The
    /// page's own bound is `to` made explicit, so a reader asking on from the version after
    /// the last entry gets the same history.
    ///
    /// [`REPLY_TARGET_BYTES`]: ferrisdb_common::message_size::REPLY_TARGET_BYTES
    pub async fn history(
        &self,
        key: Bytes,
        from: Version,
        to: Version,
    ) -> Result<(Vec<HistoryEntry>, bool)> {
        let committed = *self.visible.borrow();
        let to = if to == Version::ZERO { committed } else { to };
        self.check_version(to)?;
        self.check_version(from)?;
        if from > to {
            return Err(Error::invalid(format!(
                "history from version {from} to {to}: the range is inverted"
            )));
        }
        let (mut entries, more) = self.reader.history(key, from, to).await?;
        let capped = ferrisdb_common::message_size::cap_history(&mut entries);
        Ok((entries, more || capped))
    }

    /// Every version of `key` in `[from, to]` (`to` 0: the latest), oldest first, page after
    /// page: for answers with no size bound of their own (the admin API's JSON).
    pub async fn whole_history(
        &self,
        key: Bytes,
        from: Version,
        to: Version,
    ) -> Result<Vec<HistoryEntry>> {
        let committed = *self.visible.borrow();
        let to = if to == Version::ZERO { committed } else { to };
        let mut all = Vec::new();
        let mut from = from;
        loop {
            let (entries, more) = self.history(key.clone(), from, to).await?;
            let next = entries.last().map(|e| Version(e.version.saturating_add(1)));
            all.extend(entries);
            match next {
                Some(next) if more && next <= to => from = next,
                _ => return Ok(all),
            }
        }
    }

    /// The latest committed version at or before `time_micros` (0: nothing had committed);
    /// `future_version` for a time still ahead of this compute's clock.
    pub async fn version_at(&self, time_micros: u64) -> Result<Version> {
        self.check_time(time_micros)?;
        self.reader.version_at(time_micros).await
    }

    /// Refuses a time still ahead of this compute's clock with `future_version`, as a version
    /// above the latest is refused: a commit made before that time comes would change what
    /// it maps to, and a read there must give the same answer every time.
    pub fn check_time(&self, time_micros: u64) -> Result<()> {
        let now = self.clock.now_micros();
        if time_micros > now {
            return Err(Error::future_time(time_micros, now, "this compute's"));
        }
        Ok(())
    }

    /// Raises the hot tier's floor as the pageserver ingests, and keeps the tier gauges
    /// current. A primary passes its proposer, which may let the safekeepers drop WAL the
    /// bucket holds.
    pub async fn evict_loop(self: Arc<Self>, proposer: Option<Arc<Proposer>>) {
        loop {
            tokio::time::sleep(EVICT_EVERY).await;
            // A fenced primary's view is replaced (by a replica's); stop holding it.
            if proposer
                .as_ref()
                .is_some_and(|p| p.watch_quorum().borrow().fenced.is_some())
            {
                return;
            }
            if let Ok(resp) = self.pageserver.pages.status(&self.database).await {
                if let Some(p) = &proposer {
                    p.set_log_start(resp.remote_consistent_version);
                }
                let ingested = Version(resp.ingested_version);
                let committed = *self.visible.borrow();
                // Off the runtime's workers: one eviction hands every value ingested since
                // the last to the warm tier, ~20 ms of work at 24k writes/s, which on a
                // worker would hold every request queued behind it that long (with
                // `ferrisdb dev`'s single compute worker, all of them).
                let hot = self.hot.clone();
                let upto = ingested.min(committed);
                if let Err(e) = tokio::task::spawn_blocking(move || hot.evict_up_to(upto)).await {
                    tracing::error!(database = %self.database, error = %e, "hot-tier eviction failed");
                }
            }
            let (_, entries, bytes) = self.hot.stats();
            let database = [self.database.as_str()];
            self.metrics
                .hot_tier_bytes
                .with_label_values(&database)
                .set(bytes as i64);
            self.metrics
                .hot_tier_entries
                .with_label_values(&database)
                .set(entries as i64);
            if let Some(warm) = self.reader.warm() {
                let cache = warm.cache();
                let gauge = &self.metrics.warm_tier_bytes;
                gauge
                    .with_label_values(&["memory"])
                    .set(cache.memory_bytes() as i64);
                gauge
                    .with_label_values(&["disk"])
                    .set(cache.disk_bytes() as i64);
            }
            self.metrics
                .committed_version
                .with_label_values(&database)
                .set(self.visible.borrow().0 as i64);
        }
    }
}
