//! `jepsen-lite bench` end to end, briefly: it only proves the benchmark still runs and
//! writes its reports. Nothing here asserts on speed (benchmarks are never timed
//! assertions in the test suite).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// One bench at a time: two clusters at once on 2 cores would starve each other.
static SERIAL: Mutex<()> = Mutex::new(());

/// The directory of the binaries under test, built once per test process so a run
/// never uses a stale `ferrokv`.
fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_jepsen-lite"));
        let dir = exe.parent().expect("target dir").to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("Cargo.toml");
        let status = Command::new(&cargo)
            .args(["build", "--workspace", "--bins", "--quiet"])
            .arg("--manifest-path")
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", dir.parent().expect("target root"))
            .status()
            .expect("running cargo build");
        assert!(status.success(), "cargo build --workspace --bins failed");
        dir
    })
}

fn etcd_on_path() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("etcd").is_file()))
}

/// Runs a brief put benchmark of `dbs` and checks what it wrote; returns bench.json.
fn brief_put_bench(dbs: &str) -> Vec<serde_json::Value> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = tempfile::tempdir().expect("out dir");
    let output = Command::new(env!("CARGO_BIN_EXE_jepsen-lite"))
        .args([
            "bench",
            "--db",
            dbs,
            "--workload",
            "put",
            "--clients",
            "1,4",
        ])
        .args(["--duration", "2", "--warmup", "1", "--keys", "100"])
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("running jepsen-lite bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed ({:?}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("ops/s") && stdout.contains("p99 ms"),
        "{stdout}"
    );

    let json = std::fs::read_to_string(out.path().join("bench.json")).expect("bench.json");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).expect("bench.json parses");
    for row in &rows {
        for field in [
            "db",
            "workload",
            "clients",
            "ops_per_sec",
            "p50_ms",
            "p99_ms",
            "p999_ms",
            "max_ms",
            "errors",
            "cpu_seconds",
            "peak_rss_bytes",
        ] {
            assert!(row.get(field).is_some(), "{field} missing from {row}");
        }
        assert!(row["ops_per_sec"].as_f64().expect("number") > 0.0, "{row}");
        assert_eq!(row["workload"], "put");
        let rss = row["peak_rss_bytes"].as_array().expect("per-node array");
        assert_eq!(rss.len(), 3, "{row}");
        assert!(rss.iter().all(|b| b.as_u64().expect("bytes") > 0), "{row}");
        assert!(row["cpu_seconds"].as_f64().expect("number") > 0.0, "{row}");
    }
    let md = std::fs::read_to_string(out.path().join("bench.md")).expect("bench.md");
    assert!(
        md.contains("| put | 1 |") && md.contains("| put | 4 |"),
        "{md}"
    );
    let svg = std::fs::read_to_string(out.path().join("bench.svg")).expect("bench.svg");
    assert!(svg.starts_with("<svg") && svg.contains("throughput vs clients"));
    rows
}

#[test]
fn a_brief_ferrokv_put_bench_writes_its_reports() {
    let rows = brief_put_bench("ferrokv");
    let clients: Vec<u64> = rows
        .iter()
        .map(|r| r["clients"].as_u64().expect("clients"))
        .collect();
    assert_eq!(clients, vec![1, 4]);
    assert!(rows.iter().all(|r| r["db"] == "ferrokv"));
}

#[test]
fn a_brief_side_by_side_bench_has_ratios() {
    if !etcd_on_path() {
        eprintln!("skipped: `etcd` is not on PATH (Debian: apt-get install etcd-server)");
        return;
    }
    let rows = brief_put_bench("ferrokv,etcd");
    assert_eq!(rows.len(), 4);
    assert_eq!(rows.iter().filter(|r| r["db"] == "etcd").count(), 2);
}

#[test]
fn a_brief_recovery_run_restarts_and_re_adds_a_replica() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dbs = if etcd_on_path() {
        "ferrokv,etcd"
    } else {
        "ferrokv"
    };
    let out = tempfile::tempdir().expect("out dir");
    let output = Command::new(env!("CARGO_BIN_EXE_jepsen-lite"))
        .args([
            "recovery",
            "--db",
            dbs,
            "--keys",
            "1000",
            "--value-size",
            "100",
        ])
        .args(["--catchup-bytes", "2000000", "--catchup-value-size", "1000"])
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("running jepsen-lite recovery");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "recovery failed ({:?}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let json = std::fs::read_to_string(out.path().join("recovery.json")).expect("recovery.json");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).expect("recovery.json parses");
    assert_eq!(rows.len(), dbs.split(',').count());
    for row in &rows {
        for field in ["restart_secs", "promote_secs", "catchup_secs", "load_secs"] {
            assert!(
                row[field].as_f64().is_some_and(|s| s > 0.0),
                "{field}: {row}"
            );
        }
        // 1000 keys of 100 B, then 2000 values of 1000 B.
        assert_eq!(row["catchup_bytes"], 2_100_000, "{row}");
        let rss = row["peak_rss_bytes"].as_array().expect("per-node array");
        assert!(rss.iter().all(|b| b.as_u64().expect("bytes") > 0), "{row}");
    }
    let md = std::fs::read_to_string(out.path().join("recovery.md")).expect("recovery.md");
    assert!(md.contains("| ferrokv | 1000 × 100 B |"), "{md}");
}
