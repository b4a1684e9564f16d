//! Replicas started the way the StatefulSet starts them (no `--id`, names `ferrokv-N`, one
//! shared `--initial-cluster`), as processes on 127.0.0.1: one cluster forms, a replica that
//! lost its volume rejoins under a new id and replaces its old self, and a scale-up replica
//! joins as a voter — all without a manual step.

use std::collections::BTreeSet;
use std::time::Duration;

use ferrokv_client::PutOptions;
use ferrokv_tests::Cluster;
use ferrokv_tests::ClusterOptions;
use ferrokv_tests::wait_until;

const SECS_60: Duration = Duration::from_secs(60);

fn statefulset() -> ClusterOptions {
    ClusterOptions {
        statefulset: true,
        ..Default::default()
    }
}

/// (id, name, is_learner) of every member, as the cluster reports them.
async fn members(cluster: &Cluster) -> Option<Vec<(u64, String, bool)>> {
    let list = cluster.client().member_list().await.ok()?.members;
    Some(
        list.into_iter()
            .map(|m| (m.id, m.name, m.is_learner))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_form_one_cluster_and_a_lost_volume_rejoins_under_a_new_id() {
    let mut cluster = Cluster::start(statefulset()).await;
    let initial = members(&cluster).await.expect("members");
    let ids: BTreeSet<u64> = initial.iter().map(|m| m.0).collect();
    assert_eq!(
        ids,
        BTreeSet::from([1, 2, 3]),
        "ids come from ordinals: {initial:?}"
    );
    let names: BTreeSet<String> = initial.iter().map(|m| m.1.clone()).collect();
    assert_eq!(
        names,
        ["ferrokv-0", "ferrokv-1", "ferrokv-2"]
            .map(String::from)
            .into()
    );

    let client = cluster.client();
    for i in 0..50 {
        client
            .put(format!("k{i}"), "v", PutOptions::default())
            .await
            .expect("put");
    }

    // ferrokv-1 (node 2) loses its volume and comes back empty, as after a lost PVC.
    cluster.kill9(2);
    cluster.wipe(2);
    cluster.spawn(2);
    let after = wait_until("ferrokv-1 to replace its old self", SECS_60, || async {
        let m = members(&cluster).await?;
        let voters: Vec<&(u64, String, bool)> = m.iter().filter(|m| !m.2).collect();
        let replaced = voters.len() == 3
            && m.len() == 3
            && !m.iter().any(|m| m.0 == 2)
            && voters.iter().any(|m| m.1 == "ferrokv-1" && m.0 > 3);
        replaced.then_some(m)
    })
    .await;
    let new_id = after
        .iter()
        .find(|m| m.1 == "ferrokv-1")
        .map(|m| m.0)
        .expect("ferrokv-1");
    assert!(new_id > 3, "a node id is never reused on an empty disk");

    let status = cluster
        .status(2)
        .await
        .expect("status of the new ferrokv-1");
    assert_eq!(status.id, new_id);
    let leader = cluster.wait_leader(SECS_60).await;
    let commit = cluster.status(leader).await.expect("leader").commit_index;
    cluster.wait_applied(2, commit, SECS_60).await;
    assert_eq!(
        cluster.serializable_get(2, "k49").await,
        Some(b"v".to_vec())
    );

    // Restarting it again keeps its new id (the id belongs to the volume now).
    cluster.kill9(2);
    cluster.spawn(2);
    cluster.wait_leader(SECS_60).await;
    let status = wait_until("restarted ferrokv-1 to answer", SECS_60, || {
        cluster.status(2)
    })
    .await;
    assert_eq!(status.id, new_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_pod_joins_as_a_voter() {
    let mut cluster = Cluster::start(statefulset()).await;
    cluster
        .client()
        .put("before-scale-up", "x", PutOptions::default())
        .await
        .expect("put");
    cluster.add_node(4);
    let m = wait_until("ferrokv-3 to join as a voter", SECS_60, || async {
        let m = members(&cluster).await?;
        let joined = m.iter().any(|m| m.1 == "ferrokv-3" && !m.2);
        (joined && m.len() == 4).then_some(m)
    })
    .await;
    assert_eq!(m.iter().filter(|m| !m.2).count(), 4, "{m:?}");
    let leader = cluster.wait_leader(SECS_60).await;
    let commit = cluster.status(leader).await.expect("leader").commit_index;
    cluster.wait_applied(4, commit, SECS_60).await;
    assert_eq!(
        cluster.serializable_get(4, "before-scale-up").await,
        Some(b"x".to_vec())
    );
}
