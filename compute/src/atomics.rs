//! Atomic operations at commit: the committer turns each transaction's atomic ops into plain
//! sets and clears before the batch goes to the log, so the WAL, the pageserver and the hot tier
//! only ever see resolved values.
//!
//! An atomic op's result depends on the key's value just before it: after every batch ahead of
//! it in the log (committed, or still in flight) and every earlier write of its own batch. The
//! committer reads each atomic key once at its latest committed version, lays the in-flight
//! batches' mutations over that, then walks the batch in order ([`resolve_batch`]).
//!
//! Versionstamped keys and values take the batch's version and the transaction's order in the
//! batch; the version is the end of the batch's frame, which the stamps' fixed length already
//! determines, so the batch is resolved once with placeholder stamps to learn it and once more
//! with the real ones.

use std::collections::HashMap;

use bytes::Bytes;
use ferrisdb_common::atomic::{self, AtomicOp};
use ferrisdb_common::limits;
use ferrisdb_common::wal::Mutation;
use ferrisdb_common::{Error, Result};

/// One write of a transaction as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// A set, clear or range clear, logged as it is.
    Plain(Mutation),
    /// An atomic op on `key` with `param` (for versionstamp ops: the template).
    Atomic {
        /// The operation.
        op: AtomicOp,
        /// The key (for [`AtomicOp::SetVersionstampedKey`], the key template).
        key: Bytes,
        /// The parameter (for [`AtomicOp::SetVersionstampedValue`], the value template).
        param: Bytes,
    },
}

impl Write {
    /// Bytes it counts for in its transaction and its batch ([`limits::mutation_size`]).
    pub fn bytes(&self) -> usize {
        match self {
            Write::Plain(Mutation::ClearRange { begin, end }) => {
                limits::mutation_size(begin.len(), end.len())
            }
            Write::Plain(m) => {
                limits::mutation_size(m.key().len(), m.value().map_or(0, |v| v.len()))
            }
            Write::Atomic { key, param, .. } => limits::mutation_size(key.len(), param.len()),
        }
    }

    /// The key whose current value it needs, if it needs one.
    fn reads(&self) -> Option<&Bytes> {
        match self {
            Write::Atomic { op, key, .. } if !op.is_versionstamp() => Some(key),
            _ => None,
        }
    }
}

/// The keys whose values before the batch resolving `writes` needs.
pub fn keys_needed<'a>(writes: impl Iterator<Item = &'a Write>) -> Vec<Bytes> {
    let mut keys: Vec<Bytes> = writes.filter_map(Write::reads).cloned().collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Lays `m` over the known values in `state` (keys not in `state` are not tracked).
pub fn apply_to(state: &mut HashMap<Bytes, Option<Bytes>>, m: &Mutation) {
    match m {
        Mutation::Set { key, value } => {
            if let Some(v) = state.get_mut(key) {
                *v = Some(value.clone());
            }
        }
        Mutation::Clear { key } => {
            if let Some(v) = state.get_mut(key) {
                *v = None;
            }
        }
        Mutation::ClearRange { begin, end } => {
            for (k, v) in state.iter_mut() {
                if begin <= k && k < end {
                    *v = None;
                }
            }
        }
    }
}

/// Resolves the writes of a batch's transactions, in order, into plain mutations. `state` holds
/// each needed key's value before the batch and is advanced through it; `stamp(i)` is the
/// versionstamp of the batch's `i`-th transaction.
pub fn resolve_batch(
    txns: &[&[Write]],
    state: &mut HashMap<Bytes, Option<Bytes>>,
    stamp: impl Fn(u16) -> [u8; atomic::VERSIONSTAMP_LEN],
) -> Result<Vec<Vec<Mutation>>> {
    let mut out = Vec::with_capacity(txns.len());
    for (i, writes) in txns.iter().enumerate() {
        let order = u16::try_from(i).map_err(|_| Error::internal("batch of over 65536"))?;
        let mut mutations = Vec::with_capacity(writes.len());
        for w in writes.iter() {
            let m = match w {
                Write::Plain(m) => m.clone(),
                Write::Atomic { op, key, param } => {
                    resolve_one(*op, key, param, state, &stamp(order))?
                }
            };
            apply_to(state, &m);
            mutations.push(m);
        }
        out.push(mutations);
    }
    Ok(out)
}

fn resolve_one(
    op: AtomicOp,
    key: &Bytes,
    param: &Bytes,
    state: &HashMap<Bytes, Option<Bytes>>,
    stamp: &[u8; atomic::VERSIONSTAMP_LEN],
) -> Result<Mutation> {
    let bad = |e: atomic::AtomicError| Error::invalid(format!("{}: {e}", op.name()));
    Ok(match op {
        AtomicOp::SetVersionstampedKey => Mutation::Set {
            key: Bytes::from(atomic::place_versionstamp(key, stamp).map_err(bad)?),
            value: param.clone(),
        },
        AtomicOp::SetVersionstampedValue => Mutation::Set {
            key: key.clone(),
            value: Bytes::from(atomic::place_versionstamp(param, stamp).map_err(bad)?),
        },
        _ => {
            let existing = state.get(key).ok_or_else(|| {
                Error::internal(format!("the value before {} was not read", op.name()))
            })?;
            match atomic::apply(op, existing.as_deref(), param).map_err(bad)? {
                Some(v) => Mutation::Set {
                    key: key.clone(),
                    value: Bytes::from(v),
                },
                None => Mutation::Clear { key: key.clone() },
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    #[test]
    fn a_batch_resolves_in_order_over_the_values_before_it() {
        let add = |n: u64| Write::Atomic {
            op: AtomicOp::Add,
            key: b(b"n"),
            param: Bytes::copy_from_slice(&n.to_le_bytes()),
        };
        let t1 = vec![add(1), add(2)];
        let t2 = vec![
            Write::Plain(Mutation::ClearRange {
                begin: b(b"a"),
                end: b(b"z"),
            }),
            add(5),
            Write::Atomic {
                op: AtomicOp::SetVersionstampedValue,
                key: b(b"stamp"),
                param: b(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            },
        ];
        assert_eq!(keys_needed(t1.iter().chain(t2.iter())), vec![b(b"n")]);
        let mut state =
            HashMap::from([(b(b"n"), Some(Bytes::copy_from_slice(&10u64.to_le_bytes())))]);
        let out = resolve_batch(&[&t1, &t2], &mut state, |i| atomic::versionstamp(77, i)).unwrap();
        let value = |m: &Mutation| m.value().cloned();
        assert_eq!(value(&out[0][0]), Some(b(&11u64.to_le_bytes())));
        assert_eq!(value(&out[0][1]), Some(b(&13u64.to_le_bytes())));
        // The range clear removed n first: 5 onto a missing key is 5.
        assert_eq!(value(&out[1][1]), Some(b(&5u64.to_le_bytes())));
        let stamped = value(&out[1][2]).unwrap();
        assert_eq!(&stamped[..], &atomic::versionstamp(77, 1)[..]);
        assert_eq!(state[&b(b"n")], Some(b(&5u64.to_le_bytes())));
    }
}
