//! Key prefixes for partitioning the keyspace, compatible with FoundationDB's `Subspace`.
//!
//! A [`Subspace`] owns a byte prefix, usually a packed tuple such as
//! `("app", "users")`, and packs tuples into keys beneath it. Because tuple
//! encoding preserves order, the keys of a subspace form one contiguous range
//! that [`Subspace::range`] returns for scans and clears.
//!
//! ```
//! use ferrisdb_client::subspace::Subspace;
//! use ferrisdb_client::tuple::Element;
//!
//! let users = Subspace::new(&["app".into(), "users".into()]);
//! let key = users.pack(&[42.into(), "email".into()]);
//! assert!(users.contains(&key));
//! assert_eq!(users.unpack(&key)?, [Element::Int(42), Element::from("email")]);
//!
//! let (begin, end) = users.range();
//! assert!(begin <= key && key < end);
//! # Ok::<(), ferrisdb_client::tuple::TupleError>(())
//! ```

use crate::tuple::{self, Element, TupleError};

/// A key prefix under which tuples are packed.
///
/// Subspaces built from tuples and from raw bytes mix freely: nesting with
/// [`Subspace::subspace`] appends the packed tuple to the existing prefix, as
/// FDB's bindings do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subspace {
    prefix: Vec<u8>,
}

impl Subspace {
    /// The subspace whose prefix is the packed tuple `prefix`.
    pub fn new(prefix: &[Element]) -> Self {
        Subspace {
            prefix: tuple::pack(prefix),
        }
    }

    /// The subspace with a raw byte prefix, which need not be a packed tuple.
    pub fn from_bytes(prefix: impl Into<Vec<u8>>) -> Self {
        Subspace {
            prefix: prefix.into(),
        }
    }

    /// The child subspace whose prefix is this prefix followed by the packed `t`.
    pub fn subspace(&self, t: &[Element]) -> Subspace {
        Subspace {
            prefix: self.pack(t),
        }
    }

    /// The raw prefix of this subspace.
    pub fn key(&self) -> &[u8] {
        &self.prefix
    }

    /// The key for tuple `t` in this subspace: the prefix followed by the packed `t`.
    pub fn pack(&self, t: &[Element]) -> Vec<u8> {
        let mut key = self.prefix.clone();
        tuple::pack_into(t, &mut key);
        key
    }

    /// Like [`tuple::pack_with_versionstamp`], for a key in this subspace; the
    /// versionstamp offset accounts for the prefix.
    pub fn pack_with_versionstamp(&self, t: &[Element]) -> Result<Vec<u8>, TupleError> {
        tuple::pack_with_versionstamp_after(self.prefix.clone(), t)
    }

    /// Decodes the tuple that follows this subspace's prefix in `key`.
    ///
    /// Fails with [`TupleError::OutsideSubspace`] if `key` does not start with
    /// the prefix. Decode errors report offsets within the whole key.
    pub fn unpack(&self, key: &[u8]) -> Result<Vec<Element>, TupleError> {
        if !self.contains(key) {
            return Err(TupleError::OutsideSubspace);
        }
        tuple::unpack_from(key, self.prefix.len())
    }

    /// Whether `key` starts with this subspace's prefix.
    ///
    /// This is a raw prefix test, as in FDB's bindings: the prefix itself
    /// counts as contained although [`Subspace::range`] excludes it, and so
    /// does a key that merely extends the prefix's bytes without being a
    /// tuple below it (e.g. the packed string `"users\0"` below the prefix
    /// `("users",)`), which [`Subspace::unpack`] then fails to decode.
    pub fn contains(&self, key: &[u8]) -> bool {
        key.starts_with(&self.prefix)
    }

