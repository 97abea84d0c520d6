//! Every bad input gets a FerrisDB code, on a running `ferrisdb dev`: malformed admin
//! requests on every process's admin API answer JSON errors with 4xx statuses; undecodable
//! protobuf is `invalid_argument` on every gRPC server; a huge database name comes back as a
//! short message, not a transport error; a history key that is not UTF-8 is refused; the CLI
//! exits with an error code (never a panic) on hostile arguments; branches stop at
//! `--max-branches`; cached values live in private directories.

#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use ferrisdb_common::proto::GetReadVersionRequest;
use ferrisdb_common::proto::database_client::DatabaseClient;
use support::{BIN, DevCluster, cli, eventually};
use tonic::codec::{DecodeBuf, EncodeBuf};
use tonic::codegen::http::uri::PathAndQuery;

/// Sends raw bytes as the message of a gRPC call: what a broken or hostile client can do.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

/// Calls `path` on `url` with `body` as the (undecodable) message.
async fn raw_call(url: &str, path: &'static str, body: &[u8]) -> tonic::Status {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    // Internal APIs check the cluster credential before decoding: send it, so what is
    // tested is the decoder.
    let mut request = tonic::Request::new(body.to_vec());
    if let Some(token) = support::admin_token(url) {
        request.metadata_mut().insert(
            ferrisdb_common::net::CLUSTER_TOKEN_HEADER,
            token.parse().unwrap(),
        );
    }
    grpc.unary(request, PathAndQuery::from_static(path), RawCodec)
        .await
        .expect_err("garbage must not decode")
}

