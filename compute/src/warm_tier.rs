//! The warm tier: values read from the pageserver, kept in a foyer hybrid cache (memory, then
//! local disk), and small immutable metadata (timestamp → version answers) in moka.
//!
//! # What an entry means
//!
//! An entry is `key → (f, value)`: `key` had `value` at version `f`. Either the pageserver
//! said so (`f` is the version it was asked at — the hot tier's floor, or an older read
//! version), or the hot tier handed the key's newest change over as it evicted up to `f`
//! (written through, so the reads after a write find the value warm instead of asking the
//! pageserver for it). A read that the
//! hot tier sends to the pageserver at version `at` (so no entry of the key lies in
//! `(at, read version]`) may use the entry only if the key did not change in `(f, at]`; then
//! its value at `at` is its value at `f`. Reads at `at < f` never use it.
//!
//! # Knowing that the key did not change in `(f, at]`
//!
//! Every change in `(f, at]` went through the hot tier and has left it (`at` is at or below
//! the floor). The hot tier tells this tier about every entry it evicts ([`EvictionObserver`])
//! *before* it publishes the floor that drops it. This tier keeps a table of marks (`stale`);
//! each key hashes to [`SLOTS_PER_KEY`] slots of it, and an evicted change at `c` raises each of
//! its key's slots to at least `c`. The key's mark is the *lowest* of its slots, `mark(key)`.
//! Range clears, which cover keys this tier cannot enumerate, raise one global newest version
//! (`stale_ranges`). A hit needs
//!
//! `max(mark(key), stale_ranges) <= f <= at`.
//!
//! Why that is enough: the reader loaded the hot tier's floor (to get `at`, or to learn its read
//! version is at or below the floor) before it loads the marks (SeqCst both). Any change of
//! the key at `c <= at` raised every one of the key's slots to `c` or more before a floor `>= c`
//! was published, so a reader that saw that floor sees all of them, their lowest is still
//! `>= c`, and `f < c` fails the test. Another key raises the mark only if it shares every
//! slot with this one; that, and range clears, only cause misses, never wrong answers.
//!
//! Why several slots: a false miss costs a pageserver read. With one slot per key, loading
//! 100,000 keys into a table of 2^18 slots left 17 % of them missing their written-through
//! entry (each later-evicted key sharing a slot knocked out an earlier one), and a write
//! knocked out 0.4 other keys; with three slots in 2^20, 0.4 % miss (see the test
//! `a_loaded_key_space_stays_warm`).
//!
//! # The race this rules out
//!
//! A pageserver read at `f` is in flight; meanwhile a commit `c > f` to the key is applied and
//! then evicted (floor `>= c`), and only then does the read return and insert `(f, old)`.
//! Every later read finds `mark >= c > f` and misses (even an older read version, for which
//! `old` would be right: the test is deliberately the simple, conservative one). Inserts
//! therefore never need to be atomic with anything: every hit is validated, whatever was
//! inserted and whenever.
//!
//! # Incarnations
//!
//! The foyer cache is shared by every database this compute serves. Each primary's (or
//! replica's) view has a fresh incarnation number prefixed to its keys, so a new view never
//! sees entries a previous one cached; the disk tier is opened without recovery, so nothing
//! from an earlier process is read back either.
//!
//! A view's hot tier starts at some floor `s` (where the primary won its term, or what the
//! pageserver had ingested when the replica started): changes at or below `s` never passed
//! through it and were never marked. Its marks therefore start at `s`, as if every key had
//! changed there, so only entries read at or above `s` can hit. Without that, a time-travel
//! read at 50 would be served again for a read at 94 although the key changed at 80, before
//! this compute started.
//!
//! # Metadata in moka
//!
//! `version_at(t)` answers are immutable once a commit with a time after `t` exists (later
//! commits get later times, and everything at or before `t` has left the hot tier when the
//! hot tier cannot answer), so those pageserver answers are cached in a small moka cache.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use ferrisdb_common::{Result, Version};
use ferrisdb_server_common::hybrid_cache::{self, HybridCacheConfig, byte_weight};
use foyer::{HybridCache, Load, RecoverMode};

