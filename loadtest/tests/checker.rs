//! The history checker against planted anomalies (each must be found, with the right kind and
//! the operations that show it) and against valid histories (which must pass), including
//! concurrent, `Info`-heavy histories simulated from a strictly serializable in-memory store.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use ferrisdb_loadtest::anomaly::{AnomalyKind, EdgeKind};
use ferrisdb_loadtest::check::{CheckReport, check};
use ferrisdb_loadtest::history::{History, Key, MicroOp, Op, Operation, Outcome};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Builds a history by hand: times in nanoseconds, indexes in call order.
#[derive(Default)]
struct Builder {
    ops: Vec<Operation>,
}

impl Builder {
    fn push(&mut self, process: u64, span: (u64, u64), outcome: Outcome, op: Op) -> u64 {
        let index = self.ops.len() as u64;
        self.ops.push(Operation {
            index,
            process,
            invoke_ns: span.0,
            complete_ns: span.1,
            op,
            outcome,
            error: match outcome {
                Outcome::Ok => None,
                Outcome::Fail => Some("not_committed".into()),
                Outcome::Info => Some("commit_unknown_result".into()),
            },
        });
        index
    }

    fn txn(&mut self, process: u64, span: (u64, u64), outcome: Outcome, mops: Vec<MicroOp>) -> u64 {
        self.push(process, span, outcome, Op::Txn(mops))
    }

    fn history(mut self) -> History {
        self.ops.sort_by_key(|o| (o.invoke_ns, o.index));
        History {
            operations: self.ops,
        }
    }
}

fn ap(key: Key, value: u64) -> MicroOp {
    MicroOp::Append { key, value }
}

fn rd(key: Key, list: &[u64]) -> MicroOp {
    MicroOp::Read {
        key,
        value: Some(list.to_vec()),
    }
}

fn kinds(report: &CheckReport) -> Vec<AnomalyKind> {
    let mut k: Vec<_> = report.anomalies.iter().map(|a| a.kind).collect();
    k.sort();
    k
}

#[test]
fn a_lost_write_is_reported() {
    let mut b = Builder::default();
    b.txn(1, (0, 10), Outcome::Ok, vec![ap(1, 1)]);
    let lost = b.txn(2, (20, 30), Outcome::Ok, vec![ap(1, 2)]);
    let last = b.txn(3, (40, 50), Outcome::Ok, vec![rd(1, &[1])]);
    let report = check(&b.history());
    assert!(!report.is_valid(), "{report}");
    assert_eq!(report.lost_writes.len(), 1, "{report}");
    let l = &report.lost_writes[0];
    assert_eq!((l.key, l.value, l.writer, l.reader), (1, 2, lost, last));
    assert!(report.to_string().contains("lost writes: 1"));
}

#[test]
fn a_write_read_before_it_completed_is_not_lost_and_one_without_later_reads_is_unverified() {
    let mut b = Builder::default();
    b.txn(1, (0, 10), Outcome::Ok, vec![ap(1, 1)]);
    // Invoked before the append completed: it may miss it.
    b.txn(2, (5, 8), Outcome::Ok, vec![rd(1, &[])]);
    b.txn(3, (20, 30), Outcome::Ok, vec![rd(1, &[1])]);
    b.txn(4, (40, 50), Outcome::Ok, vec![ap(2, 1)]);
    let report = check(&b.history());
    assert!(report.is_valid(), "{report}");
    assert_eq!(report.unverified_appends, 1);
}

#[test]
fn a_refused_write_present_is_an_aborted_read() {
    let mut b = Builder::default();
    let refused = b.txn(1, (0, 10), Outcome::Fail, vec![ap(1, 1)]);
    let reader = b.txn(2, (20, 30), Outcome::Ok, vec![rd(1, &[1])]);
    let report = check(&b.history());
    assert_eq!(report.refused_present.len(), 1, "{report}");
    let r = &report.refused_present[0];
    assert_eq!(
        (r.key, r.value, r.writer, r.reader),
        (1, 1, refused, reader)
    );
    assert_eq!(kinds(&report), vec![AnomalyKind::G1a], "{report}");
    assert_eq!(report.anomalies[0].ops, vec![refused, reader]);
}

