//! Object storage chosen by URL: `file:///path`, `memory://`, `s3://bucket/prefix`.
//!
//! Every component talks to object storage through `Arc<dyn ObjectStore>`, which is the seam
//! tests use to inject faults.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use serde::{Deserialize, Serialize};

use ferrisdb_common::{Error, ErrorKind, Result};

/// Where a process keeps its objects, and how to reach S3-compatible storage.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectStoreConfig {
    /// `file:///abs/path`, `memory://`, or `s3://bucket[/prefix]`.
    pub url: String,
    /// S3 endpoint (MinIO, moto); when absent, `AWS_ENDPOINT_URL` or AWS itself.
    pub s3_endpoint: Option<String>,
    /// S3 region; when absent, `AWS_REGION` or `us-east-1`.
    pub s3_region: Option<String>,
    /// Access key id; when absent, `AWS_ACCESS_KEY_ID`.
    pub s3_access_key_id: Option<String>,
    /// Secret access key; when absent, `AWS_SECRET_ACCESS_KEY`.
    pub s3_secret_access_key: Option<String>,
}

impl std::fmt::Debug for ObjectStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreConfig")
            .field("url", &self.url)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_region", &self.s3_region)
            .field("s3_access_key_id", &self.s3_access_key_id)
            .field(
                "s3_secret_access_key",
                &ferrisdb_common::net::redact(&self.s3_secret_access_key),
            )
            .finish()
    }
}

impl ObjectStoreConfig {
    /// A configuration for `url` with everything else from the environment.
    pub fn from_url(url: impl Into<String>) -> ObjectStoreConfig {
        ObjectStoreConfig {
            url: url.into(),
            ..ObjectStoreConfig::default()
        }
    }

    /// Opens the store the URL names, creating a local directory if needed.
    pub fn open(&self) -> Result<Arc<dyn ObjectStore>> {
        let url = url::Url::parse(&self.url)
            .map_err(|e| Error::invalid(format!("object store URL {:?}: {e}", self.url)))?;
        match url.scheme() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| Error::invalid(format!("not a local path: {}", self.url)))?;
                // Private when created here (the objects are every database's data); an
                // existing directory readable by others is named.
                let mut builder = std::fs::DirBuilder::new();
                builder.recursive(true);
                #[cfg(unix)]
                std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
                builder.create(&path).map_err(|e| {
                    Error::invalid(format!("object store at {}: {e}", path.display()))
                })?;
                crate::dir_lock::warn_if_readable_by_others(&path, "object store");
                // Synced before a put returns, as S3 is durable before it answers: a manifest
                // that names a layer leads the safekeepers to delete the WAL behind it, so a
                // layer still in the page cache when the machine loses power would take
                // acknowledged commits with it (the WAL's deletion is journaled, and made
                // durable by the safekeepers' own next fdatasync).
                let fs = LocalFileSystem::new_with_prefix(&path)
                    .map_err(|e| {
                        Error::invalid(format!("object store at {}: {e}", path.display()))
                    })?
                    .with_fsync(true);
                Ok(Arc::new(fs))
            }
            "memory" => Ok(Arc::new(InMemory::new())),
            "s3" => self.open_s3(&url),
            other => Err(Error::invalid(format!(
                "unsupported object store scheme {other:?}: use file://, memory:// or s3://"
            ))),
        }
    }

    fn open_s3(&self, url: &url::Url) -> Result<Arc<dyn ObjectStore>> {
        let bucket = url
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| Error::invalid(format!("no bucket in {}", self.url)))?;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        let endpoint = self
            .s3_endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        if let Some(endpoint) = endpoint {
            // Self-hosted S3 (MinIO, moto) is addressed by path, often over plain HTTP.
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false)
                .with_endpoint(endpoint);
        }
        let region = self
            .s3_region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .unwrap_or_else(|| "us-east-1".to_string());
        builder = builder.with_region(region);
        if let Some(k) = &self.s3_access_key_id {
            builder = builder.with_access_key_id(k);
        }
        if let Some(s) = &self.s3_secret_access_key {
            builder = builder.with_secret_access_key(s);
        }
        let store: Arc<dyn ObjectStore> = Arc::new(
            builder
                .build()
                .map_err(|e| Error::invalid(format!("S3 configuration: {e}")))?,
        );
        let prefix = url.path().trim_matches('/');
        if prefix.is_empty() {
            Ok(store)
        } else {
            Ok(Arc::new(PrefixStore::new(store, prefix.to_string())))
        }
    }
}

/// How many times [`with_retries`] tries a call.
pub const RETRY_ATTEMPTS: u32 = 8;

/// An object-store failure as a FerrisDB error: `unavailable`, since the store (or the
/// network to it) may answer again, and the caller decides whether to retry. Callers write
/// `.map_err(store_error)`: the error type lives in the wire crate, which knows nothing of
/// object stores, so no `From` conversion can exist.
pub fn store_error(e: object_store::Error) -> Error {
    Error::new(ErrorKind::Unavailable, format!("object store: {e}"))
}

/// Whether an object-store error may go away if the call is repeated: network and server
/// trouble, as opposed to answers (not found, already exists, precondition failed, denied).
pub fn is_transient(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::Generic { .. })
}

