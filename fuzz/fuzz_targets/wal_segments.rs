#![no_main]
//! Opening a log of arbitrary segment files: see `ferrisdb_wal_service::fuzzing::wal_segments`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrisdb_wal_service::fuzzing::wal_segments(data));
