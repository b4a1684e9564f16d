//! The KV state machine in RocksDB: atomic applies, snapshots built from a consistent view,
//! and the read side the API serves from.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;

use futures::Stream;
use futures::StreamExt;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::entry::RaftEntry;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use rocksdb::DB;
use rocksdb::WriteBatch;
use rocksdb::WriteOptions;

use super::CF_KV;
use super::CF_SM_META;
use super::cf;
use super::command::ClientSession;
use super::command::Command;
use super::command::CommandResponse;
use super::command::KeyRecord;
use super::command::KeyValue;
use super::command::KvView;
use super::command::SessionCheck;
use super::command::SessionRejection;
use super::command::check_session;
use super::command::execute;
use super::decode;
use super::encode;
use super::get_meta;
use super::io_err;
use super::snapshot;
use super::snapshot::Record;
use super::snapshot::SnapshotFile;
use super::snapshot::SnapshotReader;
use super::snapshot::SnapshotWriter;
use crate::raft::LogId;
use crate::raft::Snapshot;
use crate::raft::SnapshotMeta;
use crate::raft::StoredMembership;
use crate::raft::TypeConfig;

const KEY_LAST_APPLIED: &[u8] = b"last_applied";
const KEY_MEMBERSHIP: &[u8] = b"last_membership";
const KEY_SNAPSHOT_META: &[u8] = b"snapshot_meta";
const KEY_CLUSTER_ID: &[u8] = b"cluster_id";
/// Client sessions: this prefix + big-endian client id -> ClientSession.
const SESSION_PREFIX: &[u8] = b"session/";
/// The latest leader time seen in session commands: the clock sessions expire by.
const KEY_LEADER_TIME: &[u8] = b"leader_time";
/// Sessions kept at most; opening one more evicts the least recently used.
pub const MAX_SESSIONS: usize = 4096;

fn session_key(client_id: u64) -> Vec<u8> {
    let mut k = SESSION_PREFIX.to_vec();
    k.extend_from_slice(&client_id.to_be_bytes());
    k
}

/// The lowest node id `AllocateNodeId` may hand out next.
const KEY_NEXT_NODE_ID: &[u8] = b"next_node_id";
/// Set when an `InitCluster` entry was applied: the id is in the log, so replicas that join
/// later learn it too.
const KEY_CLUSTER_ID_LOGGED: &[u8] = b"cluster_id_logged";

/// Entries and bytes applied per write batch at most; bound memory when a restart
/// re-applies a long log of large values.
const MAX_ENTRIES_PER_BATCH: usize = 4096;
const MAX_BYTES_PER_BATCH: usize = 64 << 20;
/// Bytes of snapshot records loaded per write batch during install.
const INSTALL_BATCH_BYTES: usize = 4 << 20;

/// The state machine handed to openraft.
pub struct StateMachine {
    db: Arc<DB>,
    snapshot_dir: PathBuf,
    /// Serializes changes of the current snapshot between builder threads and installs.
    snapshot_lock: Arc<Mutex<()>>,
}

impl StateMachine {
    pub(crate) fn new(db: Arc<DB>, snapshot_dir: PathBuf) -> Result<Self, io::Error> {
        Ok(Self {
            db,
            snapshot_dir,
            snapshot_lock: Arc::new(Mutex::new(())),
        })
    }

    /// A read handle for the API; reads see the latest applied state.
    pub fn reader(&self) -> KvReader {
        KvReader {
            db: self.db.clone(),
        }
    }
}

/// Read access to the applied key space, shared with the API layer.
#[derive(Clone)]
pub struct KvReader {
    db: Arc<DB>,
}

/// One page of a scan.
#[derive(Debug, Default)]
pub struct ScanPage {
    pub kvs: Vec<KeyValue>,
    /// Whether keys remain in the range after the last one returned.
    pub more: bool,
}

impl KvReader {
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyRecord>, io::Error> {
        match self
            .db
            .get_pinned_cf(cf(&self.db, CF_KV)?, key)
            .map_err(io_err)?
        {
            Some(v) => Ok(Some(decode("kv record", &v)?)),
            None => Ok(None),
        }
    }

