//! `jepsen-lite recovery`: how long a replica takes to come back, for ferrokv and etcd
//! side by side on the same drivers.
//!
//! Per db, on one fresh cluster:
//! 1. **load** `--keys` keys of `--value-size` bytes through transactions of
//!    [`KEYS_PER_TXN`] puts from 16 clients;
//! 2. **restart**: kill -9 a follower and start it again on its data dir; the time from
//!    the start to the first linearizable Get that replica answers (it has reopened its
//!    store, rejoined, and applied up to the read index);
//! 3. **catch-up**: write `--catchup-bytes` more (in `--catchup-value-size` values), then
//!    wipe a follower's volume and bring it back as a new member (a snapshot transfer of
//!    everything, then the log); the time from its start to its promotion to voter, and
//!    to the first linearizable Get of the last key written that it answers itself.
//!
//! Then every replica's state hash must be equal (the new one holds everything), and
//! each replica's peak RSS is read before the cluster is torn down.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::load::{BenchClient, Counters, key};
use super::{BenchError, BenchOptions, proc_stats};
use crate::db::{Db, DbKind, wait_for};

/// Puts per loading transaction: etcd's and ferrokv's default --max-txn-ops.
pub const KEYS_PER_TXN: usize = 128;
/// Concurrent loading clients.
const LOADERS: usize = 16;
/// How long a restarted or re-added replica may take before the run fails.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(600);

/// What the recovery measurements need beyond [`BenchOptions`].
#[derive(Debug, Clone)]
pub struct RecoveryOptions {
    /// Bytes written before the catch-up measurement, on top of the loaded keys.
    pub catchup_bytes: u64,
    pub catchup_value_size: usize,
}

/// One db's recovery measurements (one object of `recovery.json`).
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryResult {
    pub db: DbKind,
    pub keys: usize,
    pub value_size: usize,
    /// Seconds to load the keys.
    pub load_secs: f64,
    /// kill -9 of a follower, then start → its first linearizable Get.
    pub restart_secs: f64,
    /// Bytes of values in the cluster when the wiped replica comes back.
    pub catchup_bytes: u64,
    /// Seconds to write the catch-up data.
    pub catchup_load_secs: f64,
    /// A wiped follower's start as a new member → promoted to voter.
    pub promote_secs: f64,
    /// The same start → the first linearizable Get of the last key it answers.
    pub catchup_secs: f64,
    /// Peak resident set of each replica at the end (slot order), bytes.
    pub peak_rss_bytes: Vec<u64>,
}

/// Loads, restarts and re-adds on `cluster` (already set up).
pub(crate) async fn measure<D: Db>(
    cluster: &mut D,
    opts: &BenchOptions,
    recovery: &RecoveryOptions,
) -> Result<RecoveryResult, BenchError> {
    let db = cluster.kind();
    let endpoints: Vec<String> = cluster
        .slots()
        .iter()
        .map(|s| cluster.client_endpoint(*s))
        .collect();

    let load_secs = load(&endpoints, db, 0, opts.keys, opts.value_size, opts).await?;

    let restarted = a_follower(cluster).await?;
    cluster.kill(restarted).await?;
    let started = Instant::now();
    cluster.start(restarted).await?;
    let endpoint = cluster.client_endpoint(restarted);
    serves_linearizable_read(db, &endpoint, &key(opts.keys - 1), opts).await?;
    let restart_secs = started.elapsed().as_secs_f64();

    let catchup_keys = usize::try_from(recovery.catchup_bytes)
        .unwrap_or(usize::MAX)
        .div_ceil(recovery.catchup_value_size.max(1));
    let catchup_load_secs = load(
        &endpoints,
        db,
        opts.keys,
        catchup_keys,
        recovery.catchup_value_size,
        opts,
    )
    .await?;
    let catchup_bytes =
        (opts.keys * opts.value_size + catchup_keys * recovery.catchup_value_size) as u64;

    let wiped = a_follower(cluster).await?;
    cluster.wipe(wiped).await?;
    let started = Instant::now();
    // Starts the replica empty, as a learner, and returns once it is a voter.
    cluster.add_member(wiped).await?;
    let promote_secs = started.elapsed().as_secs_f64();
    let last_key = key(opts.keys + catchup_keys - 1);
    serves_linearizable_read(db, &cluster.client_endpoint(wiped), &last_key, opts).await?;
    let catchup_secs = started.elapsed().as_secs_f64();
    same_state_everywhere(cluster).await?;

    let pids = cluster.pids();
    let peak_rss_bytes = proc_stats::peak_rss_of(&pids, &cluster.slots());
    Ok(RecoveryResult {
        db,
        keys: opts.keys,
        value_size: opts.value_size,
        load_secs,
        restart_secs,
        catchup_bytes,
        catchup_load_secs,
        promote_secs,
        catchup_secs,
        peak_rss_bytes,
    })
}

