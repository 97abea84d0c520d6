//! The thread a primary's commit pipeline runs on: the committer, the proposer's
//! replication to each safekeeper, and the HTTP/2 connections those streams use.
//!
//! On the runtime's shared workers these tasks queued behind the client requests: every hop
//! of a batch (the committer waking a safekeeper's sender, the sender's answer waking the
//! committer) waited for the tasks ahead of it in a busy worker's queue, about 0.1 ms a hop
//! at 64 writers. On a thread of their own the hops are polled at once, and the kernel
//! schedules that thread like any other that wakes (docs/benchmarks/request-path-profile.md,
//! twenty-first round).

use ferrisdb_common::{Error, Result};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A single-threaded runtime on a thread of its own, for as long as this value lives.
#[derive(Debug)]
pub struct PipelineThread {
    handle: Handle,
    /// Dropped (or sent) to stop the thread: its runtime then drops every task left on it.
    _stop: oneshot::Sender<()>,
}

impl PipelineThread {
    /// Starts the thread and its runtime (I/O and timers enabled).
    pub fn start() -> Result<PipelineThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("the commit pipeline's runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("ferrisdb-pipeline".into())
            .spawn(move || {
                // Either a send or the sender's drop ends the wait.
                let _ = runtime.block_on(stopped);
                // Not waiting for blocking work left behind: the process is stopping this
                // compute, and nothing on this runtime holds data that is not already durable
                // on the safekeepers or answered as unknown.
                runtime.shutdown_background();
            })
            .map_err(|e| Error::internal(format!("starting the commit pipeline's thread: {e}")))?;
        Ok(PipelineThread {
            handle,
            _stop: stop,
        })
    }

    /// Where the pipeline's tasks are spawned.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_the_thread_and_stop_with_it() {
        let thread = PipelineThread::start().unwrap();
        let name = thread
            .handle()
            .spawn(async { std::thread::current().name().map(str::to_string) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("ferrisdb-pipeline"));

        // A task still running when the thread stops is dropped, not leaked.
        let (held, released) = oneshot::channel::<()>();
        thread.handle().spawn(async move {
            let _held = held;
            std::future::pending::<()>().await;
        });
        drop(thread);
        assert!(
            tokio::time::timeout(std::time::Duration::from_secs(5), released)
                .await
                .unwrap()
                .is_err(),
            "the pending task's sender was dropped with its runtime"
        );
    }
}
