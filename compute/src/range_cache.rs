//! The range cache: recent answers of the pageserver to range reads, kept in memory by the key
//! range they cover, so a scan the compute has answered before is answered again without the
//! hop to the pageserver.
//!
//! # What a chunk means
//!
//! A chunk is `[begin, end) → (at, rows)`: at version `at`, the keys of `[begin, end)` that
//! existed were exactly `rows`. It is made from one pageserver answer: a forward read of
//! `[lo, hi)` that returned everything covers `[lo, hi)`; one cut short at its last row `r`
//! covers `[lo, r]`, i.e. `[lo, r\0)`; a reverse read cut short at its smallest row `r` covers
//! `[r, hi)`. No two chunks overlap (a new chunk replaces the ones it overlaps), so at most
//! one chunk covers any key.
//!
//! # When a chunk may answer
//!
//! A read the hot tier sends to the pageserver at `at` (see `read_path`) may use a chunk read
//! at `f` only if `f <= at` and no key of the chunk's range changed in `(f, at]`. The second
//! half is kept true by what the hot tier tells this cache (through the warm tier, its
//! [`EvictionObserver`](crate::hot_tier::EvictionObserver)) before it publishes the floor
//! that drops a change: every change, and every range clear. A reader's `at` is at or below a
//! floor it loaded before looking here, so every change at or below `at` has been told.
//!
//! - A change at `c` to a key a chunk covers marks the chunk stale from `c`: it still answers
//!   reads at `at < c` (it is exact there) but no read at or above `c`.
//! - Once every change of an eviction up to the new floor `F'` has been told, the hot tier
//!   hands over each changed key's value at `F'` (when no range clear lay in the eviction).
//!   Each chunk marked stale in that eviction is then *patched*: the changed keys of its range
//!   are set, added or removed, and it becomes the chunk read at `F'`. Every key of its range
//!   that changed in `(f, F']` was told in this eviction (a change at or below the previous
//!   floor would have marked it earlier, and it was patched or dropped then), so the patched
//!   rows are exactly the range at `F'`. A scan over keys that are being updated thus keeps
//!   hitting the cache instead of going back to the pageserver after every eviction.
//! - A range clear deletes every chunk it overlaps; and since no values are handed over for
//!   an eviction holding one, the chunks marked stale since the last hand-over are deleted at
//!   the next (they are not known to be patchable).
//!
//! # Adjacent chunks
//!
//! A read runs on from the chunk covering its start into the chunk that begins exactly where
//! that one ends, and so on, as long as each is exact at the version read: chunks exact at
//! the same version over ranges that meet are, together, exact over their union. A gap, or a
//! chunk stale at that version, ends the run, and the read is a miss unless what was gathered
//! already settles it.
//!
//! # The race this rules out
//!
//! A pageserver range read at `f` is in flight while a change at `c > f` to a key in its range
//! is applied and evicted; only then does the answer arrive. Inserting it would leave a chunk
//! the deletion already passed by. So the cache remembers the newest version of any change it
//! has been told about (`told`, starting at the view's first floor, below which changes were
//! never told), and refuses to insert an answer read at `f < told`. An answer read at
//! `f >= told` is safe: every change after `f` is told later and deletes the chunk then.
//! Refusing is conservative (the change may lie outside the range); it only costs a miss.
//!
//! # Reading ahead
//!
//! The read path asks the pageserver for at least 64 rows (and always one more than the read
//! needs, so the chunk knows whether the range continues): the chunk then settles the later
//! scans that start anywhere inside it, not only the one that filled it. What is read ahead is
//! capped at half a chunk in bytes (`target_bytes` of the request; the pageserver ends the
//! answer there, with `more`, once it holds the rows the read needs): a short scan over large
//! values then costs about the rows it returns, not 64 of them.
//!
//! # Bounds
//!
//! The cache holds at most [`RANGE_CACHE_BYTES`] of rows per view; past it, the oldest chunks
//! go first. An answer larger than [`MAX_CHUNK_BYTES`] is not cached.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use ferrisdb_common::Version;
use ferrisdb_common::overlay::successor;

use crate::page_source::RangeRows;

/// Rows kept per view (keys and values, plus a small overhead per row).
pub const RANGE_CACHE_BYTES: usize = 16 << 20;
/// The largest answer cached.
pub const MAX_CHUNK_BYTES: usize = 64 << 10;
/// Bookkeeping counted per row on top of its key and value.
const ROW_OVERHEAD: usize = 32;

