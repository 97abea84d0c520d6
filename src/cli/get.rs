//! `ferrisdb get KEY [--at-version V | --at-timestamp T]`.

use std::process::ExitCode;

use bytes::Bytes;
use clap::Args;
use ferrisdb_client::Error;
use serde_json::json;

use super::client_args::{ClientArgs, connect};
use super::output::{finish, say};
use super::time::{At, resolve_at};

/// `ferrisdb get`'s arguments.
#[derive(Debug, Args)]
pub struct Get {
    /// The key.
    pub(crate) key: String,
    #[command(flatten)]
    pub(crate) at: At,
    #[command(flatten)]
    pub(crate) args: ClientArgs,
}

impl Get {
    /// Prints the value (or `(not found)`), at the version asked for or the latest.
    pub async fn execute(self) -> ExitCode {
        finish(self.args.json, get(&self.args, &self.key, &self.at).await)
    }
}

async fn get(args: &ClientArgs, key: &str, at: &At) -> Result<(), Error> {
    let codec = args.codec();
    let key = Bytes::from(codec.decode("key", key)?);
    let db = connect(args).await?;
    let at = resolve_at(&db, at).await?;
    let (value, version) = db
        .run(|tx| {
            let key = key.clone();
            async move {
                if let Some(v) = at {
                    tx.set_read_version(v)?;
                }
                let value = tx.get(key).await?;
                Ok((value, tx.read_version().await?))
            }
        })
        .await?;
    if args.json {
        say(json!({
            "key": codec.encode(&key),
            "value": value.as_deref().map(|v| codec.encode(v)),
            "version": version,
        }));
    } else {
        match value {
            Some(v) => say(codec.encode(&v)),
            None => say("(not found)"),
        }
    }
    Ok(())
}
