#![no_main]
//! Parquet cold segments: see `ferrisdb_pageserver::fuzzing::cold_segment`.
//!
//! `decode_segment` contains panics of the Parquet reader with `catch_unwind` (they become
//! `corruption`). libFuzzer's panic hook aborts before any unwinding, which would report those
//! contained panics as crashes, so this target puts back a hook that only prints; a panic that
//! escapes the target still aborts (libfuzzer-sys catches it and aborts).

use std::sync::Once;

static HOOK: Once = Once::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| eprintln!("panic (contained?): {info}")));
    });
    ferrisdb_pageserver::fuzzing::cold_segment(data)
});
