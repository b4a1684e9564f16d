//! Exactly-once writes through client sessions, on a real cluster with the raw gRPC API:
//! a retried (client_id, sequence) is answered from the session table and not applied
//! again, old sequences are refused, sessions expire by leader time, and the table survives
//! restarts and snapshot installs.

use std::time::Duration;

use ferrokv_proto::v1 as pb;
use ferrokv_proto::v1::kv_client::KvClient;
use ferrokv_tests::Cluster;
use ferrokv_tests::ClusterOptions;
use tonic::Code;
use tonic::transport::Channel;

async fn kv(cluster: &Cluster, id: u64) -> KvClient<Channel> {
    KvClient::connect(format!("http://{}", cluster.nodes[&id].endpoint()))
        .await
        .expect("kv client")
}

fn put(key: &str, value: &str, client_id: u64, sequence: u64) -> pb::PutRequest {
    pb::PutRequest {
        key: key.into(),
        value: value.into(),
        prev_kv: true,
        session: Some(pb::Session {
            client_id,
            sequence,
        }),
    }
}

async fn version(kv: &mut KvClient<Channel>, key: &str) -> u64 {
    let r = kv
        .get(pb::GetRequest {
            key: key.into(),
            consistency: 0,
        })
        .await
        .expect("get")
        .into_inner();
    r.kv.map_or(0, |kv| kv.version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_session_write_is_applied_once_and_answered_the_same() {
    let opts = ClusterOptions {
        snapshot_entries: 30,
        snapshot_keep_entries: 5,
        ..Default::default()
    };
    let mut cluster = Cluster::start(opts).await;
    let mut c1 = kv(&cluster, 1).await;
    let session = c1
        .open_session(pb::OpenSessionRequest { ttl_ms: 0 })
        .await
        .expect("open session")
        .into_inner();
    assert_ne!(session.client_id, 0);
    let id = session.client_id;

    c1.put(put("a", "1", id, 1)).await.expect("first write");
    let first = c1
        .put(put("a", "2", id, 2))
        .await
        .expect("second write")
        .into_inner();
    // The same (client, sequence) again, through another replica: same answer, no effect.
    let mut c2 = kv(&cluster, 2).await;
    let retry = c2
        .put(put("a", "2", id, 2))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(
        retry.prev_kv, first.prev_kv,
        "the retry gets the stored answer"
    );
    assert_eq!(
        version(&mut c1, "a").await,
        2,
        "two writes applied, the retry not"
    );

    let e = c1
        .put(put("a", "3", id, 1))
        .await
        .expect_err("older sequence");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("stale sequence"), "{}", e.message());
    assert_eq!(version(&mut c1, "a").await, 2);

    // The session table survives a full restart and a snapshot install.
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let down = *cluster
        .nodes
        .keys()
        .find(|n| **n != leader)
        .expect("follower");
    cluster.kill9(down);
    let mut cl = kv(&cluster, leader).await;
    for i in 0..60 {
        cl.put(pb::PutRequest {
            key: format!("fill{i}").into(),
            value: b"x".to_vec(),
            prev_kv: false,
            session: None,
        })
        .await
        .expect("fill");
    }
    cluster.spawn(down);
    let commit = cluster.status(leader).await.expect("status").commit_index;
    cluster
        .wait_applied(down, commit, Duration::from_secs(30))
        .await;
    assert!(
        cluster.status(down).await.expect("status").snapshot_index > 0,
        "installed a snapshot"
    );
    for id_ in cluster.running() {
        cluster.kill9(id_);
    }
    for id_ in cluster.nodes.keys().copied().collect::<Vec<_>>() {
        cluster.spawn(id_);
    }
    cluster.wait_leader(Duration::from_secs(30)).await;
    let mut cd = kv(&cluster, down).await;
    let again = cd
        .put(put("a", "2", id, 2))
        .await
        .expect("retry after restart")
        .into_inner();
    assert_eq!(again.prev_kv, first.prev_kv);
    assert_eq!(version(&mut cd, "a").await, 2);
    cd.put(put("a", "3", id, 3)).await.expect("next sequence");
    assert_eq!(version(&mut cd, "a").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_expires_and_its_writes_fail_unapplied() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let mut c = kv(&cluster, 1).await;
    let id = c
        .open_session(pb::OpenSessionRequest { ttl_ms: 300 })
        .await
        .expect("open")
        .into_inner()
        .client_id;
    c.put(put("e", "1", id, 1)).await.expect("write within ttl");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let e = c.put(put("e", "2", id, 2)).await.expect_err("expired");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("session expired"), "{}", e.message());
    assert_eq!(
        version(&mut c, "e").await,
        1,
        "the expired session's write was not applied"
    );

    let e = c
        .open_session(pb::OpenSessionRequest {
            ttl_ms: 10 * 3_600_000,
        })
        .await
        .expect_err("ttl over the limit");
    assert_eq!(e.code(), Code::InvalidArgument);
}
