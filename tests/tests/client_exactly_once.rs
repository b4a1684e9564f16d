//! Exactly-once writes through ferrokv-client on a real 3-node cluster of
//! `ferrokv-faulty --fault drop-response`: each replica replaces the first answer it
//! serves for every session write with "outcome unknown" after the write committed. The
//! client must resend within its session, return the first result, and apply each write
//! once.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferrokv_client::txn::{self, CompareOp, Txn};
use ferrokv_client::{Client, ClientConfig, PutOptions, ReadOptions};
use ferrokv_tests::{faulty_binary, free_port, wait_until};

/// Three `ferrokv-faulty` replicas on 127.0.0.1, killed when dropped (the harness's
/// `Cluster` always runs the plain `ferrokv` binary).
struct FaultyCluster {
    dir: tempfile::TempDir,
    endpoints: Vec<String>,
    children: Vec<Child>,
}

impl FaultyCluster {
    fn start(fault: &str) -> FaultyCluster {
        let binary = faulty_binary();
        let dir = tempfile::Builder::new()
            .prefix("ferrokv-faulty-")
            .tempdir()
            .expect("tempdir");
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer, _))| format!("{}=127.0.0.1:{peer}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut children = Vec::new();
        for (i, (client, peer, metrics)) in ports.iter().enumerate() {
            let id = i + 1;
            let log =
                std::fs::File::create(dir.path().join(format!("node-{id}.log"))).expect("log");
            let child = Command::new(binary)
                .args(["--id", &id.to_string()])
                .arg("--data-dir")
                .arg(dir.path().join(format!("node-{id}")))
                .args(["--listen-client", &format!("127.0.0.1:{client}")])
                .args(["--listen-peer", &format!("127.0.0.1:{peer}")])
                .args(["--listen-metrics", &format!("127.0.0.1:{metrics}")])
                .args([
                    "--heartbeat-interval-ms",
                    "100",
                    "--election-timeout-ms",
                    "600",
                ])
                .args(["--initial-cluster", &initial, "--fault", fault])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("spawn ferrokv-faulty");
            children.push(child);
        }
        let endpoints = ports
            .iter()
            .map(|(c, _, _)| format!("127.0.0.1:{c}"))
            .collect();
        FaultyCluster {
            dir,
            endpoints,
            children,
        }
    }
}

impl Drop for FaultyCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for id in 1..=3 {
                let path = self.dir.path().join(format!("node-{id}.log"));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("---- node {id} log tail ----");
                for line in &lines[lines.len().saturating_sub(30)..] {
                    eprintln!("{line}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_whose_answers_are_dropped_are_retried_in_their_session_and_applied_once() {
    let cluster = FaultyCluster::start("drop-response");
    let client = Client::connect(
        cluster.endpoints.clone(),
        ClientConfig {
            dial_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(15),
        },
    )
    .expect("client");
    wait_until("a leader", Duration::from_secs(30), || async {
        let (header, _) = client.get("warm-up", ReadOptions::default()).await.ok()?;
        (header.leader_id != 0).then_some(())
    })
    .await;

    // The fault is active: a raw session write's first answer is dropped.
    let mut raw = ferrokv_client::proto::kv_client::KvClient::connect(format!(
        "http://{}",
        cluster.endpoints[0]
    ))
    .await
    .expect("raw kv client");
    let session = raw
        .open_session(ferrokv_client::proto::OpenSessionRequest { ttl_ms: 0 })
        .await
        .expect("open session")
        .into_inner();
    let status = raw
        .put(ferrokv_client::proto::PutRequest {
            key: b"probe".to_vec(),
            value: b"x".to_vec(),
            prev_kv: false,
            session: Some(ferrokv_client::proto::Session {
                client_id: session.client_id,
                sequence: 1,
            }),
        })
        .await
        .expect_err("the first answer is dropped");
    assert!(status.message().contains("outcome unknown"), "{status:?}");

    for i in 1..=10u64 {
        let response = client
            .put("counter", format!("v{i}"), PutOptions { prev_kv: true })
            .await
            .unwrap_or_else(|e| panic!("put {i}: {e}"));
        // The first result: the value before this put. Applied twice, it would be v{i}.
        let prev = response.prev_kv.map(|kv| kv.value);
        let expected = (i > 1).then(|| format!("v{}", i - 1).into_bytes());
        assert_eq!(
            prev, expected,
            "put {i} answered with another write's result"
        );
    }
    let (_, kv) = client
        .get("counter", ReadOptions::default())
        .await
        .expect("get");
    let kv = kv.expect("counter exists");
    assert_eq!(kv.version, 10, "10 puts applied exactly 10 times");
    assert_eq!(kv.value, b"v10");

    // A transaction applied twice would fail its compare the second time; the retry
    // must return the first (successful) result.
    let response = client
        .txn(
            Txn::new()
                .when([txn::version("counter", CompareOp::Equal, 10)])
                .and_then([txn::put("counter", "v11")]),
        )
        .await
        .expect("txn");
    assert!(response.succeeded, "the txn's first result was a success");
    let deleted = client
        .delete("counter", false)
        .await
        .expect("delete")
        .deleted;
    assert_eq!(deleted, 1, "the delete's first result deleted the key");
    let (_, kv) = client
        .get("counter", ReadOptions::default())
        .await
        .expect("get");
    assert_eq!(kv, None);
}
