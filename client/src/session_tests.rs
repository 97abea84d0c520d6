//! The SDK's session against a scripted compute (a bare HTTP/2 server): answers matched by id
//! whatever their order, what each way a session can end means for a commit, the fallback to
//! unary calls for a compute without sessions, and a refusal at open.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ferrisdb_common::proto::session_request::Op;
use ferrisdb_common::proto::session_response::Result as Answer;
use ferrisdb_common::proto::{
    GetReadVersionResponse, GetResponse, SessionRequest, SessionResponse,
};
use prost::Message;
use tokio::net::TcpListener;
use tonic::codegen::http::{self, Response};

use crate::{Database, ErrorKind, Version};

/// How the scripted compute treats a session.
#[derive(Debug, Clone, Copy)]
enum Script {
    /// Reads `n` requests, then answers them in reverse order (a get with its key as the
    /// value) and goes on answering one by one.
    Reversed(usize),
    /// Reads `n` requests, waits the given time, then answers them in the order they came
    /// and goes on answering one by one.
    InOrder(usize, Duration),
    /// Reads one request, answers it, then ends the stream with FerrisDB's `unavailable`
    /// while nothing is in flight.
    AnswersOneThenEnds,
    /// Reads one request, then ends the stream with FerrisDB's `unavailable` (as a compute
    /// shutting down does) without answering it.
    EndsWithStatus,
    /// Reads one request, then drops the whole connection.
    Breaks,
    /// Refuses the method in its headers, as a compute that predates sessions does.
    Unimplemented,
    /// Refuses the call in its headers with FerrisDB's `unauthenticated`.
    Unauthenticated,
}

struct Fake {
    url: String,
    sessions: Arc<AtomicUsize>,
    unary: Arc<AtomicUsize>,
}

/// A compute at a loopback port treating its `i`th session as `scripts[i]` (the last one
/// repeats). Unary `GetReadVersion` calls answer version 7.
async fn fake(scripts: Vec<Script>) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sessions = Arc::new(AtomicUsize::new(0));
    let unary = Arc::new(AtomicUsize::new(0));
    let (s, u) = (sessions.clone(), unary.clone());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (s, u, scripts) = (s.clone(), u.clone(), scripts.clone());
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(tcp).await.unwrap();
                let (broken_tx, mut broken) = tokio::sync::mpsc::channel::<()>(1);
                loop {
                    let accepted = tokio::select! {
                        a = conn.accept() => a,
                        // Dropping the connection is how `Breaks` breaks it.
                        _ = broken.recv() => return,
                    };
                    let Some(Ok((req, respond))) = accepted else {
                        return;
                    };
                    if req.uri().path() == "/ferrisdb.v1.Database/Session" {
                        let i = s.fetch_add(1, Ordering::SeqCst);
                        let script = scripts[i.min(scripts.len() - 1)];
                        tokio::spawn(session(script, req, respond, broken_tx.clone()));
                    } else {
                        u.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(unary_read_version(respond));
                    }
                }
            });
        }
    });
    Fake {
        url,
        sessions,
        unary,
    }
}

fn grpc_frame(msg: &impl Message) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_u8(0);
    buf.put_u32(msg.encoded_len() as u32);
    msg.encode(&mut buf).unwrap();
    buf.freeze()
}

fn trailers(status: u32, code: Option<&str>) -> http::HeaderMap {
    let mut t = http::HeaderMap::new();
    t.insert("grpc-status", status.to_string().parse().unwrap());
    if let Some(code) = code {
        t.insert("ferrisdb-code", code.parse().unwrap());
        t.insert("grpc-message", "scripted".parse().unwrap());
    }
    t
}

fn grpc_response() -> Response<()> {
    Response::builder()
        .header("content-type", "application/grpc")
        .body(())
        .unwrap()
}

async fn unary_read_version(mut respond: h2::server::SendResponse<Bytes>) {
    let mut send = respond.send_response(grpc_response(), false).unwrap();
    send.send_data(grpc_frame(&GetReadVersionResponse { version: 7 }), false)
        .unwrap();
    send.send_trailers(trailers(0, None)).unwrap();
}

/// Reads session requests off `body` as they arrive.
struct Requests {
    body: h2::RecvStream,
    buf: BytesMut,
}

