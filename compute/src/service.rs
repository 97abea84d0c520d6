//! The client API (`ferrisdb.v1.Database`) served by the compute.

use std::sync::Arc;

use ferrisdb_common::limits::{
    MAX_KEY_SIZE, check_key, check_read_key, check_read_range, check_transaction_size, check_value,
    clear_range_bounds, mutation_size, range_size,
};
use ferrisdb_common::proto::database_server::Database;
use ferrisdb_common::proto::{
    ChangesBatch, ChangesRequest, CommitRequest, CommitResponse, GetRangeRequest, GetRangeResponse,
    GetReadVersionRequest, GetReadVersionResponse, GetRequest, GetResponse, HistoryRequest,
    HistoryResponse, KeyValue, VersionAtRequest, VersionAtResponse, WatchRequest, WatchResponse,
};
use ferrisdb_common::wal::Mutation;
use ferrisdb_common::{Error, Result, Version};
use tonic::{Request, Response, Status};

use crate::activity::Activity;
use crate::atomics::Write;
use crate::databases::Databases;
use crate::node::Node;
use crate::resolver::KeyRange;
use bytes::Bytes;
use ferrisdb_common::atomic::{self, AtomicOp};

/// What the client API needs: the databases served and, once elected, their primaries.
#[derive(Debug, Clone)]
pub struct ComputeService {
    databases: Databases,
    activity: Arc<Activity>,
}

impl ComputeService {
    /// A service routing each request to its database's primary (`unavailable` until it has
    /// won its term), recording client activity in `activity`.
    pub fn new(databases: Databases, activity: Arc<Activity>) -> ComputeService {
        ComputeService {
            databases,
            activity,
        }
    }

    fn node(&self, database: &str) -> Result<Node> {
        self.activity.touch();
        self.databases.node(database)
    }
}

/// Checks an atomic op from the wire: a known op, a writable key, a value within limits, a
/// well-formed versionstamp template. Returns it with the write conflict it adds: for a
/// versionstamped key, the range of every key the template could become (FoundationDB's
/// rule), so a transaction that read any part of that range conflicts with it.
fn atomic_write(m: ferrisdb_common::proto::Mutation) -> Result<(Write, KeyRange)> {
    let code = u8::try_from(m.atomic_op).ok().and_then(AtomicOp::from_code);
    let op = code.ok_or_else(|| Error::invalid(format!("unknown atomic op {}", m.atomic_op)))?;
    // The template's length without its offset suffix, and where the stamp goes.
    let template = |t: &[u8]| {
        atomic::versionstamp_offset(t)
            .map(|at| (t.len() - atomic::VERSIONSTAMP_OFFSET_LEN, at))
            .map_err(|e| Error::invalid(format!("{}: {e}", op.name())))
    };
    let conflict = match op {
        AtomicOp::SetVersionstampedKey => {
            let (len, at) = template(&m.key)?;
            check_key(&m.key[..len])?;
            check_value(&m.param)?;
            versionstamped_key_range(&m.key[..len], at)?
        }
        AtomicOp::SetVersionstampedValue => {
            check_key(&m.key)?;
            check_value(&m.param[..template(&m.param)?.0])?;
            KeyRange::single(&m.key)
        }
        _ => {
            check_key(&m.key)?;
            check_value(&m.param)?;
            KeyRange::single(&m.key)
        }
    };
    Ok((
        Write::Atomic {
            op,
            key: m.key,
            param: m.param,
        },
        conflict,
    ))
}

/// Every key a versionstamped key template (`key`, stamp at `offset`) can become: from the
/// template with the stamp all `0x00` to just past it with the stamp all `0xff`.
pub fn versionstamped_key_range(key: &[u8], offset: usize) -> Result<KeyRange> {
    let stamp = offset..offset + atomic::VERSIONSTAMP_LEN;
    if stamp.end > key.len() {
        return Err(Error::invalid(
            "the versionstamp lies past the end of the key",
        ));
    }
    let mut begin = key.to_vec();
    begin[stamp.clone()].fill(0x00);
    let mut end = key.to_vec();
    end[stamp].fill(0xff);
    end.push(0);
    Ok(KeyRange {
        begin: Bytes::from(begin),
        end: Bytes::from(end),
    })
}

