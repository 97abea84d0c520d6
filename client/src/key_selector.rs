//! Key selectors: a key named by its position relative to another, as FoundationDB has them.
//!
//! A selector `(key, or_equal, offset)` means: take the last key less than `key` (less than or
//! equal, with `or_equal`), then move `offset` keys forward. So `offset` 0 is that key itself,
//! 1 the key after it. The four usual selectors are constructors here.

use bytes::Bytes;

/// A key named relative to another; resolve it with
/// [`Transaction::get_key`](crate::Transaction::get_key).
///
/// ```
/// use ferrisdb_client::KeySelector;
///
/// let s = KeySelector::first_greater_or_equal("user/") + 2;
/// assert_eq!(s.key(), b"user/");
/// assert_eq!(s.offset(), 3);
/// assert!(!s.or_equal());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySelector {
    key: Bytes,
    or_equal: bool,
    offset: i32,
}

impl KeySelector {
    /// The selector `(key, or_equal, offset)` in FoundationDB's terms.
    ///
    /// ```
    /// use ferrisdb_client::KeySelector;
    ///
    /// assert_eq!(KeySelector::new("k", false, 1), KeySelector::first_greater_or_equal("k"));
    /// ```
    pub fn new(key: impl Into<Bytes>, or_equal: bool, offset: i32) -> KeySelector {
        KeySelector {
            key: key.into(),
            or_equal,
            offset,
        }
    }

    /// The first key at or after `key`.
    ///
    /// ```
    /// let s = ferrisdb_client::KeySelector::first_greater_or_equal("k");
    /// assert_eq!((s.or_equal(), s.offset()), (false, 1));
    /// ```
    pub fn first_greater_or_equal(key: impl Into<Bytes>) -> KeySelector {
        KeySelector::new(key, false, 1)
    }

    /// The first key after `key`.
    ///
    /// ```
    /// let s = ferrisdb_client::KeySelector::first_greater_than("k");
    /// assert_eq!((s.or_equal(), s.offset()), (true, 1));
    /// ```
    pub fn first_greater_than(key: impl Into<Bytes>) -> KeySelector {
        KeySelector::new(key, true, 1)
    }

    /// The last key before `key`.
    ///
    /// ```
    /// let s = ferrisdb_client::KeySelector::last_less_than("k");
    /// assert_eq!((s.or_equal(), s.offset()), (false, 0));
    /// ```
    pub fn last_less_than(key: impl Into<Bytes>) -> KeySelector {
        KeySelector::new(key, false, 0)
    }

    /// The last key at or before `key`.
    ///
    /// ```
    /// let s = ferrisdb_client::KeySelector::last_less_or_equal("k");
    /// assert_eq!((s.or_equal(), s.offset()), (true, 0));
    /// ```
    pub fn last_less_or_equal(key: impl Into<Bytes>) -> KeySelector {
        KeySelector::new(key, true, 0)
    }

    /// The anchor key.
    ///
    /// ```
    /// assert_eq!(ferrisdb_client::KeySelector::last_less_than("k").key(), b"k");
    /// ```
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Whether the anchor itself counts as "less than".
    ///
    /// ```
    /// assert!(ferrisdb_client::KeySelector::first_greater_than("k").or_equal());
    /// ```
    pub fn or_equal(&self) -> bool {
        self.or_equal
    }

    /// How many keys past the anchor.
    ///
    /// ```
    /// assert_eq!(ferrisdb_client::KeySelector::first_greater_than("k").offset(), 1);
    /// ```
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// How to resolve the selector with one range read: the range to read, whether backwards,
    /// and how many keys in the answer is (the last row read).
    pub(crate) fn plan(&self) -> (Bytes, Bytes, bool, usize) {
        // Keys "less than" the anchor end where the keys "at or after" begin.
        let split = if self.or_equal {
            crate::transaction::key_after(&self.key)
        } else {
            self.key.clone()
        };
        // Anchored at `\xff` itself (the end of the user keyspace, a legal anchor in
        // FoundationDB): no user key lies at or past it, so reading up to `\xff` reads the
        // same keys as up to `\xff\x00`, a bound the compute refuses as outside the range.
        let split = if split.as_ref() == b"\xff\x00" {
            Bytes::from_static(b"\xff")
        } else {
            split
        };
        if self.offset >= 1 {
            (
                split,
                Bytes::from_static(b"\xff"),
                false,
                self.offset as usize,
            )
        } else {
            let n = 1 + self.offset.unsigned_abs() as usize;
            (Bytes::new(), split, true, n)
        }
    }
}

/// The same selector moved `n` keys further (backwards for negative `n`).
///
/// ```
/// let s = ferrisdb_client::KeySelector::last_less_than("k") + (-1);
/// assert_eq!(s.offset(), -1);
/// ```
impl std::ops::Add<i32> for KeySelector {
    type Output = KeySelector;

    fn add(mut self, n: i32) -> KeySelector {
        self.offset = self.offset.saturating_add(n);
        self
    }
}

/// The same selector moved `n` keys back.
///
/// ```
/// let s = ferrisdb_client::KeySelector::first_greater_than("k") - 1;
/// assert_eq!(s.offset(), 0);
/// ```
impl std::ops::Sub<i32> for KeySelector {
    type Output = KeySelector;

    fn sub(mut self, n: i32) -> KeySelector {
        self.offset = self.offset.saturating_sub(n);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Selectors anchored at `\xff` read no bound past it (found by an outside audit:
    /// `last_less_or_equal("\xff")` was refused as `key_outside_legal_range`).
    #[test]
    fn anchors_at_the_end_of_the_keyspace_read_inside_it() {
        let end = Bytes::from_static(b"\xff");
        let plan = KeySelector::last_less_or_equal(end.clone()).plan();
        assert_eq!(plan, (Bytes::new(), end.clone(), true, 1));
        let plan = (KeySelector::first_greater_than(end.clone()) - 1).plan();
        assert_eq!(plan, (Bytes::new(), end.clone(), true, 1));
        let plan = KeySelector::first_greater_than(end.clone()).plan();
        assert_eq!(plan, (end.clone(), end.clone(), false, 1));
        // Inside the keyspace nothing changes.
        let plan = KeySelector::last_less_or_equal("k").plan();
        assert_eq!(plan, (Bytes::new(), Bytes::from_static(b"k\x00"), true, 1));
    }
}
