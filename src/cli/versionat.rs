//! `ferrisdb versionat TIMESTAMP`: the version a time maps to.

use std::process::ExitCode;

use clap::Args;
use ferrisdb_client::Error;
use serde_json::json;

use super::client_args::{ClientArgs, connect};
use super::output::{finish, say};
use super::time::{parse_timestamp, rfc3339};

/// `ferrisdb versionat`'s arguments.
#[derive(Debug, Args)]
pub struct VersionAt {
    /// Unix microseconds, or RFC 3339 (2026-11-22T01:02:03.5Z).
    pub(crate) timestamp: String,
    #[command(flatten)]
    pub(crate) args: ClientArgs,
}

impl VersionAt {
    /// Prints the latest version committed at or before the time.
    pub async fn execute(self) -> ExitCode {
        finish(
            self.args.json,
            version_at(&self.args, &self.timestamp).await,
        )
    }
}

async fn version_at(args: &ClientArgs, timestamp: &str) -> Result<(), Error> {
    let micros = parse_timestamp(timestamp)?;
    let db = connect(args).await?;
    let version = db.version_at(micros).await?;
    if args.json {
        say(json!({
            "timestamp_micros": micros,
            "timestamp": rfc3339(micros),
            "version": version,
        }));
    } else {
        say(version);
    }
    Ok(())
}
