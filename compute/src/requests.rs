//! Client requests at the door: each one converted from the wire and checked against the
//! limits (docs/compute.md, "Limits") here, once, before anything acts on it. A commit leaves
//! as a [`Commit`] the pipeline trusts: keys and values within their sizes and out of the
//! system keyspace, FoundationDB's no-ops dropped, every mutation's write conflict added, and
//! the transaction's size counted as it arrived.
//!
//! What this module cannot know stays where the knowledge is: whether a read version was ever
//! handed out and is young enough, and whether a read conflicts, are the pipeline's and the
//! resolver's (they depend on what committed); whether a batch's frame fits one message is the
//! committer's (resolved atomic ops can grow).

use bytes::Bytes;
use ferrisdb_common::atomic::{self, AtomicOp};
use ferrisdb_common::limits::{
    MAX_KEY_SIZE, check_key, check_read_key, check_read_range, check_transaction_size,
    check_transaction_size_so_far, check_value, clear_range_bounds, mutation_size, range_size,
};
use ferrisdb_common::proto;
use ferrisdb_common::wal::Mutation;
use ferrisdb_common::{Error, Result, Version};

use crate::atomics::Write;

/// The half-open key range `[begin, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// First key in the range.
    pub begin: Bytes,
    /// First key past the range.
    pub end: Bytes,
}

impl KeyRange {
    /// The range holding exactly `key`.
    pub fn single(key: &Bytes) -> KeyRange {
        let mut end = key.to_vec();
        end.push(0);
        KeyRange {
            begin: key.clone(),
            end: Bytes::from(end),
        }
    }

    /// Whether the two ranges share a key. An empty range holds no key, so it shares none
    /// (as in FoundationDB, where an empty conflict range conflicts with nothing): a read of
    /// `[m, m)` inside a written `[a, z)` is no conflict.
    pub fn intersects(&self, other: &KeyRange) -> bool {
        self.begin < self.end
            && other.begin < other.end
            && self.begin < other.end
            && other.begin < self.end
    }
}

/// A transaction asking to commit, as checked at the door ([`Commit::decode`]). In-process
/// callers that build one themselves (benchmarks) answer for its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The version its reads saw.
    pub read_version: Version,
    /// Ranges it read (non-snapshot).
    pub reads: Vec<KeyRange>,
    /// Ranges it wrote, including every mutated key.
    pub writes: Vec<KeyRange>,
    /// Its writes, in order.
    pub mutations: Vec<Write>,
}

impl Commit {
    /// What it counts for: the transaction-size limit's count, which batches are cut by too.
    pub fn bytes(&self) -> usize {
        let ranges = self
            .reads
            .iter()
            .chain(self.writes.iter())
            .map(|r| range_size(r.begin.len(), r.end.len()));
        self.mutations.iter().map(Write::bytes).chain(ranges).sum()
    }

    /// The commit a client request asks for, checked; `None` for a read-only transaction
    /// (no mutations, no write conflicts), which is serializable at its read version with
    /// nothing to commit.
    pub fn from_request(req: proto::CommitRequest) -> Result<Option<Commit>> {
        if req.mutations.is_empty() && req.write_conflicts.is_empty() {
            return Ok(None);
        }
        Commit::decode(
            Version(req.read_version),
            req.mutations,
            req.read_conflicts,
            req.write_conflicts,
        )
        .map(Some)
    }

    /// A commit's writes and conflict ranges, checked: each mutation's keys and values,
    /// FoundationDB's no-ops (clears of keys over the limit, empty range clears), the write
    /// conflict every mutation adds, and the transaction's size.
    pub fn decode(
        read_version: Version,
        req_mutations: Vec<proto::Mutation>,
        read_conflicts: Vec<proto::KeyRange>,
        write_conflicts: Vec<proto::KeyRange>,
    ) -> Result<Commit> {
        // Counted as it arrives, each item at least its encoded size (see
        // limits::MUTATION_OVERHEAD), so what this holds stays proportional to the bytes
        // received; and checked before anything is built for the next item.
        let mut size = 0usize;
        // Grown as items pass the size check, never sized from the request's counts.
        let mut mutations = Vec::new();
        let mut writes = Vec::new();
        for m in req_mutations {
            size += mutation_size(m.key.len(), m.param.len());
            check_transaction_size_so_far(size)?;
            if m.r#type == proto::MutationType::Atomic as i32 {
                let (w, conflict) = atomic_write(m)?;
                writes.push(conflict);
                mutations.push(w);
                continue;
            }
            let m = match Mutation::try_from(m)? {
                Mutation::ClearRange { begin, end } => {
                    // Bounds over the key limit are cut, and an empty range is a no-op, as in
                    // FoundationDB.
                    let Some((begin, end)) = clear_range_bounds(&begin, &end)? else {
                        continue;
                    };
                    writes.push(KeyRange {
                        begin: begin.clone(),
                        end: end.clone(),
                    });
                    Mutation::ClearRange { begin, end }
                }
                Mutation::Clear { key } if key.len() > MAX_KEY_SIZE => {
                    // No key that long exists: clearing it is a no-op (FoundationDB).
                    check_read_key(&key)?;
                    continue;
                }
                m => {
                    check_key(m.key())?;
                    if let Some(v) = m.value() {
                        check_value(v)?;
                    }
                    writes.push(KeyRange::single(m.key()));
                    m
                }
            };
            mutations.push(Write::Plain(m));
        }
        let reads = read_conflicts
            .into_iter()
            .map(conflict_range)
            .collect::<Result<Vec<_>>>()?;
        for r in write_conflicts {
            writes.push(conflict_range(r)?);
        }
        size += reads
            .iter()
            .chain(writes.iter())
            .map(|r| range_size(r.begin.len(), r.end.len()))
            .sum::<usize>();
        check_transaction_size(size)?;
        Ok(Commit {
            read_version,
            reads,
            writes,
            mutations,
        })
    }
}