fn code_of(status: &tonic::Status) -> String {
    status
        .metadata()
        .get(ferrisdb_common::error::CODE_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn url(addr: &str) -> String {
    if addr.starts_with("http") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// Sends one admin request; returns the status and the JSON body (asserting it is JSON).
async fn admin(
    method: reqwest::Method,
    url: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new().request(method, url);
    // With the admin credential, so what is tested is the input, not the auth check.
    if let Some(token) = support::admin_token(url) {
        req = req.bearer_auth(token);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if !body.is_empty() {
        req = req.body(body.to_string());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = r.text().await.unwrap();
    assert!(
        ctype.starts_with("application/json"),
        "{url}: {status} {ctype}: {text}"
    );
    (status, serde_json::from_str(&text).unwrap())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Asserts `dir` is 0700 and holds files, all 0600.
fn assert_private(dir: &Path) {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    assert!(!files.is_empty(), "no cache files in {}", dir.display());
    for f in files {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_a_ferrisdb_code() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let db = cluster.db(Duration::from_secs(10)).await;
    db.run(|tx| async move {
        tx.set("canary", "alive");
        Ok(())
    })
    .await
    .unwrap();
    let compute_http = cluster.admin_endpoint();
    let pageserver = cluster
        .components()
        .into_iter()
        .find(|c| c.kind == "pageserver")
        .unwrap();
    let safekeepers: Vec<_> = cluster
        .components()
        .into_iter()
        .filter(|c| c.kind == "safekeeper")
        .collect();
    assert_eq!(safekeepers.len(), 3);

    // Admin APIs: malformed bodies, query strings, content types, routes and methods.
    use reqwest::Method;
    let json = Some("application/json");
    let ps_http = url(&pageserver.http);
    let mut cases = vec![
        (
            Method::POST,
            format!("{compute_http}/v1/branch"),
            json,
            "{not json",
            400,
        ),
        (
            Method::POST,
            format!("{compute_http}/v1/branch"),
            json,
            "{\"nome\": 1}",
            422,
        ),
        // A misspelt field is refused, not ignored: ignored, `at_version` branched at the
        // latest commit.
        (
            Method::POST,
            format!("{compute_http}/v1/branch"),
            json,
            "{\"name\": \"b\", \"at_version\": 0}",
            422,
        ),
        (
            Method::POST,
            format!("{ps_http}/v1/databases/x/branch"),
            json,
            "{\"parent\": \"default\", \"versoin\": 0}",
            422,
        ),
        (
            Method::POST,
            format!("{compute_http}/v1/branch"),
            Some("text/plain"),
            "{\"name\": \"b\"}",
            415,
        ),
        (
            Method::POST,
            format!("{compute_http}/v1/branch"),
            None,
            "",
            415,
        ),
        (
            Method::GET,
            format!("{compute_http}/v1/version_at?timestamp_micros=soon"),
            None,
            "",
            400,
        ),
        (
            Method::GET,
            format!("{compute_http}/v1/version_at"),
            None,
            "",
            400,
        ),
        (
            Method::GET,
            format!("{compute_http}/v1/history?key=%FF"),
            None,
            "",
            400,
        ),
        (
            Method::GET,
            format!("{compute_http}/v1/history?key=a%C3"),
            None,
            "",
            400,
        ),
        (
            Method::GET,
            format!("{compute_http}/v1/no-such-route"),
            None,
            "",
            404,
        ),
        (
            Method::DELETE,
            format!("{compute_http}/v1/status"),
            None,
            "",
            405,
        ),
        (
            Method::POST,
            format!("{ps_http}/v1/databases/x/branch"),
            json,
            "{\"parent\": ",
            400,
        ),
        (
            Method::POST,
            format!("{ps_http}/v1/databases/x/branch"),
            Some("application/xml"),
            "<a/>",
            415,
        ),
        (
            Method::POST,
            format!("{ps_http}/v1/databases/default/checkpoint?wait_for_version=-1"),
            None,
            "",
            400,
        ),
        (
            Method::GET,
            format!("{ps_http}/v1/databases/default/checkpoint"),
            None,
            "",
            405,
        ),
        (Method::GET, format!("{ps_http}/nowhere"), None, "", 404),
        // A database named where the route does not read it, or a misspelt parameter, is
        // refused rather than ignored: ignored, the call acted on the compute's own database
        // (an outside audit's finding).
        (
            Method::POST,
            format!("{compute_http}/v1/gc"),
            json,
            "{\"database\": \"nosuch\"}",
            400,
        ),
        (
            Method::POST,
            format!("{compute_http}/v1/checkpoint?databse=nosuch"),
            None,
            "",
            400,
        ),
        (
            Method::POST,
            format!("{compute_http}/v1/compact?database=default&x=1"),
            None,
            "",
            400,
        ),
        (
            Method::GET,
            format!("{compute_http}/v1/history?key=canary&databse=nosuch"),
            None,
            "",
            400,
        ),
        (
            Method::POST,
            format!("{ps_http}/v1/databases/default/gc?database=nosuch"),
            None,
            "",
            400,
        ),
        (
            Method::POST,
            format!("{ps_http}/v1/databases/default/compact"),
            json,
            "{\"database\": \"nosuch\"}",
            400,
        ),
        (
            Method::POST,
            format!("{ps_http}/v1/databases/default/checkpoint?wait=1"),
            None,
            "",
            400,
        ),
    ];
    for sk in &safekeepers {
        let sk_http = url(&sk.http);
        cases.push((Method::GET, format!("{sk_http}/v1/nope"), None, "", 404));
        cases.push((Method::PUT, format!("{sk_http}/v1/status"), json, "{}", 405));
        cases.push((
            Method::GET,
            format!("{sk_http}/v1/status?x=%FF%FE"),
            None,
            "",
            400,
        ));
    }
    for (method, u, ctype, body, want) in cases {
        let (status, v) = admin(method.clone(), &u, ctype, body).await;
        assert_eq!(status, want, "{method} {u} {body:?}: {v}");
        assert_eq!(v["error"]["code"], "invalid_argument", "{method} {u}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    // What is valid still works: maintenance with the database in the query, or none.
    for u in [
        format!("{compute_http}/v1/gc"),
        format!("{compute_http}/v1/compact?database=default"),
        format!("{ps_http}/v1/databases/default/gc"),
    ] {
        let (status, v) = admin(Method::POST, &u, None, "").await;
        assert_eq!(status, 200, "{u}: {v}");
        assert_eq!(v["database"], "default", "{u}: {v}");
    }
    // A UTF-8 key's history.
    let (status, v) = admin(
        Method::GET,
        &format!("{compute_http}/v1/history?key=canary"),
        None,
        "",
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["versions"][0]["value"], "alive");

    // Undecodable protobuf on every gRPC server: invalid_argument, not INTERNAL.
    let garbage: [&[u8]; 2] = [b"\x0a\xff\xff\xff\xff\x0f", &[0xff; 11]];
    let targets = [
        (cluster.endpoint(), "/ferrisdb.v1.Database/Get"),
        (cluster.endpoint(), "/ferrisdb.v1.Database/Commit"),
        (url(&pageserver.grpc), "/ferrisdb.v1.Pageserver/GetStatus"),
        (
            url(&safekeepers[0].grpc),
            "/ferrisdb.v1.Safekeeper/GetStatus",
        ),
    ];
    for (ep, path) in targets {
        for body in garbage {
            let status = raw_call(&ep, path, body).await;
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{path}: {status:?}"
            );
            assert_eq!(code_of(&status), "invalid_argument", "{path}: {status:?}");
        }
    }

    // A huge database name: a short, coded answer, not a transport error; a name no database
    // can have is bad input (`invalid_argument`), not a database the compute lacks.
    let huge = "d".repeat(200_000);
    let mut client = DatabaseClient::connect(cluster.endpoint()).await.unwrap();
    let status = client
        .get_read_version(GetReadVersionRequest {
            database: huge.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&status), "invalid_argument", "{status:?}");
    assert!(status.message().len() < 512, "{}", status.message().len());
    let (status, v) = admin(
        Method::POST,
        // (A URL is at most 64 KiB; this is still far past any header a server keeps.)
        &format!("{compute_http}/v1/checkpoint?database={}", &huge[..30_000]),
        None,
        "",
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_argument");
    assert!(v["error"]["message"].as_str().unwrap().len() < 512);
    let (status, v) = admin(
        Method::GET,
        &format!("{compute_http}/v1/version_at?timestamp_micros=1&database=bad%20name"),
        None,
        "",
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_argument");
    let (status, v) = admin(
        Method::POST,
        &format!("{compute_http}/v1/branch"),
        json,
        &serde_json::json!({ "name": huge }).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_argument");
    assert!(v["error"]["message"].as_str().unwrap().len() < 512);

    // The CLI on hostile arguments against the live cluster: errors, never a panic (101).
    let ep = cluster.endpoint();
    let (ok, out, err) = cli(&[
        "versionat",
        "18446744073709551615",
        "--json",
        "--endpoint",
        &ep,
    ]);
    // The largest timestamp is far ahead of any clock: a coded answer, not a version.
    assert!(!ok, "{out} {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["error"]["code"], "future_version", "{v}");
    for args in [
        vec!["versionat", "18446744073709551615", "--endpoint", &ep],
        vec![
            "history",
            "canary",
            "--from",
            "18446744073709551615",
            "--endpoint",
            &ep,
        ],
        vec![
            "get",
            "canary",
            "--at-version",
            "18446744073709551615",
            "--endpoint",
            &ep,
        ],
        vec![
            "getkey",
            "canary",
            "--offset",
            "2147483647",
            "--selector",
            "gt",
            "--endpoint",
            &ep,
        ],
        vec![
            "getkey",
            "canary",
            "--offset=-2147483648",
            "--endpoint",
            &ep,
        ],
        vec!["scan", "\\xff", "", "--endpoint", &ep],
        vec![
            "changes",
            "--from",
            "18446744073709551615",
            "--endpoint",
            &ep,
        ],
        vec![
            "get",
            "canary",
            "--database",
            &huge[..30_000],
            "--endpoint",
            &ep,
        ],
        vec![
            "admin",
            "checkpoint",
            "--database",
            "a&b=c",
            "--endpoint",
            &compute_http,
        ],
        vec![
            "admin",
            "branch",
            "b",
            "--at-timestamp",
            "99999-01-01",
            "--endpoint",
            &compute_http,
        ],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert_ne!(out.status.code(), Some(101), "{args:?} panicked: {out:?}");
        assert!(out.status.code().is_some(), "{args:?} died by a signal");
    }

    // Cached values: dev's warm tier directory is private.
    assert_private(&cluster.data_dir.join("compute-cache"));

    // Without --warm-tier-dir: a private, unpredictable directory under TMPDIR, removed at
    // exit. A replica on other ports, so the primary keeps serving.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let base = support::free_base_port();
    let mut argv = cluster.component("compute").argv;
    let at = argv.iter().position(|a| a == "--warm-tier-dir").unwrap();
    argv.drain(at..at + 2);
    for (flag, port) in [("--listen-grpc", base), ("--listen-http", base + 80)] {
        let i = argv.iter().position(|a| a == flag).unwrap();
        argv[i + 1] = format!("127.0.0.1:{port}");
    }
    argv.extend(["--replica".into(), "--primary-endpoint".into(), ep.clone()]);
    let mut replica = Command::new(&argv[0])
        .args(&argv[1..])
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("replica.log")).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let warm_dir = || {
        std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("ferrisdb-warm-tier-")
            })
    };
    eventually(
        Duration::from_secs(30),
        "the replica's warm tier",
        || async { warm_dir().is_some_and(|d| std::fs::read_dir(d).unwrap().count() > 0) },
    )
    .await;
    let private = warm_dir().unwrap();
    let name = private.file_name().unwrap().to_string_lossy().to_string();
    assert_ne!(
        name,
        format!("ferrisdb-warm-tier-{base}"),
        "a predictable name"
    );
    assert_private(&private);
    // Stopped once serving (its signal handler is in place): it cleans up after itself.
    let healthz = format!("http://127.0.0.1:{}/healthz", base + 80);
    eventually(
        Duration::from_secs(30),
        "the replica's admin API",
        || async {
            reqwest::get(&healthz)
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(replica.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = replica.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the replica did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        warm_dir().is_none(),
        "the private directory outlived the compute ({exit:?}): {}",
        std::fs::read_to_string(dir.path().join("replica.log")).unwrap()
    );

    // Branches stop at --max-branches, with `limit_exceeded` (429) through the compute.
    let ps = cluster.component("pageserver");
    DevCluster::kill_pid(ps.pid);
    let mut argv = ps.argv.clone();
    argv.extend(["--max-branches".to_string(), "1".to_string()]);
    cluster.spawn_argv("pageserver", &argv);
    let branch = |name: &'static str| {
        let http = compute_http.clone();
        async move { cli(&["admin", "branch", name, "--json", "--endpoint", &http]) }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out, err) = branch("first").await;
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no branch after the restart: {out} {err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok, out, _) = branch("second").await;
    assert!(!ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["error"]["code"], "limit_exceeded", "{v}");
    let (status, v) = admin(
        Method::POST,
        &format!("{compute_http}/v1/branch"),
        json,
        "{\"name\": \"third\"}",
    )
    .await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["code"], "limit_exceeded");

    // None of it hurt the data.
    let value = db
        .run(|tx| async move { tx.get("canary").await })
        .await
        .unwrap();
    assert_eq!(value.as_deref(), Some(&b"alive"[..]));
    cluster.stop();
}

/// Arguments that panicked or could: each must end in an error exit, never 101 (a panic).
#[test]
fn hostile_arguments_never_panic_the_cli() {
    // Nothing listens here: commands that get past parsing fail fast with `unavailable`.
    let dead = format!("http://127.0.0.1:{}", support::free_base_port());
    let long = "k".repeat(100_000);
    let cases: Vec<Vec<&str>> = vec![
        vec!["get", "k", "--timeout", "inf"],
        vec!["get", "k", "--timeout", "NaN"],
        vec!["get", "k", "--timeout", "1e309"],
        vec!["get", "k", "--timeout=-1"],
        vec!["get", "k", "--timeout", "99999999999999999999"],
        vec!["get", "k", "--at-version", "18446744073709551616"],
        vec!["get", "k", "--at-timestamp", "99999-99-99T99:99:99Z"],
        vec!["get", "k", "--at-timestamp", "-1"],
        vec!["versionat", "18446744073709551616"],
        vec!["versionat", "9999-12-31T23:59:60Z"],
        vec!["get", "\\x"],
        vec!["get", "\\xzz"],
        vec!["get", "zz", "--hex"],
        vec!["get", "abc", "--hex"],
        vec!["get", &long],
        vec!["atomic", "add", "k", "99999999999999999999", "--i64"],
        vec![
            "atomic",
            "set_versionstamped_key",
            "k",
            "v",
            "--stamp-offset",
            "4294967296",
        ],
        vec![
            "atomic",
            "set_versionstamped_key",
            "k",
            "v",
            "--stamp-offset",
            "4294967295",
        ],
        vec![
            "atomic",
            "set_versionstamped_value",
            "k",
            "",
            "--stamp-offset",
            "end",
        ],
        vec!["atomic", "no_such_op", "k", "v"],
        vec!["getkey", "k", "--offset", "2147483648"],
        vec!["scan", "a", "b", "--limit", "18446744073709551616"],
        vec!["changes", "--limit", "-1"],
        vec!["admin", "branch", "b", "--at-timestamp", "not a time"],
        vec!["admin", "checkpoint", "--database", "../../etc"],
        vec!["get", "k", "--endpoint", "not a url"],
        vec!["get", "k", "--endpoint", "http://[::1"],
        vec!["get", "k", "--database", ""],
        vec!["get", "k", "--token", "bad\ntoken"],
    ];
    for args in cases {
        let mut all = args.clone();
        if !args.contains(&"--endpoint") && args[0] != "admin" {
            all.extend(["--endpoint", &dead]);
        }
        if !args.iter().any(|a| a.starts_with("--timeout")) && args[0] != "admin" {
            all.extend(["--timeout", "0.2"]);
        }
        if args[0] == "admin" {
            all.extend(["--endpoint", &dead]);
        }
        let out = Command::new(BIN).args(&all).output().unwrap();
        let code = out.status.code();
        assert_ne!(code, Some(101), "{args:?} panicked: {out:?}");
        assert!(
            matches!(code, Some(1) | Some(2)),
            "{args:?}: {code:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
