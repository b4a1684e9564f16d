//! ferrokv as a [`Db`]: one `ferrokv` (or `ferrokv-faulty`) process per slot, every peer
//! link through the harness's proxies, membership through the Cluster API.

use std::path::PathBuf;
use std::time::Duration;

use ferrokv_proto::v1::{
    AddLearnerRequest, PromoteLearnerRequest, RemoveMemberRequest, StatusRequest, StatusResponse,
    cluster_client::ClusterClient, maintenance_client::MaintenanceClient,
};
use tonic::transport::{Channel, Endpoint};

use super::local::{LocalCluster, PeerLinks, remove_dir};
use super::{Db, DbError, DbKind, RaftSettings, ReplicaHash, node_ip, wait_for};
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
    pub raft: RaftSettings,
    pub links: PeerLinks,
}

/// A ferrokv cluster of local processes.
pub struct FerrokvDb {
    opts: FerrokvOptions,
    cluster: LocalCluster,
    /// Slots whose current incarnation forms the cluster (`--initial-cluster`); the others
    /// joined it as new members.
    initial: Vec<usize>,
    next_id: u64,
}

const API_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a learner may take to catch up (it may need a snapshot).
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

impl FerrokvDb {
    /// Allocates addresses and starts the proxies; nothing runs until [`Db::setup`].
    pub async fn new(opts: FerrokvOptions) -> Result<FerrokvDb, DbError> {
        let cluster = LocalCluster::new(opts.nodes, opts.dir.clone(), opts.links).await?;
        Ok(FerrokvDb {
            next_id: opts.nodes as u64 + 1,
            initial: cluster.slots(),
            opts,
            cluster,
        })
    }

    fn initial_cluster(&self) -> String {
        self.cluster
            .replicas()
            .map(|(slot, r)| format!("{}={}", r.id, self.cluster.advertised_peer_addr(slot)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, slot: usize) -> Result<(), DbError> {
        let node = self.cluster.replica(slot)?;
        let ip = node_ip(slot);
        let client = self.cluster.client_endpoint(slot);
        let mut args: Vec<String> = vec![
            "--id".into(),
            node.id.to_string(),
            "--name".into(),
            format!("n{slot}-{}", node.id),
            "--data-dir".into(),
            self.cluster.data_dir(slot).display().to_string(),
            "--listen-client".into(),
            client.clone(),
            "--listen-peer".into(),
            self.cluster.listen_peer_addr(slot).to_string(),
            "--listen-metrics".into(),
            format!("{ip}:{}", node.metrics_port),
            "--advertise-client".into(),
            client,
            "--advertise-peer".into(),
            self.cluster.advertised_peer_addr(slot).to_string(),
            "--peer-source-ip".into(),
            ip.to_string(),
            "--heartbeat-interval-ms".into(),
            self.opts.raft.heartbeat_ms.to_string(),
            "--election-timeout-ms".into(),
            self.opts.raft.election_ms.to_string(),
            "--log".into(),
            "info,openraft=warn".into(),
        ];
        if self.initial.contains(&slot) {
            args.push("--initial-cluster".into());
            args.push(self.initial_cluster());
        }
        if let Some(entries) = self.opts.raft.snapshot_entries {
            args.push("--snapshot-entries".into());
            args.push(entries.to_string());
        }
        if let Some(fault) = &self.opts.fault {
            args.push("--fault".into());
            args.push(fault.clone());
        }
        let binary = self.opts.binary.clone();
        self.cluster.spawn(slot, &binary, &args)
    }

    async fn status(&self, slot: usize, with_state_hash: bool) -> Option<StatusResponse> {
        if !self.cluster.is_live(slot) {
            return None;
        }
        let channel = channel(&self.cluster.client_endpoint(slot), API_TIMEOUT)
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
        let connect = |endpoint: String| async move {
            channel(&endpoint, timeout.max(API_TIMEOUT))
                .await
                .ok()
                .map(ClusterClient::new)
        };
        // A status's message says what went wrong; its Display adds codes and metadata.
        let call = |client| {
            let reply = call(client);
            async move { reply.await.map_err(|s| s.message().to_string()) }
        };
        self.cluster
            .call_any(op, except, timeout, connect, call)
            .await
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
        self.cluster.slots()
    }

    fn client_endpoint(&self, slot: usize) -> String {
        self.cluster.client_endpoint(slot)
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
        self.cluster.kill(slot).await
    }

    fn pause(&mut self, slot: usize) -> Result<(), DbError> {
        self.cluster.pause(slot)
    }

    fn resume(&mut self, slot: usize) -> Result<(), DbError> {
        self.cluster.resume(slot)
    }

    async fn wipe(&mut self, slot: usize) -> Result<(), DbError> {
        self.cluster.wipe(slot).await
    }

    async fn remove_member(&mut self, slot: usize) -> Result<(), DbError> {
        let id = self.cluster.replica(slot)?.id;
        self.remove_id(id, slot).await?;
        self.cluster
            .terminate(slot, Duration::from_secs(10))
            .await?;
        remove_dir(&self.cluster.data_dir(slot))
    }

    async fn add_member(&mut self, slot: usize) -> Result<(), DbError> {
        // The old incarnation goes first: its id must never come back, and while it is
        // a member, its address (now the new replica's) would answer for it.
        let old = self.cluster.replica(slot)?.id;
        self.cluster.kill(slot).await?;
        self.remove_id(old, slot).await?;

        let id = self.next_id;
        self.next_id += 1;
        {
            let node = self.cluster.replica_mut(slot)?;
            node.id = id;
            node.incarnation += 1;
        }
        self.initial.retain(|s| *s != slot);
        remove_dir(&self.cluster.data_dir(slot))?;
        self.spawn(slot)?;
        let request = AddLearnerRequest {
            id,
            name: format!("n{slot}-{id}"),
            peer_addr: self.cluster.advertised_peer_addr(slot).to_string(),
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
        self.cluster
            .replicas()
            .find(|(_, r)| r.id == id && r.process.is_running())
            .map(|(slot, _)| slot)
    }

    fn partition(&mut self, cuts: &Cuts) -> Result<(), DbError> {
        self.cluster.partition(cuts)
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
        self.cluster.log_files()
    }

    fn pids(&self) -> std::collections::BTreeMap<usize, u32> {
        self.cluster.pids()
    }

    async fn teardown(&mut self) {
        self.cluster.teardown().await;
    }
}
