//! The `ferrisdb` binary: parses the command line and hands off to a component's `run` or a
//! client command. `ferrisdb dev` starts a whole local cluster.

mod cli;
mod dev;
mod escape;
mod local_cluster;
mod local_credentials;
mod proxy;
mod shell;
mod telemetry;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ferrisdb_common::DEFAULT_DATABASE;
use ferrisdb_server_common::auth::{self, Security, Tokens};
use ferrisdb_server_common::objstore::ObjectStoreConfig;
use ferrisdb_server_common::serve::ServerTls;

/// FerrisDB: a disaggregated transactional key-value database.
///
/// No Debug: the arguments hold tokens, which must never be printed.
#[derive(Parser)]
#[command(name = "ferrisdb", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where to find S3-compatible storage when the object store URL is `s3://…`.
#[derive(Debug, Clone, clap::Args)]
struct S3Args {
    /// S3 endpoint (MinIO, moto); default: AWS_ENDPOINT_URL or AWS.
    #[arg(long, env = "FERRISDB_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// S3 region; default: AWS_REGION or us-east-1.
    #[arg(long, env = "FERRISDB_S3_REGION")]
    s3_region: Option<String>,
}

impl S3Args {
    fn config(&self, url: String) -> ObjectStoreConfig {
        ObjectStoreConfig {
            url,
            s3_endpoint: self.s3_endpoint.clone(),
            s3_region: self.s3_region.clone(),
            ..ObjectStoreConfig::default()
        }
    }
}

/// TLS and credentials of a server process (docs/security.md).
#[derive(Debug, Clone, clap::Args)]
struct SecurityArgs {
    /// Serve every listener (gRPC and admin HTTP) over TLS: certificate chain (PEM).
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// Serve every listener over TLS: private key (PEM).
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Trust this CA certificate (PEM) when calling peers at `https://` endpoints.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// The cluster credential: a private file (mode 0600) of hex secrets of at least 32
    /// bytes, one a line. The first is sent on internal calls; every line is accepted, so a
    /// rotation lists the current and the next one.
    #[arg(long, value_name = "FILE")]
    cluster_token_file: Option<PathBuf>,
    /// Tokens accepted on the admin HTTP API: a private file, one a line (the cluster
    /// credential is accepted there too).
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Serve on non-loopback addresses even without authentication (warned at start).
    #[arg(long)]
    insecure: bool,
}

impl SecurityArgs {
    /// Reads the files, installs the credential and CA used on internal calls, and returns
    /// what the servers require; `client` are the client API's tokens (computes only).
    fn load(&self, client: Vec<String>) -> ferrisdb_common::Result<Security> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some(ServerTls::from_files(c, k)?),
            _ => None,
        };
        let cluster = match &self.cluster_token_file {
            Some(p) => auth::read_cluster_token_file(p)?,
            None => Vec::new(),
        };
        let admin = match &self.admin_token_file {
            Some(p) => auth::read_token_file(p)?,
            None => Vec::new(),
        };
        let ca = match &self.tls_ca {
            Some(p) => Some(std::fs::read(p).map_err(|e| {
                ferrisdb_common::Error::invalid(format!("--tls-ca {}: {e}", p.display()))
            })?),
            None => None,
        };
        auth::install_cluster_access(cluster.first().map(String::as_str), ca)?;
        Ok(Security {
            tls,
            cluster: Tokens::new(&cluster),
            admin: Tokens::new(&admin),
            client: Tokens::new(&client),
            insecure: self.insecure,
        })
    }
}

