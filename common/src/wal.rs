//! The WAL record codec: length-framed, CRC32C-checked commit records.
//!
//! A frame is `[payload_len: u32 LE][crc32c(payload): u32 LE][payload]`. The payload is
//!
//! ```text
//! format: u8 (= 1) | version: u64 | commit_time_micros: u64 | count: u32 | mutation*
//! mutation = op: u8 | key_len: u32 | key | param_len: u32 | param
//! ```
//!
//! all little-endian. One frame carries one commit batch; `version` is the LSN just past the
//! frame, so a decoder that knows where a frame starts can check the frame is where its
//! writer meant it to be. See docs/wal-protocol.md.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::version::{Lsn, Version};

/// Bytes before a frame's payload: length and checksum.
pub const FRAME_HEADER_LEN: usize = 8;
/// Payloads larger than this are taken as a corrupt length field, never allocated.
pub const MAX_FRAME_PAYLOAD: usize = 256 << 20;
const FORMAT_V1: u8 = 1;
const PAYLOAD_FIXED_LEN: usize = 1 + 8 + 8 + 4;
const OP_SET: u8 = 1;
const OP_CLEAR: u8 = 2;
const OP_CLEAR_RANGE: u8 = 3;

/// One change to one key, as the log stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Store `value` at `key`.
    Set {
        /// The key.
        key: Bytes,
        /// Its new value.
        value: Bytes,
    },
    /// Remove `key`.
    Clear {
        /// The key.
        key: Bytes,
    },
    /// Remove every key in `[begin, end)`: a range tombstone.
    ClearRange {
        /// First key removed.
        begin: Bytes,
        /// First key past the range.
        end: Bytes,
    },
}

impl Mutation {
    /// The key this mutation writes; for a range clear, the first key of the range.
    pub fn key(&self) -> &Bytes {
        match self {
            Mutation::Set { key, .. } | Mutation::Clear { key } => key,
            Mutation::ClearRange { begin, .. } => begin,
        }
    }

    /// The value it leaves behind: `None` for a clear.
    pub fn value(&self) -> Option<&Bytes> {
        match self {
            Mutation::Set { value, .. } => Some(value),
            Mutation::Clear { .. } | Mutation::ClearRange { .. } => None,
        }
    }

    /// The half-open key range it writes (one key: `[key, key\0)`).
    pub fn range(&self) -> (Bytes, Bytes) {
        match self {
            Mutation::ClearRange { begin, end } => (begin.clone(), end.clone()),
            Mutation::Set { key, .. } | Mutation::Clear { key } => {
                let mut end = Vec::with_capacity(key.len() + 1);
                end.extend_from_slice(key);
                end.push(0);
                (key.clone(), Bytes::from(end))
            }
        }
    }

    /// The op code and parameter as the log stores them.
    fn encoded_parts(&self) -> (u8, &[u8]) {
        match self {
            Mutation::Set { value, .. } => (OP_SET, &value[..]),
            Mutation::Clear { .. } => (OP_CLEAR, &[][..]),
            Mutation::ClearRange { end, .. } => (OP_CLEAR_RANGE, &end[..]),
        }
    }

    fn encoded_len(&self) -> usize {
        1 + 4 + self.key().len() + 4 + self.encoded_parts().1.len()
    }
}

/// A decoded commit record: every mutation of one commit batch, at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecord {
    /// The commit version, which is also the LSN just past this record's frame.
    pub version: Version,
    /// When the batch committed, in Unix microseconds.
    pub commit_time_micros: u64,
    /// The batch's mutations, in the order they apply.
    pub mutations: Vec<Mutation>,
}

/// Encodes one frame to be written at `begin`, returning the frame and the version it carries
/// (`begin` plus the frame's length).
pub fn encode_frame(
    begin: Lsn,
    commit_time_micros: u64,
    mutations: &[Mutation],
) -> (Bytes, Version) {
    let payload_len =
        PAYLOAD_FIXED_LEN + mutations.iter().map(Mutation::encoded_len).sum::<usize>();
    let version = Version(begin + (FRAME_HEADER_LEN + payload_len) as u64);
    let mut buf = BytesMut::with_capacity(FRAME_HEADER_LEN + payload_len);
    buf.put_u32_le(payload_len as u32);
    buf.put_u32_le(0); // checksum, filled in below
    buf.put_u8(FORMAT_V1);
    buf.put_u64_le(version.0);
    buf.put_u64_le(commit_time_micros);
    buf.put_u32_le(mutations.len() as u32);
    for m in mutations {
        let (op, param) = m.encoded_parts();
        buf.put_u8(op);
        buf.put_u32_le(m.key().len() as u32);
        buf.put_slice(m.key());
        buf.put_u32_le(param.len() as u32);
        buf.put_slice(param);
    }
    let crc = crc32c::crc32c(&buf[FRAME_HEADER_LEN..]);
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    (buf.freeze(), version)
}

