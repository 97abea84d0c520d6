//! Results: per-phase records, the summary table, the FerrisDB/peer ratio table and JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::phase::PhaseSpec;

/// Latency percentiles of successful operations, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

impl Latency {
    /// The percentiles of `h` (microseconds).
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

/// One target × workload measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseResult {
    /// Target name.
    pub target: String,
    /// Workload name.
    pub workload: String,
    /// Key distribution.
    pub distribution: String,
    /// `closed` or `open@RATE/s`.
    pub mode: String,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Set when the target cannot run this workload (the reason).
    pub not_applicable: Option<String>,
    /// What was done to the target before the phase.
    pub housekeeping: String,
    /// Successful operations measured.
    pub ops: u64,
    /// Measured seconds (from the end of warm-up to the last success).
    pub elapsed_secs: f64,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// Latency of successful operations (open loop: from the scheduled start).
    pub latency: Latency,
    /// Failed operations by code.
    pub errors: BTreeMap<String, u64>,
    /// A few failure messages.
    pub error_samples: Vec<String>,
    /// Conflict retries inside successful operations.
    pub retries: u64,
    /// Open loop: scheduled operations never started because the target fell behind.
    pub missed: u64,
    /// Successful operations in each second of the measured window.
    pub timeline: Vec<f64>,
    /// CPU time of the target's server processes over the measured window divided by its
    /// successful operations, in microseconds (`None`: its processes were not given).
    #[serde(default)]
    pub server_cpu_us_per_op: Option<f64>,
}

impl PhaseResult {
    /// A result with nothing measured yet.
    pub fn empty(target: &str, spec: &PhaseSpec) -> PhaseResult {
        PhaseResult {
            target: target.to_string(),
            workload: spec.workload.name().to_string(),
            distribution: spec.distribution.name().to_string(),
            mode: spec.mode(),
            concurrency: spec.concurrency,
            not_applicable: None,
            housekeeping: String::new(),
            ops: 0,
            elapsed_secs: 0.0,
            ops_per_sec: 0.0,
            latency: Latency::default(),
            errors: BTreeMap::new(),
            error_samples: Vec::new(),
            retries: 0,
            missed: 0,
            timeline: Vec::new(),
            server_cpu_us_per_op: None,
        }
    }

    /// Failed operations in total.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The phase's label: workload, plus the mode when it is not the closed loop.
    pub fn label(&self) -> String {
        if self.mode == "closed" {
            self.workload.clone()
        } else {
            format!("{} ({})", self.workload, self.mode)
        }
    }
}

/// Everything a run wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// When the run started (UTC, RFC 3339).
    pub started_at: String,
    /// The machine.
    pub machine: Machine,
    /// The options the run used.
    pub settings: serde_json::Value,
    /// What each target was (configuration as described by the operator).
    pub targets: Vec<String>,
    /// Every measurement, in run order.
    pub results: Vec<PhaseResult>,
}

/// The machine the run was on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// CPU model, from /proc/cpuinfo.
    pub cpu_model: String,
    /// Memory, from /proc/meminfo.
    pub memory: String,
    /// Kernel release.
    pub kernel: String,
    /// Load average when the run started (another build on the machine shows here).
    pub loadavg_at_start: String,
    /// Load average when the run ended.
    pub loadavg_at_end: String,
}

impl Machine {
    /// Reads what Linux says about this machine.
    pub fn detect() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let field = |text: &str, name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model: field(&read("/proc/cpuinfo"), "model name"),
            memory: field(&read("/proc/meminfo"), "MemTotal"),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            loadavg_at_start: read("/proc/loadavg").trim().to_string(),
            loadavg_at_end: read("/proc/loadavg").trim().to_string(),
        }
    }
}

/// Formats a rate compactly (`12.3k`).
pub fn fmt_rate(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.2}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

/// Formats a ratio with two significant digits at least (`2.47×`, `0.0016×`).
pub fn fmt_ratio(r: f64) -> String {
    if r >= 0.095 || r == 0.0 {
        format!("{r:.2}×")
    } else if r >= 0.0095 {
        format!("{r:.3}×")
    } else {
        format!("{r:.4}×")
    }
}

/// Formats microseconds as milliseconds with sensible precision.
pub fn fmt_ms(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

/// The summary table (Markdown): one row per measurement.
pub fn summary_table(results: &[PhaseResult]) -> String {
    let mut out = String::from(
        "| workload | keys | target | ops/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | retries |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        if let Some(why) = &r.not_applicable {
            let _ = writeln!(
                out,
                "| {} | {} | {} | n/a | | | | | | | | <!-- {why} -->",
                r.label(),
                r.distribution,
                r.target
            );
            continue;
        }
        let l = &r.latency;
        let mut errors = r.error_count().to_string();
        if r.missed > 0 {
            let _ = write!(errors, " (+{} missed)", r.missed);
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.label(),
            r.distribution,
            r.target,
            fmt_rate(r.ops_per_sec),
            fmt_ms(l.p50_us),
            fmt_ms(l.p90_us),
            fmt_ms(l.p99_us),
            fmt_ms(l.p999_us),
            fmt_ms(l.max_us),
            errors,
            r.retries
        );
    }
    out
}

