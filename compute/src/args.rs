//! `ferrisdb compute`'s command-line arguments: each flag's name, default and help, once.
//!
//! The `ferrisdb` binary flattens [`Args`] into its `compute` subcommand; `ferrisdb dev`, the
//! test launchers and the chaos runner build one (a replica or standby is the primary's with
//! `replica` or `standby` set) and write it as a command line with
//! [`ferrisdb_server_common::args::to_argv`], so no flag is spelled anywhere else.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use ferrisdb_common::{DEFAULT_DATABASE, Result};
use ferrisdb_server_common::args::{RuntimeArgs, SecurityArgs};
use ferrisdb_server_common::auth::read_token_file;

use crate::read_path::{DEFAULT_HOT_BUDGET_BYTES, TierConfig};
use crate::warm_tier::WarmTierConfig;
use crate::{ComputeConfig, Role};

/// Where the client API is served when not told.
pub const DEFAULT_LISTEN_GRPC: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4500));
/// Where the admin HTTP API is served when not told.
pub const DEFAULT_LISTEN_HTTP: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4580));
/// Bytes of values the warm tier keeps in memory when not told.
pub const DEFAULT_WARM_TIER_MEMORY_BYTES: usize = 128 << 20;
/// Bytes of values the warm tier keeps on disk when not told.
pub const DEFAULT_WARM_TIER_DISK_BYTES: usize = 1 << 30;

/// Run a compute node (the primary for one database).
///
/// No derived Debug: `token` is a secret; Debug shows only whether it is set.
#[derive(Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct Args {
    /// gRPC listen address (the client API).
    #[arg(long, default_value_t = DEFAULT_LISTEN_GRPC)]
    pub listen_grpc: SocketAddr,
    /// Admin HTTP listen address.
    #[arg(long, default_value_t = DEFAULT_LISTEN_HTTP)]
    pub listen_http: SocketAddr,
    /// The database to serve.
    #[arg(long, default_value = DEFAULT_DATABASE)]
    pub database: String,
    /// A safekeeper gRPC endpoint (repeat for each).
    #[arg(long = "safekeeper", required = true)]
    pub safekeepers: Vec<String>,
    /// The pageserver's gRPC endpoint.
    #[arg(long)]
    pub pageserver: String,
    /// Serve as a read replica: follow the WAL, answer read-only transactions (reads at the
    /// latest version at the primary's read version, asked of --primary-endpoint: without
    /// one, only reads at an explicit version), refuse commits with `read_only`.
    #[arg(long, conflicts_with = "standby")]
    pub replica: bool,
    /// Serve as a replica until the primary (--primary-endpoint) stops answering, then
    /// win the next term and take over.
    #[arg(long, requires = "primary_endpoints")]
    pub standby: bool,
    /// The primary's client endpoint, then those of standbys that may take over from it
    /// (repeat, or separate with commas). A replica asks whichever answers for the read
    /// version of its reads at the latest version; a standby takes over once none answers;
    /// a primary that loses its term asks them as a replica would. This compute's own
    /// endpoint may be in the list (one list for every compute): it is left out.
    #[arg(long = "primary-endpoint", value_delimiter = ',')]
    pub primary_endpoints: Vec<String>,
    /// Exit after this long without client requests (e.g. `5m`); `ferrisdb dev` starts the
    /// compute again on the next connection.
    #[arg(long)]
    #[serde(serialize_with = "ferrisdb_server_common::args::display_option")]
    pub suspend_after: Option<humantime::Duration>,
    // Written into a command line like every field when set: launchers pass a token file
    // instead, so the secret stays out of `ps`.
    /// Require this bearer token from clients (visible in `ps`: prefer --token-file).
    #[arg(long, env = "FERRISDB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Require one of the tokens in this private file (mode 0600, one a line) from
    /// clients.
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// The hot tier's memory budget: past it (the pageserver has fallen behind), commits
    /// wait until the pageserver catches up. 0: no budget.
    #[arg(long, default_value_t = DEFAULT_HOT_BUDGET_BYTES)]
    pub hot_tier_budget_bytes: usize,
    /// Directory of the warm tier's disk cache (values read from the pageserver), made
    /// private (mode 0700, files 0600); default: a new private directory with an
    /// unpredictable name in the system's temporary directory, removed at exit.
    #[arg(long)]
    pub warm_tier_dir: Option<PathBuf>,
    /// Bytes of values the warm tier keeps in memory.
    #[arg(long, default_value_t = DEFAULT_WARM_TIER_MEMORY_BYTES)]
    pub warm_tier_memory_bytes: usize,
    /// Bytes of values the warm tier keeps on disk (0: memory only).
    #[arg(long, default_value_t = DEFAULT_WARM_TIER_DISK_BYTES)]
    pub warm_tier_disk_bytes: usize,
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

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("listen_grpc", &self.listen_grpc)
            .field("listen_http", &self.listen_http)
            .field("database", &self.database)
            .field("safekeepers", &self.safekeepers)
            .field("pageserver", &self.pageserver)
            .field("replica", &self.replica)
            .field("standby", &self.standby)
            .field("primary_endpoints", &self.primary_endpoints)
            .field("suspend_after", &self.suspend_after)
            .field("token", &ferrisdb_common::net::redact(&self.token))
            .field("token_file", &self.token_file)
            .field("hot_tier_budget_bytes", &self.hot_tier_budget_bytes)
            .field("warm_tier_dir", &self.warm_tier_dir)
            .field("warm_tier_memory_bytes", &self.warm_tier_memory_bytes)
            .field("warm_tier_disk_bytes", &self.warm_tier_disk_bytes)
            .field("security", &self.security)
            .finish()
    }
}

