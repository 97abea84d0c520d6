#![no_main]
//! Parquet cold segments: see `ferrisdb_pageserver::fuzzing::cold_segment`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrisdb_pageserver::fuzzing::cold_segment(data));
