//! Runs one workload against one target: closed or open loop, for a duration or an operation
//! count, with a live progress line, into HDR histograms.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::keys::{KeyChooser, key_name, write_value};
use crate::phase::PhaseSpec;
use crate::report::{Latency, PhaseResult};
use crate::server_cpu::ServerProcesses;
use crate::target::{Connection, OpError, OpResult, Target};
use crate::workload::{Op, Workload};

/// An operation taking longer than this is counted as a `timeout` failure.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest latency the histograms hold (microseconds); slower ones are clamped to it.
const MAX_LATENCY_US: u64 = 120_000_000;

/// How long an open-loop client that has fallen behind may keep draining its schedule after
/// the end before the rest of its schedule is reported as missed.
const OPEN_LOOP_GRACE: Duration = Duration::from_secs(2);

/// Error messages kept per phase as examples.
const ERROR_SAMPLES: usize = 3;

/// A boxed future, so sessions of different targets can sit in one list.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A target in use: loaded, with its clients' connections and its time-travel snapshot.
pub trait Bench: Send {
    /// The target's name.
    fn name(&self) -> &'static str;
    /// Loads the keys, takes the snapshot and opens `concurrency` connections.
    fn setup(
        &mut self,
        keys: u64,
        value_size: usize,
        concurrency: usize,
    ) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Housekeeping, then one measured phase.
    fn phase(&mut self, spec: PhaseSpec) -> BoxFuture<'_, anyhow::Result<PhaseResult>>;
}

/// A [`Target`] and its state between phases.
pub struct Session<T: Target> {
    target: T,
    conns: Vec<T::Conn>,
    snapshot: Option<u64>,
    server: ServerProcesses,
}

impl<T: Target> Session<T> {
    /// A session on `target`, not yet set up.
    pub fn new(target: T) -> Session<T> {
        Session {
            target,
            conns: Vec::new(),
            snapshot: None,
            server: ServerProcesses::default(),
        }
    }

    /// The target's server processes, whose CPU time each phase reports per operation.
    pub fn with_server(mut self, server: ServerProcesses) -> Session<T> {
        self.server = server;
        self
    }
}

impl<T: Target> Bench for Session<T> {
    fn name(&self) -> &'static str {
        self.target.name()
    }

    fn setup(
        &mut self,
        keys: u64,
        value_size: usize,
        concurrency: usize,
    ) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let name = self.target.name();
            let started = Instant::now();
            eprintln!("[{name}] loading {keys} keys of {value_size} bytes");
            self.target
                .load(keys, value_size)
                .await
                .with_context(|| format!("loading {name}"))?;
            eprintln!("[{name}] loaded in {:.1}s", started.elapsed().as_secs_f64());
            self.target.between_phases(None).await?;
            // Taken after loading and before any write phase: at this version every key
            // still has its loaded value, which time-travel reads check.
            self.snapshot = self.target.snapshot().await?;
            self.conns.clear();
            for _ in 0..concurrency {
                self.conns.push(self.target.connect().await?);
            }
            Ok(())
        })
    }

    fn phase(&mut self, spec: PhaseSpec) -> BoxFuture<'_, anyhow::Result<PhaseResult>> {
        Box::pin(async move {
            let name = self.target.name();
            let mut result = PhaseResult::empty(name, &spec);
            if spec.workload == Workload::TimeTravel && self.snapshot.is_none() {
                result.not_applicable = Some(format!("{name} cannot read at an old version"));
                return Ok(result);
            }
            result.housekeeping = self
                .target
                .between_phases(self.snapshot)
                .await
                .with_context(|| format!("housekeeping on {name}"))?;
            while self.conns.len() < spec.concurrency {
                self.conns.push(self.target.connect().await?);
            }
            let conns: Vec<T::Conn> = self.conns.drain(..spec.concurrency).collect();
            let (conns, result) =
                run_phase(name, conns, &spec, self.snapshot, &self.server, result).await?;
            self.conns.extend(conns);
            Ok(result)
        })
    }
}

