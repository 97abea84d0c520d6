//! The Safekeeper gRPC service: the WAL protocol for proposers and the WAL stream for
//! pageservers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrisdb_common::error::{Reason, WAL_BUDGET_FULL};
use ferrisdb_common::proto::safekeeper_server::Safekeeper;
use ferrisdb_common::proto::{
    AppendRequest, AppendResponse, DurableReport, ElectedRequest, ElectedResponse, LeaseRequest,
    LeaseResponse, ReadWalRequest, SafekeeperStatus, SafekeeperStatusRequest, VoteRequest,
    VoteResponse, WalChunk,
};
use ferrisdb_common::{Error, Lsn, Result, validate_database_name, wal};
use ferrisdb_server_common::clock::{Clock, SystemClock};
use futures::FutureExt;
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::acceptor::{Acceptor, AcceptorStatus, AppendArgs, PeerLog, ProposerId};
use crate::control::{TermSwitch, database_dir};
use crate::durable::DurableReader;
use crate::metrics::Metrics;
use crate::timeline::Timeline;

/// How long a pristine safekeeper waits for each peer's status before its first vote.
const AMNESIA_PEER_TIMEOUT: Duration = Duration::from_secs(1);
/// How much WAL one streamed chunk carries at most (a larger single record goes whole).
const READ_CHUNK_BYTES: usize = 1 << 20;
/// A follower hears from an idle stream this often, so it can tell a quiet log from a dead peer.
const KEEPALIVE: Duration = Duration::from_millis(500);
/// The longest a follower may ask its WAL to be gathered for (`ReadWalRequest.gather_millis`).
pub const MAX_GATHER_MILLIS: u32 = 1000;
/// At most this many queued appends share one fdatasync.
const MAX_GROUP: usize = 256;

/// Every database this safekeeper holds, opened on first use.
#[derive(Debug)]
pub struct SafekeeperState {
    data_dir: PathBuf,
    timelines: Mutex<BTreeMap<String, Arc<Timeline>>>,
    /// Databases whose log failed to open, with why: not served until repaired.
    broken: Mutex<BTreeMap<String, String>>,
    /// Other safekeepers' gRPC endpoints, to repair damage from.
    peers: Vec<String>,
    limits: Limits,
    /// What object storage verifiably holds, to check durable claims against.
    durable: Arc<DurableReader>,
    pub(crate) metrics: Metrics,
}

/// Disk limits of a safekeeper, and where its appends are synced.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// New segments start at this size.
    pub segment_size: u64,
    /// WAL bytes per database past which appends are refused (slowed from 75% on).
    pub max_wal_bytes: u64,
    /// Databases this safekeeper holds at most; contact for another is refused.
    pub max_databases: usize,
    /// Write and fdatasync each append group on the blocking pool rather than on the runtime
    /// worker that received it (see [`Timeline::with_here`]): for a safekeeper holding more
    /// busy databases than it has cores, on a disk that syncs several files in parallel.
    pub sync_on_blocking_pool: bool,
}

/// The default of [`Limits::max_databases`]: each database costs a directory, open files and
/// a control file; a thousand is far beyond a small cluster's needs yet keeps a runaway (or
/// hostile) client from exhausting inodes and memory.
pub const DEFAULT_MAX_DATABASES: usize = 1024;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            segment_size: crate::log::SEGMENT_TARGET_SIZE,
            max_wal_bytes: 8 << 30,
            max_databases: DEFAULT_MAX_DATABASES,
            sync_on_blocking_pool: false,
        }
    }
}

/// Whether `bytes` more WAL would not fit in `limit` with `used` on disk. A sixteenth of the
/// budget is kept as headroom, so "full" is reported before appends start failing.
pub fn budget_full(used: u64, bytes: u64, limit: u64) -> bool {
    used + bytes > limit || used >= limit - limit / 16
}

/// How long an append waits when WAL on disk is at `used` of `limit`: nothing below 75%, then
/// up to 200 ms as it approaches the limit, so writers slow down before they are refused.
pub fn backpressure_delay(used: u64, limit: u64) -> Duration {
    let fill = used as f64 / limit.max(1) as f64;
    if fill <= 0.75 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(((fill - 0.75) / 0.25).min(1.0) * 0.2)
}

