//! The manifest: which layers make up a database in object storage, and up to which version
//! they make it durable.
//!
//! Manifests are immutable objects `databases/<db>/manifest/<generation:020>.json`; the live
//! one is the highest generation. A new one is written with create-if-absent (`PutMode::Create`)
//! at generation + 1, so of two writers racing from the same generation exactly one wins and
//! the other learns it has been fenced. Layers are uploaded before the manifest that names
//! them. See docs/bucket-layout.md.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use ferrisdb_common::{Error, ErrorKind, Result, Version, checksum};
use ferrisdb_server_common::objstore::{store_error, with_retries};

/// One layer the manifest names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerEntry {
    /// Object name under `databases/<db>/layers/`.
    pub name: String,
    /// Covers versions above this…
    pub start: Version,
    /// …up to and including this.
    pub end: Version,
    /// Object size in bytes.
    pub size: u64,
    /// A delta layer, or an image of every live key at `end`.
    #[serde(default)]
    pub kind: LayerKind,
    /// For an L1 delta layer (compacted): the key partition it covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<KeyPartition>,
}

/// The keys `[begin, end)` an L1 layer covers, hex-encoded; an empty `end` is unbounded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPartition {
    /// First key, hex.
    pub begin: String,
    /// First key past the partition, hex; empty for the last partition.
    pub end: String,
}

impl KeyPartition {
    /// Encodes a partition.
    pub fn new(begin: &[u8], end: &[u8]) -> KeyPartition {
        KeyPartition {
            begin: hex(begin),
            end: hex(end),
        }
    }

    /// Decodes it, or `corruption` if a bound is not hex.
    pub fn decode(&self) -> Result<(bytes::Bytes, bytes::Bytes)> {
        Ok((unhex(&self.begin)?, unhex(&self.end)?))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Result<bytes::Bytes> {
    let bad = || Error::corruption(format!("manifest: key bound {s:?} is not hex"));
    if !s.len().is_multiple_of(2) {
        return Err(bad());
    }
    (0..s.len() / 2)
        .map(|i| {
            u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())
        })
        .collect::<Result<Vec<u8>>>()
        .map(bytes::Bytes::from)
}

/// What a layer holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// Every change in its version range.
    #[default]
    Delta,
    /// Every live key's latest entry as of one version.
    Image,
}

/// One cold log segment the manifest names: the committed records with versions in
/// `[first, last]`, as Parquet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentEntry {
    /// Object name under `databases/<db>/segments/`.
    pub name: String,
    /// The first record's version.
    pub first: Version,
    /// The last record's version.
    pub last: Version,
    /// Object size in bytes.
    pub size: u64,
}

/// Where a branch meets its parent: a database and a version of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BranchPoint {
    /// The other database.
    pub database: String,
    /// The version where the branch begins: the branch holds the parent's state at it.
    pub version: Version,
}

/// The contents of one manifest generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format of this document.
    pub format: u32,
    /// The database it describes.
    pub database: String,
    /// Its generation (also in its object name).
    pub generation: u64,
    /// Every commit up to here is in the named layers.
    pub remote_consistent_version: Version,
    /// The term that wrote the WAL just below `remote_consistent_version`, as the safekeepers
    /// named it when it was ingested (0: not known). A pageserver restarted from this manifest
    /// asks the safekeepers to check it before it follows their WAL from there, so a log
    /// rewritten since is refused rather than applied on top (docs/wal-protocol.md, "Followers
    /// check the term they resume in"). Skipped when 0, so older manifests read the same.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub remote_consistent_term: u64,
    /// Live layers, oldest first.
    pub layers: Vec<LayerEntry>,
    /// Cold log segments, oldest first.
    #[serde(default)]
    pub segments: Vec<SegmentEntry>,
    /// Reads below this version are refused (`version_too_old`): GC may have removed what
    /// they need. It only ever rises.
    #[serde(default)]
    pub gc_horizon: Version,
    /// The pageserver instance that wrote this generation: how a writer whose conditional PUT
    /// was retried tells its own landed write from another pageserver's.
    #[serde(default)]
    pub writer: String,
    /// For a branch: the parent and the version it was branched at. Reads of the branch at or
    /// below that version, and of keys the branch never wrote, are answered by the parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ancestor: Option<BranchPoint>,
    /// Branches made from this database: its GC keeps every version they may read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<BranchPoint>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Manifest {
    /// The state of a database nothing was ever uploaded for.
    pub fn empty(database: &str) -> Manifest {
        Manifest {
            format: 1,
            database: database.to_string(),
            generation: 0,
            remote_consistent_version: Version::ZERO,
            remote_consistent_term: 0,
            layers: Vec::new(),
            segments: Vec::new(),
            gc_horizon: Version::ZERO,
            writer: String::new(),
            ancestor: None,
            branches: Vec::new(),
        }
    }
}

