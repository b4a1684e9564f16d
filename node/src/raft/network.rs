//! The peer network client: openraft's RPCs to other replicas over gRPC, and the channels
//! the node uses to forward requests to the leader.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use ferrokv_proto::v1::RaftMessage;
use ferrokv_proto::v1::SnapshotPart;
use ferrokv_proto::v1::raft_peer_client::RaftPeerClient;
use futures::Stream;
use futures::StreamExt;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftNetworkFactory;
use openraft::RaftNetworkV2;
use openraft::base::BoxFuture;
use openraft::base::BoxStream;
use openraft::entry::RaftEntry;
use openraft::errors::NetworkError;
use openraft::errors::RPCError;
use openraft::errors::ReplicationClosed;
use openraft::errors::StreamingError;
use openraft::errors::Unreachable;
use openraft::network::RPCOption;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use tokio::io::AsyncReadExt;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

use super::Entry;
use super::LogId;
use super::MemberInfo;
use super::NodeId;
use super::Snapshot;
use super::StreamAppendResult;
use super::TypeConfig;
use super::Vote;
use super::wire;
use crate::storage::SnapshotFile;

/// Bytes of snapshot data per gRPC message: bounded, so a large store never sits in memory.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Bytes of entries per AppendEntries message at most (one larger entry goes alone).
/// openraft batches by entry count only, so 256 entries of large values could make one
/// message of hundreds of MiB, which no per-message timeout would let through: a follower
/// catching up would retry it for ever.
pub const MAX_APPEND_BYTES: usize = 4 << 20;

/// Time allowed per byte of an AppendEntries message on top of openraft's timeout (which
/// is the heartbeat interval, meant for small messages): 1 s per 16 MiB.
const APPEND_NANOS_PER_BYTE: u64 = 1_000_000_000 / (16 << 20);

/// Lazily connected gRPC channels to peers, by peer address, shared by the Raft network and
/// the forwarding paths (one HTTP/2 connection per peer, reused).
#[derive(Clone, Default)]
pub struct PeerChannels {
    inner: Arc<Mutex<HashMap<String, Channel>>>,
    max_message_bytes: usize,
    /// Outgoing connections bind this source IP when set (--peer-source-ip).
    source_ip: Option<std::net::IpAddr>,
}

impl PeerChannels {
    pub fn new(max_message_bytes: usize, source_ip: Option<std::net::IpAddr>) -> Self {
        Self {
            inner: Arc::default(),
            max_message_bytes,
            source_ip,
        }
    }

    pub fn client(&self, addr: &str) -> Result<RaftPeerClient<Channel>, tonic::Status> {
        let channel = {
            let mut map = self
                .inner
                .lock()
                .map_err(|_| tonic::Status::internal("peer channel lock poisoned"))?;
            match map.get(addr) {
                Some(c) => c.clone(),
                None => {
                    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                        .map_err(|e| {
                            tonic::Status::invalid_argument(format!(
                                "bad peer address {addr:?}: {e}"
                            ))
                        })?
                        .connect_timeout(Duration::from_secs(1))
                        .local_address(self.source_ip)
                        .tcp_nodelay(true)
                        .http2_keep_alive_interval(Duration::from_secs(5))
                        .keep_alive_timeout(Duration::from_secs(5));
                    let c = endpoint.connect_lazy();
                    map.insert(addr.to_string(), c.clone());
                    c
                }
            }
        };
        // Snapshots and large appends are chunked, but one AppendEntries may carry up to
        // max_payload_entries full-size values.
        Ok(RaftPeerClient::new(channel)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }
}

/// Creates one [`PeerNetwork`] per target for openraft.
#[derive(Clone)]
pub struct PeerNetworkFactory {
    pub channels: PeerChannels,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &MemberInfo) -> Self::Network {
        PeerNetwork {
            target,
            addr: node.peer_addr.clone(),
            channels: self.channels.clone(),
        }
    }
}

/// openraft's connection to one peer.
pub struct PeerNetwork {
    target: NodeId,
    addr: String,
    channels: PeerChannels,
}

