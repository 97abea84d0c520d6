//! TLS and credentials of a server process (docs/security.md).

use std::path::PathBuf;

use crate::auth::{self, Security, Tokens};
use crate::serve::ServerTls;

/// TLS and credentials of a server process: every server flattens these into its `Args`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct SecurityArgs {
    /// Serve every listener (gRPC and admin HTTP) over TLS: certificate chain (PEM).
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Serve every listener over TLS: private key (PEM).
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Trust this CA certificate (PEM) when calling peers at `https://` endpoints.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// The cluster credential: a private file (mode 0600) of hex secrets of at least 32
    /// bytes, one a line. The first is sent on internal calls; every line is accepted, so a
    /// rotation lists the current and the next one.
    #[arg(long, value_name = "FILE")]
    pub cluster_token_file: Option<PathBuf>,
    /// Tokens accepted on the admin HTTP API: a private file, one a line (the cluster
    /// credential is accepted there too).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Serve on non-loopback addresses even without authentication (warned at start).
    #[arg(long)]
    pub insecure: bool,
}

impl SecurityArgs {
    /// Reads the files, installs the credential and CA used on internal calls, and returns
    /// what the servers require; `client` are the client API's tokens (computes only).
    pub fn load(&self, client: Vec<String>) -> ferrisdb_common::Result<Security> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some(ServerTls::from_files(c, k)?),
            _ => None,
        };
        let cluster = match &self.cluster_token_file {
            Some(p) => auth::read_cluster_token_file(p)?,
            None => Vec::new(),
        };
        let admin = match &self.admin_token_file {
            Some(p) => auth::read_token_file(p)?,
            None => Vec::new(),
        };
        let ca = match &self.tls_ca {
            Some(p) => Some(std::fs::read(p).map_err(|e| {
                ferrisdb_common::Error::invalid(format!("--tls-ca {}: {e}", p.display()))
            })?),
            None => None,
        };
        auth::install_cluster_access(cluster.first().map(String::as_str), ca, tls.is_some())?;
        Ok(Security {
            tls,
            cluster: Tokens::new(&cluster),
            admin: Tokens::new(&admin),
            client: Tokens::new(&client),
            insecure: self.insecure,
        })
    }
}
