//! One database's acceptor shared by the gRPC handlers: its state behind a mutex used only on
//! the blocking pool, and a watch of its commit position for WAL streams.

use std::sync::{Arc, Mutex, RwLock};

use ferrisdb_common::{Error, Lsn, Result};
use tokio::sync::watch;

use crate::acceptor::{Acceptor, AcceptorStatus};
use crate::control::TermSwitch;
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
    /// The acceptor's term history as of its last operation, readable without its lock: the
    /// term a WAL stream names for what it sends (`WalChunk.term`). Replaced under the
    /// acceptor's lock and before the commit position is published, so a stream that read WAL
    /// below a commit position it saw finds every term that wrote it here.
    history: Arc<RwLock<Arc<Vec<TermSwitch>>>>,
}

/// Replaces `slot` with `a`'s term history when it changed. A history changes only by a new
/// term's `Elected` or a repair, and either way its last entry changes, so comparing lengths
/// and last entries is enough, and cheap enough for every append.
fn refresh_history(slot: &RwLock<Arc<Vec<TermSwitch>>>, a: &Acceptor) {
    let held = a.history();
    let same = slot
        .read()
        .is_ok_and(|h| h.len() == held.len() && h.last() == held.last());
    if !same && let Ok(mut h) = slot.write() {
        *h = Arc::new(held.to_vec());
    }
}

impl Timeline {
    /// Wraps an opened acceptor.
    pub fn new(acceptor: Acceptor) -> Timeline {
        let (commit, _) = watch::channel(acceptor.status().commit_lsn);
        let disk_bytes = std::sync::atomic::AtomicU64::new(acceptor.disk_bytes());
        let recent = acceptor.recent();
        let history = Arc::new(RwLock::new(Arc::new(acceptor.history().to_vec())));
        Timeline {
            acceptor: Arc::new(Mutex::new(acceptor)),
            commit,
            disk_bytes,
            recent,
            history,
        }
    }

    /// Runs `f` on the acceptor on the blocking pool (it fsyncs), then publishes the commit
    /// position it leaves.
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Acceptor) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let acceptor = self.acceptor.clone();
        let history = self.history.clone();
        let (out, commit_lsn, disk_bytes) = tokio::task::spawn_blocking(move || {
            let mut a = acceptor
                .lock()
                .map_err(|_| Error::internal("acceptor lock poisoned"))?;
            let out = f(&mut a);
            refresh_history(&history, &a);
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
            refresh_history(&self.history, &a);
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

    /// The term that wrote the byte just below `lsn`, by the term history as of the last
    /// operation on the acceptor; `None` when no term did.
    pub fn term_below(&self, lsn: Lsn) -> Option<u64> {
        let h = self.history.read().ok()?;
        ferrisdb_server_common::term_history::term_below(&h, lsn)
    }

    /// A receiver that changes whenever the commit position does.
    pub fn watch_commit(&self) -> watch::Receiver<Lsn> {
        self.commit.subscribe()
    }
}
