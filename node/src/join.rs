//! Starting on an empty volume without `--id` (Kubernetes): decide whether to form the
//! initial cluster or join an existing one, get a fresh node id when joining, and replace
//! this member's old self once caught up.
//!
//! The decision is a pure function over what the initial members answer to a probe:
//! - some member's log has entries past the initial membership → a cluster has existed:
//!   join it under a new id (never reuse an id on an empty disk: the old id may have voted
//!   and acknowledged entries this empty disk no longer has);
//! - every initial member answered and none has such a log → the cluster is still forming:
//!   form it with the id of our ordinal, like the others; the same when the cluster formed
//!   without us and our id has never been heard from (its name was never published);
//! - otherwise (someone is unreachable, or there is no leader yet) → wait and ask again.
//!   Waiting on an unreachable member is what keeps two pods that lost their volumes while a
//!   third is down from forming a second, empty cluster.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::Duration;

use ferrokv_proto::v1::RaftMessage;

use crate::raft::NodeId;
use crate::raft::network::PeerChannels;
use crate::raft::wire;
use crate::raft::wire::ForwardRequest;
use crate::raft::wire::ForwardResponse;
use crate::raft::wire::ProbeReply;
use crate::replica::Replica;
use crate::storage::command::Command;
use crate::storage::command::CommandResponse;

/// What an empty replica should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Form the initial cluster as member `id`.
    Form { id: NodeId },
    /// Join the existing cluster through its leader.
    Join { leader_peer_addr: String },
    /// Ask again later; the reason is logged.
    Wait(String),
}

/// The node id an initial member takes: its StatefulSet ordinal plus one (`ferrokv-0` → 1).
pub fn id_from_name(name: &str) -> Option<NodeId> {
    let (_, ordinal) = name.rsplit_once('-')?;
    ordinal.parse::<u64>().ok().map(|o| o + 1)
}

/// Decides from the probe answers of the initial members other than this one (`None`: it did
/// not answer). `my_id` is this replica's id as an initial member, if it is one.
pub fn decide(my_id: Option<NodeId>, answers: &BTreeMap<NodeId, Option<ProbeReply>>) -> Decision {
    let existed = answers
        .values()
        .flatten()
        .any(|r| r.initialized && r.last_log_index > 0);
    // An initial member that the cluster has never heard from (it never published its name)
    // lost nothing: it starts under its own id, as if it had been on time for forming.
    let never_started = my_id.is_some_and(|id| {
        answers
            .values()
            .flatten()
            .any(|r| r.initialized && r.unstarted.contains(&id))
    });
    if let (true, Some(id)) = (never_started, my_id) {
        return Decision::Form { id };
    }
    if existed {
        let leader = answers
            .values()
            .flatten()
            .find_map(|r| r.leader_peer_addr.clone());
        return match leader {
            Some(leader_peer_addr) => Decision::Join { leader_peer_addr },
            None => Decision::Wait("the cluster exists but has no leader yet".into()),
        };
    }
    let silent: Vec<NodeId> = answers
        .iter()
        .filter(|(_, a)| a.is_none())
        .map(|(id, _)| *id)
        .collect();
    if !silent.is_empty() {
        return Decision::Wait(format!(
            "initial members {silent:?} do not answer; forming or joining needs to hear from all of them"
        ));
    }
    match my_id {
        Some(id) => Decision::Form { id },
        None => Decision::Wait(
            "the cluster has not formed yet and this replica is not an initial member".into(),
        ),
    }
}

async fn probe(channels: &PeerChannels, addr: &str) -> Option<ProbeReply> {
    let mut client = channels.client(addr).ok()?;
    let mut req = tonic::Request::new(RaftMessage::default());
    req.set_timeout(Duration::from_secs(2));
    let reply = client.probe(req).await.ok()?;
    wire::decode("probe reply", &reply.into_inner().payload).ok()
}

