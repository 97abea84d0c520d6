//! The hot tier: every commit newer than what the pageserver has ingested, in memory, in
//! lock-free skip lists (`crossbeam-skiplist`, which reclaims memory with crossbeam-epoch).
//!
//! # The invariant
//!
//! The hot tier holds *every* commit above its `floor`. A read at version `v` therefore looks
//! here first; if no entry of the key lies in `(floor, v]`, the key did not change since
//! `floor`, and the pageserver (which has ingested up to `floor`) is asked at `floor`.
//!
//! # Layout
//!
//! - `points`: one entry per (key, version), ordered by key, then version *descending*, so the
//!   first entry at or after `(key, v)` is the key's newest version at or below `v`: a point
//!   read is one `lower_bound`. Lookups borrow the key (see [`PointProbe`]) instead of copying
//!   it.
//! - `tombstones`: range clears by (version, sequence). They are kept apart from the points
//!   because a range clear covers keys that have no entry here, so it cannot live under a key;
//!   they are rare next to point writes, so readers scan the few in `(floor, v]` and combine
//!   them with the point entry by version using the same rules as the pageserver's in-memory
//!   layer ([`RangeTombstones`], [`Overlay`]).
//! - `log`: every entry and tombstone by (version, sequence) — the order of the HybridLog —
//!   so eviction walks only what it removes, oldest first. Nothing else reads it, and it is
//!   only ever pushed at the back and drained from the front, so it is a queue behind a mutex
//!   (one push per batch, one drain per eviction) rather than a fourth skip list: a skip-list
//!   insert and removal per write cost ~2 % of the compute's instructions per write.
//! - `times` / `by_time`: commit time by version and version by commit time, for `history`
//!   and `version_at`.
//!
//! # Writers and readers
//!
//! One committer applies batches in version order; a batch at `v` is applied before `v` is
//! published as committed, so no reader looks at `v` while it is half applied (which is also
//! why a range clear may delete the same batch's earlier point entries in place). Readers take
//! no lock at all. Evictions come from one background loop; a mutex keeps two overlapping
//! calls from interleaving, and no reader or applier ever takes it. The applier and the
//! evictor share only the `log` queue's lock, each for one push or one drain.
//!
//! # Eviction without a lock: the ordering
//!
//! Raising the floor from `F` to `F'` and removing the entries in `(F, F']` cannot be one
//! atomic step, and a reader must never combine the old floor `F` with a lookup that already
//! misses entries of `(F, F']` — it would ask the pageserver at `F` and miss those changes.
//! So the evictor:
//!
//! 1. tells the [`EvictionObserver`] (the warm tier) about every entry in `(F, F']`, then —
//!    when no range clear lies in `(F, F']` — hands it each changed key's value at `F'` (the
//!    key's newest entry there), so a read after the eviction finds it warm instead of asking
//!    the pageserver,
//! 2. publishes `floor = F'` (SeqCst),
//! 3. only then removes the entries (SeqCst marks inside the skip list),
//! 4. signals [`HotTier::subscribe_evictions`] (the committer's memory budget).
//!
//! A reader loads the floor, does its lookup ignoring entries at or below that floor (they may
//! be half removed; the pageserver has them), and loads the floor again: if it moved, it
//! retries. If a lookup failed to see an entry above `F` because it had been removed, that
//! removal came after the store of a higher floor, and the reader's second load — after it saw
//! the removal — sees that floor; so an answer is only returned when no entry above the floor
//! it used can have been removed under it. The floor only grows, so there is no ABA. Retries
//! happen only when an eviction lands during a lookup (a few times a second at most).
//!
//! Step 1 before step 2 is what the warm tier needs: once a reader can see floor `F'`, every
//! key changed at or below `F'` has already been marked stale there (see `warm_tier`).

use std::borrow::Borrow;
use std::cmp::Ordering as CmpOrdering;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use crossbeam_skiplist::SkipMap;
use ferrisdb_common::Version;
use ferrisdb_common::overlay::Overlay;
use ferrisdb_common::wal::Mutation;
use ferrisdb_server_common::versioned_map::{Lookup, RangeTombstone, RangeTombstones};
use tokio::sync::watch;

