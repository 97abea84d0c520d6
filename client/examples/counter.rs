//! A shared counter incremented by concurrent tasks, each increment its own transaction.
//!
//! The counter lives at the tuple-encoded key `("examples", "counter")`, as a little-endian
//! `u64`. The example clears it, then four tasks split N increments between them (N is the
//! first argument, 10 by default). Each increment reads the counter and writes it back plus
//! one inside [`Database::run`]: when two tasks read the same value, the second commit fails
//! with `not_committed` and `run` retries it from a fresh read, so no increment is lost.
//!
//! Run a local cluster in one terminal, then the example in another:
//!
//! ```sh
//! cargo run --release -- dev
//! cargo run -p ferrisdb-client --example counter        # or: --example counter -- 25
//! ```
//!
//! It connects to `FERRISDB_ENDPOINT` (default `http://127.0.0.1:4500`) and prints exactly
//! (with N = 10):
//!
//! ```text
//! counter = 10
//! ```

use ferrisdb_client::{Bytes, Database, Error, tuple};

/// How many tasks increment the counter at the same time.
const TASKS: u64 = 4;

/// The counter's value as stored, or 0 when the key is absent.
fn decode(value: Option<Bytes>) -> Result<u64, Error> {
    match value {
        None => Ok(0),
        Some(v) => <[u8; 8]>::try_from(&v[..])
            .map(u64::from_le_bytes)
            .map_err(|_| Error::invalid(format!("counter holds {} bytes, not 8", v.len()))),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint =
        std::env::var("FERRISDB_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4500".into());
    let n: u64 = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 10,
    };
    let db = Database::connect(&endpoint).await?;
    let key = Bytes::from(tuple::pack(&["examples".into(), "counter".into()]));

    // Start from zero, so every run prints the same.
    db.run(|tx| {
        let key = key.clone();
        async move {
            tx.clear(key);
            Ok(())
        }
    })
    .await?;

    // Task t does its share of the N increments, one transaction each.
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let share = n / TASKS + u64::from(t < n % TASKS);
        let (db, key) = (db.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                db.run(|tx| {
                    let key = key.clone();
                    async move {
                        let count = decode(tx.get(key.clone()).await?)?;
                        tx.set(key, (count + 1).to_le_bytes().to_vec());
                        Ok(())
                    }
                })
                .await?;
            }
            Ok::<(), Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }

    let count = db
        .run(|tx| {
            let key = key.clone();
            async move { decode(tx.get(key).await?) }
        })
        .await?;
    println!("counter = {count}");
    Ok(())
}