/// Runs `op` until it succeeds, fails with a non-transient error, or [`RETRY_ATTEMPTS`]
/// attempts have failed, backing off exponentially (50 ms doubling to 2 s, with full jitter)
/// between attempts. `what` names the call in logs.
///
/// A retried write may already have happened: plain PUTs are idempotent, and conditional ones
/// must check what they find (see the pageserver's manifest).
pub async fn with_retries<T, F, Fut>(what: &str, mut op: F) -> Result<T, object_store::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, object_store::Error>>,
{
    use rand::Rng;
    let mut backoff = std::time::Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if is_transient(&e) && attempt < RETRY_ATTEMPTS => {
                let pause = rand::rng().random_range(backoff / 2..=backoff);
                tracing::debug!(what, attempt, error = %e, ?pause, "object store call failed; retrying");
                tokio::time::sleep(pause).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    /// A `file://` store made by the process is private: every database's data is in it.
    #[cfg(unix)]
    #[test]
    fn a_local_store_it_creates_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new").join("objects");
        ObjectStoreConfig::from_url(format!("file://{}", path.display()))
            .open()
            .unwrap();
        for d in [&path, &dir.path().join("new")] {
            let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
    }

    #[test]
    fn debug_hides_the_secret_key() {
        let config = ObjectStoreConfig {
            s3_secret_access_key: Some("wJalrXUtnFEMI-secret".into()),
            s3_access_key_id: Some("AKIDEXAMPLE".into()),
            ..ObjectStoreConfig::from_url("s3://bucket")
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("wJalrXUtnFEMI-secret"), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("s3://bucket"),
            "{shown}"
        );
    }

    #[test]
    fn bad_urls_are_invalid_argument() {
        for url in ["nonsense", "ftp://x/y", "s3:///prefix"] {
            let e = ObjectStoreConfig::from_url(url).open().unwrap_err();
            assert_eq!(
                e.kind(),
                ferrisdb_common::ErrorKind::InvalidArgument,
                "{url}"
            );
        }
    }

    #[test]
    fn file_url_creates_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("objects");
        let url = format!("file://{}", path.display());
        ObjectStoreConfig::from_url(url).open().unwrap();
        assert!(path.is_dir());
    }

    /// Set in the child process of the test below: the directory it puts an object into.
    const PUT_CHILD: &str = "FERRISDB_TEST_OBJSTORE_PUT_INTO";

    /// A put into a `file://` store is on disk when it returns: the object's file is fsynced
    /// before it is renamed into place, and its directory after. Observed from outside, with
    /// strace watching this test binary put one object in a child process (a power cut cannot
    /// be staged on this machine: no device-mapper to drop unsynced writes).
    #[test]
    fn a_file_put_is_synced_before_it_returns() {
        if let Ok(dir) = std::env::var(PUT_CHILD) {
            let store = ObjectStoreConfig::from_url(format!("file://{dir}"))
                .open()
                .unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(store.put(
                &object_store::path::Path::from("db/layers/one"),
                object_store::PutPayload::from(vec![7u8; 64 * 1024]),
            ))
            .unwrap();
            return;
        }
        if std::process::Command::new("strace")
            .arg("-V")
            .output()
            .is_err()
        {
            eprintln!("skipped: strace is not installed (apt-get install strace)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let objects = dir.path().join("objects");
        let log = dir.path().join("strace.log");
        let status = std::process::Command::new("strace")
            .args([
                "-f",
                "-y",
                "-qq",
                "-e",
                "trace=fsync,fdatasync,rename,renameat,renameat2",
                "-o",
            ])
            .arg(&log)
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "objstore::tests::a_file_put_is_synced_before_it_returns",
                "--test-threads=1",
            ])
            .env(PUT_CHILD, &objects)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "the child's put failed: {status}");
        let trace = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = trace.lines().collect();
        let object = objects.join("db/layers/one");
        let object = object.to_str().unwrap();
        let dir_of = objects.join("db/layers");
        let dir_of = dir_of.to_str().unwrap();
        // The rename that publishes the object under its name.
        let published = lines
            .iter()
            .position(|l| l.contains("rename") && l.contains(&format!("\"{object}\"")))
            .unwrap_or_else(|| panic!("no rename to {object} in:\n{trace}"));
        // Its contents synced before (the staged file's name starts with the object's).
        let staged = format!("<{object}#");
        assert!(
            lines[..published].iter().any(
                |l| (l.contains(" fsync(") || l.contains(" fdatasync(")) && l.contains(&staged)
            ),
            "the object's file was not fsynced before it was published:\n{trace}"
        );
        // And the directory entry synced after.
        assert!(
            lines[published..]
                .iter()
                .any(|l| l.contains(" fsync(") && l.contains(&format!("<{dir_of}>"))),
            "the object's directory was not fsynced after the rename:\n{trace}"
        );
    }

    #[test]
    fn s3_url_with_endpoint_builds() {
        let cfg = ObjectStoreConfig {
            url: "s3://bucket/some/prefix".into(),
            s3_endpoint: Some("http://127.0.0.1:9000".into()),
            s3_region: Some("us-east-1".into()),
            s3_access_key_id: Some("k".into()),
            s3_secret_access_key: Some("s".into()),
        };
        cfg.open().unwrap();
    }
}
