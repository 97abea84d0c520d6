//! Security at the process level (docs/security.md).
//!
//! - TLS and tokens on the compute: a compute started with `--tls-cert/--tls-key --token`
//!   serves an SDK that trusts its CA and sends the token, and refuses everyone else with a
//!   clear code; its admin API is https too, reached by the CLI with `--tls-ca`, and wants an
//!   admin credential (a client token is refused); the pageserver, restarted with TLS, is
//!   read by the compute over `https://` trusting `--tls-ca`; a dead endpoint first in the
//!   SDK's list is skipped.
//! - An outsider on loopback of a running `ferrisdb dev` (no credential, a client token, the
//!   cluster credential in the client header, a wrong credential) is refused on every
//!   internal RPC and every mutating admin call, and canary data (checkpointed and WAL-only)
//!   reads back afterwards and after SIGKILL of the whole tree.
//! - A listener beyond loopback without authentication is refused, naming `--insecure`; with
//!   it, the process starts.
//! - Connections that never speak, or send their opening a byte at a time, are closed on
//!   every listener after the handshake deadline, while clients are served.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferrisdb_client::{ClientTls, ConnectOptions, Database, ErrorKind, RetryOptions};
use ferrisdb_common::net::CLUSTER_TOKEN_HEADER;
use ferrisdb_common::proto::pageserver_client::PageserverClient;
use ferrisdb_common::proto::safekeeper_client::SafekeeperClient;
use ferrisdb_common::proto::{
    AppendRequest, ChangesRequest, CreateBranchRequest, DurableReport, ElectedRequest,
    LeaseRequest, ListDatabasesRequest, MaintenanceRequest, PageGetRangeRequest, PageGetRequest,
    ReadWalRequest, SafekeeperStatusRequest, VoteRequest,
};
use support::{BIN, DevCluster, cli};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const TOKEN: &str = "s3cret-token";

async fn read(db: &Database, key: &str) -> ferrisdb_client::Result<Option<bytes::Bytes>> {
    let key = key.to_string();
    db.run(|tx| {
        let key = key.clone();
        async move { tx.get(key).await }
    })
    .await
}

