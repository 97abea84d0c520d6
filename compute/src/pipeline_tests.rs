//! The commit pipeline in process, against three real safekeepers: a model-based test of
//! sizes, batch compositions and refusals (it never stops answering), a differential test of
//! conflict detection against a plain model (versionstamped keys and values, range clears,
//! atomic ops), and the 5-second rule on an idle pipeline with an injected clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ferrisdb_common::atomic::{self, AtomicOp};
use ferrisdb_common::limits::{MAX_TRANSACTION_SIZE, MAX_VALUE_SIZE};
use ferrisdb_common::message_size::MAX_FRAME_BYTES;
use ferrisdb_common::proto::pageserver_client::PageserverClient;
use ferrisdb_common::proto::{self, MutationType};
use ferrisdb_common::{ErrorKind, Result, Version};
use ferrisdb_server_common::clock::{Clock, SystemClock};
use tokio::sync::{mpsc, oneshot, watch};

use crate::committer::{COMMIT_TIMEOUT, CommitRequest, Committed, Committer};
use crate::hot_tier::{HotRead, HotTier};
use crate::metrics::Metrics;
use crate::page_source::GrpcPageSource;
use crate::proposer::Proposer;
use crate::read_path::TierReader;
use crate::requests::Commit;
use crate::watches::Watches;

/// A small deterministic generator (SplitMix64), seeded per test so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A clock tests move by hand.
#[derive(Debug, Default)]
struct ManualClock(AtomicU64);

