//! The log itself: segment files of framed, checksummed records.
//!
//! A segment is named by the LSN of its first byte (`{lsn:016X}.seg`) and holds whole frames
//! only; a new segment starts once the current one passes [`SEGMENT_TARGET_SIZE`]. On open, the
//! tail of the last segment is scanned and a torn final record (a crash mid-write) is cut off.
//! An append is durable when [`WalLog::append`] returns: it is written and fdatasynced.
//!
//! The tail segment's file runs ahead of its frames with zeros, [`PREALLOCATION_STEP`] at a
//! time (PostgreSQL zero-fills whole WAL segments for the same reason): an fdatasync of a
//! write that grows a file must also commit the file's new size to the filesystem journal,
//! while one that overwrites blocks already written need not, and is markedly cheaper (ext4:
//! about 1.5x the syncs per second, a quarter less CPU per sync). Zeros never form a frame
//! (a frame's length field is never 0), so on open a zero run at the end of the last segment
//! is where the log ends, not damage; every other segment is cut to its frames before the
//! next one begins.
//!
//! The tail segment is written with direct I/O where the file system allows it: appends wait
//! in memory ([`crate::tail_buffer`]) until the sync, which writes them from there in whole
//! blocks and then fdatasyncs, skipping the page cache's copy and writeback. Where `O_DIRECT`
//! is refused (some file systems, or a transfer size the device will not take) the log falls
//! back to buffered writes, which are equally durable.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferrisdb_common::wal::{self, FRAME_HEADER_LEN, FrameCheck};
use ferrisdb_common::{Error, Lsn, Result};

use crate::control::sync_dir;
use crate::recent::RecentWal;
use crate::tail_buffer::{self, TailBuffer};

/// By default a segment is closed and a new one begun once it reaches this size.
pub const SEGMENT_TARGET_SIZE: u64 = 16 << 20;

/// The tail segment's file is extended with zeros this far at a time, ahead of its frames:
/// one journal commit per step instead of one per sync, a write of zeros small enough not to
/// stall the append that makes it, and at most this much unused space per idle log.
pub const PREALLOCATION_STEP: u64 = 1 << 20;

/// Appends held in memory for a direct-I/O tail are written out (not synced) once they pass
/// this much, so a long run of writes before one sync (a repair's copy) does not pile up.
const WRITE_OUT_AT: usize = 8 << 20;

#[derive(Debug)]
struct Segment {
    start: Lsn,
    /// Bytes of frames: the segment ends at `start + len`.
    len: u64,
    /// The file's length: `len` plus the zeros written ahead of the frames (tail only).
    allocated: u64,
    path: PathBuf,
}