fn options(endpoint: &str, ca: &[u8], token: Option<&str>) -> ConnectOptions {
    let mut o = ConnectOptions::new(endpoint).retry(RetryOptions {
        timeout: Duration::from_secs(2),
        ..RetryOptions::default()
    });
    o.tls = Some(ClientTls {
        ca_pem: Some(ca.to_vec()),
        domain: Some("localhost".into()),
    });
    o.token = token.map(String::from);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_token_on_the_client_and_admin_apis() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let db = cluster.db(Duration::from_secs(10)).await;
    db.run(|tx| async move {
        tx.set("secret", "42");
        Ok(())
    })
    .await
    .unwrap();

    // The same compute again, now with TLS and a token.
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert_file, &cert_pem).unwrap();
    std::fs::write(&key_file, &key_pem).unwrap();
    // The client token from a private file, out of `ps`.
    let token_file = dir.path().join("client.token");
    std::fs::write(&token_file, format!("# clients\n{TOKEN}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // Every process again with TLS, as docs/security.md deploys it: a certificate to serve
    // with, the CA to trust, and every peer at https://. (A process using TLS refuses an
    // http:// peer: that is tested below.)
    let components = cluster.components();
    for c in &components {
        DevCluster::kill_pid(c.pid);
    }
    let with_tls = |argv: &[String]| -> Vec<String> {
        let mut argv: Vec<String> = argv
            .iter()
            .map(|a| a.replace("http://", "https://"))
            .collect();
        for (flag, file) in [
            ("--tls-cert", &cert_file),
            ("--tls-key", &key_file),
            ("--tls-ca", &cert_file),
        ] {
            argv.extend([flag.to_string(), file.display().to_string()]);
        }
        argv
    };
    for c in &components {
        let mut argv = with_tls(&c.argv);
        if c.name == "compute" {
            argv.extend(["--token-file".to_string(), token_file.display().to_string()]);
        }
        cluster.spawn_argv(&c.name, &argv);
    }
    let pageserver = cluster.component("pageserver");

    let https = format!("https://127.0.0.1:{}", cluster.base_port);
    let ca = cert_pem.as_bytes();
    let good = Database::connect_with(options(&https, ca, Some(TOKEN)))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let value = loop {
        match read(&good, "secret").await {
            Ok(v) => break v,
            Err(e) => assert!(
                Instant::now() < deadline,
                "TLS compute never answered: {e}\n{}",
                std::fs::read_to_string(cluster.data_dir.join("logs/compute.restarted.log"))
                    .unwrap_or_default()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(value.as_deref(), Some(&b"42"[..]));

    // No token, a wrong token: `unauthenticated`, not retried into a timeout.
    for token in [None, Some("wrong")] {
        let db = Database::connect_with(options(&https, ca, token))
            .await
            .unwrap();
        let e = read(&db, "secret").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{token:?}: {e}");
    }
    // Plain HTTP/2 to a TLS port, or TLS trusting another CA: no answer at all.
    let plain = Database::connect(&format!("http://127.0.0.1:{}", cluster.base_port))
        .await
        .unwrap()
        .with_retry(RetryOptions {
            timeout: Duration::from_secs(1),
            ..RetryOptions::default()
        });
    assert!(read(&plain, "secret").await.is_err());
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let wrong_ca = other.cert.pem();
    let db = Database::connect_with(options(&https, wrong_ca.as_bytes(), Some(TOKEN)))
        .await
        .unwrap();
    assert!(
        read(&db, "secret").await.is_err(),
        "a certificate from another CA is refused"
    );

    // The CLI with --tls-ca and --token-file.
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &cert_pem).unwrap();
    let ca_arg = ca_file.display().to_string();
    let tf = token_file.display().to_string();
    let (ok, out, err) = cli(&[
        "get",
        "secret",
        "--endpoint",
        &https,
        "--tls-ca",
        &ca_arg,
        "--token-file",
        &tf,
    ]);
    assert!(ok, "CLI over TLS with --token-file: {out} {err}");
    assert_eq!(out.trim(), "42");

    // The admin API is https now: the CLI reaches it trusting the CA, with the cluster
    // credential (the harness passes it); a client token is refused there, and without
    // --tls-ca the certificate is not trusted.
    let admin = format!("https://127.0.0.1:{}", cluster.base_port + 80);
    let (ok, out, err) = cli(&[
        "admin",
        "status",
        "--endpoint",
        &admin,
        "--tls-ca",
        &ca_arg,
        "--json",
    ]);
    assert!(ok, "admin status over https: {out} {err}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["kind"], "compute", "{st}");
    let (ok, out, _) = cli(&[
        "admin",
        "checkpoint",
        "--endpoint",
        &admin,
        "--tls-ca",
        &ca_arg,
        "--admin-token",
        TOKEN,
        "--json",
    ]);
    assert!(!ok, "a client token drove the admin API: {out}");
    let e: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["error"]["code"], "unauthenticated", "{e}");
    let (ok, _, err) = cli(&["admin", "status", "--endpoint", &admin, "--json"]);
    assert!(!ok, "an untrusted certificate was accepted");
    assert!(err.is_empty() || !err.contains("panicked"), "{err}");
    let (ok, _, _) = cli(&[
        "admin",
        "status",
        "--endpoint",
        &format!("http://127.0.0.1:{}", cluster.base_port + 80),
        "--json",
    ]);
    assert!(!ok, "plain HTTP to the TLS admin port answered");
    // The pageserver's admin API is https as well, and it has ingested the commit.
    let ps_admin = pageserver.http.replace("http://", "https://");
    let (ok, out, err) = cli(&[
        "admin",
        "status",
        "--endpoint",
        &ps_admin,
        "--tls-ca",
        &ca_arg,
        "--json",
    ]);
    assert!(ok, "pageserver admin status over https: {out} {err}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        st["databases"]["default"]["ingested_version"]
            .as_u64()
            .unwrap()
            > 0,
        "{st}"
    );

    // An endpoint list whose first entry is dead: the SDK moves on and stays there.
    let dead = format!("https://127.0.0.1:{}", support::free_base_port());
    let listed = Database::connect_with(options(&format!("{dead},{https}"), ca, Some(TOKEN)))
        .await
        .unwrap();
    assert_eq!(
        read(&listed, "secret").await.unwrap().as_deref(),
        Some(&b"42"[..])
    );
    assert_eq!(listed.current_endpoint(), https);

    // Asked for TLS, given http:// (one character off): refused before anything is sent.
    // A listener of our own counts the bytes that reach it.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let trap_url = format!("http://{}", trap.local_addr().unwrap());
    let caught = |trap: &std::net::TcpListener| -> usize {
        use std::io::Read;
        let mut n = 0;
        while let Ok((mut conn, _)) = trap.accept() {
            conn.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 4096];
            while let Ok(k) = conn.read(&mut buf) {
                if k == 0 {
                    break;
                }
                n += k;
            }
        }
        n
    };
    let (ok, out, err) = cli(&[
        "get",
        "secret",
        "--endpoint",
        &trap_url,
        "--tls-ca",
        &ca_arg,
        "--token",
        TOKEN,
    ]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("invalid_argument") && err.contains("https://"),
        "{err}"
    );
    let (ok, out, _) = cli(&[
        "admin",
        "checkpoint",
        "--endpoint",
        &trap_url,
        "--tls-ca",
        &ca_arg,
        "--admin-token",
        TOKEN,
        "--json",
    ]);
    assert!(!ok, "{out}");
    let e: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["error"]["code"], "invalid_argument", "{e}");
    let mixed = format!("{https},{trap_url}");
    let (ok, _, err) = cli(&[
        "get",
        "secret",
        "--endpoint",
        &mixed,
        "--tls-ca",
        &ca_arg,
        "--token",
        TOKEN,
    ]);
    assert!(!ok && err.contains("invalid_argument"), "{err}");
    // A server using TLS given an http:// peer: it exits at start naming it.
    let compute = components.iter().find(|c| c.name == "compute").unwrap();
    let mut argv = with_tls(&compute.argv);
    let at = argv.iter().position(|a| a == "--pageserver").unwrap();
    argv[at + 1] = trap_url.clone();
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("invalid_argument") && stderr.contains(&trap_url),
        "{stderr}"
    );
    assert_eq!(caught(&trap), 0, "bytes reached the cleartext listener");
}

