//! A handle on one database: transactions and the retry loop.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrisdb_common::Version;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferrisdb_common::h2_channel::H2Channel;
use ferrisdb_common::net::{ClientTls, SendToken};
use ferrisdb_common::proto::{ChangesRequest, HistoryRequest, VersionAtRequest};
use ferrisdb_common::wal::WalRecord;
use ferrisdb_common::{DEFAULT_DATABASE, Error, ErrorKind, Result};

use crate::backoff::{Backoff, RetryOptions};
use crate::conn::Conn;
use crate::outgoing::{Client, Outgoing};
use crate::transaction::{CallLimit, Transaction};
use crate::watch::Watch;

/// One version of a key, as [`Database::history`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The version.
    pub version: Version,
    /// When it committed, in Unix microseconds.
    pub commit_time_micros: u64,
    /// The value it set; `None` when it cleared the key.
    pub value: Option<Bytes>,
}

/// How to reach a database: where, as whom, and how to retry.
///
/// ```
/// use ferrisdb_client::ConnectOptions;
///
/// let opts = ConnectOptions::new("http://10.0.0.1:4500")
///     .endpoint("http://10.0.0.2:4500") // a standby or replica to fail over to
///     .database("orders")
///     .token("s3cret");
/// assert_eq!(opts.endpoints.len(), 2);
/// ```
///
/// Debug shows whether a token is set, never the token.
#[derive(Clone)]
pub struct ConnectOptions {
    /// Computes serving the database, tried in order: the SDK stays on one while it answers
    /// and moves to the next when it is unreachable, fenced or read-only.
    pub endpoints: Vec<String>,
    /// The database (default `default`).
    pub database: String,
    /// TLS settings; the endpoints are then `https://…`.
    pub tls: Option<ClientTls>,
    /// A bearer token sent with every call.
    pub token: Option<String>,
    /// How [`Database::run`] retries.
    pub retry: RetryOptions,
    /// Send reads, read versions and commits as messages of one long-lived stream per
    /// endpoint (`Database/Session`, docs/session.md) rather than a call each (default on).
    /// Off for a proxy in between that does not carry bidirectional gRPC streams. A compute
    /// without sessions is detected either way.
    pub sessions: bool,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("endpoints", &self.endpoints)
            .field("database", &self.database)
            .field("tls", &self.tls)
            .field("token", &ferrisdb_common::net::redact(&self.token))
            .field("retry", &self.retry)
            .field("sessions", &self.sessions)
            .finish()
    }
}

impl ConnectOptions {
    /// Options for `endpoint` (several may be given comma-separated), database `default`,
    /// no TLS, no token, default retries.
    ///
    /// ```
    /// let opts = ferrisdb_client::ConnectOptions::new("http://a:4500,http://b:4500");
    /// assert_eq!(opts.endpoints, ["http://a:4500", "http://b:4500"]);
    /// ```
    pub fn new(endpoint: &str) -> ConnectOptions {
        ConnectOptions {
            endpoints: Vec::new(),
            database: DEFAULT_DATABASE.to_string(),
            tls: None,
            token: None,
            retry: RetryOptions::default(),
            sessions: true,
        }
        .endpoint(endpoint)
    }

    /// Adds endpoints (comma-separated) to fail over to.
    ///
    /// ```
    /// let opts = ferrisdb_client::ConnectOptions::new("http://a:4500").endpoint("http://b:4500");
    /// assert_eq!(opts.endpoints.len(), 2);
    /// ```
    pub fn endpoint(mut self, endpoint: &str) -> ConnectOptions {
        self.endpoints.extend(
            endpoint
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(String::from),
        );
        self
    }

    /// Addresses database `name`.
    ///
    /// ```
    /// let opts = ferrisdb_client::ConnectOptions::new("http://a:4500").database("orders");
    /// assert_eq!(opts.database, "orders");
    /// ```
    pub fn database(mut self, name: &str) -> ConnectOptions {
        self.database = name.to_string();
        self
    }