    /// Keys in `[start, end)` (`end = None`: to the last key), at most `limit` of them.
    pub fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        keys_only: bool,
    ) -> Result<ScanPage, io::Error> {
        let mut opts = rocksdb::ReadOptions::default();
        if let Some(end) = end {
            opts.set_iterate_upper_bound(end.to_vec());
        }
        let mode = rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward);
        let mut page = ScanPage::default();
        for item in self.db.iterator_cf_opt(cf(&self.db, CF_KV)?, opts, mode) {
            let (k, v) = item.map_err(io_err)?;
            if page.kvs.len() >= limit {
                page.more = true;
                break;
            }
            let mut record: KeyRecord = decode("kv record", &v)?;
            if keys_only {
                record.value = Vec::new();
            }
            page.kvs.push(KeyValue {
                key: k.to_vec(),
                record,
            });
        }
        Ok(page)
    }

    pub fn last_applied(&self) -> Result<Option<LogId>, io::Error> {
        get_meta(&self.db, CF_SM_META, KEY_LAST_APPLIED)
    }

    pub fn cluster_id(&self) -> Result<Option<u64>, io::Error> {
        get_meta(&self.db, CF_SM_META, KEY_CLUSTER_ID)
    }

    /// Whether an `InitCluster` entry has been applied here.
    pub fn cluster_id_logged(&self) -> Result<bool, io::Error> {
        Ok(get_meta::<bool>(&self.db, CF_SM_META, KEY_CLUSTER_ID_LOGGED)?.unwrap_or(false))
    }

    /// Records the cluster id an initial member derived from `--initial-cluster` before
    /// anything is applied; every initial member derives the same id.
    pub fn set_initial_cluster_id(&self, cluster_id: u64) -> Result<(), io::Error> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            cf(&self.db, CF_SM_META)?,
            KEY_CLUSTER_ID,
            encode(&cluster_id)?,
        );
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db.write_opt(batch, &sync).map_err(io_err)
    }

    /// RocksDB's estimate of the number of keys (exact after compaction).
    pub fn approximate_key_count(&self) -> u64 {
        cf(&self.db, CF_KV)
            .ok()
            .and_then(|c| {
                self.db
                    .property_int_value_cf(c, rocksdb::properties::ESTIMATE_NUM_KEYS)
                    .ok()
                    .flatten()
            })
            .unwrap_or(0)
    }

    /// A hash of every key and its record (FNV-1a over the stored bytes, in key order) and
    /// the applied log index it describes, both from one consistent view.
    pub fn state_hash(&self) -> Result<(u64, u64), io::Error> {
        let view = self.db.snapshot();
        let applied: Option<LogId> = view
            .get_cf(cf(&self.db, CF_SM_META)?, KEY_LAST_APPLIED)
            .map_err(io_err)?
            .map(|b| decode("last_applied", &b))
            .transpose()?;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for item in view.iterator_cf(cf(&self.db, CF_KV)?, rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(io_err)?;
            feed(&k);
            feed(&v);
        }
        Ok((h, applied.map_or(0, |l| l.index())))
    }

    /// Writes a snapshot file of the current state to `path` from a consistent view.
    pub fn write_snapshot_file(&self, path: PathBuf) -> Result<(SnapshotMeta, PathBuf), io::Error> {
        write_snapshot(&self.db, path)
    }
}

/// Key-space view for one apply batch: reads see the batch's own earlier writes.
struct BatchView<'a> {
    db: &'a DB,
    kv: &'a rocksdb::ColumnFamily,
    batch: WriteBatch,
    overlay: HashMap<Vec<u8>, Option<KeyRecord>>,
    sessions: HashMap<u64, Option<ClientSession>>,
}