/// Bytes charged per entry beyond its key and value: the skip-list nodes of the entry and of
/// its log record, and the `Bytes` headers. Approximate, like every byte count here.
const ENTRY_OVERHEAD: usize = 96;

/// A point entry's place in `points`: key ascending, then version descending (`rev` is
/// `u64::MAX - version`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PointKey {
    key: Bytes,
    rev: u64,
}

impl PointKey {
    fn version(&self) -> Version {
        Version(u64::MAX - self.rev)
    }
}

/// A borrowed view of a [`PointKey`], so lookups compare against a `&[u8]` without copying the
/// key into a `Bytes` first.
trait PointProbe {
    fn key(&self) -> &[u8];
    fn rev(&self) -> u64;
}

impl PointProbe for PointKey {
    fn key(&self) -> &[u8] {
        &self.key
    }
    fn rev(&self) -> u64 {
        self.rev
    }
}

impl PointProbe for (&[u8], u64) {
    fn key(&self) -> &[u8] {
        self.0
    }
    fn rev(&self) -> u64 {
        self.1
    }
}

impl Ord for dyn PointProbe + '_ {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.key()
            .cmp(other.key())
            .then(self.rev().cmp(&other.rev()))
    }
}

impl PartialOrd for dyn PointProbe + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for dyn PointProbe + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for dyn PointProbe + '_ {}

impl<'a> Borrow<dyn PointProbe + 'a> for PointKey {
    fn borrow(&self) -> &(dyn PointProbe + 'a) {
        self
    }
}

/// The first entry of `key` at or below `version` sorts at or after this.
fn rev(version: Version) -> u64 {
    u64::MAX - version.0
}

/// What one log record put in the hot tier.
#[derive(Debug)]
enum Logged {
    /// A key and the value it was given (`None`: cleared), kept here too so an eviction
    /// hands values over without looking each one up again.
    Point(Bytes, Option<Bytes>),
    /// A range clear, kept in `tombstones` under the same (version, sequence).
    Range,
}

/// A log record: what was added and the bytes it was charged.
#[derive(Debug)]
struct LogRecord {
    what: Logged,
    bytes: usize,
}

/// Told which keys leave the hot tier, before the floor that drops them is published.
pub trait EvictionObserver: Send + Sync + std::fmt::Debug {
    /// `key` changed at `version`, which is about to leave the hot tier.
    fn evicted_point(&self, key: &[u8], version: Version);
    /// `[begin, end)` was cleared at `version`, which is about to leave the hot tier.
    fn evicted_range(&self, begin: &[u8], end: &[u8], version: Version);
    /// The value at `floor` (`None`: absent) of every key that changed in an eviction up to
    /// `floor`, in key order, told after every change was reported and before `floor` is
    /// published. Only for evictions without a range clear: a clear changes keys this tier
    /// cannot name.
    fn evicted_values(&self, floor: Version, values: &[(Bytes, Option<Bytes>)]);
}

/// Recent commits, versioned.
#[derive(Debug)]
pub struct HotTier {
    floor: AtomicU64,
    points: SkipMap<PointKey, Option<Bytes>>,
    tombstones: SkipMap<(Version, u64), (Bytes, Bytes)>,
    log: Mutex<VecDeque<((Version, u64), LogRecord)>>,
    times: SkipMap<Version, u64>,
    by_time: SkipMap<(u64, Version), ()>,
    /// Orders the records of one version (a batch's mutations apply in order).
    seq: AtomicU64,
    bytes: AtomicUsize,
    /// The newest commit time applied (never evicted).
    last_time: AtomicU64,
    /// Past this many bytes the committer waits for evictions before appending more.
    budget: usize,
    evicting: Mutex<()>,
    evictions: watch::Sender<Version>,
    observer: Option<Arc<dyn EvictionObserver>>,
}

/// One version of a key in the hot tier: version, commit time, value (`None`: cleared), and
/// whether a range clear made it.
pub type HotVersion = (Version, u64, Option<Bytes>, bool);

