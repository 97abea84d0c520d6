//! Atomic operations with FoundationDB's semantics.
//!
//! An atomic operation changes a key's value without the transaction reading it first, so it
//! adds no read conflict. The storage side works out the new value from the value already
//! stored (if any) and the operation's parameter with [`apply`].
//!
//! The rules follow FoundationDB's `fdbclient/Atomic.h` for API version 520 and later:
//!
//! | Op | Key missing | Key present |
//! |----|-------------|-------------|
//! | [`Add`](AtomicOp::Add) | `param` | little-endian sum, carry past `param`'s length dropped |
//! | [`BitAnd`](AtomicOp::BitAnd) | `param` | `existing & param` |
//! | [`BitOr`](AtomicOp::BitOr) | `param` | `existing \| param` |
//! | [`BitXor`](AtomicOp::BitXor) | `param` | `existing ^ param` |
//! | [`Max`](AtomicOp::Max) | `param` | the larger, as little-endian unsigned integers |
//! | [`Min`](AtomicOp::Min) | `param` | the smaller, as little-endian unsigned integers |
//! | [`ByteMax`](AtomicOp::ByteMax) | `param` | the lexicographically larger |
//! | [`ByteMin`](AtomicOp::ByteMin) | `param` | the lexicographically smaller |
//! | [`AppendIfFits`](AtomicOp::AppendIfFits) | `param` | `existing ++ param`, or `existing` if that would exceed [`VALUE_SIZE_LIMIT`] |
//! | [`CompareAndClear`](AtomicOp::CompareAndClear) | stays missing | cleared if `existing == param`, else kept |
//!
//! For the arithmetic and bitwise ops (`Add`, `BitAnd`, `BitOr`, `BitXor`, `Max`, `Min`) the
//! result always has exactly `param`'s length: a present value is first zero-extended or
//! truncated to that length. So an empty `param` stores an empty value, and a present but empty
//! value counts as zero (`BitAnd` and `Min` on it give zeros of `param`'s length).
//!
//! # Codes
//!
//! [`AtomicOp::code`] gives FoundationDB's `MutationRef::Type` number. FoundationDB has two
//! versions of `and` and `min`: the original ones (codes 6 and 13) treat a missing key as zero,
//! the "V2" ones (codes 19 and 18, used from API version 510) store `param` instead. FerrisDB only
//! has the V2 behaviour, and gives it the original codes 6 and 13; [`AtomicOp::from_code`] also
//! accepts 19 and 18 for the same two ops.
//!
//! # Versionstamps
//!
//! [`SetVersionstampedKey`](AtomicOp::SetVersionstampedKey) and
//! [`SetVersionstampedValue`](AtomicOp::SetVersionstampedValue) do not combine with a stored
//! value, so [`apply`] refuses them. At commit, the key (respectively the value) template is
//! completed with [`place_versionstamp`] and [`versionstamp`], and the result is written as a
//! plain set. [`versionstamp_offset`] checks a template when the operation is first requested.
//!
//! ```
//! use ferrisdb_common::atomic::{AtomicOp, apply};
//!
//! let counter = 41u64.to_le_bytes();
//! let new = apply(AtomicOp::Add, Some(&counter), &1u64.to_le_bytes()).expect("not a versionstamp op");
//! assert_eq!(new, Some(42u64.to_le_bytes().to_vec()));
//! ```

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Largest value [`AtomicOp::AppendIfFits`] will build, in bytes (FoundationDB's
/// `VALUE_SIZE_LIMIT`, and FerrisDB's value size limit).
pub const VALUE_SIZE_LIMIT: usize = 100_000;

/// Length of a versionstamp: an 8-byte commit version and a 2-byte batch order, both big-endian.
pub const VERSIONSTAMP_LEN: usize = 10;

/// Length of the little-endian offset that ends a versionstamp template.
pub const VERSIONSTAMP_OFFSET_LEN: usize = 4;

/// An atomic operation on one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AtomicOp {
    /// Little-endian addition (two's complement or unsigned) to the stored value.
    Add,
    /// Bitwise and; a missing key is set to `param`.
    BitAnd,
    /// Bitwise or.
    BitOr,
    /// Bitwise exclusive or.
    BitXor,
    /// Appends `param` unless the result would exceed [`VALUE_SIZE_LIMIT`].
    AppendIfFits,
    /// Keeps the larger little-endian unsigned integer.
    Max,
    /// Keeps the smaller little-endian unsigned integer; a missing key is set to `param`.
    Min,
    /// Keeps the lexicographically smaller byte string.
    ByteMin,
    /// Keeps the lexicographically larger byte string.
    ByteMax,
    /// Clears the key if its value equals `param`.
    CompareAndClear,
    /// Sets a key completed with the commit's versionstamp (see [`place_versionstamp`]).
    SetVersionstampedKey,
    /// Sets a value completed with the commit's versionstamp (see [`place_versionstamp`]).
    SetVersionstampedValue,
}

impl AtomicOp {
    /// Every operation, in code order.
    pub const ALL: [AtomicOp; 12] = [
        AtomicOp::Add,
        AtomicOp::BitAnd,
        AtomicOp::BitOr,
        AtomicOp::BitXor,
        AtomicOp::AppendIfFits,
        AtomicOp::Max,
        AtomicOp::Min,
        AtomicOp::SetVersionstampedKey,
        AtomicOp::SetVersionstampedValue,
        AtomicOp::ByteMin,
        AtomicOp::ByteMax,
        AtomicOp::CompareAndClear,
    ];

