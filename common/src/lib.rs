//! Shared FerrisDB types: the error type and its codes, versions, size limits, the WAL record
//! codec, the wire protocols (gRPC), object-store configuration and the admin HTTP surface.

pub mod admin;
pub mod clock;
mod convert;
pub mod error;
pub mod limits;
pub mod net;
pub mod objstore;
pub mod proto;
pub mod version;
pub mod wal;

pub use error::{Error, ErrorKind, Result};
pub use version::{Lsn, Version};

/// The database a process serves when none is named.
pub const DEFAULT_DATABASE: &str = "default";
