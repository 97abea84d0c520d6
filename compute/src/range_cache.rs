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
//! half is kept true by deletion rather than checked: the hot tier tells this cache (through
//! the warm tier, its [`EvictionObserver`](crate::hot_tier::EvictionObserver)) about every
//! change before it publishes the floor that drops it, and every chunk covering a changed key,
//! or overlapping a cleared range, is deleted then. A reader's `at` is at or below a floor it
//! loaded before looking here, so every change at or below `at` has been told and has deleted
//! what it made stale.
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
    /// Chunks in insertion order, by (begin, serial); entries whose chunk has gone are skipped.
    order: VecDeque<(Bytes, u64)>,
    next_serial: u64,
}

#[derive(Debug)]
struct Chunk {
    /// Exclusive end of the covered range.
    end: Bytes,
    /// The version the pageserver was asked at.
    at: Version,
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

    /// The answer to `ask` from one chunk, when a chunk read at or below `ask.at` covers
    /// enough of the range to settle it: the rows and whether the range holds more.
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
        let bytes: usize = rows
            .iter()
            .map(|(k, v)| k.len() + v.len() + ROW_OVERHEAD)
            .sum();
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
        inner.remove_overlapping(&begin, &end);
        let serial = inner.next_serial;
        inner.next_serial += 1;
        inner.bytes += bytes;
        inner.order.push_back((begin.clone(), serial));
        inner.chunks.insert(
            begin,
            Chunk {
                end,
                at: ask.at,
                rows,
                bytes,
                serial,
            },
        );
        inner.shrink_to(self.budget);
    }

    /// `key` changed at `version`, which is about to leave the hot tier.
    pub fn changed(&self, key: &[u8], version: Version) {
        let mut inner = self.lock();
        inner.told = inner.told.max(version);
        let covering = inner
            .chunks
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .filter(|(_, c)| key < c.end.as_ref())
            .map(|(b, _)| b.clone());
        if let Some(begin) = covering {
            inner.remove(&begin);
        }
    }

    /// `[begin, end)` was cleared at `version`, which is about to leave the hot tier.
    pub fn cleared(&self, begin: &[u8], end: &[u8], version: Version) {
        let mut inner = self.lock();
        inner.told = inner.told.max(version);
        inner.remove_overlapping(begin, end);
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
        let (rows, settled) = if ask.reverse {
            // The chunk holding the keys just below `end`.
            let (begin, chunk) = self
                .chunks
                .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(ask.end)))
                .next_back()?;
            if chunk.end.as_ref() < ask.end || chunk.at > ask.at {
                return None;
            }
            let from = chunk.rows.partition_point(|(k, _)| k.as_ref() < ask.begin);
            let to = chunk.rows.partition_point(|(k, _)| k.as_ref() < ask.end);
            let rows: Vec<_> = chunk.rows[from..to]
                .iter()
                .rev()
                .take(want)
                .cloned()
                .collect();
            (rows, begin.as_ref() <= ask.begin)
        } else {
            let (_, chunk) = self
                .chunks
                .range::<[u8], _>((Bound::Unbounded, Bound::Included(ask.begin)))
                .next_back()?;
            if chunk.end.as_ref() <= ask.begin || chunk.at > ask.at {
                return None;
            }
            let from = chunk.rows.partition_point(|(k, _)| k.as_ref() < ask.begin);
            let rows: Vec<_> = chunk.rows[from..]
                .iter()
                .take_while(|(k, _)| k.as_ref() < ask.end)
                .take(want)
                .cloned()
                .collect();
            (rows, chunk.end.as_ref() >= ask.end)
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

    /// Removes every chunk sharing a key with `[begin, end)`.
    fn remove_overlapping(&mut self, begin: &[u8], end: &[u8]) {
        if begin >= end {
            return;
        }
        let mut doomed: Vec<Bytes> = self
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
            doomed.push(b.clone());
        }
        for b in doomed {
            self.remove(&b);
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

/// The smallest key after `key`.
fn successor(key: &[u8]) -> Bytes {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    Bytes::from(next)
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
    fn changes_delete_the_chunks_they_touch() {
        let cache = RangeCache::new(Version(10));
        cache.insert(ask("a", "c", 0, false, 10), &rows(&["a", "b"]), false);
        cache.insert(ask("c", "e", 0, false, 10), &rows(&["c", "d"]), false);
        cache.insert(ask("e", "g", 0, false, 10), &rows(&["e"]), false);
        // A new key inside [c, e) (no row there before) deletes that chunk only.
        cache.changed(b"cc", Version(11));
        assert!(cache.get(ask("c", "e", 0, false, 11)).is_none());
        assert!(cache.get(ask("a", "c", 0, false, 11)).is_some());
        assert!(cache.get(ask("e", "g", 0, false, 11)).is_some());
        // A clear of [b, f) deletes both chunks it overlaps.
        cache.cleared(b"b", b"f", Version(12));
        assert_eq!(cache.usage(), (0, 0));
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
        assert_eq!(cache.usage().0, 1, "[b, d) replaced [a, c)");
        assert!(cache.get(ask("a", "b", 0, false, 1)).is_none());
        for k in ["e", "g", "i", "k"] {
            let end = format!("{k}z");
            cache.insert(ask(k, &end, 0, false, 1), &rows(&[k]), false);
        }
        let (chunks, bytes) = cache.usage();
        assert_eq!((chunks, bytes), (4, 4 * (2 + ROW_OVERHEAD)));
        assert!(
            cache.get(ask("b", "d", 0, false, 1)).is_none(),
            "oldest went"
        );
        assert!(cache.get(ask("k", "kz", 0, false, 1)).is_some());
        // Too big for the budget: not cached at all.
        let big = vec![(b("m"), Bytes::from(vec![0u8; 1000]))];
        cache.insert(ask("m", "n", 0, false, 1), &big, false);
        assert!(cache.get(ask("m", "n", 0, false, 1)).is_none());
    }
}
