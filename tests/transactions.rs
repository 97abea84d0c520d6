//! Transaction semantics through the SDK against `ferrisdb dev`: read and write conflicts,
//! snapshot reads, explicit conflict ranges, key selectors, streamed range reads, watches and
//! the 5-second read-version window.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use ferrisdb_client::{Database, ErrorKind, KeySelector, RangeOptions, Transaction, Version};
use futures::{StreamExt, TryStreamExt};
use support::DevCluster;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn put(db: &Database, pairs: &[(&str, &str)]) -> Version {
    let pairs: Vec<(Bytes, Bytes)> = pairs.iter().map(|(k, v)| (b(k), b(v))).collect();
    let tx = db.create_transaction();
    for (k, v) in pairs {
        tx.set(k, v);
    }
    tx.commit().await.unwrap()
}

/// Two transactions at the same read version; `first` commits, then `second` tries.
async fn race(
    db: &Database,
    first: impl FnOnce(&Transaction),
    second: impl AsyncFnOnce(&Transaction),
) -> Result<Version, ErrorKind> {
    let (t1, t2) = (db.create_transaction(), db.create_transaction());
    let v = t1.read_version().await.unwrap();
    t2.set_read_version(v).unwrap();
    second(&t2).await;
    first(&t1);
    t1.commit().await.unwrap();
    t2.commit().await.map_err(|e| e.kind())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_snapshot_reads_and_explicit_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let db = cluster.db(Duration::from_secs(10)).await;
    put(&db, &[("acct/a", "10"), ("acct/b", "20")]).await;

    // A read of a key written after the read version: not_committed.
    let out = race(
        &db,
        |t1| t1.set("acct/a", "11"),
        async |t2| {
            assert_eq!(
                t2.get("acct/a").await.unwrap(),
                Some(b("11")).filter(|_| false).or(Some(b("10")))
            );
            t2.set("acct/b", "21");
        },
    )
    .await;
    assert_eq!(out, Err(ErrorKind::NotCommitted));

    // The same through a snapshot read: no read conflict, so it commits.
    let out = race(
        &db,
        |t1| t1.set("acct/a", "12"),
        async |t2| {
            assert_eq!(t2.snapshot().get("acct/a").await.unwrap(), Some(b("11")));
            t2.set("acct/b", "22");
        },
    )
    .await;
    assert!(out.is_ok(), "{out:?}");

    // A range read conflicts with an insert inside it; a snapshot range read does not.
    let out = race(
        &db,
        |t1| t1.set("acct/c", "1"),
        async |t2| {
            assert_eq!(t2.get_range("acct/", "acct0", 0).await.unwrap().len(), 2);
            t2.set("x", "1");
        },
    )
    .await;
    assert_eq!(out, Err(ErrorKind::NotCommitted));
    let out = race(
        &db,
        |t1| t1.set("acct/d", "1"),
        async |t2| {
            assert_eq!(
                t2.snapshot()
                    .get_range("acct/", "acct0", 0)
                    .await
                    .unwrap()
                    .len(),
                3
            );
            t2.set("x", "2");
        },
    )
    .await;
    assert!(out.is_ok(), "{out:?}");

    // A limited read conflicts only on what it returned: a write past its last row is fine.
    let out = race(
        &db,
        |t1| t1.set("acct/z", "1"),
        async |t2| {
            let rows = t2.get_range("acct/", "acct0", 2).await.unwrap();
            assert_eq!(rows[1].0, b("acct/b"));
            t2.set("x", "3");
        },
    )
    .await;
    assert!(out.is_ok(), "{out:?}");

    // A range read of what the transaction cleared itself depends on nothing stored: a
    // concurrent insert there does not conflict (FoundationDB's rule)...
    let out = race(
        &db,
        |t1| t1.set("tmp/m", "theirs"),
        async |t2| {
            t2.clear_range("tmp/", "tmp0");
            assert!(t2.get_range("tmp/", "tmp0", 0).await.unwrap().is_empty());
            t2.set("x", "3a");
        },
    )
    .await;
    assert!(out.is_ok(), "{out:?}");
    // ...while the part of the read outside the own clear still conflicts.
    let out = race(
        &db,
        |t1| t1.set("tmp1", "theirs"),
        async |t2| {
            t2.clear_range("tmp/", "tmp0");
            t2.get_range("tmp/", "tmp2", 0).await.unwrap();
            t2.set("x", "3b");
        },
    )
    .await;
    assert_eq!(out, Err(ErrorKind::NotCommitted));

    // Explicit read conflict ranges act as reads; explicit write conflict ranges as writes.
    let out = race(
        &db,
        |t1| t1.set("lock/1", "held"),
        async |t2| {
            t2.add_read_conflict_range("lock/", "lock0");
            t2.set("x", "4");
        },
    )
    .await;
    assert_eq!(out, Err(ErrorKind::NotCommitted));
    let out = race(
        &db,
        |t1| t1.add_write_conflict_key("guard"),
        async |t2| {
            t2.add_read_conflict_key("guard");
            t2.set("x", "5");
        },
    )
    .await;
    assert_eq!(
        out,
        Err(ErrorKind::NotCommitted),
        "a conflict-only commit conflicts"
    );
    // ...and a transaction with only a write conflict range commits with a new version.
    let tx = db.create_transaction();
    let rv = tx.read_version().await.unwrap();
    tx.add_write_conflict_range("guard", "guard0");
    let v = tx.commit().await.unwrap();
    assert!(
        v > rv,
        "a conflict-only transaction gets its own version ({v} > {rv})"
    );
    // A blind write never conflicts, whatever committed in between.
    let out = race(
        &db,
        |t1| t1.set("acct/a", "13"),
        async |t2| t2.set("acct/a", "14"),
    )
    .await;
    assert!(out.is_ok());
    assert_eq!(
        db.run(|tx| async move { tx.get("acct/a").await })
            .await
            .unwrap(),
        Some(b("14")),
        "the later commit wins"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_selectors_streams_watches_and_the_read_window() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let db = cluster.db(Duration::from_secs(10)).await;
    put(&db, &[("b", "1"), ("d", "2"), ("f", "3"), ("h", "4")]).await;

    // Key selectors, each against the answer worked out by hand, and again with the
    // transaction's own writes (a new key "e", a cleared "f") in the picture.
    let tx = db.create_transaction();
    let table: &[(KeySelector, &str)] = &[
        (KeySelector::first_greater_or_equal("d"), "d"),
        (KeySelector::first_greater_or_equal("c"), "d"),
        (KeySelector::first_greater_than("d"), "f"),
        (KeySelector::last_less_than("d"), "b"),
        (KeySelector::last_less_or_equal("d"), "d"),
        (KeySelector::last_less_or_equal("e"), "d"),
        (KeySelector::first_greater_or_equal("d") + 2, "h"),
        (KeySelector::last_less_than("h") - 1, "d"),
        (KeySelector::last_less_than("b"), ""),
        (KeySelector::first_greater_than("h"), "\u{ff}"),
        (KeySelector::first_greater_or_equal("a") + 10, "\u{ff}"),
    ];
    for (sel, want) in table {
        let got = tx.get_key(sel.clone()).await.unwrap();
        let want = if *want == "\u{ff}" {
            Bytes::from_static(b"\xff")
        } else {
            b(want)
        };
        assert_eq!(got, want, "{sel:?}");
    }
    tx.set("e", "new");
    tx.clear("f");
    assert_eq!(
        tx.get_key(KeySelector::first_greater_than("d"))
            .await
            .unwrap(),
        b("e")
    );
    assert_eq!(
        tx.get_key(KeySelector::first_greater_than("e"))
            .await
            .unwrap(),
        b("h")
    );
    assert_eq!(
        tx.get_key(KeySelector::last_less_than("h")).await.unwrap(),
        b("e")
    );

    // Streamed range reads: many rows in small batches, forwards and backwards, with a limit,
    // seeing the transaction's own writes.
    let keys: Vec<String> = (0..250).map(|i| format!("row/{i:04}")).collect();
    let t = db.create_transaction();
    for k in &keys {
        t.set(b(k), b("v"));
    }
    t.commit().await.unwrap();
    let tx = db.create_transaction();
    tx.set("row/0100x", "own");
    tx.clear_range("row/0200", "row/0210");
    let opts = RangeOptions {
        batch_size: 7,
        ..Default::default()
    };
    let rows: Vec<(Bytes, Bytes)> = tx
        .get_range_stream("row/", "row0", opts)
        .try_collect()
        .await
        .unwrap();
    let mut want: Vec<String> = keys
        .iter()
        .filter(|k| !(*k >= &"row/0200".to_string() && *k < &"row/0210".to_string()))
        .cloned()
        .collect();
    want.push("row/0100x".into());
    want.sort();
    assert_eq!(
        rows.iter()
            .map(|r| String::from_utf8_lossy(&r.0).into_owned())
            .collect::<Vec<_>>(),
        want
    );
    assert_eq!(
        rows.iter().find(|r| r.0 == b("row/0100x")).unwrap().1,
        b("own")
    );
    let back: Vec<(Bytes, Bytes)> = tx
        .get_range_stream(
            "row/",
            "row0",
            RangeOptions {
                reverse: true,
                limit: 20,
                batch_size: 6,
            },
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(back.len(), 20);
    assert_eq!(back[0].0, b("row/0249"));
    assert_eq!(back[19].0, b("row/0230"));
    // A consumer that stops after 3 rows reads (and conflicts on) one batch only.
    let first: Vec<_> = db
        .create_transaction()
        .get_range_stream("row/", "row0", opts)
        .take(3)
        .collect()
        .await;
    assert_eq!(first.len(), 3);

    // Watches: fires when the value changes, not on a write of the same value.
    let watch = db.watch("w").await.unwrap();
    let waiter = tokio::spawn(watch);
    put(&db, &[("other", "x")]).await;
    let changed = put(&db, &[("w", "1")]).await;
    let event = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.value, Some(b("1")));
    assert_eq!(event.version, changed);
    let watch = db.watch("w").await.unwrap();
    let waiter = tokio::spawn(watch);
    let same = put(&db, &[("w", "1")]).await;
    let differs = put(&db, &[("w", "2")]).await;
    let event = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(differs > same);
    assert_eq!(
        (event.version, event.value),
        (differs, Some(b("2"))),
        "the same-value write did not fire it"
    );
    // A transaction's watch starts from its own commit; a clear fires it.
    let watch = db
        .run(|tx| async move {
            tx.set("w", "3");
            Ok(tx.watch("w"))
        })
        .await
        .unwrap();
    let waiter = tokio::spawn(watch);
    let cleared = {
        let tx = db.create_transaction();
        tx.clear_range("v", "x");
        tx.commit().await.unwrap()
    };
    let event = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((event.version, event.value), (cleared, None));
    // A watch first polled after its key changed (set on a stale value, as one re-issued
    // after a failover is) names the version of the change, not a later read's.
    let stale = db
        .run(|tx| async move {
            tx.set("w", "4");
            Ok(tx.watch("w"))
        })
        .await
        .unwrap();
    let first_change = put(&db, &[("w", "5")]).await;
    let last_change = put(&db, &[("w", "6")]).await;
    let later = put(&db, &[("other", "y")]).await;
    assert!(first_change < last_change && last_change < later);
    let event = tokio::time::timeout(Duration::from_secs(10), stale)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((event.version, event.value), (last_change, Some(b("6"))));
    // A watch set by a transaction that never committed fails instead of hanging.
    let tx = db.create_transaction();
    assert_eq!(
        tx.watch("w").await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );

    // The 5-second window: a read version that stopped being the latest more than 5 s ago
    // cannot be checked any more.
    let old = db.create_transaction();
    old.get("acct").await.unwrap();
    let then = put(&db, &[("tick", "1")]).await;
    // A time-travel read names its version: it is answered however old the version is.
    let travel = db.create_transaction();
    travel.set_read_version(then).unwrap();
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    put(&db, &[("tick", "2")]).await;
    assert_eq!(travel.get("tick").await.unwrap(), Some(b("1")));
    // A read version handed out as the latest is too old to read at, snapshot or not, and
    // for point and range reads alike (DESIGN.md §2); its own writes are still its own.
    for e in [
        old.get("acct").await.unwrap_err(),
        old.snapshot().get("tick").await.unwrap_err(),
        old.get_range("a", "z", 0).await.unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::TransactionTooOld, "{e}");
    }
    old.set("late", "1");
    assert_eq!(old.get("late").await.unwrap(), Some(b("1")));
    assert_eq!(
        old.commit().await.unwrap_err().kind(),
        ErrorKind::TransactionTooOld
    );
    // ...and the retry loop gets past it with a fresh read version.
    let v = db
        .run(|tx| async move {
            tx.get("acct").await?;
            tx.set("late", "2");
            Ok(())
        })
        .await;
    assert!(v.is_ok());
}

