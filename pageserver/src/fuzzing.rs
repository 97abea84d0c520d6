//! Fuzz target bodies for what the pageserver reads back from object storage (see
//! docs/fuzzing.md and [`ferrisdb_common::fuzzing`]): delta layers, cold segments and
//! manifests. Whatever a bucket holds, reading it must fail with an error, not crash the
//! pageserver or allocate what a damaged length field claims.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use ferrisdb_common::Version;
use ferrisdb_common::fuzzing::Input;
use ferrisdb_common::wal::{Mutation, WalRecord};
use ferrisdb_server_common::versioned_map::{Lookup, VersionedMap};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::block_cache::BlockCache;
use crate::format::cold_segment;
use crate::format::delta::{self, DeltaLayer};
use crate::format::manifest::{self, Manifest};

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(f))
}

/// A fresh object path per run: the block cache is keyed by path and index checksum, and a
/// shared cache must not hand one run's blocks to the next.
fn unique_path() -> Path {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    Path::from(format!("layers/{}", NEXT.fetch_add(1, Ordering::Relaxed)))
}

fn cache() -> Arc<BlockCache> {
    thread_local! {
        // foyer spawns its tasks on the runtime it is built in.
        static CACHE: Arc<BlockCache> = RUNTIME.with(|rt| {
            let _in_runtime = rt.enter();
            Arc::new(BlockCache::in_memory(1 << 20))
        });
    }
    CACHE.with(Arc::clone)
}

/// Opens `bytes` as a layer the way a pageserver does after writing it, and the way it does
/// after reading the object's size: both must agree.
fn open_layer(bytes: &[u8]) -> Option<DeltaLayer> {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let path = unique_path();
    block_on(store.put(&path, Bytes::copy_from_slice(bytes).into()))
        .unwrap_or_else(|e| panic!("in-memory put: {e}"));
    let from_bytes =
        DeltaLayer::from_bytes(store.clone(), path.clone(), "fuzz".into(), bytes, cache());
    let opened = block_on(DeltaLayer::open(
        store,
        path,
        "fuzz".into(),
        bytes.len() as u64,
        cache(),
    ));
    assert_eq!(
        from_bytes.is_ok(),
        opened.is_ok(),
        "open and from_bytes disagree: {:?} / {:?}",
        from_bytes.as_ref().err(),
        opened.as_ref().err()
    );
    opened.ok()
}

/// Reads a layer every way the pageserver does; errors are fine, panics are not.
fn query_layer(layer: &DeltaLayer, key: &[u8], end: &[u8], version: Version) {
    let _ = block_on(layer.get(key, version));
    let _ = block_on(layer.range_at(key, end, version));
    let _ = block_on(layer.scan_limited(key, end, version, 3, false));
    let _ = block_on(layer.scan_limited(key, end, version, 3, true));
    let _ = block_on(layer.versions_of(key, Version(0), version));
    let _ = block_on(layer.all_entries());
}

/// Target `delta_layer`: layer files, decoded and queried.
///
/// The first byte picks the mode. Raw: the rest is a layer file (optionally with its checksums
/// recomputed by `format::delta::reseal_for_fuzzing`, so mutations reach the parsers). Round
/// trip: the input describes entries and range tombstones, which are encoded, optionally
/// damaged (and resealed), and read back; undamaged, every entry, tombstone and point read
/// must come back as written.
pub fn delta_layer(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let reseal = mode & 2 == 2;
    let key = input.bytes(8).to_vec();
    let end_key = input.bytes(8).to_vec();
    let version = Version(u64::from(input.u8()));
    if mode & 1 == 0 {
        let mut bytes = input.rest().to_vec();
        if reseal {
            delta::reseal_for_fuzzing(&mut bytes);
        }
        if let Some(layer) = open_layer(&bytes) {
            query_layer(&layer, &key, &end_key, version);
        }
        return;
    }

    let mut map = VersionedMap::default();
    let start = Version(u64::from(input.u8() % 4));
    for _ in 0..input.u8() % 32 {
        let k = Bytes::copy_from_slice(input.bytes(6));
        let v = Version(start.0 + 1 + u64::from(input.u8() % 16));
        match input.u8() % 4 {
            0 => map.insert(k, v, None),
            1 => {
                let end = Bytes::copy_from_slice(input.bytes(6));
                map.clear_range(k, end, v);
            }
            _ => {
                let value = Bytes::copy_from_slice(input.bytes(64));
                map.insert(k, v, Some(value));
            }
        }
    }
    let end = Version(start.0 + 17);
    let times: Vec<(Version, u64)> = (start.0 + 1..=end.0)
        .map(|v| (Version(v), v * 1000))
        .collect();
    let mut bytes = delta::encode(start, end, &map, &times).to_vec();
    let flips = usize::from(input.u8() % 4);
    for _ in 0..flips {
        if bytes.is_empty() {
            break;
        }
        let at = usize::from(input.u16()) % bytes.len();
        bytes[at] ^= input.u8().max(1);
    }
    if reseal {
        delta::reseal_for_fuzzing(&mut bytes);
    }
    let layer = open_layer(&bytes);
    if flips > 0 {
        if let Some(layer) = layer {
            query_layer(&layer, &key, &end_key, version);
        }
        return;
    }
    let layer = layer.unwrap_or_else(|| panic!("a layer just encoded does not open"));
    assert_eq!((layer.start, layer.end), (start, end));
    assert_eq!(layer.times, times);
    let (points, ranges) =
        block_on(layer.all_entries()).unwrap_or_else(|e| panic!("reading back a layer: {e}"));
    let want: Vec<(Bytes, Version, Option<Bytes>)> = map
        .iter()
        .map(|(k, v, val)| (k.clone(), v, val.clone()))
        .collect();
    assert_eq!(points, want, "a layer's entries changed on the way through");
    let want_ranges: Vec<_> = map.range_tombstones().iter().cloned().collect();
    assert_eq!(ranges, want_ranges, "a layer's range tombstones changed");
    let mut probes: Vec<Bytes> = map.iter().map(|(k, _, _)| k.clone()).collect();
    probes.push(Bytes::from(key));
    for k in probes {
        for v in [version, start, end, Version(start.0 + 8)] {
            let got =
                block_on(layer.get(&k, v)).unwrap_or_else(|e| panic!("a point read failed: {e}"));
            let want: Lookup = map.get(&k, v);
            assert_eq!(
                got, want,
                "point read of {k:?} at {v} differs from what was written"
            );
        }
    }
}

