//! Client commands: one transaction each through the SDK, or one call to the admin API.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand};
use ferrisdb_client::{Database, Error, ErrorKind, RetryOptions, Version};
use ferrisdb_common::DEFAULT_DATABASE;
use serde_json::json;

/// Options every data command takes.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The compute's client API.
    #[arg(
        long,
        env = "FERRISDB_ENDPOINT",
        default_value = "http://127.0.0.1:4500"
    )]
    endpoint: String,
    /// The database.
    #[arg(long, default_value = DEFAULT_DATABASE)]
    database: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Give up retrying after this many seconds.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

/// Options of admin commands.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The admin HTTP API.
    #[arg(
        long,
        env = "FERRISDB_ADMIN_ENDPOINT",
        default_value = "http://127.0.0.1:4580"
    )]
    endpoint: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// The client commands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Set KEY to VALUE and print the commit version.
    Set {
        /// The key (UTF-8).
        key: String,
        /// The value (UTF-8).
        value: String,
        #[command(flatten)]
        args: ClientArgs,
    },
    /// Print the value of KEY.
    Get {
        /// The key (UTF-8).
        key: String,
        /// Read at this version instead of the latest.
        #[arg(long, conflicts_with = "at_timestamp")]
        at_version: Option<u64>,
        /// Read as of this time: Unix microseconds, or RFC 3339 (2026-11-22T01:02:03.5Z).
        #[arg(long)]
        at_timestamp: Option<String>,
        #[command(flatten)]
        args: ClientArgs,
    },
    /// Print every version of KEY with its commit time, oldest first.
    History {
        /// The key (UTF-8).
        key: String,
        /// From this version (inclusive).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Up to this version (inclusive); default the latest.
        #[arg(long, default_value_t = 0)]
        to: u64,
        #[command(flatten)]
        args: ClientArgs,
    },
    /// Print committed records from a version on, one JSON object per line.
    Changes {
        /// From this version (inclusive).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Keep printing new commits as they happen.
        #[arg(long)]
        follow: bool,
        /// Stop after this many records.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        args: ClientArgs,
    },
    /// Remove KEY.
    Clear {
        /// The key (UTF-8).
        key: String,
        #[command(flatten)]
        args: ClientArgs,
    },
    /// Remove every key with BEGIN <= key < END.
    #[command(name = "clearrange", alias = "clear-range")]
    ClearRange {
        /// First key removed.
        begin: String,
        /// First key past the range.
        end: String,
        #[command(flatten)]
        args: ClientArgs,
    },
    /// Print the pairs with BEGIN <= key < END.
    Scan {
        /// First key of the range.
        begin: String,
        /// First key past the range.
        end: String,
        /// At most this many pairs (0: all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
        /// Read at this version instead of the latest.
        #[arg(long)]
        at_version: Option<u64>,
        #[command(flatten)]
        args: ClientArgs,
    },
    /// Operate the cluster through the admin HTTP API.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

/// Admin commands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Upload everything committed so far to object storage.
    Checkpoint {
        /// The database (default: the compute's own).
        #[arg(long)]
        database: Option<String>,
        #[command(flatten)]
        args: AdminArgs,
    },
    /// Create database NAME as a branch of another at a version or time, by metadata only
    /// (default: the parent's latest commit). The compute serves it at once.
    Branch {
        /// The new database.
        name: String,
        /// The database to branch from (default: the compute's own).
        #[arg(long = "from")]
        parent: Option<String>,
        /// Branch at this version of the parent.
        #[arg(long, conflicts_with = "at_timestamp")]
        at_version: Option<u64>,
        /// Branch at the parent's state at this time: Unix microseconds, or RFC 3339.
        #[arg(long)]
        at_timestamp: Option<String>,
        #[command(flatten)]
        args: AdminArgs,
    },
    /// Print the status of the process behind the admin endpoint.
    Status {
        #[command(flatten)]
        args: AdminArgs,
    },
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn connect(args: &ClientArgs) -> Result<Database, Error> {
    let timeout = Duration::from_secs_f64(args.timeout.max(0.0));
    Ok(Database::connect(&args.endpoint)
        .await?
        .with_database(&args.database)
        .with_retry(RetryOptions {
            timeout,
            ..RetryOptions::default()
        }))
}

fn fail(json: bool, e: &Error) -> ExitCode {
    if json {
        println!(
            "{}",
            json!({"error": {"code": e.code(), "message": e.message()}})
        );
    } else {
        eprintln!("error: {e}");
    }
    ExitCode::FAILURE
}

