//! Client commands: one transaction each through the SDK, or one call to the admin API.
//!
//! Every key and value argument is written in the escape syntax of [`crate::escape`] (`\xNN`,
//! `\\`, …) or, with `--hex`, in hex; every key and value printed is written back the same
//! way, so output can be pasted as input. `--json` output holds keys and values as those same
//! strings, which are lossless, and errors as `{"error": {"code", "message"}}` with a non-zero
//! exit status.

use std::fmt::Display;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use ferrisdb_client::{
    AtomicOp, ConnectOptions, Database, Error, ErrorKind, KeySelector, RangeOptions, RetryOptions,
    Version,
};
use ferrisdb_common::DEFAULT_DATABASE;
use ferrisdb_common::atomic::{VERSIONSTAMP_LEN, place_versionstamp, versionstamp_offset};
use ferrisdb_common::error::echo;
use futures::StreamExt;
use serde_json::json;

use crate::escape::{self, Codec};

/// Options every data command takes. Debug shows whether a token is set, never the token.
#[derive(Clone, Args)]
pub struct ClientArgs {
    /// The compute's client API; repeat it or separate with commas to list computes to fail
    /// over to, in order. Default: the compute of the `ferrisdb dev` cluster whose
    /// `./.ferrisdb/cluster.json` is in this directory, else http://127.0.0.1:4500.
    #[arg(long = "endpoint", env = "FERRISDB_ENDPOINT", value_delimiter = ',')]
    pub(crate) endpoints: Vec<String>,
    /// Trust this CA certificate (PEM) for TLS; the endpoints are then https://….
    #[arg(long, env = "FERRISDB_TLS_CA", value_name = "FILE")]
    pub(crate) tls_ca: Option<std::path::PathBuf>,
    /// The bearer token the compute requires (visible in `ps`: prefer --token-file).
    #[arg(long, env = "FERRISDB_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Read the bearer token from this private file (mode 0600; its first token).
    #[arg(
        long,
        env = "FERRISDB_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "token"
    )]
    pub(crate) token_file: Option<std::path::PathBuf>,
    /// The database.
    #[arg(long, default_value = DEFAULT_DATABASE)]
    pub(crate) database: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Keys and values are hex, in arguments and in output, instead of escaped text.
    #[arg(long)]
    pub(crate) hex: bool,
    /// Give up retrying after this many seconds.
    #[arg(long, default_value_t = 5.0, value_parser = parse_seconds)]
    pub(crate) timeout: f64,
}

impl std::fmt::Debug for ClientArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientArgs")
            .field("endpoints", &self.endpoints)
            .field("tls_ca", &self.tls_ca)
            .field("token", &ferrisdb_common::net::redact(&self.token))
            .field("database", &self.database)
            .field("json", &self.json)
            .field("hex", &self.hex)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The longest `--timeout` accepted, in seconds (a year): far past any useful wait, and far
/// inside what a `Duration` and the clock arithmetic on it can hold.
const MAX_TIMEOUT_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// A number of seconds: finite, not negative, at most [`MAX_TIMEOUT_SECS`].
pub(crate) fn parse_seconds(s: &str) -> Result<f64, String> {
    let secs: f64 = s.trim().parse().map_err(|_| {
        format!(
            "{} is not a number of seconds",
            ferrisdb_common::error::echo(s)
        )
    })?;
    if !secs.is_finite() || !(0.0..=MAX_TIMEOUT_SECS).contains(&secs) {
        return Err(format!(
            "{} seconds: give a number from 0 to {MAX_TIMEOUT_SECS}",
            ferrisdb_common::error::echo(s)
        ));
    }
    Ok(secs)
}

impl ClientArgs {
    /// How this command's keys and values are written.
    pub(crate) fn codec(&self) -> Codec {
        Codec { hex: self.hex }
    }

    /// The endpoints to use: those given, else the local dev cluster's compute
    /// ([`crate::local_cluster`]), else the default.
    pub(crate) fn endpoints(&self) -> Result<Vec<String>, Error> {
        crate::local_cluster::client_endpoints(&self.endpoints)
    }

    fn timeout(&self) -> Duration {
        // The parser bounds it; a value set some other way still must not panic here.
        Duration::try_from_secs_f64(self.timeout.clamp(0.0, MAX_TIMEOUT_SECS))
            .unwrap_or(Duration::ZERO)
    }
}

