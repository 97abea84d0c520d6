//! The block cache: decompressed delta-layer blocks in a foyer hybrid cache (memory, then
//! local disk), so hot reads never touch object storage and a restarted pageserver refills on
//! demand.
//!
//! foyer's disk tier is a cache, not a store: by default entries reach disk as memory evicts
//! them, and under pressure its flusher may drop some. That is fine here — a dropped block is
//! read from object storage again — but the hit and miss counters below are what tell whether
//! the cache is doing its job.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use ferrisdb_common::{Error, Result};
use foyer::{
    BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder,
    PsyncIoEngineConfig,
};

/// Where and how much to cache.
#[derive(Debug, Clone)]
pub struct BlockCacheConfig {
    /// Bytes of blocks kept in memory.
    pub memory_bytes: usize,
    /// A directory for the disk tier, and its size; `None` keeps the cache in memory only.
    pub disk: Option<(PathBuf, usize)>,
}

impl Default for BlockCacheConfig {
    fn default() -> BlockCacheConfig {
        BlockCacheConfig {
            memory_bytes: 64 << 20,
            disk: None,
        }
    }
}

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
        let builder = HybridCacheBuilder::new()
            .with_name("ferrisdb-blocks")
            .memory(config.memory_bytes.max(1))
            .with_weighter(|k: &String, v: &Bytes| k.len() + v.len())
            .storage();
        let cache = match &config.disk {
            Some((dir, bytes)) => {
                std::fs::create_dir_all(dir)?;
                let device = FsDeviceBuilder::new(dir)
                    .with_capacity(*bytes)
                    .build()
                    .map_err(|e| {
                        Error::internal(format!("block cache device in {}: {e}", dir.display()))
                    })?;
                builder
                    .with_io_engine_config(PsyncIoEngineConfig::new())
                    .with_engine_config(BlockEngineConfig::new(device).with_block_size(1 << 20))
                    .build()
                    .await
            }
            None => builder.build().await,
        }
        .map_err(|e| Error::internal(format!("block cache: {e}")))?;
        Ok(BlockCache {
            cache,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// A memory-only cache of `bytes` (tests).
    pub fn in_memory(bytes: usize) -> BlockCache {
        let cache = HybridCacheBuilder::new()
            .memory(bytes.max(1))
            .with_weighter(|k: &String, v: &Bytes| k.len() + v.len())
            .storage()
            .build();
        // Without a disk tier the builder completes without awaiting anything.
        let cache =
            futures::executor::block_on(cache).unwrap_or_else(|e| panic!("in-memory cache: {e}"));
        BlockCache {
            cache,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
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
