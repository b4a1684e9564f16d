//! Readiness: the gRPC health service (what Kubernetes probes speak) and the flag /readyz
//! reports, both SERVING only while this replica knows a leader and has applied what it
//! knows to be committed.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use openraft::async_runtime::watch::WatchReceiver;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::replica::Replica;

/// Services whose health is reported; "" is the whole server, as probes ask by default.
const SERVICES: [&str; 2] = ["", "ferrokv.v1.KV"];

/// Follows Raft metrics and keeps the health service and `ready` in step with them.
pub async fn track(replica: Replica, reporter: HealthReporter, ready: Arc<AtomicBool>) {
    let mut rx = replica.raft.metrics();
    let mut last = None;
    loop {
        let now = replica.is_ready();
        if last != Some(now) {
            ready.store(now, Ordering::Relaxed);
            let status = if now {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for s in SERVICES {
                reporter.set_service_status(s, status).await;
            }
            tracing::info!(ready = now, leader = ?replica.leader(), "readiness changed");
            last = Some(now);
        }
        if rx.changed().await.is_err() {
            for s in SERVICES {
                reporter
                    .set_service_status(s, ServingStatus::NotServing)
                    .await;
            }
            ready.store(false, Ordering::Relaxed);
            return;
        }
    }
}
