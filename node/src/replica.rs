//! The replica: what the API layer asks of Raft — writes (proposed here or forwarded to the
//! leader), read barriers (ReadIndex, also through the leader), membership changes, status.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::ReadPolicy;
use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::ClientWriteError;
use openraft::errors::LinearizableReadError;
use openraft::errors::RaftError;
use openraft::raft::linearizable_read::Linearizer;
use openraft::raft::linearizable_read::ReadLogId;
use tokio::time::Instant;

use crate::raft::LogId;
use crate::raft::MemberInfo;
use crate::raft::Membership;
use crate::raft::NodeId;
use crate::raft::Raft;
use crate::raft::network::PeerChannels;
use crate::raft::wire;
use crate::raft::wire::ForwardError;
use crate::raft::wire::ForwardRequest;
use crate::raft::wire::ForwardResponse;
use crate::storage::Store;
use crate::storage::command::Command;
use crate::storage::command::CommandResponse;
use crate::storage::state_machine::KvReader;

/// Committed entries a replica may still have to apply and count as ready: every commit
/// is briefly ahead of its apply, and readiness must not flap with each write.
const MAX_READY_LAG: u64 = 100;

/// How often a request waiting for a leader looks again.
const LEADER_POLL: Duration = Duration::from_millis(25);

/// Why a replica could not serve a request; the API maps each to a gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("no leader: {0}")]
    NoLeader(String),
    #[error("deadline exceeded: {0}")]
    Deadline(String),
    #[error("outcome unknown: {0}")]
    Ambiguous(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("storage: {0}")]
    Storage(#[from] std::io::Error),
    #[error("node is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Internal(String),
}

/// A handle to the local replica, shared by every service.
#[derive(Clone)]
pub struct Replica {
    pub id: NodeId,
    pub info: MemberInfo,
    pub raft: Raft,
    pub reader: KvReader,
    pub store: Store,
    pub channels: PeerChannels,
    pub faults: crate::fault::Faults,
}

/// The result of a write: the log index it was applied at and the state machine's answer.
#[derive(Debug)]
pub struct WriteOutcome {
    pub log_index: u64,
    pub response: CommandResponse,
}

