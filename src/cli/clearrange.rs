//! `ferrisdb clearrange BEGIN END`.

use std::process::ExitCode;

use clap::Args;

use super::client_args::ClientArgs;
use super::output::finish;
use super::write::{WriteOp, write};

/// `ferrisdb clearrange`'s arguments.
#[derive(Debug, Args)]
pub struct ClearRange {
    /// First key removed.
    pub(crate) begin: String,
    /// First key past the range.
    pub(crate) end: String,
    #[command(flatten)]
    pub(crate) args: ClientArgs,
}

impl ClearRange {
    /// Removes every key in `[BEGIN, END)` and prints the commit version.
    pub async fn execute(self) -> ExitCode {
        let codec = self.args.codec();
        let op = codec.decode("begin", &self.begin).and_then(|b| {
            Ok(WriteOp::ClearRange(
                b.into(),
                codec.decode("end", &self.end)?.into(),
            ))
        });
        finish(self.args.json, write(&self.args, op).await)
    }
}