impl SafekeeperState {
    /// State over `data_dir`, opening each database found there eagerly so damage shows at once.
    /// `durable` reads what object storage holds (see [`DurableReader`]).
    pub async fn open(
        data_dir: PathBuf,
        peers: Vec<String>,
        limits: Limits,
        durable: DurableReader,
        metrics: Metrics,
    ) -> Result<Arc<SafekeeperState>> {
        std::fs::create_dir_all(&data_dir)?;
        let state = Arc::new(SafekeeperState {
            data_dir: data_dir.clone(),
            timelines: Mutex::new(BTreeMap::new()),
            broken: Mutex::new(BTreeMap::new()),
            peers,
            limits,
            durable: Arc::new(durable),
            metrics,
        });
        for entry in std::fs::read_dir(&data_dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir()
                && let Some(name) = entry.file_name().to_str()
                && validate_database_name(name).is_ok()
            {
                // Errors are recorded in `broken`; keep opening the others. Databases already
                // on disk are always opened, even past the limit (it bounds creation only).
                let _ = state.open_timeline(name, true).await;
            }
        }
        Ok(state)
    }

    /// The timeline of `database`, opened (or created) on first use; creating one beyond
    /// [`Limits::max_databases`] is refused (`invalid_argument`, naming the flag).
    pub async fn timeline(&self, database: &str) -> Result<Arc<Timeline>> {
        self.open_timeline(database, false).await
    }

    async fn open_timeline(&self, database: &str, existing: bool) -> Result<Arc<Timeline>> {
        validate_database_name(database)?;
        let mut timelines = self.timelines.lock().await;
        if let Some(t) = timelines.get(database) {
            return Ok(t.clone());
        }
        let broken = self.broken.lock().await;
        if let Some(why) = broken.get(database) {
            return Err(Error::corruption(format!(
                "database {database} is not served: {why}"
            )));
        }
        let held = timelines.len() + broken.len();
        drop(broken);
        let dir = database_dir(&self.data_dir, database);
        if !existing && held >= self.limits.max_databases && !dir.exists() {
            self.metrics.database_refusals.inc();
            return Err(Error::invalid(format!(
                "this safekeeper already holds its maximum of {} databases (--max-databases); \
                 no new database is created",
                self.limits.max_databases
            )));
        }
        let segment_size = self.limits.segment_size;
        let opened = tokio::task::spawn_blocking(move || Acceptor::open_with(dir, segment_size))
            .await
            .map_err(|e| Error::internal(format!("open task: {e}")))?;
        match opened {
            Ok(acceptor) => {
                let damaged = acceptor.status().damage.is_some();
                let t = Arc::new(Timeline::new(acceptor));
                timelines.insert(database.to_string(), t.clone());
                if damaged {
                    self.metrics.damaged_databases.inc();
                    let (t, peers, metrics) = (t.clone(), self.peers.clone(), self.metrics.clone());
                    let durable = self.durable.clone();
                    tokio::spawn(repair(database.to_string(), t, peers, durable, metrics));
                }
                Ok(t)
            }
            Err(e) => {
                tracing::error!(database, error = %e, "database log is damaged; not serving it");
                self.metrics.broken_databases.inc();
                self.broken
                    .lock()
                    .await
                    .insert(database.to_string(), e.to_string());
                Err(e)
            }
        }
    }

    /// Starts the repair of damage that a read found in `database`'s log, once per finding
    /// (see [`crate::acceptor::Acceptor::serve`]): the same repair as for damage found on open.
    async fn repair_found_damage(&self, database: &str, t: &Arc<Timeline>) {
        if let Ok(true) = t.with(|a| Ok(a.take_found_damage())).await {
            self.metrics.damaged_databases.inc();
            tokio::spawn(repair(
                database.to_string(),
                t.clone(),
                self.peers.clone(),
                self.durable.clone(),
                self.metrics.clone(),
            ));
        }
    }

