//! The cluster the nemesis attacks: real `ferrisdb` processes on loopback, owned by the runner.
//!
//! `ferrisdb dev` plans the cluster (ports, data dirs, the credential, every component's
//! command line in `<data-dir>/cluster.json`); the runner then takes the processes over: it
//! stops dev and starts every component again from its recorded argv, each in a process group
//! of its own and under a **group id of its own**, so iptables can single out one process's
//! packets by owner (`-m owner --gid-owner`). It also starts a read replica beside the primary.
//! Dropping the cluster SIGKILLs every process it started.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::schedule::ProcessKind;

/// Port offsets a dev cluster uses from its base port, plus the replica's (50 and 60).
const OFFSETS: [u16; 12] = [0, 1, 2, 3, 10, 50, 60, 80, 81, 82, 83, 90];

/// One process of the cluster.
#[derive(Debug)]
pub struct Process {
    /// `safekeeper-1`, `pageserver`, `compute`, `replica`.
    pub name: String,
    /// What it is.
    pub kind: ProcessKind,
    /// Its command line (argv[0] is the `ferrisdb` binary).
    pub argv: Vec<String>,
    /// The group id it runs under (unique to this process of this cluster).
    pub gid: u32,
    /// Its gRPC port.
    pub grpc_port: u16,
    child: Option<Child>,
    /// Times it exited without the runner killing it.
    pub unexpected_exits: u64,
}

impl Process {
    /// Its pid, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }
}

/// The running cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Where everything lives.
    pub data_dir: PathBuf,
    /// The base port (`ferrisdb dev --base-port`).
    pub base_port: u16,
    /// The primary's client endpoint.
    pub endpoint: String,
    /// The replica's client endpoint.
    pub replica_endpoint: String,
    /// Every process, in start order: safekeepers, pageserver, compute, replica.
    pub processes: Vec<Process>,
    /// Environment for every process.
    envs: Vec<(String, String)>,
}

/// How to start the cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The `ferrisdb` binary.
    pub binary: PathBuf,
    /// The data dir (created; must be empty or a previous run's).
    pub data_dir: PathBuf,
    /// Extra arguments for `ferrisdb dev` (object store, S3 endpoint, sizes).
    pub dev_args: Vec<String>,
    /// Environment for every process (S3 credentials).
    pub envs: Vec<(String, String)>,
    /// The pageserver's disk cache budget (it must fit the small tmpfs the disk-full fault
    /// fills).
    pub cache_disk_bytes: u64,
}

/// A base port whose whole block of ports is free now (the pid spreads concurrent runners).
///
/// The block lies below the kernel's ephemeral range: processes here are killed and
/// restarted on the same ports while clients keep reconnecting, and a connect to a port with
/// no listener can be given that very port as its source and connect to itself (TCP
/// simultaneous open). That self-connection then holds the port and the restarted server
/// cannot bind it ("Address already in use"), as a soak found. Ports outside the ephemeral
/// range are never handed out as sources.
pub fn free_base_port() -> anyhow::Result<u16> {
    let (low, high) = block_range(ephemeral_start());
    let blocks = (high - low) / 100;
    let first = (std::process::id() % u32::from(blocks)) as u16;
    for i in 0..blocks {
        let base = low + ((first + i) % blocks) * 100;
        if OFFSETS
            .iter()
            .all(|o| TcpListener::bind(("127.0.0.1", base + o)).is_ok())
        {
            return Ok(base);
        }
    }
    bail!("no free block of ports between {low} and {high}")
}

/// The first port of the kernel's ephemeral range (Linux's default when it cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// The ports blocks are drawn from: from 20000 up to the ephemeral range, or (if that range
/// starts too low to leave room for a few blocks) up to 60000 as before.
fn block_range(ephemeral_start: u16) -> (u16, u16) {
    const LOW: u16 = 20_000;
    if ephemeral_start >= LOW + 1_000 {
        (LOW, ephemeral_start - (ephemeral_start - LOW) % 100)
    } else {
        (LOW, 60_000)
    }
}

/// Whether a server could bind `addr` now (with SO_REUSEADDR, as tokio's listeners do).
fn port_free(addr: SocketAddr) -> bool {
    let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
        return false;
    };
    socket.set_reuseaddr(true).is_ok() && socket.bind(addr).is_ok() && socket.listen(1).is_ok()
}

/// A server's arguments, read from a recorded command line (`BINARY SUBCOMMAND ARGS…`)
/// through the struct that defines its flags, changed as fields, and written back with
/// [`ferrisdb_server_common::args::to_argv`]: the runner never spells a flag.
enum Server {
    Safekeeper(ferrisdb_wal_service::Args),
    Pageserver(ferrisdb_pageserver::Args),
    Compute(ferrisdb_compute::Args),
}

