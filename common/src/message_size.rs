//! Every gRPC message limit, derived in one place from the transaction limit and the largest
//! commit batch (issue 14: tonic's default 4 MiB decode limit on one hop of the WAL path
//! wedged every commit after one legal 4.2 MB transaction).
//!
//! The chain of bounds, from the client to the last reader of the WAL:
//!
//! - A transaction counts at most [`MAX_TRANSACTION_SIZE`] bytes, and that count
//!   ([`crate::limits::mutation_size`], [`crate::limits::range_size`]) charges every mutation
//!   and range at least its protobuf and WAL encodings, so a legal `Commit` request and a
//!   transaction's share of a WAL frame each fit in that many bytes plus fixed fields.
//! - A batch grows to at most [`MAX_BATCH_BYTES`]; a transaction larger than that goes alone.
//!   So one frame carries at most [`MAX_FRAME_BYTES`] (the committer checks the frame it
//!   encoded against it too, since resolved atomic ops can grow).
//! - An `Append` groups frames up to 4 MiB but always carries at least one whole frame; a
//!   `ReadWal` chunk likewise (1 MiB, or one whole frame). Both fit in [`MAX_WAL_MESSAGE_BYTES`].
//! - Answers that could grow without bound — a range page, a page of a key's history, a
//!   change-feed batch — stop growing once they hold [`REPLY_TARGET_BYTES`], and say that more
//!   follows; each holds at least one row or record, so at most one whole row (≤ 110 kB) or one
//!   commit record (≤ [`MAX_FRAME_BYTES`]) over the target. Every hop accepts
//!   [`MAX_MESSAGE_BYTES`], a multiple of the WAL bound.
//!
//! Every server and client (client → compute, compute → safekeepers, safekeeper → peers,
//! pageserver and replicas ← safekeepers, compute → pageserver, history and the change feed)
//! is built through [`with_message_limits!`](crate::with_message_limits).

use crate::limits::MAX_TRANSACTION_SIZE;

/// A commit batch stops growing at this many counted bytes; a transaction larger than that
/// goes alone in its batch.
pub const MAX_BATCH_BYTES: usize = 8 << 20;

/// A frame's fixed fields: header, format, version, commit time, mutation count.
pub const FRAME_OVERHEAD: usize = 64;

/// The largest WAL frame the committer appends: a full batch or one maximal transaction.
pub const MAX_FRAME_BYTES: usize = max(MAX_BATCH_BYTES, MAX_TRANSACTION_SIZE) + FRAME_OVERHEAD;

/// Room for everything around the payload: protobuf tags and lengths, the database name,
/// terms and positions.
pub const MESSAGE_HEADROOM: usize = 1 << 20;

/// The largest message on the WAL path (`Append`, `ReadWal` chunks) and the largest `Commit`.
pub const MAX_WAL_MESSAGE_BYTES: usize = MAX_FRAME_BYTES + MESSAGE_HEADROOM;

/// The limit every FerrisDB gRPC server and client encodes and decodes with: the WAL bound
/// rounded up to a power of two, times four: room for a capped answer (the reply target plus
/// one record) with a wide margin. An over-limit transaction below this still reaches the
/// size check and gets `transaction_too_large` rather than a transport error.
pub const MAX_MESSAGE_BYTES: usize = MAX_WAL_MESSAGE_BYTES.next_power_of_two() * 4;

/// A range page, a page of history or a change-feed batch stops growing once it holds this
/// many bytes of keys, values and records (it always holds at least one). Below gRPC's
/// default receive limit by more than one row, so a client built from the protos with no
/// settings reads every page of rows: at 4 MiB, a page of 100 kB history entries arrived at
/// 4,258,983 bytes and such a client refused it (`RESOURCE_EXHAUSTED`; an outside audit).
pub const REPLY_TARGET_BYTES: usize = 3 << 20;

/// The receive limit gRPC libraries apply by default (4 MiB): what a client of the protos
/// accepts unless told otherwise. Every page of rows fits in it ([`REPLY_TARGET_BYTES`]);
/// only a change-feed record of a transaction larger than it cannot.
pub const GRPC_DEFAULT_RECEIVE_BYTES: usize = 4 << 20;

// A page is the target plus one row (the largest key and value) plus protobuf framing,
// which the 64 kB margin covers for the per-row fields the byte count leaves out of a page.
const _: () = assert!(
    REPLY_TARGET_BYTES + crate::limits::MAX_KEY_SIZE + crate::limits::MAX_VALUE_SIZE + (64 << 10)
        <= GRPC_DEFAULT_RECEIVE_BYTES
);

