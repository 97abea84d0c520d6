//! Reading the past: a key's value as of earlier versions and times, and its history.
//!
//! The example clears the key `("examples", "time_travel")`, then writes `v1`, `v2` and `v3`
//! to it in three transactions, remembering each commit version. It then reads the key back
//! at each of those versions with [`Transaction::set_read_version`] (and at the version of
//! the clear, where it is absent), finds the version current at the commit time of `v2`
//! with [`Database::version_at`], and lists the values between the first and the last write
//! with [`Database::history`]. Versions differ from run to run, so it prints them by number
//! (1, 2, 3) rather than by value.
//!
//! Run a local cluster in one terminal, then the example in another:
//!
//! ```sh
//! cargo run --release -- dev
//! cargo run -p ferrisdb-client --example time_travel
//! ```
//!
//! It connects to `FERRISDB_ENDPOINT` (default `http://127.0.0.1:4500`) and prints exactly:
//!
//! ```text
//! version 0 -> (absent)
//! version 1 -> v1
//! version 2 -> v2
//! version 3 -> v3
//! at the commit time of version 2 -> v2
//! history: v1, v2, v3
//! ```

use ferrisdb_client::{Bytes, Database, Error, Transaction, Version, tuple};

/// Sets `key` to `value` (clears it for `None`) and returns the version that committed at.
async fn write(db: &Database, key: &Bytes, value: Option<&'static str>) -> Result<Version, Error> {
    // `run` hands back what the body returns: here the transaction itself, which knows the
    // version it committed at once `run` has committed it.
    let tx = db
        .run(|tx| {
            let key = key.clone();
            async move {
                match value {
                    Some(v) => tx.set(key, v),
                    None => tx.clear(key),
                }
                Ok(tx)
            }
        })
        .await?;
    tx.committed_version()
        .ok_or_else(|| Error::internal("run returned before committing"))
}

/// The value of `key` as of `version`, for printing.
async fn read_at(db: &Database, key: &Bytes, version: Version) -> Result<String, Error> {
    // In a `run`, so a version the storage has not caught up to yet (`future_version`) is
    // retried rather than returned.
    let value = db
        .run(|tx: Transaction| {
            let key = key.clone();
            async move {
                tx.set_read_version(version)?;
                tx.get(key).await
            }
        })
        .await?;
    Ok(match value {
        Some(v) => String::from_utf8_lossy(&v).into_owned(),
        None => "(absent)".to_string(),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint =
        std::env::var("FERRISDB_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4500".into());
    let db = Database::connect(&endpoint).await?;
    let key = Bytes::from(tuple::pack(&["examples".into(), "time_travel".into()]));

    // Version 0 is the clear; versions 1 to 3 are the writes.
    let mut versions = vec![write(&db, &key, None).await?];
    for value in ["v1", "v2", "v3"] {
        versions.push(write(&db, &key, Some(value)).await?);
    }

    for (n, version) in versions.iter().enumerate() {
        println!("version {n} -> {}", read_at(&db, &key, *version).await?);
    }

    let history = db.history(key.clone(), versions[1], versions[3]).await?;

    // Commit times strictly increase, so the version current at v2's commit time reads v2.
    let v2_time = history
        .iter()
        .find(|e| e.version == versions[2])
        .ok_or("no history entry for version 2")?
        .commit_time_micros;
    let at_time = db.version_at(v2_time).await?;
    println!(
        "at the commit time of version 2 -> {}",
        read_at(&db, &key, at_time).await?
    );

    let values: Vec<String> = history
        .iter()
        .map(|e| match &e.value {
            Some(v) => String::from_utf8_lossy(v).into_owned(),
            None => "(cleared)".to_string(),
        })
        .collect();
    println!("history: {}", values.join(", "));
    Ok(())
}
