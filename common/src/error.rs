//! The one public error type: a [`ErrorKind`] with a stable code, and a message.
//!
//! Codes cross the wire in the `ferrisdb-code` gRPC metadata entry, so a client sees exactly the
//! kind the server chose, whatever gRPC status it was mapped onto.

use std::fmt;

/// How an `unavailable` error from a safekeeper whose WAL disk budget is full begins, for the
/// people reading it. Programs tell "full" from "down" by [`Reason::WalBudgetFull`], never by
/// this text.
pub const WAL_BUDGET_FULL: &str = "WAL disk budget full";

/// The gRPC metadata key that carries an error's FerrisDB code.
pub const CODE_METADATA_KEY: &str = "ferrisdb-code";

/// The gRPC metadata key that carries an error's [`Reason`], when it has one.
pub const REASON_METADATA_KEY: &str = "ferrisdb-reason";

/// Why an error happened, finer than its kind, for the peers that act on the difference. It
/// rides beside the code (in [`REASON_METADATA_KEY`]) and changes nothing a client sees: the
/// kind, its code and its gRPC status stay what they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A safekeeper refused WAL because its disk budget is full (kind `unavailable`): the
    /// proposer counts it as full rather than down until an append succeeds again.
    WalBudgetFull,
    /// A compute is starting the database (electing, recovering the log, or waiting out an
    /// older primary's read lease; kind `unavailable`): a standby watching it gives it time
    /// to finish rather than taking over, which would only fence it.
    Starting,
    /// A WAL follower's position does not lie in the log as the safekeeper holds it: inside a
    /// frame, or written in another term than the one the follower read there (kind
    /// `invalid_argument`). The log was rewritten under the follower, which must not go on
    /// from there (docs/wal-protocol.md, "Followers check the term they resume in").
    WalDiverged,
}

impl Reason {
    /// Every reason, for tables and tests.
    pub const ALL: [Reason; 3] = [Reason::WalBudgetFull, Reason::Starting, Reason::WalDiverged];

    /// The stable name it travels as.
    pub fn code(self) -> &'static str {
        match self {
            Reason::WalBudgetFull => "wal_budget_full",
            Reason::Starting => "starting",
            Reason::WalDiverged => "wal_diverged",
        }
    }

    /// The reason with this name, if any (a newer peer's unknown reason is dropped).
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// What went wrong, as a small closed set with stable names (DESIGN.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A write committed after the read version intersects the transaction's read ranges.
    NotCommitted,
    /// The read version is older than the resolver's window (5 s).
    TransactionTooOld,
    /// The commit may or may not have happened; only the caller can decide whether to retry.
    CommitUnknownResult,
    /// A key is longer than [`crate::limits::MAX_KEY_SIZE`].
    KeyTooLarge,
    /// A value is longer than [`crate::limits::MAX_VALUE_SIZE`].
    ValueTooLarge,
    /// Mutations plus conflict ranges exceed [`crate::limits::MAX_TRANSACTION_SIZE`].
    TransactionTooLarge,
    /// No database of that name.
    DatabaseNotFound,
    /// The version asked for is not (yet) committed or ingested.
    FutureVersion,
    /// The version asked for is below the retention window.
    VersionTooOld,
    /// Not enough of the cluster is reachable to answer.
    Unavailable,
    /// A newer term or generation has taken over; this node no longer leads.
    Fenced,
    /// The request itself is malformed.
    InvalidArgument,
    /// Stored data failed its checksum or is otherwise inconsistent.
    Corruption,
    /// A bug or an unexpected failure of the environment (I/O, object store).
    Internal,
    /// This compute is a read replica: commits go to the primary the message names.
    ReadOnly,
    /// The request lacks the bearer token the server requires, or has a wrong one.
    Unauthenticated,
    /// A configured maximum (databases, branches, …) would be exceeded.
    LimitExceeded,
}

