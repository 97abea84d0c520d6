//! The set of databases a pageserver serves: the registry by name ([`Timelines`]), loading
//! them (parents before their branches), starting each one's WAL follower and checkpoint loop,
//! and creating branches while running.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrisdb_common::{Error, ErrorKind, Result, Version, validate_database_name};
use object_store::ObjectStore;
use tokio::task::AbortHandle;

use crate::block_cache::BlockCache;
use crate::ingest;
use crate::metrics::Metrics;
use crate::timeline::{Timeline, TimelineOptions};

/// How many branches a pageserver creates unless told otherwise (`--max-branches`).
pub const DEFAULT_MAX_BRANCHES: usize = 1000;

/// The databases a pageserver serves, by name. Branches join while it runs.
///
/// A database whose objects could not be loaded (a damaged manifest or layer) is held as
/// *broken* with the error that stopped it, rather than stopping the whole pageserver: the
/// others are served, and every request for it answers that error, so the operator sees what
/// to repair instead of a pageserver that will not start.
#[derive(Debug, Clone, Default)]
pub struct Timelines(Arc<std::sync::RwLock<Registry>>);

/// What [`Timelines`] holds.
#[derive(Debug, Default)]
struct Registry {
    served: BTreeMap<String, Arc<Timeline>>,
    broken: BTreeMap<String, Error>,
}

impl Timelines {
    /// The timeline of `database`: `database_not_found` for one not held, and the error that
    /// stopped it from loading for a broken one.
    pub fn get(&self, database: &str) -> Result<Arc<Timeline>> {
        let registry = self
            .0
            .read()
            .map_err(|_| Error::internal("the database registry's lock was poisoned"))?;
        if let Some(t) = registry.served.get(database) {
            return Ok(t.clone());
        }
        if let Some(e) = registry.broken.get(database) {
            return Err(e.clone());
        }
        Err(Error::new(
            ErrorKind::DatabaseNotFound,
            format!(
                "this pageserver does not serve database {}",
                ferrisdb_common::error::echo(database)
            ),
        ))
    }

    /// Every timeline served, by name (broken databases are not among them).
    pub fn all(&self) -> Vec<(String, Arc<Timeline>)> {
        self.0.read().map_or_else(
            |_| Vec::new(),
            |m| {
                m.served
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            },
        )
    }

    /// Every broken database with the error that stopped it from loading.
    pub fn broken(&self) -> Vec<(String, Error)> {
        self.0.read().map_or_else(
            |_| Vec::new(),
            |m| {
                m.broken
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            },
        )
    }

    /// Adds a timeline.
    pub fn insert(&self, timeline: Arc<Timeline>) {
        if let Ok(mut m) = self.0.write() {
            m.broken.remove(timeline.database());
            m.served.insert(timeline.database().to_string(), timeline);
        }
    }

    /// Holds `database` as broken: every request for it answers `error` (the latest one
    /// given). Whether it was not broken before.
    fn insert_broken(&self, database: &str, error: Error) -> bool {
        self.0
            .write()
            .is_ok_and(|mut m| m.broken.insert(database.to_string(), error).is_none())
    }

    /// Stops serving `database`: every request for it answers `error` until it is loaded
    /// again. Whether it was not broken before.
    fn take_out(&self, database: &str, error: Error) -> bool {
        self.0.write().is_ok_and(|mut m| {
            m.served.remove(database);
            m.broken.insert(database.to_string(), error).is_none()
        })
    }

    /// How many databases are broken.
    fn broken_count(&self) -> usize {
        self.0.read().map_or(0, |m| m.broken.len())
    }
}

/// The first pause before a broken database is loaded again; it doubles up to
/// [`BROKEN_RETRY_MAX`].
const BROKEN_RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest pause between attempts to load a broken database.
const BROKEN_RETRY_MAX: Duration = Duration::from_secs(30);

/// How long the checkpoint loop waits after a failed checkpoint before the next may start.
const CHECKPOINT_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Everything needed to bring a database up, and the ones that are.
#[derive(Clone)]
pub struct Databases {
    /// The databases served.
    pub timelines: Timelines,
    store: Arc<dyn ObjectStore>,
    metrics: Metrics,
    cache: Arc<BlockCache>,
    options: TimelineOptions,
    safekeepers: Vec<String>,
    checkpoint_interval: Duration,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    /// Most branches this pageserver serves; creating one more is `limit_exceeded`.
    max_branches: usize,
    /// Held while a branch is created, so concurrent requests can neither pass the limit
    /// together nor both create the same name.
    branching: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Databases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Databases")
            .field("databases", &self.timelines.all().len())
            .finish()
    }
}

