//! The SDK's end of a session (`Database/Session`, docs/session.md): the reads, read-version
//! requests and commits of every transaction on one endpoint travel as messages on one
//! long-lived HTTP/2 stream instead of a stream per call.
//!
//! A caller encodes its request and queues it on the stream itself (no task hop); one driver
//! task per session reads the answers and hands each to its caller by id. The session is
//! opened on first use and again after it ends.
//!
//! What a failure means, which decides whether a commit's outcome is unknown:
//! - the session could not be opened, or the request could not be queued: never sent;
//! - the compute ended the stream with a status or cleanly: it answers every request it read
//!   before it ends, so a request without an answer was never started;
//! - anything else (the connection broke, the answers stopped decoding): the compute may have
//!   run it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use ferrisdb_common::Error;
use ferrisdb_common::error::CODE_METADATA_KEY;
use ferrisdb_common::h2_channel::{H2Channel, StreamSender, grpc_message};
use ferrisdb_common::message_size::MAX_MESSAGE_BYTES;
use ferrisdb_common::proto::session_request::Op;
use ferrisdb_common::proto::session_response::Result as Answer;
use ferrisdb_common::proto::{SessionRequest, SessionResponse};
use tokio::sync::oneshot;
use tonic::codec::{Codec as _, Streaming};

use crate::outgoing::{Outgoing, current_traceparent};

/// The session method's path.
const SESSION_PATH: &str = "/ferrisdb.v1.Database/Session";

/// An operation that got no answer.
#[derive(Debug)]
pub(crate) struct Failure {
    /// What went wrong.
    pub(crate) error: Error,
    /// Whether the compute may have run the operation: the request may have reached it and
    /// no answer says what came of it.
    pub(crate) maybe_started: bool,
}

impl Failure {
    fn not_started(error: Error) -> Failure {
        Failure {
            error,
            maybe_started: false,
        }
    }
}

/// What came of sending an operation in a session.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The compute's answer (which may be its error).
    Answered(Answer),
    /// No answer.
    Failed(Failure),
    /// The compute has no sessions (it predates them): the operation, to send as a unary call.
    Unsupported(Op),
}