/// One database's log on disk.
#[derive(Debug)]
pub struct WalLog {
    dir: PathBuf,
    segments: Vec<Segment>,
    /// Append handle on the last segment.
    tail: Option<File>,
    /// Whether `tail` was opened for direct I/O; its appends then wait in `tail_buffer`.
    tail_direct: bool,
    /// A direct tail's unfinished last block and the frames not yet written out; `None` until
    /// the first write after the tail was opened or cut (it is read back from the file then).
    tail_buffer: Option<TailBuffer>,
    /// Whether tails are opened for direct I/O at all: on by default, off once the file system
    /// refused it.
    direct_io: bool,
    /// Set when a write-out inside [`WalLog::write`] failed and the unsynced writes before it,
    /// which had returned `Ok`, were cut off with it: the next sync reports the loss, so none of
    /// them is acknowledged.
    unsynced_lost: bool,
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
    /// The newest bytes written, for readers that follow the log's end.
    recent: Arc<RecentWal>,
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
            let len = entry.metadata()?.len();
            segments.push(Segment {
                start,
                len,
                allocated: len,
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
        // Every frame of every segment is checked. Zeros after the last segment's frames are
        // space written ahead (see the module's note): the log ends there. A bad frame with
        // nothing valid after it at the end of the log is a torn write (its fdatasync never
        // returned, so it was never acknowledged) and is cut off; the caller still refuses a
        // cut below the commit position. A bad frame anywhere else is damage: kept as it is,
        // never served.
        let count = segments.len();
        for (i, seg) in segments.iter_mut().enumerate() {
            let bytes = fs::read(&seg.path)?;
            let valid = valid_prefix(&bytes);
            if valid == bytes.len() {
                continue;
            }
            let at = seg.start + valid as u64;
            let rest = &bytes[valid..];
            let is_last = i + 1 == count;
            // The rest up to its last byte that is not zero: what a torn write left.
            let torn = rest.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            if is_last && torn == 0 {
                seg.len = valid as u64;
                continue;
            }
            let follows = last_valid_frame_end(rest, at);
            if is_last && follows.is_none() {
                recovery.truncated_bytes = torn as u64;
                let f = OpenOptions::new().write(true).open(&seg.path)?;
                f.set_len(valid as u64)?;
                f.sync_all()?;
                seg.len = valid as u64;
                seg.allocated = valid as u64;
            } else {
                if is_last {
                    // Damage, then frames: the log runs to the last of them (or the last byte
                    // that is not zero); the zeros past that are space written ahead.
                    seg.len = (valid + torn.max(follows.unwrap_or(0))) as u64;
                }
                recovery.damage = Some(at);
                break;
            }
        }
        // The scan stops at the first damage. A later last segment must still end at its
        // data, not at the zeros written ahead of it: the damaged stretch runs to the log's end,
        // and a repair copies a peer's whole frames up to there. Counted with its zeros, that
        // end was no frame boundary (and could lie past what any peer holds), so no repair
        // could ever finish (found by a soak: two safekeepers stuck damaged, commits stopped).
        if let Some(damage) = recovery.damage
            && let Some(last) = segments.last_mut()
            && last.start > damage
        {
            let bytes = fs::read(&last.path)?;
            let valid = valid_prefix(&bytes);
            let rest = &bytes[valid..];
            // As for a damaged last segment above: frames after a bad one run the log to the
            // last of them; with none, what follows the valid frames is a torn write or zeros.
            last.len = match last_valid_frame_end(rest, last.start + valid as u64) {
                Some(follows) => {
                    let torn = rest.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                    (valid + torn.max(follows)) as u64
                }
                None => valid as u64,
            };
        }
        let start = segments.first().map_or(start_lsn, |s| s.start);
        let flush = segments.last().map_or(start_lsn, |s| s.start + s.len);
        let tail_path = segments.last().map(|s| s.path.clone());
        let mut log = WalLog {
            dir: dir.to_path_buf(),
            segments,
            tail: None,
            tail_direct: false,
            tail_buffer: None,
            direct_io: true,
            unsynced_lost: false,
            start_lsn: start,
            flush_lsn: flush,
            synced_lsn: flush,
            dirty: false,
            segment_size: SEGMENT_TARGET_SIZE,
            failed: None,
            recent: Arc::default(),
        };
        if let Some(path) = tail_path {
            log.open_tail(&path)?;
        }
        Ok((log, recovery))
    }

    /// Turns direct I/O for the tail segment on or off (on by default; off, every write goes
    /// through the page cache as it is made). Syncs what is written first.
    pub fn set_direct_io(&mut self, on: bool) -> Result<()> {
        self.sync()?;
        self.direct_io = on;
        if let Some(path) = self.segments.last().map(|s| s.path.clone()) {
            self.open_tail(&path)?;
        }
        Ok(())
    }

    /// Whether the tail segment is written with direct I/O.
    pub fn writes_direct(&self) -> bool {
        self.tail_direct
    }

    /// Opens the append handle on `path`, the tail segment: with `O_DIRECT` when allowed and
    /// the file system takes it, else buffered.
    fn open_tail(&mut self, path: &Path) -> Result<()> {
        self.tail = None;
        self.tail_buffer = None;
        self.tail_direct = false;
        if self.direct_io {
            match OpenOptions::new()
                .write(true)
                .custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
                .open(path)
            {
                Ok(f) => {
                    self.tail = Some(f);
                    self.tail_direct = true;
                    return Ok(());
                }
                Err(e) if is_direct_io_refusal(&e) => self.refuse_direct_io(&e),
                Err(e) => return Err(e.into()),
            }
        }
        self.tail = Some(OpenOptions::new().write(true).open(path)?);
        Ok(())
    }

    /// Stops using direct I/O in this log after the file system refused it.
    fn refuse_direct_io(&mut self, why: &std::io::Error) {
        tracing::warn!(
            dir = %self.dir.display(),
            error = %why,
            "direct I/O refused for the WAL; it is written through the page cache instead"
        );
        self.direct_io = false;
    }

    /// The buffer of the newest bytes written, which a reader may use instead of [`WalLog::read`]
    /// for the positions it holds.
    pub fn recent(&self) -> Arc<RecentWal> {
        self.recent.clone()
    }

    /// Makes `recent` this log's buffer of newest bytes, emptied and (if a damaged log had
    /// disabled it) in use again: a log opened again after a repair keeps the buffer its
    /// readers already hold.
    pub fn adopt_recent(&mut self, recent: Arc<RecentWal>) {
        recent.enable();
        self.recent = recent;
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
        self.recent.trimmed(self.start_lsn);
        Ok(self.start_lsn)
    }

    /// The size at which new segments are started.
    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    /// Bytes of WAL held on disk (frames only, not the zeros written ahead of them).
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
        if self.tail_direct {
            return self.write_direct(frames);
        }
        let (Some(tail), Some(seg)) = (self.tail.as_ref(), self.segments.last_mut()) else {
            return Err(Error::internal("log has no tail segment"));
        };
        if let Err(e) = tail.write_all_at(frames, seg.len) {
            let written = seg.len;
            self.cut_tail_to(written);
            return Err(e.into());
        }
        self.dirty = true;
        seg.len += frames.len() as u64;
        seg.allocated = seg.allocated.max(seg.len);
        self.recent.written(self.flush_lsn, frames);
        self.flush_lsn += frames.len() as u64;
        if seg.allocated == seg.len {
            // The frames reached the end of the file: write the next step of zeros, synced
            // with these frames. Up to the segment's target size only (a log with small
            // segments never runs ahead). A failure (a full disk) costs nothing but the
            // speed-up: zeros written part-way still read as the end of the log, and the
            // next write grows the file as it would without them.
            let ahead = zeros_end(seg.len, self.segment_size);
            if ahead > seg.len {
                let zeros = vec![0u8; (ahead - seg.len) as usize];
                match tail.write_all_at(&zeros, seg.len) {
                    Ok(()) => seg.allocated = ahead,
                    Err(e) => tracing::debug!(
                        error = %e,
                        "could not write zeros ahead of the WAL tail; it grows as written"
                    ),
                }
            }
        }
        Ok(self.flush_lsn)
    }

