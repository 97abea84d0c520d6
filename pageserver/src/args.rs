//! `ferrisdb pageserver`'s command-line arguments: each flag's name, default and help, once.
//!
//! The `ferrisdb` binary flattens [`Args`] into its `pageserver` subcommand; `ferrisdb dev`
//! and the test launchers build one and write it as a command line with
//! [`ferrisdb_server_common::args::to_argv`], so no flag is spelled anywhere else.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use ferrisdb_common::{DEFAULT_DATABASE, Error, Result};
use ferrisdb_server_common::args::{RuntimeArgs, S3Args, SecurityArgs};

use crate::PageserverConfig;
use crate::block_cache::BlockCacheConfig;
use crate::databases::DEFAULT_MAX_BRANCHES;
use crate::timeline::TimelineOptions;

/// Where the read API is served when not told.
pub const DEFAULT_LISTEN_GRPC: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4510));
/// Where the admin HTTP API is served when not told.
pub const DEFAULT_LISTEN_HTTP: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4590));
/// Seconds between automatic checkpoints when not told.
pub const DEFAULT_CHECKPOINT_INTERVAL_SECS: u64 = 30;
/// Bytes the open in-memory layer may hold before a checkpoint is due, when not told.
pub const DEFAULT_CHECKPOINT_BYTES: usize = crate::timeline::DEFAULT_CHECKPOINT_BYTES;
/// The smallest `--checkpoint-bytes` accepted: below it a busy database would checkpoint
/// (a layer, a cold segment and a manifest in the bucket) for every few commits.
pub const MIN_CHECKPOINT_BYTES: usize = 1 << 20;
/// Bytes of layer blocks cached in memory when not told.
pub const DEFAULT_CACHE_MEMORY_BYTES: usize = 64 << 20;
/// Bytes of layer blocks cached on disk when not told.
pub const DEFAULT_CACHE_DISK_BYTES: usize = 1 << 30;
/// The retention window when not told: a week.
pub const DEFAULT_PITR_INTERVAL_SECS: u64 = 7 * 24 * 3600;
/// Delta layers above the newest image that trigger a new image, when not told.
pub const DEFAULT_IMAGE_AFTER_DELTAS: usize = 16;
/// The most bytes of layers an image layer is built from when not told (see
/// [`TimelineOptions::image_max_input_bytes`]).
pub const DEFAULT_IMAGE_MAX_INPUT_BYTES: usize = 1 << 30;
/// L0 delta layers that trigger a merge into L1, when not told.
pub const DEFAULT_COMPACT_AFTER_DELTAS: usize = 8;

/// Run a pageserver.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct Args {
    /// gRPC listen address.
    #[arg(long, default_value_t = DEFAULT_LISTEN_GRPC)]
    pub listen_grpc: SocketAddr,
    /// Admin HTTP listen address.
    #[arg(long, default_value_t = DEFAULT_LISTEN_HTTP)]
    pub listen_http: SocketAddr,
    /// Object storage URL: file:///path, memory://, s3://bucket/prefix.
    #[arg(long)]
    pub object_store: String,
    /// Where an `s3://` object store is.
    #[command(flatten)]
    #[serde(flatten)]
    pub s3: S3Args,
    /// A safekeeper gRPC endpoint to follow (repeat for each).
    #[arg(long = "safekeeper", required = true)]
    pub safekeepers: Vec<String>,
    /// A database to serve (repeatable).
    #[arg(long = "database", default_value = DEFAULT_DATABASE)]
    pub databases: Vec<String>,
    /// Seconds between automatic checkpoints.
    #[arg(long, default_value_t = DEFAULT_CHECKPOINT_INTERVAL_SECS)]
    pub checkpoint_interval_secs: u64,
    /// A checkpoint is due sooner once the open in-memory layer holds this many bytes (at
    /// least 1 MiB).
    #[arg(long, default_value_t = DEFAULT_CHECKPOINT_BYTES)]
    pub checkpoint_bytes: usize,
    /// A directory for the block cache's disk tier (none: memory only).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Bytes of layer blocks cached in memory.
    #[arg(long, default_value_t = DEFAULT_CACHE_MEMORY_BYTES)]
    pub cache_memory_bytes: usize,
    /// Bytes of layer blocks cached on local disk (with --cache-dir).
    #[arg(long, default_value_t = DEFAULT_CACHE_DISK_BYTES)]
    pub cache_disk_bytes: usize,
    /// Reads may go back this many seconds (the retention window, pitr_interval).
    #[arg(long, default_value_t = DEFAULT_PITR_INTERVAL_SECS)]
    pub pitr_interval_secs: u64,
    /// Write an image layer once this many delta runs lie above the newest one (an L1 run
    /// counts once); one is also written when the retention horizon passes the newest image.
    #[arg(long, default_value_t = DEFAULT_IMAGE_AFTER_DELTAS)]
    pub image_after_deltas: usize,
    /// Write no image layer that would be built from more than this many bytes of layers
    /// (an image is built in memory: about three times this at its peak).
    #[arg(long, default_value_t = DEFAULT_IMAGE_MAX_INPUT_BYTES)]
    pub image_max_input_bytes: usize,
    /// Merge the L0 delta layers into key-partitioned L1 layers once this many exist.
    #[arg(long, default_value_t = DEFAULT_COMPACT_AFTER_DELTAS)]
    pub compact_after_deltas: usize,
    /// Most branches served (those in the bucket count); creating one more is refused
    /// with `limit_exceeded`.
    #[arg(long, default_value_t = DEFAULT_MAX_BRANCHES)]
    pub max_branches: usize,
    /// TLS and credentials.
    #[command(flatten)]
    #[serde(flatten)]
    pub security: SecurityArgs,
    /// The async runtime's threads (read by the `ferrisdb` binary before it starts the
    /// runtime; unused by `run`).
    #[command(flatten)]
    #[serde(flatten)]
    pub runtime: RuntimeArgs,
}

