//! One database's acceptor shared by the gRPC handlers: its state behind a mutex used only on
//! the blocking pool, and a watch of its commit position for WAL streams.

use std::sync::{Arc, Mutex};

use ferrisdb_common::{Error, Lsn, Result};
use tokio::sync::watch;

use crate::acceptor::{Acceptor, AcceptorStatus};
use crate::recent::RecentWal;

/// A database's acceptor plus the channel that wakes WAL readers when the commit position moves.
#[derive(Debug)]
pub struct Timeline {
    acceptor: Arc<Mutex<Acceptor>>,
    commit: watch::Sender<Lsn>,
    /// WAL bytes on disk as of the last operation, readable without taking the lock.
    disk_bytes: std::sync::atomic::AtomicU64,
    /// The log's newest bytes, readable without the acceptor's lock.
    recent: Arc<RecentWal>,
}

impl Timeline {
    /// Wraps an opened acceptor.
    pub fn new(acceptor: Acceptor) -> Timeline {
        let (commit, _) = watch::channel(acceptor.status().commit_lsn);
        let disk_bytes = std::sync::atomic::AtomicU64::new(acceptor.disk_bytes());
        let recent = acceptor.recent();
        Timeline {
            acceptor: Arc::new(Mutex::new(acceptor)),
            commit,
            disk_bytes,
            recent,
        }
    }

    /// Runs `f` on the acceptor on the blocking pool (it fsyncs), then publishes the commit
    /// position it leaves.
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Acceptor) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let acceptor = self.acceptor.clone();
        let (out, commit_lsn, disk_bytes) = tokio::task::spawn_blocking(move || {
            let mut a = acceptor
                .lock()
                .map_err(|_| Error::internal("acceptor lock poisoned"))?;
            let out = f(&mut a);
            Ok::<_, Error>((out, a.commit_lsn(), a.disk_bytes()))
        })
        .await
        .map_err(|e| Error::internal(format!("acceptor task: {e}")))??;
        self.published(commit_lsn, disk_bytes);
        out
    }

    /// Publishes what an operation on the acceptor left: its commit position (waking the WAL
    /// streams when it moved) and its bytes on disk.
    fn published(&self, commit_lsn: Lsn, disk_bytes: u64) {
        self.disk_bytes
            .store(disk_bytes, std::sync::atomic::Ordering::Relaxed);
        self.commit.send_if_modified(|c| {
            let moved = *c != commit_lsn;
            *c = commit_lsn;
            moved
        });
    }

    /// The bytes `[start, end)` of the log when they are among its newest (see
    /// [`crate::recent`]); `None` sends the reader to the log itself.
    pub fn read_recent(&self, start: Lsn, end: Lsn) -> Option<Vec<u8>> {
        self.recent.read(start, end)
    }

    /// Counts one sweep of the newest-WAL buffer, which gives its memory back once the
    /// database has been idle for a while (see [`crate::recent`]).
    pub fn sweep_recent(&self) {
        self.recent.sweep();
    }

    /// Runs `f` on the acceptor on this thread, blocking it meanwhile (appends: see
    /// [`crate::service::Limits::sync_on_blocking_pool`]), then publishes the commit position
    /// it leaves. The lock is the one [`Timeline::with`] takes, so the two exclude each other.
    pub fn with_here<R>(&self, f: impl FnOnce(&mut Acceptor) -> Result<R>) -> Result<R> {
        let (out, commit_lsn, disk_bytes) = {
            let mut a = self
                .acceptor
                .lock()
                .map_err(|_| Error::internal("acceptor lock poisoned"))?;
            let out = f(&mut a);
            (out, a.commit_lsn(), a.disk_bytes())
        };
        self.published(commit_lsn, disk_bytes);
        out
    }

    /// The current status.
    pub async fn status(&self) -> Result<AcceptorStatus> {
        self.with(|a| Ok(a.status())).await
    }

    /// WAL bytes on disk as of the last operation.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A receiver that changes whenever the commit position does.
    pub fn watch_commit(&self) -> watch::Receiver<Lsn> {
        self.commit.subscribe()
    }
}
