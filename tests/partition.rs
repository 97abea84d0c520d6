//! Linearizable reads under a real network partition (issue 14, item 6): a primary A is cut off
//! from the three safekeepers by iptables while clients still reach it; a standby B takes over
//! and commits. No read through A that begins after B acknowledged its commit may return an
//! older value or read version — A refuses (`unavailable`) or answers fresh. After healing, A
//! steps down and nothing acknowledged is lost.
//!
//! A and B run with group ids of their own, and the iptables rules drop only packets that
//! sockets of A's group send to this cluster's safekeeper ports, and that B's send to A's client
//! port (B, cut off from A too, takes over whatever A would answer its probes), so tests
//! running in parallel are untouched. The rules are removed when the test ends, failing or not.

#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrisdb_client::{Database, ErrorKind, Version};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use support::{DevCluster, eventually, status};

/// An iptables rule in the OUTPUT chain, deleted when dropped (also when the test panics).
struct DropRule {
    spec: Vec<String>,
}

impl DropRule {
    /// Drops TCP packets that sockets of group `gid` send to `ports` on this host.
    fn install(gid: u32, ports: &[u16]) -> Result<DropRule, String> {
        let ports = ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        // The comment names the group, so a rule left behind by a killed run is recognisable
        // (it matches no process once that run's computes are gone).
        let comment = format!("ferrisdb-partition-test-gid-{gid}");
        let spec: Vec<String> = [
            "OUTPUT",
            "-p",
            "tcp",
            "-m",
            "owner",
            "--gid-owner",
            &gid.to_string(),
            "-m",
            "multiport",
            "--dports",
            &ports,
            "-m",
            "comment",
            "--comment",
            &comment,
            "-j",
            "DROP",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        iptables("-A", &spec)?;
        Ok(DropRule { spec })
    }
}

impl Drop for DropRule {
    fn drop(&mut self) {
        if let Err(e) = iptables("-D", &self.spec) {
            eprintln!("could not remove the partition rule {:?}: {e}", self.spec);
        }
    }
}

/// Runs `iptables -w <op> <spec>`.
fn iptables(op: &str, spec: &[String]) -> Result<(), String> {
    let out = Command::new("iptables")
        .arg("-w")
        .arg(op)
        .args(spec)
        .output()
        .map_err(|e| format!("cannot run iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Why this test cannot partition the network here, if it cannot.
fn cannot_partition() -> Option<String> {
    // /proc/self belongs to the process's effective user.
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    if uid != 0 {
        return Some("not root: iptables rules need CAP_NET_ADMIN".into());
    }
    match Command::new("iptables")
        .args(["-w", "-S", "OUTPUT"])
        .output()
    {
        Err(e) => Some(format!(
            "iptables is not installed ({e}); apt-get install -y iptables"
        )),
        Ok(o) if !o.status.success() => Some(format!(
            "iptables does not work here: {}",
            String::from_utf8_lossy(&o.stderr)
        )),
        Ok(_) => None,
    }
}

/// A compute started by this test in its own process group, SIGKILLed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.0.id() as i32), Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// Starts `argv` in its own process group with primary group `gid`, logging to `log`.
fn spawn(argv: &[String], gid: Option<u32>, log: &std::path::Path) -> Process {
    let log = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0);
    if let Some(gid) = gid {
        cmd.gid(gid);
    }
    Process(cmd.spawn().unwrap())
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// One read through A: when it began, and its read version and value, or the error kind.
#[derive(Debug, Clone)]
struct Read {
    began: Instant,
    outcome: Result<(Version, Option<Bytes>), ErrorKind>,
}

/// Reads `k` with its read version: fetched first (`GetReadVersion`, then `Get` at it), or, with
/// `one_round_trip`, the version the compute answered a read at the latest version with.
async fn read_k(
    db: &Database,
    one_round_trip: bool,
) -> Result<(Version, Option<Bytes>), ErrorKind> {
    let tx = db.create_transaction();
    let read = async {
        if one_round_trip {
            let value = tx.get("k").await?;
            return Ok((tx.read_version().await?, value));
        }
        let v = tx.read_version().await?;
        let value = tx.get("k").await?;
        Ok::<_, ferrisdb_client::Error>((v, value))
    };
    match tokio::time::timeout(Duration::from_secs(5), read).await {
        Ok(r) => r.map_err(|e| e.kind()),
        // A read that never answers returned nothing stale.
        Err(_) => Err(ErrorKind::Unavailable),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_primary_never_answers_stale_reads() {
    if let Some(why) = cannot_partition() {
        eprintln!("SKIPPED a_partitioned_primary_never_answers_stale_reads: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let logs = cluster.data_dir.join("logs");
    let safekeeper_ports: Vec<u16> = cluster
        .components()
        .iter()
        .filter(|c| c.kind == "safekeeper")
        .map(|c| port_of(&c.grpc))
        .collect();
    assert_eq!(safekeeper_ports.len(), 3);

    // A: the dev compute, restarted under a group of its own so the rule can single out its
    // sockets. It wins the next term.
    let dev_compute = cluster.component("compute");
    DevCluster::kill_pid(dev_compute.pid);
    let gid = 40_000 + cluster.base_port as u32;
    let a_endpoint = cluster.endpoint();
    let a_http = cluster.admin_endpoint();
    // The killed compute's ports may take a moment to come free: start again if A exits.
    let mut a_process = None;
    for attempt in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let log = logs.join(format!("a-{attempt}.log"));
        let mut p = spawn(&dev_compute.argv, Some(gid), &log);
        tokio::time::sleep(Duration::from_millis(500)).await;
        if p.0.try_wait().unwrap().is_none() {
            a_process = Some(p);
            break;
        }
    }
    let _a = a_process.expect("A could not start on the dev compute's ports");
    let a = Database::connect(&a_endpoint).await.unwrap();
    eventually(Duration::from_secs(30), "A serves as primary", || async {
        status(&a_http)
            .await
            .is_some_and(|s| s["primary"]["role"] == "primary")
    })
    .await;

    // B: a standby on its own ports, watching A.
    let b_base = support::free_base_port();
    // B's admin API wants the cluster credential, as every admin API of the cluster.
    cluster.adopt_ports(b_base);
    let mut b_args = dev_compute.compute_args();
    b_args.listen_grpc = format!("127.0.0.1:{b_base}").parse().unwrap();
    b_args.listen_http = format!("127.0.0.1:{}", b_base + 80).parse().unwrap();
    b_args.warm_tier_dir = Some(cluster.data_dir.join("b-cache"));
    b_args.standby = true;
    b_args.primary_endpoints = vec![a_endpoint.clone()];
    let b_argv = support::compute_argv(&b_args);
    let b_gid = gid + 1;
    let _b = spawn(&b_argv, Some(b_gid), &logs.join("b.log"));
    let b_http = format!("http://127.0.0.1:{}", b_base + 80);
    eventually(
        Duration::from_secs(30),
        "B follows as a standby",
        || async {
            status(&b_http)
                .await
                .is_some_and(|s| s["primary"]["role"] == "replica")
        },
    )
    .await;
    let b = Database::connect(&format!("http://127.0.0.1:{b_base}"))
        .await
        .unwrap();

    let t = a.create_transaction();
    t.set("k", "1");
    t.commit().await.unwrap();
    let (v1, value) = read_k(&a, true).await.unwrap();
    assert_eq!(value.as_deref(), Some(&b"1"[..]));

    // The partition: A's packets to the safekeepers are dropped, and B's to A (so B takes
    // over whatever A answers it); the test's clients still reach A.
    let rules = [
        DropRule::install(gid, &safekeeper_ports).unwrap(),
        DropRule::install(b_gid, &[port_of(&a_endpoint)]).unwrap(),
    ];
    let partitioned_at = Instant::now();

    // Readers hammer A for the whole partition.
    let reads = Arc::new(Mutex::new(Vec::<Read>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    // Readers 0 and 2 read at the latest version in one round trip, reader 1 fetches its
    // read version first: neither may answer a stale read.
    for reader in 0..3 {
        let (a, reads, stop) = (a.clone(), reads.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let began = Instant::now();
                let outcome = read_k(&a, reader % 2 == 0).await;
                reads.lock().unwrap().push(Read { began, outcome });
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    // A write through A is never acknowledged while it is cut off.
    let t = a.create_transaction();
    t.set("k", "99");
    let write = tokio::time::timeout(Duration::from_secs(15), t.commit()).await;
    assert!(
        !matches!(write, Ok(Ok(_))),
        "a commit through the partitioned primary was acknowledged: {write:?}"
    );

    // B sees A stop answering read versions, takes over and commits k = 2.
    let mut b_commit = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while b_commit.is_none() {
        assert!(Instant::now() < deadline, "B never committed k = 2");
        let t = b.create_transaction();
        t.set("k", "2");
        match t.commit().await {
            Ok(v) => b_commit = Some((v, Instant::now())),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let (v2, acked_at) = b_commit.unwrap();
    assert!(v2 > v1);
    eprintln!(
        "B acknowledged k = 2 at version {v2}, {:?} into the partition",
        acked_at - partitioned_at
    );

    // Keep reading through A, still partitioned, for a while after B's acknowledgement.
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for r in readers {
        r.await.unwrap();
    }
    let a_status = status(&a_http).await.unwrap();
    drop(rules);

    let reads = reads.lock().unwrap().clone();
    let after: Vec<&Read> = reads.iter().filter(|r| r.began > acked_at).collect();
    assert!(
        after.len() >= 5,
        "too few reads through A after B's commit to judge: {}",
        after.len()
    );
    let (mut refused, mut fresh) = (0, 0);
    for r in &after {
        match &r.outcome {
            Ok((v, value)) => {
                assert!(
                    *v >= v2 && value.as_deref() == Some(&b"2"[..]),
                    "stale read through the partitioned primary: read version {v}, k = {value:?}, \
                     after B acknowledged k = 2 at {v2} (A's status: {a_status})"
                );
                fresh += 1;
            }
            Err(kind) => {
                assert!(
                    matches!(
                        kind,
                        ErrorKind::Unavailable | ErrorKind::Fenced | ErrorKind::FutureVersion
                    ),
                    "unexpected refusal: {kind:?}"
                );
                refused += 1;
            }
        }
    }
    eprintln!(
        "{} reads through A in the partition, {} after B's commit: {refused} refused, {fresh} fresh",
        reads.len(),
        after.len()
    );

    // Healed: A learns of the newer term and steps down to a replica that catches up.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(&a_http).await;
        // A former primary serves on as a replica that says it lost its term.
        if s.as_ref().is_some_and(|s| {
            s["primary"]["role"] == "fenced" && s["primary"]["applied_version"].is_u64()
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A did not step down after the partition healed: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = a.create_transaction();
    t.set("k", "100");
    let e = t.commit().await.unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Fenced | ErrorKind::ReadOnly),
        "A still takes commits: {e}"
    );
    // As a replica it catches up: at B's commit version it shows k = 2. It has no primary
    // to ask for a current read version, so reads at the latest version are refused rather
    // than answered from its own log (which, cut off again, could be stale without a word).
    eventually(
        Duration::from_secs(30),
        "A's replica shows k = 2 at B's version",
        || async {
            let tx = a.create_transaction();
            tx.set_read_version(v2).is_ok()
                && tx
                    .get("k")
                    .await
                    .is_ok_and(|v| v.as_deref() == Some(&b"2"[..]))
        },
    )
    .await;
    assert_eq!(read_k(&a, true).await, Err(ErrorKind::Unavailable));
    assert_eq!(read_k(&a, false).await, Err(ErrorKind::Unavailable));
    // Nothing acknowledged is lost, nothing refused appears: B holds k = 2 and commits on.
    let (v, value) = read_k(&b, false).await.unwrap();
    assert!(v >= v2);
    assert_eq!(value.as_deref(), Some(&b"2"[..]), "B lost its commit");
    let t = b.create_transaction();
    t.set("k", "3");
    t.commit().await.unwrap();
    assert_eq!(
        read_k(&b, true).await.unwrap().1.as_deref(),
        Some(&b"3"[..])
    );
}
