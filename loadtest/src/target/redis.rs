//! Redis with an fsynced append-only file: plain string keys, plus a sorted set indexing
//! the key names for range reads (as YCSB's Redis binding keeps one).

use anyhow::Context;
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Value};

use super::{Connection, MAX_ATTEMPTS, OpError, OpResult, Target};
use crate::keys::{key_name, load_value};

/// The sorted set holding every key name with score 0, so `ZRANGEBYLEX` lists them in order.
const INDEX: &str = "loadtest:index";

/// Keys per load pipeline.
const LOAD_BATCH: u64 = 1000;

/// One Redis server.
#[derive(Debug)]
pub struct Redis {
    client: redis::Client,
}

impl Redis {
    /// The server at `url` (e.g. `redis://127.0.0.1:25379/`).
    pub fn new(url: &str) -> anyhow::Result<Redis> {
        Ok(Redis {
            client: redis::Client::open(url).with_context(|| format!("redis URL {url}"))?,
        })
    }

    async fn conn(&self) -> anyhow::Result<MultiplexedConnection> {
        self.client
            .get_multiplexed_async_connection()
            .await
            .context("connecting to Redis")
    }
}

fn redis_error(e: redis::RedisError) -> OpError {
    OpError::new(format!("redis_{:?}", e.kind()).to_lowercase(), e)
}

impl Target for Redis {
    type Conn = RedisConn;

    fn name(&self) -> &'static str {
        "redis"
    }

    async fn connect(&self) -> anyhow::Result<RedisConn> {
        // Each client has its own connection, so WATCH state is its alone.
        Ok(RedisConn {
            con: self.conn().await?,
        })
    }

    async fn load(&self, keys: u64, value_size: usize) -> anyhow::Result<()> {
        let mut con = self.conn().await?;
        let mut start = 0;
        while start < keys {
            let end = (start + LOAD_BATCH).min(keys);
            let mut pipe = redis::pipe();
            for i in start..end {
                let k = key_name(i);
                pipe.set(&k, load_value(i, value_size)).ignore();
                pipe.zadd(INDEX, &k, 0).ignore();
            }
            pipe.query_async::<()>(&mut con)
                .await
                .with_context(|| format!("loading keys {start}..{end}"))?;
            start = end;
        }
        Ok(())
    }

    async fn snapshot(&self) -> anyhow::Result<Option<u64>> {
        // Redis keeps only the latest value of a key.
        Ok(None)
    }

    async fn between_phases(&self, _keep: Option<u64>) -> anyhow::Result<String> {
        Ok(String::new())
    }
}

/// One Redis client.
pub struct RedisConn {
    con: MultiplexedConnection,
}

impl RedisConn {
    /// WATCHes `keys`, reads them, and writes `value` to all in MULTI/EXEC; EXEC answers nil
    /// when a watched key changed, and the whole thing is retried.
    async fn watched_update(&mut self, keys: &[String], value: &[u8]) -> OpResult {
        for attempt in 0..MAX_ATTEMPTS {
            redis::cmd("WATCH")
                .arg(keys)
                .query_async::<()>(&mut self.con)
                .await
                .map_err(redis_error)?;
            let current: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                .arg(keys)
                .query_async(&mut self.con)
                .await
                .map_err(redis_error)?;
            if let Some(i) = current.iter().position(Option::is_none) {
                let _ = redis::cmd("UNWATCH").query_async::<()>(&mut self.con).await;
                return Err(OpError::missing(&keys[i]));
            }
            let mut pipe = redis::pipe();
            pipe.atomic();
            for k in keys {
                pipe.set(k, value).ignore();
            }
            let outcome: Value = pipe.query_async(&mut self.con).await.map_err(redis_error)?;
            if !matches!(outcome, Value::Nil) {
                return Ok(attempt);
            }
        }
        Err(OpError::new("conflict", "too many lost races"))
    }
}

impl Connection for RedisConn {
    async fn read(&mut self, key: String) -> OpResult {
        let v: Option<Vec<u8>> = self.con.get(&key).await.map_err(redis_error)?;
        v.map(|_| 0).ok_or_else(|| OpError::missing(&key))
    }

    async fn write(&mut self, key: String, value: Vec<u8>) -> OpResult {
        self.con
            .set::<_, _, ()>(key, value)
            .await
            .map_err(redis_error)?;
        Ok(0)
    }

    async fn scan(&mut self, start: String, n: usize) -> OpResult {
        let names: Vec<String> = redis::cmd("ZRANGEBYLEX")
            .arg(INDEX)
            .arg(format!("[{start}"))
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(n)
            .query_async(&mut self.con)
            .await
            .map_err(redis_error)?;
        if names.is_empty() {
            return Err(OpError::missing(&start));
        }
        let _: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(&names)
            .query_async(&mut self.con)
            .await
            .map_err(redis_error)?;
        Ok(0)
    }

    async fn read_modify_write(&mut self, key: String, value: Vec<u8>) -> OpResult {
        self.watched_update(&[key], &value).await
    }

    async fn txn(&mut self, keys: Vec<String>, value: Vec<u8>) -> OpResult {
        self.watched_update(&keys, &value).await
    }

    async fn read_at(&mut self, _key: String, _version: u64) -> OpResult {
        Err(OpError::new("unsupported", "Redis cannot read the past"))
    }
}
