//! Building foyer hybrid caches (memory, then local disk): the compute's warm tier and the
//! pageserver's block cache are both one, and building them in one place keeps their eviction
//! policy, disk layout and error handling from drifting apart.
//!
//! # Eviction: S3-FIFO
//!
//! Not foyer's default LRU: with it, the warm tier's concurrency test once busy-looped inside
//! the cache under concurrent reads of the same keys (not reproduced since, so the cause is
//! not pinned down). S3-FIFO has not shown it, and it resists scans better besides.
//!
//! # The disk tier
//!
//! foyer's disk tier is a cache, not a store: by default entries reach disk as memory evicts
//! them, and under pressure its flusher may drop some. Callers must treat a miss as normal.

use std::path::PathBuf;

use foyer::{
    BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder,
    PsyncIoEngineConfig, RecoverMode, S3FifoConfig, StorageKey, StorageValue, Weighter,
};

use ferrisdb_common::{Error, Result};

/// The size of one block of the disk tier, its unit of writing and reclaiming.
const DISK_BLOCK_BYTES: usize = 1 << 20;

/// How large a hybrid cache is and where its disk tier lives, as operators configure it.
///
/// `DEFAULT_MEMORY_BYTES` is only what [`Default`] gives: it lets each cache keep its own
/// default size while sharing this one type (each crate names its cache's config with a type
/// alias, so struct literals and `Default::default()` keep working there).
#[derive(Debug, Clone)]
pub struct HybridCacheConfig<const DEFAULT_MEMORY_BYTES: usize> {
    /// Bytes of keys and values kept in memory.
    pub memory_bytes: usize,
    /// A directory for the disk tier, and its size; `None` keeps the cache in memory only.
    pub disk: Option<(PathBuf, usize)>,
}

impl<const DEFAULT_MEMORY_BYTES: usize> Default for HybridCacheConfig<DEFAULT_MEMORY_BYTES> {
    fn default() -> Self {
        HybridCacheConfig {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            disk: None,
        }
    }
}

impl<const DEFAULT_MEMORY_BYTES: usize> HybridCacheConfig<DEFAULT_MEMORY_BYTES> {
    /// The memory capacity [`build`] actually gives the cache, for status reports: foyer needs
    /// at least one byte, so a configured 0 becomes 1.
    pub fn memory_capacity(&self) -> usize {
        self.memory_bytes.max(1)
    }

    /// Locks the disk tier's directory for `who` (none without a disk tier): two processes
    /// sharing one would each overwrite blocks the other indexes (see [`crate::dir_lock`]).
    /// Held for as long as the cache is open.
    pub fn lock_disk(
        &self,
        who: &str,
    ) -> ferrisdb_common::Result<Option<crate::dir_lock::DirLock>> {
        self.disk
            .as_ref()
            .map(|(dir, _)| crate::dir_lock::DirLock::acquire(dir, who))
            .transpose()
    }

    /// The disk capacity [`build`] gives the cache (0 without a disk tier), for status reports
    /// and to skip disk lookups that cannot hit.
    pub fn disk_capacity(&self) -> usize {
        self.disk.as_ref().map_or(0, |(_, bytes)| *bytes)
    }
}

/// Weighs an entry by the bytes of its key and value, so that a capacity configured in bytes
/// means bytes; a [`build`] weighter for keys and values that are byte strings.
pub fn byte_weight<K: AsRef<[u8]>, V: AsRef<[u8]>>(key: &K, value: &V) -> usize {
    key.as_ref().len() + value.as_ref().len()
}

/// Builds a hybrid cache with S3-FIFO eviction (see the module doc for why), creating the
/// disk tier's directory if needed, so every cache in FerrisDB is set up the same way.
///
/// `name` prefixes foyer's metrics and errors. `recover` says whether the disk tier reads back
/// what an earlier process left there: only safe when a key's value can never change.
/// `weighter` gives an entry's size as counted against the memory capacity.
pub async fn build<K, V, const DEFAULT_MEMORY_BYTES: usize>(
    name: &'static str,
    config: &HybridCacheConfig<DEFAULT_MEMORY_BYTES>,
    recover: RecoverMode,
    weighter: impl Weighter<K, V>,
) -> Result<HybridCache<K, V>>
where
    K: StorageKey,
    V: StorageValue,
{
    // Writing memory out on close only pays when the next process reads it back.
    let flush_on_close = !matches!(recover, RecoverMode::None);
    let builder = HybridCacheBuilder::new()
        .with_name(name)
        .with_flush_on_close(flush_on_close)
        .memory(config.memory_capacity())
        .with_eviction_config(S3FifoConfig::default())
        .with_weighter(weighter)
        .storage();
    let cache = match &config.disk {
        Some((dir, bytes)) => {
            private_dir(dir)?;
            let device = FsDeviceBuilder::new(dir)
                .with_capacity(*bytes)
                .build()
                .map_err(|e| Error::internal(format!("{name} device in {}: {e}", dir.display())))?;
            builder
                .with_io_engine_config(PsyncIoEngineConfig::new())
                .with_engine_config(
                    BlockEngineConfig::new(device).with_block_size(DISK_BLOCK_BYTES),
                )
                .with_recover_mode(recover)
                .build()
                .await
        }
        None => builder.build().await,
    };
    let cache = cache.map_err(|e| Error::internal(format!("{name}: {e}")))?;
    // foyer creates every file of its device while building, with the default mode.
    if let Some((dir, _)) = &config.disk {
        private_files(dir)?;
    }
    Ok(cache)
}

