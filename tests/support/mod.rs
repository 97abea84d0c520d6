//! Process-level test harness: runs the real `ferrisdb` binary as a user would, each cluster
//! in its own process group so a test can SIGKILL the whole tree, or one component by the pid
//! `cluster.json` gives, and start it again from the argv recorded there.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

use ferrisdb_client::{Database, RetryOptions};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ferrisdb");

mod root;
// Not every test that includes this module reads the repository's files.
#[allow(unused_imports)]
pub use root::root;

/// Port offsets a dev cluster uses from its base port.
const OFFSETS: [u16; 10] = [0, 1, 2, 3, 10, 80, 81, 82, 83, 90];

static NEXT_BASE: AtomicU16 = AtomicU16::new(0);
/// Each dev cluster's base port and data dir, so helpers given only an admin URL can send
/// that cluster's credential.
static CLUSTERS: Mutex<Vec<(u16, PathBuf)>> = Mutex::new(Vec::new());

/// The credential `ferrisdb dev` generated for the cluster whose ports include the one in
/// `url` (`http://127.0.0.1:PORT`), if it is one of this test's dev clusters.
pub fn admin_token(url: &str) -> Option<String> {
    let port: u16 = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()?
        .split('/')
        .next()?
        .parse()
        .ok()?;
    let clusters = CLUSTERS.lock().unwrap();
    let (_, dir) = clusters
        .iter()
        .rev()
        .find(|(base, _)| (*base..base.saturating_add(100)).contains(&port))?;
    let text = std::fs::read_to_string(dir.join("cluster.token")).ok()?;
    text.lines().next().map(|l| l.trim().to_string())
}

/// A gRPC channel to `url` (a safekeeper or pageserver of this test's dev cluster) carrying
/// the cluster credential, as an internal client sends it.
pub fn internal_channel(
    url: &str,
) -> tonic::service::interceptor::InterceptedService<
    tonic::transport::Channel,
    impl tonic::service::Interceptor + Clone,
> {
    let token = admin_token(url).expect("a dev cluster's credential for this URL");
    credential_channel(url, Some(token))
}

/// A gRPC channel to `url` carrying `token` (if any) as the cluster credential.
pub fn credential_channel(
    url: &str,
    token: Option<String>,
) -> tonic::service::interceptor::InterceptedService<
    tonic::transport::Channel,
    impl tonic::service::Interceptor + Clone,
> {
    let channel = ferrisdb_common::net::channel(url).unwrap();
    let value: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> =
        token.map(|t| t.parse().unwrap());
    tonic::service::interceptor::InterceptedService::new(
        channel,
        move |mut req: tonic::Request<()>| {
            if let Some(v) = &value {
                req.metadata_mut()
                    .insert(ferrisdb_common::net::CLUSTER_TOKEN_HEADER, v.clone());
            }
            Ok(req)
        },
    )
}

/// A GET of `url` on an admin API, with the cluster's credential when known.
pub async fn admin_get(url: &str) -> reqwest::Result<reqwest::Response> {
    let mut r = reqwest::Client::new().get(url);
    if let Some(t) = admin_token(url) {
        r = r.bearer_auth(t);
    }
    r.send().await
}
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A base port whose whole block of cluster ports is free right now.
pub fn free_base_port() -> u16 {
    // Blocks lie below the kernel's ephemeral range: a client connecting to a port nobody
    // listens on yet can be given that very port as its source and connect to itself (TCP
    // simultaneous open), holding it so the server cannot bind it and the cluster never comes
    // up. loadtest/src/cluster.rs draws its ports the same way, for the same reason.
    const LOW: u16 = 20_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let high = if ephemeral >= LOW + 3_000 {
        ephemeral
    } else {
        60_000
    };
    let blocks = (high - LOW) / 100 - 1;
    if NEXT_BASE.load(Ordering::SeqCst) == 0 {
        // Spread test binaries (separate processes) over the range by pid.
        let start = 1 + (std::process::id() % u32::from(blocks)) as u16;
        let _ = NEXT_BASE.compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst);
    }
    for _ in 0..u32::from(blocks) * 4 {
        let n = NEXT_BASE.fetch_add(1, Ordering::SeqCst);
        let base = LOW + (n % blocks) * 100;
        let mut handed = HANDED_OUT.lock().unwrap();
        let handed = handed.get_or_insert_with(HashSet::new);
        if handed.contains(&base) {
            continue;
        }
        if OFFSETS
            .iter()
            .all(|o| TcpListener::bind(("127.0.0.1", base + o)).is_ok())
        {
            handed.insert(base);
            return base;
        }
    }
    panic!("no free block of ports between {LOW} and {high}");
}

