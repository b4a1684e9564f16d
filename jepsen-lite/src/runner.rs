//! One test run, start to finish: start the cluster, drive clients at the requested rate
//! while the nemesis injects faults, heal, run the end checks, check the history, write
//! the reports.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::{Instant, MissedTickBehavior};

use crate::analysis::{self, Anomaly};
use crate::binaries;
use crate::db::RaftSettings;
use crate::db::etcd::{EtcdDb, EtcdOptions, find_etcd};
use crate::db::ferrokv::{FerrokvDb, FerrokvOptions};
use crate::db::local::PeerLinks;
use crate::db::{Db, DbError, DbKind};
use crate::history::{self, Op, Outcome, Recorder};
use crate::kv::KvClient;
use crate::nemesis::plan::{self, NemesisKind, Timing};
use crate::nemesis::{self, CurrentFault};
use crate::report::{self, EndChecks, Results, Validity};
use crate::workload::{Completion, Workload, WorkloadKind};

/// Everything a run needs, built once from the command line.
#[derive(Debug, Clone)]
pub struct TestOptions {
    pub db: DbKind,
    pub nodes: usize,
    pub workload: WorkloadKind,
    pub nemesis: Vec<NemesisKind>,
    pub time_limit: Duration,
    /// Target ops/s over all clients.
    pub rate: f64,
    pub concurrency: usize,
    pub seed: u64,
    pub out: PathBuf,
    /// `--fault` for `ferrokv-faulty`.
    pub inject: Option<String>,
    pub bin_dir: Option<PathBuf>,
    pub build: bool,
    /// Live keys at a time (register, append) and ops per key before moving on.
    pub keys: usize,
    pub ops_per_key: u64,
    pub timing: Timing,
    /// Least ok-rate outside fault windows (ops/s).
    pub min_rate: f64,
    /// Time after a heal that still counts as the fault (recovery).
    pub recovery_grace: Duration,
    /// How long the cluster may take to answer again after the last heal.
    pub recovery_timeout: Duration,
    pub request_timeout: Duration,
    /// Search steps per key for the linearizability checker.
    pub checker_budget: u64,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    /// Show a progress bar (only when stderr is a terminal).
    pub progress: bool,
}

impl TestOptions {
    /// The replicas' Raft settings (snapshot thresholds are each system's default).
    fn raft(&self) -> RaftSettings {
        RaftSettings {
            heartbeat_ms: self.heartbeat_ms,
            election_ms: self.election_ms,
            snapshot_entries: None,
        }
    }
}

/// Why a run could not be done (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("invalid options: {0}")]
    Options(String),
    #[error("writing reports to {path}: {source}")]
    Report {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating a work directory: {0}")]
    WorkDir(#[source] std::io::Error),
}

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    pub results: Results,
    pub summary: String,
}

impl RunOutcome {
    /// 0 valid, 1 anomaly, 2 the run could not be done (or could not decide).
    pub fn exit_code(&self) -> i32 {
        match (self.results.valid, &self.results.run_error) {
            (Validity::Invalid, _) => 1,
            (Validity::Valid, None) => 0,
            _ => 2,
        }
    }
}

/// Runs one test.
pub async fn run(opts: TestOptions) -> Result<RunOutcome, RunError> {
    validate(&opts)?;
    let work = tempfile::Builder::new()
        .prefix("jepsen-lite-")
        .tempdir()
        .map_err(RunError::WorkDir)?;
    let dir = work.path().to_path_buf();
    let dir_bins = binaries::bin_dir(opts.bin_dir.as_deref());
    match opts.db {
        DbKind::Ferrokv => {
            let name = if opts.inject.is_some() {
                "ferrokv-faulty"
            } else {
                "ferrokv"
            };
            let binary = binaries::ferrokv_binary(&dir_bins, name, opts.build)?;
            let db = FerrokvDb::new(FerrokvOptions {
                nodes: opts.nodes,
                binary,
                fault: opts.inject.clone(),
                dir,
                raft: opts.raft(),
                links: PeerLinks::Proxied,
            })
            .await?;
            run_with(db, &opts).await
        }
        DbKind::Etcd => {
            let db = EtcdDb::new(
                EtcdOptions {
                    nodes: opts.nodes,
                    binary: find_etcd(opts.bin_dir.as_deref())?,
                    dir,
                    raft: opts.raft(),
                    links: PeerLinks::Proxied,
                },
                opts.seed,
            )
            .await?;
            run_with(db, &opts).await
        }
    }
}

