//! etcd 3.4 as a [`Db`]: the reference system. One `etcd` process per slot on its own
//! loopback IP; membership through etcd's Cluster API (learner, then promote).
//!
//! Partitions are not supported: the proxies tell replicas apart by the source IP of
//! their peer connections, and etcd cannot choose the source IP of outgoing connections
//! (on loopback every connection comes from 127.0.0.1), so a proxy could not know which
//! link a connection is. [`Db::partition`] says so and the run stops before it starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, MemberAddOptions};

use super::ferrokv::remove_dir;
use super::process::NodeProcess;
use super::{Db, DbError, DbKind, ReplicaHash, free_port, node_ip, wait_for};
use crate::nemesis::plan::Cuts;

/// How to run an etcd cluster.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    pub nodes: usize,
    pub binary: PathBuf,
    pub dir: PathBuf,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
}

#[derive(Debug)]
struct Node {
    /// etcd member id; learned from the cluster (0 until known).
    id: u64,
    incarnation: u32,
    client_port: u16,
    peer_port: u16,
    process: NodeProcess,
    /// `--initial-cluster` to start with, and whether the cluster is `new`.
    initial_cluster: String,
    new_cluster: bool,
}

pub struct EtcdDb {
    opts: EtcdOptions,
    nodes: BTreeMap<usize, Node>,
    token: String,
}

const API_TIMEOUT: Duration = Duration::from_secs(5);
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

impl EtcdDb {
    pub fn new(opts: EtcdOptions, seed: u64) -> Result<EtcdDb, DbError> {
        let mut nodes = BTreeMap::new();
        for slot in 1..=opts.nodes {
            let ip = node_ip(slot);
            nodes.insert(
                slot,
                Node {
                    id: 0,
                    incarnation: 0,
                    client_port: free_port(ip)?,
                    peer_port: free_port(ip)?,
                    process: NodeProcess::new(
                        format!("n{slot}"),
                        opts.dir.join(format!("n{slot}.log")),
                    ),
                    initial_cluster: String::new(),
                    new_cluster: true,
                },
            );
        }
        let mut db = EtcdDb {
            opts,
            nodes,
            token: format!("jepsen-lite-{seed}-{}", std::process::id()),
        };
        let initial = db
            .nodes
            .keys()
            .map(|slot| format!("{}={}", db.name(*slot), db.peer_url(*slot)))
            .collect::<Vec<_>>()
            .join(",");
        for node in db.nodes.values_mut() {
            node.initial_cluster = initial.clone();
        }
        Ok(db)
    }

    fn node(&self, slot: usize) -> Result<&Node, DbError> {
        self.nodes.get(&slot).ok_or(DbError::NoSuchSlot(slot))
    }

    fn node_mut(&mut self, slot: usize) -> Result<&mut Node, DbError> {
        self.nodes.get_mut(&slot).ok_or(DbError::NoSuchSlot(slot))
    }

    fn name(&self, slot: usize) -> String {
        let inc = self.nodes.get(&slot).map_or(0, |n| n.incarnation);
        format!("n{slot}-{inc}")
    }

    fn peer_url(&self, slot: usize) -> String {
        let port = self.nodes.get(&slot).map_or(0, |n| n.peer_port);
        format!("http://{}:{port}", node_ip(slot))
    }

    fn data_dir(&self, slot: usize) -> PathBuf {
        let inc = self.nodes.get(&slot).map_or(0, |n| n.incarnation);
        self.opts.dir.join(format!("n{slot}-data-{inc}"))
    }