impl Args {
    /// A primary on `safekeepers` reading from `pageserver`, every other argument at its
    /// default.
    pub fn new(safekeepers: Vec<String>, pageserver: String) -> Args {
        Args {
            listen_grpc: DEFAULT_LISTEN_GRPC,
            listen_http: DEFAULT_LISTEN_HTTP,
            database: DEFAULT_DATABASE.to_string(),
            safekeepers,
            pageserver,
            replica: false,
            standby: false,
            primary_endpoints: Vec::new(),
            suspend_after: None,
            token: None,
            token_file: None,
            hot_tier_budget_bytes: DEFAULT_HOT_BUDGET_BYTES,
            warm_tier_dir: None,
            warm_tier_memory_bytes: DEFAULT_WARM_TIER_MEMORY_BYTES,
            warm_tier_disk_bytes: DEFAULT_WARM_TIER_DISK_BYTES,
            security: SecurityArgs::default(),
            runtime: RuntimeArgs::default(),
        }
    }

    /// The role the flags name: `--replica`, `--standby`, else primary.
    pub fn role(&self) -> Role {
        match (self.replica, self.standby) {
            (true, _) => Role::Replica,
            (_, true) => Role::Standby,
            _ => Role::Primary,
        }
    }

    /// The configuration [`crate::run`] takes, the warm tier's disk cache in `warm_dir`
    /// (`warm_tier_dir`, or the private directory the caller made when none was given: the
    /// caller owns its removal). Reads the token, credential and TLS files (and installs
    /// what internal calls send), so it fails on a file that is missing or others can read.
    pub fn into_config(self, warm_dir: PathBuf) -> Result<ComputeConfig> {
        let client = match (&self.token, &self.token_file) {
            (_, Some(p)) => read_token_file(p)?,
            (Some(t), None) => {
                ferrisdb_server_common::auth::check_token(t, "--token")?;
                vec![t.clone()]
            }
            (None, None) => Vec::new(),
        };
        let security = self.security.load(client)?;
        ferrisdb_server_common::auth::check_peers(
            self.safekeepers
                .iter()
                .chain([&self.pageserver])
                .chain(&self.primary_endpoints),
        )?;
        let role = self.role();
        Ok(ComputeConfig {
            listen_grpc: self.listen_grpc,
            listen_http: self.listen_http,
            database: self.database,
            safekeepers: self.safekeepers,
            pageserver: self.pageserver,
            tiers: TierConfig {
                hot_budget_bytes: self.hot_tier_budget_bytes,
                warm: WarmTierConfig {
                    memory_bytes: self.warm_tier_memory_bytes,
                    disk: (self.warm_tier_disk_bytes > 0)
                        .then_some((warm_dir, self.warm_tier_disk_bytes)),
                },
            },
            role,
            primary_endpoints: self.primary_endpoints,
            suspend_after: self.suspend_after.map(std::time::Duration::from),
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
        let bare = Args::new(vec!["http://127.0.0.1:7001".into()], "http://p:1".into());
        assert!(from_argv::<Args, _>(required_only(&bare).unwrap()).unwrap() == bare);
        assert!(from_argv::<Args, _>(to_argv(&bare).unwrap()).unwrap() == bare);
        let full = Args {
            listen_grpc: "127.0.0.1:7000".parse().unwrap(),
            listen_http: "127.0.0.1:7080".parse().unwrap(),
            database: "other".into(),
            safekeepers: vec!["http://a:1".into(), "http://b:2".into()],
            standby: true,
            primary_endpoints: vec![
                "http://127.0.0.1:4500".into(),
                "http://127.0.0.1:4501".into(),
            ],
            suspend_after: Some("5m 3s".parse().unwrap()),
            token_file: Some("/client.token".into()),
            hot_tier_budget_bytes: 0,
            warm_tier_dir: Some("/warm".into()),
            warm_tier_memory_bytes: 1,
            warm_tier_disk_bytes: 0,
            security: SecurityArgs {
                cluster_token_file: Some("/cluster.token".into()),
                ..SecurityArgs::default()
            },
            runtime: RuntimeArgs {
                worker_threads: Some(3),
            },
            ..bare.clone()
        };
        let back: Args = from_argv(to_argv(&full).unwrap()).unwrap();
        assert!(back == full, "{back:?} != {full:?}");
        assert_eq!(back.role(), Role::Standby);
        let replica = Args {
            replica: true,
            token: Some("s3cret".into()),
            ..bare
        };
        assert!(from_argv::<Args, _>(to_argv(&replica).unwrap()).unwrap() == replica);
        assert!(!format!("{replica:?}").contains("s3cret"));
    }
}
