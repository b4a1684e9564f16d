//! ferrokv as a [`Db`]: one `ferrokv` (or `ferrokv-faulty`) process per slot, every peer
//! link through the harness's proxies, membership through the Cluster API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrokv_proto::v1::{
    AddLearnerRequest, PromoteLearnerRequest, RemoveMemberRequest, StatusRequest, StatusResponse,
    cluster_client::ClusterClient, maintenance_client::MaintenanceClient,
};
use tonic::transport::{Channel, Endpoint};

use super::process::NodeProcess;
use super::proxy::Network;
use super::{Db, DbError, DbKind, ReplicaHash, free_port, node_ip, proxy_ip, wait_for};
use crate::nemesis::plan::Cuts;

/// How to run a ferrokv cluster.
#[derive(Debug, Clone)]
pub struct FerrokvOptions {
    pub nodes: usize,
    /// `ferrokv` or `ferrokv-faulty`.
    pub binary: PathBuf,
    /// `--fault NAME` for `ferrokv-faulty`.
    pub fault: Option<String>,
    /// Where data dirs and logs go.
    pub dir: PathBuf,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
}

#[derive(Debug)]
struct Node {
    /// Raft node id of the current incarnation (a wiped node comes back with a new one).
    id: u64,
    incarnation: u32,
    client_port: u16,
    peer_port: u16,
    metrics_port: u16,
    proxy_port: u16,
    process: NodeProcess,
    /// Whether this incarnation forms the cluster (`--initial-cluster`) or joins it.
    initial: bool,
}

/// A ferrokv cluster of local processes.
pub struct FerrokvDb {
    opts: FerrokvOptions,
    nodes: BTreeMap<usize, Node>,
    network: Network,
    next_id: u64,
}

const API_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a learner may take to catch up (it may need a snapshot).
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

impl FerrokvDb {
    /// Allocates addresses and starts the proxies; nothing runs until [`Db::setup`].
    pub async fn new(opts: FerrokvOptions) -> Result<FerrokvDb, DbError> {
        let mut network = Network::new();
        let mut nodes = BTreeMap::new();
        for slot in 1..=opts.nodes {
            let ip = node_ip(slot);
            let node = Node {
                id: slot as u64,
                incarnation: 0,
                client_port: free_port(ip)?,
                peer_port: free_port(ip)?,
                metrics_port: free_port(ip)?,
                proxy_port: free_port(proxy_ip(slot))?,
                process: NodeProcess::new(
                    format!("n{slot}"),
                    opts.dir.join(format!("n{slot}.log")),
                ),
                initial: true,
            };
            network
                .add_route(
                    slot,
                    SocketAddr::new(proxy_ip(slot), node.proxy_port),
                    SocketAddr::new(ip, node.peer_port),
                )
                .await?;
            nodes.insert(slot, node);
        }
        Ok(FerrokvDb {
            next_id: opts.nodes as u64 + 1,
            opts,
            nodes,
            network,
        })
    }

    fn node(&self, slot: usize) -> Result<&Node, DbError> {
        self.nodes.get(&slot).ok_or(DbError::NoSuchSlot(slot))
    }

    fn node_mut(&mut self, slot: usize) -> Result<&mut Node, DbError> {
        self.nodes.get_mut(&slot).ok_or(DbError::NoSuchSlot(slot))
    }

    fn data_dir(&self, slot: usize, incarnation: u32) -> PathBuf {
        self.opts.dir.join(format!("n{slot}-data-{incarnation}"))
    }

    fn peer_addr(&self, slot: usize, node: &Node) -> String {
        format!("{}:{}", proxy_ip(slot), node.proxy_port)
    }

