//! Shared FerrisDB types: the error type and its codes, versions, size limits, the WAL record
//! codec, the wire protocols (gRPC), object-store configuration, the admin HTTP surface and the
//! foyer hybrid cache builder.

pub mod admin;
pub mod atomic;
pub mod auth;
pub mod clock;
pub mod codec;
pub mod commit_times;
mod convert;
pub mod error;
pub mod faulty_store;
#[doc(hidden)]
pub mod fuzzing;
pub mod hybrid_cache;
pub mod limits;
pub mod message_size;
pub mod net;
pub mod objstore;
pub mod openapi;
pub mod overlay;
pub mod proto;
#[cfg(feature = "otel")]
pub mod telemetry;
pub mod term_history;
pub mod traceparent;
pub mod version;
pub mod versioned_map;
pub mod wal;
pub mod wal_follower;

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
