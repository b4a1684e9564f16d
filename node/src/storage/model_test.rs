//! Proptest: random append / truncate / apply / purge / snapshot / vote / close-and-reopen
//! sequences against the RocksDB store, compared after every step with a simple model.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use openraft::RaftLogReader;
use openraft::RaftSnapshotBuilder;
use openraft::entry::RaftEntry;
use openraft::storage::RaftLogStorage;
use openraft::storage::RaftLogStorageExt;
use openraft::storage::RaftStateMachine;
use openraft::vote::RaftLeaderIdExt;
use proptest::prelude::*;

use super::LogStore;
use super::StateMachine;
use super::Store;
use super::StoreOptions;
use super::command::Command;
use super::command::DeleteOp;
use super::command::KeyRecord;
use super::command::PutOp;
use super::command::execute;
use super::snapshot::Record;
use super::snapshot::SnapshotReader;
use crate::raft::Entry;
use crate::raft::LogId;
use crate::raft::TypeConfig;
use crate::raft::Vote;

#[derive(Debug, Clone)]
enum Op {
    Append {
        new_term: bool,
        cmds: Vec<(u8, Option<u8>)>,
    },
    Truncate {
        back: u64,
    },
    Apply {
        count: usize,
    },
    Purge {
        back: u64,
    },
    Snapshot,
    SaveVote {
        term_bump: u64,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), prop::collection::vec((0u8..6, prop::option::of(any::<u8>())), 1..6))
            .prop_map(|(new_term, cmds)| Op::Append { new_term, cmds }),
        1 => (0u64..4).prop_map(|back| Op::Truncate { back }),
        3 => (1usize..6).prop_map(|count| Op::Apply { count }),
        1 => (0u64..3).prop_map(|back| Op::Purge { back }),
        1 => Just(Op::Snapshot),
        1 => (0u64..2).prop_map(|term_bump| Op::SaveVote { term_bump }),
        1 => Just(Op::Reopen),
    ]
}

/// What the store must hold, kept in plain collections.
#[derive(Default)]
struct Model {
    log: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
    applied: Option<LogId>,
    kv: BTreeMap<Vec<u8>, KeyRecord>,
    vote: Option<Vote>,
    term: u64,
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(
        <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(term, 1),
        index,
    )
}

fn next_index(m: &Model) -> u64 {
    m.log
        .keys()
        .next_back()
        .map(|i| i + 1)
        .or(m.last_purged.as_ref().map(|l| l.index() + 1))
        .unwrap_or(1)
}

struct Sut {
    store: Option<Store>,
    log: Option<LogStore>,
    sm: Option<StateMachine>,
}

fn open(dir: &Path) -> Sut {
    // A closed store's WAL sync thread drops its DB handle asynchronously; RocksDB's lock file
    // is free once it has.
    let mut tries = 0;
    let store = loop {
        match Store::open(
            dir,
            &StoreOptions {
                block_cache_bytes: 1 << 20,
            },
        ) {
            Ok(s) => break s,
            Err(e) if tries < 200 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
                let _ = e;
            }
            Err(e) => panic!("reopen: {e}"),
        }
    };
    let (log, sm) = store.split().expect("split");
    Sut {
        store: Some(store),
        log: Some(log),
        sm: Some(sm),
    }
}

async fn check(sut: &mut Sut, m: &Model) {
    let log = sut.log.as_mut().expect("log store");
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, m.last_purged);
    let expected_last = m
        .log
        .values()
        .next_back()
        .map(|e| e.log_id())
        .or(m.last_purged);
    assert_eq!(state.last_log_id, expected_last);
    let entries = log.try_get_log_entries(0..u64::MAX).await.expect("entries");
    let expected: Vec<Entry> = m.log.values().cloned().collect();
    assert_eq!(entries, expected);
    assert_eq!(log.read_vote().await.expect("vote"), m.vote);

    let sm = sut.sm.as_mut().expect("state machine");
    let (applied, _) = sm.applied_state().await.expect("applied");
    assert_eq!(applied, m.applied);
    let page = sm
        .reader()
        .scan(b"", None, usize::MAX, false)
        .expect("scan");
    let kv: BTreeMap<Vec<u8>, KeyRecord> =
        page.kvs.into_iter().map(|kv| (kv.key, kv.record)).collect();
    assert_eq!(kv, m.kv);
}

