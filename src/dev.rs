//! `ferrisdb dev`: a whole local cluster, each component its own child process.
//!
//! Every component is started from this same binary with an explicit command line, which is
//! recorded in `<data-dir>/cluster.json` with its pid and endpoints, so a tool (or a person)
//! can kill one with SIGKILL and start it again exactly the same way. Components that die are
//! reported, never silently restarted: hiding a crash would hide the bugs tests look for.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use ferrisdb_common::{Error, Result};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;

/// Options of `ferrisdb dev`.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Where every component keeps its files.
    #[arg(long, default_value = ".ferrisdb")]
    data_dir: PathBuf,
    /// Object storage URL; default: file://<data-dir>/objects.
    #[arg(long)]
    object_store: Option<String>,
    #[command(flatten)]
    s3: ferrisdb_server_common::args::S3Args,
    /// Ports: compute gRPC at BASE, safekeepers at BASE+1..3, pageserver at BASE+10; each admin
    /// HTTP port is its gRPC port + 80.
    #[arg(long, default_value_t = 4500)]
    base_port: u16,
    /// Seconds between the pageserver's automatic checkpoints.
    #[arg(long, default_value_t = ferrisdb_pageserver::args::DEFAULT_CHECKPOINT_INTERVAL_SECS)]
    checkpoint_interval_secs: u64,
    /// The pageserver checkpoints sooner once its in-memory layer holds this many bytes.
    #[arg(long, default_value_t = ferrisdb_pageserver::args::DEFAULT_CHECKPOINT_BYTES)]
    checkpoint_bytes: usize,
    /// Safekeepers start new WAL segments at this size.
    #[arg(long, default_value_t = ferrisdb_wal_service::args::DEFAULT_SEGMENT_SIZE_BYTES)]
    segment_size_bytes: u64,
    /// Safekeepers' WAL disk budget per database.
    #[arg(long, default_value_t = ferrisdb_wal_service::args::DEFAULT_MAX_WAL_BYTES)]
    max_wal_bytes: u64,
    /// The pageserver merges L0 delta layers into L1 layers once this many exist.
    #[arg(long, default_value_t = ferrisdb_pageserver::args::DEFAULT_COMPACT_AFTER_DELTAS)]
    compact_after_deltas: usize,
    /// Reads may go back this many seconds (the retention window): GC drops what only older
    /// reads needed.
    #[arg(long, default_value_t = ferrisdb_pageserver::args::DEFAULT_PITR_INTERVAL_SECS)]
    pitr_interval_secs: u64,
    /// The compute's hot-tier memory budget: past it, commits wait for the pageserver to
    /// catch up (0: no budget).
    #[arg(long, default_value_t = ferrisdb_compute::read_path::DEFAULT_HOT_BUDGET_BYTES)]
    hot_tier_budget_bytes: usize,
    /// Scale to zero: the compute exits after this long without client requests (e.g.
    /// `30s`), and a proxy on the compute's port starts it again on the next connection
    /// (the compute itself then listens on BASE+20).
    #[arg(long)]
    suspend_after: Option<humantime::Duration>,
}

#[derive(Debug, Clone, Serialize)]
struct Endpoints {
    grpc: String,
    http: String,
}

#[derive(Debug, Clone, Serialize)]
struct Component {
    name: String,
    kind: &'static str,
    pid: u32,
    argv: Vec<String>,
    endpoints: Endpoints,
    log: PathBuf,
}

#[derive(Debug, Serialize)]
struct ClusterFile<'a> {
    data_dir: &'a Path,
    object_store: &'a str,
    components: &'a [Component],
}

/// One component `dev` starts: its name, and the arguments of its subcommand.
struct Plan {
    name: String,
    spec: Spec,
    grpc: SocketAddr,
    http: SocketAddr,
}

/// A component's subcommand and arguments, as the `ferrisdb` binary parses them.
#[derive(Debug, Clone, PartialEq)]
enum Spec {
    Safekeeper(ferrisdb_wal_service::Args),
    Pageserver(ferrisdb_pageserver::Args),
    Compute(ferrisdb_compute::Args),
}

