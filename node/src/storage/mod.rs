//! One RocksDB per replica: the Raft log, Raft metadata, user keys and state-machine metadata.
//!
//! # Layout
//! - [`log_store`]: openraft's `RaftLogStorage` over the `raft_log` and `raft_meta` column
//!   families, with group commit (many appends, one fsync).
//! - [`state_machine`]: openraft's `RaftStateMachine` over `kv` and `sm_meta`; applies are
//!   atomic batches together with `last_applied`.
//! - [`snapshot`]: the snapshot file format, written from a consistent RocksDB view and read
//!   back in bounded pieces.
//! - [`command`]: the replicated commands and their pure execution.
//!
//! Log and state machine share one DB, so one WAL orders every write: a synced write makes
//! every earlier write durable too. The durability promises are listed in DESIGN.md §2 and
//! repeated on each function that keeps one.

pub mod command;
pub mod log_store;
pub mod snapshot;
pub mod state_machine;

use std::io;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use rocksdb::ColumnFamilyDescriptor;
use rocksdb::DB;
use rocksdb::Options;

pub use log_store::LogStore;
pub use snapshot::SnapshotFile;
pub use state_machine::StateMachine;

pub(crate) const CF_RAFT_LOG: &str = "raft_log";
pub(crate) const CF_RAFT_META: &str = "raft_meta";
pub(crate) const CF_KV: &str = "kv";
pub(crate) const CF_SM_META: &str = "sm_meta";

/// Errors opening or reading the store outside openraft's traits (which use `io::Error`).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("io: {0}")]
    Io(#[from] io::Error),
    #[error("corrupt record in {what}: {source}")]
    Decode {
        what: &'static str,
        source: postcard::Error,
    },
}

/// Tuning that does not change what is stored.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Bytes of RocksDB block cache shared by all column families.
    pub block_cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            block_cache_bytes: 64 << 20,
        }
    }
}

/// The opened store: the DB and where snapshot files live.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: Arc<DB>,
    pub(crate) snapshot_dir: PathBuf,
    db_dir: PathBuf,
}

impl Store {
    /// Opens (or creates) the store under `data_dir`.
    pub fn open(data_dir: &Path, opts: &StoreOptions) -> Result<Store, StorageError> {
        let db_dir = data_dir.join("db");
        let snapshot_dir = data_dir.join("snapshots");
        std::fs::create_dir_all(&db_dir)?;
        std::fs::create_dir_all(&snapshot_dir)?;

        let cache = rocksdb::Cache::new_lru_cache(opts.block_cache_bytes);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);

        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        // Every synced write must also cover the earlier unsynced ones; RocksDB keeps one WAL.
        db_opts.set_max_total_wal_size(256 << 20);
        db_opts.set_keep_log_file_num(4);
        db_opts.increase_parallelism(2);

        let cf = |name: &str| {
            let mut o = Options::default();
            o.set_block_based_table_factory(&table);
            if name == CF_RAFT_LOG {
                // The log is written in index order and read in ranges; no compression keeps
                // appends cheap, and purged prefixes are dropped by range deletes.
                o.set_compression_type(rocksdb::DBCompressionType::None);
            } else {
                o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            }
            ColumnFamilyDescriptor::new(name, o)
        };
        let cfs = [CF_RAFT_LOG, CF_RAFT_META, CF_KV, CF_SM_META].map(cf);
        let db = DB::open_cf_descriptors(&db_opts, &db_dir, cfs)?;
        Ok(Store {
            db: Arc::new(db),
            snapshot_dir,
            db_dir,
        })
    }

    /// The log store and state machine handed to openraft.
    pub fn split(&self) -> Result<(LogStore, StateMachine), StorageError> {
        Ok((
            LogStore::new(self.db.clone())?,
            StateMachine::new(self.db.clone(), self.snapshot_dir.clone())?,
        ))
    }

    /// Bytes the DB uses on disk (SST files plus WAL), for Status.
    pub fn size_on_disk(&self) -> u64 {
        dir_size(&self.db_dir) + dir_size(&self.snapshot_dir)
    }

    /// Makes every write so far durable (used before exit).
    pub fn sync(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true)?;
        Ok(())
    }

    /// Whether the store has never held Raft state (no vote, no log, nothing applied).
    pub fn is_pristine(&self) -> Result<bool, StorageError> {
        let meta = cf(&self.db, CF_RAFT_META).map_err(StorageError::Io)?;
        let log = cf(&self.db, CF_RAFT_LOG).map_err(StorageError::Io)?;
        let sm = cf(&self.db, CF_SM_META).map_err(StorageError::Io)?;
        let empty = |c| {
            self.db
                .iterator_cf(c, rocksdb::IteratorMode::Start)
                .next()
                .is_none()
        };
        Ok(empty(meta) && empty(log) && empty(sm))
    }
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, io::Error> {
    db.cf_handle(name)
        .ok_or_else(|| io::Error::other(format!("column family {name} is missing")))
}

pub(crate) fn io_err(e: rocksdb::Error) -> io::Error {
    io::Error::other(e)
}

pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, io::Error> {
    postcard::to_stdvec(v).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    what: &str,
    bytes: &[u8],
) -> Result<T, io::Error> {
    postcard::from_bytes(bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("corrupt {what}: {e}")))
}

/// Reads and decodes one value of a metadata column family.
pub(crate) fn get_meta<T: serde::de::DeserializeOwned>(
    db: &DB,
    cf_name: &str,
    key: &[u8],
) -> Result<Option<T>, io::Error> {
    let c = cf(db, cf_name)?;
    match db.get_pinned_cf(c, key).map_err(io_err)? {
        Some(bytes) => Ok(Some(decode(cf_name, &bytes)?)),
        None => Ok(None),
    }
}

/// Fsyncs a directory so a rename or create inside it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod model_test;
#[cfg(test)]
mod suite_test;
