//! Wiring of a replica: storage, Raft, the gRPC and HTTP servers, cluster bootstrap, and
//! graceful shutdown (leadership handed over before the node stops).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use ferrokv_proto::v1::cluster_server::ClusterServer;
use ferrokv_proto::v1::kv_server::KvServer;
use ferrokv_proto::v1::maintenance_server::MaintenanceServer;
use ferrokv_proto::v1::raft_peer_server::RaftPeerServer;
use openraft::SnapshotPolicy;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

use crate::api;
use crate::config::ConfigError;
use crate::config::NodeConfig;
use crate::config::parse_initial_cluster;
use crate::join;
use crate::raft::MemberInfo;
use crate::raft::NodeId;
use crate::raft::network::PeerChannels;
use crate::raft::network::PeerNetworkFactory;
use crate::raft::peer_service::PeerService;
use crate::raft::wire::ForwardRequest;
use crate::replica::Replica;
use crate::storage::Store;
use crate::storage::StoreOptions;
use crate::storage::command::Command;

const IDENTITY_FILE: &str = "node.id";

/// The node id recorded in the data dir, if any; it must agree with `--id` when both exist,
/// because a node id stays with its volume.
fn recorded_identity(cfg: &NodeConfig) -> anyhow::Result<Option<NodeId>> {
    let path = cfg.data_dir.join(IDENTITY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let id: NodeId = s
                .trim()
                .parse()
                .with_context(|| format!("{} is corrupt: {s:?}", path.display()))?;
            if let Some(flag) = cfg.id {
                anyhow::ensure!(
                    flag == id,
                    "data dir {} belongs to node {id}, but --id is {flag}; a node id stays with its data dir",
                    cfg.data_dir.display()
                );
            }
            Ok(Some(id))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// How this replica came by its node id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The data dir had one.
    Restart,
    /// `--id` on an empty data dir.
    Explicit,
    /// Empty data dir, no `--id`: forming the initial cluster as the member of our ordinal.
    Form,
    /// Empty data dir, no `--id`: joining the existing cluster under an id it handed out.
    Join,
}

/// Finds this replica's node id: from the data dir, `--id`, or (on Kubernetes, with neither)
/// by asking the initial members whether to form the cluster or join it. Records a new id
/// durably before anything else is written.
async fn node_identity(
    cfg: &NodeConfig,
    channels: &PeerChannels,
) -> anyhow::Result<(NodeId, Start)> {
    if let Some(id) = recorded_identity(cfg)? {
        return Ok((id, Start::Restart));
    }
    let (id, start) = match cfg.id {
        Some(id) => {
            anyhow::ensure!(id != 0, ConfigError::ZeroId);
            (id, Start::Explicit)
        }
        None => {
            let spec = cfg
                .initial_cluster
                .as_deref()
                .ok_or(ConfigError::MissingId)?;
            let initial = parse_initial_cluster(spec)?;
            let my_id = cfg
                .name
                .as_deref()
                .and_then(join::id_from_name)
                .filter(|id| initial.contains_key(id));
            match join::discover(channels, &initial, my_id).await {
                join::Decision::Form { id } => (id, Start::Form),
                _ => (
                    join::allocate_id(channels, &initial, my_id).await,
                    Start::Join,
                ),
            }
        }
    };
    write_durably(&cfg.data_dir, IDENTITY_FILE, id.to_string().as_bytes())?;
    tracing::info!(id, ?start, "this data dir now belongs to node {id}");
    Ok((id, start))
}

fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Accepted connections with Nagle's algorithm off. `Server::tcp_nodelay` applies only to
/// listeners tonic binds itself, not to an incoming stream handed to it; without this, a
/// response written in more than one segment waited for the client's delayed ACK (~40 ms).
fn no_delay(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

fn raft_config(cfg: &NodeConfig) -> anyhow::Result<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "ferrokv".into(),
        heartbeat_interval: cfg.heartbeat_interval_ms,
        election_timeout_min: cfg.election_timeout_ms,
        election_timeout_max: cfg.election_timeout_ms * 2,
        install_snapshot_timeout: 30_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_entries),
        max_in_snapshot_log_to_keep: cfg.snapshot_keep_entries,
        max_payload_entries: 256,
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    Ok(config.validate()?)
}

