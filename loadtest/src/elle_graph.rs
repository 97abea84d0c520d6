//! The dependency graph of a list-append history and the cycles in it.
//!
//! Nodes are the transactions that certainly committed: `Ok`, and `Info` whose appends a read
//! observed. Edges: **ww** from the appender of each version of a key to the appender of the
//! next; **wr** from the appender of the last element a read saw to the reader; **rw** from a
//! reader to the appender of the version right after what it saw; **rt** from a transaction to
//! every transaction invoked after it completed (kept small as Elle does: each invocation links
//! only from the completed transactions not already implied by a later completion).
//!
//! Each strongly connected component is one anomaly, classified by the least permissive set
//! of edges that still has a cycle inside it: ww only (G0), ww + wr (G1c), ww + wr + rw (G2),
//! and finally with real-time edges (a strict-serializability violation). The reported cycle
//! is a shortest one over that set of edges.

use std::collections::{BTreeSet, HashMap};

use crate::anomaly::{Anomaly, AnomalyKind, CycleStep, EdgeKind};
use crate::cycles::Graph;
use crate::elle_derived::{Derived, describe, list_text};
use crate::history::{Key, Outcome};

/// The evidence for one edge.
#[derive(Debug, Clone, Copy)]
enum Why {
    Ww { key: Key, prev: u64, next: u64 },
    Wr { key: Key, read: usize },
    Rw { key: Key, read: usize, next: u64 },
    Rt,
}

/// The graph over committed transactions, with the evidence for each edge and kind.
struct DependencyGraph {
    graph: Graph,
    /// Node → transaction (index into `Derived::txns`).
    txn_of: Vec<usize>,
    why: HashMap<(usize, usize, EdgeKind), Why>,
}

impl DependencyGraph {
    fn link(&mut self, from: usize, to: usize, kind: EdgeKind, why: Why) {
        if from == to {
            return;
        }
        self.graph.add(from, to, kind.bit());
        self.why.entry((from, to, kind)).or_insert(why);
    }
}

fn build(d: &Derived<'_>) -> DependencyGraph {
    let txn_of: Vec<usize> = (0..d.txns.len()).filter(|&i| d.committed[i]).collect();
    let node_of: HashMap<usize, usize> = txn_of.iter().enumerate().map(|(n, &t)| (t, n)).collect();
    let mut g = DependencyGraph {
        graph: Graph::new(txn_of.len()),
        txn_of,
        why: HashMap::new(),
    };
    let node = |key: Key, value: u64| {
        d.writers
            .get(&(key, value))
            .and_then(|t| node_of.get(t))
            .copied()
    };
    for (&key, order) in &d.orders {
        for pair in order.windows(2) {
            if let (Some(a), Some(b)) = (node(key, pair[0]), node(key, pair[1])) {
                let why = Why::Ww {
                    key,
                    prev: pair[0],
                    next: pair[1],
                };
                g.link(a, b, EdgeKind::Ww, why);
            }
        }
    }
    for (i, r) in d.reads.iter().enumerate() {
        let Some(&reader) = node_of.get(&r.txn) else {
            continue;
        };
        if let Some(w) = r.list.last().and_then(|&v| node(r.key, v)) {
            g.link(
                w,
                reader,
                EdgeKind::Wr,
                Why::Wr {
                    key: r.key,
                    read: i,
                },
            );
        }
        if !r.consistent {
            continue;
        }
        if let Some(&next) = d.orders.get(&r.key).and_then(|o| o.get(r.list.len()))
            && let Some(w) = node(r.key, next)
        {
            g.link(
                reader,
                w,
                EdgeKind::Rw,
                Why::Rw {
                    key: r.key,
                    read: i,
                    next,
                },
            );
        }
    }
    realtime(d, &mut g);
    g
}

/// Real-time edges. Events in time order (invocations before completions at the same
/// instant, since "before" is strict); each invocation links from the frontier of completed
/// transactions, and each completion replaces in the frontier the transactions its own
/// invocation linked from (they reach it through the new one).
fn realtime(d: &Derived<'_>, g: &mut DependencyGraph) {
    // (time, 0 = invoke / 1 = complete, node)
    let mut events = Vec::new();
    for (n, &t) in g.txn_of.iter().enumerate() {
        let op = d.txns[t].op;
        events.push((op.invoke_ns, 0u8, n));
        if op.outcome == Outcome::Ok {
            events.push((op.complete_ns, 1u8, n));
        }
    }
    events.sort_unstable();
    let mut frontier: BTreeSet<usize> = BTreeSet::new();
    let mut preds: HashMap<usize, Vec<usize>> = HashMap::new();
    for (_, kind, n) in events {
        if kind == 0 {
            let before: Vec<usize> = frontier.iter().copied().collect();
            for &p in &before {
                g.link(p, n, EdgeKind::Realtime, Why::Rt);
            }
            preds.insert(n, before);
        } else {
            for p in preds.remove(&n).unwrap_or_default() {
                frontier.remove(&p);
            }
            frontier.insert(n);
        }
    }
}

