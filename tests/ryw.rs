//! The read-your-writes matrix: every kind of read after every kind of write in the same
//! transaction, against `ferrisdb dev` through the SDK.
//!
//! Each write kind is a short sequence of writes (sets, clears, range clears, atomic ops,
//! versionstamped keys and values) on its own namespace of seeded keys; each read kind is a
//! group of reads (gets, range reads both ways with and without limits, streamed range reads
//! in small batches, key selectors of every kind, each also through `snapshot()`, and gets
//! issued concurrently). The expected answer of every read comes from a plain model: a
//! `BTreeMap` of the whole stored keyspace with the transaction's writes applied in order
//! (atomic ops through `ferrisdb_common::atomic::apply`).
//!
//! For each (write kind, read kind) cell a fresh transaction makes the writes and then the
//! reads; then one transaction per write kind reads everything after each write, and commits,
//! and a second, untouched namespace gets the same writes committed without any read. After
//! every commit the whole keyspace must equal the model. Every mismatch is collected and
//! reported together.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use ferrisdb_client::{AtomicOp, Database, ErrorKind, KeySelector, RangeOptions, Transaction};
use futures::TryStreamExt;
use support::DevCluster;

/// The letters of the keys a namespace's reads look at; the seeded ones are below.
const LETTERS: [&str; 10] = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];

fn le(n: u64) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

/// What every namespace holds before its writes: keys on both sides of the written ones.
fn seed() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("a", b"apple".to_vec()),
        ("c", le(10)),
        ("e", le(300)),
        ("g", b"grape".to_vec()),
        ("i", b"iris".to_vec()),
    ]
}

