//! A transaction: reads at one version, writes buffered here and sent whole with the commit.

use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

use ferrisdb_common::atomic::{self, AtomicOp};
use ferrisdb_common::limits::{MAX_KEY_SIZE, MAX_READ_VERSION_AGE};
use ferrisdb_common::overlay::{Overlay, Page};
use ferrisdb_common::proto::{
    CommitRequest, GetRangeRequest, GetReadVersionRequest, GetRequest, KeyRange, Mutation,
    MutationType,
};
use ferrisdb_common::{Error, ErrorKind, Result, Version};

use crate::KeySelector;
use crate::conn::Conn;
use crate::watch::Watch;

/// How a range read is cut and ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// At most this many pairs; 0 means all.
    pub limit: usize,
    /// From the end of the range backwards.
    pub reverse: bool,
    /// For [`Transaction::get_range_stream`]: pairs fetched per round trip (0: 1,000).
    pub batch_size: usize,
}

/// The pairs of a streamed range read ([`Transaction::get_range_stream`]), in the order asked.
pub type RangeStream = futures::stream::BoxStream<'static, Result<(Bytes, Bytes)>>;

/// Pairs per round trip of a streamed range read when the options do not say.
const DEFAULT_BATCH_SIZE: usize = 1_000;

#[derive(Debug, Default)]
struct State {
    read_version: Option<Version>,
    /// When the compute handed out `read_version` as its latest (a version given with
    /// [`Transaction::set_read_version`] is a time-travel read and has none): reads at it stop
    /// after [`MAX_READ_VERSION_AGE`], as FoundationDB's storage servers stop serving a
    /// version that old. The commit's check is the resolver's.
    latest_at: Option<Instant>,
    /// This transaction's own writes and range clears, so its reads see them.
    own: Overlay,
    /// Atomic ops on keys whose value this transaction does not know yet, in order: a read
    /// of the key fetches the stored value and applies them.
    pending: BTreeMap<Bytes, Vec<(AtomicOp, Bytes)>>,
    /// Keys given a versionstamped value: unknown until the commit.
    unreadable: BTreeSet<Bytes>,
    /// The templates of this transaction's versionstamped keys: where each lands is unknown
    /// until the commit, so reads of the range it may land in are refused (see
    /// [`State::stamped_ranges`]).
    stamped_keys: Vec<Bytes>,
    mutations: Vec<Mutation>,
    read_conflicts: Vec<KeyRange>,
    /// Write conflicts added explicitly (mutations add their own on the compute).
    write_conflicts: Vec<KeyRange>,
    committed: Option<Version>,
    versionstamp: Option<Bytes>,
}

impl State {
    /// Takes `v`, just answered by the compute as its latest version, as the read version
    /// unless the transaction already has one; returns the read version.
    fn adopt_latest(&mut self, v: Version) -> Version {
        if self.read_version.is_none() {
            self.read_version = Some(v);
            self.latest_at = Some(Instant::now());
        }
        self.read_version.unwrap_or(v)
    }

    /// Forgets what this transaction had pending on keys in `[begin, end)`: a later write
    /// decides them.
    fn overwrite(&mut self, begin: &Bytes, end: &Bytes) {
        let inside = |k: &Bytes| begin <= k && k < end;
        self.pending.retain(|k, _| !inside(k));
        self.unreadable.retain(|k| !inside(k));
        // A versionstamped key is known again only once a later clear covers every place it
        // could have landed (it then lands and is cleared).
        self.stamped_keys
            .retain(|t| stamped_range(t, 0).is_none_or(|(b, e)| !(*begin <= b && e <= *end)));
    }