impl ErrorKind {
    /// Every kind, for tables and tests.
    pub const ALL: [ErrorKind; 17] = [
        ErrorKind::NotCommitted,
        ErrorKind::TransactionTooOld,
        ErrorKind::CommitUnknownResult,
        ErrorKind::KeyTooLarge,
        ErrorKind::ValueTooLarge,
        ErrorKind::TransactionTooLarge,
        ErrorKind::DatabaseNotFound,
        ErrorKind::FutureVersion,
        ErrorKind::VersionTooOld,
        ErrorKind::Unavailable,
        ErrorKind::Fenced,
        ErrorKind::InvalidArgument,
        ErrorKind::Corruption,
        ErrorKind::Internal,
        ErrorKind::ReadOnly,
        ErrorKind::Unauthenticated,
        ErrorKind::LimitExceeded,
    ];

    /// The stable code users and scripts match on.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::NotCommitted => "not_committed",
            ErrorKind::TransactionTooOld => "transaction_too_old",
            ErrorKind::CommitUnknownResult => "commit_unknown_result",
            ErrorKind::KeyTooLarge => "key_too_large",
            ErrorKind::ValueTooLarge => "value_too_large",
            ErrorKind::TransactionTooLarge => "transaction_too_large",
            ErrorKind::DatabaseNotFound => "database_not_found",
            ErrorKind::FutureVersion => "future_version",
            ErrorKind::VersionTooOld => "version_too_old",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Fenced => "fenced",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::Corruption => "corruption",
            ErrorKind::Internal => "internal",
            ErrorKind::ReadOnly => "read_only",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::LimitExceeded => "limit_exceeded",
        }
    }

    /// The kind with this code, if any.
    pub fn from_code(code: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The gRPC status code this kind travels as.
    pub fn grpc_code(self) -> tonic::Code {
        use tonic::Code;
        match self {
            ErrorKind::NotCommitted => Code::Aborted,
            ErrorKind::TransactionTooOld => Code::FailedPrecondition,
            ErrorKind::CommitUnknownResult => Code::Unknown,
            ErrorKind::KeyTooLarge
            | ErrorKind::ValueTooLarge
            | ErrorKind::TransactionTooLarge
            | ErrorKind::InvalidArgument => Code::InvalidArgument,
            ErrorKind::DatabaseNotFound => Code::NotFound,
            // Not yet: asking again later succeeds, which is what UNAVAILABLE tells a generic
            // gRPC client (DEADLINE_EXCEEDED read as the client's own deadline running out).
            ErrorKind::FutureVersion => Code::Unavailable,
            ErrorKind::VersionTooOld => Code::OutOfRange,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::Fenced => Code::PermissionDenied,
            ErrorKind::Corruption => Code::DataLoss,
            ErrorKind::Internal => Code::Internal,
            ErrorKind::ReadOnly => Code::FailedPrecondition,
            ErrorKind::Unauthenticated => Code::Unauthenticated,
            ErrorKind::LimitExceeded => Code::ResourceExhausted,
        }
    }

    /// Whether a transaction that failed with this kind may simply be run again.
    ///
    /// `commit_unknown_result` is deliberately not retryable: the first attempt may have
    /// committed, and only the caller knows whether doing it twice is harmless.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::NotCommitted
                | ErrorKind::TransactionTooOld
                | ErrorKind::Unavailable
                | ErrorKind::FutureVersion
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A FerrisDB error: a kind with a stable code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// Finer than the kind, for peers that act on it; not part of the display.
    reason: Option<Reason>,
}

/// The result type used throughout FerrisDB.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            reason: None,
        }
    }

    /// The same error, carrying `reason` (across gRPC too).
    pub fn with_reason(mut self, reason: Reason) -> Error {
        self.reason = Some(reason);
        self
    }

    /// Why it happened, when the error says more than its kind.
    pub fn reason(&self) -> Option<Reason> {
        self.reason
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The stable code of [`Self::kind`].
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// The human-readable part.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Shorthand for an [`ErrorKind::Unavailable`] error.
    pub fn unavailable(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unavailable, message)
    }

    /// Shorthand for an [`ErrorKind::InvalidArgument`] error.
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    /// `future_version` for a time (Unix microseconds) still ahead of `whose` clock, which
    /// reads `now_micros`: a commit made before that time comes would change what it maps to,
    /// so no version is named for it yet.
    pub fn future_time(time_micros: u64, now_micros: u64, whose: &str) -> Error {
        Error::new(
            ErrorKind::FutureVersion,
            format!(
                "time {time_micros} (Unix microseconds) is ahead of {whose} clock \
                 ({now_micros}): no version maps to it yet"
            ),
        )
    }

    /// Shorthand for an [`ErrorKind::Internal`] error.
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }

    /// Shorthand for an [`ErrorKind::Corruption`] error.
    pub fn corruption(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Corruption, message)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::internal(format!("i/o: {e}"))
    }
}

