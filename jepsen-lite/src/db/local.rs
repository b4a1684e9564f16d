//! What the local ferrokv and etcd clusters share: one process per slot with its ports
//! and data dir, the proxies in front of the peer ports (or direct peer links), and the
//! retry loop for calls that any live replica may answer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::process::NodeProcess;
use super::proxy::Network;
use super::{DbError, free_port, node_ip, proxy_ip};
use crate::nemesis::plan::Cuts;

/// How replicas reach each other's peer ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerLinks {
    /// Through the harness's proxies, so links can be cut (`jepsen-lite test`).
    Proxied,
    /// Straight to the peer port: no extra hop, no partitions (`jepsen-lite bench`).
    Direct,
}

/// One slot's replica: its current member id and incarnation, its ports, its process.
#[derive(Debug)]
pub struct Replica {
    /// Member id of the current incarnation (0 until known, for etcd).
    pub id: u64,
    /// Bumped when the slot comes back empty as a new member: a new data dir.
    pub incarnation: u32,
    pub client_port: u16,
    pub peer_port: u16,
    pub metrics_port: u16,
    /// The proxy's port in front of `peer_port` (used only with [`PeerLinks::Proxied`]).
    pub proxy_port: u16,
    pub process: NodeProcess,
}

/// The replicas of one local cluster, slot 1..=n.
pub struct LocalCluster {
    dir: PathBuf,
    replicas: BTreeMap<usize, Replica>,
    network: Option<Network>,
}

impl LocalCluster {
    /// Allocates every slot's ports and, for [`PeerLinks::Proxied`], starts the proxies;
    /// no replica runs yet. Data dirs and logs go under `dir`.
    pub async fn new(nodes: usize, dir: PathBuf, links: PeerLinks) -> Result<Self, DbError> {
        let mut network = (links == PeerLinks::Proxied).then(Network::new);
        let mut replicas = BTreeMap::new();
        for slot in 1..=nodes {
            let ip = node_ip(slot);
            let replica = Replica {
                id: slot as u64,
                incarnation: 0,
                client_port: free_port(ip)?,
                peer_port: free_port(ip)?,
                metrics_port: free_port(ip)?,
                proxy_port: free_port(proxy_ip(slot))?,
                process: NodeProcess::new(format!("n{slot}"), dir.join(format!("n{slot}.log"))),
            };
            if let Some(network) = network.as_mut() {
                network
                    .add_route(
                        slot,
                        SocketAddr::new(proxy_ip(slot), replica.proxy_port),
                        SocketAddr::new(ip, replica.peer_port),
                    )
                    .await?;
            }
            replicas.insert(slot, replica);
        }
        Ok(LocalCluster {
            dir,
            replicas,
            network,
        })
    }

    pub fn slots(&self) -> Vec<usize> {
        self.replicas.keys().copied().collect()
    }

    pub fn replicas(&self) -> impl Iterator<Item = (usize, &Replica)> {
        self.replicas.iter().map(|(slot, r)| (*slot, r))
    }

    pub fn replica(&self, slot: usize) -> Result<&Replica, DbError> {
        self.replicas.get(&slot).ok_or(DbError::NoSuchSlot(slot))
    }

    pub fn replica_mut(&mut self, slot: usize) -> Result<&mut Replica, DbError> {
        self.replicas
            .get_mut(&slot)
            .ok_or(DbError::NoSuchSlot(slot))
    }

    /// Whether the slot's process runs and is not paused: whether it can answer.
    pub fn is_live(&self, slot: usize) -> bool {
        self.replicas
            .get(&slot)
            .is_some_and(|r| r.process.is_running() && !r.process.is_paused())
    }

    /// `ip:port` of the slot's client listener ("" for an unknown slot).
    pub fn client_endpoint(&self, slot: usize) -> String {
        self.replicas
            .get(&slot)
            .map(|r| format!("{}:{}", node_ip(slot), r.client_port))
            .unwrap_or_default()
    }

    /// Where the slot's replica listens for peers.
    pub fn listen_peer_addr(&self, slot: usize) -> SocketAddr {
        let port = self.replicas.get(&slot).map_or(0, |r| r.peer_port);
        SocketAddr::new(node_ip(slot), port)
    }