impl BatchView<'_> {
    fn session(&mut self, client_id: u64) -> Result<Option<ClientSession>, io::Error> {
        if let Some(s) = self.sessions.get(&client_id) {
            return Ok(s.clone());
        }
        get_meta(self.db, CF_SM_META, &session_key(client_id))
    }

    fn set_session(
        &mut self,
        client_id: u64,
        session: Option<ClientSession>,
    ) -> Result<(), io::Error> {
        let meta = cf(self.db, CF_SM_META)?;
        match &session {
            Some(s) => self.batch.put_cf(meta, session_key(client_id), encode(s)?),
            None => self.batch.delete_cf(meta, session_key(client_id)),
        }
        self.sessions.insert(client_id, session);
        Ok(())
    }

    /// Every live session (stored, overlaid by this batch's changes).
    fn all_sessions(&mut self) -> Result<Vec<(u64, ClientSession)>, io::Error> {
        let meta = cf(self.db, CF_SM_META)?;
        let mut all: BTreeMap<u64, ClientSession> = BTreeMap::new();
        let mode = rocksdb::IteratorMode::From(SESSION_PREFIX, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(meta, mode) {
            let (k, v) = item.map_err(io_err)?;
            let Some(id) = k.strip_prefix(SESSION_PREFIX) else {
                break;
            };
            let id = u64::from_be_bytes(
                id.try_into()
                    .map_err(|_| io::Error::other("bad session key"))?,
            );
            all.insert(id, decode("session", &v)?);
        }
        for (id, s) in &self.sessions {
            match s {
                Some(s) => all.insert(*id, s.clone()),
                None => all.remove(id),
            };
        }
        Ok(all.into_iter().collect())
    }

    /// Opens a session as `client_id` at leader time `now`, first dropping expired sessions
    /// and, at the limit, the least recently used one. Deterministic on every replica.
    fn open_session(&mut self, client_id: u64, ttl_ms: u64, now: u64) -> Result<(), io::Error> {
        let mut live = Vec::new();
        for (id, s) in self.all_sessions()? {
            if s.expired_at(now) {
                self.set_session(id, None)?;
            } else {
                live.push((s.last_seen_ms, id));
            }
        }
        live.sort_unstable();
        let excess = (live.len() + 1).saturating_sub(MAX_SESSIONS);
        for (_, id) in live.into_iter().take(excess) {
            self.set_session(id, None)?;
        }
        let session = ClientSession {
            last_sequence: 0,
            last_response: None,
            last_seen_ms: now,
            ttl_ms,
        };
        self.set_session(client_id, Some(session))
    }
}

impl KvView for BatchView<'_> {
    type Error = io::Error;

    fn get(&mut self, key: &[u8]) -> Result<Option<KeyRecord>, io::Error> {
        if let Some(v) = self.overlay.get(key) {
            return Ok(v.clone());
        }
        match self.db.get_pinned_cf(self.kv, key).map_err(io_err)? {
            Some(v) => Ok(Some(decode("kv record", &v)?)),
            None => Ok(None),
        }
    }

    fn put(&mut self, key: &[u8], record: KeyRecord) -> Result<(), io::Error> {
        self.batch.put_cf(self.kv, key, encode(&record)?);
        self.overlay.insert(key.to_vec(), Some(record));
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), io::Error> {
        self.batch.delete_cf(self.kv, key);
        self.overlay.insert(key.to_vec(), None);
        Ok(())
    }
}

type Responder = openraft::storage::ApplyResponder<TypeConfig>;

impl StateMachine {
    /// Writes the batch together with `last_applied` (and membership, cluster id) atomically
    /// (DESIGN.md §2 point 4), then answers the waiting clients.
    fn commit_batch(
        &self,
        mut view: BatchView<'_>,
        last_applied: &LogId,
        membership: Option<&StoredMembership>,
        leader_time: Option<u64>,
        responders: &mut Vec<(Option<Responder>, CommandResponse)>,
    ) -> Result<(), io::Error> {
        let meta = cf(&self.db, CF_SM_META)?;
        view.batch
            .put_cf(meta, KEY_LAST_APPLIED, encode(last_applied)?);
        if let Some(t) = leader_time {
            view.batch.put_cf(meta, KEY_LEADER_TIME, encode(&t)?);
        }
        if let Some(m) = membership {
            view.batch.put_cf(meta, KEY_MEMBERSHIP, encode(m)?);
        }
        // Not synced per batch: the log entries are durable, so a lost apply is re-applied
        // after a restart; purge syncs the WAL before dropping any entry.
        self.db
            .write_opt(view.batch, &WriteOptions::default())
            .map_err(io_err)?;
        for (responder, response) in responders.drain(..) {
            if let Some(r) = responder {
                r.send(response);
            }
        }
        Ok(())
    }

    fn current_snapshot_meta(&self) -> Result<Option<SnapshotMeta>, io::Error> {
        get_meta(&self.db, CF_SM_META, KEY_SNAPSHOT_META)
    }