    fn spawn(&mut self, slot: usize) -> Result<(), DbError> {
        let node = self.node(slot)?;
        let client_url = format!("http://{}", self.client_endpoint(slot));
        let args: Vec<String> = vec![
            "--name".into(),
            self.name(slot),
            "--data-dir".into(),
            self.data_dir(slot).display().to_string(),
            "--listen-client-urls".into(),
            client_url.clone(),
            "--advertise-client-urls".into(),
            client_url,
            "--listen-peer-urls".into(),
            self.peer_url(slot),
            "--initial-advertise-peer-urls".into(),
            self.peer_url(slot),
            "--initial-cluster".into(),
            node.initial_cluster.clone(),
            "--initial-cluster-state".into(),
            if node.new_cluster { "new" } else { "existing" }.into(),
            "--initial-cluster-token".into(),
            self.token.clone(),
            "--heartbeat-interval".into(),
            self.opts.heartbeat_ms.to_string(),
            "--election-timeout".into(),
            self.opts.election_ms.to_string(),
            "--logger".into(),
            "zap".into(),
        ];
        let binary = self.opts.binary.clone();
        self.node_mut(slot)?.process.spawn(&binary, &args)
    }

    async fn client(&self, slot: usize) -> Option<Client> {
        let node = self.nodes.get(&slot)?;
        if !node.process.is_running() || node.process.is_paused() {
            return None;
        }
        connect(&self.client_endpoint(slot), API_TIMEOUT).await.ok()
    }

