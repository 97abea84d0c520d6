//! FoundationDB-compatible tuple encoding.
//!
//! A tuple is a sequence of typed [`Element`]s packed into a byte string. The
//! encoding is byte-for-byte the one FoundationDB's official bindings produce
//! (specified in FoundationDB's `design/tuple.md`), so keys written by FerrisDB
//! can be read by FDB tooling and vice versa. Its defining property is that
//! packed tuples sort bytewise in the same order as the tuples themselves:
//! elements compare by type first (null < bytes < string < nested tuple <
//! integer < float < double < bool < UUID < versionstamp) and then by value,
//! which is what makes tuples usable as ordered keys and [`range`] usable for
//! prefix scans.
//!
//! ```
//! use ferrisdb_client::tuple::{self, Element};
//!
//! let key = tuple::pack(&["users".into(), 42.into()]);
//! assert_eq!(key, b"\x02users\x00\x15\x2a");
//!
//! let elements = tuple::unpack(&key)?;
//! assert_eq!(elements, [Element::from("users"), Element::Int(42)]);
//! assert_eq!(elements[1].as_i64(), Some(42));
//! # Ok::<(), tuple::TupleError>(())
//! ```

use std::cmp::Ordering;
use std::error::Error;
use std::fmt;
use std::hash::{Hash, Hasher};

const NULL: u8 = 0x00;
const BYTES: u8 = 0x01;
const STRING: u8 = 0x02;
const NESTED: u8 = 0x05;
/// Arbitrary-precision negative integer (9..=255 bytes), as the Python and Java bindings write it.
const NEG_INT_START: u8 = 0x0b;
const INT_ZERO: u8 = 0x14;
/// Arbitrary-precision positive integer (9..=255 bytes), as the Python and Java bindings write it.
const POS_INT_END: u8 = 0x1d;
const FLOAT: u8 = 0x20;
const DOUBLE: u8 = 0x21;
const FALSE: u8 = 0x26;
const TRUE: u8 = 0x27;
const UUID: u8 = 0x30;
const VERSIONSTAMP: u8 = 0x33;
/// Follows a 0x00 inside byte strings and nested tuples to mark it as data, not a terminator.
const ESCAPE: u8 = 0xff;

/// Deepest nesting of tuples that [`unpack`] accepts.
///
/// Decoding and dropping nested tuples recurses, so without a bound a short
/// hostile key such as `05 05 05 ...` could overflow the stack of the task
/// decoding it. No realistic key comes close to this depth.
pub const MAX_NESTING_DEPTH: usize = 256;

/// One element of a tuple.
///
/// Equality, ordering and hashing follow the packed encoding: `a == b` exactly
/// when their encodings are equal, and `a < b` exactly when `a`'s encoding sorts
/// before `b`'s. In particular floats compare by IEEE 754 total order, so
/// `Float(-0.0) < Float(0.0)` and a NaN equals a NaN with the same bits, and
/// values of different types never compare equal (`Int(1) != Double(1.0)`).
/// The same holds for whole tuples: comparing two `[Element]` slices agrees
/// with comparing their [`pack`]ed bytes.
#[derive(Debug, Clone)]
pub enum Element {
    /// The null value (type code 0x00).
    Null,
    /// An arbitrary byte string (type code 0x01).
    Bytes(Vec<u8>),
    /// A Unicode string, encoded as UTF-8 (type code 0x02).
    String(String),
    /// A nested tuple (type code 0x05).
    Tuple(Vec<Element>),
    /// An integer.
    ///
    /// Magnitudes of up to 8 bytes (all of `i64` and `u64`, and negative
    /// values down to `-u64::MAX`) use FDB's standard codes 0x0c..=0x1c;
    /// larger magnitudes use the arbitrary-precision codes 0x0b and 0x1d as the
    /// Python and Java bindings do. `i128` is used so that every standard FDB
    /// integer decodes to a single canonical value.
    Int(i128),
    /// A single-precision float (type code 0x20).
    Float(f32),
    /// A double-precision float (type code 0x21).
    Double(f64),
    /// A boolean (type codes 0x26 and 0x27).
    Bool(bool),
    /// An RFC 4122 UUID in network byte order (type code 0x30).
    Uuid([u8; 16]),
    /// A 96-bit versionstamp (type code 0x33).
    Versionstamp(Versionstamp),
}

impl Element {
    /// Returns `true` for [`Element::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Element::Null)
    }

    /// Returns the contents of a [`Element::Bytes`].
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Element::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// Returns the contents of a [`Element::String`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Element::String(s) => Some(s),
            _ => None,
        }
    }

    /// Returns the elements of a nested [`Element::Tuple`].
    pub fn as_tuple(&self) -> Option<&[Element]> {
        match self {
            Element::Tuple(t) => Some(t),
            _ => None,
        }
    }

    /// Returns an [`Element::Int`] if its value fits in an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Element::Int(v) => i64::try_from(*v).ok(),
            _ => None,
        }
    }

    /// Returns an [`Element::Int`] if its value fits in a `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Element::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }

    /// Returns the value of an [`Element::Float`].
    pub fn as_f32(&self) -> Option<f32> {
        match self {
            Element::Float(v) => Some(*v),
            _ => None,
        }
    }

    /// Returns the value of an [`Element::Double`].
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Element::Double(v) => Some(*v),
            _ => None,
        }
    }

    /// Returns the value of an [`Element::Bool`].
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Element::Bool(v) => Some(*v),
            _ => None,
        }
    }

    /// Returns the bytes of an [`Element::Uuid`].
    pub fn as_uuid(&self) -> Option<&[u8; 16]> {
        match self {
            Element::Uuid(v) => Some(v),
            _ => None,
        }
    }

    /// Returns the value of an [`Element::Versionstamp`].
    pub fn as_versionstamp(&self) -> Option<Versionstamp> {
        match self {
            Element::Versionstamp(v) => Some(*v),
            _ => None,
        }
    }

    /// The type code that orders this element's type relative to the others.
    /// All integers share one rank because their codes are contiguous.
    fn type_rank(&self) -> u8 {
        match self {
            Element::Null => NULL,
            Element::Bytes(_) => BYTES,
            Element::String(_) => STRING,
            Element::Tuple(_) => NESTED,
            Element::Int(_) => INT_ZERO,
            Element::Float(_) => FLOAT,
            Element::Double(_) => DOUBLE,
            Element::Bool(_) => FALSE,
            Element::Uuid(_) => UUID,
            Element::Versionstamp(_) => VERSIONSTAMP,
        }
    }
}

impl Ord for Element {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Element::Null, Element::Null) => Ordering::Equal,
            (Element::Bytes(a), Element::Bytes(b)) => a.cmp(b),
            // `str` ordering is bytewise over UTF-8, which is what the encoding preserves.
            (Element::String(a), Element::String(b)) => a.cmp(b),
            (Element::Tuple(a), Element::Tuple(b)) => a.cmp(b),
            (Element::Int(a), Element::Int(b)) => a.cmp(b),
            // The encoding's sign-flip transform sorts exactly like IEEE total order.
            (Element::Float(a), Element::Float(b)) => a.total_cmp(b),
            (Element::Double(a), Element::Double(b)) => a.total_cmp(b),
            (Element::Bool(a), Element::Bool(b)) => a.cmp(b),
            (Element::Uuid(a), Element::Uuid(b)) => a.cmp(b),
            (Element::Versionstamp(a), Element::Versionstamp(b)) => a.cmp(b),
            _ => self.type_rank().cmp(&other.type_rank()),
        }
    }
}