impl Clock for ManualClock {
    fn now_micros(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A running pipeline over three in-process safekeepers.
struct Pipeline {
    sender: mpsc::Sender<CommitRequest>,
    hot: Arc<HotTier>,
    committed: watch::Receiver<Version>,
    max_frame: Arc<std::sync::atomic::AtomicUsize>,
    served: Arc<std::sync::atomic::AtomicBool>,
    start: Version,
    /// The safekeepers' gRPC endpoints.
    urls: Vec<String>,
    /// Each safekeeper's stall switch, when the pipeline dials them through
    /// [`crate::test_safekeepers::stallable`] proxies (empty otherwise).
    stalls: Vec<watch::Sender<bool>>,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn pipeline(clock: Arc<dyn Clock>) -> Pipeline {
    pipeline_over(clock, false).await
}

/// [`pipeline`], with every safekeeper behind a proxy that can hold its answers back when
/// `stallable` (see [`Pipeline::stalls`]).
async fn pipeline_over(clock: Arc<dyn Clock>, stallable: bool) -> Pipeline {
    let dir = tempfile::tempdir().unwrap();
    let (mut urls, stop) = crate::test_safekeepers::safekeepers(dir.path()).await;
    let mut stalls = Vec::new();
    if stallable {
        for url in &mut urls {
            let (proxied, stall) = crate::test_safekeepers::stallable(url).await;
            *url = proxied;
            stalls.push(stall);
        }
    }
    let proposer = loop {
        match Proposer::elect("db", &urls, 0, 0).await {
            Ok(p) => break p,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    proposer.start();
    let start = proposer.elected_end();
    proposer
        .wait_durable(start, Duration::from_secs(30))
        .await
        .unwrap();
    let start = Version(start);
    let hot = Arc::new(HotTier::new(start));
    let metrics = Metrics::new().unwrap();
    // Every key is cleared first (see `clear_everything`), so the pageserver is never asked.
    let pageserver = PageserverClient::new(
        ferrisdb_server_common::auth::call_channel("http://127.0.0.1:9").unwrap(),
    );
    let reader = TierReader::new(
        "db".into(),
        hot.clone(),
        None,
        Arc::new(GrpcPageSource::new(pageserver)),
        metrics.clone(),
    );
    let (committed_tx, committed) = watch::channel(start);
    let committer = Committer::new(
        proposer,
        start,
        reader,
        clock,
        committed_tx,
        Arc::new(Watches::new(16)),
        metrics,
    );
    let max_frame = committer.max_frame_bytes();
    let served = committer.read_versions_served();
    let (sender, requests) = mpsc::channel(4096);
    tokio::spawn(committer.run(requests));
    let p = Pipeline {
        sender,
        hot,
        committed,
        max_frame,
        served,
        start,
        urls: urls.clone(),
        stalls,
        _stop: stop,
        _dir: dir,
    };
    clear_everything(&p).await;
    p
}

/// Clears the whole keyspace, so every later read is answered by the hot tier.
async fn clear_everything(p: &Pipeline) {
    let m = proto_mutation(MutationType::ClearRange, b"", b"\xff", 0);
    p.commit(p.start, vec![m], vec![]).await.unwrap();
}

fn proto_mutation(t: MutationType, key: &[u8], param: &[u8], op: u32) -> proto::Mutation {
    proto::Mutation {
        r#type: t as i32,
        key: Bytes::copy_from_slice(key),
        param: Bytes::copy_from_slice(param),
        atomic_op: op,
    }
}

fn atomic_mutation(op: AtomicOp, key: &[u8], param: &[u8]) -> proto::Mutation {
    proto_mutation(MutationType::Atomic, key, param, u32::from(op.code()))
}

fn proto_range(begin: &[u8], end: &[u8]) -> proto::KeyRange {
    proto::KeyRange {
        begin: Bytes::copy_from_slice(begin),
        end: Bytes::copy_from_slice(end),
    }
}

impl Pipeline {
    /// Decodes a request the way the service does and queues it.
    async fn send(
        &self,
        read_version: Version,
        mutations: Vec<proto::Mutation>,
        reads: Vec<proto::KeyRange>,
    ) -> Result<oneshot::Receiver<Result<Committed>>> {
        let commit = Commit::decode(read_version, mutations, reads, Vec::new())?;
        let (reply, outcome) = oneshot::channel();
        let req = CommitRequest {
            commit,
            reply,
            trace: None,
            arrived: tokio::time::Instant::now(),
        };
        self.sender.send(req).await.unwrap();
        Ok(outcome)
    }

    async fn commit(
        &self,
        read_version: Version,
        mutations: Vec<proto::Mutation>,
        reads: Vec<proto::KeyRange>,
    ) -> Result<Committed> {
        let outcome = self.send(read_version, mutations, reads).await?;
        answered(outcome).await
    }

    /// Queues, both at `rv`, a blind write of `first` to `key` and then a read-modify-write
    /// of it (`second`, reading `key`), which loses to the write: their outcomes, in that
    /// order.
    async fn write_and_lose(
        &self,
        key: &[u8],
        rv: Version,
    ) -> (
        oneshot::Receiver<Result<Committed>>,
        oneshot::Receiver<Result<Committed>>,
    ) {
        let write = vec![proto_mutation(MutationType::Set, key, b"first", 0)];
        let writer = self.send(rv, write, Vec::new()).await.unwrap();
        let rmw = vec![proto_mutation(MutationType::Set, key, b"second", 0)];
        let loser = self
            .send(rv, rmw, vec![proto_range(key, &after(key))])
            .await
            .unwrap();
        (writer, loser)
    }

    fn latest(&self) -> Version {
        *self.committed.borrow()
    }
}

/// The outcome, which must come: the pipeline never leaves a request unanswered.
async fn answered(outcome: oneshot::Receiver<Result<Committed>>) -> Result<Committed> {
    tokio::time::timeout(Duration::from_secs(60), outcome)
        .await
        .expect("the pipeline stopped answering")
        .expect("the pipeline dropped a request")
}

fn value_of(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    for (i, b) in v.iter_mut().enumerate() {
        *b = (seed as usize).wrapping_add(i) as u8;
    }
    v
}

/// A transaction refused for a write still in flight hears so only once that write is
/// committed, so its retry reads at or past it rather than conflicting again on the old value
/// (YCSB F's retries of retries). The writer and the reader are queued together, so the write
/// is in the same batch or the one before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_is_answered_once_the_write_it_lost_to_is_committed() {
    let p = pipeline(Arc::new(SystemClock)).await;
    for round in 0..20u32 {
        let key = format!("rmw/{round}").into_bytes();
        let rv = p.latest();
        let (writer, loser) = p.write_and_lose(&key, rv).await;
        let e = answered(loser).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotCommitted, "{e}");
        // Answered in log order: the winner's outcome is already there, and what a retry
        // reads at covers it.
        let mut writer = writer;
        let (won, ..) = writer
            .try_recv()
            .expect("the conflict was answered before the write it lost to committed")
            .unwrap();
        assert!(
            p.latest() >= won,
            "round {round}: committed {} is behind the winning write {won}",
            p.latest()
        );
        assert_eq!(
            p.hot.get(&key, p.latest()),
            HotRead::Found(Some(Bytes::from_static(b"first")))
        );
    }
}

/// A conflict parked on a batch that misses its deadline (the whole quorum stalls behind open
/// connections) is still answered, and answered as what it is: `not_committed`, definite,
/// beside the batch's own `commit_unknown_result`. Once the quorum answers again the batch
/// commits (it was in the log) and the pipeline goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_parked_on_a_batch_that_times_out_is_answered_not_committed() {
    let p = pipeline_over(Arc::new(SystemClock), true).await;
    let key = b"stalled/rmw".to_vec();
    let rv = p.latest();
    for stall in &p.stalls {
        stall.send_replace(true);
    }
    let (writer, loser) = p.write_and_lose(&key, rv).await;
    let sent = tokio::time::Instant::now();
    let e = answered(loser).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotCommitted, "{e}");
    // Held until the batch it lost to was given up on, not answered at once.
    assert!(
        sent.elapsed() >= COMMIT_TIMEOUT - Duration::from_millis(500),
        "the conflict was answered after {:?}, before its batch's deadline",
        sent.elapsed()
    );
    // Given up on together: the batch's own answer left before its parked conflict's.
    let mut writer = writer;
    let e = writer
        .try_recv()
        .expect("the conflict was answered before the batch it lost to was given up on")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CommitUnknownResult, "{e}");
    assert_eq!(
        p.latest(),
        rv,
        "nothing became durable while the quorum stalled"
    );
    for stall in &p.stalls {
        stall.send_replace(false);
    }
    // The unknown write was in the log: it commits once the quorum answers, and a fresh
    // commit after it goes through.
    let (v, ..) = p
        .commit(
            rv,
            vec![proto_mutation(MutationType::Set, b"after", b"x", 0)],
            vec![],
        )
        .await
        .unwrap();
    assert!(p.latest() >= v);
    assert_eq!(
        p.hot.get(&key, p.latest()),
        HotRead::Found(Some(Bytes::from_static(b"first")))
    );
}

