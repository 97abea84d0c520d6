#![no_main]
//! Delta layer files: see `ferrisdb_pageserver::fuzzing::delta_layer`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrisdb_pageserver::fuzzing::delta_layer(data));