/// The ratio table (Markdown): per workload, each target's throughput and p99, and
/// FerrisDB's throughput divided by each peer's (above 1: FerrisDB is faster) and FerrisDB's
/// p99 divided by each peer's (below 1: FerrisDB's tail is shorter).
pub fn ratio_table(results: &[PhaseResult], baseline: &str) -> String {
    let mut labels: Vec<String> = Vec::new();
    let mut targets: Vec<String> = Vec::new();
    for r in results {
        if !labels.contains(&r.label()) {
            labels.push(r.label());
        }
        if !targets.contains(&r.target) {
            targets.push(r.target.clone());
        }
    }
    let peers: Vec<&String> = targets.iter().filter(|t| *t != baseline).collect();
    let find = |label: &str, target: &str| {
        results
            .iter()
            .find(|r| r.label() == label && r.target == target)
    };
    let cell = |r: Option<&PhaseResult>| match r {
        None => "–".to_string(),
        Some(r) if r.not_applicable.is_some() => "n/a".to_string(),
        Some(r) => format!(
            "{} ({} ms)",
            fmt_rate(r.ops_per_sec),
            fmt_ms(r.latency.p99_us)
        ),
    };
    let mut out = String::from("| workload |");
    for t in &targets {
        let _ = write!(out, " {t} ops/s (p99) |");
    }
    for p in &peers {
        let _ = write!(out, " {baseline}/{p} ops/s · p99 |");
    }
    out.push_str("\n|---|");
    for _ in 0..targets.len() + peers.len() {
        out.push_str("---:|");
    }
    out.push('\n');
    for label in &labels {
        let _ = write!(out, "| {label} |");
        for t in &targets {
            let _ = write!(out, " {} |", cell(find(label, t)));
        }
        let base =
            find(label, baseline).filter(|r| r.not_applicable.is_none() && r.ops_per_sec > 0.0);
        for p in &peers {
            let text = match (base, find(label, p)) {
                (_, Some(r)) if r.not_applicable.is_some() => "n/a (peer cannot)".to_string(),
                (Some(b), Some(r)) if r.ops_per_sec > 0.0 => {
                    let p99 = if r.latency.p99_us > 0 {
                        format!("{:.2}×", b.latency.p99_us as f64 / r.latency.p99_us as f64)
                    } else {
                        "–".to_string()
                    };
                    format!("**{}** · {p99}", fmt_ratio(b.ops_per_sec / r.ops_per_sec))
                }
                _ => "–".to_string(),
            };
            let _ = write!(out, " {text} |");
        }
        out.push('\n');
    }
    out
}