fn validate(opts: &TestOptions) -> Result<(), RunError> {
    if !(1..=9).contains(&opts.nodes) {
        return Err(RunError::Options(format!(
            "--nodes {} must be between 1 and 9",
            opts.nodes
        )));
    }
    if opts.concurrency == 0 || opts.rate <= 0.0 {
        return Err(RunError::Options(
            "--concurrency and --rate must be positive".into(),
        ));
    }
    if opts.db == DbKind::Etcd && opts.inject.is_some() {
        return Err(RunError::Options("--inject needs --db ferrokv".into()));
    }
    Ok(())
}

async fn run_with<D: Db>(mut db: D, opts: &TestOptions) -> Result<RunOutcome, RunError> {
    let logs = db.log_files();
    if let Err(e) = db.setup().await {
        db.teardown().await;
        // The logs say why the cluster would not start.
        let _ = report::copy_logs(&opts.out, &logs);
        return Err(e.into());
    }
    let result = drive(&mut db, opts).await;
    db.teardown().await;
    let (recorder, end_checks, end_anomalies, run_end) = result;
    analyse_and_report(
        opts,
        &recorder,
        end_checks,
        end_anomalies,
        run_end,
        &db.log_files(),
    )
}

/// Runs the clients and the nemesis for the time limit, then the end checks.
async fn drive<D: Db>(
    db: &mut D,
    opts: &TestOptions,
) -> (Arc<Recorder>, EndChecks, Vec<Anomaly>, u64) {
    let recorder = Arc::new(Recorder::new());
    let start = Instant::now();
    let workload = Arc::new(Workload::new(opts.workload, opts.keys, opts.ops_per_key));
    let stop = Arc::new(AtomicBool::new(false));
    let slots = db.slots();

    // Each client is bound to one replica, as Jepsen does: a replica that serves stale
    // data shows it to its own clients.
    let mut workers = Vec::new();
    let period = Duration::from_secs_f64(opts.concurrency as f64 / opts.rate);
    for c in 0..opts.concurrency {
        let endpoint = db.client_endpoint(slots[c % slots.len()]);
        let client = KvClient::connect(db.kind(), &[endpoint], opts.request_timeout).await;
        let (recorder, workload, stop) = (recorder.clone(), workload.clone(), stop.clone());
        let seed = opts.seed.wrapping_mul(1_000_003).wrapping_add(c as u64);
        let op_timeout = opts.request_timeout * 3;
        let concurrency = opts.concurrency as u64;
        workers.push(tokio::spawn(async move {
            let Ok(client) = client else { return };
            worker(
                c,
                concurrency,
                client,
                &recorder,
                &workload,
                &stop,
                period,
                op_timeout,
                seed,
            )
            .await;
        }));
    }

    let mut rng = StdRng::seed_from_u64(opts.seed);
    let planned = plan::schedule(&opts.nemesis, opts.time_limit, opts.timing, &mut rng);
    let current: CurrentFault = Arc::default();
    let progress = progress_bar(opts, recorder.clone(), current.clone());
    nemesis::run(db, &planned, &recorder, &mut rng, start, &current).await;
    tokio::time::sleep_until(start + opts.time_limit).await;
    stop.store(true, Ordering::Relaxed);
    let run_end = recorder.now();
    for w in workers {
        let _ = w.await;
    }
    if let Some((bar, task)) = progress {
        task.abort();
        bar.finish_and_clear();
    }

    nemesis::heal_all(db).await;
    let (end_checks, anomalies) = end_checks(db, opts, &recorder, &workload).await;
    (recorder, end_checks, anomalies, run_end)
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    id: usize,
    concurrency: u64,
    client: KvClient,
    recorder: &Recorder,
    workload: &Workload,
    stop: &AtomicBool,
    period: Duration,
    op_timeout: Duration,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut process = id as u64;
    let mut ticker = tokio::time::interval(period);
    // A slow op delays the next one instead of causing a burst to catch up.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Spread the clients' first ops over one period.
    tokio::time::sleep(period.mul_f64(rng.random::<f64>())).await;
    loop {
        ticker.tick().await;
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let op = workload.next_op(&mut rng);
        recorder.invoke(process, id, op.clone());
        let (outcome, done, error) = timed(workload, &client, op, op_timeout).await;
        recorder.complete(process, id, outcome, done, error);
        if outcome == Outcome::Info {
            // The op may still be in flight: this client continues as a new process.
            process += concurrency;
        }
    }
}