/// Checks the key of a point read; false when it is longer than any key can be, so the read
/// answers absent without asking (FoundationDB's rule).
pub fn check_point_read(key: &[u8]) -> Result<bool> {
    check_read_key(key)?;
    Ok(key.len() <= MAX_KEY_SIZE)
}

/// Checks the bounds of a range read (none past the user keyspace).
pub fn check_range_read(begin: &[u8], end: &[u8]) -> Result<()> {
    check_read_range(begin, end)
}

/// Checks the key of a history request (out of the system keyspace).
pub fn check_history(key: &[u8]) -> Result<()> {
    check_read_key(key)
}

/// Checks the key of a watch as a written key is checked (its size, the user keyspace).
pub fn check_watch(key: &[u8]) -> Result<()> {
    ferrisdb_common::limits::check_key_as(key, "the watched key")
}

/// Checks an atomic op from the wire: a known op, a writable key, a value within limits, a
/// well-formed versionstamp template. Returns it with the write conflict it adds: for a
/// versionstamped key, the range of every key the template could become (FoundationDB's
/// rule), so a transaction that read any part of that range conflicts with it.
fn atomic_write(m: proto::Mutation) -> Result<(Write, KeyRange)> {
    let code = u8::try_from(m.atomic_op).ok().and_then(AtomicOp::from_code);
    let op = code.ok_or_else(|| Error::invalid(format!("unknown atomic op {}", m.atomic_op)))?;
    // The template's length without its offset suffix, and where the stamp goes.
    let template = |t: &[u8]| {
        atomic::versionstamp_offset(t)
            .map(|at| (t.len() - atomic::VERSIONSTAMP_OFFSET_LEN, at))
            .map_err(|e| Error::invalid(format!("{}: {e}", op.name())))
    };
    let conflict = match op {
        AtomicOp::SetVersionstampedKey => {
            let (len, at) = template(&m.key)?;
            check_key(&m.key[..len])?;
            check_value(&m.param)?;
            versionstamped_key_range(&m.key[..len], at)?
        }
        AtomicOp::SetVersionstampedValue => {
            check_key(&m.key)?;
            check_value(&m.param[..template(&m.param)?.0])?;
            KeyRange::single(&m.key)
        }
        _ => {
            check_key(&m.key)?;
            check_value(&m.param)?;
            KeyRange::single(&m.key)
        }
    };
    Ok((
        Write::Atomic {
            op,
            key: m.key,
            param: m.param,
        },
        conflict,
    ))
}

/// Every key a versionstamped key template (`key`, stamp at `offset`) can become: from the
/// template with the stamp all `0x00` to just past it with the stamp all `0xff`.
pub fn versionstamped_key_range(key: &[u8], offset: usize) -> Result<KeyRange> {
    let stamp = offset..offset + atomic::VERSIONSTAMP_LEN;
    if stamp.end > key.len() {
        return Err(Error::invalid(
            "the versionstamp lies past the end of the key",
        ));
    }
    let mut begin = key.to_vec();
    begin[stamp.clone()].fill(0x00);
    let mut end = key.to_vec();
    end[stamp].fill(0xff);
    end.push(0);
    Ok(KeyRange {
        begin: Bytes::from(begin),
        end: Bytes::from(end),
    })
}

/// A conflict range from the wire: begins at or before its end.
fn conflict_range(r: proto::KeyRange) -> Result<KeyRange> {
    if r.begin > r.end {
        return Err(Error::invalid("conflict range begins after it ends"));
    }
    Ok(KeyRange {
        begin: r.begin,
        end: r.end,
    })
}
