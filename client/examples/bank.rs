//! Concurrent money transfers that never create or destroy money.
//!
//! Ten accounts live under the subspace `("examples", "bank")`, one key per account number,
//! each balance a little-endian `u64`. The example resets them to 100 each, then eight tasks
//! make 25 random transfers apiece between random pairs of accounts. A transfer reads both
//! balances and writes both back in one transaction (moving at most what the payer holds,
//! so no balance goes negative); concurrent transfers that touch the same account conflict,
//! and [`Database::run`] retries the loser. Finally one transaction reads every balance with
//! a single range read over the subspace, so the total it sees is a consistent snapshot.
//!
//! Run a local cluster in one terminal, then the example in another:
//!
//! ```sh
//! cargo run --release -- dev
//! cargo run -p ferrisdb-client --example bank
//! ```
//!
//! It connects to `FERRISDB_ENDPOINT` (default `http://127.0.0.1:4500`) and prints exactly:
//!
//! ```text
//! transfers = 200
//! accounts = 10
//! total = 1000
//! ```

use ferrisdb_client::subspace::Subspace;
use ferrisdb_client::{Bytes, Database, Error};
use rand::Rng;

/// How many accounts there are.
const ACCOUNTS: i64 = 10;
/// What each account starts with.
const OPENING_BALANCE: u64 = 100;
/// How many tasks make transfers at the same time.
const TASKS: usize = 8;
/// How many transfers each task makes.
const TRANSFERS_PER_TASK: usize = 25;

/// A stored balance; an absent account holds nothing.
fn decode(value: Option<&[u8]>) -> Result<u64, Error> {
    match value {
        None => Ok(0),
        Some(v) => <[u8; 8]>::try_from(v)
            .map(u64::from_le_bytes)
            .map_err(|_| Error::invalid(format!("a balance holds {} bytes, not 8", v.len()))),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint =
        std::env::var("FERRISDB_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4500".into());
    let db = Database::connect(&endpoint).await?;
    let bank = Subspace::new(&["examples".into(), "bank".into()]);
    let account = |n: i64| Bytes::from(bank.pack(&[n.into()]));
    let (begin, end) = bank.range();
    let (begin, end) = (Bytes::from(begin), Bytes::from(end));

    // Open the accounts afresh: whatever an earlier run left is cleared in the same
    // transaction, so every run starts from the same 1000.
    db.run(|tx| {
        let (begin, end) = (begin.clone(), end.clone());
        async move {
            tx.clear_range(begin, end);
            for n in 0..ACCOUNTS {
                tx.set(account(n), OPENING_BALANCE.to_le_bytes().to_vec());
            }
            Ok(())
        }
    })
    .await?;

    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let db = db.clone();
        let bank = bank.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..TRANSFERS_PER_TASK {
                // Choose the transfer once; a retry repeats the same transfer.
                let (from, to, amount) = {
                    let mut rng = rand::rng();
                    let from = rng.random_range(0..ACCOUNTS);
                    let to = (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
                    (from, to, rng.random_range(1..=50u64))
                };
                let from = Bytes::from(bank.pack(&[from.into()]));
                let to = Bytes::from(bank.pack(&[to.into()]));
                db.run(|tx| {
                    let (from, to) = (from.clone(), to.clone());
                    async move {
                        let payer = decode(tx.get(from.clone()).await?.as_deref())?;
                        let payee = decode(tx.get(to.clone()).await?.as_deref())?;
                        let moved = amount.min(payer);
                        tx.set(from, (payer - moved).to_le_bytes().to_vec());
                        tx.set(to, (payee + moved).to_le_bytes().to_vec());
                        Ok(())
                    }
                })
                .await?;
            }
            Ok::<usize, Error>(TRANSFERS_PER_TASK)
        }));
    }
    let mut transfers = 0;
    for task in tasks {
        transfers += task.await??;
    }

    // Every balance, read at one version.
    let rows = db
        .run(|tx| {
            let (begin, end) = (begin.clone(), end.clone());
            async move { tx.get_range(begin, end, 0).await }
        })
        .await?;
    let mut total = 0;
    for (_, value) in &rows {
        total += decode(Some(value))?;
    }
    println!("transfers = {transfers}");
    println!("accounts = {}", rows.len());
    println!("total = {total}");
    Ok(())
}
