//! FerrisDB at FoundationDB's limits (issue 14), on a real `ferrisdb dev`: transactions near
//! the 10 MB limit pass every hop (primary, replica, pageserver after a checkpoint, range reads
//! of the largest values, history, change feed) and the database keeps committing; the
//! 5-second rule on an idle cluster; FoundationDB's rules for oversize keys and system keys;
//! the versionstamp phantom; a read version from the future.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use ferrisdb_client::{AtomicOp, Database, ErrorKind, Mutation, RangeOptions, Version};
use ferrisdb_common::limits::{KEY_OUTSIDE_LEGAL_RANGE, MAX_KEY_SIZE, MAX_VALUE_SIZE};
use ferrisdb_common::message_size::REPLY_TARGET_BYTES;
use ferrisdb_common::proto::database_client::DatabaseClient;
use ferrisdb_common::proto::pageserver_client::PageserverClient;
use ferrisdb_common::proto::{
    ChangesRequest, GetRangeRequest, HistoryRequest, PageGetRangeRequest, PageGetRequest,
};
use futures::StreamExt;
use prost::Message;
use support::{DevCluster, cli, eventually};

fn value(key: &str) -> Bytes {
    let seed = key
        .bytes()
        .fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    Bytes::from(
        (0..MAX_VALUE_SIZE)
            .map(|i| seed.wrapping_add(i as u8))
            .collect::<Vec<u8>>(),
    )
}

/// `rows` (in key order) as a range read with `limit` (0: none) and `reverse` answers them.
fn scan_order(mut rows: Vec<(Bytes, Bytes)>, limit: usize, reverse: bool) -> Vec<(Bytes, Bytes)> {
    if reverse {
        rows.reverse();
    }
    if limit > 0 {
        rows.truncate(limit);
    }
    rows
}

/// Commits `n` values of 100 kB under `prefix`; returns the keys and the commit version.
async fn commit_values(db: &Database, prefix: &str, n: usize) -> (Vec<String>, Version) {
    let keys: Vec<String> = (0..n).map(|i| format!("{prefix}/{i:03}")).collect();
    let tx = db.create_transaction();
    for k in &keys {
        tx.set(k.clone(), value(k));
    }
    let v = tx.commit().await.unwrap();
    (keys, v)
}

