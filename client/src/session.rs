//! The SDK's end of a session (`Database/Session`, docs/session.md): the reads, read-version
//! requests and commits of every transaction on one endpoint travel as messages on one
//! long-lived HTTP/2 stream instead of a stream per call.
//!
//! A caller encodes its request and queues it on the stream itself (no task hop), and the
//! callers waiting for answers read them in turn, each handing what it reads to its caller by
//! id until its own comes (see [`State`]): no task stands between the connection and the
//! callers. The session is opened on first use and again after it ends.
//!
//! What a failure means, which decides whether a commit's outcome is unknown:
//! - the session could not be opened, or the request could not be queued: never sent;
//! - the compute ended the stream with a status or cleanly: it answers every request it read
//!   before it ends, so a request without an answer was never started;
//! - anything else (the connection broke, the answers stopped decoding): the compute may have
//!   run it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use ferrisdb_common::Error;
use ferrisdb_common::error::CODE_METADATA_KEY;
use ferrisdb_common::h2_channel::{H2Channel, StreamSender, grpc_message};
use ferrisdb_common::message_size::MAX_MESSAGE_BYTES;
use ferrisdb_common::proto::session_request::Op;
use ferrisdb_common::proto::session_response::Result as Answer;
use ferrisdb_common::proto::{SessionRequest, SessionResponse};
use futures::StreamExt as _;
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
    state: Mutex<State>,
}

impl Drop for Live {
    fn drop(&mut self) {
        // Nobody can send on it any more: end the request half, so the compute answers what
        // it read and ends the stream.
        lock(&self.sender).finish();
    }
}

/// What the callers of one session share.
///
/// There is no task reading the answers: the callers waiting for answers take turns at it.
/// Whoever finds the answers free takes them and reads, handing each answer to its caller,
/// until its own comes; then it puts them back and wakes one caller still waiting, which
/// takes them next. With one operation in flight (a client per connection, the common case)
/// the caller reads its own answer, and the connection task wakes it directly: one wake-up
/// per operation fewer than a driver task in between (docs/session.md).
#[derive(Default)]
struct State {
    next_id: u64,
    /// The operations sent and not yet returned to their callers.
    waiting: HashMap<u64, Slot>,
    /// The answers, while no caller is reading them.
    answers: Option<Streaming<SessionResponse>>,
    /// Set when the answers have ended: nothing more is sent on this session.
    ended: bool,
}

/// One operation in flight: its outcome once some caller has read it, and how to wake its
/// caller for the outcome or for a turn at reading.
#[derive(Default)]
struct Slot {
    outcome: Option<Result<Answer, Failure>>,
    waker: Option<Waker>,
}

impl State {
    /// Hands `answer` to its caller; one nobody waits for (its caller gave up) is dropped.
    fn deliver(&mut self, answer: SessionResponse) {
        let Some(slot) = self.waiting.get_mut(&answer.id) else {
            tracing::debug!(id = answer.id, "an answer nobody waits for");
            return;
        };
        slot.outcome = Some(outcome_of(answer));
        if let Some(waker) = slot.waker.take() {
            waker.wake();
        }
    }

    /// The answers have ended: every caller still waiting fails with `error`.
    fn end(&mut self, error: &Error, maybe_started: bool) {
        self.ended = true;
        self.answers = None;
        for slot in self.waiting.values_mut() {
            if slot.outcome.is_none() {
                slot.outcome = Some(Err(Failure {
                    error: error.clone(),
                    maybe_started,
                }));
            }
            if let Some(waker) = slot.waker.take() {
                waker.wake();
            }
        }
    }

    /// The answers ended with `status` (`None`: cleanly; see [`ending`]): every caller still
    /// waiting fails, and so does the one that found the end.
    fn close(&mut self, status: Option<tonic::Status>) -> Failure {
        let (error, maybe_started) = ending(status);
        tracing::debug!(%error, maybe_started, "session ended");
        self.end(&error, maybe_started);
        Failure {
            error,
            maybe_started,
        }
    }

    /// With the answers free, wakes one caller still waiting for its answer, to read them.
    fn hand_over(&mut self) {
        if self.answers.is_none() {
            return;
        }
        if let Some(waker) = self
            .waiting
            .values_mut()
            .find(|slot| slot.outcome.is_none() && slot.waker.is_some())
            .and_then(|slot| slot.waker.take())
        {
            waker.wake();
        }
    }

    /// Whether the session is still open. With nobody reading, the answers are looked at
    /// once without waiting: a session the compute ended, or whose connection broke, while
    /// no operation was in flight is found ended here, before anything is sent on it.
    fn open(&mut self) -> bool {
        if self.ended {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            let Some(answers) = self.answers.as_mut() else {
                return true;
            };
            match answers.poll_next_unpin(&mut cx) {
                Poll::Pending => return true,
                Poll::Ready(Some(Ok(answer))) => self.deliver(answer),
                Poll::Ready(end) => {
                    self.close(end.and_then(Result::err));
                    return false;
                }
            }
        }
    }
}