    /// [`WalLog::write`] for a direct-I/O tail: the frames wait in memory for the sync.
    fn write_direct(&mut self, frames: &[u8]) -> Result<Lsn> {
        let Some(seg) = self.segments.last_mut() else {
            return Err(Error::internal("log has no tail segment"));
        };
        let buffer = match &mut self.tail_buffer {
            Some(b) => b,
            None => self
                .tail_buffer
                .insert(TailBuffer::load(&seg.path, seg.len)?),
        };
        buffer.push(frames);
        let pending = buffer.pending();
        seg.len += frames.len() as u64;
        self.dirty = true;
        self.recent.written(self.flush_lsn, frames);
        self.flush_lsn += frames.len() as u64;
        if pending >= WRITE_OUT_AT
            && let Err(e) = self.write_out_tail()
        {
            // What reached the file is unknown, and the earlier writes since the last sync
            // went out in the same transfer: all of them are cut off, and the next sync says
            // so rather than acknowledging them.
            let keep = self
                .segments
                .last()
                .map_or(0, |s| self.synced_lsn.saturating_sub(s.start));
            self.cut_tail_to(keep);
            self.unsynced_lost = true;
            return Err(e.into());
        }
        Ok(self.flush_lsn)
    }

    /// Writes a direct-I/O tail's pending frames to its file (not synced), and zeros ahead of
    /// them when they reached the file's end. A buffered tail writes as it goes: nothing to do.
    fn write_out_tail(&mut self) -> std::io::Result<()> {
        let (Some(tail), Some(seg), Some(buffer)) = (
            self.tail.as_ref(),
            self.segments.last_mut(),
            self.tail_buffer.as_mut(),
        ) else {
            return Ok(());
        };
        if buffer.pending() == 0 {
            return Ok(());
        }
        let transfer_end = match buffer.write_out(tail) {
            Ok(end) => end,
            Err(e) if is_direct_io_refusal(&e) => {
                // The device wants larger or differently aligned transfers than a block: write
                // the pending frames through the page cache, and the log that way from now on.
                let from = buffer.file_end();
                let mut pending = vec![0u8; buffer.pending()];
                buffer.read_pending(from, &mut pending)?;
                let f = OpenOptions::new().write(true).open(&seg.path)?;
                f.write_all_at(&pending, from)?;
                seg.allocated = seg.allocated.max(seg.len);
                self.refuse_direct_io(&e);
                self.tail = Some(f);
                self.tail_direct = false;
                self.tail_buffer = None;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        seg.allocated = seg.allocated.max(transfer_end);
        if transfer_end == seg.allocated {
            // As in `write`: the next step of zeros, synced with these frames, ending on a
            // block boundary as direct writes must; a failure costs nothing but the speed-up.
            let ahead = zeros_end(seg.len, self.segment_size);
            let ahead = ahead - ahead % tail_buffer::BLOCK as u64;
            if ahead > transfer_end {
                match tail_buffer::write_zeros(tail, transfer_end, ahead) {
                    Ok(()) => seg.allocated = ahead,
                    Err(e) => tracing::debug!(
                        error = %e,
                        "could not write zeros ahead of the WAL tail; it grows as written"
                    ),
                }
            }
        }
        Ok(())
    }

    /// Makes every write so far durable (fdatasync of the tail segment; a direct-I/O tail's
    /// frames are written out first).
    ///
    /// After a failed fdatasync the kernel may already have dropped the unsynced pages and
    /// would report the next fdatasync as a success, so a retry proves nothing: the writes
    /// since the last successful sync (none of them acknowledged) are cut off instead, and
    /// the log ends where it last was durable.
    pub fn sync(&mut self) -> Result<()> {
        self.check_usable()?;
        if std::mem::take(&mut self.unsynced_lost) {
            return Err(Error::unavailable(format!(
                "WAL written to {} since the last sync was lost to a failed write; none of it \
                 is durable",
                self.dir.display()
            )));
        }
        if self.dirty {
            let synced = self.write_out_tail().and_then(|()| match &self.tail {
                Some(tail) => tail.sync_data(),
                None => Ok(()),
            });
            if let Err(e) = synced {
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
                    seg.allocated = len;
                    self.flush_lsn = seg.start + len;
                }
                // Read back from the file before the next direct write.
                self.tail_buffer = None;
                self.recent.cut(self.flush_lsn);
                // sync_all made everything the file now holds durable.
                self.synced_lsn = self.flush_lsn;
                self.dirty = false;
            }
            Err(e) => {
                self.recent.clear();
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
        // The segment being closed must be durable before writes move on to the next, and
        // must end at its last frame: on open, zeros are a log's end only in the last segment.
        self.sync()?;
        // The file's own length, not `allocated`: zeros written part-way ahead (a full disk)
        // are past `allocated` and must go too.
        if let (Some(tail), Some(seg)) = (&self.tail, self.segments.last_mut())
            && tail.metadata()?.len() > seg.len
        {
            tail.set_len(seg.len)?;
            tail.sync_all()?;
            seg.allocated = seg.len;
        }
        let path = self.dir.join(format!("{:016X}.seg", self.flush_lsn));
        OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            start: self.flush_lsn,
            len: 0,
            allocated: 0,
            path: path.clone(),
        });
        self.open_tail(&path)
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
        // Frames still in a direct tail's memory must be in the file before it is cut.
        self.sync()?;
        // Forgotten first: if the cut fails part-way, the buffer holds nothing the log lost.
        self.recent.cut(lsn);
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
            last.allocated = last.len;
            let path = last.path.clone();
            self.open_tail(&path)?;
        } else {
            self.tail = None;
            self.tail_buffer = None;
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
        self.recent.clear();
        for s in self.segments.drain(..) {
            fs::remove_file(&s.path)?;
        }
        sync_dir(&self.dir)?;
        self.tail = None;
        self.tail_buffer = None;
        self.unsynced_lost = false;
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

    /// The first frame at or after `start` (a frame boundary) and below `end` that does not
    /// hold (an impossible length, a checksum that fails, bytes that cannot be read), read
    /// frame by frame; `None` when every frame there holds. Where a read found damage, this
    /// says where it begins.
    pub fn first_bad_frame(&self, start: Lsn, end: Lsn) -> Option<Lsn> {
        let end = end.min(self.flush_lsn);
        let mut at = start.max(self.start_lsn);
        while at < end {
            let Ok(head) = self.read_raw(at, FRAME_HEADER_LEN) else {
                return Some(at);
            };
            let payload = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let len = FRAME_HEADER_LEN + payload.min(wal::MAX_FRAME_PAYLOAD);
            if at.saturating_add(len as u64) > self.flush_lsn {
                return Some(at);
            }
            match self.read_raw(at, len).map(|frame| wal::check_frame(&frame)) {
                Ok(FrameCheck::Complete { len }) => at += len as u64,
                _ => return Some(at),
            }
        }
        None
    }

    /// Whether a frame begins at `lsn` (or the log ends there), found by walking the length
    /// fields from the start of the segment holding it: a segment always begins with a frame.
    /// A read that fails at its very first frame is damage only if a frame was meant to begin
    /// there; a reader's position inside a frame (a peer's mistake, or a follower whose log was
    /// rewritten under it) is not. At most one segment is read, and only on such a failure.
    pub fn is_frame_boundary(&self, lsn: Lsn) -> bool {
        if lsn == self.start_lsn || lsn == self.flush_lsn {
            return true;
        }
        if lsn < self.start_lsn || lsn > self.flush_lsn {
            return false;
        }
        let idx = self.segments.partition_point(|s| s.start <= lsn);
        let Some(seg) = idx.checked_sub(1).and_then(|i| self.segments.get(i)) else {
            return false;
        };
        let Ok(len) = usize::try_from(lsn - seg.start) else {
            return false;
        };
        let Ok(bytes) = self.read_raw(seg.start, len) else {
            return false;
        };
        let mut at = 0usize;
        while at < bytes.len() {
            let Some(head) = bytes.get(at..at + 4) else {
                return false;
            };
            let payload = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if payload == 0 {
                return false;
            }
            at = at.saturating_add(FRAME_HEADER_LEN + payload);
        }
        at == bytes.len()
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
            // The frames of a direct tail not written out yet are only in its buffer.
            let pending = match &self.tail_buffer {
                Some(b) if idx == self.segments.len() && b.pending() > 0 => Some(b),
                _ => None,
            };
            let file_end = pending.map_or(seg_end, |b| seg.start + b.file_end());
            let mut chunk;
            if let Some(buffer) = pending.filter(|_| at >= file_end) {
                chunk = vec![0u8; (end.min(seg_end) - at) as usize];
                buffer.read_pending(at - seg.start, &mut chunk)?;
            } else {
                chunk = vec![0u8; (end.min(file_end) - at) as usize];
                File::open(&seg.path)?.read_exact_at(&mut chunk, at - seg.start)?;
            }
            out.extend_from_slice(&chunk);
            at += chunk.len() as u64;
        }
        Ok(out)
    }
}

/// Where the last valid frame lies after the bad frame at the start of `bytes` (which
/// begins at LSN `at`). A candidate counts only if its checksum holds *and* the version inside
/// it equals the LSN where it ends, which bytes of a torn write do not do by accident. This
/// tells damage in the middle of the log (valid records follow) from a torn tail, even when
/// the damage hit a length field and the next frame's position is unknown. Returns where the
/// last such frame ends, as an offset into `bytes`.
fn last_valid_frame_end(bytes: &[u8], at: Lsn) -> Option<usize> {
    (1..bytes.len())
        .filter_map(|i| match wal::check_frame(&bytes[i..]) {
            FrameCheck::Complete { len } => {
                let version = bytes.get(i + FRAME_HEADER_LEN + 1..i + FRAME_HEADER_LEN + 9)?;
                let version = u64::from_le_bytes(version.try_into().ok()?);
                (version == at + (i + len) as u64).then_some(i + len)
            }
            _ => None,
        })
        .max()
}

/// Where the zeros written ahead of a tail segment's frames end once its frames reach
/// `seg_len`: the next [`PREALLOCATION_STEP`] boundary, but never past the segment size (a log
/// with small segments never runs ahead).
fn zeros_end(seg_len: u64, segment_size: u64) -> u64 {
    let ahead = (seg_len / PREALLOCATION_STEP + 1) * PREALLOCATION_STEP;
    ahead.min(segment_size.max(seg_len))
}

/// Whether an `O_DIRECT` open or transfer failed because the file system or device does not
/// do direct I/O (or not with these sizes), rather than for a reason buffered I/O would share:
/// EINVAL is how Linux file systems without it refuse (tmpfs before 6.6, older ZFS) and how a
/// device refuses a transfer it cannot align; EOPNOTSUPP how some network and FUSE ones do.
fn is_direct_io_refusal(e: &std::io::Error) -> bool {
    [nix::errno::Errno::EINVAL, nix::errno::Errno::EOPNOTSUPP]
        .iter()
        .any(|&errno| e.raw_os_error() == Some(errno as i32))
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
        frame_of(at, n, 10)
    }

