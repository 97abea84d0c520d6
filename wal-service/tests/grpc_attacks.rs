//! The data-loss sequences of issue 13 over gRPC, against a real safekeeper service (its own
//! listeners, data directory and a `file://` object store holding a pageserver manifest),
//! played by a peer that can reach the safekeeper's API. Each is refused or harmless, and the
//! committed records read back over `ReadWal`, also after the safekeeper restarts.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use ferrisdb_common::proto::safekeeper_client::SafekeeperClient;
use ferrisdb_common::proto::{
    AppendRequest, DurableReport, ElectedRequest, ReadWalRequest, SafekeeperStatusRequest,
    TermSwitch, VoteRequest,
};
use ferrisdb_common::wal::{self, Mutation, encode_frame};
use ferrisdb_common::{Error, ErrorKind, Lsn};
use ferrisdb_server_common::objstore::ObjectStoreConfig;
use ferrisdb_wal_service::SafekeeperConfig;
use ferrisdb_wal_service::service::Limits;
use tokio::sync::oneshot;
use tonic::transport::Channel;

const DB: &str = "default";
const COMMITTED: [&str; 3] = ["acked-1", "acked-2", "acked-3"];

/// A listener on a free port, kept bound and handed to the safekeeper (`run_on`), so no
/// other test can take the port in between.
fn listener() -> (std::net::TcpListener, SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

fn record(at: Lsn, value: &str) -> Bytes {
    let m = Mutation::Set {
        key: Bytes::from_static(b"k"),
        value: Bytes::copy_from_slice(value.as_bytes()),
    };
    encode_frame(at, 0, &[m]).0
}

fn id(n: u128) -> Bytes {
    Bytes::copy_from_slice(&n.to_be_bytes())
}

fn kind(s: tonic::Status) -> ErrorKind {
    Error::from(s).kind()
}

struct Safekeeper {
    grpc: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Safekeeper {
    async fn start(dir: &Path) -> (Safekeeper, SafekeeperClient<Channel>) {
        let ((grpc_listener, grpc), (http_listener, http)) = (listener(), listener());
        let config = SafekeeperConfig {
            name: "safekeeper-under-attack".into(),
            listen_grpc: grpc,
            listen_http: http,
            data_dir: dir.join("wal"),
            peers: Vec::new(),
            limits: Limits {
                segment_size: 1,
                max_databases: 2,
                // The other way to sync appends, so a real-gRPC suite covers it too.
                sync_on_blocking_pool: true,
                ..Limits::default()
            },
            object_store: Some(ObjectStoreConfig::from_url(format!(
                "file://{}",
                dir.join("objects").display()
            ))),
            // Open: this test plays a peer that holds the credential.
            security: Default::default(),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let listeners = Some((grpc_listener, http_listener));
            ferrisdb_wal_service::run_on(config, listeners, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        let url = format!("http://{grpc}");
        let mut client = None;
        for _ in 0..200 {
            let mut c = SafekeeperClient::new(ferrisdb_common::net::channel(&url).unwrap());
            let req = SafekeeperStatusRequest {
                database: DB.into(),
            };
            if c.get_status(req).await.is_ok() {
                client = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let sk = Safekeeper {
            grpc,
            stop: Some(tx),
            task,
        };
        (sk, client.expect("safekeeper never answered"))
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap();
        let _ = self.grpc;
    }
}

/// Writes the pageserver's manifest generation 1 naming `durable` as its durable version.
fn write_manifest(dir: &Path, durable: Lsn) {
    let path = dir.join(format!("objects/databases/{DB}/manifest"));
    std::fs::create_dir_all(&path).unwrap();
    let body = serde_json::json!({
        "format": 1,
        "database": DB,
        "generation": 1,
        "remote_consistent_version": durable,
        "layers": [],
    });
    std::fs::write(
        path.join(format!("{:020}.json", 1)),
        serde_json::to_vec(&body).unwrap(),
    )
    .unwrap();
}

/// Sends `requests` on one Append stream and collects the answers (the first error ends it).
async fn append(
    c: &mut SafekeeperClient<Channel>,
    requests: Vec<AppendRequest>,
) -> Vec<Result<Lsn, ErrorKind>> {
    let n = requests.len();
    let (tx, rx) = tokio::sync::mpsc::channel(n.max(1));
    for r in requests {
        tx.send(r).await.unwrap();
    }
    let mut out = Vec::new();
    let mut responses = match c
        .append(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => return vec![Err(kind(s))],
    };
    while out.len() < n {
        match responses.message().await {
            Ok(Some(r)) => out.push(Ok(r.flush_lsn)),
            Ok(None) => break,
            Err(s) => {
                out.push(Err(kind(s)));
                break;
            }
        }
    }
    drop(tx);
    out
}

fn req(term: u64, session: u64, begin: Lsn, wal: Bytes, commit: Lsn) -> AppendRequest {
    AppendRequest {
        database: DB.into(),
        term,
        begin_lsn: begin,
        wal,
        commit_lsn: commit,
        session,
        traceparents: Vec::new(),
    }
}

async fn committed_values(c: &mut SafekeeperClient<Channel>, from: Lsn, to: Lsn) -> Vec<String> {
    let mut stream = c
        .read_wal(ReadWalRequest {
            database: DB.into(),
            start_lsn: from,
            end_lsn: Some(to),
            gather_millis: 0,
            expected_term: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        bytes.extend_from_slice(&chunk.wal);
    }
    wal::decode_frames(&bytes, from)
        .unwrap()
        .iter()
        .flat_map(|r| r.mutations.iter())
        .map(|m| String::from_utf8(m.value().unwrap().to_vec()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_access_cannot_destroy_committed_wal_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let (sk, mut c) = Safekeeper::start(dir.path()).await;
    const PROPOSER: u128 = 0x5eed;
    const ATTACKER: u128 = 0xbad;

    // The legitimate proposer: vote, Elected (which opens its session), three records.
    let vote = c
        .request_vote(VoteRequest {
            database: DB.into(),
            term: 1,
            proposer_id: id(PROPOSER),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(vote.granted);
    let elected = c
        .elected(ElectedRequest {
            database: DB.into(),
            term: 1,
            history: vec![TermSwitch { term: 1, lsn: 0 }],
            log_start_lsn: 0,
            proposer_id: id(PROPOSER),
        })
        .await
        .unwrap()
        .into_inner();
    let session = elected.session;
    let mut end = 0;
    let mut reqs = Vec::new();
    for v in COMMITTED {
        let f = record(end, v);
        reqs.push(req(1, session, end, f.clone(), end));
        end += f.len() as u64;
    }
    reqs.push(req(1, session, end, Bytes::new(), end));
    let answers = append(&mut c, reqs).await;
    assert_eq!(answers.last(), Some(&Ok(end)), "{answers:?}");
    let commit = end;
    let first_end = record(0, COMMITTED[0]).len() as u64;

    // 1. A forged append in the public current term, with no session of its own.
    let forged = record(0, "forged");
    for (s, begin) in [(0, 0), (session ^ 1, 0), (0, commit)] {
        let answers = append(&mut c, vec![req(1, s, begin, forged.clone(), u64::MAX)]).await;
        assert_eq!(answers, vec![Err(ErrorKind::Unavailable)]);
    }
    let stolen = c
        .elected(ElectedRequest {
            database: DB.into(),
            term: 1,
            history: vec![TermSwitch { term: 1, lsn: 0 }],
            log_start_lsn: 0,
            proposer_id: id(ATTACKER),
        })
        .await
        .unwrap_err();
    assert_eq!(kind(stolen), ErrorKind::Fenced);

    // 3. ReportDurable(u64::MAX) while object storage holds only the first record.
    write_manifest(dir.path(), first_end);
    let st = c
        .report_durable(DurableReport {
            database: DB.into(),
            remote_consistent_lsn: u64::MAX,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.log_start_lsn, first_end, "trimmed past the manifest");
    assert_eq!(st.commit_lsn, commit);

    // 4. RequestVote(u64::MAX): refused; the term stays electable.
    let e = c
        .request_vote(VoteRequest {
            database: DB.into(),
            term: u64::MAX,
            proposer_id: id(ATTACKER),
        })
        .await
        .unwrap_err();
    assert_eq!(kind(e), ErrorKind::InvalidArgument);
    let e = c
        .request_vote(VoteRequest {
            database: DB.into(),
            term: 2,
            proposer_id: Bytes::from_static(b"short"),
        })
        .await
        .unwrap_err();
    assert_eq!(kind(e), ErrorKind::InvalidArgument);

    // 2. RequestVote, then Elected with a start past the log end: the manifest does not cover it.
    assert!(
        c.request_vote(VoteRequest {
            database: DB.into(),
            term: 2,
            proposer_id: id(ATTACKER),
        })
        .await
        .unwrap()
        .into_inner()
        .granted
    );
    let far = commit + (1 << 30);
    let e = c
        .elected(ElectedRequest {
            database: DB.into(),
            term: 2,
            history: vec![TermSwitch { term: 2, lsn: far }],
            log_start_lsn: far,
            proposer_id: id(ATTACKER),
        })
        .await
        .unwrap_err();
    assert_eq!(kind(e), ErrorKind::InvalidArgument);

    // Databases are bounded: a second one is created, a third refused.
    let status = |db: &str| SafekeeperStatusRequest {
        database: db.into(),
    };
    c.get_status(status("second")).await.unwrap();
    let e = c.get_status(status("third")).await.unwrap_err();
    assert_eq!(kind(e), ErrorKind::InvalidArgument);
    assert!(!dir.path().join("wal/third").exists());

    // Everything object storage does not hold reads back, now and after a restart; a normal
    // election (the highest term seen plus one) still works.
    assert_eq!(
        committed_values(&mut c, first_end, commit).await,
        COMMITTED[1..]
    );
    sk.stop().await;
    let (sk, mut c) = Safekeeper::start(dir.path()).await;
    let st = c.get_status(status(DB)).await.unwrap().into_inner();
    assert_eq!((st.log_start_lsn, st.flush_lsn), (first_end, commit));
    assert_eq!(
        committed_values(&mut c, first_end, commit).await,
        COMMITTED[1..]
    );
    let next = st.term.checked_add(1).unwrap();
    assert!(
        c.request_vote(VoteRequest {
            database: DB.into(),
            term: next,
            proposer_id: id(PROPOSER + 1),
        })
        .await
        .unwrap()
        .into_inner()
        .granted
    );
    let mut history: Vec<TermSwitch> = st.history.clone();
    history.push(TermSwitch {
        term: next,
        lsn: st.flush_lsn,
    });
    let elected = c
        .elected(ElectedRequest {
            database: DB.into(),
            term: next,
            history,
            log_start_lsn: first_end,
            proposer_id: id(PROPOSER + 1),
        })
        .await
        .unwrap()
        .into_inner();
    let f = record(commit, "after-attacks");
    let new_end = commit + f.len() as u64;
    let answers = append(
        &mut c,
        vec![
            req(next, elected.session, commit, f, commit),
            req(next, elected.session, new_end, Bytes::new(), new_end),
        ],
    )
    .await;
    assert_eq!(answers, vec![Ok(new_end), Ok(new_end)]);
    assert_eq!(
        committed_values(&mut c, first_end, new_end).await,
        ["acked-2", "acked-3", "after-attacks"]
    );
    sk.stop().await;
}