/// Runs one client command, printing its outcome.
pub async fn run(cmd: ClientCommand) -> ExitCode {
    match cmd {
        ClientCommand::Admin { command } => admin(command).await,
        ClientCommand::Set { key, value, args } => write(args, WriteOp::Set(key, value)).await,
        ClientCommand::Clear { key, args } => write(args, WriteOp::Clear(key)).await,
        ClientCommand::ClearRange { begin, end, args } => {
            write(args, WriteOp::ClearRange(begin, end)).await
        }
        ClientCommand::Changes {
            from,
            follow,
            limit,
            args,
        } => changes(args, from, follow, limit).await,
        ClientCommand::History {
            key,
            from,
            to,
            args,
        } => history(args, key, from, to).await,
        ClientCommand::Get {
            key,
            at_version,
            at_timestamp,
            args,
        } => {
            let out = async {
                let db = connect(&args).await?;
                let at_version = match &at_timestamp {
                    Some(ts) => Some(db.version_at(parse_timestamp(ts)?).await?.0),
                    None => at_version,
                };
                let k = key.clone();
                db.run(|tx| {
                    let k = k.clone();
                    async move {
                        if let Some(v) = at_version {
                            tx.set_read_version(Version(v))?;
                        }
                        let value = tx.get(k).await?;
                        Ok((value, tx.read_version().await?))
                    }
                })
                .await
            }
            .await;
            match out {
                Ok((value, version)) if args.json => {
                    println!(
                        "{}",
                        json!({"key": key, "value": value.as_deref().map(text), "version": version})
                    );
                    ExitCode::SUCCESS
                }
                Ok((Some(value), _)) => {
                    println!("{}", text(&value));
                    ExitCode::SUCCESS
                }
                Ok((None, _)) => {
                    println!("(not found)");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(args.json, &e),
            }
        }
        ClientCommand::Scan {
            begin,
            end,
            limit,
            at_version,
            args,
        } => {
            let out = async {
                let db = connect(&args).await?;
                let (b, e) = (Bytes::from(begin.clone()), Bytes::from(end.clone()));
                db.run(|tx| {
                    let (b, e) = (b.clone(), e.clone());
                    async move {
                        if let Some(v) = at_version {
                            tx.set_read_version(Version(v))?;
                        }
                        let rows = tx.get_range(b, e, limit).await?;
                        Ok((rows, tx.read_version().await?))
                    }
                })
                .await
            }
            .await;
            match out {
                Ok((rows, version)) if args.json => {
                    let rows: Vec<_> = rows
                        .iter()
                        .map(|(k, v)| json!({"key": text(k), "value": text(v)}))
                        .collect();
                    println!(
                        "{}",
                        json!({"begin": begin, "end": end, "version": version, "rows": rows})
                    );
                    ExitCode::SUCCESS
                }
                Ok((rows, _)) => {
                    for (k, v) in rows {
                        println!("{} = {}", text(&k), text(&v));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(args.json, &e),
            }
        }
    }
}

/// Unix microseconds from an integer or an RFC 3339 time.
fn parse_timestamp(s: &str) -> Result<u64, Error> {
    if let Ok(micros) = s.parse::<u64>() {
        return Ok(micros);
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        Error::invalid(format!(
            "timestamp {s:?}: {e} (use Unix microseconds or RFC 3339)"
        ))
    })?;
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .map_err(|_| Error::invalid(format!("timestamp {s:?} is before 1970")))
}

fn rfc3339(micros: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_micros(micros);
    humantime::format_rfc3339_micros(t).to_string()
}

async fn changes(args: ClientArgs, from: u64, follow: bool, limit: Option<usize>) -> ExitCode {
    use futures::StreamExt;
    let stream = match connect(&args).await {
        Ok(db) => db.changes(Version(from), follow).await,
        Err(e) => Err(e),
    };
    let stream = match stream {
        Ok(s) => s,
        Err(e) => return fail(args.json, &e),
    };
    let mut stream = std::pin::pin!(stream.take(limit.unwrap_or(usize::MAX)));
    while let Some(record) = stream.next().await {
        let record = match record {
            Ok(r) => r,
            Err(e) => return fail(args.json, &e),
        };
        let mutations: Vec<_> = record
            .mutations
            .iter()
            .map(|m| match m {
                ferrisdb_client::Mutation::Set { key, value } => {
                    json!({"op": "set", "key": text(key), "value": text(value)})
                }
                ferrisdb_client::Mutation::Clear { key } => {
                    json!({"op": "clear", "key": text(key)})
                }
                ferrisdb_client::Mutation::ClearRange { begin, end } => {
                    json!({"op": "clear_range", "begin": text(begin), "end": text(end)})
                }
            })
            .collect();
        println!(
            "{}",
            json!({
                "version": record.version,
                "commit_time_micros": record.commit_time_micros,
                "mutations": mutations,
            })
        );
    }
    ExitCode::SUCCESS
}

async fn history(args: ClientArgs, key: String, from: u64, to: u64) -> ExitCode {
    let out = async {
        let db = connect(&args).await?;
        db.history(key.clone(), Version(from), Version(to)).await
    }
    .await;
    match out {
        Ok(entries) if args.json => {
            let versions: Vec<_> = entries
                .iter()
                .map(|e| {
                    json!({
                        "version": e.version,
                        "commit_time_micros": e.commit_time_micros,
                        "commit_time": rfc3339(e.commit_time_micros),
                        "value": e.value.as_deref().map(text),
                    })
                })
                .collect();
            println!("{}", json!({"key": key, "versions": versions}));
            ExitCode::SUCCESS
        }
        Ok(entries) => {
            for e in entries {
                let value = e
                    .value
                    .as_deref()
                    .map_or_else(|| "(cleared)".to_string(), text);
                println!(
                    "{:>12}  {}  {value}",
                    e.version,
                    rfc3339(e.commit_time_micros)
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(args.json, &e),
    }
}

/// Sets (or, with no value, clears) one key in its own transaction and reports the version.
/// A one-mutation transaction the CLI runs.
#[derive(Debug, Clone)]
enum WriteOp {
    Set(String, String),
    Clear(String),
    ClearRange(String, String),
}

async fn write(args: ClientArgs, op: WriteOp) -> ExitCode {
    let out = async {
        let db = connect(&args).await?;
        db.run(|tx| {
            let op = op.clone();
            async move {
                match op {
                    WriteOp::Set(k, v) => tx.set(k, v),
                    WriteOp::Clear(k) => tx.clear(k),
                    WriteOp::ClearRange(b, e) => tx.clear_range(b, e),
                }
                tx.commit().await
            }
        })
        .await
    }
    .await;
    match out {
        Ok(version) if args.json => {
            let out = match &op {
                WriteOp::Set(k, v) => json!({"key": k, "value": v, "version": version}),
                WriteOp::Clear(k) => json!({"key": k, "value": null, "version": version}),
                WriteOp::ClearRange(b, e) => json!({"begin": b, "end": e, "version": version}),
            };
            println!("{out}");
            ExitCode::SUCCESS
        }
        Ok(version) => {
            println!("OK (version {version})");
            ExitCode::SUCCESS
        }
        Err(e) => fail(args.json, &e),
    }
}

async fn admin(cmd: AdminCommand) -> ExitCode {
    let (args, method, path, body) = match &cmd {
        AdminCommand::Checkpoint { args, database } => {
            let path = match database {
                Some(db) => format!("/v1/checkpoint?database={db}"),
                None => "/v1/checkpoint".to_string(),
            };
            (args, reqwest::Method::POST, path, None)
        }
        AdminCommand::Status { args } => (args, reqwest::Method::GET, "/v1/status".into(), None),
        AdminCommand::Branch {
            name,
            parent,
            at_version,
            at_timestamp,
            args,
        } => {
            let timestamp = match at_timestamp.as_deref().map(parse_timestamp).transpose() {
                Ok(t) => t,
                Err(e) => return fail(args.json, &e),
            };
            let body = json!({
                "name": name,
                "parent": parent,
                "version": at_version,
                "timestamp_micros": timestamp,
            });
            (args, reqwest::Method::POST, "/v1/branch".into(), Some(body))
        }
    };
    let url = format!("{}{path}", args.endpoint.trim_end_matches('/'));
    let client = reqwest::Client::new();
    let mut request = client
        .request(method, &url)
        .timeout(Duration::from_secs(60));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await;
    let response = match response {
        Ok(r) => r,
        Err(e) => return fail(args.json, &Error::unavailable(format!("{url}: {e}"))),
    };
    let status = response.status();
    let body: serde_json::Value = match response.json().await {
        Ok(b) => b,
        Err(e) => {
            return fail(
                args.json,
                &Error::internal(format!("{url}: unreadable answer: {e}")),
            );
        }
    };
    if !status.is_success() {
        let code = body["error"]["code"]
            .as_str()
            .and_then(ErrorKind::from_code)
            .unwrap_or(ErrorKind::Internal);
        let message = body["error"]["message"].as_str().unwrap_or("").to_string();
        return fail(args.json, &Error::new(code, message));
    }
    match (&cmd, args.json) {
        (_, true) | (AdminCommand::Status { .. }, false) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&body).unwrap_or_default()
            );
        }
        (AdminCommand::Checkpoint { .. }, false) => {
            println!(
                "checkpointed: everything up to version {} is in object storage",
                body["remote_consistent_version"]
            );
        }
        (AdminCommand::Branch { .. }, false) => {
            println!(
                "created {} from {} at version {}",
                body["database"].as_str().unwrap_or_default(),
                body["parent"].as_str().unwrap_or_default(),
                body["version"]
            );
        }
    }
    ExitCode::SUCCESS
}
