//! The Raft log and vote in RocksDB, with group commit: appends are written at once and made
//! durable by one fsync shared by every append that arrived meanwhile.

use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::sync::Arc;
use std::sync::mpsc;

use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use rocksdb::DB;
use rocksdb::WriteBatch;
use rocksdb::WriteOptions;

use super::CF_RAFT_LOG;
use super::CF_RAFT_META;
use super::cf;
use super::decode;
use super::encode;
use super::get_meta;
use super::io_err;
use crate::raft::Entry;
use crate::raft::LogId;
use crate::raft::TypeConfig;
use crate::raft::Vote;

const KEY_VOTE: &[u8] = b"vote";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";

/// Log keys are big-endian indexes so RocksDB's byte order is log order.
pub(crate) fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of(key: &[u8]) -> Result<u64, io::Error> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "log key is not 8 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

/// The log store handed to openraft. Cheap to clone; clones share the DB and the syncer.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    syncer: mpsc::Sender<IOFlushed<TypeConfig>>,
}

impl LogStore {
    pub(crate) fn new(db: Arc<DB>) -> Result<Self, io::Error> {
        let (tx, rx) = mpsc::channel::<IOFlushed<TypeConfig>>();
        let sync_db = db.clone();
        // One thread owns fsync: it takes every append that is waiting, syncs the WAL once and
        // then reports all of them. That is the group commit of DESIGN.md §2 point 3.
        std::thread::Builder::new()
            .name("ferrokv-wal-sync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    let result = sync_db.flush_wal(true);
                    for cb in waiting {
                        cb.io_completed(result.clone().map_err(io_err));
                    }
                }
            })?;
        Ok(Self { db, syncer: tx })
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), io::Error> {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db.write_opt(batch, &opts).map_err(io_err)
    }

    fn last_log_id(&self) -> Result<Option<LogId>, io::Error> {
        let log = cf(&self.db, CF_RAFT_LOG)?;
        match self.db.iterator_cf(log, rocksdb::IteratorMode::End).next() {
            Some(item) => {
                let (_, v) = item.map_err(io_err)?;
                let entry: Entry = decode("log entry", &v)?;
                Ok(Some(entry.log_id()))
            }
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let log = cf(&self.db, CF_RAFT_LOG)?;
        let mode = rocksdb::IteratorMode::From(&index_key(start), rocksdb::Direction::Forward);
        let mut entries = Vec::new();
        for item in self.db.iterator_cf(log, mode) {
            let (k, v) = item.map_err(io_err)?;
            if !range.contains(&index_of(&k)?) {
                break;
            }
            entries.push(decode("log entry", &v)?);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        get_meta(&self.db, CF_RAFT_META, KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged: Option<LogId> = get_meta(&self.db, CF_RAFT_META, KEY_LAST_PURGED)?;
        let last = self.last_log_id()?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    /// Durable on return: the vote is written with fsync before any message of the new term
    /// can leave (DESIGN.md §2 point 2).
    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_RAFT_META)?, KEY_VOTE, encode(vote)?);
        self.write(batch, true)
    }

    /// Not synced: a lost committed id only means re-applying from the log after a restart.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            cf(&self.db, CF_RAFT_META)?,
            KEY_COMMITTED,
            encode(&committed)?,
        );
        self.write(batch, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(get_meta::<Option<LogId>>(&self.db, CF_RAFT_META, KEY_COMMITTED)?.flatten())
    }

    /// Readable on return; `callback` fires only once the entries are fsynced. Entries of one
    /// call share one write batch, and appends waiting together share one fsync.
    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let log = cf(&self.db, CF_RAFT_LOG)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(log, index_key(entry.index()), encode(&entry)?);
        }
        self.write(batch, false)?;
        self.syncer
            .send(callback)
            .map_err(|_| io::Error::other("the WAL sync thread has stopped"))
    }

    /// Removes entries after `last_log_id`. Not synced on its own: the next synced append or
    /// vote orders it in the same WAL, and before that the removed entries were never
    /// acknowledged by this replica as anything but its own uncommitted tail.
    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index() + 1);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            cf(&self.db, CF_RAFT_LOG)?,
            index_key(from),
            index_key(u64::MAX),
        );
        batch.delete_cf(cf(&self.db, CF_RAFT_LOG)?, index_key(u64::MAX));
        self.write(batch, true)
    }

    /// Deletes entries up to `log_id`. openraft purges only entries covered by the applied
    /// state; the state machine's applies are not synced one by one, so the WAL is synced
    /// first: what the purged entries produced is then durable (DESIGN.md §2 point 5).
    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.db.flush_wal(true).map_err(io_err)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(
            cf(&self.db, CF_RAFT_META)?,
            KEY_LAST_PURGED,
            encode(&log_id)?,
        );
        batch.delete_range_cf(
            cf(&self.db, CF_RAFT_LOG)?,
            index_key(0),
            index_key(log_id.index() + 1),
        );
        self.write(batch, true)
    }
}
