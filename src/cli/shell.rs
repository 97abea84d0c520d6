//! `ferrisdb shell`: an interactive shell in the manner of fdbcli.
//!
//! Outside `begin` … `commit` every command is its own transaction, committed at once and
//! retried like the SDK's `run`. After `begin`, writes are buffered in one SDK transaction and
//! reads see them, until `commit` (which prints the commit version or the error code),
//! `rollback` (which discards them) or `reset` (which discards them and starts over).
//!
//! A line holds one or more commands separated by `;`. Words are separated by spaces; double
//! quotes group words with spaces or `;` into one; keys and values use the escapes of
//! [`crate::escape`] (or hex with `--hex`). A line starting with `#` is a comment.
//!
//! On a terminal the shell has line editing and a history file (`~/.ferrisdb_history`), and
//! Ctrl-C cancels the command running. With stdin not a terminal, or with `--exec`, it runs
//! the commands it is given without prompts and stops at the first one that fails, with a
//! non-zero exit status: a script never commits past an error. Ending inside a transaction
//! discards it and, for a script, is a failure too.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use ferrisdb_client::{Database, Error, RangeOptions, Transaction, Version, WatchEvent};
use futures::StreamExt;

use super::atomic_op::AtomicArgs;
use super::client_args::{ClientArgs, connect};
use super::getkey::SelectorArgs;
use super::output::{say, warn};
use super::time::parse_timestamp;
use crate::escape::{self, Codec};

/// `ferrisdb shell`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ShellArgs {
    /// Run these `;`-separated commands instead of reading any, then exit.
    #[arg(long)]
    pub(crate) exec: Option<String>,
    #[command(flatten)]
    pub(crate) args: ClientArgs,
}

impl ShellArgs {
    /// Runs the shell: the `--exec` commands, a terminal session, or stdin's commands.
    pub async fn execute(self) -> ExitCode {
        run(self.args, self.exec).await
    }
}

/// How many rows `getrange` prints when not told (fdbcli's default too): a terminal is not
/// the place to dump a whole database by accident.
const DEFAULT_RANGE_LIMIT: usize = 25;

/// One shell command line, parsed by clap so flags and help work as on the command line.
#[derive(Debug, Parser)]
#[command(
    name = "ferrisdb shell",
    about = "The shell's commands. Outside begin/commit each one is a transaction of its own.",
    no_binary_name = true,
    disable_version_flag = true,
    override_usage = "COMMAND [ARGS]  (several per line: separated by ;)",
    after_help = "Keys and values take the escapes \\xNN, \\\\, \\n, \\t, \\r, \\0 and \\\"; \
                  quote words with spaces in \"...\". `help COMMAND` describes one command."
)]
struct Line {
    #[command(subcommand)]
    command: Command,
}

/// The shell's commands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Print the value of KEY.
    Get {
        /// The key.
        key: String,
        /// Read without a read conflict (inside a transaction).
        #[arg(long)]
        snapshot: bool,
    },
    /// Set KEY to VALUE.
    Set {
        /// The key.
        key: String,
        /// The value.
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Remove KEY.
    Clear {
        /// The key.
        key: String,
    },
    /// Remove every key with BEGIN <= key < END.
    #[command(name = "clearrange")]
    ClearRange {
        /// First key removed.
        begin: String,
        /// First key past the range.
        end: String,
    },
    /// Print the pairs with BEGIN <= key < END (default END: \xff, the end of the user keys),
    /// at most LIMIT of them (default 25; 0: all).
    #[command(name = "getrange", alias = "scan")]
    GetRange {
        /// First key of the range.
        begin: String,
        /// First key past the range.
        end: Option<String>,
        /// At most this many pairs.
        limit: Option<usize>,
        /// From the end of the range backwards.
        #[arg(long)]
        reverse: bool,
        /// Read without a read conflict (inside a transaction).
        #[arg(long)]
        snapshot: bool,
    },
    /// Print the key a key selector names (by default the first key at or after KEY).
    #[command(name = "getkey")]
    GetKey(SelectorArgs),
    /// Apply an atomic operation (add, bit_and, bit_or, bit_xor, append_if_fits, max, min,
    /// byte_min, byte_max, compare_and_clear, set_versionstamped_key, set_versionstamped_value).
    Atomic(AtomicArgs),
    /// Start a transaction: the following commands share it until commit or rollback.
    Begin,
    /// Commit the transaction and print its version, or the error that refused it.
    Commit,
    /// Discard the transaction's writes and leave transaction mode.
    Rollback,
    /// Discard the transaction's writes and start a new transaction.
    Reset,
    /// Print the read version (the transaction's, or the latest committed one).
    #[command(name = "getversion")]
    GetVersion,
    /// Print every version of KEY with its commit time.
    History {
        /// The key.
        key: String,
    },
    /// Print the version a time maps to (Unix microseconds or RFC 3339).
    #[command(name = "versionat")]
    VersionAt {
        /// The time.
        timestamp: String,
    },
    /// Wait until KEY changes and print its new value (Ctrl-C stops waiting). Inside a
    /// transaction the watch is armed by the commit and waited for after it.
    Watch {
        /// The key.
        key: String,
    },
    /// Leave the shell (an open transaction is discarded).
    #[command(alias = "quit")]
    Exit,
}