/// What the hot tier says about a point read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HotRead {
    /// The answer (`None`: deleted).
    Found(Option<Bytes>),
    /// Unchanged since this version: ask the pageserver there.
    AskPageserverAt(Version),
}

impl Default for HotTier {
    fn default() -> HotTier {
        HotTier::new(Version::ZERO)
    }
}

impl HotTier {
    /// An empty hot tier holding every commit above `floor` (there are none yet), with no
    /// memory budget.
    pub fn new(floor: Version) -> HotTier {
        HotTier {
            floor: AtomicU64::new(floor.0),
            points: SkipMap::new(),
            tombstones: SkipMap::new(),
            log: Mutex::new(VecDeque::new()),
            times: SkipMap::new(),
            by_time: SkipMap::new(),
            seq: AtomicU64::new(0),
            bytes: AtomicUsize::new(0),
            last_time: AtomicU64::new(0),
            budget: usize::MAX,
            evicting: Mutex::new(()),
            evictions: watch::channel(floor).0,
            observer: None,
        }
    }

    /// Sets the memory budget: past it, [`HotTier::over_budget`] says so until evictions bring
    /// the bytes back under it (0: no budget).
    pub fn with_budget(mut self, bytes: usize) -> HotTier {
        self.budget = if bytes == 0 { usize::MAX } else { bytes };
        self
    }

    /// Has `observer` told about every entry before it leaves.
    pub fn with_observer(mut self, observer: Arc<dyn EvictionObserver>) -> HotTier {
        self.observer = Some(observer);
        self
    }

    /// The floor: every commit above it is here.
    pub fn floor(&self) -> Version {
        Version(self.floor.load(Ordering::SeqCst))
    }

    /// Runs `lookup` with the floor until the floor is the same before and after it, so the
    /// answer never pairs a floor with a lookup that lost entries above it (module doc).
    fn consistent<T>(&self, mut lookup: impl FnMut(Version) -> T) -> (T, Version) {
        loop {
            let floor = self.floor.load(Ordering::SeqCst);
            let answer = lookup(Version(floor));
            if self.floor.load(Ordering::SeqCst) == floor {
                return (answer, Version(floor));
            }
        }
    }

    /// The range clears with versions in `(floor, to]`, oldest first.
    fn tombstones_in(&self, floor: Version, to: Version) -> RangeTombstones {
        if floor >= to || self.tombstones.is_empty() {
            return RangeTombstones::default();
        }
        let lo = (Version(floor.0 + 1), 0);
        let hi = (to, u64::MAX);
        self.tombstones
            .range(lo..=hi)
            .map(|e| RangeTombstone {
                begin: e.value().0.clone(),
                end: e.value().1.clone(),
                version: e.key().0,
            })
            .collect()
    }

    /// The newest point entry of `key` in `(floor, version]`.
    fn newest_point(&self, key: &[u8], floor: Version, version: Version) -> Option<PointRead> {
        let probe = (key, rev(version));
        let e = self
            .points
            .lower_bound(Bound::Included(&probe as &dyn PointProbe))?;
        let k = e.key();
        (k.key.as_ref() == key && k.version() > floor).then(|| (k.version(), e.value().clone()))
    }

