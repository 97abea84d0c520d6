//! The nemesis runner (`ferrisdb-loadtest chaos`): a real multi-process cluster, workloads
//! whose histories are checked, and faults injected one at a time on a schedule drawn from a
//! seed. Each fault heals after a bounded time; the runner then waits for the first successful
//! operation (a probe commit through the primary, or a probe read through the replica for
//! faults on the replica) and records how long that took.
//!
//! What each fault does and expects is in `docs/testing.md` ("Chaos runs").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferrisdb_client::{ConnectOptions, Database, RetryOptions};
use nix::sys::signal::Signal;
use tokio::sync::watch;

use crate::chaos_report::{ChaosReport, FaultEvent, OpCounts};
use crate::chaos_workload::{Verdict, WorkloadPlugin};
use crate::cluster::{Cluster, ClusterSpec};
use crate::disk::{Ballast, Tmpfs};
use crate::history::{Outcome, Recorder};
use crate::moto::Moto;
use crate::partition::{Cut, Partition};
use crate::probe::Probes;
use crate::s3_proxy::{ProxyMode, S3Proxy};
use crate::schedule::{
    CorruptTarget, DiskTarget, Fault, FaultKind, Link, ProcessKind, Schedule, SplitMix, StoreFault,
    Timing,
};

/// The bucket and prefix the cluster keeps its objects under.
const BUCKET: &str = "chaos";
const PREFIX: &str = "db";

/// How a chaos run is set up.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// The `ferrisdb` binary.
    pub binary: PathBuf,
    /// Where the cluster lives (created; tmpfs mounts go below it).
    pub data_dir: PathBuf,
    /// The schedule's seed.
    pub seed: u64,
    /// Stop after this many faults (skipped ones included).
    pub faults: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// How long faults last and how far apart they are.
    pub timing: Timing,
    /// The kinds of fault to inject.
    pub kinds: Vec<FaultKind>,
    /// How long availability may take to come back after a fault before the run says it
    /// never did.
    pub recovery_timeout: Duration,
    /// The workloads, checked at the end.
    pub workloads: Vec<WorkloadPlugin>,
    /// The command line, for the report.
    pub command: String,
}

/// Every environment resource of a run, released in order on drop: processes, then mounts
/// and iptables rules, then the object store.
struct Environment {
    cluster: Cluster,
    sk_disk: Option<Tmpfs>,
    cache_disk: Option<Tmpfs>,
    proxy: S3Proxy,
    moto: Moto,
}

