//! The load generator, the same for both systems: N closed-loop clients (each sends its
//! next request when the previous one is answered), latencies into HDR histograms.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrokv_client::ReadOptions;
use hdrhistogram::Histogram;

use super::{BenchError, BenchWorkload};
use crate::db::DbKind;

/// Latencies are recorded in microseconds, 1 µs to 10 min, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)] // constant bounds; no input can make this fail
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .expect("1 µs..10 min at 3 digits is a valid histogram")
}

/// One benchmark client: its own connection(s) to the cluster.
pub(crate) enum BenchClient {
    Ferrokv(ferrokv_client::Client),
    // Boxed: etcd's client is a few KiB, ferrokv's a pointer.
    Etcd(Box<etcd_client::Client>),
}

/// Key `i` of the benchmark's key space.
pub(crate) fn key(i: usize) -> String {
    format!("bench/{i:08}")
}

impl BenchClient {
    /// Connects to `endpoints` (`host:port`, the client's preferred replica first).
    ///
    /// ferrokv's exactly-once sessions are turned off: etcd's puts are plain puts, and a
    /// session costs ferrokv a session lease per write. Member discovery is off too (the
    /// endpoints are the whole cluster).
    pub(crate) async fn connect(
        kind: DbKind,
        endpoints: &[String],
        timeout: Duration,
    ) -> Result<BenchClient, BenchError> {
        match kind {
            DbKind::Ferrokv => ferrokv_client::Client::builder(endpoints.to_vec())
                .dial_timeout(Duration::from_secs(1))
                .request_timeout(timeout)
                .exactly_once(false)
                .member_refresh_interval(None)
                .connect()
                .map(BenchClient::Ferrokv)
                .map_err(|e| BenchError::client("connect", e)),
            DbKind::Etcd => crate::kv::connect_etcd(endpoints, timeout)
                .await
                .map(|c| BenchClient::Etcd(Box::new(c)))
                .map_err(|e| BenchError::client("connect", e)),
        }
    }

