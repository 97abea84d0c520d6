//! A handle on one database: transactions and the retry loop.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrisdb_common::Version;
use ferrisdb_common::proto::database_client::DatabaseClient;
use ferrisdb_common::proto::{ChangesRequest, HistoryRequest, VersionAtRequest};
use ferrisdb_common::wal::WalRecord;
use ferrisdb_common::{DEFAULT_DATABASE, Error, Result, net};
use rand::Rng;
use tonic::transport::Channel;

use crate::transaction::Transaction;

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

/// How [`Database::run`] retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOptions {
    /// Give up (returning the last error) once this much time has passed.
    pub timeout: Duration,
    /// Give up after this many retries.
    pub max_retries: u32,
    /// First backoff; it doubles up to `max_backoff`, with full jitter.
    pub initial_backoff: Duration,
    /// Largest backoff.
    pub max_backoff: Duration,
}

impl Default for RetryOptions {
    fn default() -> RetryOptions {
        RetryOptions {
            timeout: Duration::from_secs(30),
            max_retries: u32::MAX,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_secs(1),
        }
    }
}

/// A connection to one FerrisDB database through a compute's client API.
#[derive(Debug, Clone)]
pub struct Database {
    client: DatabaseClient<Channel>,
    database: Arc<str>,
    retry: RetryOptions,
}

impl Database {
    /// Connects to the database `default` at `endpoint` (e.g. `http://127.0.0.1:4500`).
    /// The connection is made on first use and remade after failures.
    pub async fn connect(endpoint: &str) -> Result<Database> {
        let channel = net::channel(endpoint)?;
        Ok(Database {
            client: DatabaseClient::new(channel)
                .max_decoding_message_size(net::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(net::MAX_MESSAGE_BYTES),
            database: Arc::from(DEFAULT_DATABASE),
            retry: RetryOptions::default(),
        })
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

    /// Every version of `key` from `from` to `to` (inclusive; `Version(0)` for `to` means the
    /// latest), oldest first, with commit times. A `None` value is a clear.
    pub async fn history(
        &self,
        key: impl Into<Bytes>,
        from: Version,
        to: Version,
    ) -> Result<Vec<HistoryEntry>> {
        let req = HistoryRequest {
            database: self.database.to_string(),
            key: key.into(),
            from_version: from.0,
            to_version: to.0,
        };
        let entries = self.client.clone().history(req).await?.into_inner().entries;
        Ok(entries
            .into_iter()
            .map(|e| HistoryEntry {
                version: Version(e.version),
                commit_time_micros: e.commit_time_micros,
                value: e.value,
            })
            .collect())
    }

    /// The change feed: every committed record with a version at or above `from`, in commit
    /// order, each with its mutations in the order they applied. With `follow` the stream
    /// keeps delivering new commits; without it, it ends once caught up.
    pub async fn changes(
        &self,
        from: Version,
        follow: bool,
    ) -> Result<impl futures::Stream<Item = Result<WalRecord>> + use<>> {
        use futures::StreamExt;
        let req = ChangesRequest {
            database: self.database.to_string(),
            from_version: from.0,
            follow,
        };
        let batches = self.client.clone().changes(req).await?.into_inner();
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
        Ok(Version(
            self.client
                .clone()
                .version_at(req)
                .await?
                .into_inner()
                .version,
        ))
    }

    /// A new transaction; most code wants [`Database::run`] instead.
    pub fn create_transaction(&self) -> Transaction {
        Transaction::new(self.client.clone(), self.database.clone())
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
        let started = Instant::now();
        let mut backoff = self.retry.initial_backoff;
        let mut retries = 0u32;
        loop {
            let tx = self.create_transaction();
            let outcome = match body(tx.clone()).await {
                Ok(value) => tx.commit().await.map(|_| value),
                Err(e) => Err(e),
            };
            let err: Error = match outcome {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            if !err.kind().is_retryable()
                || retries >= self.retry.max_retries
                || started.elapsed() + backoff > self.retry.timeout
            {
                return Err(err);
            }
            retries += 1;
            let sleep = rand::rng().random_range(Duration::ZERO..=backoff);
            tracing::debug!(error = %err, retries, ?sleep, "retrying transaction");
            tokio::time::sleep(sleep).await;
            backoff = (backoff * 2).min(self.retry.max_backoff);
        }
    }
}