/// What lies at the start of a buffer that should begin with a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameCheck {
    /// A whole frame of `len` bytes (header included) with a good checksum.
    Complete {
        /// Frame length including the header.
        len: usize,
    },
    /// The buffer ends inside the frame: a torn write at the tail of a log.
    Incomplete,
    /// The bytes cannot be a frame: a bad length or checksum.
    Corrupt(String),
}

/// Checks the frame at the start of `buf` without decoding its payload.
pub fn check_frame(buf: &[u8]) -> FrameCheck {
    if buf.len() < FRAME_HEADER_LEN {
        return FrameCheck::Incomplete;
    }
    let payload_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(PAYLOAD_FIXED_LEN..=MAX_FRAME_PAYLOAD).contains(&payload_len) {
        return FrameCheck::Corrupt(format!("impossible payload length {payload_len}"));
    }
    let len = FRAME_HEADER_LEN + payload_len;
    if buf.len() < len {
        return FrameCheck::Incomplete;
    }
    let want = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let got = crc32c::crc32c(&buf[FRAME_HEADER_LEN..len]);
    if want != got {
        return FrameCheck::Corrupt(format!("checksum {got:#010x}, expected {want:#010x}"));
    }
    FrameCheck::Complete { len }
}

/// Splits `buf` (starting at LSN `begin`) into whole frames, returning the length of the
/// prefix made of whole frames. Errors on corruption; a trailing partial frame is not counted.
pub fn whole_frames_len(buf: &[u8]) -> Result<usize> {
    let mut at = 0;
    loop {
        match check_frame(&buf[at..]) {
            FrameCheck::Complete { len } => at += len,
            FrameCheck::Incomplete => return Ok(at),
            FrameCheck::Corrupt(why) => {
                return Err(Error::corruption(format!("frame at offset {at}: {why}")));
            }
        }
    }
}

/// Decodes every frame of `buf`, which starts at LSN `begin` and must hold whole frames only.
/// Each record's version is checked against where its frame ends.
pub fn decode_frames(buf: &[u8], begin: Lsn) -> Result<Vec<WalRecord>> {
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < buf.len() {
        let len = match check_frame(&buf[at..]) {
            FrameCheck::Complete { len } => len,
            FrameCheck::Incomplete => {
                return Err(Error::corruption(format!(
                    "partial frame at LSN {}",
                    begin + at as u64
                )));
            }
            FrameCheck::Corrupt(why) => {
                return Err(Error::corruption(format!(
                    "frame at LSN {}: {why}",
                    begin + at as u64
                )));
            }
        };
        let record = decode_payload(&buf[at + FRAME_HEADER_LEN..at + len])?;
        let end = begin + (at + len) as u64;
        if record.version.0 != end {
            return Err(Error::corruption(format!(
                "record ending at LSN {end} claims version {}",
                record.version
            )));
        }
        records.push(record);
        at += len;
    }
    Ok(records)
}

fn decode_payload(mut p: &[u8]) -> Result<WalRecord> {
    let short = || Error::corruption("record payload ends early");
    if p.remaining() < PAYLOAD_FIXED_LEN {
        return Err(short());
    }
    let format = p.get_u8();
    if format != FORMAT_V1 {
        return Err(Error::corruption(format!("unknown record format {format}")));
    }
    let version = Version(p.get_u64_le());
    let commit_time_micros = p.get_u64_le();
    let count = p.get_u32_le() as usize;
    let mut mutations = Vec::with_capacity(count.min(p.remaining() / 9));
    for _ in 0..count {
        if p.remaining() < 5 {
            return Err(short());
        }
        let op = p.get_u8();
        let key = take(&mut p)?;
        let param = take(&mut p)?;
        mutations.push(match op {
            OP_SET => Mutation::Set { key, value: param },
            // The writer never gives a clear a parameter: bytes it would drop are damage.
            OP_CLEAR if param.is_empty() => Mutation::Clear { key },
            OP_CLEAR => return Err(Error::corruption("a clear with a parameter")),
            OP_CLEAR_RANGE => Mutation::ClearRange {
                begin: key,
                end: param,
            },
            other => return Err(Error::corruption(format!("unknown mutation op {other}"))),
        });
    }
    if p.has_remaining() {
        return Err(Error::corruption("trailing bytes after the last mutation"));
    }
    Ok(WalRecord {
        version,
        commit_time_micros,
        mutations,
    })
}

