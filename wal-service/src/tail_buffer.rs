//! The end of a WAL segment written with direct I/O (`O_DIRECT`).
//!
//! A buffered append copies its frames into the page cache and the fdatasync after it walks
//! the cache to write them out: on the virtualised disk this project is measured on, that is
//! about a sixth more time per durable append alone (a third more with two safekeepers'
//! syncs on the disk at once) and two-fifths more CPU than writing the same bytes straight
//! from user memory and then flushing the device's cache
//! (docs/benchmarks/request-path-profile.md, twenty-fourth round). Direct I/O asks for
//! transfers in whole, aligned blocks, so the segment's unfinished last block is kept here, in
//! memory that is itself block-aligned, and every write-out rewrites it from its start.
//! Rewriting the block's front half is safe: those bytes are identical in the old and the new
//! block, so a torn write leaves them as they were (PostgreSQL rewrites its last partial WAL
//! page the same way, and buffered writeback writes whole pages too).
//!
//! Frames appended here are only in memory until [`TailBuffer::write_out`]; the log does that
//! at its sync, so a group commit's several appends reach the device as one transfer.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The transfer unit and alignment for direct I/O: a multiple of every logical block size in
/// common use (512 and 4096 bytes) and of the page size.
pub const BLOCK: usize = 4096;

/// Memory held past a write-out is given back once the buffer grew beyond this (after a large
/// append), so an idle log keeps one block, not its largest transaction.
const KEEP_CAPACITY: usize = 1 << 20;

/// A buffer whose usable part starts at a [`BLOCK`]-aligned address: a `Vec` over-allocated
/// by one block and used from the first aligned byte (no `unsafe` allocation needed).
#[derive(Debug)]
struct Aligned {
    raw: Vec<u8>,
    off: usize,
}

impl Aligned {
    /// At least `capacity` zeroed bytes, rounded up to whole blocks.
    fn zeroed(capacity: usize) -> Aligned {
        let capacity = round_up(capacity.max(BLOCK));
        let raw = vec![0u8; capacity + BLOCK];
        // `align_offset` of a byte pointer is always attainable (below BLOCK). The clamp only
        // keeps a broken promise from indexing past the buffer; the tests check the alignment.
        let off = raw.as_ptr().align_offset(BLOCK).min(BLOCK);
        Aligned { raw, off }
    }

    fn capacity(&self) -> usize {
        round_down(self.raw.len() - self.off)
    }

    fn bytes(&self) -> &[u8] {
        &self.raw[self.off..self.off + self.capacity()]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let cap = self.capacity();
        &mut self.raw[self.off..self.off + cap]
    }
}

/// The bytes of a segment from a block boundary to the log's end: the unfinished block already
/// in the file, then frames not yet written. Every byte of the memory past them is zero, so a
/// write-out pads its last block with zeros, which read as the log's end.
#[derive(Debug)]
pub struct TailBuffer {
    mem: Aligned,
    /// Offset in the segment file of the buffer's first byte: a multiple of [`BLOCK`].
    base: u64,
    /// Bytes held: the segment's `[base, base + len)`.
    len: usize,
    /// Of those, the first `written` are in the file.
    written: usize,
}

impl TailBuffer {
    /// The tail of a segment whose frames end at `seg_len`: the unfinished last block is read
    /// back from the file (through the page cache, which direct writes keep coherent).
    pub fn load(path: &Path, seg_len: u64) -> io::Result<TailBuffer> {
        let base = seg_len - seg_len % BLOCK as u64;
        let len = (seg_len - base) as usize;
        let mut mem = Aligned::zeroed(BLOCK);
        if len > 0 {
            File::open(path)?.read_exact_at(&mut mem.bytes_mut()[..len], base)?;
        }
        Ok(TailBuffer {
            mem,
            base,
            len,
            written: len,
        })
    }

    /// The segment offset where the frames held end.
    pub fn end(&self) -> u64 {
        self.base + self.len as u64
    }

    /// The segment offset up to which the file holds the frames (the rest is in memory only).
    pub fn file_end(&self) -> u64 {
        self.base + self.written as u64
    }

    /// Bytes appended and not yet written out.
    pub fn pending(&self) -> usize {
        self.len - self.written
    }

    /// Appends frames in memory.
    pub fn push(&mut self, frames: &[u8]) {
        let need = self.len + frames.len();
        if need > self.mem.capacity() {
            // Grow to twice what is needed: a run of appends before one sync copies each
            // byte a bounded number of times.
            let mut grown = Aligned::zeroed(need.saturating_mul(2));
            grown.bytes_mut()[..self.len].copy_from_slice(&self.mem.bytes()[..self.len]);
            self.mem = grown;
        }
        self.mem.bytes_mut()[self.len..need].copy_from_slice(frames);
        self.len = need;
    }

    /// Copies the held bytes at segment offset `at` into `out`; they must lie inside
    /// `[file_end, end)` (the frames the file does not hold yet).
    pub fn read_pending(&self, at: u64, out: &mut [u8]) -> io::Result<()> {
        let from = at
            .checked_sub(self.base)
            .map(|o| o as usize)
            .filter(|&o| o >= self.written && o + out.len() <= self.len)
            .ok_or_else(|| io::Error::other("read outside the WAL tail's pending bytes"))?;
        out.copy_from_slice(&self.mem.bytes()[from..from + out.len()]);
        Ok(())
    }