#[test]
fn g0_a_cycle_of_write_write_dependencies() {
    let mut b = Builder::default();
    // Concurrent: each appends first to one list and second to the other.
    let t1 = b.txn(1, (0, 100), Outcome::Ok, vec![ap(1, 1), ap(2, 2)]);
    let t2 = b.txn(2, (0, 100), Outcome::Ok, vec![ap(1, 2), ap(2, 1)]);
    b.txn(
        3,
        (200, 300),
        Outcome::Ok,
        vec![rd(1, &[1, 2]), rd(2, &[1, 2])],
    );
    let report = check(&b.history());
    assert_eq!(kinds(&report), vec![AnomalyKind::G0], "{report}");
    let a = &report.anomalies[0];
    let mut ops = a.ops.clone();
    ops.sort();
    assert_eq!(ops, vec![t1, t2]);
    assert!(a.cycle.iter().all(|s| s.edge == EdgeKind::Ww));
    assert_eq!(a.cycle.len(), 2);
}

#[test]
fn g1c_circular_information_flow() {
    let mut b = Builder::default();
    // Each reads the other's append: each depends on the other.
    let t1 = b.txn(1, (0, 100), Outcome::Ok, vec![ap(1, 1), rd(2, &[1])]);
    let t2 = b.txn(2, (0, 100), Outcome::Ok, vec![ap(2, 1), rd(1, &[1])]);
    let report = check(&b.history());
    assert_eq!(kinds(&report), vec![AnomalyKind::G1c], "{report}");
    let a = &report.anomalies[0];
    assert!(a.cycle.iter().all(|s| s.edge == EdgeKind::Wr), "{report}");
    let mut ops = a.ops.clone();
    ops.sort();
    assert_eq!(ops, vec![t1, t2]);
}

#[test]
fn g2_write_skew() {
    let mut b = Builder::default();
    // Each reads the list the other appends to, sees it empty, and appends to its own.
    let t1 = b.txn(1, (0, 100), Outcome::Ok, vec![rd(1, &[]), ap(2, 1)]);
    let t2 = b.txn(2, (0, 100), Outcome::Ok, vec![rd(2, &[]), ap(1, 1)]);
    b.txn(3, (200, 300), Outcome::Ok, vec![rd(1, &[1]), rd(2, &[1])]);
    let report = check(&b.history());
    println!("{report}");
    assert_eq!(kinds(&report), vec![AnomalyKind::G2], "{report}");
    let a = &report.anomalies[0];
    assert_eq!(
        a.cycle.iter().filter(|s| s.edge == EdgeKind::Rw).count(),
        2,
        "{report}"
    );
    let mut ops = a.ops.clone();
    ops.sort();
    assert_eq!(ops, vec![t1, t2]);
    assert!(report.lost_writes.is_empty());
    assert!(a.explanation.contains("write skew"), "{}", a.explanation);
}

#[test]
fn a_stale_read_violates_real_time_order() {
    let mut b = Builder::default();
    let w = b.txn(1, (0, 10), Outcome::Ok, vec![ap(1, 1)]);
    // Invoked after the append was acknowledged, yet it misses it.
    let stale = b.txn(2, (20, 30), Outcome::Ok, vec![rd(1, &[])]);
    b.txn(3, (40, 50), Outcome::Ok, vec![rd(1, &[1])]);
    let report = check(&b.history());
    println!("{report}");
    assert_eq!(kinds(&report), vec![AnomalyKind::Realtime], "{report}");
    let a = &report.anomalies[0];
    let edges: Vec<_> = a.cycle.iter().map(|s| (s.from, s.edge, s.to)).collect();
    assert!(edges.contains(&(stale, EdgeKind::Rw, w)), "{report}");
    assert!(edges.contains(&(w, EdgeKind::Realtime, stale)), "{report}");
    assert!(report.lost_writes.is_empty(), "{report}");
}