impl Args {
    /// A pageserver on `object_store` following `safekeepers`, every other argument at its
    /// default.
    pub fn new(object_store: String, safekeepers: Vec<String>) -> Args {
        Args {
            listen_grpc: DEFAULT_LISTEN_GRPC,
            listen_http: DEFAULT_LISTEN_HTTP,
            object_store,
            s3: S3Args::default(),
            safekeepers,
            databases: vec![DEFAULT_DATABASE.to_string()],
            checkpoint_interval_secs: DEFAULT_CHECKPOINT_INTERVAL_SECS,
            checkpoint_bytes: DEFAULT_CHECKPOINT_BYTES,
            cache_dir: None,
            cache_memory_bytes: DEFAULT_CACHE_MEMORY_BYTES,
            cache_disk_bytes: DEFAULT_CACHE_DISK_BYTES,
            pitr_interval_secs: DEFAULT_PITR_INTERVAL_SECS,
            image_after_deltas: DEFAULT_IMAGE_AFTER_DELTAS,
            image_max_input_bytes: DEFAULT_IMAGE_MAX_INPUT_BYTES,
            compact_after_deltas: DEFAULT_COMPACT_AFTER_DELTAS,
            max_branches: DEFAULT_MAX_BRANCHES,
            security: SecurityArgs::default(),
            runtime: RuntimeArgs::default(),
        }
    }

    /// The configuration [`crate::run`] takes. Reads the credential and TLS files (and
    /// installs what internal calls send), so it fails on a file that is missing or others
    /// can read.
    pub fn into_config(self) -> Result<PageserverConfig> {
        if self.checkpoint_bytes < MIN_CHECKPOINT_BYTES {
            return Err(Error::invalid(format!(
                "--checkpoint-bytes {} is below the minimum of {MIN_CHECKPOINT_BYTES}",
                self.checkpoint_bytes
            )));
        }
        let security = self.security.load(Vec::new())?;
        ferrisdb_server_common::auth::check_peers(&self.safekeepers)?;
        Ok(PageserverConfig {
            listen_grpc: self.listen_grpc,
            listen_http: self.listen_http,
            object_store: self.s3.config(self.object_store),
            safekeepers: self.safekeepers,
            databases: self.databases,
            // A zero interval would checkpoint in a busy loop.
            checkpoint_interval: Duration::from_secs(self.checkpoint_interval_secs.max(1)),
            cache: BlockCacheConfig {
                memory_bytes: self.cache_memory_bytes,
                disk: self.cache_dir.map(|d| (d, self.cache_disk_bytes)),
            },
            timeline: TimelineOptions {
                pitr_interval: Duration::from_secs(self.pitr_interval_secs),
                image_after_deltas: self.image_after_deltas,
                image_max_input_bytes: self.image_max_input_bytes,
                compact_after_deltas: self.compact_after_deltas,
                checkpoint_bytes: self.checkpoint_bytes,
                ..Default::default()
            },
            max_branches: self.max_branches,
            security,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ferrisdb_server_common::args::{from_argv, required_only, to_argv};

    #[test]
    fn the_defaults_are_clap_s_and_every_value_round_trips() {
        let bare = Args::new("memory://".into(), vec!["http://127.0.0.1:7001".into()]);
        assert_eq!(
            from_argv::<Args, _>(required_only(&bare).unwrap()).unwrap(),
            bare
        );
        assert_eq!(from_argv::<Args, _>(to_argv(&bare).unwrap()).unwrap(), bare);
        let full = Args {
            listen_grpc: "127.0.0.1:7010".parse().unwrap(),
            listen_http: "127.0.0.1:7090".parse().unwrap(),
            s3: S3Args {
                s3_endpoint: Some("http://127.0.0.1:9000".into()),
                s3_region: None,
            },
            safekeepers: vec![
                "http://a:1".into(),
                "http://b:2".into(),
                "http://c:3".into(),
            ],
            databases: vec!["default".into(), "other".into()],
            checkpoint_interval_secs: 1,
            checkpoint_bytes: 7 << 20,
            cache_dir: Some("/cache dir".into()),
            cache_memory_bytes: 1,
            cache_disk_bytes: 2,
            pitr_interval_secs: 3,
            image_after_deltas: 4,
            image_max_input_bytes: 7,
            compact_after_deltas: 5,
            max_branches: 6,
            security: SecurityArgs {
                cluster_token_file: Some("/cluster.token".into()),
                ..SecurityArgs::default()
            },
            runtime: RuntimeArgs {
                worker_threads: Some(2),
            },
            ..bare
        };
        assert_eq!(from_argv::<Args, _>(to_argv(&full).unwrap()).unwrap(), full);
    }

    #[test]
    fn a_checkpoint_size_below_the_minimum_is_refused_at_startup() {
        let at = |checkpoint_bytes| Args {
            checkpoint_bytes,
            ..Args::new("memory://".into(), vec!["http://127.0.0.1:7001".into()])
        };
        let e = at(MIN_CHECKPOINT_BYTES - 1).into_config().unwrap_err();
        assert_eq!(e.kind(), ferrisdb_common::ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("--checkpoint-bytes"), "{e}");
        // (One accepted configuration per process: it installs the cluster's credentials.)
        let config = at(MIN_CHECKPOINT_BYTES).into_config().unwrap();
        assert_eq!(config.timeline.checkpoint_bytes, MIN_CHECKPOINT_BYTES);
        assert_eq!(Args::new(String::new(), vec![]).checkpoint_bytes, 256 << 20);
    }
}