/// Where a database's objects live in the bucket.
pub fn database_prefix(database: &str) -> Path {
    Path::from(format!("databases/{database}"))
}

/// The path of a layer object.
pub fn layer_path(database: &str, name: &str) -> Path {
    Path::from(format!("databases/{database}/layers/{name}"))
}

/// The path of a cold log segment object.
pub fn segment_path(database: &str, name: &str) -> Path {
    Path::from(format!("databases/{database}/segments/{name}"))
}

fn manifest_path(database: &str, generation: u64) -> Path {
    Path::from(format!(
        "databases/{database}/manifest/{generation:020}.json"
    ))
}

/// Where `database`'s manifest generations live.
pub fn manifest_prefix(database: &str) -> Path {
    Path::from(format!("databases/{database}/manifest"))
}

/// The generation a manifest object's name gives, if it is one (`<generation:020>.json`).
pub fn generation_of(path: &Path) -> Option<u64> {
    path.filename()?.strip_suffix(".json")?.parse().ok()
}

/// Loads the newest manifest of `database`, or an empty one if there is none.
pub async fn load_latest(store: &Arc<dyn ObjectStore>, database: &str) -> Result<Manifest> {
    let prefix = manifest_prefix(database);
    let metas: Vec<_> = with_retries("list manifests", || store.list(Some(&prefix)).try_collect())
        .await
        .map_err(store_error)?;
    let newest = metas
        .iter()
        .filter_map(|m| Some((generation_of(&m.location)?, m.location.clone())))
        .max_by_key(|(g, _)| *g);
    let Some((generation, path)) = newest else {
        return Ok(Manifest::empty(database));
    };
    let bytes = read_object(store, &path).await?;
    let manifest = parse(&bytes).map_err(|e| Error::corruption(format!("manifest {path}: {e}")))?;
    if manifest.generation != generation || manifest.database != database {
        return Err(Error::corruption(format!(
            "manifest {path} describes {} generation {}",
            manifest.database, manifest.generation
        )));
    }
    Ok(manifest)
}

/// A manifest object's document: its checksum trailer checked (`ferrisdb_common::checksum`;
/// manifests written before the trailer have none), then parsed.
pub fn parse(bytes: &[u8]) -> std::result::Result<Manifest, String> {
    ferrisdb_server_common::sealed::parse_json(bytes)
}

/// The databases that have objects in the bucket.
pub async fn list_databases(store: &Arc<dyn ObjectStore>) -> Result<Vec<String>> {
    let prefix = Path::from("databases");
    let listing = with_retries("list databases", || {
        store.list_with_delimiter(Some(&prefix))
    })
    .await
    .map_err(store_error)?;
    Ok(listing
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_string))
        .collect())
}

/// Reads a whole object, retrying transient failures.
pub async fn read_object(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<bytes::Bytes> {
    with_retries("get", || async { store.get(path).await?.bytes().await })
        .await
        .map_err(|e| named_object_error(path, e))
}

/// A failed read of an object a manifest names, as a FerrisDB error: `corruption` when the
/// store says the object does not exist (the bucket lost it, or was rolled back or partly
/// restored: it will not come back by retrying, and the database is held as broken with the
/// object named), `unavailable` for everything else. A missing layer was `unavailable`,
/// which stopped the pageserver at start with every other database, or had clients retry
/// forever (an outside audit). Reads that race a compaction or GC deleting what they were
/// reading are run again by the timeline before this reaches a client.
pub fn named_object_error(path: &Path, e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::corruption(format!(
            "{path} is named by the manifest but missing from the bucket"
        )),
        e => store_error(e),
    }
}