/// A channel to `url` sending these headers on every call: what an outsider can do.
fn outsider(
    url: &str,
    headers: &[(&'static str, String)],
) -> InterceptedService<Channel, impl tonic::service::Interceptor + Clone> {
    let channel = ferrisdb_common::net::channel(url).unwrap();
    let headers: Vec<(&'static str, tonic::metadata::MetadataValue<_>)> = headers
        .iter()
        .map(|(k, v)| (*k, v.parse().unwrap()))
        .collect();
    InterceptedService::new(channel, move |mut req: tonic::Request<()>| {
        for (k, v) in &headers {
            req.metadata_mut().insert(*k, v.clone());
        }
        Ok(req)
    })
}

/// Asserts `r` is a refusal with gRPC `unauthenticated` and FerrisDB code `unauthenticated`.
fn refused<T: std::fmt::Debug>(who: &str, what: &str, r: Result<T, tonic::Status>) {
    let s = match r {
        Ok(v) => panic!("{who}: {what} was served: {v:?}"),
        Err(s) => s,
    };
    assert_eq!(
        s.code(),
        tonic::Code::Unauthenticated,
        "{who}: {what}: {s:?}"
    );
    assert_eq!(
        s.metadata()
            .get(ferrisdb_common::error::CODE_METADATA_KEY)
            .and_then(|v| v.to_str().ok()),
        Some("unauthenticated"),
        "{who}: {what}: {s:?}"
    );
}

/// The FerrisDB code of an admin API error body (`{error: {code}}` or `{code}`).
fn admin_code(body: &serde_json::Value) -> Option<&str> {
    body["error"]["code"].as_str().or(body["code"].as_str())
}

async fn read_all(db: &Database, keys: &[String]) -> Vec<Option<String>> {
    let keys = keys.to_vec();
    db.run(|tx| {
        let keys = keys.clone();
        async move {
            let mut out = Vec::new();
            for k in keys {
                out.push(
                    tx.get(k)
                        .await?
                        .map(|v| String::from_utf8_lossy(&v).into_owned()),
                );
            }
            Ok(out)
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_on_loopback_reaches_no_internal_api_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cluster = DevCluster::start(&data, &[]).await;
    let db = cluster.db(Duration::from_secs(20)).await;

    // The credential dev generated: private to its owner.
    let token_file = data.join("cluster.token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "cluster.token mode {mode:o}");
    }
    let credential = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();

    // Canaries: some checkpointed into object storage, some only in the WAL.
    let checkpointed: Vec<String> = (0..10).map(|i| format!("canary-ckpt-{i}")).collect();
    let wal_only: Vec<String> = (0..10).map(|i| format!("canary-wal-{i}")).collect();
    for keys in [&checkpointed, &wal_only] {
        if keys[0].contains("wal") {
            let (ok, out, err) = cli(&[
                "admin",
                "checkpoint",
                "--endpoint",
                &cluster.admin_endpoint(),
            ]);
            assert!(ok, "checkpoint with the credential: {out} {err}");
        }
        let ks = keys.clone();
        db.run(|tx| {
            let ks = ks.clone();
            async move {
                for k in ks {
                    tx.set(k.clone(), format!("value of {k}"));
                }
                Ok(())
            }
        })
        .await
        .unwrap();
    }
    let expected: Vec<Option<String>> = checkpointed
        .iter()
        .chain(&wal_only)
        .map(|k| Some(format!("value of {k}")))
        .collect();
    let all: Vec<String> = checkpointed.iter().chain(&wal_only).cloned().collect();
    assert_eq!(read_all(&db, &all).await, expected);

    let components = cluster.components();
    let sk = components.iter().find(|c| c.kind == "safekeeper").unwrap();
    let ps = components.iter().find(|c| c.kind == "pageserver").unwrap();

    // Positive control: with the credential in its own header, the same calls are served.
    let mut insider = SafekeeperClient::new(support::internal_channel(&sk.grpc));
    let status = insider
        .get_status(SafekeeperStatusRequest {
            database: "default".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.commit_lsn > 0, "{status:?}");
    let term = status.term;

    let outsiders: Vec<(&str, Vec<(&'static str, String)>)> = vec![
        ("no credential", vec![]),
        (
            "a client token",
            vec![("authorization", "Bearer client-token".to_string())],
        ),
        (
            "the cluster credential as a bearer token",
            vec![("authorization", format!("Bearer {credential}"))],
        ),
        (
            "a wrong cluster credential",
            vec![(CLUSTER_TOKEN_HEADER, "ab".repeat(32))],
        ),
    ];
    for (who, headers) in &outsiders {
        let mut page = PageserverClient::new(outsider(&ps.grpc, headers));
        refused(
            who,
            "pageserver Get",
            page.get(PageGetRequest {
                database: "default".into(),
                key: b"canary-ckpt-0".to_vec().into(),
                version: u64::MAX,
            })
            .await,
        );
        refused(
            who,
            "pageserver GetRange",
            page.get_range(PageGetRangeRequest {
                database: "default".into(),
                begin: Vec::new().into(),
                end: vec![0xff].into(),
                version: u64::MAX,
                ..Default::default()
            })
            .await,
        );
        refused(
            who,
            "pageserver Changes",
            page.changes(ChangesRequest {
                database: "default".into(),
                ..Default::default()
            })
            .await,
        );
        refused(
            who,
            "pageserver CreateBranch",
            page.create_branch(CreateBranchRequest {
                database: "outsider".into(),
                parent: "default".into(),
                ..Default::default()
            })
            .await,
        );
        refused(
            who,
            "pageserver Compact",
            page.compact(MaintenanceRequest {
                database: "default".into(),
            })
            .await,
        );
        refused(
            who,
            "pageserver CollectGarbage",
            page.collect_garbage(MaintenanceRequest {
                database: "default".into(),
            })
            .await,
        );

        let mut safekeeper = SafekeeperClient::new(outsider(&sk.grpc, headers));
        let db_name = || "default".to_string();
        refused(
            who,
            "safekeeper GetStatus",
            safekeeper
                .get_status(SafekeeperStatusRequest {
                    database: db_name(),
                })
                .await,
        );
        refused(
            who,
            "safekeeper RequestVote",
            safekeeper
                .request_vote(VoteRequest {
                    database: db_name(),
                    term: u64::MAX,
                    proposer_id: vec![7u8; 16].into(),
                })
                .await,
        );
        refused(
            who,
            "safekeeper Elected",
            safekeeper
                .elected(ElectedRequest {
                    database: db_name(),
                    term,
                    history: Vec::new(),
                    log_start_lsn: u64::MAX / 2,
                    proposer_id: vec![7u8; 16].into(),
                })
                .await,
        );
        for release in [false, true] {
            refused(
                who,
                "safekeeper RenewLease",
                safekeeper
                    .renew_lease(LeaseRequest {
                        database: db_name(),
                        term,
                        proposer_id: vec![7u8; 16].into(),
                        release,
                    })
                    .await,
            );
        }
        let forged = AppendRequest {
            database: db_name(),
            term,
            begin_lsn: 0,
            wal: vec![0u8; 64].into(),
            commit_lsn: 0,
            session: 1,
            traceparents: Vec::new(),
        };
        refused(
            who,
            "safekeeper Append",
            safekeeper.append(futures::stream::iter(vec![forged])).await,
        );
        refused(
            who,
            "safekeeper ReadWal",
            safekeeper
                .read_wal(ReadWalRequest {
                    database: db_name(),
                    start_lsn: 0,
                    end_lsn: Some(u64::MAX),
                    gather_millis: 0,
                    expected_term: 0,
                })
                .await,
        );
        refused(
            who,
            "safekeeper ReportDurable",
            safekeeper
                .report_durable(DurableReport {
                    database: db_name(),
                    remote_consistent_lsn: u64::MAX,
                })
                .await,
        );

        // Admin calls that change something, on the compute and on the pageserver. (The
        // cluster credential is an admin credential there, so that outsider is not one.)
        if headers.iter().any(|(_, v)| v.contains(credential.as_str())) {
            continue;
        }
        let bearer = headers
            .iter()
            .find(|(k, _)| *k == "authorization")
            .map(|(_, v)| v.clone());
        let http = reqwest::Client::new();
        let calls = [
            (
                format!("{}/v1/checkpoint", cluster.admin_endpoint()),
                serde_json::Value::Null,
            ),
            (
                format!("{}/v1/branch", cluster.admin_endpoint()),
                serde_json::json!({"name": "outsider-c", "parent": null}),
            ),
            (
                format!("{}/v1/databases/default/checkpoint", ps.http),
                serde_json::Value::Null,
            ),
            (
                format!("{}/v1/databases/outsider-p/branch", ps.http),
                serde_json::json!({"parent": "default"}),
            ),
            (
                format!("{}/v1/compact", cluster.admin_endpoint()),
                serde_json::Value::Null,
            ),
            (
                format!("{}/v1/gc", cluster.admin_endpoint()),
                serde_json::Value::Null,
            ),
            (
                format!("{}/v1/databases/default/compact", ps.http),
                serde_json::Value::Null,
            ),
            (
                format!("{}/v1/databases/default/gc", ps.http),
                serde_json::Value::Null,
            ),
        ];
        for (url, body) in calls {
            let mut r = http.post(&url).json(&body);
            if let Some(b) = &bearer {
                r = r.header("authorization", b);
            }
            for (k, v) in headers.iter().filter(|(k, _)| *k != "authorization") {
                r = r.header(*k, v);
            }
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), 401, "{who}: POST {url}");
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(
                admin_code(&body),
                Some("unauthenticated"),
                "{who}: {url}: {body}"
            );
        }
        for url in [
            format!("{}/v1/status", sk.http),
            format!("{}/metrics", ps.http),
        ] {
            let r = http.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 401, "{who}: GET {url}");
        }
        let r = http
            .get(format!("{}/healthz", sk.http))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "/healthz stays open");
    }

    // Nothing changed: no branch was created, the term is the primary's, and every canary
    // reads back; then the same after SIGKILL of the whole tree and a restart.
    let mut page = PageserverClient::new(support::internal_channel(&ps.grpc));
    let names: Vec<String> = page
        .list_databases(ListDatabasesRequest {})
        .await
        .unwrap()
        .into_inner()
        .databases
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("outsider")),
        "an outsider created a branch: {names:?}"
    );
    let after = insider
        .get_status(SafekeeperStatusRequest {
            database: "default".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.term, term, "the term moved");
    assert_eq!(read_all(&db, &all).await, expected);
    // Still a working primary: it commits.
    db.run(|tx| async move {
        tx.set("after-outsiders", "ok");
        Ok(())
    })
    .await
    .unwrap();

    cluster.kill_all();
    cluster.launch().await;
    let db = cluster.db(Duration::from_secs(20)).await;
    assert_eq!(read_all(&db, &all).await, expected);
}

/// Runs `ferrisdb` with `args` until it exits or `limit` passes; returns (exited
/// successfully or still running, stderr so far).
fn run_for(args: &[&str], limit: Duration, log: &std::path::Path) -> (Option<bool>, String) {
    let out = std::fs::File::create(log).unwrap();
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status.success());
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    (exited, std::fs::read_to_string(log).unwrap_or_default())
}

#[test]
fn binding_beyond_loopback_needs_authentication_or_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let base = support::free_base_port();
    let grpc = format!("0.0.0.0:{}", base + 1);
    let http = format!("127.0.0.1:{}", base + 81);
    let data = dir.path().join("sk").display().to_string();
    let safekeeper = [
        "safekeeper",
        "--listen-grpc",
        &grpc,
        "--listen-http",
        &http,
        "--data-dir",
        &data,
    ];
    let log = dir.path().join("sk.log");

    // Refused, naming the flags that fix it.
    let (exited, err) = run_for(&safekeeper, Duration::from_secs(30), &log);
    assert_eq!(
        exited,
        Some(false),
        "started without auth on 0.0.0.0: {err}"
    );
    assert!(
        err.contains("--insecure") && err.contains("--cluster-token-file"),
        "{err}"
    );

    // The same for the compute's client API and the proxy.
    let compute = [
        "compute",
        "--listen-grpc",
        "0.0.0.0:1",
        "--safekeeper",
        "http://127.0.0.1:1",
        "--pageserver",
        "http://127.0.0.1:1",
    ];
    let (exited, err) = run_for(&compute, Duration::from_secs(30), &log);
    assert_eq!(exited, Some(false), "{err}");
    assert!(
        err.contains("--insecure") && err.contains("--token-file"),
        "{err}"
    );
    let proxy = [
        "proxy",
        "--listen",
        "0.0.0.0:1",
        "--upstream",
        "127.0.0.1:2",
        "--",
        "true",
    ];
    let (exited, err) = run_for(&proxy, Duration::from_secs(30), &log);
    assert_eq!(exited, Some(false), "{err}");
    assert!(err.contains("--insecure"), "{err}");

    // A world-readable credential file is refused too.
    let token_file = dir.path().join("cluster.token");
    std::fs::write(&token_file, format!("{}\n", "ab".repeat(32))).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let tf = token_file.display().to_string();
        let mut args = safekeeper.to_vec();
        args.extend(["--cluster-token-file", &tf]);
        let (exited, err) = run_for(&args, Duration::from_secs(30), &log);
        assert_eq!(exited, Some(false), "{err}");
        assert!(err.contains("chmod 600"), "{err}");
    }

    // With --insecure it starts (and says so), and serves.
    let mut args = safekeeper.to_vec();
    args.push("--insecure");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(BIN)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let healthy = loop {
        let ok = std::net::TcpStream::connect(&http).is_ok();
        if ok || Instant::now() > deadline {
            break ok;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "--insecure safekeeper exited: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(healthy, "--insecure safekeeper never listened: {err}");
    assert!(err.contains("WITHOUT authentication"), "{err}");
}

/// `ferrisdb admin` finds the credential of its user's `dev` cluster from any directory, by
/// the pointer `dev` leaves in `$HOME/.ferrisdb/dev-credentials` (private); another user (here:
/// another home) does not, and is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_finds_its_users_dev_credential_and_nobody_elses() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let stranger = dir.path().join("stranger");
    let elsewhere = dir.path().join("elsewhere");
    for d in [&home, &stranger, &elsewhere] {
        std::fs::create_dir_all(d).unwrap();
    }
    let home_str = home.display().to_string();
    let cluster = DevCluster::start_with_env(
        &dir.path().join("data"),
        &[],
        &[("HOME", home_str.as_str())],
    )
    .await;
    let registry = home.join(".ferrisdb").join("dev-credentials");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&registry), 0o700);
    let admin = cluster.admin_endpoint();
    let port = admin.rsplit(':').next().unwrap().trim_end_matches('/');
    assert_eq!(mode(&registry.join(port)), 0o600);

    let checkpoint = |home: &std::path::Path| {
        Command::new(BIN)
            .args(["admin", "checkpoint", "--endpoint", &admin, "--json"])
            .current_dir(&elsewhere)
            .env("HOME", home)
            .env_remove("FERRISDB_ADMIN_TOKEN")
            .env_remove("FERRISDB_ADMIN_TOKEN_FILE")
            .output()
            .unwrap()
    };
    let mine = checkpoint(&home);
    assert!(
        mine.status.success(),
        "the cluster's user: {}",
        String::from_utf8_lossy(&mine.stderr)
    );
    let theirs = checkpoint(&stranger);
    assert!(!theirs.status.success(), "a stranger checkpointed");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&theirs.stdout),
        String::from_utf8_lossy(&theirs.stderr)
    );
    assert!(said.contains("unauthenticated"), "{said}");

    // A pointer outlives what listened on its port (here the compute, killed; a compute
    // suspended by scale to zero leaves its admin port free the same way). Whoever listens
    // there next — a squatter that relays the identity challenge to a live process of the
    // same cluster, which holds the same credential — does not receive the credential: the
    // live process proves its own port, the proof does not match, the CLI refuses.
    let token = std::fs::read_to_string(cluster.data_dir.join("cluster.token")).unwrap();
    let token = token.trim().to_string();
    let safekeeper_admin = cluster.component("safekeeper-1").http;
    DevCluster::kill_pid(cluster.component("compute").pid);
    let addr: std::net::SocketAddr = admin
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let squatter = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut conn, _)) = squatter.accept().await {
            let mut head = vec![0u8; 16 << 10];
            let n = conn.read(&mut head).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&head[..n]).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let body = if path.starts_with("/v1/identity") {
                reqwest::get(format!("{safekeeper_admin}{path}"))
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
            } else {
                "{}".to_string()
            };
            let _ = seen_tx.send(head);
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    });
    let out = Command::new(BIN)
        .args(["admin", "status", "--endpoint", &admin, "--json"])
        .current_dir(&elsewhere)
        .env("HOME", &home)
        .env_remove("FERRISDB_ADMIN_TOKEN")
        .env_remove("FERRISDB_ADMIN_TOKEN_FILE")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !out.status.success(),
        "the CLI took the squatter's answer: {said}"
    );
    assert!(
        said.contains("unauthenticated") && said.contains("did not prove"),
        "{said}"
    );
    let mut requests = Vec::new();
    while let Ok(r) = seen.try_recv() {
        requests.push(r);
    }
    assert!(
        requests.iter().any(|r| r.contains("/v1/identity")),
        "the CLI never asked for a proof: {requests:?}"
    );
    assert!(
        !requests.iter().any(|r| r.contains(&token)),
        "the credential reached the squatter: {requests:?}"
    );

    // And `dev` stopped cleanly takes its pointers with it.
    let mut cluster = cluster;
    cluster.stop();
    assert!(
        !registry.join(port).exists(),
        "a pointer outlived the cluster that left it"
    );
}

