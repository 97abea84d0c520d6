//! One attempt at an operation against FerrisDB through the SDK, and what its result means
//! for the history: the fault suite's workloads share this so a refused operation and an
//! unknown one are told apart the same way everywhere.
//!
//! The rule is about what the client can *know*. Anything that went wrong before the commit
//! was sent (a read, the read version, a timeout during the reads) changed nothing: `Fail`.
//! After the commit was sent, only an answer from the compute that says "not committed"
//! (`not_committed`, `transaction_too_old`, and refusals of the request itself) is a `Fail`;
//! everything else — `commit_unknown_result`, `unavailable` or `fenced` mid-commit, a
//! timeout — may have committed: `Info`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ferrisdb_client::{Error, ErrorKind, Transaction};

use crate::history::{Op, Pending, ProcessId};

/// The error code recorded when an attempt ran out of time.
pub const TIMEOUT: &str = "timeout";

/// The error code recorded when a read returned bytes the workload never writes (a value that
/// does not decode). The checker reports every operation that ended with it.
pub const UNPARSEABLE: &str = "unparseable_value";

/// The error code of a compare-and-set that found another value (and so wrote nothing).
pub const CAS_MISMATCH: &str = "cas_mismatch";

/// Process ids are unique across every workload in this process, so two workloads recording
/// into one history never share a process.
static NEXT_PROCESS: AtomicU64 = AtomicU64::new(0);

/// A fresh process id: for a new client, and for a client whose last operation ended `Info`
/// (that operation may still be in flight, so the client continues as another process).
pub fn new_process() -> ProcessId {
    NEXT_PROCESS.fetch_add(1, Ordering::Relaxed)
}

/// Why an attempt did not complete `Ok`.
#[derive(Debug)]
pub enum AttemptError {
    /// The SDK's error, and whether the commit request had been sent when it happened.
    Db {
        /// The error.
        error: Error,
        /// Whether the commit request had been sent.
        commit_sent: bool,
    },
    /// The attempt decided itself that nothing was written (a CAS that found another value,
    /// a value that does not decode); the code says which.
    Refused(&'static str),
}

/// Tracks whether an attempt got as far as sending its commit: the difference between a
/// `Fail` and an `Info` when it then fails or times out.
#[derive(Debug, Clone, Default)]
pub struct CommitSent(Arc<AtomicBool>);

impl CommitSent {
    /// Commits `tx`, noting first that the commit is on its way. A transaction that wrote
    /// nothing commits without a request, so nothing is noted for it.
    pub async fn commit(&self, tx: &Transaction, wrote: bool) -> Result<(), AttemptError> {
        if wrote {
            self.0.store(true, Ordering::SeqCst);
        }
        let sent = self.sent();
        tx.commit()
            .await
            .map(|_| ())
            .map_err(|error| AttemptError::Db {
                error,
                commit_sent: sent,
            })
    }

    /// Whether the commit was sent.
    pub fn sent(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// An SDK error before any commit: nothing was written.
pub fn before_commit(error: Error) -> AttemptError {
    AttemptError::Db {
        error,
        commit_sent: false,
    }
}

/// Whether an error the compute returned for a commit means it certainly did not commit.
fn refused_commit(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::NotCommitted
            | ErrorKind::TransactionTooOld
            | ErrorKind::ReadOnly
            | ErrorKind::InvalidArgument
            | ErrorKind::KeyTooLarge
            | ErrorKind::ValueTooLarge
            | ErrorKind::TransactionTooLarge
            | ErrorKind::DatabaseNotFound
            | ErrorKind::Unauthenticated
    )
}

/// How an attempt ended, for the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// Acknowledged, with the operation as it completed (reads filled in).
    Ok(Op),
    /// Certainly not applied, with the error code.
    Fail(String),
    /// May or may not have been applied, with the error code.
    Info(String),
}

/// Runs `attempt` with a time limit and classifies its result. `sent` must be the
/// [`CommitSent`] the attempt commits through, so a timeout after the commit was sent is
/// `Info` and one before it `Fail`.
pub async fn classify<F>(timeout: Duration, sent: &CommitSent, attempt: F) -> Completion
where
    F: Future<Output = Result<Op, AttemptError>>,
{
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(op)) => Completion::Ok(op),
        Ok(Err(AttemptError::Refused(code))) => Completion::Fail(code.to_string()),
        Ok(Err(AttemptError::Db { error, commit_sent })) => {
            let code = error.kind().code().to_string();
            if !commit_sent || refused_commit(error.kind()) {
                Completion::Fail(code)
            } else {
                Completion::Info(code)
            }
        }
        Err(_) if sent.sent() => Completion::Info(TIMEOUT.to_string()),
        Err(_) => Completion::Fail(TIMEOUT.to_string()),
    }
}

/// Records `completion` on `pending`; returns whether the outcome was `Info`, after which the
/// client must continue as a new process.
pub fn record(pending: Pending, completion: Completion) -> bool {
    match completion {
        Completion::Ok(op) => {
            pending.ok(op);
            false
        }
        Completion::Fail(code) => {
            pending.fail(code);
            false
        }
        Completion::Info(code) => {
            pending.info(code);
            true
        }
    }
}

/// Whether the workload's stop signal has been given (or its sender is gone).
pub fn stopped(stop: &tokio::sync::watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_error(kind: ErrorKind, commit_sent: bool) -> AttemptError {
        AttemptError::Db {
            error: Error::new(kind, "test"),
            commit_sent,
        }
    }

    #[tokio::test]
    async fn errors_before_the_commit_fail_and_uncertain_commits_are_info() {
        let sent = CommitSent::default();
        let t = Duration::from_secs(5);
        let before = classify(t, &sent, async {
            Err(db_error(ErrorKind::Unavailable, false))
        });
        assert_eq!(before.await, Completion::Fail("unavailable".into()));
        let during = classify(t, &sent, async {
            Err(db_error(ErrorKind::Unavailable, true))
        });
        assert_eq!(during.await, Completion::Info("unavailable".into()));
        let unknown = classify(t, &sent, async {
            Err(db_error(ErrorKind::CommitUnknownResult, true))
        });
        assert_eq!(
            unknown.await,
            Completion::Info("commit_unknown_result".into())
        );
        let conflict = classify(t, &sent, async {
            Err(db_error(ErrorKind::NotCommitted, true))
        });
        assert_eq!(conflict.await, Completion::Fail("not_committed".into()));
        let cas = classify(t, &sent, async { Err(AttemptError::Refused(CAS_MISMATCH)) });
        assert_eq!(cas.await, Completion::Fail(CAS_MISMATCH.into()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_is_info_only_once_the_commit_was_sent() {
        let t = Duration::from_millis(10);
        let sent = CommitSent::default();
        let hang = classify(t, &sent, std::future::pending::<Result<Op, AttemptError>>());
        assert_eq!(hang.await, Completion::Fail(TIMEOUT.into()));
        sent.0.store(true, Ordering::SeqCst);
        let hang = classify(t, &sent, std::future::pending::<Result<Op, AttemptError>>());
        assert_eq!(hang.await, Completion::Info(TIMEOUT.into()));
    }
}
