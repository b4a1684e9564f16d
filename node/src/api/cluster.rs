//! The Cluster service: membership changes (proposed by the leader, forwarded from any
//! replica), leadership transfer and per-replica status.

use ferrokv_proto::v1 as pb;
use ferrokv_proto::v1::cluster_server::Cluster;
use openraft::async_runtime::watch::WatchReceiver;
use tokio::time::Instant;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::ApiLimits;
use super::deadline;
use super::header;
use crate::raft::MemberInfo;
use crate::raft::wire::ForwardRequest;
use crate::replica::Replica;

pub struct ClusterService {
    pub replica: Replica,
    pub limits: ApiLimits,
}

/// Members in the replica's latest membership config, voters and learners.
pub fn members(replica: &Replica) -> Vec<pb::Member> {
    let m = replica.metrics().membership_config.clone();
    let membership = m.membership();
    let voters: std::collections::BTreeSet<_> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, info)| pb::Member {
            id: *id,
            name: info.name.clone(),
            peer_addr: info.peer_addr.clone(),
            client_addr: info.client_addr.clone(),
            is_learner: !voters.contains(id),
        })
        .collect()
}

/// This replica's status, shared by Cluster.Status and Maintenance.Status.
pub fn status(replica: &Replica, req: &pb::StatusRequest) -> Result<pb::StatusResponse, Status> {
    let m = replica.metrics();
    let info = m
        .membership_config
        .membership()
        .get_node(&replica.id)
        .cloned()
        .unwrap_or_else(|| replica.info.clone());
    let (state_hash, state_hash_revision) = if req.with_state_hash {
        replica.reader.state_hash().map_err(super::storage_status)?
    } else {
        (0, 0)
    };
    Ok(pb::StatusResponse {
        header: Some(header(replica)),
        id: replica.id,
        name: info.name,
        peer_addr: info.peer_addr,
        client_addr: info.client_addr,
        role: replica.role().to_string(),
        leader_id: m.current_leader.unwrap_or(0),
        term: m.current_term,
        commit_index: m.local_committed.as_ref().map_or(0, |l| l.index()),
        applied_index: m.last_applied.as_ref().map_or(0, |l| l.index()),
        last_log_index: m.last_log_index.unwrap_or(0),
        snapshot_index: m.snapshot.as_ref().map_or(0, |l| l.index()),
        db_size_bytes: replica.store.size_on_disk(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        key_count: replica.reader.approximate_key_count(),
        state_hash,
        state_hash_revision,
    })
}

fn check_id(id: u64) -> Result<(), Status> {
    if id == 0 {
        return Err(Status::invalid_argument(
            "member id 0 is not valid; ids start at 1",
        ));
    }
    Ok(())
}

impl ClusterService {
    async fn run(&self, req: ForwardRequest, deadline: Instant) -> Result<(), Status> {
        self.replica.forward_or_run(req, deadline).await?;
        Ok(())
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        _req: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Ok(Response::new(pb::MemberListResponse {
            header: Some(header(&self.replica)),
            members: members(&self.replica),
        }))
    }

    async fn add_learner(
        &self,
        req: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::AddLearnerResponse>, Status> {
        let deadline = deadline(&req, self.limits.default_deadline);
        let r = req.into_inner();
        check_id(r.id)?;
        if r.peer_addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(Status::invalid_argument(format!(
                "peer address {:?} is not HOST:PORT",
                r.peer_addr
            )));
        }
        let name = if r.name.is_empty() {
            format!("ferrokv-{}", r.id)
        } else {
            r.name
        };
        let info = MemberInfo {
            name,
            peer_addr: r.peer_addr,
            client_addr: r.client_addr,
        };
        self.run(
            ForwardRequest::AddLearner {
                id: r.id,
                info,
                wait_caught_up: r.wait_caught_up,
            },
            deadline,
        )
        .await?;
        Ok(Response::new(pb::AddLearnerResponse {
            header: Some(header(&self.replica)),
            members: members(&self.replica),
        }))
    }

    async fn promote_learner(
        &self,
        req: Request<pb::PromoteLearnerRequest>,
    ) -> Result<Response<pb::PromoteLearnerResponse>, Status> {
        let deadline = deadline(&req, self.limits.default_deadline);
        let id = req.into_inner().id;
        check_id(id)?;
        self.run(ForwardRequest::PromoteLearner { id }, deadline)
            .await?;
        Ok(Response::new(pb::PromoteLearnerResponse {
            header: Some(header(&self.replica)),
            members: members(&self.replica),
        }))
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let deadline = deadline(&req, self.limits.default_deadline);
        let id = req.into_inner().id;
        check_id(id)?;
        self.run(ForwardRequest::RemoveMember { id }, deadline)
            .await?;
        Ok(Response::new(pb::RemoveMemberResponse {
            header: Some(header(&self.replica)),
            members: members(&self.replica),
        }))
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let deadline = deadline(&req, self.limits.default_deadline);
        let to = req.into_inner().target_id;
        check_id(to)?;
        self.run(ForwardRequest::TransferLeader { to }, deadline)
            .await?;
        let mut rx = self.replica.raft.metrics();
        loop {
            if rx.borrow_watched().current_leader == Some(to) {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(Status::unavailable("no leader: this node is shutting down"));
                }
                Err(_) => {
                    return Err(Status::deadline_exceeded(format!(
                        "leadership did not reach member {to} before the deadline (leader is {:?})",
                        rx.borrow_watched().current_leader
                    )));
                }
            }
        }
        Ok(Response::new(pb::TransferLeaderResponse {
            header: Some(header(&self.replica)),
            leader_id: to,
        }))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(status(&self.replica, req.get_ref())?))
    }
}