/// Runs a replica until `shutdown` resolves, then stops it gracefully.
pub async fn run(cfg: NodeConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %cfg.data_dir.display(),
        "starting ferrokv"
    );
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    let peer_listener = TcpListener::bind(cfg.listen_peer)
        .await
        .with_context(|| format!("binding peer address {}", cfg.listen_peer))?;
    let client_listener = TcpListener::bind(cfg.listen_client)
        .await
        .with_context(|| format!("binding client address {}", cfg.listen_client))?;
    let metrics_listener = TcpListener::bind(cfg.listen_metrics)
        .await
        .with_context(|| format!("binding metrics address {}", cfg.listen_metrics))?;

    let (stop_client_tx, stop_client_rx) = watch::channel(false);
    let (stop_peer_tx, stop_peer_rx) = watch::channel(false);
    let wait_for = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    // The peer service runs from the start: other replicas with empty volumes probe it while
    // deciding whether to form a cluster, and so may this one before it has a node id.
    let slot = Arc::new(OnceLock::new());
    let peer_max = cfg.max_request_bytes().saturating_mul(300).max(64 << 20);
    let peer_server = tonic::transport::Server::builder()
        .add_service(
            RaftPeerServer::new(PeerService {
                replica: slot.clone(),
            })
            .max_decoding_message_size(peer_max)
            .max_encoding_message_size(peer_max),
        )
        .serve_with_incoming_shutdown(no_delay(peer_listener), wait_for(stop_peer_rx.clone()));
    let peer_task = tokio::spawn(peer_server);
    let channels = PeerChannels::new(peer_max, cfg.peer_source_ip);

    let (id, start) = node_identity(&cfg, &channels).await?;
    let store = Store::open(&cfg.data_dir, &StoreOptions::default())
        .with_context(|| format!("opening RocksDB in {}", cfg.data_dir.display()))?;
    let pristine = store.is_pristine()?;
    let (log_store, state_machine) = store.split()?;
    let reader = state_machine.reader();
    let network = PeerNetworkFactory {
        channels: channels.clone(),
    };
    let raft = openraft::Raft::new(
        id,
        Arc::new(raft_config(&cfg)?),
        network,
        log_store,
        state_machine,
    )
    .await
    .context("starting Raft")?;
    let info = MemberInfo {
        name: cfg.member_name(id),
        peer_addr: cfg.advertise_peer(),
        client_addr: cfg.advertise_client(),
    };
    let faults = cfg.faults();
    if faults.stale_read() || faults.early_ack() {
        tracing::warn!(
            ?faults,
            "FAULT INJECTION ACTIVE: this node breaks its guarantees on purpose"
        );
    }
    let replica = Replica {
        id,
        info: info.clone(),
        raft: raft.clone(),
        reader,
        store: store.clone(),
        channels,
        faults,
    };
    if slot.set(replica.clone()).is_err() {
        anyhow::bail!("the peer service already had a replica");
    }

    let limits = api::ApiLimits {
        max_key_bytes: cfg.max_key_bytes,
        max_value_bytes: cfg.max_value_bytes,
        max_txn_ops: cfg.max_txn_ops,
        default_deadline: Duration::from_millis(cfg.default_deadline_ms),
        max_scan_limit: 10_000,
    };
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let ready = Arc::new(AtomicBool::new(false));
    tokio::spawn(api::health::track(
        replica.clone(),
        health_reporter,
        ready.clone(),
    ));
    let max_req = cfg.max_request_bytes();
    let client_server = tonic::transport::Server::builder()
        .layer(api::resource_exhausted::Layer)
        .add_service(health_service)
        .add_service(
            KvServer::new(api::kv::KvService {
                replica: replica.clone(),
                limits: limits.clone(),
            })
            .max_decoding_message_size(max_req)
            .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            ClusterServer::new(api::cluster::ClusterService {
                replica: replica.clone(),
                limits: limits.clone(),
            })
            .max_decoding_message_size(max_req),
        )
        .add_service(MaintenanceServer::new(
            api::maintenance::MaintenanceService {
                replica: replica.clone(),
            },
        ))
        .serve_with_incoming_shutdown(no_delay(client_listener), wait_for(stop_client_rx.clone()));
    let client_task = tokio::spawn(client_server);

    let admin = api::metrics::router(replica.clone(), ready)?;
    let admin_task = tokio::spawn(async move {
        axum::serve(metrics_listener, admin)
            .with_graceful_shutdown(wait_for(stop_client_rx))
            .await
    });

    let initial = cfg
        .initial_cluster
        .as_deref()
        .map(parse_initial_cluster)
        .transpose()?
        .unwrap_or_default();
    match start {
        // A replica that joined (or was joining) continues the join; openraft keeps what
        // it has already caught up on.
        Start::Join => {
            tokio::spawn(join::join_cluster(replica.clone(), initial));
        }
        Start::Restart if pristine && cfg.id.is_none() && !initial.contains_key(&id) => {
            tokio::spawn(join::join_cluster(replica.clone(), initial));
        }
        _ if pristine => bootstrap(&cfg, &replica).await?,
        _ if cfg.initial_cluster.is_some() => {
            tracing::info!("data dir has state: restarting from it, --initial-cluster is ignored");
        }
        _ => {}
    }
    let background = tokio::spawn(maintain_membership_and_cluster_id(replica.clone()));

    tracing::info!(
        id,
        name = %info.name,
        client = %cfg.listen_client,
        peer = %cfg.listen_peer,
        metrics = %cfg.listen_metrics,
        data_dir = %cfg.data_dir.display(),
        "ferrokv node started"
    );

    shutdown.await;
    tracing::info!("shutting down");
    background.abort();
    hand_over_leadership(&replica, Duration::from_millis(cfg.shutdown_transfer_ms)).await;
    let _ = stop_client_tx.send(true);
    let _ = client_task.await;
    let _ = admin_task.await;
    if let Err(e) = raft.shutdown().await {
        tracing::warn!("raft shutdown: {e}");
    }
    let _ = stop_peer_tx.send(true);
    let _ = peer_task.await;
    store.sync().context("final WAL sync")?;
    tracing::info!("stopped");
    Ok(())
}

