//! ferrokv's wire protocol: generated messages and gRPC stubs for package `ferrokv.v1`.
//!
//! # Layout
//! - `common.proto`: `ResponseHeader` (on every response) and `KeyValue`.
//! - `kv.proto`: the `KV` service (Get, Put, Delete, Scan, Txn).
//! - `cluster.proto`: the `Cluster` service (membership, leadership, per-replica status).
//! - `maintenance.proto`: the `Maintenance` service (streamed backup, status).
//! - `raft.proto`: the `RaftPeer` service replicas speak to each other on the peer port.

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

/// Generated code for `ferrokv.v1`.
pub mod v1 {
    tonic::include_proto!("ferrokv.v1");
}

pub use v1::*;
