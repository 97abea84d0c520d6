//! Size limits (DESIGN.md §2), with the checks that turn a violation into its error code.

use std::time::Duration;

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Result};

/// Longest key, in bytes.
pub const MAX_KEY_SIZE: usize = 10_000;
/// Longest value, in bytes.
pub const MAX_VALUE_SIZE: usize = 100_000;
/// Largest transaction: mutations plus conflict ranges, in bytes.
pub const MAX_TRANSACTION_SIZE: usize = 10_000_000;
/// How old a read version may be before commits (and reads) refuse it.
pub const MAX_READ_VERSION_AGE: Duration = Duration::from_secs(5);
/// Keys starting with this byte belong to the system.
pub const SYSTEM_KEY_PREFIX: u8 = 0xFF;

/// Checks a key a user wants to write.
pub fn check_key(key: &[u8]) -> Result<()> {
    check_key_as(key, "a written key")
}

/// [`check_key`] for a key used otherwise (`what` names it in the refusal: "the watched
/// key").
pub fn check_key_as(key: &[u8], what: &str) -> Result<()> {
    if key.len() > MAX_KEY_SIZE {
        return Err(Error::new(
            ErrorKind::KeyTooLarge,
            format!("key is {} bytes; the limit is {MAX_KEY_SIZE}", key.len()),
        ));
    }
    if key.first() == Some(&SYSTEM_KEY_PREFIX) {
        return Err(outside_legal_range(what));
    }
    Ok(())
}

/// What one mutation costs in a transaction's size beyond its key and parameter bytes. It is
/// at least the mutation's protobuf overhead (about 20 bytes) and its WAL overhead (9 bytes),
/// so a legal transaction's request and its WAL share each fit in [`MAX_TRANSACTION_SIZE`]
/// plus fixed fields; and it charges a share of the mutation's fixed in-memory cost, so many
/// tiny mutations (a commit of a million one-byte clears) cannot make the compute hold far
/// more memory than the bytes it received (issue 13).
pub const MUTATION_OVERHEAD: usize = 64;
/// What one conflict range costs beyond its two bounds (protobuf: about 14 bytes).
pub const RANGE_OVERHEAD: usize = 32;

/// The size a mutation counts for in its transaction.
pub fn mutation_size(key_len: usize, param_len: usize) -> usize {
    key_len + param_len + MUTATION_OVERHEAD
}

/// The size a conflict range counts for in its transaction.
pub fn range_size(begin_len: usize, end_len: usize) -> usize {
    begin_len + end_len + RANGE_OVERHEAD
}

/// The reason (message prefix, with code `invalid_argument`) given to a read or write of a key
/// in the system keyspace (`\xFF...`), as FoundationDB's `key_outside_legal_range`.
pub const KEY_OUTSIDE_LEGAL_RANGE: &str = "key_outside_legal_range";

fn outside_legal_range(what: &str) -> Error {
    Error::invalid(format!(
        "{KEY_OUTSIDE_LEGAL_RANGE}: {what} lies in the system keyspace (keys from \\xff)"
    ))
}

/// Checks a key a client wants to read: keys in the system keyspace answer
/// `invalid_argument` with reason [`KEY_OUTSIDE_LEGAL_RANGE`]. Whether it is longer than
/// [`MAX_KEY_SIZE`] is the caller's affair: no such key exists, so a get answers absent.
pub fn check_read_key(key: &[u8]) -> Result<()> {
    if key.first() == Some(&SYSTEM_KEY_PREFIX) {
        return Err(outside_legal_range("the key"));
    }
    Ok(())
}

/// Checks the bounds of a range read: neither may lie past `\xFF`, the end of the user
/// keyspace (FoundationDB lets a range end exactly there).
pub fn check_read_range(begin: &[u8], end: &[u8]) -> Result<()> {
    let limit = [SYSTEM_KEY_PREFIX];
    if begin > &limit[..] || end > &limit[..] {
        return Err(outside_legal_range("the range"));
    }
    Ok(())
}

