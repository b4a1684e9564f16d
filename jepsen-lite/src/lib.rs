//! jepsen-lite: starts real clusters (ferrokv or etcd, as local processes), drives
//! concurrent clients, injects faults, records the history and checks it — and it can
//! fail: runs against a `ferrokv-faulty` node are expected to end with an anomaly.
//!
//! # Layout
//! - [`cli`]: the command line, parsed once into [`runner::TestOptions`].
//! - [`runner`]: one run start to finish — cluster up, clients and nemesis for the time
//!   limit, heal, end checks, check, reports.
//! - [`db`]: the [`db::Db`] trait and its implementations: [`db::ferrokv`] (every peer
//!   link through the harness's [`db::proxy`]) and [`db::etcd`]; [`db::process`] owns
//!   one replica's OS process.
//! - [`nemesis`]: injects and heals faults at their times; [`nemesis::plan`] is the pure
//!   part (kinds, seeded schedule, partition shapes).
//! - [`workload`]: register, set and append operations and their final reads, over
//!   [`kv`], which hides ferrokv's and etcd's clients and classifies their errors.
//! - [`history`]: the recorded events (JSON lines) and their pairing into operations.
//! - [`checker`]: pure checkers — linearizability search, register, set, append.
//! - [`analysis`]: from history to verdict, anomalies and achieved rates (pure).
//! - [`report`]: results.json, summary.txt, timeline.html, logs.
//! - [`bench`]: `jepsen-lite bench` — ferrokv and etcd side by side through the same
//!   drivers and one closed-loop load generator; bench.json / bench.md / bench.svg.
//! - `binaries`: finding (or building) `ferrokv`, `ferrokv-faulty` and `etcd`.
//!
//! A run flows: options → `Db::setup` → clients (one task each, bound to one replica,
//! paced to the rate) record into a [`history::Recorder`] while [`nemesis::run`] walks
//! the schedule → heal → end checks (recover, final write, final reads, state hashes) →
//! [`analysis`] → [`report`] → exit status.

pub mod analysis;
pub mod bench;
pub mod binaries;
pub mod checker;
pub mod cli;
pub mod db;
pub mod history;
pub mod kv;
pub mod nemesis;
pub mod report;
pub mod runner;
pub mod workload;
