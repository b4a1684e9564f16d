//! The replicated commands of the KV state machine and their pure, deterministic execution.
//!
//! Execution is written against [`KvView`] so the same code runs over RocksDB during apply
//! and over a `BTreeMap` in tests and in the proptest model.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;

/// What the state machine stores for a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub value: Vec<u8>,
    /// Revision (log index) of the write that created the key since it last did not exist.
    pub create_revision: u64,
    /// Revision (log index) of the last write to the key.
    pub mod_revision: u64,
    /// Writes since creation; 1 after the first put.
    pub version: u64,
}

/// A key together with its record, as returned to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub record: KeyRecord,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutOp {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub prev_kv: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteOp {
    pub key: Vec<u8>,
    pub prev_kv: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Put(PutOp),
    Delete(DeleteOp),
    Get { key: Vec<u8> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Value(Vec<u8>),
    Version(u64),
    ModRevision(u64),
    CreateRevision(u64),
    Exists(bool),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: Vec<u8>,
    pub op: CompareOp,
    pub target: CompareTarget,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnCommand {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

/// A write proposed through Raft. Reads never go through the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Put(PutOp),
    Delete(DeleteOp),
    Txn(TxnCommand),
    /// Records the cluster id once; later proposals are ignored, so every replica agrees.
    InitCluster {
        cluster_id: u64,
    },
    /// Hands out a node id never used before in this cluster, for a replica joining with an
    /// empty volume (a node id is never reused on an empty disk).
    AllocateNodeId,
    /// Opens a client session (Raft dissertation §6.3); its id is this entry's log index.
    /// `leader_time_ms` is the proposing leader's clock, the only time sessions expire by.
    OpenSession {
        ttl_ms: u64,
        leader_time_ms: u64,
    },
    /// A write within a client session: applied at most once per (client_id, sequence); a
    /// retry of the latest sequence gets the stored answer.
    Session {
        client_id: u64,
        sequence: u64,
        leader_time_ms: u64,
        cmd: Box<Command>,
    },
}

impl Command {
    /// About how many bytes the command takes on the wire: its keys and values plus a
    /// little per item. Used to bound replication messages, so it need not be exact.
    pub fn approx_bytes(&self) -> usize {
        const PER_ITEM: usize = 16;
        let op = |o: &TxnOp| match o {
            TxnOp::Put(p) => p.key.len() + p.value.len() + PER_ITEM,
            TxnOp::Delete(d) => d.key.len() + PER_ITEM,
            TxnOp::Get { key } => key.len() + PER_ITEM,
        };
        match self {
            Command::Put(p) => p.key.len() + p.value.len() + PER_ITEM,
            Command::Delete(d) => d.key.len() + PER_ITEM,
            Command::Txn(t) => {
                let compares: usize = t
                    .compares
                    .iter()
                    .map(|c| match &c.target {
                        CompareTarget::Value(v) => c.key.len() + v.len() + PER_ITEM,
                        _ => c.key.len() + PER_ITEM,
                    })
                    .sum();
                compares + t.success.iter().chain(&t.failure).map(op).sum::<usize>()
            }
            Command::Session { cmd, .. } => cmd.approx_bytes() + PER_ITEM,
            Command::InitCluster { .. } | Command::AllocateNodeId | Command::OpenSession { .. } => {
                PER_ITEM
            }
        }
    }

    /// Stamps the proposing leader's time into session commands (others carry no time).
    pub fn stamp_leader_time(&mut self, now_ms: u64) {
        match self {
            Command::OpenSession { leader_time_ms, .. }
            | Command::Session { leader_time_ms, .. } => {
                *leader_time_ms = now_ms;
            }
            _ => {}
        }
    }
}

/// A client session as the state machine keeps it: bounded (one answer per session) and
/// expiring by leader time carried in the log, so every replica agrees on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSession {
    pub last_sequence: u64,
    pub last_response: Option<CommandResponse>,
    pub last_seen_ms: u64,
    pub ttl_ms: u64,
}

impl ClientSession {
    pub fn expired_at(&self, now_ms: u64) -> bool {
        now_ms > self.last_seen_ms.saturating_add(self.ttl_ms)
    }
}