    /// Where this transaction's versionstamped keys may land: for each, the keys its template
    /// gives with every versionstamp from the version after the read version on (its commit
    /// version is above the read version; before the read version is known, from zero), as
    /// FoundationDB's `getVersionstampKeyRange` bounds it (which starts one version lower).
    fn stamped_ranges(&self) -> impl Iterator<Item = (Bytes, Bytes)> + '_ {
        let from = self.read_version.map_or(0, |v| v.0.saturating_add(1));
        self.stamped_keys
            .iter()
            .filter_map(move |t| stamped_range(t, from))
    }

    /// The first of this transaction's versionstamped-key ranges that meets `[begin, end)`.
    fn stamped_range_in(&self, begin: &[u8], end: &[u8]) -> Option<(Bytes, Bytes)> {
        self.stamped_ranges()
            .find(|(b, e)| b.as_ref() < end && begin < e.as_ref())
    }
}

/// The keys `template` (a versionstamped key's) may become with a versionstamp from
/// `(from, 0)` up: `[key with that stamp, key with the stamp all 0xff, then \0)`; `None` for
/// a template the commit will refuse anyway.
fn stamped_range(template: &[u8], from: u64) -> Option<(Bytes, Bytes)> {
    let low = atomic::place_versionstamp(template, &atomic::versionstamp(from, 0)).ok()?;
    let high = atomic::place_versionstamp(template, &[0xff; atomic::VERSIONSTAMP_LEN]).ok()?;
    Some((Bytes::from(low), key_after(&high)))
}

/// The parts of `[begin, end)` outside every range of `cleared`, in order.
fn outside(begin: Bytes, end: Bytes, cleared: &[(Bytes, Bytes)]) -> Vec<(Bytes, Bytes)> {
    let mut cuts: Vec<&(Bytes, Bytes)> = cleared
        .iter()
        .filter(|(b, e)| b < e && *b < end && begin < *e)
        .collect();
    cuts.sort();
    let mut out = Vec::new();
    let mut from = begin;
    for (b, e) in cuts {
        if from >= end {
            break;
        }
        if *b > from {
            out.push((from.clone(), b.clone().min(end.clone())));
        }
        if *e > from {
            from = e.clone();
        }
    }
    if from < end {
        out.push((from, end));
    }
    out
}

/// The refusal of a read that may see where a versionstamped key of this transaction lands.
fn stamped_key_unreadable(range: &(Bytes, Bytes)) -> Error {
    Error::invalid(format!(
        "the read meets [{:?}, {:?}), where a key this transaction set with \
         set_versionstamped_key will land: unknown until the transaction commits \
         (FoundationDB's accessed_unreadable)",
        String::from_utf8_lossy(&range.0),
        String::from_utf8_lossy(&range.1)
    ))
}

fn unreadable(key: &[u8]) -> Error {
    Error::invalid(format!(
        "key {:?} has a versionstamped value, which is unknown until the transaction commits",
        String::from_utf8_lossy(key)
    ))
}

/// What a transaction tells its [`crate::Database`] when its commit was refused in a way
/// another endpoint may not refuse (the compute was fenced, is read-only, or unreachable), so
/// the next transaction goes elsewhere.
#[derive(Clone)]
pub(crate) struct OnRefusal(pub(crate) Arc<dyn Fn(ErrorKind) + Send + Sync>);

impl std::fmt::Debug for OnRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnRefusal")
    }
}

/// A FoundationDB-style transaction. Cheap to clone: clones share one transaction, which is
/// what lets `Database::run` hand one to a closure and still commit it afterwards.
#[derive(Debug, Clone)]
pub struct Transaction {
    conn: Conn,
    database: Arc<str>,
    state: Arc<Mutex<State>>,
    /// Reads through this handle add no read conflicts (see [`Transaction::snapshot`]).
    snapshot: bool,
    on_refusal: Option<OnRefusal>,
    limit: CallLimit,
    /// Where this transaction's watches wait (`None`: its own connection only): the
    /// database's endpoints, so a watch follows a failover.
    watch_target: Option<crate::watch::Target>,
}

