//! `ferrisdb atomic OP KEY PARAM [--i64] [--stamp-offset N|end]`.

use std::process::ExitCode;

use clap::Args;

use super::atomic_op::AtomicArgs;
use super::client_args::ClientArgs;
use super::output::finish;
use super::write::{WriteOp, write};

/// `ferrisdb atomic`'s arguments.
#[derive(Debug, Args)]
pub struct Atomic {
    #[command(flatten)]
    pub(crate) atomic: AtomicArgs,
    #[command(flatten)]
    pub(crate) args: ClientArgs,
}

impl Atomic {
    /// Applies the operation and prints the commit version (and the versionstamp).
    pub async fn execute(self) -> ExitCode {
        let op = self.atomic.resolve(self.args.codec()).map(WriteOp::Atomic);
        finish(self.args.json, write(&self.args, op).await)
    }
}
