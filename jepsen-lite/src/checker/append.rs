//! The append workload's check: on each key, every read is a list, and all reads are
//! prefixes of one another in an order that respects real time; acknowledged appends
//! are never missing from a read that began after they completed.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::history::{Op, Operation, Outcome};

/// One anomaly on one key; `ops` are the operation ids involved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppendAnomaly {
    pub kind: AppendAnomalyKind,
    pub key: String,
    pub ops: Vec<usize>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AppendAnomalyKind {
    /// An element appears twice in one read.
    DuplicateElement,
    /// A read holds an element no append to that key tried (or one that failed).
    PhantomElement,
    /// Two reads are not prefixes of one another: the list forked.
    IncompatibleOrder,
    /// A read is shorter than a read that completed before it began.
    StaleRead,
    /// An acknowledged append is missing from a read that began after it completed
    /// (or from the final read).
    LostAppend,
}

struct Read<'a> {
    id: usize,
    call: u64,
    ret: u64,
    list: &'a [u64],
}

/// Checks every key; returns the anomalies found (empty: valid).
pub fn check(ops: &[Operation]) -> Vec<AppendAnomaly> {
    let mut keys: BTreeMap<&str, (Vec<&Operation>, Vec<Read<'_>>)> = BTreeMap::new();
    for o in ops {
        match &o.op {
            Op::Append { key, .. } => keys.entry(key).or_default().0.push(o),
            Op::ReadList {
                key,
                list: Some(list),
            } if o.outcome == Outcome::Ok => keys.entry(key).or_default().1.push(Read {
                id: o.id,
                call: o.call,
                ret: o.ret,
                list,
            }),
            _ => {}
        }
    }
    let mut anomalies = Vec::new();
    for (key, (appends, mut reads)) in keys {
        check_key(key, &appends, &mut reads, &mut anomalies);
    }
    anomalies
}

fn check_key(
    key: &str,
    appends: &[&Operation],
    reads: &mut [Read<'_>],
    out: &mut Vec<AppendAnomaly>,
) {
    let mut anomaly = |kind, ops: Vec<usize>, detail: String| {
        out.push(AppendAnomaly {
            kind,
            key: key.to_string(),
            ops,
            detail,
        })
    };
    let possible: HashSet<u64> = appends
        .iter()
        .filter(|o| o.outcome != Outcome::Fail)
        .filter_map(|o| match o.op {
            Op::Append { element, .. } => Some(element),
            _ => None,
        })
        .collect();
    for r in reads.iter() {
        let mut seen = HashSet::new();
        for e in r.list {
            if !seen.insert(*e) {
                anomaly(
                    AppendAnomalyKind::DuplicateElement,
                    vec![r.id],
                    format!("element {e} appears twice"),
                );
            }
            if !possible.contains(e) {
                anomaly(
                    AppendAnomalyKind::PhantomElement,
                    vec![r.id],
                    format!("element {e} was never appended to {key} (or its append failed)"),
                );
            }
        }
    }

    // All reads must be prefixes of the longest one.
    reads.sort_by_key(|r| (r.list.len(), r.ret));
    let Some(longest) = reads.last().map(|r| (r.id, r.list)) else {
        return;
    };
    let mut forked = false;
    for r in reads.iter() {
        if !longest.1.starts_with(r.list) {
            forked = true;
            anomaly(
                AppendAnomalyKind::IncompatibleOrder,
                vec![r.id, longest.0],
                format!("{:?} is not a prefix of {:?}", r.list, longest.1),
            );
        }
    }
    if forked {
        // Lengths no longer say anything about order.
        return;
    }

    // Real time: a read must be at least as long as every read that completed before it
    // began, and hold every acknowledged append that completed before it began.
    let position: HashMap<u64, usize> =
        longest.1.iter().enumerate().map(|(i, e)| (*e, i)).collect();
    // (completion time, required length, op id) sorted by completion time.
    let mut floors: Vec<(u64, usize, usize, bool)> = reads
        .iter()
        .map(|r| (r.ret, r.list.len(), r.id, true))
        .collect();
    for a in appends.iter().filter(|a| a.outcome == Outcome::Ok) {
        let Op::Append { element, .. } = a.op else {
            continue;
        };
        match position.get(&element) {
            Some(p) => floors.push((a.ret, p + 1, a.id, false)),
            None => {
                // Never seen by any read: lost, unless no read began after it completed.
                if let Some(r) = reads.iter().find(|r| r.call > a.ret) {
                    anomaly(
                        AppendAnomalyKind::LostAppend,
                        vec![a.id, r.id],
                        format!("acknowledged append of {element} is in no read"),
                    );
                }
            }
        }
    }
    floors.sort_unstable();
    let mut by_call: Vec<&Read<'_>> = reads.iter().collect();
    by_call.sort_by_key(|r| r.call);
    let mut best: Option<(usize, usize, bool)> = None; // (required len, op id, is read)
    let mut i = 0;
    for r in by_call {
        while i < floors.len() && floors[i].0 < r.call {
            let (_, len, id, is_read) = floors[i];
            // On a tie, blame the read: "stale read" says more than "lost append".
            if best.is_none_or(|(l, _, _)| len > l || (len == l && is_read)) {
                best = Some((len, id, is_read));
            }
            i += 1;
        }
        if let Some((len, id, is_read)) = best
            && r.list.len() < len
        {
            let (kind, detail) = if is_read {
                (
                    AppendAnomalyKind::StaleRead,
                    format!(
                        "read of {} elements after a read of {len} had completed",
                        r.list.len()
                    ),
                )
            } else {
                (
                    AppendAnomalyKind::LostAppend,
                    format!(
                        "read of {} elements misses an append acknowledged before it began (position {})",
                        r.list.len(),
                        len - 1
                    ),
                )
            };
            anomaly(kind, vec![id, r.id], detail);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: usize, call: u64, ret: u64, outcome: Outcome, o: Op) -> Operation {
        Operation {
            id,
            process: 0,
            client: 0,
            call,
            ret,
            outcome,
            op: o,
            error: None,
        }
    }
    fn append(id: usize, call: u64, ret: u64, outcome: Outcome, element: u64) -> Operation {
        op(
            id,
            call,
            ret,
            outcome,
            Op::Append {
                key: "k".into(),
                element,
            },
        )
    }
    fn read(id: usize, call: u64, ret: u64, list: &[u64]) -> Operation {
        op(
            id,
            call,
            ret,
            Outcome::Ok,
            Op::ReadList {
                key: "k".into(),
                list: Some(list.to_vec()),
            },
        )
    }
    fn kinds(ops: &[Operation]) -> Vec<AppendAnomalyKind> {
        check(ops).into_iter().map(|a| a.kind).collect()
    }

    #[test]
    fn growing_prefixes_are_valid() {
        let ops = vec![
            append(0, 0, 1, Outcome::Ok, 1),
            read(1, 2, 3, &[1]),
            append(2, 2, 5, Outcome::Info, 2),
            read(3, 4, 6, &[1, 2]),
            read(4, 7, 8, &[1, 2]),
        ];
        assert_eq!(kinds(&ops), vec![]);
    }

    #[test]
    fn a_forked_list_is_an_incompatible_order() {
        let ops = vec![
            append(0, 0, 1, Outcome::Ok, 1),
            append(1, 0, 1, Outcome::Ok, 2),
            read(2, 2, 3, &[1, 2]),
            read(3, 4, 5, &[2, 1]),
        ];
        assert!(kinds(&ops).contains(&AppendAnomalyKind::IncompatibleOrder));
    }

    #[test]
    fn a_shorter_read_after_a_longer_one_completed_is_stale() {
        let ops = vec![
            append(0, 0, 1, Outcome::Ok, 1),
            append(1, 0, 1, Outcome::Ok, 2),
            read(2, 2, 3, &[1, 2]),
            read(3, 4, 5, &[1]),
        ];
        assert!(kinds(&ops).contains(&AppendAnomalyKind::StaleRead));
    }

    #[test]
    fn a_read_missing_an_earlier_acknowledged_append_is_lost_append() {
        let ops = vec![
            append(0, 0, 1, Outcome::Ok, 1),
            append(1, 2, 3, Outcome::Ok, 2),
            read(2, 1, 9, &[1, 2]),
            read(3, 4, 5, &[1]),
        ];
        assert_eq!(kinds(&ops), vec![AppendAnomalyKind::LostAppend]);
        // Acknowledged but in no later read at all.
        let ops = vec![append(0, 0, 1, Outcome::Ok, 1), read(1, 4, 5, &[])];
        assert_eq!(kinds(&ops), vec![AppendAnomalyKind::LostAppend]);
    }

    #[test]
    fn duplicates_and_phantoms_are_caught() {
        let ops = vec![
            append(0, 0, 1, Outcome::Ok, 1),
            append(1, 0, 1, Outcome::Fail, 2),
            read(2, 2, 3, &[1, 1, 2, 9]),
        ];
        let k = kinds(&ops);
        assert!(k.contains(&AppendAnomalyKind::DuplicateElement));
        assert_eq!(
            k.iter()
                .filter(|k| **k == AppendAnomalyKind::PhantomElement)
                .count(),
            2
        );
    }
}