/// How long a transaction's calls to the compute may wait for an answer: each at most
/// `per_call` (the database's retry timeout, for a transaction made with
/// `create_transaction`), and none past `until` (the end of the timeout of the `run` it
/// belongs to). A compute that stops answering without closing its connection (paused,
/// cut off behind a firewall that drops packets) would otherwise hold a read or a commit
/// until the operating system gives up on the connection.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CallLimit {
    /// The longest one call may wait; `None`: no bound.
    pub(crate) per_call: Option<Duration>,
    /// No call waits past this; `None`: no bound.
    pub(crate) until: Option<Instant>,
}

impl CallLimit {
    /// How long the next call may wait, if bounded.
    fn left(&self) -> Option<Duration> {
        let until = self
            .until
            .map(|u| u.saturating_duration_since(Instant::now()));
        match (self.per_call, until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The error of a read (or read version) that got no answer within `left`: retryable, as
/// nothing was changed.
fn read_timed_out(left: Duration) -> Error {
    Error::unavailable(format!("no answer within {left:?} (the timeout)"))
}

/// The first key after `key` in byte order.
pub(crate) fn key_after(key: &[u8]) -> Bytes {
    let mut k = key.to_vec();
    k.push(0);
    Bytes::from(k)
}

impl Transaction {
    pub(crate) fn new(conn: Conn, database: Arc<str>) -> Transaction {
        Transaction {
            conn,
            database,
            state: Arc::default(),
            snapshot: false,
            on_refusal: None,
            watch_target: None,
            limit: CallLimit::default(),
        }
    }

    /// The same transaction, its calls bounded by `limit`.
    pub(crate) fn limited(mut self, limit: CallLimit) -> Transaction {
        self.limit = limit;
        self
    }

    /// `call`'s answer, or `timed_out(bound)` once the call has waited as long as this
    /// transaction's [`CallLimit`] allows.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T>>,
        timed_out: impl FnOnce(Duration) -> Error,
    ) -> Result<T> {
        match self.limit.left() {
            None => call.await,
            // Spent before the call went out: nothing was sent, so even a commit is a plain
            // refusal, not one that may have happened.
            Some(Duration::ZERO) => Err(Error::unavailable(
                "the timeout ran out before this call was sent",
            )),
            Some(left) => tokio::time::timeout(left, call)
                .await
                .unwrap_or_else(|_| Err(timed_out(left))),
        }
    }

    /// The same transaction, its watches waiting through `target` rather than its own
    /// connection alone.
    pub(crate) fn watching_through(mut self, target: crate::watch::Target) -> Transaction {
        self.watch_target = Some(target);
        self
    }

    /// The same transaction, reporting a refused commit to `on_refusal`.
    pub(crate) fn reporting_refusals(mut self, on_refusal: OnRefusal) -> Transaction {
        self.on_refusal = Some(on_refusal);
        self
    }

    /// The same transaction, read at snapshot isolation: reads through the returned handle
    /// see the same version and this transaction's own writes, but add no read conflicts, so
    /// a concurrent write to what they read does not make the commit fail. Writes through it
    /// are the transaction's writes as usual.
    ///
    /// ```no_run
    /// # async fn demo(db: ferrisdb_client::Database) -> ferrisdb_client::Result<()> {
    /// db.run(|tx| async move {
    ///     // A statistic that may be slightly stale without failing the transaction.
    ///     let hits = tx.snapshot().get("stats/hits").await?;
    ///     tx.set("last_seen_hits", hits.unwrap_or_default());
    ///     Ok(())
    /// })
    /// .await
    /// # }
    /// ```
    pub fn snapshot(&self) -> Transaction {
        Transaction {
            snapshot: true,
            ..self.clone()
        }
    }

    /// Whether reads through this handle skip read conflicts.
    pub fn is_snapshot(&self) -> bool {
        self.snapshot
    }

    /// Records that this transaction read `[begin, end)`, unless it reads at snapshot
    /// isolation.
    fn read_conflict(&self, begin: Bytes, end: Bytes) -> Result<()> {
        if !self.snapshot {
            self.state()?.read_conflicts.push(KeyRange { begin, end });
        }
        Ok(())
    }

    /// Makes the commit fail with `not_committed` if anything in `[begin, end)` changed after
    /// the read version, as if the transaction had read it (FoundationDB's
    /// `add_read_conflict_range`). An empty or inverted range adds nothing.
    pub fn add_read_conflict_range(&self, begin: impl Into<Bytes>, end: impl Into<Bytes>) {
        let (begin, end) = (begin.into(), end.into());
        if begin < end
            && let Ok(mut s) = self.state()
        {
            s.read_conflicts.push(KeyRange { begin, end });
        }
    }

    /// [`add_read_conflict_range`](Transaction::add_read_conflict_range) over one key.
    pub fn add_read_conflict_key(&self, key: impl Into<Bytes>) {
        let key = key.into();
        let end = key_after(&key);
        self.add_read_conflict_range(key, end);
    }

    /// Makes concurrent transactions that read anything in `[begin, end)` conflict with this
    /// one, as if it had written there (FoundationDB's `add_write_conflict_range`). A
    /// transaction with only conflict ranges still commits and gets a version. An empty or
    /// inverted range adds nothing.
    pub fn add_write_conflict_range(&self, begin: impl Into<Bytes>, end: impl Into<Bytes>) {
        let (begin, end) = (begin.into(), end.into());
        if begin < end
            && let Ok(mut s) = self.state()
        {
            s.write_conflicts.push(KeyRange { begin, end });
        }
    }

    /// [`add_write_conflict_range`](Transaction::add_write_conflict_range) over one key.
    pub fn add_write_conflict_key(&self, key: impl Into<Bytes>) {
        let key = key.into();
        let end = key_after(&key);
        self.add_write_conflict_range(key, end);
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
            self.bounded(self.conn.read_version(req), read_timed_out)
                .await?
                .version,
        );
        Ok(self.state()?.adopt_latest(v))
    }

    /// The read version, if the transaction has one, for a read about to be sent:
    /// `transaction_too_old` once a version handed out as the latest is older than
    /// [`MAX_READ_VERSION_AGE`] (DESIGN.md §2). An explicit version (time travel) never ages.
    fn read_version_for_read(&self) -> Result<Option<Version>> {
        let s = self.state()?;
        if let (Some(v), Some(at)) = (s.read_version, s.latest_at) {
            let age = at.elapsed();
            if age > MAX_READ_VERSION_AGE {
                return Err(Error::new(
                    ErrorKind::TransactionTooOld,
                    format!(
                        "read version {v} was the latest {} ms ago; reads at it are refused after {} ms",
                        age.as_millis(),
                        MAX_READ_VERSION_AGE.as_millis()
                    ),
                ));
            }
        }
        Ok(s.read_version)
    }

    /// After a read that asked the compute for the latest version and was answered at
    /// `answered`: the version this transaction reads at, and whether the answer was read at
    /// it. The first answer to arrive is adopted as the read version (later reads and the
    /// commit's conflict check use it); a concurrent first read answered at another version
    /// must be read again at the adopted one. A compute that predates such reads answers 0
    /// (it read at version 0): the read version is then fetched as before.
    async fn adopt(&self, answered: u64) -> Result<(Version, bool)> {
        if answered == 0 {
            let v = self.read_version().await?;
            return Ok((v, v.0 == 0));
        }
        let v = self.state()?.adopt_latest(Version(answered));
        Ok((v, v.0 == answered))
    }

    /// The stored value of `key` at `version`, or at the latest version with the version the
    /// compute read at.
    async fn get_at(&self, key: &Bytes, version: Option<Version>) -> Result<(Option<Bytes>, u64)> {
        let req = GetRequest {
            database: self.database.to_string(),
            key: key.clone(),
            version: version.unwrap_or_default().0,
            latest: version.is_none(),
        };
        let resp = self.bounded(self.conn.get(req), read_timed_out).await?;
        Ok((resp.value, resp.read_version))
    }

    /// One page of a range read at `version`, or at the latest version with the version the
    /// compute read at.
    async fn range_at(
        &self,
        (begin, end, limit, reverse): (Bytes, Bytes, usize, bool),
        version: Option<Version>,
    ) -> Result<(Page, u64)> {
        let req = GetRangeRequest {
            database: self.database.to_string(),
            begin,
            end,
            version: version.unwrap_or_default().0,
            limit: limit.min(u32::MAX as usize) as u32,
            reverse,
            latest: version.is_none(),
        };
        let resp = self
            .bounded(self.conn.get_range(req), read_timed_out)
            .await?;
        let rows = resp.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
        Ok(((rows, resp.more), resp.read_version))
    }

    /// One page of a range read at the transaction's read version; the first read of a
    /// transaction asks for the latest version and adopts it (one round trip, not two).
    async fn range_page(&self, page: (Bytes, Bytes, usize, bool)) -> Result<Page> {
        let known = self.read_version_for_read()?;
        if let Some(v) = known {
            return Ok(self.range_at(page, Some(v)).await?.0);
        }
        let (rows, answered) = self.range_at(page.clone(), None).await?;
        match self.adopt(answered).await? {
            (_, true) => Ok(rows),
            (v, false) => Ok(self.range_at(page, Some(v)).await?.0),
        }
    }

    /// Reads from the version `version` instead of the latest one (must be called before any
    /// read): time travel, answered for any version inside the database's retention, however
    /// old. A read version the compute handed out as its latest instead stops serving reads
    /// 5 s later (`transaction_too_old`), as in FoundationDB.
    pub fn set_read_version(&self, version: Version) -> Result<()> {
        let mut s = self.state()?;
        s.read_version = Some(version);
        s.latest_at = None;
        Ok(())
    }

    /// The value of `key`, seeing this transaction's own writes.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>> {
        let key = key.into();
        // The atomic ops written before this read, as they stand when it is issued: other
        // reads may resolve them, or writes add to them, while it waits for the stored value.
        let ops = {
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
            if let Some(range) = s.stamped_range_in(&key, &key_after(&key)) {
                return Err(stamped_key_unreadable(&range));
            }
            s.pending.get(&key).cloned()
        };
        let stored = self.get_stored(&key).await?;
        let Some(ops) = ops else {
            return Ok(stored);
        };
        // Those ops applied to what the read found.
        let mut value = stored.map(|v| v.to_vec());
        for (op, param) in &ops {
            value = atomic::apply(*op, value.as_deref(), param)
                .map_err(|e| Error::invalid(e.to_string()))?;
        }
        let value = value.map(Bytes::from);
        // If nothing changed the key meanwhile, the transaction now knows its value.
        let mut s = self.state()?;
        if s.pending.get(&key) == Some(&ops) {
            s.pending.remove(&key);
            s.own.entries.insert(key, value.clone());
        }
        Ok(value)
    }