/// One write, on keys named by their letter inside the namespace.
#[derive(Debug, Clone)]
enum W {
    Set(&'static str, Vec<u8>),
    Clear(&'static str),
    ClearRange(&'static str, &'static str),
    Atomic(AtomicOp, &'static str, Vec<u8>),
    /// A versionstamped value: this prefix, then the stamp.
    VsValue(&'static str, &'static [u8]),
    /// A versionstamped key: the namespace, this suffix, then the stamp; with this value.
    VsKey(&'static str, &'static [u8]),
}

fn set(k: &'static str, v: &[u8]) -> W {
    W::Set(k, v.to_vec())
}

fn atomic(op: AtomicOp, k: &'static str, p: &[u8]) -> W {
    W::Atomic(op, k, p.to_vec())
}

/// The write kinds of the matrix.
fn write_kinds() -> Vec<(&'static str, Vec<W>)> {
    use AtomicOp::*;
    vec![
        ("set a new key", vec![set("b", b"new-b")]),
        ("set over a stored key", vec![set("c", b"over-c")]),
        ("set twice", vec![set("d", b"d1"), set("d", b"d2")]),
        ("clear a stored key", vec![W::Clear("e")]),
        ("clear an absent key", vec![W::Clear("d")]),
        ("clear an own set", vec![set("b", b"b1"), W::Clear("b")]),
        (
            "clear_range over stored keys",
            vec![W::ClearRange("b", "f")],
        ),
        (
            "clear_range over own sets",
            vec![set("d", b"d1"), set("h", b"h1"), W::ClearRange("b", "f")],
        ),
        (
            "clear_ranges partially overlapping",
            vec![
                W::ClearRange("d", "h"),
                W::ClearRange("b", "e"),
                set("f", b"f1"),
            ],
        ),
        (
            "sets inside a cleared range",
            vec![W::ClearRange("a", "j"), set("c", b"c1"), set("h", b"h1")],
        ),
        (
            "add on a stored key not read",
            vec![atomic(Add, "c", &le(5))],
        ),
        ("add on an absent key", vec![atomic(Add, "d", &le(7))]),
        (
            "add after an own set",
            vec![set("b", &le(1)), atomic(Add, "b", &le(2))],
        ),
        (
            "two adds on a key not read",
            vec![atomic(Add, "e", &le(1)), atomic(Add, "e", &le(2))],
        ),
        ("add with a shorter param", vec![atomic(Add, "e", &[0xFF])]),
        (
            "max",
            vec![atomic(Max, "e", &le(1000)), atomic(Max, "c", &le(1))],
        ),
        (
            "min and bit ops",
            vec![
                atomic(Min, "c", &le(3)),
                atomic(BitOr, "b", &[1]),
                atomic(BitAnd, "e", &le(0xF0)),
                atomic(BitXor, "g", &[1, 1]),
            ],
        ),
        (
            "append_if_fits",
            vec![
                atomic(AppendIfFits, "g", b"-fruit"),
                atomic(AppendIfFits, "f", b"fig"),
            ],
        ),
        (
            "compare_and_clear",
            vec![
                atomic(CompareAndClear, "a", b"apple"),
                atomic(CompareAndClear, "g", b"nope"),
                atomic(CompareAndClear, "d", b"x"),
            ],
        ),
        (
            "byte_min and byte_max",
            vec![
                atomic(ByteMin, "i", b"hat"),
                atomic(ByteMin, "d", b"zzz"),
                atomic(ByteMax, "a", b"banana"),
            ],
        ),
        (
            "add after an own clear",
            vec![W::Clear("c"), atomic(Add, "c", &le(3))],
        ),
        (
            "max after an own clear_range",
            vec![W::ClearRange("b", "f"), atomic(Max, "e", &[9])],
        ),
        (
            "set after a pending add",
            vec![atomic(Add, "c", &le(5)), set("c", b"final")],
        ),
        (
            "clear_range after pending adds",
            vec![
                atomic(Add, "c", &le(5)),
                atomic(Add, "h", &le(1)),
                W::ClearRange("b", "d"),
            ],
        ),
        (
            "versionstamped value on an absent key",
            vec![W::VsValue("d", b"v-")],
        ),
        (
            "versionstamped value over a stored key",
            vec![W::VsValue("e", b"")],
        ),
        (
            "set after a versionstamped value",
            vec![W::VsValue("d", b""), set("d", b"plain")],
        ),
        ("versionstamped key", vec![W::VsKey("s", b"stamped")]),
        (
            "a bit of everything",
            vec![
                set("b", b"b1"),
                W::Clear("c"),
                atomic(Add, "e", &le(1)),
                W::ClearRange("f", "h"),
                atomic(AppendIfFits, "i", b"+"),
                set("j", b"j1"),
            ],
        ),
    ]
}

fn key(ns: &str, letter: &str) -> Bytes {
    Bytes::from(format!("{ns}{letter}"))
}

/// The end of a namespace `w07r/`: `w07r0`.
fn ns_end(ns: &str) -> Bytes {
    let mut end = ns.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    Bytes::from(end)
}

/// A versionstamp template: `prefix`, ten placeholder bytes, the little-endian offset.
fn template(prefix: &[u8]) -> Vec<u8> {
    let mut t = prefix.to_vec();
    t.extend_from_slice(&[0u8; 10]);
    t.extend_from_slice(&(prefix.len() as u32).to_le_bytes());
    t
}

fn stamped(prefix: &[u8], stamp: &[u8]) -> Bytes {
    let mut v = prefix.to_vec();
    v.extend_from_slice(stamp);
    Bytes::from(v)
}

fn write(tx: &Transaction, ns: &str, w: &W) {
    match w {
        W::Set(k, v) => tx.set(key(ns, k), v.clone()),
        W::Clear(k) => tx.clear(key(ns, k)),
        W::ClearRange(b, e) => tx.clear_range(key(ns, b), key(ns, e)),
        W::Atomic(op, k, p) => tx.atomic_op(*op, key(ns, k), p.clone()),
        W::VsValue(k, prefix) => tx.atomic_op(
            AtomicOp::SetVersionstampedValue,
            key(ns, k),
            template(prefix),
        ),
        W::VsKey(suffix, v) => tx.atomic_op(
            AtomicOp::SetVersionstampedKey,
            template(format!("{ns}{suffix}").as_bytes()),
            v.to_vec(),
        ),
    }
}

/// A key in the model: a value, or a versionstamped value not known before the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cell {
    Val(Bytes),
    Unreadable,
}

type Model = BTreeMap<Bytes, Cell>;

/// Applies `w` to the model: before the commit (`stamp` is `None`) as the transaction's own
/// reads see it, after it with the versionstamp the commit got.
fn model_write(m: &mut Model, ns: &str, w: &W, stamp: Option<&[u8]>) {
    match w {
        W::Set(k, v) => {
            m.insert(key(ns, k), Cell::Val(Bytes::from(v.clone())));
        }
        W::Clear(k) => {
            m.remove(&key(ns, k));
        }
        W::ClearRange(b, e) => {
            let (b, e) = (key(ns, b), key(ns, e));
            m.retain(|k, _| !(b <= *k && *k < e));
        }
        W::Atomic(op, k, p) => {
            let k = key(ns, k);
            let existing = match m.get(&k) {
                Some(Cell::Val(v)) => Some(v.clone()),
                Some(Cell::Unreadable) => panic!("the table has no atomic op on a stamped value"),
                None => None,
            };
            match ferrisdb_common::atomic::apply(*op, existing.as_deref(), p).unwrap() {
                Some(v) => m.insert(k, Cell::Val(Bytes::from(v))),
                None => m.remove(&k),
            };
        }
        W::VsValue(k, prefix) => {
            let cell = match stamp {
                Some(s) => Cell::Val(stamped(prefix, s)),
                None => Cell::Unreadable,
            };
            m.insert(key(ns, k), cell);
        }
        W::VsKey(suffix, v) => match stamp {
            Some(s) => {
                let k = stamped(format!("{ns}{suffix}").as_bytes(), s);
                m.insert(k, Cell::Val(Bytes::copy_from_slice(v)));
            }
            // Where it lands is unknown: a read that gets there is refused, as in
            // FoundationDB. The template's prefix stands for the range (no stored key lies
            // between it and the stamped keys).
            None => {
                m.insert(key(ns, suffix), Cell::Unreadable);
            }
        },
    }
}

/// One read.
#[derive(Debug, Clone)]
enum Read {
    Get(Bytes),
    Range {
        begin: Bytes,
        end: Bytes,
        limit: usize,
        reverse: bool,
    },
    Stream {
        begin: Bytes,
        end: Bytes,
        limit: usize,
        reverse: bool,
        batch: usize,
    },
    Key(KeySelector),
}

/// What a read gave.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Value(Option<Bytes>),
    Rows(Vec<(Bytes, Bytes)>),
    Key(Bytes),
}

/// The read kinds of the matrix: groups of reads of one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Gets,
    Ranges,
    LimitedRanges,
    Streams,
    Selectors,
    /// The gets of `Gets`, twice each, all in flight at once.
    ConcurrentGets,
}