/// The compute's client tokens: `--token` or the lines of `--token-file`.
fn client_tokens(
    token: Option<String>,
    token_file: Option<PathBuf>,
) -> ferrisdb_common::Result<Vec<String>> {
    match (token, token_file) {
        (_, Some(p)) => auth::read_token_file(&p),
        (Some(t), None) => Ok(vec![t]),
        (None, None) => Ok(Vec::new()),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole local cluster: 3 safekeepers, a pageserver and a compute, each its own process.
    Dev(dev::DevArgs),
    /// Run one safekeeper (an acceptor of the WAL quorum).
    Safekeeper {
        /// Name in logs and status.
        #[arg(long, default_value = "safekeeper")]
        name: String,
        /// gRPC listen address.
        #[arg(long, default_value = "127.0.0.1:4501")]
        listen_grpc: SocketAddr,
        /// Admin HTTP listen address.
        #[arg(long, default_value = "127.0.0.1:4581")]
        listen_http: SocketAddr,
        /// Where the WAL is kept.
        #[arg(long)]
        data_dir: PathBuf,
        /// Another safekeeper's gRPC endpoint, to repair damaged WAL from (repeat for each).
        #[arg(long = "peer")]
        peers: Vec<String>,
        /// New WAL segments start at this size.
        #[arg(long, default_value_t = 16 << 20)]
        segment_size_bytes: u64,
        /// WAL bytes per database past which commits are refused (slowed from 75% on) until
        /// the pageserver has uploaded enough for the WAL below to be deleted.
        #[arg(long, default_value_t = 8 << 30)]
        max_wal_bytes: u64,
        /// Databases this safekeeper holds at most; a request that would create another is
        /// refused with invalid_argument.
        #[arg(long, default_value_t = ferrisdb_wal_service::service::DEFAULT_MAX_DATABASES)]
        max_databases: usize,
        /// The object store the pageserver uploads to (file:///path, s3://bucket/prefix): its
        /// manifests are read to verify durable claims before WAL is deleted. Without it, WAL
        /// is trimmed only up to the commit position and never on a claim above it.
        #[arg(long)]
        object_store: Option<String>,
        #[command(flatten)]
        s3: S3Args,
        #[command(flatten)]
        security: SecurityArgs,
    },
    /// Run a pageserver.
    Pageserver {
        /// gRPC listen address.
        #[arg(long, default_value = "127.0.0.1:4510")]
        listen_grpc: SocketAddr,
        /// Admin HTTP listen address.
        #[arg(long, default_value = "127.0.0.1:4590")]
        listen_http: SocketAddr,
        /// Object storage URL: file:///path, memory://, s3://bucket/prefix.
        #[arg(long)]
        object_store: String,
        #[command(flatten)]
        s3: S3Args,
        /// A safekeeper gRPC endpoint to follow (repeat for each).
        #[arg(long = "safekeeper", required = true)]
        safekeepers: Vec<String>,
        /// A database to serve (repeatable).
        #[arg(long = "database", default_value = DEFAULT_DATABASE)]
        databases: Vec<String>,
        /// Seconds between automatic checkpoints.
        #[arg(long, default_value_t = 30)]
        checkpoint_interval_secs: u64,
        /// A directory for the block cache's disk tier (none: memory only).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Bytes of layer blocks cached in memory.
        #[arg(long, default_value_t = 64 << 20)]
        cache_memory_bytes: usize,
        /// Bytes of layer blocks cached on local disk (with --cache-dir).
        #[arg(long, default_value_t = 1 << 30)]
        cache_disk_bytes: usize,
        /// Reads may go back this many seconds (the retention window, pitr_interval).
        #[arg(long, default_value_t = 7 * 24 * 3600)]
        pitr_interval_secs: u64,
        /// Write an image layer once this many delta layers lie above the newest one.
        #[arg(long, default_value_t = 16)]
        image_after_deltas: usize,
        /// Merge the L0 delta layers into key-partitioned L1 layers once this many exist.
        #[arg(long, default_value_t = 8)]
        compact_after_deltas: usize,
        /// Most branches served (those in the bucket count); creating one more is refused
        /// with `limit_exceeded`.
        #[arg(long, default_value_t = ferrisdb_pageserver::databases::DEFAULT_MAX_BRANCHES)]
        max_branches: usize,
        #[command(flatten)]
        security: SecurityArgs,
    },
    /// Run a compute node (the primary for one database).
    Compute {
        /// gRPC listen address (the client API).
        #[arg(long, default_value = "127.0.0.1:4500")]
        listen_grpc: SocketAddr,
        /// Admin HTTP listen address.
        #[arg(long, default_value = "127.0.0.1:4580")]
        listen_http: SocketAddr,
        /// The database to serve.
        #[arg(long, default_value = DEFAULT_DATABASE)]
        database: String,
        /// A safekeeper gRPC endpoint (repeat for each).
        #[arg(long = "safekeeper", required = true)]
        safekeepers: Vec<String>,
        /// The pageserver's gRPC endpoint.
        #[arg(long)]
        pageserver: String,
        /// Serve as a read replica: follow the WAL, answer read-only transactions, refuse
        /// commits with `read_only` naming --primary-endpoint.
        #[arg(long, conflicts_with = "standby")]
        replica: bool,
        /// Serve as a replica until the primary (--primary-endpoint) stops answering, then
        /// win the next term and take over.
        #[arg(long, requires = "primary_endpoint")]
        standby: bool,
        /// The primary's client endpoint (for replicas and standbys).
        #[arg(long)]
        primary_endpoint: Option<String>,
        /// Exit after this long without client requests (e.g. `5m`); `ferrisdb dev` starts the
        /// compute again on the next connection.
        #[arg(long)]
        suspend_after: Option<humantime::Duration>,
        /// Require this bearer token from clients (visible in `ps`: prefer --token-file).
        #[arg(long, env = "FERRISDB_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Require one of the tokens in this private file (mode 0600, one a line) from
        /// clients.
        #[arg(long, value_name = "FILE", conflicts_with = "token")]
        token_file: Option<PathBuf>,
        /// The hot tier's memory budget: past it (the pageserver has fallen behind), commits
        /// wait until the pageserver catches up. 0: no budget.
        #[arg(long, default_value_t = ferrisdb_compute::read_path::DEFAULT_HOT_BUDGET_BYTES)]
        hot_tier_budget_bytes: usize,
        /// Directory of the warm tier's disk cache (values read from the pageserver), made
        /// private (mode 0700, files 0600); default: a new private directory with an
        /// unpredictable name in the system's temporary directory, removed at exit.
        #[arg(long)]
        warm_tier_dir: Option<PathBuf>,
        /// Bytes of values the warm tier keeps in memory.
        #[arg(long, default_value_t = 128 << 20)]
        warm_tier_memory_bytes: usize,
        /// Bytes of values the warm tier keeps on disk (0: memory only).
        #[arg(long, default_value_t = 1 << 30)]
        warm_tier_disk_bytes: usize,
        #[command(flatten)]
        security: SecurityArgs,
    },
    /// Scale to zero in deployments: listen where clients connect and start the compute
    /// (the command after `--`) when a connection arrives and none is running.
    Proxy {
        /// Where clients connect. Beyond loopback the compute's command line must carry
        /// --token-file (or --token), or --insecure be given.
        #[arg(long, default_value = "127.0.0.1:4500")]
        listen: SocketAddr,
        /// Listen beyond loopback even though the compute requires no client token.
        #[arg(long)]
        insecure: bool,
        /// Where the compute started by the command serves its client API.
        #[arg(long)]
        upstream: SocketAddr,
        /// The compute's command line, e.g. `-- ferrisdb compute --listen-grpc 127.0.0.1:4520
        /// --suspend-after 5m …`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    #[command(flatten)]
    Client(cli::ClientCommand),
}

/// A new directory with an unpredictable name in the system's temporary directory, mode
/// 0700, removed when the guard drops.
fn private_temp_dir(prefix: &str) -> Result<tempfile::TempDir, ferrisdb_common::Error> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700));
    builder.tempdir().map_err(|e| {
        ferrisdb_common::Error::internal(format!(
            "cannot create a private directory in {}: {e}",
            std::env::temp_dir().display()
        ))
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = ferrisdb_server_common::serve::shutdown_signal;
    runtime.block_on(async move {
        // Set by each server command; flushed once the command returns.
        let exporter: Option<telemetry::Telemetry>;
        let result = match cli.command {
            Command::Dev(args) => {
                exporter = Some(telemetry::init(
                    "info",
                    Some(service("ferrisdb-dev", "dev")),
                ));
                dev::run(args).await
            }
            Command::Safekeeper {
                name,
                listen_grpc,
                listen_http,
                data_dir,
                peers,
                segment_size_bytes,
                max_wal_bytes,
                max_databases,
                object_store,
                s3,
                security,
            } => {
                exporter = Some(telemetry::init(
                    "info",
                    Some(service("ferrisdb-safekeeper", &name)),
                ));
                let security = match security.load(Vec::new()) {
                    Ok(s) => s,
                    Err(e) => return fail(&e),
                };
                let config = ferrisdb_wal_service::SafekeeperConfig {
                    name,
                    listen_grpc,
                    listen_http,
                    data_dir,
                    peers,
                    limits: ferrisdb_wal_service::service::Limits {
                        segment_size: segment_size_bytes,
                        max_wal_bytes,
                        max_databases,
                    },
                    object_store: object_store.map(|url| s3.config(url)),
                    security,
                };
                ferrisdb_wal_service::run(config, shutdown()).await
            }
            Command::Pageserver {
                listen_grpc,
                listen_http,
                object_store,
                s3,
                safekeepers,
                databases,
                checkpoint_interval_secs,
                cache_dir,
                cache_memory_bytes,
                cache_disk_bytes,
                pitr_interval_secs,
                image_after_deltas,
                compact_after_deltas,
                max_branches,
                security,
            } => {
                exporter = Some(telemetry::init(
                    "info",
                    Some(service("ferrisdb-pageserver", &listen_grpc.to_string())),
                ));
                let security = match security.load(Vec::new()) {
                    Ok(s) => s,
                    Err(e) => return fail(&e),
                };
                let config = ferrisdb_pageserver::PageserverConfig {
                    listen_grpc,
                    listen_http,
                    object_store: s3.config(object_store),
                    safekeepers,
                    databases,
                    checkpoint_interval: Duration::from_secs(checkpoint_interval_secs.max(1)),
                    cache: ferrisdb_pageserver::block_cache::BlockCacheConfig {
                        memory_bytes: cache_memory_bytes,
                        disk: cache_dir.map(|d| (d, cache_disk_bytes)),
                    },
                    timeline: ferrisdb_pageserver::timeline::TimelineOptions {
                        pitr_interval: Duration::from_secs(pitr_interval_secs),
                        image_after_deltas,
                        compact_after_deltas,
                        ..Default::default()
                    },
                    max_branches,
                    security,
                };
                ferrisdb_pageserver::run(config, shutdown()).await
            }
            Command::Compute {
                listen_grpc,
                listen_http,
                database,
                safekeepers,
                pageserver,
                replica,
                standby,
                primary_endpoint,
                suspend_after,
                token,
                token_file,
                hot_tier_budget_bytes,
                warm_tier_dir,
                warm_tier_memory_bytes,
                warm_tier_disk_bytes,
                security,
            } => {
                exporter = Some(telemetry::init(
                    "info",
                    Some(service("ferrisdb-compute", &listen_grpc.to_string())),
                ));
                let security = match client_tokens(token, token_file)
                    .and_then(|client| security.load(client))
                {
                    Ok(s) => s,
                    Err(e) => return fail(&e),
                };
                // Everything the compute writes is cache (the warm tier's files): this user's
                // alone from the moment each file is created, not only once chmod reaches it.
                #[cfg(unix)]
                nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
                // Cached values are user data: never in a directory others can guess or read.
                // The guard removes the directory when the compute exits.
                let (warm_dir, _warm_guard) = match warm_tier_dir {
                    Some(dir) => (dir, None),
                    None if warm_tier_disk_bytes == 0 => (PathBuf::new(), None),
                    None => match private_temp_dir("ferrisdb-warm-tier-") {
                        Ok(guard) => (guard.path().to_path_buf(), Some(guard)),
                        Err(e) => {
                            eprintln!("error: {e}");
                            return ExitCode::FAILURE;
                        }
                    },
                };
                let tiers = ferrisdb_compute::read_path::TierConfig {
                    hot_budget_bytes: hot_tier_budget_bytes,
                    warm: ferrisdb_compute::warm_tier::WarmTierConfig {
                        memory_bytes: warm_tier_memory_bytes,
                        disk: (warm_tier_disk_bytes > 0)
                            .then_some((warm_dir, warm_tier_disk_bytes)),
                    },
                };
                let role = match (replica, standby) {
                    (true, _) => ferrisdb_compute::Role::Replica,
                    (_, true) => ferrisdb_compute::Role::Standby,
                    _ => ferrisdb_compute::Role::Primary,
                };
                let config = ferrisdb_compute::ComputeConfig {
                    listen_grpc,
                    listen_http,
                    database,
                    safekeepers,
                    pageserver,
                    tiers,
                    role,
                    primary_endpoint,
                    suspend_after: suspend_after.map(Duration::from),
                    security,
                };
                ferrisdb_compute::run(config, shutdown()).await
            }
            Command::Proxy {
                listen,
                upstream,
                insecure,
                command,
            } => {
                exporter = Some(telemetry::init(
                    "info",
                    Some(service("ferrisdb-proxy", &listen.to_string())),
                ));
                proxy::run(listen, upstream, command, insecure, shutdown()).await
            }
            Command::Client(cmd) => {
                // Client commands export nothing: only logs.
                let _logs = telemetry::init("warn", None);
                return cli::run(cmd).await;
            }
        };
        if let Some(exporter) = exporter {
            exporter.shutdown().await;
        }
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        }
    })
}

/// Who a server process is in traces.
fn service<'a>(name: &'static str, instance: &'a str) -> telemetry::Service<'a> {
    telemetry::Service { name, instance }
}

fn fail(e: &ferrisdb_common::Error) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}