/// Closes a cache built by [`build`] and waits for its disk tier to finish: a process calls
/// this before it returns from `run`, on every path.
///
/// Dropping the last handle instead leaves foyer's close to a task the runtime may cancel
/// halfway when the process exits: its flusher then logs the cancelled write as an error with
/// a captured backtrace, and symbolizing that backtrace kept a pageserver that had refused a
/// corrupt manifest alive for seconds after it said it was exiting (tens of seconds for a
/// debug build on a loaded machine; the chaos run whose replica could not start meanwhile).
pub async fn close<K, V>(name: &'static str, cache: &HybridCache<K, V>)
where
    K: StorageKey,
    V: StorageValue,
{
    if let Err(e) = cache.close().await {
        tracing::warn!(cache = name, error = %e, "closing the cache failed; its disk tier is rebuilt as needed");
    }
}

/// Makes `dir` private to this user (mode 0700), creating it if needed: cached values are
/// user data. A directory others may write to (such as /tmp itself) is refused rather than
/// changed, since it is shared by design.
pub fn private_dir(dir: &std::path::Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o002 != 0 {
            return Err(Error::invalid(format!(
                "cache directory {} is writable by every user: give a private one",
                dir.display()
            )));
        }
        if mode & 0o777 != 0o700 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)?;
    Ok(())
}

/// Makes every file directly in `dir` readable and writable by this user only (mode 0600).
pub fn private_files(dir: &std::path::Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    type Config = HybridCacheConfig<{ 4 << 20 }>;

    async fn serves_what_was_inserted(cache: &HybridCache<Bytes, Bytes>) {
        cache.insert(Bytes::from_static(b"k"), Bytes::from_static(b"v"));
        let entry = cache.get(&Bytes::from_static(b"k")).await.unwrap().unwrap();
        assert_eq!(entry.value().as_ref(), b"v");
    }

    #[test]
    fn each_alias_keeps_its_own_default() {
        assert_eq!(Config::default().memory_bytes, 4 << 20);
        assert_eq!(HybridCacheConfig::<7>::default().memory_bytes, 7);
        assert!(Config::default().disk.is_none());
    }

    #[test]
    fn an_entry_weighs_its_bytes() {
        assert_eq!(
            byte_weight(&"key".to_string(), &Bytes::from_static(b"value")),
            8
        );
    }

    #[test]
    fn capacities_are_what_the_cache_gets() {
        let config = Config {
            memory_bytes: 0,
            disk: Some((PathBuf::from("/nonexistent"), 5)),
        };
        assert_eq!(config.memory_capacity(), 1);
        assert_eq!(config.disk_capacity(), 5);
        assert_eq!(Config::default().disk_capacity(), 0);
    }

    #[tokio::test]
    async fn a_memory_only_cache_serves_what_was_inserted() {
        let cache = build(
            "test-memory",
            &Config::default(),
            RecoverMode::None,
            byte_weight,
        )
        .await
        .unwrap();
        serves_what_was_inserted(&cache).await;
    }

    #[tokio::test]
    async fn a_disk_tier_is_created_in_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("b");
        let config = Config {
            memory_bytes: 1 << 20,
            disk: Some((path.clone(), 16 << 20)),
        };
        let cache = build("test-disk", &config, RecoverMode::None, byte_weight)
            .await
            .unwrap();
        assert!(path.is_dir());
        serves_what_was_inserted(&cache).await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_disk_tier_is_private_to_its_user() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        // An existing directory others could read is made private.
        let path = dir.path().join("cache");
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = Config {
            memory_bytes: 1 << 20,
            disk: Some((path.clone(), 16 << 20)),
        };
        let cache = build("test-private", &config, RecoverMode::None, byte_weight)
            .await
            .unwrap();
        serves_what_was_inserted(&cache).await;
        assert_eq!(mode(&path), 0o700);
        let files: Vec<_> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!files.is_empty(), "foyer wrote no files");
        for f in files {
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
        // A directory every user may write to is refused, not changed.
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = private_dir(&shared).unwrap_err();
        assert_eq!(e.kind(), ferrisdb_common::ErrorKind::InvalidArgument);
        assert_eq!(mode(&shared), 0o777);
    }

    #[tokio::test]
    async fn a_disk_directory_that_cannot_be_created_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"not a directory").unwrap();
        let config = Config {
            memory_bytes: 1 << 20,
            disk: Some((file.join("sub"), 16 << 20)),
        };
        let result =
            build::<Bytes, Bytes, _>("test-bad-dir", &config, RecoverMode::None, byte_weight).await;
        assert_eq!(
            result.err().map(|e| e.kind()),
            Some(ferrisdb_common::ErrorKind::Internal)
        );
    }
}