use crate::hot_tier::EvictionObserver;
use crate::mark_table::MarkTable;
use crate::range_cache::RangeCache;

/// Slots of the table of marks (see "Knowing that the key did not change" in the module
/// doc): 8 bytes each, up to 8 MiB per primary or replica view (allocated as marks land, see
/// [`MarkTable`]), many more slots than a hot working set has keys, so a key rarely shares all
/// of its slots with keys written after it.
const STALE_SLOTS: usize = 1 << 20;
/// Slots per key: its mark is the lowest of them. Each is `STALE_SLOT_BITS` bits of one hash.
const SLOTS_PER_KEY: usize = 3;
/// Bits of the key's hash that pick one slot (`SLOTS_PER_KEY` of them fit in 64).
const STALE_SLOT_BITS: u32 = STALE_SLOTS.trailing_zeros();
const _: () =
    assert!(STALE_SLOTS.is_power_of_two() && SLOTS_PER_KEY as u32 * STALE_SLOT_BITS <= u64::BITS);
/// `version_at` answers kept per primary.
const VERSION_AT_ENTRIES: u64 = 10_000;

/// Where and how much to cache: the shared hybrid cache config, so the warm tier is sized and
/// placed like the pageserver's block cache; by default 128 MiB in memory and no disk tier.
pub type WarmTierConfig = HybridCacheConfig<{ 128 << 20 }>;

/// The cache shared by every database of a compute process.
pub struct WarmCache {
    cache: HybridCache<Bytes, Bytes>,
    memory_capacity: usize,
    disk_capacity: usize,
    next_incarnation: AtomicU64,
}

impl std::fmt::Debug for WarmCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmCache")
            .field("memory_capacity", &self.memory_capacity)
            .field("disk_capacity", &self.disk_capacity)
            .finish()
    }
}

impl WarmCache {
    /// Opens the cache; the disk tier's directory is created if needed and its old contents
    /// are not recovered.
    pub async fn open(config: &WarmTierConfig) -> Result<Arc<WarmCache>> {
        // Never recovered: every view's keys carry a fresh incarnation (see the module doc),
        // so nothing an earlier process wrote could ever hit.
        let cache =
            hybrid_cache::build("ferrisdb-warm-tier", config, RecoverMode::None, byte_weight)
                .await?;
        Ok(Arc::new(WarmCache {
            cache,
            memory_capacity: config.memory_capacity(),
            disk_capacity: config.disk_capacity(),
            next_incarnation: AtomicU64::new(1),
        }))
    }

    /// Closes the cache and waits for its disk tier (see
    /// [`hybrid_cache::close`]); the compute does this last, on every path out of `run`.
    pub async fn close(&self) {
        hybrid_cache::close("ferrisdb-warm-tier", &self.cache).await;
    }

