//! The command line: `jepsen-lite test ...` runs a test, `jepsen-lite check ...` re-checks
//! a recorded history, `jepsen-lite bench ...` and `jepsen-lite recovery ...` measure
//! ferrokv against etcd. Parsed once into [`crate::runner::TestOptions`] or
//! [`crate::bench::BenchOptions`] (+ [`crate::bench::RecoveryOptions`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::bench::{BenchOptions, BenchWorkload, RecoveryOptions};
use crate::db::{DbKind, RaftSettings};
use crate::nemesis::plan::{NemesisKind, Timing};
use crate::runner::TestOptions;
use crate::workload::WorkloadKind;

#[derive(Debug, Parser)]
#[command(
    name = "jepsen-lite",
    about = "Starts a real cluster, drives concurrent clients, injects faults, records the history and checks it.\n\
             Exit status: 0 valid, 1 an anomaly was found, 2 the run could not be done (or could not decide)."
)]
pub struct Cli {
    /// Harness log filter (tracing syntax), printed to stderr.
    #[arg(long, default_value = "warn", global = true)]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a test against a fresh local cluster.
    Test(TestArgs),
    /// Check a recorded history.jsonl again (no cluster).
    Check(CheckArgs),
    /// Measure ferrokv and etcd side by side: throughput, latency, CPU, RSS.
    Bench(BenchArgs),
    /// Measure ferrokv and etcd side by side: restart of a replica holding the loaded
    /// keys, catch-up of a replica whose volume was lost.
    Recovery(RecoveryArgs),
}

/// A fault the `ferrokv-faulty` build can be told to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Inject {
    /// Linearizable reads served from local state without a read index.
    StaleRead,
    /// The leader acknowledges a write once in its own log, before commit.
    EarlyAck,
}

impl Inject {
    fn name(self) -> &'static str {
        match self {
            Inject::StaleRead => "stale-read",
            Inject::EarlyAck => "early-ack",
        }
    }
}

#[derive(Debug, Args)]
pub struct TestArgs {
    #[arg(long, value_enum, default_value_t = DbKind::Ferrokv)]
    pub db: DbKind,
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    #[arg(long, value_enum, default_value_t = WorkloadKind::Register)]
    pub workload: WorkloadKind,
    /// Comma list of none, kill, pause, partition, wipe, member, all.
    #[arg(long, default_value = "none")]
    pub nemesis: String,
    /// Seconds of workload (the end checks come after).
    #[arg(long, default_value_t = 60)]
    pub time_limit: u64,
    /// Target operations per second, over all clients.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Concurrent clients; client i talks to replica i mod nodes.
    #[arg(long, default_value_t = 6)]
    pub concurrency: usize,
    /// Seed of every random choice (schedule, targets, ops): same seed, same schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Directory for history.jsonl, results.json, summary.txt, timeline.html, logs/.
    #[arg(long, default_value = "jepsen-lite-out")]
    pub out: PathBuf,
    /// Run ferrokv-faulty with this fault (the harness must catch it).
    #[arg(long, value_enum)]
    pub inject: Option<Inject>,
    /// Directory of ferrokv / ferrokv-faulty (default: next to this executable).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Build missing ferrokv binaries with cargo.
    #[arg(long)]
    pub build: bool,
    /// Keys live at a time (register, append).
    #[arg(long, default_value_t = 4)]
    pub keys: usize,
    /// Operations per key before the workload moves to a fresh key (bounds checking cost).
    #[arg(long, default_value_t = 300)]
    pub ops_per_key: u64,
    /// Quiet seconds before the first fault.
    #[arg(long, default_value_t = 2.0)]
    pub first_fault_secs: f64,
    /// Seconds each fault lasts.
    #[arg(long, default_value_t = 4.0)]
    pub fault_secs: f64,
    /// Quiet seconds between faults.
    #[arg(long, default_value_t = 3.0)]
    pub quiet_secs: f64,
    /// Least ok-rate (ops/s) outside fault windows; default a tenth of --rate.
    #[arg(long)]
    pub min_rate: Option<f64>,
    /// Seconds after each heal still counted as the fault when measuring the rate.
    #[arg(long, default_value_t = 2.0)]
    pub recovery_grace_secs: f64,
    /// Seconds the cluster may take to answer again after the last heal.
    #[arg(long, default_value_t = 30.0)]
    pub recovery_timeout_secs: f64,
    /// Client request timeout in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub request_timeout_ms: u64,
    /// Linearizability search steps per key before the verdict is "unknown".
    #[arg(long, default_value_t = 5_000_000)]
    pub checker_budget: u64,
    #[arg(long, default_value_t = 100)]
    pub heartbeat_ms: u64,
    #[arg(long, default_value_t = 600)]
    pub election_ms: u64,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The history.jsonl to check.
    pub history: PathBuf,
    #[arg(long, value_enum)]
    pub workload: WorkloadKind,
    #[arg(long, default_value_t = 5_000_000)]
    pub checker_budget: u64,
}