/// Probes the other initial members until [`decide`] says form or join.
pub async fn discover(
    channels: &PeerChannels,
    initial: &BTreeMap<NodeId, String>,
    my_id: Option<NodeId>,
) -> Decision {
    loop {
        let mut answers = BTreeMap::new();
        for (id, addr) in initial.iter().filter(|(id, _)| Some(**id) != my_id) {
            answers.insert(*id, probe(channels, addr).await);
        }
        match decide(my_id, &answers) {
            Decision::Wait(reason) => {
                tracing::info!("empty data dir: waiting before forming or joining: {reason}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            d => return d,
        }
    }
}

async fn forward(
    channels: &PeerChannels,
    leader: &str,
    req: &ForwardRequest,
    timeout: Duration,
) -> Option<wire::ForwardResult> {
    let payload = wire::encode(req).ok()?;
    let mut client = channels.client(leader).ok()?;
    let mut request = tonic::Request::new(RaftMessage {
        payload,
        target_id: 0,
    });
    request.set_timeout(timeout);
    let reply = client.forward(request).await.ok()?;
    wire::decode("forward reply", &reply.into_inner().payload).ok()
}

/// Asks the leader for a node id no replica has had. Retries (re-probing for the leader)
/// until it gets one; a lost answer only wastes an id.
pub async fn allocate_id(
    channels: &PeerChannels,
    initial: &BTreeMap<NodeId, String>,
    my_id: Option<NodeId>,
) -> NodeId {
    let req = ForwardRequest::Write(Command::AllocateNodeId);
    loop {
        if let Decision::Join { leader_peer_addr } = discover(channels, initial, my_id).await {
            match forward(channels, &leader_peer_addr, &req, Duration::from_secs(5)).await {
                Some(Ok(ForwardResponse::Write {
                    response: CommandResponse::NodeId(id),
                    ..
                })) => return id,
                other => tracing::info!(
                    "allocating a node id through {leader_peer_addr}: {other:?}; retrying"
                ),
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Joins as a learner, waits to catch up, becomes a voter, then removes members that carry
/// this replica's name under another id (its old self, whose volume was lost). Each step
/// goes to the leader found by probing the initial members: this replica learns of a
/// leader through Raft only once it is a member.
pub async fn join_cluster(replica: Replica, initial: BTreeMap<NodeId, String>) {
    let id = replica.id;
    let add = ForwardRequest::AddLearner {
        id,
        info: replica.info.clone(),
        wait_caught_up: true,
    };
    run_until_done(&replica, &initial, add).await;
    run_until_done(&replica, &initial, ForwardRequest::PromoteLearner { id }).await;
    let stale: BTreeSet<NodeId> = replica
        .metrics()
        .membership_config
        .membership()
        .nodes()
        .filter(|(other, info)| **other != id && info.name == replica.info.name)
        .map(|(other, _)| *other)
        .collect();
    for old in stale {
        tracing::info!(old, new = id, "replacing this member's old self");
        run_until_done(&replica, &initial, ForwardRequest::RemoveMember { id: old }).await;
    }
    tracing::info!(id, "joined the cluster as a voter");
}

async fn run_until_done(
    replica: &Replica,
    initial: &BTreeMap<NodeId, String>,
    req: ForwardRequest,
) {
    loop {
        let leader = match discover(&replica.channels, initial, None).await {
            Decision::Join { leader_peer_addr } => leader_peer_addr,
            _ => continue,
        };
        // Catching up may mean a large snapshot: allow minutes.
        match forward(&replica.channels, &leader, &req, Duration::from_secs(600)).await {
            Some(Ok(_)) => return,
            Some(Err(wire::ForwardError::InvalidArgument(m))) if already_done(&req, &m) => return,
            other => {
                tracing::info!(?req, "joining through {leader}: {other:?}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Whether a rejected step was rejected because it already happened (a retry after a lost
/// answer): promoting a voter, removing a non-member.
fn already_done(req: &ForwardRequest, message: &str) -> bool {
    match req {
        ForwardRequest::PromoteLearner { .. } => message.contains("is not a learner"),
        ForwardRequest::RemoveMember { .. } => message.contains("is not in the cluster"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Option<ProbeReply> {
        Some(ProbeReply::default())
    }

    fn formed(leader: Option<&str>) -> Option<ProbeReply> {
        Some(ProbeReply {
            id: Some(1),
            initialized: true,
            last_log_index: 42,
            leader: leader.map(|_| 1),
            leader_peer_addr: leader.map(str::to_string),
            unstarted: Vec::new(),
        })
    }

    #[test]
    fn names_give_ordinal_plus_one() {
        assert_eq!(id_from_name("ferrokv-0"), Some(1));
        assert_eq!(id_from_name("ferrokv-12"), Some(13));
        assert_eq!(id_from_name("ferrokv"), None);
    }

    #[test]
    fn cold_parallel_start_forms_once_everyone_answers() {
        let answers = BTreeMap::from([(2, fresh()), (3, fresh())]);
        assert_eq!(decide(Some(1), &answers), Decision::Form { id: 1 });
        // Someone just initialized but no leader ever existed: still forming, same membership.
        let initialized_only = Some(ProbeReply {
            initialized: true,
            ..Default::default()
        });
        let answers = BTreeMap::from([(2, initialized_only), (3, fresh())]);
        assert_eq!(decide(Some(1), &answers), Decision::Form { id: 1 });
    }

    #[test]
    fn a_late_initial_member_takes_its_own_id_if_it_was_never_heard_from() {
        let mut late = formed(Some("a:1")).expect("reply");
        late.unstarted = vec![2];
        let answers = BTreeMap::from([(1, Some(late.clone())), (3, Some(late))]);
        assert_eq!(decide(Some(2), &answers), Decision::Form { id: 2 });
        // Once it had published its name, an empty volume means it lost its data: join anew.
        let answers = BTreeMap::from([(1, formed(Some("a:1"))), (3, formed(Some("a:1")))]);
        assert!(matches!(decide(Some(2), &answers), Decision::Join { .. }));
    }

    #[test]
    fn an_unreachable_member_blocks_forming() {
        // Two pods lost their volumes while the third is down: they must not form a new,
        // empty cluster between themselves.
        let answers = BTreeMap::from([(2, fresh()), (3, None)]);
        assert!(matches!(decide(Some(1), &answers), Decision::Wait(_)));
    }

    #[test]
    fn an_existing_cluster_is_joined_through_its_leader() {
        let answers = BTreeMap::from([(1, formed(Some("ferrokv-0.peer:2380"))), (3, None)]);
        assert_eq!(
            decide(Some(2), &answers),
            Decision::Join {
                leader_peer_addr: "ferrokv-0.peer:2380".into()
            }
        );
        let answers = BTreeMap::from([(1, formed(None)), (3, fresh())]);
        assert!(matches!(decide(Some(2), &answers), Decision::Wait(_)));
        // A scale-up pod (not an initial member) joins too, and never forms.
        let answers = BTreeMap::from([
            (1, formed(Some("a:1"))),
            (2, formed(Some("a:1"))),
            (3, formed(Some("a:1"))),
        ]);
        assert!(matches!(decide(None, &answers), Decision::Join { .. }));
        let answers = BTreeMap::from([(1, fresh()), (2, fresh()), (3, fresh())]);
        assert!(matches!(decide(None, &answers), Decision::Wait(_)));
    }
}
