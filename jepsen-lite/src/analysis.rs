//! From a finished history to a verdict: runs the workload's checker, gathers anomalies
//! (checker and end checks alike), and measures achieved rates outside fault windows.
//! Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::checker::append::AppendAnomaly;
use crate::checker::register::{FailingWindow, KeyVerdict};
use crate::checker::{append, register, set};
use crate::db::ReplicaHash;
use crate::history::{FaultWindow, Op, Operation, Outcome};
use crate::workload::WorkloadKind;

/// Something the run proved wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Anomaly {
    /// No linearization exists for this key's history.
    Nonlinearizable { key: String, window: FailingWindow },
    /// Acknowledged adds missing from the final read.
    LostWrites {
        count: usize,
        elements: Vec<u64>,
        ops: Vec<usize>,
    },
    /// Elements in the final read that no add tried.
    UnexpectedElements { elements: Vec<u64> },
    /// Adds known to have failed that appear in the final read.
    FailedAddsPresent { elements: Vec<u64> },
    /// The append workload's list check.
    List { anomaly: AppendAnomaly },
    /// After the last fault healed, the cluster did not answer within the bound.
    UnavailableAfterHeal { waited_ms: u64, last_error: String },
    /// The final write after healing did not succeed.
    FinalWriteFailed { error: String },
    /// Replicas at the same revision hold different state.
    StateHashMismatch {
        revision: u64,
        hashes: Vec<ReplicaHash>,
    },
    /// Replicas never reached the same revision after healing.
    ReplicasDidNotConverge { hashes: Vec<ReplicaHash> },
}