/// What `bench` and `recovery` share: the systems, their clusters, where results go.
#[derive(Debug, Args)]
pub struct SideBySideArgs {
    /// Comma list of systems to measure, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ferrokv,etcd"
    )]
    pub db: Vec<DbKind>,
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Directory for the results.
    #[arg(long, default_value = "jepsen-lite-bench")]
    pub out: PathBuf,
    /// Directory of the ferrokv binary (and etcd, if there); default next to this
    /// executable, which is a debug build under `cargo build`: use release binaries for
    /// numbers that mean anything.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Build a missing ferrokv binary with cargo.
    #[arg(long)]
    pub build: bool,
    /// Client request timeout in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub request_timeout_ms: u64,
    /// Raft heartbeat of both systems (etcd's default).
    #[arg(long, default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// Election timeout of both systems (etcd's default).
    #[arg(long, default_value_t = 1000)]
    pub election_ms: u64,
    /// No progress bars even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

/// `jepsen-lite bench`: for real numbers, point --bin-dir at release binaries.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub common: SideBySideArgs,
    /// Comma list of put, get, get-serializable, txn, mixed.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "put")]
    pub workload: Vec<BenchWorkload>,
    /// Comma list of concurrent closed-loop client counts.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub clients: Vec<usize>,
    /// Measured seconds per db x workload x clients.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Unmeasured seconds before each measurement.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Size of the key space (preloaded for every workload but put).
    #[arg(long, default_value_t = 1000)]
    pub keys: usize,
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
}

/// `jepsen-lite recovery`: restart and catch-up times, side by side.
#[derive(Debug, Args)]
pub struct RecoveryArgs {
    #[command(flatten)]
    pub common: SideBySideArgs,
    /// Keys loaded before a follower is killed and restarted.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: usize,
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Bytes of values written before a follower's volume is wiped (on top of the keys).
    #[arg(long, default_value_t = 1 << 30)]
    pub catchup_bytes: u64,
    /// Value size of the catch-up data.
    #[arg(long, default_value_t = 4096)]
    pub catchup_value_size: usize,
    /// Log entries between snapshots, for both systems (ferrokv --snapshot-entries, etcd
    /// --snapshot-count): low enough that the wiped replica catches up from a snapshot,
    /// not from the log.
    #[arg(long, default_value_t = 1000)]
    pub snapshot_entries: u64,
}

impl SideBySideArgs {
    fn options(
        &self,
        keys: usize,
        value_size: usize,
        load: Option<&BenchArgs>,
        snapshot_entries: Option<u64>,
    ) -> Result<BenchOptions, String> {
        Ok(BenchOptions {
            dbs: self.db.clone(),
            nodes: self.nodes,
            workloads: load.map(|l| l.workload.clone()).unwrap_or_default(),
            clients: load.map(|l| l.clients.clone()).unwrap_or_default(),
            duration: secs(load.map_or(0.0, |l| l.duration), "duration")?,
            warmup: secs(load.map_or(0.0, |l| l.warmup), "warmup")?,
            keys,
            value_size,
            out: self.out.clone(),
            bin_dir: self.bin_dir.clone(),
            build: self.build,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            raft: RaftSettings {
                heartbeat_ms: self.heartbeat_ms,
                election_ms: self.election_ms,
                snapshot_entries,
            },
            progress: !self.no_progress,
        })
    }
}

impl BenchArgs {
    /// The benchmark's configuration.
    pub fn options(&self) -> Result<BenchOptions, String> {
        self.common
            .options(self.keys, self.value_size, Some(self), None)
    }
}

