//! The KV service: validation, reads (linearizable through a read barrier, or serializable),
//! and writes proposed through Raft.

use ferrokv_proto::v1 as pb;
use ferrokv_proto::v1::kv_server::Kv;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::ApiLimits;
use super::deadline;
use super::header;
use super::storage_status;
use crate::replica::Replica;
use crate::storage::command as cmd;
use crate::storage::command::CommandResponse;
use crate::storage::command::OpResult;

pub struct KvService {
    pub replica: Replica,
    pub limits: ApiLimits,
}

fn to_pb(kv: cmd::KeyValue) -> pb::KeyValue {
    pb::KeyValue {
        key: kv.key,
        value: kv.record.value,
        create_revision: kv.record.create_revision,
        mod_revision: kv.record.mod_revision,
        version: kv.record.version,
    }
}

impl ApiLimits {
    fn check_key(&self, key: &[u8]) -> Result<(), Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument(
                "key is empty; keys must be 1 or more bytes",
            ));
        }
        if key.len() > self.max_key_bytes {
            return Err(Status::invalid_argument(format!(
                "key is {} bytes, the limit is {} bytes (--max-key-bytes)",
                key.len(),
                self.max_key_bytes
            )));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), Status> {
        if value.len() > self.max_value_bytes {
            return Err(Status::invalid_argument(format!(
                "value is {} bytes, the limit is {} bytes (--max-value-bytes)",
                value.len(),
                self.max_value_bytes
            )));
        }
        Ok(())
    }

    fn put_op(&self, p: pb::PutRequest) -> Result<cmd::PutOp, Status> {
        self.check_key(&p.key)?;
        self.check_value(&p.value)?;
        Ok(cmd::PutOp {
            key: p.key,
            value: p.value,
            prev_kv: p.prev_kv,
        })
    }

    fn delete_op(&self, d: pb::DeleteRequest) -> Result<cmd::DeleteOp, Status> {
        self.check_key(&d.key)?;
        Ok(cmd::DeleteOp {
            key: d.key,
            prev_kv: d.prev_kv,
        })
    }

    fn txn(&self, t: pb::TxnRequest) -> Result<cmd::TxnCommand, Status> {
        let ops = t.success.len() + t.failure.len();
        if t.compares.len() > self.max_txn_ops || ops > self.max_txn_ops {
            return Err(Status::invalid_argument(format!(
                "txn has {} compares and {} ops, the limit is {} of each (--max-txn-ops)",
                t.compares.len(),
                ops,
                self.max_txn_ops
            )));
        }
        let compares = t
            .compares
            .into_iter()
            .map(|c| self.compare(c))
            .collect::<Result<_, _>>()?;
        let success = t
            .success
            .into_iter()
            .map(|o| self.txn_op(o))
            .collect::<Result<_, _>>()?;
        let failure = t
            .failure
            .into_iter()
            .map(|o| self.txn_op(o))
            .collect::<Result<_, _>>()?;
        Ok(cmd::TxnCommand {
            compares,
            success,
            failure,
        })
    }

    fn compare(&self, c: pb::Compare) -> Result<cmd::Compare, Status> {
        use pb::compare::Op;
        use pb::compare::Target;
        self.check_key(&c.key)?;
        let op = match Op::try_from(c.op) {
            Ok(Op::Equal) => cmd::CompareOp::Equal,
            Ok(Op::NotEqual) => cmd::CompareOp::NotEqual,
            Ok(Op::Greater) => cmd::CompareOp::Greater,
            Ok(Op::Less) => cmd::CompareOp::Less,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown compare op {}",
                    c.op
                )));
            }
        };
        let target = match Target::try_from(c.target) {
            Ok(Target::Value) => cmd::CompareTarget::Value(c.value),
            Ok(Target::Version) => cmd::CompareTarget::Version(c.number),
            Ok(Target::ModRevision) => cmd::CompareTarget::ModRevision(c.number),
            Ok(Target::CreateRevision) => cmd::CompareTarget::CreateRevision(c.number),
            Ok(Target::Exists) => {
                if !matches!(op, cmd::CompareOp::Equal | cmd::CompareOp::NotEqual) {
                    return Err(Status::invalid_argument(
                        "an EXISTS compare takes EQUAL or NOT_EQUAL",
                    ));
                }
                cmd::CompareTarget::Exists(c.exists)
            }
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown compare target {}",
                    c.target
                )));
            }
        };
        Ok(cmd::Compare {
            key: c.key,
            op,
            target,
        })
    }

    fn txn_op(&self, o: pb::TxnOp) -> Result<cmd::TxnOp, Status> {
        match o.op {
            Some(pb::txn_op::Op::Put(p)) if p.session.is_some() => Err(session_on_txn_op()),
            Some(pb::txn_op::Op::Delete(d)) if d.session.is_some() => Err(session_on_txn_op()),
            Some(pb::txn_op::Op::Put(p)) => Ok(cmd::TxnOp::Put(self.put_op(p)?)),
            Some(pb::txn_op::Op::Delete(d)) => Ok(cmd::TxnOp::Delete(self.delete_op(d)?)),
            Some(pb::txn_op::Op::Get(g)) => {
                self.check_key(&g.key)?;
                Ok(cmd::TxnOp::Get { key: g.key })
            }
            None => Err(Status::invalid_argument(
                "txn op with no put, delete or get",
            )),
        }
    }
}