/// Why a session write was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SessionRejection {
    #[error(
        "session {client_id} expired or is unknown; open a new session (the write was not applied)"
    )]
    Expired { client_id: u64 },
    #[error(
        "session {client_id}: sequence {sequence} is older than the last applied sequence {last_sequence} (the write was not applied again)"
    )]
    StaleSequence {
        client_id: u64,
        sequence: u64,
        last_sequence: u64,
    },
}

/// What to do with a session write, decided from the session's record alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCheck {
    Apply,
    Duplicate(CommandResponse),
    Reject(SessionRejection),
}

pub fn check_session(
    session: Option<&ClientSession>,
    client_id: u64,
    sequence: u64,
    now_ms: u64,
) -> SessionCheck {
    let Some(s) = session.filter(|s| !s.expired_at(now_ms)) else {
        return SessionCheck::Reject(SessionRejection::Expired { client_id });
    };
    if sequence == s.last_sequence
        && let Some(r) = &s.last_response
    {
        return SessionCheck::Duplicate(r.clone());
    }
    if sequence <= s.last_sequence {
        return SessionCheck::Reject(SessionRejection::StaleSequence {
            client_id,
            sequence,
            last_sequence: s.last_sequence,
        });
    }
    SessionCheck::Apply
}

impl std::fmt::Display for Command {
    /// A short description for logs; never the values, which may be large or private.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = |k: &[u8]| String::from_utf8_lossy(&k[..k.len().min(64)]).into_owned();
        match self {
            Command::Put(p) => write!(f, "put({}, {} bytes)", key(&p.key), p.value.len()),
            Command::Delete(d) => write!(f, "delete({})", key(&d.key)),
            Command::Txn(t) => write!(
                f,
                "txn({} compares, {}/{} ops)",
                t.compares.len(),
                t.success.len(),
                t.failure.len()
            ),
            Command::InitCluster { cluster_id } => write!(f, "init-cluster({cluster_id:x})"),
            Command::AllocateNodeId => write!(f, "allocate-node-id"),
            Command::OpenSession { ttl_ms, .. } => write!(f, "open-session(ttl {ttl_ms} ms)"),
            Command::Session {
                client_id,
                sequence,
                cmd,
                ..
            } => {
                write!(f, "session({client_id}#{sequence}: {cmd})")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Put {
        prev: Option<KeyValue>,
    },
    Delete {
        deleted: u64,
        prev: Option<KeyValue>,
    },
    Get {
        kv: Option<KeyValue>,
    },
}

/// The state machine's answer to one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CommandResponse {
    /// Blank and membership entries, and `InitCluster`.
    #[default]
    Empty,
    Op(OpResult),
    Txn {
        succeeded: bool,
        results: Vec<OpResult>,
    },
    /// The id `AllocateNodeId` handed out.
    NodeId(u64),
    /// The id of a session `OpenSession` opened.
    SessionOpened {
        client_id: u64,
    },
    /// A session write that was not applied.
    Rejected(SessionRejection),
}

/// Read and write access to the key space while one entry executes.
pub trait KvView {
    type Error;
    fn get(&mut self, key: &[u8]) -> Result<Option<KeyRecord>, Self::Error>;
    fn put(&mut self, key: &[u8], record: KeyRecord) -> Result<(), Self::Error>;
    fn delete(&mut self, key: &[u8]) -> Result<(), Self::Error>;
}

impl KvView for BTreeMap<Vec<u8>, KeyRecord> {
    type Error = std::convert::Infallible;
    fn get(&mut self, key: &[u8]) -> Result<Option<KeyRecord>, Self::Error> {
        Ok(BTreeMap::get(self, key).cloned())
    }
    fn put(&mut self, key: &[u8], record: KeyRecord) -> Result<(), Self::Error> {
        self.insert(key.to_vec(), record);
        Ok(())
    }
    fn delete(&mut self, key: &[u8]) -> Result<(), Self::Error> {
        self.remove(key);
        Ok(())
    }
}

/// Executes `cmd` at `revision` (its log index). Deterministic: every replica computes the
/// same changes and the same response from the same state.
pub fn execute<V: KvView>(
    cmd: &Command,
    revision: u64,
    view: &mut V,
) -> Result<CommandResponse, V::Error> {
    Ok(match cmd {
        Command::Put(op) => CommandResponse::Op(put(op, revision, view)?),
        Command::Delete(op) => CommandResponse::Op(delete(op, view)?),
        Command::Txn(txn) => {
            let mut succeeded = true;
            for c in &txn.compares {
                let current = view.get(&c.key)?;
                if !compare_holds(c, current.as_ref()) {
                    succeeded = false;
                    break;
                }
            }
            let ops = if succeeded {
                &txn.success
            } else {
                &txn.failure
            };
            let mut results = Vec::with_capacity(ops.len());
            for op in ops {
                results.push(match op {
                    TxnOp::Put(p) => put(p, revision, view)?,
                    TxnOp::Delete(d) => delete(d, view)?,
                    TxnOp::Get { key } => OpResult::Get {
                        kv: view.get(key)?.map(|record| KeyValue {
                            key: key.clone(),
                            record,
                        }),
                    },
                });
            }
            CommandResponse::Txn { succeeded, results }
        }
        // These change state-machine metadata, not keys; the state machine applies them.
        Command::InitCluster { .. }
        | Command::AllocateNodeId
        | Command::OpenSession { .. }
        | Command::Session { .. } => CommandResponse::Empty,
    })
}

fn put<V: KvView>(op: &PutOp, revision: u64, view: &mut V) -> Result<OpResult, V::Error> {
    let prev = view.get(&op.key)?;
    let record = match &prev {
        Some(p) => KeyRecord {
            value: op.value.clone(),
            create_revision: p.create_revision,
            mod_revision: revision,
            version: p.version + 1,
        },
        None => KeyRecord {
            value: op.value.clone(),
            create_revision: revision,
            mod_revision: revision,
            version: 1,
        },
    };
    view.put(&op.key, record)?;
    let prev = if op.prev_kv {
        prev.map(|record| KeyValue {
            key: op.key.clone(),
            record,
        })
    } else {
        None
    };
    Ok(OpResult::Put { prev })
}

fn delete<V: KvView>(op: &DeleteOp, view: &mut V) -> Result<OpResult, V::Error> {
    let prev = view.get(&op.key)?;
    let deleted = u64::from(prev.is_some());
    if prev.is_some() {
        view.delete(&op.key)?;
    }
    let prev = if op.prev_kv {
        prev.map(|record| KeyValue {
            key: op.key.clone(),
            record,
        })
    } else {
        None
    };
    Ok(OpResult::Delete { deleted, prev })
}

/// Whether `c` holds against the key's current record (`None` when absent). As in etcd, an
/// absent key has version, create and mod revision 0 and an empty value.
pub fn compare_holds(c: &Compare, current: Option<&KeyRecord>) -> bool {
    use std::cmp::Ordering;
    let ordering = match &c.target {
        CompareTarget::Value(v) => current
            .map(|r| r.value.as_slice())
            .unwrap_or_default()
            .cmp(v.as_slice()),
        CompareTarget::Version(n) => current.map_or(0, |r| r.version).cmp(n),
        CompareTarget::ModRevision(n) => current.map_or(0, |r| r.mod_revision).cmp(n),
        CompareTarget::CreateRevision(n) => current.map_or(0, |r| r.create_revision).cmp(n),
        CompareTarget::Exists(e) => current.is_some().cmp(e),
    };
    match c.op {
        CompareOp::Equal => ordering == Ordering::Equal,
        CompareOp::NotEqual => ordering != Ordering::Equal,
        CompareOp::Greater => ordering == Ordering::Greater,
        CompareOp::Less => ordering == Ordering::Less,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Map = BTreeMap<Vec<u8>, KeyRecord>;

    fn put_cmd(k: &str, v: &str) -> Command {
        Command::Put(PutOp {
            key: k.into(),
            value: v.into(),
            prev_kv: true,
        })
    }

    #[test]
    fn put_tracks_versions_and_revisions_like_etcd() {
        let mut m = Map::new();
        execute(&put_cmd("a", "1"), 5, &mut m).unwrap();
        let r = execute(&put_cmd("a", "2"), 9, &mut m).unwrap();
        let rec = m.get(b"a".as_slice()).unwrap();
        assert_eq!(
            (rec.create_revision, rec.mod_revision, rec.version),
            (5, 9, 2)
        );
        let CommandResponse::Op(OpResult::Put { prev: Some(prev) }) = r else {
            panic!("{r:?}")
        };
        assert_eq!(prev.record.value, b"1");
        // A delete resets the version: the next put creates the key anew.
        execute(
            &Command::Delete(DeleteOp {
                key: "a".into(),
                prev_kv: false,
            }),
            10,
            &mut m,
        )
        .unwrap();
        execute(&put_cmd("a", "3"), 11, &mut m).unwrap();
        let rec = m.get(b"a".as_slice()).unwrap();
        assert_eq!(
            (rec.create_revision, rec.mod_revision, rec.version),
            (11, 11, 1)
        );
    }

    #[test]
    fn txn_runs_success_or_failure_branch_by_compare() {
        let mut m = Map::new();
        execute(&put_cmd("k", "v1"), 1, &mut m).unwrap();
        let cas = |expect: &str, new: &str| {
            Command::Txn(TxnCommand {
                compares: vec![Compare {
                    key: "k".into(),
                    op: CompareOp::Equal,
                    target: CompareTarget::Value(expect.into()),
                }],
                success: vec![TxnOp::Put(PutOp {
                    key: "k".into(),
                    value: new.into(),
                    prev_kv: false,
                })],
                failure: vec![TxnOp::Get { key: "k".into() }],
            })
        };
        let r = execute(&cas("v1", "v2"), 2, &mut m).unwrap();
        assert!(matches!(
            r,
            CommandResponse::Txn {
                succeeded: true,
                ..
            }
        ));
        let r = execute(&cas("v1", "v3"), 3, &mut m).unwrap();
        let CommandResponse::Txn {
            succeeded: false,
            results,
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(
            results,
            vec![OpResult::Get {
                kv: Some(KeyValue {
                    key: "k".into(),
                    record: m[b"k".as_slice()].clone()
                })
            }]
        );
        assert_eq!(m[b"k".as_slice()].value, b"v2");
    }

    #[test]
    fn session_checks_apply_new_sequences_once_and_replay_the_latest() {
        let s = ClientSession {
            last_sequence: 5,
            last_response: Some(CommandResponse::Empty),
            last_seen_ms: 1_000,
            ttl_ms: 500,
        };
        assert_eq!(check_session(Some(&s), 7, 6, 1_200), SessionCheck::Apply);
        assert_eq!(
            check_session(Some(&s), 7, 5, 1_200),
            SessionCheck::Duplicate(CommandResponse::Empty)
        );
        assert!(matches!(
            check_session(Some(&s), 7, 4, 1_200),
            SessionCheck::Reject(SessionRejection::StaleSequence {
                last_sequence: 5,
                ..
            })
        ));
        // Expiry is by leader time in the log, past last_seen + ttl.
        assert!(matches!(
            check_session(Some(&s), 7, 6, 1_501),
            SessionCheck::Reject(SessionRejection::Expired { client_id: 7 })
        ));
        assert!(matches!(
            check_session(None, 7, 1, 0),
            SessionCheck::Reject(_)
        ));
    }

    #[test]
    fn absent_key_compares_as_zero_and_not_existing() {
        let absent = |target, op| {
            compare_holds(
                &Compare {
                    key: "x".into(),
                    op,
                    target,
                },
                None,
            )
        };
        assert!(absent(CompareTarget::Version(0), CompareOp::Equal));
        assert!(absent(CompareTarget::CreateRevision(1), CompareOp::Less));
        assert!(absent(CompareTarget::Exists(false), CompareOp::Equal));
        assert!(!absent(CompareTarget::Exists(true), CompareOp::Equal));
        assert!(absent(CompareTarget::Value(b"a".to_vec()), CompareOp::Less));
    }
}
