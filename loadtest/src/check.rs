//! The history checker's one entry point: [`check`] runs the list-append checker over the
//! transactions and the linearizability checker over the registers, and gathers what they
//! found into a [`CheckReport`] that prints for people and serializes to JSON.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::anomaly::{Anomaly, AnomalyKind, LostWrite, RefusedPresent};
use crate::attempt::UNPARSEABLE;
use crate::elle::check_list_append;
use crate::elle_derived::describe;
use crate::history::History;
use crate::linearizable::{Limits, Unchecked, check_registers};

/// Operations by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Acknowledged.
    pub ok: usize,
    /// Refused.
    pub fail: usize,
    /// Unknown outcome.
    pub info: usize,
}

/// Everything the checker found in one history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Operations by outcome (both workloads).
    pub counts: Counts,
    /// List-append transactions checked.
    pub transactions: usize,
    /// Register operations checked.
    pub register_operations: usize,
    /// Register keys found linearizable.
    pub registers_linearizable: usize,
    /// Acknowledged appends missing from a later read of their key.
    pub lost_writes: Vec<LostWrite>,
    /// Refused appends that a read observed.
    pub refused_present: Vec<RefusedPresent>,
    /// Anomalies: dependency cycles, reads that no order explains, non-linearizable
    /// registers.
    pub anomalies: Vec<Anomaly>,
    /// Committed appends with no read invoked after them (nobody could tell if they were
    /// lost; the workloads' final reads make this 0 when they succeed).
    pub unverified_appends: usize,
    /// Register keys too large to check.
    pub unchecked_registers: Vec<Unchecked>,
}

impl CheckReport {
    /// Whether the history shows no lost write, no refused write present and no anomaly.
    /// Unchecked keys and unverified appends do not make it invalid; the report lists them.
    pub fn is_valid(&self) -> bool {
        self.lost_writes.is_empty() && self.refused_present.is_empty() && self.anomalies.is_empty()
    }

    /// Anomalies by kind name.
    pub fn anomaly_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for a in &self.anomalies {
            *counts.entry(a.kind.name()).or_insert(0) += 1;
        }
        counts
    }
}

/// Checks `history` with the default search limits.
pub fn check(history: &History) -> CheckReport {
    check_with(history, Limits::default())
}

/// Checks `history`, bounding the register search by `limits`.
pub fn check_with(history: &History, limits: Limits) -> CheckReport {
    let (ok, fail, info) = history.counts();
    let lists = check_list_append(history);
    let registers = check_registers(history, limits);
    let mut anomalies: Vec<Anomaly> = history
        .operations
        .iter()
        .filter(|op| op.error.as_deref() == Some(UNPARSEABLE))
        .map(|op| Anomaly {
            kind: AnomalyKind::Unparseable,
            key: None,
            ops: vec![op.index],
            explanation: format!(
                "{} read bytes that do not decode as the workload's values",
                describe(op)
            ),
            cycle: Vec::new(),
        })
        .collect();
    anomalies.extend(lists.anomalies);
    anomalies.extend(registers.anomalies);
    CheckReport {
        counts: Counts { ok, fail, info },
        transactions: lists.transactions,
        register_operations: registers.operations,
        registers_linearizable: registers.keys_linearizable,
        lost_writes: lists.lost_writes,
        refused_present: lists.refused_present,
        anomalies,
        unverified_appends: lists.unverified_appends,
        unchecked_registers: registers.unchecked,
    }
}

/// How many items of one kind the text report prints before summarizing the rest.
const SHOWN: usize = 10;

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "history: {} ok, {} refused, {} unknown; {} list-append transactions, {} register operations",
            self.counts.ok,
            self.counts.fail,
            self.counts.info,
            self.transactions,
            self.register_operations
        )?;
        writeln!(
            f,
            "verdict: {}",
            if self.is_valid() { "valid" } else { "INVALID" }
        )?;
        writeln!(f, "lost writes: {}", self.lost_writes.len())?;
        for l in self.lost_writes.iter().take(SHOWN) {
            writeln!(
                f,
                "  key {} value {}: appended by op #{} ({:?}), missing from op #{}'s read of {} elements",
                l.key, l.value, l.writer, l.writer_outcome, l.reader, l.read_length
            )?;
        }
        more(f, self.lost_writes.len())?;
        writeln!(f, "refused writes present: {}", self.refused_present.len())?;
        for r in self.refused_present.iter().take(SHOWN) {
            writeln!(
                f,
                "  key {} value {}: op #{} was refused ({}), op #{} read it",
                r.key,
                r.value,
                r.writer,
                r.error.as_deref().unwrap_or("no code"),
                r.reader
            )?;
        }
        more(f, self.refused_present.len())?;
        let counts = self.anomaly_counts();
        write!(f, "anomalies: {}", self.anomalies.len())?;
        if !counts.is_empty() {
            let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
            write!(f, " ({})", parts.join(", "))?;
        }
        writeln!(f)?;
        for (kind, _) in counts {
            let of_kind: Vec<&Anomaly> = self
                .anomalies
                .iter()
                .filter(|a| a.kind.name() == kind)
                .collect();
            for a in of_kind.iter().take(SHOWN) {
                writeln!(f, "  {}: {}", a.kind, a.explanation)?;
            }
            more(f, of_kind.len())?;
        }
        if self.unverified_appends > 0 {
            writeln!(
                f,
                "unverified appends (no read after them): {}",
                self.unverified_appends
            )?;
        }
        for u in &self.unchecked_registers {
            writeln!(
                f,
                "register {} not checked ({} operations): {}",
                u.key, u.operations, u.reason
            )?;
        }
        Ok(())
    }
}

fn more(f: &mut fmt::Formatter<'_>, n: usize) -> fmt::Result {
    if n > SHOWN {
        writeln!(f, "  … and {} more", n - SHOWN)?;
    }
    Ok(())
}
