//! `ferrisdb clear KEY`.

use std::process::ExitCode;

use clap::Args;

use super::client_args::ClientArgs;
use super::output::finish;
use super::write::{WriteOp, write};

/// `ferrisdb clear`'s arguments.
#[derive(Debug, Args)]
pub struct Clear {
    /// The key.
    pub(crate) key: String,
    #[command(flatten)]
    pub(crate) args: ClientArgs,
}

impl Clear {
    /// Removes the key and prints the commit version.
    pub async fn execute(self) -> ExitCode {
        let op = self
            .args
            .codec()
            .decode("key", &self.key)
            .map(|k| WriteOp::Clear(k.into()));
        finish(self.args.json, write(&self.args, op).await)
    }
}