/// One component as `cluster.json` records it.
#[derive(Debug, Clone)]
pub struct ComponentInfo {
    pub name: String,
    pub kind: String,
    pub pid: i32,
    pub argv: Vec<String>,
    pub grpc: String,
    pub http: String,
}

impl ComponentInfo {
    /// The recorded command line read back into the compute's arguments, through the struct
    /// that defines its flags (a test changes fields, never flags by name).
    pub fn compute_args(&self) -> ferrisdb_compute::Args {
        assert_eq!(self.argv[1], "compute", "{} is no compute", self.name);
        ferrisdb_server_common::args::from_argv(&self.argv[2..]).unwrap()
    }

    /// The recorded command line read back into the pageserver's arguments.
    pub fn pageserver_args(&self) -> ferrisdb_pageserver::Args {
        assert_eq!(self.argv[1], "pageserver", "{} is no pageserver", self.name);
        ferrisdb_server_common::args::from_argv(&self.argv[2..]).unwrap()
    }
}

/// The command line running the binary under test as a compute with `args`.
pub fn compute_argv(args: &ferrisdb_compute::Args) -> Vec<String> {
    let mut argv = vec![BIN.to_string(), "compute".to_string()];
    argv.extend(ferrisdb_server_common::args::to_argv(args).unwrap());
    argv
}

/// The command line running the binary under test as a pageserver with `args`.
pub fn pageserver_argv(args: &ferrisdb_pageserver::Args) -> Vec<String> {
    let mut argv = vec![BIN.to_string(), "pageserver".to_string()];
    argv.extend(ferrisdb_server_common::args::to_argv(args).unwrap());
    argv
}

/// The addresses a server command line (`BIN SUBCOMMAND ARGS…`) listens on, read through
/// the struct that defines its flags; none for a command line that is not a server's.
pub fn listen_addrs(argv: &[String]) -> Vec<std::net::SocketAddr> {
    let (Some(subcommand), Some(rest)) = (argv.get(1), argv.get(2..)) else {
        return Vec::new();
    };
    let pair = match subcommand.as_str() {
        "safekeeper" => {
            ferrisdb_server_common::args::from_argv::<ferrisdb_wal_service::Args, _>(rest)
                .map(|a| [a.listen_grpc, a.listen_http])
        }
        "pageserver" => {
            ferrisdb_server_common::args::from_argv::<ferrisdb_pageserver::Args, _>(rest)
                .map(|a| [a.listen_grpc, a.listen_http])
        }
        "compute" => ferrisdb_server_common::args::from_argv::<ferrisdb_compute::Args, _>(rest)
            .map(|a| [a.listen_grpc, a.listen_http]),
        _ => return Vec::new(),
    };
    pair.map(Vec::from).unwrap_or_default()
}

/// A `ferrisdb dev` cluster under test, plus any components restarted by hand.
pub struct DevCluster {
    pub data_dir: PathBuf,
    pub base_port: u16,
    pub extra_args: Vec<String>,
    /// Environment for `ferrisdb dev` and so for every component it starts.
    pub envs: Vec<(String, String)>,
    dev: Option<Child>,
    restarted: Vec<Child>,
}

impl DevCluster {
    /// Deletes everything local but the bucket (`objects/`): what a restore from the bucket
    /// alone starts from. Call with the cluster stopped.
    pub fn wipe_all_but_bucket(&self) {
        for entry in std::fs::read_dir(&self.data_dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() != "objects" {
                if path.is_dir() {
                    std::fs::remove_dir_all(&path).unwrap();
                } else {
                    std::fs::remove_file(&path).unwrap();
                }
            }
        }
    }