impl Databases {
    /// An empty set that will load from `store` and follow `safekeepers`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        metrics: Metrics,
        cache: Arc<BlockCache>,
        options: TimelineOptions,
        safekeepers: Vec<String>,
        checkpoint_interval: Duration,
    ) -> Databases {
        Databases {
            timelines: Timelines::default(),
            store,
            metrics,
            cache,
            options,
            safekeepers,
            checkpoint_interval,
            tasks: Arc::default(),
            max_branches: DEFAULT_MAX_BRANCHES,
            branching: Arc::default(),
        }
    }

    /// The same set, creating at most `max` branches (those already in the bucket count).
    pub fn with_max_branches(mut self, max: usize) -> Databases {
        self.max_branches = max;
        self
    }

    /// Loads and starts `names` and every database the bucket already holds (branches
    /// created earlier included).
    pub async fn start_all(&self, names: &[String]) -> Result<()> {
        let mut all: Vec<String> = names.to_vec();
        for db in crate::format::manifest::list_databases(&self.store).await? {
            if validate_database_name(&db).is_ok() && !all.contains(&db) {
                all.push(db);
            }
        }
        for db in &all {
            validate_database_name(db)?;
            match self.open(db).await {
                Ok(_) => {}
                // Damage is confined to its database (and its branches): the rest are served.
                // Anything else (the store unreachable, say) stops the start, so a supervisor's
                // restart tries again rather than serving a partial set for good.
                Err(e) if e.kind() == ErrorKind::Corruption => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The timeline of `name`, loading and starting it (and its ancestors first) if needed.
    async fn open(&self, name: &str) -> Result<Arc<Timeline>> {
        match self.timelines.get(name) {
            Ok(t) => return Ok(t),
            Err(e) if e.kind() == ErrorKind::DatabaseNotFound => {}
            Err(broken) => return Err(broken),
        }
        self.load_and_start(name).await
    }

    /// Loads `name` (its ancestors first, through [`Databases::open`]) and starts serving
    /// it; a database whose objects are damaged is held as broken, and loading it is retried
    /// in the background (see [`Databases::retry_broken`]).
    async fn load_and_start(&self, name: &str) -> Result<Arc<Timeline>> {
        let loaded = match Timeline::ancestor_of(&self.store, name).await {
            Ok(Some(point)) => match Box::pin(self.open(&point.database)).await {
                Ok(parent) => self.load(name, Some(parent)).await,
                Err(e) => Err(Error::new(
                    e.kind(),
                    format!(
                        "database {name} could not be loaded: its parent {} could not be: {}",
                        point.database,
                        e.message()
                    ),
                )),
            },
            Ok(None) => self.load(name, None).await,
            Err(e) => Err(e),
        };
        let t = match loaded {
            Ok(t) => Arc::new(t),
            Err(e) if e.kind() == ErrorKind::Corruption => {
                // Newly broken: say so, and start the one loop that loads it again (a retry
                // that fails again only refreshes the error).
                if self.timelines.insert_broken(name, e.clone()) {
                    tracing::error!(
                        database = name,
                        error = %e,
                        "database not served: its objects are damaged; every request for it answers this error, and loading it is retried until they are repaired"
                    );
                    self.retry_broken(name);
                }
                self.metrics
                    .broken_databases
                    .set(self.timelines.broken_count() as i64);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        self.timelines.insert(t.clone());
        self.metrics
            .broken_databases
            .set(self.timelines.broken_count() as i64);
        self.start(t.clone());
        Ok(t)
    }

    /// Another pageserver wrote `t`'s manifest (its checkpoint was fenced): this one stops
    /// serving the database (stale layers the other may have compacted away, a durable
    /// position that can never advance) and loads it again from the newest manifest in the
    /// bucket, as a broken database is retried. Until then every request for it answers
    /// `fenced`. Before, a fenced pageserver went on serving with a healthy-looking status,
    /// retrying the same generation forever and uploading an orphan layer at every attempt
    /// (an outside audit's finding). Two pageservers on one database take it from each other
    /// at each checkpoint this way, always from the newest manifest: a misconfiguration, but
    /// one that neither loses data nor wedges. A branch of it keeps the ancestor it was
    /// loaded with until the pageserver restarts.
    fn fenced(&self, t: &Timeline, e: Error) {
        let name = t.database();
        tracing::error!(
            database = name,
            error = %e,
            "another pageserver wrote this database's manifest: no longer serving it here; loading the newest manifest from the bucket (one pageserver per database)"
        );
        let error = Error::new(
            ErrorKind::Fenced,
            format!(
                "database {name} was taken over by another pageserver writing the same bucket \
                 ({}); this pageserver is loading the newest manifest",
                e.message()
            ),
        );
        if self.timelines.take_out(name, error) {
            self.retry_broken(name);
        }
        self.metrics
            .broken_databases
            .set(self.timelines.broken_count() as i64);
    }

    /// Retries loading broken database `name` in the background, with pauses growing to
    /// [`BROKEN_RETRY_MAX`], until it loads: damage may be repaired while the pageserver
    /// runs (an object restored from a backup, a store's read that failed its checksum once),
    /// and the other databases keep being served meanwhile. Started once per breakage (see
    /// [`Databases::load_and_start`]); it ends when the database loads.
    fn retry_broken(&self, name: &str) {
        let this = self.clone();
        let name = name.to_string();
        let task = tokio::spawn(async move {
            let mut pause = BROKEN_RETRY_FIRST;
            loop {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(BROKEN_RETRY_MAX);
                match this.load_and_start(&name).await {
                    Ok(_) => {
                        tracing::info!(database = %name, "database loaded after all: serving it");
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Corruption => {}
                    Err(e) => {
                        tracing::warn!(database = %name, error = %e, "retrying a broken database failed");
                    }
                }
            }
        });
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task.abort_handle());
        }
    }

    /// Loads `name` from the bucket, naming the database in a corruption error.
    async fn load(&self, name: &str, ancestor: Option<Arc<Timeline>>) -> Result<Timeline> {
        Timeline::load_with_ancestor(
            name,
            self.store.clone(),
            self.metrics.clone(),
            self.cache.clone(),
            self.options.clone(),
            ancestor,
        )
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::Corruption => Error::corruption(format!(
                "database {name} could not be loaded: {}",
                e.message()
            )),
            _ => e,
        })
    }

    /// Starts a timeline's WAL follower, durable-position reports and its checkpoints: every
    /// `checkpoint_interval` when there is new WAL, and sooner whenever the open layer
    /// reaches its size mark.
    fn start(&self, t: Arc<Timeline>) {
        let every = self.checkpoint_interval;
        let follow = tokio::spawn(ingest::follow(t.clone(), self.safekeepers.clone()));
        let report = tokio::spawn(ingest::report_durable(t.clone(), self.safekeepers.clone()));
        let this = self.clone();
        let followers = [follow.abort_handle(), report.abort_handle()];
        let checkpoints = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = t.checkpoint_due() => {}
                }
                if t.ingested_version() > t.remote_consistent_version()
                    && let Err(e) = t.checkpoint(Version::ZERO).await
                {
                    if e.kind() == ErrorKind::Fenced {
                        for f in &followers {
                            f.abort();
                        }
                        this.fenced(&t, e);
                        return;
                    }
                    tracing::warn!(database = t.database(), error = %e, "periodic checkpoint failed");
                    // An oversized layer signals again with the next WAL: a pause, so a store
                    // that keeps failing is not retried as fast as WAL arrives.
                    tokio::time::sleep(CHECKPOINT_RETRY_PAUSE).await;
                }
            }
        });
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.extend([
                follow.abort_handle(),
                report.abort_handle(),
                checkpoints.abort_handle(),
            ]);
        }
    }

    /// Creates `name` as a branch of `parent` at `version` (or, with `timestamp_micros`, at the
    /// parent's version then; with neither, at its latest ingested version) and starts serving
    /// it. Returns the branch point.
    pub async fn branch(
        &self,
        name: &str,
        parent: &str,
        version: Option<Version>,
        timestamp_micros: Option<u64>,
    ) -> Result<Version> {
        validate_database_name(name)?;
        let _one_at_a_time = self.branching.lock().await;
        let branches = self
            .timelines
            .all()
            .iter()
            .filter(|(_, t)| t.ancestor().is_some())
            .count();
        if branches >= self.max_branches {
            return Err(Error::new(
                ErrorKind::LimitExceeded,
                format!(
                    "this pageserver serves {branches} branches, its maximum (--max-branches {})",
                    self.max_branches
                ),
            ));
        }
        if self.timelines.get(name).is_ok() {
            return Err(Error::invalid(format!(
                "database {} already exists",
                ferrisdb_common::error::echo(name)
            )));
        }
        let p = self.timelines.get(parent)?;
        let at = match (version, timestamp_micros) {
            (Some(v), None) => v,
            (None, Some(t)) => {
                // A time still ahead maps to nothing yet: a commit made before it comes would
                // belong below the branch point (the compute refuses it the same way).
                let now = self.options.clock.now_micros();
                if t > now {
                    return Err(Error::future_time(t, now, "this pageserver's"));
                }
                p.version_at(t)?
            }
            (None, None) => p.ingested_version(),
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "branch at a version or at a timestamp, not both",
                ));
            }
        };
        Timeline::create_branch(&p, name, at).await?;
        self.open(name).await?;
        Ok(at)
    }

    /// Every database with its branch point, if it is a branch.
    pub fn list(&self) -> BTreeMap<String, Option<(String, Version)>> {
        self.timelines
            .all()
            .into_iter()
            .map(|(name, t)| (name, t.ancestor()))
            .collect()
    }

    /// Every database as the wire lists it (a root's parent empty, its branch version 0).
    pub fn infos(&self) -> Vec<ferrisdb_common::proto::DatabaseInfo> {
        self.list()
            .into_iter()
            .map(|(name, ancestor)| {
                let (parent, branch_version) =
                    ancestor.map_or((String::new(), 0), |(p, v)| (p, v.0));
                ferrisdb_common::proto::DatabaseInfo {
                    name,
                    parent,
                    branch_version,
                }
            })
            .collect()
    }

    /// Stops every database's background tasks.
    pub fn stop(&self) {
        if let Ok(tasks) = self.tasks.lock() {
            for t in tasks.iter() {
                t.abort();
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A pageserver on `store` checkpointing every `every`, not started. Its safekeeper
    /// address has nothing listening: the followers retry quietly, which the tests ignore.
    async fn pageserver(store: Arc<dyn ObjectStore>, every: Duration) -> Databases {
        let cache = Arc::new(BlockCache::new(&Default::default()).await.unwrap());
        Databases::new(
            store,
            Metrics::new().unwrap(),
            cache,
            TimelineOptions::default(),
            vec!["http://127.0.0.1:1".to_string()],
            every,
        )
    }

    #[tokio::test]
    async fn branches_stop_at_the_configured_maximum() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let dbs = pageserver(store, Duration::from_secs(3600))
            .await
            .with_max_branches(2);
        dbs.start_all(&["default".to_string()]).await.unwrap();
        dbs.branch("b1", "default", None, None).await.unwrap();
        dbs.branch("b2", "b1", None, None).await.unwrap();
        let e = dbs.branch("b3", "default", None, None).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
        assert!(dbs.timelines.get("b3").is_err());
        // The refusal changed nothing: the branches made still serve.
        assert_eq!(dbs.list().len(), 3);
        dbs.stop();
    }

    /// A pageserver whose checkpoint is fenced by another writing the same database stops
    /// serving it and loads it again from the newest manifest, then checkpoints on from there.
    #[tokio::test]
    async fn a_fenced_pageserver_reloads_the_newest_manifest() {
        use ferrisdb_common::wal::{Mutation, WalRecord};
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        // Records are applied by hand below.
        let started = |every| {
            let store = store.clone();
            async move {
                let dbs = pageserver(store, every).await;
                dbs.start_all(&["default".to_string()]).await.unwrap();
                dbs
            }
        };
        let rec = |v: u64, value: &str| WalRecord {
            version: Version(v),
            commit_time_micros: v,
            mutations: vec![Mutation::Set {
                key: bytes::Bytes::from_static(b"k"),
                value: bytes::Bytes::copy_from_slice(value.as_bytes()),
            }],
        };
        let a = started(Duration::from_secs(3600)).await;
        let b = started(Duration::from_millis(50)).await;
        // A checkpoints first: generation 1 is its.
        let at = a.timelines.get("default").unwrap();
        at.apply(&[rec(10, "a")]).unwrap();
        at.checkpoint(Version(10)).await.unwrap();
        // B, with data of its own, is fenced at its next checkpoint and reloads A's manifest.
        let old = b.timelines.get("default").unwrap();
        old.apply(&[rec(10, "a"), rec(20, "b")]).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let reloaded = loop {
            if let Ok(t) = b.timelines.get("default")
                && !Arc::ptr_eq(&t, &old)
            {
                break t;
            }
            assert!(tokio::time::Instant::now() < deadline, "B never reloaded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(reloaded.manifest_generation().await, 1);
        assert_eq!(reloaded.remote_consistent_version(), Version(10));
        assert_eq!(
            reloaded.get(b"k", Version(10)).await.unwrap().as_deref(),
            Some(&b"a"[..])
        );
        // And goes on from there: its next checkpoint is generation 2.
        reloaded.apply(&[rec(20, "b")]).unwrap();
        reloaded.checkpoint(Version(20)).await.unwrap();
        assert_eq!(reloaded.manifest_generation().await, 2);
        assert!(b.timelines.broken().is_empty());
        a.stop();
        b.stop();
    }

    /// A layer the manifest names but the bucket lost holds that database as broken, with
    /// `corruption` naming the object, while the pageserver serves the others. It was
    /// `unavailable`, which stopped the pageserver at start with every database on it (an
    /// outside audit).
    #[tokio::test]
    async fn a_layer_missing_from_the_bucket_holds_only_its_database_broken() {
        use ferrisdb_common::wal::{Mutation, WalRecord};
        use object_store::ObjectStoreExt;
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let names = ["default".to_string(), "other".to_string()];
        let first = pageserver(store.clone(), Duration::from_secs(3600)).await;
        first.start_all(&names).await.unwrap();
        for name in &names {
            let t = first.timelines.get(name).unwrap();
            t.apply(&[WalRecord {
                version: Version(10),
                commit_time_micros: 10,
                mutations: vec![Mutation::Set {
                    key: bytes::Bytes::from_static(b"k"),
                    value: bytes::Bytes::copy_from_slice(name.as_bytes()),
                }],
            }])
            .unwrap();
            t.checkpoint(Version(10)).await.unwrap();
        }
        first.stop();
        let m = crate::format::manifest::load_latest(&store, "default")
            .await
            .unwrap();
        let lost = crate::format::manifest::layer_path("default", &m.layers[0].name);
        store.delete(&lost).await.unwrap();

        let second = pageserver(store, Duration::from_secs(3600)).await;
        second.start_all(&names).await.unwrap();
        let other = second.timelines.get("other").unwrap();
        assert_eq!(
            other.get(b"k", Version(10)).await.unwrap().as_deref(),
            Some(&b"other"[..])
        );
        let e = second.timelines.get("default").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
        assert!(e.message().contains(&lost.to_string()), "{e}");
        assert!(e.message().contains("missing from the bucket"), "{e}");
        second.stop();
    }

    /// A clock stopped at one instant.
    #[derive(Debug)]
    struct Stopped(u64);

    impl ferrisdb_server_common::clock::Clock for Stopped {
        fn now_micros(&self) -> u64 {
            self.0
        }
    }

    #[tokio::test]
    async fn a_branch_at_a_time_still_ahead_is_refused() {
        let now = 1_800_000_000_000_000;
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let cache = Arc::new(BlockCache::new(&Default::default()).await.unwrap());
        let options = TimelineOptions {
            clock: Arc::new(Stopped(now)),
            ..TimelineOptions::default()
        };
        let dbs = Databases::new(
            store,
            Metrics::new().unwrap(),
            cache,
            options,
            vec!["http://127.0.0.1:1".to_string()],
            Duration::from_secs(3600),
        );
        dbs.start_all(&["default".to_string()]).await.unwrap();
        let e = dbs
            .branch("later", "default", None, Some(now + 1))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::FutureVersion, "{e}");
        assert!(dbs.timelines.get("later").is_err());
        // Now itself is a time that has come.
        assert_eq!(
            dbs.branch("now", "default", None, Some(now)).await.unwrap(),
            Version::ZERO
        );
        dbs.stop();
    }
}