impl Replica {
    /// A copy of the latest Raft metrics (role, leader, indexes, membership).
    pub fn metrics(&self) -> openraft::RaftMetrics<crate::raft::TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.metrics().current_leader
    }

    pub fn term(&self) -> u64 {
        self.metrics().current_term
    }

    pub fn member(&self, id: NodeId) -> Option<MemberInfo> {
        self.metrics()
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()
    }

    /// Waits until some leader is known or the deadline passes.
    async fn wait_leader(&self, deadline: Instant) -> Result<NodeId, ReplicaError> {
        let mut rx = self.raft.metrics();
        loop {
            if let Some(l) = rx.borrow_watched().current_leader {
                return Ok(l);
            }
            let changed = tokio::time::timeout_at(deadline, rx.changed()).await;
            match changed {
                Err(_) => {
                    return Err(ReplicaError::NoLeader(format!(
                        "no leader was elected within the request deadline; replica {} sees no quorum",
                        self.id
                    )));
                }
                Ok(Err(_)) => return Err(ReplicaError::ShuttingDown),
                Ok(Ok(())) => {}
            }
        }
    }

    /// Proposes a command and waits until it is applied, on the leader itself or through it.
    pub async fn write(
        &self,
        cmd: Command,
        deadline: Instant,
    ) -> Result<WriteOutcome, ReplicaError> {
        match self
            .forward_or_run(ForwardRequest::Write(cmd), deadline)
            .await?
        {
            ForwardResponse::Write {
                log_index,
                response,
            } => Ok(WriteOutcome {
                log_index,
                response,
            }),
            other => Err(ReplicaError::Internal(format!(
                "unexpected answer to a write: {other:?}"
            ))),
        }
    }

    /// Runs `req` here if this replica leads, or forwards it to the leader, retrying while
    /// nothing was proposed (no leader yet, leader changed before proposing) until `deadline`.
    pub async fn forward_or_run(
        &self,
        req: ForwardRequest,
        deadline: Instant,
    ) -> Result<ForwardResponse, ReplicaError> {
        loop {
            let leader = self.wait_leader(deadline).await?;
            let result = if leader == self.id {
                match tokio::time::timeout_at(deadline, self.run_as_leader(req.clone())).await {
                    Ok(r) => r,
                    Err(_) => return Err(deadline_unknown()),
                }
            } else {
                self.forward(leader, &req, deadline).await?
            };
            match result {
                Ok(resp) => return Ok(resp),
                Err(ForwardError::NotLeader { .. }) => {
                    if Instant::now() + LEADER_POLL >= deadline {
                        return Err(ReplicaError::NoLeader(
                            "leadership kept changing until the request deadline; the request was not applied".into(),
                        ));
                    }
                    tokio::time::sleep(LEADER_POLL).await;
                }
                Err(ForwardError::InvalidArgument(m)) => {
                    return Err(ReplicaError::InvalidArgument(m));
                }
                Err(ForwardError::Unknown(m)) => return Err(ReplicaError::Ambiguous(m)),
                Err(ForwardError::Failed(m)) => return Err(ReplicaError::FailedPrecondition(m)),
            }
        }
    }

    /// Sends `req` to the leader's peer port. Transport failures after the request may have
    /// been sent are ambiguous for writes; a refused connection means it was never sent.
    async fn forward(
        &self,
        leader: NodeId,
        req: &ForwardRequest,
        deadline: Instant,
    ) -> Result<Result<ForwardResponse, ForwardError>, ReplicaError> {
        let Some(node) = self.member(leader) else {
            return Ok(Err(ForwardError::NotLeader { leader: None }));
        };
        let payload =
            wire::encode(req).map_err(|s| ReplicaError::Internal(s.message().to_string()))?;
        let mut client = self
            .channels
            .client(&node.peer_addr)
            .map_err(|s| ReplicaError::Internal(s.message().to_string()))?;
        let mut request = tonic::Request::new(ferrokv_proto::v1::RaftMessage {
            payload,
            target_id: 0,
        });
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        match client.forward(request).await {
            Ok(reply) => {
                wire::decode::<wire::ForwardResult>("forward reply", &reply.into_inner().payload)
                    .map_err(|s| ReplicaError::Internal(s.message().to_string()))
            }
            Err(status) if never_sent(&status) => {
                // The leader is unreachable: treat like "no leader" and look again.
                Ok(Err(ForwardError::NotLeader { leader: None }))
            }
            Err(status)
                if status.code() == tonic::Code::DeadlineExceeded
                    || status.code() == tonic::Code::Cancelled =>
            {
                Err(deadline_unknown())
            }
            Err(status) => Err(ReplicaError::Ambiguous(format!(
                "lost the connection to leader {leader} after forwarding: {}",
                status.message()
            ))),
        }
    }

    /// Executes a forwarded or local request on this replica, which believes it leads.
    pub async fn run_as_leader(
        &self,
        req: ForwardRequest,
    ) -> Result<ForwardResponse, ForwardError> {
        match req {
            #[cfg(feature = "fault-injection")]
            ForwardRequest::Write(cmd) if self.faults.early_ack() => {
                crate::fault::early_ack_write(self, cmd).await
            }
            ForwardRequest::Write(mut cmd) => {
                cmd.stamp_leader_time(leader_time_ms());
                let resp = self
                    .raft
                    .client_write(cmd)
                    .await
                    .map_err(client_write_error)?;
                Ok(ForwardResponse::Write {
                    log_index: resp.log_id.index(),
                    response: resp.data,
                })
            }
            ForwardRequest::AddLearner {
                id,
                info,
                wait_caught_up,
            } => {
                let membership = self.current_membership();
                if membership.voter_ids().any(|v| v == id) {
                    return Err(ForwardError::InvalidArgument(format!(
                        "member {id} is already a voter"
                    )));
                }
                let resp = self
                    .raft
                    .add_learner(id, info, wait_caught_up)
                    .await
                    .map_err(client_write_error)?;
                Ok(ForwardResponse::Membership {
                    log_index: resp.log_id.index(),
                })
            }
            ForwardRequest::TransferLeader { to } => {
                if !self.current_membership().voter_ids().any(|v| v == to) {
                    return Err(ForwardError::InvalidArgument(format!(
                        "member {to} is not a voter; only a voter can lead"
                    )));
                }
                if to != self.id {
                    self.raft
                        .trigger()
                        .transfer_leader(to)
                        .await
                        .map_err(|e| ForwardError::Failed(e.to_string()))?;
                }
                Ok(ForwardResponse::Done)
            }
            change => match plan_membership_change(&change, &self.current_membership())? {
                Some(change) => {
                    let resp = self
                        .raft
                        .change_membership(change, false)
                        .await
                        .map_err(client_write_error)?;
                    Ok(ForwardResponse::Membership {
                        log_index: resp.log_id.index(),
                    })
                }
                None => Ok(ForwardResponse::Done),
            },
        }
    }

    fn current_membership(&self) -> crate::raft::Membership {
        self.metrics().membership_config.membership().clone()
    }

    /// The read index on this replica if it leads: confirms leadership with a quorum.
    pub async fn leader_read_index(&self) -> Result<LogId, ForwardError> {
        let linearizer = self
            .raft
            .get_read_linearizer(ReadPolicy::ReadIndex)
            .await
            .map_err(|e| match e {
                RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) => {
                    ForwardError::NotLeader {
                        leader: f.leader_id,
                    }
                }
                other => ForwardError::Failed(other.to_string()),
            })?;
        Ok(*linearizer.read_log_id().log_id())
    }

    /// Blocks until a linearizable read may be served from this replica's state machine:
    /// the read index comes from the leader (this replica or another), then the local state
    /// machine must have applied up to it.
    pub async fn read_barrier(&self, deadline: Instant) -> Result<(), ReplicaError> {
        if self.faults.stale_read() {
            return Ok(());
        }
        let read_log_id = loop {
            let leader = self.wait_leader(deadline).await?;
            let result = if leader == self.id {
                match tokio::time::timeout_at(deadline, self.leader_read_index()).await {
                    Ok(r) => r,
                    Err(_) => {
                        return Err(ReplicaError::Deadline(
                            "no quorum confirmed the leader before the deadline".into(),
                        ));
                    }
                }
            } else {
                self.remote_read_index(leader, deadline).await?
            };
            match result {
                Ok(id) => break id,
                Err(ForwardError::NotLeader { .. }) => {
                    if Instant::now() + LEADER_POLL >= deadline {
                        return Err(ReplicaError::NoLeader(
                            "no leader could confirm a read index before the deadline".into(),
                        ));
                    }
                    tokio::time::sleep(LEADER_POLL).await;
                }
                Err(e) => return Err(ReplicaError::NoLeader(e.to_string())),
            }
        };
        let linearizer = Linearizer::new(self.id, ReadLogId::from_log_id(read_log_id), None);
        let remaining = deadline.saturating_duration_since(Instant::now());
        match linearizer
            .try_await_ready(&self.raft, Some(remaining))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ReplicaError::Deadline(
                "this replica did not apply up to the read index before the deadline".into(),
            )),
            Err(_) => Err(ReplicaError::ShuttingDown),
        }
    }

    async fn remote_read_index(
        &self,
        leader: NodeId,
        deadline: Instant,
    ) -> Result<wire::ReadIndexResult, ReplicaError> {
        let Some(node) = self.member(leader) else {
            return Ok(Err(ForwardError::NotLeader { leader: None }));
        };
        let mut client = self
            .channels
            .client(&node.peer_addr)
            .map_err(|s| ReplicaError::Internal(s.message().to_string()))?;
        let mut request = tonic::Request::new(ferrokv_proto::v1::RaftMessage::default());
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        match client.read_index(request).await {
            Ok(reply) => {
                wire::decode::<wire::ReadIndexResult>("read index", &reply.into_inner().payload)
                    .map_err(|s| ReplicaError::Internal(s.message().to_string()))
            }
            Err(s)
                if s.code() == tonic::Code::DeadlineExceeded
                    || s.code() == tonic::Code::Cancelled =>
            {
                Err(ReplicaError::Deadline(
                    "the leader did not confirm a read index before the deadline".into(),
                ))
            }
            // Reads are idempotent: any failure just means asking again.
            Err(_) => Ok(Err(ForwardError::NotLeader { leader: None })),
        }
    }

    /// This replica's role as a word for Status.
    pub fn role(&self) -> &'static str {
        match self.metrics().state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        }
    }

    /// Sends a request on to the leader on behalf of another follower (used by the peer
    /// service when it receives a Forward but is not the leader itself).
    pub async fn handle_forward(
        &self,
        req: ForwardRequest,
    ) -> Result<ForwardResponse, ForwardError> {
        if self.leader() != Some(self.id) {
            return Err(ForwardError::NotLeader {
                leader: self.leader(),
            });
        }
        self.run_as_leader(req).await
    }

    /// Whether this replica is ready to serve: it knows a leader and has applied what it knows
    /// to be committed (within [`MAX_READY_LAG`] entries).
    pub fn is_ready(&self) -> bool {
        let m = self.metrics();
        let index = |l: Option<&crate::raft::LogId>| l.map_or(0, |l| l.index());
        let lag = index(m.local_committed.as_ref()).saturating_sub(index(m.last_applied.as_ref()));
        m.current_leader.is_some() && lag <= MAX_READY_LAG
    }

    /// Waits for a leader change away from this replica, up to `timeout`.
    pub async fn wait_not_leader(&self, timeout: Duration) -> bool {
        let mut rx = self.raft.metrics();
        let deadline = Instant::now() + timeout;
        loop {
            if rx.borrow_watched().current_leader != Some(self.id) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }

    /// A voter that has replicated everything the leader has, to hand leadership to.
    pub fn caught_up_peer(&self) -> Option<NodeId> {
        let m = self.metrics();
        let last = m.last_log_index?;
        let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        let replication = m.replication.as_ref()?;
        replication
            .iter()
            .filter(|(id, _)| **id != self.id && voters.contains(id))
            .max_by_key(|(_, matched)| matched.as_ref().map(|l| l.index()))
            .filter(|(_, matched)| matched.as_ref().map(|l| l.index()) >= Some(last))
            .map(|(id, _)| *id)
    }
}