const GROUPS: [Group; 6] = [
    Group::Gets,
    Group::Ranges,
    Group::LimitedRanges,
    Group::Streams,
    Group::Selectors,
    Group::ConcurrentGets,
];

/// A read kind: a group, read directly or through `snapshot()`.
#[derive(Debug, Clone, Copy)]
struct ReadKind {
    group: Group,
    snapshot: bool,
}

impl fmt::Display for ReadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let via = if self.snapshot { "snapshot " } else { "" };
        write!(f, "{via}{:?}", self.group)
    }
}

fn read_kinds() -> Vec<ReadKind> {
    let mut kinds = Vec::new();
    for group in GROUPS {
        for snapshot in [false, true] {
            kinds.push(ReadKind { group, snapshot });
        }
    }
    kinds
}

fn reads(group: Group, ns: &str) -> Vec<Read> {
    let (all_b, all_e) = (Bytes::from(ns.to_string()), ns_end(ns));
    let range = |begin: Bytes, end: Bytes, limit, reverse| Read::Range {
        begin,
        end,
        limit,
        reverse,
    };
    let stream = |begin: Bytes, end: Bytes, limit, reverse, batch| Read::Stream {
        begin,
        end,
        limit,
        reverse,
        batch,
    };
    match group {
        Group::Gets | Group::ConcurrentGets => {
            LETTERS.iter().map(|l| Read::Get(key(ns, l))).collect()
        }
        Group::Ranges => vec![
            range(all_b.clone(), all_e.clone(), 0, false),
            range(key(ns, "b"), key(ns, "f"), 0, false),
            range(key(ns, "c"), key(ns, "e\0"), 0, false),
            range(all_b, all_e, 0, true),
        ],
        Group::LimitedRanges => vec![
            range(all_b.clone(), all_e.clone(), 3, true),
            range(key(ns, "b"), key(ns, "h"), 2, true),
            range(all_b.clone(), all_e.clone(), 3, false),
            range(key(ns, "b"), key(ns, "h"), 1, false),
            range(all_b, all_e, 1, true),
        ],
        Group::Streams => vec![
            stream(all_b.clone(), all_e.clone(), 0, false, 2),
            stream(all_b.clone(), all_e.clone(), 5, true, 2),
            stream(key(ns, "b"), key(ns, "h"), 0, false, 1),
            stream(all_b, all_e, 0, true, 3),
        ],
        Group::Selectors => {
            let mut out = Vec::new();
            for anchor in ["", "b", "c", "d", "e", "h"] {
                let k = key(ns, anchor);
                for sel in [
                    KeySelector::first_greater_or_equal(k.clone()),
                    KeySelector::first_greater_than(k.clone()),
                    KeySelector::last_less_than(k.clone()),
                    KeySelector::last_less_or_equal(k.clone()),
                ] {
                    for n in [0, 1, -1] {
                        out.push(Read::Key(sel.clone() + n));
                    }
                }
            }
            out
        }
    }
}