/// A view's range cache (see the module doc).
#[derive(Debug)]
pub struct RangeCache {
    inner: Mutex<Inner>,
    budget: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    /// Chunks by their first covered key; no two overlap.
    chunks: BTreeMap<Bytes, Chunk>,
    /// The newest version of any change told (or the view's first floor).
    told: Version,
    /// Bytes of rows held.
    bytes: usize,
    /// First keys of the chunks marked stale since the last hand-over of values (possibly
    /// repeated, or of chunks gone since).
    stale: Vec<Bytes>,
    /// A range clear was told since the last hand-over of values: the chunks in `stale` cannot
    /// be patched from the next one.
    cleared_since: bool,
    /// Chunks in insertion order, by (begin, serial); entries whose chunk has gone are skipped.
    order: VecDeque<(Bytes, u64)>,
    next_serial: u64,
}

#[derive(Debug)]
struct Chunk {
    /// Exclusive end of the covered range.
    end: Bytes,
    /// The version the rows are exact at (the pageserver's read, or the floor of the last
    /// patch).
    at: Version,
    /// The oldest change told in the range that the rows do not hold: they are exact for
    /// reads in `[at, stale_from)` only.
    stale_from: Option<Version>,
    /// Ascending by key.
    rows: Vec<(Bytes, Bytes)>,
    bytes: usize,
    serial: u64,
}

/// What a range read asked the pageserver for.
#[derive(Debug, Clone, Copy)]
pub struct RangeAsk<'a> {
    /// First key.
    pub begin: &'a [u8],
    /// Exclusive end.
    pub end: &'a [u8],
    /// At most this many rows (0: all).
    pub limit: usize,
    /// From the end backwards.
    pub reverse: bool,
    /// The version asked at.
    pub at: Version,
}

impl RangeCache {
    /// An empty cache for a view whose hot tier holds every change above `since`.
    pub fn new(since: Version) -> RangeCache {
        RangeCache::with_budget(since, RANGE_CACHE_BYTES)
    }

