//! The repository's root, for the tests that read its files. On its own so that tests which
//! start no cluster (layout, terraform) include just this (`#[path]`), not the whole support
//! module.

use std::path::PathBuf;

/// The repository's root, as cargo says when it runs the test (the package's directory), or
/// as it was when the test was compiled: a target directory shared between checkouts reuses
/// a test compiled in another.
pub fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
