//! The generated gRPC types and services (`common/proto/ferrisdb/v1`), and conversions
//! between wire and log mutations.

#![allow(missing_docs, clippy::all)]

tonic::include_proto!("ferrisdb.v1");
