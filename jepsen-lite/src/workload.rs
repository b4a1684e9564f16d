//! Workloads: what operations the clients issue (register, set, append), how each maps
//! onto key-value requests, and the final reads after healing.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;

use crate::history::{Op, Outcome};
use crate::kv::{Expect, KvClient, KvError};

/// Which workload a run drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// Read / write / compare-and-set over a few keys, checked for linearizability.
    Register,
    /// Unique adds; the final read must hold every acknowledged add.
    Set,
    /// List append through Txn; reads must be prefixes of later reads.
    Append,
}

/// Prefix of the set workload's keys: one key per element.
const SET_PREFIX: &str = "set/";
/// How many compare-and-set rounds an append tries before giving up (contention).
const APPEND_ATTEMPTS: usize = 5;

/// The shared generator state of a run's workload.
#[derive(Debug)]
pub struct Workload {
    pub kind: WorkloadKind,
    keys: usize,
    ops_per_key: u64,
    ops: AtomicU64,
    next_value: AtomicU64,
    /// Last value seen per register key: what a compare-and-set expects.
    last_seen: Mutex<HashMap<String, u64>>,
    used_keys: Mutex<BTreeSet<String>>,
}

/// A completed operation: outcome, the op with what it observed, and the error if any.
pub type Completion = (Outcome, Op, Option<String>);

impl Workload {
    /// `keys` live keys at a time; each key takes about `ops_per_key` operations before
    /// the workload moves to a fresh one, which keeps each key's history small enough to
    /// check (the search is exponential in the concurrency of one key's history).
    pub fn new(kind: WorkloadKind, keys: usize, ops_per_key: u64) -> Workload {
        Workload {
            kind,
            keys: keys.max(1),
            ops_per_key: ops_per_key.max(1),
            ops: AtomicU64::new(0),
            next_value: AtomicU64::new(1),
            last_seen: Mutex::new(HashMap::new()),
            used_keys: Mutex::new(BTreeSet::new()),
        }
    }

    fn fresh_value(&self) -> u64 {
        self.next_value.fetch_add(1, Ordering::Relaxed)
    }

