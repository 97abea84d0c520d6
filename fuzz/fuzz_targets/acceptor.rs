#![no_main]
//! The acceptor under arbitrary message sequences: see `ferrisdb_wal_service::fuzzing::acceptor`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrisdb_wal_service::fuzzing::acceptor(data));