impl Spec {
    /// The component's kind in `cluster.json`, which is also its subcommand's name.
    fn kind(&self) -> &'static str {
        match self {
            Spec::Safekeeper(_) => "safekeeper",
            Spec::Pageserver(_) => "pageserver",
            Spec::Compute(_) => "compute",
        }
    }

    /// The command line after the program: the subcommand, then its arguments written by
    /// [`ferrisdb_server_common::args::to_argv`] from the struct that defines them.
    fn argv(&self) -> Result<Vec<String>> {
        let mut argv = vec![self.kind().to_string()];
        argv.extend(match self {
            Spec::Safekeeper(a) => ferrisdb_server_common::args::to_argv(a)?,
            Spec::Pageserver(a) => ferrisdb_server_common::args::to_argv(a)?,
            Spec::Compute(a) => ferrisdb_server_common::args::to_argv(a)?,
        });
        Ok(argv)
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn url(a: SocketAddr) -> String {
    format!("http://{a}")
}

/// The file under the data dir holding the cluster credential `dev` generates.
pub const CLUSTER_TOKEN_FILE: &str = "cluster.token";

/// The dev cluster's credential file: generated (32 random bytes, hex, mode 0600) on the
/// first start, reused after, so components restarted from `cluster.json` keep working. A
/// file someone else may read is refused, like every component refuses it.
fn cluster_token(data_dir: &Path) -> Result<PathBuf> {
    let path = data_dir.join(CLUSTER_TOKEN_FILE);
    if !path.exists() {
        // Written aside and renamed, so a crash never leaves an empty credential behind; the
        // file is created 0600, never readable by others even for a moment.
        let token = ferrisdb_server_common::auth::generate_cluster_token()?;
        crate::local_credentials::write_private(&path, format!("{token}\n").as_bytes())?;
    }
    ferrisdb_server_common::auth::read_cluster_token_file(&path)?;
    Ok(path)
}

/// Every component's name, arguments and ports, from dev's own arguments.
fn plan(
    args: &DevArgs,
    data_dir: &Path,
    object_store: &str,
    token_file: &Path,
) -> Result<Vec<Plan>> {
    let base = args.base_port;
    let port = |offset: u16| {
        base.checked_add(offset).ok_or_else(|| {
            Error::invalid(format!(
                "--base-port {base} leaves no room for the cluster's ports"
            ))
        })
    };
    let mut plans = Vec::new();
    let safekeepers: Vec<String> = (1..=3u16)
        .map(|i| Ok(url(addr(port(i)?))))
        .collect::<Result<_>>()?;
    // Every component proves itself to the others with the credential dev generated.
    let security = ferrisdb_server_common::args::SecurityArgs {
        cluster_token_file: Some(token_file.to_path_buf()),
        ..Default::default()
    };
    // The safekeepers read the pageserver's manifests to verify its durable claims before
    // deleting WAL. A memory:// store lives inside one process and cannot be shared, so they
    // get none and keep all their WAL (docs/wal-protocol.md).
    let (sk_store, sk_s3) = if object_store.starts_with("memory:") {
        (None, ferrisdb_server_common::args::S3Args::default())
    } else {
        (Some(object_store.to_string()), args.s3.clone())
    };
    for i in 1..=3u16 {
        let name = format!("safekeeper-{i}");
        let (grpc, http) = (addr(port(i)?), addr(port(80 + i)?));
        let sk = ferrisdb_wal_service::Args {
            name: name.clone(),
            listen_grpc: grpc,
            listen_http: http,
            peers: safekeepers
                .iter()
                .filter(|p| **p != url(grpc))
                .cloned()
                .collect(),
            segment_size_bytes: args.segment_size_bytes,
            max_wal_bytes: args.max_wal_bytes,
            object_store: sk_store.clone(),
            s3: sk_s3.clone(),
            security: security.clone(),
            // One worker each: the reason is on `RuntimeArgs::worker_threads`.
            runtime: ferrisdb_server_common::args::RuntimeArgs {
                worker_threads: Some(1),
            },
            ..ferrisdb_wal_service::Args::new(data_dir.join(&name))
        };
        plans.push(Plan {
            name,
            spec: Spec::Safekeeper(sk),
            grpc,
            http,
        });
    }
    let (ps_grpc, ps_http) = (addr(port(10)?), addr(port(90)?));
    let pageserver = ferrisdb_pageserver::Args {
        listen_grpc: ps_grpc,
        listen_http: ps_http,
        s3: args.s3.clone(),
        checkpoint_interval_secs: args.checkpoint_interval_secs,
        checkpoint_bytes: args.checkpoint_bytes,
        cache_dir: Some(data_dir.join("pageserver-cache")),
        cache_disk_bytes: DEV_CACHE_DISK_BYTES,
        compact_after_deltas: args.compact_after_deltas,
        pitr_interval_secs: args.pitr_interval_secs,
        security: security.clone(),
        ..ferrisdb_pageserver::Args::new(object_store.to_string(), safekeepers.clone())
    };
    plans.push(Plan {
        name: "pageserver".into(),
        spec: Spec::Pageserver(pageserver),
        grpc: ps_grpc,
        http: ps_http,
    });
    // With scale to zero the wake proxy takes the client port and the compute sits behind it.
    let c_port = if args.suspend_after.is_some() { 20 } else { 0 };
    let (c_grpc, c_http) = (addr(port(c_port)?), addr(port(80)?));
    let compute = ferrisdb_compute::Args {
        listen_grpc: c_grpc,
        listen_http: c_http,
        hot_tier_budget_bytes: args.hot_tier_budget_bytes,
        warm_tier_dir: Some(data_dir.join("compute-cache")),
        warm_tier_disk_bytes: DEV_CACHE_DISK_BYTES,
        suspend_after: args.suspend_after,
        security,
        ..ferrisdb_compute::Args::new(safekeepers, url(ps_grpc))
    };
    plans.push(Plan {
        name: "compute".into(),
        spec: Spec::Compute(compute),
        grpc: c_grpc,
        http: c_http,
    });
    Ok(plans)
}

/// The disk a dev cluster's pageserver block cache and compute warm tier may each use: a
/// laptop's cluster should not take a gigabyte apiece.
const DEV_CACHE_DISK_BYTES: usize = 256 << 20;

/// Starts the cluster and supervises it until Ctrl-C or SIGTERM.
pub async fn run(args: DevArgs) -> Result<()> {
    // One dev per data directory, decided before anything in it is written: a second dev on
    // the same directory rewrote the first one's cluster.json and credential pointers before
    // its components failed on their own locks. Created private: it will hold every value.
    let _lock = ferrisdb_server_common::dir_lock::DirLock::acquire(&args.data_dir, "ferrisdb dev")?;
    let data_dir = args.data_dir.canonicalize()?;
    let object_store = match &args.object_store {
        Some(u) => u.clone(),
        None => {
            create_private_dir(&data_dir.join("objects"))?;
            format!("file://{}", data_dir.join("objects").display())
        }
    };
    // Refuse early and clearly when a port is taken (often: another dev cluster).
    let token_file = cluster_token(&data_dir)?;
    let plans = plan(&args, &data_dir, &object_store, &token_file)?;
    let proxy_addr = addr(args.base_port);
    let mut proxy = match args.suspend_after {
        Some(_) => Some(
            tokio::net::TcpListener::bind(proxy_addr)
                .await
                .map_err(|e| {
                    Error::unavailable(format!(
                        "port {proxy_addr} for the wake proxy is not free ({e}); try --base-port"
                    ))
                })?,
        ),
        None => None,
    };
    for p in &plans {
        for a in [p.grpc, p.http] {
            tokio::net::TcpListener::bind(a).await.map_err(|e| {
                Error::unavailable(format!(
                    "port {a} for {} is not free ({e}); is another cluster running? try --base-port",
                    p.name
                ))
            })?;
        }
    }
    // `ferrisdb admin` run by this user from any directory finds the credential.
    let admin_ports: Vec<u16> = plans.iter().map(|p| p.http.port()).collect();
    crate::local_credentials::register(&token_file, &admin_ports);
    let exe = std::env::current_exe()?;
    let logs = data_dir.join("logs");
    create_private_dir(&logs)?;
    let mut components = Vec::new();
    let mut children = Vec::new();
    let mut woken = None;
    for p in plans {
        let log = logs.join(format!("{}.log", p.name));
        let kind = p.spec.kind();
        let args = p.spec.argv()?;
        if matches!(p.spec, Spec::Compute(_))
            && let Some(listener) = proxy.take()
        {
            // Scale to zero: the waker owns the compute, and clients reach it through the
            // proxy, so the cluster file names the proxy's port.
            let mut argv = vec![exe.display().to_string()];
            argv.extend(args);
            components.push(Component {
                name: p.name,
                kind,
                pid: 0,
                argv: argv.clone(),
                endpoints: Endpoints {
                    grpc: url(proxy_addr),
                    http: url(p.http),
                },
                log: log.clone(),
            });
            woken = Some((listener, p.grpc, argv, log, components.len() - 1));
            continue;
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = tokio::process::Command::new(&exe)
            .args(&args)
            .env(PARENT_ENV, std::process::id().to_string())
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| Error::internal(format!("starting {}: {e}", p.name)))?;
        let pid = child
            .id()
            .ok_or_else(|| Error::internal(format!("{} exited at once", p.name)))?;
        let mut argv = vec![exe.display().to_string()];
        argv.extend(args);
        components.push(Component {
            name: p.name,
            kind,
            pid,
            argv,
            endpoints: Endpoints {
                grpc: url(p.grpc),
                http: url(p.http),
            },
            log,
        });
        children.push(child);
    }
    let components = Arc::new(std::sync::Mutex::new(components));
    let waker = match woken {
        Some((listener, upstream, argv, log, index)) => {
            let (file, dir, store) = (components.clone(), data_dir.clone(), object_store.clone());
            let on_start: crate::proxy::OnStart = Box::new(move |pid| {
                if let Ok(mut c) = file.lock() {
                    c[index].pid = pid;
                    if let Err(e) = write_cluster_file(&dir, &store, &c) {
                        tracing::warn!(error = %e, "cannot update cluster.json");
                    }
                }
            });
            let waker = Arc::new(crate::proxy::Waker::new(argv, Some(log), on_start)?);
            waker.ensure_running().await?;
            tokio::spawn(crate::proxy::serve(listener, upstream, waker.clone()));
            Some(waker)
        }
        None => None,
    };
    let components = components
        .lock()
        .map_err(|_| Error::internal("component table poisoned"))?
        .clone();
    write_cluster_file(&data_dir, &object_store, &components)?;

    println!("FerrisDB dev cluster (data in {})", data_dir.display());
    for c in &components {
        println!(
            "  {:<13} gRPC {:<24} admin {:<24} pid {}",
            c.name, c.endpoints.grpc, c.endpoints.http, c.pid
        );
    }
    println!("  object store  {object_store}");
    println!(
        "  cluster file  {}",
        data_dir.join("cluster.json").display()
    );
    println!("  logs          {}", logs.display());
    // Commands run here find this cluster by itself only when its data dir is ./.ferrisdb;
    // elsewhere they need the endpoint (the credential is then found by the port).
    let found_here = std::path::Path::new(".ferrisdb")
        .canonicalize()
        .ok()
        .zip(data_dir.canonicalize().ok())
        .is_some_and(|(here, ours)| here == ours);
    let client_hint = match components.iter().find(|c| c.kind == "compute") {
        Some(c) if !found_here => format!(" --endpoint {}", c.endpoints.grpc),
        _ => String::new(),
    };
    let admin_hint = match components.iter().find(|c| c.kind == "compute") {
        Some(c) if !found_here => format!(
            "`ferrisdb admin … --endpoint {}` finds it by the port",
            c.endpoints.http
        ),
        _ => "`ferrisdb admin` finds it in ./.ferrisdb".to_string(),
    };
    println!(
        "  credential    {} (internal and admin APIs; {admin_hint})",
        token_file.display()
    );

    let mut waits: FuturesUnordered<_> = children
        .into_iter()
        .enumerate()
        .map(|(i, mut child)| async move { (i, child.wait().await) })
        .collect();
    let admin = components
        .iter()
        .find(|c| c.kind == "compute")
        .map(|c| c.endpoints.http.clone());
    let token = ferrisdb_server_common::auth::read_cluster_token_file(&token_file)?
        .into_iter()
        .next()
        .unwrap_or_default();
    let ready = wait_ready(admin, token);
    tokio::pin!(ready);
    let mut announced = false;
    let shutdown = ferrisdb_server_common::serve::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = &mut ready, if !announced => {
                announced = true;
                println!("ready: try `ferrisdb set hello world{client_hint}` and `ferrisdb get hello{client_hint}`");
            }
            Some((i, status)) = waits.next() => {
                let c = &components[i];
                let how = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                tracing::error!(
                    "{} (pid {}) exited: {how}; dev does not restart it. Start it again with: {}",
                    c.name, c.pid, c.argv.join(" ")
                );
                if waits.is_empty() {
                    // Nothing left to supervise: say so and stop, rather than stay up
                    // looking like a running cluster.
                    crate::local_credentials::unregister(&token_file, &admin_ports);
                    return Err(Error::unavailable(format!(
                        "every component of the cluster exited; logs in {}",
                        logs.display()
                    )));
                }
            }
        }
    }

    println!("stopping the cluster");
    let woken_pid = match &waker {
        Some(w) => w.pid().await,
        None => None,
    };
    let pids: Vec<u32> = components
        .iter()
        .map(|c| c.pid)
        .filter(|p| *p != 0)
        .chain(woken_pid)
        .collect();
    for pid in &pids {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
    }
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while waits.next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        for pid in &pids {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
    }
    // Nothing listens on these ports for this credential any more.
    crate::local_credentials::unregister(&token_file, &admin_ports);
    Ok(())
}

