//! The history of a run: every operation's invocation and completion and every fault
//! window, with monotonic timestamps, recorded while the run goes and written as JSON lines.

use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What an operation asks for and, once completed, what it observed. Values are unique
/// integers chosen by the workload, so every read tells which write it saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "kebab-case")]
pub enum Op {
    /// Register read; `value` is filled in on completion (`None`: the key is absent).
    Read {
        key: String,
        #[serde(default)]
        value: Option<u64>,
    },
    /// Register write of a unique value.
    Write { key: String, value: u64 },
    /// Register compare-and-set: `from` -> `to` (`to` is unique).
    Cas { key: String, from: u64, to: u64 },
    /// Set workload: add a unique element.
    Add { element: u64 },
    /// Set workload: read every element (filled in on completion).
    ReadSet {
        #[serde(default)]
        elements: Option<Vec<u64>>,
    },
    /// Append workload: append a unique element to the list at `key`.
    Append { key: String, element: u64 },
    /// Append workload: read the list at `key` (filled in on completion).
    ReadList {
        key: String,
        #[serde(default)]
        list: Option<Vec<u64>>,
    },
}

impl Op {
    /// The key this operation touches, for ops on a single key.
    pub fn key(&self) -> Option<&str> {
        match self {
            Op::Read { key, .. }
            | Op::Write { key, .. }
            | Op::Cas { key, .. }
            | Op::Append { key, .. }
            | Op::ReadList { key, .. } => Some(key),
            Op::Add { .. } | Op::ReadSet { .. } => None,
        }
    }

    /// A short name of the operation kind (`read`, `write`, `cas`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Read { .. } => "read",
            Op::Write { .. } => "write",
            Op::Cas { .. } => "cas",
            Op::Add { .. } => "add",
            Op::ReadSet { .. } => "read-set",
            Op::Append { .. } => "append",
            Op::ReadList { .. } => "read-list",
        }
    }

    /// True when the operation never changes state (an info read is the same as a
    /// failed one).
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            Op::Read { .. } | Op::ReadSet { .. } | Op::ReadList { .. }
        )
    }
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It took effect (a read: it observed what the op says).
    Ok,
    /// It certainly did not take effect.
    Fail,
    /// Unknown: it may take effect at any point after its invocation, or never.
    Info,
}

