//! FerrisDB's wire crate, shared by the SDK and every server: the error type and its codes,
//! versions, size limits, the WAL record codec, atomic operations, the read-your-writes
//! overlay, the gRPC protocols and the client half of networking.
//!
//! It stays slim on purpose (the SDK depends on it alone): what only servers share (the
//! admin HTTP server, server networking, caches, object storage, the WAL follower) lives in
//! `ferrisdb-server-common`, under `common/server/`.

pub mod atomic;
pub mod checksum;
pub mod codec;
mod convert;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod h2_channel;
pub mod lease;
pub mod limits;
pub mod message_size;
pub mod net;
pub mod overlay;
pub mod proto;
pub mod traceparent;
pub mod version;
pub mod wal;

pub use error::{Error, ErrorKind, Result};
pub use version::{Lsn, Version};

/// The database a process serves when none is named.
pub const DEFAULT_DATABASE: &str = "default";

/// Checks a database name: 1–64 characters of `[A-Za-z0-9_-]`, so it is safe as a directory
/// and object-store path component.
pub fn validate_database_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "database name {} must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'",
            error::echo(name)
        )))
    }
}
