//! etcd 3.4 as a [`Db`]: the reference system. One `etcd` process per slot on its own
//! loopback IP; membership through etcd's Cluster API (learner, then promote).
//!
//! Peer links run through the harness's proxies like ferrokv's: each member advertises
//! its proxy's address as its peer URL. etcd cannot choose the source IP of its peer
//! connections (they all come from 127.0.0.1), so the proxies tell members apart by the
//! process that owns a connection ([`super::socket_owner`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Client, MemberAddOptions};

use super::local::{LocalCluster, PeerLinks, remove_dir};
use super::{Db, DbError, DbKind, RaftSettings, ReplicaHash, wait_for};
use crate::nemesis::plan::Cuts;

/// How to run an etcd cluster.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    pub nodes: usize,
    pub binary: PathBuf,
    pub dir: PathBuf,
    pub raft: RaftSettings,
    pub links: PeerLinks,
}

/// How a slot's current incarnation starts: `--initial-cluster` and whether the cluster
/// is `new` (formed by it) or `existing` (joined).
#[derive(Debug, Clone)]
struct Start {
    initial_cluster: String,
    new_cluster: bool,
}

pub struct EtcdDb {
    opts: EtcdOptions,
    cluster: LocalCluster,
    starts: BTreeMap<usize, Start>,
    token: String,
}

const API_TIMEOUT: Duration = Duration::from_secs(5);
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

impl EtcdDb {
    /// Allocates addresses and starts the proxies; nothing runs until [`Db::setup`].
    pub async fn new(opts: EtcdOptions, seed: u64) -> Result<EtcdDb, DbError> {
        let mut cluster = LocalCluster::new(opts.nodes, opts.dir.clone(), opts.links).await?;
        for slot in cluster.slots() {
            // Learned from the cluster once it runs (etcd derives ids itself).
            cluster.replica_mut(slot)?.id = 0;
        }
        let mut db = EtcdDb {
            opts,
            cluster,
            starts: BTreeMap::new(),
            token: format!("jepsen-lite-{seed}-{}", std::process::id()),
        };
        let initial = db
            .slots()
            .iter()
            .map(|slot| format!("{}={}", db.name(*slot), db.peer_url(*slot)))
            .collect::<Vec<_>>()
            .join(",");
        for slot in db.slots() {
            db.starts.insert(
                slot,
                Start {
                    initial_cluster: initial.clone(),
                    new_cluster: true,
                },
            );
        }
        Ok(db)
    }

    fn name(&self, slot: usize) -> String {
        let inc = self.cluster.replica(slot).map_or(0, |r| r.incarnation);
        format!("n{slot}-{inc}")
    }

    /// The peer URL the slot's member advertises (its proxy, with proxied links).
    fn peer_url(&self, slot: usize) -> String {
        format!("http://{}", self.cluster.advertised_peer_addr(slot))
    }

    fn spawn(&mut self, slot: usize) -> Result<(), DbError> {
        let start = self
            .starts
            .get(&slot)
            .cloned()
            .ok_or(DbError::NoSuchSlot(slot))?;
        let client_url = format!("http://{}", self.client_endpoint(slot));
        let mut args: Vec<String> = vec![
            "--name".into(),
            self.name(slot),
            "--data-dir".into(),
            self.cluster.data_dir(slot).display().to_string(),
            "--listen-client-urls".into(),
            client_url.clone(),
            "--advertise-client-urls".into(),
            client_url,
            "--listen-peer-urls".into(),
            format!("http://{}", self.cluster.listen_peer_addr(slot)),
            "--initial-advertise-peer-urls".into(),
            self.peer_url(slot),
            "--initial-cluster".into(),
            start.initial_cluster,
            "--initial-cluster-state".into(),
            if start.new_cluster { "new" } else { "existing" }.into(),
            "--initial-cluster-token".into(),
            self.token.clone(),
            "--heartbeat-interval".into(),
            self.opts.raft.heartbeat_ms.to_string(),
            "--election-timeout".into(),
            self.opts.raft.election_ms.to_string(),
            "--logger".into(),
            "zap".into(),
        ];
        if let Some(entries) = self.opts.raft.snapshot_entries {
            args.push("--snapshot-count".into());
            args.push(entries.to_string());
        }
        let binary = self.opts.binary.clone();
        self.cluster.spawn(slot, &binary, &args)
    }

    async fn client(&self, slot: usize) -> Option<Client> {
        if !self.cluster.is_live(slot) {
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
        call: F,
    ) -> Result<T, DbError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let connect = |endpoint: String| async move { connect(&endpoint, API_TIMEOUT).await.ok() };
        self.cluster
            .call_any(op, except, timeout, connect, call)
            .await
    }

    /// Learns the member id of every running replica from its own status.
    async fn learn_ids(&mut self) {
        for slot in self.slots() {
            if let Some(mut c) = self.client(slot).await
                && let Ok(s) = c.status().await
                && let Some(h) = s.header()
                && let Ok(r) = self.cluster.replica_mut(slot)
            {
                r.id = h.member_id();
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

async fn connect(endpoint: &str, timeout: Duration) -> Result<Client, etcd_client::Error> {
    crate::kv::connect_etcd(&[endpoint.to_string()], timeout).await
}

impl Db for EtcdDb {
    fn kind(&self) -> DbKind {
        DbKind::Etcd
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
        // A removed etcd member stops by itself; make sure.
        self.cluster
            .terminate(slot, Duration::from_secs(10))
            .await?;
        remove_dir(&self.cluster.data_dir(slot))
    }

    async fn add_member(&mut self, slot: usize) -> Result<(), DbError> {
        let old = self.cluster.replica(slot)?.id;
        self.cluster.wipe(slot).await?;
        self.remove_id(old, slot).await?;
        self.cluster.replica_mut(slot)?.incarnation += 1;
        remove_dir(&self.cluster.data_dir(slot))?;

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
        self.cluster.replica_mut(slot)?.id = new_id;
        self.starts.insert(
            slot,
            Start {
                initial_cluster: initial,
                new_cluster: false,
            },
        );
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

    fn partition(&mut self, cuts: &Cuts) -> Result<(), DbError> {
        self.cluster.partition(cuts)
    }

    async fn state_hashes(&self) -> Vec<ReplicaHash> {
        // HashKV at one revision every member has: the smallest current one.
        let mut clients = Vec::new();
        for slot in self.slots() {
            let Some(mut c) = self.client(slot).await else {
                continue;
            };
            let Ok(s) = c.status().await else { continue };
            let (Some(h), id) = (s.header(), self.cluster.replica(slot).map_or(0, |r| r.id)) else {
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
        self.cluster.log_files()
    }

    fn pids(&self) -> std::collections::BTreeMap<usize, u32> {
        self.cluster.pids()
    }

    async fn teardown(&mut self) {
        self.cluster.teardown().await;
    }
}

/// The `etcd` binary: `bin_dir/etcd`, else the first `etcd` on PATH.
pub fn find_etcd(bin_dir: Option<&Path>) -> Result<PathBuf, DbError> {
    let on_path = || {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join("etcd"))
            .find(|p| p.is_file())
    };
    bin_dir
        .map(|d| d.join("etcd"))
        .filter(|p| p.is_file())
        .or_else(on_path)
        .ok_or_else(|| DbError::MissingBinary {
            what: "etcd".into(),
            path: PathBuf::from("etcd (on PATH)"),
            hint: "install etcd 3.4 (Debian: apt-get install etcd-server) or put it in --bin-dir"
                .into(),
        })
}
