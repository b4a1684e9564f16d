//! `jepsen-lite bench`: ferrokv and etcd side by side on the same machine, through the
//! same cluster drivers as `jepsen-lite test` and the same load generator.
//!
//! A run: for each db × workload, a fresh cluster ([`crate::db`]) → every client
//! connection opened (one client object per benchmark client) → preload (read and txn
//! workloads) → for each client count, in increasing order: warm-up, then the measured
//! window ([`load`]) with the replicas' CPU read from `/proc` before and after
//! ([`proc_stats`]) → teardown. Then `bench.json`, `bench.md` ([`report`]) and
//! `bench.svg` ([`plot`]) in the output directory.

pub mod load;
pub mod plot;
pub(crate) mod proc_stats;
pub mod recovery;
pub mod report;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use load::{BenchClient, Counters};
pub use recovery::{RecoveryOptions, RecoveryResult};
pub use report::BenchResult;

use crate::binaries;
use crate::db::etcd::{EtcdDb, EtcdOptions, find_etcd};
use crate::db::ferrokv::{FerrokvDb, FerrokvOptions};
use crate::db::local::PeerLinks;
use crate::db::{Db, DbError, DbKind, RaftSettings};

/// What the benchmark clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchWorkload {
    /// Put a random key (of `--keys`) with a `--value-size` value.
    Put,
    /// Linearizable get of a random preloaded key.
    Get,
    /// Serializable get (served by any replica from its own state).
    GetSerializable,
    /// One compare (the key exists) and one put, on a random preloaded key.
    Txn,
    /// Half puts, half linearizable gets, on preloaded keys.
    Mixed,
}

impl BenchWorkload {
    pub fn name(self) -> &'static str {
        match self {
            BenchWorkload::Put => "put",
            BenchWorkload::Get => "get",
            BenchWorkload::GetSerializable => "get-serializable",
            BenchWorkload::Txn => "txn",
            BenchWorkload::Mixed => "mixed",
        }
    }

    fn needs_preload(self) -> bool {
        self != BenchWorkload::Put
    }
}

/// Why a benchmark could not be done.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Options(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{op}: {message}")]
    Client { op: String, message: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("drawing {path}: {message}")]
    Plot { path: PathBuf, message: String },
}

impl BenchError {
    pub(crate) fn client(op: impl Into<String>, message: impl ToString) -> BenchError {
        BenchError::Client {
            op: op.into(),
            message: message.to_string(),
        }
    }

    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }
}

/// One benchmark's configuration, built once from the command line.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub dbs: Vec<DbKind>,
    pub nodes: usize,
    pub workloads: Vec<BenchWorkload>,
    /// Client counts, run in increasing order on the same cluster.
    pub clients: Vec<usize>,
    pub duration: Duration,
    pub warmup: Duration,
    pub keys: usize,
    pub value_size: usize,
    pub out: PathBuf,
    pub bin_dir: Option<PathBuf>,
    pub build: bool,
    pub request_timeout: Duration,
    pub raft: RaftSettings,
    /// Progress bars (only ever drawn when stderr is a terminal).
    pub progress: bool,
}

impl BenchOptions {
    fn validate(&self) -> Result<(), BenchError> {
        let fail = |m: String| Err(BenchError::Options(m));
        if self.dbs.is_empty() || self.workloads.is_empty() || self.clients.is_empty() {
            return fail("--db, --workload and --clients must each name at least one".into());
        }
        if !(1..=9).contains(&self.nodes) {
            return fail(format!("--nodes {} must be between 1 and 9", self.nodes));
        }
        if self.clients.contains(&0) {
            return fail("--clients counts must be positive".into());
        }
        if self.keys == 0 {
            return fail("--keys must be positive".into());
        }
        if self.duration.is_zero() {
            return fail("--duration must be positive".into());
        }
        Ok(())
    }
}