    /// Uses TLS, trusting the CA certificate `ca_pem` (PEM).
    ///
    /// ```
    /// let opts = ferrisdb_client::ConnectOptions::new("https://db.internal:4500")
    ///     .tls_ca_pem(b"-----BEGIN CERTIFICATE-----\n...".to_vec());
    /// assert!(opts.tls.is_some());
    /// ```
    pub fn tls_ca_pem(mut self, ca_pem: Vec<u8>) -> ConnectOptions {
        self.tls.get_or_insert_with(ClientTls::default).ca_pem = Some(ca_pem);
        self
    }

    /// Sends `token` as a bearer token.
    ///
    /// ```
    /// let opts = ferrisdb_client::ConnectOptions::new("http://a:4500").token("s3cret");
    /// assert_eq!(opts.token.as_deref(), Some("s3cret"));
    /// ```
    pub fn token(mut self, token: &str) -> ConnectOptions {
        self.token = Some(token.to_string());
        self
    }

    /// Sends each operation as a call of its own when `sessions` is false (see
    /// [`ConnectOptions::sessions`]).
    ///
    /// ```
    /// let opts = ferrisdb_client::ConnectOptions::new("http://a:4500").use_sessions(false);
    /// assert!(!opts.sessions);
    /// ```
    pub fn use_sessions(mut self, sessions: bool) -> ConnectOptions {
        self.sessions = sessions;
        self
    }

    /// Retries as `retry` says.
    ///
    /// ```
    /// use std::time::Duration;
    /// let retry = ferrisdb_client::RetryOptions { max_retries: 3, ..Default::default() };
    /// let opts = ferrisdb_client::ConnectOptions::new("http://a:4500").retry(retry);
    /// assert_eq!(opts.retry.max_retries, 3);
    /// ```
    pub fn retry(mut self, retry: RetryOptions) -> ConnectOptions {
        self.retry = retry;
        self
    }
}

/// The computes a [`Database`] may talk to and the one it talks to now.
#[derive(Debug)]
struct Endpoints {
    urls: Vec<String>,
    clients: Vec<Conn>,
    current: AtomicUsize,
}

impl Endpoints {
    /// The client in use and its index.
    fn current(&self) -> (usize, Conn) {
        let i = self.current.load(Ordering::Acquire) % self.clients.len();
        (i, self.clients[i].clone())
    }

    /// Moves on from endpoint `from` to the next, unless another caller already did.
    fn fail_over(&self, from: usize) {
        let next = (from + 1) % self.clients.len();
        if self
            .current
            .compare_exchange(from, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            && next != from
        {
            tracing::info!(from = %self.urls[from], to = %self.urls[next], "switching compute endpoint");
        }
    }
}

/// Whether an error from endpoint `i` means another endpoint may do better.
fn wants_other_endpoint(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Unavailable | ErrorKind::Fenced | ErrorKind::ReadOnly
    )
}

/// A connection to one FerrisDB database through a compute's client API.
#[derive(Debug, Clone)]
pub struct Database {
    endpoints: Arc<Endpoints>,
    database: Arc<str>,
    retry: RetryOptions,
}

impl Database {
    /// Connects to the database `default` at `endpoint` (e.g. `http://127.0.0.1:4500`;
    /// several endpoints may be given comma-separated). The connection is made on first use
    /// and remade after failures.
    pub async fn connect(endpoint: &str) -> Result<Database> {
        Database::connect_with(ConnectOptions::new(endpoint)).await
    }

