//! The report of a chaos run: what was injected, what the clients saw, what the checkers
//! found, and how long availability took to come back after each kind of fault — as JSON
//! (`chaos.json`) and markdown (`chaos.md`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::chaos_workload::Verdict;

/// One fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct FaultEvent {
    /// Position in the schedule.
    pub index: u64,
    /// `kill/safekeeper`, `partition/client_compute`, …
    pub kind: String,
    /// The process or object it hit.
    pub target: String,
    /// How long it lasted, in ms.
    pub hold_ms: u64,
    /// From heal to the first successful operation, in ms; `None` if it never came.
    pub recovery_ms: Option<u64>,
    /// Whether it was skipped (and why, in `note`).
    pub skipped: bool,
    /// What else happened (a process that exited, a target that did not exist).
    pub note: String,
}

/// Figures for one kind of fault.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KindStats {
    /// Faults injected.
    pub injected: u64,
    /// Faults skipped (no target yet, or not possible here).
    pub skipped: u64,
    /// Faults after which availability did not come back in time.
    pub unrecovered: u64,
    /// Recovery time, median, ms.
    pub recovery_p50_ms: Option<u64>,
    /// Recovery time, 99th percentile, ms.
    pub recovery_p99_ms: Option<u64>,
    /// Recovery time, worst, ms.
    pub recovery_max_ms: Option<u64>,
}

/// Operations by outcome.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct OpCounts {
    /// Acknowledged.
    pub ok: u64,
    /// Refused (did not happen).
    pub fail: u64,
    /// Unknown outcome.
    pub info: u64,
}

/// The whole report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChaosReport {
    /// The seed (same seed, same schedule).
    pub seed: u64,
    /// The command line that ran it.
    pub command: String,
    /// Faults asked for (`--faults`), if bounded by count.
    pub faults_requested: Option<u64>,
    /// Wall-clock length of the run, s.
    pub duration_secs: f64,
    /// Faults injected in all (skipped ones excluded).
    pub faults_injected: u64,
    /// Per kind of fault.
    pub by_kind: BTreeMap<String, KindStats>,
    /// Kinds left out of the whole run, and why.
    pub disabled: Vec<String>,
    /// Operations of the checked workloads, by outcome.
    pub operations: OpCounts,
    /// Per workload: its name and the checker's verdict.
    pub verdicts: Vec<(String, Verdict)>,
    /// Acknowledged writes lost (all workloads).
    pub lost: u64,
    /// Refused writes that appeared (all workloads).
    pub refused_present: u64,
    /// Other anomalies (all workloads and the replica reads).
    pub anomalies: u64,
    /// Reads through the replica, and how many returned what no write could have produced.
    pub replica_reads: u64,
    /// Processes that exited without being killed by the runner: name → times.
    pub unexpected_exits: BTreeMap<String, u64>,
    /// Faults after which availability never came back within the recovery limit.
    pub unrecovered: u64,
    /// Every fault, in order.
    pub events: Vec<FaultEvent>,
    /// What kept a safekeeper from holding the whole log again after the run (damage never
    /// repaired, a log left behind); empty when all rejoined.
    pub stragglers: Vec<String>,
    /// Whether the run passed: nothing lost, nothing refused present, no anomaly, every fault
    /// recovered from.
    pub valid: bool,
}

/// The `q`-th percentile (nearest rank) of sorted `values`.
pub fn percentile(sorted: &[u64], q: u64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() as u64 * q).div_ceil(100).max(1) as usize;
    sorted.get(rank - 1).copied()
}

