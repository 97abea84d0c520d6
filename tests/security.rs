//! TLS and bearer tokens on the compute, and the SDK's endpoint list: a compute started with
//! `--tls-cert/--tls-key --token` serves an SDK that trusts its CA and sends the token, and
//! refuses everyone else with a clear code; its admin API wants the token too (but not
//! `/healthz`); a dead endpoint first in the list is skipped.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use ferrisdb_client::{ClientTls, ConnectOptions, Database, ErrorKind, RetryOptions};
use support::DevCluster;

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
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert_file, &cert_pem).unwrap();
    std::fs::write(&key_file, &key_pem).unwrap();
    let compute = cluster.component("compute");
    DevCluster::kill_pid(compute.pid);
    let mut argv = compute.argv.clone();
    argv.extend([
        "--tls-cert".to_string(),
        cert_file.display().to_string(),
        "--tls-key".to_string(),
        key_file.display().to_string(),
        "--token".to_string(),
        TOKEN.to_string(),
    ]);
    cluster.spawn_argv("compute", &argv);

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

    // The admin API wants the token too, except for /healthz.
    let http = reqwest::Client::new();
    let admin = cluster.admin_endpoint();
    let r = http.get(format!("{admin}/v1/status")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");
    let r = http
        .get(format!("{admin}/v1/status"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http.get(format!("{admin}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

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
}