/// What a line asked for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Continue,
    Failed,
    Exit,
}

/// A shell session: the database, and the transaction `begin` opened, if any.
struct Shell {
    db: Database,
    codec: Codec,
    tx: Option<Transaction>,
    /// Whether the open transaction has a versionstamp op, whose stamp the commit reports.
    stamped: bool,
    /// Keys watched inside the open transaction: as FoundationDB's transaction watches, each
    /// is armed by the commit (against the value the transaction left) and waited for then.
    watches: Vec<Bytes>,
    /// Whether Ctrl-C should cancel the running command (only with a terminal: a script is
    /// interrupted as a whole).
    interactive: bool,
}

/// Splits a line into commands (at `;`) and those into words (at spaces), removing double
/// quotes. Backslash escapes are kept as written, for [`escape::parse`] to decode per
/// argument; they only matter here in that `\"` and `\;` do not end anything.
fn split(line: &str) -> Result<Vec<Vec<String>>, Error> {
    if line.trim_start().starts_with('#') {
        return Ok(Vec::new());
    }
    let mut commands = Vec::new();
    let mut words = Vec::new();
    let mut word = String::new();
    // A word can be empty (`""`), so its presence is tracked apart from its text.
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                word.push('\\');
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if quoted => word.push(c),
            ';' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
                if !words.is_empty() {
                    commands.push(std::mem::take(&mut words));
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err(Error::invalid(format!(
            "unterminated quote in {line:?} (write \\\" for a quote character)"
        )));
    }
    if in_word {
        words.push(word);
    }
    if !words.is_empty() {
        commands.push(words);
    }
    Ok(commands)
}

fn print_pair(codec: Codec, key: &[u8], value: &[u8]) {
    say(format_args!(
        "`{}' is `{}'",
        codec.encode(key),
        codec.encode(value)
    ));
}

impl Shell {
    /// Runs every command on a line, stopping at the first that fails.
    async fn line(&mut self, line: &str) -> Next {
        let commands = match split(line) {
            Ok(c) => c,
            Err(e) => return self.report(&e),
        };
        for words in commands {
            let parsed = match Line::try_parse_from(&words) {
                Ok(l) => l,
                Err(e) => {
                    let shown = e.render().to_string();
                    // `help` and `--help` are answers, not errors.
                    if !e.use_stderr() {
                        say(shown.trim_end());
                        continue;
                    }
                    warn(format_args!("{}", shown.trim_end()));
                    return Next::Failed;
                }
            };
            let outcome = if self.interactive {
                tokio::select! {
                    r = self.exec(parsed.command) => Some(r),
                    _ = tokio::signal::ctrl_c() => None,
                }
            } else {
                Some(self.exec(parsed.command).await)
            };
            match outcome {
                Some(Ok(Next::Continue)) => {}
                Some(Ok(next)) => return next,
                Some(Err(e)) => return self.report(&e),
                // `commit` ends the transaction before it sends it, so a cancelled commit
                // leaves none open; whether it happened is unknown, as the message says.
                None => {
                    warn(format_args!(
                        "cancelled (a commit cut short may or may not have happened)"
                    ));
                    return Next::Failed;
                }
            }
        }
        Next::Continue
    }