/// The range a clear of `[begin, end)` actually clears, FoundationDB's way: a bound longer than
/// [`MAX_KEY_SIZE`] is cut to `MAX_KEY_SIZE + 1` bytes (no longer key exists, so the same keys
/// are cleared), and a range left empty is a no-op (`None`). Refused: an inverted range, a
/// range in the system keyspace, an end past `\xFF`.
pub fn clear_range_bounds(begin: &Bytes, end: &Bytes) -> Result<Option<(Bytes, Bytes)>> {
    if begin > end {
        return Err(Error::invalid(
            "inverted range: the end of a range clear sorts before its beginning",
        ));
    }
    let cut = |k: &Bytes| k.slice(..k.len().min(MAX_KEY_SIZE + 1));
    let (begin, end) = (cut(begin), cut(end));
    if begin >= end {
        return Ok(None);
    }
    if begin.first() == Some(&SYSTEM_KEY_PREFIX) || end[..] > [SYSTEM_KEY_PREFIX][..] {
        return Err(outside_legal_range("a cleared range"));
    }
    Ok(Some((begin, end)))
}

/// Checks a value a user wants to write.
pub fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_SIZE {
        return Err(Error::new(
            ErrorKind::ValueTooLarge,
            format!(
                "value is {} bytes; the limit is {MAX_VALUE_SIZE}",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// Checks a transaction's total size.
pub fn check_transaction_size(bytes: usize) -> Result<()> {
    if bytes > MAX_TRANSACTION_SIZE {
        return Err(Error::new(
            ErrorKind::TransactionTooLarge,
            format!("transaction is {bytes} bytes; the limit is {MAX_TRANSACTION_SIZE}"),
        ));
    }
    Ok(())
}

/// Checks the part of a transaction counted so far (a check as it arrives, before the rest
/// is read): past the limit, the whole is at least that large, and the message says so.
pub fn check_transaction_size_so_far(bytes: usize) -> Result<()> {
    if bytes > MAX_TRANSACTION_SIZE {
        return Err(Error::new(
            ErrorKind::TransactionTooLarge,
            format!(
                "transaction is over {MAX_TRANSACTION_SIZE} bytes (at least {bytes} counted \
                 before the rest); the limit is {MAX_TRANSACTION_SIZE}"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_give_their_codes() {
        assert!(check_key(&[b'a'; MAX_KEY_SIZE]).is_ok());
        let e = check_key(&[b'a'; MAX_KEY_SIZE + 1]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::KeyTooLarge);
        assert_eq!(
            check_key(&[0xFF, 1]).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert!(check_value(&vec![0; MAX_VALUE_SIZE]).is_ok());
        let e = check_value(&vec![0; MAX_VALUE_SIZE + 1]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ValueTooLarge);
        let e = check_transaction_size(MAX_TRANSACTION_SIZE + 1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TransactionTooLarge);
        // A count cut short says it is a lower bound, not the transaction's size.
        assert!(check_transaction_size_so_far(MAX_TRANSACTION_SIZE).is_ok());
        let e = check_transaction_size_so_far(MAX_TRANSACTION_SIZE + 1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TransactionTooLarge);
        assert!(e.message().contains("at least"), "{e}");
    }

    #[test]
    fn reads_and_clears_follow_foundationdb() {
        let e = check_read_key(b"\xffsys").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.message().starts_with(KEY_OUTSIDE_LEGAL_RANGE));
        assert!(check_read_key(&[b'a'; MAX_KEY_SIZE + 5]).is_ok());
        assert!(check_read_range(b"", b"\xff").is_ok());
        assert!(check_read_range(b"", b"\xff\x00").is_err());
        assert!(check_read_range(b"\xff\x01", b"\xff\x02").is_err());

        let b = |v: &[u8]| Bytes::copy_from_slice(v);
        // Both bounds over the limit with the same first 10,001 bytes: nothing to clear.
        let long = |tail: u8| {
            let mut k = vec![b'k'; MAX_KEY_SIZE + 1];
            k.push(tail);
            Bytes::from(k)
        };
        assert_eq!(clear_range_bounds(&long(1), &long(2)).unwrap(), None);
        // A long begin is cut to 10,001 bytes; the end stays.
        let (begin, end) = clear_range_bounds(&long(1), &b(b"z")).unwrap().unwrap();
        assert_eq!(begin.len(), MAX_KEY_SIZE + 1);
        assert_eq!(end, b(b"z"));
        assert_eq!(clear_range_bounds(&b(b"a"), &b(b"a")).unwrap(), None);
        assert!(clear_range_bounds(&b(b"b"), &b(b"a")).is_err());
        assert!(clear_range_bounds(&b(b"a"), &b(b"\xff")).unwrap().is_some());
        assert!(clear_range_bounds(&b(b"a"), &b(b"\xff\x00")).is_err());
        assert!(clear_range_bounds(&b(b"\xff"), &b(b"\xff\xff")).is_err());
    }
}
