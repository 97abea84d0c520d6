#![no_main]
//! The safekeeper control file: see `ferrisdb_wal_service::fuzzing::control_file`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrisdb_wal_service::fuzzing::control_file(data));
