//! A write that fails part-way (a full disk) must leave the segment file ending where the log
//! says it ends. Found by the nemesis (issue 16): a safekeeper whose disk filled up kept the
//! partial frame in its segment, appended the next frames after it at the wrong offsets, and
//! on its next start found its segments no longer met (`corruption`), refusing to serve.
//!
//! The disk is made "full" for real, with the process's file-size limit (RLIMIT_FSIZE): a
//! write across the limit writes what fits and then fails, exactly as on a full disk. The
//! limit is process-wide, so this file holds one test and runs as its own process.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use ferrisdb_common::Lsn;
use ferrisdb_common::wal::{Mutation, encode_frame};
use ferrisdb_wal_service::log::WalLog;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

fn frame(at: Lsn, n: u8, value_len: usize) -> Bytes {
    let m = Mutation::Set {
        key: Bytes::from(vec![n]),
        value: Bytes::from(vec![n; value_len]),
    };
    encode_frame(at, n as u64, &[m]).0
}

#[test]
fn a_write_cut_short_by_a_full_disk_leaves_the_log_whole() {
    // Past the limit the kernel sends this thread SIGXFSZ, which kills by default; blocked
    // (for this thread, for good: it stays pending), the write fails with EFBIG instead.
    let mut xfsz = SigSet::empty();
    xfsz.add(Signal::SIGXFSZ);
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&xfsz), None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = WalLog::open(dir.path(), 0).unwrap();
    let f1 = frame(0, 1, 100);
    let end1 = log.append(&f1).unwrap();

    // The disk fills 10 bytes into the next frame.
    let (soft, hard) = getrlimit(Resource::RLIMIT_FSIZE).unwrap();
    setrlimit(Resource::RLIMIT_FSIZE, end1 + 10, hard).unwrap();
    let f2 = frame(end1, 2, 4000);
    let failed = log.append(&f2);
    setrlimit(Resource::RLIMIT_FSIZE, soft, hard).unwrap();
    assert!(failed.is_err(), "the write past the limit succeeded");
    assert_eq!(log.flush_lsn(), end1, "the failed frame counts in the log");

    // Space again: the next frame lands right after the first.
    let f3 = frame(end1, 3, 100);
    let end3 = log.append(&f3).unwrap();
    assert_eq!(end3, end1 + f3.len() as u64);
    assert_eq!(
        log.read(0, end3, usize::MAX).unwrap(),
        [&f1[..], &f3[..]].concat()
    );
    drop(log);

    // And a restart finds the same log, with nothing cut and no damage.
    let (mut log, recovery) = WalLog::open(dir.path(), 0).unwrap();
    assert_eq!(recovery.truncated_bytes, 0, "{recovery:?}");
    assert_eq!(recovery.damage, None, "{recovery:?}");
    assert_eq!(log.flush_lsn(), end3);
    assert_eq!(
        log.read(0, end3, usize::MAX).unwrap(),
        [&f1[..], &f3[..]].concat()
    );

    // Writes that share one sync, the disk full under them. With direct I/O they wait in
    // memory and reach the disk together (here once they pass 8 MiB, before the sync): the
    // ones that had returned Ok are lost with the one that failed, and the sync must say so
    // rather than acknowledge them. Buffered, the first write fails on its own.
    let direct = log.writes_direct();
    setrlimit(Resource::RLIMIT_FSIZE, end3 + 10, hard).unwrap();
    let mut at = end3;
    let mut failed = false;
    for n in 4..=8 {
        match log.write(&frame(at, n, 3 << 20)) {
            Ok(end) => at = end,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    let synced = log.sync();
    setrlimit(Resource::RLIMIT_FSIZE, soft, hard).unwrap();
    assert!(failed, "writes of 15 MiB past the limit all succeeded");
    if direct {
        assert!(
            synced.is_err(),
            "a sync acknowledged writes lost to the full disk"
        );
        assert!(log.sync().is_ok(), "the loss is reported once");
    }
    assert_eq!(log.flush_lsn(), end3, "lost writes count in the log");
    let f9 = frame(end3, 9, 100);
    let end9 = log.append(&f9).unwrap();
    drop(log);
    let (log, recovery) = WalLog::open(dir.path(), 0).unwrap();
    assert_eq!((recovery.truncated_bytes, recovery.damage), (0, None));
    assert_eq!(
        log.read(0, end9, usize::MAX).unwrap(),
        [&f1[..], &f3[..], &f9[..]].concat()
    );
}