    /// Runs a call against any live member other than `except` until it succeeds or
    /// `timeout` passes.
    async fn cluster_call<T, F, Fut>(
        &self,
        op: &str,
        except: Option<usize>,
        timeout: Duration,
        mut call: F,
    ) -> Result<T, DbError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = String::from("no live member to ask");
        loop {
            for slot in self.slots() {
                if Some(slot) == except {
                    continue;
                }
                let Some(client) = self.client(slot).await else {
                    continue;
                };
                match call(client).await {
                    Ok(v) => return Ok(v),
                    Err(e) => last = format!("n{slot}: {e}"),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DbError::api(op, last));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Learns the member id of every running replica from its own status.
    async fn learn_ids(&mut self) {
        for slot in self.slots() {
            if let Some(mut c) = self.client(slot).await
                && let Ok(s) = c.status().await
                && let (Some(h), Some(n)) = (s.header(), self.nodes.get_mut(&slot))
            {
                n.id = h.member_id();
            }
        }
    }

    async fn remove_id(&self, id: u64, slot: usize) -> Result<(), DbError> {
        if id == 0 {
            return Ok(());
        }
        let members = self
            .cluster_call(
                "member list",
                Some(slot),
                API_TIMEOUT * 2,
                |mut c| async move { c.member_list().await },
            )
            .await?;
        if !members.members().iter().any(|m| m.id() == id) {
            return Ok(());
        }
        self.cluster_call(
            &format!("remove member {id:x}"),
            Some(slot),
            JOIN_TIMEOUT,
            |mut c| async move { c.member_remove(id).await },
        )
        .await?;
        Ok(())
    }
}

pub(crate) async fn connect(
    endpoint: &str,
    timeout: Duration,
) -> Result<Client, etcd_client::Error> {
    Client::connect(
        [format!("http://{endpoint}")],
        Some(
            ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(1))
                .with_timeout(timeout),
        ),
    )
    .await
}

impl Db for EtcdDb {
    fn kind(&self) -> DbKind {
        DbKind::Etcd
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
        wait_for(
            "etcd to elect a leader",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || async { self.leader().await },
        )
        .await?;
        self.learn_ids().await;
        self.cluster_call(
            "a first write",
            None,
            Duration::from_secs(60),
            |mut c| async move { c.put("jepsen-lite/ready", "1", None).await },
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
        remove_dir(&self.data_dir(slot))
    }

    async fn remove_member(&mut self, slot: usize) -> Result<(), DbError> {
        let id = self.node(slot)?.id;
        self.remove_id(id, slot).await?;
        // A removed etcd member stops by itself; make sure.
        self.node_mut(slot)?
            .process
            .terminate(Duration::from_secs(10))
            .await?;
        remove_dir(&self.data_dir(slot))
    }

    async fn add_member(&mut self, slot: usize) -> Result<(), DbError> {
        let old = self.node(slot)?.id;
        self.node_mut(slot)?.process.kill().await?;
        self.remove_id(old, slot).await?;
        remove_dir(&self.data_dir(slot))?;
        self.node_mut(slot)?.incarnation += 1;
        remove_dir(&self.data_dir(slot))?;

        let peer_url = self.peer_url(slot);
        let added = self
            .cluster_call(
                &format!("add learner for n{slot}"),
                Some(slot),
                JOIN_TIMEOUT,
                |mut c| {
                    let url = peer_url.clone();
                    async move {
                        c.member_add([url], Some(MemberAddOptions::new().with_is_learner()))
                            .await
                    }
                },
            )
            .await?;
        let new_id = added
            .member()
            .map(|m| m.id())
            .ok_or_else(|| DbError::api("member add", "the answer names no member"))?;
        let name = self.name(slot);
        let initial = added
            .member_list()
            .iter()
            .filter_map(|m| {
                let url = m.peer_urls().first()?;
                let n = if m.id() == new_id {
                    name.clone()
                } else {
                    m.name().to_string()
                };
                (!n.is_empty()).then(|| format!("{n}={url}"))
            })
            .collect::<Vec<_>>()
            .join(",");
        {
            let node = self.node_mut(slot)?;
            node.id = new_id;
            node.initial_cluster = initial;
            node.new_cluster = false;
        }
        self.spawn(slot)?;
        // A learner can be promoted only once it has caught up with the leader.
        self.cluster_call(
            &format!("promote {new_id:x}"),
            Some(slot),
            JOIN_TIMEOUT,
            |mut c| async move { c.member_promote(new_id).await },
        )
        .await?;
        Ok(())
    }

    async fn leader(&self) -> Option<usize> {
        let mut best: Option<(u64, u64)> = None;
        let mut ids: BTreeMap<u64, usize> = BTreeMap::new();
        for slot in self.slots() {
            let Some(mut c) = self.client(slot).await else {
                continue;
            };
            let Ok(s) = c.status().await else { continue };
            if let Some(h) = s.header() {
                ids.insert(h.member_id(), slot);
            }
            if s.leader() != 0 && best.is_none_or(|(t, _)| s.raft_term() > t) {
                best = Some((s.raft_term(), s.leader()));
            }
        }
        let (_, leader) = best?;
        ids.get(&leader).copied()
    }

    fn partition(&mut self, _cuts: &Cuts) -> Result<(), DbError> {
        Err(DbError::Unsupported(
            "partitions are unsupported for etcd: the proxies identify a replica by the source IP \
             of its peer connections, and etcd cannot set one (every loopback connection comes \
             from 127.0.0.1); use kill, pause, wipe or member"
                .into(),
        ))
    }

    async fn state_hashes(&self) -> Vec<ReplicaHash> {
        // HashKV at one revision every member has: the smallest current one.
        let mut clients = Vec::new();
        for slot in self.slots() {
            let Some(mut c) = self.client(slot).await else {
                continue;
            };
            let Ok(s) = c.status().await else { continue };
            let (Some(h), id) = (s.header(), self.nodes.get(&slot).map_or(0, |n| n.id)) else {
                continue;
            };
            clients.push((slot, id, h.revision(), c));
        }
        let Some(revision) = clients.iter().map(|(_, _, r, _)| *r).min() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (slot, member_id, _, mut c) in clients {
            if let Ok(h) = c.hash_kv(revision).await {
                out.push(ReplicaHash {
                    slot,
                    member_id,
                    revision: u64::try_from(revision).unwrap_or(0),
                    hash: u64::from(h.hash()),
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
    }
}

/// The `etcd` binary: `bin_dir/etcd`, else the first `etcd` on PATH.
pub fn find_etcd(bin_dir: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = bin_dir.map(|d| d.join("etcd")).filter(|p| p.is_file()) {
        return Some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
}