/// Options of admin commands. Debug shows whether a token is set, never the token.
#[derive(Clone, Args)]
pub struct AdminArgs {
    /// The admin HTTP API. Default: that of the `ferrisdb dev` cluster whose
    /// `./.ferrisdb/cluster.json` is in this directory (its compute, or --component), else
    /// http://127.0.0.1:4580.
    #[arg(long, env = "FERRISDB_ADMIN_ENDPOINT")]
    endpoint: Option<String>,
    /// A component of the `./.ferrisdb/cluster.json` cluster by name (safekeeper-1,
    /// pageserver, compute, …) instead of --endpoint.
    #[arg(long, conflicts_with = "endpoint")]
    component: Option<String>,
    /// Trust this CA certificate (PEM) for an `https://` endpoint.
    #[arg(long, env = "FERRISDB_TLS_CA", value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// The admin token (visible in `ps`: prefer --admin-token-file).
    #[arg(long, env = "FERRISDB_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Read the admin token (or the cluster credential) from this private file; default:
    /// `.ferrisdb/cluster.token`, the credential `ferrisdb dev` generates, when it exists.
    #[arg(
        long,
        env = "FERRISDB_ADMIN_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "admin_token"
    )]
    admin_token_file: Option<std::path::PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl std::fmt::Debug for AdminArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminArgs")
            .field("endpoint", &self.endpoint)
            .field("component", &self.component)
            .field("tls_ca", &self.tls_ca)
            .field(
                "admin_token",
                &ferrisdb_common::net::redact(&self.admin_token),
            )
            .field("admin_token_file", &self.admin_token_file)
            .field("json", &self.json)
            .finish()
    }
}

impl AdminArgs {
    /// The token to send: --admin-token, --admin-token-file, the credential a `ferrisdb dev`
    /// of this user recorded for the endpoint's port (`local_credentials`), or dev's
    /// credential in `./.ferrisdb` when present (none: the call goes without one).
    fn token(&self, endpoint: &str) -> Result<Option<String>, Error> {
        if let Some(t) = &self.admin_token {
            return Ok(Some(t.clone()));
        }
        let dev = crate::local_cluster::dev_credential();
        let file = match &self.admin_token_file {
            Some(f) => f.clone(),
            None => match crate::local_credentials::lookup(endpoint) {
                Some(recorded) => recorded,
                None if dev.exists() => dev,
                None => return Ok(None),
            },
        };
        Ok(ferrisdb_server_common::auth::read_token_file(&file)?
            .into_iter()
            .next())
    }

    /// An HTTP client trusting --tls-ca (or the platform's roots) for `https://`.
    fn http_client(&self) -> Result<reqwest::Client, Error> {
        let Some(path) = &self.tls_ca else {
            ferrisdb_common::net::install_crypto_provider();
            return reqwest::Client::builder()
                .build()
                .map_err(|e| Error::internal(format!("HTTP client: {e}")));
        };
        let pem = std::fs::read(path)
            .map_err(|e| Error::invalid(format!("--tls-ca {}: {e}", path.display())))?;
        let config = tls_client_config(&pem)
            .map_err(|e| Error::invalid(format!("--tls-ca {}: {e}", path.display())))?;
        reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .build()
            .map_err(|e| Error::internal(format!("HTTP client: {e}")))
    }
}

/// A rustls client configuration trusting exactly the certificates in `ca_pem`.
fn tls_client_config(ca_pem: &[u8]) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    ferrisdb_common::net::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| e.to_string())?;
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("no certificate in the file".into());
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Which past state a read sees.
#[derive(Debug, Clone, Args)]
pub struct At {
    /// Read at this version instead of the latest.
    #[arg(long, conflicts_with = "at_timestamp")]
    at_version: Option<u64>,
    /// Read as of this time: Unix microseconds, or RFC 3339 (2026-11-22T01:02:03.5Z).
    #[arg(long)]
    at_timestamp: Option<String>,
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

/// Where a versionstamp goes in a template given without FoundationDB's trailing offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StampAt {
    /// At this byte of the template.
    Offset(u32),
    /// Appended: the template is followed by the 10-byte versionstamp.
    End,
}

fn parse_stamp_at(s: &str) -> Result<StampAt, String> {
    if s == "end" {
        return Ok(StampAt::End);
    }
    s.parse()
        .map(StampAt::Offset)
        .map_err(|_| format!("{} is neither a byte offset nor \"end\"", echo(s)))
}

/// The arguments of an atomic operation.
#[derive(Debug, Clone, Args)]
pub struct AtomicArgs {
    /// The operation, by FoundationDB's name: add, bit_and, bit_or, bit_xor, append_if_fits,
    /// max, min, byte_min, byte_max, compare_and_clear, set_versionstamped_key,
    /// set_versionstamped_value.
    pub(crate) op: String,
    /// The key (for set_versionstamped_key, the key template).
    pub(crate) key: String,
    /// The parameter (for set_versionstamped_value, the value template).
    #[arg(allow_hyphen_values = true)]
    pub(crate) param: String,
    /// PARAM is a decimal integer, passed as 8 little-endian bytes (two's complement), the
    /// form add, max, min and the bitwise ops work on.
    #[arg(long)]
    pub(crate) i64: bool,
    /// For the versionstamp ops: the template has no trailing 4-byte offset; put the
    /// versionstamp at this byte of it, or append it with "end".
    #[arg(long, value_parser = parse_stamp_at, value_name = "N|end")]
    pub(crate) stamp_offset: Option<StampAt>,
}