    /// Loads a snapshot file into the key space. Crash-safe: the first batch clears the key
    /// space and `last_applied`, the bulk is flushed to SST files, and only then the last
    /// batch sets `last_applied` (synced); a crash in between leaves this replica behind its
    /// durable current snapshot, and openraft installs it again on start.
    fn load_snapshot(&self, meta: &SnapshotMeta, file: std::fs::File) -> Result<(), io::Error> {
        let kv = cf(&self.db, CF_KV)?;
        let sm_meta = cf(&self.db, CF_SM_META)?;
        let mut reader = SnapshotReader::new(file)?;

        let mut batch = WriteBatch::default();
        let first = self
            .db
            .iterator_cf(kv, rocksdb::IteratorMode::Start)
            .next()
            .transpose()
            .map_err(io_err)?;
        let last = self
            .db
            .iterator_cf(kv, rocksdb::IteratorMode::End)
            .next()
            .transpose()
            .map_err(io_err)?;
        if let (Some((first, _)), Some((last, _))) = (first, last) {
            let mut end = last.to_vec();
            end.push(0);
            batch.delete_range_cf(kv, &first[..], &end[..]);
        }
        batch.delete_cf(sm_meta, KEY_LAST_APPLIED);
        // The snapshot's session table replaces ours ('0' follows '/' in byte order).
        batch.delete_range_cf(sm_meta, SESSION_PREFIX, b"session0");
        self.db.write(batch).map_err(io_err)?;

        // The bulk is written without the WAL (half the writes) and made durable by the
        // flush below, before the last batch sets last_applied; a crash before that leaves
        // last_applied unset and the snapshot is installed again.
        let mut bulk = WriteOptions::default();
        bulk.disable_wal(true);
        let mut batch = WriteBatch::default();
        while let Some(record) = reader.next_record()? {
            match record {
                Record::Kv { key, record } => batch.put_cf(kv, key, encode(&record)?),
                Record::ClusterId(id) => batch.put_cf(sm_meta, KEY_CLUSTER_ID, encode(&id)?),
                Record::NextNodeId(id) => batch.put_cf(sm_meta, KEY_NEXT_NODE_ID, encode(&id)?),
                Record::LeaderTime(t) => batch.put_cf(sm_meta, KEY_LEADER_TIME, encode(&t)?),
                Record::Session { client_id, session } => {
                    batch.put_cf(sm_meta, session_key(client_id), encode(&session)?)
                }
                Record::Meta(_) | Record::End { .. } => {}
            }
            if batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
                self.db
                    .write_opt(std::mem::take(&mut batch), &bulk)
                    .map_err(io_err)?;
            }
        }
        self.db
            .write_opt(std::mem::take(&mut batch), &bulk)
            .map_err(io_err)?;
        self.db
            .flush_cfs_opt(&[kv, sm_meta], &rocksdb::FlushOptions::default())
            .map_err(io_err)?;
        if let Some(last) = &meta.last_log_id {
            batch.put_cf(sm_meta, KEY_LAST_APPLIED, encode(last)?);
        }
        batch.put_cf(sm_meta, KEY_MEMBERSHIP, encode(&meta.last_membership)?);
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db.write_opt(batch, &sync).map_err(io_err)
    }
}

/// The leader time session commands are judged by: the largest time any applied session
/// command carried (leaders' clocks may disagree; the state machine's time never goes back).
fn advance_leader_time(
    db: &DB,
    cached: &mut Option<u64>,
    proposed_ms: u64,
) -> Result<u64, io::Error> {
    let current = match cached {
        Some(t) => *t,
        None => get_meta::<u64>(db, CF_SM_META, KEY_LEADER_TIME)?.unwrap_or(0),
    };
    let now = current.max(proposed_ms);
    *cached = Some(now);
    Ok(now)
}

/// The next node id: at least `stored` and above every id in `membership`.
fn allocate_node_id(stored: u64, membership: &StoredMembership) -> u64 {
    let max_member = membership
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .max()
        .unwrap_or(0);
    stored.max(max_member + 1)
}

/// Writes the whole state machine from one RocksDB snapshot into a durable file at `path`.
fn write_snapshot(db: &DB, path: PathBuf) -> Result<(SnapshotMeta, PathBuf), io::Error> {
    let view = db.snapshot();
    write_snapshot_from(db, &view, path)
}

/// Makes `tmp` the current snapshot: renames it to its final name, records its meta durably
/// and deletes older files. Returns the final path.
fn promote_snapshot(
    db: &DB,
    dir: &std::path::Path,
    meta: &SnapshotMeta,
    tmp: &std::path::Path,
) -> Result<PathBuf, io::Error> {
    let path = dir.join(snapshot::file_name(meta));
    std::fs::rename(tmp, &path)?;
    super::sync_dir(dir)?;
    let mut batch = WriteBatch::default();
    batch.put_cf(cf(db, CF_SM_META)?, KEY_SNAPSHOT_META, encode(meta)?);
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    db.write_opt(batch, &sync).map_err(io_err)?;
    snapshot::remove_others(dir, &path);
    Ok(path)
}

