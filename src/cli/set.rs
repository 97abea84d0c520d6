//! `ferrisdb set KEY VALUE`.

use std::process::ExitCode;

use clap::Args;

use super::client_args::ClientArgs;
use super::output::finish;
use super::write::{WriteOp, write};

/// `ferrisdb set`'s arguments.
#[derive(Debug, Args)]
pub struct Set {
    /// The key.
    pub(crate) key: String,
    /// The value.
    #[arg(allow_hyphen_values = true)]
    pub(crate) value: String,
    #[command(flatten)]
    pub(crate) args: ClientArgs,
}

impl Set {
    /// Sets the key and prints the commit version.
    pub async fn execute(self) -> ExitCode {
        let codec = self.args.codec();
        let op = codec.decode("key", &self.key).and_then(|k| {
            Ok(WriteOp::Set(
                k.into(),
                codec.decode("value", &self.value)?.into(),
            ))
        });
        finish(self.args.json, write(&self.args, op).await)
    }
}
