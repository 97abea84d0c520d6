//! Workloads under kill -9 of the compute, against `ferrisdb dev` through the SDK.
//!
//! - **Bank**: accounts with a fixed total; concurrent transfers (read both balances, write
//!   both, and a log key naming the transfer, in one transaction); a reader that sums every
//!   account in one transaction, directly and through `snapshot()`, and must always find the
//!   same total; and the compute killed with SIGKILL and restarted a few times. Afterwards
//!   the total is unchanged, every acknowledged transfer is in the log, every logged transfer
//!   was acknowledged or had an unknown result, nothing refused is logged, and the balances
//!   are exactly what the logged transfers make of the starting ones.
//! - **Cycle** (FoundationDB's Cycle test): keys forming one ring; each transaction reads
//!   three links after a random node and rotates two nodes, which keeps one ring of the same
//!   nodes; a checker walks the ring over and over during the run (and after it) and must come
//!   back to the start after exactly N hops, having seen every node.
//!
//! Random choices come from a seed printed at the start (`FERRISDB_WORKLOAD_SEED` sets it);
//! the kills land wherever the scheduler puts them, so a seed does not replay a run exactly.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ferrisdb_client::{Database, ErrorKind, Transaction};
use support::DevCluster;

/// A small deterministic generator (SplitMix64), so the test needs no extra dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

fn seed() -> u64 {
    std::env::var("FERRISDB_WORKLOAD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(support::now_micros)
}

fn u64_of(v: &[u8]) -> u64 {
    u64::from_le_bytes(v.try_into().unwrap())
}

/// How a transaction ended, from the client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Committed,
    /// `commit_unknown_result`: it may or may not have happened.
    Unknown,
    /// Any other error: it did not happen.
    Refused(ErrorKind),
}

