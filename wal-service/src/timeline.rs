//! One database's acceptor shared by the gRPC handlers: its state behind a mutex used only on
//! the blocking pool, and a watch of its commit position for WAL streams.

use std::sync::{Arc, Mutex};

use ferrisdb_common::{Error, Lsn, Result};
use tokio::sync::watch;

use crate::acceptor::{Acceptor, AcceptorStatus};

/// A database's acceptor plus the channel that wakes WAL readers when the commit position moves.
#[derive(Debug)]
pub struct Timeline {
    acceptor: Arc<Mutex<Acceptor>>,
    commit: watch::Sender<Lsn>,
}

impl Timeline {
    /// Wraps an opened acceptor.
    pub fn new(acceptor: Acceptor) -> Timeline {
        let (commit, _) = watch::channel(acceptor.status().commit_lsn);
        Timeline {
            acceptor: Arc::new(Mutex::new(acceptor)),
            commit,
        }
    }

    /// Runs `f` on the acceptor on the blocking pool (it fsyncs), then publishes the commit
    /// position it leaves.
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Acceptor) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let acceptor = self.acceptor.clone();
        let (out, commit_lsn) = tokio::task::spawn_blocking(move || {
            let mut a = acceptor
                .lock()
                .map_err(|_| Error::internal("acceptor lock poisoned"))?;
            let out = f(&mut a);
            Ok::<_, Error>((out, a.status().commit_lsn))
        })
        .await
        .map_err(|e| Error::internal(format!("acceptor task: {e}")))??;
        self.commit.send_if_modified(|c| {
            let moved = *c != commit_lsn;
            *c = commit_lsn;
            moved
        });
        out
    }

    /// The current status.
    pub async fn status(&self) -> Result<AcceptorStatus> {
        self.with(|a| Ok(a.status())).await
    }

    /// A receiver that changes whenever the commit position does.
    pub fn watch_commit(&self) -> watch::Receiver<Lsn> {
        self.commit.subscribe()
    }
}