/// Random transactions (sizes up to the limit), random batch compositions (bursts queued at
/// once), random refusals (a frame limit lowered at random, read versions from the future):
/// every request is answered, refusals are definite and only for the right reason, every
/// commit's data is there, and a small commit after each burst succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_answers_every_request_whatever_the_sizes_and_refusals() {
    let seed = 0x5EED_0014;
    let mut rng = Rng(seed);
    let p = pipeline(Arc::new(SystemClock)).await;
    for round in 0..8 {
        // Refusal injection: some rounds carry only small frames.
        let max_frame = if rng.chance(40) {
            (4 << 10) + rng.below(2 << 20) as usize
        } else {
            MAX_FRAME_BYTES
        };
        p.max_frame.store(max_frame, Ordering::SeqCst);
        let n = 1 + rng.below(10);
        let mut sent = Vec::new();
        for t in 0..n {
            // Mostly small, sometimes up to the transaction limit.
            let budget = match rng.below(10) {
                0 => MAX_TRANSACTION_SIZE - 200_000,
                1..=2 => rng.below(3_000_000) as usize,
                _ => rng.below(20_000) as usize,
            };
            let mut mutations = Vec::new();
            let mut keys = Vec::new();
            let mut left = budget;
            let mut i = 0;
            loop {
                let len = left.clamp(1, MAX_VALUE_SIZE);
                let key = format!("r{round}/t{t}/{i}");
                let value = value_of(len, rng.next());
                mutations.push(proto_mutation(MutationType::Set, key.as_bytes(), &value, 0));
                keys.push((key, value));
                i += 1;
                if left <= len + 200 {
                    break;
                }
                left -= len + 200;
            }
            let frame_alone: usize = 29
                + keys
                    .iter()
                    .map(|(k, v)| 9 + k.len() + v.len())
                    .sum::<usize>();
            let future = rng.chance(10);
            let read_version = if future {
                Version(p.latest().0 + 1_000_000)
            } else {
                p.latest()
            };
            let outcome = p.send(read_version, mutations, Vec::new()).await.unwrap();
            sent.push((outcome, keys, frame_alone, future));
        }
        for (outcome, keys, frame_alone, future) in sent {
            match answered(outcome).await {
                Ok((version, _, _)) => {
                    assert!(!future, "a read version from the future was accepted");
                    assert!(frame_alone <= max_frame);
                    for (k, v) in keys {
                        assert_eq!(
                            p.hot.get(k.as_bytes(), version),
                            HotRead::Found(Some(Bytes::from(v))),
                            "round {round}: {k}"
                        );
                    }
                }
                Err(e) if future => assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}"),
                Err(e) => {
                    assert_eq!(
                        e.kind(),
                        ErrorKind::TransactionTooLarge,
                        "round {round}: {e}"
                    );
                    assert!(frame_alone > max_frame, "refused though it fits alone: {e}");
                }
            }
        }
        // And the next small commit goes through.
        p.max_frame.store(MAX_FRAME_BYTES, Ordering::SeqCst);
        let m = proto_mutation(
            MutationType::Set,
            b"after",
            format!("{round}").as_bytes(),
            0,
        );
        let (v, _, _) = p.commit(p.latest(), vec![m], Vec::new()).await.unwrap();
        assert_eq!(
            p.hot.get(b"after", v),
            HotRead::Found(Some(Bytes::from(format!("{round}"))))
        );
    }
}

