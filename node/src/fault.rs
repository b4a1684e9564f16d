//! Test-only faults that break a guarantee on purpose, so jepsen-lite and the tests can show
//! they catch it. They exist only with the `fault-injection` feature (binary
//! `ferrokv-faulty`); without it every check here is a constant `false`.

use clap::ValueEnum;

/// A guarantee to break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fault {
    /// Linearizable reads are served from local state without a read index.
    StaleRead,
    /// The leader acknowledges a write once it is in its own log, before it is committed.
    EarlyAck,
    /// The first answer to each session write (client_id, sequence) this replica serves is
    /// replaced by "outcome unknown" after the write committed, as if the connection broke.
    DropResponse,
}

/// The faults a node runs with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    #[cfg(feature = "fault-injection")]
    active: Option<Fault>,
}

impl Faults {
    #[cfg(feature = "fault-injection")]
    pub fn new(active: Option<Fault>) -> Self {
        Self { active }
    }

    pub fn stale_read(&self) -> bool {
        self.is(Fault::StaleRead)
    }

    pub fn early_ack(&self) -> bool {
        self.is(Fault::EarlyAck)
    }

    /// Under `drop-response`: whether to drop this answer (the first for `write`).
    pub fn drop_first_response(&self, write: (u64, u64)) -> bool {
        #[cfg(feature = "fault-injection")]
        if self.is(Fault::DropResponse) {
            use std::collections::HashSet;
            use std::sync::Mutex;
            use std::sync::OnceLock;
            static SEEN: OnceLock<Mutex<HashSet<(u64, u64)>>> = OnceLock::new();
            let seen = SEEN.get_or_init(Mutex::default);
            return seen.lock().map(|mut s| s.insert(write)).unwrap_or(false);
        }
        let _ = write;
        false
    }

    #[cfg(feature = "fault-injection")]
    fn is(&self, f: Fault) -> bool {
        self.active == Some(f)
    }

    #[cfg(not(feature = "fault-injection"))]
    fn is(&self, _f: Fault) -> bool {
        false
    }
}

/// `early-ack`: proposes the write without waiting for commit, waits only until it is in this
/// leader's own log, and answers with what applying it to the current state would give. A
/// write acknowledged this way is lost if the leader dies or is cut off before replicating it.
#[cfg(feature = "fault-injection")]
pub async fn early_ack_write(
    replica: &crate::replica::Replica,
    cmd: crate::storage::command::Command,
) -> crate::raft::wire::ForwardResult {
    use std::collections::BTreeMap;

    use openraft::async_runtime::watch::WatchReceiver;

    use crate::raft::wire::ForwardError;
    use crate::raft::wire::ForwardResponse;
    use crate::storage::command::KeyRecord;
    use crate::storage::command::KvView;

    struct Speculative<'a> {
        reader: &'a crate::storage::state_machine::KvReader,
        overlay: BTreeMap<Vec<u8>, Option<KeyRecord>>,
    }
    impl KvView for Speculative<'_> {
        type Error = std::io::Error;
        fn get(&mut self, key: &[u8]) -> Result<Option<KeyRecord>, Self::Error> {
            match self.overlay.get(key) {
                Some(v) => Ok(v.clone()),
                None => self.reader.get(key),
            }
        }
        fn put(&mut self, key: &[u8], record: KeyRecord) -> Result<(), Self::Error> {
            self.overlay.insert(key.to_vec(), Some(record));
            Ok(())
        }
        fn delete(&mut self, key: &[u8]) -> Result<(), Self::Error> {
            self.overlay.insert(key.to_vec(), None);
            Ok(())
        }
    }

    let mut cmd = cmd;
    cmd.stamp_leader_time(crate::replica::leader_time_ms());
    let before = replica.metrics().last_log_index.unwrap_or(0);
    replica
        .raft
        .client_write_ff(cmd.clone(), None)
        .await
        .map_err(|e| ForwardError::Unknown(e.to_string()))?;
    let mut rx = replica.raft.metrics();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    let index = loop {
        let last = rx.borrow_watched().last_log_index.unwrap_or(0);
        if last > before {
            break last;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => {
                return Err(ForwardError::NotLeader {
                    leader: replica.leader(),
                });
            }
        }
    };
    let mut view = Speculative {
        reader: &replica.reader,
        overlay: BTreeMap::new(),
    };
    // Answer as the state machine will once the entry applies: a session's id is its log
    // index, and a session write answers with its inner write.
    use crate::storage::command::Command;
    use crate::storage::command::CommandResponse;
    use crate::storage::command::execute;
    let failed = |e: std::io::Error| ForwardError::Failed(e.to_string());
    let response = match &cmd {
        Command::OpenSession { .. } => CommandResponse::SessionOpened { client_id: index },
        Command::Session { cmd: inner, .. } => execute(inner, index, &mut view).map_err(failed)?,
        other => execute(other, index, &mut view).map_err(failed)?,
    };
    Ok(ForwardResponse::Write {
        log_index: index,
        response,
    })
}