impl ChaosReport {
    /// Fills `by_kind`, the totals and `valid` from `events` and `verdicts`.
    pub fn summarize(&mut self) {
        let mut recoveries: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        self.by_kind.clear();
        self.faults_injected = 0;
        self.unrecovered = 0;
        for e in &self.events {
            let stats = self.by_kind.entry(e.kind.clone()).or_default();
            if e.skipped {
                stats.skipped += 1;
                continue;
            }
            stats.injected += 1;
            self.faults_injected += 1;
            match e.recovery_ms {
                Some(ms) => recoveries.entry(e.kind.clone()).or_default().push(ms),
                None => {
                    stats.unrecovered += 1;
                    self.unrecovered += 1;
                }
            }
        }
        for (kind, mut values) in recoveries {
            values.sort_unstable();
            if let Some(stats) = self.by_kind.get_mut(&kind) {
                stats.recovery_p50_ms = percentile(&values, 50);
                stats.recovery_p99_ms = percentile(&values, 99);
                stats.recovery_max_ms = values.last().copied();
            }
        }
        self.lost = self.verdicts.iter().map(|(_, v)| v.lost).sum();
        self.refused_present = self.verdicts.iter().map(|(_, v)| v.refused_present).sum();
        self.anomalies = self.verdicts.iter().map(|(_, v)| v.anomalies).sum();
        self.valid = self.lost == 0
            && self.refused_present == 0
            && self.anomalies == 0
            && self.unrecovered == 0
            && self.stragglers.is_empty();
    }

    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let verdict = if self.valid { "VALID" } else { "INVALID" };
        let _ = writeln!(s, "# Chaos run: {verdict}\n");
        let _ = writeln!(
            s,
            "- seed: `{}` (rerun with `--seed {}`)",
            self.seed, self.seed
        );
        let _ = writeln!(s, "- command: `{}`", self.command);
        let _ = writeln!(
            s,
            "- {} faults injected in {:.0} s",
            self.faults_injected, self.duration_secs
        );
        let o = self.operations;
        let _ = writeln!(
            s,
            "- operations: {} ok, {} fail (refused), {} info (unknown)",
            o.ok, o.fail, o.info
        );
        let _ = writeln!(
            s,
            "- **lost: {}**, **refused present: {}**, **anomalies: {}**, unrecovered faults: {}",
            self.lost, self.refused_present, self.anomalies, self.unrecovered
        );
        let _ = writeln!(s, "- replica reads checked: {}", self.replica_reads);
        if self.stragglers.is_empty() {
            let _ = writeln!(s, "- every safekeeper held the whole log again at the end");
        } else {
            let _ = writeln!(
                s,
                "- **safekeepers that never rejoined**: {}",
                self.stragglers.join("; ")
            );
        }
        if !self.unexpected_exits.is_empty() {
            let exits: Vec<String> = self
                .unexpected_exits
                .iter()
                .map(|(n, c)| format!("{n} ×{c}"))
                .collect();
            let _ = writeln!(
                s,
                "- processes that exited on their own (restarted by the runner): {}",
                exits.join(", ")
            );
        }
        let _ = writeln!(
            s,
            "\n| fault | injected | skipped | unrecovered | recovery p50 | p99 | max |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
        let ms = |v: Option<u64>| v.map_or("–".to_string(), |v| format!("{v} ms"));
        for (kind, k) in &self.by_kind {
            let _ = writeln!(
                s,
                "| {kind} | {} | {} | {} | {} | {} | {} |",
                k.injected,
                k.skipped,
                k.unrecovered,
                ms(k.recovery_p50_ms),
                ms(k.recovery_p99_ms),
                ms(k.recovery_max_ms)
            );
        }
        if !self.disabled.is_empty() {
            let _ = writeln!(s, "\nNot injected in this run:\n");
            for d in &self.disabled {
                let _ = writeln!(s, "- {d}");
            }
        }
        let _ = writeln!(s, "\n## Checkers\n");
        for (name, v) in &self.verdicts {
            let _ = writeln!(
                s,
                "- {name}: lost {}, refused present {}, anomalies {}",
                v.lost, v.refused_present, v.anomalies
            );
            for d in &v.details {
                let _ = writeln!(s, "  - {d}");
            }
        }
        let notes: Vec<&FaultEvent> = self.events.iter().filter(|e| !e.note.is_empty()).collect();
        if !notes.is_empty() {
            let _ = writeln!(s, "\n## Notes on single faults\n");
            for e in notes.iter().take(100) {
                let _ = writeln!(s, "- #{} {} on {}: {}", e.index, e.kind, e.target, e.note);
            }
            if notes.len() > 100 {
                let _ = writeln!(s, "- … {} more in chaos.json", notes.len() - 100);
            }
        }
        s
    }

    /// Writes `chaos.json` and `chaos.md` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("chaos.json"), serde_json::to_vec_pretty(self)?)?;
        std::fs::write(dir.join("chaos.md"), self.markdown())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_validity() {
        assert_eq!(percentile(&[], 50), None);
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), Some(50));
        assert_eq!(percentile(&v, 99), Some(99));
        assert_eq!(percentile(&[7], 99), Some(7));
        let event = |kind: &str, recovery_ms, skipped| FaultEvent {
            index: 0,
            kind: kind.into(),
            target: "x".into(),
            hold_ms: 1,
            recovery_ms,
            skipped,
            note: String::new(),
        };
        let mut r = ChaosReport {
            events: vec![
                event("kill/compute", Some(10), false),
                event("kill/compute", Some(30), false),
                event("corrupt/cold_segment", None, true),
            ],
            ..ChaosReport::default()
        };
        r.summarize();
        assert!(r.valid);
        assert_eq!(r.faults_injected, 2);
        assert_eq!(r.by_kind["kill/compute"].recovery_p99_ms, Some(30));
        assert_eq!(r.by_kind["corrupt/cold_segment"].skipped, 1);
        r.events.push(event("pause/pageserver", None, false));
        r.verdicts.push((
            "survive".into(),
            Verdict {
                lost: 1,
                ..Verdict::default()
            },
        ));
        r.summarize();
        assert!(!r.valid);
        assert_eq!((r.unrecovered, r.lost), (1, 1));
        assert!(r.markdown().contains("INVALID"));
    }
}