/// Forms the cluster from `--initial-cluster` on an empty data dir. Every initial member
/// proposes the identical membership (ids, names and peer addresses all derived from the
/// flag), which openraft allows: a single leader is elected among them.
async fn bootstrap(cfg: &NodeConfig, replica: &Replica) -> anyhow::Result<()> {
    let Some(spec) = &cfg.initial_cluster else {
        tracing::info!(
            "empty data dir and no --initial-cluster: waiting to be added to a cluster as a learner"
        );
        return Ok(());
    };
    let peers = parse_initial_cluster(spec)?;
    if !peers.contains_key(&replica.id) {
        let members = peers
            .keys()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(",");
        return Err(ConfigError::NotInInitialCluster {
            id: replica.id,
            members,
        }
        .into());
    }
    let members: BTreeMap<NodeId, MemberInfo> = peers
        .into_iter()
        .map(|(id, peer_addr)| {
            (
                id,
                MemberInfo {
                    // Each member publishes its real name once a leader exists; a guessed
                    // name here could match another pod's name.
                    name: String::new(),
                    peer_addr,
                    client_addr: String::new(),
                },
            )
        })
        .collect();
    replica
        .reader
        .set_initial_cluster_id(cluster_id_of(&members))?;
    match replica.raft.initialize(members).await {
        Ok(()) => tracing::info!("initialized a new cluster from --initial-cluster"),
        Err(e) => tracing::info!("cluster already initialized: {e}"),
    }
    Ok(())
}

/// FNV-1a over the initial membership: the same on every initial member, different for
/// clusters formed from different member lists.
fn cluster_id_of(members: &BTreeMap<NodeId, MemberInfo>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (id, info) in members {
        for b in id
            .to_be_bytes()
            .iter()
            .chain(info.peer_addr.as_bytes())
            .chain(b",")
        {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h | 1
}

/// Keeps the membership's record of this member (name, addresses) current, and has the
/// first leader record the cluster id. Both go through Raft, so every replica agrees.
async fn maintain_membership_and_cluster_id(replica: Replica) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let Some(leader) = replica.leader() else {
            continue;
        };
        let recorded = replica.member(replica.id);
        if recorded.is_some() && recorded.as_ref() != Some(&replica.info) {
            let req = ForwardRequest::UpdateMemberInfo {
                id: replica.id,
                info: replica.info.clone(),
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            match replica.forward_or_run(req, deadline).await {
                Ok(_) => tracing::info!(info = %replica.info, "published this member's addresses"),
                Err(e) => tracing::debug!("publishing member info: {e}"),
            }
        }
        if leader == replica.id && matches!(replica.reader.cluster_id_logged(), Ok(false)) {
            // Initial members derived the id at bootstrap; log it so later joiners learn it.
            let cluster_id = replica
                .reader
                .cluster_id()
                .ok()
                .flatten()
                .unwrap_or_else(|| rand::random::<u64>() | 1);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            if let Err(e) = replica
                .write(Command::InitCluster { cluster_id }, deadline)
                .await
            {
                tracing::debug!("recording cluster id: {e}");
            }
        }
    }
}

/// On shutdown a leader moves leadership to a caught-up voter first, so clients see no
/// election timeout (DESIGN.md §4: preStop transfers leadership away).
async fn hand_over_leadership(replica: &Replica, timeout: Duration) {
    if replica.leader() != Some(replica.id) {
        return;
    }
    let Some(to) = replica.caught_up_peer() else {
        tracing::warn!("leader stopping with no caught-up voter to hand leadership to");
        return;
    };
    tracing::info!(to, "handing leadership over before stopping");
    if let Err(e) = replica.raft.trigger().transfer_leader(to).await {
        tracing::warn!("leader transfer: {e}");
        return;
    }
    if replica.wait_not_leader(timeout).await {
        tracing::info!(leader = ?replica.leader(), "leadership handed over");
    } else {
        tracing::warn!("leadership did not move within {timeout:?}; stopping anyway");
    }
}