/// Where a scan starts and ends, from a request's range, prefix and continuation token.
#[derive(Debug, PartialEq, Eq)]
pub struct ScanBounds {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

/// The first key after every key starting with `prefix`, or `None` if there is none
/// (a prefix of only 0xff bytes runs to the end of the key space).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

pub fn scan_bounds(r: &pb::ScanRequest) -> Result<ScanBounds, Status> {
    let (start, end) = if !r.prefix.is_empty() {
        if !r.start.is_empty() || !r.end.is_empty() {
            return Err(Status::invalid_argument(
                "scan takes either a prefix or a start/end range, not both",
            ));
        }
        (r.prefix.clone(), prefix_end(&r.prefix))
    } else {
        let end = if r.end.is_empty() {
            None
        } else {
            Some(r.end.clone())
        };
        if let Some(e) = &end
            && e.as_slice() < r.start.as_slice()
        {
            return Err(Status::invalid_argument(format!(
                "scan range is inverted: end {:?} sorts before start {:?}",
                String::from_utf8_lossy(e),
                String::from_utf8_lossy(&r.start)
            )));
        }
        (r.start.clone(), end)
    };
    // The token is the last key returned; resume just after it.
    let start = if r.continuation.is_empty() {
        start
    } else {
        if r.continuation.as_slice() < start.as_slice()
            || end.as_ref().is_some_and(|e| r.continuation >= *e)
        {
            return Err(Status::invalid_argument(
                "continuation token is outside the scanned range",
            ));
        }
        let mut after = r.continuation.clone();
        after.push(0);
        after
    };
    Ok(ScanBounds { start, end })
}

fn op_result(r: OpResult) -> pb::TxnOpResult {
    use pb::txn_op_result::Result as R;
    let result = match r {
        OpResult::Put { prev } => R::Put(pb::PutResponse {
            header: None,
            prev_kv: prev.map(to_pb),
        }),
        OpResult::Delete { deleted, prev } => R::Delete(pb::DeleteResponse {
            header: None,
            deleted,
            prev_kv: prev.map(to_pb),
        }),
        OpResult::Get { kv } => R::Get(pb::GetResponse {
            header: None,
            kv: kv.map(to_pb),
        }),
    };
    pb::TxnOpResult {
        result: Some(result),
    }
}

fn session_on_txn_op() -> Status {
    Status::invalid_argument("a session belongs on the TxnRequest, not on its ops")
}

/// Session writes run once per (client_id, sequence); see `Command::Session`.
fn in_session(cmd: cmd::Command, session: Option<pb::Session>) -> Result<cmd::Command, Status> {
    match session {
        None => Ok(cmd),
        Some(s) if s.client_id == 0 || s.sequence == 0 => Err(Status::invalid_argument(
            "session client_id and sequence start at 1 (open a session with OpenSession)",
        )),
        Some(s) => Ok(cmd::Command::Session {
            client_id: s.client_id,
            sequence: s.sequence,
            leader_time_ms: 0,
            cmd: Box::new(cmd),
        }),
    }
}

/// Default and largest session idle time.
const DEFAULT_SESSION_TTL_MS: u64 = 60_000;
const MAX_SESSION_TTL_MS: u64 = 3_600_000;

fn unexpected(resp: &CommandResponse) -> Status {
    Status::internal(format!("state machine gave an unexpected answer: {resp:?}"))
}

impl KvService {
    /// Proposes a write (in its session, if any) and returns the log index and answer;
    /// a session rejection becomes FAILED_PRECONDITION naming why.
    async fn write(
        &self,
        cmd: cmd::Command,
        session: Option<pb::Session>,
        deadline: tokio::time::Instant,
    ) -> Result<(u64, CommandResponse), Status> {
        let ids = session.as_ref().map(|s| (s.client_id, s.sequence));
        let out = self
            .replica
            .write(in_session(cmd, session)?, deadline)
            .await?;
        if let CommandResponse::Rejected(r) = &out.response {
            let kind = match r {
                cmd::SessionRejection::Expired { .. } => "session expired",
                cmd::SessionRejection::StaleSequence { .. } => "stale sequence",
            };
            return Err(Status::failed_precondition(format!("{kind}: {r}")));
        }
        if let Some(ids) = ids
            && self.replica.faults.drop_first_response(ids)
        {
            return Err(Status::unknown(
                "outcome unknown: fault injection dropped the response of a committed write",
            ));
        }
        Ok((out.log_index, out.response))
    }