fn take(p: &mut &[u8]) -> Result<Bytes> {
    if p.remaining() < 4 {
        return Err(Error::corruption("record payload ends early"));
    }
    let len = p.get_u32_le() as usize;
    if p.remaining() < len {
        return Err(Error::corruption("record payload ends early"));
    }
    let out = Bytes::copy_from_slice(&p[..len]);
    p.advance(len);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Mutation> {
        vec![
            Mutation::Set {
                key: Bytes::from_static(b"hello"),
                value: Bytes::from_static(b"world"),
            },
            Mutation::Clear {
                key: Bytes::from_static(b"gone"),
            },
            Mutation::Set {
                key: Bytes::from_static(b""),
                value: Bytes::from(vec![0u8; 1000]),
            },
            Mutation::ClearRange {
                begin: Bytes::from_static(b"a"),
                end: Bytes::from_static(b"m"),
            },
        ]
    }

    #[test]
    fn frames_round_trip_with_version_at_their_end() {
        let (f1, v1) = encode_frame(100, 7, &sample());
        let (f2, v2) = encode_frame(v1.0, 8, &sample()[..1]);
        assert_eq!(v1.0, 100 + f1.len() as u64);
        assert_eq!(v2.0, v1.0 + f2.len() as u64);
        let mut buf = f1.to_vec();
        buf.extend_from_slice(&f2);
        let records = decode_frames(&buf, 100).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].version, v1);
        assert_eq!(records[0].commit_time_micros, 7);
        assert_eq!(records[0].mutations, sample());
        assert_eq!(records[1].version, v2);
        assert_eq!(records[1].mutations, sample()[..1].to_vec());
    }

    #[test]
    fn a_frame_decoded_at_the_wrong_position_is_rejected() {
        let (f, _) = encode_frame(100, 7, &sample());
        let e = decode_frames(&f, 101).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Corruption);
    }

    #[test]
    fn torn_tail_is_incomplete_and_flipped_byte_is_corrupt() {
        let (f, _) = encode_frame(0, 1, &sample());
        for cut in 0..f.len() {
            assert_eq!(
                check_frame(&f[..cut]),
                FrameCheck::Incomplete,
                "cut at {cut}"
            );
        }
        assert_eq!(check_frame(&f), FrameCheck::Complete { len: f.len() });
        for i in FRAME_HEADER_LEN..f.len() {
            let mut bad = f.to_vec();
            bad[i] ^= 0x40;
            assert!(
                matches!(check_frame(&bad), FrameCheck::Corrupt(_)),
                "flip at {i}"
            );
        }
    }

    // Found by fuzzing (docs/fuzzing.md): a clear carrying a parameter decoded, silently
    // dropping bytes, so decoding was not the inverse of encoding.
    #[test]
    fn a_clear_with_a_parameter_is_corruption() {
        let mut payload = vec![FORMAT_V1];
        payload.extend_from_slice(&0u64.to_le_bytes());
        payload.extend_from_slice(&0u64.to_le_bytes());
        payload.extend_from_slice(&1u32.to_le_bytes());
        payload.push(OP_CLEAR);
        payload.extend_from_slice(&1u32.to_le_bytes());
        payload.push(b'k');
        payload.extend_from_slice(&1u32.to_le_bytes());
        payload.push(b'x');
        let frame = crate::fuzzing::seal_frame(0, &payload);
        let e = decode_frames(&frame, 0).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Corruption);
    }

    #[test]
    fn whole_frames_len_stops_before_a_torn_tail() {
        let (f1, v1) = encode_frame(0, 1, &sample());
        let (f2, _) = encode_frame(v1.0, 2, &sample());
        let mut buf = f1.to_vec();
        buf.extend_from_slice(&f2[..f2.len() - 3]);
        assert_eq!(whole_frames_len(&buf).unwrap(), f1.len());
        buf[3] = 0xFF; // impossible length in the first frame
        assert!(whole_frames_len(&buf).is_err());
    }
}
