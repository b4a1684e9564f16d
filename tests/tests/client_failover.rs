//! ferrokv-client on real 3-node clusters when endpoints fail: a dead first endpoint, a
//! leader killed during a stream of writes, and members that join after the client was
//! created.

use std::time::Duration;

use ferrokv_client::{AddLearnerRequest, Client, ClientConfig, PutOptions, ReadOptions};
use ferrokv_tests::{Cluster, ClusterOptions, wait_until};

fn patient_client(endpoints: Vec<String>) -> Client {
    Client::connect(
        endpoints,
        ClientConfig {
            dial_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(20),
        },
    )
    .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_succeed_when_the_first_endpoint_is_dead_and_the_second_a_follower() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let followers: Vec<u64> = cluster
        .running()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let (dead, follower) = (followers[0], followers[1]);
    cluster.kill9(dead);
    let client = patient_client(vec![
        cluster.nodes[&dead].endpoint(),
        cluster.nodes[&follower].endpoint(),
    ]);
    for i in 0..20 {
        client
            .put(format!("k{i}"), format!("v{i}"), PutOptions::default())
            .await
            .unwrap_or_else(|e| panic!("put {i}: {e}"));
    }
    // The follower's headers named the leader: writes now go straight there.
    assert_eq!(
        client.leader_endpoint(),
        Some(cluster.nodes[&leader].endpoint())
    );
    let response = client
        .put("last", "x", PutOptions::default())
        .await
        .expect("put");
    assert_eq!(response.header.map(|h| h.member_id), Some(leader));
    for i in 0..20 {
        let (_, kv) = client
            .get(format!("k{i}"), ReadOptions::default())
            .await
            .expect("get");
        assert_eq!(kv.map(|kv| kv.value), Some(format!("v{i}").into_bytes()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_during_a_stream_of_writes_surfaces_no_error_and_loses_nothing() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let client = patient_client(cluster.endpoints());
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..300 {
                let key = format!("stream/{i:04}");
                if let Err(err) = client
                    .put(key.as_str(), format!("v{i}"), PutOptions::default())
                    .await
                {
                    return Err(format!("put {key} failed: {err}"));
                }
                acked.push(key);
            }
            Ok(acked)
        })
    };
    // Let the stream get going, then kill the leader under it.
    wait_until("the first writes", Duration::from_secs(30), || async {
        let (_, kv) = client
            .get("stream/0050", ReadOptions::default())
            .await
            .ok()?;
        kv.map(|_| ())
    })
    .await;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    cluster.kill9(leader);
    let acked = writer
        .await
        .expect("writer task")
        .unwrap_or_else(|e| panic!("an error surfaced to the writer: {e}"));
    assert_eq!(acked.len(), 300);
    for (i, key) in acked.iter().enumerate() {
        let (_, kv) = client
            .get(key.as_str(), ReadOptions::default())
            .await
            .expect("get");
        let kv = kv.unwrap_or_else(|| panic!("acknowledged {key} is missing"));
        assert_eq!(kv.value, format!("v{i}").into_bytes());
        // Written once by the client: a retry applied twice would make it 2.
        assert_eq!(kv.version, 1, "{key} was applied more than once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_later_is_used_after_the_client_refreshes_its_endpoints() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    // The client knows node 1 only.
    let client = patient_client(vec![cluster.nodes[&1].endpoint()]);
    client
        .put("before", "1", PutOptions::default())
        .await
        .expect("put");

    let node4 = cluster.add_node(4);
    let (peer_addr, client_addr) = (node4.peer_addr(), node4.endpoint());
    client
        .member_add(AddLearnerRequest {
            id: 4,
            name: "ferrokv-4".into(),
            peer_addr,
            client_addr: client_addr.clone(),
            wait_caught_up: true,
        })
        .await
        .expect("add learner");
    let members = client.member_promote(4).await.expect("promote").members;
    assert!(
        members.iter().any(|m| m.id == 4 && !m.is_learner),
        "{members:?}"
    );

    let endpoints = client.refresh_endpoints().await.expect("refresh");
    assert!(endpoints.contains(&client_addr), "{endpoints:?}");
    assert_eq!(endpoints.len(), 4, "{endpoints:?}");

    // Make the new member lead, drop the client's only configured endpoint from the
    // cluster, and kill it and one more: only members learned from the cluster remain.
    assert_eq!(
        client.transfer_leader(4).await.expect("transfer").leader_id,
        4
    );
    client.member_remove(1).await.expect("remove member 1");
    cluster.kill9(1);
    cluster.kill9(2);
    let response = client
        .put("after", "2", PutOptions::default())
        .await
        .expect("put");
    assert_eq!(
        response.header.map(|h| h.member_id),
        Some(4),
        "written through the new leader"
    );
    let (_, kv) = client
        .get("before", ReadOptions::default())
        .await
        .expect("get");
    assert_eq!(kv.map(|kv| kv.value), Some(b"1".to_vec()));
}