#[test]
fn intermediate_reads_internal_inconsistency_and_impossible_reads() {
    let mut b = Builder::default();
    b.txn(1, (0, 10), Outcome::Ok, vec![ap(1, 1), ap(1, 2)]);
    b.txn(2, (20, 30), Outcome::Ok, vec![rd(1, &[1])]);
    b.txn(3, (40, 50), Outcome::Ok, vec![rd(1, &[1, 2])]);
    // Reads its own append away.
    b.txn(4, (60, 70), Outcome::Ok, vec![ap(2, 1), rd(2, &[])]);
    b.txn(5, (80, 90), Outcome::Ok, vec![rd(2, &[1])]);
    // A value nobody appended, a duplicate, and two orders of one list.
    b.txn(6, (100, 110), Outcome::Ok, vec![rd(3, &[99])]);
    b.txn(7, (100, 110), Outcome::Ok, vec![ap(4, 1)]);
    b.txn(8, (120, 130), Outcome::Ok, vec![rd(4, &[1, 1])]);
    b.txn(9, (100, 110), Outcome::Ok, vec![ap(5, 1)]);
    b.txn(10, (100, 110), Outcome::Ok, vec![ap(5, 2)]);
    b.txn(11, (120, 130), Outcome::Ok, vec![rd(5, &[1, 2])]);
    b.txn(12, (120, 130), Outcome::Ok, vec![rd(5, &[2, 1])]);
    let report = check(&b.history());
    let found = kinds(&report);
    for kind in [
        AnomalyKind::G1b,
        AnomalyKind::Internal,
        AnomalyKind::Garbage,
        AnomalyKind::DuplicateElements,
        AnomalyKind::IncompatibleOrder,
    ] {
        assert!(found.contains(&kind), "{kind} not found in {report}");
    }
    let g1b = report
        .anomalies
        .iter()
        .find(|a| a.kind == AnomalyKind::G1b)
        .unwrap();
    assert_eq!(g1b.key, Some(1));
}

fn reg(key: Key, op: &str, a: Option<u64>, b: u64) -> Op {
    match op {
        "r" => Op::RegisterRead { key, value: a },
        "w" => Op::RegisterWrite { key, value: b },
        _ => Op::RegisterCas {
            key,
            expected: a,
            new: b,
        },
    }
}

#[test]
fn a_non_linearizable_register_is_reported_with_its_failing_operation() {
    let mut b = Builder::default();
    b.push(1, (0, 10), Outcome::Ok, reg(7, "w", None, 1));
    b.push(2, (20, 30), Outcome::Ok, reg(7, "w", None, 2));
    // Concurrent with nothing, after 2 was acknowledged, yet it reads 1.
    let stale = b.push(3, (40, 50), Outcome::Ok, reg(7, "r", Some(1), 0));
    b.push(4, (60, 70), Outcome::Ok, reg(7, "r", Some(2), 0));
    // Another key, fine on its own.
    b.push(5, (0, 10), Outcome::Ok, reg(8, "w", None, 1));
    b.push(5, (20, 30), Outcome::Ok, reg(8, "r", Some(1), 0));
    let report = check(&b.history());
    println!("{report}");
    assert_eq!(
        kinds(&report),
        vec![AnomalyKind::NonLinearizable],
        "{report}"
    );
    let a = &report.anomalies[0];
    assert_eq!(a.key, Some(7));
    assert!(a.ops.contains(&stale));
    assert!(
        a.explanation.contains(&format!("op #{stale}")),
        "{}",
        a.explanation
    );
    assert_eq!(report.registers_linearizable, 1);
}

#[test]
fn a_failed_cas_never_takes_effect_and_an_unknown_one_may() {
    let mut b = Builder::default();
    b.push(1, (0, 10), Outcome::Ok, reg(1, "w", None, 1));
    b.push(2, (20, 30), Outcome::Fail, reg(1, "cas", Some(1), 2));
    b.push(3, (40, 50), Outcome::Ok, reg(1, "r", Some(1), 0));
    b.push(4, (60, 70), Outcome::Info, reg(1, "cas", Some(1), 3));
    b.push(5, (200, 210), Outcome::Ok, reg(1, "r", Some(3), 0));
    let report = check(&b.history());
    assert!(report.is_valid(), "{report}");
    // The same read of a refused CAS's value is not linearizable.
    let mut b = Builder::default();
    b.push(1, (0, 10), Outcome::Ok, reg(1, "w", None, 1));
    b.push(2, (20, 30), Outcome::Fail, reg(1, "cas", Some(1), 2));
    b.push(3, (40, 50), Outcome::Ok, reg(1, "r", Some(2), 0));
    let report = check(&b.history());
    assert_eq!(
        kinds(&report),
        vec![AnomalyKind::NonLinearizable],
        "{report}"
    );
}

