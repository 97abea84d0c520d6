//! Following the change feed: every commit, as it happens, in commit order.
//!
//! The example notes the latest committed version, then opens the change feed from just past
//! it with `follow` on ([`Database::changes`]) in a task of its own. It then commits three
//! transactions under the subspace `("examples", "change_feed")`: one setting `apple`, one
//! setting `banana`, and one setting `cherry` and clearing `apple`. The task prints each
//! record of the feed that touches the subspace (other clients' commits are skipped), one
//! line per record and one line per mutation in the order they applied, keys shown by their
//! last tuple element, and the example exits after three records.
//!
//! Run a local cluster in one terminal, then the example in another:
//!
//! ```sh
//! cargo run --release -- dev
//! cargo run -p ferrisdb-client --example change_feed
//! ```
//!
//! It connects to `FERRISDB_ENDPOINT` (default `http://127.0.0.1:4500`) and prints exactly:
//!
//! ```text
//! record 1
//!   set apple = red
//! record 2
//!   set banana = yellow
//! record 3
//!   set cherry = dark red
//!   clear apple
//! ```

use std::time::Duration;

use ferrisdb_client::subspace::Subspace;
use ferrisdb_client::tuple::Element;
use ferrisdb_client::{Database, Error, Mutation, Version};
use futures::StreamExt;

/// How many records the example waits for.
const RECORDS: usize = 3;

/// A key of the subspace as its last tuple element, or `None` for a key outside it.
fn name(fruits: &Subspace, key: &[u8]) -> Option<String> {
    let tuple = fruits.unpack(key).ok()?;
    match tuple.last()? {
        Element::String(s) => Some(s.clone()),
        other => Some(format!("{other:?}")),
    }
}

/// One line per mutation inside the subspace; empty when the record touches none of it.
fn describe(fruits: &Subspace, mutations: &[Mutation]) -> Vec<String> {
    mutations
        .iter()
        .filter_map(|m| match m {
            Mutation::Set { key, value } => Some(format!(
                "set {} = {}",
                name(fruits, key)?,
                String::from_utf8_lossy(value)
            )),
            Mutation::Clear { key } => Some(format!("clear {}", name(fruits, key)?)),
            Mutation::ClearRange { begin, end } => {
                let (b, e) = fruits.range();
                (begin.as_ref() < e.as_slice() && b.as_slice() < end.as_ref())
                    .then(|| "clear range".to_string())
            }
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint =
        std::env::var("FERRISDB_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4500".into());
    let db = Database::connect(&endpoint).await?;
    let fruits = Subspace::new(&["examples".into(), "change_feed".into()]);

    // Everything at or below the latest version has committed already; the feed starts just
    // past it, so it holds exactly the commits made from here on.
    let latest = db.create_transaction().read_version().await?;
    let feed = db.changes(Version(latest.0 + 1), true).await?;

    let reader = tokio::spawn({
        let fruits = fruits.clone();
        async move {
            let mut feed = std::pin::pin!(feed);
            let mut seen = 0;
            while seen < RECORDS {
                let Some(record) = feed.next().await else {
                    return Err(Error::unavailable("the change feed ended"));
                };
                let lines = describe(&fruits, &record?.mutations);
                if lines.is_empty() {
                    continue;
                }
                seen += 1;
                println!("record {seen}");
                for line in lines {
                    println!("  {line}");
                }
            }
            Ok(())
        }
    });

    let fruit = |name: &str| fruits.pack(&[name.into()]);
    let commits: [&[(&str, Option<&str>)]; RECORDS] = [
        &[("apple", Some("red"))],
        &[("banana", Some("yellow"))],
        &[("cherry", Some("dark red")), ("apple", None)],
    ];
    for writes in commits {
        db.run(|tx| async move {
            for (name, value) in writes {
                match value {
                    Some(v) => tx.set(fruit(name), v.to_string()),
                    None => tx.clear(fruit(name)),
                }
            }
            Ok(())
        })
        .await?;
    }

    tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .map_err(|_| "no change records within 30 seconds")???;
    Ok(())
}