    fn initial_cluster(&self) -> String {
        self.nodes
            .iter()
            .map(|(slot, n)| format!("{}={}", n.id, self.peer_addr(*slot, n)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, slot: usize) -> Result<(), DbError> {
        let initial_cluster = self.initial_cluster();
        let node = self.node(slot)?;
        let ip = node_ip(slot);
        let mut args: Vec<String> = vec![
            "--id".into(),
            node.id.to_string(),
            "--name".into(),
            format!("n{slot}-{}", node.id),
            "--data-dir".into(),
            self.data_dir(slot, node.incarnation).display().to_string(),
            "--listen-client".into(),
            format!("{ip}:{}", node.client_port),
            "--listen-peer".into(),
            format!("{ip}:{}", node.peer_port),
            "--listen-metrics".into(),
            format!("{ip}:{}", node.metrics_port),
            "--advertise-client".into(),
            format!("{ip}:{}", node.client_port),
            "--advertise-peer".into(),
            self.peer_addr(slot, node),
            "--peer-source-ip".into(),
            ip.to_string(),
            "--heartbeat-interval-ms".into(),
            self.opts.heartbeat_ms.to_string(),
            "--election-timeout-ms".into(),
            self.opts.election_ms.to_string(),
            "--log".into(),
            "info,openraft=warn".into(),
        ];
        if node.initial {
            args.push("--initial-cluster".into());
            args.push(initial_cluster);
        }
        if let Some(fault) = &self.opts.fault {
            args.push("--fault".into());
            args.push(fault.clone());
        }
        let binary = self.opts.binary.clone();
        self.node_mut(slot)?.process.spawn(&binary, &args)
    }

    async fn status(&self, slot: usize, with_state_hash: bool) -> Option<StatusResponse> {
        let node = self.node(slot).ok()?;
        if !node.process.is_running() || node.process.is_paused() {
            return None;
        }
        let channel = channel(&self.client_endpoint(slot), API_TIMEOUT)
            .await
            .ok()?;
        MaintenanceClient::new(channel)
            .status(StatusRequest { with_state_hash })
            .await
            .ok()
            .map(tonic::Response::into_inner)
    }

    /// Runs a Cluster API call against any live replica other than `except`, retrying
    /// (each replica in turn) until it succeeds or `timeout` passes.
    async fn cluster_call<T, F, Fut>(
        &self,
        op: &str,
        except: Option<usize>,
        timeout: Duration,
        mut call: F,
    ) -> Result<T, DbError>
    where
        F: FnMut(ClusterClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = String::from("no live replica to ask");
        loop {
            for (slot, node) in &self.nodes {
                if Some(*slot) == except || !node.process.is_running() || node.process.is_paused() {
                    continue;
                }
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let Ok(ch) = channel(&self.client_endpoint(*slot), left.max(API_TIMEOUT)).await
                else {
                    continue;
                };
                match call(ClusterClient::new(ch)).await {
                    Ok(v) => return Ok(v),
                    Err(status) => last = format!("n{slot}: {}", status.message()),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DbError::api(op, last));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn members(&self) -> Result<Vec<u64>, DbError> {
        let resp = self
            .cluster_call("member list", None, API_TIMEOUT * 2, |mut c| async move {
                c.member_list(ferrokv_proto::v1::MemberListRequest {}).await
            })
            .await?;
        Ok(resp
            .into_inner()
            .members
            .into_iter()
            .map(|m| m.id)
            .collect())
    }

    async fn remove_id(&self, id: u64, slot: usize) -> Result<(), DbError> {
        if !self.members().await?.contains(&id) {
            return Ok(());
        }
        self.cluster_call(
            &format!("remove member {id}"),
            Some(slot),
            JOIN_TIMEOUT,
            |mut c| async move { c.remove_member(RemoveMemberRequest { id }).await },
        )
        .await?;
        Ok(())
    }
}

/// A channel to `endpoint` with `timeout` per request.
async fn channel(endpoint: &str, timeout: Duration) -> Result<Channel, DbError> {
    Endpoint::from_shared(format!("http://{endpoint}"))
        .map_err(|e| DbError::api("connect", e))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| DbError::api(format!("connect to {endpoint}"), e))
}

impl Db for FerrokvDb {
    fn kind(&self) -> DbKind {
        DbKind::Ferrokv
    }

    fn slots(&self) -> Vec<usize> {
        self.nodes.keys().copied().collect()
    }

    fn client_endpoint(&self, slot: usize) -> String {
        match self.nodes.get(&slot) {
            Some(n) => format!("{}:{}", node_ip(slot), n.client_port),
            None => String::new(),
        }
    }

    async fn setup(&mut self) -> Result<(), DbError> {
        for slot in self.slots() {
            self.spawn(slot)?;
        }
        let endpoints: Vec<String> = self
            .slots()
            .iter()
            .map(|s| self.client_endpoint(*s))
            .collect();
        wait_for(
            "the new cluster to elect a leader",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || async { self.leader().await },
        )
        .await?;
        let client = ferrokv_client::Client::connect(
            endpoints,
            ferrokv_client::ClientConfig {
                dial_timeout: Duration::from_secs(1),
                request_timeout: Duration::from_secs(5),
            },
        )
        .map_err(|e| DbError::api("client", e))?;
        wait_for(
            "a first write to succeed",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || async {
                client
                    .put(
                        "jepsen-lite/ready",
                        "1",
                        ferrokv_client::PutOptions::default(),
                    )
                    .await
                    .ok()
            },
        )
        .await?;
        Ok(())
    }

    async fn start(&mut self, slot: usize) -> Result<(), DbError> {
        self.spawn(slot)
    }

    async fn kill(&mut self, slot: usize) -> Result<(), DbError> {
        self.node_mut(slot)?.process.kill().await
    }

    fn pause(&mut self, slot: usize) -> Result<(), DbError> {
        self.node_mut(slot)?.process.pause()
    }

    fn resume(&mut self, slot: usize) -> Result<(), DbError> {
        self.node_mut(slot)?.process.resume()
    }

    async fn wipe(&mut self, slot: usize) -> Result<(), DbError> {
        self.kill(slot).await?;
        let node = self.node(slot)?;
        let dir = self.data_dir(slot, node.incarnation);
        remove_dir(&dir)
    }

    async fn remove_member(&mut self, slot: usize) -> Result<(), DbError> {
        let id = self.node(slot)?.id;
        self.remove_id(id, slot).await?;
        self.node_mut(slot)?
            .process
            .terminate(Duration::from_secs(10))
            .await?;
        let node = self.node(slot)?;
        remove_dir(&self.data_dir(slot, node.incarnation))
    }

    async fn add_member(&mut self, slot: usize) -> Result<(), DbError> {
        // The old incarnation goes first: its id must never come back, and while it is
        // a member, its address (now the new replica's) would answer for it.
        let old = self.node(slot)?.id;
        self.node_mut(slot)?.process.kill().await?;
        self.remove_id(old, slot).await?;

        let id = self.next_id;
        self.next_id += 1;
        {
            let node = self.node_mut(slot)?;
            node.id = id;
            node.incarnation += 1;
            node.initial = false;
        }
        let incarnation = self.node(slot)?.incarnation;
        remove_dir(&self.data_dir(slot, incarnation))?;
        self.spawn(slot)?;
        let node = self.node(slot)?;
        let request = AddLearnerRequest {
            id,
            name: format!("n{slot}-{id}"),
            peer_addr: self.peer_addr(slot, node),
            client_addr: self.client_endpoint(slot),
            wait_caught_up: true,
        };
        self.cluster_call(
            &format!("add learner {id}"),
            Some(slot),
            JOIN_TIMEOUT,
            |mut c| {
                let request = request.clone();
                async move { c.add_learner(request).await }
            },
        )
        .await?;
        self.cluster_call(
            &format!("promote learner {id}"),
            Some(slot),
            JOIN_TIMEOUT,
            |mut c| async move { c.promote_learner(PromoteLearnerRequest { id }).await },
        )
        .await?;
        Ok(())
    }

    async fn leader(&self) -> Option<usize> {
        let mut best: Option<(u64, u64)> = None; // (term, leader id)
        for slot in self.slots() {
            if let Some(s) = self.status(slot, false).await
                && s.leader_id != 0
                && best.is_none_or(|(t, _)| s.term > t)
            {
                best = Some((s.term, s.leader_id));
            }
        }
        let (_, id) = best?;
        self.nodes
            .iter()
            .find(|(_, n)| n.id == id && n.process.is_running())
            .map(|(slot, _)| *slot)
    }

    fn partition(&mut self, cuts: &Cuts) -> Result<(), DbError> {
        self.network.set_cuts(cuts);
        Ok(())
    }

    async fn state_hashes(&self) -> Vec<ReplicaHash> {
        let mut out = Vec::new();
        for slot in self.slots() {
            if let Some(s) = self.status(slot, true).await {
                out.push(ReplicaHash {
                    slot,
                    member_id: s.id,
                    revision: s.state_hash_revision,
                    hash: s.state_hash,
                });
            }
        }
        out
    }

    fn log_files(&self) -> Vec<(String, PathBuf)> {
        self.nodes
            .values()
            .map(|n| (n.process.name.clone(), n.process.log_path.clone()))
            .collect()
    }

    async fn teardown(&mut self) {
        for node in self.nodes.values_mut() {
            let _ = node.process.kill().await;
        }
        self.network.stop();
    }
}

pub(crate) fn remove_dir(dir: &Path) -> Result<(), DbError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DbError::Io {
            what: format!("deleting {}", dir.display()),
            source: e,
        }),
    }
}