/// A strictly serializable in-memory store serving simulated clients: every operation takes
/// effect at one instant inside its window (an `Info` one possibly long after the client gave
/// up, or never; a `Fail` one never), so the checker must accept every history it produces.
fn simulate(seed: u64, clients: u64, ops_per_client: usize) -> History {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut next_value: HashMap<Key, u64> = HashMap::new();
    let mut next_process = clients;
    // (effect time, op index) of operations that take effect.
    let mut planned: Vec<Operation> = Vec::new();
    let mut effect_at: Vec<Option<u64>> = Vec::new();
    for client in 0..clients {
        let mut process = client;
        let mut t = rng.random_range(0..50);
        for _ in 0..ops_per_client {
            let invoke = t;
            let effect = invoke + rng.random_range(1..40);
            let complete = effect + rng.random_range(1..40);
            let roll = rng.random_range(0..100);
            let outcome = if roll < 70 {
                Outcome::Ok
            } else if roll < 82 {
                Outcome::Fail
            } else {
                Outcome::Info
            };
            let op = if rng.random_bool(0.6) {
                let n = rng.random_range(1..=4);
                Op::Txn(
                    (0..n)
                        .map(|_| {
                            let key = rng.random_range(0..5);
                            if rng.random_bool(0.5) {
                                MicroOp::Read { key, value: None }
                            } else {
                                let v = next_value.entry(key).or_insert(0);
                                *v += 1;
                                MicroOp::Append { key, value: *v }
                            }
                        })
                        .collect(),
                )
            } else {
                let key = 100 + rng.random_range(0..3);
                let v = next_value.entry(key).or_insert(0);
                *v += 1;
                match rng.random_range(0..3) {
                    0 => Op::RegisterRead { key, value: None },
                    1 => Op::RegisterWrite { key, value: *v },
                    // The expected value is filled in at the effect time, half the time right.
                    _ => Op::RegisterCas {
                        key,
                        expected: None,
                        new: *v,
                    },
                }
            };
            let takes_effect = match outcome {
                Outcome::Ok => Some(effect),
                Outcome::Fail => None,
                // Maybe never, maybe long after the client gave up.
                Outcome::Info => rng
                    .random_bool(0.5)
                    .then(|| effect + rng.random_range(0..400)),
            };
            planned.push(Operation {
                index: 0,
                process,
                invoke_ns: invoke,
                complete_ns: complete,
                op,
                outcome,
                error: None,
            });
            effect_at.push(takes_effect);
            if outcome == Outcome::Info {
                process = next_process;
                next_process += 1;
            }
            t = complete + rng.random_range(1..20);
        }
    }
    // Apply in effect order.
    let mut order: Vec<usize> = (0..planned.len())
        .filter(|&i| effect_at[i].is_some())
        .collect();
    order.sort_by_key(|&i| effect_at[i]);
    let mut lists: HashMap<Key, Vec<u64>> = HashMap::new();
    let mut registers: HashMap<Key, u64> = HashMap::new();
    for i in order {
        let record = planned[i].outcome == Outcome::Ok;
        let op = &mut planned[i].op;
        match op {
            Op::Txn(mops) => {
                for m in mops.iter_mut() {
                    match m {
                        MicroOp::Append { key, value } => {
                            lists.entry(*key).or_default().push(*value)
                        }
                        MicroOp::Read { key, value } => {
                            if record {
                                *value = Some(lists.get(key).cloned().unwrap_or_default());
                            }
                        }
                    }
                }
            }
            Op::RegisterRead { key, value } => {
                if record {
                    *value = registers.get(key).copied();
                }
            }
            Op::RegisterWrite { key, value } => {
                registers.insert(*key, *value);
            }
            Op::RegisterCas { key, expected, new } => {
                let current = registers.get(key).copied();
                *expected = if rng.random_bool(0.5) {
                    current
                } else {
                    Some(u64::MAX)
                };
                if *expected == current {
                    registers.insert(*key, *new);
                }
            }
        }
    }
    // A CAS whose expected value did not match completes Fail, as the workload records it;
    // one that never took effect still needs an expected value.
    for (i, op) in planned.iter_mut().enumerate() {
        if let Op::RegisterCas { expected, .. } = &mut op.op {
            if effect_at[i].is_none() {
                *expected = Some(u64::MAX - 1);
            } else if *expected == Some(u64::MAX) && op.outcome == Outcome::Ok {
                op.outcome = Outcome::Fail;
            }
        }
    }
    // Final reads of every list, after everything.
    let end = planned.iter().map(|o| o.complete_ns).max().unwrap_or(0) + 1_000;
    let mut keys: Vec<_> = lists.keys().copied().collect();
    keys.sort();
    for (j, key) in keys.into_iter().enumerate() {
        let list = lists[&key].clone();
        planned.push(Operation {
            index: 0,
            process: next_process,
            invoke_ns: end + 10 * j as u64,
            complete_ns: end + 10 * j as u64 + 5,
            op: Op::Txn(vec![rd(key, &list)]),
            outcome: Outcome::Ok,
            error: None,
        });
    }
    planned.sort_by_key(|o| o.invoke_ns);
    for (i, op) in planned.iter_mut().enumerate() {
        op.index = i as u64;
    }
    History {
        operations: planned,
    }
}

