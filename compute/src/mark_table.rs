//! The warm tier's table of marks (see "Knowing that the key did not change" in
//! `warm_tier.rs`), allocated a chunk at a time as marks land in it.
//!
//! Why chunks: the table has many more slots than a hot working set has keys (2^20, 8 MiB), and
//! every primary or replica view has its own. Allocated whole and filled at creation, it was
//! most of what a database cost a compute: ~8.7 MB for every branch however idle (an outside
//! audit: 275 branches, 2.4 GB). A chunk is allocated by the first mark that lands in it, so a
//! database with a few keys written holds a few chunks and a loaded one ends up with them all.
//!
//! A slot never marked reads 0. That is as good as the view's starting version: the warm tier
//! takes the higher of a key's mark and its newest range clear, which starts there.
//!
//! Ordering: a mark is `fetch_max` (SeqCst) on the slot after its chunk's initialization
//! completed; the warm tier's reader loads the hot tier's floor (SeqCst) after the evictor
//! raised the marks and before it published that floor, so the reader's look at the chunk
//! happens after the chunk's initialization and finds it, and the slot's raised value with it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Slots per chunk: 4 KiB of marks.
const CHUNK_SLOTS: usize = 512;

/// A table of `u64` marks that only rise, every slot 0 until raised.
pub struct MarkTable {
    chunks: Box<[OnceLock<Box<[AtomicU64]>>]>,
}

impl MarkTable {
    /// A table of `slots` slots (a multiple of the chunk size, or rounded up to one), none
    /// allocated yet.
    pub fn new(slots: usize) -> MarkTable {
        MarkTable {
            chunks: (0..slots.div_ceil(CHUNK_SLOTS))
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// The slot's mark (0: never raised).
    pub fn get(&self, slot: usize) -> u64 {
        self.chunks
            .get(slot / CHUNK_SLOTS)
            .and_then(OnceLock::get)
            .map_or(0, |chunk| chunk[slot % CHUNK_SLOTS].load(Ordering::SeqCst))
    }

    /// Raises the slot's mark to at least `mark`.
    pub fn raise(&self, slot: usize, mark: u64) {
        if let Some(chunk) = self.chunks.get(slot / CHUNK_SLOTS) {
            let chunk = chunk.get_or_init(|| (0..CHUNK_SLOTS).map(|_| AtomicU64::new(0)).collect());
            chunk[slot % CHUNK_SLOTS].fetch_max(mark, Ordering::SeqCst);
        }
    }

    /// Bytes of marks allocated so far.
    pub fn allocated_bytes(&self) -> usize {
        self.chunks.iter().filter(|c| c.get().is_some()).count() * CHUNK_SLOTS * 8
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn slots_read_zero_until_raised_and_only_rise() {
        let t = MarkTable::new(1 << 20);
        assert_eq!(t.allocated_bytes(), 0);
        assert_eq!(t.get(12345), 0);
        t.raise(12345, 7);
        t.raise(12345, 5);
        assert_eq!(t.get(12345), 7);
        // Its neighbours in the chunk are allocated and still 0; one chunk in all.
        assert_eq!(t.get(12344), 0);
        assert_eq!(t.allocated_bytes(), CHUNK_SLOTS * 8);
        // The last slot, and one past the end (ignored, never a panic).
        t.raise((1 << 20) - 1, 3);
        assert_eq!(t.get((1 << 20) - 1), 3);
        t.raise(1 << 20, 9);
        assert_eq!(t.get(1 << 20), 0);
    }

    #[test]
    fn concurrent_raises_keep_the_highest() {
        let t = std::sync::Arc::new(MarkTable::new(4096));
        let threads: Vec<_> = (0..4u64)
            .map(|n| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for v in 0..1000u64 {
                        t.raise(((v * 7) % 4096) as usize, v * 4 + n);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        for v in 0..1000u64 {
            let slot = ((v * 7) % 4096) as usize;
            assert!(t.get(slot) >= v * 4 + 3, "slot {slot}");
        }
    }
}