    fn key(&self, prefix: &str, rng: &mut impl Rng) -> String {
        let n = self.ops.fetch_add(1, Ordering::Relaxed);
        let generation = n / (self.ops_per_key * self.keys as u64);
        let key = format!("{prefix}/{generation}/{}", rng.random_range(0..self.keys));
        self.used_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone());
        key
    }

    /// The next operation to invoke.
    pub fn next_op(&self, rng: &mut impl Rng) -> Op {
        match self.kind {
            WorkloadKind::Register => {
                let key = self.key("reg", rng);
                let roll = rng.random_range(0..4);
                let last = self
                    .last_seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&key)
                    .copied();
                match (roll, last) {
                    (0 | 1, _) => Op::Read { key, value: None },
                    (3, Some(from)) => Op::Cas {
                        key,
                        from,
                        to: self.fresh_value(),
                    },
                    _ => Op::Write {
                        key,
                        value: self.fresh_value(),
                    },
                }
            }
            WorkloadKind::Set => Op::Add {
                element: self.fresh_value(),
            },
            WorkloadKind::Append => {
                let key = self.key("list", rng);
                if rng.random_bool(0.5) {
                    Op::ReadList { key, list: None }
                } else {
                    Op::Append {
                        key,
                        element: self.fresh_value(),
                    }
                }
            }
        }
    }

    fn saw(&self, key: &str, value: u64) {
        self.last_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), value);
    }

    /// Runs `op` through `client`.
    pub async fn run(&self, client: &KvClient, op: Op) -> Completion {
        let failed = |op: Op, e: KvError| {
            // A read never changes anything: whatever went wrong, it did not happen.
            let outcome = if e.definite || op.is_read() {
                Outcome::Fail
            } else {
                Outcome::Info
            };
            (outcome, op, Some(e.message))
        };
        match op {
            Op::Read { key, .. } => match client.get(&key).await {
                Ok(v) => match v.map(|v| parse_u64(&v.value)).transpose() {
                    Ok(value) => {
                        if let Some(v) = value {
                            self.saw(&key, v);
                        }
                        (Outcome::Ok, Op::Read { key, value }, None)
                    }
                    Err(e) => (Outcome::Fail, Op::Read { key, value: None }, Some(e)),
                },
                Err(e) => failed(Op::Read { key, value: None }, e),
            },
            Op::Write { key, value } => {
                match client.put(&key, value.to_string().as_bytes()).await {
                    Ok(()) => {
                        self.saw(&key, value);
                        (Outcome::Ok, Op::Write { key, value }, None)
                    }
                    Err(e) => failed(Op::Write { key, value }, e),
                }
            }
            Op::Cas { key, from, to } => {
                let expect = Expect::Value(from.to_string().into_bytes());
                match client.cas(&key, &expect, to.to_string().as_bytes()).await {
                    Ok(true) => {
                        self.saw(&key, to);
                        (Outcome::Ok, Op::Cas { key, from, to }, None)
                    }
                    Ok(false) => (
                        Outcome::Fail,
                        Op::Cas { key, from, to },
                        Some("compare failed".into()),
                    ),
                    Err(e) => failed(Op::Cas { key, from, to }, e),
                }
            }
            Op::Add { element } => match client.put(&set_key(element), b"1").await {
                Ok(()) => (Outcome::Ok, Op::Add { element }, None),
                Err(e) => failed(Op::Add { element }, e),
            },
            Op::ReadSet { .. } => match client.keys_with_prefix(SET_PREFIX).await {
                Ok(keys) => {
                    let parsed: Result<Vec<u64>, String> = keys
                        .iter()
                        .map(|k| parse_u64(k.strip_prefix(SET_PREFIX.as_bytes()).unwrap_or(k)))
                        .collect();
                    match parsed {
                        Ok(mut elements) => {
                            elements.sort_unstable();
                            (
                                Outcome::Ok,
                                Op::ReadSet {
                                    elements: Some(elements),
                                },
                                None,
                            )
                        }
                        Err(e) => (Outcome::Fail, Op::ReadSet { elements: None }, Some(e)),
                    }
                }
                Err(e) => failed(Op::ReadSet { elements: None }, e),
            },
            Op::ReadList { key, .. } => match client.get(&key).await {
                Ok(v) => match parse_list(v.as_ref().map_or(&[][..], |v| &v.value)) {
                    Ok(list) => (
                        Outcome::Ok,
                        Op::ReadList {
                            key,
                            list: Some(list),
                        },
                        None,
                    ),
                    Err(e) => (Outcome::Fail, Op::ReadList { key, list: None }, Some(e)),
                },
                Err(e) => failed(Op::ReadList { key, list: None }, e),
            },
            Op::Append { key, element } => self.append(client, key, element).await,
        }
    }

    /// Read the list, then write it back one element longer if nobody wrote in between
    /// (compare on the mod revision); on a lost race, go again.
    async fn append(&self, client: &KvClient, key: String, element: u64) -> Completion {
        let op = Op::Append {
            key: key.clone(),
            element,
        };
        for _ in 0..APPEND_ATTEMPTS {
            // Every earlier round's write certainly did not apply (its compare failed),
            // so a failed read here still means nothing was written.
            let current = match client.get(&key).await {
                Ok(c) => c,
                Err(e) => return (Outcome::Fail, op, Some(e.message)),
            };
            let (expect, mut value) = match current {
                None => (Expect::Absent, Vec::new()),
                Some(v) => (Expect::ModRevision(v.mod_revision), v.value),
            };
            if !value.is_empty() {
                value.push(b',');
            }
            value.extend_from_slice(element.to_string().as_bytes());
            match client.cas(&key, &expect, &value).await {
                Ok(true) => return (Outcome::Ok, op, None),
                Ok(false) => continue,
                Err(e) => {
                    let outcome = if e.definite {
                        Outcome::Fail
                    } else {
                        Outcome::Info
                    };
                    return (outcome, op, Some(e.message));
                }
            }
        }
        (
            Outcome::Fail,
            op,
            Some(format!(
                "lost the compare-and-set race {APPEND_ATTEMPTS} times"
            )),
        )
    }

    /// The reads to run after healing, whose results the checker needs.
    pub fn final_ops(&self) -> Vec<Op> {
        match self.kind {
            WorkloadKind::Register => Vec::new(),
            WorkloadKind::Set => vec![Op::ReadSet { elements: None }],
            WorkloadKind::Append => self
                .used_keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|key| Op::ReadList {
                    key: key.clone(),
                    list: None,
                })
                .collect(),
        }
    }
}

fn set_key(element: u64) -> String {
    format!("{SET_PREFIX}{element:012}")
}

fn parse_u64(bytes: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("unparseable value {:?}", String::from_utf8_lossy(bytes)))
}

fn parse_list(bytes: &[u8]) -> Result<Vec<u64>, String> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    bytes.split(|b| *b == b',').map(parse_u64).collect()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn register_values_are_unique_and_keys_rotate() {
        let w = Workload::new(WorkloadKind::Register, 2, 5);
        let mut rng = StdRng::seed_from_u64(1);
        let ops: Vec<Op> = (0..40).map(|_| w.next_op(&mut rng)).collect();
        let mut values = BTreeSet::new();
        for op in &ops {
            if let Op::Write { value, .. } | Op::Cas { to: value, .. } = op {
                assert!(values.insert(*value), "value {value} reused");
            }
        }
        let keys: BTreeSet<&str> = ops.iter().filter_map(Op::key).collect();
        // 40 ops, 2 keys x 5 ops per generation: 4 generations.
        assert!(keys.len() > 2 && keys.len() <= 8, "{keys:?}");
    }

    #[test]
    fn lists_and_set_keys_parse_back() {
        assert_eq!(parse_list(b""), Ok(vec![]));
        assert_eq!(parse_list(b"3,1,20"), Ok(vec![3, 1, 20]));
        assert!(parse_list(b"3,,1").is_err());
        assert_eq!(set_key(42), "set/000000000042");
        assert_eq!(parse_u64(b"000000000042"), Ok(42));
    }

    #[test]
    fn final_reads_cover_every_list_key_used() {
        let w = Workload::new(WorkloadKind::Append, 3, 100);
        let mut rng = StdRng::seed_from_u64(2);
        let used: BTreeSet<String> = (0..30)
            .filter_map(|_| w.next_op(&mut rng).key().map(str::to_string))
            .collect();
        let finals: BTreeSet<String> = w
            .final_ops()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect();
        assert_eq!(used, finals);
    }
}