    /// The versions of `key` in `(floor, to]` with commit times, oldest first, and the floor:
    /// versions at or below it must come from the pageserver. Range clears covering the key
    /// are included as clears flagged `true` (unless a point entry at the same version came
    /// after them); the caller drops those that removed nothing.
    pub fn history(&self, key: &[u8], to: Version) -> (Vec<HotVersion>, Version) {
        self.consistent(|floor| {
            if to <= floor {
                return Vec::new();
            }
            let from = Version(floor.0 + 1);
            let newest = (key, rev(to));
            let oldest = (key, rev(from));
            let mut entries: Vec<HotVersion> = self
                .points
                .range::<dyn PointProbe + '_, _>((
                    Bound::Included(&newest as &dyn PointProbe),
                    Bound::Included(&oldest as &dyn PointProbe),
                ))
                .map(|e| {
                    let v = e.key().version();
                    (v, self.time_of(v), e.value().clone(), false)
                })
                .collect();
            for c in self
                .tombstones_in(floor, to)
                .versions_covering(key, from, to)
            {
                if !entries.iter().any(|e| e.0 == c) {
                    entries.push((c, self.time_of(c), None, true));
                }
            }
            entries.sort_by_key(|e| e.0);
            entries
        })
    }

    fn time_of(&self, version: Version) -> u64 {
        self.times.get(&version).map_or(0, |e| *e.value())
    }

    /// The latest version committed at or before `time_micros` among the hot versions; `None`
    /// when the timestamp is older than all of them (ask the pageserver).
    pub fn version_at(&self, time_micros: u64) -> Option<Version> {
        self.consistent(|floor| {
            let probe = (time_micros, Version(u64::MAX));
            // An answer at or below the floor may be half evicted; the pageserver has it.
            self.by_time
                .upper_bound(Bound::Included(&probe))
                .map(|e| e.key().1)
                .filter(|v| *v > floor)
        })
        .0
    }

    /// Applies a committed batch at `version`, committed at `time_micros`. Batches come in
    /// version order, from one applier, before `version` is published to readers.
    pub fn apply(&self, version: Version, time_micros: u64, mutations: &[Mutation]) {
        let mut added = 0;
        let mut logged = Vec::with_capacity(mutations.len());
        for m in mutations {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            match m {
                Mutation::ClearRange { begin, end } => {
                    if begin >= end {
                        continue;
                    }
                    // The batch's own earlier writes inside the range came before the clear.
                    let lo = (begin.as_ref(), 0u64);
                    let hi = (end.as_ref(), 0u64);
                    let doomed = self.points.range::<dyn PointProbe + '_, _>((
                        Bound::Included(&lo as &dyn PointProbe),
                        Bound::Excluded(&hi as &dyn PointProbe),
                    ));
                    for e in doomed.filter(|e| e.key().version() == version) {
                        e.remove();
                    }
                    let bytes = begin.len() + end.len() + ENTRY_OVERHEAD;
                    self.tombstones
                        .insert((version, seq), (begin.clone(), end.clone()));
                    logged.push((
                        (version, seq),
                        LogRecord {
                            what: Logged::Range,
                            bytes,
                        },
                    ));
                    added += bytes;
                }
                _ => {
                    let key = m.key().clone();
                    let value = m.value().cloned();
                    let bytes = key.len() + value.as_ref().map_or(0, Bytes::len) + ENTRY_OVERHEAD;
                    self.points.insert(
                        PointKey {
                            key: key.clone(),
                            rev: rev(version),
                        },
                        value.clone(),
                    );
                    logged.push((
                        (version, seq),
                        LogRecord {
                            what: Logged::Point(key, value),
                            bytes,
                        },
                    ));
                    added += bytes;
                }
            }
        }
        // Versions arrive in order, so the queue stays sorted by (version, sequence).
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(logged);
        // Commit times never decrease (a clock step back is raised), so `by_time` stays
        // ordered like the versions.
        let last = self.by_time.back().map_or(0, |e| e.key().0);
        let time = time_micros.max(last);
        self.times.insert(version, time);
        self.by_time.insert((time, version), ());
        self.last_time.fetch_max(time, Ordering::SeqCst);
        self.bytes.fetch_add(added, Ordering::SeqCst);
    }

    /// A point read at `version`.
    pub fn get(&self, key: &[u8], version: Version) -> HotRead {
        let (lookup, floor) = self.consistent(|floor| {
            if version <= floor {
                return Lookup::Absent;
            }
            let point = self.newest_point(key, floor, version);
            let cleared = self.tombstones_in(floor, version).covering(key, version);
            match (point, cleared) {
                (Some((v, _)), Some(t)) if t > v => Lookup::Found(None),
                (Some((_, val)), _) => Lookup::Found(val),
                (None, Some(_)) => Lookup::Found(None),
                (None, None) => Lookup::Absent,
            }
        });
        match lookup {
            Lookup::Found(v) => HotRead::Found(v),
            Lookup::Absent => HotRead::AskPageserverAt(floor.min(version)),
        }
    }

    /// For a range read at `version`: what the hot tier says (each hot key's value, and the
    /// ranges cleared above the floor) and the version at which the pageserver must be asked
    /// for the rest.
    pub fn range(
        &self,
        begin: &[u8],
        end: &[u8],
        version: Version,
        limit: usize,
        reverse: bool,
    ) -> (Overlay, Version) {
        // A forward read of `limit` rows needs no entry past the `limit`-th live one: those
        // rows already answer it whatever lies beyond (see `Overlay::read_range`). Without
        // this a short scan to the end of the key space copied every newer key above its
        // start. (Reverse reads collect the whole range: the points are ordered for forward
        // walks.)
        let enough = if limit > 0 && !reverse {
            limit
        } else {
            usize::MAX
        };
        let (overlay, floor) = self.consistent(|floor| {
            if version <= floor {
                return Overlay::default();
            }
            let cleared = self
                .tombstones_in(floor, version)
                .overlapping(begin, end, version);
            let mut entries = BTreeMap::new();
            let mut live = 0;
            if begin < end {
                self.each_latest(begin, end, floor, version, |k, v, val| {
                    let val = if cleared.hides(k, v, version) {
                        None
                    } else {
                        val.clone()
                    };
                    live += usize::from(val.is_some());
                    entries.insert(k.clone(), val);
                    live < enough
                });
            }
            let cleared = cleared
                .iter()
                .map(|t| (t.begin.clone(), t.end.clone()))
                .collect();
            Overlay { entries, cleared }
        });
        (overlay, floor.min(version))
    }

    /// Calls `f` with each key of `[begin, end)` whose newest entry at or below `version` lies
    /// above `floor`, in key order, until `f` returns false; seeks past the versions it does
    /// not need.
    fn each_latest(
        &self,
        begin: &[u8],
        end: &[u8],
        floor: Version,
        version: Version,
        mut f: impl FnMut(&Bytes, Version, &Option<Bytes>) -> bool,
    ) {
        let start = (begin, rev(version));
        let mut next = self
            .points
            .lower_bound(Bound::Included(&start as &dyn PointProbe));
        while let Some(e) = next {
            let k = e.key();
            if k.key.as_ref() >= end {
                break;
            }
            if k.version() > version {
                // Newer than the read: jump to this key's newest at or below it.
                let probe = (k.key.as_ref(), rev(version));
                next = self
                    .points
                    .lower_bound(Bound::Included(&probe as &dyn PointProbe));
                continue;
            }
            if k.version() > floor && !f(&k.key, k.version(), e.value()) {
                return;
            }
            // Past this key's older versions.
            let probe = (k.key.as_ref(), u64::MAX);
            next = self
                .points
                .lower_bound(Bound::Excluded(&probe as &dyn PointProbe));
        }
    }

    /// Drops what the pageserver has ingested up to `version` and raises the floor there, in
    /// the order the module doc explains.
    pub fn evict_up_to(&self, version: Version) {
        let _one_at_a_time = self.evicting.lock().unwrap_or_else(|p| p.into_inner());
        if version.0 <= self.floor.load(Ordering::SeqCst) {
            return;
        }
        let upto = (version, u64::MAX);
        // Taken off the queue at once (nothing else reads it), then handed over and removed in
        // the order the module doc gives.
        let evicted: Vec<((Version, u64), LogRecord)> = {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            let n = log.partition_point(|(at, _)| *at <= upto);
            log.drain(..n).collect()
        };
        if let Some(observer) = &self.observer {
            // Each key's newest change up to `version` is its value there, unless a range clear
            // lies in between: then no values are handed over (the marks still are).
            // (A point a range clear of its own batch removed is followed by that clear's
            // record, so no values go over then either.)
            let mut newest: Vec<(Bytes, Option<Bytes>)> = Vec::new();
            let mut cleared = false;
            for (at, record) in &evicted {
                match &record.what {
                    Logged::Point(key, value) => {
                        observer.evicted_point(key, at.0);
                        if !cleared {
                            newest.push((key.clone(), value.clone()));
                        }
                    }
                    Logged::Range => {
                        cleared = true;
                        if let Some(t) = self.tombstones.get(at) {
                            observer.evicted_range(&t.value().0, &t.value().1, at.0);
                        }
                    }
                }
            }
            if !cleared && !newest.is_empty() {
                // In key order, as the observer expects, each key once with its newest value:
                // newest first, a stable sort by key keeps that order within a key, and dedup
                // keeps the first of each run. (Cheaper than a map of the keys.)
                newest.reverse();
                newest.sort_by(|a, b| a.0.cmp(&b.0));
                newest.dedup_by(|later, kept| later.0 == kept.0);
                observer.evicted_values(version, &newest);
            }
        }
        self.floor.store(version.0, Ordering::SeqCst);
        let mut freed = 0;
        for (at, record) in &evicted {
            match &record.what {
                Logged::Point(key, _) => {
                    let k = (key.as_ref(), rev(at.0));
                    self.points.remove(&k as &dyn PointProbe);
                }
                Logged::Range => {
                    self.tombstones.remove(at);
                }
            }
            freed += record.bytes;
        }
        while let Some(e) = self.times.front() {
            if *e.key() > version {
                break;
            }
            self.by_time.remove(&(*e.value(), *e.key()));
            e.remove();
        }
        self.bytes.fetch_sub(freed, Ordering::SeqCst);
        self.evictions.send_replace(version);
    }

    /// The commit time of the newest batch applied, even once evicted (0: none yet): a
    /// timestamp before it maps to the same version forever.
    pub fn last_commit_time(&self) -> u64 {
        self.last_time.load(Ordering::SeqCst)
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::SeqCst)
    }

    /// The memory budget (`usize::MAX`: none).
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Whether the hot tier holds more than its budget: new commits should wait for the
    /// pageserver to catch up and evictions to free memory.
    pub fn over_budget(&self) -> bool {
        self.bytes() > self.budget
    }

    /// Changes after every eviction (to the new floor), so a writer waiting for memory wakes.
    pub fn subscribe_evictions(&self) -> watch::Receiver<Version> {
        self.evictions.subscribe()
    }

    /// (floor, entries, approximate bytes), for status and metrics.
    pub fn stats(&self) -> (Version, usize, usize) {
        (self.floor(), self.points.len(), self.bytes())
    }
}

