//! The log itself: segment files of framed, checksummed records.
//!
//! A segment is named by the LSN of its first byte (`{lsn:016X}.seg`) and holds whole frames
//! only; a new segment starts once the current one passes [`SEGMENT_TARGET_SIZE`]. On open, the
//! tail of the last segment is scanned and a torn final record (a crash mid-write) is cut off.
//! An append is durable when [`WalLog::append`] returns: it is written and fdatasynced.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ferrisdb_common::wal::{self, FRAME_HEADER_LEN, FrameCheck};
use ferrisdb_common::{Error, Lsn, Result};

use crate::control::sync_dir;

/// By default a segment is closed and a new one begun once it reaches this size.
pub const SEGMENT_TARGET_SIZE: u64 = 16 << 20;

#[derive(Debug)]
struct Segment {
    start: Lsn,
    len: u64,
    path: PathBuf,
}

/// One database's log on disk.
#[derive(Debug)]
pub struct WalLog {
    dir: PathBuf,
    segments: Vec<Segment>,
    /// Append handle on the last segment.
    tail: Option<File>,
    start_lsn: Lsn,
    /// The end of what has been written (synced or not).
    flush_lsn: Lsn,
    /// The end of what an fdatasync has made durable: everything acknowledged lies below.
    synced_lsn: Lsn,
    /// Written but not yet synced.
    dirty: bool,
    /// A new segment starts once the current one reaches this size.
    segment_size: u64,
    /// Set when a failed write or sync could not be undone: the files may no longer match
    /// the positions in memory, so nothing more is written until the log is opened again
    /// (open checks every frame).
    failed: Option<String>,
}

/// What [`WalLog::open`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes cut off the tail because they did not form a whole, valid frame.
    pub truncated_bytes: u64,
    /// The LSN of the first damaged frame, when one lies before valid data.
    pub damage: Option<Lsn>,
}