/// An append the frame limit refuses is answered `transaction_too_large` with nothing
/// appended; a burst too large for one frame is split, and all of it commits; the pipeline
/// then commits on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_append_does_not_wedge_the_pipeline() {
    let p = pipeline(Arc::new(SystemClock)).await;
    p.max_frame.store(64 << 10, Ordering::SeqCst);
    let big = proto_mutation(MutationType::Set, b"big", &vec![1u8; 80 << 10], 0);
    let e = p
        .commit(p.latest(), vec![big], Vec::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TransactionTooLarge);
    // Eight transactions of 30 kB each fit alone, not together.
    let mut outcomes = Vec::new();
    for i in 0..8 {
        let m = proto_mutation(
            MutationType::Set,
            format!("k{i}").as_bytes(),
            &vec![i; 30 << 10],
            0,
        );
        outcomes.push(p.send(p.latest(), vec![m], Vec::new()).await.unwrap());
    }
    let mut versions = Vec::new();
    for o in outcomes {
        versions.push(answered(o).await.unwrap().0);
    }
    versions.dedup();
    assert!(versions.len() >= 4, "the burst was split: {versions:?}");
    p.max_frame.store(MAX_FRAME_BYTES, Ordering::SeqCst);
    let m = proto_mutation(MutationType::Set, b"small", b"1", 0);
    let (v, _, _) = p.commit(p.latest(), vec![m], Vec::new()).await.unwrap();
    assert_eq!(p.hot.get(b"big", v), HotRead::Found(None));
    assert_eq!(
        p.hot.get(b"k7", v),
        HotRead::Found(Some(Bytes::from(vec![7u8; 30 << 10])))
    );
}

