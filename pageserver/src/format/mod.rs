//! What the pageserver writes to object storage, each format with its encoder and reader.
//!
//! - `delta`: delta and image layers, sorted SSTables read block by block (an image layer is
//!   a delta layer covering a single version, flagged as an image by the manifest).
//! - [`cold_segment`]: the committed log itself, as Parquet.
//! - [`manifest`]: which layers and segments make up a database, written with conditional PUTs;
//!   also where every object lives in the bucket.
//!
//! They are leaves: none of them knows about timelines, so the timeline code depends on them
//! and never the other way round.

pub mod cold_segment;
pub(crate) mod delta;
pub mod manifest;