    /// An empty cache holding at most `budget` bytes of rows.
    pub fn with_budget(since: Version, budget: usize) -> RangeCache {
        RangeCache {
            inner: Mutex::new(Inner {
                chunks: BTreeMap::new(),
                told: since,
                bytes: 0,
                stale: Vec::new(),
                cleared_since: false,
                order: VecDeque::new(),
                next_serial: 0,
            }),
            budget,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every critical section leaves the maps consistent before anything can panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answer to `ask` from the cache, when chunks exact at `ask.at` cover enough of the
    /// range, from its start on without a gap, to settle it: the rows and whether the range
    /// holds more.
    pub fn get(&self, ask: RangeAsk<'_>) -> Option<RangeRows> {
        let found = self.lock().answer(ask);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Caches the pageserver's answer to `ask`: `rows` in scan order, `more` when the range
    /// held more than it returned.
    pub fn insert(&self, ask: RangeAsk<'_>, rows: &[(Bytes, Bytes)], more: bool) {
        if ask.begin >= ask.end {
            return;
        }
        let bytes = chunk_bytes(rows);
        if bytes > MAX_CHUNK_BYTES.min(self.budget) {
            return;
        }
        // A cut-short answer is final only up to its last row in scan order.
        let (begin, end) = match (more, ask.reverse, rows.last()) {
            (false, _, _) => (
                Bytes::copy_from_slice(ask.begin),
                Bytes::copy_from_slice(ask.end),
            ),
            (true, _, None) => return,
            (true, false, Some((last, _))) => (Bytes::copy_from_slice(ask.begin), successor(last)),
            (true, true, Some((last, _))) => (last.clone(), Bytes::copy_from_slice(ask.end)),
        };
        let mut rows = rows.to_vec();
        if ask.reverse {
            rows.reverse();
        }
        let mut inner = self.lock();
        if ask.at < inner.told {
            return;
        }
        inner.trim_overlapping(&begin, &end);
        let serial = inner.next_serial;
        inner.next_serial += 1;
        inner.bytes += bytes;
        inner.order.push_back((begin.clone(), serial));
        inner.chunks.insert(
            begin,
            Chunk {
                end,
                at: ask.at,
                stale_from: None,
                rows,
                bytes,
                serial,
            },
        );
        inner.shrink_to(self.budget);
    }

    /// `key` changed at `version`, which is about to leave the hot tier: the chunk covering
    /// it no longer answers reads at or above `version` (until it is patched).
    pub fn changed(&self, key: &[u8], version: Version) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.told = inner.told.max(version);
        let covering = inner
            .chunks
            .range_mut::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .filter(|(_, c)| key < c.end.as_ref());
        if let Some((begin, chunk)) = covering
            && chunk.stale_from.is_none()
        {
            // Changes are told in version order, so the first one marked is the oldest.
            chunk.stale_from = Some(version);
            inner.stale.push(begin.clone());
        }
    }

    /// `[begin, end)` was cleared at `version`, which is about to leave the hot tier.
    pub fn cleared(&self, begin: &[u8], end: &[u8], version: Version) {
        let mut inner = self.lock();
        inner.told = inner.told.max(version);
        inner.cleared_since = true;
        inner.remove_overlapping(begin, end);
    }

    /// Every change up to `floor` has been told, and `values` (in key order) are the values at
    /// `floor` of every key changed since the last hand-over (`None`: absent): the chunks
    /// marked stale since then become exact at `floor` (see the module doc).
    pub fn patch(&self, floor: Version, values: &[(Bytes, Option<Bytes>)]) {
        debug_assert!(values.is_sorted_by(|a, b| a.0 <= b.0));
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut stale = std::mem::take(&mut inner.stale);
        stale.sort_unstable();
        stale.dedup();
        let patchable = !std::mem::take(&mut inner.cleared_since);
        for begin in stale {
            // The chunk marked may have been replaced or dropped since; a chunk at the same
            // first key that is not stale needs nothing.
            let Some(chunk) = inner.chunks.get_mut(&begin) else {
                continue;
            };
            if chunk.stale_from.is_none_or(|s| s > floor) {
                continue;
            }
            let before = chunk.bytes;
            if patchable && chunk.apply(&begin, floor, values) {
                inner.bytes = inner.bytes - before + chunk.bytes;
            } else {
                // `remove` takes the chunk's bytes as counted when it was stored or patched.
                chunk.bytes = before;
                inner.remove(&begin);
            }
        }
        inner.shrink_to(self.budget);
    }

    /// (hits, misses).
    pub fn hit_stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// (chunks, bytes of rows) held.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.chunks.len(), inner.bytes)
    }
}

impl Inner {
    fn answer(&self, ask: RangeAsk<'_>) -> Option<RangeRows> {
        if ask.begin >= ask.end {
            return None;
        }
        // One more row than asked tells whether the range holds more.
        let want = if ask.limit == 0 {
            usize::MAX
        } else {
            ask.limit + 1
        };
        // A scan may run on from one chunk into the next when the next begins exactly where
        // it ends and is exact at the same version: the two rows lists are then the range's
        // rows at `ask.at` together. Without that, a short scan starting near a chunk's end
        // missed (about one in six 10-row scans over 64-row chunks).
        let mut rows = Vec::new();
        let settled = if ask.reverse {
            // The chunk holding the keys just below `end`.
            let (mut first, mut chunk) = self
                .chunks
                .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(ask.end)))
                .next_back()?;
            if chunk.end.as_ref() < ask.end || !chunk.exact_at(ask.at) {
                return None;
            }
            let mut to = chunk.rows.partition_point(|(k, _)| k.as_ref() < ask.end);
            loop {
                let from = chunk.rows.partition_point(|(k, _)| k.as_ref() < ask.begin);
                let room = want - rows.len();
                rows.extend(
                    chunk.rows[from..to.max(from)]
                        .iter()
                        .rev()
                        .take(room)
                        .cloned(),
                );
                if rows.len() >= want || first.as_ref() <= ask.begin {
                    break first.as_ref() <= ask.begin;
                }
                // The chunk that ends where this one begins.
                match self
                    .chunks
                    .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(first.as_ref())))
                    .next_back()
                {
                    Some((b, prev)) if prev.end == *first && prev.exact_at(ask.at) => {
                        first = b;
                        chunk = prev;
                        to = prev.rows.len();
                    }
                    _ => break false,
                }
            }
        } else {
            let (_, mut chunk) = self
                .chunks
                .range::<[u8], _>((Bound::Unbounded, Bound::Included(ask.begin)))
                .next_back()?;
            if chunk.end.as_ref() <= ask.begin || !chunk.exact_at(ask.at) {
                return None;
            }
            let mut from = chunk.rows.partition_point(|(k, _)| k.as_ref() < ask.begin);
            loop {
                let room = want - rows.len();
                rows.extend(
                    chunk.rows[from..]
                        .iter()
                        .take_while(|(k, _)| k.as_ref() < ask.end)
                        .take(room)
                        .cloned(),
                );
                if rows.len() >= want || chunk.end.as_ref() >= ask.end {
                    break chunk.end.as_ref() >= ask.end;
                }
                // The chunk that begins where this one ends.
                match self.chunks.get(chunk.end.as_ref()) {
                    Some(next) if next.exact_at(ask.at) => {
                        chunk = next;
                        from = 0;
                    }
                    _ => break false,
                }
            }
        };
        if ask.limit > 0 && rows.len() > ask.limit {
            let mut rows = rows;
            rows.truncate(ask.limit);
            return Some((rows, true));
        }
        // Fewer rows than asked for: the answer is whole only if the chunk reaches the far
        // end of the range.
        settled.then_some((rows, false))
    }

    fn remove(&mut self, begin: &[u8]) {
        if let Some(c) = self.chunks.remove(begin) {
            self.bytes -= c.bytes;
        }
    }

    /// The first keys of the chunks sharing a key with `[begin, end)` (none when it is empty).
    fn overlapping(&self, begin: &[u8], end: &[u8]) -> Vec<Bytes> {
        if begin >= end {
            return Vec::new();
        }
        let mut found: Vec<Bytes> = self
            .chunks
            .range::<[u8], _>((Bound::Included(begin), Bound::Excluded(end)))
            .map(|(b, _)| b.clone())
            .collect();
        if let Some((b, c)) = self
            .chunks
            .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(begin)))
            .next_back()
            && c.end.as_ref() > begin
        {
            found.push(b.clone());
        }
        found
    }

    /// Removes every chunk sharing a key with `[begin, end)`.
    fn remove_overlapping(&mut self, begin: &[u8], end: &[u8]) {
        for b in self.overlapping(begin, end) {
            self.remove(&b);
        }
    }

    /// Makes room for a chunk of `[begin, end)`: each chunk overlapping it keeps its keys
    /// outside it (a part of a range known whole at a version is known whole there too), so a
    /// read ahead that starts inside a chunk does not throw away the keys before it. Parts
    /// left with no rows go.
    fn trim_overlapping(&mut self, begin: &[u8], end: &[u8]) {
        for first in self.overlapping(begin, end) {
            let Some(chunk) = self.chunks.remove(&first) else {
                continue;
            };
            self.bytes -= chunk.bytes;
            let Chunk {
                end: chunk_end,
                at,
                stale_from,
                mut rows,
                serial,
                ..
            } = chunk;
            let after = rows.split_off(rows.partition_point(|(k, _)| k.as_ref() < end));
            rows.truncate(rows.partition_point(|(k, _)| k.as_ref() < begin));
            if first.as_ref() < begin && !rows.is_empty() {
                // Same first key and serial: its place in the eviction order and in the list
                // of stale chunks stays.
                let bytes = chunk_bytes(&rows);
                self.bytes += bytes;
                let left = Chunk {
                    end: Bytes::copy_from_slice(begin),
                    at,
                    stale_from,
                    rows,
                    bytes,
                    serial,
                };
                self.chunks.insert(first, left);
            }
            if chunk_end.as_ref() > end && !after.is_empty() {
                let first = Bytes::copy_from_slice(end);
                let serial = self.next_serial;
                self.next_serial += 1;
                self.order.push_back((first.clone(), serial));
                if stale_from.is_some() {
                    self.stale.push(first.clone());
                }
                let bytes = chunk_bytes(&after);
                self.bytes += bytes;
                let right = Chunk {
                    end: chunk_end,
                    at,
                    stale_from,
                    rows: after,
                    bytes,
                    serial,
                };
                self.chunks.insert(first, right);
            }
        }
    }

    /// Drops the oldest chunks until `budget` holds, and forgets order entries of chunks
    /// already gone once they outnumber the live ones.
    fn shrink_to(&mut self, budget: usize) {
        while self.bytes > budget {
            let Some((begin, serial)) = self.order.pop_front() else {
                break;
            };
            if self.chunks.get(&begin).is_some_and(|c| c.serial == serial) {
                self.remove(&begin);
            }
        }
        if self.order.len() > 2 * self.chunks.len() + 64 {
            let chunks = &self.chunks;
            self.order
                .retain(|(b, s)| chunks.get(b).is_some_and(|c| c.serial == *s));
        }
    }
}