/// An atomic operation ready for [`ferrisdb_client::Transaction::atomic_op`].
#[derive(Debug, Clone)]
pub(crate) struct Atomic {
    /// The operation.
    pub(crate) op: AtomicOp,
    /// The key, or the complete key template.
    pub(crate) key: Bytes,
    /// The parameter, or the complete value template.
    pub(crate) param: Bytes,
}

impl AtomicArgs {
    /// The operation, its key and its parameter as bytes, templates checked.
    pub(crate) fn resolve(&self, codec: Codec) -> Result<Atomic, Error> {
        let op: AtomicOp = self
            .op
            .parse()
            .map_err(|e: ferrisdb_common::atomic::AtomicError| Error::invalid(e.to_string()))?;
        let mut key = codec.decode("key", &self.key)?;
        let mut param = if self.i64 {
            let n: i64 = self.param.parse().map_err(|_| {
                Error::invalid(format!(
                    "param {} is not a decimal 64-bit integer (--i64)",
                    echo(&self.param)
                ))
            })?;
            n.to_le_bytes().to_vec()
        } else {
            codec.decode("param", &self.param)?
        };
        let template = match op {
            AtomicOp::SetVersionstampedKey => Some(("key", &mut key)),
            AtomicOp::SetVersionstampedValue => Some(("param", &mut param)),
            _ => None,
        };
        match (template, self.stamp_offset) {
            (Some((what, t)), at) => {
                match at {
                    Some(StampAt::End) => {
                        let offset = t.len() as u32;
                        t.extend_from_slice(&[0; VERSIONSTAMP_LEN]);
                        t.extend_from_slice(&offset.to_le_bytes());
                    }
                    Some(StampAt::Offset(offset)) => t.extend_from_slice(&offset.to_le_bytes()),
                    None => {}
                }
                versionstamp_offset(t).map_err(|e| {
                    Error::invalid(format!(
                        "{what} template: {e} (or give --stamp-offset N|end to have it added)"
                    ))
                })?;
            }
            (None, Some(_)) => {
                return Err(Error::invalid(format!(
                    "--stamp-offset is for set_versionstamped_key and set_versionstamped_value, not {op}"
                )));
            }
            (None, None) => {}
        }
        Ok(Atomic {
            op,
            key: key.into(),
            param: param.into(),
        })
    }
}

