//! FerrisDB through its SDK: every operation is a transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;
use ferrisdb_client::{ConnectOptions, Database, Error, RetryOptions, Version};

use super::{Connection, MAX_ATTEMPTS, OpError, OpResult, Target};
use crate::keys::{KEY_SPACE_END, key_name};

/// Keys per load transaction.
const LOAD_BATCH: u64 = 200;

/// A FerrisDB cluster's client API.
#[derive(Debug, Clone)]
pub struct FerrisDb {
    endpoint: String,
    /// Whether the SDK sends operations in sessions (its default) or a call each.
    sessions: bool,
}

impl FerrisDb {
    /// The compute at `endpoint` (e.g. `http://127.0.0.1:24500`).
    pub fn new(endpoint: &str) -> FerrisDb {
        FerrisDb {
            endpoint: endpoint.to_string(),
            sessions: true,
        }
    }

    /// The compute at `endpoint`, with a gRPC call per operation (the SDK's sessions off):
    /// what the SDK did before sessions, measured beside them in the same run.
    pub fn unary(endpoint: &str) -> FerrisDb {
        FerrisDb {
            sessions: false,
            ..FerrisDb::new(endpoint)
        }
    }

    async fn database(&self) -> anyhow::Result<Database> {
        // Each client gets its own connection (the SDK's handle owns one), as each peer
        // client does; conflicts are retried with the SDK's own backoff.
        let db =
            Database::connect_with(ConnectOptions::new(&self.endpoint).use_sessions(self.sessions))
                .await
                .with_context(|| format!("connecting to FerrisDB at {}", self.endpoint))?;
        Ok(db.with_retry(RetryOptions {
            max_retries: MAX_ATTEMPTS - 1,
            ..RetryOptions::default()
        }))
    }
}

fn op_error(e: Error) -> OpError {
    OpError::new(e.code(), e)
}

impl Target for FerrisDb {
    type Conn = FerrisConn;

    fn name(&self) -> &'static str {
        if self.sessions {
            "ferrisdb"
        } else {
            "ferrisdb-unary"
        }
    }

    async fn connect(&self) -> anyhow::Result<FerrisConn> {
        Ok(FerrisConn {
            db: self.database().await?,
        })
    }

    async fn load(&self, keys: u64, value_size: usize) -> anyhow::Result<()> {
        let db = self.database().await?;
        let mut start = 0;
        while start < keys {
            let end = (start + LOAD_BATCH).min(keys);
            db.run(|tx| async move {
                for i in start..end {
                    tx.set(key_name(i), crate::keys::load_value(i, value_size));
                }
                Ok(())
            })
            .await
            .with_context(|| format!("loading keys {start}..{end}"))?;
            start = end;
        }
        Ok(())
    }

    async fn snapshot(&self) -> anyhow::Result<Option<u64>> {
        let db = self.database().await?;
        let v = db.create_transaction().read_version().await?;
        Ok(Some(v.0))
    }

    async fn between_phases(&self, _keep: Option<u64>) -> anyhow::Result<String> {
        // Nothing: the pageserver checkpoints on its own schedule, which is part of what is
        // measured.
        Ok(String::new())
    }
}

/// One FerrisDB client.
#[derive(Debug)]
pub struct FerrisConn {
    db: Database,
}

impl Connection for FerrisConn {
    async fn read(&mut self, key: String) -> OpResult {
        let tx = self.db.create_transaction();
        match tx.get(key.clone()).await.map_err(op_error)? {
            Some(_) => Ok(0),
            None => Err(OpError::missing(&key)),
        }
    }

    async fn write(&mut self, key: String, value: Vec<u8>) -> OpResult {
        // A blind write reads nothing, so it cannot conflict: one attempt, no retry loop.
        let tx = self.db.create_transaction();
        tx.set(key, value);
        tx.commit().await.map_err(op_error)?;
        Ok(0)
    }

    async fn scan(&mut self, start: String, n: usize) -> OpResult {
        let tx = self.db.create_transaction();
        let rows = tx
            .get_range(start.clone(), KEY_SPACE_END, n)
            .await
            .map_err(op_error)?;
        if rows.is_empty() {
            return Err(OpError::missing(&start));
        }
        Ok(0)
    }

    async fn read_modify_write(&mut self, key: String, value: Vec<u8>) -> OpResult {
        let attempts = Arc::new(AtomicU32::new(0));
        let counter = attempts.clone();
        self.db
            .run(|tx| {
                let (key, value, counter) = (key.clone(), value.clone(), counter.clone());
                async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    if tx.get(key.clone()).await?.is_none() {
                        return Err(Error::invalid(format!("key {key} not found")));
                    }
                    tx.set(key, value);
                    Ok(())
                }
            })
            .await
            .map_err(op_error)?;
        Ok(attempts.load(Ordering::Relaxed).saturating_sub(1))
    }

    async fn txn(&mut self, keys: Vec<String>, value: Vec<u8>) -> OpResult {
        let attempts = Arc::new(AtomicU32::new(0));
        let counter = attempts.clone();
        self.db
            .run(|tx| {
                let (keys, value, counter) = (keys.clone(), value.clone(), counter.clone());
                async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    // The reads go out together, as a FoundationDB client issues them (the
                    // other targets read their keys in one request too).
                    let values =
                        futures::future::try_join_all(keys.iter().map(|k| tx.get(k.clone())))
                            .await?;
                    if let Some((k, _)) = keys.iter().zip(&values).find(|(_, v)| v.is_none()) {
                        return Err(Error::invalid(format!("key {k} not found")));
                    }
                    for k in keys {
                        tx.set(k, value.clone());
                    }
                    Ok(())
                }
            })
            .await
            .map_err(op_error)?;
        Ok(attempts.load(Ordering::Relaxed).saturating_sub(1))
    }

    async fn read_at(&mut self, key: String, version: u64) -> OpResult {
        let tx = self.db.create_transaction();
        tx.set_read_version(Version(version)).map_err(op_error)?;
        match tx.get(key.clone()).await.map_err(op_error)? {
            Some(v) if crate::keys::is_load_value(&v) => Ok(0),
            Some(_) => Err(OpError::new(
                "wrong_version",
                format!("key {key} at version {version} has a value written after it"),
            )),
            None => Err(OpError::missing(&key)),
        }
    }
}
