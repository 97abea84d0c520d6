//! `ferrisdb watch KEY [--follow]`: wait for a key to change.

use std::process::ExitCode;

use bytes::Bytes;
use clap::Args;
use std::time::{Duration, Instant};

use ferrisdb_client::{Database, Error, ErrorKind, Transaction, Version};
use serde_json::json;

use super::client_args::{ClientArgs, connect};
use super::output::{finish, output_lost, say};

/// `ferrisdb watch`'s arguments.
#[derive(Debug, Args)]
pub struct Watch {
    /// The key.
    pub(crate) key: String,
    /// Keep watching and print every change (until interrupted).
    #[arg(long)]
    pub(crate) follow: bool,
    #[command(flatten)]
    pub(crate) args: ClientArgs,
}

impl Watch {
    /// Prints the key's next value (every one with `--follow`).
    pub async fn execute(self) -> ExitCode {
        finish(
            self.args.json,
            watch(&self.args, &self.key, self.follow).await,
        )
    }
}

/// Waits for KEY to change. Each round reads the key and watches it from that same read
/// (`Transaction::watch` after a read-only commit), so with `--follow` no final state is
/// missed: a change landing between two watches shows up as the next round's read.
async fn watch(args: &ClientArgs, key: &str, follow: bool) -> Result<(), Error> {
    let codec = args.codec();
    let key = Bytes::from(codec.decode("key", key)?);
    let db = connect(args).await?;
    let show = |value: Option<&[u8]>, version: Version| {
        if args.json {
            say(json!({
                "key": codec.encode(&key),
                "value": value.map(|v| codec.encode(v)),
                "version": version,
            }));
        } else {
            let value = value.map_or_else(|| "(cleared)".to_string(), |v| codec.encode(v));
            say(format_args!("{version}  {value}"));
        }
    };
    let mut last: Option<Option<Bytes>> = None;
    loop {
        let (tx, now, read_at) = read_and_commit(&db, &key, args.timeout()).await?;
        if last.as_ref().is_some_and(|l| *l != now) {
            show(now.as_deref(), read_at);
        }
        let event = tx.watch(key.clone()).await?;
        show(event.value.as_deref(), event.version);
        if !follow || output_lost() {
            return Ok(());
        }
        last = Some(event.value);
    }
}

/// Reads `key` in a transaction and commits it (read-only: nothing is written), asking again
/// while the compute answers `unavailable` (starting after a wake from scale to zero or a
/// restart) for up to `timeout`, as the other commands' retry loop does.
async fn read_and_commit(
    db: &Database,
    key: &Bytes,
    timeout: Duration,
) -> Result<(Transaction, Option<Bytes>, Version), Error> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        let tx = db.create_transaction();
        let attempt = async {
            let now = tx.get(key.clone()).await?;
            let at = tx.commit().await?;
            Ok::<_, Error>((now, at))
        }
        .await;
        match attempt {
            Ok((now, at)) => return Ok((tx, now, at)),
            Err(e)
                if e.kind() == ErrorKind::Unavailable && started.elapsed() + pause <= timeout =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}
