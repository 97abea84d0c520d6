//! The list-append checker (Elle's approach): what the reads of lists say about each key's
//! order of appends, and the anomalies visible without a dependency graph — reads of refused,
//! unknown or intermediate appends, duplicates, transactions that contradict themselves,
//! incompatible orders — plus the acknowledged appends that vanished. The dependency graph
//! and its cycles are in [`crate::elle_graph`].
//!
//! Every append writes a value unique to its key, and a read returns the whole list, so the
//! longest read of a key is its order of appends so far and every other read must be a prefix
//! of it. A read of length `m` observed the versions up to the `m`-th append: it depends on
//! that append's transaction (wr), and the transaction of append `m + 1` overwrote what it
//! saw (rw).

use std::collections::{HashMap, HashSet};

use crate::anomaly::{Anomaly, AnomalyKind, LostWrite, RefusedPresent};
use crate::elle_derived::{Derived, Read, Txn, describe, list_text};
use crate::history::{History, Key, MicroOp, Op, Outcome};

/// The list-append part of a check.
#[derive(Debug, Default)]
pub struct ListAppendCheck {
    /// Transactions in the history.
    pub transactions: usize,
    /// Anomalies found (cycles included).
    pub anomalies: Vec<Anomaly>,
    /// Acknowledged appends missing from a later read.
    pub lost_writes: Vec<LostWrite>,
    /// Refused appends that a read observed.
    pub refused_present: Vec<RefusedPresent>,
    /// Committed appends no read was invoked after, so nobody could tell whether they were
    /// lost.
    pub unverified_appends: usize,
}

fn anomaly(kind: AnomalyKind, key: Option<Key>, ops: Vec<u64>, explanation: String) -> Anomaly {
    Anomaly {
        kind,
        key,
        ops,
        explanation,
        cycle: Vec::new(),
    }
}

/// Checks the list-append transactions of `history`.
pub fn check_list_append(history: &History) -> ListAppendCheck {
    let txns: Vec<Txn<'_>> = history
        .operations
        .iter()
        .filter_map(|op| match &op.op {
            Op::Txn(mops) => Some(Txn { op, mops }),
            _ => None,
        })
        .collect();
    let mut out = ListAppendCheck {
        transactions: txns.len(),
        ..ListAppendCheck::default()
    };
    let writers = writers(&txns, &mut out.anomalies);
    let mut reads = reads(&txns);
    let observed = observe(&txns, &writers, &reads, &mut out);
    internal(&txns, &mut out.anomalies);
    let orders = orders(&txns, &mut reads, &mut out.anomalies);
    intermediate(&txns, &writers, &reads, &mut out.anomalies);
    let committed: Vec<bool> = txns
        .iter()
        .enumerate()
        .map(|(i, t)| match t.op.outcome {
            Outcome::Ok => true,
            Outcome::Fail => false,
            Outcome::Info => observed.contains_key(&i),
        })
        .collect();
    let derived = Derived {
        txns,
        writers,
        reads,
        orders,
        committed,
    };
    lost(&derived, &observed, &mut out);
    out.anomalies
        .extend(crate::elle_graph::cycle_anomalies(&derived));
    out
}

/// Which transaction appended each (key, value); a value appended twice is a workload bug.
fn writers(txns: &[Txn<'_>], anomalies: &mut Vec<Anomaly>) -> HashMap<(Key, u64), usize> {
    let mut writers = HashMap::new();
    for (i, t) in txns.iter().enumerate() {
        for m in t.mops {
            let MicroOp::Append { key, value } = m else {
                continue;
            };
            match writers.entry((*key, *value)) {
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(i);
                }
                std::collections::hash_map::Entry::Occupied(e) => {
                    let first = *e.get();
                    if first != i {
                        anomalies.push(anomaly(
                            AnomalyKind::DuplicateAppend,
                            Some(*key),
                            vec![txns[first].op.index, t.op.index],
                            format!(
                                "{} and {} both append {value} to key {key}",
                                describe(txns[first].op),
                                describe(t.op)
                            ),
                        ));
                    }
                }
            }
        }
    }
    writers
}

/// The completed reads of `Ok` transactions.
fn reads<'a>(txns: &[Txn<'a>]) -> Vec<Read<'a>> {
    let mut reads = Vec::new();
    for (i, t) in txns.iter().enumerate() {
        if t.op.outcome != Outcome::Ok {
            continue;
        }
        for m in t.mops {
            if let MicroOp::Read {
                key,
                value: Some(list),
            } = m
            {
                reads.push(Read {
                    txn: i,
                    key: *key,
                    list,
                    consistent: true,
                });
            }
        }
    }
    reads
}