/// Runs every db × workload × clients measurement and writes `bench.json`, `bench.md`
/// and `bench.svg` into `opts.out`.
pub async fn run(opts: &BenchOptions) -> Result<Vec<BenchResult>, BenchError> {
    opts.validate()?;
    std::fs::create_dir_all(&opts.out)
        .map_err(BenchError::io(format!("creating {}", opts.out.display())))?;
    let mut clients = opts.clients.clone();
    clients.sort_unstable();
    clients.dedup();
    let mut results = Vec::new();
    for db in &opts.dbs {
        for workload in &opts.workloads {
            let job = Job::Load {
                workload: *workload,
                clients: &clients,
            };
            if let Done::Load(rows) = on_fresh_cluster(opts, *db, job).await? {
                results.extend(rows);
            }
        }
    }
    write_outputs(opts, &results)?;
    Ok(results)
}

/// Runs the recovery measurements ([`recovery`]) for every db and writes
/// `recovery.json` and `recovery.md` into `opts.out`.
pub async fn run_recovery(
    opts: &BenchOptions,
    recovery: &RecoveryOptions,
) -> Result<Vec<RecoveryResult>, BenchError> {
    if opts.dbs.is_empty() {
        return Err(BenchError::Options("--db must name at least one".into()));
    }
    if !(2..=9).contains(&opts.nodes) || opts.keys == 0 || recovery.catchup_value_size == 0 {
        return Err(BenchError::Options(format!(
            "recovery needs 2 to 9 --nodes (got {}), positive --keys and --catchup-value-size",
            opts.nodes
        )));
    }
    std::fs::create_dir_all(&opts.out)
        .map_err(BenchError::io(format!("creating {}", opts.out.display())))?;
    let mut results = Vec::new();
    for db in &opts.dbs {
        if let Done::Recovery(r) = on_fresh_cluster(opts, *db, Job::Recovery(recovery)).await? {
            results.push(r);
        }
    }
    let json_path = opts.out.join("recovery.json");
    let json = serde_json::to_string_pretty(&results)
        .map_err(|e| BenchError::io("encoding recovery.json")(std::io::Error::other(e)))?;
    std::fs::write(&json_path, json)
        .map_err(BenchError::io(format!("writing {}", json_path.display())))?;
    let md_path = opts.out.join("recovery.md");
    std::fs::write(&md_path, recovery::markdown(&results))
        .map_err(BenchError::io(format!("writing {}", md_path.display())))?;
    Ok(results)
}

/// What to do with a fresh cluster.
enum Job<'a> {
    /// A workload at every client count.
    Load {
        workload: BenchWorkload,
        clients: &'a [usize],
    },
    Recovery(&'a RecoveryOptions),
}

enum Done {
    Load(Vec<BenchResult>),
    Recovery(RecoveryResult),
}

/// The line under `bench.md`'s title: what was run and how to read the ratios.
fn preamble(opts: &BenchOptions) -> String {
    format!(
        "{} replicas on loopback, default durability; {} s measured after {} s warm-up per row; \
         {} keys, {}-byte values; closed-loop clients. Ratios are ferrokv / etcd: above 1 \
         is better for ferrokv in ops/s, below 1 is better in latency.",
        opts.nodes,
        opts.duration.as_secs_f64(),
        opts.warmup.as_secs_f64(),
        opts.keys,
        opts.value_size
    )
}

fn write_outputs(opts: &BenchOptions, results: &[BenchResult]) -> Result<(), BenchError> {
    let json_path = opts.out.join("bench.json");
    let json = serde_json::to_string_pretty(results)
        .map_err(|e| BenchError::io("encoding bench.json")(std::io::Error::other(e)))?;
    std::fs::write(&json_path, json)
        .map_err(BenchError::io(format!("writing {}", json_path.display())))?;
    let md_path = opts.out.join("bench.md");
    std::fs::write(&md_path, report::markdown(results, &preamble(opts)))
        .map_err(BenchError::io(format!("writing {}", md_path.display())))?;
    let svg_path = opts.out.join("bench.svg");
    plot::write_svg(&svg_path, results).map_err(|message| BenchError::Plot {
        path: svg_path.clone(),
        message,
    })
}

