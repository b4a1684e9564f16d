//! ferrokv-node: one replica of ferrokv — RocksDB storage, openraft replication, gRPC services.
//!
//! # Layout
//! - [`cli`]: the `ferrokv` command line; [`fault`]: test-only faults (feature
//!   `fault-injection`, binary `ferrokv-faulty`).
//! - [`config`]: flags and `FERROKV_*` environment fallbacks, parsed once.
//! - [`storage`]: the RocksDB store — log, vote, state machine, snapshots — and the
//!   durability contract of DESIGN.md §2.
//! - [`raft`]: openraft's type configuration, the peer network client and the peer service.
//! - [`replica`]: what services ask of Raft — writes (forwarded to the leader from any
//!   replica), read barriers, membership changes.
//! - [`api`]: the client gRPC services (KV, Cluster, Maintenance), health and metrics.
//! - [`join`]: on an empty volume without `--id`, form the cluster or join it (new id,
//!   learner, voter, replacing a lost old self).
//! - [`server`]: wiring, bootstrap and graceful shutdown; [`local_cluster`]: three replicas
//!   on one machine for people trying ferrokv.
//!
//! A write flows: KV service → [`replica::Replica::write`] → (leader) `Raft::client_write` →
//! log store (fsync, group commit) → replication → commit → state machine apply → response.
//! A linearizable read flows: KV service → [`replica::Replica::read_barrier`] (read index from
//! the leader, wait until applied) → state machine read.

pub mod api;
pub mod cli;
pub mod config;
pub mod fault;
pub mod join;
pub mod local_cluster;
pub mod raft;
pub mod replica;
pub mod server;
pub mod storage;