/// TLS material is checked when the process starts, naming the files: a key that does not
/// match its certificate is refused before anything listens (it used to log "serving" and
/// then exit with "TLS identity: transport error"), and a key others may read is warned about,
/// as is an expired certificate.
#[test]
fn tls_material_is_checked_at_start_naming_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let one = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let two = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.path().join("one.pem");
    let key = dir.path().join("two.key");
    std::fs::write(&cert, one.cert.pem()).unwrap();
    std::fs::write(&key, two.signing_key.serialize_pem()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let port = support::free_base_port();
    let (grpc, http) = (
        format!("127.0.0.1:{port}"),
        format!("127.0.0.1:{}", port + 80),
    );
    let data = dir.path().join("sk");
    let args = [
        "safekeeper",
        "--listen-grpc",
        &grpc,
        "--listen-http",
        &http,
        "--data-dir",
        data.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let (exited, log) = run_for(&args, Duration::from_secs(20), &dir.path().join("sk.log"));
    assert_eq!(exited, Some(false), "{log}");
    assert!(
        log.contains("invalid_argument")
            && log.contains(cert.to_str().unwrap())
            && log.contains(key.to_str().unwrap()),
        "{log}"
    );
    assert!(
        !log.contains("serving"),
        "it listened before refusing: {log}"
    );
    assert!(log.contains("may be read by group or others"), "{log}");

    // An expired certificate: the server starts (a renewal may be on its way) and says so.
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired_key = rcgen::KeyPair::generate().unwrap();
    let expired = params.self_signed(&expired_key).unwrap();
    std::fs::write(&cert, expired.pem()).unwrap();
    std::fs::write(&key, expired_key.serialize_pem()).unwrap();
    let (exited, log) = run_for(&args, Duration::from_secs(3), &dir.path().join("sk2.log"));
    assert_eq!(exited, None, "it stopped: {log}");
    assert!(
        log.contains("the TLS certificate expired at 2021-01-01T00:00:00Z"),
        "{log}"
    );
}

/// Connections that never send a byte, or send their opening a byte a second, are closed by
/// every listener (gRPC and admin, of the compute, the pageserver and a safekeeper) once the
/// handshake deadline has passed, and clients are served meanwhile. They were kept for good:
/// ~20,000 of them took every descriptor of a compute (an outside audit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_speak_are_closed_on_every_listener() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let db = cluster.db(Duration::from_secs(30)).await;
    let mut listeners = Vec::new();
    for name in ["compute", "pageserver", "safekeeper-1"] {
        let c = cluster.component(name);
        listeners.push((
            format!("{name} gRPC"),
            c.grpc.clone(),
            &b"PRI * HTTP/2.0"[..],
        ));
        listeners.push((
            format!("{name} admin"),
            c.http.clone(),
            &b"GET /v1/status"[..],
        ));
    }
    let started = Instant::now();
    let mut silent = Vec::new();
    let mut slow = Vec::new();
    for (what, url, opening) in &listeners {
        let addr = url.trim_start_matches("http://").to_string();
        for _ in 0..10 {
            silent.push((
                what.clone(),
                tokio::net::TcpStream::connect(&addr).await.unwrap(),
            ));
        }
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (what, opening) = (what.clone(), opening.to_vec());
        slow.push(tokio::spawn(async move {
            // One byte a second: never the whole opening within the deadline.
            for b in opening {
                if conn.write_all(&[b]).await.is_err() {
                    return (what, started.elapsed());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let mut buf = [0u8; 64];
            let closed = tokio::time::timeout(Duration::from_secs(30), conn.read(&mut buf)).await;
            assert!(
                matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
                "{what}: a byte-a-second opening was kept: {closed:?}"
            );
            (what, started.elapsed())
        }));
    }
    // Clients are served meanwhile.
    for i in 0..10 {
        db.run(|tx| async move {
            tx.set(format!("k{i}"), "v");
            Ok(())
        })
        .await
        .unwrap();
    }
    let status = support::status(&cluster.component("compute").http).await;
    assert!(status.is_some(), "the compute's admin API answers");
    for (what, mut conn) in silent {
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(30), conn.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "{what}: a silent connection was kept: {closed:?}"
        );
    }
    let silent_closed = started.elapsed();
    for s in slow {
        let (what, at) = s.await.unwrap();
        assert!(
            at < Duration::from_secs(40),
            "{what}: closed only after {at:?}"
        );
    }
    eprintln!("silent connections closed after {silent_closed:?}");
    let v = db
        .run(|tx| async move { tx.get("k9").await })
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some(&b"v"[..]));
}
