//! Deadlines on a real cluster without quorum: requests end with a definite error within
//! their deadline plus a small margin, never hang.

use std::time::{Duration, Instant};

use ferrokv_client::{Client, ClientConfig, Error, PutOptions, ReadOptions};
use ferrokv_tests::{Cluster, ClusterOptions};

/// What a request may take beyond its deadline: one backoff and scheduling on a
/// loaded 2-core machine.
const MARGIN: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_against_a_cluster_without_quorum_fail_within_their_deadline() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let client = Client::connect(cluster.endpoints(), ClientConfig::default()).expect("client");
    client
        .put("k", "v", PutOptions::default())
        .await
        .expect("put with quorum");

    // Kill the leader and one follower: the survivor is a follower that can elect no
    // one, so nothing it is asked to write can be proposed.
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let follower = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    cluster.kill9(leader);
    cluster.kill9(follower);

    let deadline = Duration::from_secs(2);
    let quick = client.with_timeout(deadline);

    let started = Instant::now();
    let result = quick.put("k", "w", PutOptions::default()).await;
    let took = started.elapsed();
    assert!(
        matches!(
            result,
            Err(Error::Unavailable(_) | Error::DeadlineExceeded(_))
        ),
        "put: {result:?}"
    );
    assert!(took <= deadline + MARGIN, "put took {took:?}");

    let started = Instant::now();
    let result = quick.get("k", ReadOptions::default()).await;
    let took = started.elapsed();
    assert!(
        matches!(
            result,
            Err(Error::Unavailable(_) | Error::DeadlineExceeded(_))
        ),
        "linearizable get: {result:?}"
    );
    assert!(took <= deadline + MARGIN, "get took {took:?}");

    // The survivor still serves its own state without a leader.
    let (_, kv) = quick
        .get("k", ReadOptions::serializable())
        .await
        .expect("serializable get");
    assert_eq!(kv.map(|kv| kv.value), Some(b"v".to_vec()));

    // ferroctl: same budget, exit 3 (failed, not ambiguous).
    let started = Instant::now();
    let (code, _, err) = cluster.ferroctl(
        &cluster.endpoints(),
        &["--command-timeout", "2s", "put", "k", "x"],
        None,
    );
    assert_eq!(code, 3, "{err}");
    assert!(
        started.elapsed() <= deadline + MARGIN * 2,
        "ferroctl took {:?}",
        started.elapsed()
    );
}