fn rpc_error(target: NodeId, status: tonic::Status) -> RPCError<TypeConfig> {
    let err = std::io::Error::other(format!(
        "peer {target}: {}: {}",
        status.code(),
        status.message()
    ));
    // A refused or failed connection means the peer is down: openraft backs off from it.
    if status.code() == tonic::Code::Unavailable {
        RPCError::Unreachable(Unreachable::new(&err))
    } else {
        RPCError::Network(NetworkError::new(&err))
    }
}

impl PeerNetwork {
    fn client(&self) -> Result<RaftPeerClient<Channel>, RPCError<TypeConfig>> {
        self.channels
            .client(&self.addr)
            .map_err(|s| rpc_error(self.target, s))
    }

    async fn call<Req, Resp, F, Fut>(
        &self,
        req: &Req,
        option: &RPCOption,
        f: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(RaftPeerClient<Channel>, tonic::Request<RaftMessage>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        self.call_with_timeout(req, option.soft_ttl(), f).await
    }

    async fn call_with_timeout<Req, Resp, F, Fut>(
        &self,
        req: &Req,
        timeout: Duration,
        f: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(RaftPeerClient<Channel>, tonic::Request<RaftMessage>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        let payload = wire::encode(req).map_err(|s| rpc_error(self.target, s))?;
        let mut request = tonic::Request::new(RaftMessage {
            payload,
            target_id: self.target,
        });
        request.set_timeout(timeout);
        let reply = f(self.client()?, request)
            .await
            .map_err(|s| rpc_error(self.target, s))?;
        let result: Result<Resp, String> = wire::decode("reply", &reply.into_inner().payload)
            .map_err(|s| rpc_error(self.target, s))?;
        result.map_err(|msg| rpc_error(self.target, tonic::Status::unavailable(msg)))
    }
}

/// About how many bytes an entry takes on the wire.
fn entry_bytes(entry: &Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(cmd) => cmd.approx_bytes() + 32,
        EntryPayload::Blank => 32,
        // Membership entries list every member's addresses; a few hundred bytes each.
        EntryPayload::Membership(m) => 32 + 256 * m.nodes().count(),
    }
}

/// Splits one AppendEntries into consecutive ones of at most `max_bytes` of entries each
/// (an entry larger than that alone), with each one's byte estimate. Each part's
/// `prev_log_id` is the last entry of the part before, so every part is a valid
/// AppendEntries on its own; a request without entries stays one part.
fn split_append(
    rpc: AppendEntriesRequest<TypeConfig>,
    max_bytes: usize,
) -> Vec<(AppendEntriesRequest<TypeConfig>, usize)> {
    let AppendEntriesRequest {
        vote,
        prev_log_id,
        leader_commit,
        entries,
    } = rpc;
    // Runs of entries, each with its byte estimate.
    let mut runs: Vec<(Vec<Entry>, usize)> = Vec::new();
    for entry in entries {
        let size = entry_bytes(&entry);
        match runs.last_mut() {
            Some((run, bytes)) if *bytes + size <= max_bytes => {
                run.push(entry);
                *bytes += size;
            }
            _ => runs.push((vec![entry], size)),
        }
    }
    if runs.is_empty() {
        runs.push((Vec::new(), 0));
    }
    let mut prev = prev_log_id;
    runs.into_iter()
        .map(|(entries, bytes)| {
            let part_prev = prev;
            prev = entries.last().map(|e| e.log_id()).or(prev);
            let part = AppendEntriesRequest {
                vote,
                prev_log_id: part_prev,
                leader_commit,
                entries,
            };
            (part, bytes)
        })
        .collect()
}

impl RaftNetworkV2<TypeConfig> for PeerNetwork {
    type SnapshotData = SnapshotFile;

