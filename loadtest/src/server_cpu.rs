//! CPU time spent by a target's server processes, so each phase can report CPU per operation
//! for every target of one run — FerrisDB's compute, safekeepers and pageserver against
//! PostgreSQL's postmaster and backends — measured over the same window as its throughput.
//!
//! Instructions would be the steadier measure, but this machine class exposes no PMU to the
//! guest (`perf stat -e instructions` is `<not supported>`); CPU time from `/proc` is what
//! every Linux gives, and the ratio of two targets measured minutes apart on one idle machine
//! is what the figures are for.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat`'s times (USER_HZ, 100 on every Linux ABI the
/// project builds for).
const TICKS_PER_SEC: u64 = 100;

/// The root processes of one target; their descendants count too (FerrisDB's `dev` starts
/// the services as children; PostgreSQL forks a backend per connection).
#[derive(Debug, Clone, Default)]
pub struct ServerProcesses {
    roots: Vec<u32>,
}

impl ServerProcesses {
    /// The processes rooted at `roots` (none: nothing is measured).
    pub fn new(roots: Vec<u32>) -> ServerProcesses {
        ServerProcesses { roots }
    }

    /// User + system CPU time of the roots and all their descendants alive now, or `None`
    /// when there are no roots or `/proc` cannot be read.
    pub fn cpu_time(&self) -> Option<Duration> {
        if self.roots.is_empty() {
            return None;
        }
        let table = read_proc()?;
        let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (pid, stat) in &table {
            children.entry(stat.ppid).or_default().push(*pid);
        }
        let mut seen = BTreeSet::new();
        let mut stack: Vec<u32> = self.roots.clone();
        let mut ticks = 0u64;
        while let Some(pid) = stack.pop() {
            if !seen.insert(pid) {
                continue;
            }
            if let Some(stat) = table.get(&pid) {
                ticks += stat.ticks;
            }
            if let Some(c) = children.get(&pid) {
                stack.extend(c);
            }
        }
        Some(Duration::from_millis(ticks * 1000 / TICKS_PER_SEC))
    }
}

/// What this module needs of one process's `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    ppid: u32,
    /// utime + stime.
    ticks: u64,
}

/// Every process's parent and CPU ticks.
fn read_proc() -> Option<BTreeMap<u32, ProcStat>> {
    let mut table = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit between the listing and the read: skip it.
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(stat) = parse_stat(&text) {
            table.insert(pid, stat);
        }
    }
    Some(table)
}

/// Parses `pid (comm) state ppid … utime stime …`; the command name may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) … utime(11) stime(12).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcStat {
        ppid,
        ticks: utime + stime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let line = "4242 (post gres: a) b) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 1 0 \
                    123 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                ppid: 17,
                ticks: 281
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_tree_has_cpu_time_and_no_roots_has_none() {
        // Burn a little CPU so the count is above zero.
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert_ne!(x, 1);
        let me = ServerProcesses::new(vec![std::process::id()]);
        assert!(me.cpu_time().unwrap() > Duration::ZERO);
        assert_eq!(ServerProcesses::default().cpu_time(), None);
    }
}