/// The error a read gives, by kind; anything else is a value.
type Outcome = Result<Out, ErrorKind>;

async fn run_read(tx: &Transaction, r: &Read) -> Outcome {
    let res = match r {
        Read::Get(k) => tx.get(k.clone()).await.map(Out::Value),
        Read::Range {
            begin,
            end,
            limit,
            reverse,
        } => {
            let opts = RangeOptions {
                limit: *limit,
                reverse: *reverse,
                batch_size: 0,
            };
            tx.get_range_opts(begin.clone(), end.clone(), opts)
                .await
                .map(Out::Rows)
        }
        Read::Stream {
            begin,
            end,
            limit,
            reverse,
            batch,
        } => {
            let opts = RangeOptions {
                limit: *limit,
                reverse: *reverse,
                batch_size: *batch,
            };
            tx.get_range_stream(begin.clone(), end.clone(), opts)
                .try_collect::<Vec<_>>()
                .await
                .map(Out::Rows)
        }
        Read::Key(sel) => tx.get_key(sel.clone()).await.map(Out::Key),
    };
    res.map_err(|e| e.kind())
}

/// What the model says `r` gives: FoundationDB's rules, where reading a versionstamped value
/// or where a versionstamped key will land (a get of it, a range read whose rows include it,
/// a selector that walks over it) is refused and nothing else is.
fn model_read(m: &Model, r: &Read) -> Outcome {
    let unreadable = Err(ErrorKind::InvalidArgument);
    match r {
        Read::Get(k) => match m.get(k) {
            Some(Cell::Val(v)) => Ok(Out::Value(Some(v.clone()))),
            Some(Cell::Unreadable) => unreadable,
            None => Ok(Out::Value(None)),
        },
        Read::Range {
            begin,
            end,
            limit,
            reverse,
        }
        | Read::Stream {
            begin,
            end,
            limit,
            reverse,
            ..
        } => {
            if begin >= end {
                return Ok(Out::Rows(Vec::new()));
            }
            let inside: Vec<(&Bytes, &Cell)> = if *reverse {
                m.range(begin.clone()..end.clone()).rev().collect()
            } else {
                m.range(begin.clone()..end.clone()).collect()
            };
            let take = if *limit == 0 { usize::MAX } else { *limit };
            let mut rows = Vec::new();
            for (k, c) in inside.into_iter().take(take) {
                match c {
                    Cell::Val(v) => rows.push((k.clone(), v.clone())),
                    Cell::Unreadable => return unreadable,
                }
            }
            Ok(Out::Rows(rows))
        }
        Read::Key(sel) => {
            let keys: Vec<(&Bytes, &Cell)> = m.range(..Bytes::from_static(b"\xff")).collect();
            let anchor = sel.key();
            // How many keys are "less than" the anchor; the selector's key is then `offset`
            // keys on from the last of them.
            let i = keys
                .iter()
                .filter(|(k, _)| {
                    if sel.or_equal() {
                        k.as_ref() <= anchor
                    } else {
                        k.as_ref() < anchor
                    }
                })
                .count() as i64;
            let target = i - 1 + i64::from(sel.offset());
            let len = keys.len() as i64;
            let walked: Vec<i64> = if sel.offset() >= 1 {
                (i..=target.min(len - 1)).collect()
            } else {
                (target.max(0)..i).collect()
            };
            if walked
                .iter()
                .any(|&j| keys[j as usize].1 == &Cell::Unreadable)
            {
                return unreadable;
            }
            Ok(Out::Key(if target < 0 {
                Bytes::new()
            } else if target >= len {
                Bytes::from_static(b"\xff")
            } else {
                keys[target as usize].0.clone()
            }))
        }
    }
}