    /// Pipelined replication on one gRPC stream: each AppendEntries (in parts of at most
    /// [`MAX_APPEND_BYTES`]) is one message, sent without waiting for the answers to the
    /// ones before; the follower answers each in order. Compared with one unary call per
    /// AppendEntries this saves an HTTP/2 stream (headers, trailers, three writes) per
    /// message and lets the next entries leave while the follower is still syncing.
    ///
    /// No per-message timeout: a follower that stops answering is detected by HTTP/2
    /// keep-alive (the channel pings every 5 s), a closed connection at once, and
    /// leadership never depends on this stream (heartbeats are separate RPCs).
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        _option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        let target = self.target;
        Box::pin(async move {
            let mut client = self.client()?;
            let outbound = input
                .flat_map(|rpc| {
                    futures::stream::iter(
                        split_append(rpc, MAX_APPEND_BYTES)
                            .into_iter()
                            .map(|(part, _)| part),
                    )
                })
                .filter_map(move |part| async move {
                    match wire::encode(&part) {
                        Ok(payload) => Some(RaftMessage {
                            payload,
                            target_id: target,
                        }),
                        Err(status) => {
                            // Only a serializer bug gets here; the missing answer makes
                            // openraft resend from what the follower acknowledged.
                            tracing::error!(target, %status, "cannot encode AppendEntries");
                            None
                        }
                    }
                });
            let responses = client
                .stream_append(outbound)
                .await
                .map_err(|s| rpc_error(target, s))?
                .into_inner();
            let results = responses.map(move |message| {
                let message = message.map_err(|s| rpc_error(target, s))?;
                let result: Result<StreamAppendResult, String> =
                    wire::decode("append result", &message.payload)
                        .map_err(|s| rpc_error(target, s))?;
                result.map_err(|fatal| rpc_error(target, tonic::Status::unavailable(fatal)))
            });
            let results: BoxStream<'s, _> = Box::pin(results);
            Ok(results)
        })
    }

