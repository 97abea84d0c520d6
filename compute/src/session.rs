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
use std::task::{Context, Poll};

use ferrisdb_common::Error;
use ferrisdb_common::proto::session_request::Op;
use ferrisdb_common::proto::session_response::Result as Answer;
use ferrisdb_common::proto::{SessionRequest, SessionResponse};
use ferrisdb_server_common::serve::MAX_STREAMS_PER_CONNECTION;
use ferrisdb_server_common::telemetry;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use tonic::{Status, Streaming};
use tracing::Instrument;

use crate::activity::OpenSession;
use crate::service::ComputeService;

/// Operations one session runs at once; past this the compute stops reading its requests
/// until one finishes. The same bound a connection has on unary calls, so a session pins no
/// more of the compute than the streams it replaces could.
pub const MAX_OPERATIONS_IN_FLIGHT: usize = MAX_STREAMS_PER_CONNECTION as usize;

type Running = Pin<Box<dyn Future<Output = SessionResponse> + Send>>;

/// The answers of one session, in the order its operations finish.
pub struct Answers {
    service: ComputeService,
    /// The client's requests; `None` once it half-closed, sent something undecodable, or
    /// shutdown began.
    requests: Option<Streaming<SessionRequest>>,
    running: FuturesUnordered<Running>,
    /// Resolves when the compute is asked to stop; polled only while `requests` is open.
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
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
    /// A session answering `requests` through `service`.
    pub(crate) fn new(service: ComputeService, requests: Streaming<SessionRequest>) -> Answers {
        let shutdown = Box::pin(service.shutdown().wait());
        let _open = service.activity().session_opened();
        Answers {
            _open,
            service,
            requests: Some(requests),
            running: FuturesUnordered::new(),
            shutdown,
            end: None,
            finished: false,
        }
    }