/// Runs every read of `kind` in `tx`, comparing each with the model; mismatches go to
/// `failures`, prefixed by `cell`.
async fn check_reads(
    tx: &Transaction,
    kind: ReadKind,
    ns: &str,
    model: &Model,
    cell: &str,
    failures: &mut Vec<String>,
) -> (usize, bool) {
    let handle = if kind.snapshot {
        tx.snapshot()
    } else {
        tx.clone()
    };
    let rs = reads(kind.group, ns);
    let got: Vec<(Read, Outcome)> = if kind.group == Group::ConcurrentGets {
        let doubled: Vec<Read> = rs.iter().chain(rs.iter()).cloned().collect();
        let outs = futures::future::join_all(doubled.iter().map(|r| run_read(&handle, r))).await;
        doubled.into_iter().zip(outs).collect()
    } else {
        let mut got = Vec::new();
        for r in rs {
            let out = run_read(&handle, &r).await;
            got.push((r, out));
        }
        got
    };
    let n = got.len();
    // A read version handed out as the latest serves reads for 5 s only; a slow run can pass
    // that, and the caller then repeats the attempt.
    let aged = got
        .iter()
        .any(|(_, out)| *out == Err(ErrorKind::TransactionTooOld));
    for (r, out) in got {
        let want = model_read(model, &r);
        if out != want {
            failures.push(format!(
                "{cell} / {kind}: {r:?}\n      got   {out:?}\n      model {want:?}"
            ));
        }
    }
    (n, aged)
}

/// The whole user keyspace, read in a fresh transaction.
async fn everything(db: &Database) -> Model {
    db.run(|tx| async move {
        tx.get_range(Bytes::new(), Bytes::from_static(b"\xff"), 0)
            .await
    })
    .await
    .unwrap()
    .into_iter()
    .map(|(k, v)| (k, Cell::Val(v)))
    .collect()
}