/// Creates `dir` (and its parents) readable by its owner only, as the data directory's
/// other contents are: logs and the object store hold keys and values.
fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    // Made private too when an older dev left it readable by others.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn write_cluster_file(data_dir: &Path, object_store: &str, components: &[Component]) -> Result<()> {
    let file = ClusterFile {
        data_dir,
        object_store,
        components,
    };
    let body = serde_json::to_vec_pretty(&file)
        .map_err(|e| Error::internal(format!("cluster.json: {e}")))?;
    crate::local_credentials::write_private(&data_dir.join("cluster.json"), &body)?;
    Ok(())
}

/// Set on the processes `dev` starts: its pid. Such a process stops (SIGTERM, a clean
/// shutdown) when `dev` dies, however it dies: left running after a SIGKILL of `dev`, they
/// held ports and data directories a second `dev` then worked around.
pub const PARENT_ENV: &str = "FERRISDB_DEV_PARENT";

/// For a process `dev` started ([`PARENT_ENV`] set): asks the kernel for SIGTERM when the
/// parent dies, then checks it has not died already (the request only covers a death after
/// it). Nothing for a process started otherwise.
pub fn follow_parent() -> Result<()> {
    let Ok(parent) = std::env::var(PARENT_ENV) else {
        return Ok(());
    };
    let parent: i32 = parent
        .parse()
        .map_err(|_| Error::invalid(format!("{PARENT_ENV}={parent:?} is not a pid")))?;
    #[cfg(target_os = "linux")]
    {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
            .map_err(|e| Error::internal(format!("asking to follow the parent: {e}")))?;
        if nix::unistd::getppid().as_raw() != parent {
            return Err(Error::unavailable(format!(
                "ferrisdb dev (pid {parent}) that started this process has exited"
            )));
        }
    }
    Ok(())
}