async fn step(sut: &mut Sut, m: &mut Model, op: Op, dir: &Path) {
    match op {
        Op::Append { new_term, cmds } => {
            if new_term {
                m.term += 1;
            }
            let term = m.term.max(1);
            m.term = term;
            let mut entries = Vec::new();
            for (index, (k, v)) in (next_index(m)..).zip(cmds) {
                let key = vec![b'k', k];
                let cmd = match v {
                    Some(v) => Command::Put(PutOp {
                        key,
                        value: vec![v; (v % 7) as usize + 1],
                        prev_kv: false,
                    }),
                    None => Command::Delete(DeleteOp {
                        key,
                        prev_kv: false,
                    }),
                };
                entries.push(Entry::new_normal(log_id(term, index), cmd));
            }
            sut.log
                .as_mut()
                .expect("log")
                .blocking_append(entries.clone())
                .await
                .expect("append");
            for e in entries {
                m.log.insert(e.index(), e);
            }
        }
        Op::Truncate { back } => {
            let last = next_index(m) - 1;
            let floor = m
                .applied
                .as_ref()
                .map_or(0, |l| l.index())
                .max(m.last_purged.as_ref().map_or(0, |l| l.index()));
            let keep_to = last.saturating_sub(back).max(floor);
            if keep_to < last {
                let after = if keep_to == 0 {
                    None
                } else {
                    m.log.get(&keep_to).map(|e| e.log_id()).or(m.last_purged)
                };
                sut.log
                    .as_mut()
                    .expect("log")
                    .truncate_after(after)
                    .await
                    .expect("truncate");
                m.log.retain(|i, _| *i <= keep_to);
            }
        }
        Op::Apply { count } => {
            let from = m.applied.as_ref().map_or(1, |l| l.index() + 1);
            let batch: Vec<Entry> = m
                .log
                .range(from..)
                .take(count)
                .map(|(_, e)| e.clone())
                .collect();
            if batch.is_empty() || batch[0].index() != from {
                return;
            }
            let stream = futures::stream::iter(batch.clone().into_iter().map(|e| Ok((e, None))));
            sut.sm
                .as_mut()
                .expect("sm")
                .apply(stream)
                .await
                .expect("apply");
            for e in batch {
                if let openraft::EntryPayload::Normal(cmd) = &e.payload {
                    execute(cmd, e.index(), &mut m.kv).expect("model apply");
                }
                m.applied = Some(e.log_id());
            }
        }
        Op::Purge { back } => {
            let Some(applied) = m.applied else { return };
            let upto = applied.index().saturating_sub(back);
            let purged = m.last_purged.as_ref().map_or(0, |l| l.index());
            if upto == 0 || upto <= purged {
                return;
            }
            let Some(id) = m.log.get(&upto).map(|e| e.log_id()) else {
                return;
            };
            sut.log
                .as_mut()
                .expect("log")
                .purge(id)
                .await
                .expect("purge");
            m.log.retain(|i, _| *i > upto);
            m.last_purged = Some(id);
        }
        Op::Snapshot => {
            let sm = sut.sm.as_mut().expect("sm");
            let snap = sm
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .expect("snapshot");
            assert_eq!(snap.meta.last_log_id, m.applied);
            let mut reader = SnapshotReader::new(snap.snapshot.file).expect("reader");
            let mut kv = BTreeMap::new();
            while let Some(r) = reader.next_record().expect("record") {
                if let Record::Kv { key, record } = r {
                    kv.insert(key, record);
                }
            }
            assert_eq!(kv, m.kv, "snapshot content");
            let current = sm
                .get_current_snapshot()
                .await
                .expect("current")
                .expect("a current snapshot");
            assert_eq!(current.meta.last_log_id, m.applied);
        }
        Op::SaveVote { term_bump } => {
            let term = m.term + term_bump;
            let vote = Vote::new_committed(term.max(1), 1);
            sut.log
                .as_mut()
                .expect("log")
                .save_vote(&vote)
                .await
                .expect("vote");
            m.vote = Some(vote);
            m.term = term.max(1);
        }
        Op::Reopen => {
            sut.log.take();
            sut.sm.take();
            sut.store.take();
            *sut = open(dir);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model_through_random_operations_and_reopens(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut sut = open(dir.path());
            let mut model = Model::default();
            for op in ops {
                step(&mut sut, &mut model, op, dir.path()).await;
                check(&mut sut, &model).await;
            }
        });
    }
}

/// Steps of the exactly-once proptest: clients open sessions, write, retry their latest
/// write (as after a dropped response), and the store is snapshotted into a fresh replica
/// or closed and reopened in between.
#[derive(Debug, Clone)]
enum SessionOp {
    Open,
    Write { client: usize },
    Retry { client: usize },
    InstallIntoFreshReplica,
    Reopen,
}

fn session_op() -> impl Strategy<Value = SessionOp> {
    prop_oneof![
        1 => Just(SessionOp::Open),
        4 => (0usize..4).prop_map(|client| SessionOp::Write { client }),
        3 => (0usize..4).prop_map(|client| SessionOp::Retry { client }),
        1 => Just(SessionOp::InstallIntoFreshReplica),
        1 => Just(SessionOp::Reopen),
    ]
}

