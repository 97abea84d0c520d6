//! Client sessions (`Database/Session`): many operations over one long-lived HTTP/2 stream.
//!
//! Why: a unary gRPC call costs the compute ~60k instructions of HTTP/2 and tonic work (a new
//! stream, HPACK, routing, a task, HEADERS, DATA and trailers out) around ~5k of its own work
//! on a point read (docs/benchmarks/request-path-profile.md, fifth round). Inside a session an
//! operation is one message each way on a stream that already exists; answers that are ready
//! together leave in one DATA frame. docs/session.md has the protocol.
//!
//! The stream of answers is itself the driver: each time hyper asks for the next answer it
//! reads whatever requests have arrived, starts them, and yields whichever operation finishes
//! first. Operations therefore run concurrently within a session without a task each, and a
//! client that stops reading answers stops being read from (HTTP/2 flow control does the
//! rest).
//!
//! The one promise the client builds on: **every request read is answered before the stream
//! ends**. So when the stream ends with a status (the client half-closed, a request could not
//! be decoded, or the compute is shutting down), an operation without an answer was never
//! started, and the client may send it again, a commit included. Only a broken connection
//! leaves a commit's outcome unknown.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use ferrisdb_common::Error;
use ferrisdb_common::proto::session_request::Op;
use ferrisdb_common::proto::session_response::Result as Answer;
use ferrisdb_common::proto::{SessionRequest, SessionResponse};
use ferrisdb_server_common::serve::{MAX_STREAMS_PER_CONNECTION, Shutdown};
use ferrisdb_server_common::telemetry;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use tonic::{Status, Streaming};
use tracing::Instrument;

use crate::activity::OpenSession;

/// Operations one session runs at once; past this the compute stops reading its requests
/// until one finishes. The same bound a connection has on unary calls, so a session pins no
/// more of the compute than the streams it replaces could.
pub const MAX_OPERATIONS_IN_FLIGHT: usize = MAX_STREAMS_PER_CONNECTION as usize;

/// One operation running: its answer, or the error that is its answer.
pub type Operation = Pin<Box<dyn Future<Output = ferrisdb_common::Result<Answer>> + Send>>;

/// Starts an operation (the service's own handler for it).
pub type Start = Box<dyn Fn(Op) -> Operation + Send>;

type Running = Pin<Box<dyn Future<Output = SessionResponse> + Send>>;

/// The answers of one session, in the order its operations finish.
pub struct Answers {
    start: Start,
    /// The client's requests; `None` once it half-closed, sent something undecodable, or
    /// shutdown began.
    requests: Option<Streaming<SessionRequest>>,
    running: FuturesUnordered<Running>,
    /// Whether the compute was asked to stop: read at every poll (a flag), checked only
    /// while `requests` is open.
    stop: Shutdown,
    /// Resolves when the compute is asked to stop. Polled only to leave a waker with it, and
    /// only when the task's waker is not the one it already holds (`registered`): polling it
    /// on every poll of the stream cost ~800 instructions per operation, 2.6 % of a point
    /// read's in the compute (docs/benchmarks/request-path-profile.md, fourteenth round).
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// The waker `shutdown` was last polled with.
    registered: Option<Waker>,
    /// The status the stream ends with once every operation read is answered; `None`: OK.
    end: Option<Status>,
    finished: bool,
    _open: OpenSession,
}

impl std::fmt::Debug for Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answers")
            .field("reading", &self.requests.is_some())
            .field("running", &self.running.len())
            .field("finished", &self.finished)
            .finish()
    }
}

impl Answers {
    /// A session answering `requests` with the operations `start` starts, ending on
    /// `shutdown`, counted open while `open` lives.
    pub fn new(
        requests: Streaming<SessionRequest>,
        start: Start,
        shutdown: Shutdown,
        open: OpenSession,
    ) -> Answers {
        Answers {
            start,
            requests: Some(requests),
            running: FuturesUnordered::new(),
            stop: shutdown.clone(),
            shutdown: Box::pin(shutdown.wait()),
            registered: None,
            end: None,
            finished: false,
            _open: open,
        }
    }

