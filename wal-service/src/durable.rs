//! What object storage verifiably holds: the `remote_consistent_version` of a database's newest
//! manifest (docs/bucket-layout.md). The safekeeper checks the pageserver's `ReportDurable`
//! claims, and an `Elected` that would drop committed WAL, against it instead of trusting them.
//!
//! Services do not import each other, so this is a minimal reader of the pageserver's manifest
//! format: list `databases/<db>/manifest/`, take the highest generation, and read only the
//! fields needed to check and use it. It never writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferrisdb_common::{Error, Lsn, Result};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Deserialize;
use tokio::sync::Mutex;

/// The part of a manifest generation this reader uses (unknown fields are ignored).
#[derive(Debug, Deserialize)]
struct ManifestHead {
    database: String,
    generation: u64,
    remote_consistent_version: Lsn,
}

/// Reads the durable version of a database from object storage, when one is configured.
#[derive(Debug, Default)]
pub struct DurableReader {
    store: Option<Arc<dyn ObjectStore>>,
    /// The highest durable version seen per database. A manifest's durable version only ever
    /// rises, so a cached value is a safe lower bound and the store is read again only when a
    /// request needs more than it says.
    seen: Mutex<BTreeMap<String, Lsn>>,
}

impl DurableReader {
    /// A reader over `store`; `None` means no object store is configured (nothing verifiable).
    pub fn new(store: Option<Arc<dyn ObjectStore>>) -> DurableReader {
        DurableReader {
            store,
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether an object store is configured.
    pub fn configured(&self) -> bool {
        self.store.is_some()
    }

    /// What object storage holds of `database`: `None` without an object store, else the
    /// newest manifest's durable version (0 when there is no manifest). `want` is the value
    /// the caller needs: a cached answer at or above it is returned without a read.
    pub async fn durable(&self, database: &str, want: Lsn) -> Result<Option<Lsn>> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let cached = self.seen.lock().await.get(database).copied();
        if let Some(c) = cached
            && c >= want
        {
            return Ok(Some(c));
        }
        let read = newest_durable(store, database).await?;
        let mut seen = self.seen.lock().await;
        let v = seen.entry(database.to_string()).or_insert(0);
        *v = (*v).max(read);
        Ok(Some(*v))
    }
}

/// The `remote_consistent_version` of `database`'s highest manifest generation (0 if none).
pub async fn newest_durable(store: &Arc<dyn ObjectStore>, database: &str) -> Result<Lsn> {
    let prefix = Path::from(format!("databases/{database}/manifest"));
    let metas: Vec<_> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| Error::unavailable(format!("listing manifests of {database}: {e}")))?;
    let newest = metas
        .iter()
        .filter_map(|m| {
            let name = m.location.filename()?;
            let generation: u64 = name.strip_suffix(".json")?.parse().ok()?;
            Some((generation, m.location.clone()))
        })
        .max_by_key(|(g, _)| *g);
    let Some((generation, path)) = newest else {
        return Ok(0);
    };
    let bytes = store
        .get(&path)
        .await
        .map_err(|e| Error::unavailable(format!("reading manifest {path}: {e}")))?
        .bytes()
        .await
        .map_err(|e| Error::unavailable(format!("reading manifest {path}: {e}")))?;
    // The pageserver seals its manifests with a checksum trailer (ferrisdb_common::checksum).
    let head: ManifestHead = ferrisdb_server_common::sealed::parse_json(&bytes)
        .map_err(|e| Error::corruption(format!("manifest {path}: {e}")))?;
    if head.generation != generation || head.database != database {
        return Err(Error::corruption(format!(
            "manifest {path} describes {} generation {}",
            head.database, head.generation
        )));
    }
    Ok(head.remote_consistent_version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::PutPayload;
    use object_store::memory::InMemory;

    async fn put_manifest(store: &Arc<dyn ObjectStore>, db: &str, generation: u64, v: Lsn) {
        let body = serde_json::json!({
            "format": 1,
            "database": db,
            "generation": generation,
            "remote_consistent_version": v,
            "layers": [],
        });
        let path = Path::from(format!("databases/{db}/manifest/{generation:020}.json"));
        store
            .put(&path, PutPayload::from(serde_json::to_vec(&body).unwrap()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn reads_the_newest_generation_and_checks_it() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let reader = DurableReader::new(Some(store.clone()));
        assert_eq!(reader.durable("db", 0).await.unwrap(), Some(0));
        put_manifest(&store, "db", 1, 100).await;
        put_manifest(&store, "db", 2, 250).await;
        put_manifest(&store, "other", 9, 9999).await;
        assert_eq!(reader.durable("db", 200).await.unwrap(), Some(250));
        // A manifest whose body names another generation is damage, not a durable version.
        let path = Path::from(format!("databases/db/manifest/{:020}.json", 3));
        let body = serde_json::json!({"database": "db", "generation": 7, "remote_consistent_version": 1u64 << 40});
        store
            .put(&path, PutPayload::from(serde_json::to_vec(&body).unwrap()))
            .await
            .unwrap();
        let e = reader.durable("db", 300).await.unwrap_err();
        assert_eq!(e.kind(), ferrisdb_common::ErrorKind::Corruption);
        assert_eq!(
            DurableReader::new(None).durable("db", 0).await.unwrap(),
            None
        );
    }
}