    /// Starts every request that has arrived, up to [`MAX_OPERATIONS_IN_FLIGHT`].
    fn read_requests(&mut self, cx: &mut Context<'_>) {
        if self.requests.is_some() && self.shutdown.as_mut().poll(cx).is_ready() {
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
                    self.service.activity().session_operation();
                    self.running
                        .push(Box::pin(answer(self.service.clone(), req)));
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

/// Runs one operation of a session; a failure is its answer, and the session goes on.
async fn answer(service: ComputeService, req: SessionRequest) -> SessionResponse {
    let id = req.id;
    let result = match req.op {
        None => Err(Error::invalid("a session request must name an operation")),
        Some(op) => {
            let span = telemetry::session_op_span(method(&op), &req.traceparent);
            run(&service, op).instrument(span).await
        }
    };
    SessionResponse {
        id,
        result: Some(result.unwrap_or_else(|e| Answer::Error(e.into()))),
    }
}

async fn run(service: &ComputeService, op: Op) -> ferrisdb_common::Result<Answer> {
    Ok(match op {
        Op::GetReadVersion(r) => Answer::GetReadVersion(service.read_version(r).await?),
        Op::Get(r) => Answer::Get(service.get(r).await?),
        Op::GetRange(r) => Answer::GetRange(service.get_range(r).await?),
        Op::Commit(r) => Answer::Commit(service.commit(r).await?),
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

    use std::sync::Arc;
    use std::time::Duration;

    use bytes::{BufMut, Bytes, BytesMut};
    use ferrisdb_common::ErrorKind;
    use ferrisdb_common::proto::pageserver_client::PageserverClient;
    use ferrisdb_common::proto::{GetReadVersionRequest, GetRequest, SessionError};
    use ferrisdb_server_common::serve::Shutdown;
    use http_body::Frame;
    use prost::Message;
    use tokio::sync::mpsc;
    use tonic::codec::Codec as _;

    use super::*;
    use crate::activity::Activity;
    use crate::databases::Databases;

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

    /// A compute serving no database (every operation fails fast with `database_not_found`,
    /// which is all the session's mechanics need), its session fed through the returned
    /// sender, and the trigger of its shutdown.
    fn session() -> (
        Answers,
        mpsc::UnboundedSender<Bytes>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let metrics = crate::metrics::Metrics::new().unwrap();
        let pageserver = PageserverClient::new(
            ferrisdb_server_common::auth::call_channel("http://127.0.0.1:9").unwrap(),
        );
        let databases = Databases::new("db".into(), Vec::new(), pageserver, metrics.clone());
        let activity =
            Arc::new(Activity::new(tokio::time::Instant::now(), &metrics.registry).unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = Shutdown::on(async move {
            let _ = stopped.await;
        });
        let service = ComputeService::new(databases, activity, shutdown);
        let (feed, fed) = mpsc::unbounded_channel();
        let decoder =
            ferrisdb_common::codec::Codec::<SessionResponse, SessionRequest>::default().decoder();
        let requests = Streaming::new_request(decoder, Fed(fed), None, None);
        (Answers::new(service, requests), feed, stop)
    }

    fn frame(msg: &SessionRequest) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_u8(0);
        buf.put_u32(msg.encoded_len() as u32);
        msg.encode(&mut buf).unwrap();
        buf.freeze()
    }

    fn get(id: u64, database: &str) -> Bytes {
        frame(&SessionRequest {
            id,
            op: Some(Op::Get(GetRequest {
                database: database.into(),
                key: Bytes::from_static(b"k"),
                latest: true,
                ..Default::default()
            })),
            traceparent: String::new(),
        })
    }

    fn error_of(answer: SessionResponse) -> (u64, ErrorKind) {
        match answer.result {
            Some(Answer::Error(SessionError { code, .. })) => {
                (answer.id, ErrorKind::from_code(&code).unwrap())
            }
            other => panic!("expected an error answer, got {other:?}"),
        }
    }

    async fn next(answers: &mut Answers) -> Option<Result<SessionResponse, Status>> {
        tokio::time::timeout(Duration::from_secs(10), answers.next())
            .await
            .expect("the session answers")
    }

    #[tokio::test]
    async fn every_request_is_answered_by_id_and_then_the_stream_ends() {
        let (mut answers, feed, _stop) = session();
        // Three requests in one chunk, one of them naming no operation, one split across
        // two chunks.
        let mut chunk = BytesMut::new();
        chunk.extend_from_slice(&get(7, "nope"));
        chunk.extend_from_slice(&frame(&SessionRequest {
            id: 8,
            op: None,
            traceparent: String::new(),
        }));
        let split = frame(&SessionRequest {
            id: u64::MAX,
            op: Some(Op::GetReadVersion(GetReadVersionRequest {
                database: "other".into(),
            })),
            traceparent: "not a traceparent".into(),
        });
        chunk.extend_from_slice(&split[..3]);
        feed.send(chunk.freeze()).unwrap();
        feed.send(split.slice(3..)).unwrap();
        drop(feed); // the client half-closes
        let mut got = Vec::new();
        while let Some(answer) = next(&mut answers).await {
            got.push(error_of(answer.unwrap()));
        }
        got.sort_by_key(|(id, _)| *id);
        assert_eq!(
            got,
            [
                (7, ErrorKind::DatabaseNotFound),
                (8, ErrorKind::InvalidArgument),
                (u64::MAX, ErrorKind::DatabaseNotFound),
            ]
        );
        // Ended cleanly, and stays ended.
        assert!(next(&mut answers).await.is_none());
    }

    #[tokio::test]
    async fn shutdown_stops_reading_and_ends_the_session_with_unavailable() {
        let (mut answers, feed, stop) = session();
        feed.send(get(1, "nope")).unwrap();
        assert_eq!(error_of(next(&mut answers).await.unwrap().unwrap()).0, 1);
        stop.send(()).unwrap();
        // Let the shutdown request land before the next request does.
        tokio::time::sleep(Duration::from_millis(50)).await;
        feed.send(get(2, "nope")).unwrap();
        let end = next(&mut answers).await.unwrap().unwrap_err();
        // A FerrisDB code: the client knows the unanswered request 2 never started.
        let end = ferrisdb_common::Error::from(end);
        assert_eq!(end.kind(), ErrorKind::Unavailable, "{end}");
        assert!(next(&mut answers).await.is_none());
    }

    #[tokio::test]
    async fn an_undecodable_request_ends_the_session_after_the_answers_before_it() {
        let (mut answers, feed, _stop) = session();
        let mut chunk = BytesMut::from(&get(1, "nope")[..]);
        // A frame whose body is not a SessionRequest.
        chunk.extend_from_slice(&[0, 0, 0, 0, 3, 0xff, 0xff, 0xff]);
        chunk.extend_from_slice(&get(2, "nope"));
        feed.send(chunk.freeze()).unwrap();
        assert_eq!(error_of(next(&mut answers).await.unwrap().unwrap()).0, 1);
        let end = ferrisdb_common::Error::from(next(&mut answers).await.unwrap().unwrap_err());
        assert_eq!(end.kind(), ErrorKind::InvalidArgument, "{end}");
        // Nothing after the bad frame was run.
        assert!(next(&mut answers).await.is_none());
    }
}