/// The anomalies of the dependency graph: one per strongly connected component.
pub(crate) fn cycle_anomalies(d: &Derived<'_>) -> Vec<Anomaly> {
    let g = build(d);
    let ww = EdgeKind::Ww.bit();
    let wr = EdgeKind::Wr.bit();
    let rw = EdgeKind::Rw.bit();
    let rt = EdgeKind::Realtime.bit();
    let classes = [
        (AnomalyKind::G0, ww),
        (AnomalyKind::G1c, ww | wr),
        (AnomalyKind::G2, ww | wr | rw),
        (AnomalyKind::Realtime, ww | wr | rw | rt),
    ];
    let mut out = Vec::new();
    for component in g.graph.components(ww | wr | rw | rt, None) {
        for (kind, allowed) in classes {
            let cycle = g
                .graph
                .components(allowed, Some(&component))
                .iter()
                .filter_map(|c| g.graph.shortest_cycle(c, allowed))
                .min_by_key(Vec::len);
            if let Some(cycle) = cycle {
                out.push(explain(d, &g, kind, allowed, &cycle, component.len()));
                break;
            }
        }
    }
    out
}

fn explain(
    d: &Derived<'_>,
    g: &DependencyGraph,
    kind: AnomalyKind,
    allowed: u8,
    cycle: &[usize],
    component_size: usize,
) -> Anomaly {
    let op = |n: usize| d.txns[g.txn_of[n]].op;
    let mut steps = Vec::new();
    for (i, &from) in cycle.iter().enumerate() {
        let to = cycle[(i + 1) % cycle.len()];
        let mask = g.graph.mask(from, to) & allowed;
        // The least permissive kind the edge has, so the cycle reads as its class.
        let Some(edge) = EdgeKind::ALL.into_iter().find(|k| mask & k.bit() != 0) else {
            continue;
        };
        let why = g.why.get(&(from, to, edge)).copied().unwrap_or(Why::Rt);
        let (a, b) = (op(from), op(to));
        let text = match why {
            Why::Ww { key, prev, next } => format!(
                "op #{} appended {prev} to key {key} and op #{} appended {next} right after it",
                a.index, b.index
            ),
            Why::Wr { key, read } => format!(
                "op #{} read key {key} = {}, whose last element op #{} appended",
                b.index,
                list_text(d.reads[read].list),
                a.index
            ),
            Why::Rw { key, read, next } => format!(
                "op #{} read key {key} = {}, and op #{} appended {next}, the next version",
                a.index,
                list_text(d.reads[read].list),
                b.index
            ),
            Why::Rt => format!(
                "op #{} completed at {:.6} s, before op #{} was invoked at {:.6} s",
                a.index,
                a.complete_ns as f64 / 1e9,
                b.index,
                b.invoke_ns as f64 / 1e9
            ),
        };
        steps.push(CycleStep {
            from: a.index,
            edge,
            to: b.index,
            why: text,
        });
    }
    let rw_edges = steps.iter().filter(|s| s.edge == EdgeKind::Rw).count();
    let summary = match kind {
        AnomalyKind::G0 => "a cycle of write-write dependencies (dirty write)".to_string(),
        AnomalyKind::G1c => "a cycle of write-write and write-read dependencies".to_string(),
        AnomalyKind::G2 if rw_edges == 1 => {
            "a cycle with one anti-dependency (G-single, read skew)".to_string()
        }
        AnomalyKind::G2 => format!("a cycle with {rw_edges} anti-dependencies (write skew)"),
        _ => "a cycle that needs a real-time edge: no serial order respects both the \
              dependencies and the order in which clients saw operations complete"
            .to_string(),
    };
    let mut explanation = format!(
        "{summary}, {} transactions long (in a strongly connected component of {component_size}):",
        cycle.len()
    );
    for &n in cycle {
        explanation.push_str(&format!("\n    {}", describe(op(n))));
    }
    for s in &steps {
        explanation.push_str(&format!(
            "\n    #{} -{}-> #{}: {}",
            s.from,
            s.edge.name(),
            s.to,
            s.why
        ));
    }
    Anomaly {
        kind,
        key: None,
        ops: cycle.iter().map(|&n| op(n).index).collect(),
        explanation,
        cycle: steps,
    }
}
