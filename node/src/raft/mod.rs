//! Raft wiring: openraft's type configuration, the peer network client and the peer gRPC service.

pub mod network;
pub mod peer_service;
pub mod wire;

use std::fmt;

use openraft::type_config::alias;
use serde::Deserialize;
use serde::Serialize;

use crate::storage::command::Command;
use crate::storage::command::CommandResponse;

/// A Raft node id. It belongs to a data directory, not to a process or pod.
pub type NodeId = u64;

/// What the cluster knows about a member, stored in the membership config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Human name (a pod name on Kubernetes).
    pub name: String,
    /// host:port of the peer (Raft) service.
    pub peer_addr: String,
    /// host:port of the client services; may be empty until the member publishes it.
    pub client_addr: String,
}

impl fmt::Display for MemberInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}(peer={}, client={})",
            self.name, self.peer_addr, self.client_addr
        )
    }
}

openraft::declare_raft_types!(
    /// ferrokv's openraft configuration: commands and responses of the KV state machine,
    /// u64 node ids, and members described by [`MemberInfo`].
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = MemberInfo,
);

pub type Raft = openraft::Raft<TypeConfig, crate::storage::StateMachine>;
pub type LogId = alias::LogIdOf<TypeConfig>;
pub type Vote = alias::VoteOf<TypeConfig>;
pub type StreamAppendResult = openraft::raft::StreamAppendResult<TypeConfig>;
pub type Entry = alias::EntryOf<TypeConfig>;
pub type SnapshotMeta = alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = alias::SnapshotOf<TypeConfig, crate::storage::SnapshotFile>;
pub type StoredMembership = alias::StoredMembershipOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, MemberInfo>;
