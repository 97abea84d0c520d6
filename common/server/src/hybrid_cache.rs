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
            prune(dir, *bytes)?;
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
    if let Some((dir, bytes)) = &config.disk {
        private_files(dir)?;
        if let Err(e) = reserve(dir, *bytes) {
            close(name, &cache).await;
            return Err(Error::new(e.kind(), format!("{name}: {}", e.message())));
        }
    }
    Ok(cache)
}

/// The name foyer's directory device gives its partition files, followed by the partition's
/// number (foyer-storage's `FsDevice::filename`).
const PARTITION_PREFIX: &str = "foyer-storage-direct-fs-";

/// Deletes the partition files a tier of `capacity` bytes does not use: those a larger tier
/// left in the directory. foyer would never open them again, and reserved (see [`reserve`])
/// they would hold their disk for good.
fn prune(dir: &std::path::Path, capacity: usize) -> Result<()> {
    let used = capacity / DISK_BLOCK_BYTES;
    for (n, path) in partition_files(dir)? {
        if n >= used {
            std::fs::remove_file(path)?;
        }
    }
    Ok(())
}

/// The partition files in a disk tier's directory, by partition number (other files, such
/// as the directory's lock, are not the tier's blocks).
fn partition_files(dir: &std::path::Path) -> Result<Vec<(usize, std::path::PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let number = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix(PARTITION_PREFIX))
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(n) = number
            && entry.file_type()?.is_file()
        {
            files.push((n, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// Allocates the disk blocks of every file in a disk tier's directory (foyer creates them
/// sparse), so the tier's space is the cache's from the start.
///
/// A sparse tier on a filesystem smaller than its capacity, or one something else fills,
/// runs out of space midway: foyer's flusher then stops on the first failed write, logs every
/// insert after it as an error (thousands a minute) and the disk tier stays dead until the
/// process restarts. Reserved, the tier writes only into blocks it owns, and a capacity the
/// disk cannot hold is refused when the process starts rather than discovered in production.
/// Filesystems that cannot reserve (no `fallocate`) keep the sparse files, with a warning.
fn reserve(dir: &std::path::Path, capacity: usize) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    // What this call allocated, given back if the whole tier does not fit: a refused start
    // must not leave the disk fuller than it found it.
    let mut reserved: Vec<(std::fs::File, i64)> = Vec::new();
    let give_back = |reserved: &[(std::fs::File, i64)]| {
        let punch = nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE;
        for (file, len) in reserved {
            let _ = nix::fcntl::fallocate(file, punch, 0, *len);
        }
    };
    for (_, path) in partition_files(dir)? {
        let file = std::fs::OpenOptions::new().write(true).open(&path)?;
        let meta = file.metadata()?;
        // Already allocated (a restart over the same tier): nothing to ask for.
        if meta.blocks().saturating_mul(512) >= meta.len() {
            continue;
        }
        let len = i64::try_from(meta.len()).unwrap_or(i64::MAX);
        match nix::fcntl::fallocate(&file, nix::fcntl::FallocateFlags::empty(), 0, len) {
            Ok(()) => reserved.push((file, len)),
            Err(nix::errno::Errno::EOPNOTSUPP) => {
                tracing::warn!(
                    dir = %dir.display(),
                    "this filesystem cannot reserve the disk cache's space (no fallocate): it is written sparse, and a full disk stops it until a restart"
                );
                return Ok(());
            }
            Err(nix::errno::Errno::ENOSPC) => {
                reserved.push((file, len));
                give_back(&reserved);
                let free = nix::sys::statvfs::statvfs(dir)
                    .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
                    .unwrap_or(0);
                return Err(Error::invalid(format!(
                    "a disk tier of {capacity} bytes does not fit in {}: {free} bytes are free there besides what the tier already held; give the cache less disk or the directory more",
                    dir.display()
                )));
            }
            Err(e) => {
                give_back(&reserved);
                return Err(Error::internal(format!(
                    "reserving the disk cache's space in {}: {e}",
                    path.display()
                )));
            }
        }
    }
    Ok(())
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
    match tokio::time::timeout(CLOSE_TIMEOUT, cache.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(cache = name, error = %e, "closing the cache failed; its disk tier is rebuilt as needed");
        }
        // A disk tier whose writer died (its disk failed) never finishes flushing: a process
        // stopping must not hang on it (an outside audit's pageserver sat at 0 % CPU after
        // SIGTERM, in this close, until SIGKILL). The cache is only a cache.
        Err(_) => {
            tracing::warn!(
                cache = name,
                timeout = ?CLOSE_TIMEOUT,
                "closing the cache did not finish in time; stopping without it (its disk tier is rebuilt as needed)"
            );
        }
    }
}

/// How long [`close`] waits for a cache's disk tier to finish.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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

    /// Allocated bytes of the files in `dir`.
    fn allocated(dir: &std::path::Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().blocks() * 512)
            .sum()
    }

    #[tokio::test]
    async fn the_disk_tier_owns_its_space_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        let config = Config {
            memory_bytes: 1 << 20,
            disk: Some((path.clone(), 16 << 20)),
        };
        let cache = build("test-reserve", &config, RecoverMode::None, byte_weight)
            .await
            .unwrap();
        serves_what_was_inserted(&cache).await;
        close("test-reserve", &cache).await;
        drop(cache);
        assert!(
            allocated(&path) >= 16 << 20,
            "the tier's files should be allocated, not sparse: {} bytes",
            allocated(&path)
        );
        // Opening it again asks for nothing more.
        let again = build("test-reserve", &config, RecoverMode::None, byte_weight)
            .await
            .unwrap();
        serves_what_was_inserted(&again).await;
    }

    #[tokio::test]
    async fn a_smaller_tier_deletes_the_partitions_it_no_longer_uses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        let sized = |bytes: usize| Config {
            memory_bytes: 1 << 20,
            disk: Some((path.clone(), bytes)),
        };
        let files = || std::fs::read_dir(&path).unwrap().count();
        let cache: HybridCache<Bytes, Bytes> = build(
            "test-prune",
            &sized(16 << 20),
            RecoverMode::Quiet,
            byte_weight,
        )
        .await
        .unwrap();
        close("test-prune", &cache).await;
        drop(cache);
        assert_eq!(files(), 16);
        let cache = build(
            "test-prune",
            &sized(4 << 20),
            RecoverMode::Quiet,
            byte_weight,
        )
        .await
        .unwrap();
        serves_what_was_inserted(&cache).await;
        assert_eq!(files(), 4);
        assert!(allocated(&path) < 8 << 20, "{}", allocated(&path));
    }

    /// A disk tier larger than its filesystem is refused when the process starts (a small
    /// tmpfs, mounted by the test: it needs root, and says so when it cannot).
    #[tokio::test]
    async fn a_disk_tier_larger_than_its_filesystem_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("small");
        std::fs::create_dir(&mount).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(&mount)
            .output();
        match mounted {
            Ok(o) if o.status.success() => {}
            other => {
                eprintln!("skipped: cannot mount a small tmpfs (needs root): {other:?}");
                return;
            }
        }
        let config = Config {
            memory_bytes: 1 << 20,
            disk: Some((mount.join("cache"), 64 << 20)),
        };
        let result =
            build::<Bytes, Bytes, _>("test-too-big", &config, RecoverMode::None, byte_weight).await;
        let fits = build::<Bytes, Bytes, _>(
            "test-fits",
            &Config {
                memory_bytes: 1 << 20,
                disk: Some((mount.join("fits"), 4 << 20)),
            },
            RecoverMode::None,
            byte_weight,
        )
        .await;
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&mount)
            .status();
        let Err(e) = result else {
            panic!("a 64 MiB tier on an 8 MiB filesystem was accepted");
        };
        assert_eq!(e.kind(), ferrisdb_common::ErrorKind::InvalidArgument, "{e}");
        assert!(e.message().contains("does not fit"), "{e}");
        assert!(fits.is_ok(), "{:?}", fits.err());
    }
}
