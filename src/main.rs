//! The `ferrisdb` binary: parses the command line and hands off to a component's `run` or a
//! client command. `ferrisdb dev` starts a whole local cluster.

mod cli;
mod dev;
mod escape;
mod local_cluster;
mod local_credentials;
mod proxy;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cli::output::warn;

/// FerrisDB: a disaggregated transactional key-value database.
// No Debug derive: the arguments hold tokens, which must never be printed. (A `//` comment, so
// clap does not show it in `--help`.)
#[derive(Parser)]
#[command(name = "ferrisdb", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole local cluster: 3 safekeepers, a pageserver and a compute, each its own process.
    Dev(dev::DevArgs),
    /// Run one safekeeper (an acceptor of the WAL quorum).
    Safekeeper(ferrisdb_wal_service::Args),
    /// Run a pageserver.
    Pageserver(ferrisdb_pageserver::Args),
    /// Run a compute node (the primary for one database).
    Compute(ferrisdb_compute::Args),
    /// Scale to zero in deployments: listen where clients connect and start the compute
    /// (the command after `--`) when a connection arrives and none is running.
    Proxy(proxy::ProxyArgs),
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
    if matches!(
        cli.command,
        Command::Safekeeper(_) | Command::Pageserver(_) | Command::Compute(_)
    ) && let Err(e) = dev::follow_parent()
    {
        return fail(&e);
    }
    // Each server sizes its own runtime (`--worker-threads`); the rest take one per core.
    let runtime = match &cli.command {
        Command::Safekeeper(a) => a.runtime.build(),
        Command::Pageserver(a) => a.runtime.build(),
        Command::Compute(a) => a.runtime.build(),
        _ => tokio::runtime::Runtime::new(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            warn(format_args!("error: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let shutdown = ferrisdb_server_common::serve::shutdown_signal;
    let code = runtime.block_on(async move {
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
            Command::Safekeeper(args) => {
                exporter = Some(telemetry::init(
                    "info",
                    Some(service("ferrisdb-safekeeper", &args.name)),
                ));
                match args.into_config() {
                    Ok(config) => ferrisdb_wal_service::run(config, shutdown()).await,
                    Err(e) => return fail(&e),
                }
            }
            Command::Pageserver(args) => {
                exporter = Some(telemetry::init(
                    "info",
                    Some(service(
                        "ferrisdb-pageserver",
                        &args.listen_grpc.to_string(),
                    )),
                ));
                match args.into_config() {
                    Ok(config) => ferrisdb_pageserver::run(config, shutdown()).await,
                    Err(e) => return fail(&e),
                }
            }
            Command::Compute(args) => {
                exporter = Some(telemetry::init(
                    "info",
                    Some(service("ferrisdb-compute", &args.listen_grpc.to_string())),
                ));
                // Everything the compute writes is cache (the warm tier's files): this user's
                // alone from the moment each file is created, not only once chmod reaches it.
                #[cfg(unix)]
                nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
                // Cached values are user data: never in a directory others can guess or read.
                // The guard removes the directory when the compute exits.
                let (warm_dir, _warm_guard) = match &args.warm_tier_dir {
                    Some(dir) => (dir.clone(), None),
                    None if args.warm_tier_disk_bytes == 0 => (PathBuf::new(), None),
                    None => match private_temp_dir("ferrisdb-warm-tier-") {
                        Ok(guard) => (guard.path().to_path_buf(), Some(guard)),
                        Err(e) => {
                            warn(format_args!("error: {e}"));
                            return ExitCode::FAILURE;
                        }
                    },
                };
                match args.into_config(warm_dir) {
                    Ok(config) => ferrisdb_compute::run(config, shutdown()).await,
                    Err(e) => return fail(&e),
                }
            }
            Command::Proxy(args) => {
                exporter = Some(telemetry::init(
                    "info",
                    Some(service("ferrisdb-proxy", &args.listen.to_string())),
                ));
                proxy::run(args, shutdown()).await
            }
            Command::Client(cmd) => {
                // Client commands export nothing: only logs.
                let _logs = telemetry::init("warn", None);
                return cli::run(cmd).await;
            }
        };
        if result.is_ok() {
            tracing::info!("stopped");
        }
        if let Some(exporter) = exporter {
            exporter.shutdown().await;
        }
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        }
    });
    // Dropping a runtime waits for every blocking task without limit. The command has
    // returned, so whatever still runs is abandoned work (never an acknowledged write: those
    // are fsynced before they are acknowledged), and a process that has said it is exiting
    // must exit, so a supervisor can start the next one.
    runtime.shutdown_timeout(TEARDOWN_GRACE);
    code
}

/// How long a finished command waits for leftover background work before the process exits.
const TEARDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Who a server process is in traces.
fn service<'a>(name: &'static str, instance: &'a str) -> telemetry::Service<'a> {
    telemetry::Service { name, instance }
}

fn fail(e: &ferrisdb_common::Error) -> ExitCode {
    warn(format_args!("error: {e}"));
    ExitCode::FAILURE
}
