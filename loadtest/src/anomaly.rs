//! What the history checker reports: anomalies (with the cycle of operations that shows a
//! dependency cycle), acknowledged writes that vanished, and refused writes that appeared.

use std::fmt;

use serde::Serialize;

use crate::history::{Key, Outcome};

/// The kinds of anomaly the checker finds, named as Adya and Elle name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum AnomalyKind {
    /// A cycle of write-write dependencies only (dirty write).
    G0,
    /// A committed read observed a value appended by a refused (`Fail`) transaction.
    G1a,
    /// A read observed a transaction's intermediate state: a value it appended to a key
    /// before appending another to the same key.
    G1b,
    /// A cycle of write-write and write-read dependencies (circular information flow).
    G1c,
    /// A cycle that needs at least one read-write anti-dependency (write skew, lost update).
    G2,
    /// A cycle that needs a real-time edge: serializable, but not in an order that respects
    /// "completed before invoked" (a stale read, a lost acknowledgement).
    Realtime,
    /// Two reads of one key whose lists are not prefixes of one another: no single order of
    /// appends explains both.
    IncompatibleOrder,
    /// A read returned the same element twice.
    DuplicateElements,
    /// A transaction's read did not reflect its own earlier reads and appends.
    Internal,
    /// A read returned a value no operation ever appended.
    Garbage,
    /// A read returned bytes that do not decode as the workload's encoding.
    Unparseable,
    /// Two operations appended the same value to one key (a workload bug: values must be
    /// unique per key).
    DuplicateAppend,
    /// A register's history has no linearization.
    NonLinearizable,
}

impl AnomalyKind {
    /// The short name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::G0 => "G0",
            AnomalyKind::G1a => "G1a",
            AnomalyKind::G1b => "G1b",
            AnomalyKind::G1c => "G1c",
            AnomalyKind::G2 => "G2",
            AnomalyKind::Realtime => "realtime",
            AnomalyKind::IncompatibleOrder => "incompatible-order",
            AnomalyKind::DuplicateElements => "duplicate-elements",
            AnomalyKind::Internal => "internal",
            AnomalyKind::Garbage => "garbage-read",
            AnomalyKind::Unparseable => "unparseable-value",
            AnomalyKind::DuplicateAppend => "duplicate-append",
            AnomalyKind::NonLinearizable => "non-linearizable",
        }
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A dependency between two transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum EdgeKind {
    /// Write-write: the first appended the version of a key just before the second's.
    Ww,
    /// Write-read: the second read the first's append (as the last element of its list).
    Wr,
    /// Read-write (anti-dependency): the first read a version of a key that the second's
    /// append came right after.
    Rw,
    /// Real time: the first completed before the second was invoked.
    Realtime,
}

impl EdgeKind {
    /// The bit of this kind in an edge mask.
    pub(crate) fn bit(self) -> u8 {
        match self {
            EdgeKind::Ww => 1,
            EdgeKind::Wr => 2,
            EdgeKind::Rw => 4,
            EdgeKind::Realtime => 8,
        }
    }

    /// Every kind, from the least to the most permissive.
    pub(crate) const ALL: [EdgeKind; 4] =
        [EdgeKind::Ww, EdgeKind::Wr, EdgeKind::Rw, EdgeKind::Realtime];

    /// The short name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            EdgeKind::Ww => "ww",
            EdgeKind::Wr => "wr",
            EdgeKind::Rw => "rw",
            EdgeKind::Realtime => "rt",
        }
    }
}

/// One edge of a reported cycle: operation `from` must precede operation `to` because of
/// `why`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CycleStep {
    /// The earlier operation (its index in the history).
    pub from: u64,
    /// The kind of dependency.
    pub edge: EdgeKind,
    /// The later operation.
    pub to: u64,
    /// The evidence, in words.
    pub why: String,
}

/// One anomaly, with what shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    /// Its kind.
    pub kind: AnomalyKind,
    /// The key it concerns, when it concerns one.
    pub key: Option<Key>,
    /// The operations involved (indexes in the history).
    pub ops: Vec<u64>,
    /// What happened, in words.
    pub explanation: String,
    /// For dependency cycles: the minimal cycle found, edge by edge.
    pub cycle: Vec<CycleStep>,
}

/// An acknowledged (or certainly committed) append that a later read of its key lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LostWrite {
    /// The list.
    pub key: Key,
    /// The element appended.
    pub value: u64,
    /// The operation that appended it.
    pub writer: u64,
    /// How that operation ended (`Info` when another of its appends was observed).
    pub writer_outcome: Outcome,
    /// The read, invoked after the append was known to have committed, that lacks it.
    pub reader: u64,
    /// How long that read's list was.
    pub read_length: usize,
}

/// An append whose operation was refused (`Fail`) but which a read observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedPresent {
    /// The list.
    pub key: Key,
    /// The element appended.
    pub value: u64,
    /// The refused operation.
    pub writer: u64,
    /// The error code it was refused with.
    pub error: Option<String>,
    /// The first read that observed it.
    pub reader: u64,
}