/// A commit request's writes and conflict ranges, checked: each mutation's keys and values,
/// FoundationDB's no-ops (clears of keys over the limit, empty range clears), the write
/// conflict every mutation adds, and the transaction's size.
pub fn decode_commit(
    req_mutations: Vec<ferrisdb_common::proto::Mutation>,
    read_conflicts: Vec<ferrisdb_common::proto::KeyRange>,
    write_conflicts: Vec<ferrisdb_common::proto::KeyRange>,
) -> Result<(Vec<KeyRange>, Vec<KeyRange>, Vec<Write>)> {
    // Counted as it arrives, each item at least its encoded size (see
    // limits::MUTATION_OVERHEAD), so what this holds stays proportional to the bytes
    // received; and checked before anything is built for the next item.
    let mut size = 0usize;
    // Grown as items pass the size check, never sized from the request's counts.
    let mut mutations = Vec::new();
    let mut writes = Vec::new();
    for m in req_mutations {
        size += mutation_size(m.key.len(), m.param.len());
        check_transaction_size(size)?;
        if m.r#type == ferrisdb_common::proto::MutationType::Atomic as i32 {
            let (w, conflict) = atomic_write(m)?;
            writes.push(conflict);
            mutations.push(w);
            continue;
        }
        let m = Mutation::try_from(m)?;
        let m = match m {
            Mutation::ClearRange { begin, end } => {
                // Bounds over the key limit are cut, and an empty range is a no-op, as in
                // FoundationDB.
                let Some((begin, end)) = clear_range_bounds(&begin, &end)? else {
                    continue;
                };
                writes.push(KeyRange {
                    begin: begin.clone(),
                    end: end.clone(),
                });
                Mutation::ClearRange { begin, end }
            }
            Mutation::Clear { key } if key.len() > MAX_KEY_SIZE => {
                // No key that long exists: clearing it is a no-op (FoundationDB).
                check_read_key(&key)?;
                continue;
            }
            m => {
                check_key(m.key())?;
                if let Some(v) = m.value() {
                    check_value(v)?;
                }
                writes.push(KeyRange::single(m.key()));
                m
            }
        };
        mutations.push(Write::Plain(m));
    }
    let reads = read_conflicts
        .into_iter()
        .map(range)
        .collect::<Result<Vec<_>>>()?;
    for r in write_conflicts {
        writes.push(range(r)?);
    }
    size += reads
        .iter()
        .chain(writes.iter())
        .map(|r| range_size(r.begin.len(), r.end.len()))
        .sum::<usize>();
    check_transaction_size(size)?;
    Ok((reads, writes, mutations))
}

fn range(r: ferrisdb_common::proto::KeyRange) -> Result<KeyRange> {
    if r.begin > r.end {
        return Err(Error::invalid("conflict range begins after it ends"));
    }
    Ok(KeyRange {
        begin: r.begin,
        end: r.end,
    })
}

#[tonic::async_trait]
impl Database for ComputeService {
    async fn get_read_version(
        &self,
        req: Request<GetReadVersionRequest>,
    ) -> Result<Response<GetReadVersionResponse>, Status> {
        let p = self.node(&req.get_ref().database)?;
        Ok(Response::new(GetReadVersionResponse {
            version: p.read_version().await?.0,
        }))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let req = req.into_inner();
        let p = self.node(&req.database)?;
        check_read_key(&req.key)?;
        let view = p.view();
        // No key that long can exist: absent, as in FoundationDB.
        let too_long = req.key.len() > MAX_KEY_SIZE;
        let read = |version| async move {
            if too_long {
                return Ok(None);
            }
            view.get(req.key, version).await
        };
        let (read_version, value) = if req.latest {
            let (version, value) = p.read_latest(read).await?;
            (version.0, value)
        } else {
            (0, read(Version(req.version)).await?)
        };
        self.activity.read_answered();
        Ok(Response::new(GetResponse {
            value,
            read_version,
        }))
    }

