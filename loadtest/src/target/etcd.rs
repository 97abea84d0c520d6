//! etcd v3 over gRPC: a 3-member cluster, clients spread over the members.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use tonic::transport::{Channel, Endpoint};

use super::{Connection, MAX_ATTEMPTS, OpError, OpResult, Target};
use crate::keys::{KEY_SPACE_END, is_load_value, key_name, load_value};

/// The generated etcd v3 client (from `proto/etcdserverpb/kv.proto`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("etcdserverpb");
}

use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::kv_client::KvClient;
use pb::maintenance_client::MaintenanceClient;
use pb::request_op::Request;
use pb::{
    CompactionRequest, Compare, DefragmentRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

/// Puts per load transaction (etcd refuses more than 128 operations in one by default).
const LOAD_BATCH: u64 = 100;

/// An etcd cluster given by its members' client URLs.
#[derive(Debug)]
pub struct Etcd {
    endpoints: Vec<String>,
    next: AtomicUsize,
}

impl Etcd {
    /// The members at `endpoints` (e.g. `http://127.0.0.1:23379`).
    pub fn new(endpoints: Vec<String>) -> anyhow::Result<Etcd> {
        anyhow::ensure!(!endpoints.is_empty(), "no etcd endpoints");
        Ok(Etcd {
            endpoints,
            next: AtomicUsize::new(0),
        })
    }

    async fn channel(url: &str) -> anyhow::Result<Channel> {
        Endpoint::from_shared(url.to_string())?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to etcd at {url}"))
    }

    async fn kv(&self) -> anyhow::Result<KvClient<Channel>> {
        // Round-robin over the members, as etcd's own client balancer spreads clients;
        // followers forward writes to the leader.
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        Ok(KvClient::new(Etcd::channel(&self.endpoints[i]).await?))
    }

    async fn revision(&self) -> anyhow::Result<i64> {
        let resp = self
            .kv()
            .await?
            .range(RangeRequest {
                key: key_name(0).into_bytes(),
                count_only: true,
                ..RangeRequest::default()
            })
            .await?
            .into_inner();
        Ok(resp.header.map_or(0, |h| h.revision))
    }
}

fn status_error(s: tonic::Status) -> OpError {
    OpError::new(format!("grpc_{:?}", s.code()).to_lowercase(), s.message())
}

fn put(key: String, value: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: key.into_bytes(),
            value,
            ..PutRequest::default()
        })),
    }
}

fn unchanged_since(key: &[u8], mod_revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Mod as i32,
        key: key.to_vec(),
        target_union: Some(TargetUnion::ModRevision(mod_revision)),
    }
}

impl Target for Etcd {
    type Conn = EtcdConn;

    fn name(&self) -> &'static str {
        "etcd"
    }

    async fn connect(&self) -> anyhow::Result<EtcdConn> {
        Ok(EtcdConn {
            kv: self.kv().await?,
        })
    }

    async fn load(&self, keys: u64, value_size: usize) -> anyhow::Result<()> {
        let mut kv = self.kv().await?;
        let mut start = 0;
        while start < keys {
            let end = (start + LOAD_BATCH).min(keys);
            let success = (start..end)
                .map(|i| put(key_name(i), load_value(i, value_size)))
                .collect();
            kv.txn(TxnRequest {
                success,
                ..TxnRequest::default()
            })
            .await
            .with_context(|| format!("loading keys {start}..{end}"))?;
            start = end;
        }
        Ok(())
    }

    async fn snapshot(&self) -> anyhow::Result<Option<u64>> {
        Ok(Some(u64::try_from(self.revision().await?)?))
    }

    async fn between_phases(&self, keep: Option<u64>) -> anyhow::Result<String> {
        // etcd keeps every revision until compacted and its bbolt file only shrinks on
        // defragmentation; without both, reads slow down badly after a heavy write phase
        // (see STACK.md). Compact up to the time-travel snapshot at most, so it stays
        // readable.
        let current = self.revision().await?;
        let at = match keep {
            Some(k) => i64::try_from(k)?.min(current),
            None => current,
        };
        let compacted = match self
            .kv()
            .await?
            .compact(CompactionRequest {
                revision: at,
                physical: true,
            })
            .await
        {
            Ok(_) => format!("compacted at revision {at}"),
            // Compacting at an already-compacted revision is refused; nothing to do then.
            Err(s) if s.message().contains("compacted") => {
                format!("already compacted at {at}")
            }
            Err(s) => return Err(s).context("etcd compaction"),
        };
        for url in &self.endpoints {
            MaintenanceClient::new(Etcd::channel(url).await?)
                .defragment(DefragmentRequest {})
                .await
                .with_context(|| format!("defragmenting {url}"))?;
        }
        Ok(format!("{compacted}, defragmented every member"))
    }
}

