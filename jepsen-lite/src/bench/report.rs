//! The benchmark's results and their renderings: `bench.json` rows, the side-by-side
//! markdown table with ferrokv/etcd ratios, and the plain table printed on stdout. Pure.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::db::DbKind;

/// One db × workload × clients measurement (one object of `bench.json`).
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub db: DbKind,
    pub workload: String,
    pub clients: usize,
    /// The measured window, after warm-up.
    pub duration_secs: f64,
    /// Operations answered successfully within the window.
    pub ops: u64,
    pub ops_per_sec: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    /// A few distinct error messages, when there were errors.
    pub error_samples: Vec<String>,
    /// CPU seconds (user + system) all replicas used during the window.
    pub cpu_seconds: f64,
    /// The same, per replica (slot order).
    pub cpu_seconds_per_node: Vec<f64>,
    /// Peak resident set (VmHWM) of each replica since its start, bytes (slot order).
    pub peak_rss_bytes: Vec<u64>,
    /// Latency CDF: (latency ms, fraction of operations at or below it).
    pub latency_cdf: Vec<(f64, f64)>,
}

/// Latency fields of a [`BenchResult`] from a histogram in microseconds.
pub(crate) struct Latency {
    pub(crate) mean_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) cdf: Vec<(f64, f64)>,
}

/// Quantiles plotted in the CDF: dense where the tail is.
const CDF_QUANTILES: &[f64] = &[
    0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999,
    0.9995, 0.9999, 1.0,
];

pub(crate) fn latency(h: &Histogram<u64>) -> Latency {
    let ms = |us: u64| us as f64 / 1000.0;
    if h.is_empty() {
        return Latency {
            mean_ms: 0.0,
            p50_ms: 0.0,
            p90_ms: 0.0,
            p99_ms: 0.0,
            p999_ms: 0.0,
            max_ms: 0.0,
            cdf: Vec::new(),
        };
    }
    Latency {
        mean_ms: h.mean() / 1000.0,
        p50_ms: ms(h.value_at_quantile(0.5)),
        p90_ms: ms(h.value_at_quantile(0.9)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        cdf: CDF_QUANTILES
            .iter()
            .map(|q| (ms(h.value_at_quantile(*q)), *q))
            .collect(),
    }
}

fn db_name(db: DbKind) -> &'static str {
    match db {
        DbKind::Ferrokv => "ferrokv",
        DbKind::Etcd => "etcd",
    }
}

fn find<'a>(
    results: &'a [BenchResult],
    db: DbKind,
    workload: &str,
    clients: usize,
) -> Option<&'a BenchResult> {
    results
        .iter()
        .find(|r| r.db == db && r.workload == workload && r.clients == clients)
}

/// `a / b` to two decimals, or `–` when either side is missing or `b` is zero.
fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

fn or_dash(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.decimals$}"))
}

/// The workloads and client counts present, in the order they were run.
fn cells(results: &[BenchResult]) -> Vec<(String, usize)> {
    let mut seen = BTreeSet::new();
    results
        .iter()
        .map(|r| (r.workload.clone(), r.clients))
        .filter(|c| seen.insert(c.clone()))
        .collect()
}