    /// The peer address the slot's replica advertises: its proxy's, or its own listener
    /// with direct links.
    pub fn advertised_peer_addr(&self, slot: usize) -> SocketAddr {
        match (&self.network, self.replicas.get(&slot)) {
            (Some(_), Some(r)) => SocketAddr::new(proxy_ip(slot), r.proxy_port),
            _ => self.listen_peer_addr(slot),
        }
    }

    /// The data dir of the slot's current incarnation.
    pub fn data_dir(&self, slot: usize) -> PathBuf {
        let incarnation = self.replicas.get(&slot).map_or(0, |r| r.incarnation);
        self.dir.join(format!("n{slot}-data-{incarnation}"))
    }

    /// Starts the slot's process (no-op if it runs) and tells the proxies its pid.
    pub fn spawn(&mut self, slot: usize, binary: &Path, args: &[String]) -> Result<(), DbError> {
        let replica = self.replica_mut(slot)?;
        replica.process.spawn(binary, args)?;
        let pid = replica.process.pid();
        if let Some(network) = &self.network {
            network.set_process(slot, pid);
        }
        Ok(())
    }

    /// SIGKILL.
    pub async fn kill(&mut self, slot: usize) -> Result<(), DbError> {
        self.replica_mut(slot)?.process.kill().await?;
        if let Some(network) = &self.network {
            network.set_process(slot, None);
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn terminate(&mut self, slot: usize, grace: Duration) -> Result<(), DbError> {
        self.replica_mut(slot)?.process.terminate(grace).await?;
        if let Some(network) = &self.network {
            network.set_process(slot, None);
        }
        Ok(())
    }

    pub fn pause(&mut self, slot: usize) -> Result<(), DbError> {
        self.replica_mut(slot)?.process.pause()
    }

    pub fn resume(&mut self, slot: usize) -> Result<(), DbError> {
        self.replica_mut(slot)?.process.resume()
    }

    /// Kills the slot's replica and deletes its current data dir.
    pub async fn wipe(&mut self, slot: usize) -> Result<(), DbError> {
        self.kill(slot).await?;
        remove_dir(&self.data_dir(slot))
    }

    /// Cuts exactly `cuts`; an error with direct links, which nothing can cut.
    pub fn partition(&mut self, cuts: &Cuts) -> Result<(), DbError> {
        match &self.network {
            Some(network) => {
                network.set_cuts(cuts);
                Ok(())
            }
            None => Err(DbError::Unsupported(
                "partitions need the peer proxies; this cluster was started with direct peer links"
                    .into(),
            )),
        }
    }

    /// The pid of each running replica, by slot.
    pub fn pids(&self) -> BTreeMap<usize, u32> {
        self.replicas
            .iter()
            .filter_map(|(slot, r)| Some((*slot, r.process.pid()?)))
            .collect()
    }

    /// Log files, by node name.
    pub fn log_files(&self) -> Vec<(String, PathBuf)> {
        self.replicas
            .values()
            .map(|r| (r.process.name.clone(), r.process.log_path.clone()))
            .collect()
    }

    /// Kills every replica and stops the proxies.
    pub async fn teardown(&mut self) {
        for slot in self.slots() {
            let _ = self.kill(slot).await;
        }
        if let Some(network) = self.network.as_mut() {
            network.stop();
        }
    }

    /// Runs `call` on a client of each live replica other than `except` in turn until
    /// one succeeds or `timeout` passes; `connect` makes the client for an endpoint.
    pub async fn call_any<C, T, E, Conn, ConnFut, F, Fut>(
        &self,
        op: &str,
        except: Option<usize>,
        timeout: Duration,
        mut connect: Conn,
        mut call: F,
    ) -> Result<T, DbError>
    where
        Conn: FnMut(String) -> ConnFut,
        ConnFut: std::future::Future<Output = Option<C>>,
        F: FnMut(C) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = String::from("no live replica to ask");
        loop {
            for slot in self.slots() {
                if Some(slot) == except || !self.is_live(slot) {
                    continue;
                }
                let Some(client) = connect(self.client_endpoint(slot)).await else {
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
}

/// Deletes `dir` and everything in it; a missing dir is fine.
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
