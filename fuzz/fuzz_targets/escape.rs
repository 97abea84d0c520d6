#![no_main]
//! The CLI's escape parser: see `fuzz_target` in src/escape.rs, a module of the `ferrisdb`
//! binary included here as it is (it depends only on `ferrisdb_common::Error`).

#[path = "../../src/escape.rs"]
#[allow(dead_code)]
mod escape;

libfuzzer_sys::fuzz_target!(|data: &[u8]| escape::fuzz_target(data));
