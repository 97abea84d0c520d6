//! Fuzz target bodies and the helpers they share (see docs/fuzzing.md).
//!
//! Each body takes arbitrary bytes and panics only when an invariant of the code under test is
//! broken: a decoder must refuse bad input with an error, never crash or allocate what a length
//! field claims. The cargo-fuzz crate in `fuzz/` calls these functions, and the workspace tests
//! replay every file of `fuzz/corpus/<target>/` through them, so CI checks the corpora on
//! stable Rust without cargo-fuzz.

use std::path::{Path, PathBuf};

use crate::wal::{self, FRAME_HEADER_LEN, FrameCheck};

/// Reads fuzz input as a stream of small decisions; past the end every read yields zero, so
/// any input drives a complete run.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    /// Whether every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte (zero past the end).
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// The next little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// The next little-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// Up to `max` bytes, the count taken from the input.
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let want = usize::from(self.u16()) % (max + 1);
        let n = want.min(self.data.len());
        let (out, rest) = self.data.split_at(n);
        self.data = rest;
        out
    }

    /// Everything not yet consumed.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// A directory for one fuzz run, removed on drop. It lives in `/dev/shm` when there is one,
/// so the fsyncs of the code under test cost nothing and no disk fills up.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates a fresh, empty directory.
    pub fn new() -> ScratchDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let path = base.join(format!(
            "ferrisdb-fuzz-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("scratch dir {}: {e}", path.display()));
        ScratchDir(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for ScratchDir {
    fn default() -> ScratchDir {
        ScratchDir::new()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where the corpus of `target` lives: `fuzz/corpus/<target>/` at the repository root, found
/// from the package cargo is testing (`CARGO_MANIFEST_DIR` as cargo sets it at run time, any
/// crate of the workspace) or else from this crate's own directory. Not only the path compiled
/// in: a target directory shared between checkouts reuses this crate as compiled in another.
pub fn corpus_dir(target: &str) -> PathBuf {
    let at_run_time = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let starts = at_run_time
        .into_iter()
        .chain(std::iter::once(PathBuf::from(env!("CARGO_MANIFEST_DIR"))));
    let corpus = Path::new("fuzz").join("corpus");
    starts
        .flat_map(|start| start.ancestors().map(Path::to_path_buf).collect::<Vec<_>>())
        .map(|dir| dir.join(&corpus))
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(&corpus)
        })
        .join(target)
}

/// Runs `body` on every file of `target`'s corpus and returns how many there were. Panics (the
/// test fails) if the corpus is missing or empty, so losing it cannot pass unnoticed.
pub fn replay_corpus(target: &str, body: impl Fn(&[u8])) -> usize {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("corpus {}: {e}", path.display()));
        eprintln!("replaying {}", path.display());
        body(&data);
    }
    files.len()
}

/// Makes `payload` a frame that passes the length and checksum checks, with the version field
/// (when the payload is long enough to have one) set to where the frame ends if it is written
/// at `begin`: the fuzzer could not find a CRC32C by mutation, so without this it would never
/// get past [`wal::check_frame`].
pub fn seal_frame(begin: u64, payload: &[u8]) -> Vec<u8> {
    let mut payload = payload.to_vec();
    let end = begin
        .wrapping_add(FRAME_HEADER_LEN as u64)
        .wrapping_add(payload.len() as u64);
    if let Some(version) = payload.get_mut(1..9) {
        version.copy_from_slice(&end.to_le_bytes());
    }
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// Target `wal_frames`: the WAL frame checker and decoder ([`wal::check_frame`],
/// [`wal::whole_frames_len`], [`wal::decode_frames`]).
///
/// The first byte picks raw bytes or frames sealed by [`seal_frame`]; the next eight are the
/// LSN the buffer starts at. Invariants: the checker never claims more bytes than there are;
/// a buffer that decodes is made of whole frames; and a decoded record encodes back to exactly
/// the frame it came from (the format is canonical, so nothing is lost or invented).
pub fn wal_frames(data: &[u8]) {
    let mut input = Input::new(data);
    let sealed = input.u8() & 1 == 1;
    let begin = input.u64() >> 8; // far from overflow, as real LSNs are
    let buf = if sealed {
        let mut buf = Vec::new();
        while !input.is_empty() {
            let payload = input.bytes(512);
            let at = begin + buf.len() as u64;
            buf.extend_from_slice(&seal_frame(at, payload));
        }
        buf
    } else {
        input.rest().to_vec()
    };

    if let FrameCheck::Complete { len } = wal::check_frame(&buf) {
        assert!(
            len <= buf.len(),
            "check_frame claims {len} of {} bytes",
            buf.len()
        );
    }
    let whole = wal::whole_frames_len(&buf);
    if let Ok(n) = whole {
        assert!(
            n <= buf.len(),
            "whole_frames_len {n} of {} bytes",
            buf.len()
        );
    }
    if let Ok(records) = wal::decode_frames(&buf, begin) {
        assert_eq!(
            whole.ok(),
            Some(buf.len()),
            "decoded a buffer of partial frames"
        );
        let mut at = begin;
        let mut encoded = Vec::with_capacity(buf.len());
        for r in &records {
            let (frame, version) = wal::encode_frame(at, r.commit_time_micros, &r.mutations);
            assert_eq!(version, r.version, "re-encoded record moved");
            encoded.extend_from_slice(&frame);
            at = version.0;
        }
        assert!(
            encoded == buf,
            "decoded records do not encode back to their frames"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_frames_corpus_replays() {
        replay_corpus("wal_frames", wal_frames);
    }

    #[test]
    fn sealed_frames_decode() {
        // A payload of the right shape, sealed at 100, decodes; the harness relies on it.
        let mut payload = vec![1u8];
        payload.extend_from_slice(&[0; 8]); // version, filled in by seal_frame
        payload.extend_from_slice(&7u64.to_le_bytes());
        payload.extend_from_slice(&0u32.to_le_bytes());
        let frame = seal_frame(100, &payload);
        let records = wal::decode_frames(&frame, 100).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].commit_time_micros, 7);
    }
}