/// The membership change a promote, remove or member-info request asks for, checked against
/// the current membership; `None` when there is nothing to change.
fn plan_membership_change(
    req: &ForwardRequest,
    membership: &Membership,
) -> Result<Option<ChangeMembers<NodeId, MemberInfo>>, ForwardError> {
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let is_learner = |id: &NodeId| membership.learner_ids().any(|l| l == *id);
    match req {
        ForwardRequest::PromoteLearner { id } => {
            if !is_learner(id) {
                return Err(ForwardError::InvalidArgument(format!(
                    "member {id} is not a learner (learners: {:?})",
                    membership.learner_ids().collect::<Vec<_>>()
                )));
            }
            Ok(Some(ChangeMembers::AddVoterIds(BTreeSet::from([*id]))))
        }
        ForwardRequest::RemoveMember { id } if voters.contains(id) => {
            if voters.len() == 1 {
                return Err(ForwardError::InvalidArgument(format!(
                    "member {id} is the last voter; it cannot be removed"
                )));
            }
            Ok(Some(ChangeMembers::RemoveVoters(BTreeSet::from([*id]))))
        }
        ForwardRequest::RemoveMember { id } if is_learner(id) => {
            Ok(Some(ChangeMembers::RemoveNodes(BTreeSet::from([*id]))))
        }
        ForwardRequest::RemoveMember { id } => Err(ForwardError::InvalidArgument(format!(
            "member {id} is not in the cluster (members: {:?})",
            membership.nodes().map(|(id, _)| *id).collect::<Vec<_>>()
        ))),
        ForwardRequest::UpdateMemberInfo { id, info } => {
            if membership.get_node(id) == Some(info) {
                Ok(None)
            } else {
                Ok(Some(ChangeMembers::SetNodes(BTreeMap::from([(
                    *id,
                    info.clone(),
                )]))))
            }
        }
        other => Err(ForwardError::InvalidArgument(format!(
            "not a membership change: {other:?}"
        ))),
    }
}