/// Every replica reports the same state hash at the same revision (retried while the
/// replicas settle on one revision).
async fn same_state_everywhere<D: Db>(cluster: &D) -> Result<(), BenchError> {
    let n = cluster.slots().len();
    let mut last = Vec::new();
    for _ in 0..20 {
        last = cluster.state_hashes().await;
        let agree = last.len() == n
            && last
                .windows(2)
                .all(|w| (w[0].revision, w[0].hash) == (w[1].revision, w[1].hash));
        if agree {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(BenchError::client(
        "comparing state hashes after the catch-up",
        format!("replicas disagree: {last:?}"),
    ))
}

/// A replica that is not the leader.
async fn a_follower<D: Db>(cluster: &D) -> Result<usize, BenchError> {
    let leader = wait_for(
        "a leader",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || cluster.leader(),
    )
    .await?;
    cluster
        .slots()
        .into_iter()
        .find(|s| *s != leader)
        .ok_or_else(|| BenchError::Options("--recovery needs at least 2 nodes".into()))
}

/// Polls `endpoint` alone with linearizable Gets of `key` until one succeeds.
async fn serves_linearizable_read(
    db: DbKind,
    endpoint: &str,
    key: &str,
    opts: &BenchOptions,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    let mut last = String::from("never connected");
    while Instant::now() < deadline {
        match BenchClient::connect(db, &[endpoint.to_string()], opts.request_timeout).await {
            Ok(mut client) => match client.get(key.to_string(), false).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(BenchError::client(
        format!("restarted replica {endpoint} answering a linearizable read"),
        last,
    ))
}

/// Writes keys `first..first + count` with `value_size`-byte values, [`KEYS_PER_TXN`]
/// per transaction from [`LOADERS`] clients; returns the seconds it took.
async fn load(
    endpoints: &[String],
    db: DbKind,
    first: usize,
    count: usize,
    value_size: usize,
    opts: &BenchOptions,
) -> Result<f64, BenchError> {
    let value = Arc::new(vec![b'v'; value_size]);
    let batches: Vec<(usize, usize)> = (first..first + count)
        .step_by(KEYS_PER_TXN)
        .map(|start| (start, (start + KEYS_PER_TXN).min(first + count)))
        .collect();
    let batches = Arc::new(batches);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(Counters::default());
    let bar = super::progress_bar(
        opts,
        count as u64,
        format!("{} load {count} x {value_size} B", db_name(db)),
    );
    let ticker = bar.clone().map(|b| super::tick(b, done.clone(), false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..LOADERS {
        let mut mine = endpoints.to_vec();
        mine.rotate_left(c % endpoints.len().max(1));
        let mut client = BenchClient::connect(db, &mine, opts.request_timeout).await?;
        let (batches, next, done, value) =
            (batches.clone(), next.clone(), done.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((start, end)) = batches.get(i).copied() else {
                    return Ok(());
                };
                let mut last = None;
                for _ in 0..3 {
                    match client.put_all((start..end).map(key), &value).await {
                        Ok(()) => {
                            last = None;
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                if let Some(e) = last {
                    return Err(BenchError::client(format!("loading {}", key(start)), e));
                }
                done.ok.fetch_add((end - start) as u64, Ordering::Relaxed);
            }
        }));
    }
    let mut status = Ok(());
    for task in tasks {
        let r = task
            .await
            .unwrap_or_else(|e| Err(BenchError::client("loader", e)));
        if status.is_ok() {
            status = r;
        }
    }
    super::finish(bar, ticker);
    status.map(|()| started.elapsed().as_secs_f64())
}

fn db_name(db: DbKind) -> &'static str {
    match db {
        DbKind::Ferrokv => "ferrokv",
        DbKind::Etcd => "etcd",
    }
}

/// `recovery.md`: one row per db, and ferrokv/etcd ratios when both ran.
pub fn markdown(results: &[RecoveryResult]) -> String {
    use std::fmt::Write as _;
    let mut s = String::from("# jepsen-lite recovery\n\n");
    let _ = writeln!(
        s,
        "Restart: kill -9 of a follower, then start → its first linearizable Get. Catch-up: a \
         follower's volume wiped, the replica started empty as a new member → promoted to \
         voter, and → its first linearizable Get of the last key written.\n"
    );
    s.push_str(
        "| db | keys | load s | restart s | catch-up data | promoted s | catch-up s | peak RSS per replica |\n",
    );
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---|\n");
    for r in results {
        let rss: Vec<String> = r
            .peak_rss_bytes
            .iter()
            .map(|b| format!("{} MiB", b >> 20))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} × {} B | {:.1} | {:.2} | {} MiB | {:.1} | {:.1} | {} |",
            db_name(r.db),
            r.keys,
            r.value_size,
            r.load_secs,
            r.restart_secs,
            r.catchup_bytes >> 20,
            r.promote_secs,
            r.catchup_secs,
            rss.join(", ")
        );
    }
    let find = |db| results.iter().find(|r| r.db == db);
    if let (Some(f), Some(e)) = (find(DbKind::Ferrokv), find(DbKind::Etcd)) {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        let _ = writeln!(
            s,
            "\nferrokv / etcd (below 1 is faster for ferrokv): restart {:.2}×, catch-up {:.2}×",
            ratio(f.restart_secs, e.restart_secs),
            ratio(f.catchup_secs, e.catchup_secs)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(db: DbKind, restart_secs: f64, catchup_secs: f64) -> RecoveryResult {
        RecoveryResult {
            db,
            keys: 1000,
            value_size: 100,
            load_secs: 1.0,
            restart_secs,
            catchup_bytes: 3 << 20,
            catchup_load_secs: 2.0,
            promote_secs: catchup_secs / 2.0,
            catchup_secs,
            peak_rss_bytes: vec![64 << 20, 65 << 20, 66 << 20],
        }
    }

    #[test]
    fn the_table_has_a_row_per_db_and_the_ratios() {
        let md = markdown(&[
            result(DbKind::Ferrokv, 0.5, 3.0),
            result(DbKind::Etcd, 1.0, 2.0),
        ]);
        assert!(
            md.contains(
                "| ferrokv | 1000 × 100 B | 1.0 | 0.50 | 3 MiB | 1.5 | 3.0 | 64 MiB, 65 MiB, 66 MiB |"
            ),
            "{md}"
        );
        assert!(md.contains("| etcd |"), "{md}");
        assert!(md.contains("restart 0.50×, catch-up 1.50×"), "{md}");
        assert!(!markdown(&[result(DbKind::Etcd, 1.0, 1.0)]).contains("ferrokv / etcd"));
    }
}