/// The client commands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Set KEY to VALUE and print the commit version.
    Set {
        /// The key.
        key: String,
        /// The value.
        #[arg(allow_hyphen_values = true)]
        value: String,
        #[command(flatten)]
        args: ClientArgs,
    },
    /// Print the value of KEY.
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        at: At,
        #[command(flatten)]
        args: ClientArgs,
    },
    /// Print the key a key selector names (by default the first key at or after KEY).
    #[command(name = "getkey", alias = "get-key")]
    GetKey {
        #[command(flatten)]
        selector: SelectorArgs,
        #[command(flatten)]
        at: At,
        #[command(flatten)]
        args: ClientArgs,
    },
    /// Print every version of KEY with its commit time, oldest first.
    History {
        /// The key.
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
        /// The key.
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
    /// Print the pairs with BEGIN <= key < END, streamed in batches.
    #[command(alias = "getrange")]
    Scan {
        /// First key of the range.
        begin: String,
        /// First key past the range.
        end: String,
        /// At most this many pairs (0: all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
        /// From the end of the range backwards.
        #[arg(long)]
        reverse: bool,
        #[command(flatten)]
        at: At,
        #[command(flatten)]
        args: ClientArgs,
    },
    /// Apply an atomic operation (FoundationDB's semantics) to KEY and print the commit
    /// version; the versionstamp ops also print the versionstamp.
    Atomic {
        #[command(flatten)]
        atomic: AtomicArgs,
        #[command(flatten)]
        args: ClientArgs,
    },
    /// Print the latest committed version (a new transaction's read version).
    #[command(name = "getversion", alias = "get-version")]
    GetVersion {
        #[command(flatten)]
        args: ClientArgs,
    },
    /// Print the version a time maps to: the latest committed at or before it.
    #[command(name = "versionat", alias = "version-at")]
    VersionAt {
        /// Unix microseconds, or RFC 3339 (2026-11-22T01:02:03.5Z).
        timestamp: String,
        #[command(flatten)]
        args: ClientArgs,
    },
    /// Wait until KEY changes, then print its new value and the version that changed it.
    Watch {
        /// The key.
        key: String,
        /// Keep watching and print every change (until interrupted).
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        args: ClientArgs,
    },
    /// An interactive shell (line editing, history, transactions across commands); reads
    /// commands from stdin when it is not a terminal.
    Shell {
        /// Run these `;`-separated commands instead of reading any, then exit.
        #[arg(long)]
        exec: Option<String>,
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

/// Prints one line on stdout. A reader that went away (`| head`) is not an error worth a
/// panic, which `println!` would give.
pub(crate) fn say(line: impl Display) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// A JSON string literal.
fn js(s: impl Into<String>) -> serde_json::Value {
    serde_json::Value::String(s.into())
}

/// Connects to the database the arguments name.
pub(crate) async fn connect(args: &ClientArgs) -> Result<Database, Error> {
    let mut options = ConnectOptions::new(&args.endpoints()?.join(","))
        .database(&args.database)
        .retry(RetryOptions {
            timeout: args.timeout(),
            ..RetryOptions::default()
        });
    if let Some(path) = &args.tls_ca {
        let pem = std::fs::read(path)
            .map_err(|e| Error::invalid(format!("--tls-ca {}: {e}", path.display())))?;
        options = options.tls_ca_pem(pem);
    }
    if let Some(token) = &args.token {
        options = options.token(token);
    }
    if let Some(path) = &args.token_file {
        let token = ferrisdb_server_common::auth::read_token_file(path)?
            .into_iter()
            .next()
            .unwrap_or_default();
        options = options.token(&token);
    }
    Database::connect_with(options).await
}

fn fail(json: bool, e: &Error) -> ExitCode {
    if json {
        say(json!({"error": {"code": e.code(), "message": e.message()}}));
    } else {
        eprintln!("error: {e}");
    }
    ExitCode::FAILURE
}

fn finish(json: bool, result: Result<(), Error>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(json, &e),
    }
}

/// The version a read pinned by `at` happens at, if it is pinned.
async fn resolve_at(db: &Database, at: &At) -> Result<Option<Version>, Error> {
    match &at.at_timestamp {
        Some(ts) => Ok(Some(db.version_at(parse_timestamp(ts)?).await?)),
        None => Ok(at.at_version.map(Version)),
    }
}

/// Runs one client command, printing its outcome.
pub async fn run(cmd: ClientCommand) -> ExitCode {
    match cmd {
        ClientCommand::Admin { command } => admin(command).await,
        ClientCommand::Shell { exec, args } => crate::shell::run(args, exec).await,
        ClientCommand::Scan {
            begin,
            end,
            limit,
            reverse,
            at,
            args,
        } => scan(&args, &begin, &end, limit, reverse, &at).await,
        ClientCommand::Changes {
            from,
            follow,
            limit,
            args,
        } => changes(args, from, follow, limit).await,
        ClientCommand::Set { key, value, args } => {
            let op = async {
                let codec = args.codec();
                Ok(WriteOp::Set(
                    codec.decode("key", &key)?.into(),
                    codec.decode("value", &value)?.into(),
                ))
            };
            finish(args.json, write(&args, op.await).await)
        }
        ClientCommand::Clear { key, args } => {
            let op = args
                .codec()
                .decode("key", &key)
                .map(|k| WriteOp::Clear(k.into()));
            finish(args.json, write(&args, op).await)
        }
        ClientCommand::ClearRange { begin, end, args } => {
            let codec = args.codec();
            let op = codec.decode("begin", &begin).and_then(|b| {
                Ok(WriteOp::ClearRange(
                    b.into(),
                    codec.decode("end", &end)?.into(),
                ))
            });
            finish(args.json, write(&args, op).await)
        }
        ClientCommand::Atomic { atomic, args } => {
            let op = atomic.resolve(args.codec()).map(WriteOp::Atomic);
            finish(args.json, write(&args, op).await)
        }
        ClientCommand::History {
            key,
            from,
            to,
            args,
        } => finish(args.json, history(&args, &key, from, to).await),
        ClientCommand::Get { key, at, args } => finish(args.json, get(&args, &key, &at).await),
        ClientCommand::GetKey { selector, at, args } => {
            finish(args.json, get_key(&args, &selector, &at).await)
        }
        ClientCommand::GetVersion { args } => finish(args.json, get_version(&args).await),
        ClientCommand::VersionAt { timestamp, args } => {
            finish(args.json, version_at(&args, &timestamp).await)
        }
        ClientCommand::Watch { key, follow, args } => {
            finish(args.json, watch(&args, &key, follow).await)
        }
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

async fn version_at(args: &ClientArgs, timestamp: &str) -> Result<(), Error> {
    let micros = parse_timestamp(timestamp)?;
    let db = connect(args).await?;
    let version = db.version_at(micros).await?;
    if args.json {
        say(json!({
            "timestamp_micros": micros,
            "timestamp": rfc3339(micros),
            "version": version,
        }));
    } else {
        say(version);
    }
    Ok(())
}

/// Buffered stdout for long outputs, which notices when its reader has gone away so a scan
/// piped into `head` stops instead of reading the rest of the range for nobody.
struct Out {
    w: std::io::BufWriter<std::io::Stdout>,
    closed: bool,
}

impl Out {
    fn new() -> Out {
        Out {
            w: std::io::BufWriter::new(std::io::stdout()),
            closed: false,
        }
    }

    fn put(&mut self, s: impl Display) {
        if !self.closed && write!(self.w, "{s}").is_err() {
            self.closed = true;
        }
    }

    fn flush(&mut self) {
        if !self.closed && self.w.flush().is_err() {
            self.closed = true;
        }
    }
}

/// Streams a range read. The read version is fixed first, so when a batch fails with a
/// retryable error the scan resumes after the last row printed, in a new transaction at the
/// same version: the output is one consistent snapshot however many retries it took.
async fn scan(
    args: &ClientArgs,
    begin: &str,
    end: &str,
    limit: usize,
    reverse: bool,
    at: &At,
) -> ExitCode {
    let codec = args.codec();
    let setup = async {
        let b = Bytes::from(codec.decode("begin", begin)?);
        let e = Bytes::from(codec.decode("end", end)?);
        let db = connect(args).await?;
        let version = match resolve_at(&db, at).await? {
            Some(v) => v,
            None => db.run(|tx| async move { tx.read_version().await }).await?,
        };
        Ok::<_, Error>((db, b, e, version))
    };
    let (db, mut b, mut e, version) = match setup.await {
        Ok(s) => s,
        Err(err) => return fail(args.json, &err),
    };
    let mut out = Out::new();
    if args.json {
        out.put(format_args!(
            "{{\"begin\":{},\"end\":{},\"version\":{version},\"reverse\":{reverse},\"rows\":[",
            js(codec.encode(&b)),
            js(codec.encode(&e)),
        ));
    }
    let mut left = (limit != 0).then_some(limit);
    let mut rows = 0usize;
    let mut backoff = Duration::from_millis(5);
    let mut progress = Instant::now();
    let failure = 'scan: loop {
        let tx = db.create_transaction();
        if let Err(err) = tx.set_read_version(version) {
            break 'scan Some(err);
        }
        let opts = RangeOptions {
            limit: left.unwrap_or(0),
            reverse,
            ..RangeOptions::default()
        };
        let mut stream = tx.get_range_stream(b.clone(), e.clone(), opts);
        loop {
            match stream.next().await {
                None => break 'scan None,
                Some(Ok((k, v))) => {
                    if args.json {
                        let sep = if rows == 0 { "" } else { "," };
                        out.put(format_args!(
                            "{sep}{}",
                            json!({"key": codec.encode(&k), "value": codec.encode(&v)})
                        ));
                    } else {
                        out.put(format_args!(
                            "{} = {}\n",
                            codec.encode(&k),
                            codec.encode(&v)
                        ));
                    }
                    if out.closed {
                        return ExitCode::SUCCESS;
                    }
                    rows += 1;
                    left = left.map(|n| n - 1);
                    if reverse {
                        e = k;
                    } else {
                        b = key_after(&k);
                    }
                    progress = Instant::now();
                    backoff = Duration::from_millis(5);
                }
                Some(Err(err))
                    if err.kind().is_retryable()
                        && progress.elapsed() + backoff < args.timeout() =>
                {
                    tracing::debug!(error = %err, rows, "scan batch failed; resuming");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue 'scan;
                }
                Some(Err(err)) => break 'scan Some(err),
            }
        }
    };
    let code = match (&failure, args.json) {
        (None, true) => {
            out.put("]}\n");
            ExitCode::SUCCESS
        }
        (None, false) => ExitCode::SUCCESS,
        // The rows already printed stay a valid JSON document, with the error inside it.
        (Some(err), true) => {
            out.put(format_args!(
                "],\"error\":{}}}\n",
                json!({"code": err.code(), "message": err.message()})
            ));
            ExitCode::FAILURE
        }
        (Some(err), false) => {
            out.flush();
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    };
    out.flush();
    code
}

fn key_after(key: &[u8]) -> Bytes {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.extend_from_slice(key);
    k.push(0);
    Bytes::from(k)
}

/// Unix microseconds from an integer or an RFC 3339 time.
pub(crate) fn parse_timestamp(s: &str) -> Result<u64, Error> {
    if let Ok(micros) = s.parse::<u64>() {
        return Ok(micros);
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        Error::invalid(format!(
            "timestamp {}: {e} (use Unix microseconds or RFC 3339)",
            echo(s)
        ))
    })?;
    t.duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| Error::invalid(format!("timestamp {} is before 1970", echo(s))))
        .and_then(|d| {
            u64::try_from(d.as_micros())
                .map_err(|_| Error::invalid(format!("timestamp {} is too late", echo(s))))
        })
}

/// The last microsecond RFC 3339 can write (9999-12-31T23:59:59.999999Z).
const MAX_RFC3339_MICROS: u64 = 253_402_300_799_999_999;

/// `micros` as an RFC 3339 time; `None` past the year 9999, which RFC 3339 cannot write.
pub(crate) fn rfc3339(micros: u64) -> Option<String> {
    if micros > MAX_RFC3339_MICROS {
        return None;
    }
    let t = std::time::UNIX_EPOCH.checked_add(Duration::from_micros(micros))?;
    Some(humantime::format_rfc3339_micros(t).to_string())
}

/// [`rfc3339`] for text output: a placeholder where no RFC 3339 time exists.
pub(crate) fn rfc3339_text(micros: u64) -> String {
    rfc3339(micros).unwrap_or_else(|| format!("(after year 9999: {micros} µs)"))
}

async fn changes(args: ClientArgs, from: u64, follow: bool, limit: Option<usize>) -> ExitCode {
    let codec = args.codec();
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
                    json!({"op": "set", "key": codec.encode(key), "value": codec.encode(value)})
                }
                ferrisdb_client::Mutation::Clear { key } => {
                    json!({"op": "clear", "key": codec.encode(key)})
                }
                ferrisdb_client::Mutation::ClearRange { begin, end } => {
                    json!({"op": "clear_range", "begin": codec.encode(begin), "end": codec.encode(end)})
                }
            })
            .collect();
        // `--follow` runs until interrupted, so each record must reach the reader at once.
        let line = json!({
            "version": record.version,
            "commit_time_micros": record.commit_time_micros,
            "mutations": mutations,
        });
        if writeln!(std::io::stdout(), "{line}").is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