/// Writes `next` as generation `next.generation`, failing with `fenced` if that generation
/// already exists (another pageserver got there first). A retry that finds the generation
/// already written reads it back: if it is our own earlier attempt (same writer, same
/// content), the write succeeded.
pub async fn store_next(store: &Arc<dyn ObjectStore>, next: &Manifest) -> Result<()> {
    let body = serde_json::to_vec_pretty(next)
        .map(checksum::seal)
        .map_err(|e| Error::internal(format!("encoding manifest: {e}")))?;
    let opts = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    let path = manifest_path(&next.database, next.generation);
    let payload = PutPayload::from(body);
    let put = with_retries("put manifest", || {
        store.put_opts(&path, payload.clone(), opts.clone())
    })
    .await;
    match put {
        Ok(_) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. }) => {
            let found = read_object(store, &path).await?;
            let ours = parse(&found).is_ok_and(|m| &m == next);
            if ours {
                return Ok(());
            }
            Err(Error::new(
                ErrorKind::Fenced,
                format!(
                    "manifest generation {} was written by another pageserver",
                    next.generation
                ),
            ))
        }
        Err(e) => Err(store_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn newest_generation_wins_and_a_second_writer_is_fenced() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        assert_eq!(
            load_latest(&store, "db").await.unwrap(),
            Manifest::empty("db")
        );
        let mut m = Manifest::empty("db");
        m.writer = "ps-a".into();
        for g in 1..=3 {
            m.generation = g;
            m.remote_consistent_version = Version(g * 100);
            store_next(&store, &m).await.unwrap();
        }
        let latest = load_latest(&store, "db").await.unwrap();
        assert_eq!(latest.generation, 3);
        assert_eq!(latest.remote_consistent_version, Version(300));
        // A retry of our own landed write finds it and succeeds…
        store_next(&store, &m).await.unwrap();
        // …but another pageserver writing the same generation is fenced.
        let mut other = m.clone();
        other.writer = "ps-b".into();
        let e = store_next(&store, &other).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Fenced);
    }

    /// The chaos run's finding: one flipped bit turned a digit of the newest manifest into
    /// another digit, the JSON still parsed, and the pageserver wrote the next generation from
    /// the damaged copy. Sealed manifests refuse every such flip; a manifest written before
    /// the seal (plain JSON) still loads.
    #[tokio::test]
    async fn a_manifest_with_a_flipped_digit_is_corruption_not_a_manifest() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut m = Manifest::empty("db");
        m.generation = 1;
        m.remote_consistent_version = Version(1_234_507);
        m.layers.push(LayerEntry {
            name: crate::format::delta::layer_name(Version(1_019_116), Version(1_234_507)),
            start: Version(1_019_116),
            end: Version(1_234_507),
            size: 4096,
            kind: LayerKind::Delta,
            keys: None,
        });
        store_next(&store, &m).await.unwrap();
        let path = manifest_path("db", 1);
        let sealed = read_object(&store, &path).await.unwrap().to_vec();
        let text = String::from_utf8(sealed.clone()).unwrap();
        let digit = text.find("1234507").unwrap() + 6;
        let mut flips = 0;
        for bit in 0..8 {
            let mut damaged = sealed.clone();
            damaged[digit] ^= 1 << bit;
            store.put(&path, damaged.into()).await.unwrap();
            match load_latest(&store, "db").await {
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Corruption, "bit {bit}: {e}");
                    flips += 1;
                }
                Ok(loaded) => panic!("bit {bit}: loaded {loaded:?}"),
            }
        }
        assert_eq!(flips, 8);
        // Plain JSON, as written before manifests were sealed.
        let plain = serde_json::to_vec_pretty(&m).unwrap();
        store.put(&path, plain.into()).await.unwrap();
        assert_eq!(load_latest(&store, "db").await.unwrap(), m);
    }
}
