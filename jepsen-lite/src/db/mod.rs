//! Clusters under test: the [`Db`] trait (start, stop, kill -9, pause, wipe, membership,
//! logs) and its local-process implementations for ferrokv and etcd, whose peer links run
//! through the harness's proxies ([`proxy`]) so that any of them can be cut.
//!
//! Every replica occupies a *slot* 1..=n: a loopback IP of its own (127.0.0.(10+slot))
//! for its listeners and its outgoing peer connections, and a data dir. A slot keeps its
//! addresses when its replica is wiped and comes back under a new member id, so clients
//! bound to a slot keep working.

pub mod etcd;
pub mod ferrokv;
pub mod local;
pub mod process;
pub mod proxy;
pub mod socket_owner;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use crate::nemesis::plan::Cuts;

/// Why a cluster operation could not be done.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{what} not found at {path}; {hint}")]
    MissingBinary {
        what: String,
        path: PathBuf,
        hint: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} failed: {message}")]
    Api { op: String, message: String },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    #[error("{0}")]
    Unsupported(String),
    #[error("no node in slot {0}")]
    NoSuchSlot(usize),
}

impl DbError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DbError {
        let what = what.into();
        move |source| DbError::Io { what, source }
    }

    pub(crate) fn api(op: impl Into<String>, message: impl ToString) -> DbError {
        DbError::Api {
            op: op.into(),
            message: message.to_string(),
        }
    }
}

/// One replica's state hash, as its status reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplicaHash {
    pub slot: usize,
    pub member_id: u64,
    /// The revision (applied index) the hash was computed at.
    pub revision: u64,
    pub hash: u64,
}

/// Raft settings both systems take, so a comparison runs them alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftSettings {
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    /// Log entries between snapshots; `None`: the system's default (ferrokv 10,000,
    /// etcd 100,000).
    pub snapshot_entries: Option<u64>,
}

/// Which system a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DbKind {
    Ferrokv,
    Etcd,
}

/// A cluster of replicas the harness owns.
///
/// Methods that change membership talk to the cluster through its API and wait until
/// the change is committed; process methods act at once.
#[allow(async_fn_in_trait)]
pub trait Db {
    fn kind(&self) -> DbKind;
    /// The slots (1..=n).
    fn slots(&self) -> Vec<usize>;
    /// Client address (`host:port`) of the replica in `slot`.
    fn client_endpoint(&self, slot: usize) -> String;
    /// Starts every replica as a new cluster and waits until it serves writes.
    async fn setup(&mut self) -> Result<(), DbError>;
    /// Restarts the replica in `slot` on its data dir.
    async fn start(&mut self, slot: usize) -> Result<(), DbError>;
    /// SIGKILL: no shutdown, nothing flushed.
    async fn kill(&mut self, slot: usize) -> Result<(), DbError>;
    /// SIGSTOP.
    fn pause(&mut self, slot: usize) -> Result<(), DbError>;
    /// SIGCONT.
    fn resume(&mut self, slot: usize) -> Result<(), DbError>;
    /// Kills the replica and deletes its data dir: its volume is lost. It stays down
    /// until [`Db::add_member`].
    async fn wipe(&mut self, slot: usize) -> Result<(), DbError>;
    /// Removes the replica's member from the cluster, stops it and drops its data (it
    /// comes back only as a new member, through [`Db::add_member`]).
    async fn remove_member(&mut self, slot: usize) -> Result<(), DbError>;
    /// Brings `slot` back empty under a new member id: removes its old id if still a
    /// member, adds it as a learner, waits for it to catch up, promotes it to voter.
    async fn add_member(&mut self, slot: usize) -> Result<(), DbError>;
    /// The slot of the leader most replicas agree on, if any.
    async fn leader(&self) -> Option<usize>;
    /// Cuts the given links between slots (and only those); an error when this database
    /// cannot be partitioned here.
    fn partition(&mut self, cuts: &Cuts) -> Result<(), DbError>;
    /// Every replica's state hash (replicas that do not answer are left out).
    async fn state_hashes(&self) -> Vec<ReplicaHash>;
    /// Log files, by node name.
    fn log_files(&self) -> Vec<(String, PathBuf)>;
    /// The pid of each running replica, by slot (for CPU and memory readings).
    fn pids(&self) -> std::collections::BTreeMap<usize, u32>;
    /// Kills everything.
    async fn teardown(&mut self);
}

/// The loopback IP of slot `slot`'s replica.
pub fn node_ip(slot: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + slot as u8))
}

/// The loopback IP of the proxy in front of slot `slot`'s peer port.
pub fn proxy_ip(slot: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 100 + slot as u8))
}

/// The slot whose replica connects from `ip`.
pub fn slot_of(ip: IpAddr) -> Option<usize> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            (a == 127 && b == 0 && c == 0 && (11..=19).contains(&d)).then(|| usize::from(d - 10))
        }
        IpAddr::V6(_) => None,
    }
}

/// A free TCP port on `ip` for a listener, taken below Linux's ephemeral range (32768 and
/// up): a port from that range can meanwhile become the local port of an outgoing
/// connection from the same IP, and the listener then fails with "address in use". Ports
/// are never handed out twice in one process.
pub fn free_port(ip: IpAddr) -> Result<u16, DbError> {
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::sync::OnceLock;
    static HANDED_OUT: OnceLock<Mutex<HashSet<(IpAddr, u16)>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(Mutex::default);
    for _ in 0..10_000 {
        let port: u16 = rand::random_range(10_000..32_000);
        let mut used = handed_out.lock().unwrap_or_else(|e| e.into_inner());
        if !used.contains(&(ip, port)) && std::net::TcpListener::bind((ip, port)).is_ok() {
            used.insert((ip, port));
            return Ok(port);
        }
    }
    Err(DbError::io(format!("finding a free port on {ip}"))(
        std::io::Error::other("no free port below 32000"),
    ))
}

/// Polls `f` every `every` until it yields `Some`, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: F,
) -> Result<T, DbError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() + every > deadline {
            return Err(DbError::Timeout {
                what: what.to_string(),
                after: timeout,
            });
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_map_to_their_own_loopback_ips_and_back() {
        for slot in 1..=5 {
            assert_eq!(slot_of(node_ip(slot)), Some(slot));
            assert_eq!(slot_of(proxy_ip(slot)), None);
        }
        assert_eq!(slot_of("127.0.0.1".parse().expect("ip")), None);
    }
}
