//! Node configuration: flags with `FERROKV_*` environment fallbacks, parsed once at start-up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use clap::ValueEnum;

use crate::raft::NodeId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything a replica needs to run. Built once from flags and environment, then passed down.
#[derive(Debug, Clone, Args)]
pub struct NodeConfig {
    /// Raft node id of this replica (non-zero). Only used when the data dir is new; a data dir
    /// keeps the id it was created with.
    #[arg(long, env = "FERROKV_ID")]
    pub id: Option<NodeId>,

    /// Member name shown in member lists (default: ferrokv-<id>).
    #[arg(long, env = "FERROKV_NAME")]
    pub name: Option<String>,

    /// Directory of this replica's RocksDB and snapshots; one per replica, never shared.
    #[arg(long, env = "FERROKV_DATA_DIR", default_value = "./ferrokv-data")]
    pub data_dir: PathBuf,

    /// Address for client gRPC (KV, Cluster, Maintenance, health).
    #[arg(long, env = "FERROKV_LISTEN_CLIENT", default_value = "127.0.0.1:2379")]
    pub listen_client: SocketAddr,

    /// Address for replica-to-replica gRPC.
    #[arg(long, env = "FERROKV_LISTEN_PEER", default_value = "127.0.0.1:2380")]
    pub listen_peer: SocketAddr,

    /// Client address other members and clients should use (default: --listen-client).
    #[arg(long, env = "FERROKV_ADVERTISE_CLIENT")]
    pub advertise_client: Option<String>,

    /// Peer address other members should use (default: --listen-peer).
    #[arg(long, env = "FERROKV_ADVERTISE_PEER")]
    pub advertise_peer: Option<String>,

    /// Initial members as ID=HOST:PEERPORT,... Used only when the data dir is empty: every
    /// initial member starts with the same list and exactly one cluster forms.
    #[arg(long, env = "FERROKV_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,

    /// Source IP of outgoing peer connections (default: chosen by the OS). Lets a test
    /// harness's proxies tell which replica a peer connection comes from.
    #[arg(long, env = "FERROKV_PEER_SOURCE_IP")]
    pub peer_source_ip: Option<std::net::IpAddr>,

    /// Test builds only (ferrokv-faulty): break a guarantee on purpose.
    #[cfg(feature = "fault-injection")]
    #[arg(long, env = "FERROKV_FAULT", value_enum)]
    pub fault: Option<crate::fault::Fault>,

    /// HTTP address for /metrics (Prometheus), /livez and /readyz.
    #[arg(long, env = "FERROKV_LISTEN_METRICS", default_value = "127.0.0.1:2381")]
    pub listen_metrics: SocketAddr,

    /// Leader heartbeat interval in milliseconds.
    #[arg(long, env = "FERROKV_HEARTBEAT_INTERVAL_MS", default_value_t = 100)]
    pub heartbeat_interval_ms: u64,

    /// Election timeout in milliseconds (randomized between this and twice this).
    #[arg(long, env = "FERROKV_ELECTION_TIMEOUT_MS", default_value_t = 1000)]
    pub election_timeout_ms: u64,

    /// Take a snapshot after this many log entries since the last one.
    #[arg(long, env = "FERROKV_SNAPSHOT_ENTRIES", default_value_t = 10_000)]
    pub snapshot_entries: u64,

    /// Log entries kept after a snapshot, so a briefly lagging follower needs no snapshot.
    #[arg(long, env = "FERROKV_SNAPSHOT_KEEP_ENTRIES", default_value_t = 1_000)]
    pub snapshot_keep_entries: u64,

    /// Largest key accepted, in bytes.
    #[arg(long, env = "FERROKV_MAX_KEY_BYTES", default_value_t = 4096)]
    pub max_key_bytes: usize,

    /// Largest value accepted, in bytes.
    #[arg(long, env = "FERROKV_MAX_VALUE_BYTES", default_value_t = 1 << 20)]
    pub max_value_bytes: usize,

    /// Largest gRPC request accepted, in bytes (default: max value + max key + 64 KiB).
    #[arg(long, env = "FERROKV_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,

    /// Most operations in one Txn (compares and ops counted separately).
    #[arg(long, env = "FERROKV_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,

    /// Deadline for requests that carry none, in milliseconds.
    #[arg(long, env = "FERROKV_DEFAULT_DEADLINE_MS", default_value_t = 5_000)]
    pub default_deadline_ms: u64,

    /// On SIGTERM, how long a leader waits for leadership to move before stopping anyway.
    #[arg(long, env = "FERROKV_SHUTDOWN_TRANSFER_MS", default_value_t = 5_000)]
    pub shutdown_transfer_ms: u64,

    /// Log format: human-readable text or JSON lines.
    #[arg(long, env = "FERROKV_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax), e.g. info or ferrokv_node=debug,openraft=info.
    #[arg(long, env = "FERROKV_LOG", default_value = "info,openraft=warn")]
    pub log: String,
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--initial-cluster entry {entry:?}: {reason} (expected ID=HOST:PORT)")]
    InitialCluster { entry: String, reason: String },
    #[error("--id is required when the data dir is empty")]
    MissingId,
    #[error("--id must be non-zero")]
    ZeroId,
    #[error("this node's id {id} is not in --initial-cluster ({members})")]
    NotInInitialCluster { id: NodeId, members: String },
}

impl NodeConfig {
    pub fn advertise_client(&self) -> String {
        self.advertise_client
            .clone()
            .unwrap_or_else(|| self.listen_client.to_string())
    }

    pub fn advertise_peer(&self) -> String {
        self.advertise_peer
            .clone()
            .unwrap_or_else(|| self.listen_peer.to_string())
    }

    pub fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
            .unwrap_or(self.max_value_bytes + self.max_key_bytes + (64 << 10))
    }

    /// The faults this node runs with (always none without the `fault-injection` feature).
    pub fn faults(&self) -> crate::fault::Faults {
        #[cfg(feature = "fault-injection")]
        return crate::fault::Faults::new(self.fault);
        #[cfg(not(feature = "fault-injection"))]
        crate::fault::Faults::default()
    }

    pub fn member_name(&self, id: NodeId) -> String {
        self.name.clone().unwrap_or_else(|| format!("ferrokv-{id}"))
    }
}

/// Parses `ID=HOST:PORT,...` into peer addresses by id.
pub fn parse_initial_cluster(s: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut members = BTreeMap::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |reason: &str| ConfigError::InitialCluster {
            entry: entry.to_string(),
            reason: reason.to_string(),
        };
        let (id, addr) = entry.split_once('=').ok_or_else(|| bad("missing '='"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| bad("the id is not a number"))?;
        if id == 0 {
            return Err(bad("ids start at 1"));
        }
        let addr = addr.trim();
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok {
            return Err(bad("the address needs a host and a port"));
        }
        if members.insert(id, addr.to_string()).is_some() {
            return Err(bad("the id appears twice"));
        }
    }
    if members.is_empty() {
        return Err(ConfigError::InitialCluster {
            entry: s.to_string(),
            reason: "no members".into(),
        });
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parses_and_rejects_bad_entries() {
        let m = parse_initial_cluster("1=127.0.0.1:2380, 2=ferrokv-1.ferrokv-peer.ns.svc:2380")
            .unwrap();
        assert_eq!(m[&2], "ferrokv-1.ferrokv-peer.ns.svc:2380");
        for bad in [
            "1127.0.0.1:2380",
            "x=h:1",
            "0=h:1",
            "1=h",
            "1=h:1,1=h:2",
            "",
        ] {
            assert!(parse_initial_cluster(bad).is_err(), "{bad} accepted");
        }
    }
}