fn tmp_path(dir: &std::path::Path, what: &str) -> PathBuf {
    let nonce: u64 = rand::random();
    dir.join(format!("{what}-{nonce:016x}.tmp"))
}

/// Builds a snapshot in a thread that took its RocksDB view when the builder was created, so
/// the snapshot is exactly the state at that moment while applies go on.
pub struct SnapshotBuilder {
    result: Option<tokio::sync::oneshot::Receiver<Result<Snapshot, io::Error>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let rx = self
            .result
            .take()
            .ok_or_else(|| io::Error::other("snapshot builder used twice"))?;
        rx.await
            .map_err(|_| io::Error::other("snapshot builder thread died"))?
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let applied = get_meta(&self.db, CF_SM_META, KEY_LAST_APPLIED)?;
        let membership = get_meta(&self.db, CF_SM_META, KEY_MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let kv = cf(&self.db, CF_KV)?;
        let new_view = || BatchView {
            db: &self.db,
            kv,
            batch: WriteBatch::default(),
            overlay: HashMap::new(),
            sessions: HashMap::new(),
        };
        let mut view = new_view();
        let mut responders = Vec::new();
        let mut last_applied = None;
        let mut membership: Option<StoredMembership> = None;
        let mut cluster_id_known = None;
        let mut next_node_id = None;
        let mut leader_time: Option<u64> = None;

        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let log_id = entry.log_id();
            let response = match &entry.payload {
                EntryPayload::Blank => CommandResponse::Empty,
                EntryPayload::Normal(Command::InitCluster { cluster_id }) => {
                    let known = match cluster_id_known {
                        Some(k) => k,
                        None => get_meta::<u64>(&self.db, CF_SM_META, KEY_CLUSTER_ID)?.is_some(),
                    };
                    let sm_meta = cf(&self.db, CF_SM_META)?;
                    if !known {
                        view.batch
                            .put_cf(sm_meta, KEY_CLUSTER_ID, encode(cluster_id)?);
                    }
                    view.batch
                        .put_cf(sm_meta, KEY_CLUSTER_ID_LOGGED, encode(&true)?);
                    cluster_id_known = Some(true);
                    CommandResponse::Empty
                }
                EntryPayload::Normal(Command::AllocateNodeId) => {
                    let stored = match next_node_id {
                        Some(n) => n,
                        None => {
                            get_meta::<u64>(&self.db, CF_SM_META, KEY_NEXT_NODE_ID)?.unwrap_or(1)
                        }
                    };
                    // Above every id the membership has ever named, as far as this replica
                    // has applied: the same on every replica at this log index.
                    let current = match &membership {
                        Some(m) => m.clone(),
                        None => get_meta(&self.db, CF_SM_META, KEY_MEMBERSHIP)?.unwrap_or_default(),
                    };
                    let id = allocate_node_id(stored, &current);
                    next_node_id = Some(id + 1);
                    view.batch.put_cf(
                        cf(&self.db, CF_SM_META)?,
                        KEY_NEXT_NODE_ID,
                        encode(&(id + 1))?,
                    );
                    CommandResponse::NodeId(id)
                }
                EntryPayload::Normal(Command::OpenSession {
                    ttl_ms,
                    leader_time_ms,
                }) => {
                    let now = advance_leader_time(&self.db, &mut leader_time, *leader_time_ms)?;
                    view.open_session(log_id.index(), *ttl_ms, now)?;
                    CommandResponse::SessionOpened {
                        client_id: log_id.index(),
                    }
                }
                EntryPayload::Normal(Command::Session {
                    client_id,
                    sequence,
                    leader_time_ms,
                    cmd,
                }) => {
                    let now = advance_leader_time(&self.db, &mut leader_time, *leader_time_ms)?;
                    let session = view.session(*client_id)?;
                    match check_session(session.as_ref(), *client_id, *sequence, now) {
                        SessionCheck::Apply => {
                            let response = match cmd.as_ref() {
                                Command::Put(_) | Command::Delete(_) | Command::Txn(_) => {
                                    execute(cmd, log_id.index(), &mut view)?
                                }
                                // Only key writes run inside a session.
                                _ => CommandResponse::Empty,
                            };
                            let ttl_ms = session.map_or(0, |s| s.ttl_ms);
                            let updated = ClientSession {
                                last_sequence: *sequence,
                                last_response: Some(response.clone()),
                                last_seen_ms: now,
                                ttl_ms,
                            };
                            view.set_session(*client_id, Some(updated))?;
                            response
                        }
                        SessionCheck::Duplicate(response) => response,
                        SessionCheck::Reject(rejection) => {
                            if matches!(rejection, SessionRejection::Expired { .. }) {
                                view.set_session(*client_id, None)?;
                            }
                            CommandResponse::Rejected(rejection)
                        }
                    }
                }
                EntryPayload::Normal(cmd) => execute(cmd, log_id.index(), &mut view)?,
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(log_id), m.clone()));
                    CommandResponse::Empty
                }
            };
            responders.push((responder, response));
            last_applied = Some(log_id);
            if (responders.len() >= MAX_ENTRIES_PER_BATCH
                || view.batch.size_in_bytes() >= MAX_BYTES_PER_BATCH)
                && let Some(last) = &last_applied
            {
                let full = std::mem::replace(&mut view, new_view());
                self.commit_batch(
                    full,
                    last,
                    membership.take().as_ref(),
                    leader_time,
                    &mut responders,
                )?;
            }
        }
        if let Some(last) = &last_applied {
            self.commit_batch(
                view,
                last,
                membership.as_ref(),
                leader_time,
                &mut responders,
            )?;
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (taken_tx, taken_rx) = std::sync::mpsc::channel::<()>();
        let db = self.db.clone();
        let dir = self.snapshot_dir.clone();
        let lock = self.snapshot_lock.clone();
        let spawned = std::thread::Builder::new()
            .name("ferrokv-snapshot".into())
            .spawn(move || {
                let result = (|| {
                    let tmp = tmp_path(&dir, "build");
                    // write_snapshot takes the RocksDB view first thing; signal once it has.
                    let view_guard = ViewTaken(Some(taken_tx));
                    let (meta, tmp) = write_snapshot_signalling(&db, tmp, view_guard)?;
                    let _g = lock
                        .lock()
                        .map_err(|_| io::Error::other("snapshot lock poisoned"))?;
                    let current: Option<SnapshotMeta> =
                        get_meta(&db, CF_SM_META, KEY_SNAPSHOT_META)?;
                    if current
                        .as_ref()
                        .is_some_and(|c| c.last_log_id >= meta.last_log_id)
                    {
                        // An install or another build already made a newer snapshot current.
                        let _ = std::fs::remove_file(&tmp);
                        let c = current.ok_or_else(|| io::Error::other("unreachable"))?;
                        let path = dir.join(find_current_file(&dir)?);
                        return Ok(Snapshot {
                            meta: c,
                            snapshot: SnapshotFile::open(path)?,
                        });
                    }
                    let path = promote_snapshot(&db, &dir, &meta, &tmp)?;
                    Ok(Snapshot {
                        meta,
                        snapshot: SnapshotFile::open(path)?,
                    })
                })();
                let _ = tx.send(result);
            });
        match spawned {
            // Wait only until the view is taken: later applies must not leak into it.
            Ok(_) => {
                let _ = taken_rx.recv();
            }
            Err(e) => tracing::error!("cannot start snapshot thread: {e}"),
        }
        SnapshotBuilder { result: Some(rx) }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        let dir = self.snapshot_dir.clone();
        // Keep our own durable copy first, so a crash during loading can install it again.
        // A file received into our snapshot dir (its `incoming` subdir, fsynced by the peer
        // service) is moved rather than copied: a rename on the same volume, not a second
        // write of the whole state.
        let own = if snapshot.path.parent() == Some(dir.as_path()) {
            snapshot.path.clone()
        } else if let Some(from) = snapshot.path.parent().filter(|p| p.starts_with(&dir)) {
            let tmp = tmp_path(&dir, "install");
            std::fs::rename(&snapshot.path, &tmp)?;
            super::sync_dir(from)?;
            super::sync_dir(&dir)?;
            tmp
        } else {
            let tmp = tmp_path(&dir, "install");
            let mut src = snapshot.file.try_clone()?;
            use std::io::Seek;
            src.rewind()?;
            let mut dst = std::fs::File::create(&tmp)?;
            std::io::copy(&mut src, &mut dst)?;
            dst.sync_all()?;
            tmp
        };
        let db = self.db.clone();
        let lock = self.snapshot_lock.clone();
        let meta2 = meta.clone();
        let path = {
            let _g = lock
                .lock()
                .map_err(|_| io::Error::other("snapshot lock poisoned"))?;
            promote_snapshot(&db, &dir, &meta2, &own)?
        };
        let file = std::fs::File::open(&path)?;
        self.load_snapshot(meta, file)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let _g = self
            .snapshot_lock
            .lock()
            .map_err(|_| io::Error::other("snapshot lock poisoned"))?;
        let Some(meta) = self.current_snapshot_meta()? else {
            return Ok(None);
        };
        let path = self
            .snapshot_dir
            .join(find_current_file(&self.snapshot_dir)?);
        Ok(Some(Snapshot {
            meta,
            snapshot: SnapshotFile::open(path)?,
        }))
    }
}