impl PartialOrd for Element {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Element {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Element {}

impl Hash for Element {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.type_rank().hash(state);
        match self {
            Element::Null => {}
            Element::Bytes(b) => b.hash(state),
            Element::String(s) => s.hash(state),
            Element::Tuple(t) => t.hash(state),
            Element::Int(v) => v.hash(state),
            // Bits, not values, to agree with `Eq`'s total order.
            Element::Float(v) => v.to_bits().hash(state),
            Element::Double(v) => v.to_bits().hash(state),
            Element::Bool(v) => v.hash(state),
            Element::Uuid(v) => v.hash(state),
            Element::Versionstamp(v) => v.hash(state),
        }
    }
}

macro_rules! element_from_int {
    ($($t:ty),*) => {
        $(
            impl From<$t> for Element {
                fn from(v: $t) -> Self {
                    Element::Int(i128::from(v))
                }
            }
        )*
    };
}

element_from_int!(i8, i16, i32, i64, i128, u8, u16, u32, u64);

impl From<usize> for Element {
    fn from(v: usize) -> Self {
        // usize is at most 64 bits on every target Rust supports, so this is lossless.
        Element::Int(v as i128)
    }
}

impl From<isize> for Element {
    fn from(v: isize) -> Self {
        Element::Int(v as i128)
    }
}

impl From<f32> for Element {
    fn from(v: f32) -> Self {
        Element::Float(v)
    }
}

impl From<f64> for Element {
    fn from(v: f64) -> Self {
        Element::Double(v)
    }
}

impl From<bool> for Element {
    fn from(v: bool) -> Self {
        Element::Bool(v)
    }
}

impl From<&str> for Element {
    fn from(v: &str) -> Self {
        Element::String(v.to_owned())
    }
}

impl From<&String> for Element {
    fn from(v: &String) -> Self {
        Element::String(v.clone())
    }
}

impl From<String> for Element {
    fn from(v: String) -> Self {
        Element::String(v)
    }
}

impl From<Vec<u8>> for Element {
    fn from(v: Vec<u8>) -> Self {
        Element::Bytes(v)
    }
}

impl From<&[u8]> for Element {
    fn from(v: &[u8]) -> Self {
        Element::Bytes(v.to_vec())
    }
}

impl<const N: usize> From<&[u8; N]> for Element {
    fn from(v: &[u8; N]) -> Self {
        Element::Bytes(v.to_vec())
    }
}

impl From<bytes::Bytes> for Element {
    fn from(v: bytes::Bytes) -> Self {
        Element::Bytes(v.into())
    }
}

impl From<Vec<Element>> for Element {
    fn from(v: Vec<Element>) -> Self {
        Element::Tuple(v)
    }
}

impl From<Versionstamp> for Element {
    fn from(v: Versionstamp) -> Self {
        Element::Versionstamp(v)
    }
}

/// `None` becomes [`Element::Null`], mirroring how the other bindings map their null.
impl<T: Into<Element>> From<Option<T>> for Element {
    fn from(v: Option<T>) -> Self {
        v.map_or(Element::Null, Into::into)
    }
}

/// A 96-bit versionstamp: a 10-byte transaction version assigned by the
/// database at commit followed by a 2-byte user version chosen by the client.
///
/// A versionstamp whose transaction version is still unknown is *incomplete*;
/// its transaction version bytes are all `0xff` placeholders, which is also
/// how FDB's bindings recognize incomplete stamps when decoding. Use
/// [`pack_with_versionstamp`] to build keys for a versionstamped-key mutation.
/// Ordering is bytewise, so incomplete stamps sort after every complete one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Versionstamp([u8; 12]);

impl Versionstamp {
    /// Encoded length of a versionstamp in bytes.
    pub const LENGTH: usize = 12;

    /// A versionstamp with a known transaction version.
    pub fn complete(transaction_version: [u8; 10], user_version: u16) -> Self {
        let mut bytes = [0; 12];
        bytes[..10].copy_from_slice(&transaction_version);
        bytes[10..].copy_from_slice(&user_version.to_be_bytes());
        Versionstamp(bytes)
    }

    /// A versionstamp whose transaction version the database fills in at commit.
    pub fn incomplete(user_version: u16) -> Self {
        Self::complete([0xff; 10], user_version)
    }

    /// A versionstamp from its 12-byte encoding (transaction version, then
    /// big-endian user version).
    pub fn from_bytes(bytes: [u8; 12]) -> Self {
        Versionstamp(bytes)
    }

    /// The 12-byte encoding.
    pub fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }

    /// The 10-byte transaction version: an 8-byte commit version followed by a
    /// 2-byte batch number, both big-endian.
    pub fn transaction_version(&self) -> [u8; 10] {
        let mut version = [0; 10];
        version.copy_from_slice(&self.0[..10]);
        version
    }

    /// The client-chosen user version that orders stamps within one transaction.
    pub fn user_version(&self) -> u16 {
        u16::from_be_bytes([self.0[10], self.0[11]])
    }

    /// Whether the transaction version is known, i.e. not the all-`0xff` placeholder.
    pub fn is_complete(&self) -> bool {
        self.0[..10] != [0xff; 10]
    }
}

/// Errors from decoding tuples and from versionstamp and subspace operations.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TupleError {
    /// The input ended inside an element.
    Truncated {
        /// Byte offset where the incomplete element starts.
        offset: usize,
    },
    /// A byte where an element should start is not a supported type code.
    UnknownTypeCode {
        /// The unsupported type code.
        code: u8,
        /// Byte offset of the type code.
        offset: usize,
    },
    /// A string element is not valid UTF-8.
    InvalidUtf8 {
        /// Byte offset where the string element starts.
        offset: usize,
    },
    /// An integer element is too large to be represented as an `i128`.
    IntegerOverflow {
        /// Byte offset where the integer element starts.
        offset: usize,
    },
    /// Nested tuples are deeper than [`MAX_NESTING_DEPTH`].
    NestingTooDeep {
        /// Byte offset of the nested tuple that exceeds the limit.
        offset: usize,
    },
    /// Bytes remain after the single element [`unpack_single`] expected.
    TrailingBytes {
        /// Byte offset of the first unexpected byte.
        offset: usize,
    },
    /// The key does not start with the subspace's prefix.
    OutsideSubspace,
    /// [`pack_with_versionstamp`] was given no incomplete versionstamp.
    NoIncompleteVersionstamp,
    /// [`pack_with_versionstamp`] was given more than one incomplete versionstamp;
    /// the database can fill in only one per key.
    MultipleIncompleteVersionstamps,
    /// The incomplete versionstamp lies beyond the 4 GiB that its 32-bit offset can address.
    VersionstampOffsetOverflow,
}

impl fmt::Display for TupleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TupleError::Truncated { offset } => {
                write!(f, "tuple data ends inside the element at byte {offset}")
            }
            TupleError::UnknownTypeCode { code, offset } => {
                write!(f, "unknown tuple type code {code:#04x} at byte {offset}")
            }
            TupleError::InvalidUtf8 { offset } => {
                write!(f, "string element at byte {offset} is not valid UTF-8")
            }
            TupleError::IntegerOverflow { offset } => {
                write!(
                    f,
                    "integer element at byte {offset} does not fit in an i128"
                )
            }
            TupleError::NestingTooDeep { offset } => write!(
                f,
                "nested tuple at byte {offset} exceeds the maximum nesting depth of {MAX_NESTING_DEPTH}"
            ),
            TupleError::TrailingBytes { offset } => {
                write!(
                    f,
                    "unexpected bytes after the tuple element, starting at byte {offset}"
                )
            }
            TupleError::OutsideSubspace => f.write_str("key is not inside the subspace"),
            TupleError::NoIncompleteVersionstamp => {
                f.write_str("tuple contains no incomplete versionstamp")
            }
            TupleError::MultipleIncompleteVersionstamps => {
                f.write_str("tuple contains more than one incomplete versionstamp")
            }
            TupleError::VersionstampOffsetOverflow => {
                f.write_str("incomplete versionstamp offset does not fit in 32 bits")
            }
        }
    }
}

impl Error for TupleError {}

/// Packs a tuple into its FoundationDB byte encoding.
///
/// Unlike FDB's bindings this does not reject incomplete versionstamps: they
/// are written with their `0xff` placeholder bytes. Use
/// [`pack_with_versionstamp`] for keys that the database should stamp.
///
/// ```
/// use ferrisdb_client::tuple::{pack, Element};
///
/// assert_eq!(pack(&[Element::Null, (-1).into()]), [0x00, 0x13, 0xfe]);
/// ```
pub fn pack(t: &[Element]) -> Vec<u8> {
    let mut out = Vec::new();
    pack_into(t, &mut out);
    out
}

/// Appends the encoding of a tuple to `out`, e.g. after a key prefix.
pub fn pack_into(t: &[Element], out: &mut Vec<u8>) {
    let mut stamps = Vec::new();
    for element in t {
        encode(element, out, false, &mut stamps);
    }
}

/// Packs a tuple containing exactly one incomplete versionstamp for a
/// versionstamped-key mutation.
///
/// The result is the packed tuple followed by the little-endian 32-bit offset
/// of the versionstamp's transaction version, the layout FDB's
/// `SET_VERSIONSTAMPED_KEY` expects from API version 520 on.
///
/// ```
/// use ferrisdb_client::tuple::{pack_with_versionstamp, Versionstamp};
///
/// let key = pack_with_versionstamp(&["log".into(), Versionstamp::incomplete(0).into()])?;
/// // The 10 placeholder bytes start at offset 6, right after `02 6c 6f 67 00 33`.
/// assert_eq!(key[key.len() - 4..], 6u32.to_le_bytes());
/// # Ok::<(), ferrisdb_client::tuple::TupleError>(())
/// ```
pub fn pack_with_versionstamp(t: &[Element]) -> Result<Vec<u8>, TupleError> {
    pack_with_versionstamp_after(Vec::new(), t)
}