/// One etcd client (its own HTTP/2 connection to one member).
#[derive(Debug)]
pub struct EtcdConn {
    kv: KvClient<Channel>,
}

impl EtcdConn {
    async fn get(&mut self, key: &str, revision: i64) -> Result<pb::KeyValue, OpError> {
        // serializable = false: a linearizable read (ReadIndex through the leader), the same
        // guarantee as a FerrisDB read at the latest committed version.
        let resp = self
            .kv
            .range(RangeRequest {
                key: key.as_bytes().to_vec(),
                revision,
                ..RangeRequest::default()
            })
            .await
            .map_err(status_error)?
            .into_inner();
        resp.kvs
            .into_iter()
            .next()
            .ok_or_else(|| OpError::missing(key))
    }

    /// Reads `keys` in one read-only transaction, then writes them all if none changed;
    /// retries on a lost race.
    async fn compare_and_put(&mut self, keys: Vec<String>, value: Vec<u8>) -> OpResult {
        for attempt in 0..MAX_ATTEMPTS {
            let reads = keys
                .iter()
                .map(|k| RequestOp {
                    request: Some(Request::RequestRange(RangeRequest {
                        key: k.as_bytes().to_vec(),
                        ..RangeRequest::default()
                    })),
                })
                .collect();
            let resp = self
                .kv
                .txn(TxnRequest {
                    success: reads,
                    ..TxnRequest::default()
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let mut compare = Vec::with_capacity(keys.len());
            for (k, r) in keys.iter().zip(resp.responses) {
                let kv = match r.response {
                    Some(pb::response_op::Response::ResponseRange(rr)) => rr.kvs.into_iter().next(),
                    _ => None,
                };
                let kv = kv.ok_or_else(|| OpError::missing(k))?;
                compare.push(unchanged_since(&kv.key, kv.mod_revision));
            }
            let success = keys.iter().map(|k| put(k.clone(), value.clone())).collect();
            let done = self
                .kv
                .txn(TxnRequest {
                    compare,
                    success,
                    failure: Vec::new(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if done.succeeded {
                return Ok(attempt);
            }
        }
        Err(OpError::new("conflict", "too many lost races"))
    }
}

impl Connection for EtcdConn {
    async fn read(&mut self, key: String) -> OpResult {
        self.get(&key, 0).await.map(|_| 0)
    }

    async fn write(&mut self, key: String, value: Vec<u8>) -> OpResult {
        self.kv
            .put(PutRequest {
                key: key.into_bytes(),
                value,
                ..PutRequest::default()
            })
            .await
            .map_err(status_error)?;
        Ok(0)
    }

    async fn scan(&mut self, start: String, n: usize) -> OpResult {
        let resp = self
            .kv
            .range(RangeRequest {
                key: start.clone().into_bytes(),
                range_end: KEY_SPACE_END.as_bytes().to_vec(),
                limit: n as i64,
                ..RangeRequest::default()
            })
            .await
            .map_err(status_error)?
            .into_inner();
        if resp.kvs.is_empty() {
            return Err(OpError::missing(&start));
        }
        Ok(0)
    }

    async fn read_modify_write(&mut self, key: String, value: Vec<u8>) -> OpResult {
        // A single-key read then a put guarded by the read's mod revision: what an etcd
        // application does for an atomic update.
        for attempt in 0..MAX_ATTEMPTS {
            let kv = self.get(&key, 0).await?;
            let done = self
                .kv
                .txn(TxnRequest {
                    compare: vec![unchanged_since(&kv.key, kv.mod_revision)],
                    success: vec![put(key.clone(), value.clone())],
                    failure: Vec::new(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if done.succeeded {
                return Ok(attempt);
            }
        }
        Err(OpError::new("conflict", "too many lost races"))
    }

    async fn txn(&mut self, keys: Vec<String>, value: Vec<u8>) -> OpResult {
        self.compare_and_put(keys, value).await
    }

    async fn read_at(&mut self, key: String, version: u64) -> OpResult {
        let revision = i64::try_from(version).map_err(|e| OpError::new("invalid", e))?;
        let kv = self.get(&key, revision).await?;
        if is_load_value(&kv.value) {
            Ok(0)
        } else {
            Err(OpError::new(
                "wrong_version",
                format!("key {key} at revision {revision} has a newer value"),
            ))
        }
    }
}
