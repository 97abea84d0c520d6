//! PostgreSQL: one table `kv(k text primary key, v bytea)`, upserts by key.

use anyhow::Context;
use tokio_postgres::{Client, NoTls, Statement};

use super::{Connection, OpError, OpResult, Target};
use crate::keys::{key_name, load_value};

/// Rows per load statement.
const LOAD_BATCH: u64 = 1000;

const UPSERT: &str =
    "INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v";
const UPSERT_MANY: &str = "INSERT INTO kv (k, v) SELECT * FROM unnest($1::text[], $2::bytea[]) \
     ON CONFLICT (k) DO UPDATE SET v = excluded.v";

/// One PostgreSQL server, given as a libpq-style connection string.
#[derive(Debug)]
pub struct Postgres {
    config: String,
}

impl Postgres {
    /// The server described by `config` (e.g. `host=127.0.0.1 port=25432 user=postgres`).
    pub fn new(config: &str) -> Postgres {
        Postgres {
            config: config.to_string(),
        }
    }

    async fn client(&self) -> anyhow::Result<Client> {
        let (client, connection) = tokio_postgres::connect(&self.config, NoTls)
            .await
            .with_context(|| format!("connecting to PostgreSQL ({})", self.config))?;
        // The connection object does the I/O; it ends when the client is dropped.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("postgres connection: {e}");
            }
        });
        Ok(client)
    }
}

fn pg_error(e: tokio_postgres::Error) -> OpError {
    let code = e.code().map_or_else(
        || "postgres".to_string(),
        |c| format!("sqlstate_{}", c.code()),
    );
    OpError::new(code, e)
}

impl Target for Postgres {
    type Conn = PgConn;

    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn connect(&self) -> anyhow::Result<PgConn> {
        let client = self.client().await?;
        let prep = async |sql: &str| client.prepare(sql).await.context("preparing statements");
        Ok(PgConn {
            read: prep("SELECT v FROM kv WHERE k = $1").await?,
            upsert: prep(UPSERT).await?,
            scan: prep("SELECT k, v FROM kv WHERE k >= $1 ORDER BY k LIMIT $2").await?,
            lock_one: prep("SELECT v FROM kv WHERE k = $1 FOR UPDATE").await?,
            lock_many: prep("SELECT k, v FROM kv WHERE k = ANY($1) ORDER BY k FOR UPDATE").await?,
            update_many: prep("UPDATE kv SET v = $2 WHERE k = ANY($1)").await?,
            client,
        })
    }

    async fn load(&self, keys: u64, value_size: usize) -> anyhow::Result<()> {
        let client = self.client().await?;
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS kv (k text PRIMARY KEY, v bytea NOT NULL); \
                 TRUNCATE kv;",
            )
            .await
            .context("creating table kv")?;
        let stmt = client.prepare(UPSERT_MANY).await?;
        let mut start = 0;
        while start < keys {
            let end = (start + LOAD_BATCH).min(keys);
            let ks: Vec<String> = (start..end).map(key_name).collect();
            let vs: Vec<Vec<u8>> = (start..end).map(|i| load_value(i, value_size)).collect();
            client
                .execute(&stmt, &[&ks, &vs])
                .await
                .with_context(|| format!("loading keys {start}..{end}"))?;
            start = end;
        }
        client.batch_execute("VACUUM ANALYZE kv").await?;
        Ok(())
    }

    async fn snapshot(&self) -> anyhow::Result<Option<u64>> {
        // Without temporal tables PostgreSQL keeps no readable history.
        Ok(None)
    }

    async fn between_phases(&self, _keep: Option<u64>) -> anyhow::Result<String> {
        // A checkpoint now rather than in the middle of a phase, as etcd is compacted.
        self.client().await?.batch_execute("CHECKPOINT").await?;
        Ok("checkpoint".to_string())
    }
}

/// One PostgreSQL session with its prepared statements.
pub struct PgConn {
    client: Client,
    read: Statement,
    upsert: Statement,
    scan: Statement,
    lock_one: Statement,
    lock_many: Statement,
    update_many: Statement,
}

impl Connection for PgConn {
    async fn read(&mut self, key: String) -> OpResult {
        let row = self
            .client
            .query_opt(&self.read, &[&key])
            .await
            .map_err(pg_error)?;
        row.map(|_| 0).ok_or_else(|| OpError::missing(&key))
    }

    async fn write(&mut self, key: String, value: Vec<u8>) -> OpResult {
        self.client
            .execute(&self.upsert, &[&key, &value])
            .await
            .map_err(pg_error)?;
        Ok(0)
    }

    async fn scan(&mut self, start: String, n: usize) -> OpResult {
        let limit = n as i64;
        let rows = self
            .client
            .query(&self.scan, &[&start, &limit])
            .await
            .map_err(pg_error)?;
        if rows.is_empty() {
            return Err(OpError::missing(&start));
        }
        Ok(0)
    }

    async fn read_modify_write(&mut self, key: String, value: Vec<u8>) -> OpResult {
        // Row locks (SELECT … FOR UPDATE) make it atomic without retries.
        let tx = self.client.transaction().await.map_err(pg_error)?;
        if tx
            .query_opt(&self.lock_one, &[&key])
            .await
            .map_err(pg_error)?
            .is_none()
        {
            return Err(OpError::missing(&key));
        }
        tx.execute(&self.upsert, &[&key, &value])
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(0)
    }

    async fn txn(&mut self, keys: Vec<String>, value: Vec<u8>) -> OpResult {
        // Keys arrive sorted and are locked in key order, so two of these cannot deadlock.
        let tx = self.client.transaction().await.map_err(pg_error)?;
        let rows = tx
            .query(&self.lock_many, &[&keys])
            .await
            .map_err(pg_error)?;
        if rows.len() != keys.len() {
            return Err(OpError::new(
                "missing",
                "a key of the transaction is missing",
            ));
        }
        tx.execute(&self.update_many, &[&keys, &value])
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(0)
    }

    async fn read_at(&mut self, _key: String, _version: u64) -> OpResult {
        Err(OpError::new(
            "unsupported",
            "PostgreSQL cannot read the past",
        ))
    }
}