    /// The operation's stable code: FoundationDB's `MutationRef::Type` number.
    ///
    /// `BitAnd` is 6 and `Min` is 13 even though they have the semantics of FoundationDB's
    /// `AndV2` (19) and `MinV2` (18); see the [module documentation](self).
    pub fn code(self) -> u8 {
        match self {
            AtomicOp::Add => 2,
            AtomicOp::BitAnd => 6,
            AtomicOp::BitOr => 7,
            AtomicOp::BitXor => 8,
            AtomicOp::AppendIfFits => 9,
            AtomicOp::Max => 12,
            AtomicOp::Min => 13,
            AtomicOp::SetVersionstampedKey => 14,
            AtomicOp::SetVersionstampedValue => 15,
            AtomicOp::ByteMin => 16,
            AtomicOp::ByteMax => 17,
            AtomicOp::CompareAndClear => 20,
        }
    }

    /// The operation with this code, or `None` for a code that is not an atomic operation.
    ///
    /// Besides every [`code`](Self::code), this accepts FoundationDB's `MinV2` (18) as
    /// [`Min`](Self::Min) and `AndV2` (19) as [`BitAnd`](Self::BitAnd).
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            2 => AtomicOp::Add,
            6 | 19 => AtomicOp::BitAnd,
            7 => AtomicOp::BitOr,
            8 => AtomicOp::BitXor,
            9 => AtomicOp::AppendIfFits,
            12 => AtomicOp::Max,
            13 | 18 => AtomicOp::Min,
            14 => AtomicOp::SetVersionstampedKey,
            15 => AtomicOp::SetVersionstampedValue,
            16 => AtomicOp::ByteMin,
            17 => AtomicOp::ByteMax,
            20 => AtomicOp::CompareAndClear,
            _ => return None,
        })
    }

    /// The operation's snake_case name, as in FoundationDB's `MutationType` options
    /// (`"add"`, `"bit_and"`, `"compare_and_clear"`, ...). [`FromStr`] parses it back.
    pub fn name(self) -> &'static str {
        match self {
            AtomicOp::Add => "add",
            AtomicOp::BitAnd => "bit_and",
            AtomicOp::BitOr => "bit_or",
            AtomicOp::BitXor => "bit_xor",
            AtomicOp::AppendIfFits => "append_if_fits",
            AtomicOp::Max => "max",
            AtomicOp::Min => "min",
            AtomicOp::ByteMin => "byte_min",
            AtomicOp::ByteMax => "byte_max",
            AtomicOp::CompareAndClear => "compare_and_clear",
            AtomicOp::SetVersionstampedKey => "set_versionstamped_key",
            AtomicOp::SetVersionstampedValue => "set_versionstamped_value",
        }
    }

    /// Whether this is one of the two versionstamp operations, which [`apply`] does not handle.
    pub fn is_versionstamp(self) -> bool {
        matches!(
            self,
            AtomicOp::SetVersionstampedKey | AtomicOp::SetVersionstampedValue
        )
    }
}

impl fmt::Display for AtomicOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AtomicOp {
    type Err = AtomicError;

    /// Parses a [`name`](AtomicOp::name), ignoring ASCII case. FoundationDB's deprecated
    /// spellings `and`, `or` and `xor` are accepted for the bitwise operations.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let found = AtomicOp::ALL
            .into_iter()
            .find(|op| op.name().eq_ignore_ascii_case(s))
            .or_else(|| match s.to_ascii_lowercase().as_str() {
                "and" => Some(AtomicOp::BitAnd),
                "or" => Some(AtomicOp::BitOr),
                "xor" => Some(AtomicOp::BitXor),
                _ => None,
            });
        found.ok_or_else(|| AtomicError::UnknownOp(s.to_owned()))
    }
}

/// Why an atomic operation or a versionstamp template was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AtomicError {
    /// [`apply`] was given a versionstamp operation, which does not combine with a stored value.
    NotAValueOp(AtomicOp),
    /// A versionstamp template is shorter than its 4-byte offset.
    TemplateTooShort {
        /// The template's length, in bytes.
        len: usize,
    },
    /// A versionstamp template's offset leaves no room for the versionstamp.
    OffsetOutOfRange {
        /// The offset read from the template's last 4 bytes.
        offset: i32,
        /// The template's length without those 4 bytes.
        len: usize,
    },
    /// A name that is no atomic operation.
    UnknownOp(String),
}

