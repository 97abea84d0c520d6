//! Delta layers: immutable sorted files of (key, version) → value or tombstone covering the
//! versions `(start, end]`, stored in object storage.
//!
//! Format (little-endian; see docs/storage-format.md):
//!
//! ```text
//! "FDBDELTA" | format: u32 = 2 | start: u64 | end: u64 | count: u64
//! entry* = key_len: u32 | key | version: u64 | kind: u8 (0 tombstone, 1 value) | val_len: u32 | val
//! times: u64 | (version: u64 | commit_time_micros: u64)*
//! crc32c of everything above: u32 | "FDBDELTA"
//! ```
//!
//! The commit-time section lists every commit in the layer's versions, so a pageserver rebuilt
//! from the bucket still maps timestamps to versions. Format 1 (no such section) still loads.
//!
//! Entries are sorted by key, then version. The whole file is checksummed; a damaged layer is
//! refused, never half-read.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ferrisdb_common::{Error, Result, Version};

use ferrisdb_common::versioned_map::VersionedMap;

const MAGIC: &[u8; 8] = b"FDBDELTA";
const FORMAT: u32 = 2;
const HEADER_LEN: usize = 8 + 4 + 8 + 8 + 8;
const FOOTER_LEN: usize = 4 + 8;

/// A loaded delta layer.
#[derive(Debug)]
pub struct DeltaLayer {
    /// Versions strictly above this are covered.
    pub start: Version,
    /// Versions up to and including this are covered.
    pub end: Version,
    /// The entries.
    pub data: VersionedMap,
    /// Commit times of the versions in `(start, end]`.
    pub times: Vec<(Version, u64)>,
}

/// The object name of the layer covering `(start, end]` (names sort by version).
pub fn layer_name(start: Version, end: Version) -> String {
    format!("{:016X}-{:016X}.delta", start.0, end.0)
}

/// Serializes a layer with the commit times of its versions.
pub fn encode(
    start: Version,
    end: Version,
    data: &VersionedMap,
    times: &[(Version, u64)],
) -> Bytes {
    let mut buf = BytesMut::with_capacity(HEADER_LEN + data.approximate_bytes() + FOOTER_LEN);
    buf.put_slice(MAGIC);
    buf.put_u32_le(FORMAT);
    buf.put_u64_le(start.0);
    buf.put_u64_le(end.0);
    buf.put_u64_le(data.len() as u64);
    for (key, version, value) in data.iter() {
        buf.put_u32_le(key.len() as u32);
        buf.put_slice(key);
        buf.put_u64_le(version.0);
        match value {
            Some(v) => {
                buf.put_u8(1);
                buf.put_u32_le(v.len() as u32);
                buf.put_slice(v);
            }
            None => {
                buf.put_u8(0);
                buf.put_u32_le(0);
            }
        }
    }
    buf.put_u64_le(times.len() as u64);
    for (v, t) in times {
        buf.put_u64_le(v.0);
        buf.put_u64_le(*t);
    }
    let crc = crc32c::crc32c(&buf);
    buf.put_u32_le(crc);
    buf.put_slice(MAGIC);
    buf.freeze()
}

/// Parses and verifies a layer.
pub fn decode(bytes: &[u8]) -> Result<DeltaLayer> {
    let bad = |why: &str| Error::corruption(format!("delta layer: {why}"));
    if bytes.len() < HEADER_LEN + FOOTER_LEN {
        return Err(bad("too short"));
    }
    let body_len = bytes.len() - FOOTER_LEN;
    let (body, mut footer) = bytes.split_at(body_len);
    let crc = footer.get_u32_le();
    if footer != MAGIC || &body[..8] != MAGIC {
        return Err(bad("bad magic"));
    }
    if crc32c::crc32c(body) != crc {
        return Err(bad("checksum mismatch"));
    }
    let mut p = &body[8..];
    let format = p.get_u32_le();
    if format != 1 && format != FORMAT {
        return Err(bad("unknown format"));
    }
    let start = Version(p.get_u64_le());
    let end = Version(p.get_u64_le());
    let count = p.get_u64_le();
    let mut data = VersionedMap::default();
    for _ in 0..count {
        let key = take(&mut p).ok_or_else(|| bad("truncated entry"))?;
        if p.remaining() < 9 {
            return Err(bad("truncated entry"));
        }
        let version = Version(p.get_u64_le());
        let kind = p.get_u8();
        let value = take(&mut p).ok_or_else(|| bad("truncated entry"))?;
        if version <= start || version > end {
            return Err(bad("entry outside the layer's versions"));
        }
        data.insert(key, version, (kind == 1).then_some(value));
    }
    let mut times = Vec::new();
    if format >= 2 {
        if p.remaining() < 8 {
            return Err(bad("truncated commit times"));
        }
        let n = p.get_u64_le();
        if (p.remaining() as u64) < n.saturating_mul(16) {
            return Err(bad("truncated commit times"));
        }
        for _ in 0..n {
            times.push((Version(p.get_u64_le()), p.get_u64_le()));
        }
    }
    if p.has_remaining() {
        return Err(bad("trailing bytes"));
    }
    Ok(DeltaLayer {
        start,
        end,
        data,
        times,
    })
}

fn take(p: &mut &[u8]) -> Option<Bytes> {
    if p.remaining() < 4 {
        return None;
    }
    let len = p.get_u32_le() as usize;
    if p.remaining() < len {
        return None;
    }
    let out = Bytes::copy_from_slice(&p[..len]);
    p.advance(len);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrisdb_common::versioned_map::Lookup;

    #[test]
    fn round_trips_and_refuses_damage() {
        let mut m = VersionedMap::default();
        m.insert(
            Bytes::from_static(b"k1"),
            Version(11),
            Some(Bytes::from_static(b"v1")),
        );
        m.insert(Bytes::from_static(b"k1"), Version(12), None);
        m.insert(
            Bytes::from_static(b"k2"),
            Version(12),
            Some(Bytes::from_static(b"")),
        );
        let enc = encode(
            Version(10),
            Version(12),
            &m,
            &[(Version(11), 5), (Version(12), 6)],
        );
        let layer = decode(&enc).unwrap();
        assert_eq!((layer.start, layer.end), (Version(10), Version(12)));
        assert_eq!(layer.data.len(), 3);
        assert_eq!(layer.times, vec![(Version(11), 5), (Version(12), 6)]);
        assert_eq!(
            layer.data.get(b"k1", Version(11)),
            Lookup::Found(Some(Bytes::from_static(b"v1")))
        );
        assert_eq!(layer.data.get(b"k1", Version(12)), Lookup::Found(None));
        assert_eq!(
            layer.data.get(b"k2", Version(12)),
            Lookup::Found(Some(Bytes::new()))
        );
        for i in [0, 9, HEADER_LEN + 3, enc.len() - 5] {
            let mut bad = enc.to_vec();
            bad[i] ^= 1;
            assert!(decode(&bad).is_err(), "flip at {i} accepted");
        }
        assert!(decode(&enc[..enc.len() - 1]).is_err());
    }
}
