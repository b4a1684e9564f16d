//! The proxies really cut links: an isolated leader loses its leadership to the majority,
//! cannot serve a linearizable read, and catches up once healed — for ferrokv (replicas
//! told apart by source IP) and etcd (told apart by the process owning each connection).

use std::time::Duration;

use jepsen_lite::db::etcd::{EtcdDb, EtcdOptions, find_etcd};
use jepsen_lite::db::ferrokv::{FerrokvDb, FerrokvOptions};
use jepsen_lite::db::local::PeerLinks;
use jepsen_lite::db::{Db, RaftSettings, wait_for};
use jepsen_lite::kv::KvClient;
use jepsen_lite::nemesis::plan::{Cuts, split};

const RAFT: RaftSettings = RaftSettings {
    heartbeat_ms: 100,
    election_ms: 1000,
    snapshot_entries: None,
};

/// One cluster at a time: two would starve each other's elections on 2 cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn client(db: &impl Db, slot: usize) -> KvClient {
    KvClient::connect(
        db.kind(),
        &[db.client_endpoint(slot)],
        Duration::from_secs(2),
    )
    .await
    .expect("client")
}

async fn isolated_leader_is_replaced_and_rejoins_after_healing<D: Db>(db: &mut D) {
    let _serial = SERIAL.lock().await;
    db.setup().await.expect("cluster starts");
    let old = db.leader().await.expect("a leader");
    let others: Vec<usize> = db.slots().into_iter().filter(|s| *s != old).collect();
    db.partition(&split(&[old], &others)).expect("partition");

    let new = wait_for(
        "the majority to elect another leader",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { db.leader().await.filter(|l| *l != old) },
    )
    .await
    .expect("a new leader");
    assert!(
        others.contains(&new),
        "new leader {new} is on the majority side"
    );
    let majority = client(db, new).await;
    wait_for(
        "a write on the majority side",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async { majority.put("during", b"partition").await.ok() },
    )
    .await
    .expect("the majority accepts writes");
    let isolated = client(db, old).await;
    assert!(
        isolated.get("during").await.is_err(),
        "the isolated replica {old} must not serve a linearizable read"
    );

    db.partition(&Cuts::new()).expect("heal");
    let seen = wait_for(
        "the healed replica to serve the write",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { isolated.get("during").await.ok().flatten() },
    )
    .await
    .expect("the healed replica catches up");
    assert_eq!(seen.value, b"partition");
    db.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_isolated_leader_is_replaced_and_rejoins_after_healing() {
    let Ok(binary) = find_etcd(None) else {
        println!("skipped: `etcd` is not on PATH (Debian: apt-get install etcd-server)");
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let mut db = EtcdDb::new(
        EtcdOptions {
            nodes: 3,
            binary,
            dir: dir.path().to_path_buf(),
            raft: RAFT,
            links: PeerLinks::Proxied,
        },
        7,
    )
    .await
    .expect("etcd db");
    isolated_leader_is_replaced_and_rejoins_after_healing(&mut db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferrokv_isolated_leader_is_replaced_and_rejoins_after_healing() {
    let dir = tempfile::tempdir().expect("dir");
    let mut db = ferrokv(dir.path(), PeerLinks::Proxied).await;
    isolated_leader_is_replaced_and_rejoins_after_healing(&mut db).await;
}

#[tokio::test]
async fn direct_peer_links_cannot_be_cut() {
    let dir = tempfile::tempdir().expect("dir");
    let mut db = ferrokv(dir.path(), PeerLinks::Direct).await;
    let err = db.partition(&split(&[1], &[2, 3])).expect_err("no proxies");
    assert!(err.to_string().contains("direct peer links"), "{err}");
}

/// A 3-replica ferrokv cluster (not started) of the workspace's `ferrokv`, built if it is
/// missing from this test's target dir.
async fn ferrokv(dir: &std::path::Path, links: PeerLinks) -> FerrokvDb {
    let bin_dir = jepsen_lite::binaries::bin_dir(None);
    FerrokvDb::new(FerrokvOptions {
        nodes: 3,
        binary: jepsen_lite::binaries::ferrokv_binary(&bin_dir, "ferrokv", true)
            .expect("ferrokv binary"),
        fault: None,
        dir: dir.to_path_buf(),
        raft: RAFT,
        links,
    })
    .await
    .expect("ferrokv db")
}
