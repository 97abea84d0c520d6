//! `ferrisdb safekeeper`'s command-line arguments: each flag's name, default and help, once.
//!
//! The `ferrisdb` binary flattens [`Args`] into its `safekeeper` subcommand; `ferrisdb dev`
//! and the test launchers build one and write it as a command line with
//! [`ferrisdb_server_common::args::to_argv`], so no flag is spelled anywhere else.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use ferrisdb_common::Result;
use ferrisdb_server_common::args::{RuntimeArgs, S3Args, SecurityArgs};

use crate::SafekeeperConfig;
use crate::service::{DEFAULT_MAX_DATABASES, Limits};

/// The name in logs and status when none is given.
pub const DEFAULT_NAME: &str = "safekeeper";
/// Where the WAL protocol is served when not told.
pub const DEFAULT_LISTEN_GRPC: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4501));
/// Where the admin HTTP API is served when not told.
pub const DEFAULT_LISTEN_HTTP: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4581));
/// The size new WAL segments start at when not told.
pub const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 16 << 20;
/// The WAL disk budget per database when not told.
pub const DEFAULT_MAX_WAL_BYTES: u64 = 8 << 30;

/// Run one safekeeper (an acceptor of the WAL quorum).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct Args {
    /// Name in logs and status.
    #[arg(long, default_value = DEFAULT_NAME)]
    pub name: String,
    /// gRPC listen address.
    #[arg(long, default_value_t = DEFAULT_LISTEN_GRPC)]
    pub listen_grpc: SocketAddr,
    /// Admin HTTP listen address.
    #[arg(long, default_value_t = DEFAULT_LISTEN_HTTP)]
    pub listen_http: SocketAddr,
    /// Where the WAL is kept.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Another safekeeper's gRPC endpoint, to repair damaged WAL from (repeat for each).
    #[arg(long = "peer", value_parser = parse_peer)]
    pub peers: Vec<String>,
    /// New WAL segments start at this size.
    #[arg(long, default_value_t = DEFAULT_SEGMENT_SIZE_BYTES, value_parser = clap::value_parser!(u64).range(4096..))]
    pub segment_size_bytes: u64,
    /// WAL bytes per database past which commits are refused (slowed from 75% on) until
    /// the pageserver has uploaded enough for the WAL below to be deleted.
    #[arg(long, default_value_t = DEFAULT_MAX_WAL_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_wal_bytes: u64,
    /// Databases this safekeeper holds at most; a request that would create another is
    /// refused with invalid_argument.
    #[arg(long, default_value_t = DEFAULT_MAX_DATABASES, value_parser = parse_max_databases)]
    pub max_databases: usize,
    /// Write and fdatasync appends on the blocking pool instead of on the runtime worker that
    /// received them: for a safekeeper holding more busy databases than it has cores, on a
    /// disk that syncs several files in parallel. Off, each sync saves two thread hand-offs.
    #[arg(long)]
    pub sync_on_blocking_pool: bool,
    /// The object store the pageserver uploads to (file:///path, s3://bucket/prefix): its
    /// manifests are read to verify durable claims before WAL is deleted. Without it, WAL
    /// is trimmed only up to the commit position and never on a claim above it.
    #[arg(long)]
    pub object_store: Option<String>,
    /// Where an `s3://` object store is.
    #[command(flatten)]
    #[serde(flatten)]
    pub s3: S3Args,
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
    /// A safekeeper keeping its WAL in `data_dir`, every other argument at its default.
    pub fn new(data_dir: PathBuf) -> Args {
        Args {
            name: DEFAULT_NAME.to_string(),
            listen_grpc: DEFAULT_LISTEN_GRPC,
            listen_http: DEFAULT_LISTEN_HTTP,
            data_dir,
            peers: Vec::new(),
            segment_size_bytes: DEFAULT_SEGMENT_SIZE_BYTES,
            max_wal_bytes: DEFAULT_MAX_WAL_BYTES,
            max_databases: DEFAULT_MAX_DATABASES,
            sync_on_blocking_pool: false,
            object_store: None,
            s3: S3Args::default(),
            security: SecurityArgs::default(),
            runtime: RuntimeArgs::default(),
        }
    }

    /// The configuration [`crate::run`] takes. Reads the credential and TLS files (and
    /// installs what internal calls send), so it fails on a file that is missing or others
    /// can read.
    pub fn into_config(self) -> Result<SafekeeperConfig> {
        let security = self.security.load(Vec::new())?;
        ferrisdb_server_common::auth::check_peers(&self.peers)?;
        Ok(SafekeeperConfig {
            name: self.name,
            listen_grpc: self.listen_grpc,
            listen_http: self.listen_http,
            data_dir: self.data_dir,
            peers: self.peers,
            limits: Limits {
                segment_size: self.segment_size_bytes,
                max_wal_bytes: self.max_wal_bytes,
                max_databases: self.max_databases,
                sync_on_blocking_pool: self.sync_on_blocking_pool,
            },
            object_store: self.object_store.map(|url| self.s3.config(url)),
            security,
        })
    }
}

/// A peer's gRPC endpoint: an `http://` or `https://` URL with a host.
fn parse_peer(s: &str) -> std::result::Result<String, String> {
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(s.to_string()),
        Ok(_) => Err(format!("{s:?} is not an http:// or https:// endpoint")),
        Err(e) => Err(format!("{s:?}: {e}")),
    }
}

/// At least one database.
fn parse_max_databases(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("a safekeeper must hold at least one database".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ferrisdb_server_common::args::{from_argv, required_only, to_argv};

    #[test]
    fn the_defaults_are_clap_s_and_every_value_round_trips() {
        let bare = Args::new("/wal".into());
        assert_eq!(
            from_argv::<Args, _>(required_only(&bare).unwrap()).unwrap(),
            bare
        );
        assert_eq!(from_argv::<Args, _>(to_argv(&bare).unwrap()).unwrap(), bare);
        let full = Args {
            name: "safekeeper-2".into(),
            listen_grpc: "127.0.0.1:7002".parse().unwrap(),
            listen_http: "0.0.0.0:7082".parse().unwrap(),
            peers: vec!["http://127.0.0.1:7001".into(), "https://h:7003".into()],
            segment_size_bytes: 1 << 20,
            max_wal_bytes: 3 << 30,
            max_databases: 7,
            sync_on_blocking_pool: true,
            object_store: Some("s3://bucket/prefix".into()),
            s3: S3Args {
                s3_endpoint: Some("http://127.0.0.1:9000".into()),
                s3_region: Some("eu-west-1".into()),
            },
            security: SecurityArgs {
                tls_cert: Some("/c.pem".into()),
                tls_key: Some("/k.pem".into()),
                tls_ca: Some("/ca.pem".into()),
                cluster_token_file: Some("/cluster.token".into()),
                admin_token_file: Some("/admin.token".into()),
                insecure: true,
            },
            runtime: RuntimeArgs {
                worker_threads: Some(1),
            },
            ..bare
        };
        assert_eq!(from_argv::<Args, _>(to_argv(&full).unwrap()).unwrap(), full);
    }
}