impl Server {
    /// The arguments of the server `argv` runs.
    fn parse(argv: &[String]) -> anyhow::Result<Server> {
        let (Some(subcommand), Some(rest)) = (argv.get(1), argv.get(2..)) else {
            bail!("a recorded command line has no subcommand: {argv:?}");
        };
        Ok(match subcommand.as_str() {
            "safekeeper" => Server::Safekeeper(ferrisdb_server_common::args::from_argv(rest)?),
            "pageserver" => Server::Pageserver(ferrisdb_server_common::args::from_argv(rest)?),
            "compute" => Server::Compute(ferrisdb_server_common::args::from_argv(rest)?),
            other => bail!("{other} is no server subcommand"),
        })
    }

    /// Its subcommand's name.
    fn subcommand(&self) -> &'static str {
        match self {
            Server::Safekeeper(_) => "safekeeper",
            Server::Pageserver(_) => "pageserver",
            Server::Compute(_) => "compute",
        }
    }

    /// Its gRPC and admin HTTP addresses.
    fn listen(&self) -> [SocketAddr; 2] {
        match self {
            Server::Safekeeper(a) => [a.listen_grpc, a.listen_http],
            Server::Pageserver(a) => [a.listen_grpc, a.listen_http],
            Server::Compute(a) => [a.listen_grpc, a.listen_http],
        }
    }

    /// The command line running `program` as this server.
    fn argv(&self, program: &str) -> anyhow::Result<Vec<String>> {
        let mut argv = vec![program.to_string(), self.subcommand().to_string()];
        argv.extend(match self {
            Server::Safekeeper(a) => ferrisdb_server_common::args::to_argv(a)?,
            Server::Pageserver(a) => ferrisdb_server_common::args::to_argv(a)?,
            Server::Compute(a) => ferrisdb_server_common::args::to_argv(a)?,
        });
        Ok(argv)
    }
}

