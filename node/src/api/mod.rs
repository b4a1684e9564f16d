//! Client-facing gRPC services (KV, Cluster, Maintenance), health and the metrics endpoint.
//! Conversions between protobuf and storage types happen here, once.

pub mod cluster;
pub mod health;
pub mod kv;
pub mod maintenance;
pub mod metrics;
pub mod resource_exhausted;

use std::time::Duration;

use ferrokv_proto::v1::ResponseHeader;
use tokio::time::Instant;
use tonic::Status;

use crate::replica::Replica;
use crate::replica::ReplicaError;

/// Limits and defaults the API enforces, from the node config.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_txn_ops: usize,
    pub default_deadline: Duration,
    /// Keys per Scan page when the request sets no limit, and the most it may ask for.
    pub max_scan_limit: usize,
}

/// The deadline of a request: the client's `grpc-timeout` if it sent one, else the default.
/// A tenth of the timeout (at most 100 ms) is kept back so the server's own answer ("no
/// leader", "deadline exceeded") reaches the client before the client's timer fires.
pub fn deadline<T>(req: &tonic::Request<T>, default: Duration) -> Instant {
    let timeout = req
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .unwrap_or(default);
    let margin = (timeout / 10).min(Duration::from_millis(100));
    Instant::now() + timeout - margin
}

/// Parses the gRPC wire format of a timeout: digits then a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(s: &str) -> Option<Duration> {
    if s.len() < 2 {
        return None;
    }
    let (digits, unit) = s.split_at(s.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The header every response carries (DESIGN.md §3).
pub fn header(replica: &Replica) -> ResponseHeader {
    let m = replica.metrics();
    let leader_client_addr = m
        .current_leader
        .and_then(|l| {
            m.membership_config
                .membership()
                .get_node(&l)
                .map(|n| n.client_addr.clone())
        })
        .unwrap_or_default();
    ResponseHeader {
        cluster_id: replica.reader.cluster_id().ok().flatten().unwrap_or(0),
        member_id: replica.id,
        leader_id: m.current_leader.unwrap_or(0),
        raft_term: m.current_term,
        revision: m.last_applied.as_ref().map_or(0, |l| l.index()),
        leader_client_addr,
    }
}

impl From<ReplicaError> for Status {
    fn from(e: ReplicaError) -> Status {
        match e {
            ReplicaError::NoLeader(m) => Status::unavailable(format!("no leader: {m}")),
            ReplicaError::Deadline(m) => Status::deadline_exceeded(m),
            ReplicaError::Ambiguous(m) => Status::unknown(format!("outcome unknown: {m}")),
            ReplicaError::InvalidArgument(m) => Status::invalid_argument(m),
            ReplicaError::FailedPrecondition(m) => {
                Status::failed_precondition(format!("not applied: {m}"))
            }
            ReplicaError::Storage(e) => Status::internal(format!("storage error: {e}")),
            ReplicaError::ShuttingDown => {
                Status::unavailable("no leader: this node is shutting down")
            }
            ReplicaError::Internal(m) => Status::internal(m),
        }
    }
}

pub(crate) fn storage_status(e: std::io::Error) -> Status {
    Status::internal(format!("storage error: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
    }
}