async fn history(args: &ClientArgs, key: &str, from: u64, to: u64) -> Result<(), Error> {
    let codec = args.codec();
    let key = codec.decode("key", key)?;
    let db = connect(args).await?;
    let entries = db.history(key.clone(), Version(from), Version(to)).await?;
    if args.json {
        let versions: Vec<_> = entries
            .iter()
            .map(|e| {
                json!({
                    "version": e.version,
                    "commit_time_micros": e.commit_time_micros,
                    "commit_time": rfc3339(e.commit_time_micros),
                    "value": e.value.as_deref().map(|v| codec.encode(v)),
                })
            })
            .collect();
        say(json!({"key": codec.encode(&key), "versions": versions}));
    } else {
        for e in entries {
            let value = e
                .value
                .as_deref()
                .map_or_else(|| "(cleared)".to_string(), |v| codec.encode(v));
            say(format_args!(
                "{:>12}  {}  {value}",
                e.version,
                rfc3339_text(e.commit_time_micros)
            ));
        }
    }
    Ok(())
}

/// A one-mutation transaction the CLI runs.
#[derive(Debug, Clone)]
enum WriteOp {
    Set(Bytes, Bytes),
    Clear(Bytes),
    ClearRange(Bytes, Bytes),
    Atomic(Atomic),
}

