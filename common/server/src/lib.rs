//! What FerrisDB's servers share and its clients never need: the admin HTTP server and its
//! OpenAPI document, server networking and auth, object storage, the foyer hybrid cache, the
//! versioned map, the WAL follower, term history, the commit-time index, the injected clock
//! and trace propagation.
//!
//! The wire types every process and the SDK share (protos, errors and codes, versions, the
//! WAL codec, limits) are in `ferrisdb-common`; this crate builds on them. Keeping the two
//! apart means an application that links the SDK compiles no server library (foyer,
//! object_store, axum, prometheus).

pub mod admin;
pub mod admission;
pub mod args;
pub mod auth;
pub mod clock;
pub mod commit_times;
pub mod dir_lock;
#[cfg(any(test, feature = "test-aids"))]
pub mod faulty_store;
pub mod hybrid_cache;
pub mod identity;
pub mod objstore;
pub mod openapi;
pub mod sealed;
pub mod serve;
pub mod telemetry;
pub mod term_history;
pub mod versioned_map;
pub mod wal_follower;