/// What one client measured.
struct WorkerOutcome<C> {
    conn: Option<C>,
    hist: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    samples: Vec<String>,
    retries: u64,
    missed: u64,
    last_done: Option<Instant>,
}

/// Counters the clients share with the progress line.
#[derive(Default)]
struct Shared {
    /// Measured successes.
    measured: AtomicU64,
    /// Every completion, warm-up included (for the progress line).
    completed: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
}

async fn execute<C: Connection>(
    conn: &mut C,
    op: Op,
    seq: u64,
    value_size: usize,
    snapshot: Option<u64>,
) -> OpResult {
    let value = || write_value(seq, value_size);
    let fut = async {
        match op {
            Op::Read(k) => conn.read(key_name(k)).await,
            Op::Write(k) => conn.write(key_name(k), value()).await,
            Op::Scan(k, n) => conn.scan(key_name(k), n).await,
            Op::ReadModifyWrite(k) => conn.read_modify_write(key_name(k), value()).await,
            Op::Txn(ks) => {
                conn.txn(ks.into_iter().map(key_name).collect(), value())
                    .await
            }
            Op::ReadAt(k) => match snapshot {
                Some(v) => conn.read_at(key_name(k), v).await,
                None => Err(OpError::new("unsupported", "no snapshot")),
            },
        }
    };
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(OpError::new(
            "timeout",
            format!("no answer in {OP_TIMEOUT:?}"),
        )),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_LATENCY_US)
}