fn outcome<T>(r: &ferrisdb_client::Result<T>) -> Outcome {
    match r {
        Ok(_) => Outcome::Committed,
        Err(e) if e.kind() == ErrorKind::CommitUnknownResult => Outcome::Unknown,
        Err(e) => Outcome::Refused(e.kind()),
    }
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the command name, which is in parentheses.
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// How long the compute is killed and restarted for, and how long the workload runs after.
const KILL_SPAN: Duration = Duration::from_secs(15);
const KILL_TAIL: Duration = Duration::from_secs(3);

/// What every workload here shares: a seed it prints, a dev cluster it runs against, and the
/// compute killed with SIGKILL at random moments, so the workloads differ only in what they
/// do to the data and check.
struct Chaos {
    name: &'static str,
    /// Printed at the start; `FERRISDB_WORKLOAD_SEED` sets it.
    seed: u64,
    rng: Rng,
    cluster: DevCluster,
    /// Declared after `cluster`, so the cluster is stopped before its directory is removed.
    _dir: tempfile::TempDir,
}

impl Chaos {
    /// Prints the seed, starts a dev cluster in a temporary directory and connects to it.
    async fn start(name: &'static str) -> (Chaos, Database) {
        let seed = seed();
        eprintln!("{name}: seed {seed} (FERRISDB_WORKLOAD_SEED={seed} to reuse it)");
        let dir = tempfile::tempdir().unwrap();
        let cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
        let db = cluster.db(Duration::from_secs(30)).await;
        let chaos = Chaos {
            name,
            seed,
            rng: Rng::new(seed),
            cluster,
            _dir: dir,
        };
        (chaos, db)
    }

    /// Kills the compute with SIGKILL 2 or 3 times (drawn from the seed), at random moments
    /// spread over [`KILL_SPAN`], and starts it again each time from its recorded command
    /// line; then lets the workload run for [`KILL_TAIL`] more and raises `stop`. Returns the
    /// number of kills.
    async fn kill_compute(&mut self, stop: &AtomicBool) -> u32 {
        let (name, rng) = (self.name, &mut self.rng);
        let kills = rng.range(2, 4) as u32;
        let compute = self.cluster.component("compute");
        let mut pid = compute.pid;
        let slot = KILL_SPAN / kills;
        for k in 0..kills {
            let wait = rng.range(slot.as_millis() as u64 / 3, slot.as_millis() as u64);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            assert!(alive(pid), "the compute (pid {pid}) is not running");
            DevCluster::kill_pid(pid);
            support::eventually(
                Duration::from_secs(10),
                "the killed compute is gone",
                || std::future::ready(!alive(pid)),
            )
            .await;
            let down = Duration::from_millis(rng.range(0, 300));
            tokio::time::sleep(down).await;
            // `restart` waits (blocking) for the ports to be free and for the process to stay
            // up.
            pid = tokio::task::block_in_place(|| self.cluster.restart(&compute));
            assert!(alive(pid), "the restarted compute (pid {pid}) exited");
            eprintln!(
                "{name}: kill {}: compute killed, down {down:?}, restarted as pid {pid}",
                k + 1
            );
        }
        tokio::time::sleep(KILL_TAIL).await;
        stop.store(true, Ordering::SeqCst);
        kills
    }
}

const ACCOUNTS: u64 = 50;
const START_BALANCE: u64 = 100;
const TOTAL: u64 = ACCOUNTS * START_BALANCE;
const TRANSFER_TASKS: u64 = 8;

fn account(i: u64) -> Bytes {
    Bytes::from(format!("bank/acct/{i:03}"))
}

/// A transfer's log entry: from, to, amount moved (little-endian u64s).
fn log_entry(from: u64, to: u64, amount: u64) -> Bytes {
    let mut v = Vec::with_capacity(24);
    for n in [from, to, amount] {
        v.extend_from_slice(&n.to_le_bytes());
    }
    Bytes::from(v)
}

/// Moves up to `want` from one account to another (as much as `from` holds), and logs what
/// it moved under `log`, all in `tx`.
async fn transfer(
    tx: Transaction,
    from: u64,
    to: u64,
    want: u64,
    log: Bytes,
) -> ferrisdb_client::Result<()> {
    let balance = async |i: u64| -> ferrisdb_client::Result<u64> {
        match tx.get(account(i)).await? {
            Some(v) => Ok(u64_of(&v)),
            None => panic!("account {i} is missing"),
        }
    };
    let a = balance(from).await?;
    let b = balance(to).await?;
    let amount = want.min(a);
    tx.set(account(from), (a - amount).to_le_bytes().to_vec());
    tx.set(account(to), (b + amount).to_le_bytes().to_vec());
    tx.set(log, log_entry(from, to, amount));
    Ok(())
}

/// Every account's balance, read in one transaction (directly or at snapshot isolation).
async fn balances(db: &Database, snapshot: bool) -> ferrisdb_client::Result<Vec<(Bytes, u64)>> {
    db.run(|tx| async move {
        let tx = if snapshot { tx.snapshot() } else { tx };
        let rows = tx.get_range("bank/acct/", "bank/acct0", 0).await?;
        Ok(rows.into_iter().map(|(k, v)| (k, u64_of(&v))).collect())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_total_holds_in_every_read_through_compute_kills() {
    let (mut chaos, db) = Chaos::start("bank").await;
    let seed = chaos.seed;
    db.run(|tx| async move {
        for i in 0..ACCOUNTS {
            tx.set(account(i), START_BALANCE.to_le_bytes().to_vec());
        }
        Ok(())
    })
    .await
    .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let mut transfers = Vec::new();
    for t in 0..TRANSFER_TASKS {
        let (db, stop) = (db.clone(), stop.clone());
        let mut rng = Rng::new(seed ^ (t + 1).wrapping_mul(0x1234_5678_9ABC_DEF1));
        transfers.push(tokio::spawn(async move {
            // (log key, outcome) for every transfer this task attempted.
            let mut attempted = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let from = rng.range(0, ACCOUNTS);
                let to = (from + rng.range(1, ACCOUNTS)) % ACCOUNTS;
                let want = rng.range(1, 30);
                let log = Bytes::from(format!("bank/log/{t:02}-{n:06}"));
                n += 1;
                let r = db.run(|tx| transfer(tx, from, to, want, log.clone())).await;
                let o = outcome(&r);
                if o != Outcome::Committed {
                    // The compute is likely down: give it a moment.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                attempted.push((log, o));
            }
            attempted
        }));
    }

    // The reader: every read of all accounts in one transaction sums to the total.
    let reader = {
        let (db, stop) = (db.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut checked, mut failed) = (0u64, 0u64);
            let mut wrong = Vec::new();
            let mut snapshot = false;
            while !stop.load(Ordering::SeqCst) {
                snapshot = !snapshot;
                match balances(&db, snapshot).await {
                    Ok(rows) => {
                        checked += 1;
                        let total: u64 = rows.iter().map(|(_, b)| b).sum();
                        if total != TOTAL || rows.len() as u64 != ACCOUNTS {
                            wrong.push(format!(
                                "{} accounts, total {total} (snapshot read: {snapshot})",
                                rows.len()
                            ));
                        }
                    }
                    Err(_) => failed += 1,
                }
            }
            (checked, failed, wrong)
        })
    };

    let kills = chaos.kill_compute(&stop).await;

    let mut outcomes: BTreeMap<Bytes, Outcome> = BTreeMap::new();
    for t in transfers {
        outcomes.extend(t.await.unwrap());
    }
    let (checked, read_failures, wrong) = reader.await.unwrap();
    let count = |f: &dyn Fn(&Outcome) -> bool| outcomes.values().filter(|o| f(o)).count();
    let committed = count(&|o| *o == Outcome::Committed);
    let unknown = count(&|o| *o == Outcome::Unknown);
    let refused = count(&|o| matches!(o, Outcome::Refused(_)));
    eprintln!(
        "bank: {kills} compute kills; transfers: {committed} committed, {unknown} unknown, \
         {refused} refused; reader: {checked} totals checked, {read_failures} reads failed"
    );
    assert!(
        wrong.is_empty(),
        "seed {seed}: a read saw the total change: {wrong:?}"
    );
    assert!(checked > 0, "seed {seed}: the reader never read");
    assert!(committed > 0, "seed {seed}: no transfer committed");

    // After the run: the total, the log against what the clients were told, and the balances
    // against the logged transfers.
    let db = chaos.cluster.db(Duration::from_secs(30)).await;
    // The restarted compute takes one more transfer.
    let last = Bytes::from_static(b"bank/log/last");
    db.run(|tx| transfer(tx, 0, 1, 1, last.clone()))
        .await
        .unwrap();
    outcomes.insert(last, Outcome::Committed);
    for snapshot in [false, true] {
        let rows = balances(&db, snapshot).await.unwrap();
        assert_eq!(rows.len() as u64, ACCOUNTS, "seed {seed}: accounts lost");
        let total: u64 = rows.iter().map(|(_, b)| b).sum();
        assert_eq!(total, TOTAL, "seed {seed}: the total changed");
    }
    let log: BTreeMap<Bytes, Bytes> = db
        .run(|tx| async move { tx.get_range("bank/log/", "bank/log0", 0).await })
        .await
        .unwrap()
        .into_iter()
        .collect();
    let acked: BTreeSet<&Bytes> = outcomes
        .iter()
        .filter(|(_, o)| **o == Outcome::Committed)
        .map(|(k, _)| k)
        .collect();
    let lost: Vec<_> = acked.iter().filter(|k| !log.contains_key(**k)).collect();
    assert!(
        lost.is_empty(),
        "seed {seed}: acknowledged transfers missing from the log: {lost:?}"
    );
    let phantom: Vec<_> = log
        .keys()
        .filter(|k| {
            !matches!(
                outcomes.get(*k),
                Some(Outcome::Committed | Outcome::Unknown)
            )
        })
        .map(|k| (k, outcomes.get(k)))
        .collect();
    assert!(
        phantom.is_empty(),
        "seed {seed}: logged transfers that were refused or never attempted: {phantom:?}"
    );
    let mut expected = vec![START_BALANCE as i64; ACCOUNTS as usize];
    for v in log.values() {
        let (from, to, amount) = (u64_of(&v[0..8]), u64_of(&v[8..16]), u64_of(&v[16..24]));
        expected[from as usize] -= amount as i64;
        expected[to as usize] += amount as i64;
    }
    let rows = balances(&db, false).await.unwrap();
    for (i, (k, b)) in rows.iter().enumerate() {
        assert_eq!(*k, account(i as u64));
        assert_eq!(
            *b as i64,
            expected[i],
            "seed {seed}: account {i} is not what the {} logged transfers make it",
            log.len()
        );
    }
    eprintln!(
        "bank: {} transfers logged ({} acknowledged, {} of {unknown} unknown-result ones)",
        log.len(),
        acked.len(),
        log.len() - acked.len()
    );
}

const NODES: u64 = 30;
const CYCLE_TASKS: u64 = 6;

fn node(i: u64) -> Bytes {
    Bytes::from(format!("cycle/{i:02}"))
}

fn node_of(key: &[u8]) -> u64 {
    std::str::from_utf8(&key[b"cycle/".len()..])
        .unwrap()
        .parse()
        .unwrap()
}

/// Reads `a -> b -> c -> d` and makes it `a -> c -> b -> d`: the same nodes, still one ring.
async fn rotate(tx: Transaction, a: u64) -> ferrisdb_client::Result<()> {
    let get = async |n: u64| -> ferrisdb_client::Result<u64> {
        match tx.get(node(n)).await? {
            Some(v) => Ok(u64_of(&v)),
            None => panic!("node {n} is missing"),
        }
    };
    let b = get(a).await?;
    let c = get(b).await?;
    let d = get(c).await?;
    tx.set(node(a), c.to_le_bytes().to_vec());
    tx.set(node(c), b.to_le_bytes().to_vec());
    tx.set(node(b), d.to_le_bytes().to_vec());
    Ok(())
}

/// Walks the ring from node 0 in one transaction. `Err` says how it is broken.
async fn walk(db: &Database) -> ferrisdb_client::Result<Result<(), String>> {
    db.run(|tx| async move {
        let rows = tx.get_range("cycle/", "cycle0", 0).await?;
        if rows.len() as u64 != NODES {
            return Ok(Err(format!("{} nodes instead of {NODES}", rows.len())));
        }
        let next: BTreeMap<u64, u64> = rows.iter().map(|(k, v)| (node_of(k), u64_of(v))).collect();
        let (mut at, mut seen) = (0u64, BTreeSet::new());
        for hop in 0..NODES {
            if !seen.insert(at) {
                return Ok(Err(format!("node {at} visited twice, at hop {hop}")));
            }
            match next.get(&at) {
                Some(n) => at = *n,
                None => return Ok(Err(format!("node {at} does not exist"))),
            }
        }
        if at != 0 {
            return Ok(Err(format!("{NODES} hops from 0 end at {at}, not 0")));
        }
        Ok(Ok(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycle_stays_one_ring_through_compute_kills() {
    let (mut chaos, db) = Chaos::start("cycle").await;
    let seed = chaos.seed;
    db.run(|tx| async move {
        for i in 0..NODES {
            tx.set(node(i), ((i + 1) % NODES).to_le_bytes().to_vec());
        }
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(walk(&db).await.unwrap(), Ok(()));

    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for t in 0..CYCLE_TASKS {
        let (db, stop, committed) = (db.clone(), stop.clone(), committed.clone());
        let mut rng = Rng::new(seed ^ (t + 1).wrapping_mul(0x0F0F_1234_5678_9ABD));
        workers.push(tokio::spawn(async move {
            let (mut unknown, mut refused) = (0u64, 0u64);
            while !stop.load(Ordering::SeqCst) {
                let a = rng.range(0, NODES);
                // a -> b -> c -> d becomes a -> c -> b -> d.
                let r = db.run(|tx| rotate(tx, a)).await;
                match outcome(&r) {
                    Outcome::Committed => {
                        committed.fetch_add(1, Ordering::SeqCst);
                    }
                    Outcome::Unknown => unknown += 1,
                    Outcome::Refused(_) => refused += 1,
                }
                if r.is_err() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            (unknown, refused)
        }));
    }

    let checker = {
        let (db, stop) = (db.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut checked, mut failed) = (0u64, 0u64);
            let mut broken = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match walk(&db).await {
                    Ok(Ok(())) => checked += 1,
                    Ok(Err(how)) => {
                        checked += 1;
                        broken.push(how);
                    }
                    Err(_) => failed += 1,
                }
            }
            (checked, failed, broken)
        })
    };

    let kills = chaos.kill_compute(&stop).await;

    let (mut unknown, mut refused) = (0, 0);
    for w in workers {
        let (u, r) = w.await.unwrap();
        unknown += u;
        refused += r;
    }
    let (checked, walk_failures, broken) = checker.await.unwrap();
    let committed = committed.load(Ordering::SeqCst);
    eprintln!(
        "cycle: {kills} compute kills; rotations: {committed} committed, {unknown} unknown, \
         {refused} refused; checker: {checked} walks, {walk_failures} failed to read"
    );
    assert!(
        broken.is_empty(),
        "seed {seed}: the ring broke during the run: {broken:?}"
    );
    assert!(
        checked > 0,
        "seed {seed}: the checker never walked the ring"
    );
    assert!(committed > 0, "seed {seed}: no rotation committed");

    // After the run, with a fresh connection, and once more after one more rotation.
    let db = chaos.cluster.db(Duration::from_secs(30)).await;
    assert_eq!(
        walk(&db).await.unwrap(),
        Ok(()),
        "seed {seed}: ring broken after the run"
    );
    db.run(|tx| rotate(tx, 0)).await.unwrap();
    assert_eq!(
        walk(&db).await.unwrap(),
        Ok(()),
        "seed {seed}: ring broken after the run"
    );
}
