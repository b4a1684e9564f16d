//! ferroctl against a real cluster, as a person would use it from a shell.

use std::time::Duration;

use ferrokv_tests::Cluster;
use ferrokv_tests::ClusterOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferroctl_puts_survive_killing_the_leader_and_every_replica_serves_them() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let all = cluster.endpoints();
    for i in 0..200 {
        let (code, out, err) = cluster.ferroctl(
            &all,
            &["put", &format!("key{i:03}"), &format!("value{i}")],
            None,
        );
        assert_eq!(code, 0, "put {i}: {err}");
        assert_eq!(String::from_utf8_lossy(&out).trim(), "OK");
    }
    let leader = cluster.wait_leader(Duration::from_secs(30)).await;
    cluster.kill9(leader);
    // The dead leader's endpoint stays in the list: ferroctl must get past it.
    for i in 200..400 {
        let (code, _, err) = cluster.ferroctl(
            &all,
            &["put", &format!("key{i:03}"), &format!("value{i}")],
            None,
        );
        assert_eq!(code, 0, "put {i} after killing the leader: {err}");
    }
    cluster.spawn(leader);
    let new_leader = cluster.wait_leader(Duration::from_secs(30)).await;
    let commit = cluster
        .status(new_leader)
        .await
        .expect("status")
        .commit_index;
    for id in cluster.running() {
        cluster
            .wait_applied(id, commit, Duration::from_secs(30))
            .await;
        let one = vec![cluster.nodes[&id].endpoint()];
        for i in 0..400 {
            let (code, out, err) = cluster.ferroctl(
                &one,
                &["get", &format!("key{i:03}"), "--serializable"],
                None,
            );
            assert_eq!(code, 0, "get key{i:03} from replica {id}: {err}");
            assert_eq!(
                out,
                format!("value{i}\n").into_bytes(),
                "key{i:03} on replica {id}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferroctl_reports_missing_keys_and_limits_with_exit_codes() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let all = cluster.endpoints();

    let (code, out, _) = cluster.ferroctl(&all, &["get", "no-such-key"], None);
    assert_eq!(code, 1, "a missing key exits 1");
    assert!(out.is_empty(), "nothing on stdout for a missing key");

    let big = vec![0u8; 2 << 20];
    let (code, _, err) = cluster.ferroctl(&all, &["put", "k"], Some(&big));
    assert_ne!(code, 0);
    assert!(
        err.contains("1048576") || err.contains("limit"),
        "error names the limit: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");

    let value = vec![b'x'; 200_000];
    let (code, _, err) = cluster.ferroctl(&all, &["put", "from-stdin"], Some(&value));
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = cluster.ferroctl(&all, &["get", "from-stdin"], None);
    assert_eq!(code, 0);
    assert_eq!(out.len(), value.len() + 1);

    let (code, out, err) = cluster.ferroctl(&all, &["-w", "json", "endpoint", "status"], None);
    assert_eq!(code, 0, "{err}");
    let statuses: serde_json::Value = serde_json::from_slice(&out).expect("endpoint status json");
    assert_eq!(statuses.as_array().map(Vec::len), Some(3), "{statuses}");

    let (code, out, err) = cluster.ferroctl(&all, &["member", "list"], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(String::from_utf8_lossy(&out).matches("ferrokv-").count(), 3);
}