    /// Before the first vote of an acceptor that holds nothing of `database`: asks the peers
    /// whether the database is new. If one of them holds a log of it (a term history), this
    /// safekeeper lost its own (a wiped disk) or replaces a lost one, and starts recovering
    /// (no votes until caught up); if a majority of the cluster, this one included, answered
    /// and none holds a log, the database is new and the vote goes ahead. Otherwise nothing
    /// can be told yet: `unavailable`, and the next vote asks again. Without peers configured
    /// there is no one to ask, and the vote goes ahead as it always did.
    pub async fn check_amnesia(&self, database: &str, t: &Arc<Timeline>) -> Result<()> {
        use ferrisdb_common::proto::safekeeper_client::SafekeeperClient;
        if self.peers.is_empty() {
            return Ok(());
        }
        let asks = self.peers.iter().map(|peer| async move {
            let channel = ferrisdb_server_common::auth::peer_channel(peer)?;
            let mut c = ferrisdb_common::with_message_limits!(SafekeeperClient::new(channel));
            let req = SafekeeperStatusRequest {
                database: database.to_string(),
            };
            let st = tokio::time::timeout(AMNESIA_PEER_TIMEOUT, c.get_status(req))
                .await
                .map_err(|_| Error::unavailable("no answer"))??
                .into_inner();
            Ok::<_, Error>((peer, st))
        });
        let answers: Vec<_> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        if let Some((peer, st)) = answers.iter().find(|(_, st)| !st.history.is_empty()) {
            tracing::warn!(
                database,
                %peer,
                peer_term = st.term,
                peer_flush_lsn = st.flush_lsn,
                "this safekeeper holds nothing of a database whose log a peer holds (a wiped or \
                 replaced disk): it votes again once a primary has brought it up to date"
            );
            t.with(|a| a.start_recovering()).await?;
            return Err(Error::unavailable(format!(
                "safekeeper holds none of the log of {database:?} that its peer {peer} holds: \
                 recovering before it votes"
            )));
        }
        let cluster = self.peers.len() + 1;
        if answers.len() + 1 < cluster / 2 + 1 {
            return Err(Error::unavailable(format!(
                "safekeeper holds nothing of {database:?} and only {} of its {} peers answered: \
                 it cannot tell a new database from a lost log yet",
                answers.len(),
                self.peers.len()
            )));
        }
        Ok(())
    }

    /// For each database and peer: the peer's flush and commit positions and how far this
    /// safekeeper's log is behind it (negative: ahead). Unreachable peers show `null`.
    pub async fn peer_lag(
        &self,
        databases: &BTreeMap<String, AcceptorStatus>,
    ) -> serde_json::Value {
        use ferrisdb_common::proto::safekeeper_client::SafekeeperClient;
        let mut out = serde_json::Map::new();
        for (db, own) in databases {
            let mut peers = serde_json::Map::new();
            for peer in &self.peers {
                let ask = async {
                    let mut c = ferrisdb_common::with_message_limits!(SafekeeperClient::new(
                        ferrisdb_server_common::auth::peer_channel(peer)?
                    ));
                    let req = SafekeeperStatusRequest {
                        database: db.clone(),
                    };
                    Ok::<_, Error>(c.get_status(req).await?.into_inner())
                };
                let v = match tokio::time::timeout(Duration::from_millis(500), ask).await {
                    Ok(Ok(st)) => serde_json::json!({
                        "flush_lsn": st.flush_lsn,
                        "commit_lsn": st.commit_lsn,
                        "lag_bytes": st.flush_lsn as i128 - own.flush_lsn as i128,
                    }),
                    _ => serde_json::Value::Null,
                };
                peers.insert(peer.clone(), v);
            }
            out.insert(db.clone(), serde_json::Value::Object(peers));
        }
        serde_json::Value::Object(out)
    }

    /// Status of every open database, and the damaged ones with why.
    pub async fn all_status(&self) -> (BTreeMap<String, AcceptorStatus>, BTreeMap<String, String>) {
        let timelines: Vec<_> = self
            .timelines
            .lock()
            .await
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out = BTreeMap::new();
        for (name, t) in timelines {
            if let Ok(s) = t.status().await {
                out.insert(name, s);
            }
        }
        (out, self.broken.lock().await.clone())
    }

    /// Stores each database's commit position if it moved, and sweeps the newest-WAL
    /// buffers (done every second).
    pub async fn persist_commit_positions(&self) {
        let timelines: Vec<_> = self.timelines.lock().await.values().cloned().collect();
        for t in timelines {
            if let Err(e) = t.with(|a| a.persist_commit_lsn()).await {
                tracing::warn!(error = %e, "persisting commit position");
            }
            t.sweep_recent();
        }
        self.metrics
            .recent_wal_bytes
            .set(crate::recent::held_bytes() as i64);
    }
}