/// This leader's wall clock in ms since the epoch, stamped into session commands. Sessions
/// expire by the largest such stamp in the log, never by a replica's own clock.
pub(crate) fn leader_time_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn deadline_unknown() -> ReplicaError {
    ReplicaError::Deadline("the request deadline passed before the write was acknowledged; it may or may not be applied".into())
}

/// Whether a gRPC failure means the request never reached the server.
fn never_sent(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
        && (status.message().contains("tcp connect error")
            || status.message().contains("Connection refused")
            || status.message().contains("error trying to connect"))
}

fn client_write_error(
    e: RaftError<crate::raft::TypeConfig, ClientWriteError<crate::raft::TypeConfig>>,
) -> ForwardError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ForwardError::NotLeader {
            leader: f.leader_id,
        },
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => ForwardError::Unknown(
            "leadership changed after the entry was proposed; it may or may not be applied".into(),
        ),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            ForwardError::Failed(c.to_string())
        }
        RaftError::APIError(ClientWriteError::PreconditionFailed(p)) => {
            ForwardError::Failed(p.to_string())
        }
        RaftError::Fatal(f) => ForwardError::Unknown(format!("the leader stopped: {f}")),
    }
}

/// Shared handle type for services.
pub type SharedReplica = Arc<Replica>;

