//! Reports in the output directory: `history.jsonl`, `results.json`, `summary.txt`,
//! `timeline.html` and the nodes' logs. Rendering is pure; [`write_all`] does the I/O.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::analysis::{Anomaly, CheckResult, Rates};
use crate::db::{DbKind, ReplicaHash};
use crate::history::{Event, FaultWindow, Operation, Outcome};
use crate::workload::WorkloadKind;

/// Overall verdict: `true`, `false` or `"unknown"` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Valid,
    Invalid,
    Unknown,
}

impl Serialize for Validity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Validity::Valid => s.serialize_bool(true),
            Validity::Invalid => s.serialize_bool(false),
            Validity::Unknown => s.serialize_str("unknown"),
        }
    }
}

/// What the end checks found (besides anomalies, which go in the anomaly list).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EndChecks {
    /// Time from the final heal until the cluster answered a linearizable read.
    pub recovered_after_ms: Option<u64>,
    pub final_write_ok: bool,
    pub state_hashes: Vec<ReplicaHash>,
    pub hashes_equal: Option<bool>,
}

/// The content of `results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub valid: Validity,
    /// Set when the run could not be done properly (e.g. the rate floor was missed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_error: Option<String>,
    pub db: DbKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inject: Option<String>,
    pub nodes: usize,
    pub workload: WorkloadKind,
    pub nemesis: Vec<String>,
    pub seed: u64,
    pub time_limit_secs: u64,
    pub concurrency: usize,
    pub counts: BTreeMap<Outcome, usize>,
    pub counts_by_op: BTreeMap<String, BTreeMap<Outcome, usize>>,
    pub anomalies: Vec<Anomaly>,
    pub unknown: Vec<String>,
    pub check: CheckResult,
    pub faults: Vec<FaultWindow>,
    pub rates: Rates,
    pub end_checks: EndChecks,
}

