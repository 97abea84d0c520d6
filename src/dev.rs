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
    s3: crate::S3Args,
    /// Ports: compute gRPC at BASE, safekeepers at BASE+1..3, pageserver at BASE+10; each admin
    /// HTTP port is its gRPC port + 80.
    #[arg(long, default_value_t = 4500)]
    base_port: u16,
    /// Seconds between the pageserver's automatic checkpoints.
    #[arg(long, default_value_t = 30)]
    checkpoint_interval_secs: u64,
    /// Safekeepers start new WAL segments at this size.
    #[arg(long, default_value_t = 16 << 20)]
    segment_size_bytes: u64,
    /// Safekeepers' WAL disk budget per database.
    #[arg(long, default_value_t = 8 << 30)]
    max_wal_bytes: u64,
    /// The pageserver merges L0 delta layers into L1 layers once this many exist.
    #[arg(long, default_value_t = 8)]
    compact_after_deltas: usize,
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

struct Plan {
    name: String,
    kind: &'static str,
    args: Vec<String>,
    grpc: SocketAddr,
    http: SocketAddr,
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

fn plan(
    args_in: &DevArgs,
    data_dir: &Path,
    object_store: &str,
    token_file: &Path,
) -> Result<Vec<Plan>> {
    let args = args_in;
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
    for i in 1..=3u16 {
        let name = format!("safekeeper-{i}");
        let (grpc, http) = (addr(port(i)?), addr(port(80 + i)?));
        let dir = data_dir.join(&name);
        let mut args: Vec<String> = vec![
            "safekeeper".into(),
            "--name".into(),
            name.clone(),
            "--listen-grpc".into(),
            grpc.to_string(),
            "--listen-http".into(),
            http.to_string(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--cluster-token-file".into(),
            token_file.display().to_string(),
        ];
        args.extend([
            "--segment-size-bytes".to_string(),
            args_in.segment_size_bytes.to_string(),
            "--max-wal-bytes".to_string(),
            args_in.max_wal_bytes.to_string(),
        ]);
        for peer in safekeepers.iter().filter(|p| **p != url(grpc)) {
            args.extend(["--peer".to_string(), peer.clone()]);
        }
        // The safekeepers read the pageserver's manifests to verify its durable claims before
        // deleting WAL. A memory:// store lives inside one process and cannot be shared, so
        // they get none and trim only up to their commit position (docs/wal-protocol.md).
        if !object_store.starts_with("memory:") {
            args.extend(["--object-store".to_string(), object_store.to_string()]);
            if let Some(e) = &args_in.s3.s3_endpoint {
                args.extend(["--s3-endpoint".to_string(), e.clone()]);
            }
            if let Some(r) = &args_in.s3.s3_region {
                args.extend(["--s3-region".to_string(), r.clone()]);
            }
        }
        plans.push(Plan {
            args,
            name,
            kind: "safekeeper",
            grpc,
            http,
        });
    }
    let (ps_grpc, ps_http) = (addr(port(10)?), addr(port(90)?));
    let mut ps_args = vec![
        "pageserver".to_string(),
        "--listen-grpc".into(),
        ps_grpc.to_string(),
        "--listen-http".into(),
        ps_http.to_string(),
        "--object-store".into(),
        object_store.to_string(),
        "--checkpoint-interval-secs".into(),
        args.checkpoint_interval_secs.to_string(),
        "--cache-dir".into(),
        data_dir.join("pageserver-cache").display().to_string(),
        "--cache-disk-bytes".into(),
        (256u64 << 20).to_string(),
        "--compact-after-deltas".into(),
        args.compact_after_deltas.to_string(),
        "--cluster-token-file".into(),
        token_file.display().to_string(),
    ];
    if let Some(e) = &args.s3.s3_endpoint {
        ps_args.extend(["--s3-endpoint".to_string(), e.clone()]);
    }
    if let Some(r) = &args.s3.s3_region {
        ps_args.extend(["--s3-region".to_string(), r.clone()]);
    }
    for sk in &safekeepers {
        ps_args.extend(["--safekeeper".to_string(), sk.clone()]);
    }
    plans.push(Plan {
        name: "pageserver".into(),
        kind: "pageserver",
        args: ps_args,
        grpc: ps_grpc,
        http: ps_http,
    });
    // With scale to zero the wake proxy takes the client port and the compute sits behind it.
    let c_port = if args.suspend_after.is_some() { 20 } else { 0 };
    let (c_grpc, c_http) = (addr(port(c_port)?), addr(port(80)?));
    let mut c_args = vec![
        "compute".to_string(),
        "--listen-grpc".into(),
        c_grpc.to_string(),
        "--listen-http".into(),
        c_http.to_string(),
        "--pageserver".into(),
        url(ps_grpc),
        "--hot-tier-budget-bytes".into(),
        args.hot_tier_budget_bytes.to_string(),
        "--warm-tier-dir".into(),
        data_dir.join("compute-cache").display().to_string(),
        "--warm-tier-disk-bytes".into(),
        (256u64 << 20).to_string(),
        "--cluster-token-file".into(),
        token_file.display().to_string(),
    ];
    for sk in &safekeepers {
        c_args.extend(["--safekeeper".to_string(), sk.clone()]);
    }
    if let Some(d) = &args.suspend_after {
        c_args.extend(["--suspend-after".to_string(), d.to_string()]);
    }
    plans.push(Plan {
        name: "compute".into(),
        kind: "compute",
        args: c_args,
        grpc: c_grpc,
        http: c_http,
    });
    Ok(plans)
}

/// Starts the cluster and supervises it until Ctrl-C or SIGTERM.
pub async fn run(args: DevArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)?;
    let data_dir = args.data_dir.canonicalize()?;
    let object_store = match &args.object_store {
        Some(u) => u.clone(),
        None => format!("file://{}", data_dir.join("objects").display()),
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
    std::fs::create_dir_all(&logs)?;
    let mut components = Vec::new();
    let mut children = Vec::new();
    let mut woken = None;
    for p in plans {
        let log = logs.join(format!("{}.log", p.name));
        if p.kind == "compute"
            && let Some(listener) = proxy.take()
        {
            // Scale to zero: the waker owns the compute, and clients reach it through the
            // proxy, so the cluster file names the proxy's port.
            let mut argv = vec![exe.display().to_string()];
            argv.extend(p.args);
            components.push(Component {
                name: p.name,
                kind: p.kind,
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
            .args(&p.args)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| Error::internal(format!("starting {}: {e}", p.name)))?;
        let pid = child
            .id()
            .ok_or_else(|| Error::internal(format!("{} exited at once", p.name)))?;
        let mut argv = vec![exe.display().to_string()];
        argv.extend(p.args);
        components.push(Component {
            name: p.name,
            kind: p.kind,
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
    println!(
        "  credential    {} (internal and admin APIs; `ferrisdb admin` finds it in ./.ferrisdb)",
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
                println!("ready: try `ferrisdb set hello world` and `ferrisdb get hello`");
            }
            Some((i, status)) = waits.next() => {
                let c = &components[i];
                let how = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                tracing::error!(
                    "{} (pid {}) exited: {how}; dev does not restart it. Start it again with: {}",
                    c.name, c.pid, c.argv.join(" ")
                );
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
    let tmp = data_dir.join("cluster.json.tmp");
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, data_dir.join("cluster.json"))?;
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
