//! The FerrisDB Rust SDK: transactions with FoundationDB's semantics over gRPC.
//!
//! ```no_run
//! # async fn demo() -> ferrisdb_client::Result<()> {
//! use ferrisdb_client::Database;
//!
//! let db = Database::connect("http://127.0.0.1:4500").await?;
//! db.run(|tx| async move {
//!     tx.set("hello", "world");
//!     Ok(())
//! })
//! .await?;
//! let value = db.run(|tx| async move { tx.get("hello").await }).await?;
//! assert_eq!(value.as_deref(), Some(&b"world"[..]));
//! # Ok(())
//! # }
//! ```

mod backoff;
mod conn;
mod database;
mod key_selector;
mod outgoing;
mod session;
pub mod subspace;
mod transaction;
pub mod tuple;
mod watch;

pub use backoff::RetryOptions;
pub use bytes::Bytes;
pub use database::{ConnectOptions, Database, HistoryEntry};
pub use ferrisdb_common::atomic::AtomicOp;
pub use ferrisdb_common::net::ClientTls;
pub use ferrisdb_common::wal::{Mutation, WalRecord as ChangeRecord};
pub use ferrisdb_common::{Error, ErrorKind, Result, Version};
pub use key_selector::KeySelector;
pub use transaction::{RangeOptions, RangeStream, Transaction};
pub use watch::{Watch, WatchEvent};

#[cfg(test)]
mod session_tests;