/// The differences between the keyspace read back and the model, for a failure message.
fn diff(got: &Model, want: &Model) -> Vec<String> {
    let mut out = Vec::new();
    for (k, w) in want {
        if got.get(k) != Some(w) {
            out.push(format!("{k:?}: got {:?}, model {w:?}", got.get(k)));
        }
    }
    for (k, g) in got {
        if !want.contains_key(k) {
            out.push(format!("{k:?}: got {g:?}, model has no such key"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_after_every_kind_of_write_sees_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let db = cluster.db(Duration::from_secs(20)).await;
    let kinds = write_kinds();
    // Two namespaces per write kind: `r` for the reads (its transactions commit once, in the
    // step-by-step pass) and `c` for a commit without reads.
    let ns = |i: usize, variant: char| format!("w{i:02}{variant}/");

    let mut stored = everything(&db).await;
    assert!(
        stored.is_empty(),
        "a new database has user keys: {stored:?}"
    );
    let tx = db.create_transaction();
    for i in 0..kinds.len() {
        for variant in ['r', 'c'] {
            for (letter, value) in seed() {
                let k = key(&ns(i, variant), letter);
                tx.set(k.clone(), value.clone());
                stored.insert(k, Cell::Val(Bytes::from(value)));
            }
        }
    }
    tx.commit().await.unwrap();
    assert_eq!(everything(&db).await, stored, "the seed did not read back");

    let mut failures = Vec::new();
    let mut reads_checked = 0;
    let mut cells = 0;
    for (i, (name, writes)) in kinds.iter().enumerate() {
        let (rns, cns) = (ns(i, 'r'), ns(i, 'c'));
        let mut after = stored.clone();
        for w in writes {
            model_write(&mut after, &rns, w, None);
        }

        // The matrix: one fresh transaction per cell, all the writes, then the reads. The
        // cells of a row are independent, so they run at once.
        let row = read_kinds().into_iter().map(|kind| {
            let (db, rns, after) = (&db, &rns, &after);
            async move {
                let tx = db.create_transaction();
                for w in writes {
                    write(&tx, rns, w);
                }
                let mut failures = Vec::new();
                let cell = format!("[{name}]");
                let (n, _) = check_reads(&tx, kind, rns, after, &cell, &mut failures).await;
                (n, failures)
            }
        });
        for (n, f) in futures::future::join_all(row).await {
            reads_checked += n;
            failures.extend(f);
            cells += 1;
        }

        // Step by step in one transaction: every read after each write, then the commit. A
        // slow debug run can take past the 5-second rule (which holds on an idle cluster
        // too) and be refused as too old; then the attempt is repeated shorter: every write,
        // then every kind of read at once, then the commit. Its reads are refused too once
        // the read version is that old, and that also repeats the attempt.
        let mut attempts = 0;
        let stamp = loop {
            attempts += 1;
            let tx = db.create_transaction();
            let mut model = stored.clone();
            let (mut attempt_failures, mut attempt_reads, mut aged) = (Vec::new(), 0, false);
            if attempts == 1 {
                for (step, w) in writes.iter().enumerate() {
                    write(&tx, &rns, w);
                    model_write(&mut model, &rns, w, None);
                    for kind in read_kinds() {
                        let cell = format!("[{name}, step {step}: after {w:?}]");
                        let (n, old) =
                            check_reads(&tx, kind, &rns, &model, &cell, &mut attempt_failures)
                                .await;
                        attempt_reads += n;
                        aged |= old;
                    }
                }
            } else {
                for w in writes {
                    write(&tx, &rns, w);
                    model_write(&mut model, &rns, w, None);
                }
                let (tx, rns, model) = (&tx, &rns, &model);
                let reads = read_kinds().into_iter().map(|kind| async move {
                    let mut f = Vec::new();
                    let cell = format!("[{name}, after every write]");
                    let (n, old) = check_reads(tx, kind, rns, model, &cell, &mut f).await;
                    (n, old, f)
                });
                for (n, old, f) in futures::future::join_all(reads).await {
                    attempt_reads += n;
                    aged |= old;
                    attempt_failures.extend(f);
                }
            }
            if aged && attempts < 5 {
                continue;
            }
            match tx.commit().await {
                Ok(_) => {
                    failures.extend(attempt_failures);
                    reads_checked += attempt_reads;
                    break tx.versionstamp().unwrap();
                }
                Err(e) if e.kind() == ErrorKind::TransactionTooOld && attempts < 5 => {}
                Err(e) => panic!("[{name}] step-by-step commit: {e}"),
            }
        };
        for w in writes {
            model_write(&mut stored, &rns, w, Some(&stamp));
        }
        let now = everything(&db).await;
        for d in diff(&now, &stored) {
            failures.push(format!("[{name}] committed after its reads: {d}"));
        }
        stored = now;

        // The same writes committed with no read in between.
        let tx = db.create_transaction();
        for w in writes {
            write(&tx, &cns, w);
        }
        tx.commit().await.unwrap();
        let stamp = tx.versionstamp().unwrap();
        for w in writes {
            model_write(&mut stored, &cns, w, Some(&stamp));
        }
        let now = everything(&db).await;
        for d in diff(&now, &stored) {
            failures.push(format!("[{name}] committed without reads: {d}"));
        }
        stored = now;
    }
    eprintln!(
        "read-your-writes matrix: {} write kinds x {} read kinds = {cells} cells, {reads_checked} reads checked, {} mismatches",
        kinds.len(),
        read_kinds().len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} reads disagree with the model:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A log appended to with versionstamped keys, as FoundationDB applications keep one: after
/// an append, the entries up to the read version read as usual (the new one lands above
/// them, its commit version being higher), a read that reaches where it may land is refused, and a later clear over all
/// of that range makes it readable again (empty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_appended_with_versionstamped_keys_reads_below_the_read_version() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let db = cluster.db(Duration::from_secs(20)).await;
    let mut entries = Vec::new();
    for i in 0..3u8 {
        let tx = db.create_transaction();
        tx.atomic_op(AtomicOp::SetVersionstampedKey, template(b"log/"), vec![i]);
        tx.commit().await.unwrap();
        entries.push((
            stamped(b"log/", &tx.versionstamp().unwrap()),
            Bytes::from(vec![i]),
        ));
    }
    let tx = db.create_transaction();
    let rv = tx.read_version().await.unwrap();
    tx.atomic_op(
        AtomicOp::SetVersionstampedKey,
        template(b"log/"),
        b"new".to_vec(),
    );
    let below = stamped(b"log/", &ferrisdb_common::atomic::versionstamp(rv.0 + 1, 0));
    assert_eq!(
        tx.get_range(Bytes::from_static(b"log/"), below.clone(), 0)
            .await
            .unwrap(),
        entries,
        "the entries below the read version's stamp"
    );
    // Newest first with a limit: the first key it would return may be the new one.
    let newest = tx
        .get_range_opts(
            Bytes::from_static(b"log/"),
            Bytes::from_static(b"log0"),
            RangeOptions {
                limit: 1,
                reverse: true,
                batch_size: 0,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(newest.kind(), ErrorKind::InvalidArgument, "{newest}");
    assert!(
        newest.to_string().contains("set_versionstamped_key"),
        "{newest}"
    );
    let e = tx
        .get_key(KeySelector::first_greater_or_equal(below.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let e = tx.get(stamped(b"log/", &[0xff; 10])).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    // A clear of the whole log after the append: it lands and is cleared, so all is known.
    tx.clear_range(Bytes::from_static(b"log/"), Bytes::from_static(b"log0"));
    assert_eq!(
        tx.get_range(Bytes::from_static(b"log/"), Bytes::from_static(b"log0"), 0)
            .await
            .unwrap(),
        Vec::new()
    );
    tx.commit().await.unwrap();
    assert_eq!(
        db.run(|tx| async move {
            tx.get_range(Bytes::from_static(b"log/"), Bytes::from_static(b"log0"), 0)
                .await
        })
        .await
        .unwrap(),
        Vec::new()
    );

    // At the edge: a stamped key of the largest legal size (10,000 bytes once stamped).
    let mut prefix = b"big/".to_vec();
    prefix.resize(10_000 - 10, b'k');
    let (begin, end) = (Bytes::from_static(b"big/"), Bytes::from_static(b"big0"));
    let tx = db.create_transaction();
    tx.atomic_op(AtomicOp::SetVersionstampedKey, template(&prefix), vec![1]);
    tx.commit().await.unwrap();
    let first = stamped(&prefix, &tx.versionstamp().unwrap());
    assert_eq!(first.len(), 10_000);
    let tx = db.create_transaction();
    tx.atomic_op(AtomicOp::SetVersionstampedKey, template(&prefix), vec![2]);
    let e = tx
        .get_range(begin.clone(), end.clone(), 0)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert_eq!(
        tx.get(first.clone()).await.unwrap(),
        Some(Bytes::from(vec![1]))
    );
    tx.commit().await.unwrap();
    let second = stamped(&prefix, &tx.versionstamp().unwrap());
    let rows = db
        .run(|tx| {
            let (begin, end) = (begin.clone(), end.clone());
            async move { tx.get_range(begin, end, 0).await }
        })
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            (first, Bytes::from(vec![1])),
            (second, Bytes::from(vec![2]))
        ]
    );
}