/// How many characters of a user-supplied string an error message repeats: enough to
/// recognise it, never enough to make the message itself a problem.
pub const ECHO_CHARS: usize = 64;

/// The longest message a gRPC status carries, in bytes. The message travels in the
/// `grpc-message` header (percent-encoded, up to 3 bytes per byte), and a header past the
/// peer's limit turns a clear error into a transport failure.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 1024;

/// `s` as a quoted string fit for an error message: Debug-escaped (control characters and
/// quotes cannot forge output), and cut to [`ECHO_CHARS`] characters with an ellipsis.
pub fn echo(s: &str) -> String {
    match s.char_indices().nth(ECHO_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &s[..cut], s.len()),
    }
}

/// `message` cut to at most `max` bytes on a character boundary, with an ellipsis when cut.
pub fn truncate_message(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_string();
    }
    let mut cut = max.saturating_sub('…'.len_utf8());
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &message[..cut])
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        let message = truncate_message(&e.message, MAX_STATUS_MESSAGE_BYTES);
        let mut status = tonic::Status::new(e.kind.grpc_code(), message);
        if let Ok(v) = e.kind.code().parse() {
            status.metadata_mut().insert(CODE_METADATA_KEY, v);
        }
        if let Some(Ok(v)) = e.reason.map(|r| r.code().parse()) {
            status.metadata_mut().insert(REASON_METADATA_KEY, v);
        }
        status
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Error {
        let tagged = status
            .metadata()
            .get(CODE_METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(ErrorKind::from_code);
        let reason = status
            .metadata()
            .get(REASON_METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(Reason::from_code);
        match tagged {
            Some(kind) => Error {
                reason,
                ..Error::new(kind, status.message())
            },
            // No FerrisDB code: the failure happened below us (connection refused, reset,
            // deadline), so the peer is unreachable rather than saying no.
            None => {
                let kind = match status.code() {
                    tonic::Code::InvalidArgument => ErrorKind::InvalidArgument,
                    tonic::Code::Unimplemented | tonic::Code::Internal => ErrorKind::Internal,
                    _ => ErrorKind::Unavailable,
                };
                Error::new(kind, format!("{}: {}", status.code(), status.message()))
            }
        }
    }
}

/// An operation's failure inside a client session (`Database/Session`), carrying what a unary
/// call's status carries: the code, the reason and the message (cut as in a status).
impl From<Error> for crate::proto::SessionError {
    fn from(e: Error) -> crate::proto::SessionError {
        crate::proto::SessionError {
            code: e.kind.code().to_string(),
            message: truncate_message(&e.message, MAX_STATUS_MESSAGE_BYTES),
            reason: e.reason.map(|r| r.code().to_string()).unwrap_or_default(),
        }
    }
}

impl From<crate::proto::SessionError> for Error {
    fn from(e: crate::proto::SessionError) -> Error {
        // A code this SDK does not know comes from a newer compute: it is still the
        // compute's answer, not a transport failure, so it must not read as `unavailable`
        // (retried, or for a commit, unknown).
        let Some(kind) = ErrorKind::from_code(&e.code) else {
            return Error::internal(format!("error code {}: {}", echo(&e.code), e.message));
        };
        Error {
            reason: Reason::from_code(&e.reason),
            ..Error::new(kind, e.message)
        }
    }
}

impl From<tonic::transport::Error> for Error {
    fn from(e: tonic::transport::Error) -> Error {
        Error::unavailable(format!("transport: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_grpc_status() {
        for kind in ErrorKind::ALL {
            let status: tonic::Status = Error::new(kind, "boom").into();
            assert_eq!(status.code(), kind.grpc_code());
            let back: Error = status.into();
            assert_eq!(back.kind(), kind);
            assert_eq!(back.message(), "boom");
        }
    }

    #[test]
    fn a_reason_rides_beside_the_code() {
        let e = Error::unavailable(WAL_BUDGET_FULL).with_reason(Reason::WalBudgetFull);
        let status: tonic::Status = e.clone().into();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        let back: Error = status.into();
        assert_eq!(back, e);
        assert_eq!(back.reason(), Some(Reason::WalBudgetFull));
        // Without one, none arrives; the display never shows it.
        let plain: Error = tonic::Status::from(Error::unavailable("down")).into();
        assert_eq!(plain.reason(), None);
        assert_eq!(e.to_string(), format!("unavailable: {WAL_BUDGET_FULL}"));
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r.code()), Some(r));
        }
    }

    #[test]
    fn every_kind_and_reason_round_trip_through_a_session_error() {
        for kind in ErrorKind::ALL {
            let e = Error::new(kind, "boom");
            let back = Error::from(crate::proto::SessionError::from(e.clone()));
            assert_eq!(back, e);
        }
        let e = Error::unavailable(WAL_BUDGET_FULL).with_reason(Reason::WalBudgetFull);
        assert_eq!(Error::from(crate::proto::SessionError::from(e.clone())), e);
        // A long message is cut as a status's is.
        let long = Error::invalid("x".repeat(10 * MAX_STATUS_MESSAGE_BYTES));
        let wire = crate::proto::SessionError::from(long);
        assert!(wire.message.len() <= MAX_STATUS_MESSAGE_BYTES);
        // A code from a newer compute is its answer, never a transport failure.
        let unknown = Error::from(crate::proto::SessionError {
            code: "from_the_future".into(),
            message: "m".into(),
            reason: "no_such_reason".into(),
        });
        assert_eq!(unknown.kind(), ErrorKind::Internal);
        assert!(unknown.message().contains("from_the_future"));
    }

    #[test]
    fn codes_are_unique_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for kind in ErrorKind::ALL {
            assert!(seen.insert(kind.code()), "duplicate code {}", kind.code());
            assert_eq!(ErrorKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(ErrorKind::from_code("no_such_code"), None);
    }

    #[test]
    fn untagged_transport_failure_is_unavailable() {
        let e: Error = tonic::Status::unavailable("connection refused").into();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        let e: Error = tonic::Status::cancelled("gone").into();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn echoed_strings_are_cut_and_escaped() {
        assert_eq!(echo("db"), "\"db\"");
        let long = "x".repeat(10_000);
        let e = echo(&long);
        assert!(e.len() < 100, "{e}");
        assert!(e.contains("10000 bytes"), "{e}");
        // Cut on a character boundary, never inside a multi-byte character.
        let wide = "é".repeat(200);
        assert!(echo(&wide).starts_with(&format!("{:?}…", "é".repeat(ECHO_CHARS))));
        assert_eq!(echo("a\nb"), "\"a\\nb\"");
    }

    #[test]
    fn long_messages_are_cut_before_they_become_headers() {
        let status: tonic::Status = Error::invalid("é".repeat(100_000)).into();
        assert!(status.message().len() <= MAX_STATUS_MESSAGE_BYTES);
        assert!(status.message().ends_with('…'));
        let back: Error = status.into();
        assert_eq!(back.kind(), ErrorKind::InvalidArgument);
        assert_eq!(truncate_message("short", 10), "short");
    }

    #[test]
    fn only_safe_kinds_are_retryable() {
        assert!(ErrorKind::NotCommitted.is_retryable());
        assert!(ErrorKind::TransactionTooOld.is_retryable());
        assert!(ErrorKind::Unavailable.is_retryable());
        assert!(!ErrorKind::CommitUnknownResult.is_retryable());
        assert!(!ErrorKind::Fenced.is_retryable());
        assert!(!ErrorKind::KeyTooLarge.is_retryable());
    }
}