/// `bench.md`: one row per workload × clients with ferrokv and etcd side by side and
/// the ferrokv/etcd ratios (throughput: higher is better for ferrokv; latency: lower).
pub fn markdown(results: &[BenchResult], preamble: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# ferrokv vs etcd\n\n{preamble}\n");
    let _ = writeln!(
        s,
        "| workload | clients | ferrokv ops/s | etcd ops/s | ops/s ratio | ferrokv p50 ms | etcd p50 ms | p50 ratio | ferrokv p99 ms | etcd p99 ms | p99 ratio | ferrokv CPU s | etcd CPU s | errors (f/e) |"
    );
    let _ = writeln!(
        s,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (workload, clients) in cells(results) {
        let f = find(results, DbKind::Ferrokv, &workload, clients);
        let e = find(results, DbKind::Etcd, &workload, clients);
        let get = |r: Option<&BenchResult>, pick: fn(&BenchResult) -> f64| r.map(pick);
        let errors =
            |r: Option<&BenchResult>| r.map_or_else(|| "–".into(), |r| r.errors.to_string());
        let _ = writeln!(
            s,
            "| {workload} | {clients} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
            or_dash(get(f, |r| r.ops_per_sec), 0),
            or_dash(get(e, |r| r.ops_per_sec), 0),
            ratio(get(f, |r| r.ops_per_sec), get(e, |r| r.ops_per_sec)),
            or_dash(get(f, |r| r.p50_ms), 2),
            or_dash(get(e, |r| r.p50_ms), 2),
            ratio(get(f, |r| r.p50_ms), get(e, |r| r.p50_ms)),
            or_dash(get(f, |r| r.p99_ms), 2),
            or_dash(get(e, |r| r.p99_ms), 2),
            ratio(get(f, |r| r.p99_ms), get(e, |r| r.p99_ms)),
            or_dash(get(f, |r| r.cpu_seconds), 1),
            or_dash(get(e, |r| r.cpu_seconds), 1),
            errors(f),
            errors(e),
        );
    }
    s
}

/// The table printed on stdout: one line per measurement.
pub fn text_table(results: &[BenchResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<8} {:<16} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>9}",
        "db",
        "workload",
        "clients",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "max ms",
        "errors",
        "cpu s",
        "rss MiB"
    );
    for r in results {
        let rss = r.peak_rss_bytes.iter().max().copied().unwrap_or(0) as f64 / (1024.0 * 1024.0);
        let _ = writeln!(
            s,
            "{:<8} {:<16} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>7.1} {:>9.0}",
            db_name(r.db),
            r.workload,
            r.clients,
            r.ops_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.max_ms,
            r.errors,
            r.cpu_seconds,
            rss
        );
    }
    let pairs: Vec<String> = cells(results)
        .into_iter()
        .filter_map(|(w, c)| {
            let f = find(results, DbKind::Ferrokv, &w, c)?;
            let e = find(results, DbKind::Etcd, &w, c)?;
            Some(format!(
                "{w} x{c}: ops/s {} p99 {}",
                ratio(Some(f.ops_per_sec), Some(e.ops_per_sec)),
                ratio(Some(f.p99_ms), Some(e.p99_ms))
            ))
        })
        .collect();
    if !pairs.is_empty() {
        let _ = writeln!(s, "ferrokv/etcd: {}", pairs.join("; "));
    }
    s
}

#[cfg(test)]
pub(crate) fn sample(
    db: DbKind,
    workload: &str,
    clients: usize,
    ops_per_sec: f64,
    p99: f64,
) -> BenchResult {
    BenchResult {
        db,
        workload: workload.into(),
        clients,
        duration_secs: 1.0,
        ops: ops_per_sec as u64,
        ops_per_sec,
        mean_ms: p99 / 2.0,
        p50_ms: p99 / 2.0,
        p90_ms: p99,
        p99_ms: p99,
        p999_ms: p99,
        max_ms: p99,
        errors: 0,
        error_samples: vec![],
        cpu_seconds: 1.0,
        cpu_seconds_per_node: vec![0.5, 0.25, 0.25],
        peak_rss_bytes: vec![1 << 20; 3],
        latency_cdf: vec![(p99 / 2.0, 0.5), (p99, 1.0)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_markdown_table_puts_ferrokv_over_etcd_per_workload_and_clients() {
        let results = vec![
            sample(DbKind::Ferrokv, "put", 1, 300.0, 4.0),
            sample(DbKind::Ferrokv, "put", 64, 3000.0, 30.0),
            sample(DbKind::Etcd, "put", 1, 200.0, 8.0),
            sample(DbKind::Etcd, "put", 64, 6000.0, 15.0),
        ];
        let md = markdown(&results, "machine");
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| put")).collect();
        assert_eq!(rows.len(), 2, "{md}");
        assert!(
            rows[0].starts_with("| put | 1 | 300 | 200 | 1.50 |"),
            "{}",
            rows[0]
        );
        assert!(rows[0].contains("| 4.00 | 8.00 | 0.50 |"), "{}", rows[0]);
        assert!(
            rows[1].starts_with("| put | 64 | 3000 | 6000 | 0.50 |"),
            "{}",
            rows[1]
        );
    }

    #[test]
    fn a_db_run_alone_leaves_the_ratios_empty() {
        let results = vec![sample(DbKind::Ferrokv, "get", 4, 100.0, 1.0)];
        let md = markdown(&results, "");
        assert!(md.contains("| get | 4 | 100 | – | – |"), "{md}");
        assert!(!text_table(&results).contains("ferrokv/etcd"));
    }

    #[test]
    fn latency_quantiles_come_from_the_histogram_in_milliseconds() {
        let mut h = super::super::load::new_histogram();
        for us in 1..=1000u64 {
            h.saturating_record(us * 10);
        }
        let l = latency(&h);
        assert!((l.p50_ms - 5.0).abs() < 0.01, "{}", l.p50_ms);
        assert!((l.p99_ms - 9.9).abs() < 0.02, "{}", l.p99_ms);
        assert!((l.max_ms - 10.0).abs() < 0.02, "{}", l.max_ms);
        assert_eq!(l.cdf.last().map(|p| p.1), Some(1.0));
        assert_eq!(latency(&super::super::load::new_histogram()).p99_ms, 0.0);
    }
}
