//! Where the CLI finds a `ferrisdb dev` cluster started in the current directory.
//!
//! `ferrisdb dev` (default `--data-dir .ferrisdb`) records every component's endpoints in
//! `./.ferrisdb/cluster.json`. When a client or admin command is given no endpoint (neither
//! `--endpoint` nor the environment), it reads that file, so a cluster started with any
//! `--base-port` is found from the directory it was started in. Without the file, the
//! defaults (`127.0.0.1:4500`, `127.0.0.1:4580`) stand.

use std::path::{Path, PathBuf};

use ferrisdb_client::Error;

/// The cluster file `ferrisdb dev` writes into its default data directory, relative to the
/// current directory.
pub const CLUSTER_FILE: &str = ".ferrisdb/cluster.json";

/// The client API when no endpoint is given and no cluster file exists.
pub const DEFAULT_CLIENT_ENDPOINT: &str = "http://127.0.0.1:4500";

/// The compute's admin API when no endpoint is given and no cluster file exists.
pub const DEFAULT_ADMIN_ENDPOINT: &str = "http://127.0.0.1:4580";

/// One component as the cluster file lists it.
#[derive(Debug, Clone, serde::Deserialize)]
struct Component {
    name: String,
    kind: String,
    endpoints: Endpoints,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct Endpoints {
    grpc: String,
    http: String,
}

/// The parts of `cluster.json` the CLI uses.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct LocalCluster {
    components: Vec<Component>,
}

impl LocalCluster {
    /// Reads `./.ferrisdb/cluster.json`: `None` when it does not exist, an error naming the
    /// file when it cannot be read or parsed (rather than silently talking to a default port
    /// that may belong to another cluster).
    pub fn find() -> Result<Option<LocalCluster>, Error> {
        Self::read(Path::new(CLUSTER_FILE))
    }

    fn read(path: &Path) -> Result<Option<LocalCluster>, Error> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::invalid(format!("{}: {e}", path.display()))),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::invalid(format!(
                "{}: not a cluster file written by `ferrisdb dev` ({e}); give --endpoint",
                path.display()
            ))
        })
    }

    /// The compute's client endpoint (the wake proxy's, with scale to zero).
    pub fn client_endpoint(&self) -> Result<String, Error> {
        self.by_kind("compute").map(|c| c.endpoints.grpc.clone())
    }

    /// The admin endpoint of the component called `name`, or of the compute.
    pub fn admin_endpoint(&self, name: Option<&str>) -> Result<String, Error> {
        let component = match name {
            Some(n) => self
                .components
                .iter()
                .find(|c| c.name == n)
                .ok_or_else(|| {
                    let names: Vec<&str> =
                        self.components.iter().map(|c| c.name.as_str()).collect();
                    Error::invalid(format!(
                        "{CLUSTER_FILE} has no component {}; it has {}",
                        ferrisdb_common::error::echo(n),
                        names.join(", ")
                    ))
                })?,
            None => self.by_kind("compute")?,
        };
        Ok(component.endpoints.http.clone())
    }

    fn by_kind(&self, kind: &str) -> Result<&Component, Error> {
        self.components
            .iter()
            .find(|c| c.kind == kind)
            .ok_or_else(|| Error::invalid(format!("{CLUSTER_FILE} lists no {kind}")))
    }
}

/// The client endpoints to use: those given, else the local cluster's compute, else the
/// default.
pub fn client_endpoints(given: &[String]) -> Result<Vec<String>, Error> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    Ok(vec![match LocalCluster::find()? {
        Some(cluster) => cluster.client_endpoint()?,
        None => DEFAULT_CLIENT_ENDPOINT.to_string(),
    }])
}

/// The admin endpoint to use: the one given, else the local cluster's `component` (default:
/// its compute), else the default. A component named without a cluster file is an error.
pub fn admin_endpoint(given: Option<&str>, component: Option<&str>) -> Result<String, Error> {
    if let Some(e) = given {
        return Ok(e.to_string());
    }
    match (LocalCluster::find()?, component) {
        (Some(cluster), name) => cluster.admin_endpoint(name),
        (None, None) => Ok(DEFAULT_ADMIN_ENDPOINT.to_string()),
        (None, Some(_)) => Err(Error::invalid(format!(
            "--component needs {CLUSTER_FILE} (start `ferrisdb dev` in this directory) or give --endpoint"
        ))),
    }
}

/// The credential `ferrisdb dev` keeps beside its cluster file in the current directory.
pub fn dev_credential() -> PathBuf {
    Path::new(".ferrisdb").join(crate::dev::CLUSTER_TOKEN_FILE)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const FILE: &str = r#"{
      "data_dir": "/x/.ferrisdb", "object_store": "file:///x/.ferrisdb/objects",
      "components": [
        {"name": "safekeeper-1", "kind": "safekeeper", "pid": 1, "argv": [], "log": "l",
         "endpoints": {"grpc": "http://127.0.0.1:7001", "http": "http://127.0.0.1:7081"}},
        {"name": "compute", "kind": "compute", "pid": 2, "argv": [], "log": "l",
         "endpoints": {"grpc": "http://127.0.0.1:7000", "http": "http://127.0.0.1:7080"}}
      ]}"#;

    #[test]
    fn endpoints_come_from_the_cluster_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.json");
        assert!(LocalCluster::read(&path).unwrap().is_none());
        std::fs::write(&path, FILE).unwrap();
        let c = LocalCluster::read(&path).unwrap().unwrap();
        assert_eq!(c.client_endpoint().unwrap(), "http://127.0.0.1:7000");
        assert_eq!(c.admin_endpoint(None).unwrap(), "http://127.0.0.1:7080");
        assert_eq!(
            c.admin_endpoint(Some("safekeeper-1")).unwrap(),
            "http://127.0.0.1:7081"
        );
        let e = c.admin_endpoint(Some("nope")).unwrap_err();
        assert_eq!(e.kind(), ferrisdb_client::ErrorKind::InvalidArgument);
        assert!(e.message().contains("safekeeper-1, compute"), "{e}");
        std::fs::write(&path, "{").unwrap();
        let e = LocalCluster::read(&path).unwrap_err();
        assert_eq!(e.kind(), ferrisdb_client::ErrorKind::InvalidArgument);
    }
}