    fn frame_of(at: Lsn, n: u8, value_len: usize) -> Bytes {
        let m = Mutation::Set {
            key: Bytes::from(vec![n]),
            value: Bytes::from(vec![n; value_len]),
        };
        encode_frame(at, n as u64, &[m]).0
    }

    /// How many frames the log holds below `end`.
    fn frames_held(log: &WalLog, end: Lsn) -> usize {
        wal::decode_frames(&log.read(0, end, usize::MAX).unwrap(), 0)
            .unwrap()
            .len()
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
    fn frame_boundaries_are_told_from_positions_inside_frames_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = WalLog::open(dir.path(), 0).unwrap();
        log.set_segment_size(4096);
        // Frames of varied sizes over several segments, some not yet synced.
        let mut starts = vec![0];
        for n in 1..=40u8 {
            let at = *starts.last().unwrap();
            let f = frame_of(at, n, 50 + 37 * n as usize);
            starts.push(if n % 3 == 0 {
                log.write(&f).unwrap()
            } else {
                log.append(&f).unwrap()
            });
        }
        assert!(log.segments.len() > 3, "{} segments", log.segments.len());
        let end = *starts.last().unwrap();
        for w in starts.windows(2) {
            assert!(log.is_frame_boundary(w[0]), "{}", w[0]);
            for inside in [w[0] + 1, w[0] + 4, w[0] + 8, w[1] - 1] {
                assert!(!log.is_frame_boundary(inside), "{inside} is inside a frame");
            }
        }
        assert!(log.is_frame_boundary(end));
        assert!(!log.is_frame_boundary(end + 1), "past the end");
        // What serving makes of it: a read from inside a frame fails; one from a boundary not.
        assert!(log.read(starts[7] + 3, end, 1 << 20).is_err());
        assert!(log.read(starts[7], end, 1 << 20).is_ok());
    }

