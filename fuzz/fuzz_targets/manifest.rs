#![no_main]
//! Manifest documents: see `ferrisdb_pageserver::fuzzing::manifest`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrisdb_pageserver::fuzzing::manifest(data));