impl WalLog {
    /// Opens the log in `dir`, whose first LSN is `start_lsn` when it holds no segment.
    /// Cuts a torn or damaged record off the tail, reporting how much went; the caller
    /// decides whether that much could be lost (it must lie above the commit position).
    pub fn open(dir: &Path, start_lsn: Lsn) -> Result<(WalLog, Recovery)> {
        fs::create_dir_all(dir)?;
        let mut segments = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(hex) = name.strip_suffix(".seg") else {
                continue;
            };
            let start = Lsn::from_str_radix(hex, 16)
                .map_err(|_| Error::corruption(format!("odd segment name {name}")))?;
            segments.push(Segment {
                start,
                len: entry.metadata()?.len(),
                path: entry.path(),
            });
        }
        segments.sort_by_key(|s| s.start);
        // A segment must end inside the LSN space; every position computed below then fits.
        if let Some(s) = segments
            .iter()
            .find(|s| s.start.checked_add(s.len).is_none())
        {
            return Err(Error::corruption(format!(
                "segment {} runs past the largest LSN",
                s.path.display()
            )));
        }
        for pair in segments.windows(2) {
            if pair[0].start + pair[0].len != pair[1].start {
                return Err(Error::corruption(format!(
                    "segments {} and {} do not meet",
                    pair[0].path.display(),
                    pair[1].path.display()
                )));
            }
        }
        let mut recovery = Recovery {
            truncated_bytes: 0,
            damage: None,
        };
        // Every frame of every segment is checked. A bad frame with nothing valid after it at
        // the end of the log is a torn write (its fdatasync never returned, so it was never
        // acknowledged) and is cut off; the caller still refuses a cut below the commit
        // position. A bad frame anywhere else is damage: kept as it is, never served.
        let count = segments.len();
        for (i, seg) in segments.iter_mut().enumerate() {
            let bytes = fs::read(&seg.path)?;
            let valid = valid_prefix(&bytes);
            if valid == bytes.len() {
                continue;
            }
            let at = seg.start + valid as u64;
            let is_tail = i + 1 == count && !valid_frame_follows(&bytes[valid..], at);
            if is_tail {
                recovery.truncated_bytes = seg.len - valid as u64;
                let f = OpenOptions::new().write(true).open(&seg.path)?;
                f.set_len(valid as u64)?;
                f.sync_all()?;
                seg.len = valid as u64;
            } else {
                recovery.damage = Some(at);
                break;
            }
        }
        let start = segments.first().map_or(start_lsn, |s| s.start);
        let flush = segments.last().map_or(start_lsn, |s| s.start + s.len);
        let tail = match segments.last() {
            Some(s) => Some(OpenOptions::new().append(true).open(&s.path)?),
            None => None,
        };
        Ok((
            WalLog {
                dir: dir.to_path_buf(),
                segments,
                tail,
                start_lsn: start,
                flush_lsn: flush,
                synced_lsn: flush,
                dirty: false,
                segment_size: SEGMENT_TARGET_SIZE,
                failed: None,
            },
            recovery,
        ))
    }

    /// Sets the size at which new segments are started.
    pub fn set_segment_size(&mut self, bytes: u64) {
        self.segment_size = bytes.max(1);
    }

    /// Deletes every whole segment that ends at or below `lsn`, except the last one (the log
    /// always keeps its tail), and returns the new first LSN.
    pub fn trim(&mut self, lsn: Lsn) -> Result<Lsn> {
        let keep_from = self
            .segments
            .iter()
            .position(|s| s.start + s.len > lsn)
            .unwrap_or(self.segments.len())
            .min(self.segments.len().saturating_sub(1));
        if keep_from == 0 {
            return Ok(self.start_lsn);
        }
        for s in self.segments.drain(..keep_from) {
            fs::remove_file(&s.path)?;
        }
        sync_dir(&self.dir)?;
        self.start_lsn = self.segments.first().map_or(self.flush_lsn, |s| s.start);
        Ok(self.start_lsn)
    }

    /// The size at which new segments are started.
    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    /// Bytes of WAL held on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// The first LSN held.
    pub fn start_lsn(&self) -> Lsn {
        self.start_lsn
    }

    /// The end of the durable log.
    pub fn flush_lsn(&self) -> Lsn {
        self.flush_lsn
    }

    /// Appends whole frames at the end of the log and fdatasyncs them.
    pub fn append(&mut self, frames: &[u8]) -> Result<Lsn> {
        self.write(frames)?;
        self.sync()?;
        Ok(self.flush_lsn)
    }

    /// Writes whole frames at the end of the log without syncing: several writes can share
    /// one [`WalLog::sync`] (group commit). Nothing written is durable, or may be acknowledged,
    /// before that sync.
    ///
    /// A write that fails (a full disk) may have put part of `frames` in the file; that part
    /// is cut off again before the error is returned, so the file always ends where the log
    /// says it does and the next append lands at the right offset.
    pub fn write(&mut self, frames: &[u8]) -> Result<Lsn> {
        self.check_usable()?;
        if frames.is_empty() {
            return Ok(self.flush_lsn);
        }
        let need_new = match self.segments.last() {
            None => true,
            Some(s) => s.len >= self.segment_size,
        };
        if need_new {
            self.start_segment()?;
        }
        let (Some(tail), Some(seg)) = (self.tail.as_mut(), self.segments.last_mut()) else {
            return Err(Error::internal("log has no tail segment"));
        };
        if let Err(e) = tail.write_all(frames) {
            let written = seg.len;
            self.cut_tail_to(written);
            return Err(e.into());
        }
        self.dirty = true;
        seg.len += frames.len() as u64;
        self.flush_lsn += frames.len() as u64;
        Ok(self.flush_lsn)
    }

    /// Makes every write so far durable (fdatasync of the tail segment).
    ///
    /// After a failed fdatasync the kernel may already have dropped the unsynced pages and
    /// would report the next fdatasync as a success, so a retry proves nothing: the writes
    /// since the last successful sync (none of them acknowledged) are cut off instead, and
    /// the log ends where it last was durable.
    pub fn sync(&mut self) -> Result<()> {
        self.check_usable()?;
        if self.dirty {
            if let Some(tail) = &self.tail
                && let Err(e) = tail.sync_data()
            {
                // Unsynced writes all lie in the tail segment: a new segment is begun only
                // after a sync.
                let keep = self
                    .segments
                    .last()
                    .map_or(0, |s| self.synced_lsn.saturating_sub(s.start));
                self.cut_tail_to(keep);
                return Err(e.into());
            }
            self.dirty = false;
        }
        self.synced_lsn = self.flush_lsn;
        Ok(())
    }

    /// Cuts the tail segment's file back to `len` bytes and makes that durable, after a failed
    /// write or sync; the log's positions follow. If even that fails, the log refuses all
    /// further writes until it is opened again.
    fn cut_tail_to(&mut self, len: u64) {
        let result = (|| -> std::io::Result<()> {
            let seg = self
                .segments
                .last()
                .ok_or_else(|| std::io::Error::other("no tail segment"))?;
            let f = OpenOptions::new().write(true).open(&seg.path)?;
            f.set_len(len)?;
            f.sync_all()
        })();
        match result {
            Ok(()) => {
                if let Some(seg) = self.segments.last_mut() {
                    seg.len = len;
                    self.flush_lsn = seg.start + len;
                }
                // sync_all made everything the file now holds durable.
                self.synced_lsn = self.flush_lsn;
                self.dirty = false;
            }
            Err(e) => {
                self.failed = Some(format!(
                    "the tail segment could not be cut back after a failed write: {e}"
                ));
            }
        }
    }

    /// Refuses writes to a log whose files may not match its positions.
    fn check_usable(&self) -> Result<()> {
        match &self.failed {
            None => Ok(()),
            Some(why) => Err(Error::unavailable(format!(
                "WAL log in {} is out of service until the safekeeper restarts: {why}",
                self.dir.display()
            ))),
        }
    }

    fn start_segment(&mut self) -> Result<()> {
        // The segment being closed must be durable before writes move on to the next.
        self.sync()?;
        let path = self.dir.join(format!("{:016X}.seg", self.flush_lsn));
        let f = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            start: self.flush_lsn,
            len: 0,
            path,
        });
        self.tail = Some(f);
        Ok(())
    }

    /// Cuts the log back to end at `lsn` (a frame boundary at or above the log start).
    pub fn truncate(&mut self, lsn: Lsn) -> Result<()> {
        if lsn >= self.flush_lsn {
            return Ok(());
        }
        if lsn < self.start_lsn {
            return Err(Error::internal(format!(
                "truncate to {lsn} below the log start {}",
                self.start_lsn
            )));
        }
        while let Some(last) = self.segments.last() {
            if last.start < lsn || (last.start == lsn && self.segments.len() == 1) {
                break;
            }
            fs::remove_file(&last.path)?;
            self.segments.pop();
        }
        if let Some(last) = self.segments.last_mut() {
            let f = OpenOptions::new().write(true).open(&last.path)?;
            f.set_len(lsn - last.start)?;
            f.sync_all()?;
            last.len = lsn - last.start;
            self.tail = Some(OpenOptions::new().append(true).open(&last.path)?);
        } else {
            self.tail = None;
        }
        sync_dir(&self.dir)?;
        self.flush_lsn = lsn;
        // The cut segment was synced whole; any segment before it was synced when the next
        // one began.
        self.synced_lsn = lsn;
        self.dirty = false;
        Ok(())
    }

    /// Drops every segment and starts an empty log at `lsn`: used when everything below `lsn`
    /// is durable in object storage and this log's contents diverge from or precede it.
    pub fn reset(&mut self, lsn: Lsn) -> Result<()> {
        for s in self.segments.drain(..) {
            fs::remove_file(&s.path)?;
        }
        sync_dir(&self.dir)?;
        self.tail = None;
        self.start_lsn = lsn;
        self.flush_lsn = lsn;
        self.synced_lsn = lsn;
        self.dirty = false;
        Ok(())
    }

    /// Reads whole frames from `start` (a frame boundary) towards `end`, at most about
    /// `max_bytes` of them but always at least one frame when one is there.
    pub fn read(&self, start: Lsn, end: Lsn, max_bytes: usize) -> Result<Vec<u8>> {
        let end = end.min(self.flush_lsn);
        if start < self.start_lsn {
            return Err(Error::new(
                ferrisdb_common::ErrorKind::VersionTooOld,
                format!("LSN {start} is below the log start {}", self.start_lsn),
            ));
        }
        if start >= end {
            return Ok(Vec::new());
        }
        let want = ((end - start) as usize).min(max_bytes.max(FRAME_HEADER_LEN));
        let mut buf = self.read_raw(start, want)?;
        let mut whole = wal::whole_frames_len(&buf)?;
        if whole == 0 {
            // The first frame is larger than `max_bytes`: read exactly that frame.
            let len = match wal::check_frame(&self.read_raw(start, FRAME_HEADER_LEN)?) {
                FrameCheck::Corrupt(why) => {
                    return Err(Error::corruption(format!("frame at LSN {start}: {why}")));
                }
                _ => {
                    let h = self.read_raw(start, 4)?;
                    FRAME_HEADER_LEN + u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize
                }
            };
            buf = self.read_raw(start, len)?;
            whole = wal::whole_frames_len(&buf)?;
            if whole != len {
                return Err(Error::corruption(format!(
                    "frame at LSN {start} is damaged"
                )));
            }
        }
        buf.truncate(whole);
        Ok(buf)
    }

    /// Exactly the bytes `[start, start + len)`, which must lie inside the log held (used to
    /// compare a re-sent append with what is already on disk).
    pub fn read_exact(&self, start: Lsn, len: u64) -> Result<Vec<u8>> {
        let end = start.checked_add(len);
        if start < self.start_lsn || end.is_none_or(|e| e > self.flush_lsn) {
            return Err(Error::internal(format!(
                "[{start}, +{len}) is not inside the log [{}, {})",
                self.start_lsn, self.flush_lsn
            )));
        }
        let len = usize::try_from(len)
            .map_err(|_| Error::internal(format!("{len} bytes do not fit in memory")))?;
        self.read_raw(start, len)
    }

    fn read_raw(&self, start: Lsn, len: usize) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        let mut at = start;
        // A damaged length field can name a frame past the largest LSN.
        let end = start.checked_add(len as u64).ok_or_else(|| {
            Error::corruption(format!("{len} bytes at LSN {start} pass the largest LSN"))
        })?;
        while at < end {
            let idx = self.segments.partition_point(|s| s.start <= at);
            let seg = idx
                .checked_sub(1)
                .and_then(|i| self.segments.get(i))
                .ok_or_else(|| Error::internal(format!("no segment holds LSN {at}")))?;
            let seg_end = seg.start + seg.len;
            if at >= seg_end {
                return Err(Error::internal(format!("LSN {at} is past the log end")));
            }
            let n = (end.min(seg_end) - at) as usize;
            let mut chunk = vec![0u8; n];
            File::open(&seg.path)?.read_exact_at(&mut chunk, at - seg.start)?;
            out.extend_from_slice(&chunk);
            at += n as u64;
        }
        Ok(out)
    }
}