/// Resolves once the compute reports itself primary.
async fn wait_ready(admin: Option<String>, token: String) {
    let Some(admin) = admin else {
        return std::future::pending().await;
    };
    let client = reqwest::Client::new();
    loop {
        let status = client
            .get(format!("{admin}/v1/status"))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        if let Ok(r) = status
            && let Ok(body) = r.json::<serde_json::Value>().await
            && !body["primary"].is_null()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Each component's recorded command line is read back by the real `ferrisdb` parser
    /// into exactly the arguments dev planned: what a restart from `cluster.json` runs.
    #[test]
    fn every_planned_command_line_parses_back_to_its_plan() {
        for extra in [
            &[][..],
            &["--suspend-after", "30s", "--object-store", "memory://"][..],
            &[
                "--object-store",
                "s3://b/p",
                "--s3-endpoint",
                "http://127.0.0.1:9",
            ][..],
        ] {
            let mut argv = vec!["ferrisdb", "dev", "--base-port", "7000"];
            argv.extend(extra);
            let crate::Command::Dev(dev) = crate::Cli::try_parse_from(&argv).unwrap().command
            else {
                panic!("not dev");
            };
            let store = dev
                .object_store
                .clone()
                .unwrap_or("file:///d/objects".into());
            let plans = plan(&dev, Path::new("/d"), &store, Path::new("/d/cluster.token")).unwrap();
            assert_eq!(plans.len(), 5);
            for p in &plans {
                let mut line = vec!["ferrisdb".to_string()];
                line.extend(p.spec.argv().unwrap());
                let parsed = match crate::Cli::try_parse_from(&line).unwrap().command {
                    crate::Command::Safekeeper(a) => Spec::Safekeeper(a),
                    crate::Command::Pageserver(a) => Spec::Pageserver(a),
                    crate::Command::Compute(a) => Spec::Compute(a),
                    _ => panic!("{line:?} is no server"),
                };
                assert!(parsed == p.spec, "{line:?}");
                assert_eq!(line[1], p.spec.kind());
            }
            // The safekeepers verify durable claims against the bucket unless it is memory.
            let Spec::Safekeeper(sk) = &plans[0].spec else {
                panic!("safekeepers come first");
            };
            assert_eq!(sk.object_store.is_some(), !store.starts_with("memory:"));
            assert_eq!(sk.peers.len(), 2);
        }
    }
}