/// A client as the model sees it: its session id and the writes it has had applied.
struct ModelClient {
    client_id: u64,
    sequence: u64,
    last_response: Option<super::command::CommandResponse>,
}

async fn apply_one(sut: &mut Sut, index: u64, cmd: Command) {
    let entry = Entry::new_normal(log_id(1, index), cmd);
    let stream = futures::stream::iter([Ok((entry, None))]);
    sut.sm
        .as_mut()
        .expect("sm")
        .apply(stream)
        .await
        .expect("apply");
}

fn stored_session(sut: &Sut, client_id: u64) -> Option<super::command::ClientSession> {
    let db = &sut.store.as_ref().expect("store").db;
    let mut key = b"session/".to_vec();
    key.extend_from_slice(&client_id.to_be_bytes());
    super::get_meta(db, super::CF_SM_META, &key).expect("session record")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn every_session_write_has_exactly_one_effect_across_retries_installs_and_restarts(
        ops in prop::collection::vec(session_op(), 1..40)
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(async {
            let mut dirs = vec![tempfile::tempdir().expect("tempdir")];
            let mut sut = open(dirs[0].path());
            let mut clients: Vec<ModelClient> = Vec::new();
            let mut index = 0u64;
            for op in ops {
                match op {
                    SessionOp::Open => {
                        index += 1;
                        apply_one(&mut sut, index, Command::OpenSession { ttl_ms: 3_600_000, leader_time_ms: 1_000 }).await;
                        clients.push(ModelClient { client_id: index, sequence: 0, last_response: None });
                    }
                    SessionOp::Write { client } | SessionOp::Retry { client } if client >= clients.len() => {}
                    SessionOp::Write { client } => {
                        let c = &mut clients[client];
                        c.sequence += 1;
                        index += 1;
                        let key = format!("c{}", c.client_id).into_bytes();
                        let put = Command::Put(PutOp { key, value: c.sequence.to_be_bytes().to_vec(), prev_kv: true });
                        let cmd = Command::Session { client_id: c.client_id, sequence: c.sequence, leader_time_ms: 1_000, cmd: Box::new(put) };
                        apply_one(&mut sut, index, cmd).await;
                        let stored = stored_session(&sut, c.client_id).expect("session exists");
                        assert_eq!(stored.last_sequence, c.sequence);
                        c.last_response = stored.last_response;
                    }
                    SessionOp::Retry { client } => {
                        let c = &clients[client];
                        if c.sequence == 0 {
                            continue;
                        }
                        index += 1;
                        let key = format!("c{}", c.client_id).into_bytes();
                        let put = Command::Put(PutOp { key, value: b"retry".to_vec(), prev_kv: true });
                        let cmd = Command::Session { client_id: c.client_id, sequence: c.sequence, leader_time_ms: 1_000, cmd: Box::new(put) };
                        apply_one(&mut sut, index, cmd).await;
                        let stored = stored_session(&sut, c.client_id).expect("session exists");
                        // The retry is answered from the table, which did not change.
                        assert_eq!(stored.last_response, c.last_response);
                    }
                    SessionOp::InstallIntoFreshReplica => {
                        let sm = sut.sm.as_mut().expect("sm");
                        let snap = sm.get_snapshot_builder().await.build_snapshot().await.expect("snapshot");
                        let fresh_dir = tempfile::tempdir().expect("tempdir");
                        let mut fresh = open(fresh_dir.path());
                        fresh.sm.as_mut().expect("sm").install_snapshot(&snap.meta, snap.snapshot).await.expect("install");
                        sut = fresh;
                        dirs.push(fresh_dir);
                    }
                    SessionOp::Reopen => {
                        sut.log.take();
                        sut.sm.take();
                        sut.store.take();
                        let dir = dirs.last().expect("dir").path().to_path_buf();
                        sut = open(&dir);
                    }
                }
                // Each key's version counts its client's distinct sequences: one effect each.
                let reader = sut.sm.as_ref().expect("sm").reader();
                for c in &clients {
                    let key = format!("c{}", c.client_id).into_bytes();
                    let version = reader.get(&key).expect("get").map_or(0, |r| r.version);
                    assert_eq!(version, c.sequence, "client {} wrote {} times", c.client_id, c.sequence);
                    if c.sequence > 0 {
                        let value = reader.get(&key).expect("get").map(|r| r.value);
                        assert_eq!(value, Some(c.sequence.to_be_bytes().to_vec()), "a retry overwrote the value");
                    }
                }
            }
        });
    }
}