impl fmt::Display for AtomicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AtomicError::NotAValueOp(op) => write!(
                f,
                "atomic op {op} does not combine with a stored value; complete it with place_versionstamp"
            ),
            AtomicError::TemplateTooShort { len } => write!(
                f,
                "versionstamp template is {len} bytes; it must end with a {VERSIONSTAMP_OFFSET_LEN}-byte little-endian offset"
            ),
            AtomicError::OffsetOutOfRange { offset, len } => write!(
                f,
                "versionstamp offset {offset} leaves no room for the {VERSIONSTAMP_LEN}-byte versionstamp in a {len}-byte template"
            ),
            AtomicError::UnknownOp(name) => {
                write!(f, "unknown atomic op {name:?}; expected one of ")?;
                for (i, op) in AtomicOp::ALL.into_iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(op.name())?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for AtomicError {}

/// The value a key holds after `op`, given the value it held (`None`: missing) and the
/// operation's parameter. `Ok(None)` means the key is missing afterwards.
///
/// [`AppendIfFits`](AtomicOp::AppendIfFits) uses [`VALUE_SIZE_LIMIT`]. The versionstamp
/// operations are refused. `param`'s own size is not checked here; that belongs where the
/// operation is requested.
///
/// # Errors
///
/// [`AtomicError::NotAValueOp`] for [`SetVersionstampedKey`](AtomicOp::SetVersionstampedKey)
/// and [`SetVersionstampedValue`](AtomicOp::SetVersionstampedValue).
///
/// ```
/// use ferrisdb_common::atomic::{AtomicOp, apply};
///
/// // Little-endian: 0x0100 is larger than 0x0003.
/// assert_eq!(apply(AtomicOp::Max, Some(&[3, 0]), &[0, 1]), Ok(Some(vec![0, 1])));
/// // Lexicographic: [0, 1] sorts before [3, 0].
/// assert_eq!(apply(AtomicOp::ByteMax, Some(&[3, 0]), &[0, 1]), Ok(Some(vec![3, 0])));
/// assert_eq!(apply(AtomicOp::CompareAndClear, Some(b"done"), b"done"), Ok(None));
/// ```
pub fn apply(
    op: AtomicOp,
    existing: Option<&[u8]>,
    param: &[u8],
) -> Result<Option<Vec<u8>>, AtomicError> {
    apply_with_limit(op, existing, param, VALUE_SIZE_LIMIT)
}

/// [`apply`] with `value_size_limit` in place of [`VALUE_SIZE_LIMIT`] for
/// [`AppendIfFits`](AtomicOp::AppendIfFits).
///
/// # Errors
///
/// As [`apply`].
pub fn apply_with_limit(
    op: AtomicOp,
    existing: Option<&[u8]>,
    param: &[u8],
    value_size_limit: usize,
) -> Result<Option<Vec<u8>>, AtomicError> {
    let value = match op {
        AtomicOp::Add => add_le(existing.unwrap_or_default(), param),
        AtomicOp::BitAnd => match existing {
            None => param.to_vec(),
            Some(e) => bitwise(e, param, |a, b| a & b),
        },
        AtomicOp::BitOr => bitwise(existing.unwrap_or_default(), param, |a, b| a | b),
        AtomicOp::BitXor => bitwise(existing.unwrap_or_default(), param, |a, b| a ^ b),
        AtomicOp::Max => {
            let e = resized(existing.unwrap_or_default(), param.len());
            if cmp_le(&e, param) == Ordering::Greater {
                e
            } else {
                param.to_vec()
            }
        }
        AtomicOp::Min => match existing {
            None => param.to_vec(),
            Some(e) => {
                let e = resized(e, param.len());
                if cmp_le(&e, param) == Ordering::Less {
                    e
                } else {
                    param.to_vec()
                }
            }
        },
        AtomicOp::ByteMin => match existing {
            Some(e) if e < param => e.to_vec(),
            _ => param.to_vec(),
        },
        AtomicOp::ByteMax => match existing {
            Some(e) if e > param => e.to_vec(),
            _ => param.to_vec(),
        },
        AtomicOp::AppendIfFits => {
            let e = existing.unwrap_or_default();
            if e.is_empty() {
                param.to_vec()
            } else if param.is_empty() || e.len().saturating_add(param.len()) > value_size_limit {
                e.to_vec()
            } else {
                [e, param].concat()
            }
        }
        AtomicOp::CompareAndClear => match existing {
            Some(e) if e != param => e.to_vec(),
            _ => return Ok(None),
        },
        AtomicOp::SetVersionstampedKey | AtomicOp::SetVersionstampedValue => {
            return Err(AtomicError::NotAValueOp(op));
        }
    };
    Ok(Some(value))
}

/// `existing` zero-extended or truncated to `len` bytes.
fn resized(existing: &[u8], len: usize) -> Vec<u8> {
    let mut out = existing[..existing.len().min(len)].to_vec();
    out.resize(len, 0);
    out
}

/// `existing + param` as little-endian integers of `param`'s length.
fn add_le(existing: &[u8], param: &[u8]) -> Vec<u8> {
    let mut out = resized(existing, param.len());
    let mut carry = 0u16;
    for (o, &p) in out.iter_mut().zip(param) {
        let sum = u16::from(*o) + u16::from(p) + carry;
        *o = sum.to_le_bytes()[0];
        carry = sum >> 8;
    }
    out
}

/// `f` applied byte by byte to `existing` (resized to `param`'s length) and `param`.
fn bitwise(existing: &[u8], param: &[u8], f: impl Fn(u8, u8) -> u8) -> Vec<u8> {
    let mut out = resized(existing, param.len());
    for (o, &p) in out.iter_mut().zip(param) {
        *o = f(*o, p);
    }
    out
}

/// Compares two equally long little-endian unsigned integers.
fn cmp_le(a: &[u8], b: &[u8]) -> Ordering {
    a.iter().rev().cmp(b.iter().rev())
}

/// The versionstamp of a commit: `commit_version` then `batch_order`, both big-endian, so
/// versionstamps sort bytewise in commit order.
///
/// ```
/// use ferrisdb_common::atomic::versionstamp;
///
/// assert_eq!(versionstamp(0x0102_0304_0506_0708, 0x090a), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
/// ```
pub fn versionstamp(commit_version: u64, batch_order: u16) -> [u8; VERSIONSTAMP_LEN] {
    let mut stamp = [0u8; VERSIONSTAMP_LEN];
    stamp[..8].copy_from_slice(&commit_version.to_be_bytes());
    stamp[8..].copy_from_slice(&batch_order.to_be_bytes());
    stamp
}

/// Checks a versionstamp template (a key for
/// [`SetVersionstampedKey`](AtomicOp::SetVersionstampedKey) or a value for
/// [`SetVersionstampedValue`](AtomicOp::SetVersionstampedValue)) and returns where its
/// versionstamp goes.
///
/// A template is a body followed by a 4-byte little-endian signed offset into the body; the
/// [`VERSIONSTAMP_LEN`] bytes at that offset must lie within the body.
///
/// # Errors
///
/// [`AtomicError::TemplateTooShort`] if the template is shorter than
/// [`VERSIONSTAMP_OFFSET_LEN`] bytes, [`AtomicError::OffsetOutOfRange`] if the offset is
/// negative or the versionstamp would not fit in the body.
pub fn versionstamp_offset(template: &[u8]) -> Result<usize, AtomicError> {
    let Some(body_len) = template.len().checked_sub(VERSIONSTAMP_OFFSET_LEN) else {
        return Err(AtomicError::TemplateTooShort {
            len: template.len(),
        });
    };
    let mut raw = [0u8; VERSIONSTAMP_OFFSET_LEN];
    raw.copy_from_slice(&template[body_len..]);
    let offset = i32::from_le_bytes(raw);
    match usize::try_from(offset) {
        Ok(pos) if pos <= body_len && body_len - pos >= VERSIONSTAMP_LEN => Ok(pos),
        _ => Err(AtomicError::OffsetOutOfRange {
            offset,
            len: body_len,
        }),
    }
}

/// Completes a versionstamp template: drops its trailing 4-byte offset and writes `stamp` over
/// the [`VERSIONSTAMP_LEN`] bytes at that offset. See [`versionstamp_offset`] for the format.
///
/// # Errors
///
/// As [`versionstamp_offset`].
///
/// ```
/// use ferrisdb_common::atomic::{place_versionstamp, versionstamp};
///
/// let mut template = b"log/".to_vec();
/// template.extend_from_slice(&[0; 10]); // placeholder
/// template.extend_from_slice(&4u32.to_le_bytes()); // the stamp starts at byte 4
/// let key = place_versionstamp(&template, &versionstamp(7, 1)).expect("valid template");
/// assert_eq!(key, b"log/\0\0\0\0\0\0\0\x07\0\x01");
/// ```
pub fn place_versionstamp(
    template: &[u8],
    stamp: &[u8; VERSIONSTAMP_LEN],
) -> Result<Vec<u8>, AtomicError> {
    let pos = versionstamp_offset(template)?;
    let mut out = template[..template.len() - VERSIONSTAMP_OFFSET_LEN].to_vec();
    out[pos..pos + VERSIONSTAMP_LEN].copy_from_slice(stamp);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use AtomicOp::*;

    /// One row of the expected-results table.
    struct Case {
        op: AtomicOp,
        existing: Option<Vec<u8>>,
        param: Vec<u8>,
        expected: Option<Vec<u8>>,
        why: &'static str,
    }

    fn case(
        op: AtomicOp,
        existing: Option<&[u8]>,
        param: &[u8],
        expected: Option<&[u8]>,
        why: &'static str,
    ) -> Case {
        Case {
            op,
            existing: existing.map(<[u8]>::to_vec),
            param: param.to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            why,
        }
    }

    const E: &[u8] = &[];

    /// Expected results worked out by hand from FoundationDB's `doLittleEndianAdd`, `doAndV2`,
    /// `doOr`, `doXor`, `doAppendIfFits`, `doMax`, `doMinV2`, `doByteMin`, `doByteMax` and
    /// `doCompareAndClear` (fdbclient/Atomic.h).
    #[rustfmt::skip]
    fn table() -> Vec<Case> {
        vec![
            // ---- add ----
            case(Add, Some(&[1, 0, 0, 0]), &[2, 0, 0, 0], Some(&[3, 0, 0, 0]), "add: plain sum"),
            case(Add, Some(&[0xff, 0xff, 0x00]), &[1, 0, 0], Some(&[0, 0, 1]), "add: carry propagates through two bytes"),
            case(Add, Some(&[0xff, 0xff]), &[1, 0], Some(&[0, 0]), "add: carry out of param's length is dropped"),
            case(Add, Some(&[0x0a, 0, 0, 0, 0, 0, 0, 0]), &[0xff; 8], Some(&[9, 0, 0, 0, 0, 0, 0, 0]), "add: two's complement 10 + (-1)"),
            case(Add, Some(&[0xff]), &[1, 0, 0], Some(&[0, 1, 0]), "add: shorter existing zero-extended, carry into param-only bytes"),
            case(Add, Some(&[1, 2, 3]), &[5], Some(&[6]), "add: longer existing truncated to param's length"),
            case(Add, Some(&[0xff, 0x01]), &[1], Some(&[0]), "add: longer existing truncated, carry dropped"),
            case(Add, None, &[5, 0], Some(&[5, 0]), "add: missing key counts as zero"),
            case(Add, Some(E), &[7], Some(&[7]), "add: empty existing counts as zero"),
            case(Add, Some(&[1, 2]), E, Some(E), "add: empty param stores empty value"),
            case(Add, None, E, Some(E), "add: empty param on missing key stores empty value"),
            // ---- bit_and (V2) ----
            case(BitAnd, Some(&[0b1100, 0xff]), &[0b1010, 0x0f], Some(&[0b1000, 0x0f]), "and: bytewise"),
            case(BitAnd, None, &[0x0f, 0xf0], Some(&[0x0f, 0xf0]), "and: missing key stores param (V2)"),
            case(BitAnd, Some(&[0xff]), &[0xff, 0xff], Some(&[0xff, 0x00]), "and: shorter existing zero-extended"),
            case(BitAnd, Some(&[0xff, 0xff, 0xff]), &[0x0f], Some(&[0x0f]), "and: longer existing truncated"),
            case(BitAnd, Some(E), &[0xff, 0xff], Some(&[0, 0]), "and: present empty existing gives zeros"),
            case(BitAnd, Some(&[0xff]), E, Some(E), "and: empty param stores empty value"),
            case(BitAnd, None, E, Some(E), "and: empty param on missing key"),
            // ---- bit_or ----
            case(BitOr, Some(&[0b1100]), &[0b1010], Some(&[0b1110]), "or: bytewise"),
            case(BitOr, None, &[0x12, 0x34], Some(&[0x12, 0x34]), "or: missing key counts as zero"),
            case(BitOr, Some(&[0x01]), &[0x10, 0x20], Some(&[0x11, 0x20]), "or: shorter existing zero-extended"),
            case(BitOr, Some(&[0x01, 0x02, 0x03]), &[0x10], Some(&[0x11]), "or: longer existing truncated"),
            case(BitOr, Some(E), &[0x05], Some(&[0x05]), "or: empty existing counts as zero"),
            case(BitOr, Some(&[0x01]), E, Some(E), "or: empty param stores empty value"),
            // ---- bit_xor ----
            case(BitXor, Some(&[0xff, 0x00]), &[0x0f, 0x0f], Some(&[0xf0, 0x0f]), "xor: bytewise"),
            case(BitXor, Some(&[0x12, 0x34]), &[0x12, 0x34], Some(&[0, 0]), "xor: with itself gives zeros, not a clear"),
            case(BitXor, None, &[0xaa], Some(&[0xaa]), "xor: missing key counts as zero"),
            case(BitXor, Some(&[0xff]), &[0x0f, 0x0f], Some(&[0xf0, 0x0f]), "xor: shorter existing zero-extended"),
            case(BitXor, Some(&[0xff, 0xff]), &[0x0f], Some(&[0xf0]), "xor: longer existing truncated"),
            case(BitXor, Some(&[0xff]), E, Some(E), "xor: empty param stores empty value"),
            // ---- append_if_fits ----
            case(AppendIfFits, Some(b"abc"), b"def", Some(b"abcdef"), "append: appends"),
            case(AppendIfFits, None, b"xyz", Some(b"xyz"), "append: missing key stores param"),
            case(AppendIfFits, Some(E), b"x", Some(b"x"), "append: empty existing stores param"),
            case(AppendIfFits, Some(b"abc"), E, Some(b"abc"), "append: empty param keeps existing"),
            case(AppendIfFits, None, E, Some(E), "append: empty param on missing key stores empty value"),
            Case {
                op: AppendIfFits,
                existing: Some(vec![b'a'; 99_990]),
                param: vec![b'b'; 10],
                expected: Some([vec![b'a'; 99_990], vec![b'b'; 10]].concat()),
                why: "append: result exactly at the limit is appended",
            },
            Case {
                op: AppendIfFits,
                existing: Some(vec![b'a'; 99_991]),
                param: vec![b'b'; 10],
                expected: Some(vec![b'a'; 99_991]),
                why: "append: one byte over the limit keeps existing",
            },
            Case {
                op: AppendIfFits,
                existing: Some(vec![b'a'; VALUE_SIZE_LIMIT]),
                param: vec![b'b'],
                expected: Some(vec![b'a'; VALUE_SIZE_LIMIT]),
                why: "append: existing already at the limit is kept",
            },
            Case {
                op: AppendIfFits,
                existing: None,
                param: vec![b'b'; VALUE_SIZE_LIMIT],
                expected: Some(vec![b'b'; VALUE_SIZE_LIMIT]),
                why: "append: missing key stores a param of exactly the limit",
            },
            // ---- max ----
            case(Max, Some(&[5, 0, 0, 0]), &[3, 0, 0, 0], Some(&[5, 0, 0, 0]), "max: existing larger"),
            case(Max, Some(&[3, 0]), &[0, 1], Some(&[0, 1]), "max: little-endian, 0x0100 > 0x0003"),
            case(Max, Some(&[7, 1]), &[7, 1], Some(&[7, 1]), "max: tie"),
            case(Max, Some(&[0xff]), &[0, 1], Some(&[0, 1]), "max: shorter existing, param has a high byte"),
            case(Max, Some(&[0xff]), &[1, 0, 0], Some(&[0xff, 0, 0]), "max: shorter existing larger, zero-extended"),
            case(Max, Some(&[1, 0xff]), &[2], Some(&[2]), "max: longer existing truncated before comparing"),
            case(Max, Some(&[9, 0, 1]), &[2, 0], Some(&[9, 0]), "max: longer existing truncated and larger"),
            case(Max, None, &[4], Some(&[4]), "max: missing key counts as zero"),
            case(Max, None, &[0, 0], Some(&[0, 0]), "max: missing key, zero param"),
            case(Max, Some(E), &[0, 4], Some(&[0, 4]), "max: empty existing counts as zero"),
            case(Max, Some(&[5]), E, Some(E), "max: empty param stores empty value"),
            // ---- min (V2) ----
            case(Min, Some(&[5, 0, 0, 0]), &[3, 0, 0, 0], Some(&[3, 0, 0, 0]), "min: param smaller"),
            case(Min, Some(&[3, 0]), &[0, 1], Some(&[3, 0]), "min: little-endian, 0x0003 < 0x0100"),
            case(Min, Some(&[7, 1]), &[7, 1], Some(&[7, 1]), "min: tie"),
            case(Min, None, &[9], Some(&[9]), "min: missing key stores param (V2)"),
            case(Min, Some(&[0xff]), &[0, 1], Some(&[0xff, 0]), "min: shorter existing smaller, zero-extended"),
            case(Min, Some(&[0xff]), &[1, 0], Some(&[1, 0]), "min: shorter existing larger"),
            case(Min, Some(&[1, 0xff]), &[2], Some(&[1]), "min: longer existing truncated and smaller"),
            case(Min, Some(&[9, 0, 1]), &[2, 0], Some(&[2, 0]), "min: longer existing truncated, param smaller"),
            case(Min, Some(E), &[5, 1], Some(&[0, 0]), "min: present empty existing counts as zero"),
            case(Min, Some(&[5]), E, Some(E), "min: empty param stores empty value"),
            case(Min, None, E, Some(E), "min: empty param on missing key"),
            // ---- byte_min ----
            case(ByteMin, Some(b"abc"), b"abd", Some(b"abc"), "byte_min: existing smaller"),
            case(ByteMin, Some(b"abd"), b"abc", Some(b"abc"), "byte_min: param smaller"),
            case(ByteMin, Some(b"ab"), b"abc", Some(b"ab"), "byte_min: existing is a prefix of param"),
            case(ByteMin, Some(b"abc"), b"ab", Some(b"ab"), "byte_min: param is a prefix of existing"),
            case(ByteMin, Some(b"abc"), b"abc", Some(b"abc"), "byte_min: tie"),
            case(ByteMin, Some(&[0x80]), &[0x7f], Some(&[0x7f]), "byte_min: bytes compare unsigned"),
            case(ByteMin, Some(&[3, 0]), &[0, 1], Some(&[0, 1]), "byte_min: lexicographic, not little-endian"),
            case(ByteMin, None, b"zz", Some(b"zz"), "byte_min: missing key stores param"),
            case(ByteMin, Some(E), b"a", Some(E), "byte_min: empty existing is smallest"),
            case(ByteMin, Some(b"a"), E, Some(E), "byte_min: empty param is smallest"),
            // ---- byte_max ----
            case(ByteMax, Some(b"abc"), b"abd", Some(b"abd"), "byte_max: param larger"),
            case(ByteMax, Some(b"b"), b"abc", Some(b"b"), "byte_max: existing larger though shorter"),
            case(ByteMax, Some(b"ab"), b"abc", Some(b"abc"), "byte_max: existing is a prefix of param"),
            case(ByteMax, Some(b"abc"), b"ab", Some(b"abc"), "byte_max: param is a prefix of existing"),
            case(ByteMax, Some(&[0x80]), &[0x7f], Some(&[0x80]), "byte_max: bytes compare unsigned"),
            case(ByteMax, None, b"q", Some(b"q"), "byte_max: missing key stores param"),
            case(ByteMax, None, E, Some(E), "byte_max: missing key, empty param stores empty value"),
            case(ByteMax, Some(E), E, Some(E), "byte_max: empty against empty"),
            case(ByteMax, Some(b"a"), E, Some(b"a"), "byte_max: empty param is smallest"),
            // ---- compare_and_clear ----
            case(CompareAndClear, Some(b"v"), b"v", None, "cac: equal clears"),
            case(CompareAndClear, Some(b"v"), b"w", Some(b"v"), "cac: unequal keeps"),
            case(CompareAndClear, Some(b"v"), b"vv", Some(b"v"), "cac: prefix is unequal"),
            case(CompareAndClear, None, b"v", None, "cac: missing key stays missing"),
            case(CompareAndClear, None, E, None, "cac: missing key, empty param stays missing"),
            case(CompareAndClear, Some(E), E, None, "cac: empty equals empty, clears"),
            case(CompareAndClear, Some(E), b"x", Some(E), "cac: empty existing unequal, keeps"),
            case(CompareAndClear, Some(b"x"), E, Some(b"x"), "cac: empty param unequal, keeps"),
        ]
    }

    /// A value for a failure message: its length and at most its first 16 bytes.
    fn show(v: Option<&[u8]>) -> String {
        match v {
            None => "missing".to_owned(),
            Some(v) if v.len() <= 16 => format!("{v:?}"),
            Some(v) => format!("{} bytes {:?}..", v.len(), &v[..16]),
        }
    }

    #[test]
    fn every_op_against_table_of_expected_results() {
        let table = table();
        let mut failures = Vec::new();
        for c in &table {
            let got = apply(c.op, c.existing.as_deref(), &c.param);
            if got != Ok(c.expected.clone()) {
                failures.push(format!(
                    "{} ({}): existing {}, param {}: expected {}, got {:?}",
                    c.why,
                    c.op,
                    show(c.existing.as_deref()),
                    show(Some(&c.param)),
                    show(c.expected.as_deref()),
                    got.map(|v| show(v.as_deref())),
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        for op in AtomicOp::ALL.into_iter().filter(|op| !op.is_versionstamp()) {
            let rows = table.iter().filter(|c| c.op == op).count();
            assert!(rows >= 5, "{op} has only {rows} rows");
        }
    }

    #[test]
    fn append_if_fits_honours_a_custom_limit() {
        let apply4 = |e: &[u8], p: &[u8]| apply_with_limit(AppendIfFits, Some(e), p, 4);
        assert_eq!(apply4(b"ab", b"cd"), Ok(Some(b"abcd".to_vec())));
        assert_eq!(apply4(b"ab", b"cde"), Ok(Some(b"ab".to_vec())));
        // Other ops ignore the limit.
        assert_eq!(
            apply_with_limit(Add, Some(&[1]), &[1, 0, 0, 0, 0, 0], 4),
            Ok(Some(vec![2, 0, 0, 0, 0, 0]))
        );
    }

    /// Cross-checks the byte-level arithmetic against Rust's integers, with the existing value
    /// narrower, as wide as, and wider than the 4-byte param.
    #[test]
    fn arithmetic_matches_native_integers() {
        let samples: [u64; 9] = [
            0,
            1,
            0xff,
            0x100,
            0xffff,
            0x0001_0000,
            0x7fff_ffff,
            0xffff_ffff,
            0xdead_beef_0bad_f00d,
        ];
        for &e in &samples {
            for &p in &samples {
                let p32 = p as u32;
                let param = p32.to_le_bytes();
                for width in [1usize, 2, 4, 8] {
                    let existing = &e.to_le_bytes()[..width];
                    // The existing value as seen by the op: truncated or zero-extended to 32 bits.
                    let mut seen = [0u8; 8];
                    seen[..width].copy_from_slice(existing);
                    let e32 = u64::from_le_bytes(seen) as u32;
                    let run = |op| apply(op, Some(existing), &param).expect("value op");
                    let want = |v: u32| Some(v.to_le_bytes().to_vec());
                    assert_eq!(
                        run(Add),
                        want(e32.wrapping_add(p32)),
                        "add {e:#x} {p:#x} w{width}"
                    );
                    assert_eq!(run(BitAnd), want(e32 & p32), "and {e:#x} {p:#x} w{width}");
                    assert_eq!(run(BitOr), want(e32 | p32), "or {e:#x} {p:#x} w{width}");
                    assert_eq!(run(BitXor), want(e32 ^ p32), "xor {e:#x} {p:#x} w{width}");
                    assert_eq!(run(Max), want(e32.max(p32)), "max {e:#x} {p:#x} w{width}");
                    assert_eq!(run(Min), want(e32.min(p32)), "min {e:#x} {p:#x} w{width}");
                }
            }
        }
    }

    #[test]
    fn apply_refuses_versionstamp_ops() {
        for op in [SetVersionstampedKey, SetVersionstampedValue] {
            assert!(op.is_versionstamp());
            assert_eq!(
                apply(op, Some(b"x"), b"y"),
                Err(AtomicError::NotAValueOp(op))
            );
            assert_eq!(apply(op, None, b"y"), Err(AtomicError::NotAValueOp(op)));
        }
        assert_eq!(
            AtomicOp::ALL
                .iter()
                .filter(|op| op.is_versionstamp())
                .count(),
            2
        );
    }

    #[test]
    fn codes_and_names() {
        let expected = [
            (Add, 2, "add"),
            (BitAnd, 6, "bit_and"),
            (BitOr, 7, "bit_or"),
            (BitXor, 8, "bit_xor"),
            (AppendIfFits, 9, "append_if_fits"),
            (Max, 12, "max"),
            (Min, 13, "min"),
            (SetVersionstampedKey, 14, "set_versionstamped_key"),
            (SetVersionstampedValue, 15, "set_versionstamped_value"),
            (ByteMin, 16, "byte_min"),
            (ByteMax, 17, "byte_max"),
            (CompareAndClear, 20, "compare_and_clear"),
        ];
        assert_eq!(expected.len(), AtomicOp::ALL.len());
        for (i, (op, code, name)) in expected.into_iter().enumerate() {
            assert_eq!(AtomicOp::ALL[i], op);
            assert_eq!(op.code(), code);
            assert_eq!(op.name(), name);
            assert_eq!(op.to_string(), name);
            assert_eq!(AtomicOp::from_code(code), Some(op));
            assert_eq!(name.parse::<AtomicOp>(), Ok(op));
            assert_eq!(name.to_ascii_uppercase().parse::<AtomicOp>(), Ok(op));
        }
        // FoundationDB's V2 codes decode to the ops that have V2 semantics.
        assert_eq!(AtomicOp::from_code(18), Some(Min));
        assert_eq!(AtomicOp::from_code(19), Some(BitAnd));
        let known = [2u8, 6, 7, 8, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20];
        for code in 0..=u8::MAX {
            assert_eq!(
                AtomicOp::from_code(code).is_some(),
                known.contains(&code),
                "code {code}"
            );
        }
    }

    #[test]
    fn parse_aliases_and_errors() {
        assert_eq!("and".parse::<AtomicOp>(), Ok(BitAnd));
        assert_eq!("or".parse::<AtomicOp>(), Ok(BitOr));
        assert_eq!("Xor".parse::<AtomicOp>(), Ok(BitXor));
        for bad in ["", "sum", "bit-and", " add", "clear", "set_value"] {
            assert_eq!(
                bad.parse::<AtomicOp>(),
                Err(AtomicError::UnknownOp(bad.to_owned()))
            );
        }
        let msg = "sum".parse::<AtomicOp>().unwrap_err().to_string();
        assert!(
            msg.contains("\"sum\"") && msg.contains("compare_and_clear"),
            "{msg}"
        );
    }

    #[test]
    fn versionstamp_layout() {
        assert_eq!(
            versionstamp(0x0102_0304_0506_0708, 0x090a),
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
        );
        assert_eq!(versionstamp(0, 0), [0; 10]);
        assert_eq!(versionstamp(u64::MAX, u16::MAX), [0xff; 10]);
        assert_eq!(versionstamp(1, 0), [0, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(versionstamp(0, 1), [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        // Bytewise order is commit order: version first, then batch order.
        assert!(versionstamp(1, u16::MAX) < versionstamp(2, 0));
        assert!(versionstamp(2, 0) < versionstamp(2, 1));
        assert!(versionstamp(0xff, 0) < versionstamp(0x100, 0));
    }

    fn template(body: &[u8], offset: i32) -> Vec<u8> {
        [body, &offset.to_le_bytes()].concat()
    }

    #[test]
    fn place_versionstamp_writes_at_offset() {
        let stamp = versionstamp(0x0102_0304_0506_0708, 0x090a);
        // In the middle.
        let t = template(&[b"ab".as_slice(), &[0; 10], b"cd"].concat(), 2);
        assert_eq!(versionstamp_offset(&t), Ok(2));
        assert_eq!(
            place_versionstamp(&t, &stamp),
            Ok([b"ab".as_slice(), &stamp, b"cd"].concat())
        );
        // The whole body.
        assert_eq!(
            place_versionstamp(&template(&[0; 10], 0), &stamp),
            Ok(stamp.to_vec())
        );
        // At the very end, over placeholder bytes that are not zero.
        let t = template(b"xyzXXXXXXXXXX", 3);
        assert_eq!(
            place_versionstamp(&t, &stamp),
            Ok([b"xyz".as_slice(), &stamp].concat())
        );
        // At the start, with a suffix.
        let t = template(&[[0xee; 10].as_slice(), b"/suffix"].concat(), 0);
        assert_eq!(
            place_versionstamp(&t, &stamp),
            Ok([stamp.as_slice(), b"/suffix"].concat())
        );
    }

    #[test]
    fn place_versionstamp_rejects_bad_templates() {
        let stamp = versionstamp(1, 2);
        for len in 0..VERSIONSTAMP_OFFSET_LEN {
            let t = vec![0u8; len];
            assert_eq!(
                place_versionstamp(&t, &stamp),
                Err(AtomicError::TemplateTooShort { len })
            );
            assert_eq!(
                versionstamp_offset(&t),
                Err(AtomicError::TemplateTooShort { len })
            );
        }
        let cases: [(Vec<u8>, i32, usize); 6] = [
            (template(E, 0), 0, 0),                       // offset only, no body
            (template(&[0; 9], 0), 0, 9),                 // body one byte too short
            (template(&[0; 12], 3), 3, 12),               // stamp would overrun the body by one
            (template(&[0; 12], 13), 13, 12),             // offset past the end
            (template(&[0; 12], -1), -1, 12),             // negative offset
            (template(&[0; 12], i32::MAX), i32::MAX, 12), // no overflow
        ];
        for (t, offset, len) in cases {
            let want = Err(AtomicError::OffsetOutOfRange { offset, len });
            assert_eq!(place_versionstamp(&t, &stamp), want, "offset {offset}");
            assert_eq!(versionstamp_offset(&t), want.map(|_: Vec<u8>| 0));
        }
        // i32::MIN, spelled as raw bytes.
        let t = [[0u8; 12].as_slice(), &[0, 0, 0, 0x80]].concat();
        assert_eq!(
            versionstamp_offset(&t),
            Err(AtomicError::OffsetOutOfRange {
                offset: i32::MIN,
                len: 12
            })
        );
    }

    #[test]
    fn error_messages() {
        let msgs = [
            AtomicError::NotAValueOp(SetVersionstampedKey).to_string(),
            AtomicError::TemplateTooShort { len: 3 }.to_string(),
            AtomicError::OffsetOutOfRange { offset: 5, len: 12 }.to_string(),
        ];
        assert!(msgs[0].contains("set_versionstamped_key"), "{}", msgs[0]);
        assert!(msgs[1].contains("3 bytes"), "{}", msgs[1]);
        assert!(
            msgs[2].contains("offset 5") && msgs[2].contains("12-byte"),
            "{}",
            msgs[2]
        );
        let boxed: Box<dyn std::error::Error> = Box::new(AtomicError::TemplateTooShort { len: 0 });
        assert!(!boxed.to_string().is_empty());
    }
}