/// What an answer says: the compute's result, or, with none, an internal error.
fn outcome_of(answer: SessionResponse) -> Result<Answer, Failure> {
    answer.result.ok_or_else(|| Failure {
        error: Error::internal("the compute's answer carries no result"),
        maybe_started: true,
    })
}

/// What the end of the answers (`None`: the stream ended cleanly; else the status it ended
/// with) means for the operations without an answer: the error, and whether the compute may
/// have run them.
fn ending(status: Option<tonic::Status>) -> (Error, bool) {
    match status {
        // Every request the compute read has its answer (docs/session.md).
        None => (Error::unavailable("the compute ended the session"), false),
        Some(status) => {
            // A FerrisDB code is the compute's own ending (it is shutting down, a request did
            // not decode), sent after every answer. Anything else is the transport.
            let said = status.metadata().contains_key(CODE_METADATA_KEY);
            (Error::from(status), !said)
        }
    }
}

/// The answer to operation `id` of `live`: read by this caller when the answers are free,
/// else handed over by whichever caller reads them.
struct AnswerOf<'a> {
    live: &'a Live,
    id: u64,
    /// The answers, while this caller reads them.
    reading: Option<Streaming<SessionResponse>>,
    /// Whether the outcome was returned (the slot is gone).
    done: bool,
}

impl AnswerOf<'_> {
    /// Returns with `outcome` (see [`AnswerOf::leave`]).
    fn finish(&mut self, outcome: Result<Answer, Failure>) -> Poll<Result<Answer, Failure>> {
        self.leave();
        Poll::Ready(outcome)
    }

    /// Gives up this operation's place: puts the answers back if this caller read them, and
    /// passes the turn at reading on.
    fn leave(&mut self) {
        let mut state = lock(&self.live.state);
        state.waiting.remove(&self.id);
        if let Some(answers) = self.reading.take()
            && !state.ended
        {
            state.answers = Some(answers);
        }
        state.hand_over();
        self.done = true;
    }
}

impl Future for AnswerOf<'_> {
    type Output = Result<Answer, Failure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.reading.is_none() {
            let mut state = lock(&this.live.state);
            let State {
                waiting, answers, ..
            } = &mut *state;
            let Some(slot) = waiting.get_mut(&this.id) else {
                drop(state);
                return this.finish(Err(lost()));
            };
            if let Some(outcome) = slot.outcome.take() {
                drop(state);
                return this.finish(outcome);
            }
            match answers.take() {
                Some(free) => this.reading = Some(free),
                None => {
                    if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        slot.waker = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
            }
        }
        // This caller reads: hand each answer to its caller until ours comes.
        loop {
            let Some(answers) = this.reading.as_mut() else {
                return this.finish(Err(lost()));
            };
            match answers.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(answer))) if answer.id == this.id => {
                    return this.finish(outcome_of(answer));
                }
                Poll::Ready(Some(Ok(answer))) => lock(&this.live.state).deliver(answer),
                Poll::Ready(end) => {
                    this.reading = None;
                    let failure = lock(&this.live.state).close(end.and_then(Result::err));
                    return this.finish(Err(failure));
                }
            }
        }
    }
}

/// An operation whose place in its session is gone: a bug, reported rather than waited on.
fn lost() -> Failure {
    Failure {
        error: Error::internal("a session operation lost its place"),
        maybe_started: true,
    }
}

impl Drop for AnswerOf<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // The caller gave up: its answer will be dropped when read, and if it was reading,
        // the answers go back for someone else.
        self.leave();
    }
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
        let id = {
            let mut state = lock(&live.state);
            if state.ended {
                // It ended since we looked; nothing was sent.
                return Outcome::Failed(Failure::not_started(Error::unavailable(
                    "the session ended before the request was sent",
                )));
            }
            state.next_id += 1;
            let id = state.next_id;
            state.waiting.insert(id, Slot::default());
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
            let mut state = lock(&live.state);
            state.waiting.remove(&id);
            state.hand_over();
            return Outcome::Failed(Failure::not_started(error));
        }
        let answer = AnswerOf {
            live: &live,
            id,
            reading: None,
            done: false,
        };
        match answer.await {
            Ok(answer) => Outcome::Answered(answer),
            Err(failure) => Outcome::Failed(failure),
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
            .filter(|live| lock(&live.state).open())
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
        Ok(Some(Live {
            sender: Mutex::new(sender),
            state: Mutex::new(State {
                answers: Some(answers),
                ..State::default()
            }),
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