/// Like [`pack_with_versionstamp`], but appends to `out` (typically a subspace
/// prefix), which counts towards the versionstamp offset.
pub(crate) fn pack_with_versionstamp_after(
    mut out: Vec<u8>,
    t: &[Element],
) -> Result<Vec<u8>, TupleError> {
    let mut stamps = Vec::new();
    for element in t {
        encode(element, &mut out, false, &mut stamps);
    }
    match stamps.as_slice() {
        [] => Err(TupleError::NoIncompleteVersionstamp),
        [position] => {
            let position =
                u32::try_from(*position).map_err(|_| TupleError::VersionstampOffsetOverflow)?;
            out.extend_from_slice(&position.to_le_bytes());
            Ok(out)
        }
        _ => Err(TupleError::MultipleIncompleteVersionstamps),
    }
}

/// Whether the tuple, including any nested tuple, contains an incomplete versionstamp.
pub fn has_incomplete_versionstamp(t: &[Element]) -> bool {
    t.iter().any(|element| match element {
        Element::Versionstamp(v) => !v.is_complete(),
        Element::Tuple(inner) => has_incomplete_versionstamp(inner),
        _ => false,
    })
}

/// Decodes a packed tuple.
///
/// ```
/// use ferrisdb_client::tuple::{unpack, Element, TupleError};
///
/// assert_eq!(unpack(&[0x15, 0x2a])?, [Element::Int(42)]);
/// assert_eq!(unpack(&[0x16, 0x01]), Err(TupleError::Truncated { offset: 0 }));
/// # Ok::<(), TupleError>(())
/// ```
pub fn unpack(b: &[u8]) -> Result<Vec<Element>, TupleError> {
    unpack_from(b, 0)
}

/// Decodes the tuple in `b[start..]`; error offsets are relative to `b`.
pub(crate) fn unpack_from(b: &[u8], start: usize) -> Result<Vec<Element>, TupleError> {
    let mut decoder = Decoder {
        input: b,
        pos: start,
    };
    let mut elements = Vec::new();
    while decoder.pos < b.len() {
        elements.push(decoder.element(0)?);
    }
    Ok(elements)
}

/// Decodes a packed tuple that must hold exactly one element, such as a value
/// written with `pack(&[element])`.
///
/// ```
/// use ferrisdb_client::tuple::{unpack_single, Element, TupleError};
///
/// assert_eq!(unpack_single(&[0x27])?, Element::Bool(true));
/// assert_eq!(unpack_single(&[0x27, 0x26]), Err(TupleError::TrailingBytes { offset: 1 }));
/// # Ok::<(), TupleError>(())
/// ```
pub fn unpack_single(b: &[u8]) -> Result<Element, TupleError> {
    let mut decoder = Decoder { input: b, pos: 0 };
    let element = decoder.element(0)?;
    if decoder.pos != b.len() {
        return Err(TupleError::TrailingBytes {
            offset: decoder.pos,
        });
    }
    Ok(element)
}

/// The key range holding every tuple that extends `prefix` by at least one
/// element: `(pack(prefix) + 0x00, pack(prefix) + 0xff)`, begin inclusive and
/// end exclusive, as in FDB's bindings. The packed prefix itself is excluded.
///
/// ```
/// use ferrisdb_client::tuple::{pack, range};
///
/// let (begin, end) = range(&["users".into()]);
/// let key = pack(&["users".into(), 42.into()]);
/// assert!(begin <= key && key < end);
/// ```
pub fn range(prefix: &[Element]) -> (Vec<u8>, Vec<u8>) {
    let packed = pack(prefix);
    let mut begin = packed.clone();
    begin.push(0x00);
    let mut end = packed;
    end.push(0xff);
    (begin, end)
}

/// Appends one element; `stamps` collects the offsets of incomplete versionstamps.
fn encode(element: &Element, out: &mut Vec<u8>, nested: bool, stamps: &mut Vec<usize>) {
    match element {
        Element::Null => {
            out.push(NULL);
            // Inside a nested tuple a bare 0x00 would read as its terminator.
            if nested {
                out.push(ESCAPE);
            }
        }
        Element::Bytes(b) => encode_escaped(BYTES, b, out),
        Element::String(s) => encode_escaped(STRING, s.as_bytes(), out),
        Element::Tuple(items) => {
            out.push(NESTED);
            for item in items {
                encode(item, out, true, stamps);
            }
            out.push(0x00);
        }
        Element::Int(v) => encode_int(*v, out),
        Element::Float(v) => {
            out.push(FLOAT);
            out.extend_from_slice(&encode_f32_bits(v.to_bits()).to_be_bytes());
        }
        Element::Double(v) => {
            out.push(DOUBLE);
            out.extend_from_slice(&encode_f64_bits(v.to_bits()).to_be_bytes());
        }
        Element::Bool(v) => out.push(if *v { TRUE } else { FALSE }),
        Element::Uuid(v) => {
            out.push(UUID);
            out.extend_from_slice(v);
        }
        Element::Versionstamp(v) => {
            out.push(VERSIONSTAMP);
            if !v.is_complete() {
                stamps.push(out.len());
            }
            out.extend_from_slice(v.as_bytes());
        }
    }
}

/// Writes a 0x00-terminated string. Zeros in the data become `00 ff` so that
/// they cannot be mistaken for the terminator yet still sort below every
/// other byte, which keeps a string sorting before all of its extensions.
fn encode_escaped(code: u8, data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len() + 2);
    out.push(code);
    for &byte in data {
        out.push(byte);
        if byte == 0x00 {
            out.push(ESCAPE);
        }
    }
    out.push(0x00);
}

/// Integers are stored as their minimal big-endian magnitude, with the length
/// folded into the type code so that longer (larger) magnitudes sort later.
/// Negative values store the one's complement of the magnitude and count the
/// type code down from zero, which reverses both orders as required.
fn encode_int(value: i128, out: &mut Vec<u8>) {
    if value == 0 {
        out.push(INT_ZERO);
        return;
    }
    let magnitude = value.unsigned_abs();
    let len = 16 - magnitude.leading_zeros() as usize / 8;
    let be = magnitude.to_be_bytes();
    let digits = &be[16 - len..];
    // `len` is at most 16, so these conversions cannot truncate.
    let len_byte = len as u8;
    if value > 0 {
        if len <= 8 {
            out.push(INT_ZERO + len_byte);
        } else {
            out.extend_from_slice(&[POS_INT_END, len_byte]);
        }
        out.extend_from_slice(digits);
    } else {
        if len <= 8 {
            out.push(INT_ZERO - len_byte);
        } else {
            out.extend_from_slice(&[NEG_INT_START, len_byte ^ 0xff]);
        }
        out.extend(digits.iter().map(|d| !d));
    }
}

/// Maps IEEE bits to bytes that sort in total order: positive numbers get
/// their sign bit set so they sort above negatives, negative numbers have all
/// bits flipped so larger magnitudes sort lower.
fn encode_f32_bits(bits: u32) -> u32 {
    if bits & (1 << 31) != 0 {
        !bits
    } else {
        bits ^ (1 << 31)
    }
}

fn decode_f32_bits(bits: u32) -> u32 {
    if bits & (1 << 31) != 0 {
        bits ^ (1 << 31)
    } else {
        !bits
    }
}

fn encode_f64_bits(bits: u64) -> u64 {
    if bits & (1 << 63) != 0 {
        !bits
    } else {
        bits ^ (1 << 63)
    }
}