    #[test]
    fn the_tail_runs_ahead_with_zeros_that_read_as_the_end_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = WalLog::open(dir.path(), 0).unwrap();
        let f1 = frame(0, 1);
        let end1 = log.append(&f1).unwrap();
        let seg = dir.path().join(format!("{:016X}.seg", 0));
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), PREALLOCATION_STEP);
        drop(log);
        // A restart finds the log ending at its last frame, with nothing cut.
        let (mut log, rec) = WalLog::open(dir.path(), 0).unwrap();
        assert_eq!(
            rec,
            Recovery {
                truncated_bytes: 0,
                damage: None
            }
        );
        assert_eq!((log.flush_lsn(), log.disk_bytes()), (end1, end1));
        // The next frame lands over the zeros, right after the first.
        let f2 = frame(end1, 2);
        let end2 = log.append(&f2).unwrap();
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), PREALLOCATION_STEP);
        assert_eq!(
            log.read(0, end2, 1 << 20).unwrap(),
            [&f1[..], &f2[..]].concat()
        );
        drop(log);
        let (log, rec) = WalLog::open(dir.path(), 0).unwrap();
        assert_eq!(rec.truncated_bytes, 0);
        assert_eq!(log.flush_lsn(), end2);
    }

    #[test]
    fn a_torn_write_into_the_zeros_is_cut_off_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = WalLog::open(dir.path(), 0).unwrap();
        let end1 = log.append(&frame(0, 1)).unwrap();
        drop(log);
        // A crash mid-write: the first 9 bytes of the next frame reached the disk.
        let f2 = frame(end1, 2);
        let seg = dir.path().join(format!("{:016X}.seg", 0));
        let file = OpenOptions::new().write(true).open(&seg).unwrap();
        file.write_all_at(&f2[..9], end1).unwrap();
        drop(file);
        let (mut log, rec) = WalLog::open(dir.path(), 0).unwrap();
        assert_eq!(
            rec,
            Recovery {
                truncated_bytes: 9,
                damage: None
            }
        );
        assert_eq!(log.flush_lsn(), end1);
        assert_eq!(
            std::fs::metadata(&seg).unwrap().len(),
            end1,
            "the torn bytes stayed"
        );
        let end2 = log.append(&f2).unwrap();
        drop(log);
        let (log, rec) = WalLog::open(dir.path(), 0).unwrap();
        assert_eq!(rec.truncated_bytes, 0);
        assert_eq!(log.flush_lsn(), end2);
        assert_eq!(frames_held(&log, end2), 2);
    }

    #[test]
    fn a_closed_segment_ends_at_its_last_frame() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = WalLog::open(dir.path(), 0).unwrap();
        log.set_segment_size(3 * PREALLOCATION_STEP);
        // Frames of ~400 KiB: each segment takes several steps of zeros before it closes.
        let mut end = 0;
        for n in 1..=20 {
            end = log.append(&frame_of(end, n, 400 << 10)).unwrap();
        }
        assert!(log.segments.len() >= 3, "{} segments", log.segments.len());
        let (closed, last) = log.segments.split_at(log.segments.len() - 1);
        for s in closed {
            assert_eq!(std::fs::metadata(&s.path).unwrap().len(), s.len, "{s:?}");
        }
        let last_file = std::fs::metadata(&last[0].path).unwrap().len();
        assert!(
            last_file > last[0].len && last_file <= 3 * PREALLOCATION_STEP,
            "{last_file}"
        );
        drop(log);
        let (log, rec) = WalLog::open(dir.path(), 0).unwrap();
        assert_eq!(
            rec,
            Recovery {
                truncated_bytes: 0,
                damage: None
            }
        );
        assert_eq!(log.flush_lsn(), end);
        assert_eq!(frames_held(&log, end), 20);
    }

    #[test]
    fn the_recent_buffer_follows_every_cut_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = WalLog::open(dir.path(), 0).unwrap();
        let recent = log.recent();
        let end1 = log.append(&frame(0, 1)).unwrap();
        let end2 = log.append(&frame(end1, 2)).unwrap();
        assert_eq!(
            recent.read(0, end2).unwrap(),
            log.read(0, end2, 1 << 20).unwrap()
        );
        // A divergent suffix truncated and written again differently: the buffer serves the
        // new bytes, never the old.
        log.truncate(end1).unwrap();
        assert_eq!(recent.read(end1, end2), None);
        let other = frame(end1, 9);
        let end3 = log.append(&other).unwrap();
        assert_eq!(recent.read(end1, end3).unwrap(), other.to_vec());
        assert_eq!(
            recent.read(0, end3).unwrap(),
            log.read(0, end3, 1 << 20).unwrap()
        );
        log.reset(end3).unwrap();
        assert_eq!(recent.read(0, end3), None);
        // A log opened again (a repair) keeps the buffer its readers hold, emptied.
        let (mut again, _) = WalLog::open(dir.path(), end3).unwrap();
        recent.written(end3, b"stale");
        again.adopt_recent(recent.clone());
        assert_eq!(recent.read(end3, end3 + 5), None);
        let end4 = again.append(&frame(end3, 4)).unwrap();
        assert_eq!(
            recent.read(end3, end4).unwrap(),
            again.read(end3, end4, 1 << 20).unwrap()
        );
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
        assert_eq!(frames_held(&log, end2), 2);
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

    /// Found by a soak: damage in an earlier segment stopped the scan before the last
    /// segment's zeros written ahead were left out, so the log claimed to end at the zeros'
    /// end — no frame boundary, past what any peer held — and its repair could never finish.
    #[test]
    fn damage_in_an_earlier_segment_leaves_the_log_ending_at_its_last_frame() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = WalLog::open(dir.path(), 0).unwrap();
        log.set_segment_size(4096);
        let mut end = 0;
        let mut n = 0u8;
        // Into a second segment, which then runs ahead of its frames with zeros.
        while log.segments.len() < 2 || end - log.segments[1].start < 300 {
            n = n.wrapping_add(1);
            end = log.append(&frame(end, n)).unwrap();
        }
        let (last_path, last_start) = (log.segments[1].path.clone(), log.segments[1].start);
        drop(log);
        assert!(
            std::fs::metadata(&last_path).unwrap().len() > end - last_start,
            "the last segment runs ahead with zeros"
        );
        let first = dir.path().join(format!("{:016X}.seg", 0));
        let mut bytes = std::fs::read(&first).unwrap();
        bytes[100] ^= 0x01;
        std::fs::write(&first, &bytes).unwrap();
        let (log, rec) = WalLog::open(dir.path(), 0).unwrap();
        assert!(rec.damage.is_some_and(|d| d < 100), "{rec:?}");
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
        assert_eq!(
            log.recent().read(0, ends[4]).map(|b| b.len() as u64),
            Some(ends[4])
        );
        assert_eq!(log.trim(ends[2] + 1).unwrap(), ends[2]);
        assert_eq!(log.segments.len(), 2);
        // Nor is what was trimmed served from memory.
        assert_eq!(log.recent().read(0, ends[4]), None);
        assert!(log.recent().read(ends[2], ends[4]).is_some());
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

    /// Whether this file system takes `O_DIRECT` (tmpfs before Linux 6.6 does not, for one).
    fn takes_direct_io(dir: &Path) -> bool {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
            .open(dir.join("probe"))
            .is_ok()
    }

    /// A directory on ramfs, unmounted on drop. ramfs has no direct I/O: it refuses `O_DIRECT`
    /// at open with EINVAL, as tmpfs did before Linux 6.6, so it exercises the log's open-time
    /// fallback on a real file system rather than an injected error.
    struct Ramfs {
        dir: tempfile::TempDir,
    }

    impl Ramfs {
        /// Mounts one, or says why not (mounting needs root) and returns `None`.
        fn mount() -> Option<Ramfs> {
            let dir = tempfile::tempdir().unwrap();
            let mounted = std::process::Command::new("mount")
                .args(["-t", "ramfs", "ramfs"])
                .arg(dir.path())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !mounted {
                eprintln!(
                    "skipped: could not mount ramfs (needs root) for a file system that refuses O_DIRECT"
                );
                return None;
            }
            Some(Ramfs { dir })
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }
    }

    impl Drop for Ramfs {
        fn drop(&mut self) {
            // Lazy: detached even while something still holds a file there (a failed test's
            // log), so no mount outlives the test; its memory goes with the last file.
            let _ = std::process::Command::new("umount")
                .arg("--lazy")
                .arg(self.dir.path())
                .status();
        }
    }

    #[test]
    fn a_file_system_that_refuses_direct_io_at_open_is_written_through_the_page_cache() {
        let Some(ramfs) = Ramfs::mount() else { return };
        assert!(
            !takes_direct_io(ramfs.path()),
            "ramfs took O_DIRECT on this kernel; the test needs a file system that refuses it"
        );
        let (mut log, _) = WalLog::open(ramfs.path(), 0).unwrap();
        assert!(!log.writes_direct());
        // Small segments, so that every segment switch opens a new tail on the refusing file
        // system, and frames that span block boundaries.
        log.set_segment_size(3 * PREALLOCATION_STEP);
        let mut end = 0;
        let mut n = 0u8;
        while log.segments.len() < 4 {
            n = n.wrapping_add(1);
            end = log.append(&frame_of(end, n, 3000)).unwrap();
            if n.is_multiple_of(5) {
                log.sync().unwrap();
            }
        }
        log.sync().unwrap();
        assert!(!log.writes_direct());
        let held = frames_held(&log, end);
        drop(log);

        // Reopened: every frame is there and the log appends on, still buffered.
        let (mut log, _) = WalLog::open(ramfs.path(), 0).unwrap();
        assert!(!log.writes_direct());
        assert_eq!(log.flush_lsn(), end);
        assert_eq!(frames_held(&log, end), held);
        let end = log.append(&frame(end, 0xee)).unwrap();
        log.sync().unwrap();
        assert_eq!(frames_held(&log, end), held + 1);
    }

    #[test]
    fn a_transfer_refused_after_the_open_took_direct_io_is_written_through_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        if !takes_direct_io(dir.path()) {
            eprintln!("skipped: the temporary directory's file system refuses O_DIRECT at open");
            return;
        }
        let (mut log, _) = WalLog::open(dir.path(), 0).unwrap();
        let f1 = frame_of(0, 1, 5000);
        let end1 = log.append(&f1).unwrap();
        assert!(log.writes_direct());
        // Two writes waiting for one sync, spanning several blocks, so the refused transfer
        // leaves a prefix of them in the file.
        let f2 = frame_of(end1, 2, 3000);
        let end2 = log.write(&f2).unwrap();
        let f3 = frame_of(end2, 3, 9000);
        let end3 = log.write(&f3).unwrap();
        tail_buffer::REFUSE_NEXT_TRANSFER.with(|r| r.set(true));
        log.sync().unwrap();
        assert_eq!(log.flush_lsn(), end3);
        assert!(
            !tail_buffer::REFUSE_NEXT_TRANSFER.with(|r| r.get()),
            "the sync did not reach the direct write-out"
        );
        assert!(!log.writes_direct());
        let f4 = frame_of(end3, 4, 2000);
        let end4 = log.append(&f4).unwrap();
        assert!(!log.writes_direct(), "direct I/O came back in the same log");
        let all = [&f1[..], &f2[..], &f3[..], &f4[..]].concat();
        assert_eq!(log.read(0, end4, usize::MAX).unwrap(), all);
        drop(log);

        // Reopened: every frame is whole, nothing after them but zeros, and the log appends on.
        let (mut log, rec) = WalLog::open(dir.path(), 0).unwrap();
        assert_eq!((rec.truncated_bytes, rec.damage), (0, None));
        assert_eq!(log.flush_lsn(), end4);
        assert_eq!(log.read(0, end4, usize::MAX).unwrap(), all);
        let on_disk = std::fs::read(dir.path().join(format!("{:016X}.seg", 0))).unwrap();
        assert_eq!(&on_disk[..all.len()], &all[..]);
        assert!(on_disk[all.len()..].iter().all(|&b| b == 0));
        let f5 = frame_of(end4, 5, 100);
        let end5 = log.append(&f5).unwrap();
        assert_eq!(frames_held(&log, end5), 5);
    }

    #[test]
    fn the_tail_is_written_with_direct_io_where_the_file_system_takes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = WalLog::open(dir.path(), 0).unwrap();
        let end = log.append(&frame(0, 1)).unwrap();
        assert_eq!(log.writes_direct(), takes_direct_io(dir.path()));
        log.set_direct_io(false).unwrap();
        assert!(!log.writes_direct());
        let end = log.append(&frame(end, 2)).unwrap();
        assert_eq!(frames_held(&log, end), 2);
    }

    #[test]
    fn frames_not_yet_synced_read_back_from_memory_and_are_durable_after_the_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = WalLog::open(dir.path(), 0).unwrap();
        let f1 = frame_of(0, 1, 5000);
        let end1 = log.append(&f1).unwrap();
        // Two writes sharing one sync, the second crossing a block boundary.
        let f2 = frame_of(end1, 2, 3000);
        let end2 = log.write(&f2).unwrap();
        let f3 = frame_of(end2, 3, 9000);
        let end3 = log.write(&f3).unwrap();
        let all = [&f1[..], &f2[..], &f3[..]].concat();
        assert_eq!(log.read(0, end3, usize::MAX).unwrap(), all);
        // A read that starts in the file and ends in memory, and one inside memory only.
        assert_eq!(
            log.read_exact(10, end2 + 5 - 10).unwrap(),
            all[10..(end2 + 5) as usize]
        );
        assert_eq!(log.read(end2, end3, usize::MAX).unwrap(), f3.to_vec());
        log.sync().unwrap();
        assert_eq!(log.read(0, end3, usize::MAX).unwrap(), all);
        drop(log);
        let (log, rec) = WalLog::open(dir.path(), 0).unwrap();
        assert_eq!((rec.truncated_bytes, rec.damage), (0, None));
        assert_eq!(log.read(0, end3, usize::MAX).unwrap(), all);
        let seg = dir.path().join(format!("{:016X}.seg", 0));
        let on_disk = std::fs::read(seg).unwrap();
        assert_eq!(&on_disk[..all.len()], &all[..]);
        assert!(on_disk[all.len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_truncation_into_frames_not_yet_synced_keeps_what_lies_below() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = WalLog::open(dir.path(), 0).unwrap();
        let f1 = frame(0, 1);
        let end1 = log.append(&f1).unwrap();
        let f2 = frame_of(end1, 2, 6000);
        let end2 = log.write(&f2).unwrap();
        log.write(&frame(end2, 3)).unwrap();
        log.truncate(end2).unwrap();
        assert_eq!(log.flush_lsn(), end2);
        // The next frame lands right after the cut, in the same unfinished block.
        let f4 = frame(end2, 4);
        let end4 = log.append(&f4).unwrap();
        drop(log);
        let (log, rec) = WalLog::open(dir.path(), 0).unwrap();
        assert_eq!((rec.truncated_bytes, rec.damage), (0, None));
        assert_eq!(
            log.read(0, end4, usize::MAX).unwrap(),
            [&f1[..], &f2[..], &f4[..]].concat()
        );
    }

    #[test]
    fn direct_and_buffered_writes_continue_one_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = WalLog::open(dir.path(), 0).unwrap();
        log.set_segment_size(3 * PREALLOCATION_STEP);
        let mut expect = Vec::new();
        let mut end = 0;
        // Frames of odd sizes, the mode switched every few, across segment boundaries.
        for n in 1..=40u8 {
            if n % 7 == 0 {
                log.set_direct_io(n % 14 != 0).unwrap();
            }
            let f = frame_of(end, n, 150_000 + 777 * n as usize);
            end = if n % 3 == 0 {
                log.write(&f).unwrap()
            } else {
                log.append(&f).unwrap()
            };
            expect.extend_from_slice(&f);
        }
        log.sync().unwrap();
        assert!(log.segments.len() >= 2, "{} segments", log.segments.len());
        assert_eq!(log.read(0, end, usize::MAX).unwrap(), expect);
        drop(log);
        let (log, rec) = WalLog::open(dir.path(), 0).unwrap();
        assert_eq!((rec.truncated_bytes, rec.damage), (0, None));
        assert_eq!(log.flush_lsn(), end);
        assert_eq!(log.read(0, end, usize::MAX).unwrap(), expect);
    }

    #[test]
    fn the_largest_frame_goes_through_the_direct_tail_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = WalLog::open(dir.path(), 0).unwrap();
        let end1 = log.append(&frame(0, 1)).unwrap();
        // One value as large as a frame may carry: past the early write-out mark on its own.
        let value_len = ferrisdb_common::message_size::MAX_FRAME_BYTES - 200;
        let big = frame_of(end1, 2, value_len);
        assert!(big.len() <= ferrisdb_common::message_size::MAX_FRAME_BYTES);
        assert!(
            big.len() >= WRITE_OUT_AT,
            "the frame does not reach the write-out mark"
        );
        let end2 = log.write(&big).unwrap();
        let f3 = frame(end2, 3);
        let end3 = log.append(&f3).unwrap();
        assert_eq!(
            log.read_exact(end1, big.len() as u64).unwrap(),
            big.to_vec()
        );
        drop(log);
        let (log, rec) = WalLog::open(dir.path(), 0).unwrap();
        assert_eq!((rec.truncated_bytes, rec.damage), (0, None));
        assert_eq!(log.flush_lsn(), end3);
        assert_eq!(log.read(end1, end2, 1).unwrap(), big.to_vec());
        assert_eq!(log.read(end2, end3, usize::MAX).unwrap(), f3.to_vec());
    }
}