    /// Starts `ferrisdb dev` on `data_dir` and waits until it takes writes.
    pub async fn start(data_dir: &Path, extra_args: &[&str]) -> DevCluster {
        let mut c = DevCluster {
            data_dir: data_dir.to_path_buf(),
            base_port: free_base_port(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            envs: Vec::new(),
            dev: None,
            restarted: Vec::new(),
        };
        c.launch().await;
        c
    }

    /// Starts `ferrisdb dev` like [`DevCluster::start`], with `envs` in its environment.
    pub async fn start_with_env(
        data_dir: &Path,
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> DevCluster {
        let mut c = DevCluster {
            data_dir: data_dir.to_path_buf(),
            base_port: free_base_port(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            dev: None,
            restarted: Vec::new(),
        };
        c.launch().await;
        c
    }

    /// (Re)launches `ferrisdb dev` with the same data dir, ports and arguments.
    ///
    /// After `kill_all` the killed components may still hold their ports while the kernel
    /// tears them down (a process inside an fdatasync dies only once it returns, slowly on a
    /// loaded machine), and `ferrisdb dev` refuses to start on a taken port: wait until the
    /// ports can be bound, and start it again if it exits before the cluster comes up. A
    /// cluster that still does not come up fails with the end of dev's log.
    pub async fn launch(&mut self) {
        CLUSTERS
            .lock()
            .unwrap()
            .push((self.base_port, self.data_dir.clone()));
        let _ = std::fs::remove_file(self.data_dir.join("cluster.json"));
        std::fs::create_dir_all(&self.data_dir).unwrap();
        let ports = self.dev_ports();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut starts = 0;
        loop {
            let running = self
                .dev
                .as_mut()
                .is_some_and(|d| matches!(d.try_wait(), Ok(None)));
            if !running {
                assert!(
                    starts < 5 && Instant::now() < deadline,
                    "dev cluster in {:?} exited {starts} times without coming up; its log ends: {}",
                    self.data_dir,
                    self.dev_log_tail()
                );
                wait_until_bindable(&ports);
                self.dev = Some(self.spawn_dev());
                starts += 1;
            }
            if self.data_dir.join("cluster.json").exists() {
                let db = self.db(Duration::from_secs(1)).await;
                if db
                    .run(|tx| async move { tx.get("probe").await })
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "dev cluster in {:?} did not come up; its log ends: {}",
                self.data_dir,
                self.dev_log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The ports `ferrisdb dev` binds for this cluster (src/dev.rs: the compute at the base
    /// port, or behind the wake proxy at +20 with scale to zero; safekeepers at +1..+3; the
    /// pageserver at +10; admin ports 80 above).
    fn dev_ports(&self) -> Vec<std::net::SocketAddr> {
        let mut offsets = vec![0u16, 1, 2, 3, 10, 80, 81, 82, 83, 90];
        if self.extra_args.iter().any(|a| a == "--suspend-after") {
            offsets.push(20);
        }
        offsets
            .into_iter()
            .filter_map(|o| self.base_port.checked_add(o))
            .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], p)))
            .collect()
    }

    fn spawn_dev(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.with_extension("dev.log"))
            .unwrap();
        Command::new(BIN)
            .arg("dev")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--base-port")
            .arg(self.base_port.to_string())
            .args(&self.extra_args)
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("spawn ferrisdb dev")
    }

    /// The last lines of dev's own log, for a failure message.
    fn dev_log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.data_dir.with_extension("dev.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join(" | ")
    }

    /// Ports from `base` on belong to a process started by hand with this cluster's
    /// credential (a second compute): helpers given its admin URL send the credential.
    pub fn adopt_ports(&self, base: u16) {
        CLUSTERS.lock().unwrap().push((base, self.data_dir.clone()));
    }

    /// The client API endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.base_port)
    }

    /// The compute's admin API endpoint.
    pub fn admin_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.base_port + 80)
    }

    /// An SDK handle whose `run` gives up after `timeout`.
    pub async fn db(&self, timeout: Duration) -> Database {
        Database::connect(&self.endpoint())
            .await
            .unwrap()
            .with_retry(RetryOptions {
                timeout,
                ..RetryOptions::default()
            })
    }

    /// The components as `cluster.json` lists them.
    pub fn components(&self) -> Vec<ComponentInfo> {
        let text = std::fs::read_to_string(self.data_dir.join("cluster.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| ComponentInfo {
                name: c["name"].as_str().unwrap().to_string(),
                kind: c["kind"].as_str().unwrap().to_string(),
                pid: c["pid"].as_i64().unwrap() as i32,
                argv: c["argv"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect(),
                grpc: c["endpoints"]["grpc"].as_str().unwrap().to_string(),
                http: c["endpoints"]["http"].as_str().unwrap().to_string(),
            })
            .collect()
    }

    /// The component called `name`.
    pub fn component(&self, name: &str) -> ComponentInfo {
        self.components()
            .into_iter()
            .find(|c| c.name == name)
            .unwrap()
    }

    /// The pid of `ferrisdb dev` itself, while it runs.
    pub fn dev_pid(&self) -> Option<i32> {
        self.dev.as_ref().map(|c| c.id() as i32)
    }

    /// SIGKILLs one process. (Signals go through nix, never `/usr/bin/kill`: procps-ng 4.0.2
    /// misreads `kill -9 -PGID` and signals every process.)
    pub fn kill_pid(pid: i32) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }

    fn signal_group(child: &Child, signal: Signal) {
        let _ = killpg(Pid::from_raw(child.id() as i32), signal);
    }

    /// Starts a component again from its recorded command line, outside dev's supervision,
    /// returning its pid.
    pub fn restart(&mut self, c: &ComponentInfo) -> i32 {
        self.spawn_argv(&c.name, &c.argv)
    }

    /// Starts a process from `argv` in its own process group (killed with the cluster).
    ///
    /// A component killed a moment ago may still hold its ports while the kernel tears it
    /// down (slowly, on a loaded machine): wait until they can be bound the way the servers
    /// bind them, and start again if the new process exits at once.
    pub fn spawn_argv(&mut self, name: &str, argv: &[String]) -> i32 {
        self.spawn_argv_with_env(name, argv, &[])
    }

    /// [`DevCluster::spawn_argv`] with `envs` added to the process's environment.
    pub fn spawn_argv_with_env(
        &mut self,
        name: &str,
        argv: &[String],
        envs: &[(&str, &str)],
    ) -> i32 {
        let ports = listen_addrs(argv);
        for attempt in 0..5 {
            wait_until_bindable(&ports);
            let pid = self.spawn_once(name, argv, envs);
            std::thread::sleep(Duration::from_millis(300));
            let exited = self
                .restarted
                .last_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if !exited || attempt == 4 {
                return pid;
            }
        }
        unreachable!("the loop returns on its last attempt")
    }

    fn spawn_once(&mut self, name: &str, argv: &[String], envs: &[(&str, &str)]) -> i32 {
        let c = ComponentInfo {
            name: name.to_string(),
            kind: String::new(),
            pid: 0,
            argv: argv.to_vec(),
            grpc: String::new(),
            http: String::new(),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.join(format!("logs/{}.restarted.log", c.name)))
            .unwrap();
        let child = Command::new(&c.argv[0])
            .args(&c.argv[1..])
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        self.restarted.push(child);
        pid
    }

    /// SIGKILLs the whole dev process tree (and anything restarted by hand).
    pub fn kill_all(&mut self) {
        if let Some(mut dev) = self.dev.take() {
            Self::signal_group(&dev, Signal::SIGKILL);
            let _ = dev.wait();
        }
        for mut c in self.restarted.drain(..) {
            Self::signal_group(&c, Signal::SIGKILL);
            let _ = c.wait();
        }
    }

    /// Stops the cluster the way Ctrl-C does, waiting for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut dev) = self.dev.take() {
            Self::signal_group(&dev, Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = dev.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Self::signal_group(&dev, Signal::SIGKILL);
            let _ = dev.wait();
        }
        self.kill_all();
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Waits, at most 10 s, until every one of `ports` could be bound (a process killed a moment
/// ago may still hold them). Blocks the thread: nothing of the test's runs meanwhile anyway.
fn wait_until_bindable(ports: &[std::net::SocketAddr]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ports.iter().all(|a| port_free(*a)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a server could bind `addr` now (with SO_REUSEADDR, as tokio's listeners do).
fn port_free(addr: std::net::SocketAddr) -> bool {
    let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
        return false;
    };
    socket.set_reuseaddr(true).is_ok() && socket.bind(addr).is_ok() && socket.listen(1).is_ok()
}

/// The value of an unlabelled Prometheus metric on `http` (an admin endpoint), if present.
pub async fn metric(http: &str, name: &str) -> Option<f64> {
    let text = admin_get(&format!("{http}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// The JSON of `/v1/status` on `http`.
pub async fn status(http: &str) -> Option<serde_json::Value> {
    admin_get(&format!("{http}/v1/status"))
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// The wall clock in Unix microseconds, as commit times are.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Polls `check` every 100 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A moto S3 server on loopback (one request at a time, so its conditional writes hold under
/// concurrency), installed
/// with pip when the machine lacks it. Killed on drop.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

/// Runs moto's S3 app on werkzeug without threads (see [`Moto::start`]).
const MOTO_UNTHREADED: &str = "import sys\n\
from werkzeug.serving import run_simple\n\
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app\n\
run_simple(sys.argv[1], int(sys.argv[2]), DomainDispatcherApplication(create_backend_app), threaded=False)\n";

/// Whether python3 can load the moto app [`MOTO_UNTHREADED`] runs.
fn moto_installed() -> bool {
    Command::new("python3")
        .args(["-c", "import moto.moto_server.werkzeug_app"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Moto {
    /// Starts moto, installing `moto[server]` from PyPI first if it is missing.
    pub async fn start() -> Moto {
        static INSTALL: Mutex<()> = Mutex::new(());
        {
            let _one_at_a_time = INSTALL.lock().unwrap();
            if !moto_installed() {
                let ok = Command::new("python3")
                    .args(["-m", "pip", "install", "--quiet", "moto[server]"])
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(
                    ok,
                    "moto is needed for the S3 tests and `python3 -m pip install moto[server]` failed"
                );
                assert!(
                    moto_installed(),
                    "moto not importable after installing moto[server]"
                );
            }
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Served one request at a time, not by `moto_server` (threaded): moto checks a
        // conditional PUT's precondition and then writes, without a lock, so two racing
        // `If-None-Match: *` PUTs could both succeed on a threaded server, which real S3 never
        // lets happen. Unthreaded werkzeug speaks HTTP/1.0, so no connection holds it up.
        let child = Command::new("python3")
            .args(["-c", MOTO_UNTHREADED, "127.0.0.1", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let moto = Moto { child, endpoint };
        eventually(Duration::from_secs(30), "moto answers", || async {
            reqwest::get(format!("{}/", moto.endpoint)).await.is_ok()
        })
        .await;
        moto
    }

    /// Creates `bucket`.
    pub async fn create_bucket(&self, bucket: &str) {
        let r = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "creating bucket {bucket}: {}",
            r.status()
        );
    }

    /// The object-store configuration for `s3://bucket/prefix` on this server.
    pub fn config(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> ferrisdb_server_common::objstore::ObjectStoreConfig {
        ferrisdb_server_common::objstore::ObjectStoreConfig {
            url: format!("s3://{bucket}/{prefix}"),
            s3_endpoint: Some(self.endpoint.clone()),
            s3_region: Some("us-east-1".into()),
            s3_access_key_id: Some("test".into()),
            s3_secret_access_key: Some("test".into()),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Runs the `ferrisdb` CLI, returning (success, stdout, stderr). An `admin` command aimed at
/// one of this test's dev clusters gets that cluster's credential (FERRISDB_ADMIN_TOKEN).
pub fn cli(args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    if args.first() == Some(&"admin")
        && let Some(token) = args
            .windows(2)
            .find(|w| w[0] == "--endpoint")
            .and_then(|w| admin_token(w[1]))
    {
        cmd.env("FERRISDB_ADMIN_TOKEN", token);
    }
    let out = cmd.output().expect("run ferrisdb");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Checkpoints every database through `ferrisdb admin checkpoint` against the compute's admin
/// endpoint, panicking with the CLI's output if it fails; its JSON answer.
pub fn checkpoint(admin_endpoint: &str) -> serde_json::Value {
    let (ok, out, err) = cli(&[
        "admin",
        "checkpoint",
        "--endpoint",
        admin_endpoint,
        "--json",
    ]);
    assert!(ok, "checkpoint failed: {out} {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("checkpoint answer {out:?}: {e}"))
}

/// [`libfaketime`], or `None` after saying why the test is skipped.
pub fn libfaketime_or_skip() -> Option<std::path::PathBuf> {
    libfaketime()
        .map_err(|why| eprintln!("skipped: {why}"))
        .ok()
}

/// libfaketime's preload library (Debian's `libfaketime`), installed if missing; the reason
/// when it cannot be had.
pub fn libfaketime() -> Result<std::path::PathBuf, String> {
    let lib = std::path::PathBuf::from("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1");
    if !lib.exists() {
        let _ = std::process::Command::new("apt-get")
            .args(["install", "-y", "-q", "libfaketime"])
            .output();
    }
    if lib.exists() {
        Ok(lib)
    } else {
        Err(format!(
            "{} is missing and apt-get could not install libfaketime",
            lib.display()
        ))
    }
}
