//! `ferrisdb-loadtest`: a load generator for FerrisDB and a side-by-side comparison with
//! etcd, Redis and PostgreSQL measured in the same run. See `docs/BENCHMARKS.md`.

mod charts;
mod keys;
mod phase;
mod report;
mod runner;
mod server_cpu;
mod target;
mod workload;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::keys::Distribution;
use crate::phase::PhaseSpec;
use crate::report::{Machine, PhaseResult, Report};
use crate::runner::{Bench, Session};
use crate::server_cpu::ServerProcesses;
use crate::workload::Workload;

#[derive(Debug, Parser)]
#[command(
    name = "ferrisdb-loadtest",
    about = "Load generator and peer comparison for FerrisDB"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs workloads against one target.
    Run {
        /// The system under test.
        #[arg(long, value_enum)]
        target: TargetKind,
        /// Workloads, in order (default: all).
        #[arg(long, value_enum, value_delimiter = ',')]
        workloads: Vec<Workload>,
        #[command(flatten)]
        bench: BenchArgs,
    },
    /// Runs the comparison suite: every workload on every target, workload by workload, so
    /// the targets of one workload are measured minutes apart at most.
    Compare {
        /// Targets, in order; the first is the baseline of the ratio table.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "ferrisdb,etcd,redis,postgres"
        )]
        targets: Vec<TargetKind>,
        /// Workloads, in order (default: all).
        #[arg(long, value_enum, value_delimiter = ',')]
        workloads: Vec<Workload>,
        /// Also run durable writes open-loop at this many ops/s in total, right after the
        /// closed-loop writes (0: do not).
        #[arg(long, default_value_t = 1000.0)]
        open_loop_writes_rate: f64,
        #[command(flatten)]
        bench: BenchArgs,
    },
    /// Runs a real multi-process cluster under faults drawn from a seed (kills, pauses,
    /// partitions, full disks, corruption, object-store faults) and checks the workloads'
    /// histories; exits non-zero when anything acknowledged was lost, anything refused
    /// appeared, or any anomaly was found (docs/testing.md).
    Chaos(ferrisdb_loadtest::chaos_cli::ChaosArgs),
    /// Rewrites summary.md and the charts from a results.json, without measuring anything.
    Report {
        /// The results.json of an earlier run.
        #[arg(long)]
        from: PathBuf,
        /// Where to write (default: the directory of `--from`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Which system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TargetKind {
    Ferrisdb,
    /// FerrisDB with the SDK's sessions off: a gRPC call per operation, as before sessions.
    FerrisdbUnary,
    Etcd,
    Redis,
    Postgres,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
struct BenchArgs {
    /// Keys loaded before measuring (key space of every workload).
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Measured seconds per workload.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds before each measurement.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Measure until this many operations succeeded instead of for a duration.
    #[arg(long)]
    ops: Option<u64>,
    /// Open loop at this many ops/s in total for every workload (default: closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Key distribution for every workload (default: zipfian for YCSB, uniform otherwise).
    #[arg(long, value_enum)]
    distribution: Option<Distribution>,
    /// FerrisDB's client API.
    #[arg(long, default_value = "http://127.0.0.1:24500")]
    ferrisdb_endpoint: String,
    /// etcd members' client URLs.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:23379,http://127.0.0.1:23381,http://127.0.0.1:23383"
    )]
    etcd_endpoints: Vec<String>,
    /// Redis URL.
    #[arg(long, default_value = "redis://127.0.0.1:25379/")]
    redis_url: String,
    /// PostgreSQL connection string.
    #[arg(
        long,
        default_value = "host=127.0.0.1 port=25432 user=postgres dbname=postgres"
    )]
    postgres: String,
    /// Directory for results.json, summary.md and the SVG charts.
    #[arg(long, default_value = "loadtest-results")]
    out: PathBuf,
    /// Process ids whose CPU time (with their descendants') is FerrisDB's server cost: each
    /// phase reports server CPU per operation (`ferrisdb dev`'s pid covers the whole cluster).
    #[arg(long, value_delimiter = ',')]
    ferrisdb_pids: Vec<u32>,
    /// The etcd members' process ids, for server CPU per operation.
    #[arg(long, value_delimiter = ',')]
    etcd_pids: Vec<u32>,
    /// The Redis server's process id, for server CPU per operation.
    #[arg(long, value_delimiter = ',')]
    redis_pids: Vec<u32>,
    /// The PostgreSQL postmaster's process id (its backends are its children).
    #[arg(long, value_delimiter = ',')]
    postgres_pids: Vec<u32>,
}

impl BenchArgs {
    fn spec(&self, workload: Workload, rate: Option<f64>) -> PhaseSpec {
        PhaseSpec {
            workload,
            distribution: self
                .distribution
                .unwrap_or_else(|| workload.default_distribution()),
            keys: self.keys,
            value_size: self.value_size,
            concurrency: self.concurrency,
            warmup: Duration::from_secs_f64(self.warmup.max(0.0)),
            duration: Duration::from_secs_f64(self.duration.max(0.1)),
            ops: self.ops,
            rate,
        }
    }