/// Starts a cluster of `db` in a fresh directory, does `job` on it, and tears it down
/// (also when the job fails).
async fn on_fresh_cluster(
    opts: &BenchOptions,
    db: DbKind,
    job: Job<'_>,
) -> Result<Done, BenchError> {
    let work = tempfile::Builder::new()
        .prefix("jepsen-lite-bench-")
        .tempdir()
        .map_err(BenchError::io("creating the cluster's directory"))?;
    let dir = work.path().to_path_buf();
    match db {
        DbKind::Ferrokv => {
            let bin_dir = binaries::bin_dir(opts.bin_dir.as_deref());
            let binary = binaries::ferrokv_binary(&bin_dir, "ferrokv", opts.build)?;
            let cluster = FerrokvDb::new(FerrokvOptions {
                nodes: opts.nodes,
                binary,
                fault: None,
                dir: dir.clone(),
                raft: opts.raft,
                links: PeerLinks::Direct,
            })
            .await?;
            with_cluster(cluster, opts, job).await
        }
        DbKind::Etcd => {
            let cluster = EtcdDb::new(
                EtcdOptions {
                    nodes: opts.nodes,
                    binary: find_etcd(opts.bin_dir.as_deref())?,
                    dir: dir.clone(),
                    raft: opts.raft,
                    links: PeerLinks::Direct,
                },
                1,
            )
            .await?;
            with_cluster(cluster, opts, job).await
        }
    }
}

async fn with_cluster<D: Db>(
    mut cluster: D,
    opts: &BenchOptions,
    job: Job<'_>,
) -> Result<Done, BenchError> {
    let result = match cluster.setup().await {
        Ok(()) => match job {
            Job::Load { workload, clients } => bench_cluster(&cluster, opts, workload, clients)
                .await
                .map(Done::Load),
            Job::Recovery(recovery) => recovery::measure(&mut cluster, opts, recovery)
                .await
                .map(Done::Recovery),
        },
        Err(e) => Err(e.into()),
    };
    cluster.teardown().await;
    if result.is_err() {
        // The replicas' logs say why; keep them next to the results.
        for (name, path) in cluster.log_files() {
            let _ = std::fs::copy(
                &path,
                opts.out
                    .join(format!("{}-{name}.log", cluster_name(&cluster))),
            );
        }
    }
    result
}

fn cluster_name<D: Db>(cluster: &D) -> &'static str {
    match cluster.kind() {
        DbKind::Ferrokv => "ferrokv",
        DbKind::Etcd => "etcd",
    }
}

