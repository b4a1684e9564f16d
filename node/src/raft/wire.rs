//! Messages replicas exchange on the peer port besides openraft's own: forwarded writes and
//! membership changes, read-index requests, and the encoding all peer payloads share.

use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::LogId;
use super::MemberInfo;
use super::NodeId;
use crate::storage::command::Command;
use crate::storage::command::CommandResponse;

/// Peer payloads are postcard; both ends run the same ferrokv version during a rolling
/// upgrade window only if the encoding stays compatible, so fields are only ever appended.
pub fn encode<T: Serialize>(v: &T) -> Result<bytes::Bytes, tonic::Status> {
    postcard::to_stdvec(v)
        .map(bytes::Bytes::from)
        .map_err(|e| tonic::Status::internal(format!("cannot encode peer message: {e}")))
}

pub fn decode<T: DeserializeOwned>(what: &str, b: &[u8]) -> Result<T, tonic::Status> {
    postcard::from_bytes(b)
        .map_err(|e| tonic::Status::invalid_argument(format!("cannot decode peer {what}: {e}")))
}

/// A request a follower hands to the leader because only the leader can propose it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardRequest {
    Write(Command),
    AddLearner {
        id: NodeId,
        info: MemberInfo,
        wait_caught_up: bool,
    },
    PromoteLearner {
        id: NodeId,
    },
    RemoveMember {
        id: NodeId,
    },
    TransferLeader {
        to: NodeId,
    },
    /// A member publishes its own name and addresses (they may change across restarts).
    UpdateMemberInfo {
        id: NodeId,
        info: MemberInfo,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardResponse {
    Write {
        log_index: u64,
        response: CommandResponse,
    },
    Membership {
        log_index: u64,
    },
    Done,
}

/// Why a forwarded request failed, with enough to tell a retry from a final answer.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    /// The receiver is not the leader; nothing was proposed.
    #[error("not the leader (leader is {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// The request is wrong and retrying will not help; nothing was proposed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request was proposed but its outcome is unknown (leadership changed meanwhile).
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// Failed without being applied.
    #[error("{0}")]
    Failed(String),
}

pub type ForwardResult = Result<ForwardResponse, ForwardError>;

/// The leader's answer to a read-index request: reads are linearizable once the asking
/// replica has applied `read_log_id`.
pub type ReadIndexResult = Result<LogId, ForwardError>;

/// A replica's answer to a probe from a replica deciding whether to form or join a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReply {
    /// This replica's node id, once it has one.
    pub id: Option<NodeId>,
    /// Whether its Raft state holds a membership (it formed or joined a cluster).
    pub initialized: bool,
    /// Index of the last entry in its log (0: nothing after the initial membership).
    pub last_log_index: u64,
    pub leader: Option<NodeId>,
    /// Peer address of the leader, when known.
    pub leader_peer_addr: Option<String>,
    /// Members that have never published their name: they never finished starting, so an
    /// initial member among them that comes up empty has lost nothing and may take its id.
    pub unstarted: Vec<NodeId>,
}