/// One endpoint's session, opened on first use and reopened after it ends.
pub(crate) struct Session {
    channel: H2Channel,
    outgoing: Outgoing,
    live: Mutex<Option<Arc<Live>>>,
    /// Set once the compute answered that it has no sessions, or from the start when they
    /// are turned off.
    unsupported: AtomicBool,
    /// Held while opening, so callers arriving meanwhile share the one new session.
    opening: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("channel", &self.channel)
            .field("unsupported", &self.unsupported.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// An open session.
struct Live {
    sender: Mutex<StreamSender>,
    pending: Arc<Mutex<Pending>>,
}

impl Drop for Live {
    fn drop(&mut self) {
        // Nobody can send on it any more: end the request half, so the compute answers what
        // it read and ends the stream, and the driver task ends with it.
        lock(&self.sender).finish();
    }
}

/// The operations of a session waiting for answers.
#[derive(Default)]
struct Pending {
    next_id: u64,
    waiting: HashMap<u64, oneshot::Sender<Result<Answer, Failure>>>,
    /// Set when the answers have ended: nothing more is sent on this session.
    ended: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded state stays consistent however a holder panicked (each update is one
    // insert or remove), so a poisoned lock is taken as is.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Session {
    /// A session over `channel`, opened with `outgoing`'s metadata (the bearer token); never
    /// opened when not `enabled` (every operation is then [`Outcome::Unsupported`]).
    pub(crate) fn new(channel: H2Channel, outgoing: Outgoing, enabled: bool) -> Session {
        Session {
            channel,
            outgoing,
            live: Mutex::new(None),
            unsupported: AtomicBool::new(!enabled),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    /// Sends `op` and waits for its answer.
    pub(crate) async fn call(&self, op: Op) -> Outcome {
        let live = match self.live().await {
            Ok(Some(live)) => live,
            Ok(None) => return Outcome::Unsupported(op),
            Err(failure) => return Outcome::Failed(failure),
        };
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut pending = lock(&live.pending);
            if pending.ended {
                // It ended since we looked; nothing was sent.
                return Outcome::Failed(Failure::not_started(Error::unavailable(
                    "the session ended before the request was sent",
                )));
            }
            pending.next_id += 1;
            let id = pending.next_id;
            pending.waiting.insert(id, tx);
            id
        };
        let request = SessionRequest {
            id,
            op: Some(op),
            traceparent: current_traceparent(),
        };
        let queued = frame(&request).and_then(|data| {
            lock(&live.sender).send(data).map_err(|status| {
                Error::unavailable(format!("queueing a session request: {status}"))
            })
        });
        if let Err(error) = queued {
            lock(&live.pending).waiting.remove(&id);
            return Outcome::Failed(Failure::not_started(error));
        }
        match rx.await {
            Ok(Ok(answer)) => Outcome::Answered(answer),
            Ok(Err(failure)) => Outcome::Failed(failure),
            // The driver is gone without saying why (its runtime stopped).
            Err(_) => Outcome::Failed(Failure {
                error: Error::unavailable("the session ended while the request was in flight"),
                maybe_started: true,
            }),
        }
    }

    /// The open session, a new one, or `None` when the compute has no sessions.
    async fn live(&self) -> Result<Option<Arc<Live>>, Failure> {
        if self.unsupported.load(Ordering::Acquire) {
            return Ok(None);
        }
        if let Some(live) = self.current() {
            return Ok(Some(live));
        }
        let _opening = self.opening.lock().await;
        if self.unsupported.load(Ordering::Acquire) {
            return Ok(None);
        }
        if let Some(live) = self.current() {
            return Ok(Some(live));
        }
        let live = match self.open().await? {
            Some(live) => Arc::new(live),
            None => {
                tracing::info!(endpoint = ?self.channel, "the compute has no sessions: using a call per operation");
                self.unsupported.store(true, Ordering::Release);
                return Ok(None);
            }
        };
        *lock(&self.live) = Some(live.clone());
        Ok(Some(live))
    }

    fn current(&self) -> Option<Arc<Live>> {
        lock(&self.live)
            .as_ref()
            .filter(|live| !lock(&live.pending).ended)
            .cloned()
    }

    /// Opens the stream and starts its driver; `None` when the compute answers that it has
    /// no such method.
    async fn open(&self) -> Result<Option<Live>, Failure> {
        use tonic::service::Interceptor as _;
        let metadata = self
            .outgoing
            .clone()
            .call(tonic::Request::new(()))
            .map_err(|status| Failure::not_started(status.into()))?
            .into_parts()
            .0;
        let (sender, response) = self
            .channel
            .open_stream(SESSION_PATH, metadata)
            .await
            .map_err(|status| Failure::not_started(status.into()))?;
        // A refusal (a bad token, an unknown method) comes in the headers, with no body.
        if let Some(status) = tonic::Status::from_header_map(response.headers())
            && status.code() != tonic::Code::Ok
        {
            let tagged = status.metadata().contains_key(CODE_METADATA_KEY);
            if status.code() == tonic::Code::Unimplemented && !tagged {
                return Ok(None);
            }
            return Err(Failure::not_started(status.into()));
        }
        let (parts, body) = response.into_parts();
        let decoder =
            ferrisdb_common::codec::Codec::<SessionRequest, SessionResponse>::default().decoder();
        let answers =
            Streaming::new_response(decoder, body, parts.status, None, Some(MAX_MESSAGE_BYTES));
        let pending = Arc::new(Mutex::new(Pending::default()));
        tokio::spawn(drive(pending.clone(), answers));
        Ok(Some(Live {
            sender: Mutex::new(sender),
            pending,
        }))
    }
}

/// `request` as one length-prefixed gRPC message.
fn frame(request: &SessionRequest) -> ferrisdb_common::Result<Bytes> {
    // The compute refuses a larger message by ending the whole session; refuse it here, for
    // this operation alone. (A transaction's own size check stops far below this.)
    grpc_message(request, MAX_MESSAGE_BYTES).map_err(|len| {
        Error::invalid(format!(
            "a request of {len} bytes is over the {MAX_MESSAGE_BYTES}-byte message limit"
        ))
    })
}

/// Hands each answer to its caller until the answers end, then fails whoever still waits,
/// saying whether the compute may have run their operations.
async fn drive(pending: Arc<Mutex<Pending>>, mut answers: Streaming<SessionResponse>) {
    let (error, maybe_started) = loop {
        match answers.message().await {
            Ok(Some(answer)) => deliver(&pending, answer),
            // Every request the compute read has its answer (docs/session.md).
            Ok(None) => break (Error::unavailable("the compute ended the session"), false),
            Err(status) => {
                // A FerrisDB code is the compute's own ending (it is shutting down, a request
                // did not decode), sent after every answer. Anything else is the transport.
                let said = status.metadata().contains_key(CODE_METADATA_KEY);
                break (Error::from(status), !said);
            }
        }
    };
    tracing::debug!(%error, maybe_started, "session ended");
    let waiting = {
        let mut pending = lock(&pending);
        pending.ended = true;
        std::mem::take(&mut pending.waiting)
    };
    for (_, caller) in waiting {
        let _ = caller.send(Err(Failure {
            error: error.clone(),
            maybe_started,
        }));
    }
}

fn deliver(pending: &Mutex<Pending>, answer: SessionResponse) {
    let Some(caller) = lock(pending).waiting.remove(&answer.id) else {
        // Not a request of ours in flight (its caller may have given up): nothing to do.
        tracing::debug!(id = answer.id, "an answer nobody waits for");
        return;
    };
    let outcome = answer.result.ok_or_else(|| Failure {
        error: Error::internal("the compute's answer carries no result"),
        maybe_started: true,
    });
    let _ = caller.send(outcome);
}