impl Requests {
    async fn next(&mut self) -> Option<SessionRequest> {
        loop {
            if self.buf.len() >= 5 {
                let len = (&self.buf[1..5]).get_u32() as usize;
                if self.buf.len() >= 5 + len {
                    let mut frame = self.buf.split_to(5 + len);
                    frame.advance(5);
                    return Some(SessionRequest::decode(frame.freeze()).unwrap());
                }
            }
            let chunk = self.body.data().await?.ok()?;
            let _ = self.body.flow_control().release_capacity(chunk.len());
            self.buf.extend_from_slice(&chunk);
        }
    }
}

fn answer_to(req: SessionRequest) -> SessionResponse {
    let result = match req.op.unwrap() {
        Op::Get(g) => Answer::Get(GetResponse {
            value: Some(g.key),
            read_version: 5,
        }),
        Op::GetReadVersion(_) => Answer::GetReadVersion(GetReadVersionResponse { version: 5 }),
        other => panic!("unscripted {other:?}"),
    };
    SessionResponse {
        id: req.id,
        result: Some(result),
    }
}

async fn session(
    script: Script,
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    broken: tokio::sync::mpsc::Sender<()>,
) {
    let refuse = |status: u32, code: Option<&str>| {
        let mut r = grpc_response();
        r.headers_mut().extend(trailers(status, code));
        r
    };
    match script {
        Script::Unimplemented => {
            respond.send_response(refuse(12, None), true).unwrap();
            return;
        }
        Script::Unauthenticated => {
            respond
                .send_response(refuse(16, Some("unauthenticated")), true)
                .unwrap();
            return;
        }
        _ => {}
    }
    let mut send = respond.send_response(grpc_response(), false).unwrap();
    let mut requests = Requests {
        body: req.into_body(),
        buf: BytesMut::new(),
    };
    match script {
        Script::Reversed(n) => {
            let mut first = Vec::new();
            for _ in 0..n {
                first.push(requests.next().await.unwrap());
            }
            for req in first.into_iter().rev() {
                send.send_data(grpc_frame(&answer_to(req)), false).unwrap();
            }
            while let Some(req) = requests.next().await {
                send.send_data(grpc_frame(&answer_to(req)), false).unwrap();
            }
            send.send_trailers(trailers(0, None)).unwrap();
        }
        Script::InOrder(n, wait) => {
            let mut first = Vec::new();
            for _ in 0..n {
                first.push(requests.next().await.unwrap());
            }
            tokio::time::sleep(wait).await;
            for req in first {
                send.send_data(grpc_frame(&answer_to(req)), false).unwrap();
            }
            while let Some(req) = requests.next().await {
                send.send_data(grpc_frame(&answer_to(req)), false).unwrap();
            }
            send.send_trailers(trailers(0, None)).unwrap();
        }
        Script::AnswersOneThenEnds => {
            let req = requests.next().await.unwrap();
            send.send_data(grpc_frame(&answer_to(req)), false).unwrap();
            send.send_trailers(trailers(14, Some("unavailable")))
                .unwrap();
        }
        Script::EndsWithStatus => {
            requests.next().await.unwrap();
            send.send_trailers(trailers(14, Some("unavailable")))
                .unwrap();
        }
        Script::Breaks => {
            requests.next().await.unwrap();
            broken.send(()).await.unwrap();
        }
        Script::Unimplemented | Script::Unauthenticated => unreachable!(),
    }
}

async fn connect(url: &str) -> Database {
    Database::connect(url).await.unwrap()
}

#[tokio::test]
async fn answers_reach_their_callers_whatever_their_order() {
    let fake = fake(vec![Script::Reversed(16)]).await;
    let db = connect(&fake.url).await;
    let reads = (0..16).map(|i| {
        let db = db.clone();
        async move {
            let key = format!("key-{i:02}");
            let value = db.create_transaction().get(key.clone()).await.unwrap();
            assert_eq!(value.as_deref(), Some(key.as_bytes()));
        }
    });
    tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(reads))
        .await
        .expect("every read answered");
    // And the session goes on: one more read on the same stream.
    let tx = db.create_transaction();
    assert_eq!(tx.get("last").await.unwrap().as_deref(), Some(&b"last"[..]));
    assert_eq!(tx.read_version().await.unwrap(), Version(5));
    assert_eq!(
        fake.sessions.load(Ordering::SeqCst),
        1,
        "one session for all"
    );
    assert_eq!(fake.unary.load(Ordering::SeqCst), 0);
}

