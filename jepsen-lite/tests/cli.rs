//! End-to-end runs of the `jepsen-lite` binary against real local clusters: a healthy
//! ferrokv run is valid, the faulty builds are caught, and etcd (the reference) passes.
//! Short, seeded, bounded in time; they run one at a time (each owns 3 replicas on a
//! 2-core machine).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// One run at a time: parallel clusters would starve each other and miss the rate floor.
static SERIAL: Mutex<()> = Mutex::new(());

/// The directory of the binaries under test, built once per test process (as the
/// `tests` crate's harness does), so a run never uses a stale `ferrokv`.
fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_jepsen-lite"));
        let dir = exe.parent().expect("target dir").to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("Cargo.toml");
        let target = dir.parent().expect("target root");
        for args in [
            &["build", "--workspace", "--bins", "--quiet"][..],
            &[
                "build",
                "-p",
                "ferrokv-node",
                "--features",
                "fault-injection",
                "--bin",
                "ferrokv-faulty",
                "--quiet",
            ][..],
        ] {
            let status = Command::new(&cargo)
                .args(args)
                .arg("--manifest-path")
                .arg(&manifest)
                .env("CARGO_TARGET_DIR", target)
                .status()
                .expect("running cargo build");
            assert!(status.success(), "cargo {args:?} failed");
        }
        dir
    })
}

struct Run {
    code: i32,
    stdout: String,
    results: serde_json::Value,
    _out: tempfile::TempDir,
}

fn jepsen_lite(args: &[&str]) -> Run {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = tempfile::tempdir().expect("out dir");
    let output = Command::new(env!("CARGO_BIN_EXE_jepsen-lite"))
        .arg("test")
        .args(args)
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--out")
        .arg(out.path())
        .arg("--no-progress")
        .output()
        .expect("run jepsen-lite");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");
    let results = std::fs::read_to_string(out.path().join("results.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null);
    for file in ["history.jsonl", "summary.txt", "timeline.html"] {
        assert!(out.path().join(file).is_file(), "{file} missing");
    }
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout,
        results,
        _out: out,
    }
}

fn ok_ops(r: &Run) -> u64 {
    r.results["counts"]["ok"].as_u64().unwrap_or(0)
}

#[test]
fn ferrokv_register_under_partitions_and_kills_is_linearizable() {
    let r = jepsen_lite(&[
        "--db",
        "ferrokv",
        "--workload",
        "register",
        "--nemesis",
        "partition,kill",
        "--time-limit",
        "15",
        "--seed",
        "1",
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(r.results["valid"], serde_json::Value::Bool(true));
    assert!(ok_ops(&r) > 700, "too few ok ops: {}", ok_ops(&r));
    assert_eq!(r.results["faults"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        r.results["end_checks"]["hashes_equal"],
        serde_json::Value::Bool(true)
    );
}

#[test]
fn stale_reads_are_caught_as_nonlinearizable() {
    let r = jepsen_lite(&[
        "--db",
        "ferrokv",
        "--workload",
        "register",
        "--nemesis",
        "partition",
        "--inject",
        "stale-read",
        "--time-limit",
        "10",
        "--seed",
        "1",
    ]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(r.results["valid"], serde_json::Value::Bool(false));
    assert!(r.stdout.contains("nonlinearizable"), "{}", r.stdout);
}

#[test]
fn early_acks_are_caught_as_lost_writes() {
    let r = jepsen_lite(&[
        "--db",
        "ferrokv",
        "--workload",
        "set",
        "--nemesis",
        "partition,kill",
        "--inject",
        "early-ack",
        "--time-limit",
        "15",
        "--seed",
        "1",
    ]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("lost writes"), "{}", r.stdout);
    let lost = r.results["anomalies"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["kind"] == "lost-writes"))
        .and_then(|x| x["elements"].as_array().map(Vec::len))
        .unwrap_or(0);
    assert!(lost > 0, "{}", r.stdout);
}

#[test]
fn ferrokv_append_survives_wipe_and_membership_changes() {
    let r = jepsen_lite(&[
        "--db",
        "ferrokv",
        "--workload",
        "append",
        "--nemesis",
        "wipe,member",
        "--time-limit",
        "15",
        "--seed",
        "3",
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
}

fn etcd_on_path() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("etcd").is_file()))
}

#[test]
fn etcd_register_under_kills_is_linearizable() {
    if !etcd_on_path() {
        println!("skipped: `etcd` is not on PATH (Debian: apt-get install etcd-server)");
        return;
    }
    let r = jepsen_lite(&[
        "--db",
        "etcd",
        "--workload",
        "register",
        "--nemesis",
        "kill",
        "--time-limit",
        "15",
        "--seed",
        "1",
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(r.results["valid"], serde_json::Value::Bool(true));
}

#[test]
fn etcd_register_under_partitions_is_linearizable() {
    if !etcd_on_path() {
        println!("skipped: `etcd` is not on PATH (Debian: apt-get install etcd-server)");
        return;
    }
    let r = jepsen_lite(&[
        "--db",
        "etcd",
        "--workload",
        "register",
        "--nemesis",
        "partition",
        "--time-limit",
        "15",
        "--seed",
        "2",
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(r.results["valid"], serde_json::Value::Bool(true));
    // Partitions were applied (not refused or failed) while the checker found nothing.
    let partitions = r.results["faults"].as_array().map_or(0, |faults| {
        faults
            .iter()
            .filter(|f| {
                f["fault"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("partition"))
                    && f["error"].is_null()
            })
            .count()
    });
    assert!(partitions >= 2, "{}", r.stdout);
}

#[test]
fn a_missing_binary_is_a_clear_error() {
    let empty = tempfile::tempdir().expect("empty dir");
    let output = Command::new(env!("CARGO_BIN_EXE_jepsen-lite"))
        .args(["test", "--time-limit", "5", "--bin-dir"])
        .arg(empty.path())
        .arg("--out")
        .arg(empty.path().join("out"))
        .output()
        .expect("run jepsen-lite");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ferrokv not found"), "{stderr}");
}