#[cfg(test)]
mod tests {
    use super::*;

    fn membership(voters: &[NodeId], learners: &[NodeId]) -> Membership {
        let nodes: BTreeMap<NodeId, MemberInfo> = voters
            .iter()
            .chain(learners)
            .map(|id| (*id, MemberInfo::default()))
            .collect();
        Membership::new(vec![voters.iter().copied().collect()], nodes).expect("valid membership")
    }

    #[test]
    fn membership_changes_are_checked_against_the_current_membership() {
        let m = membership(&[1, 2, 3], &[4]);
        let plan = |req| plan_membership_change(&req, &m);
        assert!(matches!(
            plan(ForwardRequest::PromoteLearner { id: 4 }),
            Ok(Some(ChangeMembers::AddVoterIds(_)))
        ));
        assert!(matches!(
            plan(ForwardRequest::PromoteLearner { id: 2 }),
            Err(ForwardError::InvalidArgument(_))
        ));
        assert!(matches!(
            plan(ForwardRequest::RemoveMember { id: 2 }),
            Ok(Some(ChangeMembers::RemoveVoters(_)))
        ));
        assert!(matches!(
            plan(ForwardRequest::RemoveMember { id: 4 }),
            Ok(Some(ChangeMembers::RemoveNodes(_)))
        ));
        let Err(ForwardError::InvalidArgument(msg)) = plan(ForwardRequest::RemoveMember { id: 9 })
        else {
            panic!("removing an unknown member must fail")
        };
        assert!(msg.contains("member 9 is not in the cluster"), "{msg}");
        let single = membership(&[1], &[]);
        assert!(plan_membership_change(&ForwardRequest::RemoveMember { id: 1 }, &single).is_err());
        // Publishing unchanged member info is a no-op; changed info is a SetNodes change.
        assert!(matches!(
            plan(ForwardRequest::UpdateMemberInfo {
                id: 1,
                info: MemberInfo::default()
            }),
            Ok(None)
        ));
        let info = MemberInfo {
            name: "n".into(),
            ..Default::default()
        };
        assert!(matches!(
            plan(ForwardRequest::UpdateMemberInfo { id: 1, info }),
            Ok(Some(ChangeMembers::SetNodes(_)))
        ));
    }
}