/// Sends on drop-or-signal that the RocksDB view has been taken.
struct ViewTaken(Option<std::sync::mpsc::Sender<()>>);

impl ViewTaken {
    fn signal(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for ViewTaken {
    fn drop(&mut self) {
        self.signal();
    }
}

fn write_snapshot_signalling(
    db: &DB,
    path: PathBuf,
    mut taken: ViewTaken,
) -> Result<(SnapshotMeta, PathBuf), io::Error> {
    let guard = db.snapshot();
    taken.signal();
    let r = write_snapshot_from(db, &guard, path);
    drop(guard);
    r
}

fn write_snapshot_from(
    db: &DB,
    view: &rocksdb::SnapshotWithThreadMode<'_, DB>,
    path: PathBuf,
) -> Result<(SnapshotMeta, PathBuf), io::Error> {
    let sm_meta = cf(db, CF_SM_META)?;
    let read = |key: &[u8]| -> Result<Option<Vec<u8>>, io::Error> {
        view.get_cf(sm_meta, key).map_err(io_err)
    };
    let last_log_id: Option<LogId> = read(KEY_LAST_APPLIED)?
        .map(|b| decode("last_applied", &b))
        .transpose()?;
    let last_membership: StoredMembership = read(KEY_MEMBERSHIP)?
        .map(|b| decode("membership", &b))
        .transpose()?
        .unwrap_or_default();
    let cluster_id: Option<u64> = read(KEY_CLUSTER_ID)?
        .map(|b| decode("cluster_id", &b))
        .transpose()?;
    let meta = SnapshotMeta {
        last_log_id,
        last_membership,
    };

    let mut w = SnapshotWriter::create(path)?;
    w.write(&Record::Meta(meta.clone()))?;
    if let Some(id) = cluster_id {
        w.write(&Record::ClusterId(id))?;
    }
    let next_node_id: Option<u64> = read(KEY_NEXT_NODE_ID)?
        .map(|b| decode("next_node_id", &b))
        .transpose()?;
    if let Some(id) = next_node_id {
        w.write(&Record::NextNodeId(id))?;
    }
    let leader_time: Option<u64> = read(KEY_LEADER_TIME)?
        .map(|b| decode("leader_time", &b))
        .transpose()?;
    if let Some(t) = leader_time {
        w.write(&Record::LeaderTime(t))?;
    }
    let mode = rocksdb::IteratorMode::From(SESSION_PREFIX, rocksdb::Direction::Forward);
    for item in view.iterator_cf(sm_meta, mode) {
        let (k, v) = item.map_err(io_err)?;
        let Some(id) = k.strip_prefix(SESSION_PREFIX) else {
            break;
        };
        let client_id = u64::from_be_bytes(
            id.try_into()
                .map_err(|_| io::Error::other("bad session key"))?,
        );
        w.write(&Record::Session {
            client_id,
            session: decode("session", &v)?,
        })?;
    }
    for item in view.iterator_cf(cf(db, CF_KV)?, rocksdb::IteratorMode::Start) {
        let (key, v) = item.map_err(io_err)?;
        w.write(&Record::Kv {
            key: key.to_vec(),
            record: decode("kv record", &v)?,
        })?;
    }
    Ok((meta, w.finish()?))
}

/// The one finished snapshot file in `dir`.
fn find_current_file(dir: &std::path::Path) -> Result<String, io::Error> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".snap"))
        .collect();
    names.sort();
    names.pop().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "snapshot meta recorded but no snapshot file",
        )
    })
}