async fn write(args: &ClientArgs, op: Result<WriteOp, Error>) -> Result<(), Error> {
    let op = op?;
    let codec = args.codec();
    let db = connect(args).await?;
    let (version, stamp) = db
        .run(|tx| {
            let op = op.clone();
            async move {
                match op {
                    WriteOp::Set(k, v) => tx.set(k, v),
                    WriteOp::Clear(k) => tx.clear(k),
                    WriteOp::ClearRange(b, e) => tx.clear_range(b, e),
                    WriteOp::Atomic(a) => tx.atomic_op(a.op, a.key, a.param),
                }
                let version = tx.commit().await?;
                Ok((version, tx.versionstamp()))
            }
        })
        .await?;
    // What a versionstamp op actually wrote: the template with the stamp in place.
    let stamped = match (&op, &stamp) {
        (WriteOp::Atomic(a), Some(s)) if a.op.is_versionstamp() => {
            let mut raw = [0u8; VERSIONSTAMP_LEN];
            if s.len() == VERSIONSTAMP_LEN {
                raw.copy_from_slice(s);
            }
            let template = match a.op {
                AtomicOp::SetVersionstampedKey => &a.key,
                _ => &a.param,
            };
            place_versionstamp(template, &raw).ok()
        }
        _ => None,
    };
    if args.json {
        let mut out = match &op {
            WriteOp::Set(k, v) => {
                json!({"key": codec.encode(k), "value": codec.encode(v), "version": version})
            }
            WriteOp::Clear(k) => json!({"key": codec.encode(k), "value": null, "version": version}),
            WriteOp::ClearRange(b, e) => {
                json!({"begin": codec.encode(b), "end": codec.encode(e), "version": version})
            }
            WriteOp::Atomic(a) => json!({
                "op": a.op.name(),
                "key": codec.encode(&a.key),
                "param": codec.encode(&a.param),
                "version": version,
            }),
        };
        if let (Some(s), WriteOp::Atomic(a)) = (&stamp, &op)
            && a.op.is_versionstamp()
        {
            out["versionstamp"] = js(escape::hex(s));
            let field = match a.op {
                AtomicOp::SetVersionstampedKey => "written_key",
                _ => "written_value",
            };
            out[field] = js(stamped
                .as_deref()
                .map(|w| codec.encode(w))
                .unwrap_or_default());
        }
        say(out);
    } else {
        match (&op, &stamp, &stamped) {
            (WriteOp::Atomic(a), Some(s), Some(w)) if a.op.is_versionstamp() => {
                let what = match a.op {
                    AtomicOp::SetVersionstampedKey => "key",
                    _ => "value",
                };
                say(format_args!(
                    "OK (version {version}, versionstamp {}, {what} {})",
                    escape::hex(s),
                    codec.encode(w)
                ));
            }
            _ => say(format_args!("OK (version {version})")),
        }
    }
    Ok(())
}

