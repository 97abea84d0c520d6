//! `ferrisdb admin checkpoint | compact | gc | branch | status`: calls to a process's admin
//! HTTP API.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use ferrisdb_client::{Error, ErrorKind};
use serde_json::json;

use super::output::{fail, say};
use super::time::parse_timestamp;

/// Options of admin commands. Debug shows whether a token is set, never the token.
#[derive(Clone, Args)]
pub struct AdminArgs {
    /// The admin HTTP API. Default: that of the `ferrisdb dev` cluster whose
    /// `./.ferrisdb/cluster.json` is in this directory (its compute, or --component), else
    /// http://127.0.0.1:4580.
    #[arg(long, env = "FERRISDB_ADMIN_ENDPOINT")]
    pub(crate) endpoint: Option<String>,
    /// A component of the `./.ferrisdb/cluster.json` cluster by name (safekeeper-1,
    /// pageserver, compute, …) instead of --endpoint.
    #[arg(long, conflicts_with = "endpoint")]
    pub(crate) component: Option<String>,
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
    pub(crate) json: bool,
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
    /// credential in `./.ferrisdb` when present (none: the call goes without one). A
    /// credential found on disk rather than named comes with the file it was found in: it
    /// goes only to a loopback endpoint, and only once that server has proved it holds it
    /// ([`prove_identity`]).
    fn token(&self, endpoint: &str) -> Result<Option<Token>, Error> {
        if let Some(t) = &self.admin_token {
            return Ok(Some(Token {
                value: t.clone(),
                found_in: None,
            }));
        }
        let (file, found) = match &self.admin_token_file {
            Some(f) => (f.clone(), false),
            None => match crate::local_credentials::lookup(endpoint) {
                Some(recorded) => (recorded, true),
                None => {
                    let dev = crate::local_cluster::dev_credential();
                    if !(crate::local_credentials::is_loopback(endpoint) && dev.exists()) {
                        return Ok(None);
                    }
                    (dev, true)
                }
            },
        };
        let value = ferrisdb_server_common::auth::read_token_file(&file)?
            .into_iter()
            .next();
        Ok(value.map(|value| Token {
            value,
            found_in: found.then_some(file),
        }))
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

/// The admin credential a call carries.
struct Token {
    value: String,
    /// Where it was found, when the user did not name it.
    found_in: Option<std::path::PathBuf>,
}

/// Asks the server at `endpoint` to prove it holds `token` (`GET /v1/identity` with a fresh
/// challenge) before a credential found on disk is sent to it: a pointer outlives the
/// cluster that left it, and whoever listens on its port now must not receive the cluster's
/// secret (ferrisdb_server_common::identity).
async fn prove_identity(
    client: &reqwest::Client,
    endpoint: &str,
    token: &str,
    found_in: &std::path::Path,
) -> Result<(), Error> {
    use ferrisdb_server_common::identity;
    let port = url::Url::parse(endpoint)
        .ok()
        .and_then(|u| u.port_or_known_default())
        .ok_or_else(|| Error::invalid(format!("{endpoint}: no port")))?;
    let challenge = identity::new_challenge()?;
    let url = format!(
        "{}{}?challenge={challenge}",
        endpoint.trim_end_matches('/'),
        identity::IDENTITY_PATH
    );
    let refused = |why: String| {
        Error::new(
            ErrorKind::Unauthenticated,
            format!(
                "{endpoint} did not prove it holds the cluster credential found in {} ({why}); \
                 it was not sent. Is the cluster that left it still running on this port? \
                 Pass --admin-token-file to send a credential anyway",
                found_in.display()
            ),
        )
    };
    let answer = client
        .get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| Error::unavailable(format!("{url}: {e}")))?;
    if !answer.status().is_success() {
        return Err(refused(format!("it answered {}", answer.status())));
    }
    let body: serde_json::Value = answer
        .json()
        .await
        .map_err(|e| refused(format!("an unreadable answer: {e}")))?;
    let proofs: Vec<String> = body["proofs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if identity::proves(token, port, &challenge, &proofs) {
        Ok(())
    } else {
        Err(refused("no proof matched".into()))
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
    /// Merge the database's L0 delta layers into L1 layers now (the pageserver does once
    /// there are enough of them).
    Compact {
        /// The database (default: the compute's own).
        #[arg(long)]
        database: Option<String>,
        #[command(flatten)]
        args: AdminArgs,
    },
    /// Collect garbage now: raise the retention horizon as far as the retention window allows
    /// and delete what only reads below it needed (the pageserver does after each checkpoint).
    Gc {
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
        #[arg(
            long,
            conflicts_with = "at_timestamp",
            value_parser = clap::value_parser!(u64).range(..=i64::MAX as u64)
        )]
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
    /// List the databases the pageserver holds: root databases and branches (with parent and
    /// branch point), and which of them the compute serves.
    Databases {
        #[command(flatten)]
        args: AdminArgs,
    },
}

impl AdminCommand {
    /// Makes the call and prints its answer.
    pub async fn execute(self) -> ExitCode {
        admin(self).await
    }
}

async fn admin(cmd: AdminCommand) -> ExitCode {
    let (args, method, path, body) = match &cmd {
        AdminCommand::Checkpoint { args, database }
        | AdminCommand::Compact { args, database }
        | AdminCommand::Gc { args, database } => {
            let route = match &cmd {
                AdminCommand::Compact { .. } => "/v1/compact",
                AdminCommand::Gc { .. } => "/v1/gc",
                _ => "/v1/checkpoint",
            };
            let path = match database {
                // A valid name is safe in a query string as it is.
                Some(db) => match ferrisdb_common::validate_database_name(db) {
                    Ok(()) => format!("{route}?database={db}"),
                    Err(e) => return fail(args.json, &e),
                },
                None => route.to_string(),
            };
            (args, reqwest::Method::POST, path, None)
        }
        AdminCommand::Status { args } => (args, reqwest::Method::GET, "/v1/status".into(), None),
        AdminCommand::Databases { args } => {
            (args, reqwest::Method::GET, "/v1/databases".into(), None)
        }
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
    // Asked for TLS but given a cleartext endpoint (one character off): the token would
    // leave in clear before anything failed.
    if args.tls_ca.is_some() && !endpoint.starts_with("https://") {
        return fail(
            args.json,
            &Error::invalid(format!(
                "endpoint {endpoint:?}: --tls-ca is given, so the endpoint must be https:// (over http:// the admin token would travel in clear)"
            )),
        );
    }
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
        if let Some(found_in) = &token.found_in
            && let Err(e) = prove_identity(&client, &endpoint, &token.value, found_in).await
        {
            return fail(args.json, &e);
        }
        request = request.bearer_auth(&token.value);
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
        let mut message = body["error"]["message"].as_str().unwrap_or("").to_string();
        // Only a compute has these routes (it names the database and asks its pageserver).
        let compute_only = matches!(
            cmd,
            AdminCommand::Checkpoint { .. }
                | AdminCommand::Compact { .. }
                | AdminCommand::Gc { .. }
                | AdminCommand::Branch { .. }
        );
        if status == reqwest::StatusCode::NOT_FOUND && compute_only {
            message.push_str(
                " (checkpoint, compact, gc and branch go to a compute's admin API, which asks \
                 its pageserver: --component compute, or the compute's admin endpoint)",
            );
        }
        return fail(args.json, &Error::new(code, message));
    }
    match (&cmd, args.json) {
        // One line, as every other command's --json answer.
        (_, true) => say(&body),
        (AdminCommand::Status { .. }, false) => {
            say(serde_json::to_string_pretty(&body).unwrap_or_default());
        }
        (AdminCommand::Databases { .. }, false) => {
            for d in body["databases"].as_array().into_iter().flatten() {
                let name = d["name"].as_str().unwrap_or_default();
                let origin = match d["parent"].as_str() {
                    Some(parent) => {
                        format!("branch of {parent} at version {}", d["branch_version"])
                    }
                    None => "root".to_string(),
                };
                let served = match d["served"].as_bool() {
                    Some(true) => ", served here",
                    Some(false) => ", not served here",
                    None => "",
                };
                say(format_args!("{name}\t{origin}{served}"));
            }
        }
        (AdminCommand::Compact { .. } | AdminCommand::Gc { .. }, false) => {
            say(format_args!(
                "{}: {} layers, versions from {} on retained, everything up to version {} in object storage",
                body["database"].as_str().unwrap_or_default(),
                body["layers"],
                body["gc_horizon"],
                body["remote_consistent_version"]
            ));
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
            if let Some(why) = body["not_served_yet"].as_str() {
                eprintln!("warning: the branch is not served yet: {why}");
            }
        }
    }
    ExitCode::SUCCESS
}