/// One operation event (invocation or completion).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpEvent {
    /// Position in the history.
    pub index: usize,
    /// Nanoseconds since the run started (monotonic clock).
    pub time: u64,
    /// Logical process: a client gets a new process after an `info` completion, because
    /// its unfinished operation may still be in flight.
    pub process: u64,
    /// The client (worker) that issued the operation: one lane of the timeline.
    pub client: usize,
    #[serde(flatten)]
    pub op: Op,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The start or end of a fault window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultEvent {
    pub index: usize,
    pub time: u64,
    /// What the fault is, e.g. `partition isolate-leader`.
    pub fault: String,
    /// The nodes (slots) it hit.
    pub nodes: Vec<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One line of `history.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    Invoke(OpEvent),
    Ok(OpEvent),
    Fail(OpEvent),
    Info(OpEvent),
    FaultStart(FaultEvent),
    FaultEnd(FaultEvent),
}

impl Event {
    pub fn time(&self) -> u64 {
        match self {
            Event::Invoke(e) | Event::Ok(e) | Event::Fail(e) | Event::Info(e) => e.time,
            Event::FaultStart(f) | Event::FaultEnd(f) => f.time,
        }
    }
}

/// An operation with its invocation and completion paired: what the checkers read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Operation {
    /// History index of the invocation; identifies the operation.
    pub id: usize,
    pub process: u64,
    pub client: usize,
    /// Invocation time (ns since start).
    pub call: u64,
    /// Completion time (ns since start). For `info`, when the client gave up; the
    /// operation itself may take effect later.
    pub ret: u64,
    pub outcome: Outcome,
    /// The completed op (with what a read observed); the invoked op when incomplete.
    pub op: Op,
    pub error: Option<String>,
}

/// A fault window, paired from its start and end events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FaultWindow {
    pub fault: String,
    pub nodes: Vec<usize>,
    pub start: u64,
    /// `None` when the history ends before the fault was healed.
    pub end: Option<u64>,
    pub error: Option<String>,
}

/// Pairs invocations with completions (by process). An invocation without completion is
/// `info` at the end of the history: its outcome is unknown.
pub fn operations(events: &[Event]) -> Vec<Operation> {
    let end = events.iter().map(Event::time).max().unwrap_or(0);
    let mut open: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let mut ops: Vec<Operation> = Vec::new();
    for event in events {
        let (e, outcome) = match event {
            Event::Invoke(e) => {
                open.insert(e.process, ops.len());
                ops.push(Operation {
                    id: e.index,
                    process: e.process,
                    client: e.client,
                    call: e.time,
                    ret: end,
                    outcome: Outcome::Info,
                    op: e.op.clone(),
                    error: Some("no completion recorded".into()),
                });
                continue;
            }
            Event::Ok(e) => (e, Outcome::Ok),
            Event::Fail(e) => (e, Outcome::Fail),
            Event::Info(e) => (e, Outcome::Info),
            Event::FaultStart(_) | Event::FaultEnd(_) => continue,
        };
        if let Some(i) = open.remove(&e.process) {
            let op = &mut ops[i];
            op.ret = e.time;
            op.outcome = outcome;
            op.op = e.op.clone();
            op.error = e.error.clone();
        }
    }
    ops
}

/// Pairs fault starts with their ends (by fault description and order).
pub fn fault_windows(events: &[Event]) -> Vec<FaultWindow> {
    let mut windows: Vec<FaultWindow> = Vec::new();
    for event in events {
        match event {
            Event::FaultStart(f) => windows.push(FaultWindow {
                fault: f.fault.clone(),
                nodes: f.nodes.clone(),
                start: f.time,
                end: None,
                error: f.error.clone(),
            }),
            Event::FaultEnd(f) => {
                if let Some(w) = windows
                    .iter_mut()
                    .find(|w| w.end.is_none() && w.fault == f.fault)
                {
                    w.end = Some(f.time);
                    if f.error.is_some() {
                        w.error = f.error.clone();
                    }
                }
            }
            _ => {}
        }
    }
    windows
}

/// Collects events while a run goes; shared by every client task and the nemesis.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    events: Mutex<Vec<Event>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since the run started.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn push(&self, make: impl FnOnce(usize, u64) -> Event) {
        // A poisoned lock only means another task panicked mid-push; the vector itself
        // is still whole, so keep recording.
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        // The time is taken under the lock so indices and times grow together.
        let time = self.now();
        let index = events.len();
        events.push(make(index, time));
    }

    pub fn invoke(&self, process: u64, client: usize, op: Op) {
        self.push(|index, time| {
            Event::Invoke(OpEvent {
                index,
                time,
                process,
                client,
                op,
                error: None,
            })
        });
    }

    pub fn complete(
        &self,
        process: u64,
        client: usize,
        outcome: Outcome,
        op: Op,
        error: Option<String>,
    ) {
        self.push(|index, time| {
            let e = OpEvent {
                index,
                time,
                process,
                client,
                op,
                error,
            };
            match outcome {
                Outcome::Ok => Event::Ok(e),
                Outcome::Fail => Event::Fail(e),
                Outcome::Info => Event::Info(e),
            }
        });
    }

    pub fn fault(&self, start: bool, fault: &str, nodes: &[usize], error: Option<String>) {
        self.push(|index, time| {
            let f = FaultEvent {
                index,
                time,
                fault: fault.to_string(),
                nodes: nodes.to_vec(),
                error,
            };
            if start {
                Event::FaultStart(f)
            } else {
                Event::FaultEnd(f)
            }
        });
    }

    /// A copy of the events so far.
    pub fn snapshot(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts of completions so far: (ok, fail, info).
    pub fn counts(&self) -> (usize, usize, usize) {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let mut c = (0, 0, 0);
        for e in events.iter() {
            match e {
                Event::Ok(_) => c.0 += 1,
                Event::Fail(_) => c.1 += 1,
                Event::Info(_) => c.2 += 1,
                _ => {}
            }
        }
        c
    }
}

/// Renders events as JSON lines.
pub fn to_jsonl(events: &[Event]) -> Result<String, serde_json::Error> {
    let mut out = String::new();
    for e in events {
        out.push_str(&serde_json::to_string(e)?);
        out.push('\n');
    }
    Ok(out)
}

/// Parses JSON lines (blank lines ignored).
pub fn from_jsonl(text: &str) -> Result<Vec<Event>, serde_json::Error> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, index: usize, time: u64, process: u64, op: Op) -> Event {
        let e = OpEvent {
            index,
            time,
            process,
            client: 0,
            op,
            error: None,
        };
        match kind {
            "invoke" => Event::Invoke(e),
            "ok" => Event::Ok(e),
            "fail" => Event::Fail(e),
            _ => Event::Info(e),
        }
    }

    #[test]
    fn events_round_trip_through_json_lines() {
        let events = vec![
            ev(
                "invoke",
                0,
                5,
                0,
                Op::Read {
                    key: "k".into(),
                    value: None,
                },
            ),
            ev(
                "ok",
                1,
                9,
                0,
                Op::Read {
                    key: "k".into(),
                    value: Some(3),
                },
            ),
            Event::FaultStart(FaultEvent {
                index: 2,
                time: 10,
                fault: "kill leader".into(),
                nodes: vec![2],
                error: None,
            }),
            ev(
                "info",
                3,
                11,
                1,
                Op::ReadSet {
                    elements: Some(vec![1, 2]),
                },
            ),
        ];
        let text = to_jsonl(&events).expect("serialize");
        assert!(
            text.lines()
                .next()
                .is_some_and(|l| l.contains("\"type\":\"invoke\"") && l.contains("\"f\":\"read\""))
        );
        assert_eq!(from_jsonl(&text).expect("parse"), events);
    }

    #[test]
    fn invocations_pair_with_completions_by_process() {
        let w = |v| Op::Write {
            key: "k".into(),
            value: v,
        };
        let events = vec![
            ev("invoke", 0, 1, 0, w(1)),
            ev("invoke", 1, 2, 1, w(2)),
            ev("ok", 2, 3, 1, w(2)),
            ev("fail", 3, 4, 0, w(1)),
            ev("invoke", 4, 5, 0, w(3)),
        ];
        let ops = operations(&events);
        assert_eq!(ops.len(), 3);
        assert_eq!((ops[0].outcome, ops[0].ret), (Outcome::Fail, 4));
        assert_eq!((ops[1].outcome, ops[1].ret), (Outcome::Ok, 3));
        // Never completed: unknown outcome.
        assert_eq!(ops[2].outcome, Outcome::Info);
    }

    #[test]
    fn fault_windows_pair_start_and_end() {
        let r = Recorder::new();
        r.fault(true, "pause one", &[1], None);
        r.fault(false, "pause one", &[1], None);
        r.fault(true, "kill leader", &[2], None);
        let w = fault_windows(&r.snapshot());
        assert_eq!(w.len(), 2);
        assert!(w[0].end.is_some_and(|e| e >= w[0].start));
        assert_eq!(w[1].end, None);
    }
}