    /// The range of keys strictly inside this subspace: `(prefix + 0x00,
    /// prefix + 0xff)`, begin inclusive and end exclusive. It holds every key
    /// this subspace packs from a non-empty tuple.
    pub fn range(&self) -> (Vec<u8>, Vec<u8>) {
        let mut begin = self.prefix.clone();
        begin.push(0x00);
        let mut end = self.prefix.clone();
        end.push(0xff);
        (begin, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuple::{Versionstamp, pack, unpack};

    #[test]
    fn pack_prepends_the_packed_prefix() {
        let users = Subspace::new(&["app".into(), "users".into()]);
        assert_eq!(users.key(), pack(&["app".into(), "users".into()]));
        let key = users.pack(&[42.into()]);
        assert_eq!(key, pack(&["app".into(), "users".into(), 42.into()]));
        assert_eq!(users.unpack(&key), Ok(vec![Element::Int(42)]));
        assert_eq!(users.unpack(users.key()), Ok(vec![]));
    }

    #[test]
    fn nested_subspaces_concatenate_prefixes() {
        let app = Subspace::new(&["app".into()]);
        let users = app.subspace(&["users".into(), 7.into()]);
        assert_eq!(
            users,
            Subspace::new(&["app".into(), "users".into(), 7.into()])
        );
        let raw = Subspace::from_bytes(b"\xfe\x01".to_vec()).subspace(&[true.into()]);
        assert_eq!(raw.key(), [0xfe, 0x01, 0x27]);
        assert_eq!(Subspace::from_bytes(&b"raw"[..]).key(), b"raw");
        assert_eq!(Subspace::default().pack(&[1.into()]), pack(&[1.into()]));
    }

    #[test]
    fn unpack_rejects_keys_outside_the_subspace() {
        let users = Subspace::new(&["users".into()]);
        let orders = Subspace::new(&["orders".into()]);
        let key = orders.pack(&[1.into()]);
        assert!(!users.contains(&key));
        assert_eq!(users.unpack(&key), Err(TupleError::OutsideSubspace));
        // A key that is a proper prefix of the subspace's prefix is outside too.
        assert_eq!(
            users.unpack(&users.key()[..2]),
            Err(TupleError::OutsideSubspace)
        );
    }

    #[test]
    fn unpack_reports_offsets_within_the_whole_key() {
        let raw = Subspace::from_bytes(b"pfx".to_vec());
        assert_eq!(
            raw.unpack(b"pfx\x15\x01\x16\x01"),
            Err(TupleError::Truncated { offset: 5 })
        );
        // A raw prefix that is not a tuple still works; only the suffix is decoded.
        assert_eq!(raw.unpack(b"pfx\x27"), Ok(vec![Element::Bool(true)]));
    }

    #[test]
    fn range_holds_every_packed_key_and_nothing_from_siblings() {
        let users = Subspace::new(&["users".into()]);
        let (begin, end) = users.range();
        assert_eq!(begin, [users.key(), &[0x00]].concat());
        assert_eq!(end, [users.key(), &[0xff]].concat());
        for t in [
            vec![Element::Null],
            vec![Element::Bytes(vec![])],
            vec![Element::Int(i128::MIN)],
            vec![Element::Int(i128::MAX), Element::Null],
            vec![Versionstamp::incomplete(u16::MAX).into()],
        ] {
            let key = users.pack(&t);
            assert!(users.contains(&key));
            assert!(begin <= key && key < end, "{t:?}");
            assert_eq!(users.unpack(&key), Ok(t));
        }
        for sibling in [
            pack(&["user".into()]),
            pack(&["usert".into()]),
            pack(&[Element::Bytes(b"users".to_vec())]),
        ] {
            assert!(!users.contains(&sibling));
            assert!(sibling < begin || sibling >= end);
        }
        // The prefix itself is contained but outside the range, as in FDB.
        assert!(users.contains(users.key()));
        assert!(users.key() < begin.as_slice());
        // `contains` is a raw prefix test: the string "users\0" packs to the
        // prefix followed by `ff 00`, which lies past the range and does not decode.
        let escaped = pack(&["users\0".into()]);
        assert!(users.contains(&escaped));
        assert!(escaped >= end);
        assert_eq!(
            users.unpack(&escaped),
            Err(TupleError::UnknownTypeCode {
                code: 0xff,
                offset: users.key().len()
            })
        );
    }

    #[test]
    fn pack_with_versionstamp_offset_includes_the_prefix() {
        // Java's testPositionInformationAdjustmentForIncompleteVersionstamp.
        let subspace = Subspace::new(&["prefix".into()]);
        let key = subspace
            .pack_with_versionstamp(&[Versionstamp::incomplete(1).into()])
            .unwrap_or_default();
        let (body, offset) = key.split_at(key.len() - 4);
        let expected = u32::try_from(1 + subspace.key().len()).unwrap_or(u32::MAX);
        assert_eq!(offset, expected.to_le_bytes());
        assert_eq!(
            unpack(body),
            Ok(vec![
                Element::from("prefix"),
                Versionstamp::incomplete(1).into()
            ])
        );
        assert_eq!(
            subspace.pack_with_versionstamp(&[1.into()]),
            Err(TupleError::NoIncompleteVersionstamp)
        );
    }
}
