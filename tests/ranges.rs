//! Range clears through the real binary and the SDK: range tombstones over keys in the hot
//! tier, in memory on the pageserver and in delta layers; reads at versions before and after;
//! history and the change feed; read-your-writes inside a transaction; and the same answers
//! after a restore from the bucket alone.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::{DevCluster, cli};

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn scan_range(ep: &str, begin: &str, end: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["scan", begin, end, "--endpoint", ep, "--json"];
    args.extend_from_slice(extra);
    let (ok, out, err) = cli(&args);
    assert!(ok, "scan failed: {out} {err}");
    json(&out)["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect()
}

fn scan(ep: &str, extra: &[&str]) -> Vec<String> {
    scan_range(ep, "r", "s", extra)
}

fn keys(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("r{i:02}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_range_removes_keys_from_every_tier_and_keeps_the_past() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cluster = DevCluster::start(&data, &[]).await;
    let ep = cluster.endpoint();
    let db = cluster.db(Duration::from_secs(10)).await;

    // r00..r19 end up in a delta layer, r20..r24 stay in memory and the hot tier.
    db.run(|tx| async move {
        for k in keys(0..20) {
            tx.set(k.clone(), format!("v-{k}"));
        }
        Ok(())
    })
    .await
    .unwrap();
    assert!(
        cli(&[
            "admin",
            "checkpoint",
            "--endpoint",
            &cluster.admin_endpoint()
        ])
        .0
    );
    db.run(|tx| async move {
        for k in keys(20..25) {
            tx.set(k.clone(), format!("v-{k}"));
        }
        Ok(())
    })
    .await
    .unwrap();

    let (ok, out, err) = cli(&["clearrange", "r05", "r22", "--endpoint", &ep, "--json"]);
    assert!(ok, "clearrange failed: {out} {err}");
    let cleared_at = json(&out)["version"].as_u64().unwrap();
    let survivors: Vec<String> = keys(0..5).into_iter().chain(keys(22..25)).collect();

    let check = |phase: &str| {
        assert_eq!(scan(&ep, &[]), survivors, "{phase}: scan");
        assert_eq!(
            scan(&ep, &["--limit", "6"]),
            survivors[..6],
            "{phase}: limited scan"
        );
        assert_eq!(
            scan(&ep, &["--at-version", &(cleared_at - 1).to_string()]),
            keys(0..25),
            "{phase}: scan before the clear"
        );
        let (ok, out, _) = cli(&["get", "r10", "--endpoint", &ep, "--json"]);
        assert!(ok);
        assert!(
            json(&out)["value"].is_null(),
            "{phase}: r10 after the clear"
        );
        let (ok, out, _) = cli(&[
            "get",
            "r10",
            "--at-version",
            &(cleared_at - 1).to_string(),
            "--endpoint",
            &ep,
            "--json",
        ]);
        assert!(ok);
        assert_eq!(
            json(&out)["value"],
            "v-r10",
            "{phase}: r10 before the clear"
        );
        let (ok, out, _) = cli(&["history", "r21", "--endpoint", &ep, "--json"]);
        assert!(ok);
        let h = json(&out);
        let versions = h["versions"].as_array().unwrap();
        assert_eq!(versions.len(), 2, "{phase}: history of r21: {h}");
        assert_eq!(versions[0]["value"], "v-r21");
        assert_eq!(versions[1]["version"].as_u64(), Some(cleared_at));
        assert!(versions[1]["value"].is_null());
        let (ok, out, _) = cli(&[
            "changes",
            "--from",
            &cleared_at.to_string(),
            "--limit",
            "1",
            "--endpoint",
            &ep,
            "--json",
        ]);
        assert!(ok);
        assert_eq!(
            json(out.lines().next().unwrap())["mutations"][0],
            serde_json::json!({"op": "clear_range", "begin": "r05", "end": "r22"}),
            "{phase}: change feed"
        );
    };
    check("live");

    // Read-your-writes: a transaction sees its own range clear and the writes after it.
    let seen = db
        .run(|tx| async move {
            tx.set("r30", "a");
            tx.set("r31", "b");
            tx.set("r33", "d");
            tx.clear_range("r30", "r33");
            tx.set("r32", "c");
            let r31 = tx.get("r31").await?;
            let r02 = tx.get("r02").await?;
            let rows = tx.get_range("r00", "r99", 0).await?;
            let first = tx
                .get_range_opts(
                    "r00",
                    "r99",
                    ferrisdb_client::RangeOptions {
                        limit: 2,
                        reverse: true,
                        ..Default::default()
                    },
                )
                .await?;
            tx.clear_range("r00", "r02");
            let after = tx.get_range("r00", "r05", 0).await?;
            tx.clear_range("r00", "r00"); // empty: nothing
            Ok((r31, r02, rows, first, after))
        })
        .await
        .unwrap();
    let names = |rows: &[(Bytes, Bytes)]| -> Vec<String> {
        rows.iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect()
    };
    assert_eq!(seen.0, None);
    assert_eq!(seen.1.as_deref(), Some(&b"v-r02"[..]));
    let mut want = survivors.clone();
    want.extend(["r32".to_string(), "r33".to_string()]);
    assert_eq!(names(&seen.2), want);
    assert_eq!(names(&seen.3), vec!["r33", "r32"]);
    assert_eq!(names(&seen.4), vec!["r02", "r03", "r04"]);
    let committed = scan_range(&ep, "r00", "r99", &[]);
    assert_eq!(
        committed,
        ["r02", "r03", "r04", "r22", "r23", "r24", "r32", "r33"]
    );
    // Put the committed state back to what `check` expects.
    db.run(|tx| async move {
        tx.clear_range("r30", "r40");
        for k in keys(0..2) {
            tx.set(k.clone(), format!("v-{k}"));
        }
        Ok(())
    })
    .await
    .unwrap();

    // An inverted range is refused with its code; an end past the user keyspace is too.
    let (ok, out, _) = cli(&["clearrange", "z", "a", "--endpoint", &ep, "--json"]);
    assert!(!ok);
    assert_eq!(json(&out)["error"]["code"], "invalid_argument");

    assert!(
        cli(&[
            "admin",
            "checkpoint",
            "--endpoint",
            &cluster.admin_endpoint()
        ])
        .0
    );
    check("checkpointed");

    cluster.stop();
    cluster.wipe_all_but_bucket();
    cluster.launch().await;
    check("restored");
}