    fn report(&self, e: &Error) -> Next {
        warn(format_args!("ERROR: {}: {}", e.code(), e.message()));
        Next::Failed
    }

    /// The transaction `begin` opened, or an error saying there is none.
    fn open(&self, what: &str) -> Result<Transaction, Error> {
        self.tx.clone().ok_or_else(|| {
            Error::invalid(format!(
                "no transaction to {what}: `begin` starts one (outside one, every command commits on its own)"
            ))
        })
    }

    /// A write: buffered in the open transaction, or committed on its own right away.
    /// `stamped`: it is a versionstamp op, so the commit's versionstamp is worth printing.
    async fn write(&mut self, stamped: bool, apply: impl Fn(&Transaction)) -> Result<Next, Error> {
        if let Some(tx) = &self.tx {
            apply(tx);
            self.stamped |= stamped;
            return Ok(Next::Continue);
        }
        let (version, stamp) = self
            .db
            .run(|tx| {
                apply(&tx);
                async move {
                    let v = tx.commit().await?;
                    Ok((v, tx.versionstamp()))
                }
            })
            .await?;
        committed(version, stamp.as_ref().filter(|_| stamped));
        Ok(Next::Continue)
    }

    /// A read: in the open transaction (seeing its writes), or in a transaction of its own.
    async fn read<T, F, Fut>(&self, body: F) -> Result<T, Error>
    where
        F: FnMut(Transaction) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut body = body;
        match &self.tx {
            Some(tx) => body(tx.clone()).await,
            None => self.db.run(body).await,
        }
    }

    async fn exec(&mut self, command: Command) -> Result<Next, Error> {
        let codec = self.codec;
        match command {
            Command::Get { key, snapshot } => {
                let key = Bytes::from(codec.decode("key", &key)?);
                let value = self
                    .read(|tx| {
                        let key = key.clone();
                        async move {
                            let tx = if snapshot { tx.snapshot() } else { tx };
                            tx.get(key).await
                        }
                    })
                    .await?;
                match value {
                    Some(v) => print_pair(codec, &key, &v),
                    None => say(format_args!("`{}': not found", codec.encode(&key))),
                }
            }
            Command::Set { key, value } => {
                let key = Bytes::from(codec.decode("key", &key)?);
                let value = Bytes::from(codec.decode("value", &value)?);
                return self
                    .write(false, |tx| tx.set(key.clone(), value.clone()))
                    .await;
            }
            Command::Clear { key } => {
                let key = Bytes::from(codec.decode("key", &key)?);
                return self.write(false, |tx| tx.clear(key.clone())).await;
            }
            Command::ClearRange { begin, end } => {
                let begin = Bytes::from(codec.decode("begin", &begin)?);
                let end = Bytes::from(codec.decode("end", &end)?);
                return self
                    .write(false, |tx| tx.clear_range(begin.clone(), end.clone()))
                    .await;
            }
            Command::Atomic(args) => {
                let a = args.resolve(codec)?;
                return self
                    .write(a.op.is_versionstamp(), |tx| {
                        tx.atomic_op(a.op, a.key.clone(), a.param.clone())
                    })
                    .await;
            }
            Command::GetRange {
                begin,
                end,
                limit,
                reverse,
                snapshot,
            } => {
                let begin = Bytes::from(codec.decode("begin", &begin)?);
                let end = match end {
                    Some(e) => Bytes::from(codec.decode("end", &e)?),
                    None => Bytes::from_static(b"\xff"),
                };
                let limit = limit.unwrap_or(DEFAULT_RANGE_LIMIT);
                // Streamed, so `getrange "" \xff 0` prints as it reads instead of holding
                // the whole range in memory first.
                let tx = match &self.tx {
                    Some(tx) => tx.clone(),
                    None => self.db.create_transaction(),
                };
                let tx = if snapshot { tx.snapshot() } else { tx };
                let opts = RangeOptions {
                    limit,
                    reverse,
                    ..RangeOptions::default()
                };
                let mut rows = tx.get_range_stream(begin, end, opts);
                let mut n = 0usize;
                while let Some(row) = rows.next().await {
                    let (k, v) = row?;
                    print_pair(codec, &k, &v);
                    n += 1;
                }
                if n == 0 {
                    say("(no keys in range)");
                } else if limit != 0 && n == limit {
                    say(format_args!(
                        "(stopped at {limit} keys: give a LIMIT after END for more, 0 for all)"
                    ));
                }
            }
            Command::GetKey(sel) => {
                let sel = sel.selector(codec)?;
                let key = self
                    .read(|tx| {
                        let sel = sel.clone();
                        async move { tx.get_key(sel).await }
                    })
                    .await?;
                say(format_args!("`{}'", codec.encode(&key)));
            }
            Command::Begin => {
                if self.tx.is_some() {
                    return Err(Error::invalid(
                        "a transaction is already open: commit or rollback it first",
                    ));
                }
                self.tx = Some(self.db.create_transaction());
                say("Transaction started");
            }
            Command::Commit => {
                let tx = self.open("commit")?;
                // Commit ends the transaction whatever the outcome, as in fdbcli: after an
                // error the writes are gone and `begin` starts afresh.
                self.tx = None;
                let stamped = std::mem::take(&mut self.stamped);
                let watches = std::mem::take(&mut self.watches);
                let version = tx.commit().await?;
                committed(version, tx.versionstamp().as_ref().filter(|_| stamped));
                for key in watches {
                    print_watch_event(codec, &key, tx.watch(key.clone()).await?);
                }
            }
            Command::Rollback => {
                self.open("roll back")?;
                self.tx = None;
                self.stamped = false;
                self.watches.clear();
                say("Transaction rolled back");
            }
            Command::Reset => {
                self.open("reset")?;
                self.tx = Some(self.db.create_transaction());
                self.stamped = false;
                self.watches.clear();
                say("Transaction reset");
            }
            Command::GetVersion => {
                let v = self
                    .read(|tx| async move { tx.read_version().await })
                    .await?;
                say(v);
            }
            Command::History { key } => {
                let key = codec.decode("key", &key)?;
                let entries = self.db.history(key, Version::ZERO, Version::ZERO).await?;
                if entries.is_empty() {
                    say("(no versions)");
                }
                super::history::print_text(&entries, codec);
            }
            Command::VersionAt { timestamp } => {
                let micros = parse_timestamp(&timestamp)?;
                say(self.db.version_at(micros).await?);
            }
            Command::Watch { key } => {
                let key = Bytes::from(codec.decode("key", &key)?);
                if self.tx.is_some() {
                    say(format_args!(
                        "Watch on `{}' set: it waits after the commit, for a change from the value the transaction leaves",
                        codec.encode(&key)
                    ));
                    self.watches.push(key);
                } else {
                    print_watch_event(codec, &key, self.db.watch(key.clone()).await?.await?);
                }
            }
            Command::Exit => return Ok(Next::Exit),
        }
        Ok(Next::Continue)
    }
}