/// How often a damaged database looks for a peer to repair from.
const REPAIR_RETRY: Duration = Duration::from_secs(1);

/// Repairs a damaged database from the first peer holding an agreeing copy, retrying until
/// one does. Until then the database serves nothing (see [`Acceptor::repair`]). A peer that has
/// already trimmed the damaged stretch (it is in object storage) is a source too, from its log
/// start, when the newest manifest — read here, not taken from the peer — covers that start.
async fn repair(
    database: String,
    t: Arc<Timeline>,
    peers: Vec<String>,
    durable: Arc<DurableReader>,
    metrics: Metrics,
) {
    use ferrisdb_common::proto::safekeeper_client::SafekeeperClient;
    let clients: Vec<_> = peers
        .iter()
        .filter_map(|p| {
            ferrisdb_server_common::auth::peer_channel(p).ok().map(|c| {
                (
                    p.clone(),
                    ferrisdb_common::with_message_limits!(SafekeeperClient::new(c)),
                )
            })
        })
        .collect();
    let mut rounds: u64 = 0;
    loop {
        let Ok(Some(d)) = t.with(|a| Ok(a.status().damage)).await else {
            return;
        };
        for (peer, client) in &clients {
            let attempt = async {
                let mut c = client.clone();
                let req = SafekeeperStatusRequest {
                    database: database.clone(),
                };
                let st = c.get_status(req).await?.into_inner();
                let peer_log = Arc::new(PeerLog {
                    history: st.history.iter().map(Into::into).collect(),
                    log_start: st.log_start_lsn,
                    flush: st.flush_lsn,
                });
                let held = if peer_log.log_start > d.from {
                    durable.durable(&database, peer_log.log_start).await?
                } else {
                    None
                };
                let plan = {
                    let peer_log = peer_log.clone();
                    t.with(move |a| Ok(a.repair_plan(&peer_log, held))).await?
                };
                let Some(plan) = plan else {
                    return Err(Error::unavailable(format!(
                        "its log ({:?}, [{}, {})) holds no copy this log can take",
                        peer_log.history, peer_log.log_start, peer_log.flush
                    )));
                };
                let mut copy = Vec::new();
                if plan.to > plan.from {
                    let req = ReadWalRequest {
                        database: database.clone(),
                        start_lsn: plan.from,
                        end_lsn: Some(plan.copy_end(d, peer_log.flush)),
                        gather_millis: 0,
                        expected_term: 0,
                    };
                    let mut stream = c.read_wal(req).await?.into_inner();
                    while let Some(chunk) = stream.message().await? {
                        copy.extend_from_slice(&chunk.wal);
                    }
                }
                // The plan is worked out again under the same lock as the repair itself.
                t.with(move |a| a.repair(&peer_log, &copy, held))
                    .await
                    .map(|()| plan)
            };
            match tokio::time::timeout(Duration::from_secs(30), attempt).await {
                Ok(Ok(plan)) => {
                    tracing::info!(%database, %peer, from = d.from, to = d.to, repaired_from = plan.from, repaired_to = plan.to, "repaired damaged WAL from a peer");
                    metrics.damaged_databases.dec();
                    metrics.repairs.inc();
                    return;
                }
                // Said at the first round and then once a minute: a database that stays
                // damaged must be visible in the log, not only in a gauge.
                Ok(Err(e)) if rounds.is_multiple_of(60) => {
                    tracing::warn!(%database, %peer, error = %e, "cannot repair damaged WAL from this peer (yet)")
                }
                Ok(Err(e)) => {
                    tracing::debug!(%database, %peer, error = %e, "cannot repair from this peer")
                }
                Err(_) => tracing::warn!(%database, %peer, "repair timed out"),
            }
        }
        rounds += 1;
        tokio::time::sleep(REPAIR_RETRY).await;
    }
}

/// The gRPC face of [`SafekeeperState`].
#[derive(Debug, Clone)]
pub struct SafekeeperService {
    state: Arc<SafekeeperState>,
}

impl SafekeeperService {
    /// A service over `state`.
    pub fn new(state: Arc<SafekeeperState>) -> SafekeeperService {
        SafekeeperService { state }
    }
}