async fn bench_cluster<D: Db>(
    cluster: &D,
    opts: &BenchOptions,
    workload: BenchWorkload,
    client_counts: &[usize],
) -> Result<Vec<BenchResult>, BenchError> {
    let db = cluster.kind();
    let name = cluster_name(cluster);
    let slots = cluster.slots();
    let pids = cluster.pids();
    if pids.len() != slots.len() {
        tracing::warn!(
            found = pids.len(),
            "not every replica process was found in /proc; CPU and RSS will miss some"
        );
    }
    let endpoints: Vec<String> = slots.iter().map(|s| cluster.client_endpoint(*s)).collect();

    // Every connection is opened (and used once) before anything is measured. Client c
    // lists replica c mod n first, as `jepsen-lite test` binds clients; each client
    // library then routes as it does for its users (ferrokv: writes to the leader it
    // learns; etcd: any member, which forwards writes to the leader).
    let max_clients = client_counts.iter().copied().max().unwrap_or(1);
    let mut clients = Vec::with_capacity(max_clients);
    for c in 0..max_clients {
        let mut mine = endpoints.clone();
        mine.rotate_left(c % endpoints.len().max(1));
        clients.push(BenchClient::connect(db, &mine, opts.request_timeout).await?);
    }
    for client in &mut clients {
        client
            .get(load::key(0), true)
            .await
            .map_err(|e| BenchError::client("first request", e))?;
    }

    let value = Arc::new(vec![b'v'; opts.value_size]);
    if workload.needs_preload() {
        let counters = Arc::new(Counters::default());
        let bar = progress_bar(
            opts,
            opts.keys as u64,
            format!("{name} preload {} keys", opts.keys),
        );
        let ticker = bar.clone().map(|b| tick(b, counters.clone(), false));
        let (back, status) = load::preload(clients, opts.keys, value.clone(), counters).await;
        clients = back;
        finish(bar, ticker);
        status?;
    }

    let mut results = Vec::new();
    for &n in client_counts {
        let active: Vec<BenchClient> = clients.drain(..n.min(clients.len())).collect();
        let label = format!("{name} {} x{n}", workload.name());
        let (active, _) = phase(
            opts,
            active,
            workload,
            value.clone(),
            opts.warmup,
            &format!("{label} warm-up"),
        )
        .await;
        let cpu_before: Vec<Option<f64>> = slots
            .iter()
            .map(|s| pids.get(s).and_then(|p| proc_stats::cpu_seconds(*p)))
            .collect();
        let (active, measured) =
            phase(opts, active, workload, value.clone(), opts.duration, &label).await;
        let cpu_per_node: Vec<f64> = slots
            .iter()
            .zip(&cpu_before)
            .map(|(s, before)| {
                let after = pids.get(s).and_then(|p| proc_stats::cpu_seconds(*p));
                match (before, after) {
                    (Some(b), Some(a)) => (a - b).max(0.0),
                    _ => 0.0,
                }
            })
            .collect();
        let peak_rss_bytes = proc_stats::peak_rss_of(&pids, &slots);
        // Back in front, so the next (larger) count reuses these connections first.
        clients.splice(0..0, active);

        let lat = report::latency(&measured.histogram);
        let ops = measured.histogram.len();
        let secs = measured.elapsed.as_secs_f64();
        if measured.errors > 0 {
            tracing::warn!(db = name, workload = workload.name(), clients = n, errors = measured.errors, samples = ?measured.error_samples, "requests failed");
        }
        results.push(BenchResult {
            db,
            workload: workload.name().into(),
            clients: n,
            duration_secs: secs,
            ops,
            ops_per_sec: ops as f64 / secs,
            mean_ms: lat.mean_ms,
            p50_ms: lat.p50_ms,
            p90_ms: lat.p90_ms,
            p99_ms: lat.p99_ms,
            p999_ms: lat.p999_ms,
            max_ms: lat.max_ms,
            errors: measured.errors,
            error_samples: measured.error_samples,
            cpu_seconds: cpu_per_node.iter().sum(),
            cpu_seconds_per_node: cpu_per_node,
            peak_rss_bytes,
            latency_cdf: lat.cdf,
        });
    }
    Ok(results)
}

/// One timed phase (warm-up or measurement) with its progress bar.
async fn phase(
    opts: &BenchOptions,
    clients: Vec<BenchClient>,
    workload: BenchWorkload,
    value: Arc<Vec<u8>>,
    duration: Duration,
    label: &str,
) -> (Vec<BenchClient>, load::PhaseResult) {
    let counters = Arc::new(Counters::default());
    let bar = progress_bar(opts, duration.as_millis() as u64, label.to_string());
    let ticker = bar.clone().map(|b| tick(b, counters.clone(), true));
    let out = load::run_phase(clients, workload, opts.keys, value, duration, counters).await;
    finish(bar, ticker);
    out
}

fn progress_bar(opts: &BenchOptions, len: u64, label: String) -> Option<indicatif::ProgressBar> {
    if !opts.progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{prefix:32} [{bar:30}] {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label);
    Some(bar)
}

/// Updates `bar` every 200 ms: by elapsed milliseconds (`timed`) or by completed ops.
fn tick(
    bar: indicatif::ProgressBar,
    counters: Arc<Counters>,
    timed: bool,
) -> tokio::task::JoinHandle<()> {
    let start = std::time::Instant::now();
    tokio::spawn(async move {
        loop {
            let ok = counters.ok.load(Ordering::Relaxed);
            let errors = counters.errors.load(Ordering::Relaxed);
            if timed {
                bar.set_position(start.elapsed().as_millis() as u64);
                let rate = ok as f64 / start.elapsed().as_secs_f64().max(0.001);
                bar.set_message(format!("{rate:.0} ops/s, {errors} errors"));
            } else {
                bar.set_position(ok);
                bar.set_message(format!("{ok} written"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

fn finish(bar: Option<indicatif::ProgressBar>, ticker: Option<tokio::task::JoinHandle<()>>) {
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}
