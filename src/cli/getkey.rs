//! `ferrisdb getkey KEY [--selector S] [--offset N]`: FoundationDB's key selectors.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use ferrisdb_client::{Error, KeySelector};
use serde_json::json;

use super::client_args::{ClientArgs, connect};
use super::output::{finish, say};
use super::time::{At, resolve_at};
use crate::escape::Codec;

/// `ferrisdb getkey`'s arguments.
#[derive(Debug, Args)]
pub struct GetKey {
    #[command(flatten)]
    pub(crate) selector: SelectorArgs,
    #[command(flatten)]
    pub(crate) at: At,
    #[command(flatten)]
    pub(crate) args: ClientArgs,
}

impl GetKey {
    /// Prints the key the selector resolves to.
    pub async fn execute(self) -> ExitCode {
        finish(
            self.args.json,
            get_key(&self.args, &self.selector, &self.at).await,
        )
    }
}

/// The four key selectors, by FoundationDB's names (or their short forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Selector {
    /// The first key at or after KEY.
    #[value(
        name = "first_greater_or_equal",
        alias = "first-greater-or-equal",
        alias = "ge"
    )]
    FirstGreaterOrEqual,
    /// The first key after KEY.
    #[value(
        name = "first_greater_than",
        alias = "first-greater-than",
        alias = "gt"
    )]
    FirstGreaterThan,
    /// The last key before KEY.
    #[value(name = "last_less_than", alias = "last-less-than", alias = "lt")]
    LastLessThan,
    /// The last key at or before KEY.
    #[value(
        name = "last_less_or_equal",
        alias = "last-less-or-equal",
        alias = "le"
    )]
    LastLessOrEqual,
}

/// What `getkey` resolves: a selector anchored at a key, moved by an offset.
#[derive(Debug, Clone, Args)]
pub struct SelectorArgs {
    /// The anchor key.
    pub(crate) key: String,
    /// Which key relative to the anchor.
    #[arg(long, value_enum, default_value = "first_greater_or_equal")]
    pub(crate) selector: Selector,
    /// Then move this many keys on (negative: back).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub(crate) offset: i32,
}

impl SelectorArgs {
    /// The SDK selector these arguments name.
    pub(crate) fn selector(&self, codec: Codec) -> Result<KeySelector, Error> {
        let key = codec.decode("key", &self.key)?;
        let base = match self.selector {
            Selector::FirstGreaterOrEqual => KeySelector::first_greater_or_equal(key),
            Selector::FirstGreaterThan => KeySelector::first_greater_than(key),
            Selector::LastLessThan => KeySelector::last_less_than(key),
            Selector::LastLessOrEqual => KeySelector::last_less_or_equal(key),
        };
        Ok(base + self.offset)
    }
}

async fn get_key(args: &ClientArgs, selector: &SelectorArgs, at: &At) -> Result<(), Error> {
    let codec = args.codec();
    let sel = selector.selector(codec)?;
    let db = connect(args).await?;
    let at = resolve_at(&db, at).await?;
    let (key, version) = db
        .run(|tx| {
            let sel = sel.clone();
            async move {
                if let Some(v) = at {
                    tx.set_read_version(v)?;
                }
                let key = tx.get_key(sel).await?;
                Ok((key, tx.read_version().await?))
            }
        })
        .await?;
    if args.json {
        say(json!({
            "selector": {
                "key": codec.encode(sel.key()),
                "or_equal": sel.or_equal(),
                "offset": sel.offset(),
            },
            "key": codec.encode(&key),
            "version": version,
        }));
    } else {
        say(codec.encode(&key));
    }
    Ok(())
}
