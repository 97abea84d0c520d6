#![no_main]
//! The WAL frame checker and decoder: see `ferrisdb_common::fuzzing::wal_frames`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrisdb_common::fuzzing::wal_frames(data));
