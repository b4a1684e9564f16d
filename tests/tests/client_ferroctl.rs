//! ferroctl on a real 3-node cluster: limits named in errors, failover past a dead
//! endpoint, membership and leadership commands, and status over every member.

use std::time::Duration;

use ferrokv_tests::{Cluster, ClusterOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferroctl_names_the_value_limit_and_fails_over_past_a_dead_endpoint() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let all = cluster.endpoints();

    // `head -c 2M /dev/zero | ferroctl put k`
    let big = vec![0u8; 2 << 20];
    let (code, _, err) = cluster.ferroctl(&all, &["put", "k"], Some(&big));
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("1048576"),
        "the error names the 1 MiB limit: {err}"
    );

    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let followers: Vec<u64> = cluster
        .running()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    cluster.kill9(followers[0]);
    let endpoints = vec![
        cluster.nodes[&followers[0]].endpoint(),
        cluster.nodes[&followers[1]].endpoint(),
        cluster.nodes[&leader].endpoint(),
    ];
    let (code, out, err) = cluster.ferroctl(&endpoints, &["put", "k", "v"], None);
    assert_eq!(
        (code, String::from_utf8_lossy(&out).trim()),
        (0, "OK"),
        "{err}"
    );
    let (code, out, err) = cluster.ferroctl(&endpoints, &["get", "k"], None);
    assert_eq!((code, out), (0, b"v\n".to_vec()), "{err}");

    // With --cluster, status over every member, though only one endpoint is given: the
    // dead one is reported unhealthy (exit 1), the others healthy.
    let one = vec![cluster.nodes[&leader].endpoint()];
    let (code, out, err) = cluster.ferroctl(&one, &["endpoint", "health", "--cluster"], None);
    let out = String::from_utf8_lossy(&out);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out.matches("is healthy").count(), 2, "{out}");
    assert_eq!(out.matches("is unhealthy").count(), 1, "{out}");
    let (code, out, err) = cluster.ferroctl(
        &one,
        &["-w", "json", "endpoint", "status", "--cluster"],
        None,
    );
    assert_eq!(code, 1, "{err}");
    let statuses: serde_json::Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(statuses.as_array().map(Vec::len), Some(3), "{statuses}");
    // Without --cluster, as etcdctl: only the endpoints given.
    let (code, out, err) = cluster.ferroctl(&one, &["endpoint", "health"], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out).matches("is healthy").count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferroctl_adds_promotes_and_removes_members_and_transfers_leadership() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let all = cluster.endpoints();
    let node4 = cluster.add_node(4);
    let (peer, client) = (node4.peer_addr(), node4.endpoint());
    let (code, out, err) = cluster.ferroctl(
        &all,
        &[
            "member",
            "add",
            "4",
            "--peer-addr",
            &peer,
            "--client-addr",
            &client,
            "--name",
            "n4",
            "--wait",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(String::from_utf8_lossy(&out).starts_with("Member 4 added as a learner"));
    let (code, _, err) = cluster.ferroctl(&all, &["member", "promote", "4"], None);
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = cluster.ferroctl(&all, &["-w", "json", "member", "list"], None);
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_slice(&out).expect("json");
    let members = list["members"].as_array().cloned().unwrap_or_default();
    assert_eq!(members.len(), 4, "{list}");
    assert!(
        members
            .iter()
            .any(|m| m["id"] == 4 && m["is_learner"] == false),
        "{list}"
    );

    // A new voter can lead once it has the leader's log.
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let commit = cluster.status(leader).await.expect("status").commit_index;
    cluster
        .wait_applied(4, commit, Duration::from_secs(20))
        .await;
    let (code, out, err) = cluster.ferroctl(&all, &["leader", "transfer", "4"], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out).trim(),
        "Leadership transferred to member 4"
    );
    assert_eq!(cluster.wait_leader(Duration::from_secs(20)).await, 4);

    // The new member serves writes given only the original endpoints.
    let (code, _, err) = cluster.ferroctl(&all, &["put", "after-join", "yes"], None);
    assert_eq!(code, 0, "{err}");

    let (code, _, err) = cluster.ferroctl(&all, &["member", "remove", "3"], None);
    assert_eq!(code, 0, "{err}");
    // The replica that answers may apply the change a moment after the leader did.
    ferrokv_tests::wait_until(
        "member list to show 3 members",
        Duration::from_secs(10),
        || async {
            let (code, out, _) = cluster.ferroctl(&all, &["member", "list"], None);
            (code == 0 && String::from_utf8_lossy(&out).lines().count() == 3).then_some(())
        },
    )
    .await;

    let (code, out, _) = cluster.ferroctl(&all, &["completion", "bash"], None);
    assert_eq!(code, 0);
    assert!(String::from_utf8_lossy(&out).contains("ferroctl"));
    let (code, out, _) = cluster.ferroctl(&all, &["--help"], None);
    assert_eq!(code, 0);
    assert!(String::from_utf8_lossy(&out).contains("Exit codes"));
}