    /// A fresh view for one primary or replica whose hot tier holds every commit above
    /// `since` (see "Incarnations" in the module doc).
    pub fn tier(self: &Arc<Self>, since: Version) -> WarmTier {
        let incarnation = self.next_incarnation.fetch_add(1, Ordering::Relaxed);
        WarmTier {
            cache: self.clone(),
            prefix: incarnation.to_be_bytes(),
            // Changes at or below `since` never passed through this hot tier, so nothing
            // marks them: count every key as changed at `since`, which makes entries read
            // below it miss. The newest range clear starts there, and a key's mark is never
            // below it, so the table's slots may start at 0 (unallocated).
            stale: MarkTable::new(STALE_SLOTS),
            stale_ranges: AtomicU64::new(since.0),
            version_at: moka::future::Cache::new(VERSION_AT_ENTRIES),
            ranges: RangeCache::new(since),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The raw entry under `key`: memory first, then disk. (foyer's `HybridCache::get` would
    /// spawn a deduplicated fetch task for every memory miss; small values do not need that.)
    async fn lookup(&self, key: &Bytes) -> Option<Bytes> {
        if let Some(entry) = self.cache.memory().get(key) {
            return Some(entry.value().clone());
        }
        if self.disk_capacity == 0 {
            return None;
        }
        match self.cache.storage().load(key).await {
            Ok(Load::Entry { value, .. }) => Some(value),
            Ok(Load::Piece { piece, .. }) => Some(piece.value().clone()),
            _ => None,
        }
    }

    /// Bytes of values held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.cache.memory().usage()
    }

    /// Bytes held on disk, estimated: what was written, up to the disk's capacity (the disk
    /// tier overwrites its oldest blocks once full).
    pub fn disk_bytes(&self) -> usize {
        if self.disk_capacity == 0 {
            return 0;
        }
        self.cache
            .statistics()
            .disk_write_bytes()
            .min(self.disk_capacity)
    }

    /// (memory capacity, disk capacity) in bytes.
    pub fn capacity(&self) -> (usize, usize) {
        (self.memory_capacity, self.disk_capacity)
    }
}

/// One primary's view of the warm tier.
pub struct WarmTier {
    cache: Arc<WarmCache>,
    prefix: [u8; 8],
    /// The table of marks: each slot holds the newest version evicted from the hot tier for
    /// any key that hashes to it; a key's mark is the lowest of its slots.
    stale: MarkTable,
    /// The newest range clear evicted from the hot tier.
    stale_ranges: AtomicU64,
    /// Immutable `version_at` answers, by timestamp.
    version_at: moka::future::Cache<u64, Version>,
    /// Range answers, told about the same evictions.
    ranges: RangeCache,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for WarmTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmTier")
            .field("incarnation", &u64::from_be_bytes(self.prefix))
            .field("hits", &self.hits)
            .field("misses", &self.misses)
            .finish()
    }
}

impl WarmTier {
    /// A memory-only warm tier of `bytes` (tests, benchmarks).
    pub async fn in_memory(bytes: usize) -> Result<WarmTier> {
        let config = WarmTierConfig {
            memory_bytes: bytes,
            disk: None,
        };
        Ok(WarmCache::open(&config).await?.tier(Version::ZERO))
    }

    /// The slots of `key` in the table of marks: disjoint bit fields of one hash (two may
    /// coincide, which only makes the key's mark more conservative).
    fn slots(key: &[u8]) -> [usize; SLOTS_PER_KEY] {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        let h = h.finish();
        let mask = (1u64 << STALE_SLOT_BITS) - 1;
        std::array::from_fn(|i| ((h >> (i as u32 * STALE_SLOT_BITS)) & mask) as usize)
    }

    /// The newest version at which `key` may have changed and left the hot tier: the lowest of
    /// its slots (each was raised by every change of it), or the newest evicted range clear.
    fn stale_mark(&self, key: &[u8]) -> Version {
        let point = Self::slots(key)
            .iter()
            .fold(u64::MAX, |low, slot| low.min(self.stale.get(*slot)));
        Version(point.max(self.stale_ranges.load(Ordering::SeqCst)))
    }

    fn cache_key(&self, key: &[u8]) -> Bytes {
        let mut k = BytesMut::with_capacity(self.prefix.len() + key.len());
        k.put_slice(&self.prefix);
        k.put_slice(key);
        k.freeze()
    }

