//! Linearizability of single-key registers: a Wing–Gong search with Lowe's memoization (as
//! Porcupine does), key by key.
//!
//! The search linearizes one operation at a time: any operation invoked before the earliest
//! completion among the required operations not yet linearized may go next, if the register
//! allows it (a read must see the current value, a compare-and-set must find its expected
//! one). A (set of linearized operations, register value) pair already explored is never
//! explored again. `Ok` operations are required; `Info` writes may take effect at any point
//! after their invocation or never; `Fail` operations and `Info` reads change nothing and are
//! left out. An `Info` write whose value nobody observed is left out too: taking effect
//! "never" is always allowed for it and explains the same reads.
//!
//! When a key has no linearization, the checker finds the shortest prefix (by completion of
//! its acknowledged operations) that has none and names the operation that ends it.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::anomaly::{Anomaly, AnomalyKind};
use crate::elle_derived::describe;
use crate::history::{History, Key, Op, Operation, Outcome};

/// How far the search may go, so a run in CI cannot blow up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Keys with more (kept) operations than this are not checked.
    pub max_ops_per_key: usize,
    /// The search of one key gives up after exploring this many states.
    pub max_states: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_ops_per_key: 5_000,
            max_states: 1_000_000,
        }
    }
}

/// A key that was not checked, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unchecked {
    /// The register.
    pub key: Key,
    /// Its operations that the search would have had to place.
    pub operations: usize,
    /// Why it was not checked.
    pub reason: String,
}

/// The register part of a check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LinearizabilityCheck {
    /// Register operations in the history.
    pub operations: usize,
    /// Keys whose histories were found linearizable.
    pub keys_linearizable: usize,
    /// Keys with no linearization, one anomaly each.
    pub anomalies: Vec<Anomaly>,
    /// Keys too large to check.
    pub unchecked: Vec<Unchecked>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read(Option<u64>),
    Write(u64),
    Cas(Option<u64>, u64),
}

/// One operation as the search sees it.
#[derive(Debug, Clone, Copy)]
struct ROp<'a> {
    op: &'a Operation,
    invoke: u64,
    /// `u64::MAX` for an operation that need not take effect.
    complete: u64,
    required: bool,
    kind: Kind,
}

impl ROp<'_> {
    /// The register after this operation, if it may take effect when the register is `state`.
    fn step(&self, state: Option<u64>) -> Option<Option<u64>> {
        match self.kind {
            Kind::Read(v) => (v == state).then_some(state),
            Kind::Write(v) => Some(Some(v)),
            Kind::Cas(expected, new) => (expected == state).then_some(Some(new)),
        }
    }
}

/// Checks every register key of `history`.
pub fn check_registers(history: &History, limits: Limits) -> LinearizabilityCheck {
    let mut by_key: HashMap<Key, Vec<&Operation>> = HashMap::new();
    for op in &history.operations {
        let key = match op.op {
            Op::RegisterRead { key, .. }
            | Op::RegisterWrite { key, .. }
            | Op::RegisterCas { key, .. } => key,
            Op::Txn(_) => continue,
        };
        by_key.entry(key).or_default().push(op);
    }
    let mut out = LinearizabilityCheck {
        operations: by_key.values().map(Vec::len).sum(),
        ..LinearizabilityCheck::default()
    };
    let mut keys: Vec<Key> = by_key.keys().copied().collect();
    keys.sort_unstable();
    for key in keys {
        let ops = relevant(&by_key[&key]);
        if ops.len() > limits.max_ops_per_key {
            out.unchecked.push(Unchecked {
                key,
                operations: ops.len(),
                reason: format!("more than {} operations", limits.max_ops_per_key),
            });
            continue;
        }
        match linearizable(&ops, limits.max_states) {
            Some(true) => out.keys_linearizable += 1,
            Some(false) => out.anomalies.push(explain(key, &ops, limits.max_states)),
            None => out.unchecked.push(Unchecked {
                key,
                operations: ops.len(),
                reason: format!("the search explored more than {} states", limits.max_states),
            }),
        }
    }
    out
}

/// The operations the search must place, sorted by invocation.
fn relevant<'a>(ops: &[&'a Operation]) -> Vec<ROp<'a>> {
    let kind = |op: &Operation| match op.op {
        Op::RegisterRead { value, .. } => Kind::Read(value),
        Op::RegisterWrite { value, .. } => Kind::Write(value),
        Op::RegisterCas { expected, new, .. } => Kind::Cas(expected, new),
        Op::Txn(_) => Kind::Read(None),
    };
    // Values acknowledged operations depend on; then, to a fixed point, the values that the
    // unknown writes producing those depend on.
    let mut used: HashSet<u64> = HashSet::new();
    for op in ops.iter().filter(|o| o.outcome == Outcome::Ok) {
        match kind(op) {
            Kind::Read(Some(v)) | Kind::Cas(Some(v), _) => {
                used.insert(v);
            }
            _ => {}
        }
    }
    loop {
        let before = used.len();
        for op in ops.iter().filter(|o| o.outcome == Outcome::Info) {
            if let Kind::Cas(Some(e), new) = kind(op)
                && used.contains(&new)
            {
                used.insert(e);
            }
        }
        if used.len() == before {
            break;
        }
    }
    let mut out: Vec<ROp<'a>> = ops
        .iter()
        .filter_map(|&op| {
            let k = kind(op);
            let required = match op.outcome {
                Outcome::Ok => true,
                Outcome::Fail => return None,
                Outcome::Info => match k {
                    Kind::Read(_) => return None,
                    Kind::Write(v) | Kind::Cas(_, v) if !used.contains(&v) => return None,
                    _ => false,
                },
            };
            Some(ROp {
                op,
                invoke: op.invoke_ns,
                complete: if required { op.complete_ns } else { u64::MAX },
                required,
                kind: k,
            })
        })
        .collect();
    out.sort_by_key(|o| (o.invoke, o.op.index));
    out
}