    /// Whether the compute was asked to stop, leaving `cx`'s waker to be woken when it is.
    ///
    /// The flag is set before the stop's waiters are woken, so a wake-up from the stop
    /// always finds it set; and the future holds the waker of the last poll that reached it,
    /// so polling it again with the same waker would only re-register what it has.
    fn shutdown_requested(&mut self, cx: &mut Context<'_>) -> bool {
        if self.stop.is_requested() {
            return true;
        }
        let holds_waker = self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if !holds_waker {
            if self.shutdown.as_mut().poll(cx).is_ready() {
                return true;
            }
            self.registered = Some(cx.waker().clone());
        }
        false
    }

    /// Starts every request that has arrived, up to [`MAX_OPERATIONS_IN_FLIGHT`].
    fn read_requests(&mut self, cx: &mut Context<'_>) {
        if self.requests.is_some() && self.shutdown_requested(cx) {
            self.requests = None;
            self.end = Some(
                Error::unavailable(
                    "the compute is shutting down; operations of this session without an \
                     answer were not started",
                )
                .into(),
            );
        }
        while self.running.len() < MAX_OPERATIONS_IN_FLIGHT {
            let Some(requests) = self.requests.as_mut() else {
                return;
            };
            match requests.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(req))) => {
                    let running = answer(&self.start, req);
                    self.running.push(running);
                }
                Poll::Ready(Some(Err(status))) => {
                    // Undecodable or over the size limit: nothing after it can be trusted
                    // to be framed right. Answer what was read, then end with why.
                    self.requests = None;
                    self.end = Some(status);
                }
                Poll::Ready(None) => self.requests = None,
                Poll::Pending => return,
            }
        }
    }
}

impl Stream for Answers {
    type Item = Result<SessionResponse, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        this.read_requests(cx);
        match this.running.poll_next_unpin(cx) {
            Poll::Ready(Some(answer)) => Poll::Ready(Some(Ok(answer))),
            // Nothing running and nothing more to read: every request read is answered.
            Poll::Ready(None) if this.requests.is_none() => {
                this.finished = true;
                Poll::Ready(this.end.take().map(Err))
            }
            _ => Poll::Pending,
        }
    }
}

/// Starts one operation of a session; a failure is its answer, and the session goes on.
fn answer(start: &Start, req: SessionRequest) -> Running {
    let id = req.id;
    let running = req.op.map(|op| {
        let span = telemetry::session_op_span(method(&op), &req.traceparent);
        start(op).instrument(span)
    });
    Box::pin(async move {
        let result = match running {
            None => Err(Error::invalid("a session request must name an operation")),
            Some(running) => running.await,
        };
        SessionResponse {
            id,
            result: Some(result.unwrap_or_else(|e| Answer::Error(e.into()))),
        }
    })
}