/// The human summary (also printed at the end of a run).
pub fn summary(r: &Results) -> String {
    let mut s = String::new();
    let valid = match r.valid {
        Validity::Valid => "true",
        Validity::Invalid => "false",
        Validity::Unknown => "unknown",
    };
    let _ = writeln!(
        s,
        "jepsen-lite: db={:?} nodes={} workload={:?} nemesis={} seed={} time-limit={}s concurrency={}{}",
        r.db,
        r.nodes,
        r.workload,
        if r.nemesis.is_empty() {
            "none".to_string()
        } else {
            r.nemesis.join(",")
        },
        r.seed,
        r.time_limit_secs,
        r.concurrency,
        r.inject
            .as_ref()
            .map(|i| format!(" inject={i}"))
            .unwrap_or_default(),
    );
    let count = |o| r.counts.get(&o).copied().unwrap_or(0);
    let _ = writeln!(
        s,
        "ops: {} ok, {} fail, {} info",
        count(Outcome::Ok),
        count(Outcome::Fail),
        count(Outcome::Info)
    );
    for (f, c) in &r.counts_by_op {
        let get = |o| c.get(&o).copied().unwrap_or(0);
        let _ = writeln!(
            s,
            "  {f:<10} {:>7} ok {:>6} fail {:>6} info",
            get(Outcome::Ok),
            get(Outcome::Fail),
            get(Outcome::Info)
        );
    }
    let _ = writeln!(
        s,
        "rate: target {:.0}/s; ok {:.1}/s overall, {:.1}/s outside faults ({:.1}s quiet; floor {:.1}/s)",
        r.rates.target, r.rates.ok_overall, r.rates.ok_quiet, r.rates.quiet_secs, r.rates.floor
    );
    let _ = writeln!(s, "faults: {}", r.faults.len());
    for f in &r.faults {
        let _ = writeln!(
            s,
            "  {:>7.2}s..{:<7} {} on {:?}{}",
            f.start as f64 / 1e9,
            f.end
                .map_or("-".to_string(), |e| format!("{:.2}s", e as f64 / 1e9)),
            f.fault,
            f.nodes,
            f.error
                .as_ref()
                .map(|e| format!(" (error: {e})"))
                .unwrap_or_default()
        );
    }
    let e = &r.end_checks;
    let _ = writeln!(
        s,
        "end checks: recovered after {}, final write {}, state hashes {}",
        e.recovered_after_ms
            .map_or("never".to_string(), |ms| format!("{ms} ms")),
        if e.final_write_ok { "ok" } else { "FAILED" },
        match e.hashes_equal {
            Some(true) => format!(
                "equal on {} replicas at revision {}",
                e.state_hashes.len(),
                e.state_hashes.first().map_or(0, |h| h.revision)
            ),
            Some(false) => "DIFFER".to_string(),
            None => "not compared".to_string(),
        }
    );
    if let Some(set) = &r.check.set {
        let _ = writeln!(
            s,
            "set: {} acknowledged adds, final read {} elements, {} lost, {} unknown adds recovered, {} not",
            set.acknowledged,
            set.final_read_size,
            set.lost.len(),
            set.recovered,
            set.not_recovered
        );
    }
    if r.check.keys_checked > 0 {
        let _ = writeln!(s, "keys checked: {}", r.check.keys_checked);
    }
    let _ = writeln!(s, "anomalies: {}", r.anomalies.len());
    for a in &r.anomalies {
        let _ = writeln!(s, "  - {}", a.describe());
    }
    for u in &r.unknown {
        let _ = writeln!(s, "  unknown: {u}");
    }
    if let Some(e) = &r.run_error {
        let _ = writeln!(s, "run error: {e}");
    }
    let _ = writeln!(s, "valid: {valid}");
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A self-contained HTML page: one lane per client, ops as bars coloured by outcome,
/// fault windows shaded, ops involved in anomalies outlined.
pub fn timeline(r: &Results, ops: &[Operation], lanes: usize) -> String {
    let failing: HashSet<usize> = r.anomalies.iter().flat_map(Anomaly::ops).collect();
    let end = ops
        .iter()
        .map(|o| o.ret)
        .chain(r.faults.iter().filter_map(|f| f.end))
        .max()
        .unwrap_or(1)
        .max(1);
    const LANE: f64 = 18.0;
    const LEFT: f64 = 70.0;
    const TOP: f64 = 24.0;
    // Wide enough to see single ops: 400 px per second, capped for long runs.
    let width = ((end as f64 / 1e9) * 400.0).clamp(800.0, 60_000.0);
    let x = |t: u64| LEFT + (t as f64 / end as f64) * width;
    let lanes = lanes + 1; // the last lane holds the end checks' ops
    let height = TOP + lanes as f64 * LANE + 10.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{:.0}" height="{height:.0}" font-family="monospace" font-size="11">"#,
        LEFT + width + 20.0
    );
    for f in &r.faults {
        let (x0, x1) = (x(f.start), x(f.end.unwrap_or(end)));
        let _ = write!(
            svg,
            r##"<rect x="{x0:.1}" y="0" width="{:.1}" height="{height:.0}" fill="#d0d0ff" opacity="0.55"><title>{} on {:?}</title></rect><text x="{:.1}" y="12" fill="#335">{}</text>"##,
            (x1 - x0).max(1.0),
            esc(&f.fault),
            f.nodes,
            x0 + 2.0,
            esc(&f.fault)
        );
    }
    for sec in 0..=(end / 1_000_000_000) {
        let t = sec * 1_000_000_000;
        let _ = write!(
            svg,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{1}" y2="{height:.0}" stroke="#ccc" stroke-width="0.5"/><text x="{0:.1}" y="{2}" fill="#999">{sec}s</text>"##,
            x(t),
            TOP - 2.0,
            height - 1.0
        );
    }
    for lane in 0..lanes {
        let y = TOP + lane as f64 * LANE;
        let label = if lane + 1 == lanes {
            "final".to_string()
        } else {
            format!("c{lane}")
        };
        let _ = write!(svg, r#"<text x="4" y="{:.1}">{label}</text>"#, y + 12.0);
    }
    for o in ops {
        let lane = o.client.min(lanes - 1);
        let y = TOP + lane as f64 * LANE + 2.0;
        let color = match o.outcome {
            Outcome::Ok => "#3a3",
            Outcome::Fail => "#d44",
            Outcome::Info => "#e90",
        };
        let stroke = if failing.contains(&o.id) {
            r##" stroke="#000" stroke-width="2""##
        } else {
            ""
        };
        let title = format!(
            "#{} {:?} {} p{} {:.3}s..{:.3}s{}",
            o.id,
            o.outcome,
            serde_json::to_string(&o.op).unwrap_or_default(),
            o.process,
            o.call as f64 / 1e9,
            o.ret as f64 / 1e9,
            o.error
                .as_ref()
                .map(|e| format!(" error: {e}"))
                .unwrap_or_default()
        );
        let _ = write!(
            svg,
            r##"<rect x="{:.2}" y="{y:.1}" width="{:.2}" height="{:.1}" fill="{color}"{stroke}><title>{}</title></rect>"##,
            x(o.call),
            (x(o.ret) - x(o.call)).max(1.0),
            LANE - 4.0,
            esc(&title)
        );
    }
    svg.push_str("</svg>");
    format!(
        r##"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>jepsen-lite timeline</title>
<style>body{{font-family:sans-serif;margin:12px}} pre{{background:#f6f6f6;padding:8px}} .k{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}} .scroll{{overflow-x:auto;border:1px solid #ddd}}</style>
</head><body>
<h2>jepsen-lite timeline</h2>
<div><span class="k" style="background:#3a3"></span>ok<span class="k" style="background:#d44"></span>fail<span class="k" style="background:#e90"></span>info (unknown)<span class="k" style="background:#d0d0ff"></span>fault window<span class="k" style="border:2px solid #000"></span>in an anomaly</div>
<p>Hover a bar for the operation. One lane per client; the last lane holds the end checks' operations.</p>
<div class="scroll">{svg}</div>
<h3>Summary</h3>
<pre>{}</pre>
</body></html>
"##,
        esc(&summary(r))
    )
}

/// Writes every report file into `out`, copying node logs into `out/logs/`.
pub fn write_all(
    out: &Path,
    events: &[Event],
    results: &Results,
    ops: &[Operation],
    lanes: usize,
    logs: &[(String, PathBuf)],
) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    let history = crate::history::to_jsonl(events).map_err(std::io::Error::other)?;
    std::fs::write(out.join("history.jsonl"), history)?;
    let json = serde_json::to_string_pretty(results).map_err(std::io::Error::other)?;
    std::fs::write(out.join("results.json"), json + "\n")?;
    std::fs::write(out.join("summary.txt"), summary(results))?;
    std::fs::write(out.join("timeline.html"), timeline(results, ops, lanes))?;
    copy_logs(out, logs)
}

/// Copies node logs into `out/logs/` (missing ones are skipped).
pub fn copy_logs(out: &Path, logs: &[(String, PathBuf)]) -> std::io::Result<()> {
    let dir = out.join("logs");
    std::fs::create_dir_all(&dir)?;
    for (name, path) in logs {
        if path.is_file() {
            std::fs::copy(path, dir.join(format!("{name}.log")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Op;

    fn results() -> Results {
        Results {
            valid: Validity::Unknown,
            run_error: None,
            db: DbKind::Ferrokv,
            inject: None,
            nodes: 3,
            workload: WorkloadKind::Register,
            nemesis: vec!["kill".into()],
            seed: 1,
            time_limit_secs: 10,
            concurrency: 2,
            counts: BTreeMap::from([(Outcome::Ok, 1)]),
            counts_by_op: BTreeMap::new(),
            anomalies: vec![],
            unknown: vec![],
            check: CheckResult::default(),
            faults: vec![FaultWindow {
                fault: "kill <leader>".into(),
                nodes: vec![1],
                start: 1,
                end: Some(5),
                error: None,
            }],
            rates: Rates {
                target: 10.0,
                floor: 1.0,
                run_secs: 10.0,
                quiet_secs: 8.0,
                ok_overall: 1.0,
                ok_quiet: 1.0,
            },
            end_checks: EndChecks::default(),
        }
    }

    #[test]
    fn validity_serializes_as_true_false_or_unknown() {
        let s = |v| serde_json::to_string(&v).expect("json");
        assert_eq!(s(Validity::Valid), "true");
        assert_eq!(s(Validity::Invalid), "false");
        assert_eq!(s(Validity::Unknown), "\"unknown\"");
    }

    #[test]
    fn timeline_is_self_contained_and_escapes_text() {
        let ops = vec![Operation {
            id: 0,
            process: 0,
            client: 1,
            call: 0,
            ret: 10,
            outcome: Outcome::Info,
            op: Op::Write {
                key: "<k>".into(),
                value: 1,
            },
            error: Some("a < b".into()),
        }];
        let html = timeline(&results(), &ops, 2);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(!html.contains("<k>") && html.contains("&lt;k&gt;"));
        assert!(!html.contains("src=\"http"), "no external resources");
        assert!(html.contains("#e90"), "info ops are orange");
        assert!(summary(&results()).contains("valid: unknown"));
    }
}