/// The server CPU table (Markdown): per workload, each target's server CPU time per
/// successful operation, and the baseline's divided by each peer's (above 1: the baseline
/// spends more CPU per operation). Empty when no target's processes were measured.
pub fn cpu_table(results: &[PhaseResult], baseline: &str) -> String {
    if results.iter().all(|r| r.server_cpu_us_per_op.is_none()) {
        return "Not measured (no `--<target>-pids` given).\n".to_string();
    }
    let mut labels: Vec<String> = Vec::new();
    let mut targets: Vec<String> = Vec::new();
    for r in results {
        if !labels.contains(&r.label()) {
            labels.push(r.label());
        }
        if !targets.contains(&r.target) {
            targets.push(r.target.clone());
        }
    }
    let peers: Vec<&String> = targets.iter().filter(|t| *t != baseline).collect();
    let cpu = |label: &str, target: &str| {
        results
            .iter()
            .find(|r| r.label() == label && r.target == target && r.not_applicable.is_none())
            .and_then(|r| r.server_cpu_us_per_op)
    };
    let mut out = String::from("| workload |");
    for t in &targets {
        let _ = write!(out, " {t} µs/op |");
    }
    for p in &peers {
        let _ = write!(out, " {baseline}/{p} |");
    }
    out.push_str("\n|---|");
    for _ in 0..targets.len() + peers.len() {
        out.push_str("---:|");
    }
    out.push('\n');
    for label in &labels {
        let _ = write!(out, "| {label} |");
        for t in &targets {
            match cpu(label, t) {
                Some(us) => {
                    let _ = write!(out, " {us:.0} |");
                }
                None => out.push_str(" – |"),
            }
        }
        for p in &peers {
            match (cpu(label, baseline), cpu(label, p)) {
                (Some(b), Some(q)) if q > 0.0 => {
                    let _ = write!(out, " {:.1}× |", b / q);
                }
                _ => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Distribution;
    use crate::workload::Workload;
    use std::time::Duration;

    fn spec(w: Workload, rate: Option<f64>) -> PhaseSpec {
        PhaseSpec {
            workload: w,
            distribution: Distribution::Uniform,
            keys: 10,
            value_size: 10,
            concurrency: 4,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            ops: None,
            rate,
        }
    }

    fn result(target: &str, w: Workload, ops_per_sec: f64, p99_us: u64) -> PhaseResult {
        let mut r = PhaseResult::empty(target, &spec(w, None));
        r.ops_per_sec = ops_per_sec;
        r.latency.p99_us = p99_us;
        r
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v * 10).unwrap();
        }
        let l = Latency::from_histogram(&h);
        assert!((4990..=5010).contains(&l.p50_us), "{l:?}");
        assert!((8990..=9010).contains(&l.p90_us), "{l:?}");
        assert!((9890..=9910).contains(&l.p99_us), "{l:?}");
        assert!((9980..=10010).contains(&l.p999_us), "{l:?}");
        assert_eq!(
            Latency::from_histogram(&Histogram::new(3).unwrap()),
            Latency::default()
        );
    }

    #[test]
    fn numbers_are_formatted_compactly() {
        assert_eq!(fmt_rate(950.4), "950");
        assert_eq!(fmt_rate(1234.0), "1.23k");
        assert_eq!(fmt_rate(45_678.0), "45.7k");
        assert_eq!(fmt_ms(850), "0.85");
        assert_eq!(fmt_ms(12_345), "12.3");
        assert_eq!(fmt_ms(250_000), "250");
        assert_eq!(fmt_ratio(2.469), "2.47×");
        assert_eq!(fmt_ratio(0.0016), "0.0016×");
        assert_eq!(fmt_ratio(0.022), "0.022×");
    }

    #[test]
    fn ratio_table_divides_ferrisdb_by_each_peer() {
        let mut redis_tt = PhaseResult::empty("redis", &spec(Workload::TimeTravel, None));
        redis_tt.not_applicable = Some("no history".into());
        let results = vec![
            result("ferrisdb", Workload::Writes, 3000.0, 4000),
            result("etcd", Workload::Writes, 1500.0, 8000),
            result("redis", Workload::Writes, 6000.0, 2000),
            result("ferrisdb", Workload::TimeTravel, 900.0, 1000),
            result("etcd", Workload::TimeTravel, 450.0, 1000),
            redis_tt,
        ];
        let t = ratio_table(&results, "ferrisdb");
        let writes = t.lines().find(|l| l.starts_with("| writes |")).unwrap();
        assert!(writes.contains("**2.00×** · 0.50×"), "{writes}");
        assert!(writes.contains("**0.50×** · 2.00×"), "{writes}");
        let tt = t
            .lines()
            .find(|l| l.starts_with("| time-travel |"))
            .unwrap();
        assert!(tt.contains("n/a (peer cannot)"), "{tt}");
        assert!(tt.contains("**2.00×**"), "{tt}");
        assert!(t.starts_with("| workload | ferrisdb ops/s (p99) | etcd ops/s (p99) |"));
    }

    #[test]
    fn cpu_table_divides_the_baselines_cpu_per_op_by_each_peers() {
        let cpu = |target, us: Option<f64>| {
            let mut r = result(target, Workload::Writes, 1000.0, 1000);
            r.server_cpu_us_per_op = us;
            r
        };
        let t = cpu_table(
            &[
                cpu("ferrisdb", Some(300.0)),
                cpu("postgres", Some(100.0)),
                cpu("etcd", None),
            ],
            "ferrisdb",
        );
        let writes = t.lines().find(|l| l.starts_with("| writes |")).unwrap();
        assert_eq!(writes, "| writes | 300 | 100 | – | 3.0× | – |", "{t}");
        assert!(cpu_table(&[cpu("ferrisdb", None)], "ferrisdb").starts_with("Not measured"));
    }

    #[test]
    fn summary_marks_open_loop_and_missing_targets() {
        let mut open = PhaseResult::empty("etcd", &spec(Workload::Writes, Some(500.0)));
        open.ops_per_sec = 480.0;
        open.missed = 7;
        let mut na = PhaseResult::empty("postgres", &spec(Workload::TimeTravel, None));
        na.not_applicable = Some("no history".into());
        let t = summary_table(&[open, na]);
        assert!(
            t.contains("| writes (open@500/s) | uniform | etcd | 480 |"),
            "{t}"
        );
        assert!(t.contains("(+7 missed)"), "{t}");
        assert!(
            t.contains("| time-travel | uniform | postgres | n/a |"),
            "{t}"
        );
    }
}