    /// Writes every pending byte to `file` (opened with `O_DIRECT`) in whole blocks, from the
    /// start of the block the file's frames end in, and returns the file offset where that
    /// transfer ended (a block boundary: the file is at least this long afterwards). Nothing
    /// is synced. On error the file may hold any prefix of the transfer; the caller cuts it
    /// back.
    pub fn write_out(&mut self, file: &File) -> io::Result<u64> {
        let from = round_down(self.written);
        let to = round_up(self.len);
        #[cfg(test)]
        if REFUSE_NEXT_TRANSFER.with(|r| r.replace(false)) {
            // As a device that takes the open but not the transfer: the first block lands,
            // then the kernel answers EINVAL.
            file.write_all_at(
                &self.mem.bytes()[from..from + BLOCK],
                self.base + from as u64,
            )?;
            return Err(io::Error::from_raw_os_error(
                nix::errno::Errno::EINVAL as i32,
            ));
        }
        file.write_all_at(&self.mem.bytes()[from..to], self.base + from as u64)?;
        let transfer_end = self.base + to as u64;
        self.written = self.len;
        // Keep only the unfinished last block, at the buffer's start; the bytes it leaves
        // behind are zeroed so the next write-out pads with zeros again.
        let keep_from = round_down(self.len);
        if keep_from > 0 {
            let tail = self.len - keep_from;
            if self.mem.capacity() > KEEP_CAPACITY {
                let mut small = Aligned::zeroed(BLOCK);
                small.bytes_mut()[..tail].copy_from_slice(&self.mem.bytes()[keep_from..self.len]);
                self.mem = small;
            } else {
                let bytes = self.mem.bytes_mut();
                bytes.copy_within(keep_from..self.len, 0);
                bytes[tail..self.len].fill(0);
            }
            self.base += keep_from as u64;
            self.len = tail;
            self.written = tail;
        }
        Ok(transfer_end)
    }
}

#[cfg(test)]
thread_local! {
    /// Set by a test: the next [`TailBuffer::write_out`] on this thread writes one block and
    /// is then refused with EINVAL, as by a device that accepted `O_DIRECT` at open but not
    /// this transfer (no device here does).
    pub static REFUSE_NEXT_TRANSFER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Writes zeros to `file` (opened with `O_DIRECT`) over `[from, to)`, both block boundaries.
pub fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    if to <= from {
        return Ok(());
    }
    let zeros = Aligned::zeroed((to - from) as usize);
    file.write_all_at(&zeros.bytes()[..(to - from) as usize], from)
}

/// `n` rounded down to a whole number of blocks.
pub fn round_down(n: usize) -> usize {
    n - n % BLOCK
}

/// `n` rounded up to a whole number of blocks.
pub fn round_up(n: usize) -> usize {
    n.div_ceil(BLOCK) * BLOCK
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    fn direct(path: &Path) -> File {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
            .open(path)
            .unwrap()
    }

    #[test]
    fn memory_is_block_aligned_whatever_the_allocator_returns() {
        for size in [1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 17, 1 << 20] {
            let a = Aligned::zeroed(size);
            assert_eq!(a.bytes().as_ptr() as usize % BLOCK, 0);
            assert!(a.capacity() >= size && a.capacity().is_multiple_of(BLOCK));
            assert!(a.bytes().iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn appends_reach_the_file_whole_and_padded_with_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let file = direct(&path);
        let mut tail = TailBuffer::load(&path, 0).unwrap();
        let mut expect = Vec::new();
        // Sizes that end mid-block, exactly on a block and across several blocks.
        for (n, size) in [
            (1u8, 100usize),
            (2, BLOCK - 100),
            (3, 5000),
            (4, 3 * BLOCK),
            (5, 7),
        ] {
            let frames = vec![n; size];
            tail.push(&frames);
            expect.extend_from_slice(&frames);
            assert_eq!(tail.pending(), size);
            let mut echo = vec![0; size];
            tail.read_pending(tail.file_end(), &mut echo).unwrap();
            assert_eq!(echo, frames, "pending bytes read back before the write-out");
            let end = tail.write_out(&file).unwrap();
            assert_eq!(end, round_up(expect.len()) as u64);
            assert_eq!(
                (tail.end(), tail.file_end()),
                (expect.len() as u64, expect.len() as u64)
            );
            let on_disk = std::fs::read(&path).unwrap();
            assert_eq!(&on_disk[..expect.len()], &expect[..]);
            assert!(on_disk[expect.len()..].iter().all(|&b| b == 0));
        }
        // Reloaded from the file, the tail continues where it was.
        let mut again = TailBuffer::load(&path, expect.len() as u64).unwrap();
        again.push(b"more");
        again.write_out(&file).unwrap();
        expect.extend_from_slice(b"more");
        assert_eq!(&std::fs::read(&path).unwrap()[..expect.len()], &expect[..]);
    }

    #[test]
    fn a_large_append_gives_its_memory_back_after_the_write_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let file = direct(&path);
        let mut tail = TailBuffer::load(&path, 0).unwrap();
        let big = vec![9u8; 4 * KEEP_CAPACITY + 123];
        tail.push(&big);
        tail.write_out(&file).unwrap();
        assert!(tail.mem.capacity() <= KEEP_CAPACITY);
        assert_eq!(tail.end(), big.len() as u64);
        tail.push(&[7]);
        tail.write_out(&file).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[..big.len()], &big[..]);
        assert_eq!(on_disk[big.len()], 7);
        assert!(on_disk[big.len() + 1..].iter().all(|&b| b == 0));
    }

    #[test]
    fn reads_outside_the_pending_bytes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let mut tail = TailBuffer::load(&path.with_extension("none"), 0).unwrap();
        tail.push(&[1, 2, 3]);
        let mut out = [0u8; 4];
        assert!(tail.read_pending(0, &mut out).is_err(), "past the end");
        let mut out = [0u8; 3];
        tail.read_pending(0, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3]);
    }
}
