//! One compute endpoint as transactions use it: reads, read versions and commits go through
//! the endpoint's [`Session`]; a compute without sessions gets a unary call per operation, as
//! does everything sessions do not carry (history, the change feed, watches).

use std::sync::Arc;

use ferrisdb_common::h2_channel::H2Channel;
use ferrisdb_common::proto::session_request::Op;
use ferrisdb_common::proto::session_response::Result as Answer;
use ferrisdb_common::proto::{
    CommitRequest, CommitResponse, GetRangeRequest, GetRangeResponse, GetReadVersionRequest,
    GetReadVersionResponse, GetRequest, GetResponse,
};
use ferrisdb_common::{Error, ErrorKind, Result};

use crate::outgoing::{Client, Outgoing};
use crate::session::{Failure, Outcome, Session};

/// A compute endpoint: its session and its unary client. Cheap to clone; clones share both.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    /// For calls sessions do not carry.
    pub(crate) client: Client,
    session: Arc<Session>,
}

impl Conn {
    /// The endpoint behind `channel`, sending `outgoing`'s metadata; a call per operation
    /// unless `sessions`.
    pub(crate) fn new(channel: H2Channel, outgoing: Outgoing, sessions: bool) -> Conn {
        let client = ferrisdb_common::with_message_limits!(
            ferrisdb_common::proto::database_client::DatabaseClient::with_interceptor(
                channel.clone(),
                outgoing.clone()
            )
        );
        Conn {
            client,
            session: Arc::new(Session::new(channel, outgoing, sessions)),
        }
    }

    /// `GetReadVersion`.
    pub(crate) async fn read_version(
        &self,
        req: GetReadVersionRequest,
    ) -> Result<GetReadVersionResponse> {
        match self.send(Op::GetReadVersion(req)).await {
            Ok(Answer::GetReadVersion(r)) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// `Get`.
    pub(crate) async fn get(&self, req: GetRequest) -> Result<GetResponse> {
        match self.send(Op::Get(req)).await {
            Ok(Answer::Get(r)) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// `GetRange`.
    pub(crate) async fn get_range(&self, req: GetRangeRequest) -> Result<GetRangeResponse> {
        match self.send(Op::GetRange(req)).await {
            Ok(Answer::GetRange(r)) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// `Commit`. When the request may have reached the compute and no answer says what came
    /// of it, the error is `commit_unknown_result`: the transaction may have committed.
    pub(crate) async fn commit(&self, req: CommitRequest) -> Result<CommitResponse> {
        match self.send(Op::Commit(req)).await {
            Ok(Answer::Commit(r)) => Ok(r),
            Err(Failure {
                error,
                maybe_started: true,
            }) => Err(Error::new(
                ErrorKind::CommitUnknownResult,
                format!("the connection failed during commit, which may have happened: {error}"),
            )),
            other => Err(unexpected(other)),
        }
    }

    /// Sends `op` in the session, or as a unary call to a compute without sessions.
    async fn send(&self, op: Op) -> std::result::Result<Answer, Failure> {
        match self.session.call(op).await {
            Outcome::Answered(Answer::Error(e)) => Err(Failure {
                error: e.into(),
                maybe_started: false,
            }),
            Outcome::Answered(answer) => Ok(answer),
            Outcome::Failed(failure) => Err(failure),
            Outcome::Unsupported(op) => self.unary(op).await,
        }
    }

    /// `op` as the unary call it stands for.
    async fn unary(&self, op: Op) -> std::result::Result<Answer, Failure> {
        let mut c = self.client.clone();
        let answer = match op {
            Op::GetReadVersion(r) => c
                .get_read_version(r)
                .await
                .map(|r| Answer::GetReadVersion(r.into_inner())),
            Op::Get(r) => c.get(r).await.map(|r| Answer::Get(r.into_inner())),
            Op::GetRange(r) => c
                .get_range(r)
                .await
                .map(|r| Answer::GetRange(r.into_inner())),
            Op::Commit(r) => c.commit(r).await.map(|r| Answer::Commit(r.into_inner())),
        };
        answer.map_err(|status| {
            // A FerrisDB code is the compute's answer; a refused connection never sent the
            // request; any other transport failure may have come after the compute ran it.
            let tagged = status
                .metadata()
                .contains_key(ferrisdb_common::error::CODE_METADATA_KEY);
            Failure {
                maybe_started: !tagged && !never_sent(&status),
                error: status.into(),
            }
        })
    }
}

/// The error of an operation that did not get the answer it asked for: the failure's own, or
/// (a compute answering a different operation) an internal error.
fn unexpected(outcome: std::result::Result<Answer, Failure>) -> Error {
    match outcome {
        Err(failure) => failure.error,
        Ok(_) => Error::internal("the compute answered a different operation"),
    }
}

/// Whether a failed call certainly never reached the server: the connection to it was
/// refused. Told from the error's cause (an `io::Error` of kind `ConnectionRefused` in the
/// status's source chain), not from its wording, which belongs to tonic and hyper.
fn never_sent(status: &tonic::Status) -> bool {
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = cause {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        cause = e.source();
    }
    false
}