/// Whether a valid frame lies anywhere after the bad frame at the start of `bytes` (which
/// begins at LSN `at`). A candidate counts only if its checksum holds *and* the version inside
/// it equals the LSN where it ends, which bytes of a torn write do not do by accident. This
/// tells damage in the middle of the log (valid records follow) from a torn tail, even when
/// the damage hit a length field and the next frame's position is unknown.
fn valid_frame_follows(bytes: &[u8], at: Lsn) -> bool {
    (1..bytes.len()).any(|i| match wal::check_frame(&bytes[i..]) {
        FrameCheck::Complete { len } => {
            let version = bytes.get(i + FRAME_HEADER_LEN + 1..i + FRAME_HEADER_LEN + 9);
            version.is_some_and(|v| {
                u64::from_le_bytes(v.try_into().unwrap_or([0; 8])) == at + (i + len) as u64
            })
        }
        _ => false,
    })
}

/// The length of the prefix of `bytes` made of whole, valid frames.
fn valid_prefix(bytes: &[u8]) -> usize {
    let mut at = 0;
    while let FrameCheck::Complete { len } = wal::check_frame(&bytes[at..]) {
        at += len;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ferrisdb_common::wal::{Mutation, encode_frame};

    fn frame(at: Lsn, n: u8) -> Bytes {
        let m = Mutation::Set {
            key: Bytes::from(vec![n]),
            value: Bytes::from(vec![n; 10]),
        };
        encode_frame(at, n as u64, &[m]).0
    }

    #[test]
    fn append_reopen_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = WalLog::open(dir.path(), 0).unwrap();
        let f1 = frame(0, 1);
        let end1 = log.append(&f1).unwrap();
        let f2 = frame(end1, 2);
        let end2 = log.append(&f2).unwrap();
        drop(log);
        let (log, rec) = WalLog::open(dir.path(), 0).unwrap();
        assert_eq!(rec.truncated_bytes, 0);
        assert_eq!(log.flush_lsn(), end2);
        let all = log.read(0, end2, 1 << 20).unwrap();
        assert_eq!(&all[..f1.len()], &f1[..]);
        let recs = wal::decode_frames(&all, 0).unwrap();
        assert_eq!(recs.len(), 2);
        // A small budget still returns one whole frame.
        assert_eq!(log.read(0, end2, 1).unwrap(), f1.to_vec());
        assert_eq!(log.read(end1, end2, 1 << 20).unwrap(), f2.to_vec());
    }

    #[test]
    fn torn_tail_is_cut_off_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = WalLog::open(dir.path(), 0).unwrap();
        let end1 = log.append(&frame(0, 1)).unwrap();
        let f2 = frame(end1, 2);
        log.append(&f2[..f2.len() - 5]).unwrap(); // a crash mid-write
        drop(log);
        let (mut log, rec) = WalLog::open(dir.path(), 0).unwrap();
        assert_eq!(rec.truncated_bytes, f2.len() as u64 - 5);
        assert_eq!(rec.damage, None);
        assert_eq!(log.flush_lsn(), end1);
        // The log continues cleanly after the cut.
        let end2 = log.append(&f2).unwrap();
        assert_eq!(
            wal::decode_frames(&log.read(0, end2, 1 << 20).unwrap(), 0)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn a_flipped_byte_before_valid_frames_is_damage_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = WalLog::open(dir.path(), 0).unwrap();
        let f1 = frame(0, 1);
        let e1 = log.append(&f1).unwrap();
        let e2 = log.append(&frame(e1, 2)).unwrap();
        drop(log);
        let seg = dir.path().join(format!("{:016X}.seg", 0));
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[FRAME_HEADER_LEN + 3] ^= 0x10; // inside the first frame's payload
        std::fs::write(&seg, &bytes).unwrap();
        let (log, rec) = WalLog::open(dir.path(), 0).unwrap();
        assert_eq!(
            rec,
            Recovery {
                truncated_bytes: 0,
                damage: Some(0)
            }
        );
        assert_eq!(log.flush_lsn(), e2, "damage must not shorten the log");
        let e = log.read(0, e2, 1 << 20).unwrap_err();
        assert_eq!(
            e.kind(),
            ferrisdb_common::ErrorKind::Corruption,
            "damaged WAL was served"
        );
    }

    #[test]
    fn a_damaged_length_field_mid_log_is_damage_too() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = WalLog::open(dir.path(), 0).unwrap();
        let mut end = 0;
        for tag in 1..=4 {
            end = log.append(&frame(end, tag)).unwrap();
        }
        drop(log);
        let seg = dir.path().join(format!("{:016X}.seg", 0));
        let mut bytes = std::fs::read(&seg).unwrap();
        let second = frame(0, 1).len();
        bytes[second + 1] ^= 0x7F; // the second frame's length field
        std::fs::write(&seg, &bytes).unwrap();
        let (log, rec) = WalLog::open(dir.path(), 0).unwrap();
        assert_eq!(
            rec,
            Recovery {
                truncated_bytes: 0,
                damage: Some(second as u64)
            }
        );
        assert_eq!(log.flush_lsn(), end);
    }

    // Found by fuzzing (docs/fuzzing.md): a segment named near u64::MAX overflowed the scan.
    #[test]
    fn a_segment_past_the_largest_lsn_is_corruption_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let start = u64::MAX - 10;
        // A frame whose length and checksum hold, ending past u64::MAX.
        let frame = ferrisdb_common::fuzzing::seal_frame(start, &[1; 21]);
        std::fs::write(dir.path().join(format!("{start:016X}.seg")), frame).unwrap();
        let e = WalLog::open(dir.path(), 0).unwrap_err();
        assert_eq!(e.kind(), ferrisdb_common::ErrorKind::Corruption);
    }

    // Found by fuzzing: a damaged length field near the end of the LSN space overflowed a read.
    #[test]
    fn a_damaged_length_near_the_largest_lsn_is_corruption_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let start = u64::MAX - 200;
        let mut bytes = 1000u32.to_le_bytes().to_vec(); // a frame longer than the log
        bytes.extend_from_slice(&[0; 16]);
        let good = ferrisdb_common::fuzzing::seal_frame(start + 20, &[1; 21]);
        bytes.extend_from_slice(&good);
        std::fs::write(dir.path().join(format!("{start:016X}.seg")), &bytes).unwrap();
        let (log, recovery) = WalLog::open(dir.path(), 0).unwrap();
        assert_eq!(recovery.damage, Some(start));
        let e = log.read(start, log.flush_lsn(), usize::MAX).unwrap_err();
        assert_eq!(e.kind(), ferrisdb_common::ErrorKind::Corruption);
    }

    #[test]
    fn trim_deletes_whole_segments_below_and_keeps_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = WalLog::open(dir.path(), 0).unwrap();
        log.set_segment_size(1);
        let mut ends = vec![0];
        for tag in 1..=4 {
            ends.push(log.append(&frame(*ends.last().unwrap(), tag)).unwrap());
        }
        assert_eq!(log.segments.len(), 4);
        assert_eq!(log.trim(ends[2] + 1).unwrap(), ends[2]);
        assert_eq!(log.segments.len(), 2);
        assert_eq!(
            log.read(ends[2], ends[4], 1 << 20).unwrap().len() as u64,
            ends[4] - ends[2]
        );
        assert_eq!(
            log.read(0, ends[4], 1 << 20).unwrap_err().kind(),
            ferrisdb_common::ErrorKind::VersionTooOld
        );
        // Never the tail, however far the trim point.
        assert_eq!(log.trim(u64::MAX).unwrap(), ends[3]);
        drop(log);
        let (log, _) = WalLog::open(dir.path(), 0).unwrap();
        assert_eq!((log.start_lsn(), log.flush_lsn()), (ends[3], ends[4]));
    }

    #[test]
    fn truncate_and_reset() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = WalLog::open(dir.path(), 0).unwrap();
        let end1 = log.append(&frame(0, 1)).unwrap();
        log.append(&frame(end1, 2)).unwrap();
        log.truncate(end1).unwrap();
        assert_eq!(log.flush_lsn(), end1);
        drop(log);
        let (mut log, _) = WalLog::open(dir.path(), 0).unwrap();
        assert_eq!(log.flush_lsn(), end1);
        log.reset(5000).unwrap();
        assert_eq!((log.start_lsn(), log.flush_lsn()), (5000, 5000));
        let end = log.append(&frame(5000, 3)).unwrap();
        drop(log);
        let (log, _) = WalLog::open(dir.path(), 0).unwrap();
        assert_eq!((log.start_lsn(), log.flush_lsn()), (5000, end));
        assert_eq!(
            log.read(0, end, 100).unwrap_err().kind(),
            ferrisdb_common::ErrorKind::VersionTooOld
        );
    }
}