/// The unary method an operation stands for, as traces name it.
fn method(op: &Op) -> &'static str {
    match op {
        Op::GetReadVersion(_) => "ferrisdb.v1.Database/GetReadVersion",
        Op::Get(_) => "ferrisdb.v1.Database/Get",
        Op::GetRange(_) => "ferrisdb.v1.Database/GetRange",
        Op::Commit(_) => "ferrisdb.v1.Database/Commit",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use bytes::{BufMut, Bytes, BytesMut};
    use ferrisdb_common::ErrorKind;
    use ferrisdb_common::proto::{
        GetReadVersionRequest, GetReadVersionResponse, GetRequest, GetResponse, SessionError,
    };
    use http_body::Frame;
    use prost::Message;
    use tokio::sync::{mpsc, oneshot};
    use tonic::codec::Codec as _;

    use super::*;
    use crate::activity::Activity;

    /// A request body fed by the test, as the client's half of the stream.
    struct Fed(mpsc::UnboundedReceiver<Bytes>);

    impl http_body::Body for Fed {
        type Data = Bytes;
        type Error = Status;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            self.0.poll_recv(cx).map(|d| d.map(|d| Ok(Frame::data(d))))
        }
    }

    /// Gates that hold a `get` of key `k` until the test releases it.
    type Gates = Arc<Mutex<Vec<(Bytes, oneshot::Receiver<()>)>>>;

    /// A session whose operations are: `get` answers its key as the value (after its gate,
    /// if it has one); `get_read_version` on database "nope" fails with
    /// `database_not_found`, else answers 9. Fed through the returned sender; the oneshot
    /// triggers shutdown.
    fn session(gates: Gates) -> (Answers, mpsc::UnboundedSender<Bytes>, oneshot::Sender<()>) {
        let start: Start = Box::new(move |op| {
            let gate = match &op {
                Op::Get(g) => {
                    let mut gates = gates.lock().unwrap();
                    let at = gates.iter().position(|(k, _)| *k == g.key);
                    at.map(|at| gates.remove(at).1)
                }
                _ => None,
            };
            Box::pin(async move {
                if let Some(gate) = gate {
                    gate.await.unwrap();
                }
                match op {
                    Op::Get(g) => Ok(Answer::Get(GetResponse {
                        value: Some(g.key),
                        read_version: 3,
                    })),
                    Op::GetReadVersion(r) if r.database == "nope" => {
                        Err(Error::new(ErrorKind::DatabaseNotFound, "no such database"))
                    }
                    Op::GetReadVersion(_) => Ok(Answer::GetReadVersion(GetReadVersionResponse {
                        version: 9,
                    })),
                    other => panic!("unscripted {other:?}"),
                }
            })
        });
        let registry = prometheus::Registry::new();
        let activity = Activity::new(tokio::time::Instant::now(), &registry).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = Shutdown::on(async move {
            let _ = stopped.await;
        });
        let (feed, fed) = mpsc::unbounded_channel();
        let decoder =
            ferrisdb_common::codec::Codec::<SessionResponse, SessionRequest>::default().decoder();
        let requests = Streaming::new_request(decoder, Fed(fed), None, None);
        let answers = Answers::new(requests, start, shutdown, activity.session_opened());
        (answers, feed, stop)
    }

    fn frame(msg: &SessionRequest) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_u8(0);
        buf.put_u32(msg.encoded_len() as u32);
        msg.encode(&mut buf).unwrap();
        buf.freeze()
    }

    fn get(id: u64, key: &'static str) -> Bytes {
        frame(&SessionRequest {
            id,
            op: Some(Op::Get(GetRequest {
                database: "db".into(),
                key: Bytes::from_static(key.as_bytes()),
                latest: true,
                ..Default::default()
            })),
            traceparent: String::new(),
        })
    }

    fn read_version(id: u64, database: &str) -> Bytes {
        frame(&SessionRequest {
            id,
            op: Some(Op::GetReadVersion(GetReadVersionRequest {
                database: database.into(),
            })),
            traceparent: "not a traceparent".into(),
        })
    }

    /// An answer as (id, what it says).
    fn said(answer: SessionResponse) -> (u64, String) {
        let what = match answer.result {
            Some(Answer::Error(SessionError { code, .. })) => code,
            Some(Answer::Get(g)) => format!(
                "value {}",
                String::from_utf8(g.value.unwrap().to_vec()).unwrap()
            ),
            Some(Answer::GetReadVersion(r)) => format!("version {}", r.version),
            other => panic!("unexpected {other:?}"),
        };
        (answer.id, what)
    }

    async fn next(answers: &mut Answers) -> Option<Result<SessionResponse, Status>> {
        tokio::time::timeout(Duration::from_secs(10), answers.next())
            .await
            .expect("the session answers")
    }

    async fn next_said(answers: &mut Answers) -> (u64, String) {
        said(next(answers).await.unwrap().unwrap())
    }

    #[tokio::test]
    async fn every_request_is_answered_by_id_and_then_the_stream_ends() {
        let (mut answers, feed, _stop) = session(Gates::default());
        // Four requests in one chunk, one of them naming no operation, one failing, the
        // last split across two chunks.
        let mut chunk = BytesMut::new();
        chunk.extend_from_slice(&get(7, "a"));
        chunk.extend_from_slice(&frame(&SessionRequest {
            id: 8,
            op: None,
            traceparent: String::new(),
        }));
        chunk.extend_from_slice(&read_version(0, "nope"));
        let split = read_version(u64::MAX, "db");
        chunk.extend_from_slice(&split[..3]);
        feed.send(chunk.freeze()).unwrap();
        feed.send(split.slice(3..)).unwrap();
        drop(feed); // the client half-closes
        let mut got = Vec::new();
        while let Some(answer) = next(&mut answers).await {
            got.push(said(answer.unwrap()));
        }
        got.sort();
        let want = [
            (0, "database_not_found".to_string()),
            (7, "value a".to_string()),
            (8, "invalid_argument".to_string()),
            (u64::MAX, "version 9".to_string()),
        ];
        assert_eq!(got, want);
        // Ended cleanly, and stays ended.
        assert!(next(&mut answers).await.is_none());
    }

    /// A session running a held `get` of "slow" (request 1) that has already answered a
    /// `get` of "fast" (request 2) sent after it; the last sender opens the gate.
    async fn slow_then_fast() -> (
        Answers,
        mpsc::UnboundedSender<Bytes>,
        oneshot::Sender<()>,
        oneshot::Sender<()>,
    ) {
        let gates = Gates::default();
        let (open, gate) = oneshot::channel();
        gates
            .lock()
            .unwrap()
            .push((Bytes::from_static(b"slow"), gate));
        let (mut answers, feed, stop) = session(gates);
        feed.send(get(1, "slow")).unwrap();
        feed.send(get(2, "fast")).unwrap();
        assert_eq!(next_said(&mut answers).await, (2, "value fast".into()));
        (answers, feed, stop, open)
    }

    #[tokio::test]
    async fn a_slow_operation_holds_up_no_other() {
        let (mut answers, feed, _stop, open) = slow_then_fast().await;
        feed.send(read_version(3, "db")).unwrap();
        assert_eq!(next_said(&mut answers).await, (3, "version 9".into()));
        open.send(()).unwrap();
        assert_eq!(next_said(&mut answers).await, (1, "value slow".into()));
    }

    #[tokio::test]
    async fn shutdown_stops_reading_answers_what_it_read_and_ends_with_unavailable() {
        let (mut answers, feed, stop, open) = slow_then_fast().await;
        stop.send(()).unwrap();
        // Let the shutdown request land before the next request does.
        tokio::time::sleep(Duration::from_millis(50)).await;
        feed.send(get(3, "late")).unwrap();
        // The operation it had started still gets its answer...
        open.send(()).unwrap();
        assert_eq!(next_said(&mut answers).await, (1, "value slow".into()));
        // ...then the stream ends with a FerrisDB code, so the client knows request 3 never
        // started.
        let end = ferrisdb_common::Error::from(next(&mut answers).await.unwrap().unwrap_err());
        assert_eq!(end.kind(), ErrorKind::Unavailable, "{end}");
        assert!(next(&mut answers).await.is_none());
    }

    #[tokio::test]
    async fn an_idle_session_is_woken_by_shutdown_alone_and_ends_with_unavailable() {
        let (mut answers, feed, stop) = session(Gates::default());
        feed.send(get(1, "a")).unwrap();
        assert_eq!(next_said(&mut answers).await, (1, "value a".into()));
        // Idle: a poll leaves its waker with the shutdown and returns pending; a second poll
        // with the same waker skips the registration and is pending too.
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut answers).poll_next(&mut cx).is_pending());
        assert!(Pin::new(&mut answers).poll_next(&mut cx).is_pending());
        // Only the shutdown can wake it now: no request comes, none is running.
        let ended = tokio::spawn(async move { next(&mut answers).await.map(|r| r.map(|_| ())) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!ended.is_finished(), "nothing has happened yet");
        stop.send(()).unwrap();
        let end = tokio::time::timeout(Duration::from_secs(5), ended)
            .await
            .expect("the shutdown woke the session")
            .unwrap();
        let end = ferrisdb_common::Error::from(end.unwrap().unwrap_err());
        assert_eq!(end.kind(), ErrorKind::Unavailable, "{end}");
        // Held open until here: a closed request stream would end the session by itself.
        drop(feed);
    }

    #[tokio::test]
    async fn an_undecodable_request_ends_the_session_after_the_answers_before_it() {
        let (mut answers, feed, _stop) = session(Gates::default());
        let mut chunk = BytesMut::from(&get(1, "a")[..]);
        // A frame whose body is not a SessionRequest.
        chunk.extend_from_slice(&[0, 0, 0, 0, 3, 0xff, 0xff, 0xff]);
        chunk.extend_from_slice(&get(2, "b"));
        feed.send(chunk.freeze()).unwrap();
        assert_eq!(next_said(&mut answers).await, (1, "value a".into()));
        let end = ferrisdb_common::Error::from(next(&mut answers).await.unwrap().unwrap_err());
        assert_eq!(end.kind(), ErrorKind::InvalidArgument, "{end}");
        // Nothing after the bad frame was run.
        assert!(next(&mut answers).await.is_none());
    }
}
