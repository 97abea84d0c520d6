//! `ferrisdb history KEY [--from V] [--to V]`: every version of a key.

use std::process::ExitCode;

use clap::Args;
use ferrisdb_client::{Error, HistoryEntry, Version};
use serde_json::json;

use super::client_args::{ClientArgs, connect};
use super::output::{finish, say};
use super::time::{rfc3339, rfc3339_text};
use crate::escape::Codec;

/// `ferrisdb history`'s arguments.
#[derive(Debug, Args)]
pub struct History {
    /// The key.
    pub(crate) key: String,
    /// From this version (inclusive); default (or 0) the oldest version still retained.
    #[arg(long, default_value_t = 0)]
    pub(crate) from: u64,
    /// Up to this version (inclusive); default the latest.
    #[arg(long, default_value_t = 0)]
    pub(crate) to: u64,
    #[command(flatten)]
    pub(crate) args: ClientArgs,
}

impl History {
    /// Prints each version of the key with its commit time, oldest first.
    pub async fn execute(self) -> ExitCode {
        finish(
            self.args.json,
            history(&self.args, &self.key, self.from, self.to).await,
        )
    }
}

async fn history(args: &ClientArgs, key: &str, from: u64, to: u64) -> Result<(), Error> {
    let codec = args.codec();
    let key = codec.decode("key", key)?;
    let db = connect(args).await?;
    let entries = db.history(key.clone(), Version(from), Version(to)).await?;
    if args.json {
        let versions: Vec<_> = entries
            .iter()
            .map(|e| {
                json!({
                    "version": e.version,
                    "commit_time_micros": e.commit_time_micros,
                    "commit_time": rfc3339(e.commit_time_micros),
                    "value": e.value.as_deref().map(|v| codec.encode(v)),
                })
            })
            .collect();
        say(json!({"key": codec.encode(&key), "versions": versions}));
    } else {
        print_text(&entries, codec);
    }
    Ok(())
}

/// A key's versions as text, one line each (version, commit time, value or `(cleared)`): the
/// `history` command's output and the shell's.
pub(super) fn print_text(entries: &[HistoryEntry], codec: Codec) {
    for e in entries {
        let value = e
            .value
            .as_deref()
            .map_or_else(|| "(cleared)".to_string(), |v| codec.encode(v));
        say(format_args!(
            "{:>12}  {}  {value}",
            e.version,
            rfc3339_text(e.commit_time_micros)
        ));
    }
}
