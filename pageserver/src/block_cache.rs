//! The block cache: decompressed delta-layer blocks in a foyer hybrid cache (memory, then
//! local disk), so hot reads never touch object storage and a restarted pageserver refills on
//! demand.
//!
//! foyer's disk tier is a cache, not a store: by default entries reach disk as memory evicts
//! them, and under pressure its flusher may drop some. That is fine here — a dropped block is
//! read from object storage again — but the hit and miss counters below are what tell whether
//! the cache is doing its job.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use ferrisdb_common::Result;
use ferrisdb_server_common::hybrid_cache::{self, HybridCacheConfig, byte_weight};
use foyer::{HybridCache, RecoverMode};

/// Where and how much to cache: the shared hybrid cache config, so the block cache is sized and
/// placed like the compute's warm tier; by default 64 MiB in memory and no disk tier.
pub type BlockCacheConfig = HybridCacheConfig<{ 64 << 20 }>;

/// Decompressed blocks by `"<layer name>#<block index>"`.
pub struct BlockCache {
    cache: HybridCache<String, Bytes>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("hits", &self.hits)
            .field("misses", &self.misses)
            .finish()
    }
}

impl BlockCache {
    /// Builds the cache; the disk tier's directory is created if needed.
    pub async fn new(config: &BlockCacheConfig) -> Result<BlockCache> {
        // foyer's default recovery, kept from before the shared builder: a restarted
        // pageserver reads back its disk tier, which is right only while a key names one
        // immutable block.
        let cache =
            hybrid_cache::build("ferrisdb-blocks", config, RecoverMode::Quiet, byte_weight).await?;
        Ok(BlockCache {
            cache,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// A memory-only cache of `bytes` (tests).
    pub fn in_memory(bytes: usize) -> BlockCache {
        let config = BlockCacheConfig {
            memory_bytes: bytes,
            disk: None,
        };
        // Without a disk tier the builder completes without awaiting anything.
        futures::executor::block_on(BlockCache::new(&config))
            .unwrap_or_else(|e| panic!("in-memory cache: {e}"))
    }

    /// Closes the cache, its disk tier's last writes included (see
    /// [`hybrid_cache::close`]).
    pub async fn close(&self) {
        hybrid_cache::close("ferrisdb-blocks", &self.cache).await;
    }

    /// A cached block, if any tier has it.
    pub async fn get(&self, key: &str) -> Option<Bytes> {
        match self.cache.get(&key.to_string()).await {
            Ok(Some(entry)) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(entry.value().clone())
            }
            _ => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Caches a block.
    pub fn insert(&self, key: String, block: Bytes) {
        self.cache.insert(key, block);
    }

    /// (hits, misses) so far.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    const KEYS: usize = 4;

    fn key(i: usize) -> String {
        format!("layer#{i}")
    }

    /// Distinct contents and lengths per key, so a mixed-up entry cannot pass for another.
    fn block(i: usize) -> Bytes {
        Bytes::from(vec![i as u8 + 1; 1024 + i])
    }

    /// foyer's default LRU spun under concurrent reads of the same keys (see
    /// `ferrisdb_server_common::hybrid_cache`): several tasks on two worker threads read the same few
    /// blocks while one re-inserts them, as concurrent misses of one block do. A spin fails the
    /// timeout instead of hanging the test run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_of_the_same_blocks_return_their_bytes() {
        const READERS: usize = 6;
        const READS: usize = 2_000;
        let cache = Arc::new(
            BlockCache::new(&BlockCacheConfig {
                memory_bytes: 1 << 20,
                disk: None,
            })
            .await
            .unwrap(),
        );
        for i in 0..KEYS {
            cache.insert(key(i), block(i));
        }
        let inserter = {
            let cache = cache.clone();
            tokio::spawn(async move {
                for n in 0..READS {
                    cache.insert(key(n % KEYS), block(n % KEYS));
                    tokio::task::yield_now().await;
                }
            })
        };
        let readers: Vec<_> = (0..READERS)
            .map(|t| {
                let cache = cache.clone();
                tokio::spawn(async move {
                    for n in 0..READS {
                        let i = (t + n) % KEYS;
                        assert_eq!(cache.get(&key(i)).await, Some(block(i)), "{}", key(i));
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        tokio::time::timeout(Duration::from_secs(60), async {
            inserter.await.unwrap();
            for r in readers {
                r.await.unwrap();
            }
        })
        .await
        .expect("concurrent reads did not finish within 60 s: the cache spins");
        assert_eq!(cache.stats(), ((READERS * READS) as u64, 0));
    }
}