impl Cluster {
    /// Plans the cluster with `ferrisdb dev`, takes its processes over under group ids of
    /// their own, starts a replica, and waits until the primary commits.
    pub async fn start(spec: &ClusterSpec, base_port: u16) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(spec.data_dir.join("logs"))?;
        let data_dir = spec.data_dir.canonicalize()?;
        let _ = std::fs::remove_file(data_dir.join("cluster.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("logs/dev.log"))?;
        let mut dev = Command::new(&spec.binary)
            .arg("dev")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--base-port")
            .arg(base_port.to_string())
            .args(&spec.dev_args)
            .envs(spec.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting ferrisdb dev")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !data_dir.join("cluster.json").exists() {
            if Instant::now() > deadline || matches!(dev.try_wait(), Ok(Some(_))) {
                let _ = killpg(Pid::from_raw(dev.id() as i32), Signal::SIGKILL);
                let _ = dev.wait();
                bail!(
                    "ferrisdb dev did not write cluster.json; see {}",
                    data_dir.join("logs/dev.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let text = std::fs::read_to_string(data_dir.join("cluster.json"))?;
        // dev and its children share its process group: all go, and the runner starts them
        // again as its own.
        let _ = killpg(Pid::from_raw(dev.id() as i32), Signal::SIGKILL);
        let _ = dev.wait();
        let file: serde_json::Value = serde_json::from_str(&text)?;
        let components = file["components"]
            .as_array()
            .ok_or_else(|| anyhow!("cluster.json lists no components"))?;
        let gid_base = 200_000 + u32::from(base_port);
        let mut processes = Vec::new();
        for (i, c) in components.iter().enumerate() {
            let name = c["name"].as_str().unwrap_or_default().to_string();
            let kind = match c["kind"].as_str() {
                Some("safekeeper") => ProcessKind::Safekeeper,
                Some("pageserver") => ProcessKind::Pageserver,
                Some("compute") => ProcessKind::Compute,
                other => bail!("unknown component kind {other:?}"),
            };
            let argv: Vec<String> = c["argv"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let mut server = Server::parse(&argv)?;
            if let Server::Pageserver(a) = &mut server {
                a.cache_disk_bytes = usize::try_from(spec.cache_disk_bytes)?;
            }
            let grpc_port = server.listen()[0].port();
            let argv = server.argv(argv.first().map_or("ferrisdb", String::as_str))?;
            processes.push(Process {
                name,
                kind,
                argv,
                gid: gid_base + i as u32,
                grpc_port,
                child: None,
                unexpected_exits: 0,
            });
        }
        let compute = processes
            .iter()
            .find(|p| p.kind == ProcessKind::Compute)
            .ok_or_else(|| anyhow!("cluster.json has no compute"))?;
        let endpoint = format!("http://127.0.0.1:{}", compute.grpc_port);
        let (r_grpc, r_http) = (base_port + 50, base_port + 60);
        let Server::Compute(mut replica) = Server::parse(&compute.argv)? else {
            bail!("the compute's command line is no compute's");
        };
        replica.listen_grpc = SocketAddr::from(([127, 0, 0, 1], r_grpc));
        replica.listen_http = SocketAddr::from(([127, 0, 0, 1], r_http));
        replica.warm_tier_dir = Some(data_dir.join("replica-cache"));
        replica.replica = true;
        replica.primary_endpoints = vec![endpoint.clone()];
        let r_argv = Server::Compute(replica).argv(&compute.argv[0])?;
        let gid = gid_base + processes.len() as u32;
        processes.push(Process {
            name: "replica".into(),
            kind: ProcessKind::Replica,
            argv: r_argv,
            gid,
            grpc_port: r_grpc,
            child: None,
            unexpected_exits: 0,
        });
        let mut cluster = Cluster {
            data_dir,
            base_port,
            endpoint,
            replica_endpoint: format!("http://127.0.0.1:{r_grpc}"),
            processes,
            envs: spec.envs.clone(),
        };
        for i in 0..cluster.processes.len() {
            cluster.spawn(i).await?;
        }
        Ok(cluster)
    }

    /// The group id the runner's own sockets (the workload's clients) run under.
    pub fn client_gid() -> u32 {
        nix::unistd::getegid().as_raw()
    }

    /// Indexes of the processes of `kind`.
    pub fn of_kind(&self, kind: ProcessKind) -> Vec<usize> {
        (0..self.processes.len())
            .filter(|i| self.processes[*i].kind == kind)
            .collect()
    }

    /// The `instance`-th (1-based, wrapping) process of `kind`.
    pub fn pick(&self, kind: ProcessKind, instance: u8) -> anyhow::Result<usize> {
        let all = self.of_kind(kind);
        if all.is_empty() {
            bail!("no {kind:?} in the cluster");
        }
        Ok(all[(usize::from(instance.max(1)) - 1) % all.len()])
    }

    /// Starts process `i` from its argv (waiting for its ports to come free, and again if it
    /// exits at once: a killed process's ports can take a moment to be released).
    pub async fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let data_dir = self.data_dir.clone();
        let envs = self.envs.clone();
        let p = &mut self.processes[i];
        let ports = Server::parse(&p.argv)
            .map(|s| s.listen().to_vec())
            .unwrap_or_default();
        for attempt in 0..10 {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !ports.iter().all(|a| port_free(*a)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(data_dir.join(format!("logs/{}.chaos.log", p.name)))?;
            let mut child = Command::new(&p.argv[0])
                .args(&p.argv[1..])
                .envs(envs.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .process_group(0)
                .gid(p.gid)
                .spawn()
                .with_context(|| format!("starting {}", p.name))?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            if matches!(child.try_wait(), Ok(None)) || attempt == 9 {
                p.child = Some(child);
                return Ok(());
            }
        }
        bail!("{} exits as soon as it starts", p.name)
    }

    /// SIGKILLs process `i` and waits until it is gone.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.processes[i].child.take() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to process `i`.
    pub fn signal(&self, i: usize, signal: Signal) {
        if let Some(pid) = self.processes[i].pid() {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// Restarts every process that exited without being killed by the runner, counting it;
    /// returns the names of those that had.
    pub async fn revive(&mut self) -> anyhow::Result<Vec<String>> {
        let mut revived = Vec::new();
        for i in 0..self.processes.len() {
            let exited = match self.processes[i].child.as_mut() {
                Some(c) => matches!(c.try_wait(), Ok(Some(_))),
                None => true,
            };
            if exited {
                self.processes[i].child = None;
                self.processes[i].unexpected_exits += 1;
                revived.push(self.processes[i].name.clone());
                self.spawn(i).await?;
            }
        }
        Ok(revived)
    }

    /// The directory of a safekeeper (its WAL segments live below it).
    pub fn safekeeper_dir(&self, i: usize) -> Option<PathBuf> {
        match Server::parse(&self.processes[i].argv) {
            Ok(Server::Safekeeper(a)) => Some(a.data_dir),
            _ => None,
        }
    }

    /// The admin HTTP address of process `i`, from its command line.
    pub fn admin_addr(&self, i: usize) -> Option<SocketAddr> {
        Server::parse(&self.processes[i].argv)
            .ok()
            .map(|s| s.listen()[1])
    }

    /// The log file of process `i` as the runner started it.
    pub fn log_of(&self, i: usize) -> PathBuf {
        self.data_dir
            .join(format!("logs/{}.chaos.log", self.processes[i].name))
    }

    /// Stops everything (SIGCONT first, so nothing stays frozen, then SIGKILL).
    pub fn stop(&mut self) {
        for i in 0..self.processes.len() {
            self.signal(i, Signal::SIGCONT);
            self.kill(i);
        }
    }

    /// Ports of the processes of `kind`.
    pub fn ports_of(&self, kind: ProcessKind) -> Vec<u16> {
        self.of_kind(kind)
            .iter()
            .map(|i| self.processes[*i].grpc_port)
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_blocks_stay_below_the_ephemeral_range() {
        assert_eq!(block_range(32_768), (20_000, 32_700));
        assert_eq!(block_range(20_500), (20_000, 60_000));
        let base = free_base_port().unwrap();
        let (low, high) = block_range(ephemeral_start());
        assert!(base >= low && base + 99 < high, "{base}");
    }
}