/// A point entry's version and value.
type PointRead = (Version, Option<Bytes>);

#[cfg(test)]
mod tests {
    use super::*;
    use ferrisdb_server_common::versioned_map::VersionedMap;

    fn set(k: &str, v: &str) -> Mutation {
        Mutation::Set {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
        }
    }

    #[test]
    fn reads_fall_through_to_the_floor() {
        let hot = HotTier::new(Version(100));
        hot.apply(Version(110), 1_000, &[set("a", "1")]);
        assert_eq!(hot.version_at(999), None);
        assert_eq!(hot.version_at(1_500), Some(Version(110)));
        hot.apply(
            Version(120),
            2_000,
            &[Mutation::Clear {
                key: Bytes::from_static(b"a"),
            }],
        );
        assert_eq!(
            hot.get(b"a", Version(115)),
            HotRead::Found(Some(Bytes::from_static(b"1")))
        );
        assert_eq!(hot.get(b"a", Version(120)), HotRead::Found(None));
        assert_eq!(
            hot.get(b"b", Version(120)),
            HotRead::AskPageserverAt(Version(100))
        );
        assert_eq!(
            hot.get(b"a", Version(90)),
            HotRead::AskPageserverAt(Version(90))
        );
        let (h, floor) = hot.history(b"a", Version(120));
        assert_eq!(floor, Version(100));
        assert_eq!(
            h,
            vec![
                (Version(110), 1_000, Some(Bytes::from_static(b"1")), false),
                (Version(120), 2_000, None, false)
            ]
        );
        hot.evict_up_to(Version(110));
        assert_eq!(
            hot.get(b"a", Version(115)),
            HotRead::AskPageserverAt(Version(110))
        );
        assert_eq!(hot.version_at(1_500), None);
        assert_eq!(hot.version_at(2_500), Some(Version(120)));
        assert_eq!(hot.get(b"a", Version(125)), HotRead::Found(None));
        let (range, floor) = hot.range(b"a", b"z", Version(125), 0, false);
        assert_eq!(floor, Version(110));
        assert_eq!(
            range.entries.into_iter().collect::<Vec<_>>(),
            vec![(Bytes::from_static(b"a"), None)]
        );
        hot.apply(
            Version(130),
            3_000,
            &[
                set("b", "2"),
                Mutation::ClearRange {
                    begin: Bytes::from_static(b"a"),
                    end: Bytes::from_static(b"c"),
                },
                set("bb", "3"),
            ],
        );
        let (range, _) = hot.range(b"a", b"z", Version(130), 0, false);
        assert_eq!(
            range.entries.clone().into_iter().collect::<Vec<_>>(),
            vec![
                (Bytes::from_static(b"a"), None),
                (Bytes::from_static(b"bb"), Some(Bytes::from_static(b"3")))
            ]
        );
        assert!(range.overrides(b"ab") && range.overrides(b"bb") && !range.overrides(b"c"));
        assert_eq!(hot.get(b"b", Version(130)), HotRead::Found(None));
        assert_eq!(hot.get(b"ba", Version(130)), HotRead::Found(None));
        assert_eq!(
            hot.get(b"ba", Version(129)),
            HotRead::AskPageserverAt(Version(110))
        );
        let (h, _) = hot.history(b"ba", Version(130));
        assert_eq!(h, vec![(Version(130), 3_000, None, true)]);
        assert!(hot.bytes() > 0);
        hot.evict_up_to(Version(130));
        assert_eq!(hot.stats(), (Version(130), 0, 0));
        assert_eq!(
            hot.get(b"bb", Version(130)),
            HotRead::AskPageserverAt(Version(130))
        );
    }

