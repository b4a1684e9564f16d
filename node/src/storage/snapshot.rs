//! The snapshot file: the state machine written record by record from a consistent RocksDB
//! view, so neither building, sending nor installing holds the whole store in memory.
//!
//! Format: the magic `FKVSNAP1`, then records, each a little-endian u32 length and a postcard
//! [`Record`]; the last record is `End` with the count of records before it, so a truncated
//! file is detected instead of installed.

use std::fs::File;
use std::io;
use std::io::BufReader;
use std::io::BufWriter;
use std::io::Read;
use std::io::Seek;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;

use serde::Deserialize;
use serde::Serialize;

use super::command::KeyRecord;
use crate::raft::SnapshotMeta;

const MAGIC: &[u8; 8] = b"FKVSNAP1";
/// A record longer than this is corruption, not data (keys and values are far smaller).
const MAX_RECORD_BYTES: u32 = 64 << 20;

/// Snapshot data as openraft moves it around: an open file and where it lives.
#[derive(Debug)]
pub struct SnapshotFile {
    pub file: File,
    pub path: PathBuf,
}

impl SnapshotFile {
    pub fn open(path: PathBuf) -> io::Result<Self> {
        Ok(Self {
            file: File::open(&path)?,
            path,
        })
    }

    pub fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// What the snapshot covers; first in every file.
    Meta(SnapshotMeta),
    ClusterId(u64),
    /// The lowest node id the cluster may hand out next.
    NextNodeId(u64),
    /// The leader time client sessions expire by.
    LeaderTime(u64),
    /// A client session (exactly-once writes survive snapshot install).
    Session {
        client_id: u64,
        session: super::command::ClientSession,
    },
    Kv {
        key: Vec<u8>,
        record: KeyRecord,
    },
    End {
        records: u64,
    },
}

/// Writes records to a new file and makes it durable.
pub struct SnapshotWriter {
    out: BufWriter<File>,
    path: PathBuf,
    records: u64,
}

impl SnapshotWriter {
    pub fn create(path: PathBuf) -> io::Result<Self> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        out.write_all(MAGIC)?;
        Ok(Self {
            out,
            path,
            records: 0,
        })
    }

    pub fn write(&mut self, record: &Record) -> io::Result<()> {
        let bytes = super::encode(record)?;
        let len = u32::try_from(bytes.len())
            .map_err(|_| io::Error::other("snapshot record over 4 GiB"))?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&bytes)?;
        self.records += 1;
        Ok(())
    }

    /// Writes the end record and fsyncs the file. Returns its path.
    pub fn finish(mut self) -> io::Result<PathBuf> {
        let end = Record::End {
            records: self.records,
        };
        self.write(&end)?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(self.path)
    }
}

/// Reads a snapshot file record by record.
pub struct SnapshotReader {
    input: BufReader<File>,
    seen: u64,
    done: bool,
}

impl SnapshotReader {
    /// Reads from the start of `file` (the handle is rewound first).
    pub fn new(mut file: File) -> io::Result<Self> {
        file.rewind()?;
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a ferrokv snapshot (bad magic)",
            ));
        }
        Ok(Self {
            input,
            seen: 0,
            done: false,
        })
    }

    /// The next data record, or `None` after a valid end record.
    pub fn next_record(&mut self) -> io::Result<Option<Record>> {
        if self.done {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        self.input.read_exact(&mut len).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot truncated: {e}"),
            )
        })?;
        let len = u32::from_le_bytes(len);
        if len > MAX_RECORD_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot record of {len} bytes"),
            ));
        }
        let mut buf = vec![0u8; len as usize];
        self.input.read_exact(&mut buf)?;
        match super::decode::<Record>("snapshot record", &buf)? {
            Record::End { records } if records == self.seen => {
                self.done = true;
                Ok(None)
            }
            Record::End { records } => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot end says {records} records, read {}", self.seen),
            )),
            r => {
                self.seen += 1;
                Ok(Some(r))
            }
        }
    }
}

/// The file name of a finished snapshot; one such file is current at a time.
pub fn file_name(meta: &SnapshotMeta) -> String {
    let index = meta.last_log_id.as_ref().map_or(0, |l| l.index());
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("snapshot-{index:020}-{nonce}.snap")
}

/// Deletes snapshot files in `dir` other than `keep`. Errors are ignored: a leftover file
/// wastes space but is never read.
pub fn remove_others(dir: &Path, keep: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(Result::ok) {
            let p = e.path();
            if p != keep && p.extension().is_some_and(|x| x == "snap") {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_truncation_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snap");
        let mut w = SnapshotWriter::create(path.clone()).unwrap();
        for i in 0..100u64 {
            let record = KeyRecord {
                value: vec![i as u8; 10],
                create_revision: i,
                mod_revision: i,
                version: 1,
            };
            w.write(&Record::Kv {
                key: i.to_be_bytes().to_vec(),
                record,
            })
            .unwrap();
        }
        let path = w.finish().unwrap();
        let mut r = SnapshotReader::new(File::open(&path).unwrap()).unwrap();
        let mut n = 0;
        while let Some(rec) = r.next_record().unwrap() {
            assert!(matches!(rec, Record::Kv { .. }));
            n += 1;
        }
        assert_eq!(n, 100);

        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        let mut r = SnapshotReader::new(File::open(&path).unwrap()).unwrap();
        let err = loop {
            match r.next_record() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("truncated snapshot read as complete"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