    fn session(&self, kind: TargetKind) -> anyhow::Result<Box<dyn Bench>> {
        let server = |pids: &[u32]| ServerProcesses::new(pids.to_vec());
        Ok(match kind {
            TargetKind::Ferrisdb => Box::new(
                Session::new(target::ferrisdb::FerrisDb::new(&self.ferrisdb_endpoint))
                    .with_server(server(&self.ferrisdb_pids)),
            ),
            TargetKind::FerrisdbUnary => Box::new(
                Session::new(target::ferrisdb::FerrisDb::unary(&self.ferrisdb_endpoint))
                    .with_server(server(&self.ferrisdb_pids)),
            ),
            TargetKind::Etcd => Box::new(
                Session::new(target::etcd::Etcd::new(self.etcd_endpoints.clone())?)
                    .with_server(server(&self.etcd_pids)),
            ),
            TargetKind::Redis => Box::new(
                Session::new(target::redis::Redis::new(&self.redis_url)?)
                    .with_server(server(&self.redis_pids)),
            ),
            TargetKind::Postgres => Box::new(
                Session::new(target::postgres::Postgres::new(&self.postgres))
                    .with_server(server(&self.postgres_pids)),
            ),
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Warnings and errors of the clients' libraries (RUST_LOG overrides) go to stderr. The
    // subscriber also matters for speed: without one, every span and event the HTTP/2 stack
    // creates (trace level, thousands per second) takes `tracing`'s `log` fallback, which
    // builds its fields before finding no logger; with one, a disabled call site is skipped
    // at its cached interest (~3 % of this process's CPU in a read-only run).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            target,
            workloads,
            bench,
        } => run(&[target], &workloads, 0.0, &bench).await,
        Command::Compare {
            targets,
            workloads,
            open_loop_writes_rate,
            bench,
        } => run(&targets, &workloads, open_loop_writes_rate, &bench).await,
        Command::Chaos(args) => {
            if !ferrisdb_loadtest::chaos_cli::main(args).await? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Report { from, out } => {
            let body =
                std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
            let report: Report = serde_json::from_slice(&body)
                .with_context(|| format!("parsing {}", from.display()))?;
            let out = out
                .or_else(|| from.parent().map(Path::to_path_buf))
                .unwrap_or_default();
            write_outputs(&report, &out)
        }
    }
}

/// The phases to run: the workloads, with open-loop writes after closed-loop writes.
fn phases(workloads: &[Workload], open_writes: f64, bench: &BenchArgs) -> Vec<PhaseSpec> {
    let list: &[Workload] = if workloads.is_empty() {
        &Workload::ALL
    } else {
        workloads
    };
    let mut out = Vec::new();
    for &w in list {
        out.push(bench.spec(w, bench.rate));
        if w == Workload::Writes && open_writes > 0.0 && bench.rate.is_none() {
            out.push(bench.spec(w, Some(open_writes)));
        }
    }
    out
}

async fn run(
    kinds: &[TargetKind],
    workloads: &[Workload],
    open_writes: f64,
    bench: &BenchArgs,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&bench.out)
        .with_context(|| format!("creating {}", bench.out.display()))?;
    let specs = phases(workloads, open_writes, bench);
    let mut sessions = Vec::new();
    for &k in kinds {
        let mut s = bench.session(k)?;
        s.setup(bench.keys, bench.value_size, bench.concurrency)
            .await
            .with_context(|| format!("setting up {k:?}"))?;
        sessions.push(s);
    }
    let mut report = Report {
        started_at: rfc3339_now(),
        machine: Machine::detect(),
        settings: serde_json::to_value(bench)?,
        targets: sessions.iter().map(|s| s.name().to_string()).collect(),
        results: Vec::new(),
    };
    let n = sessions.len();
    for (j, spec) in specs.into_iter().enumerate() {
        // The targets take turns going first, so that none always follows the same one: a
        // target's background work after a write-heavy phase (PostgreSQL's checkpointer and
        // writer, Redis's AOF rewrite, etcd's snapshots, FerrisDB's layer uploads) lands in
        // the next target's measurement, and a fixed order would charge it to the same one
        // every time.
        for i in turn_order(j, n) {
            let s = &mut sessions[i];
            // And each starts with the page cache's dirty data written out, whoever left it.
            settle().await;
            let r = s.phase(spec.clone()).await?;
            print_line(&r);
            report.results.push(r);
            // Written after every phase, so an interrupted run keeps what it measured.
            write_json(&report, &bench.out.join("results.json"))?;
        }
    }
    report.machine.loadavg_at_end = Machine::detect().loadavg_at_end;
    write_outputs(&report, &bench.out)?;
    Ok(())
}

/// The order in which `targets` targets run phase `phase`: every one, starting with a
/// different one each phase (the rest following in their usual order, wrapping round).
fn turn_order(phase: usize, targets: usize) -> impl Iterator<Item = usize> {
    (0..targets).map(move |i| (i + phase) % targets)
}

/// Writes every dirty page of the machine's page cache out (`sync(2)`, off the runtime's
/// threads), so a phase does not pay for the previous one's writeback.
async fn settle() {
    let _ = tokio::task::spawn_blocking(nix::unistd::sync).await;
}

fn print_line(r: &PhaseResult) {
    if let Some(why) = &r.not_applicable {
        eprintln!("  {:<9} {:<24} n/a ({why})", r.target, r.label());
        return;
    }
    eprintln!(
        "  {:<9} {:<24} {:>9.0} ops/s  p50 {:>7} ms  p99 {:>7} ms  p99.9 {:>7} ms  errors {}{}",
        r.target,
        r.label(),
        r.ops_per_sec,
        report::fmt_ms(r.latency.p50_us),
        report::fmt_ms(r.latency.p99_us),
        report::fmt_ms(r.latency.p999_us),
        r.error_count(),
        if r.error_samples.is_empty() {
            String::new()
        } else {
            format!(" (e.g. {})", r.error_samples[0])
        }
    );
}

fn write_json(report: &Report, path: &Path) -> anyhow::Result<()> {
    let body = serde_json::to_vec_pretty(report)?;
    std::fs::write(path, body).with_context(|| format!("writing {}", path.display()))
}

fn write_outputs(report: &Report, out: &Path) -> anyhow::Result<()> {
    write_json(report, &out.join("results.json"))?;
    let baseline = report.targets.first().cloned().unwrap_or_default();
    let m = &report.machine;
    let summary = format!(
        "Run started {} on {} CPUs ({}), {} RAM, Linux {}; load average at the start: {}, at the end: {}.\n\n\
         ## Ratios\n\n{}\n## Server CPU per operation\n\n{}\n## All measurements\n\n{}",
        report.started_at,
        m.cpus,
        m.cpu_model,
        m.memory,
        m.kernel,
        m.loadavg_at_start,
        m.loadavg_at_end,
        report::ratio_table(&report.results, &baseline),
        report::cpu_table(&report.results, &baseline),
        report::summary_table(&report.results),
    );
    std::fs::write(out.join("summary.md"), &summary)?;
    println!("{summary}");
    for (metric, file) in [
        (charts::Metric::Throughput, "throughput.svg"),
        (charts::Metric::P50, "latency-p50.svg"),
        (charts::Metric::P99, "latency-p99.svg"),
    ] {
        charts::bar_chart(&report.results, metric, &out.join(file))?;
    }
    eprintln!(
        "wrote results.json, summary.md, throughput.svg, latency-p50.svg and latency-p99.svg to {}",
        out.display()
    );
    Ok(())
}

/// The current UTC time as RFC 3339, without a date-time dependency.
fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over any `n` phases in a row each of `n` targets goes first once, and every phase runs
    /// them all: none always follows the same one.
    #[test]
    fn targets_take_turns_going_first() {
        let n = 5;
        for start in 0..3 {
            let mut firsts: Vec<usize> = (start..start + n)
                .map(|j| turn_order(j, n).next().unwrap())
                .collect();
            firsts.sort_unstable();
            assert_eq!(firsts, (0..n).collect::<Vec<_>>());
        }
        for j in 0..7 {
            let mut all: Vec<usize> = turn_order(j, n).collect();
            all.sort_unstable();
            assert_eq!(all, (0..n).collect::<Vec<_>>(), "phase {j}");
        }
        assert_eq!(turn_order(0, n).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert_eq!(turn_order(6, n).collect::<Vec<_>>(), [1, 2, 3, 4, 0]);
        assert_eq!(turn_order(3, 1).collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn open_loop_writes_follow_closed_loop_writes() {
        let cli = Cli::parse_from([
            "ferrisdb-loadtest",
            "compare",
            "--workloads",
            "reads,writes",
        ]);
        let Command::Compare {
            workloads,
            open_loop_writes_rate,
            bench,
            ..
        } = cli.command
        else {
            panic!("not compare");
        };
        let p = phases(&workloads, open_loop_writes_rate, &bench);
        let names: Vec<String> = p
            .iter()
            .map(|s| format!("{}:{}", s.workload.name(), s.mode()))
            .collect();
        assert_eq!(
            names,
            ["reads:closed", "writes:closed", "writes:open@1000/s"]
        );
        assert_eq!(phases(&[], 0.0, &bench).len(), Workload::ALL.len());
    }

    #[test]
    fn timestamps_look_like_rfc3339() {
        let t = rfc3339_now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }
}