    /// Connects as `options` say.
    ///
    /// ```no_run
    /// # async fn demo() -> ferrisdb_client::Result<()> {
    /// use ferrisdb_client::{ConnectOptions, Database};
    ///
    /// let ca = std::fs::read("ca.pem")?;
    /// let db = Database::connect_with(
    ///     ConnectOptions::new("https://compute-a:4500,https://compute-b:4500")
    ///         .tls_ca_pem(ca)
    ///         .token(&std::env::var("FERRISDB_TOKEN").unwrap_or_default()),
    /// )
    /// .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_with(options: ConnectOptions) -> Result<Database> {
        if options.endpoints.is_empty() {
            return Err(Error::invalid("no endpoint to connect to"));
        }
        let token = SendToken::new(options.token.as_deref())?;
        let clients = options
            .endpoints
            .iter()
            .map(|url| {
                let channel = H2Channel::new(url, options.tls.as_ref())?;
                Ok(Conn::new(
                    channel,
                    Outgoing::new(token.clone()),
                    options.sessions,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Database {
            endpoints: Arc::new(Endpoints {
                urls: options.endpoints,
                clients,
                current: AtomicUsize::new(0),
            }),
            database: Arc::from(options.database.as_str()),
            retry: options.retry,
        })
    }

    /// The gRPC client of the current endpoint, for the crate's tests.
    #[cfg(test)]
    pub(crate) fn current_client(&self) -> crate::outgoing::Client {
        self.endpoints.current().1.client
    }

    /// The endpoint calls go to now.
    pub fn current_endpoint(&self) -> &str {
        let (i, _) = self.endpoints.current();
        &self.endpoints.urls[i]
    }

    /// Runs one call, moving through the endpoints (each tried once) while they are
    /// unreachable, fenced or read-only.
    async fn call<T, F, Fut>(&self, mut f: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut backoff = Backoff::new(self.retry);
        let mut tries = 0;
        loop {
            let (i, conn) = self.endpoints.current();
            // One call that hangs (a compute waiting on a stopped pageserver) is cut at what
            // is left of the retry budget: the timeout bounds the whole call.
            let left = backoff.remaining().unwrap_or(Duration::MAX);
            let answer = tokio::time::timeout(left, f(conn.client))
                .await
                .unwrap_or_else(|_| {
                    Err(Error::unavailable(format!(
                        "no answer within the {:?} timeout",
                        self.retry.timeout
                    )))
                });
            match answer {
                Err(e)
                    if wants_other_endpoint(e.kind())
                        && tries + 1 < self.endpoints.clients.len() =>
                {
                    tries += 1;
                    self.endpoints.fail_over(i);
                }
                // A compute still starting (woken from scale to zero, restarted) or a moment
                // without a quorum. These calls read and change nothing, so asking again is
                // safe, within the bounds `run` keeps.
                Err(e) if e.kind() == ErrorKind::Unavailable && backoff.allows_retry() => {
                    tracing::debug!(error = %e, retries = backoff.retries() + 1, "retrying");
                    backoff.pause().await;
                }
                other => return other,
            }
        }
    }

    /// The same connection, addressing database `name`.
    pub fn with_database(mut self, name: &str) -> Database {
        self.database = Arc::from(name);
        self
    }

    /// The same connection with other retry options for [`Database::run`].
    pub fn with_retry(mut self, retry: RetryOptions) -> Database {
        self.retry = retry;
        self
    }

    /// Every version of `key` from `from` to `to` (inclusive; `Version(0)` for `from` means the
    /// oldest version still retained, for `to` the latest), oldest first, with commit times.
    /// A `None` value is a clear. An explicit `from` below the retention window is
    /// `version_too_old`, an inverted range `invalid_argument`.
    pub async fn history(
        &self,
        key: impl Into<Bytes>,
        from: Version,
        to: Version,
    ) -> Result<Vec<HistoryEntry>> {
        let mut req = HistoryRequest {
            database: self.database.to_string(),
            key: key.into(),
            from_version: from.0,
            to_version: to.0,
        };
        // A long history comes in pages (each reply stops at a byte target); the next page
        // starts after the last version received.
        let mut entries = Vec::new();
        loop {
            let page = self
                .call(|mut c| {
                    let req = req.clone();
                    async move { Ok(c.history(req).await?.into_inner()) }
                })
                .await?;
            let next = page.entries.last().map(|e| e.version + 1);
            entries.extend(page.entries);
            match next {
                Some(from) if page.more => req.from_version = from,
                _ => break,
            }
        }
        Ok(entries
            .into_iter()
            .map(|e| HistoryEntry {
                version: Version(e.version),
                commit_time_micros: e.commit_time_micros,
                value: e.value,
            })
            .collect())
    }

    /// The change feed: every committed record with a version at or above `from`
    /// (`Version(0)`: from the oldest commit still retained), in commit order, each with its
    /// mutations in the order they applied. With `follow` the stream keeps delivering new
    /// commits; without it, it ends once caught up.
    ///
    /// A followed feed outlives the compute it was opened on: when that stream breaks (the
    /// compute restarted, failed over, or scaled to zero and woke), it is opened again after
    /// the last record delivered — on the next endpoint if several were given — so no record
    /// is missed or repeated. It gives up, yielding the error, once reopening has failed for
    /// the retry bounds of [`RetryOptions`] (a stream that stayed up a second or delivered a
    /// record starts the count again).
    pub async fn changes(
        &self,
        from: Version,
        follow: bool,
    ) -> Result<impl futures::Stream<Item = Result<WalRecord>> + use<>> {
        use futures::StreamExt;
        let first = self.open_changes(from, follow).await?;
        if !follow {
            return Ok(first.boxed());
        }
        /// A followed feed: where the next record starts, the open stream and when it was
        /// opened, and the failures since it last worked.
        struct Follow {
            db: Database,
            next: Version,
            records: Option<futures::stream::BoxStream<'static, Result<WalRecord>>>,
            opened_at: Instant,
            /// The retry budget since the feed last worked.
            failing: Option<Backoff>,
            done: bool,
        }
        let state = Follow {
            db: self.clone(),
            next: from,
            records: Some(first.boxed()),
            opened_at: Instant::now(),
            failing: None,
            done: false,
        };
        Ok(futures::stream::unfold(state, |mut s| async move {
            loop {
                if s.done {
                    return None;
                }
                let failure = match s.records.as_mut() {
                    None => match s.db.open_changes(s.next, true).await {
                        Ok(records) => {
                            s.records = Some(records.boxed());
                            s.opened_at = Instant::now();
                            continue;
                        }
                        Err(e) => e,
                    },
                    Some(records) => match records.next().await {
                        Some(Ok(record)) => {
                            s.next = Version(record.version.0.saturating_add(1));
                            s.failing = None;
                            return Some((Ok(record), s));
                        }
                        broke => {
                            // A stream that had been up a while broke: a new failure.
                            if s.opened_at.elapsed() >= Duration::from_secs(1) {
                                s.failing = None;
                            }
                            match broke {
                                Some(Err(e)) => e,
                                // A followed stream does not end on its own: its compute
                                // went away.
                                _ => Error::unavailable("the change feed's stream ended"),
                            }
                        }
                    },
                };
                s.records = None;
                let retry = s.db.retry;
                let backoff = s.failing.get_or_insert_with(|| Backoff::new(retry));
                // A zero timeout leaves a call no retries, but a followed feed is meant to run
                // for good: with no bound, it reopens without end.
                let unbounded = retry.timeout.is_zero();
                let within = (unbounded || backoff.allows_retry())
                    && (failure.kind() == ErrorKind::Unavailable
                        || wants_other_endpoint(failure.kind()));
                if !within {
                    s.done = true;
                    return Some((Err(failure), s));
                }
                tracing::debug!(error = %failure, from = %s.next, "opening the change feed again");
                backoff.pause().await;
            }
        })
        .boxed())
    }

    /// Opens the change feed once (see [`Database::changes`]).
    async fn open_changes(
        &self,
        from: Version,
        follow: bool,
    ) -> Result<impl futures::Stream<Item = Result<WalRecord>> + use<>> {
        use futures::StreamExt;
        let req = ChangesRequest {
            database: self.database.to_string(),
            from_version: from.0,
            follow,
            // The compute fills in its newest commit.
            through_version: 0,
        };
        let batches = self
            .call(|mut c| {
                let req = req.clone();
                async move { Ok(c.changes(req).await?.into_inner()) }
            })
            .await?;
        Ok(batches.flat_map(|batch| {
            let records: Vec<Result<WalRecord>> = match batch {
                Ok(b) => b.records.into_iter().map(WalRecord::try_from).collect(),
                Err(status) => vec![Err(status.into())],
            };
            futures::stream::iter(records)
        }))
    }

    /// The version a Unix-microsecond timestamp maps to: the latest committed at or before it
    /// (`Version(0)` if nothing had committed). Read at it with
    /// [`Transaction::set_read_version`].
    pub async fn version_at(&self, timestamp_micros: u64) -> Result<Version> {
        let req = VersionAtRequest {
            database: self.database.to_string(),
            timestamp_micros,
        };
        self.call(|mut c| {
            let req = req.clone();
            async move { Ok(Version(c.version_at(req).await?.into_inner().version)) }
        })
        .await
    }

    /// A watch on `key`'s current value: reads it now, and resolves once the committed value
    /// differs. For "after my write", use [`Transaction::watch`].
    ///
    /// ```no_run
    /// # async fn demo(db: ferrisdb_client::Database) -> ferrisdb_client::Result<()> {
    /// let event = db.watch("jobs/next").await?.await?;
    /// println!("jobs/next changed at version {}", event.version);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn watch(&self, key: impl Into<Bytes>) -> Result<Watch> {
        let key = key.into();
        let tx = self.create_transaction();
        let known = tx.snapshot().get(key.clone()).await?;
        Ok(Watch::new(Box::pin(crate::watch::wait(
            self.watch_target(),
            self.database.clone(),
            key,
            crate::watch::Known::Value(known),
        ))))
    }

    /// Where watches go: the current endpoint, moving on to the next when it is unavailable
    /// or fenced, as transactions do.
    fn watch_target(&self) -> crate::watch::Target {
        let (pick, failed) = (self.endpoints.clone(), self.endpoints.clone());
        crate::watch::Target {
            pick: Arc::new(move || {
                let (i, conn) = pick.current();
                (i, conn.client)
            }),
            failed: Arc::new(move |i| failed.fail_over(i)),
        }
    }

    /// A new transaction; most code wants [`Database::run`] instead. If its commit is refused
    /// by a compute that cannot commit (fenced, read-only, unreachable) and other endpoints
    /// were given, the next transaction goes to the next one, as `run` would: the shell's and
    /// an application's own transactions find the new primary after a failover too.
    pub fn create_transaction(&self) -> Transaction {
        let (endpoint, conn) = self.endpoints.current();
        let tx = Transaction::new(conn, self.database.clone()).limited(CallLimit {
            per_call: Backoff::new(self.retry).remaining(),
            until: None,
        });
        if self.endpoints.clients.len() < 2 {
            return tx;
        }
        let endpoints = self.endpoints.clone();
        tx.watching_through(self.watch_target())
            .reporting_refusals(crate::transaction::OnRefusal(Arc::new(move |kind| {
                if wants_other_endpoint(kind) {
                    endpoints.fail_over(endpoint);
                }
            })))
    }

    /// Runs `body` in a transaction and commits it, retrying the whole transaction on
    /// `not_committed`, `transaction_too_old`, `future_version` and `unavailable` with
    /// exponential backoff and jitter. `commit_unknown_result` is returned, not retried: the
    /// first attempt may have committed, and only the caller knows whether repeating is safe.
    ///
    /// ```no_run
    /// # async fn demo() -> ferrisdb_common::Result<()> {
    /// let db = ferrisdb_client::Database::connect("http://127.0.0.1:4500").await?;
    /// db.run(|tx| async move {
    ///     let n = tx.get("counter").await?.map_or(0, |v| v.len());
    ///     tx.set("counter", vec![b'x'; n + 1]);
    ///     Ok(())
    /// })
    /// .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run<T, F, Fut>(&self, mut body: F) -> Result<T>
    where
        F: FnMut(Transaction) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut backoff = Backoff::new(self.retry);
        loop {
            let (endpoint, conn) = self.endpoints.current();
            // The attempt's calls end with the run's timeout, like its retries.
            let mut tx = Transaction::new(conn, self.database.clone()).limited(CallLimit {
                per_call: None,
                until: backoff.remaining().map(|left| Instant::now() + left),
            });
            if self.endpoints.clients.len() > 1 {
                tx = tx.watching_through(self.watch_target());
            }
            let outcome = match body(tx.clone()).await {
                Ok(value) => tx.commit().await.map(|_| value),
                Err(e) => Err(e),
            };
            let err: Error = match outcome {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            // A fenced or read-only compute cannot commit this, but another endpoint may.
            let elsewhere = self.endpoints.clients.len() > 1 && wants_other_endpoint(err.kind());
            if elsewhere {
                self.endpoints.fail_over(endpoint);
            }
            if !(err.kind().is_retryable() || elsewhere) || !backoff.allows_retry() {
                return Err(err);
            }
            tracing::debug!(error = %err, retries = backoff.retries() + 1, "retrying transaction");
            backoff.pause().await;
        }
    }
}