/// Target `cold_segment`: Parquet cold segments, decoded.
///
/// The first byte picks the mode. Raw: the rest is a segment file; one that decodes must
/// encode and decode back to the same records. Round trip: the input describes records,
/// which are encoded (with tiny row groups), optionally damaged, and decoded; undamaged they
/// must come back exactly, and damaged they must be refused or still be exactly the records
/// written (the content checksum makes anything else a silent change of history).
pub fn cold_segment(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    if mode & 1 == 0 {
        let bytes = Bytes::copy_from_slice(input.rest());
        if let Ok(records) = cold_segment::decode_segment(bytes) {
            let again = cold_segment::encode_segment(&records)
                .unwrap_or_else(|e| panic!("re-encoding decoded records: {e}"));
            let back = cold_segment::decode_segment(again)
                .unwrap_or_else(|e| panic!("decoding re-encoded records: {e}"));
            assert_eq!(back, records, "decoded records do not round-trip");
        }
        return;
    }

    let mut records = Vec::new();
    let mut version = u64::from(input.u16());
    for _ in 0..1 + input.u8() % 8 {
        version += 1 + u64::from(input.u8());
        let mutations = (0..input.u8() % 4)
            .map(|_| {
                let key = Bytes::copy_from_slice(input.bytes(6));
                match input.u8() % 3 {
                    0 => Mutation::Clear { key },
                    1 => Mutation::ClearRange {
                        begin: key,
                        end: Bytes::copy_from_slice(input.bytes(6)),
                    },
                    _ => Mutation::Set {
                        key,
                        value: Bytes::copy_from_slice(input.bytes(40)),
                    },
                }
            })
            .collect();
        records.push(WalRecord {
            version: Version(version),
            commit_time_micros: u64::from(input.u32()),
            mutations,
        });
    }
    let mut bytes = if mode & 2 == 2 {
        cold_segment::encode_small_for_fuzzing(&records)
    } else {
        cold_segment::encode_segment(&records)
    }
    .unwrap_or_else(|e| panic!("encoding records: {e}"))
    .to_vec();
    let flips = usize::from(input.u8() % 4);
    for _ in 0..flips {
        if bytes.is_empty() {
            break;
        }
        let at = usize::from(input.u16()) % bytes.len();
        bytes[at] ^= input.u8().max(1);
    }
    match cold_segment::decode_segment(Bytes::from(bytes)) {
        Ok(back) => assert!(back == records, "a segment decoded to other records"),
        Err(e) => assert!(flips > 0, "an intact segment does not decode: {e}"),
    }
}

/// Target `manifest`: manifest documents, parsed the way a pageserver loads them.
///
/// The whole input is the manifest object. Invariants: one that parses serializes and parses
/// back equal; its key partitions decode or are refused; [`manifest::load_latest`] on a bucket
/// holding it returns it exactly when its name and generation match where it is stored.
pub fn manifest(data: &[u8]) {
    let parsed = manifest::parse(data);
    if let Ok(m) = &parsed {
        let text = serde_json::to_vec(m).unwrap_or_else(|e| panic!("serializing: {e}"));
        let back: Manifest =
            serde_json::from_slice(&text).unwrap_or_else(|e| panic!("reparsing: {e}"));
        assert_eq!(&back, m, "a manifest does not round-trip");
        for layer in &m.layers {
            if let Some(keys) = &layer.keys
                && let Ok((begin, end)) = keys.decode()
            {
                let again = manifest::KeyPartition::new(&begin, &end).decode();
                assert_eq!(again.ok(), Some((begin, end)), "key partition round trip");
            }
        }
    }
    let (database, generation) = match &parsed {
        Ok(m) if ferrisdb_common::validate_database_name(&m.database).is_ok() => {
            (m.database.clone(), m.generation)
        }
        _ => ("db".to_string(), 1),
    };
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let path = Path::from(format!(
        "databases/{database}/manifest/{generation:020}.json"
    ));
    block_on(store.put(&path, Bytes::copy_from_slice(data).into()))
        .unwrap_or_else(|e| panic!("in-memory put: {e}"));
    let loaded = block_on(manifest::load_latest(&store, &database));
    match (&parsed, loaded) {
        (Ok(m), Ok(l)) => assert_eq!(&l, m, "load_latest returned another manifest"),
        (Ok(m), Err(_)) => assert!(
            m.database != database || m.generation != generation,
            "a manifest stored where it belongs was refused"
        ),
        (Err(_), Ok(l)) => panic!("an unparseable manifest loaded as {l:?}"),
        (Err(_), Err(_)) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrisdb_common::fuzzing::replay_corpus;

    #[test]
    fn delta_layer_corpus_replays() {
        replay_corpus("delta_layer", delta_layer);
    }

    #[test]
    fn cold_segment_corpus_replays() {
        replay_corpus("cold_segment", cold_segment);
    }

    #[test]
    fn manifest_corpus_replays() {
        replay_corpus("manifest", manifest);
    }
}
