//! Where S3-compatible storage is when an object store URL is `s3://…`.

use crate::objstore::ObjectStoreConfig;

/// The S3 endpoint and region beside an `s3://` object store URL. Credentials never appear
/// here: they come from the environment (`AWS_ACCESS_KEY_ID`, …), out of `ps`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct S3Args {
    /// S3 endpoint (MinIO, moto); default: AWS_ENDPOINT_URL or AWS.
    #[arg(long, env = "FERRISDB_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region; default: AWS_REGION or us-east-1.
    #[arg(long, env = "FERRISDB_S3_REGION")]
    pub s3_region: Option<String>,
}

impl S3Args {
    /// The object store at `url`, reached through this endpoint and region.
    pub fn config(&self, url: String) -> ObjectStoreConfig {
        ObjectStoreConfig {
            url,
            s3_endpoint: self.s3_endpoint.clone(),
            s3_region: self.s3_region.clone(),
            ..ObjectStoreConfig::default()
        }
    }
}