/// Whether `ops` have a linearization (`None`: the search gave up).
fn linearizable(ops: &[ROp<'_>], max_states: usize) -> Option<bool> {
    let words = ops.len().div_ceil(64);
    let mut seen: HashSet<(Vec<u64>, Option<u64>)> = HashSet::new();
    // (linearized set, register value, first operation not linearized)
    let mut stack: Vec<(Vec<u64>, Option<u64>, usize)> = vec![(vec![0; words], None, 0)];
    let is_set = |bits: &[u64], i: usize| bits[i / 64] & (1 << (i % 64)) != 0;
    while let Some((bits, state, lo)) = stack.pop() {
        // The earliest completion among required operations not yet linearized: nothing
        // invoked after it may go before it.
        let mut deadline = u64::MAX;
        let mut remaining = false;
        for (i, o) in ops.iter().enumerate().skip(lo) {
            if o.invoke > deadline {
                break;
            }
            if o.required && !is_set(&bits, i) {
                remaining = true;
                deadline = deadline.min(o.complete);
            }
        }
        if !remaining {
            // The scan found no required operation left (with none found the deadline stays
            // unbounded, so it scanned to the end): everything acknowledged is placed.
            return Some(true);
        }
        for (i, o) in ops.iter().enumerate().skip(lo) {
            if o.invoke > deadline {
                break;
            }
            if is_set(&bits, i) {
                continue;
            }
            let Some(next) = o.step(state) else { continue };
            let mut nbits = bits.clone();
            nbits[i / 64] |= 1 << (i % 64);
            if seen.insert((nbits.clone(), next)) {
                let mut nlo = lo;
                while nlo < ops.len() && is_set(&nbits, nlo) {
                    nlo += 1;
                }
                stack.push((nbits, next, nlo));
            }
        }
        if seen.len() > max_states {
            return None;
        }
    }
    Some(false)
}

/// The anomaly for a key with no linearization, naming the shortest failing prefix.
fn explain(key: Key, ops: &[ROp<'_>], max_states: usize) -> Anomaly {
    let mut required: Vec<&ROp<'_>> = ops.iter().filter(|o| o.required).collect();
    required.sort_by_key(|o| (o.complete, o.op.index));
    // The prefix ending with the j-th completion: later operations invoked before it are
    // pending (their effects optional), the rest left out. Failing is monotone in j.
    let prefix = |j: usize| -> Vec<ROp<'_>> {
        let cut = required[j].complete;
        ops.iter()
            .filter(|o| o.invoke <= cut)
            .filter_map(|o| {
                if o.required && o.complete > cut {
                    match o.kind {
                        Kind::Read(_) => None,
                        _ => Some(ROp {
                            required: false,
                            complete: u64::MAX,
                            ..*o
                        }),
                    }
                } else {
                    Some(*o)
                }
            })
            .collect()
    };
    let (mut lo, mut hi) = (0usize, required.len().saturating_sub(1));
    let mut exact = true;
    while lo < hi {
        let mid = (lo + hi) / 2;
        match linearizable(&prefix(mid), max_states) {
            Some(false) => hi = mid,
            Some(true) => lo = mid + 1,
            None => {
                exact = false;
                break;
            }
        }
    }
    let Some(culprit) = required.get(hi) else {
        return Anomaly {
            kind: AnomalyKind::NonLinearizable,
            key: Some(key),
            ops: Vec::new(),
            explanation: format!("register {key}: no linearization"),
            cycle: Vec::new(),
        };
    };
    let window: Vec<&ROp<'_>> = ops
        .iter()
        .filter(|o| o.op.index != culprit.op.index && o.invoke <= culprit.complete)
        .filter(|o| o.complete >= culprit.invoke || !o.required)
        .collect();
    let mut before: Vec<&ROp<'_>> = ops
        .iter()
        .filter(|o| o.required && o.complete < culprit.invoke && !matches!(o.kind, Kind::Read(_)))
        .collect();
    before.sort_by_key(|o| o.complete);
    let before = &before[before.len().saturating_sub(3)..];
    let ms = |ns: u64| ns as f64 / 1e6;
    let mut explanation = format!(
        "register {key}: the history up to the completion of op #{} has no linearization{}; \
         that operation cannot be placed after what completed before it \
         (invoked {:.3} ms, completed {:.3} ms): {}",
        culprit.op.index,
        if exact {
            ""
        } else {
            " (prefix search cut short)"
        },
        ms(culprit.invoke),
        ms(culprit.complete),
        describe(culprit.op)
    );
    explanation.push_str("\n    last writes acknowledged before it was invoked:");
    for o in before {
        explanation.push_str(&format!(
            "\n      [{:.3}–{:.3} ms] {}",
            ms(o.invoke),
            ms(o.complete),
            describe(o.op)
        ));
    }
    explanation.push_str("\n    concurrent with it:");
    for o in &window {
        let end = if o.required {
            format!("{:.3}", ms(o.complete))
        } else {
            "?".to_string()
        };
        explanation.push_str(&format!(
            "\n      [{:.3}–{end} ms] {}",
            ms(o.invoke),
            describe(o.op)
        ));
    }
    let mut involved: Vec<u64> = before
        .iter()
        .chain(window.iter())
        .map(|o| o.op.index)
        .collect();
    involved.push(culprit.op.index);
    involved.sort_unstable();
    Anomaly {
        kind: AnomalyKind::NonLinearizable,
        key: Some(key),
        ops: involved,
        explanation,
        cycle: Vec::new(),
    }
}
