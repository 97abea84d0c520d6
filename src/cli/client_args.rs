//! The options every data command takes, and the connection they describe.

use std::time::Duration;

use clap::Args;
use ferrisdb_client::{ConnectOptions, Database, Error, RetryOptions};
use ferrisdb_common::DEFAULT_DATABASE;

use crate::escape::Codec;

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
pub(crate) const MAX_TIMEOUT_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// A number of seconds: finite, not negative, at most [`MAX_TIMEOUT_SECS`].
pub fn parse_seconds(s: &str) -> Result<f64, String> {
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

    /// How long the command retries, as a `Duration`.
    pub(crate) fn timeout(&self) -> Duration {
        // The parser bounds it; a value set some other way still must not panic here.
        Duration::try_from_secs_f64(self.timeout.clamp(0.0, MAX_TIMEOUT_SECS))
            .unwrap_or(Duration::ZERO)
    }
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
