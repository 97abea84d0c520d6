//! Size limits (DESIGN.md §2), with the checks that turn a violation into its error code.

use std::time::Duration;

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
    if key.len() > MAX_KEY_SIZE {
        return Err(Error::new(
            ErrorKind::KeyTooLarge,
            format!("key is {} bytes; the limit is {MAX_KEY_SIZE}", key.len()),
        ));
    }
    if key.first() == Some(&SYSTEM_KEY_PREFIX) {
        return Err(Error::invalid(
            "keys beginning with 0xFF are reserved for the system",
        ));
    }
    Ok(())
}

/// Checks a range a user wants to clear: a writable first key, an end no further than the
/// end of the user keyspace (`\xFF`), and `begin <= end`.
pub fn check_clear_range(begin: &[u8], end: &[u8]) -> Result<()> {
    check_key(begin)?;
    if end != [SYSTEM_KEY_PREFIX] {
        check_key(end)?;
    }
    if begin > end {
        return Err(Error::invalid(
            "inverted range: the end of a range clear sorts before its beginning",
        ));
    }
    Ok(())
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
    }
}