/// Checks every element read against its writer (garbage, refused, duplicated) and returns,
/// for each transaction with an observed append, when the first read observing it completed.
fn observe(
    txns: &[Txn<'_>],
    writers: &HashMap<(Key, u64), usize>,
    reads: &[Read<'_>],
    out: &mut ListAppendCheck,
) -> HashMap<usize, u64> {
    let mut observed: HashMap<usize, u64> = HashMap::new();
    let mut garbage = HashSet::new();
    let mut refused = HashSet::new();
    for r in reads {
        let reader = txns[r.txn].op;
        let mut seen = HashSet::new();
        let mut duplicated = Vec::new();
        for &v in r.list {
            if !seen.insert(v) {
                duplicated.push(v);
            }
            let Some(&w) = writers.get(&(r.key, v)) else {
                if garbage.insert((r.key, v)) {
                    out.anomalies.push(anomaly(
                        AnomalyKind::Garbage,
                        Some(r.key),
                        vec![reader.index],
                        format!(
                            "{} read {v} in key {}, which no operation appended",
                            describe(reader),
                            r.key
                        ),
                    ));
                }
                continue;
            };
            let writer = txns[w].op;
            let first = observed.entry(w).or_insert(reader.complete_ns);
            *first = (*first).min(reader.complete_ns);
            if writer.outcome == Outcome::Fail {
                out.anomalies.push(anomaly(
                    AnomalyKind::G1a,
                    Some(r.key),
                    vec![writer.index, reader.index],
                    format!(
                        "{} read {v} in key {}, appended by {}, which was refused ({})",
                        describe(reader),
                        r.key,
                        describe(writer),
                        writer.error.as_deref().unwrap_or("no code")
                    ),
                ));
                if refused.insert((r.key, v)) {
                    out.refused_present.push(RefusedPresent {
                        key: r.key,
                        value: v,
                        writer: writer.index,
                        error: writer.error.clone(),
                        reader: reader.index,
                    });
                }
            }
        }
        if !duplicated.is_empty() {
            out.anomalies.push(anomaly(
                AnomalyKind::DuplicateElements,
                Some(r.key),
                vec![reader.index],
                format!(
                    "{} read key {} = {}, which holds {:?} more than once",
                    describe(reader),
                    r.key,
                    list_text(r.list),
                    duplicated
                ),
            ));
        }
    }
    observed
}

/// What a transaction knows of a key from its own earlier operations.
enum Known {
    /// It read the whole list (and perhaps appended since).
    Whole(Vec<u64>),
    /// It only appended: the list must end with these.
    Suffix(Vec<u64>),
}

/// Internal consistency: a transaction's reads reflect its own earlier reads and appends.
fn internal(txns: &[Txn<'_>], anomalies: &mut Vec<Anomaly>) {
    for t in txns.iter().filter(|t| t.op.outcome == Outcome::Ok) {
        let mut known: HashMap<Key, Known> = HashMap::new();
        for m in t.mops {
            match m {
                MicroOp::Append { key, value } => match known.get_mut(key) {
                    Some(Known::Whole(l) | Known::Suffix(l)) => l.push(*value),
                    None => {
                        known.insert(*key, Known::Suffix(vec![*value]));
                    }
                },
                MicroOp::Read {
                    key,
                    value: Some(list),
                } => {
                    let expected = match known.get(key) {
                        Some(Known::Whole(l)) if l != list => {
                            Some(format!("exactly {}", list_text(l)))
                        }
                        Some(Known::Suffix(s)) if !list.ends_with(s) => {
                            Some(format!("a list ending in its own appends {}", list_text(s)))
                        }
                        _ => None,
                    };
                    if let Some(expected) = expected {
                        anomalies.push(anomaly(
                            AnomalyKind::Internal,
                            Some(*key),
                            vec![t.op.index],
                            format!(
                                "{} read key {key} = {} but its own earlier operations imply {expected}",
                                describe(t.op),
                                list_text(list)
                            ),
                        ));
                    }
                    known.insert(*key, Known::Whole(list.clone()));
                }
                MicroOp::Read { value: None, .. } => {}
            }
        }
    }
}

/// Each key's order (its longest read); reads that are not a prefix of it are marked and
/// reported, once per key.
fn orders<'a>(
    txns: &[Txn<'a>],
    reads: &mut [Read<'a>],
    anomalies: &mut Vec<Anomaly>,
) -> HashMap<Key, &'a [u64]> {
    let mut longest: HashMap<Key, Read<'a>> = HashMap::new();
    for r in reads.iter() {
        let entry = longest.entry(r.key).or_insert(*r);
        if r.list.len() > entry.list.len() {
            *entry = *r;
        }
    }
    let mut reported = HashSet::new();
    for r in reads.iter_mut() {
        let long = longest[&r.key];
        if !long.list.starts_with(r.list) {
            r.consistent = false;
            if reported.insert(r.key) {
                let (a, b) = (txns[r.txn].op, txns[long.txn].op);
                anomalies.push(anomaly(
                    AnomalyKind::IncompatibleOrder,
                    Some(r.key),
                    vec![a.index, b.index],
                    format!(
                        "key {}: {} read {} and {} read {}; neither is a prefix of the other, \
                         so no single order of appends explains both",
                        r.key,
                        describe(a),
                        list_text(r.list),
                        describe(b),
                        list_text(long.list)
                    ),
                ));
            }
        }
    }
    longest.into_iter().map(|(k, r)| (k, r.list)).collect()
}

/// G1b: a read whose last element is an append its transaction followed with another append
/// to the same key.
fn intermediate(
    txns: &[Txn<'_>],
    writers: &HashMap<(Key, u64), usize>,
    reads: &[Read<'_>],
    anomalies: &mut Vec<Anomaly>,
) {
    for r in reads {
        let Some(&last) = r.list.last() else { continue };
        let Some(&w) = writers.get(&(r.key, last)) else {
            continue;
        };
        if w == r.txn {
            continue;
        }
        let appends = txns[w].appends_to(r.key);
        if appends.last() != Some(&last) {
            let (reader, writer) = (txns[r.txn].op, txns[w].op);
            anomalies.push(anomaly(
                AnomalyKind::G1b,
                Some(r.key),
                vec![writer.index, reader.index],
                format!(
                    "{} read key {} = {}, ending in {last}, an intermediate append of {}, \
                     which appended {} to that key in all",
                    describe(reader),
                    r.key,
                    list_text(r.list),
                    describe(writer),
                    list_text(&appends)
                ),
            ));
        }
    }
}

/// Lost writes: a committed append missing from the longest read of its key invoked after
/// the append was known to have committed (for `Ok`: its completion; for `Info` with an
/// observed append: the completion of the first read that observed one).
fn lost(derived: &Derived<'_>, observed: &HashMap<usize, u64>, out: &mut ListAppendCheck) {
    // Per key: reads by invocation time, and for each position the longest read at or after it.
    let mut by_key: HashMap<Key, Vec<(u64, usize)>> = HashMap::new();
    for (i, r) in derived.reads.iter().enumerate() {
        by_key
            .entry(r.key)
            .or_default()
            .push((derived.txns[r.txn].op.invoke_ns, i));
    }
    let mut best_after: HashMap<Key, Vec<usize>> = HashMap::new();
    for (key, rs) in by_key.iter_mut() {
        rs.sort_unstable();
        let mut best = vec![0usize; rs.len()];
        for j in (0..rs.len()).rev() {
            let here = rs[j].1;
            best[j] = match best.get(j + 1) {
                Some(&b) if derived.reads[b].list.len() >= derived.reads[here].list.len() => b,
                _ => here,
            };
        }
        best_after.insert(*key, best);
    }
    for (i, t) in derived.txns.iter().enumerate() {
        if !derived.committed[i] {
            continue;
        }
        let known_at = match t.op.outcome {
            Outcome::Ok => t.op.complete_ns,
            _ => match observed.get(&i) {
                Some(&at) => at,
                None => continue,
            },
        };
        for m in t.mops {
            let MicroOp::Append { key, value } = m else {
                continue;
            };
            let (Some(rs), Some(best)) = (by_key.get(key), best_after.get(key)) else {
                out.unverified_appends += 1;
                continue;
            };
            let from = rs.partition_point(|(invoked, _)| *invoked <= known_at);
            let Some(&b) = best.get(from) else {
                out.unverified_appends += 1;
                continue;
            };
            let read = derived.reads[b];
            if !read.list.contains(value) {
                out.lost_writes.push(LostWrite {
                    key: *key,
                    value: *value,
                    writer: t.op.index,
                    writer_outcome: t.op.outcome,
                    reader: derived.txns[read.txn].op.index,
                    read_length: read.list.len(),
                });
            }
        }
    }
}