fn decode_f64_bits(bits: u64) -> u64 {
    if bits & (1 << 63) != 0 {
        bits ^ (1 << 63)
    } else {
        !bits
    }
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// Decodes the element at the cursor; `depth` counts enclosing nested tuples.
    fn element(&mut self, depth: usize) -> Result<Element, TupleError> {
        let start = self.pos;
        let code = self.take_byte(start)?;
        let element = match code {
            NULL => Element::Null,
            BYTES => Element::Bytes(self.escaped(start)?),
            STRING => {
                let raw = self.escaped(start)?;
                let s = String::from_utf8(raw)
                    .map_err(|_| TupleError::InvalidUtf8 { offset: start })?;
                Element::String(s)
            }
            NESTED => self.nested(start, depth)?,
            NEG_INT_START => {
                let len = self.take_byte(start)? ^ 0xff;
                self.int(start, usize::from(len), true)?
            }
            0x0c..=0x13 => self.int(start, usize::from(INT_ZERO - code), true)?,
            INT_ZERO => Element::Int(0),
            0x15..=0x1c => self.int(start, usize::from(code - INT_ZERO), false)?,
            POS_INT_END => {
                let len = self.take_byte(start)?;
                self.int(start, usize::from(len), false)?
            }
            FLOAT => {
                let bits = u32::from_be_bytes(self.take_array(start)?);
                Element::Float(f32::from_bits(decode_f32_bits(bits)))
            }
            DOUBLE => {
                let bits = u64::from_be_bytes(self.take_array(start)?);
                Element::Double(f64::from_bits(decode_f64_bits(bits)))
            }
            FALSE => Element::Bool(false),
            TRUE => Element::Bool(true),
            UUID => Element::Uuid(self.take_array(start)?),
            VERSIONSTAMP => Element::Versionstamp(Versionstamp(self.take_array(start)?)),
            _ => {
                return Err(TupleError::UnknownTypeCode {
                    code,
                    offset: start,
                });
            }
        };
        Ok(element)
    }

    fn nested(&mut self, start: usize, depth: usize) -> Result<Element, TupleError> {
        if depth >= MAX_NESTING_DEPTH {
            return Err(TupleError::NestingTooDeep { offset: start });
        }
        let mut items = Vec::new();
        loop {
            match self.input.get(self.pos) {
                None => return Err(TupleError::Truncated { offset: start }),
                // No element starts with 0xff, so `00 ff` can only be an escaped null.
                Some(&NULL) if self.input.get(self.pos + 1) == Some(&ESCAPE) => {
                    items.push(Element::Null);
                    self.pos += 2;
                }
                Some(&NULL) => {
                    self.pos += 1;
                    return Ok(Element::Tuple(items));
                }
                Some(_) => items.push(self.element(depth + 1)?),
            }
        }
    }

    /// Decodes `len` magnitude bytes. Non-minimal encodings (leading zero
    /// digits) are accepted, as the other bindings accept them.
    fn int(&mut self, start: usize, len: usize, negative: bool) -> Result<Element, TupleError> {
        let digits = self.take(len, start)?;
        let overflow = TupleError::IntegerOverflow { offset: start };
        let mut magnitude: u128 = 0;
        for &digit in digits {
            if magnitude >> 120 != 0 {
                return Err(overflow);
            }
            let digit = if negative { !digit } else { digit };
            magnitude = magnitude << 8 | u128::from(digit);
        }
        let value = if negative {
            0i128.checked_sub_unsigned(magnitude)
        } else {
            i128::try_from(magnitude).ok()
        };
        value.map(Element::Int).ok_or(overflow)
    }

    /// Reads up to the next unescaped 0x00, unescaping `00 ff` to `00`.
    fn escaped(&mut self, start: usize) -> Result<Vec<u8>, TupleError> {
        let mut out = Vec::new();
        loop {
            let rest = &self.input[self.pos..];
            let zero = rest
                .iter()
                .position(|&b| b == 0x00)
                .ok_or(TupleError::Truncated { offset: start })?;
            out.extend_from_slice(&rest[..zero]);
            if rest.get(zero + 1) == Some(&ESCAPE) {
                out.push(0x00);
                self.pos += zero + 2;
            } else {
                self.pos += zero + 1;
                return Ok(out);
            }
        }
    }

    fn take(&mut self, len: usize, start: usize) -> Result<&'a [u8], TupleError> {
        let bytes = self
            .input
            .get(self.pos..)
            .and_then(|rest| rest.get(..len))
            .ok_or(TupleError::Truncated { offset: start })?;
        self.pos += len;
        Ok(bytes)
    }

    fn take_byte(&mut self, start: usize) -> Result<u8, TupleError> {
        let [byte] = self.take_array(start)?;
        Ok(byte)
    }

    fn take_array<const N: usize>(&mut self, start: usize) -> Result<[u8; N], TupleError> {
        let bytes = self.take(N, start)?;
        <[u8; N]>::try_from(bytes).map_err(|_| TupleError::Truncated { offset: start })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn from_hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).expect("valid hex in test table"))
            .collect()
    }

    fn pack_one(element: &Element) -> Vec<u8> {
        pack(std::slice::from_ref(element))
    }

    /// Asserts that `element` packs to exactly `expected` and decodes back to itself.
    fn assert_vector(element: &Element, expected: &[u8]) {
        let packed = pack_one(element);
        assert_eq!(
            hex(&packed),
            hex(expected),
            "encoding of {element:?} differs from FoundationDB's"
        );
        assert_eq!(
            unpack(expected).as_deref(),
            Ok(std::slice::from_ref(element))
        );
        assert_eq!(unpack_single(expected).as_ref(), Ok(element));
    }

    /// Worked examples from the typecode table in FoundationDB's `design/tuple.md`.
    #[test]
    fn design_doc_examples() {
        let cases = [
            (Element::Null, "00"),
            (
                Element::Bytes(b"foo\x00bar".to_vec()),
                "01 66 6f 6f 00 ff 62 61 72 00",
            ),
            (
                Element::from("F\u{d4}O\u{0}bar"),
                "02 46 c3 94 4f 00 ff 62 61 72 00",
            ),
            (
                Element::Tuple(vec![
                    Element::Bytes(b"foo\x00bar".to_vec()),
                    Element::Null,
                    Element::Tuple(vec![]),
                ]),
                "05 01 66 6f 6f 00 ff 62 61 72 00 00 ff 05 00 00",
            ),
            (Element::Int(-1), "13 fe"),
            (Element::Int(-5551212), "11 ab 4b 93"),
            (Element::Float(-42.0), "20 3d d7 ff ff"),
            // The doc's "empty tuple sorts before the tuple holding null" example.
            (Element::Tuple(vec![]), "05 00"),
            (Element::Tuple(vec![Element::Null]), "05 00 ff 00"),
        ];
        for (element, expected) in &cases {
            assert_vector(element, &from_hex(expected));
        }
    }

    /// The table in FoundationDB's Java `TupleSerializationTest.serializedForms`.
    #[test]
    #[allow(clippy::approx_constant)] // 3.14 is FDB's test value, not an approximation of pi.
    fn java_binding_vectors() {
        let cases = [
            (Element::Int(0), "14"),
            (Element::Int(1), "15 01"),
            (Element::Int(-1), "13 fe"),
            (Element::Int(255), "15 ff"),
            (Element::Int(-255), "13 00"),
            (Element::Int(256), "16 01 00"),
            (Element::Int(-256), "12 fe ff"),
            (Element::Int(65536), "17 01 00 00"),
            (Element::Int(-65536), "11 fe ff ff"),
            (Element::from(i64::MAX), "1c 7f ff ff ff ff ff ff ff"),
            (
                Element::Int(i128::from(i64::MAX) + 1),
                "1c 80 00 00 00 00 00 00 00",
            ),
            (Element::from(u64::MAX), "1c ff ff ff ff ff ff ff ff"),
            (Element::Int(1 << 64), "1d 09 01 00 00 00 00 00 00 00 00"),
            (Element::Int(-((1 << 32) - 1)), "10 00 00 00 00"),
            (Element::from(i64::MIN + 2), "0c 80 00 00 00 00 00 00 01"),
            (Element::from(i64::MIN + 1), "0c 80 00 00 00 00 00 00 00"),
            (Element::from(i64::MIN), "0c 7f ff ff ff ff ff ff ff"),
            (
                Element::Int(i128::from(i64::MIN) - 1),
                "0c 7f ff ff ff ff ff ff fe",
            ),
            (
                Element::Int(-i128::from(u64::MAX)),
                "0c 00 00 00 00 00 00 00 00",
            ),
            (Element::Float(3.14), "20 c0 48 f5 c3"),
            (Element::Float(-3.14), "20 3f b7 0a 3c"),
            (Element::Double(3.14), "21 c0 09 1e b8 51 eb 85 1f"),
            (Element::Double(-3.14), "21 3f f6 e1 47 ae 14 7a e0"),
            (Element::Float(0.0), "20 80 00 00 00"),
            (Element::Float(-0.0), "20 7f ff ff ff"),
            (Element::Double(0.0), "21 80 00 00 00 00 00 00 00"),
            (Element::Double(-0.0), "21 7f ff ff ff ff ff ff ff"),
            (Element::Float(f32::INFINITY), "20 ff 80 00 00"),
            (Element::Float(f32::NEG_INFINITY), "20 00 7f ff ff"),
            (Element::Double(f64::INFINITY), "21 ff f0 00 00 00 00 00 00"),
            (
                Element::Double(f64::NEG_INFINITY),
                "21 00 0f ff ff ff ff ff ff",
            ),
            // NaNs with every payload bit set, positive and negative.
            (
                Element::Float(f32::from_bits(0x7fff_ffff)),
                "20 ff ff ff ff",
            ),
            (
                Element::Double(f64::from_bits(0x7fff_ffff_ffff_ffff)),
                "21 ff ff ff ff ff ff ff ff",
            ),
            (Element::Float(f32::from_bits(!0)), "20 00 00 00 00"),
            (
                Element::Double(f64::from_bits(!0)),
                "21 00 00 00 00 00 00 00 00",
            ),
            (Element::Bytes(vec![]), "01 00"),
            (Element::Bytes(vec![1, 2, 3]), "01 01 02 03 00"),
            (
                Element::Bytes(vec![0, 0, 0, 4]),
                "01 00 ff 00 ff 00 ff 04 00",
            ),
            (Element::from(""), "02 00"),
            (Element::from("hello"), "02 68 65 6c 6c 6f 00"),
            (Element::from("\u{4e2d}\u{6587}"), "02 e4 b8 ad e6 96 87 00"),
            (
                Element::from("\u{3bc}\u{3ac}\u{3b8}\u{3b7}\u{3bc}\u{3b1}"),
                "02 ce bc ce ac ce b8 ce b7 ce bc ce b1 00",
            ),
            (Element::from("\u{1f525}"), "02 f0 9f 94 a5 00"),
            (Element::from("\u{1f96f}"), "02 f0 9f a5 af 00"),
            (Element::from("\u{10ffff}"), "02 f4 8f bf bf 00"),
            (Element::Tuple(vec![Element::Null]), "05 00 ff 00"),
            (
                Element::Tuple(vec![Element::Null, "hello".into()]),
                "05 00 ff 02 68 65 6c 6c 6f 00 00",
            ),
            (
                Element::Tuple(vec![Element::Null, "hell\0".into()]),
                "05 00 ff 02 68 65 6c 6c 00 ff 00 00",
            ),
            (
                Element::Uuid([
                    0xff, 0xff, 0xff, 0xff, 0xba, 0x5e, 0xba, 0x11, 0x00, 0x00, 0x00, 0x00, 0x5c,
                    0xa1, 0xab, 0x1e,
                ]),
                "30 ff ff ff ff ba 5e ba 11 00 00 00 00 5c a1 ab 1e",
            ),
            (Element::Bool(false), "26"),
            (Element::Bool(true), "27"),
            (Element::from(0x3019_i16), "16 30 19"),
            (Element::from(3_u8), "15 03"),
            (
                Element::Versionstamp(Versionstamp::complete(
                    [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00, 0x01, 0x02, 0x03],
                    0,
                )),
                "33 aa bb cc dd ee ff 00 01 02 03 00 00",
            ),
            (
                Element::Versionstamp(Versionstamp::complete([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 657)),
                "33 01 02 03 04 05 06 07 08 09 0a 02 91",
            ),
        ];
        for (element, expected) in &cases {
            assert_vector(element, &from_hex(expected));
        }
    }

    /// Multi-element tuples from the same Java table, where element boundaries matter.
    #[test]
    fn java_binding_multi_element_vectors() {
        assert_eq!(pack(&[]), Vec::<u8>::new());
        assert_eq!(unpack(&[]), Ok(vec![]));
        let cases = [
            (
                vec![Element::Tuple(vec![Element::Null]), "hello".into()],
                "05 00 ff 00 02 68 65 6c 6c 6f 00",
            ),
            (
                vec![
                    Element::Tuple(vec![Element::Null]),
                    "hello".into(),
                    Element::Bytes(vec![0x01, 0x00]),
                    Element::Bytes(vec![]),
                ],
                "05 00 ff 00 02 68 65 6c 6c 6f 00 01 01 00 ff 00 01 00",
            ),
        ];
        for (tuple, expected) in &cases {
            let expected = from_hex(expected);
            assert_eq!(hex(&pack(tuple)), hex(&expected));
            assert_eq!(unpack(&expected).as_ref(), Ok(tuple));
        }
    }

    /// Generated by running FoundationDB's own `bindings/python/fdb/tuple.py`.
    #[test]
    fn python_binding_vectors() {
        let cases = [
            (Element::Int(65535), "16 ff ff"),
            (Element::Int(0xffff_ffff), "18 ff ff ff ff"),
            (Element::Int(1 << 32), "19 01 00 00 00 00"),
            (Element::Int(-(1 << 40)), "0e fe ff ff ff ff ff"),
            (Element::Int((1 << 48) - 1), "1a ff ff ff ff ff ff"),
            (Element::Int(1 << 56), "1c 01 00 00 00 00 00 00 00"),
            (Element::Int(-(1 << 56)), "0c fe ff ff ff ff ff ff ff"),
            (Element::Int(-(1 << 64)), "0b f6 fe ff ff ff ff ff ff ff ff"),
            (
                Element::Int(i128::MAX),
                "1d 10 7f ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff",
            ),
            (
                Element::Int(i128::MIN),
                "0b ef 7f ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff",
            ),
            (Element::Double(-42.0), "21 3f ba ff ff ff ff ff ff"),
            (
                Element::Double(f64::MIN_POSITIVE),
                "21 80 10 00 00 00 00 00 00",
            ),
            (Element::Bytes(vec![0x00, 0xff]), "01 00 ff ff 00"),
            (
                Element::Uuid([
                    0x11, 0x00, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x11, 0x00, 0xaa, 0xbb, 0xcc,
                    0xdd, 0xee, 0xff,
                ]),
                "30 11 00 aa bb cc dd ee ff 11 00 aa bb cc dd ee ff",
            ),
            (
                Element::Tuple(vec![
                    Element::Tuple(vec![Element::Null, Element::Int(-1)]),
                    Element::Null,
                ]),
                "05 05 00 ff 13 fe 00 00 ff 00",
            ),
        ];
        for (element, expected) in &cases {
            assert_vector(element, &from_hex(expected));
        }

        let tuple = [
            "app".into(),
            "users".into(),
            42.into(),
            Element::Null,
            b"\x00".into(),
            3.5.into(),
            true.into(),
        ];
        let expected = "02 61 70 70 00 02 75 73 65 72 73 00 15 2a 00 01 00 ff 00 \
                        21 c0 0c 00 00 00 00 00 00 27";
        assert_eq!(hex(&pack(&tuple)), expected);
        assert_eq!(unpack(&from_hex(expected)), Ok(tuple.to_vec()));
    }

    /// Python's tuple.py switches to the arbitrary-precision codes one value
    /// early, for exactly `u64::MAX` and `-u64::MAX`. Java, Go and the spec
    /// use the 8-byte codes (and so do we), but data written by Python must
    /// still decode.
    #[test]
    fn decodes_python_forms_of_u64_extremes() {
        let python_max = from_hex("1d 08 ff ff ff ff ff ff ff ff");
        assert_eq!(unpack(&python_max), Ok(vec![Element::from(u64::MAX)]));
        let python_min = from_hex("0b f7 00 00 00 00 00 00 00 00");
        assert_eq!(
            unpack(&python_min),
            Ok(vec![Element::Int(-i128::from(u64::MAX))])
        );
    }

    #[test]
    fn integers_of_every_width_use_the_expected_code_and_length() {
        for len in 1..=16u32 {
            // The smallest and largest magnitudes that need exactly `len` bytes.
            let smallest = 1i128 << (8 * (len - 1));
            let largest = if len == 16 {
                i128::MAX
            } else {
                (1i128 << (8 * len)) - 1
            };
            for magnitude in [smallest, smallest + 1, largest - 1, largest] {
                for value in [magnitude, -magnitude] {
                    let packed = pack(&[Element::Int(value)]);
                    let len = len as usize;
                    let header = match (value > 0, len <= 8) {
                        (true, true) => vec![INT_ZERO + len as u8],
                        (false, true) => vec![INT_ZERO - len as u8],
                        (true, false) => vec![POS_INT_END, len as u8],
                        (false, false) => vec![NEG_INT_START, len as u8 ^ 0xff],
                    };
                    assert_eq!(packed[..header.len()], header[..], "header of {value}");
                    assert_eq!(packed.len(), header.len() + len, "length of {value}");
                    assert_eq!(unpack(&packed), Ok(vec![Element::Int(value)]));
                }
            }
        }
        // i128::MIN's magnitude is 2^127, one more than i128::MAX.
        assert_eq!(
            pack(&[Element::Int(i128::MIN)])[..2],
            [NEG_INT_START, 16 ^ 0xff]
        );
    }

    #[test]
    fn every_value_round_trips() {
        let mut values = vec![
            Element::Null,
            Element::Bytes(vec![]),
            Element::Bytes(vec![0; 5]),
            Element::Bytes((0..=255).collect()),
            Element::from(""),
            Element::from("nul\0 in the middle\0"),
            Element::from("\u{0}\u{7f}\u{80}\u{7ff}\u{800}\u{ffff}\u{10000}\u{10ffff}"),
            Element::Tuple(vec![]),
            Element::Tuple(vec![Element::Null, Element::Null]),
            Element::Tuple(vec![Element::Tuple(vec![Element::Tuple(vec![
                Element::Null,
            ])])]),
            Element::Float(f32::MIN_POSITIVE),
            Element::Float(f32::MAX),
            Element::Float(f32::MIN),
            Element::Float(1e-45),
            Element::Double(f64::MAX),
            Element::Double(f64::MIN),
            Element::Double(5e-324),
            Element::Double(-1.5),
            Element::Bool(false),
            Element::Bool(true),
            Element::Uuid([0; 16]),
            Element::Uuid([0xff; 16]),
            Element::Versionstamp(Versionstamp::complete([0; 10], 0)),
            Element::Versionstamp(Versionstamp::complete([0xff; 10], 0xffff)),
            Element::Versionstamp(Versionstamp::incomplete(3)),
        ];
        for v in [
            0,
            1,
            -1,
            i128::from(i64::MAX),
            i128::from(i64::MIN),
            i128::from(u64::MAX),
            -i128::from(u64::MAX),
            i128::MAX,
            i128::MIN,
        ] {
            values.push(Element::Int(v));
        }
        for bits in [0x7fc0_0000_u32, 0xffc0_0000, 0x7f80_0001, 0xff80_0001] {
            values.push(Element::Float(f32::from_bits(bits)));
        }
        for bits in [0x7ff8_0000_0000_0000_u64, 0xfff8_0000_0000_0001] {
            values.push(Element::Double(f64::from_bits(bits)));
        }
        // Every value also inside a nested tuple, where nulls are escaped.
        values.push(Element::Tuple(values.clone()));

        for value in &values {
            let packed = pack_one(value);
            // Float equality is bitwise, so this also proves NaN payloads and
            // the sign of zero survive.
            assert_eq!(unpack_single(&packed).as_ref(), Ok(value), "{value:?}");
        }
        let packed = pack(&values);
        assert_eq!(unpack(&packed), Ok(values));
    }

    /// One value of every kind, listed in FoundationDB's tuple order.
    fn values_in_fdb_order() -> Vec<Element> {
        let mut values = vec![
            Element::Null,
            Element::Bytes(vec![]),
            Element::Bytes(vec![0x00]),
            Element::Bytes(vec![0x00, 0x00]),
            Element::Bytes(vec![0x00, 0xff]),
            Element::Bytes(vec![0x01]),
            Element::Bytes(b"a".to_vec()),
            Element::Bytes(b"a\x00".to_vec()),
            Element::Bytes(b"a\x00\x00".to_vec()),
            Element::Bytes(b"a\x01".to_vec()),
            Element::Bytes(b"ab".to_vec()),
            Element::Bytes(vec![0xff]),
            Element::Bytes(vec![0xff, 0xff]),
            Element::from(""),
            Element::from("\0"),
            Element::from("A"),
            Element::from("a"),
            Element::from("a\0"),
            Element::from("ab"),
            Element::from("\u{e9}"),
            Element::from("\u{4e2d}"),
            Element::from("\u{ffff}"),
            Element::from("\u{1f525}"),
            Element::Tuple(vec![]),
            Element::Tuple(vec![Element::Null]),
            Element::Tuple(vec![Element::Null, Element::Null]),
            Element::Tuple(vec![Element::Null, Element::Bytes(vec![])]),
            Element::Tuple(vec![Element::Bytes(vec![])]),
            Element::Tuple(vec![Element::Bytes(vec![]), Element::Null]),
            Element::Tuple(vec![Element::from("a")]),
            Element::Tuple(vec![Element::Tuple(vec![])]),
            Element::Tuple(vec![Element::Tuple(vec![]), Element::Null]),
            Element::Tuple(vec![Element::Tuple(vec![Element::Null])]),
            Element::Tuple(vec![Element::Int(-1)]),
            Element::Tuple(vec![Element::Int(0)]),
            Element::Tuple(vec![Element::Int(0), Element::Null]),
            Element::Tuple(vec![Element::Int(0), Element::Int(0)]),
            Element::Tuple(vec![Element::Int(1)]),
            Element::Tuple(vec![Element::Bool(true)]),
        ];
        let integers = [
            i128::MIN,
            -(1 << 64) - 1,
            -(1 << 64),
            -i128::from(u64::MAX),
            i128::from(i64::MIN) - 1,
            i128::from(i64::MIN),
            i128::from(i64::MIN) + 1,
            -(1 << 56),
            -(1 << 56) + 1,
            -65536,
            -65535,
            -256,
            -255,
            -2,
            -1,
            0,
            1,
            2,
            255,
            256,
            65535,
            65536,
            (1 << 56) - 1,
            1 << 56,
            i128::from(i64::MAX),
            i128::from(i64::MAX) + 1,
            i128::from(u64::MAX) - 1,
            i128::from(u64::MAX),
            1 << 64,
            (1 << 64) + 1,
            i128::MAX,
        ];
        values.extend(integers.into_iter().map(Element::Int));
        let float_bits = [
            0xffff_ffff_u32, // negative NaN with the largest payload
            0xffc0_0000,     // negative quiet NaN
            0xff80_0000,     // -inf
            0xc2a8_0000,     // -84
            0xbf80_0000,     // -1
            0x8000_0001,     // smallest negative subnormal
            0x8000_0000,     // -0
            0x0000_0000,     // +0
            0x0000_0001,     // smallest positive subnormal
            0x3f80_0000,     // 1
            0x7f7f_ffff,     // f32::MAX
            0x7f80_0000,     // +inf
            0x7fc0_0000,     // quiet NaN
            0x7fff_ffff,     // NaN with the largest payload
        ];
        values.extend(float_bits.map(|b| Element::Float(f32::from_bits(b))));
        let double_bits = [
            0xffff_ffff_ffff_ffff_u64,
            0xfff0_0000_0000_0000,
            0xc045_0000_0000_0000, // -42
            0x8000_0000_0000_0000,
            0x0000_0000_0000_0000,
            0x0000_0000_0000_0001,
            0x4045_0000_0000_0000, // 42
            0x7ff0_0000_0000_0000,
            0x7ff8_0000_0000_0000,
        ];
        values.extend(double_bits.map(|b| Element::Double(f64::from_bits(b))));
        values.extend([
            Element::Bool(false),
            Element::Bool(true),
            Element::Uuid([0; 16]),
            Element::Uuid([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            Element::Uuid([0xff; 16]),
            Versionstamp::complete([0; 10], 0).into(),
            Versionstamp::complete([0; 10], 1).into(),
            Versionstamp::complete([0, 0, 0, 0, 0, 0, 0, 1, 0, 0], 0).into(),
            Versionstamp::complete(
                [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe],
                9,
            )
            .into(),
            Versionstamp::incomplete(0).into(),
            Versionstamp::incomplete(1).into(),
        ]);
        values
    }

    #[test]
    fn packed_order_matches_fdb_type_and_value_order() {
        let values = values_in_fdb_order();
        let packed: Vec<Vec<u8>> = values.iter().map(pack_one).collect();
        for i in 0..values.len() {
            for j in 0..values.len() {
                let expected = i.cmp(&j);
                assert_eq!(
                    packed[i].cmp(&packed[j]),
                    expected,
                    "packed order of {:?} vs {:?}",
                    values[i],
                    values[j]
                );
                assert_eq!(
                    values[i].cmp(&values[j]),
                    expected,
                    "Element order of {:?} vs {:?}",
                    values[i],
                    values[j]
                );
            }
        }
    }

    /// A 64-bit LCG (Knuth's MMIX constants): deterministic, dependency-free.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() >> 33) as usize % n
        }
    }

    #[test]
    fn integer_pack_order_matches_numeric_order() {
        let mut rng = Lcg(0x5eed);
        let mut values: Vec<i128> = (0..20_000)
            .map(|_| {
                let wide = (u128::from(rng.next()) << 64 | u128::from(rng.next())) as i128;
                // Shifting by a random amount spreads values over every width.
                wide >> (rng.next() % 128)
            })
            .collect();
        values.extend([0, 1, -1, i128::MAX, i128::MIN]);
        values.sort_unstable();
        values.dedup();
        let packed: Vec<Vec<u8>> = values.iter().map(|&v| pack(&[Element::Int(v)])).collect();
        for (pair, values) in packed.windows(2).zip(values.windows(2)) {
            assert!(
                pair[0] < pair[1],
                "{} packs to {} which does not sort before {} ({})",
                values[0],
                hex(&pair[0]),
                values[1],
                hex(&pair[1])
            );
        }
        for (bytes, &value) in packed.iter().zip(&values) {
            assert_eq!(unpack(bytes), Ok(vec![Element::Int(value)]));
        }
    }

    #[test]
    fn float_pack_order_matches_total_order() {
        let mut rng = Lcg(42);
        let mut floats: Vec<f32> = (0..5_000)
            .map(|_| f32::from_bits(rng.next() as u32))
            .collect();
        let mut doubles: Vec<f64> = (0..5_000).map(|_| f64::from_bits(rng.next())).collect();
        floats.sort_by(f32::total_cmp);
        doubles.sort_by(f64::total_cmp);
        for pair in floats.windows(2) {
            let a = pack(&[pair[0].into()]);
            let b = pack(&[pair[1].into()]);
            assert_eq!(a.cmp(&b), pair[0].total_cmp(&pair[1]));
        }
        for pair in doubles.windows(2) {
            let a = pack(&[pair[0].into()]);
            let b = pack(&[pair[1].into()]);
            assert_eq!(a.cmp(&b), pair[0].total_cmp(&pair[1]));
        }
    }

    /// Whole tuples: sorting by `Element` order must agree with sorting the packed keys,
    /// including tuples that are prefixes of one another.
    #[test]
    fn random_tuple_order_matches_packed_order() {
        let pool = values_in_fdb_order();
        let mut rng = Lcg(7);
        let mut tuples: Vec<Vec<Element>> = (0..3_000)
            .map(|_| {
                let len = rng.below(4);
                (0..len)
                    .map(|_| pool[rng.below(pool.len())].clone())
                    .collect()
            })
            .collect();
        tuples.sort();
        for pair in tuples.windows(2) {
            let (a, b) = (pack(&pair[0]), pack(&pair[1]));
            assert_eq!(
                a.cmp(&b),
                pair[0].cmp(&pair[1]),
                "{:?} vs {:?}",
                pair[0],
                pair[1]
            );
        }
    }

    /// Malformed inputs from the Java binding's `TuplePackingTest.malformedSequences`.
    #[test]
    fn malformed_input_is_rejected() {
        let truncated = TupleError::Truncated { offset: 0 };
        let invalid_utf8 = TupleError::InvalidUtf8 { offset: 0 };
        let cases = [
            ("01 de ad c0 de", truncated.clone()),
            ("01 de ad 00 ff c0 de", truncated.clone()),
            ("02 68 65 6c 6c 6f", truncated.clone()),
            ("02 68 65 6c 00 ff 6c 6f", truncated.clone()),
            ("02 75 74 66 08 80 00", invalid_utf8.clone()),
            ("02 75 74 66 08 c0 01 00", invalid_utf8.clone()),
            ("02 75 74 66 10 ed a0 bd 00", invalid_utf8.clone()),
            ("02 75 74 66 10 ed b4 a5 00", invalid_utf8.clone()),
            ("02 75 74 66 10 ed a0 bd ed b4 a5 00", invalid_utf8),
            ("05 02 68 65 6c 6c 6f 00", truncated.clone()),
            (
                "05 02 68 65 6c 6c 6f 00 00 ff 02 74 68 65 72 65 00",
                truncated.clone(),
            ),
            ("16 01", truncated.clone()),
            ("12 01", truncated.clone()),
            ("1d 09 01 02 03 04 05 06 07 08", truncated.clone()),
            ("0b f6 01 02 03 04 05 06 07 08", truncated.clone()),
            ("20 01 02 03", truncated.clone()),
            ("21 01 02 03 04 05 06 07", truncated.clone()),
            (
                "30 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e",
                truncated.clone(),
            ),
            ("33 01 02 03 04 05 06 07 08 09 0a 0b", truncated.clone()),
            (
                "ff",
                TupleError::UnknownTypeCode {
                    code: 0xff,
                    offset: 0,
                },
            ),
            // A length byte with nothing after it, and a bare big-integer code.
            ("1d", truncated.clone()),
            ("0b", truncated),
        ];
        for (input, expected) in cases {
            assert_eq!(unpack(&from_hex(input)), Err(expected), "input {input}");
        }
    }

    #[test]
    fn error_offsets_point_at_the_failing_element() {
        // "a", 1, then a truncated 2-byte integer at offset 5.
        assert_eq!(
            unpack(&from_hex("02 61 00 15 01 16 07")),
            Err(TupleError::Truncated { offset: 5 })
        );
        // The offset of a failure inside a nested tuple is the inner element's.
        assert_eq!(
            unpack(&from_hex("05 15 01 02 80 00 00")),
            Err(TupleError::InvalidUtf8 { offset: 3 })
        );
    }

    #[test]
    fn reserved_and_unassigned_type_codes_are_rejected() {
        let supported = [
            0x00, 0x01, 0x02, 0x05, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14,
            0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x20, 0x21, 0x26, 0x27, 0x30,
            0x33,
        ];
        for code in (0..=255u8).filter(|c| !supported.contains(c)) {
            assert_eq!(
                unpack(&[0x14, code]),
                Err(TupleError::UnknownTypeCode { code, offset: 1 })
            );
        }
    }

    #[test]
    fn integers_beyond_i128_are_rejected() {
        // 2^127 needs 16 bytes but exceeds i128::MAX.
        let mut too_big = vec![POS_INT_END, 16, 0x80];
        too_big.extend([0; 15]);
        assert_eq!(
            unpack(&too_big),
            Err(TupleError::IntegerOverflow { offset: 0 })
        );
        // 17 significant bytes.
        let mut seventeen = vec![0x15, 0x01, POS_INT_END, 17, 0x01];
        seventeen.extend([0; 16]);
        assert_eq!(
            unpack(&seventeen),
            Err(TupleError::IntegerOverflow { offset: 2 })
        );
        // -(2^127 + 1): one below i128::MIN.
        let mut too_small = vec![NEG_INT_START, 16 ^ 0xff, 0x7f];
        too_small.extend([0xff; 14]);
        too_small.push(0xfe);
        assert_eq!(
            unpack(&too_small),
            Err(TupleError::IntegerOverflow { offset: 0 })
        );
        // Leading zero digits are not significant, so this is just 1.
        let mut padded = vec![POS_INT_END, 20];
        padded.extend([0; 19]);
        padded.push(1);
        assert_eq!(unpack(&padded), Ok(vec![Element::Int(1)]));
    }

    #[test]
    fn nesting_depth_is_bounded() {
        let mut element = Element::Null;
        for _ in 0..MAX_NESTING_DEPTH {
            element = Element::Tuple(vec![element]);
        }
        let packed = pack_one(&element);
        assert_eq!(unpack_single(&packed), Ok(element.clone()));

        let too_deep = pack(&[Element::Tuple(vec![element])]);
        assert_eq!(
            unpack(&too_deep),
            Err(TupleError::NestingTooDeep {
                offset: MAX_NESTING_DEPTH
            })
        );
        let hostile = vec![NESTED; 1 << 20];
        assert!(matches!(
            unpack(&hostile),
            Err(TupleError::NestingTooDeep { .. })
        ));
    }

    #[test]
    fn unpack_single_requires_exactly_one_element() {
        assert_eq!(unpack_single(&[]), Err(TupleError::Truncated { offset: 0 }));
        assert_eq!(
            unpack_single(&from_hex("02 61 00 00")),
            Err(TupleError::TrailingBytes { offset: 3 })
        );
        assert_eq!(
            unpack_single(&from_hex("05 00 ff 00")),
            Ok(Element::Tuple(vec![Element::Null]))
        );
    }

    #[test]
    fn range_covers_exactly_the_extensions_of_a_prefix() {
        let prefix = [Element::from("users"), Element::Int(7)];
        let (begin, end) = range(&prefix);
        let packed = pack(&prefix);
        assert_eq!(begin, [packed.as_slice(), &[0x00]].concat());
        assert_eq!(end, [packed.as_slice(), &[0xff]].concat());
        assert!(
            packed < begin,
            "the prefix tuple itself is not in its range"
        );

        for last in values_in_fdb_order() {
            let mut child = prefix.to_vec();
            child.push(last);
            let key = pack(&child);
            assert!(begin <= key && key < end, "{child:?} outside range");
        }
        for outside in [
            vec![Element::from("users"), Element::Int(6), Element::Null],
            vec![Element::from("users"), Element::Int(8)],
            vec![Element::from("users")],
            vec![Element::from("users\0")],
        ] {
            let key = pack(&outside);
            assert!(key < begin || key >= end, "{outside:?} inside range");
        }
        assert_eq!(range(&[]), (vec![0x00], vec![0xff]));
    }

    #[test]
    fn pack_with_versionstamp_appends_little_endian_offset() {
        // Java's testPositionInformationAdjustmentForIncompleteVersionstamp.
        let stamped = [Element::from(Versionstamp::incomplete(1))];
        let key = pack_with_versionstamp(&stamped);
        assert_eq!(
            key.as_deref().map(hex),
            Ok("33 ff ff ff ff ff ff ff ff ff ff 00 01 01 00 00 00".to_owned())
        );
        // The key without its offset suffix decodes to the original tuple.
        let key = key.unwrap_or_default();
        assert_eq!(unpack(&key[..key.len() - 4]), Ok(stamped.to_vec()));

        // Nested, after other elements (checked against Python's tuple.py with prefix b"pre").
        let nested = [
            Element::from("a"),
            Element::Tuple(vec![1.into(), Versionstamp::incomplete(7).into()]),
        ];
        let key = pack_with_versionstamp_after(b"pre".to_vec(), &nested);
        assert_eq!(
            key.as_deref().map(hex),
            Ok(
                "70 72 65 02 61 00 05 15 01 33 ff ff ff ff ff ff ff ff ff ff 00 07 00 0a 00 00 00"
                    .to_owned()
            )
        );
        assert!(has_incomplete_versionstamp(&nested));
        assert!(!has_incomplete_versionstamp(&[Versionstamp::complete(
            [0; 10], 0
        )
        .into()]));
    }

    #[test]
    fn pack_with_versionstamp_requires_exactly_one_incomplete_stamp() {
        let complete = Element::from(Versionstamp::complete([0; 10], 1));
        let incomplete = Element::from(Versionstamp::incomplete(1));
        assert_eq!(
            pack_with_versionstamp(&["x".into(), complete]),
            Err(TupleError::NoIncompleteVersionstamp)
        );
        assert_eq!(
            pack_with_versionstamp(&[incomplete.clone(), Element::Tuple(vec![incomplete.clone()])]),
            Err(TupleError::MultipleIncompleteVersionstamps)
        );
        // Plain `pack` writes the placeholder bytes without an offset.
        assert_eq!(pack(&[incomplete]).len(), 1 + Versionstamp::LENGTH);
    }

    #[test]
    fn versionstamp_accessors() {
        let tv = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        let stamp = Versionstamp::complete(tv, 0x0291);
        assert_eq!(stamp.transaction_version(), tv);
        assert_eq!(stamp.user_version(), 657);
        assert!(stamp.is_complete());
        assert_eq!(Versionstamp::from_bytes(*stamp.as_bytes()), stamp);
        let incomplete = Versionstamp::incomplete(9);
        assert!(!incomplete.is_complete());
        assert_eq!(incomplete.user_version(), 9);
        assert!(stamp < incomplete);
    }

    #[test]
    fn conversions_build_the_expected_elements() {
        assert_eq!(Element::from(42), Element::Int(42));
        assert_eq!(Element::from(-7_i8), Element::Int(-7));
        assert_eq!(Element::from(u64::MAX), Element::Int(u64::MAX.into()));
        assert_eq!(Element::from(3_usize), Element::Int(3));
        assert_eq!(Element::from(-3_isize), Element::Int(-3));
        assert_eq!(Element::from("s"), Element::String("s".to_owned()));
        assert_eq!(Element::from(&"s".to_owned()), Element::from("s"));
        assert_eq!(Element::from("s".to_owned()), Element::from("s"));
        assert_eq!(Element::from(vec![1u8]), Element::Bytes(vec![1]));
        assert_eq!(Element::from(&[1u8][..]), Element::Bytes(vec![1]));
        assert_eq!(Element::from(b"ab"), Element::Bytes(b"ab".to_vec()));
        assert_eq!(
            Element::from(bytes::Bytes::from_static(b"ab")),
            Element::Bytes(b"ab".to_vec())
        );
        assert_eq!(Element::from(true), Element::Bool(true));
        assert_eq!(Element::from(1.5_f32), Element::Float(1.5));
        assert_eq!(Element::from(1.5), Element::Double(1.5));
        assert_eq!(Element::from(None::<i64>), Element::Null);
        assert_eq!(Element::from(Some("x")), Element::from("x"));
        assert_eq!(
            Element::from(vec![Element::Null]),
            Element::Tuple(vec![Element::Null])
        );

        let key = pack(&["users".into(), 42.into()]);
        assert_eq!(hex(&key), "02 75 73 65 72 73 00 15 2a");
    }

    #[test]
    fn accessors_return_only_their_own_variant() {
        assert!(Element::Null.is_null());
        assert_eq!(Element::from("s").as_str(), Some("s"));
        assert_eq!(Element::from(b"b").as_bytes(), Some(&b"b"[..]));
        assert_eq!(Element::Int(-1).as_i64(), Some(-1));
        assert_eq!(Element::Int(-1).as_u64(), None);
        assert_eq!(Element::from(u64::MAX).as_i64(), None);
        assert_eq!(Element::from(u64::MAX).as_u64(), Some(u64::MAX));
        assert_eq!(Element::Int(1).as_f64(), None);
        assert_eq!(Element::Double(1.0).as_f64(), Some(1.0));
        assert_eq!(Element::Float(1.0).as_f32(), Some(1.0));
        assert_eq!(Element::Bool(true).as_bool(), Some(true));
        assert_eq!(Element::Uuid([7; 16]).as_uuid(), Some(&[7; 16]));
        let stamp = Versionstamp::incomplete(0);
        assert_eq!(Element::from(stamp).as_versionstamp(), Some(stamp));
        assert_eq!(
            Element::Tuple(vec![Element::Null]).as_tuple(),
            Some(&[Element::Null][..])
        );
        assert_eq!(Element::Null.as_str(), None);
    }

    #[test]
    fn equality_and_hash_follow_the_encoding() {
        use std::collections::hash_map::DefaultHasher;
        fn hash_of(e: &Element) -> u64 {
            let mut h = DefaultHasher::new();
            e.hash(&mut h);
            h.finish()
        }
        let nan = Element::Double(f64::NAN);
        assert_eq!(nan, nan.clone());
        assert_eq!(hash_of(&nan), hash_of(&nan.clone()));
        assert_ne!(Element::Double(0.0), Element::Double(-0.0));
        assert_ne!(Element::Int(1), Element::Double(1.0));
        assert_ne!(Element::Float(1.0), Element::Double(1.0));
        let values = values_in_fdb_order();
        for a in &values {
            for b in &values {
                assert_eq!(a == b, pack_one(a) == pack_one(b));
                if a == b {
                    assert_eq!(hash_of(a), hash_of(b));
                }
            }
        }
    }

    #[test]
    fn errors_display_a_useful_message() {
        let cases = [
            (
                TupleError::Truncated { offset: 3 },
                "tuple data ends inside the element at byte 3",
            ),
            (
                TupleError::UnknownTypeCode {
                    code: 0x03,
                    offset: 0,
                },
                "unknown tuple type code 0x03 at byte 0",
            ),
            (
                TupleError::InvalidUtf8 { offset: 1 },
                "string element at byte 1 is not valid UTF-8",
            ),
            (
                TupleError::IntegerOverflow { offset: 2 },
                "integer element at byte 2 does not fit in an i128",
            ),
            (
                TupleError::NestingTooDeep { offset: 256 },
                "nested tuple at byte 256 exceeds the maximum nesting depth of 256",
            ),
            (
                TupleError::TrailingBytes { offset: 4 },
                "unexpected bytes after the tuple element, starting at byte 4",
            ),
            (
                TupleError::OutsideSubspace,
                "key is not inside the subspace",
            ),
        ];
        for (error, message) in cases {
            assert_eq!(error.to_string(), message);
        }
        let boxed: Box<dyn Error> = Box::new(TupleError::NoIncompleteVersionstamp);
        assert_eq!(
            boxed.to_string(),
            "tuple contains no incomplete versionstamp"
        );
    }
}