/// Cuts `items` at the first one, past the first `min_items`, that brings their summed
/// `size_of` to `target` bytes (0: no cap), keeping at least one; returns whether it dropped
/// any (then more follow the last one kept). Every byte-capped answer — a range page on
/// either hop, a page of history, a change-feed batch — is cut by this one rule.
pub fn cap_by_bytes<T>(
    items: &mut Vec<T>,
    min_items: usize,
    target: usize,
    size_of: impl Fn(&T) -> usize,
) -> bool {
    if target == 0 {
        return false;
    }
    let mut bytes = 0usize;
    for (i, item) in items.iter().enumerate() {
        bytes = bytes.saturating_add(size_of(item));
        if i + 1 >= min_items && bytes >= target && i + 1 < items.len() {
            items.truncate(i + 1);
            return true;
        }
    }
    false
}

/// What a history entry counts for against a byte target besides its value: its version,
/// time and framing.
pub const HISTORY_ENTRY_OVERHEAD: usize = 32;

/// What a range row counts for against a byte target beyond its key and value: its
/// protobuf framing (the row's tag and length, the key's and the value's), so a page of
/// many tiny rows is cut by its size on the wire, not by its payload alone.
pub const RANGE_ROW_OVERHEAD: usize = 16;

/// The bytes a range row counts for against a byte target: its key, its value and
/// [`RANGE_ROW_OVERHEAD`]. Every hop cuts range pages by this one measure.
pub fn range_row_bytes(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + RANGE_ROW_OVERHEAD
}

/// The bytes a history entry counts for against a byte target: its value and
/// [`HISTORY_ENTRY_OVERHEAD`].
pub fn history_entry_bytes(entry: &crate::proto::HistoryEntry) -> usize {
    entry.value.as_ref().map_or(0, |v| v.len()) + HISTORY_ENTRY_OVERHEAD
}

/// Cuts `entries` (a key's history, oldest first) once they hold [`REPLY_TARGET_BYTES`] of
/// values, keeping at least one; returns whether it cut (more follow the last one kept).
pub fn cap_history(entries: &mut Vec<crate::proto::HistoryEntry>) -> bool {
    cap_by_bytes(entries, 1, REPLY_TARGET_BYTES, history_entry_bytes)
}

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

// The WAL path's messages must fit the limit every hop decodes with.
const _: () = assert!(MAX_WAL_MESSAGE_BYTES <= MAX_MESSAGE_BYTES);
const _: () = assert!(MAX_FRAME_BYTES <= crate::wal::MAX_FRAME_PAYLOAD);
const _: () = assert!(MAX_FRAME_BYTES > MAX_TRANSACTION_SIZE && MAX_FRAME_BYTES > MAX_BATCH_BYTES);
const _: () = assert!(MAX_WAL_MESSAGE_BYTES > 4 << 20);
// A capped answer (the target, then one more row or one more commit record) fits.
const _: () = assert!(REPLY_TARGET_BYTES + MAX_WAL_MESSAGE_BYTES <= MAX_MESSAGE_BYTES);

/// Applies [`MAX_MESSAGE_BYTES`] as the encode and decode limit of a generated gRPC client or
/// server (`SafekeeperClient::new(channel)`, `PageserverServer::new(service)`, ...).
#[macro_export]
macro_rules! with_message_limits {
    ($grpc:expr) => {
        $grpc
            .max_decoding_message_size($crate::message_size::MAX_MESSAGE_BYTES)
            .max_encoding_message_size($crate::message_size::MAX_MESSAGE_BYTES)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_maximal_transaction_fits_one_frame_and_one_message() {
        use crate::limits::{MAX_VALUE_SIZE, mutation_size};
        use crate::wal::{Mutation, encode_frame};
        use bytes::Bytes;
        // Large values up to the limit.
        let mut big = Vec::new();
        let mut counted = 0;
        while counted + mutation_size(8, MAX_VALUE_SIZE) <= MAX_TRANSACTION_SIZE {
            counted += mutation_size(8, MAX_VALUE_SIZE);
            big.push(Mutation::Set {
                key: Bytes::from(format!("k{:07}", big.len())),
                value: Bytes::from(vec![0u8; MAX_VALUE_SIZE]),
            });
        }
        // Tiny clears up to the limit: the WAL overhead per mutation is the largest share.
        let n = MAX_TRANSACTION_SIZE / mutation_size(1, 0);
        let tiny: Vec<Mutation> = (0..n)
            .map(|i| Mutation::Clear {
                key: Bytes::from(vec![i as u8]),
            })
            .collect();
        for mutations in [big, tiny] {
            let (frame, _) = encode_frame(0, 0, &mutations);
            assert!(frame.len() <= MAX_FRAME_BYTES, "{} bytes", frame.len());
            assert!(frame.len() + MESSAGE_HEADROOM <= MAX_WAL_MESSAGE_BYTES);
        }
        // tonic's default decode limit, the bug this module exists for, is well below.
        assert_eq!(MAX_MESSAGE_BYTES, 64 << 20);
    }
}