/// A transaction's first read asks the compute for the latest version in the same call and
/// adopts the version it was answered at: it sees every commit acknowledged before it began,
/// and its later reads and its commit's conflict check use that version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_reads_adopt_the_latest_version() {
    use ferrisdb_common::proto::database_client::DatabaseClient;
    use ferrisdb_common::proto::{GetRangeRequest, GetRequest};

    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let db = cluster.db(Duration::from_secs(10)).await;
    let acked = put(&db, &[("one/a", "1"), ("one/b", "1")]).await;

    // The protocol: a read at the latest version names the version it read at, which covers
    // the acknowledged commit; a read at a given version names none (0).
    let mut raw = DatabaseClient::new(ferrisdb_common::net::channel(&cluster.endpoint()).unwrap());
    let get = |latest, version| GetRequest {
        database: "default".into(),
        key: b("one/a"),
        version,
        latest,
    };
    let answer = raw.get(get(true, 0)).await.unwrap().into_inner();
    assert_eq!(answer.value, Some(b("1")));
    assert!(
        answer.read_version >= acked.0,
        "{} < {acked}",
        answer.read_version
    );
    let answer = raw.get(get(false, acked.0)).await.unwrap().into_inner();
    assert_eq!((answer.value, answer.read_version), (Some(b("1")), 0));
    let range = raw
        .get_range(GetRangeRequest {
            database: "default".into(),
            begin: b("one/"),
            end: b("one0"),
            version: 0,
            limit: 0,
            reverse: false,
            latest: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(range.kvs.len(), 2);
    assert!(range.read_version >= acked.0);

    // A point read first: the acknowledged value, and the transaction adopts a version that
    // covers the commit.
    let t = db.create_transaction();
    assert_eq!(t.get("one/a").await.unwrap(), Some(b("1")));
    let adopted = t.read_version().await.unwrap();
    assert!(adopted >= acked, "adopted {adopted} < acknowledged {acked}");
    // Later reads stay at the adopted version: a newer commit is not seen ...
    let newer = put(&db, &[("one/b", "2")]).await;
    assert!(newer > adopted);
    assert_eq!(t.get("one/b").await.unwrap(), Some(b("1")));
    // ... and the conflict check is against it: one/b changed after it.
    t.set("one/c", "x");
    assert_eq!(
        t.commit().await.unwrap_err().kind(),
        ErrorKind::NotCommitted
    );

    // A transaction whose first read adopted a version after that commit sees it, and
    // commits when nothing it read changed since.
    let t = db.create_transaction();
    assert_eq!(t.get("one/b").await.unwrap(), Some(b("2")));
    assert!(t.read_version().await.unwrap() >= newer);
    t.set("one/c", "y");
    let c = t.commit().await.unwrap();

    // A range read first does the same.
    let t = db.create_transaction();
    let rows = t.get_range("one/", "one0", 0).await.unwrap();
    assert_eq!(
        rows,
        vec![
            (b("one/a"), b("1")),
            (b("one/b"), b("2")),
            (b("one/c"), b("y"))
        ]
    );
    assert!(t.read_version().await.unwrap() >= c);
    put(&db, &[("one/a", "3")]).await;
    assert_eq!(t.get("one/a").await.unwrap(), Some(b("1")));
    t.set("one/d", "z");
    assert_eq!(
        t.commit().await.unwrap_err().kind(),
        ErrorKind::NotCommitted
    );

    // Concurrent first reads, with commits racing them: whichever answer is adopted, both
    // reads are at that one version (the other is read again there), so they agree.
    for round in 0..20 {
        let writer = {
            let db = db.clone();
            tokio::spawn(async move { put(&db, &[("one/a", &format!("w{round}"))]).await })
        };
        let t = db.create_transaction();
        let (point, rows) = tokio::join!(t.get("one/a"), t.get_range("one/", "one0", 0));
        let (point, rows) = (point.unwrap(), rows.unwrap());
        assert_eq!(point.as_ref(), Some(&rows[0].1), "round {round}");
        let at = t.read_version().await.unwrap();
        writer.await.unwrap();
        let check = db.create_transaction();
        check.set_read_version(at).unwrap();
        assert_eq!(check.get("one/a").await.unwrap(), point, "round {round}");
    }
}