    async fn barrier(
        &self,
        consistency: i32,
        deadline: tokio::time::Instant,
    ) -> Result<(), Status> {
        match pb::Consistency::try_from(consistency) {
            Ok(pb::Consistency::Linearizable) => Ok(self.replica.read_barrier(deadline).await?),
            Ok(pb::Consistency::Serializable) => Ok(()),
            Err(_) => Err(Status::invalid_argument(format!(
                "unknown consistency {consistency}"
            ))),
        }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let deadline = deadline(&req, self.limits.default_deadline);
        let r = req.into_inner();
        self.limits.check_key(&r.key)?;
        self.barrier(r.consistency, deadline).await?;
        let kv = self.replica.reader.get(&r.key).map_err(storage_status)?;
        let kv = kv.map(|record| to_pb(cmd::KeyValue { key: r.key, record }));
        Ok(Response::new(pb::GetResponse {
            header: Some(header(&self.replica)),
            kv,
        }))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let deadline = deadline(&req, self.limits.default_deadline);
        let mut req = req.into_inner();
        let session = req.session.take();
        let op = self.limits.put_op(req)?;
        let (log_index, response) = self.write(cmd::Command::Put(op), session, deadline).await?;
        match response {
            CommandResponse::Op(OpResult::Put { prev }) => {
                let mut h = header(&self.replica);
                h.revision = h.revision.max(log_index);
                Ok(Response::new(pb::PutResponse {
                    header: Some(h),
                    prev_kv: prev.map(to_pb),
                }))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let deadline = deadline(&req, self.limits.default_deadline);
        let mut req = req.into_inner();
        let session = req.session.take();
        let op = self.limits.delete_op(req)?;
        let (log_index, response) = self
            .write(cmd::Command::Delete(op), session, deadline)
            .await?;
        match response {
            CommandResponse::Op(OpResult::Delete { deleted, prev }) => {
                let mut h = header(&self.replica);
                h.revision = h.revision.max(log_index);
                Ok(Response::new(pb::DeleteResponse {
                    header: Some(h),
                    deleted,
                    prev_kv: prev.map(to_pb),
                }))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn scan(
        &self,
        req: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        let deadline = deadline(&req, self.limits.default_deadline);
        let r = req.into_inner();
        let bounds = scan_bounds(&r)?;
        let limit = match r.limit as usize {
            0 => self.limits.max_scan_limit,
            n if n > self.limits.max_scan_limit => {
                return Err(Status::invalid_argument(format!(
                    "scan limit {n} is over the maximum page of {} keys; page with continuation",
                    self.limits.max_scan_limit
                )));
            }
            n => n,
        };
        self.barrier(r.consistency, deadline).await?;
        let page = self
            .replica
            .reader
            .scan(&bounds.start, bounds.end.as_deref(), limit, r.keys_only)
            .map_err(storage_status)?;
        let next_token = if page.more {
            page.kvs.last().map(|kv| kv.key.clone()).unwrap_or_default()
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::ScanResponse {
            header: Some(header(&self.replica)),
            kvs: page.kvs.into_iter().map(to_pb).collect(),
            more: page.more,
            next_token,
        }))
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let deadline = deadline(&req, self.limits.default_deadline);
        let mut req = req.into_inner();
        let session = req.session.take();
        let txn = self.limits.txn(req)?;
        let (log_index, response) = self
            .write(cmd::Command::Txn(txn), session, deadline)
            .await?;
        match response {
            CommandResponse::Txn { succeeded, results } => {
                let mut h = header(&self.replica);
                h.revision = h.revision.max(log_index);
                Ok(Response::new(pb::TxnResponse {
                    header: Some(h),
                    succeeded,
                    results: results.into_iter().map(op_result).collect(),
                }))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn open_session(
        &self,
        req: Request<pb::OpenSessionRequest>,
    ) -> Result<Response<pb::OpenSessionResponse>, Status> {
        let deadline = deadline(&req, self.limits.default_deadline);
        let ttl_ms = match req.into_inner().ttl_ms {
            0 => DEFAULT_SESSION_TTL_MS,
            t if t > MAX_SESSION_TTL_MS => {
                return Err(Status::invalid_argument(format!(
                    "session ttl {t} ms is over the limit of {MAX_SESSION_TTL_MS} ms"
                )));
            }
            t => t,
        };
        let cmd = cmd::Command::OpenSession {
            ttl_ms,
            leader_time_ms: 0,
        };
        let out = self.replica.write(cmd, deadline).await?;
        match out.response {
            CommandResponse::SessionOpened { client_id } => {
                let mut h = header(&self.replica);
                h.revision = h.revision.max(out.log_index);
                Ok(Response::new(pb::OpenSessionResponse {
                    header: Some(h),
                    client_id,
                    ttl_ms,
                }))
            }
            other => Err(unexpected(&other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"a"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }

    #[test]
    fn scan_bounds_reject_inverted_ranges_and_mixed_forms() {
        let r = pb::ScanRequest {
            start: b"b".to_vec(),
            end: b"a".to_vec(),
            ..Default::default()
        };
        let e = scan_bounds(&r).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("inverted"), "{}", e.message());
        let r = pb::ScanRequest {
            prefix: b"p".to_vec(),
            start: b"a".to_vec(),
            ..Default::default()
        };
        assert!(scan_bounds(&r).is_err());
    }

    #[test]
    fn continuation_resumes_after_the_last_key() {
        let r = pb::ScanRequest {
            prefix: b"p/".to_vec(),
            continuation: b"p/5".to_vec(),
            ..Default::default()
        };
        let b = scan_bounds(&r).unwrap();
        assert_eq!(b.start, b"p/5\0".to_vec());
        assert_eq!(b.end, Some(b"p0".to_vec()));
    }

    #[test]
    fn limits_name_the_limit() {
        let l = ApiLimits {
            max_key_bytes: 4,
            max_value_bytes: 8,
            max_txn_ops: 2,
            default_deadline: std::time::Duration::from_secs(1),
            max_scan_limit: 10,
        };
        let e = l.check_key(b"12345").unwrap_err();
        assert!(e.message().contains("limit is 4 bytes"), "{}", e.message());
        assert!(l.check_key(b"").unwrap_err().message().contains("empty"));
        let e = l.check_value(&[0; 9]).unwrap_err();
        assert!(e.message().contains("limit is 8 bytes"), "{}", e.message());
    }
}