    /// The value of `key` at `at`, if cached and provably unchanged since it was read. The
    /// caller must have loaded the hot tier's floor (by asking the hot tier, which answered
    /// "ask the pageserver at `at`") before calling.
    pub async fn get(&self, key: &[u8], at: Version) -> Option<Option<Bytes>> {
        let mark = self.stale_mark(key);
        let found = self
            .cache
            .lookup(&self.cache_key(key))
            .await
            .and_then(|v| decode(&v))
            .filter(|(f, _)| mark <= *f && *f <= at);
        match found {
            Some((_, value)) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(value)
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Caches what the pageserver said `key` was at `at`.
    pub fn insert(&self, key: &[u8], at: Version, value: Option<&Bytes>) {
        // A value older than what the hot tier has already let go would miss on every read.
        if at < self.stale_mark(key) {
            return;
        }
        let mut v = BytesMut::with_capacity(9 + value.map_or(0, Bytes::len));
        v.put_u64(at.0);
        match value {
            Some(value) => {
                v.put_u8(1);
                v.put_slice(value);
            }
            None => v.put_u8(0),
        }
        self.cache.cache.insert(self.cache_key(key), v.freeze());
    }

    /// A cached `version_at` answer.
    pub async fn version_at(&self, time_micros: u64) -> Option<Version> {
        self.version_at.get(&time_micros).await
    }

    /// Remembers a `version_at` answer; only for answers that can no longer change (a commit
    /// later than `time_micros` exists).
    pub async fn remember_version_at(&self, time_micros: u64, version: Version) {
        self.version_at.insert(time_micros, version).await;
    }

    /// (hits, misses) of point reads.
    pub fn hit_stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// The range answers of this view (see `range_cache`).
    pub fn ranges(&self) -> &RangeCache {
        &self.ranges
    }

    /// The shared cache.
    pub fn cache(&self) -> &Arc<WarmCache> {
        &self.cache
    }

    /// Status for the admin API.
    pub fn status(&self) -> serde_json::Value {
        let (hits, misses) = self.hit_stats();
        let (memory_capacity, disk_capacity) = self.cache.capacity();
        let (range_hits, range_misses) = self.ranges.hit_stats();
        let (range_chunks, range_bytes) = self.ranges.usage();
        serde_json::json!({
            "memory_bytes": self.cache.memory_bytes(),
            "memory_capacity_bytes": memory_capacity,
            "disk_bytes": self.cache.disk_bytes(),
            "disk_capacity_bytes": disk_capacity,
            "hits": hits,
            "misses": misses,
            "version_at_entries": self.version_at.entry_count(),
            "range_cache": {
                "chunks": range_chunks,
                "bytes": range_bytes,
                "hits": range_hits,
                "misses": range_misses,
            },
        })
    }
}

impl EvictionObserver for WarmTier {
    fn evicted_point(&self, key: &[u8], version: Version) {
        for slot in Self::slots(key) {
            self.stale.raise(slot, version.0);
        }
        self.ranges.changed(key, version);
    }

    fn evicted_range(&self, begin: &[u8], end: &[u8], version: Version) {
        self.stale_ranges.fetch_max(version.0, Ordering::SeqCst);
        self.ranges.cleared(begin, end, version);
    }

    /// Written through: what leaves the hot tier is what the next reads of those keys want,
    /// and an entry read at the floor is exactly what a pageserver read there would have
    /// cached ("What an entry means"), so it is checked like any other.
    fn evicted_values(&self, floor: Version, values: &[(Bytes, Option<Bytes>)]) {
        for (key, value) in values {
            self.insert(key, floor, value.as_ref());
        }
        self.ranges.patch(floor, values);
    }
}

/// An entry's (version read at, value).
fn decode(v: &Bytes) -> Option<(Version, Option<Bytes>)> {
    if v.len() < 9 {
        return None;
    }
    let mut at = [0u8; 8];
    at.copy_from_slice(&v[..8]);
    let value = match v[8] {
        0 => None,
        _ => Some(v.slice(9..)),
    };
    Some((Version(u64::from_be_bytes(at)), value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hot_tier::{HotRead, HotTier};
    use ferrisdb_common::wal::Mutation;
    use ferrisdb_server_common::versioned_map::{Lookup, VersionedMap};

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn set(k: &str, v: &str) -> Mutation {
        Mutation::Set {
            key: b(k),
            value: b(v),
        }
    }

    /// A read the way `TierReader` does it, against a model "pageserver" that has everything.
    async fn read(
        hot: &HotTier,
        warm: &WarmTier,
        model: &VersionedMap,
        key: &[u8],
        v: Version,
    ) -> Option<Bytes> {
        match hot.get(key, v) {
            HotRead::Found(x) => x,
            HotRead::AskPageserverAt(at) => {
                if let Some(x) = warm.get(key, at).await {
                    return x;
                }
                let x = match model.get(key, at) {
                    Lookup::Found(x) => x,
                    Lookup::Absent => None,
                };
                warm.insert(key, at, x.as_ref());
                x
            }
        }
    }

    /// A key space loaded in order and evicted a thousand changes at a time, as a bulk load
    /// leaves the hot tier: every key's newest value is written through, and nearly all of
    /// them must still hit afterwards. A key misses only when later-evicted keys share all of
    /// its slots; with one slot per key in 2^18, 17 % of these keys missed and went to the
    /// pageserver again.
    #[tokio::test]
    async fn a_loaded_key_space_stays_warm() {
        const KEYS: u64 = 100_000;
        const PER_EVICTION: u64 = 1_000;
        let warm = Arc::new(WarmTier::in_memory(256 << 20).await.unwrap());
        let hot = HotTier::new(Version(0)).with_observer(warm.clone());
        for i in 0..KEYS {
            let v = Version(i + 1);
            hot.apply(v, i, &[set(&format!("key{i:08}"), &format!("v{i}"))]);
            if (i + 1) % PER_EVICTION == 0 {
                hot.evict_up_to(v);
            }
        }
        let floor = Version(KEYS);
        let mut hits = 0u64;
        for i in 0..KEYS {
            let key = format!("key{i:08}");
            if let Some(value) = warm.get(key.as_bytes(), floor).await {
                assert_eq!(value, Some(Bytes::from(format!("v{i}"))), "{key}");
                hits += 1;
            }
        }
        let missed = KEYS - hits;
        assert!(
            missed * 100 <= KEYS,
            "{missed} of {KEYS} written-through keys miss (more than 1 %)"
        );
    }

    /// A later change of another key that shares one of this key's slots leaves this key's
    /// entry valid (its other slots still hold its own mark); a change of the key itself does
    /// not.
    #[tokio::test]
    async fn a_shared_slot_alone_does_not_cost_a_key_its_entry() {
        let warm = Arc::new(WarmTier::in_memory(1 << 20).await.unwrap());
        let hot = HotTier::new(Version(0)).with_observer(warm.clone());
        let slots = |k: &[u8]| WarmTier::slots(k);
        let mine = slots(b"mine");
        let other = (0u64..)
            .map(|i| format!("other{i}"))
            .find(|k| {
                let theirs = slots(k.as_bytes());
                theirs.iter().any(|s| mine.contains(s)) && !mine.iter().all(|s| theirs.contains(s))
            })
            .unwrap();
        hot.apply(Version(1), 1, &[set("mine", "m1")]);
        hot.evict_up_to(Version(1));
        hot.apply(
            Version(2),
            2,
            &[Mutation::Set {
                key: Bytes::from(other.clone()),
                value: b("o2"),
            }],
        );
        hot.evict_up_to(Version(2));
        // The shared slot now holds 2, above the entry's 1; the key's own slots still say 1.
        assert!(
            WarmTier::slots(b"mine")
                .iter()
                .any(|s| warm.stale.get(*s) == 2)
        );
        assert_eq!(warm.get(b"mine", Version(2)).await, Some(Some(b("m1"))));
        assert_eq!(
            warm.get(other.as_bytes(), Version(2)).await,
            Some(Some(b("o2")))
        );
        // Its own change: every one of its slots moves, and the old entry is never served.
        hot.apply(Version(3), 3, &[set("mine", "m3")]);
        warm.insert(b"mine", Version(2), Some(&b("m1")));
        hot.evict_up_to(Version(3));
        warm.insert(b"mine", Version(2), Some(&b("m1")));
        assert_eq!(warm.get(b"mine", Version(3)).await, Some(Some(b("m3"))));
    }

    /// The race from the module doc, step by step: a pageserver read at the floor is in
    /// flight while a newer commit to the key is applied and evicted; its late insert must
    /// not be served to reads that should see the commit.
    #[tokio::test]
    async fn a_late_insert_of_a_stale_read_is_never_served() {
        let warm = Arc::new(WarmTier::in_memory(1 << 20).await.unwrap());
        let hot = HotTier::new(Version(10)).with_observer(warm.clone());
        let mut model = VersionedMap::default();
        model.insert(b("k"), Version(5), Some(b("old")));
        // The read starts: the hot tier sends it to the pageserver at 10, which says "old".
        let at = match hot.get(b"k", Version(10)) {
            HotRead::AskPageserverAt(at) => at,
            other => panic!("{other:?}"),
        };
        assert_eq!(at, Version(10));
        // Meanwhile: k = new at 20, applied, ingested, evicted.
        hot.apply(Version(20), 2, &[set("k", "new")]);
        model.insert(b("k"), Version(20), Some(b("new")));
        hot.evict_up_to(Version(20));
        // Now the stale read lands in the cache.
        warm.insert(b"k", at, Some(&b("old")));
        assert_eq!(
            read(&hot, &warm, &model, b"k", Version(20)).await,
            Some(b("new"))
        );
        // Not even for older read versions: the mark is newer than the entry.
        assert_eq!(warm.get(b"k", Version(15)).await, None);
        assert_eq!(warm.get(b"k", Version(10)).await, None);
        // And a fresh read at 20 is cached and hit.
        assert_eq!(warm.get(b"k", Version(20)).await, Some(Some(b("new"))));
        // Range clears invalidate everything older than them.
        hot.apply(
            Version(30),
            3,
            &[Mutation::ClearRange {
                begin: b("a"),
                end: b("z"),
            }],
        );
        model.clear_range(b("a"), b("z"), Version(30));
        hot.evict_up_to(Version(30));
        assert_eq!(warm.get(b"k", Version(30)).await, None);
        assert_eq!(read(&hot, &warm, &model, b"k", Version(30)).await, None);
        assert_eq!(warm.get(b"k", Version(30)).await, Some(None));
    }

    /// What leaves the hot tier is read warm: each changed key's newest value at the new
    /// floor, never an older one of the same eviction, and nothing when a range clear lies in
    /// the evicted stretch (its keys cannot be named).
    #[tokio::test]
    async fn evicted_changes_are_written_through_at_the_floor() {
        let warm = Arc::new(WarmTier::in_memory(1 << 20).await.unwrap());
        let hot = HotTier::new(Version(10)).with_observer(warm.clone());
        hot.apply(Version(11), 1, &[set("a", "a11"), set("b", "b11")]);
        hot.apply(
            Version(12),
            2,
            &[set("a", "a12"), Mutation::Clear { key: b("b") }],
        );
        hot.apply(Version(13), 3, &[set("c", "c13")]);
        hot.evict_up_to(Version(12));
        assert_eq!(
            hot.get(b"a", Version(13)),
            HotRead::AskPageserverAt(Version(12))
        );
        assert_eq!(warm.get(b"a", Version(12)).await, Some(Some(b("a12"))));
        assert_eq!(
            warm.get(b"b", Version(12)).await,
            Some(None),
            "a clear is a value too"
        );
        // Not below the floor it was handed over at, and not a key still in the hot tier.
        assert_eq!(warm.get(b"a", Version(11)).await, None);
        assert_eq!(warm.get(b"c", Version(12)).await, None);
        // An eviction holding a range clear hands nothing over; what it cleared misses.
        hot.apply(Version(14), 4, &[set("d", "d14")]);
        hot.apply(
            Version(15),
            5,
            &[Mutation::ClearRange {
                begin: b("a"),
                end: b("b"),
            }],
        );
        hot.evict_up_to(Version(15));
        assert_eq!(warm.get(b"d", Version(15)).await, None);
        assert_eq!(warm.get(b"a", Version(15)).await, None);
        assert_eq!(warm.get(b"c", Version(15)).await, None);
        // A key written twice in one batch and again in the next, keys out of order: each is
        // handed over once, with its last value.
        hot.apply(
            Version(16),
            6,
            &[set("f", "f16"), set("e", "e16"), set("f", "f16b")],
        );
        hot.apply(Version(17), 7, &[set("e", "e17"), set("g", "g17")]);
        hot.evict_up_to(Version(17));
        assert_eq!(warm.get(b"e", Version(17)).await, Some(Some(b("e17"))));
        assert_eq!(warm.get(b"f", Version(17)).await, Some(Some(b("f16b"))));
        assert_eq!(warm.get(b"g", Version(17)).await, Some(Some(b("g17"))));
    }

    /// Readers (with deliberately slow "pageserver" reads, so inserts land late), a writer and
    /// an evictor at once; every read is checked against the model.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_reads_through_the_warm_tier_agree_with_a_model() {
        const KEYS: u64 = 8;
        const BATCHES: u64 = 1_500;
        let key = |i: u64| Bytes::from(format!("k{i}"));
        let mut model = VersionedMap::default();
        let batches: Vec<(Version, Vec<Mutation>)> = (1..=BATCHES)
            .map(|v| {
                let k = key((v * 7) % KEYS);
                let m = if v % 97 == 0 {
                    Mutation::ClearRange {
                        begin: key(2),
                        end: key(5),
                    }
                } else {
                    Mutation::Set {
                        key: k,
                        value: Bytes::from(format!("v{v}")),
                    }
                };
                (Version(v), vec![m])
            })
            .collect();
        for (v, ms) in &batches {
            for m in ms {
                model.apply(*v, m);
            }
        }
        let model = Arc::new(model);
        let warm = Arc::new(WarmTier::in_memory(1 << 20).await.unwrap());
        let hot = Arc::new(HotTier::new(Version::ZERO).with_observer(warm.clone()));
        let committed = Arc::new(AtomicU64::new(0));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (hot, committed, done) = (hot.clone(), committed.clone(), done.clone());
            tokio::spawn(async move {
                for (v, ms) in &batches {
                    hot.apply(*v, v.0, ms);
                    committed.store(v.0, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                }
                done.store(true, Ordering::SeqCst);
            })
        };
        let evictor = {
            let (hot, committed, done) = (hot.clone(), committed.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::SeqCst) {
                    let c = committed.load(Ordering::SeqCst);
                    hot.evict_up_to(Version(c.saturating_sub(3)));
                    tokio::task::yield_now().await;
                }
            })
        };
        let mut readers = Vec::new();
        for t in 0..4u64 {
            let (hot, warm, model, committed, done) = (
                hot.clone(),
                warm.clone(),
                model.clone(),
                committed.clone(),
                done.clone(),
            );
            readers.push(tokio::spawn(async move {
                let mut i = t;
                let mut reads = 0;
                while !done.load(Ordering::SeqCst) || reads < 500 {
                    i = i
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let k = key((i >> 33) % KEYS);
                    let v = Version(committed.load(Ordering::SeqCst));
                    let got = match hot.get(&k, v) {
                        HotRead::Found(x) => x,
                        HotRead::AskPageserverAt(at) => match warm.get(&k, at).await {
                            Some(x) => x,
                            None => {
                                let x = match model.get(&k, at) {
                                    Lookup::Found(x) => x,
                                    Lookup::Absent => None,
                                };
                                // The "pageserver" answers slowly: evictions pass meanwhile.
                                for _ in 0..(i >> 60) {
                                    tokio::task::yield_now().await;
                                }
                                warm.insert(&k, at, x.as_ref());
                                x
                            }
                        },
                    };
                    let want = match model.get(&k, v) {
                        Lookup::Found(x) => x,
                        Lookup::Absent => None,
                    };
                    assert_eq!(got, want, "{k:?} at {v}");
                    reads += 1;
                    // Hits complete without awaiting anything: without a yield, readers that
                    // occupy every worker thread starve the writer and never see `done`.
                    tokio::task::yield_now().await;
                }
            }));
        }
        writer.await.unwrap();
        evictor.await.unwrap();
        for r in readers {
            r.await.unwrap();
        }
        // Whether a reader above happened to find the warm tier holding its key at the floor
        // it asked for depends on the schedule (a CI run once saw none). Every key is asked
        // for again with everything evicted: the warm tier answers each, from what it kept
        // above or from the answer given to it now, and the answer is the model's.
        hot.evict_up_to(Version(BATCHES));
        let (before, _) = warm.hit_stats();
        for i in 0..KEYS {
            let k = key(i);
            let HotRead::AskPageserverAt(at) = hot.get(&k, Version(BATCHES)) else {
                panic!("{k:?} answered by the hot tier after everything was evicted");
            };
            let want = match model.get(&k, at) {
                Lookup::Found(x) => x,
                Lookup::Absent => None,
            };
            if warm.get(&k, at).await.is_none() {
                warm.insert(&k, at, want.as_ref());
            }
            assert_eq!(warm.get(&k, at).await, Some(want), "{k:?} at {at}");
        }
        let (after, _) = warm.hit_stats();
        assert!(after >= before + KEYS, "hits {before} → {after}");
    }

    #[tokio::test]
    async fn version_at_answers_are_remembered() {
        let warm = WarmTier::in_memory(1 << 20).await.unwrap();
        assert_eq!(warm.version_at(100).await, None);
        warm.remember_version_at(100, Version(42)).await;
        assert_eq!(warm.version_at(100).await, Some(Version(42)));
    }

    #[tokio::test]
    async fn a_disk_tier_opens_in_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let config = WarmTierConfig {
            memory_bytes: 1 << 20,
            disk: Some((dir.path().join("warm"), 16 << 20)),
        };
        let cache = WarmCache::open(&config).await.unwrap();
        let warm = cache.tier(Version::ZERO);
        warm.insert(b"k", Version(3), Some(&b("v")));
        assert_eq!(warm.get(b"k", Version(3)).await, Some(Some(b("v"))));
        assert_eq!(cache.capacity(), (1 << 20, 16 << 20));
        assert!(dir.path().join("warm").is_dir());
        // Another primary's view never sees this one's entries.
        assert_eq!(cache.tier(Version::ZERO).get(b"k", Version(3)).await, None);
    }

    /// A compute restarted (or a replica started) at version 100 never saw the changes below
    /// it: a value read at 50 says nothing about version 94, even with no marks at all.
    #[tokio::test]
    async fn entries_below_the_hot_tiers_start_are_never_trusted() {
        let cache = WarmCache::open(&WarmTierConfig {
            memory_bytes: 1 << 20,
            disk: None,
        })
        .await
        .unwrap();
        let warm = cache.tier(Version(100));
        warm.insert(b"k", Version(50), Some(&b("old")));
        assert_eq!(warm.get(b"k", Version(94)).await, None);
        assert_eq!(warm.get(b"k", Version(50)).await, None);
        warm.insert(b"k", Version(120), Some(&b("new")));
        assert_eq!(warm.get(b"k", Version(130)).await, Some(Some(b("new"))));
    }
}