/// The 5-second rule on an idle pipeline: once a read version was handed out, a heartbeat
/// supersedes it, and a commit reading at it more than 5 s (of the injected clock) later is
/// `transaction_too_old`; one within 5 s commits.
/// A lone commit's position is not sent at once (the next append would carry it), but once
/// `COMMIT_LINGER` passes with no append, it goes to every safekeeper alone. Each commit here
/// is the last for a while, so only that announcement (or the streams' keepalive, once a
/// second, which cannot cover ten windows of 300 ms) can bring it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_commits_position_reaches_every_safekeeper() {
    use ferrisdb_common::proto::SafekeeperStatusRequest;
    use ferrisdb_common::proto::safekeeper_client::SafekeeperClient;
    let p = pipeline(Arc::new(SystemClock)).await;
    let mut clients = Vec::new();
    for url in &p.urls {
        clients.push(SafekeeperClient::new(
            ferrisdb_server_common::auth::call_channel(url).unwrap(),
        ));
    }
    for i in 0..10u8 {
        let set = proto_mutation(MutationType::Set, &[b'k', i], b"v", 0);
        let (v, ..) = p.commit(p.latest(), vec![set], vec![]).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
        for (sk, c) in clients.iter_mut().enumerate() {
            loop {
                let status = c
                    .get_status(SafekeeperStatusRequest {
                        database: "db".into(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                if status.commit_lsn >= v.0 {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "commit {i} at {v}: safekeeper {sk} still at {}",
                    status.commit_lsn
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_version_ages_on_an_idle_pipeline() {
    let clock = Arc::new(ManualClock(AtomicU64::new(1_000_000_000)));
    let p = pipeline(clock.clone()).await;
    let read = |k: &[u8]| vec![proto_range(k, &[k, b"\0"].concat())];
    let set = |k: &[u8]| vec![proto_mutation(MutationType::Set, k, b"v", 0)];

    // Handed out, then superseded by a heartbeat while nothing else commits.
    let rv = p.latest();
    p.served.store(true, Ordering::SeqCst);
    let mut committed = p.committed.clone();
    tokio::time::timeout(Duration::from_secs(30), committed.wait_for(|v| *v > rv))
        .await
        .expect("no heartbeat on an idle pipeline")
        .unwrap();
    clock.0.fetch_add(4_000_000, Ordering::SeqCst);
    p.commit(rv, set(b"a"), read(b"x")).await.unwrap();

    let rv = p.latest();
    p.served.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(30), committed.wait_for(|v| *v > rv))
        .await
        .expect("no heartbeat on an idle pipeline")
        .unwrap();
    clock.0.fetch_add(6_000_000, Ordering::SeqCst);
    let e = p.commit(rv, set(b"b"), read(b"y")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TransactionTooOld, "{e}");
    // A blind write reads nothing and is not subject to it.
    p.commit(rv, set(b"c"), Vec::new()).await.unwrap();
}

/// One transaction of the differential test.
struct Txn {
    read_version: Version,
    reads: Vec<(Vec<u8>, Vec<u8>)>,
    /// What the model says it writes (a versionstamped key: every key its template can become).
    writes: Vec<(Vec<u8>, Vec<u8>)>,
    mutations: Vec<proto::Mutation>,
    wave: usize,
}

fn after(k: &[u8]) -> Vec<u8> {
    [k, b"\0"].concat()
}

fn random_key(rng: &mut Rng) -> Vec<u8> {
    let names: [&[u8]; 6] = [b"a", b"b", b"c", b"count", b"log/", b"log0"];
    names[rng.below(names.len() as u64) as usize].to_vec()
}

fn random_txn(rng: &mut Rng, read_version: Version, wave: usize) -> Txn {
    let mut t = Txn {
        read_version,
        reads: Vec::new(),
        writes: Vec::new(),
        mutations: Vec::new(),
        wave,
    };
    for _ in 0..rng.below(3) {
        if rng.chance(30) {
            // The phantom's read: every log entry.
            t.reads.push((b"log/".to_vec(), b"log0".to_vec()));
        } else {
            let (a, b) = (random_key(rng), random_key(rng));
            let (a, b) = if a <= b { (a, b) } else { (b, a) };
            t.reads
                .push((a.clone(), if a == b { after(&a) } else { b }));
        }
    }
    for _ in 0..1 + rng.below(3) {
        let k = random_key(rng);
        match rng.below(6) {
            0 => {
                t.mutations
                    .push(proto_mutation(MutationType::Set, &k, b"v", 0));
                t.writes.push((k.clone(), after(&k)));
            }
            1 => {
                t.mutations
                    .push(proto_mutation(MutationType::Clear, &k, b"", 0));
                t.writes.push((k.clone(), after(&k)));
            }
            2 => {
                let e = random_key(rng);
                let (b, e) = if k <= e { (k, e) } else { (e, k) };
                t.mutations
                    .push(proto_mutation(MutationType::ClearRange, &b, &e, 0));
                if b < e {
                    t.writes.push((b, e));
                }
            }
            3 => {
                t.mutations
                    .push(atomic_mutation(AtomicOp::Add, b"count", &[1, 0, 0, 0]));
                t.writes.push((b"count".to_vec(), after(b"count")));
            }
            4 => {
                // log/<stamp>: the template with its 4-byte offset.
                let mut template = b"log/".to_vec();
                template.extend_from_slice(&[0xAA; 10]);
                template.extend_from_slice(&4u32.to_le_bytes());
                t.mutations.push(atomic_mutation(
                    AtomicOp::SetVersionstampedKey,
                    &template,
                    b"e",
                ));
                let mut lo = b"log/".to_vec();
                lo.extend_from_slice(&[0x00; 10]);
                let mut hi = b"log/".to_vec();
                hi.extend_from_slice(&[0xff; 10]);
                t.writes.push((lo, after(&hi)));
            }
            _ => {
                let mut template = vec![0u8; 10];
                template.extend_from_slice(&0u32.to_le_bytes());
                t.mutations.push(atomic_mutation(
                    AtomicOp::SetVersionstampedValue,
                    &k,
                    &template,
                ));
                t.writes.push((k.clone(), after(&k)));
            }
        }
    }
    t
}

fn intersects(a: &(Vec<u8>, Vec<u8>), b: &(Vec<u8>, Vec<u8>)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// Applies one committed transaction's mutations to the model's state.
fn apply_model(state: &mut BTreeMap<Vec<u8>, Vec<u8>>, t: &Txn, version: Version, order: u16) {
    let stamp = atomic::versionstamp(version.0, order);
    for m in &t.mutations {
        let (k, p) = (m.key.to_vec(), m.param.to_vec());
        match MutationType::try_from(m.r#type).unwrap() {
            MutationType::Set => {
                state.insert(k, p);
            }
            MutationType::Clear => {
                state.remove(&k);
            }
            MutationType::ClearRange => {
                let doomed: Vec<_> = state.range(k..p).map(|(k, _)| k.clone()).collect();
                for d in doomed {
                    state.remove(&d);
                }
            }
            MutationType::Atomic => match AtomicOp::from_code(m.atomic_op as u8).unwrap() {
                AtomicOp::SetVersionstampedKey => {
                    let mut key = k[..k.len() - 4].to_vec();
                    key[4..14].copy_from_slice(&stamp);
                    state.insert(key, p);
                }
                AtomicOp::SetVersionstampedValue => {
                    let mut value = p[..p.len() - 4].to_vec();
                    value[..10].copy_from_slice(&stamp);
                    state.insert(k, value);
                }
                op => match atomic::apply(op, state.get(&k).map(|v| &v[..]), &p).unwrap() {
                    Some(v) => {
                        state.insert(k, v);
                    }
                    None => {
                        state.remove(&k);
                    }
                },
            },
            other => panic!("unexpected mutation type {other:?}"),
        }
    }
}

/// Conflict detection against a plain model: waves of random transactions (sets, clears,
/// range clears, atomic adds, versionstamped keys and values) at random recent read versions,
/// queued together. Every commit is serializable by the model (no write committed after its
/// read version and ahead of it intersects what it read, the versionstamp template's whole
/// range included); every `not_committed` has such a write; and the stored data equals the
/// model's replay of the commits in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_detection_matches_a_plain_model() {
    let mut rng = Rng(0xD1FF_0014);
    let p = pipeline(Arc::new(SystemClock)).await;
    let mut versions = vec![p.latest()];
    let mut committed: Vec<(Version, u16, Txn)> = Vec::new();
    let mut refused: Vec<Txn> = Vec::new();
    // The phantom of issue 14, first: t1 reads the empty log and writes count; t2 appends a
    // stamped log entry and commits first; t1 must not commit.
    {
        let rv = p.latest();
        let t2 = vec![atomic_mutation(
            AtomicOp::SetVersionstampedKey,
            &[b"log/".as_slice(), &[0; 10], &4u32.to_le_bytes()].concat(),
            b"e",
        )];
        p.commit(rv, t2, Vec::new()).await.unwrap();
        let t1 = vec![proto_mutation(MutationType::Set, b"count", &[0], 0)];
        let e = p
            .commit(rv, t1, vec![proto_range(b"log/", b"log0")])
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotCommitted);
        clear_everything(&p).await;
        versions.push(p.latest());
    }
    for wave in 0..40 {
        let n = 1 + rng.below(6);
        let mut outcomes = Vec::new();
        for _ in 0..n {
            let back = rng.below(versions.len().min(4) as u64) as usize;
            let rv = versions[versions.len() - 1 - back];
            let t = random_txn(&mut rng, rv, wave);
            let reads = t.reads.iter().map(|(a, b)| proto_range(a, b)).collect();
            let o = p.send(rv, t.mutations.clone(), reads).await.unwrap();
            outcomes.push((t, o));
        }
        for (t, o) in outcomes {
            match answered(o).await {
                Ok((v, _, order)) => committed.push((v, order, t)),
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::NotCommitted, "{e}");
                    refused.push(t);
                }
            }
        }
        versions.push(p.latest());
    }
    committed.sort_by_key(|(v, o, _)| (*v, *o));
    for (i, (v, o, t)) in committed.iter().enumerate() {
        for (_, _, u) in committed[..i]
            .iter()
            .filter(|(uv, _, _)| *uv > t.read_version)
        {
            let clash = u
                .writes
                .iter()
                .any(|w| t.reads.iter().any(|r| intersects(w, r)));
            assert!(
                !clash,
                "committed at {v}/{o} though an earlier commit after its read version wrote what it read"
            );
        }
    }
    for t in &refused {
        let cause = committed.iter().any(|(uv, _, u)| {
            *uv > t.read_version
                && u.wave <= t.wave
                && u.writes
                    .iter()
                    .any(|w| t.reads.iter().any(|r| intersects(w, r)))
        });
        assert!(cause, "not_committed without a conflicting write");
    }
    assert!(
        !refused.is_empty() && committed.len() > 20,
        "the workload exercised both outcomes"
    );
    // The data is the model's replay.
    let mut state = BTreeMap::new();
    for (v, o, t) in &committed {
        apply_model(&mut state, t, *v, *o);
    }
    let at = p.latest();
    for (k, v) in &state {
        assert_eq!(
            p.hot.get(k, at),
            HotRead::Found(Some(Bytes::from(v.clone()))),
            "{k:?}"
        );
    }
    for k in [b"a".as_slice(), b"b", b"c", b"count", b"log/", b"log0"] {
        if !state.contains_key(k) {
            assert_eq!(p.hot.get(k, at), HotRead::Found(None), "{k:?}");
        }
    }
}