/// Waits for KEY to change. Each round reads the key and watches it from that same read
/// (`Transaction::watch` after a read-only commit), so with `--follow` no final state is
/// missed: a change landing between two watches shows up as the next round's read.
async fn watch(args: &ClientArgs, key: &str, follow: bool) -> Result<(), Error> {
    let codec = args.codec();
    let key = Bytes::from(codec.decode("key", key)?);
    let db = connect(args).await?;
    let show = |value: Option<&[u8]>, version: Version| {
        if args.json {
            say(json!({
                "key": codec.encode(&key),
                "value": value.map(|v| codec.encode(v)),
                "version": version,
            }));
        } else {
            let value = value.map_or_else(|| "(cleared)".to_string(), |v| codec.encode(v));
            say(format_args!("{version}  {value}"));
        }
    };
    let mut last: Option<Option<Bytes>> = None;
    loop {
        let tx = db.create_transaction();
        let now = tx.get(key.clone()).await?;
        let read_at = tx.commit().await?;
        if last.as_ref().is_some_and(|l| *l != now) {
            show(now.as_deref(), read_at);
        }
        let event = tx.watch(key.clone()).await?;
        show(event.value.as_deref(), event.version);
        if !follow {
            return Ok(());
        }
        last = Some(event.value);
    }
}