fn to_proto(s: AcceptorStatus) -> SafekeeperStatus {
    SafekeeperStatus {
        term: s.term,
        history: s.history.iter().map(Into::into).collect(),
        log_start_lsn: s.log_start_lsn,
        flush_lsn: s.flush_lsn,
        commit_lsn: s.commit_lsn,
    }
}

#[tonic::async_trait]
impl Safekeeper for SafekeeperService {
    async fn get_status(
        &self,
        req: Request<SafekeeperStatusRequest>,
    ) -> Result<Response<SafekeeperStatus>, Status> {
        let t = self.state.timeline(&req.get_ref().database).await?;
        Ok(Response::new(to_proto(t.status().await?)))
    }

    async fn request_vote(
        &self,
        req: Request<VoteRequest>,
    ) -> Result<Response<VoteResponse>, Status> {
        let req = req.into_inner();
        let proposer = proposer_id(&req.proposer_id)?;
        let t = self.state.timeline(&req.database).await?;
        if t.with(|a| Ok(a.is_pristine())).await? {
            self.state.check_amnesia(&req.database, &t).await?;
        }
        // What is left of a lease is read under the same lock as the vote, after it: no
        // lease for the older term can be granted once the newer term is promised.
        let (granted, status, lease) = t
            .with(move |a| {
                let (granted, status) = a.vote(req.term, proposer)?;
                Ok((
                    granted,
                    status,
                    a.lease_remaining(std::time::Instant::now()),
                ))
            })
            .await?;
        tracing::info!(database = %req.database, term = req.term, granted, lease_remaining = ?lease, "vote");
        Ok(Response::new(VoteResponse {
            granted,
            status: Some(to_proto(status)),
            lease_remaining_ms: lease.as_millis().try_into().unwrap_or(u64::MAX),
            now_micros: SystemClock.now_micros(),
        }))
    }

    async fn renew_lease(
        &self,
        req: Request<LeaseRequest>,
    ) -> Result<Response<LeaseResponse>, Status> {
        let req = req.into_inner();
        let proposer = proposer_id(&req.proposer_id)?;
        let t = self.state.timeline(&req.database).await?;
        // The grant is timed inside the lock, where it is ordered against votes.
        let release = req.release;
        let (granted, term) = t
            .with(move |a| {
                Ok(if release {
                    a.release_lease(req.term, proposer)
                } else {
                    a.grant_lease(req.term, proposer, std::time::Instant::now())
                })
            })
            .await?;
        if release {
            tracing::info!(database = %req.database, term = req.term, released = granted, "read lease given back");
        }
        Ok(Response::new(LeaseResponse {
            granted,
            term,
            now_micros: SystemClock.now_micros(),
        }))
    }

    async fn elected(
        &self,
        req: Request<ElectedRequest>,
    ) -> Result<Response<ElectedResponse>, Status> {
        let req = req.into_inner();
        let proposer = proposer_id(&req.proposer_id)?;
        let t = self.state.timeline(&req.database).await?;
        let history: Vec<TermSwitch> = req.history.iter().map(Into::into).collect();
        let (term, start) = (req.term, req.log_start_lsn);
        // What object storage holds, in case adopting this history would restart the log: it
        // must cover both the requested start and the committed WAL held here.
        let st = t.status().await?;
        let want = start.max(st.commit_lsn.min(st.flush_lsn));
        let durable = self.state.durable.durable(&req.database, want).await?;
        let (status, session) = t
            .with(move |a| a.elected(term, proposer, &history, start, durable))
            .await?;
        tracing::info!(database = %req.database, term, flush_lsn = status.flush_lsn, "adopted proposer history");
        Ok(Response::new(ElectedResponse {
            status: Some(to_proto(status)),
            session,
        }))
    }

    type AppendStream = ReceiverStream<Result<AppendResponse, Status>>;