    /// Sends the entries in messages of at most [`MAX_APPEND_BYTES`], in order. When a
    /// later message fails after earlier ones were accepted, the answer is the partial
    /// success so far, so the next attempt starts after it: progress is never lost.
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        // The last log id the target is known to hold from the parts sent so far.
        let mut matched: Option<LogId> = None;
        for (part, bytes) in split_append(rpc, MAX_APPEND_BYTES) {
            let last = part.entries.last().map(|e| e.log_id());
            let timeout = option.soft_ttl()
                + Duration::from_nanos(APPEND_NANOS_PER_BYTE.saturating_mul(bytes as u64));
            let result = self
                .call_with_timeout(&part, timeout, |mut c, r| async move {
                    c.append_entries(r).await
                })
                .await;
            let Some(so_far) = matched else {
                // The first part: its answer is the answer.
                match result? {
                    AppendEntriesResponse::Success => {
                        matched = last;
                        continue;
                    }
                    other => return Ok(other),
                }
            };
            match result {
                Ok(AppendEntriesResponse::Success) => matched = last,
                Ok(AppendEntriesResponse::HigherVote(v)) => {
                    return Ok(AppendEntriesResponse::HigherVote(v));
                }
                Ok(AppendEntriesResponse::PartialSuccess(upto)) => {
                    return Ok(AppendEntriesResponse::PartialSuccess(
                        upto.max(Some(so_far)),
                    ));
                }
                // A later part refused or lost after earlier ones matched: report what
                // matched, so the next attempt starts after it.
                Ok(AppendEntriesResponse::Conflict) | Err(_) => {
                    return Ok(AppendEntriesResponse::PartialSuccess(Some(so_far)));
                }
            }
        }
        Ok(AppendEntriesResponse::Success)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, &option, |mut c, r| async move { c.vote(r).await })
            .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, &option, |mut c, r| async move { c.pre_vote(r).await })
            .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&req, &option, |mut c, r| async move {
            c.transfer_leader(r).await
        })
        .await
    }

    /// Streams the snapshot file in chunks of [`SNAPSHOT_CHUNK_BYTES`]; the first part carries
    /// the vote and metadata.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let target = self.target;
        let net_err =
            |msg: String| StreamingError::Network(NetworkError::new(&std::io::Error::other(msg)));
        let header =
            wire::encode(&(vote, snapshot.meta.clone())).map_err(|s| net_err(s.to_string()))?;
        let file = snapshot
            .snapshot
            .file
            .try_clone()
            .map_err(|e| net_err(e.to_string()))?;
        let mut file = tokio::fs::File::from_std(file);
        use tokio::io::AsyncSeekExt;
        file.rewind().await.map_err(|e| net_err(e.to_string()))?;

        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotPart>(2);
        let reader = tokio::spawn(async move {
            let mut first = Some(header);
            loop {
                let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
                let mut filled = 0;
                while filled < buf.len() {
                    let n = file.read(&mut buf[filled..]).await?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                buf.truncate(filled);
                let part = SnapshotPart {
                    header: first.take().unwrap_or_default().to_vec(),
                    data: buf,
                    target_id: target,
                };
                if tx.send(part).await.is_err() {
                    return Ok::<(), std::io::Error>(());
                }
                if filled < SNAPSHOT_CHUNK_BYTES {
                    return Ok(());
                }
            }
        });

        let mut client = self.client().map_err(|e| net_err(e.to_string()))?;
        let send = client.install_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx));
        let reply = tokio::select! {
            closed = cancel => {
                reader.abort();
                return Err(StreamingError::Closed(closed));
            }
            r = send => r,
        };
        match reader.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(net_err(format!(
                    "reading snapshot file for peer {target}: {e}"
                )));
            }
            Err(e) => return Err(net_err(format!("snapshot reader task: {e}"))),
        }
        let reply = reply.map_err(|s| match rpc_error(target, s) {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            other => net_err(other.to_string()),
        })?;
        let result: Result<SnapshotResponse<TypeConfig>, String> =
            wire::decode("snapshot reply", &reply.into_inner().payload)
                .map_err(|s| net_err(s.to_string()))?;
        result.map_err(net_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::vote::RaftLeaderIdExt;

    use crate::storage::command::{Command, PutOp};

    fn log_id(index: u64) -> LogId {
        LogId::new(
            <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(2, 1),
            index,
        )
    }

    fn put(index: u64, value_bytes: usize) -> Entry {
        Entry::new_normal(
            log_id(index),
            Command::Put(PutOp {
                key: b"k".to_vec(),
                value: vec![0; value_bytes],
                prev_kv: false,
            }),
        )
    }

    fn request(entries: Vec<Entry>) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(log_id(9)),
            leader_commit: Some(log_id(8)),
            entries,
        }
    }

    #[test]
    fn append_parts_chain_their_prev_log_ids_and_stay_under_the_byte_bound() {
        // 10 entries of ~1000 bytes, 3000 bytes a part: parts of 2 (each entry is 1000 +
        // per-item and per-entry overhead, so three do not fit).
        let entries: Vec<Entry> = (10..20).map(|i| put(i, 1000)).collect();
        let parts = split_append(request(entries), 3000);
        assert_eq!(parts.len(), 5);
        let mut prev = Some(log_id(9));
        let mut next_index = 10;
        for (part, bytes) in &parts {
            assert_eq!(part.prev_log_id, prev, "each part follows the one before");
            assert_eq!(part.leader_commit, Some(log_id(8)));
            assert!(*bytes <= 3000, "{bytes}");
            for e in &part.entries {
                assert_eq!(e.index(), next_index, "entries keep their order");
                next_index += 1;
            }
            prev = part.entries.last().map(|e| e.log_id());
        }
        assert_eq!(next_index, 20, "no entry lost or repeated");
    }

    #[test]
    fn an_oversized_entry_goes_alone_and_a_heartbeat_stays_one_part() {
        let parts = split_append(request(vec![put(10, 10), put(11, 5000), put(12, 10)]), 3000);
        let sizes: Vec<usize> = parts.iter().map(|(p, _)| p.entries.len()).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
        let parts = split_append(request(vec![put(10, 10), put(11, 10)]), 3000);
        assert_eq!(parts.len(), 1);
        let heartbeat = split_append(request(Vec::new()), 3000);
        assert_eq!(heartbeat.len(), 1);
        assert_eq!(heartbeat[0].0.prev_log_id, Some(log_id(9)));
        assert!(heartbeat[0].0.entries.is_empty());
    }
}