    pub(crate) async fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        match self {
            BenchClient::Ferrokv(c) => c
                .put(key, value, ferrokv_client::PutOptions::default())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            BenchClient::Etcd(c) => c
                .put(key, value, None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }

    pub(crate) async fn get(&mut self, key: String, serializable: bool) -> Result<(), String> {
        match self {
            BenchClient::Ferrokv(c) => {
                let opts = ReadOptions { serializable };
                c.get(key, opts)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            BenchClient::Etcd(c) => {
                let opts = serializable.then(|| etcd_client::GetOptions::new().with_serializable());
                c.get(key, opts)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// If the key exists, overwrite it: one compare, one put.
    pub(crate) async fn txn(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        match self {
            BenchClient::Ferrokv(c) => {
                use ferrokv_client::txn;
                let request = txn::Txn::new()
                    .when([txn::exists(key.clone(), true)])
                    .and_then([txn::put(key, value)]);
                c.txn(request).await.map(|_| ()).map_err(|e| e.to_string())
            }
            BenchClient::Etcd(c) => {
                use etcd_client::{Compare, CompareOp, Txn, TxnOp};
                let request = Txn::new()
                    .when([Compare::version(key.clone(), CompareOp::Greater, 0)])
                    .and_then([TxnOp::put(key, value, None)]);
                c.txn(request).await.map(|_| ()).map_err(|e| e.to_string())
            }
        }
    }

    /// Puts every key of `keys` with `value` in one transaction.
    pub(crate) async fn put_all(
        &mut self,
        keys: impl Iterator<Item = String>,
        value: &[u8],
    ) -> Result<(), String> {
        match self {
            BenchClient::Ferrokv(c) => {
                use ferrokv_client::txn;
                let request = txn::Txn::new().and_then(keys.map(|k| txn::put(k, value.to_vec())));
                c.txn(request).await.map(|_| ()).map_err(|e| e.to_string())
            }
            BenchClient::Etcd(c) => {
                use etcd_client::{Txn, TxnOp};
                let request = Txn::new().and_then(
                    keys.map(|k| TxnOp::put(k, value.to_vec(), None))
                        .collect::<Vec<_>>(),
                );
                c.txn(request).await.map(|_| ()).map_err(|e| e.to_string())
            }
        }
    }

    /// One operation of `workload` on a random key.
    async fn op(
        &mut self,
        workload: BenchWorkload,
        keys: usize,
        value: &[u8],
    ) -> Result<(), String> {
        let k = key(rand::random_range(0..keys.max(1)));
        match workload {
            BenchWorkload::Put => self.put(k, value.to_vec()).await,
            BenchWorkload::Get => self.get(k, false).await,
            BenchWorkload::GetSerializable => self.get(k, true).await,
            BenchWorkload::Txn => self.txn(k, value.to_vec()).await,
            BenchWorkload::Mixed => {
                if rand::random_bool(0.5) {
                    self.put(k, value.to_vec()).await
                } else {
                    self.get(k, false).await
                }
            }
        }
    }
}

/// What one phase measured.
pub(crate) struct PhaseResult {
    pub(crate) histogram: Histogram<u64>,
    pub(crate) errors: u64,
    /// The first few distinct error messages, to say what went wrong.
    pub(crate) error_samples: Vec<String>,
    pub(crate) elapsed: Duration,
}

/// Live counters a progress bar can show.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) ok: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// Runs `clients` closed-loop for `duration`. Only operations answered before the end
/// count; one still in flight at the end is awaited (so it cannot overlap the next
/// phase) and dropped. Hands the clients back.
pub(crate) async fn run_phase(
    clients: Vec<BenchClient>,
    workload: BenchWorkload,
    keys: usize,
    value: Arc<Vec<u8>>,
    duration: Duration,
    counters: Arc<Counters>,
) -> (Vec<BenchClient>, PhaseResult) {
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::with_capacity(clients.len());
    for mut client in clients {
        let value = value.clone();
        let counters = counters.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = new_histogram();
            let mut errors = 0u64;
            let mut samples = Vec::new();
            while Instant::now() < end {
                let sent = Instant::now();
                let result = client.op(workload, keys, &value).await;
                let answered = Instant::now();
                if answered > end {
                    break;
                }
                match result {
                    Ok(()) => {
                        let us = u64::try_from((answered - sent).as_micros()).unwrap_or(u64::MAX);
                        hist.saturating_record(us.max(1));
                        counters.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors += 1;
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        if samples.len() < 3 {
                            samples.push(e);
                        }
                    }
                }
            }
            (client, hist, errors, samples)
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    let mut result = PhaseResult {
        histogram: new_histogram(),
        errors: 0,
        error_samples: Vec::new(),
        elapsed: duration,
    };
    for task in tasks {
        match task.await {
            Ok((client, hist, errors, samples)) => {
                out.push(client);
                let _ = result.histogram.add(&hist);
                result.errors += errors;
                for s in samples {
                    if result.error_samples.len() < 5 && !result.error_samples.contains(&s) {
                        result.error_samples.push(s);
                    }
                }
            }
            Err(e) => {
                result.errors += 1;
                result
                    .error_samples
                    .push(format!("client task failed: {e}"));
            }
        }
    }
    (out, result)
}

/// Writes keys `0..keys` (each with `value`), spread over the clients; a key is tried
/// three times before the preload fails.
pub(crate) async fn preload(
    clients: Vec<BenchClient>,
    keys: usize,
    value: Arc<Vec<u8>>,
    done: Arc<Counters>,
) -> (Vec<BenchClient>, Result<(), BenchError>) {
    let n = clients.len().max(1);
    let mut tasks = Vec::with_capacity(n);
    for (c, mut client) in clients.into_iter().enumerate() {
        let value = value.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            for i in (c..keys).step_by(n) {
                let mut last = None;
                for _ in 0..3 {
                    match client.put(key(i), value.to_vec()).await {
                        Ok(()) => {
                            last = None;
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                if let Some(e) = last {
                    return (
                        client,
                        Err(BenchError::client(format!("preload {}", key(i)), e)),
                    );
                }
                done.ok.fetch_add(1, Ordering::Relaxed);
            }
            (client, Ok(()))
        }));
    }
    let mut out = Vec::with_capacity(n);
    let mut status = Ok(());
    for task in tasks {
        match task.await {
            Ok((client, r)) => {
                out.push(client);
                if status.is_ok() {
                    status = r;
                }
            }
            Err(e) => status = Err(BenchError::client("preload", e)),
        }
    }
    (out, status)
}