#[test]
fn simulated_strictly_serializable_histories_are_valid() {
    for seed in 0..20 {
        let history = simulate(seed, 6, 60);
        let report = check(&history);
        assert!(report.is_valid(), "seed {seed}:\n{report}");
        assert!(
            report.counts.info > 20 && report.counts.ok > 200,
            "seed {seed}: {report}"
        );
        assert!(report.registers_linearizable >= 3, "seed {seed}: {report}");
        // Only an unknown append first observed by the final read itself has no read after
        // it; every acknowledged one is verified.
        assert!(
            report.unverified_appends <= report.counts.info,
            "seed {seed}: {report}"
        );
    }
}

#[test]
fn a_simulated_history_with_a_dropped_acknowledged_append_is_caught() {
    // The same store, but one acknowledged append vanishes from every read after it.
    let mut history = simulate(3, 6, 60);
    let (victim_key, victim_value, victim_complete) = history
        .operations
        .iter()
        .filter(|o| o.outcome == Outcome::Ok)
        .find_map(|o| match &o.op {
            Op::Txn(mops) => mops.iter().find_map(|m| match m {
                MicroOp::Append { key, value } => Some((*key, *value, o.complete_ns)),
                _ => None,
            }),
            _ => None,
        })
        .unwrap();
    for op in &mut history.operations {
        if op.invoke_ns > victim_complete
            && let Op::Txn(mops) = &mut op.op
        {
            for m in mops {
                if let MicroOp::Read {
                    key,
                    value: Some(list),
                } = m
                    && *key == victim_key
                {
                    list.retain(|v| *v != victim_value);
                }
            }
        }
    }
    let report = check(&history);
    assert!(
        report
            .lost_writes
            .iter()
            .any(|l| l.key == victim_key && l.value == victim_value),
        "{report}"
    );
    assert!(!report.is_valid());
    let json = serde_json::to_value(&report).unwrap();
    assert!(!json["lost_writes"].as_array().unwrap().is_empty());
}

#[test]
fn a_simulated_register_read_of_a_value_never_written_is_not_linearizable() {
    let mut history = simulate(5, 6, 60);
    let victim = history
        .operations
        .iter_mut()
        .find(|o| {
            o.outcome == Outcome::Ok && matches!(o.op, Op::RegisterRead { value: Some(_), .. })
        })
        .unwrap();
    let (index, key) = match &mut victim.op {
        Op::RegisterRead { key, value } => {
            *value = Some(u64::MAX - 7);
            (victim.index, *key)
        }
        _ => unreachable!(),
    };
    let report = check(&history);
    let found: Vec<_> = report
        .anomalies
        .iter()
        .filter(|a| a.kind == AnomalyKind::NonLinearizable)
        .collect();
    assert_eq!(found.len(), 1, "{report}");
    assert_eq!(found[0].key, Some(key));
    assert!(found[0].ops.contains(&index), "{report}");
    assert_eq!(report.anomalies.len(), 1, "{report}");
}