    /// The stored value of `key` at the read version, with a read conflict on it.
    /// The first read of a transaction asks for the latest version and adopts the one it was
    /// answered at (one round trip, not two).
    async fn get_stored(&self, key: &Bytes) -> Result<Option<Bytes>> {
        let known = self.read_version_for_read()?;
        let value = match known {
            Some(v) => self.get_at(key, Some(v)).await?.0,
            None => {
                let (value, answered) = self.get_at(key, None).await?;
                match self.adopt(answered).await? {
                    (_, true) => value,
                    (v, false) => self.get_at(key, Some(v)).await?.0,
                }
            }
        };
        // No key over the limit can exist, so nothing can conflict with this read of one
        // (FoundationDB adds no range either); counted, a few such keys would fill the
        // transaction's size limit with nothing.
        if key.len() <= MAX_KEY_SIZE {
            self.read_conflict(key.clone(), key_after(key))?;
        }
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
                ..RangeOptions::default()
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
        let (pending, stamped): (Vec<Bytes>, BTreeSet<Bytes>) = {
            let s = self.state()?;
            let inside = |k: &&Bytes| begin <= **k && **k < end;
            (
                s.pending.keys().filter(inside).cloned().collect(),
                s.unreadable.iter().filter(inside).cloned().collect(),
            )
        };
        for k in pending {
            self.get(k).await?;
        }
        // The own writes inside the range, copied so no lock is held across the reads.
        // A key with a versionstamped value holds its place (its value is unknown): reading
        // it is refused below only if the answer includes it, as in FoundationDB.
        let own = {
            let s = self.state()?;
            Overlay {
                entries: s
                    .own
                    .entries
                    .range::<Bytes, _>((Bound::Included(&begin), Bound::Excluded(&end)))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .chain(stamped.iter().map(|k| (k.clone(), Some(Bytes::new()))))
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
        // The compute answers in pages (each stops at a byte target, saying more follow): read
        // on after the last row until the limit or the end of the range.
        let mut rows = Vec::new();
        let (mut lo, mut hi) = (begin.clone(), end.clone());
        loop {
            let want = if opts.limit == 0 {
                0
            } else {
                opts.limit - rows.len()
            };
            let (page, more) = own
                .read_range(lo.clone(), hi.clone(), want, opts.reverse, |lo, hi, n| {
                    self.range_page((lo, hi, n, opts.reverse))
                })
                .await?;
            let last = page.last().map(|(k, _)| k.clone());
            rows.extend(page);
            match last {
                Some(last) if more && (opts.limit == 0 || rows.len() < opts.limit) => {
                    if opts.reverse {
                        hi = last;
                    } else {
                        lo = key_after(&last);
                    }
                }
                _ => break,
            }
        }
        if let Some((k, _)) = rows.iter().find(|(k, _)| stamped.contains(k)) {
            return Err(unreadable(k));
        }
        // What was actually read: the whole range, or up to the last row returned.
        let cut = opts.limit != 0 && rows.len() == opts.limit;
        let (lo, hi) = match (cut, rows.last(), opts.reverse) {
            (true, Some((last, _)), false) => (begin, key_after(last)),
            (true, Some((last, _)), true) => (last.clone(), end),
            _ => (begin, end),
        };
        // A versionstamped key of this transaction's may land in there: the answer could be
        // missing it (or, cut by the limit, end elsewhere).
        let cleared = {
            let s = self.state()?;
            if let Some(range) = s.stamped_range_in(&lo, &hi) {
                return Err(stamped_key_unreadable(&range));
            }
            s.own.cleared.clone()
        };
        // What this transaction cleared itself it knows without the database: no conflict
        // there, as FoundationDB adds read conflicts only where its write map is unmodified.
        for (b, e) in outside(lo, hi, &cleared) {
            self.read_conflict(b, e)?;
        }
        Ok(rows)
    }

    /// A range read as a stream that fetches `opts.batch_size` pairs per round trip, only as
    /// the consumer asks for them, so a huge range costs memory for one batch. Every batch
    /// reads at the transaction's version and sees its own writes; each adds a read conflict
    /// over the part of the range it covered (so a consumer that stops early conflicts only
    /// with what it read). `opts.limit` caps the whole stream.
    ///
    /// ```no_run
    /// # async fn demo(db: ferrisdb_client::Database) -> ferrisdb_client::Result<()> {
    /// use futures::TryStreamExt;
    ///
    /// let tx = db.create_transaction();
    /// let mut rows = tx.get_range_stream("log/", "log0", Default::default());
    /// while let Some((key, value)) = rows.try_next().await? {
    ///     println!("{key:?} = {value:?}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn get_range_stream(
        &self,
        begin: impl Into<Bytes>,
        end: impl Into<Bytes>,
        opts: RangeOptions,
    ) -> RangeStream {
        use futures::StreamExt;
        let batch = if opts.batch_size == 0 {
            DEFAULT_BATCH_SIZE
        } else {
            opts.batch_size
        };
        // (rest of the range, rows still allowed, finished)
        let start = (
            self.clone(),
            begin.into(),
            end.into(),
            if opts.limit == 0 {
                usize::MAX
            } else {
                opts.limit
            },
            false,
        );
        futures::stream::try_unfold(start, move |(tx, begin, end, left, done)| async move {
            if done || left == 0 || begin >= end {
                return Ok(None);
            }
            let n = batch.min(left);
            let page = RangeOptions {
                limit: n,
                reverse: opts.reverse,
                batch_size: 0,
            };
            let rows = tx.get_range_opts(begin.clone(), end.clone(), page).await?;
            let finished = rows.len() < n;
            let (begin, end) = match (rows.last(), opts.reverse) {
                (Some((last, _)), false) => (key_after(last), end),
                (Some((last, _)), true) => (begin, last.clone()),
                (None, _) => (begin, end),
            };
            let left = left - rows.len();
            Ok(Some((rows, (tx, begin, end, left, finished))))
        })
        .map(|page: Result<Vec<(Bytes, Bytes)>>| {
            futures::stream::iter(match page {
                Ok(rows) => rows.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
        })
        .flatten()
        .boxed()
    }

    /// Resolves a [`KeySelector`] to a key at the read version, seeing this transaction's own
    /// writes. A selector before the first key gives the empty key; one past the last key
    /// gives `\xff` (the end of the user keyspace), as in FoundationDB. The read conflict
    /// covers the keys between the anchor and the answer.
    ///
    /// ```no_run
    /// # async fn demo(tx: ferrisdb_client::Transaction) -> ferrisdb_client::Result<()> {
    /// use ferrisdb_client::KeySelector;
    ///
    /// // The last user key before "user0", i.e. the largest key under "user/".
    /// let last = tx.get_key(KeySelector::last_less_than("user0")).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_key(&self, selector: KeySelector) -> Result<Bytes> {
        let (begin, end, reverse, n) = selector.plan();
        let opts = RangeOptions {
            limit: n,
            reverse,
            batch_size: 0,
        };
        let rows = self.get_range_opts(begin, end, opts).await?;
        Ok(match rows.get(n - 1) {
            Some((key, _)) => key.clone(),
            None if reverse => Bytes::new(),
            None => Bytes::from_static(b"\xff"),
        })
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
        let (mutations, read_conflicts, write_conflicts, read_version) = {
            let s = self.state()?;
            if let Some(v) = s.committed {
                return Ok(v);
            }
            (
                s.mutations.clone(),
                s.read_conflicts.clone(),
                s.write_conflicts.clone(),
                s.read_version,
            )
        };
        if mutations.is_empty() && write_conflicts.is_empty() {
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
            write_conflicts,
            mutations,
        };
        let commit = self.bounded(self.conn.commit(req), |left| {
            Error::new(
                ErrorKind::CommitUnknownResult,
                format!(
                    "no answer to the commit within {left:?} (the timeout): it may or may not \
                     have happened"
                ),
            )
        });
        let response = match commit.await {
            Ok(r) => r,
            Err(e) => {
                if let Some(OnRefusal(report)) = &self.on_refusal {
                    report(e.kind());
                }
                return Err(e);
            }
        };
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
    /// is. What they write is unknown before the commit, so this transaction's reads that
    /// would depend on it are refused (`invalid_argument`, FoundationDB's
    /// `accessed_unreadable`): a get of a key given a versionstamped value, and any read that
    /// reaches where a versionstamped key may land (its template with a stamp above the read
    /// version).
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
            AtomicOp::SetVersionstampedKey => s.stamped_keys.push(key),
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

    /// A watch on `key` that starts when this transaction commits: it resolves once the key's
    /// committed value differs from its value at the commit (which includes this
    /// transaction's own write of it). Await it after the commit; if the transaction never
    /// commits, the watch fails with `invalid_argument`.
    ///
    /// ```no_run
    /// # async fn demo(db: ferrisdb_client::Database) -> ferrisdb_client::Result<()> {
    /// let watch = db
    ///     .run(|tx| async move {
    ///         tx.set("config/mode", "blue");
    ///         Ok(tx.watch("config/mode"))
    ///     })
    ///     .await?;
    /// let event = watch.await?; // someone changed the mode
    /// println!("mode is now {:?} (version {})", event.value, event.version);
    /// # Ok(())
    /// # }
    /// ```
    pub fn watch(&self, key: impl Into<Bytes>) -> Watch {
        let (tx, key) = (self.clone(), key.into());
        Watch::new(Box::pin(async move {
            let Some(at) = tx.committed_version() else {
                return Err(Error::invalid(
                    "the transaction that set this watch has not committed",
                ));
            };
            // The value at the commit is read by the watch itself, so that read too moves on
            // to another endpoint if this one has gone away meanwhile.
            crate::watch::wait(
                tx.watch_target
                    .clone()
                    .unwrap_or_else(|| crate::watch::Target::fixed(tx.conn.client.clone())),
                tx.database.clone(),
                key,
                crate::watch::Known::At(at),
            )
            .await
        }))
    }

    /// The version this transaction committed at, once it has.
    pub fn committed_version(&self) -> Option<Version> {
        self.state().ok().and_then(|s| s.committed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::{ConnectOptions, Database, ErrorKind};

    /// A range read's conflict leaves out what the transaction cleared itself.
    #[test]
    fn a_read_conflicts_only_outside_its_own_clears() {
        use bytes::Bytes;
        let b = |s: &str| Bytes::from(s.to_string());
        let r = |x: &str, y: &str| (b(x), b(y));
        let outside =
            |lo: &str, hi: &str, cleared: &[(Bytes, Bytes)]| super::outside(b(lo), b(hi), cleared);
        assert_eq!(outside("a", "z", &[]), vec![r("a", "z")]);
        assert_eq!(outside("c", "f", &[r("a", "z")]), vec![]);
        assert_eq!(outside("c", "f", &[r("c", "f")]), vec![]);
        assert_eq!(
            outside("a", "z", &[r("m", "p"), r("c", "f"), r("e", "h")]),
            vec![r("a", "c"), r("h", "m"), r("p", "z")]
        );
        assert_eq!(
            outside("d", "k", &[r("a", "e"), r("j", "x")]),
            vec![r("e", "j")]
        );
        // Nothing inside the read, and empty or inverted clears: all of it.
        assert_eq!(
            outside(
                "d",
                "k",
                &[r("a", "b"), r("x", "y"), r("f", "f"), r("h", "g")]
            ),
            vec![r("d", "k")]
        );
    }

    /// A commit whose connection was refused never left: the SDK says `unavailable`, which
    /// the caller may retry freely.
    #[tokio::test]
    async fn a_refused_connection_is_unavailable_not_unknown() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let db = Database::connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap();
        let tx = db.create_transaction();
        tx.set(&b"k"[..], &b"v"[..]);
        let e = tx.commit().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    }

    /// A connection that the server cut after accepting it may have carried a unary commit:
    /// the SDK says `commit_unknown_result`, never a plain failure. In a session the commit is
    /// only sent once the session is open, so the same cut leaves it certainly unsent:
    /// `unavailable`. (A cut after it was sent: `session_tests`.)
    #[tokio::test]
    async fn a_connection_cut_after_accept_is_commit_unknown_result_unless_never_sent() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                drop(socket);
            }
        });
        let url = format!("http://127.0.0.1:{port}");
        let unary = Database::connect_with(ConnectOptions::new(&url).use_sessions(false))
            .await
            .unwrap();
        let tx = unary.create_transaction();
        tx.set(&b"k"[..], &b"v"[..]);
        let e = tx.commit().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::CommitUnknownResult, "{e}");

        let db = Database::connect(&url).await.unwrap();
        let tx = db.create_transaction();
        tx.set(&b"k"[..], &b"v"[..]);
        let e = tx.commit().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    }
}