/// Runs `op` with an overall bound; a write cut short has an unknown outcome.
async fn timed(workload: &Workload, client: &KvClient, op: Op, limit: Duration) -> Completion {
    match tokio::time::timeout(limit, workload.run(client, op.clone())).await {
        Ok(c) => c,
        Err(_) => {
            let outcome = if op.is_read() {
                Outcome::Fail
            } else {
                Outcome::Info
            };
            (outcome, op, Some(format!("no answer within {limit:?}")))
        }
    }
}

fn progress_bar(
    opts: &TestOptions,
    recorder: Arc<Recorder>,
    current: CurrentFault,
) -> Option<(indicatif::ProgressBar, tokio::task::JoinHandle<()>)> {
    if !opts.progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(opts.time_limit.as_secs());
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len}s {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let b = bar.clone();
    let start = std::time::Instant::now();
    let task = tokio::spawn(async move {
        loop {
            let (ok, fail, info) = recorder.counts();
            let fault = current
                .lock()
                .ok()
                .and_then(|c| c.clone())
                .unwrap_or_else(|| "-".into());
            b.set_position(start.elapsed().as_secs());
            b.set_message(format!("ok {ok} fail {fail} info {info} | fault: {fault}"));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    Some((bar, task))
}

/// The client id of operations issued by the end checks (their own timeline lane).
fn final_client(opts: &TestOptions) -> usize {
    opts.concurrency
}

/// After the last heal: the cluster answers again within the bound, a final write
/// succeeds, the workload's final reads run, and every replica's state hash matches at
/// one revision.
async fn end_checks<D: Db>(
    db: &D,
    opts: &TestOptions,
    recorder: &Recorder,
    workload: &Workload,
) -> (EndChecks, Vec<Anomaly>) {
    let mut checks = EndChecks::default();
    let mut anomalies = Vec::new();
    let endpoints: Vec<String> = db.slots().iter().map(|s| db.client_endpoint(*s)).collect();
    let healed = Instant::now();
    let deadline = healed + opts.recovery_timeout;
    let client = match KvClient::connect(db.kind(), &endpoints, opts.request_timeout).await {
        Ok(c) => c,
        Err(e) => {
            anomalies.push(Anomaly::UnavailableAfterHeal {
                waited_ms: 0,
                last_error: e.message,
            });
            return (checks, anomalies);
        }
    };

    // 1. The cluster answers again.
    loop {
        let last_error = match client.get("jepsen-lite/final").await {
            Ok(_) => {
                checks.recovered_after_ms = Some(healed.elapsed().as_millis() as u64);
                break;
            }
            Err(e) => e.message,
        };
        if Instant::now() >= deadline {
            anomalies.push(Anomaly::UnavailableAfterHeal {
                waited_ms: opts.recovery_timeout.as_millis() as u64,
                last_error,
            });
            return (checks, anomalies);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 2. A final write succeeds (recorded in the history, on the end checks' lane).
    let lane = final_client(opts);
    let mut process = (lane as u64) << 32;
    let value = u64::MAX / 2 + opts.seed % 1000;
    loop {
        let op = Op::Write {
            key: "jepsen-lite/final".into(),
            value,
        };
        recorder.invoke(process, lane, op.clone());
        let (outcome, done, error) = timed(workload, &client, op, opts.request_timeout * 3).await;
        recorder.complete(process, lane, outcome, done, error.clone());
        process += 1;
        if outcome == Outcome::Ok {
            checks.final_write_ok = true;
            break;
        }
        if Instant::now() >= deadline {
            anomalies.push(Anomaly::FinalWriteFailed {
                error: error.unwrap_or_default(),
            });
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 3. The workload's final reads, retried until they succeed.
    for op in workload.final_ops() {
        let read_deadline = Instant::now() + opts.recovery_timeout;
        loop {
            recorder.invoke(process, lane, op.clone());
            let (outcome, done, error) =
                timed(workload, &client, op.clone(), opts.request_timeout * 3).await;
            recorder.complete(process, lane, outcome, done, error);
            process += 1;
            if outcome == Outcome::Ok || Instant::now() >= read_deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // 4. State hashes at one revision: poll until every replica reports the same one.
    let slots = db.slots().len();
    let hash_deadline = Instant::now() + opts.recovery_timeout;
    loop {
        let hashes = db.state_hashes().await;
        let same_revision =
            hashes.len() == slots && hashes.windows(2).all(|w| w[0].revision == w[1].revision);
        if same_revision {
            let equal = hashes.windows(2).all(|w| w[0].hash == w[1].hash);
            checks.hashes_equal = Some(equal);
            if !equal {
                anomalies.push(Anomaly::StateHashMismatch {
                    revision: hashes.first().map_or(0, |h| h.revision),
                    hashes: hashes.clone(),
                });
            }
            checks.state_hashes = hashes;
            break;
        }
        if Instant::now() >= hash_deadline {
            anomalies.push(Anomaly::ReplicasDidNotConverge {
                hashes: hashes.clone(),
            });
            checks.state_hashes = hashes;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    (checks, anomalies)
}

fn analyse_and_report(
    opts: &TestOptions,
    recorder: &Recorder,
    end_checks: EndChecks,
    end_anomalies: Vec<Anomaly>,
    run_end: u64,
    logs: &[(String, PathBuf)],
) -> Result<RunOutcome, RunError> {
    let events = recorder.snapshot();
    let ops = history::operations(&events);
    let faults = history::fault_windows(&events);
    let check = analysis::check(opts.workload, &ops, opts.checker_budget);
    let rates = analysis::rates(
        &ops,
        &faults,
        opts.concurrency,
        run_end,
        u64::try_from(opts.recovery_grace.as_nanos()).unwrap_or(u64::MAX),
        opts.rate,
        opts.min_rate,
    );
    let (counts, counts_by_op) = analysis::counts(&ops);
    let mut anomalies = check.anomalies.clone();
    anomalies.extend(end_anomalies);
    let unknown = check.unknown.clone();
    let valid = if !anomalies.is_empty() {
        Validity::Invalid
    } else if !unknown.is_empty() {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    let run_error = (rates.ok_quiet < opts.min_rate).then(|| {
        format!(
            "achieved {:.1} ok ops/s outside fault windows, below the floor of {:.1}/s: too little traffic to check anything",
            rates.ok_quiet, opts.min_rate
        )
    });
    let results = Results {
        valid,
        run_error,
        db: opts.db,
        inject: opts.inject.clone(),
        nodes: opts.nodes,
        workload: opts.workload,
        nemesis: opts
            .nemesis
            .iter()
            .map(|k| format!("{k:?}").to_lowercase())
            .collect(),
        seed: opts.seed,
        time_limit_secs: opts.time_limit.as_secs(),
        concurrency: opts.concurrency,
        counts,
        counts_by_op,
        anomalies,
        unknown,
        check,
        faults,
        rates,
        end_checks,
    };
    report::write_all(&opts.out, &events, &results, &ops, opts.concurrency, logs).map_err(
        |source| RunError::Report {
            path: opts.out.clone(),
            source,
        },
    )?;
    let summary = report::summary(&results);
    Ok(RunOutcome { results, summary })
}
