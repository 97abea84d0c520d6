//! A transaction: reads at one version, writes buffered here and sent whole with the commit.

use std::ops::Bound;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

use ferrisdb_common::atomic::{self, AtomicOp};
use ferrisdb_common::overlay::Overlay;
use ferrisdb_common::proto::database_client::DatabaseClient;
use ferrisdb_common::proto::{
    CommitRequest, GetRangeRequest, GetReadVersionRequest, GetRequest, KeyRange, Mutation,
    MutationType,
};
use ferrisdb_common::{Error, Result, Version};
use tonic::transport::Channel;

/// How a range read is cut and ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// At most this many pairs; 0 means all.
    pub limit: usize,
    /// From the end of the range backwards.
    pub reverse: bool,
}

#[derive(Debug, Default)]
struct State {
    read_version: Option<Version>,
    /// This transaction's own writes and range clears, so its reads see them.
    own: Overlay,
    /// Atomic ops on keys whose value this transaction does not know yet, in order: a read
    /// of the key fetches the stored value and applies them.
    pending: BTreeMap<Bytes, Vec<(AtomicOp, Bytes)>>,
    /// Keys given a versionstamped value: unknown until the commit.
    unreadable: BTreeSet<Bytes>,
    mutations: Vec<Mutation>,
    read_conflicts: Vec<KeyRange>,
    committed: Option<Version>,
    versionstamp: Option<Bytes>,
}

impl State {
    /// Forgets what this transaction had pending on keys in `[begin, end)`: a later write
    /// decides them.
    fn overwrite(&mut self, begin: &Bytes, end: &Bytes) {
        let inside = |k: &Bytes| begin <= k && k < end;
        self.pending.retain(|k, _| !inside(k));
        self.unreadable.retain(|k| !inside(k));
    }
}

fn unreadable(key: &[u8]) -> Error {
    Error::invalid(format!(
        "key {:?} has a versionstamped value, which is unknown until the transaction commits",
        String::from_utf8_lossy(key)
    ))
}

/// A FoundationDB-style transaction. Cheap to clone: clones share one transaction, which is
/// what lets `Database::run` hand one to a closure and still commit it afterwards.
#[derive(Debug, Clone)]
pub struct Transaction {
    client: DatabaseClient<Channel>,
    database: Arc<str>,
    state: Arc<Mutex<State>>,
}

fn key_after(key: &[u8]) -> Bytes {
    let mut k = key.to_vec();
    k.push(0);
    Bytes::from(k)
}

/// What a failed commit call means. A FerrisDB code from the compute is its answer. A transport
/// failure is not: the request may have reached the compute and committed before the
/// connection broke, so unless it never left (the connection was refused) the honest answer
/// is `commit_unknown_result`.
fn commit_error(status: tonic::Status) -> Error {
    let tagged = status
        .metadata()
        .contains_key(ferrisdb_common::error::CODE_METADATA_KEY);
    let never_sent = status.code() == tonic::Code::Unavailable
        && (status.message().contains("tcp connect error")
            || status.message().contains("connection refused"));
    if tagged || never_sent {
        return status.into();
    }
    Error::new(
        ferrisdb_common::ErrorKind::CommitUnknownResult,
        format!("the connection failed during commit, which may have happened: {status}"),
    )
}

impl Transaction {
    pub(crate) fn new(client: DatabaseClient<Channel>, database: Arc<str>) -> Transaction {
        Transaction {
            client,
            database,
            state: Arc::default(),
        }
    }