/// Runs `spec` on `conns` (one client each) and gives the connections back with the result.
async fn run_phase<C: Connection>(
    name: &'static str,
    conns: Vec<C>,
    spec: &PhaseSpec,
    snapshot: Option<u64>,
    server: &ServerProcesses,
    mut result: PhaseResult,
) -> anyhow::Result<(Vec<C>, PhaseResult)> {
    let keys = Arc::new(KeyChooser::new(spec.keys, spec.distribution));
    let shared = Arc::new(Shared::default());
    let clients = conns.len().max(1);
    let t0 = Instant::now();
    let measure_from = t0 + spec.warmup;
    // With an operation count the duration is only a safety limit.
    let end = measure_from
        + if spec.ops.is_some() {
            Duration::from_secs(3600)
        } else {
            spec.duration
        };
    let progress = tokio::spawn(progress_line(
        name,
        spec.workload.name(),
        shared.clone(),
        t0,
        spec.warmup,
        spec.duration,
    ));

    let mut handles = Vec::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        let (keys, shared, spec) = (keys.clone(), shared.clone(), spec.clone());
        handles.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(0x5eed_0000 + i as u64);
            let mut out = WorkerOutcome {
                hist: Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)
                    .map_err(|e| anyhow::anyhow!("histogram: {e}"))?,
                conn: None,
                errors: BTreeMap::new(),
                samples: Vec::new(),
                retries: 0,
                missed: 0,
                last_done: None,
            };
            let mut n: u64 = 0;
            loop {
                if shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                // Open loop: client i owns slots i, i + C, i + 2C, … of one global schedule
                // at `rate`, and latency counts from the slot's time, so time spent queued
                // behind a slow answer is charged to the system (no coordinated omission).
                let intended = match spec.rate {
                    Some(rate) => {
                        t0 + Duration::from_secs_f64((n * clients as u64 + i as u64) as f64 / rate)
                    }
                    None => Instant::now(),
                };
                if intended >= end {
                    break;
                }
                if spec.rate.is_some() {
                    let now = Instant::now();
                    if now > end + OPEN_LOOP_GRACE {
                        let left = end.saturating_duration_since(intended).as_secs_f64();
                        out.missed = (left * spec.rate.unwrap_or(0.0) / clients as f64) as u64;
                        break;
                    }
                    tokio::time::sleep_until(intended.into()).await;
                }
                let op = spec.workload.next_op(&keys, &mut rng);
                let seq = ((i as u64) << 40) | n;
                let res = execute(&mut conn, op, seq, spec.value_size, snapshot).await;
                let done = Instant::now();
                n += 1;
                shared.completed.fetch_add(1, Ordering::Relaxed);
                if intended < measure_from {
                    continue;
                }
                match res {
                    Ok(retries) => {
                        out.hist.saturating_record(micros(done - intended));
                        out.retries += u64::from(retries);
                        out.last_done = Some(done);
                        let total = shared.measured.fetch_add(1, Ordering::Relaxed) + 1;
                        if spec.ops.is_some_and(|limit| total >= limit) {
                            shared.stop.store(true, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                        *out.errors.entry(e.code.clone()).or_default() += 1;
                        if out.samples.len() < ERROR_SAMPLES {
                            out.samples.push(format!("{}: {}", e.code, e.message));
                        }
                        // Back off a little so a target that is down is not hammered (and
                        // the error count says how long it was down, not how fast we spun).
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            out.conn = Some(conn);
            Ok::<_, anyhow::Error>(out)
        }));
    }

    // The server's CPU time over the measured window: from the end of the warm-up to the
    // last client's last operation, the same window the throughput is counted in.
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_at_start = server.cpu_time();

    let mut conns = Vec::new();
    let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)
        .map_err(|e| anyhow::anyhow!("histogram: {e}"))?;
    let mut last_done = measure_from;
    let mut samples = Vec::new();
    for h in handles {
        let out = h.await.context("client task")??;
        hist.add(&out.hist)
            .map_err(|e| anyhow::anyhow!("merging histograms: {e}"))?;
        for (code, n) in out.errors {
            *result.errors.entry(code).or_default() += n;
        }
        samples.extend(out.samples);
        result.retries += out.retries;
        result.missed += out.missed;
        if let Some(d) = out.last_done {
            last_done = last_done.max(d);
        }
        if let Some(c) = out.conn {
            conns.push(c);
        }
    }
    let cpu_at_end = server.cpu_time();
    shared.stop.store(true, Ordering::Relaxed);
    result.timeline = progress.await.unwrap_or_default();
    eprintln!();
    samples.truncate(ERROR_SAMPLES);
    result.error_samples = samples;
    let elapsed = last_done
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    result.ops = hist.len();
    result.elapsed_secs = elapsed;
    result.ops_per_sec = if elapsed > 0.0 {
        hist.len() as f64 / elapsed
    } else {
        0.0
    };
    result.latency = Latency::from_histogram(&hist);
    result.server_cpu_us_per_op = match (cpu_at_start, cpu_at_end) {
        (Some(a), Some(b)) if !hist.is_empty() => {
            Some(b.saturating_sub(a).as_secs_f64() * 1e6 / hist.len() as f64)
        }
        _ => None,
    };
    Ok((conns, result))
}

/// Prints a progress line to stderr every second until told to stop; returns the measured
/// operations per second, one entry per second of the measured window.
async fn progress_line(
    target: &'static str,
    workload: &'static str,
    shared: Arc<Shared>,
    t0: Instant,
    warmup: Duration,
    duration: Duration,
) -> Vec<f64> {
    use std::io::Write;
    let mut timeline = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut last_completed, mut last_measured) = (0u64, 0u64);
    while !shared.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let completed = shared.completed.load(Ordering::Relaxed);
        let measured = shared.measured.load(Ordering::Relaxed);
        let elapsed = t0.elapsed();
        let stage = if elapsed < warmup {
            "warm-up"
        } else {
            "measure"
        };
        if elapsed > warmup + Duration::from_millis(500) {
            timeline.push((measured - last_measured) as f64);
        }
        eprint!(
            "\r  {target:<9} {workload:<12} {stage} {:>5.1}/{:.0}s  {:>8} ops/s  {:>9} ok  {:>6} errors ",
            elapsed.as_secs_f64(),
            (warmup + duration).as_secs_f64(),
            completed - last_completed,
            measured,
            shared.errors.load(Ordering::Relaxed),
        );
        let _ = std::io::stderr().flush();
        last_completed = completed;
        last_measured = measured;
    }
    timeline
}