    async fn get_range(
        &self,
        req: Request<GetRangeRequest>,
    ) -> Result<Response<GetRangeResponse>, Status> {
        let req = req.into_inner();
        let p = self.node(&req.database)?;
        check_read_range(&req.begin, &req.end)?;
        let view = p.view();
        let read =
            |version| view.get_range(req.begin, req.end, version, req.limit as usize, req.reverse);
        let (read_version, (rows, more)) = if req.latest {
            let (version, answer) = p.read_latest(read).await?;
            (version.0, answer)
        } else {
            (0, read(Version(req.version)).await?)
        };
        self.activity.read_answered();
        Ok(Response::new(GetRangeResponse {
            kvs: rows
                .into_iter()
                .map(|(key, value)| KeyValue { key, value })
                .collect(),
            more,
            read_version,
        }))
    }

    type ChangesStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<ChangesBatch, Status>> + Send + 'static>,
    >;

    async fn changes(
        &self,
        req: Request<ChangesRequest>,
    ) -> Result<Response<Self::ChangesStream>, Status> {
        let req = req.into_inner();
        let p = self.node(&req.database)?;
        // The pageserver holds every ingested commit (the hot tier only the newest values), so
        // it serves the feed; new commits reach it within milliseconds.
        let stream = p.view().pageserver().changes(req).await?.into_inner();
        Ok(Response::new(Box::pin(stream)))
    }

    async fn history(
        &self,
        req: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        let req = req.into_inner();
        let p = self.node(&req.database)?;
        check_read_key(&req.key)?;
        let entries = p
            .view()
            .history(req.key, Version(req.from_version), Version(req.to_version))
            .await?;
        Ok(Response::new(HistoryResponse { entries }))
    }

    async fn version_at(
        &self,
        req: Request<VersionAtRequest>,
    ) -> Result<Response<VersionAtResponse>, Status> {
        let req = req.into_inner();
        let p = self.node(&req.database)?;
        let version = p.view().version_at(req.timestamp_micros).await?;
        Ok(Response::new(VersionAtResponse { version: version.0 }))
    }

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<WatchResponse>, Status> {
        let req = req.into_inner();
        let p = self.node(&req.database)?;
        check_key(&req.key)?;
        let _busy = self.activity.busy();
        let (version, value) = p.view().watch(req.key, req.value).await?;
        Ok(Response::new(WatchResponse {
            version: version.0,
            value,
        }))
    }

    async fn commit(
        &self,
        req: Request<CommitRequest>,
    ) -> Result<Response<CommitResponse>, Status> {
        let req = req.into_inner();
        let p = self.node(&req.database)?;
        let read_version = Version(req.read_version);
        if req.mutations.is_empty() && req.write_conflicts.is_empty() {
            // A read-only transaction is serializable at its read version: nothing to commit.
            return Ok(Response::new(CommitResponse {
                version: read_version.0,
                commit_time_micros: 0,
                versionstamp: Bytes::new(),
            }));
        }
        let (reads, writes, mutations) =
            decode_commit(req.mutations, req.read_conflicts, req.write_conflicts)?;
        let (version, commit_time_micros, order) = p
            .primary()?
            .commit(read_version, reads, writes, mutations)
            .await?;
        Ok(Response::new(CommitResponse {
            version: version.0,
            commit_time_micros,
            versionstamp: Bytes::copy_from_slice(&atomic::versionstamp(version.0, order)),
        }))
    }
}
