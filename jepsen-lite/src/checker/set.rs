//! The set workload's check: after healing, a final read must hold every acknowledged add,
//! and nothing that was never added.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::history::{Op, Operation, Outcome};

/// What the final read says about the adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetReport {
    /// Acknowledged adds missing from the final read: lost writes.
    pub lost: Vec<u64>,
    /// Ids (history indices) of the lost adds, for the timeline.
    pub lost_ops: Vec<usize>,
    /// Elements read that no add ever tried: corruption.
    pub unexpected: Vec<u64>,
    /// Elements read whose add was known to have failed.
    pub failed_but_present: Vec<u64>,
    /// Adds with unknown outcome that did take effect.
    pub recovered: usize,
    /// Adds with unknown outcome that did not.
    pub not_recovered: usize,
    pub acknowledged: usize,
    pub final_read_size: usize,
}

impl SetReport {
    pub fn is_valid(&self) -> bool {
        self.lost.is_empty() && self.unexpected.is_empty() && self.failed_but_present.is_empty()
    }
}

/// Checks adds against the last successful full read. `None` when no read succeeded
/// (nothing can be concluded).
pub fn check(ops: &[Operation]) -> Option<SetReport> {
    let final_read = ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok)
        .filter_map(|o| match &o.op {
            Op::ReadSet { elements: Some(e) } => Some((o.ret, e)),
            _ => None,
        })
        .max_by_key(|(ret, _)| *ret)?
        .1;
    let read: BTreeSet<u64> = final_read.iter().copied().collect();
    let mut report = SetReport {
        lost: Vec::new(),
        lost_ops: Vec::new(),
        unexpected: Vec::new(),
        failed_but_present: Vec::new(),
        recovered: 0,
        not_recovered: 0,
        acknowledged: 0,
        final_read_size: read.len(),
    };
    let mut attempted = BTreeSet::new();
    for o in ops {
        let Op::Add { element } = o.op else { continue };
        attempted.insert(element);
        let present = read.contains(&element);
        match (o.outcome, present) {
            (Outcome::Ok, true) => report.acknowledged += 1,
            (Outcome::Ok, false) => {
                report.acknowledged += 1;
                report.lost.push(element);
                report.lost_ops.push(o.id);
            }
            (Outcome::Info, true) => report.recovered += 1,
            (Outcome::Info, false) => report.not_recovered += 1,
            (Outcome::Fail, true) => report.failed_but_present.push(element),
            (Outcome::Fail, false) => {}
        }
    }
    report.unexpected = read.difference(&attempted).copied().collect();
    report.lost.sort_unstable();
    Some(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: usize, ret: u64, outcome: Outcome, o: Op) -> Operation {
        Operation {
            id,
            process: 0,
            client: 0,
            call: ret.saturating_sub(1),
            ret,
            outcome,
            op: o,
            error: None,
        }
    }

    fn add(id: usize, outcome: Outcome, element: u64) -> Operation {
        op(id, id as u64 + 1, outcome, Op::Add { element })
    }

    #[test]
    fn an_acknowledged_add_missing_from_the_final_read_is_lost() {
        let ops = vec![
            add(0, Outcome::Ok, 1),
            add(1, Outcome::Ok, 2),
            add(2, Outcome::Info, 3),
            add(3, Outcome::Info, 4),
            add(4, Outcome::Fail, 5),
            op(
                9,
                100,
                Outcome::Ok,
                Op::ReadSet {
                    elements: Some(vec![1, 3]),
                },
            ),
        ];
        let r = check(&ops).expect("a final read");
        assert_eq!(r.lost, vec![2]);
        assert_eq!(r.lost_ops, vec![1]);
        assert_eq!((r.recovered, r.not_recovered), (1, 1));
        assert!(!r.is_valid());
    }

    #[test]
    fn elements_never_added_and_failed_adds_that_appear_are_anomalies() {
        let ops = vec![
            add(0, Outcome::Fail, 5),
            op(
                9,
                100,
                Outcome::Ok,
                Op::ReadSet {
                    elements: Some(vec![5, 77]),
                },
            ),
        ];
        let r = check(&ops).expect("a final read");
        assert_eq!(r.unexpected, vec![77]);
        assert_eq!(r.failed_but_present, vec![5]);
        assert!(!r.is_valid());
    }

    #[test]
    fn the_last_successful_read_is_the_final_one() {
        let ops = vec![
            add(0, Outcome::Ok, 1),
            op(
                5,
                10,
                Outcome::Ok,
                Op::ReadSet {
                    elements: Some(vec![]),
                },
            ),
            op(
                6,
                20,
                Outcome::Ok,
                Op::ReadSet {
                    elements: Some(vec![1]),
                },
            ),
            op(7, 30, Outcome::Fail, Op::ReadSet { elements: None }),
        ];
        assert!(check(&ops).expect("a final read").is_valid());
        assert_eq!(check(&ops[..1]), None);
    }
}