/// The first caller reads the answers, and its own comes first: it must pass the reading on,
/// or everyone else waits forever (no task reads for them).
#[tokio::test]
async fn a_reader_whose_answer_comes_first_hands_the_rest_on() {
    let fake = fake(vec![Script::InOrder(16, Duration::ZERO)]).await;
    let db = connect(&fake.url).await;
    // A task each: a caller is polled only when its own waker is woken (callers joined in
    // one task would all be polled at every wake-up, and find the answers free by luck).
    let reads: Vec<_> = (0..16)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                let key = format!("key-{i:02}");
                let value = db.create_transaction().get(key.clone()).await.unwrap();
                assert_eq!(value.as_deref(), Some(key.as_bytes()));
            })
        })
        .collect();
    for read in tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(reads))
        .await
        .expect("every read answered")
    {
        read.unwrap();
    }
    assert_eq!(fake.sessions.load(Ordering::SeqCst), 1);
}

/// A caller that gives up while it reads the answers puts them back and wakes another.
#[tokio::test]
async fn a_reader_that_gives_up_leaves_the_answers_to_the_others() {
    // Two requests, answered in order 2 s after the compute has both.
    let fake = fake(vec![Script::InOrder(2, Duration::from_secs(2))]).await;
    let db = connect(&fake.url).await;
    let (a, b) = (db.create_transaction(), db.create_transaction());
    let first = tokio::spawn(async move { a.get("first").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = tokio::spawn(async move { b.get("second").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The first (the one reading) gives up before any answer; the second, waiting on its own
    // task, must be woken to read.
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    let second = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second caller was answered")
        .unwrap();
    assert_eq!(second.unwrap().as_deref(), Some(&b"second"[..]));
    assert_eq!(fake.sessions.load(Ordering::SeqCst), 1);
}

/// A session the compute ends while nothing is in flight is found ended before the next
/// operation is sent on it: that operation goes on a new session and succeeds.
#[tokio::test]
async fn a_session_ended_while_idle_is_replaced_before_the_next_operation() {
    let fake = fake(vec![Script::AnswersOneThenEnds, Script::Reversed(1)]).await;
    let db = connect(&fake.url).await;
    let value = db.create_transaction().get("one").await.unwrap();
    assert_eq!(value.as_deref(), Some(&b"one"[..]));
    // Let the ending reach the client.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let value = db.create_transaction().get("two").await.unwrap();
    assert_eq!(value.as_deref(), Some(&b"two"[..]));
    assert_eq!(fake.sessions.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_session_the_compute_ends_leaves_a_commit_not_started_and_reopens() {
    let fake = fake(vec![Script::EndsWithStatus, Script::Reversed(1)]).await;
    let db = connect(&fake.url).await;
    let tx = db.create_transaction();
    tx.set_read_version(Version(3)).unwrap();
    tx.set("k", "v");
    let err = tx.commit().await.unwrap_err();
    // The compute ended the stream with a status: it answers everything it started first,
    // so this commit never ran and may be retried.
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.kind().is_retryable());
    // The next operation opens a new session.
    let value = db.create_transaction().get("again").await.unwrap();
    assert_eq!(value.as_deref(), Some(&b"again"[..]));
    assert_eq!(fake.sessions.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_that_breaks_under_a_commit_makes_it_unknown() {
    let fake = fake(vec![Script::Breaks, Script::Breaks, Script::Reversed(1)]).await;
    let db = connect(&fake.url).await;
    let tx = db.create_transaction();
    tx.set_read_version(Version(3)).unwrap();
    tx.set("k", "v");
    let err = tx.commit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CommitUnknownResult, "{err}");
    // A read caught the same way is simply unavailable (and retryable).
    let err = db.create_transaction().get("k").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    // The SDK redials and opens a new session.
    let value = db.create_transaction().get("back").await.unwrap();
    assert_eq!(value.as_deref(), Some(&b"back"[..]));
    assert_eq!(fake.sessions.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_compute_without_sessions_gets_a_call_per_operation() {
    let fake = fake(vec![Script::Unimplemented]).await;
    let db = connect(&fake.url).await;
    assert_eq!(
        db.create_transaction().read_version().await.unwrap(),
        Version(7)
    );
    assert_eq!(
        db.create_transaction().read_version().await.unwrap(),
        Version(7)
    );
    // Asked once, then remembered.
    assert_eq!(fake.sessions.load(Ordering::SeqCst), 1);
    assert_eq!(fake.unary.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_session_refused_at_open_is_the_computes_answer() {
    let fake = fake(vec![Script::Unauthenticated]).await;
    let db = connect(&fake.url).await;
    let err = db.create_transaction().get("k").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    // Not taken for a compute without sessions: no unary call was made.
    assert_eq!(fake.unary.load(Ordering::SeqCst), 0);
}
