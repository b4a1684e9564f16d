//! The HTTP admin endpoint: /metrics (Prometheus text), /livez, /readyz.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus::Encoder;
use prometheus::IntGauge;
use prometheus::Registry;

use crate::replica::Replica;

/// Gauges read from Raft metrics at scrape time, so they are never stale.
struct Gauges {
    registry: Registry,
    term: IntGauge,
    is_leader: IntGauge,
    has_leader: IntGauge,
    commit_index: IntGauge,
    applied_index: IntGauge,
    last_log_index: IntGauge,
    snapshot_index: IntGauge,
    db_size: IntGauge,
    voters: IntGauge,
}

impl Gauges {
    fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let g = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let gauge = IntGauge::new(name, help)?;
            registry.register(Box::new(gauge.clone()))?;
            Ok(gauge)
        };
        Ok(Self {
            term: g("ferrokv_raft_term", "Current Raft term")?,
            is_leader: g("ferrokv_raft_is_leader", "1 if this replica is the leader")?,
            has_leader: g(
                "ferrokv_raft_has_leader",
                "1 if this replica knows a leader",
            )?,
            commit_index: g(
                "ferrokv_raft_commit_index",
                "Highest log index known committed",
            )?,
            applied_index: g(
                "ferrokv_raft_applied_index",
                "Highest log index applied to the state machine",
            )?,
            last_log_index: g("ferrokv_raft_last_log_index", "Highest log index stored")?,
            snapshot_index: g(
                "ferrokv_raft_snapshot_index",
                "Log index covered by the current snapshot",
            )?,
            db_size: g(
                "ferrokv_db_size_bytes",
                "Bytes on disk used by RocksDB and snapshots",
            )?,
            voters: g("ferrokv_cluster_voters", "Voters in the membership config")?,
            registry,
        })
    }

    fn update(&self, replica: &Replica) {
        let m = replica.metrics();
        let idx = |l: &Option<crate::raft::LogId>| l.as_ref().map_or(0, |l| l.index()) as i64;
        self.term.set(m.current_term as i64);
        self.is_leader
            .set(i64::from(m.current_leader == Some(replica.id)));
        self.has_leader.set(i64::from(m.current_leader.is_some()));
        self.commit_index.set(idx(&m.local_committed));
        self.applied_index.set(idx(&m.last_applied));
        self.last_log_index
            .set(m.last_log_index.unwrap_or(0) as i64);
        self.snapshot_index.set(idx(&m.snapshot));
        self.db_size.set(replica.store.size_on_disk() as i64);
        self.voters
            .set(m.membership_config.membership().voter_ids().count() as i64);
    }
}

#[derive(Clone)]
struct AdminState {
    replica: Replica,
    gauges: Arc<Gauges>,
    ready: Arc<AtomicBool>,
}

pub fn router(replica: Replica, ready: Arc<AtomicBool>) -> Result<Router, prometheus::Error> {
    let state = AdminState {
        replica,
        gauges: Arc::new(Gauges::new()?),
        ready,
    };
    Ok(Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state))
}

async fn metrics(State(s): State<AdminState>) -> Result<String, (StatusCode, String)> {
    s.gauges.update(&s.replica);
    let mut out = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&s.gauges.registry.gather(), &mut out)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    String::from_utf8(out).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Liveness never depends on quorum (a probe must not kill a healthy member during an
/// election); readiness does.
async fn readyz(State(s): State<AdminState>) -> (StatusCode, &'static str) {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no leader known or not caught up\n",
        )
    }
}
