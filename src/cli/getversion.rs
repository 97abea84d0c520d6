//! `ferrisdb getversion`: the latest committed version.

use std::process::ExitCode;

use clap::Args;
use ferrisdb_client::Error;
use serde_json::json;

use super::client_args::{ClientArgs, connect};
use super::output::{finish, say};

/// `ferrisdb getversion`'s arguments.
#[derive(Debug, Args)]
pub struct GetVersion {
    #[command(flatten)]
    pub(crate) args: ClientArgs,
}

impl GetVersion {
    /// Prints the version a new transaction would read at.
    pub async fn execute(self) -> ExitCode {
        finish(self.args.json, get_version(&self.args).await)
    }
}

async fn get_version(args: &ClientArgs) -> Result<(), Error> {
    let db = connect(args).await?;
    let version = db.run(|tx| async move { tx.read_version().await }).await?;
    if args.json {
        say(json!({ "version": version }));
    } else {
        say(version);
    }
    Ok(())
}