/// Runs the chaos test and returns its report (check `valid`).
pub async fn run(config: ChaosConfig) -> anyhow::Result<ChaosReport> {
    eprintln!(
        "chaos: seed {} (same seed, same schedule: --seed {})",
        config.seed, config.seed
    );
    let started = Instant::now();
    let mut disabled = Vec::new();
    let mut kinds = config.kinds.clone();
    let root = nix::unistd::geteuid().is_root();
    if let Some(why) = crate::partition::unavailable() {
        kinds.retain(|k| !matches!(k, FaultKind::Partition(_)));
        disabled.push(format!("partitions: {why}"));
    }
    std::fs::create_dir_all(&config.data_dir)?;
    let data_dir = config.data_dir.canonicalize()?;
    let (sk_disk, cache_disk) = if root {
        (
            Some(Tmpfs::mount(&data_dir.join("safekeeper-1"), 256 << 20)?),
            Some(Tmpfs::mount(&data_dir.join("pageserver-cache"), 48 << 20)?),
        )
    } else {
        kinds.retain(|k| !matches!(k, FaultKind::DiskFull(_)));
        disabled.push("full disks: not root, so no tmpfs can be mounted".into());
        (None, None)
    };
    disabled.push(
        "clock jumps: no FerrisDB process takes its clock from outside (the clock seam, \
         common/server/src/clock.rs, is in-process only), so there is nothing to jump without a \
         production backdoor"
            .into(),
    );
    let moto = Moto::start(BUCKET).await?;
    let proxy = S3Proxy::start(moto.addr.clone()).await?;
    let base_port = crate::cluster::free_base_port()?;
    let swept = crate::partition::sweep(base_port);
    if swept > 0 {
        eprintln!("chaos: removed {swept} iptables rules an earlier run left behind");
    }
    let spec = ClusterSpec {
        binary: config.binary.clone(),
        data_dir: data_dir.clone(),
        dev_args: [
            "--object-store",
            &format!("s3://{BUCKET}/{PREFIX}"),
            "--s3-endpoint",
            &proxy.endpoint,
            "--s3-region",
            "us-east-1",
            "--checkpoint-interval-secs",
            "2",
            "--compact-after-deltas",
            "4",
            "--segment-size-bytes",
            &(256u64 << 10).to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        envs: vec![
            ("AWS_ACCESS_KEY_ID".into(), "test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        ],
        cache_disk_bytes: 16 << 20,
    };
    let cluster = Cluster::start(&spec, base_port).await?;
    let mut env = Environment {
        cluster,
        sk_disk,
        cache_disk,
        proxy,
        moto,
    };
    let result = drive(&config, &mut env, kinds).await;
    env.cluster.stop();
    let swept = crate::partition::sweep(base_port);
    if swept > 0 {
        eprintln!("chaos: removed {swept} iptables rules at the end");
    }
    let mut report = result?;
    report.disabled = disabled;
    report.duration_secs = started.elapsed().as_secs_f64();
    report.summarize();
    Ok(report)
}

async fn connect(endpoint: &str) -> anyhow::Result<Database> {
    Ok(
        Database::connect_with(ConnectOptions::new(endpoint).retry(RetryOptions {
            timeout: Duration::from_secs(5),
            ..RetryOptions::default()
        }))
        .await?,
    )
}

/// Waits until `ok` reports a success invoked after `since`; the time from `since` to it.
async fn wait_recovery(probe: &crate::probe::LastOk, since: u64, limit: Duration) -> Option<u64> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(done) = probe.success_since(since) {
            return Some(done.saturating_sub(since) / 1_000_000);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn drive(
    config: &ChaosConfig,
    env: &mut Environment,
    kinds: Vec<FaultKind>,
) -> anyhow::Result<ChaosReport> {
    let recorder = Recorder::new();
    let probes = Arc::new(Probes::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let primary = connect(&env.cluster.endpoint).await?;
    let replica = connect(&env.cluster.replica_endpoint).await?;
    // The cluster is up once a probe commits and the replica answers.
    let probe_tasks = probes.spawn(primary.clone(), replica, recorder.clone(), stop_rx.clone());
    for (what, last) in [("primary", &probes.primary), ("replica", &probes.replica)] {
        if wait_recovery(last, 0, Duration::from_secs(90))
            .await
            .is_none()
        {
            bail!(
                "the {what} never served; logs in {}",
                env.cluster.data_dir.join("logs").display()
            );
        }
    }
    let mut workload_tasks = Vec::new();
    let mut recorders = Vec::new();
    for w in &config.workloads {
        let r = Recorder::new();
        recorders.push((w, r.clone()));
        workload_tasks.push(tokio::spawn((w.run)(primary.clone(), r, stop_rx.clone())));
    }
    let mut rng = SplitMix::new(config.seed ^ 0x5EED_C0DE);
    let schedule = Schedule::new(config.seed, kinds, config.timing);
    let started = Instant::now();
    let mut events = Vec::new();
    for fault in schedule {
        if config.faults.is_some_and(|n| fault.index >= n)
            || config.duration.is_some_and(|d| started.elapsed() >= d)
        {
            break;
        }
        tokio::time::sleep(fault.gap).await;
        let mut event = inject(env, &fault, &mut rng, &recorder, &probes, config).await;
        note_exits(env, &mut event).await;
        eprintln!(
            "chaos: #{} {} on {} held {} ms: {}{}",
            event.index,
            event.kind,
            event.target,
            event.hold_ms,
            match (event.skipped, event.recovery_ms) {
                (true, _) => "skipped".to_string(),
                (false, Some(ms)) => format!("recovered in {ms} ms"),
                (false, None) => "NOT RECOVERED".to_string(),
            },
            if event.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", event.note)
            }
        );
        events.push(event);
    }
    // Everything healed: let the workloads run on a little, then stop them and read back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);
    for t in workload_tasks {
        let _ = t.await;
    }
    for t in probe_tasks {
        let _ = t.await;
    }
    let _ = env.cluster.revive().await;
    let final_db = Database::connect_with(ConnectOptions::new(&env.cluster.endpoint).retry(
        RetryOptions {
            timeout: Duration::from_secs(60),
            ..RetryOptions::default()
        },
    ))
    .await
    .context("connecting for the final reads")?;
    let mut report = ChaosReport {
        seed: config.seed,
        command: config.command.clone(),
        faults_requested: config.faults,
        ..ChaosReport::default()
    };
    let mut ops = OpCounts::default();
    for (w, r) in recorders {
        let before = r.history();
        for o in &before.operations {
            match o.outcome {
                Outcome::Ok => ops.ok += 1,
                Outcome::Fail => ops.fail += 1,
                Outcome::Info => ops.info += 1,
            }
        }
        let verdict = match (w.final_reads)(final_db.clone(), r.clone()).await {
            Ok(()) => (w.check)(&r.history()),
            Err(e) => Verdict {
                anomalies: 1,
                details: vec![format!("the final reads failed: {e}")],
                ..Verdict::default()
            },
        };
        report.verdicts.push((w.name.to_string(), verdict));
    }
    let replica_anomalies = probes
        .replica_anomalies
        .lock()
        .map(|a| a.clone())
        .unwrap_or_default();
    report.verdicts.push((
        "replica-probe".to_string(),
        Verdict {
            anomalies: replica_anomalies.len() as u64,
            details: replica_anomalies.into_iter().take(20).collect(),
            ..Verdict::default()
        },
    ));
    report.replica_reads = probes.replica_reads.load(Ordering::Relaxed);
    report.stragglers = safekeepers_rejoined(&env.cluster, REJOIN_LIMIT).await;
    report.operations = ops;
    report.events = events;
    report.unexpected_exits = env
        .cluster
        .processes
        .iter()
        .filter(|p| p.unexpected_exits > 0)
        .map(|p| (p.name.clone(), p.unexpected_exits))
        .collect::<BTreeMap<_, _>>();
    Ok(report)
}

/// How long after the run every safekeeper has to hold the whole log again.
const REJOIN_LIMIT: Duration = Duration::from_secs(60);

/// Waits until every safekeeper serves every database undamaged and all of them end their
/// logs at the same place (nothing is written any more, so they converge); what is still
/// wrong at `limit`, one line per safekeeper. A safekeeper left out after a fault is
/// invisible to the availability probes while the other two make a quorum — until the next
/// fault takes one of those (the chaos run that found a damaged log waiting forever for a
/// copy no peer had).
async fn safekeepers_rejoined(cluster: &Cluster, limit: Duration) -> Vec<String> {
    let token = std::fs::read_to_string(cluster.data_dir.join("cluster.token"))
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    let http = reqwest::Client::new();
    let safekeepers: Vec<(String, Option<std::net::SocketAddr>)> = cluster
        .processes
        .iter()
        .enumerate()
        .filter(|(_, p)| p.kind == ProcessKind::Safekeeper)
        .map(|(i, p)| (p.name.clone(), cluster.admin_addr(i)))
        .collect();
    let deadline = Instant::now() + limit;
    loop {
        let mut problems = Vec::new();
        // database → (safekeeper, flush) of each that serves it whole
        let mut flushes: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
        for (name, addr) in &safekeepers {
            let Some(addr) = addr else {
                problems.push(format!("{name}: no admin address on its command line"));
                continue;
            };
            let status = http
                .get(format!("http://{addr}/v1/status"))
                .bearer_auth(&token)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .and_then(reqwest::Response::error_for_status);
            let body: serde_json::Value = match status {
                Ok(r) => match r.json().await {
                    Ok(v) => v,
                    Err(e) => {
                        problems.push(format!("{name}: unreadable status: {e}"));
                        continue;
                    }
                },
                Err(e) => {
                    problems.push(format!("{name}: no status: {e}"));
                    continue;
                }
            };
            if let Some(corrupt) = body["corrupt_databases"].as_object()
                && !corrupt.is_empty()
            {
                problems.push(format!("{name}: databases it cannot open: {corrupt:?}"));
            }
            for (db, st) in body["databases"].as_object().into_iter().flatten() {
                if !st["damage"].is_null() {
                    problems.push(format!("{name}: {db} still damaged: {}", st["damage"]));
                    continue;
                }
                let flush = st["flush_lsn"].as_u64().unwrap_or(0);
                flushes
                    .entry(db.clone())
                    .or_default()
                    .push((name.clone(), flush));
            }
        }
        for (db, held) in &flushes {
            let newest = held.iter().map(|(_, f)| *f).max().unwrap_or(0);
            if held.len() < safekeepers.len() {
                problems.push(format!(
                    "{db}: served whole by {} of {} safekeepers",
                    held.len(),
                    safekeepers.len()
                ));
            }
            for (name, f) in held.iter().filter(|(_, f)| *f < newest) {
                problems.push(format!("{name}: {db} ends at {f}, behind {newest}"));
            }
        }
        if problems.is_empty() || Instant::now() > deadline {
            return problems;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Restarts processes that exited on their own, noting them on `event`.
async fn note_exits(env: &mut Environment, event: &mut FaultEvent) {
    match env.cluster.revive().await {
        Ok(names) if !names.is_empty() => {
            event.note = format!(
                "{} exited on its own and was restarted. {}",
                names.join(", "),
                event.note
            );
        }
        Ok(_) => {}
        Err(e) => event.note = format!("could not restart a process: {e:#}. {}", event.note),
    }
}

/// Injects one fault, holds it, heals it, and measures the recovery.
async fn inject(
    env: &mut Environment,
    fault: &Fault,
    rng: &mut SplitMix,
    recorder: &Recorder,
    probes: &Probes,
    config: &ChaosConfig,
) -> FaultEvent {
    let mut event = FaultEvent {
        index: fault.index,
        kind: fault.kind.label(),
        target: String::new(),
        hold_ms: fault.hold.as_millis() as u64,
        recovery_ms: None,
        skipped: false,
        note: String::new(),
    };
    let outcome = apply(env, fault, rng, &mut event).await;
    if let Err(e) = outcome {
        event.skipped = true;
        event.note = format!("{e:#}");
        return event;
    }
    let healed = recorder.now_ns();
    let probe = match fault.kind {
        FaultKind::Kill(ProcessKind::Replica) | FaultKind::Pause(ProcessKind::Replica) => {
            &probes.replica
        }
        _ => &probes.primary,
    };
    event.recovery_ms =
        supervise_recovery(env, &mut event, probe, healed, config.recovery_timeout).await;
    event
}

/// How often the runner looks for processes that exited on their own while it waits.
const SUPERVISE_EVERY: Duration = Duration::from_millis(100);

/// [`wait_recovery`], restarting (and noting) any process that exits meanwhile, as a
/// supervisor would: one that died of the fault, and one still on its way out when the fault
/// healed (a pageserver that refused a corrupt manifest once took seconds to exit; checked
/// only at the heal, it stayed down for the whole wait and so did a replica that needed it).
async fn supervise_recovery(
    env: &mut Environment,
    event: &mut FaultEvent,
    probe: &crate::probe::LastOk,
    since: u64,
    limit: Duration,
) -> Option<u64> {
    let deadline = Instant::now() + limit;
    loop {
        note_exits(env, event).await;
        let until_next_look =
            SUPERVISE_EVERY.min(deadline.saturating_duration_since(Instant::now()));
        if let Some(ms) = wait_recovery(probe, since, until_next_look).await {
            return Some(ms);
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}

/// The fault itself: inject, hold for `fault.hold`, heal.
async fn apply(
    env: &mut Environment,
    fault: &Fault,
    rng: &mut SplitMix,
    event: &mut FaultEvent,
) -> anyhow::Result<()> {
    let cluster = &mut env.cluster;
    match fault.kind {
        FaultKind::Kill(kind) => {
            let i = cluster.pick(kind, fault.instance)?;
            event.target = cluster.processes[i].name.clone();
            cluster.kill(i);
            tokio::time::sleep(fault.hold).await;
            cluster.spawn(i).await?;
        }
        FaultKind::Pause(kind) => {
            let i = cluster.pick(kind, fault.instance)?;
            event.target = cluster.processes[i].name.clone();
            cluster.signal(i, Signal::SIGSTOP);
            tokio::time::sleep(fault.hold).await;
            cluster.signal(i, Signal::SIGCONT);
        }
        FaultKind::Partition(link) => {
            let cuts = cuts(cluster, link, fault.instance, event)?;
            let partition = Partition::install(cluster.base_port, &cuts)?;
            tokio::time::sleep(fault.hold).await;
            partition.heal();
        }
        FaultKind::DiskFull(target) => {
            let disk = match target {
                DiskTarget::Safekeeper => env.sk_disk.as_ref(),
                DiskTarget::PageserverCache => env.cache_disk.as_ref(),
            };
            let Some(disk) = disk else {
                bail!("no tmpfs for {target:?}");
            };
            event.target = disk.path().display().to_string();
            let ballast = Ballast::fill(disk.path())?;
            tokio::time::sleep(fault.hold).await;
            drop(ballast);
        }
        FaultKind::Corrupt(CorruptTarget::WalSegment) => {
            let i = cluster.pick(ProcessKind::Safekeeper, fault.instance)?;
            event.target = cluster.processes[i].name.clone();
            let dir = cluster
                .safekeeper_dir(i)
                .context("the safekeeper has no --data-dir")?;
            // Killed first, so the damage is what it finds on disk when it starts again.
            cluster.kill(i);
            let flipped = flip_wal_byte(&dir, rng);
            tokio::time::sleep(fault.hold).await;
            cluster.spawn(i).await?;
            event.note = flipped?;
        }
        FaultKind::Corrupt(target) => {
            let keys = env.moto.list(BUCKET, PREFIX).await?;
            let wanted: Vec<&String> = keys
                .iter()
                .filter(|k| match target {
                    CorruptTarget::DeltaLayer => k.ends_with(".delta"),
                    CorruptTarget::ColdSegment => k.ends_with(".parquet"),
                    _ => k.contains("/manifest/") && k.ends_with(".json"),
                })
                .collect();
            // The newest manifest is the one a restarting pageserver loads.
            let key = match target {
                CorruptTarget::Manifest => wanted.iter().max().copied(),
                _ if wanted.is_empty() => None,
                _ => Some(wanted[rng.range(0, wanted.len() as u64) as usize]),
            };
            let Some(key) = key.cloned() else {
                bail!("no object of that kind in the bucket yet");
            };
            event.target = key.clone();
            let original = env.moto.get(BUCKET, &key).await?;
            if original.is_empty() {
                bail!("{key} is empty");
            }
            let mut damaged = original.clone();
            let (at, mask) = pick_flip(&damaged, rng);
            damaged[at] ^= mask;
            env.moto.put(BUCKET, &key, damaged).await?;
            // The pageserver restarts while the object is damaged, so it has to read it (or
            // the manifest naming it) from the bucket rather than from memory.
            let ps = cluster.pick(ProcessKind::Pageserver, 1)?;
            cluster.kill(ps);
            cluster.spawn(ps).await?;
            tokio::time::sleep(fault.hold).await;
            env.moto.put(BUCKET, &key, original).await?;
            event.note = format!("byte {at} of {key} flipped (xor {mask:#04x}), then restored");
        }
        FaultKind::ObjectStore(f) => {
            event.target = "s3 proxy".into();
            env.proxy.set(match f {
                StoreFault::Errors => ProxyMode::Errors,
                StoreFault::Latency => ProxyMode::Latency,
                StoreFault::Timeouts => ProxyMode::Timeouts,
            });
            tokio::time::sleep(fault.hold).await;
            env.proxy.set(ProxyMode::Pass);
        }
    }
    Ok(())
}

/// Where to damage an object, and how: half the time any byte, scrambled (`0x5A`); half the
/// time the lowest bit of an ASCII digit, which keeps a JSON manifest well-formed but changes
/// a number in it — damage only a checksum can catch.
fn pick_flip(bytes: &[u8], rng: &mut SplitMix) -> (usize, u8) {
    let digits: Vec<usize> = (0..bytes.len())
        .filter(|i| bytes[*i].is_ascii_digit())
        .collect();
    if !digits.is_empty() && rng.range(0, 2) == 0 {
        return (digits[rng.range(0, digits.len() as u64) as usize], 0x01);
    }
    (rng.range(0, bytes.len() as u64) as usize, 0x5A)
}

/// The iptables cuts of a partition of `link`.
fn cuts(
    cluster: &Cluster,
    link: Link,
    instance: u8,
    event: &mut FaultEvent,
) -> anyhow::Result<Vec<Cut>> {
    let sk_ports = cluster.ports_of(ProcessKind::Safekeeper);
    let one = |kind| -> anyhow::Result<&crate::cluster::Process> {
        Ok(&cluster.processes[cluster.pick(kind, 1)?])
    };
    Ok(match link {
        Link::ComputeSafekeepers => {
            event.target = "compute | safekeepers".into();
            vec![Cut {
                gid: one(ProcessKind::Compute)?.gid,
                ports: sk_ports,
            }]
        }
        Link::PageserverSafekeepers => {
            event.target = "pageserver | safekeepers".into();
            vec![Cut {
                gid: one(ProcessKind::Pageserver)?.gid,
                ports: sk_ports,
            }]
        }
        Link::ClientCompute => {
            let compute = one(ProcessKind::Compute)?;
            event.target = "clients | compute".into();
            vec![Cut {
                gid: Cluster::client_gid(),
                ports: vec![compute.grpc_port],
            }]
        }
        Link::SafekeeperSafekeeper => {
            let i = cluster.pick(ProcessKind::Safekeeper, instance)?;
            let cut_off = &cluster.processes[i];
            event.target = format!("{} | other safekeepers", cut_off.name);
            let mut cuts = vec![Cut {
                gid: cut_off.gid,
                ports: sk_ports
                    .iter()
                    .copied()
                    .filter(|p| *p != cut_off.grpc_port)
                    .collect(),
            }];
            for j in cluster.of_kind(ProcessKind::Safekeeper) {
                if j != i {
                    cuts.push(Cut {
                        gid: cluster.processes[j].gid,
                        ports: vec![cut_off.grpc_port],
                    });
                }
            }
            cuts
        }
    })
}

/// Every WAL segment under `dir`, sorted by path.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "seg") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Flips one byte inside the WAL of a (stopped) safekeeper; says where.
fn flip_wal_byte(dir: &Path, rng: &mut SplitMix) -> anyhow::Result<String> {
    let segs: Vec<PathBuf> = segments(dir)
        .into_iter()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 64))
        .collect();
    if segs.is_empty() {
        bail!("no WAL segment with data under {}", dir.display());
    }
    let path = &segs[rng.range(0, segs.len() as u64) as usize];
    let mut bytes = std::fs::read(path)?;
    // In the first half, so valid frames follow: damage, not a torn tail.
    let at = rng.range(0, bytes.len() as u64 / 2) as usize;
    bytes[at] ^= 0x5A;
    std::fs::write(path, &bytes)?;
    Ok(format!("byte {at} of {} flipped", path.display()))
}