    fn state(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| Error::internal("transaction state poisoned"))
    }

    /// The version this transaction reads at, fetched on first use.
    pub async fn read_version(&self) -> Result<Version> {
        if let Some(v) = self.state()?.read_version {
            return Ok(v);
        }
        let req = GetReadVersionRequest {
            database: self.database.to_string(),
        };
        let v = Version(
            self.client
                .clone()
                .get_read_version(req)
                .await?
                .into_inner()
                .version,
        );
        Ok(*self.state()?.read_version.get_or_insert(v))
    }

    /// Reads from the version `version` instead of the latest one (must be called before any read).
    pub fn set_read_version(&self, version: Version) -> Result<()> {
        self.state()?.read_version = Some(version);
        Ok(())
    }

    /// The value of `key`, seeing this transaction's own writes.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>> {
        let key = key.into();
        {
            let s = self.state()?;
            if s.unreadable.contains(&key) {
                return Err(unreadable(&key));
            }
            if let Some(own) = s.own.entries.get(&key) {
                return Ok(own.clone());
            }
            if s.own.is_cleared(&key) {
                return Ok(None);
            }
        }
        let stored = self.get_stored(&key).await?;
        let mut s = self.state()?;
        let Some(ops) = s.pending.remove(&key) else {
            return Ok(stored);
        };
        // The atomic ops written before this read, applied to what it found: from now on the
        // transaction knows the key's value.
        let mut value = stored.map(|v| v.to_vec());
        for (op, param) in ops {
            value = atomic::apply(op, value.as_deref(), &param)
                .map_err(|e| Error::invalid(e.to_string()))?;
        }
        let value = value.map(Bytes::from);
        s.own.entries.insert(key, value.clone());
        Ok(value)
    }

    /// The stored value of `key` at the read version, with a read conflict on it.
    async fn get_stored(&self, key: &Bytes) -> Result<Option<Bytes>> {
        let version = self.read_version().await?;
        let req = GetRequest {
            database: self.database.to_string(),
            key: key.clone(),
            version: version.0,
        };
        let value = self.client.clone().get(req).await?.into_inner().value;
        self.state()?.read_conflicts.push(KeyRange {
            begin: key.clone(),
            end: key_after(key),
        });
        Ok(value)
    }

    /// Up to `limit` (0: all) key-value pairs in `[begin, end)`, in key order.
    pub async fn get_range(
        &self,
        begin: impl Into<Bytes>,
        end: impl Into<Bytes>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        self.get_range_opts(
            begin,
            end,
            RangeOptions {
                limit,
                reverse: false,
            },
        )
        .await
    }

    /// A range read with [`RangeOptions`], seeing this transaction's own writes.
    pub async fn get_range_opts(
        &self,
        begin: impl Into<Bytes>,
        end: impl Into<Bytes>,
        opts: RangeOptions,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let (begin, end) = (begin.into(), end.into());
        if begin >= end {
            return Ok(Vec::new());
        }
        // Keys with atomic ops pending are read first, which makes their values known.
        let (pending, stamped): (Vec<Bytes>, Option<Bytes>) = {
            let s = self.state()?;
            let inside = |k: &&Bytes| begin <= **k && **k < end;
            (
                s.pending.keys().filter(inside).cloned().collect(),
                s.unreadable.iter().find(inside).cloned(),
            )
        };
        if let Some(k) = stamped {
            return Err(unreadable(&k));
        }
        for k in pending {
            self.get(k).await?;
        }
        // The own writes inside the range, copied so no lock is held across the reads.
        let own = {
            let s = self.state()?;
            Overlay {
                entries: s
                    .own
                    .entries
                    .range::<Bytes, _>((Bound::Included(&begin), Bound::Excluded(&end)))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                cleared: s
                    .own
                    .cleared
                    .iter()
                    .filter(|(b, e)| *b < end && begin < *e)
                    .cloned()
                    .collect(),
            }
        };
        let version = self.read_version().await?;
        let (rows, _) = own
            .read_range(
                begin.clone(),
                end.clone(),
                opts.limit,
                opts.reverse,
                |lo, hi, n| {
                    let req = GetRangeRequest {
                        database: self.database.to_string(),
                        begin: lo,
                        end: hi,
                        version: version.0,
                        limit: n.min(u32::MAX as usize) as u32,
                        reverse: opts.reverse,
                    };
                    let mut client = self.client.clone();
                    async move {
                        let resp = client.get_range(req).await?.into_inner();
                        let rows = resp.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
                        Ok((rows, resp.more))
                    }
                },
            )
            .await?;
        // Conflict on what was actually read: the whole range, or up to the last row returned.
        let cut = opts.limit != 0 && rows.len() == opts.limit;
        let conflict = match (cut, rows.last(), opts.reverse) {
            (true, Some((last, _)), false) => KeyRange {
                begin,
                end: key_after(last),
            },
            (true, Some((last, _)), true) => KeyRange {
                begin: last.clone(),
                end,
            },
            _ => KeyRange { begin, end },
        };
        self.state()?.read_conflicts.push(conflict);
        Ok(rows)
    }

    /// Sets `key` to `value` when the transaction commits.
    pub fn set(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        let (key, value) = (key.into(), value.into());
        if let Ok(mut s) = self.state() {
            s.overwrite(&key, &key_after(&key));
            s.own.entries.insert(key.clone(), Some(value.clone()));
            s.mutations.push(Mutation {
                r#type: MutationType::Set as i32,
                key,
                param: value,
                atomic_op: 0,
            });
        }
    }

    /// Removes `key` when the transaction commits.
    pub fn clear(&self, key: impl Into<Bytes>) {
        let key = key.into();
        if let Ok(mut s) = self.state() {
            s.overwrite(&key, &key_after(&key));
            s.own.entries.insert(key.clone(), None);
            s.mutations.push(Mutation {
                r#type: MutationType::Clear as i32,
                key,
                param: Bytes::new(),
                atomic_op: 0,
            });
        }
    }

    /// Removes every key in `[begin, end)` when the transaction commits; its reads of the
    /// range see it at once. An empty range does nothing; an inverted one (`begin > end`)
    /// makes the commit fail with `invalid_argument`.
    pub fn clear_range(&self, begin: impl Into<Bytes>, end: impl Into<Bytes>) {
        let (begin, end) = (begin.into(), end.into());
        if begin == end {
            return;
        }
        if let Ok(mut s) = self.state() {
            if begin < end {
                s.overwrite(&begin, &end);
                s.own.entries.retain(|k, _| !(begin <= *k && *k < end));
                s.own.cleared.push((begin.clone(), end.clone()));
            }
            s.mutations.push(Mutation {
                r#type: MutationType::ClearRange as i32,
                key: begin,
                param: end,
                atomic_op: 0,
            });
        }
    }

    /// Commits: the writes become durable on a safekeeper quorum, or the error says why not.
    /// Returns the commit version (the read version for a transaction that wrote nothing).
    pub async fn commit(&self) -> Result<Version> {
        let (mutations, read_conflicts, read_version) = {
            let s = self.state()?;
            if let Some(v) = s.committed {
                return Ok(v);
            }
            (
                s.mutations.clone(),
                s.read_conflicts.clone(),
                s.read_version,
            )
        };
        if mutations.is_empty() {
            let v = match read_version {
                Some(v) => v,
                None => self.read_version().await?,
            };
            self.state()?.committed = Some(v);
            return Ok(v);
        }
        let req = CommitRequest {
            database: self.database.to_string(),
            read_version: read_version.unwrap_or_default().0,
            read_conflicts,
            write_conflicts: Vec::new(),
            mutations,
        };
        let response = self
            .client
            .clone()
            .commit(req)
            .await
            .map_err(commit_error)?;
        let response = response.into_inner();
        let version = Version(response.version);
        let mut s = self.state()?;
        s.committed = Some(version);
        s.versionstamp = Some(response.versionstamp);
        Ok(version)
    }

    /// Applies the atomic operation `op` to `key` with `param` when the transaction commits,
    /// with FoundationDB's semantics (see [`ferrisdb_common::atomic`]): the transaction does
    /// not read the key, so it adds no read conflict and concurrent atomic ops on one key never
    /// conflict. Its own later reads of the key see the result.
    ///
    /// For [`AtomicOp::SetVersionstampedKey`] the key is a template ending in the 4-byte
    /// little-endian offset where the 10-byte versionstamp goes (see
    /// `tuple::pack_with_versionstamp`); for [`AtomicOp::SetVersionstampedValue`], the value
    /// is. Such a value cannot be read back before the commit (`invalid_argument`).
    pub fn atomic_op(&self, op: AtomicOp, key: impl Into<Bytes>, param: impl Into<Bytes>) {
        let (key, param) = (key.into(), param.into());
        let Ok(mut s) = self.state() else {
            return;
        };
        s.mutations.push(Mutation {
            r#type: MutationType::Atomic as i32,
            key: key.clone(),
            param: param.clone(),
            atomic_op: u32::from(op.code()),
        });
        match op {
            AtomicOp::SetVersionstampedKey => {}
            AtomicOp::SetVersionstampedValue => {
                s.overwrite(&key, &key_after(&key));
                s.own.entries.remove(&key);
                s.unreadable.insert(key);
            }
            _ => {
                let known = match s.own.entries.get(&key) {
                    Some(v) => Some(v.clone()),
                    None if s.own.is_cleared(&key) => Some(None),
                    None => None,
                };
                match known {
                    Some(v) => {
                        // Versionstamp ops are handled above, so `apply` cannot refuse.
                        let new = atomic::apply(op, v.as_deref(), &param).ok().flatten();
                        s.own.entries.insert(key, new.map(Bytes::from));
                    }
                    None => s.pending.entry(key).or_default().push((op, param)),
                }
            }
        }
    }

    /// The versionstamp of a committed transaction: its commit version (8 bytes) and its order
    /// in the commit batch (2 bytes), big-endian — what its versionstamped keys and values
    /// received. `None` before the commit and for a transaction that wrote nothing.
    pub fn versionstamp(&self) -> Option<Bytes> {
        self.state()
            .ok()
            .and_then(|s| s.versionstamp.clone())
            .filter(|v| !v.is_empty())
    }

    /// The version this transaction committed at, once it has.
    pub fn committed_version(&self) -> Option<Version> {
        self.state().ok().and_then(|s| s.committed)
    }
}
