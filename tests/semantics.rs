//! Transaction semantics through the SDK against `ferrisdb dev`: every atomic op against a
//! table of expected results, concurrent atomic adds that never conflict, read-your-writes over
//! atomic ops, versionstamps ordered and unique, and each size limit giving its code.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use ferrisdb_client::{AtomicOp, Database, ErrorKind, tuple};
use support::DevCluster;

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

async fn put(db: &Database, key: &[u8], value: Option<&[u8]>) {
    let (key, value) = (b(key), value.map(b));
    db.run(|tx| {
        let (key, value) = (key.clone(), value.clone());
        async move {
            match value {
                Some(v) => tx.set(key, v),
                None => tx.clear(key),
            }
            Ok(())
        }
    })
    .await
    .unwrap();
}

async fn read(db: &Database, key: &[u8]) -> Option<Bytes> {
    let key = b(key);
    db.run(|tx| {
        let key = key.clone();
        async move { tx.get(key).await }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_ops_versionstamps_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let db = cluster.db(Duration::from_secs(10)).await;

    // (op, stored before, param, expected after): worked out from FoundationDB's Atomic.h.
    type Row = (
        AtomicOp,
        Option<&'static [u8]>,
        &'static [u8],
        Option<&'static [u8]>,
    );
    let table: &[Row] = &[
        (
            AtomicOp::Add,
            Some(&[0x05, 0x00]),
            &[0x03, 0x00],
            Some(&[0x08, 0x00]),
        ),
        (
            AtomicOp::Add,
            Some(&[0xFF, 0x00]),
            &[0x01, 0x00],
            Some(&[0x00, 0x01]),
        ),
        (
            AtomicOp::Add,
            Some(&[0xFF, 0xFF]),
            &[0x01, 0x00],
            Some(&[0x00, 0x00]),
        ),
        (AtomicOp::Add, None, &[0x07], Some(&[0x07])),
        (
            AtomicOp::BitAnd,
            Some(&[0xFF, 0x0F]),
            &[0x0F, 0xFF],
            Some(&[0x0F, 0x0F]),
        ),
        (AtomicOp::BitAnd, None, &[0x0F], Some(&[0x0F])),
        (AtomicOp::BitOr, Some(&[0x01]), &[0x02], Some(&[0x03])),
        (AtomicOp::BitXor, Some(&[0xFF]), &[0x0F], Some(&[0xF0])),
        (AtomicOp::AppendIfFits, Some(b"ab"), b"cd", Some(b"abcd")),
        (AtomicOp::AppendIfFits, None, b"cd", Some(b"cd")),
        (
            AtomicOp::Max,
            Some(&[0x01, 0x00]),
            &[0x00, 0x01],
            Some(&[0x00, 0x01]),
        ),
        (AtomicOp::Max, None, &[0x02], Some(&[0x02])),
        (
            AtomicOp::Min,
            Some(&[0x01, 0x00]),
            &[0x00, 0x01],
            Some(&[0x01, 0x00]),
        ),
        (AtomicOp::Min, None, &[0x09], Some(&[0x09])),
        (AtomicOp::ByteMin, Some(b"b"), b"a", Some(b"a")),
        (AtomicOp::ByteMin, Some(b"ab"), b"b", Some(b"ab")),
        (AtomicOp::ByteMax, Some(b"b"), b"c", Some(b"c")),
        (AtomicOp::ByteMax, Some(b"b"), b"ab", Some(b"b")),
        (AtomicOp::CompareAndClear, Some(b"x"), b"x", None),
        (AtomicOp::CompareAndClear, Some(b"x"), b"y", Some(b"x")),
        (AtomicOp::CompareAndClear, None, b"x", None),
    ];
    for (i, (op, before, param, after)) in table.iter().enumerate() {
        let key = format!("atomic/{i:02}");
        put(&db, key.as_bytes(), *before).await;
        let (k, p, op) = (b(key.as_bytes()), b(param), *op);
        db.run(|tx| {
            let (k, p) = (k.clone(), p.clone());
            async move {
                tx.atomic_op(op, k, p);
                Ok(())
            }
        })
        .await
        .unwrap();
        assert_eq!(
            read(&db, key.as_bytes()).await.as_deref(),
            *after,
            "row {i}: {op} on {before:?} with {param:?}"
        );
    }

    // Atomic adds read nothing, so concurrent ones never conflict and none is lost.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let tx = db.create_transaction();
                tx.atomic_op(AtomicOp::Add, "hits", 1u64.to_le_bytes().to_vec());
                tx.commit().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        read(&db, b"hits").await.as_deref(),
        Some(&200u64.to_le_bytes()[..])
    );

    // Read-your-writes over atomic ops: unknown base, then known.
    let seen = db
        .run(|tx| async move {
            tx.atomic_op(AtomicOp::Add, "hits", 1u64.to_le_bytes().to_vec());
            let first = tx.get("hits").await?;
            tx.atomic_op(AtomicOp::Add, "hits", 2u64.to_le_bytes().to_vec());
            tx.atomic_op(AtomicOp::Max, "fresh", vec![5u8]);
            tx.clear_range("r/", "r0");
            tx.atomic_op(AtomicOp::Add, "r/x", vec![4u8]);
            let range = tx.get_range("", "\u{7f}", 0).await?;
            Ok((first, tx.get("hits").await?, range))
        })
        .await
        .unwrap();
    assert_eq!(seen.0.as_deref(), Some(&201u64.to_le_bytes()[..]));
    assert_eq!(seen.1.as_deref(), Some(&203u64.to_le_bytes()[..]));
    let in_range = |k: &str| {
        seen.2
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(in_range("fresh").as_deref(), Some(&[5u8][..]));
    assert_eq!(in_range("r/x").as_deref(), Some(&[4u8][..]));
    assert_eq!(in_range("hits").as_deref(), Some(&203u64.to_le_bytes()[..]));
    assert_eq!(
        read(&db, b"hits").await.as_deref(),
        Some(&203u64.to_le_bytes()[..])
    );

    // Versionstamps: unique, in commit order, and what the transaction was told.
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let tx = db.create_transaction();
            let key = tuple::pack_with_versionstamp(&[
                "log".into(),
                tuple::Element::Versionstamp(tuple::Versionstamp::incomplete(0)),
            ])
            .unwrap();
            tx.atomic_op(AtomicOp::SetVersionstampedKey, key, vec![i]);
            let mut value = vec![0u8; 10];
            value.extend_from_slice(&0u32.to_le_bytes());
            tx.atomic_op(
                AtomicOp::SetVersionstampedValue,
                format!("stamp/{i:02}"),
                value,
            );
            assert_eq!(
                tx.get(format!("stamp/{i:02}")).await.unwrap_err().kind(),
                ErrorKind::InvalidArgument
            );
            tx.commit().await.unwrap();
            tx.versionstamp().unwrap()
        }));
    }
    let mut stamps = Vec::new();
    for t in tasks {
        stamps.push(t.await.unwrap());
    }
    let (begin, end) = tuple::range(&["log".into()]);
    let log = db
        .run(|tx| {
            let (begin, end) = (begin.clone(), end.clone());
            async move { tx.get_range(begin, end, 0).await }
        })
        .await
        .unwrap();
    assert_eq!(log.len(), 16);
    let logged: Vec<Vec<u8>> = log
        .iter()
        .map(|(k, _)| match &tuple::unpack(k).unwrap()[1] {
            tuple::Element::Versionstamp(v) => v.transaction_version().to_vec(),
            other => panic!("not a versionstamp: {other:?}"),
        })
        .collect();
    let mut sorted = stamps.iter().map(|s| s.to_vec()).collect::<Vec<_>>();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 16, "versionstamps are unique");
    assert_eq!(
        logged, sorted,
        "keys sort in commit order and carry the stamps"
    );
    for i in 0..16u8 {
        let value = read(&db, format!("stamp/{i:02}").as_bytes()).await.unwrap();
        let (k, _) = log.iter().find(|(_, v)| v[..] == [i]).unwrap();
        let key_stamp = match &tuple::unpack(k).unwrap()[1] {
            tuple::Element::Versionstamp(v) => v.transaction_version().to_vec(),
            _ => unreachable!(),
        };
        assert_eq!(value.to_vec(), key_stamp, "one transaction, one stamp");
    }

    // Each limit has its code.
    let try_commit = |f: Box<dyn Fn(&ferrisdb_client::Transaction) + Send + Sync>| {
        let db = db.clone();
        async move {
            let tx = db.create_transaction();
            f(&tx);
            tx.commit().await.unwrap_err().kind()
        }
    };
    assert_eq!(
        try_commit(Box::new(|tx| tx.set(vec![b'k'; 10_001], "v"))).await,
        ErrorKind::KeyTooLarge
    );
    assert_eq!(
        try_commit(Box::new(|tx| tx.set("k", vec![0u8; 100_001]))).await,
        ErrorKind::ValueTooLarge
    );
    assert_eq!(
        try_commit(Box::new(|tx| {
            for i in 0..110 {
                tx.set(format!("big/{i}"), vec![0u8; 99_000]);
            }
        }))
        .await,
        ErrorKind::TransactionTooLarge
    );
    assert_eq!(
        try_commit(Box::new(|tx| tx.atomic_op(
            AtomicOp::Add,
            vec![0xFF, 1],
            vec![1]
        )))
        .await,
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        try_commit(Box::new(|tx| tx.atomic_op(
            AtomicOp::SetVersionstampedKey,
            b"short".to_vec(),
            vec![1]
        )))
        .await,
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        try_commit(Box::new(|tx| tx.clear_range("z", "a"))).await,
        ErrorKind::InvalidArgument
    );
}
