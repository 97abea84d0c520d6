//! `ferrisdb changes [--from V] [--follow] [--limit N]`: the change feed as JSON lines.

use std::process::ExitCode;

use clap::Args;
use ferrisdb_client::Version;
use futures::StreamExt;
use serde_json::json;

use super::client_args::{ClientArgs, connect};
use super::output::{fail, output_lost, say};

/// `ferrisdb changes`' arguments.
#[derive(Debug, Args)]
pub struct Changes {
    /// From this version (inclusive); default (or 0) the oldest commit still retained.
    #[arg(long, default_value_t = 0)]
    pub(crate) from: u64,
    /// Keep printing new commits as they happen.
    #[arg(long)]
    pub(crate) follow: bool,
    /// Stop after this many records.
    #[arg(long)]
    pub(crate) limit: Option<usize>,
    #[command(flatten)]
    pub(crate) args: ClientArgs,
}

impl Changes {
    /// Prints one JSON object per committed record.
    pub async fn execute(self) -> ExitCode {
        changes(self.args, self.from, self.follow, self.limit).await
    }
}

async fn changes(args: ClientArgs, from: u64, follow: bool, limit: Option<usize>) -> ExitCode {
    let codec = args.codec();
    let stream = match connect(&args).await {
        Ok(db) => db.changes(Version(from), follow).await,
        Err(e) => Err(e),
    };
    let stream = match stream {
        Ok(s) => s,
        Err(e) => return fail(args.json, &e),
    };
    let mut stream = std::pin::pin!(stream.take(limit.unwrap_or(usize::MAX)));
    while let Some(record) = stream.next().await {
        let record = match record {
            Ok(r) => r,
            Err(e) => return fail(args.json, &e),
        };
        let mutations: Vec<_> = record
            .mutations
            .iter()
            .map(|m| match m {
                ferrisdb_client::Mutation::Set { key, value } => {
                    json!({"op": "set", "key": codec.encode(key), "value": codec.encode(value)})
                }
                ferrisdb_client::Mutation::Clear { key } => {
                    json!({"op": "clear", "key": codec.encode(key)})
                }
                ferrisdb_client::Mutation::ClearRange { begin, end } => {
                    json!({"op": "clear_range", "begin": codec.encode(begin), "end": codec.encode(end)})
                }
            })
            .collect();
        // `--follow` runs until interrupted, so each record must reach the reader at once.
        let line = json!({
            "version": record.version,
            "commit_time_micros": record.commit_time_micros,
            "mutations": mutations,
        });
        say(line);
        if output_lost() {
            break;
        }
    }
    ExitCode::SUCCESS
}