async fn admin(cmd: AdminCommand) -> ExitCode {
    let (args, method, path, body) = match &cmd {
        AdminCommand::Checkpoint { args, database } => {
            let path = match database {
                // A valid name is safe in a query string as it is.
                Some(db) => match ferrisdb_common::validate_database_name(db) {
                    Ok(()) => format!("/v1/checkpoint?database={db}"),
                    Err(e) => return fail(args.json, &e),
                },
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
    let endpoint = match crate::local_cluster::admin_endpoint(
        args.endpoint.as_deref(),
        args.component.as_deref(),
    ) {
        Ok(e) => e,
        Err(e) => return fail(args.json, &e),
    };
    let url = format!("{}{path}", endpoint.trim_end_matches('/'));
    let (client, token) = match args
        .http_client()
        .and_then(|c| Ok((c, args.token(&endpoint)?)))
    {
        Ok(ct) => ct,
        Err(e) => return fail(args.json, &e),
    };
    let mut request = client
        .request(method, &url)
        .timeout(Duration::from_secs(60));
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(token) = &token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await;
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            // reqwest's own message hides the cause (refused, certificate unknown, …).
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why.push_str(&format!(": {s}"));
                source = s.source();
            }
            return fail(args.json, &Error::unavailable(format!("{url}: {why}")));
        }
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
            say(serde_json::to_string_pretty(&body).unwrap_or_default());
        }
        (AdminCommand::Checkpoint { .. }, false) => {
            say(format_args!(
                "checkpointed: everything up to version {} is in object storage",
                body["remote_consistent_version"]
            ));
        }
        (AdminCommand::Branch { .. }, false) => {
            say(format_args!(
                "created {} from {} at version {}",
                body["database"].as_str().unwrap_or_default(),
                body["parent"].as_str().unwrap_or_default(),
                body["version"]
            ));
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A deterministic generator (fixed seed): reproducible, and varied enough to reach the
    /// corners a hand-picked list misses.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[(self.next() % from.len() as u64) as usize]
        }

        /// A string built from pieces parsers trip on, and random characters.
        fn hostile(&mut self) -> String {
            const PIECES: &[&str] = &[
                "0",
                "1",
                "9",
                "-",
                "+",
                ".",
                "e",
                "E",
                "inf",
                "-inf",
                "NaN",
                "infinity",
                "1e308",
                "1e-400",
                "18446744073709551615",
                "18446744073709551616",
                "-1",
                "99999999999999999999999999",
                "2147483647",
                "-2147483648",
                "9999",
                "10000",
                "-12-31T23:59:59",
                "1970-01-01",
                "T",
                "Z",
                ":",
                "\\",
                "\\x",
                "\\xff",
                "\\x0",
                "\\q",
                "0x",
                "ff",
                "g",
                "end",
                " ",
                "\t",
                "\n",
                "\0",
                "é",
                "✓",
                "\u{202e}",
                "\u{feff}",
                "--",
                "=",
                ",",
                "\"",
                "'",
                ";",
                "%",
                "{}",
            ];
            let mut s = String::new();
            for _ in 0..self.next() % 8 {
                if self.next().is_multiple_of(5) {
                    s.push(char::from_u32((self.next() % 0x11_0000) as u32).unwrap_or('\u{fffd}'));
                } else {
                    s.push_str(self.pick(PIECES));
                }
            }
            s
        }
    }

    /// The client arguments of `ferrisdb getversion ARGS…`.
    fn client_args(args: &[&str]) -> ClientArgs {
        let argv = ["ferrisdb", "getversion"].iter().chain(args);
        match crate::Cli::try_parse_from(argv).unwrap().command {
            crate::Command::Client(ClientCommand::GetVersion { args }) => args,
            _ => panic!("not getversion"),
        }
    }

    #[test]
    fn value_parsers_answer_every_string_without_panicking() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let mut accepted = [0usize; 5];
        let mut template = client_args(&[]);
        for s in [
            "--timeout=1e9",
            "--timeout=inf",
            "--timeout=-1",
            "--timeout=NaN",
        ] {
            assert!(
                crate::Cli::try_parse_from(["ferrisdb", "getversion", s]).is_err(),
                "{s}"
            );
        }
        assert_eq!(
            client_args(&["--timeout=0.5"]).timeout(),
            Duration::from_millis(500)
        );
        for round in 0..30_000u32 {
            let s = rng.hostile();
            if let Ok(secs) = parse_seconds(&s) {
                accepted[0] += 1;
                assert!(secs.is_finite() && secs >= 0.0, "{s:?} -> {secs}");
                template.timeout = secs;
                let _ = template.timeout();
            }
            if let Ok(micros) = parse_timestamp(&s) {
                accepted[1] += 1;
                let _ = rfc3339(micros);
                let _ = rfc3339_text(micros);
            }
            accepted[2] += usize::from(escape::parse("key", &s).is_ok());
            accepted[3] += usize::from(escape::parse_hex("key", &s).is_ok());
            accepted[4] += usize::from(parse_stamp_at(&s).is_ok());
            // Numbers through clap as every u64/i32 flag takes them (fewer rounds: slow).
            if round.is_multiple_of(50) {
                let _ = crate::Cli::try_parse_from(["ferrisdb", "get", "k", "--at-version", &s]);
                let _ = crate::Cli::try_parse_from(["ferrisdb", "getkey", "k", "--offset", &s]);
                let _ = crate::Cli::try_parse_from(["ferrisdb", "changes", "--limit", &s]);
            }
        }
        // The generator reaches both outcomes of every parser, or it tests nothing.
        assert!(accepted.iter().all(|&n| n > 0), "{accepted:?}");
        for micros in [0, 1, MAX_RFC3339_MICROS, MAX_RFC3339_MICROS + 1, u64::MAX] {
            let _ = rfc3339_text(micros);
        }
        assert!(rfc3339(u64::MAX).is_none());
        assert_eq!(
            rfc3339(MAX_RFC3339_MICROS).as_deref(),
            Some("9999-12-31T23:59:59.999999Z")
        );
        for bad in ["inf", "-1", "NaN", "1e300", "-inf", ""] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn whole_command_lines_parse_or_fail_without_panicking() {
        const WORDS: &[&str] = &[
            "get",
            "set",
            "getkey",
            "history",
            "changes",
            "clear",
            "clearrange",
            "scan",
            "atomic",
            "getversion",
            "versionat",
            "watch",
            "admin",
            "branch",
            "checkpoint",
            "status",
            "--timeout",
            "--at-version",
            "--at-timestamp",
            "--offset",
            "--selector",
            "--limit",
            "--from",
            "--to",
            "--hex",
            "--json",
            "--i64",
            "--stamp-offset",
            "--database",
            "--endpoint",
            "--token",
            "add",
            "set_versionstamped_key",
            "k",
            "v",
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2_000 {
            let mut argv = vec!["ferrisdb".to_string()];
            for _ in 0..rng.next() % 7 {
                if rng.next().is_multiple_of(2) {
                    argv.push(rng.pick(WORDS).to_string());
                } else {
                    argv.push(rng.hostile());
                }
            }
            let Ok(cli) = crate::Cli::try_parse_from(&argv) else {
                continue;
            };
            // What runs before any connection: decoding keys, selectors, atomic templates.
            if let crate::Command::Client(cmd) = cli.command {
                match cmd {
                    ClientCommand::Atomic { atomic, args } => {
                        let _ = atomic.resolve(args.codec());
                        let _ = args.timeout();
                    }
                    ClientCommand::GetKey { selector, args, .. } => {
                        let _ = selector.selector(args.codec());
                    }
                    ClientCommand::Get { key, args, .. } | ClientCommand::Clear { key, args } => {
                        let _ = args.codec().decode("key", &key);
                        let _ = args.timeout();
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn debug_never_prints_a_token() {
        let args = client_args(&["--token", "tok-s3cret"]);
        let shown = format!("{args:?}");
        assert!(
            !shown.contains("tok-s3cret") && shown.contains("<redacted>"),
            "{shown}"
        );
        let cli = crate::Cli::try_parse_from([
            "ferrisdb",
            "admin",
            "status",
            "--admin-token",
            "tok-s3cret",
        ])
        .unwrap();
        let crate::Command::Client(ClientCommand::Admin { command }) = cli.command else {
            panic!("not an admin command");
        };
        let shown = format!("{command:?}");
        assert!(
            !shown.contains("tok-s3cret") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