    async fn append(
        &self,
        req: Request<Streaming<AppendRequest>>,
    ) -> Result<Response<Self::AppendStream>, Status> {
        let mut requests = req.into_inner();
        let state = self.state.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            // Requests are applied strictly in arrival order. Whatever has queued up behind the
            // one being written shares its fdatasync (group commit). The first error ends the
            // stream; the proposer re-establishes it (Elected, then appends from our flush).
            loop {
                let first = match requests.message().await {
                    Ok(Some(r)) => r,
                    Ok(None) | Err(_) => return,
                };
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match requests.message().now_or_never() {
                        Some(Ok(Some(r))) => group.push(r),
                        _ => break,
                    }
                }
                // Traced batches in the group: one span for its write and fsync, child of the
                // first and linked to the rest (docs/observability.md).
                let span = ferrisdb_server_common::telemetry::append_span(
                    group.iter().flat_map(|r| r.traceparents.iter()),
                );
                for result in append_group(&state, group).instrument(span).await {
                    let failed = result.is_err();
                    if tx.send(result.map_err(Status::from)).await.is_err() || failed {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn report_durable(
        &self,
        req: Request<DurableReport>,
    ) -> Result<Response<SafekeeperStatus>, Status> {
        let req = req.into_inner();
        let t = self.state.timeline(&req.database).await?;
        let claim = req.remote_consistent_lsn;
        let st = t.status().await?;
        let before = st.log_start_lsn;
        // The claim is checked against the newest manifest, never taken on trust; the store is
        // read only when the claim would move the trim point past what was already verified.
        let durable = self
            .state
            .durable
            .durable(&req.database, claim.min(st.commit_lsn))
            .await?;
        let status = t
            .with(move |a| a.trim(claim, durable).map(|_| a.status()))
            .await?;
        if status.log_start_lsn > before {
            tracing::info!(database = %req.database, from = before, to = status.log_start_lsn, "trimmed WAL held in object storage");
        }
        Ok(Response::new(to_proto(status)))
    }

    type ReadWalStream = ReceiverStream<Result<WalChunk, Status>>;

    async fn read_wal(
        &self,
        req: Request<ReadWalRequest>,
    ) -> Result<Response<Self::ReadWalStream>, Status> {
        let req = req.into_inner();
        if req.gather_millis > MAX_GATHER_MILLIS {
            return Err(Error::invalid(format!(
                "gather_millis {} is over the limit of {MAX_GATHER_MILLIS}",
                req.gather_millis
            ))
            .into());
        }
        let gather = Duration::from_millis(req.gather_millis.into());
        let t = self.state.timeline(&req.database).await?;
        if req.expected_term != 0 {
            // The follower's word on what it read below its position, checked against this
            // log's history before anything is sent: a follower that goes on from a position
            // in a log rewritten under it would apply another history's records on top of
            // the one it holds.
            let start = req.start_lsn;
            let here = t.with(move |a| Ok(a.term_below(start))).await?;
            if let Some(here) = here
                && here != req.expected_term
            {
                return Err(Error::invalid(format!(
                    "the WAL below LSN {start} was written in term {here} here, not in term {} \
                     as the follower read it: the log was rewritten under the follower",
                    req.expected_term
                ))
                .with_reason(Reason::WalDiverged)
                .into());
            }
        }
        let max_wal_bytes = self.state.limits.max_wal_bytes;
        let (tx, rx) = mpsc::channel(4);
        let state = self.state.clone();
        tokio::spawn(async move {
            let result = match req.end_lsn {
                Some(end) => stream_bounded(&t, req.start_lsn, end, &tx).await,
                None => {
                    let term = (req.expected_term != 0).then_some(req.expected_term);
                    stream_committed(&t, req.start_lsn, term, gather, &tx, max_wal_bytes).await
                }
            };
            if let Err(e) = result {
                if e.kind() == ferrisdb_common::ErrorKind::Corruption {
                    state.repair_found_damage(&req.database, &t).await;
                }
                let _ = tx.send(Err(e.into())).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn append_group(
    state: &SafekeeperState,
    group: Vec<AppendRequest>,
) -> Vec<Result<AppendResponse>> {
    let database = group[0].database.clone();
    if group.iter().any(|r| r.database != database) {
        return vec![Err(Error::invalid("one append stream serves one database"))];
    }
    let t = match state.timeline(&database).await {
        Ok(t) => t,
        Err(e) => return vec![Err(e)],
    };
    let bytes: usize = group.iter().map(|r| r.wal.len()).sum();
    let started = Instant::now();
    let limit = state.limits.max_wal_bytes;
    if bytes > 0 {
        let used = t.disk_bytes();
        if budget_full(used, bytes as u64, limit) {
            state.metrics.budget_refusals.inc();
            // The reason tells the proposer "full", not "down" (the text is for people).
            return vec![Err(Error::unavailable(format!(
                "{WAL_BUDGET_FULL} on this safekeeper: {used} of {limit} bytes of WAL on disk; \
                 commits resume once the pageserver's uploads let older WAL be deleted"
            ))
            .with_reason(Reason::WalBudgetFull))];
        }
        let delay = backpressure_delay(used, limit);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
    let append = move |a: &mut crate::acceptor::Acceptor| {
        let args: Vec<AppendArgs<'_>> = group
            .iter()
            .map(|r| AppendArgs {
                term: r.term,
                session: r.session,
                begin: r.begin_lsn,
                frames: &r.wal,
                commit_lsn: r.commit_lsn,
            })
            .collect();
        let mismatches = a.wal_mismatches();
        let results = a.append_group(&args);
        Ok((results, a.wal_mismatches() - mismatches))
    };
    // On this worker by default: the group's write and fdatasync block it for a sync's
    // length, and in exchange no thread is woken to do them and none to hand the answer back
    // (with the zero-filled segment tails, a quarter less CPU per lone commit on a
    // safekeeper; docs/benchmarks/request-path-profile.md, eighth round).
    let outcome = if state.limits.sync_on_blocking_pool {
        t.with(append).await
    } else {
        t.with_here(append)
    };
    let results = outcome
        .map(|(results, mismatches)| {
            state.metrics.wal_mismatches.inc_by(mismatches);
            results
        })
        .unwrap_or_else(|e| vec![Err(e)]);
    // A failure of this disk (full, failing) is the operator's to see here, not only in the
    // compute's log as a safekeeper that stopped taking WAL (an outside audit's finding):
    // counted, and logged at the first and then every hundredth.
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        if e.kind() == ferrisdb_common::ErrorKind::Internal {
            let m = &state.metrics.append_failures;
            if m.get().is_multiple_of(100) {
                tracing::error!(%database, failures = m.get() + 1, error = %e, "append failed on this safekeeper's disk");
            }
            m.inc();
        }
    }
    if bytes > 0 {
        let m = &state.metrics;
        m.appends
            .inc_by(results.iter().filter(|r| r.is_ok()).count() as u64);
        m.fsyncs.inc();
        m.append_bytes.inc_by(bytes as u64);
        m.append_seconds.observe(started.elapsed().as_secs_f64());
    }
    let full = budget_full(t.disk_bytes(), 0, limit);
    results
        .into_iter()
        .map(|r| {
            r.map(|flush_lsn| AppendResponse {
                flush_lsn,
                budget_full: full,
            })
        })
        .collect()
}

/// A proposer id off the wire: exactly 16 bytes.
fn proposer_id(bytes: &[u8]) -> Result<ProposerId> {
    let raw: [u8; 16] = bytes.try_into().map_err(|_| {
        Error::invalid(format!("proposer_id must be 16 bytes, not {}", bytes.len()))
    })?;
    Ok(ProposerId::from_be_bytes(raw))
}

type ChunkSender = mpsc::Sender<Result<WalChunk, Status>>;

/// Whole frames from `at` towards `end`: from memory when `[at, end)` is among the newest bytes
/// written, fits in one chunk and is whole frames (a bound a reader chose may cut one), else
/// from the log.
async fn read_chunk(t: &Timeline, at: Lsn, end: Lsn) -> Result<Vec<u8>> {
    if end.saturating_sub(at) <= READ_CHUNK_BYTES as u64
        && let Some(wal) = t.read_recent(at, end)
        && wal::whole_frames_len(&wal).is_ok_and(|n| n == wal.len())
    {
        return Ok(wal);
    }
    t.with(move |a| a.serve(at, end, READ_CHUNK_BYTES)).await
}

/// Sends one chunk; false when the reader has gone away. `budget` is `(WAL on disk,
/// --max-wal-bytes)` for a follower that acts on it (`WalChunk.wal_bytes`), or zeros.
async fn send_chunk(
    tx: &ChunkSender,
    begin_lsn: Lsn,
    wal: Vec<u8>,
    commit_lsn: Lsn,
    (wal_bytes, max_wal_bytes): (u64, u64),
    term: u64,
) -> bool {
    let chunk = WalChunk {
        begin_lsn,
        wal: wal.into(),
        commit_lsn,
        wal_bytes,
        max_wal_bytes,
        term,
    };
    tx.send(Ok(chunk)).await.is_ok()
}

/// `[start, min(end, flush))`, then the stream ends.
async fn stream_bounded(t: &Timeline, start: Lsn, end: Lsn, tx: &ChunkSender) -> Result<()> {
    let mut at = start;
    let commit_lsn = *t.watch_commit().borrow();
    while at < end {
        let wal = read_chunk(t, at, end).await?;
        let n = wal.len() as u64;
        if n == 0 || !send_chunk(tx, at, wal, commit_lsn, (0, 0), 0).await {
            break;
        }
        at += n;
    }
    Ok(())
}

/// Committed WAL from `start`, following the commit position until the reader goes away.
///
/// With a `gather` window, WAL that commits while the reader is caught up waits that long
/// before it is sent, and the commit position is not watched meanwhile: every commit of the
/// window goes in one chunk, for one wake-up, one message and one apply on each side where a
/// lone commit each would cost every one of them (docs/wal-protocol.md, "Following with a gather window").
///
/// `term` is the term the follower read below `start` (`ReadWalRequest.expected_term`), or
/// `None`. Each chunk is sent only if the term below where it begins is still the one the
/// follower last heard of: a log rewritten while the follower waited (a new term elected
/// from a minority that lacked what the follower read) ends the stream (`wal_diverged`)
/// instead of handing it another history's records from the old position.
async fn stream_committed(
    t: &Timeline,
    start: Lsn,
    mut term: Option<u64>,
    gather: Duration,
    tx: &ChunkSender,
    max_wal_bytes: u64,
) -> Result<()> {
    let check = |at: Lsn, told: Option<u64>| match (told, t.term_below(at)) {
        (Some(told), Some(here)) if told != here => Err(Error::invalid(format!(
            "the WAL below LSN {at} is now term {here}'s here, not term {told}'s as the \
             follower read it: the log was rewritten under the follower"
        ))
        .with_reason(Reason::WalDiverged)),
        _ => Ok(()),
    };
    let budget = || (t.disk_bytes(), max_wal_bytes);
    let mut commit = t.watch_commit();
    let mut at = start;
    // Whether the WAL beyond `at` has waited out its window; until the reader has all of it,
    // it is sent chunk after chunk with no further wait (a reader far behind catches up at
    // full speed).
    let mut waited = false;
    loop {
        let commit_lsn = *commit.borrow_and_update();
        if at < commit_lsn {
            if !waited && !gather.is_zero() {
                waited = true;
                tokio::select! {
                    _ = tokio::time::sleep(gather) => {}
                    _ = tx.closed() => return Ok(()),
                }
                continue;
            }
            let wal = read_chunk(t, at, commit_lsn).await?;
            if wal.is_empty() {
                return Err(Error::internal(format!(
                    "commit position {commit_lsn} is beyond the readable log at {at}"
                )));
            }
            let n = wal.len() as u64;
            // Looked up after the read: every term that wrote what was read is in it.
            check(at, term)?;
            let end_term = t.term_below(at + n);
            if !send_chunk(tx, at, wal, commit_lsn, budget(), end_term.unwrap_or(0)).await {
                return Ok(());
            }
            term = end_term.or(term);
            at += n;
            continue;
        }
        // Caught up: the next WAL to commit waits out a window again.
        waited = false;
        tokio::select! {
            changed = commit.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            _ = tokio::time::sleep(KEEPALIVE) => {
                check(at, term)?;
                let here = t.term_below(at).unwrap_or(0);
                if !send_chunk(tx, at, Vec::new(), commit_lsn, budget(), here).await {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_keeps_headroom_and_backpressure_grows_towards_the_limit() {
        assert!(!budget_full(0, 100, 1600));
        assert!(budget_full(1000, 700, 1600), "would overflow");
        assert!(budget_full(1500, 0, 1600), "inside the headroom");
        assert_eq!(backpressure_delay(700, 1000), Duration::ZERO);
        let mid = backpressure_delay(875, 1000);
        assert!(mid > Duration::ZERO && mid < backpressure_delay(990, 1000));
        assert_eq!(backpressure_delay(5000, 1000), Duration::from_millis(200));
    }
}