impl RecoveryArgs {
    /// The clusters' configuration and the recovery measurements'.
    pub fn options(&self) -> Result<(BenchOptions, RecoveryOptions), String> {
        Ok((
            self.common.options(
                self.keys,
                self.value_size,
                None,
                Some(self.snapshot_entries),
            )?,
            RecoveryOptions {
                catchup_bytes: self.catchup_bytes,
                catchup_value_size: self.catchup_value_size,
            },
        ))
    }
}

fn secs(s: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| format!("--{what} {s} is not a valid number of seconds"))
}

impl TestArgs {
    /// The run's configuration.
    pub fn options(&self) -> Result<TestOptions, String> {
        Ok(TestOptions {
            db: self.db,
            nodes: self.nodes,
            workload: self.workload,
            nemesis: NemesisKind::parse_list(&self.nemesis)?,
            time_limit: Duration::from_secs(self.time_limit),
            rate: self.rate,
            concurrency: self.concurrency,
            seed: self.seed,
            out: self.out.clone(),
            inject: self.inject.map(|i| i.name().to_string()),
            bin_dir: self.bin_dir.clone(),
            build: self.build,
            keys: self.keys,
            ops_per_key: self.ops_per_key,
            timing: Timing {
                first: secs(self.first_fault_secs, "first-fault-secs")?,
                fault: secs(self.fault_secs, "fault-secs")?,
                quiet: secs(self.quiet_secs, "quiet-secs")?,
            },
            min_rate: self.min_rate.unwrap_or(self.rate / 10.0),
            recovery_grace: secs(self.recovery_grace_secs, "recovery-grace-secs")?,
            recovery_timeout: secs(self.recovery_timeout_secs, "recovery-timeout-secs")?,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            checker_budget: self.checker_budget,
            heartbeat_ms: self.heartbeat_ms,
            election_ms: self.election_ms,
            progress: !self.no_progress,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_command_line_parses() {
        let cli = Cli::try_parse_from([
            "jepsen-lite",
            "test",
            "--db",
            "ferrokv",
            "--nodes",
            "5",
            "--workload",
            "set",
            "--nemesis",
            "partition,kill",
            "--time-limit",
            "15",
            "--rate",
            "50",
            "--concurrency",
            "5",
            "--seed",
            "7",
            "--out",
            "/tmp/x",
            "--inject",
            "early-ack",
        ])
        .expect("parse");
        let Command::Test(args) = cli.command else {
            panic!("expected test");
        };
        let o = args.options().expect("options");
        assert_eq!(o.nodes, 5);
        assert_eq!(o.nemesis, vec![NemesisKind::Kill, NemesisKind::Partition]);
        assert_eq!(o.inject.as_deref(), Some("early-ack"));
        assert_eq!(o.min_rate, 5.0);
    }

    #[test]
    fn the_bench_command_line_takes_comma_lists() {
        let cli = Cli::try_parse_from([
            "jepsen-lite",
            "bench",
            "--db",
            "ferrokv,etcd",
            "--workload",
            "put,get-serializable",
            "--clients",
            "1,16,64,256",
            "--duration",
            "2.5",
            "--value-size",
            "100",
        ])
        .expect("parse");
        let Command::Bench(args) = cli.command else {
            panic!("expected bench");
        };
        let o = args.options().expect("options");
        assert_eq!(o.dbs, vec![DbKind::Ferrokv, DbKind::Etcd]);
        assert_eq!(
            o.workloads,
            vec![BenchWorkload::Put, BenchWorkload::GetSerializable]
        );
        assert_eq!(o.clients, vec![1, 16, 64, 256]);
        assert_eq!(o.duration, Duration::from_millis(2500));
        assert_eq!((o.keys, o.value_size), (1000, 100));
    }

    #[test]
    fn recovery_defaults_are_a_million_keys_and_a_gibibyte_to_catch_up() {
        let cli = Cli::try_parse_from(["jepsen-lite", "recovery", "--db", "etcd"]).expect("parse");
        let Command::Recovery(args) = cli.command else {
            panic!("expected recovery");
        };
        let (o, r) = args.options().expect("options");
        assert_eq!(o.dbs, vec![DbKind::Etcd]);
        assert_eq!((o.keys, o.value_size), (1_000_000, 100));
        assert_eq!((r.catchup_bytes, r.catchup_value_size), (1 << 30, 4096));
        assert_eq!(o.raft.snapshot_entries, Some(1000));
    }
}