impl Chunk {
    /// Whether the rows are the range at version `at`.
    fn exact_at(&self, at: Version) -> bool {
        self.at <= at && self.stale_from.is_none_or(|s| at < s)
    }

    /// Applies the values at `floor` of the changed keys (all of them, in key order) to the
    /// rows of `[begin, self.end)`, which become exact at `floor`; false when the rows grew
    /// past [`MAX_CHUNK_BYTES`] (the chunk should go).
    fn apply(&mut self, begin: &[u8], floor: Version, values: &[(Bytes, Option<Bytes>)]) -> bool {
        let first = values.partition_point(|(k, _)| k.as_ref() < begin);
        for (key, value) in values[first..]
            .iter()
            .take_while(|(k, _)| k.as_ref() < self.end.as_ref())
        {
            match (self.rows.binary_search_by(|(k, _)| k.cmp(key)), value) {
                (Ok(i), Some(v)) => self.rows[i].1 = v.clone(),
                (Ok(i), None) => {
                    self.rows.remove(i);
                }
                (Err(i), Some(v)) => self.rows.insert(i, (key.clone(), v.clone())),
                (Err(_), None) => {}
            }
        }
        self.at = floor;
        self.stale_from = None;
        self.bytes = chunk_bytes(&self.rows);
        self.bytes <= MAX_CHUNK_BYTES
    }
}

