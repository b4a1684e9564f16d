//! The register workload's check: each key is an independent read/write/compare-and-set
//! register, checked for linearizability on its own.

use std::collections::BTreeMap;

use serde::Serialize;

use super::linearizable::{self, Entry, Model, Verdict};
use crate::history::{Op, Operation, Outcome};

/// A register holding an optional unique value (`None`: never written).
#[derive(Debug, Clone, Copy, Default)]
pub struct Register;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Read,
    Write(u64),
    Cas { from: u64, to: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A completed read saw this.
    Read(Option<u64>),
    /// A write or a successful compare-and-set completed.
    Done,
    /// Outcome unknown.
    Unknown,
}

impl Model for Register {
    type State = Option<u64>;
    type Input = Input;
    type Output = Output;

    fn init(&self) -> Option<u64> {
        None
    }

    fn step(&self, state: &Option<u64>, input: &Input, output: &Output) -> Option<Option<u64>> {
        match (input, output) {
            (Input::Read, Output::Read(seen)) => (seen == state).then_some(*state),
            (Input::Read, _) => Some(*state),
            (Input::Write(v), _) => Some(Some(*v)),
            (Input::Cas { from, to }, Output::Unknown) => {
                // Had it run here, it would have applied only if the value matched;
                // "never ran" is the same as linearizing it last.
                Some(if *state == Some(*from) {
                    Some(*to)
                } else {
                    *state
                })
            }
            (Input::Cas { from, to }, _) => (*state == Some(*from)).then_some(Some(*to)),
        }
    }
}

/// Converts one key's operations into checker entries. Failed ops certainly did not take
/// effect and reads with no answer constrain nothing, so both are left out.
pub fn entries(ops: &[&Operation]) -> Vec<Entry<Input, Output>> {
    let mut out = Vec::new();
    for op in ops {
        let (input, output) = match (&op.op, op.outcome) {
            (_, Outcome::Fail) => continue,
            (Op::Read { .. }, Outcome::Info) => continue,
            (Op::Read { value, .. }, Outcome::Ok) => (Input::Read, Output::Read(*value)),
            (Op::Write { value, .. }, Outcome::Ok) => (Input::Write(*value), Output::Done),
            (Op::Write { value, .. }, Outcome::Info) => (Input::Write(*value), Output::Unknown),
            (Op::Cas { from, to, .. }, Outcome::Ok) => (
                Input::Cas {
                    from: *from,
                    to: *to,
                },
                Output::Done,
            ),
            (Op::Cas { from, to, .. }, Outcome::Info) => (
                Input::Cas {
                    from: *from,
                    to: *to,
                },
                Output::Unknown,
            ),
            _ => continue,
        };
        let ret = match output {
            Output::Unknown => None,
            _ => Some(op.ret),
        };
        out.push(Entry {
            id: op.id,
            call: op.call,
            ret,
            input,
            output,
        });
    }
    out
}

/// Drops unknown-outcome writes (and compare-and-sets) whose value no read and no
/// compare-and-set ever mentions. Such an op can always be taken as "never happened":
/// in any linearization that places it, no op between it and the next write saw its
/// value, so removing it (and moving unknown compare-and-sets in that span to the end)
/// leaves a linearization. Without this, every pending unknown op doubles the search
/// space, and a partition produces dozens of them.
pub fn prune_unobserved(entries: Vec<Entry<Input, Output>>) -> Vec<Entry<Input, Output>> {
    let mut observed = std::collections::HashSet::new();
    for e in &entries {
        match (&e.input, &e.output) {
            (Input::Read, Output::Read(Some(v))) => {
                observed.insert(*v);
            }
            (Input::Cas { from, .. }, _) => {
                observed.insert(*from);
            }
            _ => {}
        }
    }
    entries
        .into_iter()
        .filter(|e| match (&e.input, &e.output) {
            (Input::Write(v) | Input::Cas { to: v, .. }, Output::Unknown) => observed.contains(v),
            _ => true,
        })
        .collect()
}

/// The verdict for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum KeyVerdict {
    Valid,
    Invalid { window: FailingWindow },
    Unknown { steps: u64 },
}

/// The smallest failing window of one key: the operation whose completion no
/// linearization gets past (the shortest impossible prefix ends there), the operations
/// concurrent with it, and the last few that completed just before it began (what it
/// should have seen).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailingWindow {
    pub key: String,
    pub culprit: usize,
    /// Operation ids (history indices of their invocations), in call order.
    pub ops: Vec<usize>,
    pub start: u64,
    pub end: u64,
    /// Partial linearization depth reached by the search.
    pub deepest: usize,
}

/// How many completed ops before the culprit's call the window includes.
const CONTEXT_BEFORE: usize = 3;

/// The window around `culprit` among one key's ops.
pub fn failing_window(
    key: &str,
    ops: &[&Operation],
    culprit: usize,
    deepest: usize,
) -> FailingWindow {
    let Some(c) = ops.iter().find(|o| o.id == culprit) else {
        return FailingWindow {
            key: key.to_string(),
            culprit,
            ops: vec![culprit],
            start: 0,
            end: 0,
            deepest,
        };
    };
    let relevant = |o: &&&Operation| o.outcome != Outcome::Fail;
    let mut window: Vec<&Operation> = ops
        .iter()
        .filter(relevant)
        .filter(|o| o.call <= c.ret && o.ret >= c.call)
        .copied()
        .collect();
    let mut before: Vec<&Operation> = ops
        .iter()
        .filter(relevant)
        .filter(|o| o.ret < c.call && o.outcome == Outcome::Ok)
        .copied()
        .collect();
    before.sort_by_key(|o| std::cmp::Reverse(o.ret));
    window.extend(before.into_iter().take(CONTEXT_BEFORE));
    window.sort_by_key(|o| (o.call, o.id));
    window.dedup_by_key(|o| o.id);
    FailingWindow {
        key: key.to_string(),
        culprit,
        start: window.iter().map(|o| o.call).min().unwrap_or(c.call),
        end: c.ret,
        ops: window.iter().map(|o| o.id).collect(),
        deepest,
    }
}

/// Checks every key of a register history; `budget` is search steps per key.
pub fn check(ops: &[Operation], budget: u64) -> BTreeMap<String, KeyVerdict> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in ops {
        if let (Some(key), Op::Read { .. } | Op::Write { .. } | Op::Cas { .. }) =
            (op.op.key(), &op.op)
        {
            by_key.entry(key).or_default().push(op);
        }
    }
    by_key
        .into_iter()
        .map(|(key, key_ops)| {
            let entries = prune_unobserved(entries(&key_ops));
            let verdict = match linearizable::check(&Register, &entries, budget) {
                Verdict::Valid => KeyVerdict::Valid,
                Verdict::Unknown { steps } => KeyVerdict::Unknown { steps },
                Verdict::Invalid(f) => KeyVerdict::Invalid {
                    window: failing_window(key, &key_ops, f.culprit, f.deepest),
                },
            };
            (key.to_string(), verdict)
        })
        .collect()
}

#[cfg(test)]
#[path = "register_test.rs"]
mod tests;