impl Anomaly {
    /// A one-line description for the summary.
    pub fn describe(&self) -> String {
        match self {
            Anomaly::Nonlinearizable { key, window } => format!(
                "nonlinearizable: key {key}: no linearization gets past op {} ({} ops in the window {:.3}s..{:.3}s)",
                window.culprit,
                window.ops.len(),
                secs(window.start),
                secs(window.end)
            ),
            Anomaly::LostWrites {
                count, elements, ..
            } => {
                format!(
                    "lost writes: {count} acknowledged adds missing from the final read: {}",
                    list(elements)
                )
            }
            Anomaly::UnexpectedElements { elements } => {
                format!("unexpected elements never added: {}", list(elements))
            }
            Anomaly::FailedAddsPresent { elements } => {
                format!("adds reported failed but present: {}", list(elements))
            }
            Anomaly::List { anomaly } => {
                format!(
                    "{:?} on {}: {} (ops {:?})",
                    anomaly.kind, anomaly.key, anomaly.detail, anomaly.ops
                )
            }
            Anomaly::UnavailableAfterHeal {
                waited_ms,
                last_error,
            } => {
                format!("unavailable after heal: no answer within {waited_ms} ms ({last_error})")
            }
            Anomaly::FinalWriteFailed { error } => format!("final write failed: {error}"),
            Anomaly::StateHashMismatch { revision, hashes } => format!(
                "state hash mismatch at revision {revision}: {}",
                hashes
                    .iter()
                    .map(|h| format!("n{}={:016x}", h.slot, h.hash))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Anomaly::ReplicasDidNotConverge { hashes } => format!(
                "replicas did not reach one revision: {}",
                hashes
                    .iter()
                    .map(|h| format!("n{}@{}", h.slot, h.revision))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        }
    }

    /// Operation ids involved, for highlighting.
    pub fn ops(&self) -> Vec<usize> {
        match self {
            Anomaly::Nonlinearizable { window, .. } => window.ops.clone(),
            Anomaly::LostWrites { ops, .. } => ops.clone(),
            Anomaly::List { anomaly } => anomaly.ops.clone(),
            _ => Vec::new(),
        }
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn list(elements: &[u64]) -> String {
    const SHOWN: usize = 20;
    let mut s = elements
        .iter()
        .take(SHOWN)
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if elements.len() > SHOWN {
        s.push_str(&format!(", ... ({} more)", elements.len() - SHOWN));
    }
    s
}

/// The checker's findings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CheckResult {
    pub anomalies: Vec<Anomaly>,
    /// Why the checker could not decide (search budget, missing final read).
    pub unknown: Vec<String>,
    /// Keys checked, for register and append.
    pub keys_checked: usize,
    /// Details of the set check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<set::SetReport>,
}

/// Runs the workload's checker over `ops`.
pub fn check(kind: WorkloadKind, ops: &[Operation], budget: u64) -> CheckResult {
    let mut result = CheckResult::default();
    match kind {
        WorkloadKind::Register => {
            let verdicts = register::check(ops, budget);
            result.keys_checked = verdicts.len();
            for (key, verdict) in verdicts {
                match verdict {
                    KeyVerdict::Valid => {}
                    KeyVerdict::Invalid { window } => result
                        .anomalies
                        .push(Anomaly::Nonlinearizable { key, window }),
                    KeyVerdict::Unknown { steps } => result.unknown.push(format!(
                        "key {key}: search budget exhausted after {steps} steps"
                    )),
                }
            }
        }
        WorkloadKind::Set => match set::check(ops) {
            None => result
                .unknown
                .push("no final read of the set succeeded".into()),
            Some(report) => {
                if !report.lost.is_empty() {
                    result.anomalies.push(Anomaly::LostWrites {
                        count: report.lost.len(),
                        elements: report.lost.clone(),
                        ops: report.lost_ops.clone(),
                    });
                }
                if !report.unexpected.is_empty() {
                    result.anomalies.push(Anomaly::UnexpectedElements {
                        elements: report.unexpected.clone(),
                    });
                }
                if !report.failed_but_present.is_empty() {
                    result.anomalies.push(Anomaly::FailedAddsPresent {
                        elements: report.failed_but_present.clone(),
                    });
                }
                result.set = Some(report);
            }
        },
        WorkloadKind::Append => {
            let keys: BTreeSet<&str> = ops
                .iter()
                .filter(|o| matches!(o.op, Op::Append { .. } | Op::ReadList { .. }))
                .filter_map(|o| o.op.key())
                .collect();
            result.keys_checked = keys.len();
            result.anomalies.extend(
                append::check(ops)
                    .into_iter()
                    .map(|anomaly| Anomaly::List { anomaly }),
            );
        }
    }
    result
}

/// Operation counts and rates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rates {
    /// The requested rate (ops/s over all clients).
    pub target: f64,
    /// The least ok-rate outside fault windows a run must reach.
    pub floor: f64,
    pub run_secs: f64,
    /// Time outside fault windows (and the recovery grace after each).
    pub quiet_secs: f64,
    /// ok ops per second over the whole run.
    pub ok_overall: f64,
    /// ok ops per second outside fault windows.
    pub ok_quiet: f64,
}

/// Measures achieved rates of the workload's ops (`client < clients`) that completed
/// in `[0, run_end]`. A fault window counts from its start to its end plus `grace` (a
/// healed cluster needs an election before it serves again).
pub fn rates(
    ops: &[Operation],
    faults: &[FaultWindow],
    clients: usize,
    run_end: u64,
    grace: u64,
    target: f64,
    floor: f64,
) -> Rates {
    let busy: Vec<(u64, u64)> = faults
        .iter()
        .map(|f| {
            (
                f.start,
                f.end.unwrap_or(run_end).saturating_add(grace).min(run_end),
            )
        })
        .collect();
    let in_fault = |t: u64| busy.iter().any(|(s, e)| t >= *s && t <= *e);
    // Merge overlapping windows to measure their total length.
    let mut merged: Vec<(u64, u64)> = busy.clone();
    merged.sort_unstable();
    let mut covered = 0u64;
    let mut cur: Option<(u64, u64)> = None;
    for (s, e) in merged {
        match cur {
            Some((cs, ce)) if s <= ce => cur = Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                covered += ce - cs;
                cur = Some((s, e));
            }
            None => cur = Some((s, e)),
        }
    }
    if let Some((cs, ce)) = cur {
        covered += ce - cs;
    }
    let quiet_ns = run_end.saturating_sub(covered);
    let ok: Vec<&Operation> = ops
        .iter()
        .filter(|o| o.client < clients && o.outcome == Outcome::Ok && o.ret <= run_end)
        .collect();
    let ok_quiet = ok.iter().filter(|o| !in_fault(o.ret)).count();
    let per_sec = |n: usize, ns: u64| if ns == 0 { 0.0 } else { n as f64 / secs(ns) };
    Rates {
        target,
        floor,
        run_secs: secs(run_end),
        quiet_secs: secs(quiet_ns),
        ok_overall: per_sec(ok.len(), run_end),
        ok_quiet: per_sec(ok_quiet, quiet_ns),
    }
}

/// Counts of completions by outcome, and by operation and outcome.
pub fn counts(
    ops: &[Operation],
) -> (
    BTreeMap<Outcome, usize>,
    BTreeMap<String, BTreeMap<Outcome, usize>>,
) {
    let mut total = BTreeMap::new();
    let mut by_f: BTreeMap<String, BTreeMap<Outcome, usize>> = BTreeMap::new();
    for o in ops {
        *total.entry(o.outcome).or_default() += 1;
        *by_f
            .entry(o.op.name().to_string())
            .or_default()
            .entry(o.outcome)
            .or_default() += 1;
    }
    (total, by_f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_at(id: usize, ret: u64) -> Operation {
        Operation {
            id,
            process: 0,
            client: 0,
            call: ret.saturating_sub(1),
            ret,
            outcome: Outcome::Ok,
            op: Op::Add { element: id as u64 },
            error: None,
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn quiet_rate_leaves_out_fault_windows_and_their_grace() {
        // 10 s run; fault 2..4 s plus 1 s grace: 7 s quiet.
        let mut ops: Vec<Operation> = (0..70)
            .map(|i| ok_at(i, (i as u64 % 10) * S + S / 2))
            .collect();
        ops.retain(|o| !(2 * S..=5 * S).contains(&o.ret));
        ops.push(ok_at(999, 3 * S)); // inside the fault: not quiet
        let faults = vec![FaultWindow {
            fault: "kill one".into(),
            nodes: vec![1],
            start: 2 * S,
            end: Some(4 * S),
            error: None,
        }];
        let r = rates(&ops, &faults, 1, 10 * S, S, 10.0, 1.0);
        assert!((r.quiet_secs - 7.0).abs() < 1e-9);
        assert!((r.ok_quiet - 7.0 * 7.0 / 7.0).abs() < 1e-9, "{r:?}");
        assert!((r.ok_overall - 5.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn lost_adds_become_a_lost_writes_anomaly() {
        let mut ops = vec![ok_at(0, 1), ok_at(1, 2)];
        ops.push(Operation {
            op: Op::ReadSet {
                elements: Some(vec![0]),
            },
            ..ok_at(5, 10)
        });
        let r = check(WorkloadKind::Set, &ops, 1000);
        assert_eq!(
            r.anomalies,
            vec![Anomaly::LostWrites {
                count: 1,
                elements: vec![1],
                ops: vec![1]
            }]
        );
        assert!(
            r.anomalies[0]
                .describe()
                .starts_with("lost writes: 1 acknowledged")
        );
    }
}