/// Bytes rows count for.
fn chunk_bytes(rows: &[(Bytes, Bytes)]) -> usize {
    rows.iter()
        .map(|(k, v)| k.len() + v.len() + ROW_OVERHEAD)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn rows(keys: &[&str]) -> Vec<(Bytes, Bytes)> {
        keys.iter().map(|k| (b(k), b(&k.to_uppercase()))).collect()
    }

    fn ask<'a>(begin: &'a str, end: &'a str, limit: usize, reverse: bool, at: u64) -> RangeAsk<'a> {
        RangeAsk {
            begin: begin.as_bytes(),
            end: end.as_bytes(),
            limit,
            reverse,
            at: Version(at),
        }
    }

    fn keys(answer: Option<RangeRows>) -> Option<(Vec<String>, bool)> {
        answer.map(|(rows, more)| {
            (
                rows.iter()
                    .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                    .collect(),
                more,
            )
        })
    }

    fn owned(ks: &[&str], more: bool) -> Option<(Vec<String>, bool)> {
        Some((ks.iter().map(|k| k.to_string()).collect(), more))
    }

    #[test]
    fn a_cut_short_answer_settles_only_up_to_its_last_row() {
        let cache = RangeCache::new(Version(10));
        // Asked for 3 of [b, z), got b c d and "more".
        cache.insert(ask("b", "z", 3, false, 10), &rows(&["b", "c", "d"]), true);
        assert_eq!(
            keys(cache.get(ask("b", "z", 2, false, 10))),
            owned(&["b", "c"], true)
        );
        assert_eq!(
            keys(cache.get(ask("c", "z", 1, false, 10))),
            owned(&["c"], true)
        );
        // Two rows from c are c and d, but whether more follow d is not known.
        assert_eq!(keys(cache.get(ask("c", "z", 2, false, 10))), None);
        // Three rows from b: the third is the last one known, and whether more follow in
        // [b, z) is not known from the chunk.
        assert_eq!(keys(cache.get(ask("b", "z", 3, false, 10))), None);
        // But [b, d] is known whole, so a range ending inside it is answered whole.
        assert_eq!(
            keys(cache.get(ask("b", "cz", 5, false, 10))),
            owned(&["b", "c"], false)
        );
        // Past the covered keys: a miss.
        assert_eq!(keys(cache.get(ask("d\0", "z", 1, false, 10))), None);
        assert_eq!(keys(cache.get(ask("a", "z", 1, false, 10))), None);
        // Reverse reads need the chunk to reach the range's end.
        assert_eq!(keys(cache.get(ask("b", "z", 1, true, 10))), None);
        assert_eq!(
            keys(cache.get(ask("b", "c\0", 5, true, 10))),
            owned(&["c", "b"], false)
        );
        assert_eq!(
            keys(cache.get(ask("a", "d\0", 2, true, 10))),
            owned(&["d", "c"], true)
        );
        assert_eq!(keys(cache.get(ask("a", "d\0", 3, true, 10))), None);
    }

    /// The edges of the legal sizes: a cut-short answer whose last row has the largest legal
    /// key settles reads up to and including that key, and an answer holding a largest legal
    /// value is too big to keep (it is not cached, and a chunk it would have replaced stays).
    #[test]
    fn largest_legal_keys_and_values() {
        use ferrisdb_common::limits::{MAX_KEY_SIZE, MAX_VALUE_SIZE};
        let cache = RangeCache::new(Version(10));
        let longest = Bytes::from(vec![b'k'; MAX_KEY_SIZE]);
        let small = Bytes::from_static(b"v");
        cache.insert(
            RangeAsk {
                begin: b"a",
                end: b"z",
                limit: 2,
                reverse: false,
                at: Version(10),
            },
            &[(b("b"), small.clone()), (longest.clone(), small.clone())],
            true,
        );
        let through_longest = successor(&longest);
        let whole = cache.get(RangeAsk {
            begin: b"a",
            end: &through_longest,
            limit: 0,
            reverse: false,
            at: Version(10),
        });
        assert_eq!(
            whole,
            Some((
                vec![(b("b"), small.clone()), (longest.clone(), small.clone())],
                false
            )),
            "the chunk covers [a, longest]"
        );
        let past = cache.get(RangeAsk {
            begin: &through_longest,
            end: b"z",
            limit: 1,
            reverse: false,
            at: Version(10),
        });
        assert_eq!(past, None, "nothing is known past the last row");

        let largest = Bytes::from(vec![7u8; MAX_VALUE_SIZE]);
        cache.insert(
            RangeAsk {
                begin: b"a",
                end: b"c",
                limit: 0,
                reverse: false,
                at: Version(11),
            },
            &[(b("b"), largest)],
            false,
        );
        assert_eq!(cache.usage().0, 1, "the large answer was not kept");
        assert_eq!(
            keys(cache.get(ask("a", "c", 0, false, 11))),
            owned(&["b"], false),
            "the older chunk still answers, with its own value"
        );
        assert_eq!(
            cache
                .get(ask("a", "c", 0, false, 11))
                .map(|(r, _)| r[0].1.len()),
            Some(1)
        );
    }

    #[test]
    fn a_scan_runs_on_into_the_chunk_that_begins_where_one_ends() {
        let cache = RangeCache::new(Version(10));
        // Two cut-short answers that meet: [b, d] then [d\0, g].
        cache.insert(ask("b", "z", 3, false, 10), &rows(&["b", "c", "d"]), true);
        cache.insert(ask("d\0", "z", 3, false, 10), &rows(&["e", "f", "g"]), true);
        assert_eq!(
            keys(cache.get(ask("c", "z", 3, false, 10))),
            owned(&["c", "d", "e"], true)
        );
        assert_eq!(
            keys(cache.get(ask("b", "f\0", 0, false, 10))),
            owned(&["b", "c", "d", "e", "f"], false)
        );
        // Reverse, from inside the second back into the first.
        assert_eq!(
            keys(cache.get(ask("a", "f", 3, true, 10))),
            owned(&["e", "d", "c"], true)
        );
        // Past what the two cover together: not known.
        assert_eq!(keys(cache.get(ask("c", "z", 6, false, 10))), None);
        assert_eq!(keys(cache.get(ask("a", "f", 5, true, 10))), None);
        // A chunk that is not exact at the version read ends the run: a miss, not a short
        // answer.
        cache.changed(b"ee", Version(11));
        assert_eq!(keys(cache.get(ask("c", "z", 3, false, 11))), None);
        assert_eq!(keys(cache.get(ask("a", "f", 3, true, 11))), None);
        assert_eq!(
            keys(cache.get(ask("c", "z", 1, false, 11))),
            owned(&["c"], true),
            "the first chunk alone still answers"
        );
        // A gap between chunks ends the run too.
        cache.insert(ask("p", "z", 2, false, 11), &rows(&["p", "q"]), true);
        cache.insert(ask("r", "z", 2, false, 11), &rows(&["r", "s"]), true);
        assert_eq!(keys(cache.get(ask("q", "z", 2, false, 11))), None);
    }

    #[test]
    fn a_whole_answer_covers_its_range_even_where_it_is_empty() {
        let cache = RangeCache::new(Version(10));
        cache.insert(ask("k", "m", 10, false, 10), &rows(&["k1", "l"]), false);
        assert_eq!(
            keys(cache.get(ask("k", "m", 0, false, 10))),
            owned(&["k1", "l"], false)
        );
        assert_eq!(
            keys(cache.get(ask("k2", "l", 5, false, 10))),
            owned(&[], false)
        );
        assert_eq!(
            keys(cache.get(ask("k", "m", 1, true, 10))),
            owned(&["l"], true)
        );
        // Reverse answers cut short cover from their smallest row up.
        cache.insert(ask("a", "f", 2, true, 10), &rows(&["e", "d"]), true);
        assert_eq!(
            keys(cache.get(ask("d", "f", 9, false, 10))),
            owned(&["d", "e"], false)
        );
        assert_eq!(keys(cache.get(ask("c", "f", 9, false, 10))), None);
        // Empty and inverted ranges are never answered or cached.
        assert_eq!(keys(cache.get(ask("l", "l", 5, false, 10))), None);
        cache.insert(ask("x", "w", 5, false, 10), &[], false);
        assert_eq!(cache.usage().0, 2);
    }

    #[test]
    fn reads_below_the_chunk_version_miss() {
        let cache = RangeCache::new(Version(10));
        cache.insert(ask("a", "z", 0, false, 20), &rows(&["b"]), false);
        assert_eq!(keys(cache.get(ask("a", "z", 0, false, 19))), None);
        assert_eq!(
            keys(cache.get(ask("a", "z", 0, false, 25))),
            owned(&["b"], false)
        );
    }

    #[test]
    fn a_change_makes_the_chunk_it_touches_stale_from_its_version() {
        let cache = RangeCache::new(Version(10));
        cache.insert(ask("a", "c", 0, false, 10), &rows(&["a", "b"]), false);
        cache.insert(ask("c", "e", 0, false, 10), &rows(&["c", "d"]), false);
        cache.insert(ask("e", "g", 0, false, 10), &rows(&["e"]), false);
        // A new key inside [c, e) (no row there before) makes that chunk stale only.
        cache.changed(b"cc", Version(11));
        assert!(cache.get(ask("c", "e", 0, false, 11)).is_none());
        assert!(cache.get(ask("c", "e", 0, true, 12)).is_none());
        assert_eq!(
            keys(cache.get(ask("c", "e", 0, false, 10))),
            owned(&["c", "d"], false),
            "still exact below the change"
        );
        assert!(cache.get(ask("a", "c", 0, false, 11)).is_some());
        assert!(cache.get(ask("e", "g", 0, false, 11)).is_some());
        // A clear of [b, dd) deletes both chunks it overlaps, stale or not.
        cache.cleared(b"b", b"dd", Version(12));
        assert_eq!(cache.usage().0, 1);
        assert!(cache.get(ask("c", "e", 0, false, 10)).is_none());
        assert!(cache.get(ask("e", "g", 0, false, 12)).is_some());
    }

    /// A new chunk inside an old one keeps the old one's keys on both sides (as two chunks at
    /// the old version), and a stale old chunk's parts stay stale until the hand-over patches
    /// them.
    #[test]
    fn a_chunk_read_inside_another_keeps_the_keys_on_both_sides() {
        let cache = RangeCache::new(Version(10));
        let all = rows(&["b", "d", "f", "h", "j"]);
        cache.insert(ask("a", "z", 0, false, 10), &all, false);
        cache.changed(b"i", Version(11));
        cache.insert(ask("e", "g", 0, false, 11), &rows(&["f"]), false);
        assert_eq!(cache.usage().0, 3);
        assert_eq!(
            keys(cache.get(ask("a", "e", 0, false, 10))),
            owned(&["b", "d"], false)
        );
        assert_eq!(
            keys(cache.get(ask("g", "z", 0, true, 10))),
            owned(&["j", "h"], false)
        );
        assert_eq!(keys(cache.get(ask("e", "g", 0, false, 10))), None);
        assert_eq!(
            keys(cache.get(ask("e", "g", 0, false, 11))),
            owned(&["f"], false)
        );
        assert_eq!(keys(cache.get(ask("g", "z", 0, false, 11))), None, "stale");
        cache.patch(Version(11), &[(b("i"), Some(b("I")))]);
        assert_eq!(
            keys(cache.get(ask("g", "z", 0, false, 11))),
            owned(&["h", "i", "j"], false)
        );
        assert_eq!(
            keys(cache.get(ask("a", "e", 0, false, 11))),
            owned(&["b", "d"], false)
        );
        let want: usize = ["b", "d", "f", "h", "i", "j"]
            .iter()
            .map(|k| 2 * k.len() + ROW_OVERHEAD)
            .sum();
        assert_eq!(cache.usage(), (3, want));
        // A new chunk over the whole of an old one, and over a part with no rows left, leaves
        // nothing of them.
        cache.insert(ask("a", "gg", 0, false, 12), &rows(&["b", "d", "f"]), false);
        assert_eq!(cache.usage().0, 2);
        assert_eq!(
            keys(cache.get(ask("gg", "z", 0, false, 12))),
            owned(&["h", "i", "j"], false)
        );
    }

    /// The hand-over of values patches what the changes marked: a set of a new key adds a
    /// row, a set of a present one replaces its value, a clear removes it; the chunk answers
    /// at the floor (and above), not below it, and counts its new bytes.
    #[test]
    fn the_values_at_the_floor_patch_the_stale_chunks() {
        let cache = RangeCache::new(Version(10));
        cache.insert(ask("a", "c", 0, false, 10), &rows(&["a", "b"]), false);
        cache.insert(ask("c", "e", 0, false, 10), &rows(&["c", "d"]), false);
        cache.insert(ask("e", "g", 0, false, 10), &rows(&["e"]), false);
        for (k, v) in [("b", 11), ("cc", 12), ("d", 13), ("cc", 14), ("x", 15)] {
            cache.changed(k.as_bytes(), Version(v));
        }
        let values = vec![
            (b("b"), Some(b("new-b"))),
            (b("cc"), Some(b("CC"))),
            (b("d"), None),
            (b("x"), Some(b("X"))),
        ];
        cache.patch(Version(15), &values);
        let got = cache.get(ask("a", "c", 0, false, 15)).unwrap();
        assert_eq!(got, (vec![(b("a"), b("A")), (b("b"), b("new-b"))], false));
        assert_eq!(
            keys(cache.get(ask("c", "e", 0, false, 20))),
            owned(&["c", "cc"], false)
        );
        assert_eq!(
            cache.get(ask("c", "e", 1, true, 15)),
            Some((vec![(b("cc"), b("CC"))], true))
        );
        assert!(
            cache.get(ask("c", "e", 0, false, 14)).is_none(),
            "not exact below the floor it was patched at"
        );
        assert!(
            cache.get(ask("e", "g", 0, false, 10)).is_some(),
            "untouched chunks keep their version"
        );
        let (chunks, bytes) = cache.usage();
        let want: usize = [
            ("a", "A"),
            ("b", "new-b"),
            ("c", "C"),
            ("cc", "CC"),
            ("e", "E"),
        ]
        .iter()
        .map(|(k, v)| k.len() + v.len() + ROW_OVERHEAD)
        .sum();
        assert_eq!((chunks, bytes), (3, want));
        // The next change marks the patched chunk again, and the next hand-over patches it.
        cache.changed(b"c", Version(16));
        cache.patch(Version(16), &[(b("c"), None)]);
        assert_eq!(
            keys(cache.get(ask("c", "e", 0, false, 16))),
            owned(&["cc"], false)
        );
    }

    /// No values are handed over for an eviction holding a range clear, so the chunks marked
    /// stale since the last hand-over are dropped at the next one rather than patched from
    /// values that miss what the clear removed.
    #[test]
    fn a_clear_since_the_last_hand_over_drops_the_stale_chunks() {
        let cache = RangeCache::new(Version(10));
        cache.insert(ask("a", "c", 0, false, 10), &rows(&["a", "b"]), false);
        cache.insert(ask("m", "p", 0, false, 10), &rows(&["n"]), false);
        cache.changed(b"b", Version(11));
        cache.cleared(b"x", b"y", Version(12));
        // The next eviction has no clear; its hand-over holds only its own change.
        cache.changed(b"n", Version(13));
        cache.patch(Version(13), &[(b("n"), Some(b("N2")))]);
        assert!(cache.get(ask("a", "c", 0, false, 13)).is_none());
        assert!(cache.get(ask("a", "c", 0, false, 10)).is_none(), "dropped");
        assert!(cache.get(ask("m", "p", 0, false, 13)).is_none(), "dropped");
        assert_eq!(cache.usage(), (0, 0));
        // From then on hand-overs patch again.
        cache.insert(ask("a", "c", 0, false, 13), &rows(&["a"]), false);
        cache.changed(b"a", Version(14));
        cache.patch(Version(14), &[(b("a"), Some(b("A2")))]);
        assert_eq!(
            cache.get(ask("a", "c", 0, false, 14)),
            Some((vec![(b("a"), b("A2"))], false))
        );
    }

    /// A patch that grows a chunk past the largest cached answer drops it (a chunk is at most
    /// what one answer may be).
    #[test]
    fn a_patch_past_the_chunk_limit_drops_the_chunk() {
        let cache = RangeCache::new(Version(10));
        cache.insert(ask("a", "c", 0, false, 10), &rows(&["a"]), false);
        let big = Bytes::from(vec![1u8; MAX_CHUNK_BYTES]);
        cache.changed(b"b", Version(11));
        cache.patch(Version(11), &[(b("b"), Some(big))]);
        assert_eq!(cache.usage(), (0, 0));
        assert!(cache.get(ask("a", "c", 0, false, 11)).is_none());
    }

    /// The race from the module doc: an answer read at `f` arriving after a change above `f`
    /// was told is not cached, even though the change is elsewhere.
    #[test]
    fn an_answer_read_before_a_told_change_is_refused() {
        let cache = RangeCache::new(Version(10));
        cache.changed(b"q", Version(15));
        cache.insert(ask("a", "c", 0, false, 10), &rows(&["a"]), false);
        assert_eq!(cache.usage().0, 0);
        cache.insert(ask("a", "c", 0, false, 15), &rows(&["a"]), false);
        assert_eq!(cache.usage().0, 1);
        // Nor anything read below the view's first floor.
        let fresh = RangeCache::new(Version(50));
        fresh.insert(ask("a", "c", 0, false, 40), &rows(&["a"]), false);
        assert_eq!(fresh.usage().0, 0);
    }

    #[test]
    fn a_new_chunk_replaces_the_ones_it_overlaps_and_the_budget_drops_the_oldest() {
        let cache = RangeCache::with_budget(Version(0), 4 * (2 + ROW_OVERHEAD));
        cache.insert(ask("a", "c", 0, false, 1), &rows(&["a"]), false);
        cache.insert(ask("b", "d", 0, false, 1), &rows(&["b"]), false);
        assert_eq!(
            cache.usage().0,
            2,
            "[b, d) and what is left of [a, c): [a, b)"
        );
        assert_eq!(
            keys(cache.get(ask("a", "z", 0, false, 1))),
            None,
            "the two are not joined"
        );
        assert_eq!(
            keys(cache.get(ask("a", "b", 0, false, 1))),
            owned(&["a"], false)
        );
        for k in ["e", "g", "i", "k"] {
            let end = format!("{k}z");
            cache.insert(ask(k, &end, 0, false, 1), &rows(&[k]), false);
        }
        let (chunks, bytes) = cache.usage();
        assert_eq!((chunks, bytes), (4, 4 * (2 + ROW_OVERHEAD)));
        assert!(
            cache.get(ask("a", "b", 0, false, 1)).is_none()
                && cache.get(ask("b", "d", 0, false, 1)).is_none(),
            "oldest went"
        );
        assert!(cache.get(ask("k", "kz", 0, false, 1)).is_some());
        // Too big for the budget: not cached at all.
        let big = vec![(b("m"), Bytes::from(vec![0u8; 1000]))];
        cache.insert(ask("m", "n", 0, false, 1), &big, false);
        assert!(cache.get(ask("m", "n", 0, false, 1)).is_none());
    }
}
