//! Replication and fault tolerance on real 3-process clusters: any replica serves any
//! request, kill -9 loses nothing acknowledged, restarted and lagging replicas catch up
//! (from the log or a snapshot), and a replica that lost its volume is replaced.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ferrokv_client::PutOptions;
use ferrokv_client::ReadOptions;
use ferrokv_proto::v1 as pb;
use ferrokv_proto::v1::cluster_client::ClusterClient;
use ferrokv_tests::Cluster;
use ferrokv_tests::ClusterOptions;
use ferrokv_tests::wait_until;

const SECS_30: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_every_replica_are_readable_through_every_other() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    for &writer in &ids {
        let key = format!("written-via-{writer}");
        cluster
            .node_client(writer)
            .put(key.as_str(), format!("v{writer}"), PutOptions::default())
            .await
            .expect("put");
        // Linearizable reads through every replica, followers included, see the write at once.
        for &reader in &ids {
            let (header, kv) = cluster
                .node_client(reader)
                .get(key.as_str(), ReadOptions::default())
                .await
                .expect("get");
            assert_eq!(
                kv.map(|kv| kv.value),
                Some(format!("v{writer}").into_bytes()),
                "read via {reader}"
            );
            assert_eq!(header.member_id, reader);
            assert_ne!(header.leader_id, 0);
            assert_ne!(
                header.cluster_id, 0,
                "the cluster id is recorded once a leader exists"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_leader_during_writes_loses_nothing() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_leader(SECS_30).await;

    let stop = Arc::new(AtomicBool::new(false));
    let client = cluster.client();
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("k{i:05}");
                // Only acknowledged writes count; an error means "maybe not applied".
                if client
                    .put(key.as_str(), format!("v{i}"), PutOptions::default())
                    .await
                    .is_ok()
                {
                    acked.insert(key, format!("v{i}"));
                }
                i += 1;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.kill9(leader);
    let killed_at = std::time::Instant::now();
    let new_leader = cluster.wait_leader(SECS_30).await;
    assert_ne!(new_leader, leader);
    let failover = killed_at.elapsed();
    assert!(
        failover < Duration::from_secs(10),
        "no new leader for {failover:?}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.expect("writer task");
    assert!(acked.len() > 20, "only {} writes acknowledged", acked.len());

    // Every acknowledged write is readable (linearizable) from the survivors.
    let client = cluster.client();
    for (k, v) in &acked {
        let (_, kv) = client
            .get(k.as_str(), ReadOptions::default())
            .await
            .expect("get");
        assert_eq!(
            kv.map(|kv| kv.value),
            Some(v.clone().into_bytes()),
            "acknowledged write {k} lost"
        );
    }

    // The killed node restarts on its own data dir and catches up: its own state matches.
    cluster.spawn(leader);
    let target = cluster
        .status(new_leader)
        .await
        .expect("leader status")
        .commit_index;
    cluster.wait_applied(leader, target, SECS_30).await;
    for (k, v) in &acked {
        assert_eq!(
            cluster.serializable_get(leader, k).await,
            Some(v.clone().into_bytes()),
            "{k} on restarted node"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_down_while_log_is_purged_catches_up_by_snapshot() {
    let opts = ClusterOptions {
        snapshot_entries: 50,
        snapshot_keep_entries: 10,
        ..Default::default()
    };
    let mut cluster = Cluster::start(opts).await;
    let leader = cluster.wait_leader(SECS_30).await;
    let down = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    cluster.kill9(down);

    let client = cluster.client();
    for i in 0..400 {
        client
            .put(
                format!("s{i:04}"),
                format!("value-{i}"),
                PutOptions::default(),
            )
            .await
            .expect("put");
    }
    let leader_status = cluster.status(leader).await.expect("leader status");
    assert!(
        leader_status.snapshot_index > 100,
        "leader took no snapshot: {leader_status:?}"
    );

    cluster.spawn(down);
    cluster
        .wait_applied(down, leader_status.commit_index, SECS_30)
        .await;
    let status = cluster.status(down).await.expect("status");
    assert!(
        status.snapshot_index > 0,
        "the restarted node should have installed a snapshot (its log was purged on the leader): {status:?}"
    );
    for i in [0, 123, 399] {
        assert_eq!(
            cluster.serializable_get(down, &format!("s{i:04}")).await,
            Some(format!("value-{i}").into_bytes())
        );
    }
}

async fn cluster_api(cluster: &Cluster, via: u64) -> ClusterClient<tonic::transport::Channel> {
    ClusterClient::connect(format!("http://{}", cluster.nodes[&via].endpoint()))
        .await
        .expect("cluster client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_that_lost_its_volume_is_replaced_as_learner_then_voter() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let client = cluster.client();
    for i in 0..100 {
        client
            .put(format!("w{i}"), "x", PutOptions::default())
            .await
            .expect("put");
    }
    let leader = cluster.wait_leader(SECS_30).await;
    let lost = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    let via = *cluster
        .nodes
        .keys()
        .find(|id| **id != lost)
        .expect("a survivor");
    cluster.kill9(lost);
    cluster.wipe(lost);

    // Remove the old member through a replica that may be a follower (it forwards).
    let mut api = cluster_api(&cluster, via).await;
    api.remove_member(pb::RemoveMemberRequest { id: lost })
        .await
        .expect("remove member");

    // The replacement comes back empty under a new id (an id is never reused on an empty disk).
    let new_id = 10 + lost;
    let (peer_addr, client_addr) = {
        let n = cluster.add_node(new_id);
        (n.peer_addr(), n.endpoint())
    };
    let resp = api
        .add_learner(pb::AddLearnerRequest {
            id: new_id,
            name: format!("ferrokv-{new_id}"),
            peer_addr,
            client_addr,
            wait_caught_up: true,
        })
        .await
        .expect("add learner")
        .into_inner();
    assert!(resp.members.iter().any(|m| m.id == new_id && m.is_learner));
    api.promote_learner(pb::PromoteLearnerRequest { id: new_id })
        .await
        .expect("promote");

    let members = api
        .member_list(pb::MemberListRequest {})
        .await
        .expect("members")
        .into_inner()
        .members;
    let voters: Vec<u64> = members
        .iter()
        .filter(|m| !m.is_learner)
        .map(|m| m.id)
        .collect();
    assert_eq!(voters.len(), 3, "{members:?}");
    assert!(
        voters.contains(&new_id) && !voters.contains(&lost),
        "{members:?}"
    );

    let commit = cluster.status(via).await.expect("status").commit_index;
    cluster.wait_applied(new_id, commit, SECS_30).await;
    assert_eq!(
        cluster.serializable_get(new_id, "w99").await,
        Some(b"x".to_vec())
    );
    // The new voter takes part in quorum: with another original voter down, writes go on.
    let other = *cluster
        .running()
        .iter()
        .find(|id| **id != new_id && **id != leader)
        .expect("third voter");
    cluster.kill9(other);
    let client = cluster.client();
    client
        .put("after-replacement", "ok", PutOptions::default())
        .await
        .expect("put with the new voter in quorum");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_leader_hands_over_leadership_and_exits_cleanly() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_leader(SECS_30).await;
    cluster
        .client()
        .put("before", "stop", PutOptions::default())
        .await
        .expect("put");
    let status = cluster.terminate(leader);
    assert!(status.success(), "ferrokv exited with {status}");
    let new_leader = cluster.wait_leader(SECS_30).await;
    assert_ne!(new_leader, leader);
    let log = std::fs::read_to_string(&cluster.nodes[&leader].log_path).expect("log");
    assert!(
        log.contains("leadership handed over"),
        "the leader did not hand over before stopping"
    );
    let (_, kv) = cluster
        .client()
        .get("before", ReadOptions::default())
        .await
        .expect("get");
    assert_eq!(kv.map(|kv| kv.value), Some(b"stop".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_cluster_keeps_its_data_and_ignores_initial_cluster() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    cluster
        .client()
        .put("durable", "yes", PutOptions::default())
        .await
        .expect("put");
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    for &id in &ids {
        cluster.kill9(id);
    }
    for &id in &ids {
        cluster.spawn(id);
    }
    cluster.wait_leader(SECS_30).await;
    let (_, kv) = cluster
        .client()
        .get("durable", ReadOptions::default())
        .await
        .expect("get");
    assert_eq!(kv.map(|kv| kv.value), Some(b"yes".to_vec()));
    let members = cluster
        .client()
        .member_list()
        .await
        .expect("members")
        .members;
    assert_eq!(members.len(), 3);
    wait_until(
        "restarted members to publish their client addresses",
        SECS_30,
        || async {
            let members = cluster.client().member_list().await.ok()?.members;
            members
                .iter()
                .all(|m| !m.client_addr.is_empty())
                .then_some(())
        },
    )
    .await;
}

/// A replica that took over an old member's address must never be counted as that member:
/// peer messages name the node id they are for, and both append paths (the unary call
/// heartbeats use, the stream replication uses) refuse messages for another id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_messages_for_another_node_id_are_refused_on_both_paths() {
    use ferrokv_proto::v1::RaftMessage;
    use ferrokv_proto::v1::raft_peer_client::RaftPeerClient;

    let cluster = Cluster::start(ClusterOptions::default()).await;
    let node = &cluster.nodes[&1];
    let mut peer = RaftPeerClient::connect(format!("http://{}", node.peer_addr()))
        .await
        .expect("peer connect");
    let for_someone_else = RaftMessage {
        payload: b"never decoded".to_vec().into(),
        target_id: 99,
    };

    let unary = peer
        .append_entries(for_someone_else.clone())
        .await
        .expect_err("unary append for node 99");
    assert_eq!(unary.code(), tonic::Code::FailedPrecondition);
    assert!(unary.message().contains("not node 99"), "{unary:?}");

    let mut answers = peer
        .stream_append(tokio_stream::iter(vec![for_someone_else]))
        .await
        .expect("the stream opens")
        .into_inner();
    let refused = answers
        .message()
        .await
        .expect_err("the first answer is the refusal");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("not node 99"), "{refused:?}");
}