/// A second compute of the dev cluster's, as a read replica on a fresh port block.
fn spawn_replica(cluster: &mut DevCluster) -> String {
    let base = support::free_base_port();
    let mut args = cluster.component("compute").compute_args();
    args.listen_grpc = format!("127.0.0.1:{base}").parse().unwrap();
    args.listen_http = format!("127.0.0.1:{}", base + 80).parse().unwrap();
    args.warm_tier_dir = Some(cluster.data_dir.join("replica-cache"));
    args.replica = true;
    args.primary_endpoints = vec![cluster.endpoint()];
    let argv = support::compute_argv(&args);
    cluster.spawn_argv("replica", &argv);
    format!("http://127.0.0.1:{base}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_near_the_limit_pass_every_hop() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let db = cluster.db(Duration::from_secs(30)).await;
    let first = db.create_transaction().read_version().await.unwrap();

    // 9.9 MB in one transaction: 99 values of 100 kB.
    let (mut keys, _) = commit_values(&db, "big", 99).await;
    // Sixteen 2 MB transactions at once: they batch together, past what one 4 MiB message
    // would carry.
    let handles: Vec<_> = (0..16)
        .map(|t| {
            let db = db.clone();
            tokio::spawn(async move { commit_values(&db, &format!("c{t:02}"), 20).await })
        })
        .collect();
    let mut last = Version(0);
    for h in handles {
        let (k, v) = h.await.unwrap();
        keys.extend(k);
        last = last.max(v);
    }
    // And the database keeps committing.
    let tx = db.create_transaction();
    tx.set("small", "1");
    let last = tx.commit().await.unwrap().max(last);

    // The primary.
    for k in &keys {
        let got = db.create_transaction().get(k.clone()).await.unwrap();
        assert_eq!(got, Some(value(k)), "primary: {k}");
    }

    // A replica, once it has caught up.
    let replica = Database::connect(&spawn_replica(&mut cluster))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "the replica catches up",
        || async {
            match replica.create_transaction().read_version().await {
                Ok(v) => v >= last,
                Err(_) => false,
            }
        },
    )
    .await;
    for k in &keys {
        let got = replica.create_transaction().get(k.clone()).await.unwrap();
        assert_eq!(got, Some(value(k)), "replica: {k}");
    }

    // The pageserver, after a checkpoint, asked directly.
    let (ok, out, err) = cli(&[
        "admin",
        "checkpoint",
        "--endpoint",
        &cluster.admin_endpoint(),
        "--json",
    ]);
    assert!(ok, "checkpoint: {out} {err}");
    let mut grpc = cluster.component("pageserver").grpc;
    if !grpc.starts_with("http") {
        grpc = format!("http://{grpc}");
    }
    let mut pageserver = ferrisdb_common::with_message_limits!(PageserverClient::new(
        support::internal_channel(&grpc)
    ));
    for k in &keys {
        let req = PageGetRequest {
            database: "default".to_string(),
            key: Bytes::from(k.clone()),
            version: last.0,
        };
        let got = pageserver.get(req).await.unwrap().into_inner().value;
        assert_eq!(got, Some(value(k)), "pageserver: {k}");
    }

    // Range reads of the largest values, from the pageserver: a read ahead capped in bytes
    // stops at the rows it must hold (with `more`), an uncapped one returns its whole limit.
    let big: Vec<&String> = keys.iter().filter(|k| k.starts_with("big/")).collect();
    for (limit, target_bytes, min_rows, want_rows) in [(65, 32 << 10, 2, 2), (65, 0, 0, 65)] {
        let req = PageGetRangeRequest {
            database: "default".to_string(),
            begin: Bytes::from_static(b"big/"),
            end: Bytes::from_static(b"big0"),
            version: last.0,
            limit,
            reverse: false,
            target_bytes,
            min_rows,
        };
        let got = pageserver.get_range(req).await.unwrap().into_inner();
        assert!(got.more, "cap {target_bytes}");
        let got: Vec<_> = got.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
        let want: Vec<_> = big[..want_rows]
            .iter()
            .map(|k| (Bytes::from((*k).clone()), value(k)))
            .collect();
        assert!(got == want, "pageserver range, cap {target_bytes}");
    }
    // And through the primary, short scans from both ends and the whole range.
    for (limit, reverse) in [(1, false), (3, false), (1, true), (2, true), (0, false)] {
        let opts = RangeOptions {
            limit,
            reverse,
            ..RangeOptions::default()
        };
        let got = db
            .create_transaction()
            .get_range_opts("big/", "big0", opts)
            .await
            .unwrap();
        let all: Vec<_> = big
            .iter()
            .map(|k| (Bytes::from((*k).clone()), value(k)))
            .collect();
        let want = scan_order(all, limit, reverse);
        assert!(
            got == want,
            "primary range, limit {limit} reverse {reverse}"
        );
    }

    // Answers that could grow without bound come in pages that stop at a byte target, so
    // no answer outgrows what a hop carries (one 10 MB commit record, a range of 10 MB
    // or a key's history of 4.5 MB, here; sums past 64 MiB were unreadable): the raw
    // protocol says more follow, and the SDK reads on to the whole answer.
    let mut raw = ferrisdb_common::with_message_limits!(DatabaseClient::new(
        ferrisdb_common::net::channel(&cluster.endpoint()).unwrap()
    ));
    let ranges = raw.clone();
    let first_page = move |begin: &'static [u8], end: &'static [u8]| {
        let mut raw = ranges.clone();
        async move {
            let req = GetRangeRequest {
                database: "default".into(),
                begin: Bytes::from_static(begin),
                end: Bytes::from_static(end),
                version: 0,
                limit: 0,
                reverse: false,
                latest: true,
            };
            raw.get_range(req).await.unwrap().into_inner()
        }
    };
    let page = first_page(b"big/", b"big0").await;
    assert!(
        page.more && !page.kvs.is_empty() && page.kvs.len() < big.len(),
        "one page of the whole range: {} rows, more {}",
        page.kvs.len(),
        page.more
    );
    let versions: Vec<Bytes> = (0..45u32).map(|i| value(&format!("h{i}"))).collect();
    let mut written = Vec::new();
    for v in &versions {
        let tx = db.create_transaction();
        tx.set("hist", v.clone());
        written.push(tx.commit().await.unwrap());
    }
    let page = raw
        .history(HistoryRequest {
            database: "default".into(),
            key: Bytes::from_static(b"hist"),
            from_version: 0,
            to_version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        page.more && page.entries.len() < versions.len(),
        "one page of history"
    );
    // Every page of rows fits the 4 MiB a gRPC client built from the protos accepts by
    // default (an outside audit's client refused a 4.06 MiB page of history).
    let default_limit = ferrisdb_common::message_size::GRPC_DEFAULT_RECEIVE_BYTES;
    assert!(page.encoded_len() < default_limit, "{}", page.encoded_len());
    let range_page = first_page(b"big/", b"big0").await;
    assert!(
        range_page.encoded_len() < default_limit,
        "{}",
        range_page.encoded_len()
    );
    let h = db.history("hist", Version(0), Version(0)).await.unwrap();
    let got: Vec<(Version, Option<Bytes>)> = h.into_iter().map(|e| (e.version, e.value)).collect();
    let want: Vec<(Version, Option<Bytes>)> = written
        .iter()
        .zip(&versions)
        .map(|(v, value)| (*v, Some(value.clone())))
        .collect();
    assert!(
        got == want,
        "history of 45 versions of 100 kB: {} entries",
        got.len()
    );
    // The largest keys: pages counted in keys and values both (60 keys of 10,000 bytes with
    // 100 kB values, 6.6 MB: two pages at least), read whole forwards and backwards and with a
    // limit, and a 10,000-byte key's history over pages. Empty and inverted ranges read
    // nothing, and `scan` says so rather than failing.
    let long_key = |i: u8| {
        let mut k = vec![b'L'; MAX_KEY_SIZE];
        k[MAX_KEY_SIZE - 1] = i;
        Bytes::from(k)
    };
    let long_value = |i: u8| Bytes::from(vec![i; MAX_VALUE_SIZE]);
    let tx = db.create_transaction();
    for i in 0..60u8 {
        tx.set(long_key(i), long_value(i));
    }
    tx.commit().await.unwrap();
    let (lo, hi) = (Bytes::from_static(b"L"), Bytes::from_static(b"M"));
    let page = first_page(b"L", b"M").await;
    assert!(page.more && page.kvs.len() < 60, "{} rows", page.kvs.len());
    let want: Vec<(Bytes, Bytes)> = (0..60u8).map(|i| (long_key(i), long_value(i))).collect();
    for (limit, reverse) in [(0, false), (0, true), (50, false), (50, true)] {
        let opts = RangeOptions {
            limit,
            reverse,
            ..RangeOptions::default()
        };
        let got = db
            .create_transaction()
            .get_range_opts(lo.clone(), hi.clone(), opts)
            .await
            .unwrap();
        let want = scan_order(want.clone(), limit, reverse);
        assert!(
            got == want,
            "largest keys, limit {limit} reverse {reverse}: {} rows",
            got.len()
        );
    }
    let tx = db.create_transaction();
    for (b, e) in [(&lo, &lo), (&hi, &lo)] {
        let got = tx.get_range(b.clone(), e.clone(), 0).await.unwrap();
        assert!(got.is_empty(), "{b:?}..{e:?}");
    }
    let (ok, out, err) = cli(&[
        "scan",
        "M",
        "L",
        "--endpoint",
        &cluster.endpoint(),
        "--json",
    ]);
    assert!(ok, "an inverted scan: {out} {err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["rows"],
        serde_json::json!([])
    );
    let mut written = Vec::new();
    for i in 0..45u8 {
        let tx = db.create_transaction();
        tx.set(long_key(200), long_value(i));
        written.push((tx.commit().await.unwrap(), Some(long_value(i))));
    }
    let h = db
        .history(long_key(200), Version(0), Version(0))
        .await
        .unwrap();
    let got: Vec<(Version, Option<Bytes>)> = h.into_iter().map(|e| (e.version, e.value)).collect();
    assert!(
        got == written,
        "a long key's history: {} entries",
        got.len()
    );

    for k in keys.iter().step_by(7) {
        let h = db.history(k.clone(), Version(0), Version(0)).await.unwrap();
        assert_eq!(h.len(), 1, "{k}");
        assert_eq!(h[0].value, Some(value(k)), "history: {k}");
    }

    // The change feed: each batch stops growing at the target, so a batch holds at most one
    // record past it; through the SDK, every record arrives.
    let mut batches = raw
        .changes(ChangesRequest {
            database: "default".into(),
            from_version: first.0,
            follow: false,
            through_version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut records = 0;
    while let Some(batch) = batches.next().await {
        let batch = batch.unwrap();
        let last = batch.records.last().map_or(0, |r| r.encoded_len());
        assert!(
            batch.encoded_len() - last < REPLY_TARGET_BYTES,
            "a batch of {} bytes in {} records",
            batch.encoded_len(),
            batch.records.len()
        );
        records += batch.records.len();
    }
    assert!(records > 2, "{records} records");
    let mut seen = BTreeMap::new();
    let mut feed = db.changes(first, false).await.unwrap();
    while let Some(record) = feed.next().await {
        for m in record.unwrap().mutations {
            if let Mutation::Set { key, value } = m {
                seen.insert(key, value);
            }
        }
    }
    for k in &keys {
        assert_eq!(seen.get(k.as_bytes()), Some(&value(k)), "change feed: {k}");
    }
    cluster.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foundationdb_rules_for_age_size_system_keys_and_versionstamps() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let db = cluster.db(Duration::from_secs(30)).await;

    // The 5-second rule on an idle cluster: read, wait 6 s with nobody else committing, write.
    let tx = db.create_transaction();
    assert_eq!(tx.get("idle").await.unwrap(), None);
    tokio::time::sleep(Duration::from_secs(6)).await;
    tx.set("idle", "late");
    let e = tx.commit().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TransactionTooOld, "{e}");
    // A fresh one commits.
    let tx = db.create_transaction();
    assert_eq!(tx.get("idle").await.unwrap(), None);
    tx.set("idle", "fresh");
    tx.commit().await.unwrap();

    // Keys over the limit: a get answers absent, a clear is a no-op, a range clear's long
    // bound is cut to 10,001 bytes.
    let long = |c: u8, extra: usize| Bytes::from(vec![c; MAX_KEY_SIZE + extra]);
    let tx = db.create_transaction();
    assert_eq!(tx.get(long(b'k', 1)).await.unwrap(), None);
    tx.set("m", "1");
    tx.set("n", "1");
    tx.commit().await.unwrap();
    // Such a key cannot exist, so reading it adds no conflict range, and the transaction's
    // size does not count it: two reads of 5 MB keys leave room for a commit.
    let tx = db.create_transaction();
    for c in [b'p', b'q'] {
        assert_eq!(tx.get(long(c, 5_000_000)).await.unwrap(), None);
    }
    tx.set("after-long-reads", "1");
    tx.commit().await.unwrap();
    let tx = db.create_transaction();
    tx.clear(long(b'k', 1));
    tx.clear_range(long(b'l', 5), "n");
    tx.clear_range(long(b'z', 5), long(b'z', 9));
    tx.commit().await.unwrap();
    let tx = db.create_transaction();
    assert_eq!(
        tx.get("m").await.unwrap(),
        None,
        "cleared through the cut bound"
    );
    assert_eq!(tx.get("n").await.unwrap(), Some(Bytes::from("1")));
    // Writing such a key is still refused.
    let tx = db.create_transaction();
    tx.set(long(b'k', 1), "v");
    assert_eq!(
        tx.commit().await.unwrap_err().kind(),
        ErrorKind::KeyTooLarge
    );

    // The system keyspace is outside the legal range for reads.
    let tx = db.create_transaction();
    let e = tx.get(Bytes::from_static(b"\xffsystem")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.message().starts_with(KEY_OUTSIDE_LEGAL_RANGE), "{e}");
    let e = tx
        .get_range(
            Bytes::from_static(b"\xff\x01"),
            Bytes::from_static(b"\xff\x02"),
            0,
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.message().starts_with(KEY_OUTSIDE_LEGAL_RANGE), "{e}");
    // Up to \xff itself is the user keyspace.
    tx.get_range(Bytes::new(), Bytes::from_static(b"\xff"), 0)
        .await
        .unwrap();

    // The versionstamp phantom: t1 reads the empty log, t2 appends a stamped entry and bumps
    // the count, then t1 writes count = 0. No serial order allows both.
    let t1 = db.create_transaction();
    assert!(t1.get_range("log/", "log0", 0).await.unwrap().is_empty());
    let t2 = db.create_transaction();
    let mut template = b"log/".to_vec();
    template.extend_from_slice(&[0xff; 10]);
    template.extend_from_slice(&4u32.to_le_bytes());
    t2.atomic_op(AtomicOp::SetVersionstampedKey, template, "entry");
    t2.atomic_op(AtomicOp::Add, "count", vec![1u8, 0, 0, 0]);
    t2.commit().await.unwrap();
    t1.set("count", vec![0u8, 0, 0, 0]);
    let e = t1.commit().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotCommitted, "{e}");

    // A read version the cluster never handed out is refused.
    let now = db.create_transaction().read_version().await.unwrap();
    let tx = db.create_transaction();
    tx.set_read_version(Version(now.0 + 1_000_000_000)).unwrap();
    tx.add_read_conflict_key("count");
    tx.set("future", "1");
    let e = tx.commit().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    cluster.stop();
}
