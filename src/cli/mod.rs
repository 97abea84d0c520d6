//! Client commands: one transaction each through the SDK, or one call to the admin API.
//!
//! Every key and value argument is written in the escape syntax of [`crate::escape`] (`\xNN`,
//! `\\`, …) or, with `--hex`, in hex; every key and value printed is written back the same
//! way, so output can be pasted as input. `--json` output holds keys and values as those same
//! strings, which are lossless, and errors as `{"error": {"code", "message"}}` with a non-zero
//! exit status.

//!
//! One file per command, each holding its arguments (a clap struct) and its `execute`; the
//! files they share hold the common options ([`client_args`]), output ([`output`]), times
//! ([`time`]), atomic operations ([`atomic_op`]) and the one-mutation write ([`write`]). This
//! file only lists the commands and dispatches: nothing here is imported back by them.

mod admin;
mod atomic;
mod atomic_op;
mod changes;
mod clear;
mod clearrange;
mod client_args;
mod get;
mod getkey;
mod getversion;
mod history;
pub(crate) mod output;
mod scan;
mod set;
mod shell;
#[cfg(test)]
mod tests;
mod time;
mod versionat;
mod watch;
mod write;

use std::process::ExitCode;

use clap::Subcommand;

/// The client commands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Set KEY to VALUE and print the commit version.
    Set(set::Set),
    /// Print the value of KEY.
    Get(get::Get),
    /// Print the key a key selector names (by default the first key at or after KEY).
    #[command(name = "getkey", alias = "get-key")]
    GetKey(getkey::GetKey),
    /// Print every version of KEY with its commit time, oldest first.
    History(history::History),
    /// Print committed records from a version on, one JSON object per line.
    Changes(changes::Changes),
    /// Remove KEY.
    Clear(clear::Clear),
    /// Remove every key with BEGIN <= key < END.
    #[command(name = "clearrange", alias = "clear-range")]
    ClearRange(clearrange::ClearRange),
    /// Print the pairs with BEGIN <= key < END, streamed in batches.
    #[command(alias = "getrange")]
    Scan(scan::Scan),
    /// Apply an atomic operation (FoundationDB's semantics) to KEY and print the commit
    /// version; the versionstamp ops also print the versionstamp.
    Atomic(atomic::Atomic),
    /// Print the latest committed version (a new transaction's read version).
    #[command(name = "getversion", alias = "get-version")]
    GetVersion(getversion::GetVersion),
    /// Print the version a time maps to: the latest committed at or before it.
    #[command(name = "versionat", alias = "version-at")]
    VersionAt(versionat::VersionAt),
    /// Wait until KEY changes, then print its new value and the version that changed it.
    Watch(watch::Watch),
    /// An interactive shell (line editing, history, transactions across commands); reads
    /// commands from stdin when it is not a terminal.
    Shell(shell::ShellArgs),
    /// Operate the cluster through the admin HTTP API.
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
}

/// Runs one client command, printing its outcome.
pub async fn run(cmd: ClientCommand) -> ExitCode {
    let code = match cmd {
        ClientCommand::Set(c) => c.execute().await,
        ClientCommand::Get(c) => c.execute().await,
        ClientCommand::GetKey(c) => c.execute().await,
        ClientCommand::History(c) => c.execute().await,
        ClientCommand::Changes(c) => c.execute().await,
        ClientCommand::Clear(c) => c.execute().await,
        ClientCommand::ClearRange(c) => c.execute().await,
        ClientCommand::Scan(c) => c.execute().await,
        ClientCommand::Atomic(c) => c.execute().await,
        ClientCommand::GetVersion(c) => c.execute().await,
        ClientCommand::VersionAt(c) => c.execute().await,
        ClientCommand::Watch(c) => c.execute().await,
        ClientCommand::Shell(c) => c.execute().await,
        ClientCommand::Admin { command } => command.execute().await,
    };
    output::exit_status(code)
}