/// Prints what a fired watch saw.
fn print_watch_event(codec: Codec, key: &Bytes, event: WatchEvent) {
    match event.value {
        Some(v) => print_pair(codec, key, &v),
        None => say(format_args!("`{}': cleared", codec.encode(key))),
    }
    say(format_args!("(at version {})", event.version));
}

fn committed(version: Version, stamp: Option<&Bytes>) {
    match stamp {
        Some(s) => say(format_args!(
            "Committed (version {version}, versionstamp {})",
            escape::hex(s)
        )),
        None => say(format_args!("Committed (version {version})")),
    }
}

fn history_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".ferrisdb_history"))
}

/// Runs the shell on `args`' database: the `--exec` commands, a terminal, or stdin.
pub async fn run(args: ClientArgs, exec: Option<String>) -> ExitCode {
    let db = match connect(&args).await {
        Ok(db) => db,
        Err(e) => {
            warn(format_args!("error: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let interactive = exec.is_none() && std::io::stdin().is_terminal();
    let mut shell = Shell {
        db,
        codec: args.codec(),
        tx: None,
        stamped: false,
        watches: Vec::new(),
        interactive,
    };
    let mut failed = false;
    if let Some(script) = exec {
        for line in script.lines() {
            match shell.line(line).await {
                Next::Continue => {}
                Next::Failed => {
                    failed = true;
                    break;
                }
                Next::Exit => break,
            }
        }
    } else if interactive {
        failed = !terminal(&mut shell, &args).await;
    } else {
        let mut stdin = std::io::stdin().lines();
        // Reading stdin blocks; block_in_place keeps the runtime's other work going.
        while let Some(line) = tokio::task::block_in_place(|| stdin.next()) {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    warn(format_args!("error: reading stdin: {e}"));
                    failed = true;
                    break;
                }
            };
            match shell.line(&line).await {
                Next::Continue => {}
                Next::Failed => {
                    failed = true;
                    break;
                }
                Next::Exit => break,
            }
        }
    }
    if shell.tx.is_some() {
        warn(format_args!(
            "warning: the open transaction was not committed; its writes are discarded"
        ));
        // A script that ends inside `begin` did not do what it says; on a terminal the
        // person saw the warning.
        failed |= !interactive;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The interactive loop; false if the terminal itself failed.
async fn terminal(shell: &mut Shell, args: &ClientArgs) -> bool {
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(e) => e,
        Err(e) => {
            warn(format_args!("error: cannot set up the terminal: {e}"));
            return false;
        }
    };
    let history = history_file();
    if let Some(h) = &history {
        // A first session has no history yet; that is not worth a message.
        let _ = editor.load_history(h);
    }
    say(format_args!(
        "Connected to {} (database {}). `help` lists the commands; Ctrl-D leaves.",
        args.endpoints().unwrap_or_default().join(","),
        args.database
    ));
    let ok = loop {
        let prompt = if shell.tx.is_some() {
            "ferrisdb (tx)> "
        } else {
            "ferrisdb> "
        };
        match tokio::task::block_in_place(|| editor.readline(prompt)) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                // On a terminal a failed command is reported and the session goes on.
                if shell.line(&line).await == Next::Exit {
                    break true;
                }
            }
            // Ctrl-C abandons the line being typed, as in a Unix shell.
            Err(rustyline::error::ReadlineError::Interrupted) => {}
            Err(rustyline::error::ReadlineError::Eof) => break true,
            Err(e) => {
                warn(format_args!("error: terminal: {e}"));
                break false;
            }
        }
    };
    if let Some(h) = &history
        && let Err(e) = editor.save_history(h)
    {
        warn(format_args!(
            "warning: history not saved to {}: {e}",
            h.display()
        ));
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrisdb_client::ErrorKind;

    fn words(line: &str) -> Vec<Vec<String>> {
        split(line).unwrap()
    }

    #[test]
    fn split_handles_quotes_escapes_and_separators() {
        assert_eq!(words("set a b"), vec![vec!["set", "a", "b"]]);
        assert_eq!(
            words(r#"set "a b" "" ; get "x;y""#),
            vec![vec!["set", "a b", ""], vec!["get", "x;y"]]
        );
        assert_eq!(
            words(r#"set a\"b \x00\;"#),
            vec![vec!["set", r#"a\"b"#, r"\x00\;"]]
        );
        assert_eq!(words("  # a comment; set a b"), Vec::<Vec<String>>::new());
        assert_eq!(words(";;"), Vec::<Vec<String>>::new());
        let e = split(r#"set "a b"#).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn commands_parse_like_the_cli() {
        let l = Line::try_parse_from(["atomic", "add", "n", "-5", "--i64"]).unwrap();
        let Command::Atomic(a) = l.command else {
            panic!("not atomic: {:?}", l.command);
        };
        let a = a.resolve(Codec::default()).unwrap();
        assert_eq!(&a.param[..], &(-5i64).to_le_bytes());
        let l = Line::try_parse_from(["getrange", "a", "b", "10", "--reverse"]).unwrap();
        assert!(matches!(
            l.command,
            Command::GetRange {
                limit: Some(10),
                reverse: true,
                ..
            }
        ));
        let e = Line::try_parse_from(["help"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        assert!(e.render().to_string().contains("getrange"));
    }
}