    #[test]
    fn range_reads_skip_versions_newer_than_the_read() {
        let hot = HotTier::new(Version(0));
        for v in 1..=5u64 {
            hot.apply(
                Version(v * 10),
                v,
                &[set("k1", &format!("a{v}")), set(&format!("k{v}"), "x")],
            );
        }
        let (o, floor) = hot.range(b"k", b"l", Version(25), 0, false);
        assert_eq!(floor, Version(0));
        let got: Vec<_> = o.entries.into_iter().collect();
        assert_eq!(
            got,
            vec![
                (Bytes::from_static(b"k1"), Some(Bytes::from_static(b"a2"))),
                (Bytes::from_static(b"k2"), Some(Bytes::from_static(b"x")))
            ]
        );
        let (o, _) = hot.range(b"k2", b"k4", Version(50), 0, false);
        assert_eq!(o.entries.len(), 2);
    }

    /// A tiny deterministic generator, so the stress test needs no extra crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn key(i: u64) -> Bytes {
        Bytes::from(format!("k{i:02}"))
    }

    /// One batch of random sets, clears and (now and then) range clears at `version`.
    fn batch(rng: &mut Rng, version: u64, keys: u64) -> Vec<Mutation> {
        (0..1 + rng.below(4))
            .map(|_| match rng.below(20) {
                0 => {
                    let a = rng.below(keys);
                    let b = a + 1 + rng.below(4);
                    Mutation::ClearRange {
                        begin: key(a),
                        end: key(b),
                    }
                }
                1..=3 => Mutation::Clear {
                    key: key(rng.below(keys)),
                },
                _ => Mutation::Set {
                    key: key(rng.below(keys)),
                    value: Bytes::from(format!("v{version}")),
                },
            })
            .collect()
    }

    /// Threads applying, evicting and reading at once; every answer is checked against a
    /// model of the whole database (the hot tier plus a "pageserver" that has everything).
    #[test]
    fn concurrent_reads_agree_with_a_model_while_applying_and_evicting() {
        const KEYS: u64 = 24;
        const BATCHES: u64 = 3_000;
        // The model: every batch, kept forever, and the published committed version.
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let batches: Vec<(Version, Vec<Mutation>)> = (1..=BATCHES)
            .map(|v| (Version(v * 10), batch(&mut rng, v * 10, KEYS)))
            .collect();
        let mut model = VersionedMap::default();
        for (v, ms) in &batches {
            for m in ms {
                model.apply(*v, m);
            }
        }
        let model = Arc::new(model);
        let hot = Arc::new(HotTier::new(Version::ZERO));
        let committed = Arc::new(AtomicU64::new(0));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let value_at = |model: &VersionedMap, k: &[u8], v: Version| match model.get(k, v) {
            Lookup::Found(x) => x,
            Lookup::Absent => None,
        };
        std::thread::scope(|s| {
            // The applier publishes a version only after applying it, as the committer does.
            s.spawn(|| {
                for (v, ms) in &batches {
                    hot.apply(*v, v.0, ms);
                    committed.store(v.0, Ordering::SeqCst);
                }
                done.store(true, Ordering::SeqCst);
            });
            // The evictor trails the committed version, as the pageserver's ingest does.
            s.spawn(|| {
                let mut rng = Rng(7);
                while !done.load(Ordering::SeqCst) {
                    let c = committed.load(Ordering::SeqCst);
                    let lag = rng.below(200);
                    hot.evict_up_to(Version(c.saturating_sub(lag)));
                    std::thread::yield_now();
                }
            });
            for t in 0..3u64 {
                let (hot, committed, done, model) = (&hot, &committed, &done, &model);
                s.spawn(move || {
                    let mut rng = Rng(1000 + t);
                    let mut checked = 0u64;
                    while !done.load(Ordering::SeqCst) || checked < 2_000 {
                        let c = committed.load(Ordering::SeqCst);
                        // Read at the latest version, or a little behind it.
                        let v = Version(c.saturating_sub(rng.below(3) * 10));
                        let k = key(rng.below(KEYS));
                        let want = value_at(model, &k, v);
                        let got = match hot.get(&k, v) {
                            HotRead::Found(x) => x,
                            HotRead::AskPageserverAt(at) => {
                                assert!(at <= v, "asked the pageserver above the read");
                                value_at(model, &k, at)
                            }
                        };
                        assert_eq!(got, want, "key {k:?} at {v}");
                        let a = rng.below(KEYS);
                        let (lo, hi) = (key(a), key(a + 1 + rng.below(6)));
                        let (overlay, at) = hot.range(&lo, &hi, v, 0, false);
                        for i in 0..KEYS {
                            let k = key(i);
                            if k < lo || k >= hi {
                                continue;
                            }
                            let got = match overlay.entries.get(&k) {
                                Some(x) => x.clone(),
                                None if overlay.is_cleared(&k) => None,
                                None => value_at(model, &k, at),
                            };
                            assert_eq!(got, value_at(model, &k, v), "range: {k:?} at {v}");
                        }
                        let (history, floor) = hot.history(&k, v);
                        for (hv, _, val, range_clear) in history {
                            assert!(hv > floor && hv <= v);
                            if !range_clear {
                                assert_eq!(val, value_at(model, &k, hv), "history {k:?}@{hv}");
                            }
                        }
                        checked += 1;
                    }
                });
            }
        });
        let last = batches.last().map_or(Version::ZERO, |b| b.0);
        hot.evict_up_to(last);
        assert_eq!(hot.stats(), (last, 0, 0));
    }

    #[test]
    fn evictions_wake_subscribers_and_free_the_budget() {
        let hot = HotTier::new(Version(0)).with_budget(200);
        let mut evictions = hot.subscribe_evictions();
        hot.apply(Version(1), 1, &[set("a", &"x".repeat(300))]);
        assert!(hot.over_budget());
        evictions.borrow_and_update();
        hot.evict_up_to(Version(1));
        assert!(evictions.has_changed().unwrap_or(false));
        assert!(!hot.over_budget());
    }
}
