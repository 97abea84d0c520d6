//! What the list-append checker derives from a history before judging it: the transactions,
//! their reads, who appended each value and each key's order of appends. Both halves of the
//! checker read it: [`crate::elle`] (anomalies visible in the lists) and [`crate::elle_graph`]
//! (dependency cycles), so it sits apart from both.

use std::collections::HashMap;

use crate::history::{Key, MicroOp, Op, Operation, Outcome};

/// One list-append transaction of the history.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Txn<'a> {
    /// The recorded operation.
    pub op: &'a Operation,
    /// Its micro-operations.
    pub mops: &'a [MicroOp],
}

impl Txn<'_> {
    /// The values this transaction appended to `key`, in program order.
    pub fn appends_to(&self, key: Key) -> Vec<u64> {
        self.mops
            .iter()
            .filter_map(|m| match m {
                MicroOp::Append { key: k, value } if *k == key => Some(*value),
                _ => None,
            })
            .collect()
    }
}

/// One completed read of a committed (`Ok`) transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Read<'a> {
    /// The reading transaction (index into the transactions).
    pub txn: usize,
    /// The list.
    pub key: Key,
    /// What it returned.
    pub list: &'a [u64],
    /// Whether it is a prefix of the key's longest read.
    pub consistent: bool,
}

/// Everything the checker derived about the list-append part of a history.
#[derive(Debug)]
pub(crate) struct Derived<'a> {
    /// The transactions, in history order.
    pub txns: Vec<Txn<'a>>,
    /// Which transaction appended each (key, value).
    pub writers: HashMap<(Key, u64), usize>,
    /// The reads of `Ok` transactions.
    pub reads: Vec<Read<'a>>,
    /// Each key's order of appends: its longest read.
    pub orders: HashMap<Key, &'a [u64]>,
    /// Whether each transaction certainly committed: `Ok`, or `Info` with an append observed.
    pub committed: Vec<bool>,
}

/// "op #12 (Ok, process 3: append(k1, 5) read(k2) = [1 2])": an operation, for explanations.
pub(crate) fn describe(op: &Operation) -> String {
    let body = match &op.op {
        Op::Txn(mops) => mops
            .iter()
            .map(|m| match m {
                MicroOp::Append { key, value } => format!("append(k{key}, {value})"),
                MicroOp::Read { key, value: None } => format!("read(k{key})"),
                MicroOp::Read {
                    key,
                    value: Some(list),
                } => format!("read(k{key}) = {}", list_text(list)),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Op::RegisterRead { key, value: None } if op.outcome == Outcome::Ok => {
            format!("read(r{key}) = absent")
        }
        Op::RegisterRead { key, value: None } => format!("read(r{key})"),
        Op::RegisterRead {
            key,
            value: Some(v),
        } => format!("read(r{key}) = {v}"),
        Op::RegisterWrite { key, value } => format!("write(r{key}, {value})"),
        Op::RegisterCas { key, expected, new } => match expected {
            Some(e) => format!("cas(r{key}, {e} -> {new})"),
            None => format!("cas(r{key}, absent -> {new})"),
        },
    };
    format!(
        "op #{} ({:?}, process {}: {body})",
        op.index, op.outcome, op.process
    )
}

/// A list as "[1 2 3]", shortened in the middle when long.
pub(crate) fn list_text(list: &[u64]) -> String {
    let show = |xs: &[u64]| xs.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
    if list.len() <= 12 {
        format!("[{}]", show(list))
    } else {
        format!(
            "[{} … {}] ({} elements)",
            show(&list[..4]),
            show(&list[list.len() - 4..]),
            list.len()
        )
    }
}
